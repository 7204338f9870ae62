// The target version's files on a node (extension_files.h).
#include "checks/extension_files.h"

#include <filesystem>
#include <map>
#include <regex>

#include "base/fs_util.h"

namespace safe_upgrade {
namespace {

std::string ServerDir(PgConn& conn, const std::string& name) {
  return conn.Exec("SELECT setting FROM pg_catalog.pg_config WHERE name = $1", {name}).Scalar();
}

std::string ReadIfPresent(const std::string& path) {
  if (!PathExists(path)) return "";
  try {
    return ReadFile(path);
  } catch (...) {
    return "";
  }
}

}  // namespace

std::string ModulePathname(const std::string& control_text) {
  static const std::regex line(R"((^|\n)[ \t]*module_pathname[ \t]*=[ \t]*'([^'\n]*)')");
  std::smatch m;
  return std::regex_search(control_text, m, line) ? m[2].str() : "";
}

std::vector<std::string> LibrariesLoadedBy(const std::string& script, const std::string& module_pathname) {
  std::vector<std::string> found;
  auto add = [&](const std::string& library) {
    for (const auto& seen : found)
      if (seen == library) return;
    found.push_back(library);
  };
  static const std::regex token(R"('\$libdir/([A-Za-z0-9_.+-]+)'|MODULE_PATHNAME)");
  for (auto it = std::sregex_iterator(script.begin(), script.end(), token); it != std::sregex_iterator(); ++it) {
    if ((*it)[1].matched)
      add("$libdir/" + (*it)[1].str());
    else if (!module_pathname.empty())
      add(module_pathname);
  }
  return found;
}

std::string LibraryFile(const std::string& library, const std::string& lib_dir) {
  std::string name = library.rfind("$libdir/", 0) == 0 ? library.substr(8) : library;
  std::string path = name.find('/') == 0 ? name : JoinPath(lib_dir, name);
  if (std::filesystem::path(path).filename().string().find('.') == std::string::npos) path += ".so";
  return path;
}

namespace {

struct Starting {
  std::string datname, from_version;
};

// One extension's files for its target version, from where it starts in each database.
void CheckOneExtension(PgConn& conn, ExtensionFilesReport& report, const std::string& ext,
                       const std::string& to_version, const std::vector<Starting>& starts) {
  const std::string extension_dir = JoinPath(report.share_dir, "extension");
  const std::string control = JoinPath(extension_dir, ext + ".control");
  if (!PathExists(control)) {
    report.problems.push_back(ext + " is not installed on this node: no " + control);
    return;
  }
  std::string module = ModulePathname(ReadIfPresent(control));
  // A version's own control file may name another library.
  std::string own = ModulePathname(ReadIfPresent(JoinPath(extension_dir, ext + "--" + to_version + ".control")));
  if (!own.empty()) module = own;
  if (conn.Exec("SELECT 1 FROM pg_catalog.pg_available_extension_versions WHERE name = $1 AND version = $2",
                {ext, to_version})
          .Empty())
    report.problems.push_back(ext + " " + to_version + " is not available on this node (no script in " +
                              extension_dir + " installs it or updates to it)");
  std::vector<std::string> checked_libraries;
  // The library the control file names serves every version's C functions.
  if (!module.empty()) {
    std::string file = LibraryFile(module, report.lib_dir);
    checked_libraries.push_back(file);
    if (!PathExists(file))
      report.problems.push_back(ext + "'s control file names " + module + ", which is not on this node (" + file +
                                ")");
  }
  for (const auto& db : starts) {
    if (db.from_version.empty() || db.from_version == to_version) continue;
    auto path = conn.Exec(
        "SELECT path FROM pg_catalog.pg_extension_update_paths($1) WHERE source = $2 AND target = $3",
        {ext, db.from_version, to_version});
    if (path.Empty() || !path.rows[0][0]) {
      report.problems.push_back("no update path from " + ext + " " + db.from_version + " to " + to_version +
                                " on this node (database " + db.datname + ")");
      continue;
    }
    std::vector<std::string> hops;
    std::string text = *path.rows[0][0];
    for (size_t start = 0, end; start <= text.size(); start = end + 2) {
      end = text.find("--", start);
      if (end == std::string::npos) end = text.size();
      hops.push_back(text.substr(start, end - start));
      if (end == text.size()) break;
    }
    for (size_t i = 0; i + 1 < hops.size(); ++i) {
      std::string script = JoinPath(extension_dir, ext + "--" + hops[i] + "--" + hops[i + 1] + ".sql");
      for (const auto& library : LibrariesLoadedBy(ReadIfPresent(script), module)) {
        std::string file = LibraryFile(library, report.lib_dir);
        bool seen = false;
        for (const auto& c : checked_libraries) seen = seen || c == file;
        if (seen) continue;
        checked_libraries.push_back(file);
        if (!PathExists(file))
          report.problems.push_back(ext + "'s " + hops[i] + "--" + hops[i + 1] + " update script loads " + library +
                                    ", which is not on this node (" + file + ")");
      }
    }
  }
}

}  // namespace

ExtensionFilesReport CheckExtensionFiles(PgConn& conn, const UpgradeRecord& upgrade) {
  ExtensionFilesReport report;
  report.share_dir = ServerDir(conn, "SHAREDIR");
  report.lib_dir = ServerDir(conn, "PKGLIBDIR");
  // The extension, then each family member upgraded with it (by name, from where it starts).
  std::map<std::string, std::vector<Starting>> extensions;
  extensions[upgrade.extname];
  std::vector<std::string> order = {upgrade.extname};
  for (const auto& db : upgrade.databases) {
    extensions[upgrade.extname].push_back({db.datname, db.from_version});
    for (const auto& member : db.family) {
      if (!extensions.count(member.extname)) order.push_back(member.extname);
      extensions[member.extname].push_back({db.datname, member.from_version});
    }
  }
  for (const auto& ext : order) CheckOneExtension(conn, report, ext, upgrade.to_version, extensions[ext]);
  return report;
}

}  // namespace safe_upgrade
