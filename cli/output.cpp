// Presentation helpers for the command line.
#include "output.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <set>

namespace safe_upgrade::cli {

using nlohmann::json;

bool StdoutIsTerminal() { return isatty(STDOUT_FILENO) == 1; }
bool StderrIsTerminal() { return isatty(STDERR_FILENO) == 1; }
bool StdinIsTerminal() { return isatty(STDIN_FILENO) == 1; }

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  char buf[64];
  if (seconds < 60) {
    snprintf(buf, sizeof buf, "%.1fs", seconds);
  } else if (seconds < 3600) {
    long s = std::lround(seconds);
    snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  } else {
    long m = std::lround(seconds / 60);
    snprintf(buf, sizeof buf, "%ldh%02ldm", m / 60, m % 60);
  }
  return buf;
}

std::string FormatBytes(double bytes) {
  static const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[64];
  if (u == 0)
    snprintf(buf, sizeof buf, "%.0f %s", bytes, units[u]);
  else
    snprintf(buf, sizeof buf, "%.1f %s", bytes, units[u]);
  return buf;
}

std::optional<double> ParseTimestamp(const std::string& text) {
  int year, mon, day, hour, min, sec, consumed = 0;
  char sep;
  if (sscanf(text.c_str(), "%4d-%2d-%2d%c%2d:%2d:%2d%n", &year, &mon, &day, &sep, &hour, &min, &sec,
             &consumed) != 7 ||
      (sep != 'T' && sep != ' '))
    return std::nullopt;
  size_t pos = static_cast<size_t>(consumed);
  double fraction = 0;
  if (pos < text.size() && text[pos] == '.') {
    size_t start = pos++;
    while (pos < text.size() && isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
    fraction = std::stod("0" + text.substr(start, pos - start));
  }
  long offset_s = 0;
  if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int sign = text[pos] == '-' ? -1 : 1;
    int oh = 0, om = 0;
    std::string zone = text.substr(pos + 1);
    if (sscanf(zone.c_str(), "%2d:%2d", &oh, &om) < 1) return std::nullopt;
    offset_s = sign * (oh * 3600L + om * 60L);
  }
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  return static_cast<double>(timegm(&tm) - offset_s) + fraction;
}

std::string ShortTimestamp(const std::string& text) {
  if (text.size() < 19) return text;
  std::string out = text.substr(0, 19);
  if (out[10] == 'T') out[10] = ' ';
  return out;
}

std::string OneLine(const std::string& text) {
  std::string out;
  bool blank = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      blank = true;
      continue;
    }
    if (blank && !out.empty()) out += ' ';
    blank = false;
    out += c;
  }
  return out;
}

std::string Truncate(const std::string& text, size_t max) {
  if (text.size() <= max || max < 4) return text;
  return text.substr(0, max - 3) + "...";
}

std::string JsonText(const json& value) {
  if (value.is_null()) return "";
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "yes" : "no";
  if (value.is_array()) {
    bool scalars = std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_primitive(); });
    if (scalars) {
      std::string out;
      for (const auto& v : value) out += (out.empty() ? "" : ", ") + JsonText(v);
      return out;
    }
  }
  return value.dump();
}

std::string JsonString(const json& j, const char* key, const std::string& fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return fallback;
  return it->get<std::string>();
}

const json& JsonMember(const json& j, const char* key) {
  static const json empty = json::object();
  if (!j.is_object()) return empty;
  auto it = j.find(key);
  return it == j.end() ? empty : *it;
}

std::optional<double> JsonNumber(const json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  if (it->is_number()) return it->get<double>();
  if (it->is_string()) {
    try {
      size_t used = 0;
      double v = std::stod(it->get<std::string>(), &used);
      if (used == it->get<std::string>().size()) return v;
    } catch (...) {
    }
  }
  return std::nullopt;
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out, const std::string& indent, size_t max_cell) const {
  std::vector<size_t> width(headers_.size(), 0);
  auto cell = [&](const std::string& s) { return Truncate(OneLine(s), max_cell); };
  for (size_t c = 0; c < headers_.size(); ++c) width[c] = headers_[c].size();
  for (const auto& row : rows_)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], cell(row[c]).size());
  auto line = [&](const std::vector<std::string>& cells, bool is_header) {
    std::string text = indent;
    for (size_t c = 0; c < cells.size(); ++c) {
      std::string v = is_header ? cells[c] : cell(cells[c]);
      text += v;
      if (c + 1 < cells.size()) text += std::string(width[c] - v.size() + 2, ' ');
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out << text << "\n";
  };
  line(headers_, true);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  line(rule, true);
  for (const auto& row : rows_) line(row, false);
}

namespace {

std::string Label(const std::string& key) {
  std::string out = key;
  std::replace(out.begin(), out.end(), '_', ' ');
  return out;
}

bool IsArrayOfObjects(const json& v) {
  return v.is_array() && !v.empty() &&
         std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_object(); });
}

void PrintTableOf(std::ostream& out, const json& rows, const std::string& indent) {
  // Known identity columns first (jsonb sorts keys, which reads badly), then the rest in
  // first-seen order across all rows.
  std::vector<std::string> columns;
  std::set<std::string> seen;
  for (const char* k :
       {"name", "object_type", "object_identity", "depends_on_type", "depends_on_identity", "deptype"})
    for (const auto& r : rows)
      if (r.contains(k) && seen.insert(k).second) columns.push_back(k);
  for (const auto& r : rows)
    for (auto it = r.begin(); it != r.end(); ++it)
      if (seen.insert(it.key()).second) columns.push_back(it.key());
  std::vector<std::string> headers;
  for (const auto& c : columns) headers.push_back(Label(c));
  Table t(headers);
  for (const auto& r : rows) {
    std::vector<std::string> cells;
    for (const auto& c : columns) cells.push_back(r.contains(c) ? JsonText(r[c]) : "");
    t.AddRow(cells);
  }
  t.Print(out, indent);
}

}  // namespace

void PrintJsonValue(std::ostream& out, const json& value, const std::string& indent) {
  if (value.is_object()) {
    size_t key_width = 0;
    for (auto it = value.begin(); it != value.end(); ++it)
      if (it->is_primitive() || (it->is_array() && !IsArrayOfObjects(*it)))
        key_width = std::max(key_width, it.key().size());
    for (auto it = value.begin(); it != value.end(); ++it) {
      const json& v = *it;
      if (v.is_object() && !v.empty()) {
        out << indent << Label(it.key()) << ":\n";
        PrintJsonValue(out, v, indent + "  ");
      } else if (IsArrayOfObjects(v)) {
        out << indent << Label(it.key()) << ":\n";
        PrintTableOf(out, v, indent + "  ");
      } else {
        std::string text = v.is_object() || (v.is_array() && v.empty()) ? "(none)" : JsonText(v);
        std::string key = it.key();
        if (v.is_number() && key.size() > 6 && key.compare(key.size() - 6, 6, "_bytes") == 0) {
          text = FormatBytes(v.get<double>());
          key.resize(key.size() - 6);  // "cluster_size_bytes: 24.2 MB" reads as "cluster size: 24.2 MB"
        }
        if (text.empty()) text = "-";
        out << indent << Label(key) << ":" << std::string(key_width - key.size() + 2, ' ') << text << "\n";
      }
    }
  } else if (IsArrayOfObjects(value)) {
    PrintTableOf(out, value, indent);
  } else if (value.is_array()) {
    if (value.empty()) out << indent << "(none)\n";
    for (const auto& v : value) out << indent << "- " << JsonText(v) << "\n";
  } else {
    out << indent << JsonText(value) << "\n";
  }
}

std::string ProgressBar(double fraction, const std::string& suffix, size_t width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  size_t filled = static_cast<size_t>(std::lround(fraction * static_cast<double>(width)));
  char pct[16];
  snprintf(pct, sizeof pct, "%3.0f%%", fraction * 100);
  return "[" + std::string(filled, '#') + std::string(width - filled, '-') + "] " + pct +
         (suffix.empty() ? "" : "  " + suffix);
}

}  // namespace safe_upgrade::cli
