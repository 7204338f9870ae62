// Whether a node can run an upgrade's target version: its control file, the update scripts from
// each database's version and every shared library those scripts load are installed where this
// node's server looks for them. A standby's agent answers it before the primary is upgraded: a
// standby promoted later without the new library could not run the catalog it replicated.
#pragma once

#include <string>
#include <vector>

#include "postgres/catalog.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

struct ExtensionFilesReport {
  std::string share_dir, lib_dir;     // the server's SHAREDIR and PKGLIBDIR
  std::vector<std::string> problems;  // one sentence per missing file; empty: ready
};

// conn: a connection (read-only is enough, e.g. to a hot standby) to the node's own server; the
// files are read on this host, which must be that server's.
ExtensionFilesReport CheckExtensionFiles(PgConn& conn, const UpgradeRecord& upgrade);

// The libraries a script loads ('$libdir/name' and MODULE_PATHNAME, which module_pathname names),
// as "$libdir/..." strings, in order of first use. Exposed for the unit tests.
std::vector<std::string> LibrariesLoadedBy(const std::string& script, const std::string& module_pathname);
// The file a "$libdir/name" library is (lib_dir/name, plus ".so" when it has no suffix).
std::string LibraryFile(const std::string& library, const std::string& lib_dir);
// module_pathname from a control file's text ("" when it sets none).
std::string ModulePathname(const std::string& control_text);

}  // namespace safe_upgrade
