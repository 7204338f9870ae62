// A primary with streaming standbys on this machine, each with its own agent (sandbox --standbys):
// an upgrade that succeeds reaches the standbys by replication; a rollback rewinds every standby
// onto the restored primary's new timeline (or re-clones it when pg_rewind cannot), and the
// upgrade ends rolled_back only once every standby streams there; a standby whose node lacks the
// target's library blocks the upgrade before production is touched; a standby that is down
// during the rollback is reported, and the primary stays up.
#include <gtest/gtest.h>

#include <signal.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "base/process.h"
#include "build_info.h"
#include "debian_cluster.h"
#include "fixtures.h"
#include "postgres/cluster.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string OnStandby(const SandboxInfo& standby, const std::string& sql) {
  PgConn conn(standby.ConnInfo());
  auto r = conn.Exec(sql);
  return r.Empty() || !r.rows[0][0] ? "" : *r.rows[0][0];
}

std::string PrimaryTimeline(const TestCluster& c) {
  return std::to_string(std::stoul(c.Scalar("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), nullptr, 16));
}

// The standby streams from the primary on the primary's timeline, and replays a row written now.
void ExpectStreamingOnPrimaryTimeline(const TestCluster& c, const SandboxInfo& standby, const std::string& marker) {
  std::string timeline = PrimaryTimeline(c);
  EXPECT_TRUE(WaitUntil([&] { return OnStandby(standby, "SELECT received_tli::text FROM pg_stat_wal_receiver "
                                                        "WHERE status = 'streaming'") == timeline; },
                        60s))
      << standby.dir << " does not stream on timeline " << timeline;
  EXPECT_EQ(OnStandby(standby, "SELECT pg_is_in_recovery()::text"), "true");
  c.Exec("CREATE TABLE IF NOT EXISTS after_rollback (marker text); INSERT INTO after_rollback VALUES ('" + marker +
         "')");
  EXPECT_TRUE(WaitUntil([&] {
    return OnStandby(standby, "SELECT count(*)::text FROM after_rollback WHERE marker = '" + marker + "'") == "1";
  },
                        60s))
      << "a row written on the primary after the rollback did not reach " << standby.dir;
}

json StandbyRows(const TestCluster& c, int64_t id) {
  return json::parse(c.Scalar("SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY name), '[]')::text FROM "
                              "safe_upgrade.upgrade_standbys s WHERE upgrade_id = $1::bigint",
                              {std::to_string(id)}));
}

// A doomed upgrade (fixtures.h) of c rolled back: it must end in state, with the primary holding
// exactly the rows from before the restore point. while_applying runs once it applies.
struct RolledBack {
  int64_t id = 0;
  json standbys = json::array();  // its upgrade_standbys rows
};
RolledBack RollBackDoomedUpgrade(const TestCluster& c, const std::string& state,
                                 const std::string& rollback_target = "auto",
                                 const std::function<void()>& while_applying = {}) {
  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c, rollback_target);
  RolledBack out{h.id};
  if (!WriteMarkersAroundDoomedApply(c, h, c.Connect(), while_applying)) return out;
  EXPECT_EQ(c.WaitForTerminalState(h.id, 600s), state) << c.Events(h.id);
  ExpectOnlyRowsBeforeRestorePoint(c);
  out.standbys = StandbyRows(c, h.id);
  return out;
}

std::string UpgradeError(const TestCluster& c, int64_t id) {
  return c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
}

class StandbyCount : public ::testing::TestWithParam<int> {};

TEST_P(StandbyCount, a_rollback_rewinds_every_standby_onto_the_new_timeline) {
  const int standbys = GetParam();
  TestCluster c({.standbys = standbys});
  RolledBack h = RollBackDoomedUpgrade(c, "rolled_back");
  json rows = h.standbys;
  ASSERT_EQ(rows.size(), static_cast<size_t>(standbys)) << rows.dump(2);
  for (int k = 0; k < standbys; ++k) {
    const SandboxInfo& standby = c.info().standbys[k];
    EXPECT_EQ(rows[k]["name"], "standby" + std::to_string(k + 1));
    EXPECT_EQ(rows[k]["outcome"], "rewound") << rows[k].dump();
    ExpectStreamingOnPrimaryTimeline(c, standby, "m" + std::to_string(k));
    // The standby is back at the old version, with exactly the rows from before the restore point.
    EXPECT_EQ(OnStandby(standby, "SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
    EXPECT_EQ(OnStandby(standby, "SELECT count(*)::text FROM marks"), "100");
    // Its slot is back on the primary, in use.
    EXPECT_EQ(c.Scalar("SELECT active::text FROM pg_replication_slots WHERE slot_name = $1",
                       {"standby" + std::to_string(k + 1)}),
              "true");
    // Its own settings survived pg_rewind: its port, and its own agent.
    EXPECT_EQ(OnStandby(standby, "SHOW port"), std::to_string(standby.port));
  }
  EXPECT_NE(c.Events(h.id).find("standby standby1: rewound"), std::string::npos) << c.Events(h.id);
}

INSTANTIATE_TEST_SUITE_P(Standbys, StandbyCount, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "_standbys"; });

TEST(Standbys, a_succeeded_upgrade_reaches_the_standby_and_leaves_it_streaming) {
  TestCluster c({.standbys = 1});
  c.Exec("CREATE EXTENSION su_fixture_counter VERSION '1.0'");
  int64_t id = c.BeginUpgrade("su_fixture_counter", "1.1");
  ASSERT_EQ(c.WaitForTerminalState(id), "succeeded") << c.Events(id);
  const SandboxInfo& standby = c.info().standbys[0];
  EXPECT_TRUE(WaitUntil([&] {
    return OnStandby(standby, "SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_counter'") == "1.1";
  },
                        60s));
  ExpectStreamingOnPrimaryTimeline(c, standby, "after-success");
  // The dry run asked the standby's agent about the target's files.
  EXPECT_NE(c.Events(id).find("every standby (1) has the files of su_fixture_counter 1.1"), std::string::npos)
      << c.Events(id);
}

TEST(Standbys, a_standby_that_cannot_be_rewound_is_recloned) {
  // Without wal_log_hints (and without checksums) pg_rewind refuses; the agent falls back.
  TestCluster c({.settings = {{"wal_log_hints", "off"}}, .standbys = 1});
  json rows = RollBackDoomedUpgrade(c, "rolled_back", "cold").standbys;
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["outcome"], "recloned") << rows[0].dump();
  const SandboxInfo& standby = c.info().standbys[0];
  ExpectStreamingOnPrimaryTimeline(c, standby, "recloned");
  EXPECT_EQ(OnStandby(standby, "SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  // The standby's old data directory is kept beside it, never deleted.
  std::string aside = rows[0]["detail"]["result"].value("aside", "");
  EXPECT_TRUE(IsDirectory(aside)) << rows[0].dump();
}

TEST(Standbys, a_standby_down_during_the_rollback_is_reported_and_the_primary_stays_up) {
  TestCluster c({.standbys = 1});
  const SandboxInfo& standby = c.info().standbys[0];
  // The primary is rolled back and runs, whatever happens to the standby.
  RolledBack h = RollBackDoomedUpgrade(c, "rollback_failed", "auto", [&] {
    ServerControl(kPgBinDir, standby.data_dir, "pg_ctl", standby.os_user, "").Stop("fast");
  });
  json rows = h.standbys;
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["outcome"], "unreachable") << rows[0].dump();
  std::string error = UpgradeError(c, h.id);
  EXPECT_NE(error.find("the primary was rolled back to restore point"), std::string::npos) << error;
  EXPECT_NE(error.find("standby standby1 unreachable"), std::string::npos) << error;
}

TEST(Standbys, a_standby_without_an_agent_is_named_and_the_rollback_does_not_claim_it_follows) {
  TestCluster c({.standbys = 1});
  // The primary's agent no longer lists the standby's: begin() still sees it stream.
  c.StopAgent();
  AgentConfig primary_agent = c.info().agent_config;
  primary_agent.standbys.clear();
  AtomicWriteFile(c.info().agent_config_path, RenderAgentConfig(primary_agent), 0644);
  c.StartAgent();
  c.WaitForWorkerToReachAgent();
  RolledBack h = RollBackDoomedUpgrade(c, "rollback_failed");
  json rows = h.standbys;
  ASSERT_EQ(rows.size(), 1u) << rows.dump(2);
  EXPECT_EQ(rows[0]["outcome"], "no_agent") << rows[0].dump();
  std::string error = UpgradeError(c, h.id);
  EXPECT_NE(error.find("standby standby1 no_agent"), std::string::npos) << error;
}

// Debian's layout on both nodes: configuration in /etc, controlled with pg_ctlcluster. The standby's
// files in /etc are its own and pg_rewind never sees them; its postgresql.auto.conf (with its
// primary_conninfo) and standby.signal live in the data directory, which pg_rewind rewrites.
TEST(Standbys, a_debian_standby_is_rewound_and_keeps_its_own_configuration) {
  std::string why = DebianClustersUnavailable();
  if (!why.empty()) GTEST_SKIP() << "needs pg_createcluster clusters, which cannot be made here: " << why;
  TestCluster c({.settings = {{"wal_log_hints", "on"}}, .debian_cluster = true});
  DebianCluster standby_cluster;
  standby_cluster.name = c.debian().name + "_standby";
  SandboxOptions so;
  so.agent_binary = JoinPath(BuildDir(), "safe-upgrade-agent");
  so.allow_root_callers = true;
  SandboxInfo standby = CreateDebianStandby(c.info(), JoinPath(c.root(), "standby"), "debian_standby", so, standby_cluster);
  struct Drop {
    const SandboxInfo& info;
    const DebianCluster& cluster;
    ~Drop() {
      SandboxStopAgent(info, SIGTERM);
      DropDebianCluster(cluster);
    }
  } drop{standby, standby_cluster};
  // The primary's agent lists the standby's.
  c.StopAgent();
  AgentConfig primary_agent = c.info().agent_config;
  primary_agent.standbys.push_back({"debian_standby", "unix:" + standby.agent_socket});
  AtomicWriteFile(c.info().agent_config_path, RenderAgentConfig(primary_agent), 0644);
  c.StartAgent();
  c.WaitForWorkerToReachAgent();
  std::string etc_conf = JoinPath(standby_cluster.ConfigDir(), "postgresql.conf");
  std::string etc_before = ReadFile(etc_conf);

  json rows = RollBackDoomedUpgrade(c, "rolled_back").standbys;
  ASSERT_EQ(rows.size(), 1u) << rows.dump(2);
  EXPECT_EQ(rows[0]["name"], "debian_standby");
  EXPECT_EQ(rows[0]["outcome"], "rewound") << rows[0].dump();
  ExpectStreamingOnPrimaryTimeline(c, standby, "debian");
  EXPECT_EQ(OnStandby(standby, "SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(OnStandby(standby, "SHOW port"), std::to_string(standby.port));
  EXPECT_EQ(OnStandby(standby, "SHOW config_file"), etc_conf);
  EXPECT_EQ(ReadFile(etc_conf), etc_before);
}

// A copy of the PostgreSQL installation (binaries, libraries, share) without one library, for a
// standby whose node was installed apart from the primary's.
std::string InstallationWithout(const std::string& root, const std::string& library) {
  std::string bin = kPgBinDir;                                              // .../lib/postgresql/15/bin
  std::string version_dir = Dirname(bin);                                   // .../lib/postgresql/15
  std::string prefix = Dirname(Dirname(Dirname(version_dir)));              // /usr
  std::string lib_rel = version_dir.substr(prefix.size());                  // /lib/postgresql/15
  std::string share_rel = "/share/postgresql/" + std::filesystem::path(version_dir).filename().string();
  std::string copy = JoinPath(root, "other-node");
  RunChecked({"mkdir", "-p", copy + Dirname(lib_rel), copy + Dirname(share_rel)});
  RunChecked({"cp", "-a", prefix + lib_rel, copy + Dirname(lib_rel) + "/"});
  RunChecked({"cp", "-a", prefix + share_rel, copy + Dirname(share_rel) + "/"});
  std::filesystem::remove(copy + lib_rel + "/lib/" + library);
  return copy + lib_rel + "/bin";
}

TEST(Standbys, a_standby_without_the_target_library_blocks_the_upgrade_before_production_is_touched) {
  char tmpl[] = "/tmp/su-node-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  chmod(root.c_str(), 0755);
  std::string bin = InstallationWithout(root, "hstore.so");
  {
    TestCluster c({.standbys = 1, .standby_bin_dir = bin});
    c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
    int64_t id = c.BeginUpgrade("hstore", "1.8");
    ASSERT_EQ(c.WaitForTerminalState(id), "blocked") << c.Events(id);
    std::string error = c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
    EXPECT_NE(error.find("standby1: hstore's control file names $libdir/hstore, which is not on this node"),
              std::string::npos)
        << error;
    // Nothing was touched: no restore point, the old version on the primary and the standby.
    EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                       {std::to_string(id)}),
              "0");
    EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
    EXPECT_EQ(OnStandby(c.info().standbys[0], "SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
  }
  RemoveTree(root);
}

}  // namespace
}  // namespace safe_upgrade::testing
