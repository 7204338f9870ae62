// Unit tests of the agent's configuration parsing and validation, and of job id validation.
#include "base/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>

#include "base/fs_util.h"
#include "base/job.h"

namespace safe_upgrade {
namespace {

std::string ValidToml(const std::string& data_dir) {
  return "[cluster]\ndata_directory = \"" + data_dir +
         "\"\nport = 5432\n[agent]\nlisten = \"unix:/tmp/x/agent.sock\"\nsnapshot_dir = \"/tmp/s\"\n"
         "wal_archive_dir = \"/tmp/w\"\n";
}

// body must throw a ConfigError whose message names part; failure says what was accepted.
void ExpectConfigError(const std::function<void()>& body, const std::string& part,
                       const char* failure = "expected ConfigError") {
  try {
    body();
    FAIL() << failure;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

class FakeDataDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/su-unit-XXXXXX";
    dir_ = mkdtemp(tmpl);
    AtomicWriteFile(JoinPath(dir_, "PG_VERSION"), "15\n");
  }
  void TearDown() override { RemoveTree(dir_); }
  std::string dir_;
};

TEST_F(FakeDataDir, valid_config_parses_with_defaults) {
  AgentConfig c = ParseAgentConfig(ValidToml(dir_));
  EXPECT_NO_THROW(ValidateAgentConfig(c));
  EXPECT_EQ(c.database, "postgres");
  EXPECT_EQ(c.control, "pg_ctl");
  EXPECT_EQ(c.snapshot_retention, 3);
  EXPECT_EQ(c.work_dir, "/tmp/work");
}

TEST_F(FakeDataDir, render_then_parse_round_trips) {
  AgentConfig c = ParseAgentConfig(ValidToml(dir_));
  c.backup_max_rate = "100M";
  c.snapshot_retention = 5;
  AgentConfig back = ParseAgentConfig(RenderAgentConfig(c));
  EXPECT_EQ(back.data_directory, c.data_directory);
  EXPECT_EQ(back.backup_max_rate, "100M");
  EXPECT_EQ(back.snapshot_retention, 5);
  EXPECT_EQ(back.listen, c.listen);
}

TEST(AgentConfig, missing_data_directory_names_the_key) {
  AgentConfig c = ParseAgentConfig("[agent]\nlisten = \"unix:/tmp/a.sock\"\n");
  ExpectConfigError([&] { ValidateAgentConfig(c); }, "cluster.data_directory");
}

TEST(AgentConfig, data_directory_without_pg_version_is_refused) {
  AgentConfig c = ParseAgentConfig(ValidToml("/tmp"));
  ExpectConfigError([&] { ValidateAgentConfig(c); }, "not a PostgreSQL data directory");
}

TEST(AgentConfig, wrong_type_names_the_key) {
  ExpectConfigError([&] { ParseAgentConfig("[cluster]\nport = \"fifty\"\n"); }, "cluster.port");
}

TEST(AgentConfig, invalid_toml_reports_the_line) {
  ExpectConfigError([&] { ParseAgentConfig("[cluster]\ndata_directory = \n", "agent.toml"); }, "line 2");
}

TEST_F(FakeDataDir, tcp_without_tls_is_refused_unless_insecure) {
  AgentConfig c = ParseAgentConfig(ValidToml(dir_));
  c.listen = "127.0.0.1:7777";
  EXPECT_THROW(ValidateAgentConfig(c), ConfigError);
  c.insecure_tcp = true;
  EXPECT_NO_THROW(ValidateAgentConfig(c));
}

TEST_F(FakeDataDir, agent_binary_is_the_path_started_from_without_following_links) {
  // A packaged binary is often a link to a versioned file that the next upgrade removes.
  std::string versioned = JoinPath(dir_, "safe-upgrade-agent-1.2");
  AtomicWriteFile(versioned, "#!/bin/sh\n", 0755);
  std::string link = JoinPath(dir_, "safe-upgrade-agent");
  ASSERT_EQ(symlink(versioned.c_str(), link.c_str()), 0);
  EXPECT_EQ(ResolveStartedFrom(link), link);
  ASSERT_EQ(chdir(dir_.c_str()), 0);
  EXPECT_EQ(ResolveStartedFrom("./safe-upgrade-agent"), link);
  std::string old_path = getenv("PATH") ? getenv("PATH") : "";
  setenv("PATH", ("/nonexistent:" + dir_).c_str(), 1);
  EXPECT_EQ(ResolveStartedFrom("safe-upgrade-agent"), link);
  EXPECT_EQ(ResolveStartedFrom("no-such-agent"), "");
  setenv("PATH", old_path.c_str(), 1);
  ASSERT_EQ(chdir("/"), 0);
}

TEST_F(FakeDataDir, agent_binary_must_be_an_absolute_executable) {
  AgentConfig c = ParseAgentConfig(ValidToml(dir_) + "agent_binary = \"bin/safe-upgrade-agent\"\n");
  ExpectConfigError([&] { ValidateAgentConfig(c); }, "agent.agent_binary",
                    "a relative agent_binary was accepted");
}

TEST(JobId, accepts_known_kinds_with_positive_ids) {
  JobKind kind;
  int64_t id = 0;
  ASSERT_TRUE(ParseJobId("snapshot-42", kind, id));
  EXPECT_EQ(JobKindName(kind), "snapshot");
  EXPECT_EQ(id, 42);
  EXPECT_TRUE(ParseJobId("rollback-1", kind, id));
}

TEST(JobId, rejects_traversal_overlong_and_unknown_kinds) {
  JobKind kind;
  int64_t id = 0;
  for (const char* bad : {"", "snapshot-0", "snapshot--1", "../etc/passwd", "snapshot-1/../../x", "shell-1",
                          "snapshot-1 ", "snapshot-99999999999999999999999", "snapshot-1\n"}) {
    EXPECT_FALSE(ParseJobId(bad, kind, id)) << bad;
  }
  EXPECT_FALSE(ParseJobId(std::string(100, 'a'), kind, id));
}

std::string PgBackRestToml(const std::string& data_dir, const std::string& backend_lines) {
  return "[cluster]\ndata_directory = \"" + data_dir +
         "\"\n[agent]\nlisten = \"unix:/tmp/x/agent.sock\"\nsnapshot_dir = \"/tmp/s\"\n[backend]\n" +
         backend_lines;
}

TEST_F(FakeDataDir, the_pgbackrest_backend_needs_a_stanza_but_no_wal_archive_dir) {
  AgentConfig c = ParseAgentConfig(PgBackRestToml(dir_, "kind = \"pgbackrest\"\nstanza = \"main\"\n"));
  EXPECT_NO_THROW(ValidateAgentConfig(c));
  EXPECT_TRUE(c.backend.IsPgBackRest());
  EXPECT_EQ(c.backend.backup_type, "incr");
  EXPECT_TRUE(c.backend.backup_after_success);
  EXPECT_EQ(c.wal_archive_dir, "");
  ExpectConfigError(
      [&] { ValidateAgentConfig(ParseAgentConfig(PgBackRestToml(dir_, "kind = \"pgbackrest\"\n"))); },
      "backend.stanza: missing");
  // The local backend still needs its own archive.
  ExpectConfigError(
      [&] { ValidateAgentConfig(ParseAgentConfig(PgBackRestToml(dir_, "kind = \"local\"\n"))); },
      "agent.wal_archive_dir");
}

TEST_F(FakeDataDir, backend_values_outside_their_sets_are_refused_with_the_key_named) {
  ExpectConfigError([&] { ParseAgentConfig(PgBackRestToml(dir_, "kind = \"barman\"\n")); }, "backend.kind");
  ExpectConfigError(
      [&] {
        ParseAgentConfig(
            PgBackRestToml(dir_, "kind = \"pgbackrest\"\nstanza = \"m\"\nbackup_type = \"snap\"\n"));
      },
      "backend.backup_type");
  // A stanza is passed as one argument, never through a shell; still only pgBackRest's characters.
  for (const char* stanza : {"main; rm -rf /", "--config=/etc/x", "a b", "$(id)", ""})
    ExpectConfigError(
        [&] {
          ValidateAgentConfig(ParseAgentConfig(
              PgBackRestToml(dir_, "kind = \"pgbackrest\"\nstanza = \"" + std::string(stanza) + "\"\n")));
        },
        "backend.stanza", stanza);
  ExpectConfigError(
      [&] {
        ValidateAgentConfig(ParseAgentConfig(
            PgBackRestToml(dir_, "kind = \"pgbackrest\"\nstanza = \"main\"\nconfig = \"relative.conf\"\n")));
      },
      "backend.config");
  ExpectConfigError(
      [&] { ValidateAgentConfig(ParseAgentConfig(ValidToml(dir_) + "[backend]\nstanza = \"main\"\n")); },
      "kind = \"pgbackrest\"");
}

TEST_F(FakeDataDir, a_pgbackrest_backend_renders_and_parses_back) {
  AgentConfig c = ParseAgentConfig(PgBackRestToml(
      dir_,
      "kind = \"pgbackrest\"\nstanza = \"main\"\nbackup_type = \"diff\"\nbackup_after_success = false\n"));
  AgentConfig back = ParseAgentConfig(RenderAgentConfig(c));
  EXPECT_EQ(back.backend.kind, "pgbackrest");
  EXPECT_EQ(back.backend.stanza, "main");
  EXPECT_EQ(back.backend.backup_type, "diff");
  EXPECT_FALSE(back.backend.backup_after_success);
  EXPECT_EQ(back.wal_archive_dir, "");
}

}  // namespace
}  // namespace safe_upgrade
