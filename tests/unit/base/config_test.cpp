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

// agent.role and the primary's [[standby]] list.
class StandbyConfig : public FakeDataDir {
 protected:
  std::string Toml(const std::string& agent_lines, const std::string& tail = "") const {
    return "[cluster]\ndata_directory = \"" + dir_ +
           "\"\n[agent]\nlisten = \"unix:/tmp/x/agent.sock\"\nsnapshot_dir = \"/tmp/s\"\nwal_archive_dir = \"/tmp/w\"\n" +
           agent_lines + tail;
  }
  // The message of the ConfigError that parsing and validating text throws ("" when none).
  std::string ErrorOf(const std::string& text) const {
    try {
      ValidateAgentConfig(ParseAgentConfig(text));
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(StandbyConfig, a_primary_lists_its_standby_agents_and_they_round_trip) {
  AgentConfig c = ParseAgentConfig(Toml("", "[[standby]]\nname = \"replica-1\"\nagent = \"unix:/run/a.sock\"\n"
                                            "[[standby]]\nname = \"15/main\"\nagent = \"unix:/run/b.sock\"\n"));
  EXPECT_NO_THROW(ValidateAgentConfig(c));
  EXPECT_EQ(c.role, "primary");
  ASSERT_EQ(c.standbys.size(), 2u);
  EXPECT_EQ(c.standbys[1].name, "15/main");
  AgentConfig back = ParseAgentConfig(RenderAgentConfig(c));
  ASSERT_EQ(back.standbys.size(), 2u);
  EXPECT_EQ(back.standbys[0].agent, "unix:/run/a.sock");
  EXPECT_FALSE(back.IsStandby());
}

TEST_F(StandbyConfig, a_standby_role_round_trips) {
  AgentConfig c = ParseAgentConfig(Toml("role = \"standby\"\n"));
  EXPECT_TRUE(c.IsStandby());
  EXPECT_TRUE(ParseAgentConfig(RenderAgentConfig(c)).IsStandby());
}

TEST_F(StandbyConfig, bad_values_are_refused_with_the_key_named) {
  EXPECT_NE(ErrorOf(Toml("role = \"replica\"\n")).find("agent.role"), std::string::npos);
  // A name that is not an application_name, or one that could smuggle anything else.
  for (const char* name : {"", "a b", "x'; DROP TABLE t; --", "-dash", "tab\tname"})
    EXPECT_NE(ErrorOf(Toml("", std::string("[[standby]]\nname = \"") + name + "\"\nagent = \"unix:/a\"\n"))
                  .find("standby[0].name"),
              std::string::npos)
        << name;
  EXPECT_NE(ErrorOf(Toml("", "[[standby]]\nname = \"s1\"\n")).find("standby[0].agent: missing"), std::string::npos);
  EXPECT_NE(ErrorOf(Toml("", "[[standby]]\nname = \"s1\"\nagent = \"unix:/a\"\n[[standby]]\nname = \"s1\"\n"
                             "agent = \"unix:/b\"\n"))
                .find("listed twice"),
            std::string::npos);
  EXPECT_NE(ErrorOf("standby = \"s1\"\n" + Toml("")).find("array of tables"), std::string::npos);
  // A TCP standby agent is reached with this agent's client certificate: none, no TCP.
  EXPECT_NE(ErrorOf(Toml("", "[[standby]]\nname = \"s1\"\nagent = \"10.0.0.2:7443\"\n")).find("tls.ca_file"),
            std::string::npos);
  // A standby's agent does not call standbys of its own.
  EXPECT_NE(ErrorOf(Toml("role = \"standby\"\n", "[[standby]]\nname = \"s1\"\nagent = \"unix:/a\"\n"))
                .find("lists no standbys"),
            std::string::npos);
}

TEST_F(StandbyConfig, patroni_rest_api_is_a_bare_http_url_on_the_primary) {
  AgentConfig c = ParseAgentConfig(Toml("", "[patroni]\nrest_api = \"http://127.0.0.1:8008\"\n"));
  EXPECT_NO_THROW(ValidateAgentConfig(c));
  EXPECT_EQ(ParseAgentConfig(RenderAgentConfig(c)).patroni.rest_api, "http://127.0.0.1:8008");
  for (const char* bad : {"127.0.0.1:8008", "ftp://h:1", "http://h:8008/config", "http://h", "http://u@h:1",
                          "http://h:1?pause=true", "file:///etc/passwd"})
    EXPECT_NE(ErrorOf(Toml("", std::string("[patroni]\nrest_api = \"") + bad + "\"\n")).find("patroni.rest_api"),
              std::string::npos)
        << bad;
  EXPECT_NE(ErrorOf(Toml("role = \"standby\"\n", "[patroni]\nrest_api = \"http://h:8008\"\n"))
                .find("only the primary's agent"),
            std::string::npos);
}

}  // namespace
}  // namespace safe_upgrade
