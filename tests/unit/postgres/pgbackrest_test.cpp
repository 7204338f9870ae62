// Unit tests of what the agent reads from pgBackRest (info's JSON) and of the commands it builds.
#include "postgres/pgbackrest.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

// As pgBackRest 2.45 prints `info --output=json` for a stanza with a full and an incremental backup.
const char* const kInfo = R"([{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1",
  "max":"000000010000000000000005","min":"000000010000000000000001"}],
 "backup":[
  {"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},
   "error":false,"info":{"delta":22992559,"repository":{"delta":3043464,"size":3043464},"size":22992559},
   "label":"20261202-114132F","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,"reference":null,
   "timestamp":{"start":1796211692,"stop":1796211695},"type":"full"},
  {"archive":{"start":"000000020000000000000005","stop":"000000020000000000000005"},
   "error":true,"info":{"delta":18194697,"repository":{"delta":178722,"size":3060428},"size":39777966},
   "label":"20261202-114132F_20261202-114136I","lsn":{"start":"0/5000028","stop":"0/5000100"},
   "prior":"20261202-114132F","reference":["20261202-114132F"],
   "timestamp":{"start":1796211696,"stop":1796211697},"type":"incr"}],
 "cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7714670465829668884,"version":"15"}],
 "name":"main","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],
 "status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}])";

TEST(PgBackRestInfo, backups_are_read_with_their_labels_lsns_sizes_and_timelines) {
  PgBackRestStanza s = ParsePgBackRestInfo(kInfo, "main");
  EXPECT_TRUE(s.ok);
  EXPECT_EQ(s.status, "ok");
  EXPECT_EQ(s.system_identifier, 7714670465829668884ull);
  EXPECT_EQ(s.archive_id, "15-1");
  EXPECT_EQ(s.archive_max, "000000010000000000000005");
  ASSERT_EQ(s.backups.size(), 2u);
  const PgBackRestBackup& full = s.backups[0];
  EXPECT_EQ(full.label, "20261202-114132F");
  EXPECT_EQ(full.type, "full");
  EXPECT_EQ(full.prior, "");
  EXPECT_EQ(full.start_lsn, "0/2000028");
  EXPECT_EQ(full.timeline, 1u);
  EXPECT_EQ(full.repo_delta_bytes, 3043464u);
  const PgBackRestBackup& incr = s.backups[1];
  EXPECT_EQ(incr.prior, "20261202-114132F");
  EXPECT_EQ(incr.timeline, 2u);
  EXPECT_TRUE(incr.error);
  EXPECT_EQ(incr.size_bytes, 39777966u);
  EXPECT_EQ(incr.stopped_at, 1796211697);
  EXPECT_NE(s.Find("20261202-114132F_20261202-114136I"), nullptr);
  EXPECT_EQ(s.Find("nope"), nullptr);
}

TEST(PgBackRestInfo, an_unknown_stanza_or_text_that_is_not_json_is_an_error) {
  EXPECT_THROW(ParsePgBackRestInfo(kInfo, "other"), PgBackRestError);
  EXPECT_THROW(ParsePgBackRestInfo("ERROR: [055]: unable to load info file", "main"), PgBackRestError);
  EXPECT_THROW(ParsePgBackRestInfo("{}", "main"), PgBackRestError);
}

TEST(PgBackRestInfo, a_stanza_without_backups_is_read_as_such) {
  PgBackRestStanza s = ParsePgBackRestInfo(
      R"([{"archive":[],"backup":[],"db":[],"name":"main","repo":[],"status":{"code":2,"message":"no valid backups"}}])",
      "main");
  EXPECT_FALSE(s.ok);
  EXPECT_EQ(s.status, "no valid backups");
  EXPECT_TRUE(s.backups.empty());
  EXPECT_TRUE(s.Readable());
}

TEST(PgBackRestInfo, a_repository_that_cannot_be_read_is_not_taken_for_one_without_the_backup) {
  // pgBackRest prints an unreadable repository as a status with exit code 0 and no backups.
  PgBackRestStanza s = ParsePgBackRestInfo(
      R"([{"archive":[],"backup":[],"db":[],"name":"main","repo":[{"cipher":"none","key":1,)"
      R"("status":{"code":99,"message":"[FileOpenError] unable to open file"}}],)"
      R"("status":{"code":99,"message":"other"}}])",
      "main");
  EXPECT_FALSE(s.Readable());
  EXPECT_EQ(s.status_code, 99);
}

TEST(PgBackRestCommands, restore_command_quotes_every_word_and_names_the_recovering_directory) {
  AgentConfig config;
  config.backend.kind = "pgbackrest";
  config.backend.stanza = "main";
  config.backend.config = "/etc/pg backrest/it's.conf";
  std::string cmd = PgBackRest(config).RestoreCommand("/srv/data.ready-1");
  EXPECT_EQ(cmd,
            "'pgbackrest' '--config=/etc/pg backrest/it'\\''s.conf' '--pg1-path=/srv/data.ready-1' "
            "'--stanza=main' archive-get %f \"%p\"");
}

}  // namespace
}  // namespace safe_upgrade
