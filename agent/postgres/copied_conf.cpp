// Sanitizing a copied postgresql.conf (see copied_conf.h).
#include "postgres/copied_conf.h"

#include <algorithm>
#include <sstream>
#include <vector>

namespace safe_upgrade {
namespace {

std::string Trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return s;
}

// The setting name a postgresql.conf line assigns ("" for comments and blank lines).
std::string ConfKey(const std::string& line) {
  std::string t = Trim(line);
  if (t.empty() || t[0] == '#') return "";
  auto end = t.find_first_of(" \t=");
  return Lower(t.substr(0, end));
}

}  // namespace

// A copied postgresql.conf must not point the clone at production's files: those settings are
// commented out (ours come from postgresql.auto.conf). Relative includes of a config file that
// lived elsewhere are made absolute so they still resolve.
std::string SanitizeCopiedConf(const std::string& text, const std::string& origin_dir) {
  static const std::vector<std::string> disabled = {"data_directory", "hba_file", "ident_file",
                                                    "external_pid_file", "config_file"};
  std::istringstream in(text);
  std::ostringstream out;
  for (std::string line; std::getline(in, line);) {
    std::string key = ConfKey(line);
    if (std::find(disabled.begin(), disabled.end(), key) != disabled.end()) {
      out << "# disabled in a safe-upgrade dry-run clone: " << line << "\n";
      continue;
    }
    if (!origin_dir.empty() && (key == "include" || key == "include_dir" || key == "include_if_exists")) {
      auto q1 = line.find('\'');
      auto q2 = q1 == std::string::npos ? q1 : line.find('\'', q1 + 1);
      if (q2 != std::string::npos && line[q1 + 1] != '/') {
        out << line.substr(0, q1 + 1) << origin_dir << "/" << line.substr(q1 + 1) << "\n";
        continue;
      }
    }
    out << line << "\n";
  }
  return out.str();
}

}  // namespace safe_upgrade
