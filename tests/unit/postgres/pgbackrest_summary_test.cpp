// Unit tests of the stanza summary Ping carries to plan(): which backups it lists, and that it
// stays valid JSON within its bound however large the stanza is.
#include "postgres/pgbackrest_summary.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

using nlohmann::json;

PgBackRestBackup Backup(const std::string& label, const std::string& type, const std::string& prior = "") {
  PgBackRestBackup b;
  b.label = label;
  b.type = type;
  b.prior = prior;
  b.stopped_at = 1796211695;
  b.size_bytes = 22992559;
  b.repo_bytes = 3043464;
  return b;
}

// An old full backup with an incremental, then the newest full with n incrementals.
PgBackRestStanza Stanza(size_t n) {
  PgBackRestStanza s;
  s.ok = true;
  s.status = "ok";
  s.system_identifier = 7714670465829668884ull;
  s.archive_id = "15-1";
  s.archive_max = "000000010000000000000005";
  s.repos = json::array({{{"key", 1}, {"status", "ok"}, {"cipher", "none"}}});
  s.backups.push_back(Backup("20261201-100000F", "full"));
  s.backups.push_back(Backup("20261201-100000F_20261201-110000I", "incr", "20261201-100000F"));
  s.backups.push_back(Backup("20261202-100000F", "full"));
  for (size_t i = 0; i < n; ++i) {
    char label[64];
    snprintf(label, sizeof label, "20261202-100000F_20261202-%06zuI", i);
    s.backups.push_back(Backup(label, "incr", "20261202-100000F"));
  }
  return s;
}

TEST(PgBackRestSummary, lists_the_newest_full_backup_and_what_followed_it) {
  json j = PgBackRestSummary(Stanza(2));
  ASSERT_EQ(j["backups"].size(), 3u) << j.dump();
  EXPECT_EQ(j["backups"][0]["label"], "20261202-100000F");
  EXPECT_EQ(j["backups"][0]["type"], "full");
  EXPECT_EQ(j["backups"][2]["label"], "20261202-100000F_20261202-000001I");
  EXPECT_EQ(j["backups"][2]["prior"], "20261202-100000F");
  EXPECT_EQ(j["backups"][2]["stopped_at"], 1796211695);
  EXPECT_EQ(j["backups"][2]["size_bytes"], 22992559u);
  EXPECT_EQ(j["backups_total"], 5u);
  EXPECT_FALSE(j.contains("backups_omitted"));
  EXPECT_EQ(j["archive_max"], "000000010000000000000005");
  EXPECT_EQ(j["system_identifier"], "7714670465829668884");
  EXPECT_EQ(j["repos"][0]["status"], "ok");
  EXPECT_TRUE(j["ok"].get<bool>());
}

TEST(PgBackRestSummary, a_stanza_without_backups_has_an_empty_list) {
  PgBackRestStanza s = Stanza(0);
  s.backups.clear();
  s.ok = false;
  s.status = "no valid backups";
  // pgBackRest lists no database for a stanza without backups: no system identifier to compare.
  s.system_identifier = 0;
  json j = PgBackRestSummary(s);
  EXPECT_TRUE(j["backups"].empty());
  EXPECT_EQ(j["status"], "no valid backups");
  EXPECT_FALSE(j.contains("system_identifier")) << j.dump();
}

TEST(PgBackRestSummary, too_many_backups_keep_the_full_one_and_the_newest_within_the_bound) {
  json j = PgBackRestSummary(Stanza(200), kBackendSummaryMaxBytes);
  EXPECT_LE(DumpSummary(j).size(), kBackendSummaryMaxBytes);
  ASSERT_GE(j["backups"].size(), 2u);
  EXPECT_EQ(j["backups"][0]["label"], "20261202-100000F");
  EXPECT_EQ(j["backups"].back()["label"], "20261202-100000F_20261202-000199I");
  EXPECT_EQ(j["backups_omitted"].get<size_t>() + j["backups"].size(), 201u);
  EXPECT_EQ(j["archive_max"], "000000010000000000000005");
}

TEST(PgBackRestSummary, a_bound_too_small_for_any_backup_drops_the_list_then_everything_but_ok) {
  json j = PgBackRestSummary(Stanza(3), 330);
  EXPECT_LE(DumpSummary(j).size(), 330u) << DumpSummary(j);
  EXPECT_TRUE(j["backups"].empty()) << j.dump();
  EXPECT_EQ(j["backups_omitted"], 4u);
  json tiny = PgBackRestSummary(Stanza(3), 40);
  EXPECT_LE(DumpSummary(tiny).size(), 40u);
  EXPECT_EQ(tiny, json({{"ok", true}, {"truncated", true}}));
}

TEST(PgBackRestSummary, info_failure_is_bounded_json_even_with_invalid_utf8_and_escapes) {
  std::string message(10000, '"');
  message += "\xff\xfe tail";
  json j = PgBackRestInfoFailure(message, 500);
  std::string text = DumpSummary(j);
  EXPECT_LE(text.size(), 500u);
  EXPECT_FALSE(j["ok"].get<bool>());
  EXPECT_FALSE(j["info_error"].get<std::string>().empty());
  EXPECT_NO_THROW(json::parse(text));
}

TEST(PgBackRestSummary, proto_safe_text_replaces_invalid_utf8_and_cuts_between_characters) {
  EXPECT_EQ(ProtoSafeText("ok \xff"), "ok \xEF\xBF\xBD");
  EXPECT_EQ(ProtoSafeText("\xC3\xA9\xC3\xA9", 3), "\xC3\xA9");
  EXPECT_EQ(ProtoSafeText("plain"), "plain");
}

}  // namespace
}  // namespace safe_upgrade
