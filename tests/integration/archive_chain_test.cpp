// archive_command chaining for sites that archive with their own tool (WAL-G, barman, a script)
// and keep the local backend: `<their command> && safe-upgrade-agent wal-push ... %p`, so that a
// segment counts as archived only when both archives hold it. plan() names each command of the
// chain, and a chain whose command fails blocks the upgrade.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "base/process.h"
#include "pg_errors.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

void SetArchiveCommand(const TestCluster& c, const std::string& command) {
  // ALTER SYSTEM takes no parameters: the value is quoted by quote_literal on the server.
  std::string literal = c.Scalar("SELECT quote_literal($1)", {command});
  c.Exec("ALTER SYSTEM SET archive_command = " + literal);
  c.Exec("SELECT pg_reload_conf()");
  ASSERT_TRUE(WaitUntil([&] { return c.Scalar("SHOW archive_command") == command; }, 30s));
}

// The agent's own wal-push, as the sandbox runs it.
std::string AgentWalPush(const TestCluster& c) {
  return ShellQuote(c.info().agent_config.agent_binary) + " wal-push --config " +
         ShellQuote(c.info().agent_config_path) + " %p";
}

// Writes a little WAL and switches segments; returns the segment that was closed.
std::string SwitchedSegment(const TestCluster& c) {
  c.Exec("CREATE TABLE IF NOT EXISTS chain_marks (n int); INSERT INTO chain_marks VALUES (1)");
  std::string name = c.Scalar("SELECT pg_walfile_name(pg_current_wal_lsn())");
  c.Exec("SELECT pg_switch_wal()");
  return name;
}

json Plan(const TestCluster& c, const std::string& ext, const std::string& version) {
  return json::parse(c.Scalar("SELECT safe_upgrade.plan($1, $2)::text", {ext, version}));
}

TEST(ArchiveChain, a_site_command_chained_with_the_agents_wal_push_fills_both_archives_and_plan_names_both) {
  TestCluster c;
  std::string site = c.ScratchDir("site-archive");
  std::string site_command = "cp %p " + ShellQuote(site) + "/%f";
  SetArchiveCommand(c, site_command + " && " + AgentWalPush(c));
  std::string segment = SwitchedSegment(c);
  EXPECT_TRUE(WaitUntil([&] { return PathExists(JoinPath(site, segment)); }, 60s)) << segment;
  EXPECT_TRUE(
      WaitUntil([&] { return PathExists(JoinPath(c.info().agent_config.wal_archive_dir, segment)); }, 60s))
      << segment;

  c.Exec("CREATE EXTENSION su_fixture_counter VERSION '1.0'");
  json plan = Plan(c, "su_fixture_counter", "1.1");
  EXPECT_EQ(plan.value("verdict", ""), "ok") << plan.dump(2);
  const json& chain = plan["pitr"]["archive_chain"];
  ASSERT_EQ(chain.size(), 2u) << chain.dump();
  EXPECT_EQ(chain[0].value("kind", ""), "other");
  EXPECT_EQ(chain[0].value("command", ""), site_command);
  EXPECT_EQ(chain[1].value("kind", ""), "agent wal-push");

  int64_t id = c.BeginUpgrade("su_fixture_counter", "1.1");
  EXPECT_EQ(c.WaitForTerminalState(id, 300s), "succeeded") << c.Events(id);
  // The restore point's segment went to the site's archive as well.
  std::string rp_segment =
      c.Scalar("SELECT wal_segment FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
               {std::to_string(id)});
  EXPECT_TRUE(WaitUntil([&] { return PathExists(JoinPath(site, rp_segment)); }, 60s)) << rp_segment;
}

TEST(ArchiveChain, a_failing_command_in_the_chain_blocks_plan_and_begin) {
  TestCluster c;
  SetArchiveCommand(c, "false && " + AgentWalPush(c));
  SwitchedSegment(c);
  ASSERT_TRUE(WaitUntil([&] { return c.Scalar("SELECT failed_count FROM pg_stat_archiver") != "0"; }, 60s));

  c.Exec("CREATE EXTENSION su_fixture_counter VERSION '1.0'");
  json plan = Plan(c, "su_fixture_counter", "1.1");
  EXPECT_EQ(plan.value("verdict", ""), "blocked") << plan.dump(2);
  EXPECT_NE(plan["reasons"].dump().find("the archiver is failing"), std::string::npos)
      << plan["reasons"].dump();
  auto conn = c.Connect();
  PgError e = ErrorOf(*conn, "SELECT safe_upgrade.begin('su_fixture_counter', '1.1')");
  EXPECT_EQ(e.sqlstate(), "55000") << e.Full();
  EXPECT_NE(e.detail().find("the archiver is failing"), std::string::npos) << e.Full();
}

}  // namespace
}  // namespace safe_upgrade::testing
