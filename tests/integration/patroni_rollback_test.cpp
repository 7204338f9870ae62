// A rollback in a Patroni-managed cluster (tests/harness/patroni_cluster.h with agents): the
// primary's agent pauses Patroni before the restore point, rolls the leader back with pg_ctl while
// Patroni stays out of the way, has the replica's agent rewind the replica onto the leader's new
// timeline, and resumes Patroni once the upgrade has ended. The cluster must come out of it as it
// went in: the same leader, no failover at any moment, both members running and streaming.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "patroni_cluster.h"
#include "postgres/pg_conn.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// The first value of a query on a fresh connection to node ("" for NULL or no row).
std::string Query(const PatroniNode& node, const std::string& sql,
                  const std::vector<std::optional<std::string>>& params = {}) {
  PgConn conn(node.ConnInfo(), std::chrono::seconds(5));
  auto r = conn.Exec(sql, params);
  return r.Empty() || !r.rows[0][0] ? "" : *r.rows[0][0];
}

std::string State(const PatroniNode& leader, int64_t id) {
  return Query(leader, "SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
}

// Polls the upgrade's state on the leader (through its restarts) until pred accepts it.
std::string WaitForState(const PatroniNode& leader, int64_t id,
                         const std::function<bool(const std::string&)>& pred, std::chrono::seconds timeout) {
  std::string state = "timeout";
  WaitUntil([&] { return pred(state = State(leader, id)); }, timeout, 200ms);
  return state;
}

std::string Events(const PatroniNode& leader, int64_t id) {
  return Query(leader,
               "SELECT string_agg(phase || ' ' || level || ' ' || message, E'\\n' ORDER BY id) FROM "
               "safe_upgrade.events WHERE upgrade_id = $1::bigint",
               {std::to_string(id)});
}

// The timeline the node writes (or replays) WAL on now.
int CurrentTimeline(const PatroniNode& node) {
  return static_cast<int>(std::stoul(
      Query(node, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").substr(0, 8), nullptr, 16));
}

// GET /cluster every 200 ms in a thread of its own, for what happens while nobody else looks: who
// held the leader key, and whether Patroni was paused.
class ClusterSampler {
 public:
  explicit ClusterSampler(const PatroniCluster& cluster)
      : thread_([this, &cluster] {
          while (!stop_) {
            try {
              auto view = cluster.ClusterView();
              std::lock_guard<std::mutex> lock(mutex_);
              ++samples_;
              if (view.pause) paused_seen_ = true;
              if (auto* leader = view.Leader()) leaders_.insert(leader->name);
            } catch (const std::exception&) {
              // Both REST APIs unreachable for a moment: nothing to record.
            }
            std::this_thread::sleep_for(200ms);
          }
        }) {}
  ~ClusterSampler() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::set<std::string> leaders() {
    std::lock_guard<std::mutex> lock(mutex_);
    return leaders_;
  }
  bool paused_seen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return paused_seen_;
  }
  int samples() {
    std::lock_guard<std::mutex> lock(mutex_);
    return samples_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::set<std::string> leaders_;
  bool paused_seen_ = false;
  int samples_ = 0;
  std::thread thread_;  // last: it starts once the members above exist
};

TEST(PatroniRollback,
     a_rolled_back_upgrade_ends_with_the_same_leader_no_failover_and_both_members_streaming) {
  std::string why = PatroniUnavailable();
  if (!why.empty()) GTEST_SKIP() << "needs Patroni and etcd, which cannot run here: " << why;
  PatroniClusterOptions options;
  options.with_agents = true;
  PatroniCluster cluster(options);
  const PatroniNode& leader = cluster.Leader();
  const PatroniNode& replica = cluster.Replica();
  ASSERT_EQ(leader.name, "node1");

  // su_rollback_fixture 1.0, whose 2.0 fails the health check once a poison value exists (as
  // PrepareRollbackFixture, on the leader; it replicates).
  {
    PgConn conn(leader.ConnInfo());
    conn.ExecScript(
        "CREATE EXTENSION safe_upgrade; CREATE EXTENSION su_rollback_fixture VERSION '1.0';"
        "CREATE TABLE marks (batch int, n int); CREATE TABLE poison (v int);");
    conn.Exec(
        "SELECT safe_upgrade.add_health_check('values_still_valid', "
        "'SELECT coalesce(bool_and(su_rb_validate(v)), true) FROM poison', 'su_rollback_fixture')");
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Query(replica, "SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'") ==
               "1.0";
      },
      60s));
  // The leader's worker checks its agent on its own schedule; begin() needs it reachable.
  ASSERT_TRUE(WaitUntil(
      [&] { return Query(leader, "SELECT reachable::text FROM safe_upgrade.agent_status()") == "true"; }, 60s,
      200ms))
      << Query(leader, "SELECT last_error FROM safe_upgrade.agent_status()");
  const int timeline_before = CurrentTimeline(leader);

  ClusterSampler sampler(cluster);
  const int64_t id =
      std::stoll(Query(leader, "SELECT safe_upgrade.begin('su_rollback_fixture', '2.0', $1::jsonb)",
                       {R"({"require_approval": true, "lock_timeout": "500ms", "max_lock_retries": 100})"}));
  const std::string sid = std::to_string(id);
  ASSERT_EQ(WaitForState(
                leader, id, [](const std::string& s) { return s == "awaiting_approval"; }, 300s),
            "awaiting_approval")
      << Events(leader, id);
  // A session holds the lock the upgrade script needs, so rows can be written after the restore
  // point; batch 1 and the poison value come before it.
  auto blocker = std::make_unique<PgConn>(leader.ConnInfo());
  blocker->ExecScript("BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE;");
  auto writer = std::make_unique<PgConn>(leader.ConnInfo());
  writer->Exec("INSERT INTO marks SELECT 1, g FROM generate_series(1, 100) g");
  writer->Exec("INSERT INTO poison VALUES (1000)");
  writer->Exec("SELECT safe_upgrade.approve($1::bigint)", {sid});
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Query(leader, "SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                     {sid}) == "1";
      },
      300s))
      << "no restore point\n"
      << Events(leader, id);
  writer->Exec("INSERT INTO marks SELECT 2, g FROM generate_series(1, 100) g");
  ASSERT_EQ(WaitForState(
                leader, id, [](const std::string& s) { return s == "applying"; }, 120s),
            "applying")
      << Events(leader, id);
  writer.reset();
  blocker->ExecScript("COMMIT");
  blocker.reset();

  static const std::set<std::string> terminal = {"succeeded",   "validated",       "blocked",  "failed",
                                                 "rolled_back", "rollback_failed", "cancelled"};
  const std::string state = WaitForState(
      leader, id, [](const std::string& s) { return terminal.count(s) > 0; }, 600s);
  ASSERT_TRUE(terminal.count(state)) << Events(leader, id);
  // Not an ASSERT: after a failed rollback, what Patroni made of the cluster is the rest of the story.
  EXPECT_EQ(state, "rolled_back") << Events(leader, id);
  // The agent resumes Patroni once it sees the upgrade ended.
  EXPECT_TRUE(WaitUntil([&] { return !cluster.ClusterView().pause; }, 60s, 200ms))
      << "Patroni is still paused after the upgrade ended\n"
      << Events(leader, id);
  EXPECT_NO_THROW(cluster.WaitForLeaderAndStreamingReplica(std::chrono::steady_clock::now() + 120s));
  // A few loops of a resumed Patroni, in which it could still have failed over or restarted.
  std::this_thread::sleep_for(3s);
  sampler.Stop();

  // No other member ever held the leader key, and Patroni was paused while the upgrade ran.
  EXPECT_GT(sampler.samples(), 0);
  EXPECT_EQ(sampler.leaders(), std::set<std::string>{"node1"});
  EXPECT_TRUE(sampler.paused_seen()) << "the sampler never saw Patroni paused";

  // The same leader, one timeline further; both members running; Patroni not paused.
  auto view = cluster.ClusterView();
  EXPECT_FALSE(view.pause);
  ASSERT_NE(view.Leader(), nullptr);
  EXPECT_EQ(view.Leader()->name, "node1");
  const int timeline_after = CurrentTimeline(leader);
  EXPECT_EQ(timeline_after, timeline_before + 1);
  EXPECT_EQ(view.Leader()->timeline, timeline_after);
  ASSERT_EQ(view.members.size(), 2u);
  for (const auto& member : view.members)
    EXPECT_TRUE(member.state == "running" || member.state == "streaming")
        << member.name << " is " << member.state;

  // The replica streams from the leader on the new timeline.
  EXPECT_EQ(Query(replica, "SELECT pg_is_in_recovery()::text"), "true");
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Query(replica,
                     "SELECT received_tli::text FROM pg_stat_wal_receiver WHERE status = 'streaming'") ==
               std::to_string(timeline_after);
      },
      60s))
      << "the replica does not stream on timeline " << timeline_after;
  EXPECT_EQ(Query(leader, "SELECT state FROM pg_stat_replication WHERE application_name = 'node2'"),
            "streaming");

  // Both nodes hold exactly what was there before the restore point, at the old version.
  for (const PatroniNode* node : {&leader, &replica}) {
    EXPECT_EQ(Query(*node, "SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"),
              "1.0")
        << node->name;
    EXPECT_EQ(Query(*node, "SELECT string_agg(DISTINCT batch::text, ',') FROM marks"), "1") << node->name;
    EXPECT_EQ(Query(*node, "SELECT count(*) FROM marks"), "100") << node->name;
  }
  // A row written on the leader now reaches the replica.
  PgConn(leader.ConnInfo())
      .ExecScript("CREATE TABLE after_rollback (marker text); INSERT INTO after_rollback VALUES ('m')");
  EXPECT_TRUE(WaitUntil([&] { return Query(replica, "SELECT count(*) FROM after_rollback") == "1"; }, 60s))
      << "a row written on the leader after the rollback did not reach the replica";

  json standbys = json::parse(Query(leader,
                                    "SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY name), '[]')::text FROM "
                                    "safe_upgrade.upgrade_standbys s WHERE upgrade_id = $1::bigint",
                                    {sid}));
  ASSERT_EQ(standbys.size(), 1u) << standbys.dump(2);
  EXPECT_EQ(standbys[0]["name"], "node2");
  // Rewound, not re-cloned: a re-clone copies the whole cluster again. Patroni's primary_conninfo
  // connects as its replication user, which it creates without the rights pg_rewind needs.
  EXPECT_EQ(standbys[0]["outcome"], "rewound") << standbys[0].dump(2);
  if (::testing::Test::HasFailure())
    std::cerr << "events of upgrade " << id << ":\n" << Events(leader, id) << "\n";
}

}  // namespace
}  // namespace safe_upgrade::testing
