// Patroni-managed clusters (tests/harness/patroni_cluster.h): real Patroni and etcd from Debian.
// The harness brings up a leader with a streaming replica; PatroniClient's pause (maintenance
// mode) keeps Patroni out of the way while PostgreSQL is stopped and started by hand, as a
// rollback does, and resume hands the cluster back to Patroni with the same leader. The tests also
// pin what Patroni 3.0.2 does to a hand-managed server, which the rollback's integration relies
// on: the leader key while paused, the configuration files it rewrites, standby.signal.
#include "postgres/patroni.h"

#include <gtest/gtest.h>
#include <stdio.h>
#include <unistd.h>

#include <iostream>
#include <map>
#include <thread>

#include "base/fs_util.h"
#include "patroni_cluster.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

long long MillisSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// A measured fact about Patroni, printed for the report and kept in the test's XML output.
void Fact(const std::string& key, const std::string& value) {
  std::cout << "[   FACT   ] " << key << ": " << value << std::endl;
  ::testing::Test::RecordProperty(key, value);
}

std::string Scalar(const PatroniNode& node, const std::string& sql) {
  PgConn conn(node.ConnInfo(), std::chrono::seconds(5));
  return conn.Exec(sql).Scalar();
}

// The files Patroni owns or may touch in a data directory, by content.
std::map<std::string, std::string> ConfigFiles(const PatroniNode& node) {
  std::map<std::string, std::string> files;
  for (const char* name : {"postgresql.conf", "postgresql.auto.conf", "postgresql.base.conf", "pg_hba.conf"})
    files[name] = ReadFileOr(JoinPath(node.data_dir, name));
  return files;
}

// Skipped, saying why, where Patroni or etcd is missing.
class Patroni : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = PatroniUnavailable();
    if (!why.empty()) GTEST_SKIP() << "needs Patroni and etcd, which cannot run here: " << why;
  }
};

// A cluster up at the test's start: node1 leads, the replica streams from it.
class PatroniRunning : public Patroni {
 protected:
  void SetUp() override {
    Patroni::SetUp();
    if (IsSkipped()) return;
    cluster_ = std::make_unique<PatroniCluster>();
    ASSERT_NO_THROW(cluster_->WaitForLeaderAndStreamingReplica(Clock::now() + 120s));
    ASSERT_EQ(cluster_->Leader().name, "node1");
  }
  std::unique_ptr<PatroniCluster> cluster_;
};

TEST_F(Patroni, harness_brings_up_a_leader_and_a_streaming_replica) {
  auto start = Clock::now();
  PatroniCluster cluster;
  auto bootstrapped = MillisSince(start);
  ASSERT_NO_THROW(cluster.WaitForLeaderAndStreamingReplica(Clock::now() + 120s));
  Fact("harness_up_ms",
       std::to_string(MillisSince(start)) + " (node1 leader after " + std::to_string(bootstrapped) + ")");

  const PatroniNode& leader = cluster.Leader();
  const PatroniNode& replica = cluster.Replica();
  EXPECT_EQ(leader.name, "node1");
  EXPECT_EQ(replica.name, "node2");
  EXPECT_EQ(Scalar(leader, "SELECT state FROM pg_stat_replication WHERE application_name = 'node2'"),
            "streaming");
  EXPECT_EQ(Scalar(leader, "SELECT pg_is_in_recovery()::text"), "false");
  EXPECT_EQ(Scalar(replica, "SELECT pg_is_in_recovery()::text"), "true");
  EXPECT_EQ(Scalar(replica, "SELECT status FROM pg_stat_wal_receiver"), "streaming");
  for (const char* setting : {"wal_level", "hot_standby", "wal_log_hints", "max_wal_senders"})
    Fact(std::string("leader_") + setting, Scalar(leader, std::string("SHOW ") + setting));
  EXPECT_EQ(Scalar(leader, "SHOW wal_level"), "replica");
  EXPECT_EQ(Scalar(leader, "SHOW wal_log_hints"), "on");
  EXPECT_EQ(Scalar(leader, "SELECT current_user"), "postgres");

  // The client's view of each member, through each member's own REST API.
  PatroniMember lm = cluster.Client(0).Member();
  EXPECT_EQ(lm.name, "node1");
  EXPECT_EQ(lm.role, "primary");
  EXPECT_EQ(lm.state, "running");
  EXPECT_EQ(lm.timeline, 1);
  EXPECT_FALSE(lm.pause);
  EXPECT_GE(lm.server_version, 150000);
  EXPECT_LT(lm.server_version, 160000);
  PatroniMember rm = cluster.Client(1).Member();
  EXPECT_EQ(rm.name, "node2");
  EXPECT_EQ(rm.role, "replica");
  auto view = cluster.Client(1).Cluster();
  ASSERT_EQ(view.members.size(), 2u);
  ASSERT_NE(view.Leader(), nullptr);
  EXPECT_EQ(view.Leader()->name, "node1");
  EXPECT_EQ(view.Leader()->port, leader.port);
  EXPECT_EQ(view.Leader()->host, "127.0.0.1");
}

TEST_F(PatroniRunning, pause_lets_the_leader_be_restarted_by_hand_without_failover_and_resume_keeps_it_leader) {
  PatroniCluster& cluster = *cluster_;
  const PatroniNode& leader = cluster.Leader();
  const PatroniNode& replica = cluster.Replica();
  PatroniClient client = cluster.Client(0);
  const std::string timeline = Scalar(leader, "SELECT timeline_id::text FROM pg_control_checkpoint()");

  auto start = Clock::now();
  ASSERT_NO_THROW(client.Pause());
  Fact("pause_reflected_on_patched_member_ms", std::to_string(MillisSince(start)));
  EXPECT_TRUE(cluster.ClusterView().pause);
  EXPECT_TRUE(client.Cluster().pause);
  // The other member learns it from the DCS on its own loop.
  start = Clock::now();
  PatroniClient replica_client = cluster.Client(1);
  while (!replica_client.Member().pause && MillisSince(start) < 10000) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(replica_client.Member().pause);
  Fact("pause_reflected_on_other_member_ms", std::to_string(MillisSince(start)));

  auto files_before = ConfigFiles(leader);
  cluster.StopPostgresByHand(leader, "immediate");
  ASSERT_FALSE(cluster.PostgresRunning(leader));
  // Watch for longer than three Patroni loops: the leader key, and that nobody is promoted.
  start = Clock::now();
  long long key_gone_ms = -1;
  std::string stopped_state;
  while (MillisSince(start) < 6000) {
    auto view = cluster.ClusterView();
    EXPECT_TRUE(view.pause);
    if (auto* l = view.Leader()) {
      EXPECT_EQ(l->name, "node1") << "a failover while paused";
    } else if (key_gone_ms < 0) {
      key_gone_ms = MillisSince(start);
    }
    EXPECT_EQ(Scalar(replica, "SELECT pg_is_in_recovery()::text"), "true") << "the replica was promoted";
    stopped_state = client.Member().state;
    std::this_thread::sleep_for(200ms);
  }
  Fact("paused_leader_key_after_pg_stopped_by_hand",
       key_gone_ms < 0 ? "kept" : "released after " + std::to_string(key_gone_ms) + " ms");
  Fact("paused_stopped_member_state", stopped_state);
  EXPECT_EQ(stopped_state, "stopped");
  EXPECT_FALSE(cluster.PostgresRunning(leader)) << "Patroni started PostgreSQL while paused";

  start = Clock::now();
  cluster.StartPostgresByHand(leader);
  bool leader_again = false;
  while (!leader_again && MillisSince(start) < 20000) {
    auto view = cluster.ClusterView();
    leader_again = view.Leader() && view.Leader()->name == "node1" && view.Leader()->state == "running";
    if (!leader_again) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(leader_again) << "node1 did not take the leader key back while paused";
  Fact("paused_leader_key_after_pg_started_by_hand",
       leader_again ? "taken back " + std::to_string(MillisSince(start)) + " ms after pg_ctl start returned"
                    : "not taken back");
  // postmaster.pid starts with the postmaster's pid.
  const long postmaster = std::stol(ReadFile(JoinPath(leader.data_dir, "postmaster.pid")));
  EXPECT_FALSE(PathExists(JoinPath(leader.data_dir, "standby.signal")));
  EXPECT_FALSE(PathExists(JoinPath(leader.data_dir, "recovery.signal")));
  auto files_paused = ConfigFiles(leader);
  for (const auto& [name, text] : files_before)
    EXPECT_EQ(files_paused[name], text) << name << " changed while paused";

  start = Clock::now();
  ASSERT_NO_THROW(client.Resume());
  Fact("resume_reflected_on_patched_member_ms", std::to_string(MillisSince(start)));
  EXPECT_FALSE(client.Cluster().pause);
  ASSERT_NO_THROW(cluster.WaitForLeaderAndStreamingReplica(Clock::now() + 60s));
  // A couple of loops after resume, Patroni has had its chance to act on the hand-started server.
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(cluster.Leader().name, "node1");
  EXPECT_EQ(std::stol(ReadFile(JoinPath(leader.data_dir, "postmaster.pid"))), postmaster)
      << "Patroni restarted the server started by hand";
  EXPECT_EQ(Scalar(leader, "SELECT timeline_id::text FROM pg_control_checkpoint()"), timeline);
  EXPECT_EQ(Scalar(leader, "SELECT state FROM pg_stat_replication WHERE application_name = 'node2'"),
            "streaming");
  auto files_after = ConfigFiles(leader);
  bool rewritten = false;
  for (const auto& [name, text] : files_before) {
    if (files_after[name] != text) {
      rewritten = true;
      Fact("resume_rewrote_" + name, "yes");
    }
  }
  Fact("resume_rewrote_leader_config", rewritten ? "yes" : "no");
  EXPECT_FALSE(rewritten);
}

TEST_F(Patroni, member_stopped_while_paused_is_started_by_patroni_after_resume_with_its_files_rewritten) {
  PatroniCluster cluster;
  ASSERT_NO_THROW(cluster.WaitForLeaderAndStreamingReplica(Clock::now() + 120s));
  const PatroniNode& replica = cluster.Replica();
  PatroniClient client = cluster.Client(0);
  ASSERT_NO_THROW(client.Pause());
  auto replica_paused = [&] { return cluster.Client(1).Member().pause; };
  for (auto start = Clock::now(); !replica_paused() && MillisSince(start) < 10000;)
    std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(replica_paused());

  cluster.StopPostgresByHand(replica, "fast");
  // What a restore that replaced the data directory could leave: no standby.signal, a hand edit
  // in postgresql.conf and a setting of ours in postgresql.auto.conf.
  std::string standby_signal = JoinPath(replica.data_dir, "standby.signal");
  ASSERT_TRUE(PathExists(standby_signal));
  ASSERT_EQ(unlink(standby_signal.c_str()), 0);
  std::string conf = JoinPath(replica.data_dir, "postgresql.conf");
  std::string auto_conf = JoinPath(replica.data_dir, "postgresql.auto.conf");
  AtomicWriteFile(conf, ReadFile(conf) + "# su-hand-edit\n", 0600);
  AtomicWriteFile(auto_conf, ReadFile(auto_conf) + "work_mem = '7MB'  # su-hand-edit\n", 0600);
  ChownTree(conf, cluster.os_user());
  ChownTree(auto_conf, cluster.os_user());
  std::this_thread::sleep_for(3s);  // three loops
  // Usually a paused Patroni leaves it stopped; under load it was seen to start it anyway ("PAUSE:
  // changing primary_conninfo and restarting"), before the edits above. The agent's resync
  // accepts a standby that someone else started, so this is recorded, not asserted, and the
  // files are judged only when Patroni's own start came after the resume.
  const bool stayed_stopped = !cluster.PostgresRunning(replica);
  Fact("paused_patroni_left_a_stopped_replica_stopped", stayed_stopped ? "yes" : "no");

  ASSERT_NO_THROW(client.Resume());
  ASSERT_NO_THROW(cluster.WaitForLeaderAndStreamingReplica(Clock::now() + 60s));
  EXPECT_EQ(cluster.Leader().name, "node1");
  EXPECT_TRUE(cluster.PostgresRunning(replica));
  bool signal_back = PathExists(standby_signal);
  bool conf_rewritten = ReadFile(conf).find("su-hand-edit") == std::string::npos;
  bool auto_kept = ReadFile(auto_conf).find("su-hand-edit") != std::string::npos;
  Fact("patroni_start_recreates_standby_signal", signal_back ? "yes" : "no");
  Fact("patroni_start_rewrites_postgresql_conf", conf_rewritten ? "yes" : "no");
  Fact("patroni_start_keeps_postgresql_auto_conf", auto_kept ? "yes" : "no");
  if (stayed_stopped) {
    EXPECT_TRUE(signal_back);
    EXPECT_TRUE(conf_rewritten);
    EXPECT_TRUE(auto_kept);
    EXPECT_EQ(Scalar(replica, "SHOW work_mem"), "7MB");
  }
  EXPECT_EQ(Scalar(replica, "SELECT pg_is_in_recovery()::text"), "true");
}

// A rollback's shape, by hand while paused: the leader's data directory is replaced by a copy
// taken before a restore point, recovers to it with the WAL of the replaced directory and
// promotes onto a new timeline. The replica replayed past the restore point, so its history
// forked off; after resume Patroni must bring it back (pg_rewind, use_pg_rewind: true).
TEST_F(PatroniRunning,
       leader_recovered_to_a_restore_point_while_paused_keeps_the_lead_and_the_replica_follows_after_resume) {
  PatroniCluster& cluster = *cluster_;
  const PatroniNode& leader = cluster.Leader();
  const PatroniNode& replica = cluster.Replica();
  PatroniClient client = cluster.Client(0);
  PgConn(leader.ConnInfo()).Exec("CREATE TABLE marks (batch int)");
  ASSERT_NO_THROW(client.Pause());

  // The "snapshot": a copy of the stopped leader.
  const std::string snapshot = JoinPath(cluster.root(), "snapshot");
  cluster.StopPostgresByHand(leader, "fast");
  CopyTree(leader.data_dir, snapshot);
  cluster.StartPostgresByHand(leader);
  {
    PgConn conn(leader.ConnInfo());
    conn.Exec("INSERT INTO marks VALUES (1)");
    conn.Exec("SELECT pg_create_restore_point('su_rp')");
    conn.Exec("INSERT INTO marks VALUES (2)");
    conn.Exec("SELECT pg_switch_wal()");
  }
  auto start = Clock::now();
  while (Scalar(replica, "SELECT count(*)::text FROM marks") != "2" && MillisSince(start) < 30000)
    std::this_thread::sleep_for(100ms);
  ASSERT_EQ(Scalar(replica, "SELECT count(*)::text FROM marks"), "2") << "the replica did not replay batch 2";

  // The rollback: the replaced directory's WAL is the archive.
  cluster.StopPostgresByHand(leader, "immediate");
  const std::string replaced = leader.data_dir + ".replaced";
  ASSERT_EQ(rename(leader.data_dir.c_str(), replaced.c_str()), 0);
  CopyTree(snapshot, leader.data_dir);
  std::string auto_conf = JoinPath(leader.data_dir, "postgresql.auto.conf");
  AtomicWriteFile(auto_conf,
                  ReadFile(auto_conf) + "restore_command = 'cp " + replaced + "/pg_wal/%f \"%p\"'\n" +
                      "recovery_target_name = 'su_rp'\nrecovery_target_action = 'promote'\n",
                  0600);
  AtomicWriteFile(JoinPath(leader.data_dir, "recovery.signal"), "", 0600);
  ChownTree(leader.data_dir, cluster.os_user());
  start = Clock::now();
  cluster.StartPostgresByHand(leader);
  bool in_recovery_seen = false;
  std::string key_during_recovery = "not seen";
  while (Scalar(leader, "SELECT pg_is_in_recovery()::text") == "true" && MillisSince(start) < 60000) {
    in_recovery_seen = true;
    auto view = cluster.ClusterView();
    key_during_recovery = view.Leader() ? "held by " + view.Leader()->name : "released";
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(Scalar(leader, "SELECT pg_is_in_recovery()::text"), "false")
      << "no promotion at the restore point";
  if (in_recovery_seen) Fact("paused_leader_key_while_hand_started_leader_recovers", key_during_recovery);
  {
    PgConn conn(leader.ConnInfo());
    for (const char* name : {"restore_command", "recovery_target_name", "recovery_target_action"})
      conn.Exec(std::string("ALTER SYSTEM RESET ") + name);
    conn.Exec("SELECT pg_reload_conf()");
    EXPECT_EQ(conn.Exec("SELECT string_agg(batch::text, ',') FROM marks").Scalar(), "1");
    EXPECT_EQ(conn.Exec("SELECT timeline_id::text FROM pg_control_checkpoint()").Scalar(), "2");
  }
  start = Clock::now();
  bool leader_again = false;
  while (!leader_again && MillisSince(start) < 20000) {
    auto view = cluster.ClusterView();
    leader_again = view.Leader() && view.Leader()->name == "node1";
    if (!leader_again) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(leader_again);
  Fact("paused_leader_key_after_promotion_by_hand",
       leader_again ? "taken back " + std::to_string(MillisSince(start)) + " ms after promotion"
                    : "not taken back");
  auto paused_view = cluster.ClusterView();
  for (const auto& m : paused_view.members)
    Fact("paused_after_promotion_" + m.name,
         m.role + " " + m.state + " timeline " + std::to_string(m.timeline));

  ASSERT_NO_THROW(client.Resume());
  // Patroni 3.0.2 checks a replica's history against the leader's only when it starts or demotes
  // it: a replica left running keeps following a leader it cannot stream from ("no action").
  std::string left_running;
  try {
    cluster.WaitForLeaderAndStreamingReplica(Clock::now() + 15s);
    left_running = "streams again";
  } catch (const std::exception& e) {
    left_running = "does not stream 15 s after resume";
  }
  Fact("diverged_replica_left_running_after_resume", left_running);
  EXPECT_EQ(left_running, "does not stream 15 s after resume");
  // Stopped, Patroni starts it again, finds the fork and rewinds it.
  start = Clock::now();
  cluster.StopPostgresByHand(replica, "fast");
  ASSERT_NO_THROW(cluster.WaitForLeaderAndStreamingReplica(Clock::now() + 120s));
  Fact("diverged_replica_stopped_after_resume_streams_after_ms", std::to_string(MillisSince(start)));
  EXPECT_EQ(cluster.Leader().name, "node1");
  start = Clock::now();
  while (Scalar(replica, "SELECT count(*)::text FROM marks") != "1" && MillisSince(start) < 30000)
    std::this_thread::sleep_for(100ms);
  EXPECT_EQ(Scalar(replica, "SELECT string_agg(batch::text, ',') FROM marks"), "1");
  std::string replica_log = ReadFileOr(replica.log_file);
  bool rewound = replica_log.find("running pg_rewind from node1") != std::string::npos &&
                 replica_log.find("pg_rewind exit code=0") != std::string::npos;
  Fact("replica_rewound_by_patroni", rewound ? "yes" : "no");
  EXPECT_TRUE(rewound) << "the replica streams again, but not through pg_rewind";
}

TEST_F(Patroni, client_against_a_stopped_patroni_fails_naming_the_url) {
  PatroniCluster cluster;
  std::string url = cluster.RestUrl(1);
  cluster.Stop();
  PatroniClient client(url, 2s);
  try {
    client.Pause();
    FAIL() << "pause succeeded against a stopped Patroni";
  } catch (const PatroniError& e) {
    EXPECT_EQ(e.status(), 0);
    EXPECT_NE(std::string(e.what()).find(url + "/config"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace safe_upgrade::testing
