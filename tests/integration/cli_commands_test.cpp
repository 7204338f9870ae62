// The safe-upgrade commands that need a server but not a finished pipeline (the scheduler is off):
// the plan report and its --json, server errors with their hint, status, history and the actions
// with --json output that parses.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_helpers.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class CliCommands : public ::testing::Test {
 protected:
  // The scheduler is off, so upgrades stay queued: these tests look at the command line, not at
  // the pipeline.
  void SetUp() override {
    ClusterOptions options;
    options.settings = {{"safe_upgrade.enabled", "off"}};
    c_ = std::make_unique<TestCluster>(options);
    CreateHstoreSchema(*c_);
    ASSERT_TRUE(WaitUntil(
        [&] { return c_->Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "true"; }, 60s))
        << c_->Scalar("SELECT last_error FROM safe_upgrade.agent_status()");
  }
  std::unique_ptr<TestCluster> c_;
};

TEST_F(CliCommands, plan_report_starts_with_the_verdict_and_json_is_the_plan_document) {
  auto human = Cli(*c_, {"plan", "hstore", "1.8"});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  auto verdict = human.out.find("verdict:");
  ASSERT_NE(verdict, std::string::npos) << human.out;
  for (const char* section : {"update path", "dependent objects", "PITR prerequisites", "rollback cost"}) {
    auto pos = human.out.find(section);
    EXPECT_NE(pos, std::string::npos) << section << "\n" << human.out;
    EXPECT_GT(pos, verdict) << section << " must come after the verdict";
  }
  EXPECT_NE(human.out.find("1.4 -> 1.5 -> 1.6 -> 1.7 -> 1.8"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("pro_accounts"), std::string::npos) << "the view depends on hstore\n" << human.out;

  auto r = Cli(*c_, {"plan", "hstore", "1.8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json plan = ParseJson(r.out);
  ASSERT_TRUE(plan.is_object());
  EXPECT_TRUE(plan.contains("verdict"));
  std::string direct = c_->Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text");
  EXPECT_EQ(plan["update_path"], json::parse(direct)["update_path"]);
}

TEST_F(CliCommands, server_errors_exit_1_and_print_the_hint) {
  auto unknown = Cli(*c_, {"plan", "no_such_extension", "1.0"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("safe-upgrade: error:"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("HINT: "), std::string::npos) << unknown.err;

  auto begin = Cli(*c_, {"run", "no_such_extension", "1.0", "--approve"});
  EXPECT_EQ(begin.exit_code, 1) << "a begin() error is exit 1";
  EXPECT_NE(begin.err.find("HINT: "), std::string::npos) << begin.err;

  auto same = Cli(*c_, {"run", "hstore", "1.4", "--json"});
  EXPECT_EQ(same.exit_code, 1);
  json j = ParseJson(same.out);
  EXPECT_EQ(j["error"].value("sqlstate", ""), "22023") << same.out;
  EXPECT_FALSE(j["error"]["hint"].is_null()) << same.out;

  auto missing = Cli(*c_, {"approve", "999999"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("HINT: "), std::string::npos) << missing.err;
}

TEST_F(CliCommands, status_history_and_actions_print_json_that_parses) {
  int64_t id = c_->BeginUpgrade("hstore", "1.8", R"({"require_approval": true})");
  std::string sid = std::to_string(id);

  auto status = Cli(*c_, {"status", sid, "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  json s = ParseJson(status.out);
  EXPECT_EQ(s.value("id", 0), id);
  EXPECT_EQ(s.value("state", ""), "queued");
  EXPECT_EQ(s.value("terminal", true), false);
  EXPECT_TRUE(s["exit_code"].is_null());
  EXPECT_EQ(s.value("extname", ""), "hstore");
  EXPECT_EQ(s.value("from_version", ""), "1.4");
  EXPECT_EQ(s.value("to_version", ""), "1.8");
  EXPECT_TRUE(s["phases"].is_array() && !s["phases"].empty()) << status.out;
  EXPECT_TRUE(s["events"].is_array() && !s["events"].empty()) << status.out;

  auto current = Cli(*c_, {"status"});
  ASSERT_EQ(current.exit_code, 0) << current.err;
  EXPECT_NE(current.out.find("upgrade " + sid + ": hstore 1.4 -> 1.8"), std::string::npos) << current.out;

  auto history = Cli(*c_, {"history", "--json"});
  ASSERT_EQ(history.exit_code, 0) << history.err;
  json h = ParseJson(history.out);
  ASSERT_TRUE(h.is_array());
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].value("id", 0), id);
  EXPECT_EQ(h[0].value("state", ""), "queued");
  auto table = Cli(*c_, {"history"});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find("1.4 -> 1.8"), std::string::npos) << table.out;

  auto approve = Cli(*c_, {"approve", sid, "--json"});
  ASSERT_EQ(approve.exit_code, 0) << approve.err;
  json a = ParseJson(approve.out);
  EXPECT_EQ(a.value("action", ""), "approve");
  EXPECT_EQ(a.value("id", 0), id);

  auto rollback = Cli(*c_, {"rollback", sid, "--json"});
  EXPECT_EQ(rollback.exit_code, 1) << "a queued upgrade cannot be rolled back";
  EXPECT_TRUE(ParseJson(rollback.out).contains("error"));
  EXPECT_NE(rollback.err.find("HINT: "), std::string::npos) << rollback.err;

  auto cancel = Cli(*c_, {"cancel", sid, "--json"});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(ParseJson(cancel.out).value("action", ""), "cancel");
  EXPECT_EQ(
      c_->Scalar("SELECT cancel_requested::text FROM safe_upgrade.upgrades WHERE id = $1::bigint", {sid}),
      "true");
}

TEST_F(CliCommands, status_of_a_missing_upgrade_exits_1) {
  auto none = Cli(*c_, {"status"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no upgrades"), std::string::npos) << none.err;
  auto missing = Cli(*c_, {"status", "424242", "--json"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(ParseJson(missing.out).contains("error"));
}

}  // namespace
}  // namespace safe_upgrade::testing
