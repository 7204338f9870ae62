// Unit tests of how the worker fits the agent's facts into shared memory: text cut between UTF-8
// characters, a backend summary that stays a JSON object and a standby list that stays a JSON array
// when they do not fit.
#include "core/agent_facts.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace safe_upgrade {
namespace {

using nlohmann::json;

TEST(TruncateUtf8, keeps_short_text_and_never_cuts_inside_a_character) {
  EXPECT_EQ(TruncateUtf8("abc", 10), "abc");
  EXPECT_EQ(TruncateUtf8("abcdef", 3), "abc");
  // "é" is two bytes, "€" three: a cut inside either backs off to the character's start.
  EXPECT_EQ(TruncateUtf8("a\xC3\xA9", 2), "a");
  EXPECT_EQ(TruncateUtf8("a\xE2\x82\xAC", 3), "a");
  EXPECT_EQ(TruncateUtf8("a\xE2\x82\xAC", 4), "a\xE2\x82\xAC");
  EXPECT_EQ(TruncateUtf8("abc", 0), "");
}

json Summary(size_t backups) {
  json list = json::array();
  for (size_t i = 0; i < backups; ++i)
    list.push_back(
        {{"label", "20261202-100000F_20261202-1000" + std::to_string(10 + i) + "I"}, {"type", "incr"}});
  return {{"ok", true}, {"status", "ok"}, {"archive_max", "000000010000000000000005"}, {"backups", list}};
}

TEST(FitBackendSummary, a_summary_that_fits_is_kept) {
  std::string text = Summary(3).dump();
  EXPECT_EQ(json::parse(FitBackendSummary(text, 4095)), Summary(3));
}

TEST(FitBackendSummary, a_summary_too_long_drops_its_backups_and_counts_them) {
  std::string text = Summary(200).dump();
  ASSERT_GT(text.size(), 4095u);
  std::string fitted = FitBackendSummary(text, 4095);
  ASSERT_LE(fitted.size(), 4095u);
  json j = json::parse(fitted);
  EXPECT_TRUE(j["backups"].empty());
  EXPECT_EQ(j["backups_omitted"], 200u);
  EXPECT_EQ(j["archive_max"], "000000010000000000000005");
}

TEST(FitBackendSummary, counts_add_to_what_the_agent_already_left_out) {
  json s = Summary(200);
  s["backups_omitted"] = 7;
  json j = json::parse(FitBackendSummary(s.dump(), 4095));
  EXPECT_EQ(j["backups_omitted"], 207u);
}

TEST(FitBackendSummary, even_a_tiny_field_gets_json_and_invalid_input_is_marked) {
  std::string fitted = FitBackendSummary(Summary(3).dump(), 30);
  EXPECT_EQ(json::parse(fitted), json({{"ok", true}, {"truncated", true}}));
  EXPECT_EQ(FitBackendSummary(Summary(3).dump(), 5), "");
  EXPECT_EQ(json::parse(FitBackendSummary("{\"ok\": tru", 4095)), json({{"invalid", true}}));
  EXPECT_EQ(json::parse(FitBackendSummary("[1, 2]", 4095)), json({{"invalid", true}}));
}

json Standbys(size_t count, const std::string& error = "") {
  json list = json::array();
  for (size_t i = 0; i < count; ++i)
    list.push_back({{"name", "standby" + std::to_string(i + 1)},
                    {"agent", "unix:/var/run/standby" + std::to_string(i + 1) + "/agent.sock"},
                    {"reachable", error.empty()},
                    {"error", error},
                    {"role", "standby"},
                    {"system_identifier_matches", true},
                    {"in_recovery", true},
                    {"pg_rewind", true},
                    {"data_directory", "/var/lib/postgresql/15/standby" + std::to_string(i + 1)},
                    {"checked_age_ms", 1200}});
  return list;
}

TEST(FitStandbyAgents, a_list_that_fits_is_kept) {
  EXPECT_EQ(json::parse(FitStandbyAgents(Standbys(3).dump(), 4095)), Standbys(3));
  EXPECT_EQ(FitStandbyAgents("[]", 4095), "[]");
}

TEST(FitStandbyAgents, long_errors_are_cut_first_and_every_standby_stays) {
  std::string error(1500, 'x');
  std::string text = Standbys(3, error).dump();
  ASSERT_GT(text.size(), 4095u);
  std::string fitted = FitStandbyAgents(text, 4095);
  ASSERT_LE(fitted.size(), 4095u);
  json j = json::parse(fitted);
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["error"].get<std::string>().size(), 200u);
  EXPECT_EQ(j[2]["name"], "standby3");
  EXPECT_EQ(j[2]["data_directory"], "/var/lib/postgresql/15/standby3");
}

TEST(FitStandbyAgents, too_many_standbys_keep_the_leading_ones_and_count_the_others) {
  std::string text = Standbys(40).dump();
  ASSERT_GT(text.size(), 4095u);
  std::string fitted = FitStandbyAgents(text, 4095);
  ASSERT_LE(fitted.size(), 4095u);
  json j = json::parse(fitted);
  ASSERT_TRUE(j.is_array());
  ASSERT_GT(j.size(), 2u);
  EXPECT_EQ(j[0]["name"], "standby1");
  const json& marker = j.back();
  EXPECT_EQ(marker["truncated"], true);
  EXPECT_EQ(marker["omitted"].get<size_t>() + j.size() - 1, 40u);
}

TEST(FitStandbyAgents, even_a_tiny_field_gets_a_json_array_and_invalid_input_is_marked) {
  EXPECT_EQ(json::parse(FitStandbyAgents(Standbys(3).dump(), 40)),
            json::parse(R"([{"truncated": true, "omitted": 3}])"));
  EXPECT_EQ(json::parse(FitStandbyAgents(Standbys(3).dump(), 20)), json::parse(R"([{"truncated": true}])"));
  EXPECT_EQ(FitStandbyAgents(Standbys(3).dump(), 5), "");
  EXPECT_EQ(json::parse(FitStandbyAgents("[{\"name\": ", 4095)), json::parse(R"([{"invalid": true}])"));
  EXPECT_EQ(json::parse(FitStandbyAgents("{\"name\": \"s\"}", 4095)), json::parse(R"([{"invalid": true}])"));
}

TEST(WithoutKey, drops_only_the_data_directories) {
  json hidden = json::parse(WithoutKey(Standbys(2).dump(), "data_directory"));
  json expected = Standbys(2);
  for (json& s : expected) s.erase("data_directory");
  EXPECT_EQ(hidden, expected);
  EXPECT_EQ(WithoutKey("[{\"truncated\": true}]", "data_directory"), "[{\"truncated\":true}]");
}

}  // namespace
}  // namespace safe_upgrade
