// Unit tests of how the extension's registered tables are compared before and after an upgrade
// (agent/checks/config_tables.cpp); the counting runs on real clones in tests/integration/dry_run_test.cpp.
#include "checks/config_tables.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

TEST(ConfigTables, fewer_rows_or_a_table_gone_is_a_loss_and_rewritten_rows_are_not) {
  std::vector<ConfigTable> before = {{"public.jobs", 3, "aaa"}, {"public.runs", 10, "bbb"}, {"cron.empty", 0, ""},
                                     {"public.big", 20000, std::nullopt}, {"public.gone", 2, "ccc"}};
  std::vector<ConfigTable> after = {{"public.jobs", 0, ""}, {"public.runs", 10, "ddd"}, {"public.big", 20001, std::nullopt},
                                    {"public.new", 5, "eee"}};
  ConfigTableChanges changes = CompareConfigTables(before, after);
  EXPECT_EQ(changes.losses, (std::vector<std::string>{
                                "public.jobs: 3 row(s) before the upgrade, 0 after",
                                "public.gone: 2 row(s) before the upgrade; the table is gone (dropped, or no longer the "
                                "extension's)"}));
  // An empty table that went away lost nothing; a new column rewrites every row's text.
  EXPECT_EQ(changes.changed, (std::vector<std::string>{"public.runs"}));
}

}  // namespace
}  // namespace safe_upgrade
