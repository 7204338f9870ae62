// Unit tests of how a node's check of an upgrade's target files reads control files and scripts
// (agent/checks/extension_files.cpp); the check itself runs against real standbys in
// tests/integration/standby_test.cpp.
#include "checks/extension_files.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

TEST(ExtensionFiles, module_pathname_is_read_from_the_control_file) {
  EXPECT_EQ(ModulePathname("comment = 'x'\ndefault_version = '1.8'\nmodule_pathname = '$libdir/hstore'\n"),
            "$libdir/hstore");
  EXPECT_EQ(ModulePathname("  module_pathname='$libdir/postgis-3'"), "$libdir/postgis-3");
  EXPECT_EQ(ModulePathname("# module_pathname = '$libdir/commented'\nrelocatable = true\n"), "");
  EXPECT_EQ(ModulePathname("relocatable = true\n"), "");
}

TEST(ExtensionFiles, a_script_loads_its_libdir_libraries_and_module_pathname_once_each) {
  std::string script =
      "CREATE FUNCTION f() RETURNS int AS 'MODULE_PATHNAME', 'f' LANGUAGE C;\n"
      "CREATE FUNCTION g() RETURNS int AS 'MODULE_PATHNAME', 'g' LANGUAGE C;\n"
      "CREATE FUNCTION h() RETURNS int AS '$libdir/other-2', 'h' LANGUAGE C;\n"
      "CREATE FUNCTION k() RETURNS int AS '$libdir/other-2', 'k' LANGUAGE C;\n";
  EXPECT_EQ(LibrariesLoadedBy(script, "$libdir/main"), (std::vector<std::string>{"$libdir/main", "$libdir/other-2"}));
  // No module_pathname: MODULE_PATHNAME names nothing to look for.
  EXPECT_EQ(LibrariesLoadedBy(script, ""), (std::vector<std::string>{"$libdir/other-2"}));
  EXPECT_TRUE(LibrariesLoadedBy("CREATE VIEW v AS SELECT 1;", "$libdir/main").empty());
}

TEST(ExtensionFiles, a_library_is_a_file_in_the_library_directory) {
  EXPECT_EQ(LibraryFile("$libdir/hstore", "/usr/lib/postgresql/15/lib"), "/usr/lib/postgresql/15/lib/hstore.so");
  EXPECT_EQ(LibraryFile("$libdir/postgis-3.so", "/lib"), "/lib/postgis-3.so");
  EXPECT_EQ(LibraryFile("$libdir/postgis-3", "/lib"), "/lib/postgis-3.so");
}

}  // namespace
}  // namespace safe_upgrade
