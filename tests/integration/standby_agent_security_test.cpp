// Hostile or misdirected calls to standby agents and to the primary's agent: a standby's agent
// runs none of the primary's jobs, re-syncs its standby only when its own (replicated) catalog
// says the upgrade may have touched production, and answers nothing for an unknown upgrade; a
// primary's agent runs no standby job.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "fixtures.h"
#include "pki.h"
#include "postgres/cluster.h"
#include "rpc/agent_client.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

TEST(StandbyAgentSecurity, each_agent_refuses_the_other_roles_calls_and_a_resync_that_is_not_due) {
  TestCluster c({.standbys = 1});
  const SandboxInfo& standby = c.info().standbys[0];
  auto standby_agent = AgentClient::Create("unix:" + standby.agent_socket);
  auto primary_agent = AgentClient::Create("unix:" + c.info().agent_socket);
  // An upgrade that succeeded: no rollback, so no resync is ever due for it.
  c.Exec("CREATE EXTENSION su_fixture_counter VERSION '1.0'");
  int64_t id = c.BeginUpgrade("su_fixture_counter", "1.1");
  ASSERT_EQ(c.WaitForTerminalState(id), "succeeded") << c.Events(id);
  ASSERT_TRUE(WaitUntil([&] {
    PgConn conn(standby.ConnInfo());
    return conn.Exec("SELECT state FROM safe_upgrade.upgrades WHERE id = " + std::to_string(id)).Scalar() == "succeeded";
  },
                        60s));

  std::string job;
  // The standby's agent runs none of the primary's jobs.
  for (JobKind kind : kAllJobKinds) {
    AgentCallError e = standby_agent->StartJob(kind, id, job);
    EXPECT_TRUE(e.refused) << JobKindName(kind) << ": " << e.message;
    EXPECT_NE(e.message.find("serves a standby"), std::string::npos) << e.message;
  }
  // A resync is refused unless the standby's catalog says the upgrade may have touched production.
  AgentCallError e = standby_agent->StartJob(JobKind::kResyncStandby, id, job);
  EXPECT_TRUE(e.refused) << e.message;
  EXPECT_NE(e.message.find("is succeeded in this standby's catalog"), std::string::npos) << e.message;
  EXPECT_TRUE(standby_agent->StartJob(JobKind::kResyncStandby, 999999, job).not_found);
  EXPECT_TRUE(standby_agent->StartJob(JobKind::kResyncStandby, 0, job).invalid);
  EXPECT_TRUE(standby_agent->StartJob(JobKind::kResyncStandby, -5, job).invalid);
  // The standby kept streaming: nothing was stopped.
  EXPECT_EQ(c.Scalar("SELECT state FROM pg_stat_replication WHERE application_name = 'standby1'"), "streaming");

  // The files check answers for known upgrades only, and only on a standby's agent.
  AgentStandbyFiles files;
  EXPECT_TRUE(standby_agent->CheckStandbyFiles(999999, files).not_found);
  EXPECT_TRUE(standby_agent->CheckStandbyFiles(0, files).invalid);
  AgentCallError on_primary = primary_agent->CheckStandbyFiles(id, files);
  EXPECT_TRUE(on_primary.refused) << on_primary.message;

  // The primary's agent runs no standby job.
  AgentCallError resync_on_primary = primary_agent->StartJob(JobKind::kResyncStandby, id, job);
  EXPECT_TRUE(resync_on_primary.refused) << resync_on_primary.message;
  EXPECT_NE(resync_on_primary.message.find("serves a primary"), std::string::npos) << resync_on_primary.message;

  // The primary's agent reports its standby agent as it pinged it.
  AgentPing ping;
  ASSERT_TRUE(primary_agent->Ping(ping).ok);
  EXPECT_EQ(ping.role, "primary");
  auto standbys = nlohmann::json::parse(ping.standbys_json);
  ASSERT_EQ(standbys.size(), 1u) << ping.standbys_json;
  EXPECT_EQ(standbys[0]["name"], "standby1");
  EXPECT_EQ(standbys[0]["reachable"], true) << ping.standbys_json;
  EXPECT_EQ(standbys[0]["role"], "standby");
  EXPECT_EQ(standbys[0]["system_identifier_matches"], true);
  EXPECT_EQ(standbys[0]["in_recovery"], true);
}

// Across hosts the primary's agent reaches a standby's over TCP with mTLS: the standby agent
// serves with a certificate of the CA, the primary's presents its own [tls] certificate as a
// client. A rollback's resync runs through it like through the Unix socket.
TEST(StandbyAgentSecurity, the_primary_reaches_a_standby_agent_over_tcp_with_client_certificates) {
  TestCluster c({.standbys = 1});
  const SandboxInfo& standby = c.info().standbys[0];
  Pki pki = MakePki(c);
  int port = FindFreePort();
  std::string address = "127.0.0.1:" + std::to_string(port);
  AgentConfig standby_config = standby.agent_config;
  standby_config.listen = address;
  standby_config.tls_ca_file = pki.ca;
  standby_config.tls_cert_file = pki.server_cert;
  standby_config.tls_key_file = pki.server_key;
  SandboxStopAgent(standby, SIGTERM);
  AtomicWriteFile(standby.agent_config_path, RenderAgentConfig(standby_config), 0644);
  SandboxStartAgent(standby);
  // Without a client certificate the standby's agent answers nothing.
  AgentPing ping;
  EXPECT_FALSE(AgentClient::Create(address, 3000, {pki.ca, "", ""})->Ping(ping).ok);

  AgentConfig primary_config = c.info().agent_config;
  primary_config.standbys = {{"standby1", address}};
  primary_config.tls_ca_file = pki.ca;
  primary_config.tls_cert_file = pki.client_cert;
  primary_config.tls_key_file = pki.client_key;
  c.StopAgent();
  AtomicWriteFile(c.info().agent_config_path, RenderAgentConfig(primary_config), 0644);
  c.StartAgent();
  c.WaitForWorkerToReachAgent();
  auto primary_agent = AgentClient::Create("unix:" + c.info().agent_socket);
  ASSERT_TRUE(WaitUntil([&] {
    AgentPing p;
    return primary_agent->Ping(p).ok && nlohmann::json::parse(p.standbys_json)[0].value("reachable", false);
  },
                        30s));

  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c);
  ASSERT_TRUE(WriteMarkersAroundDoomedApply(c, h, c.Connect()));
  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);
  EXPECT_EQ(c.Scalar("SELECT outcome FROM safe_upgrade.upgrade_standbys WHERE upgrade_id = $1::bigint",
                     {std::to_string(h.id)}),
            "rewound");
}

}  // namespace
}  // namespace safe_upgrade::testing
