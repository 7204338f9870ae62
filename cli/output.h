// Presentation helpers for the command line: terminal detection, durations, sizes, timestamps,
// plain-text tables, and a generic rendering of JSON documents whose exact shape may grow.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace safe_upgrade::cli {

bool StdoutIsTerminal();
bool StderrIsTerminal();
bool StdinIsTerminal();

// "0.4s", "12.3s", "4m05s", "1h02m"; "-" for negative values.
std::string FormatDuration(double seconds);
// "812 B", "12.3 MB", "1.4 GB".
std::string FormatBytes(double bytes);
// Seconds since the epoch from an ISO 8601 / PostgreSQL timestamptz text
// ("2025-11-24T10:46:46.123+00:00", "2025-11-24 10:46:46.123+01"); nullopt when unparsable.
std::optional<double> ParseTimestamp(const std::string& text);
// "2025-11-24 10:46:46" from a timestamptz text (fractions and zone dropped: the server's zone).
std::string ShortTimestamp(const std::string& text);
// Newlines and runs of blanks collapsed to one space, trimmed.
std::string OneLine(const std::string& text);
// At most max characters, "..." marking a cut.
std::string Truncate(const std::string& text, size_t max);

// A JSON scalar as plain text: strings unquoted, null as "", numbers and booleans as JSON.
// Arrays of scalars are joined with ", "; other values are dumped compactly.
std::string JsonText(const nlohmann::json& value);
// j[key] as a string when it is a string, else fallback.
std::string JsonString(const nlohmann::json& j, const char* key, const std::string& fallback = "");
// j[key] as a number when it is a number (or a numeric string), else nullopt.
std::optional<double> JsonNumber(const nlohmann::json& j, const char* key);
// j[key], or an empty object when j is not an object or has no such key.
const nlohmann::json& JsonMember(const nlohmann::json& j, const char* key);

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void AddRow(std::vector<std::string> cells);
  bool Empty() const { return rows_.empty(); }
  // Columns padded to their widest cell; cells cut at max_cell characters.
  void Print(std::ostream& out, const std::string& indent = "  ", size_t max_cell = 72) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// Renders any JSON value readably: objects as "key: value" lines, arrays of objects as tables,
// arrays of scalars as lists. Used for report sections whose fields may grow over time.
void PrintJsonValue(std::ostream& out, const nlohmann::json& value, const std::string& indent = "  ");

// A one-line progress bar ("[#####-----]  50%  12.3 MB/s"), fitted to width characters.
std::string ProgressBar(double fraction, const std::string& suffix, size_t width = 30);

}  // namespace safe_upgrade::cli
