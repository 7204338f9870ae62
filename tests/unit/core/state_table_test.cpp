// Unit tests of the state table (core/state_table.h): its vocabulary, the SQL that spells states
// checked against it, and every transition through the scheduler's pure decisions
// (core/upgrade_decision.h). No server needed.
#include "core/state_table.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "core/upgrade_decision.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;
using S = UpgradeState;
using F = JobFailureKind;

const std::vector<std::string> kInFlight = {"queued",    "snapshotting", "dry_running", "awaiting_approval",
                                            "scheduled", "applying",     "verifying",   "rolling_back"};
const std::vector<std::string> kTerminal = {"succeeded",   "validated",       "blocked",  "failed",
                                            "rolled_back", "rollback_failed", "cancelled"};
constexpr F kFailureKinds[] = {F::kFailed, F::kChecksFailed, F::kCouldNotRun, F::kRefused};

UpgradeFacts Facts(UpgradeState state, json options = json::object(), json report = json::object()) {
  UpgradeFacts u;
  u.id = 7;
  u.state = state;
  u.extname = "pg_demo";
  u.from_version = "1.0";
  u.to_version = "2.0";
  u.options = std::move(options);
  u.report = std::move(report);
  return u;
}

std::string Next(const Decision& d) {
  return d.next ? std::string(StateName(*d.next)) : std::string("(stays)");
}

// --- the vocabulary ------------------------------------------------------------------------------

TEST(StateTable, names_round_trip_and_partition_into_in_flight_and_terminal) {
  EXPECT_EQ(InFlightStateNames(), kInFlight);
  EXPECT_EQ(TerminalStateNames(), kTerminal);
  for (UpgradeState s : kAllStates) {
    EXPECT_EQ(ParseState(StateName(s)), s) << StateName(s);
    EXPECT_NE(IsTerminal(s), IsInFlight(s)) << StateName(s);
    EXPECT_EQ(IsTerminalState(StateName(s)), IsTerminal(s));
    EXPECT_EQ(IsInFlightState(StateName(s)), IsInFlight(s));
    EXPECT_FALSE(StateMeaning(s).empty()) << StateName(s);
  }
  EXPECT_FALSE(ParseState("bogus"));
  EXPECT_FALSE(IsTerminalState("bogus"));
  EXPECT_FALSE(IsInFlightState("bogus"));
}

TEST(StateTable, in_flight_states_are_in_pipeline_order) {
  int rank = 0;
  for (UpgradeState s : InFlightStates()) EXPECT_EQ(PipelineRank(s), rank++) << StateName(s);
  for (UpgradeState s : TerminalStates()) EXPECT_EQ(PipelineRank(s), -1) << StateName(s);
}

TEST(StateTable, only_apply_verify_and_rollback_may_have_touched_production) {
  std::vector<std::string> touched = StateNamesWhere(&StateRow::production_may_be_touched);
  EXPECT_EQ(touched, (std::vector<std::string>{"applying", "verifying", "rolling_back"}));
}

TEST(StateTable, upgrades_may_roll_back_from_scheduled_to_the_end_of_a_rollback) {
  EXPECT_EQ(StateNamesWhere(&StateRow::may_roll_back),
            (std::vector<std::string>{"scheduled", "applying", "verifying", "rolling_back"}));
}

TEST(StateTable, every_job_kind_belongs_to_exactly_one_state) {
  EXPECT_EQ(StateForJob(JobKind::kSnapshot), S::kSnapshotting);
  EXPECT_EQ(StateForJob(JobKind::kDryRun), S::kDryRunning);
  EXPECT_EQ(StateForJob(JobKind::kRollbackTarget), S::kScheduled);
  EXPECT_EQ(StateForJob(JobKind::kApply), S::kApplying);
  EXPECT_EQ(StateForJob(JobKind::kVerify), S::kVerifying);
  EXPECT_EQ(StateForJob(JobKind::kRollback), S::kRollingBack);
  for (UpgradeState s : kAllStates) {
    if (TableRow(s).job) {
      EXPECT_EQ(StateForJob(*TableRow(s).job), s);
    }
  }
  EXPECT_FALSE(TableRow(S::kQueued).job);
  EXPECT_FALSE(TableRow(S::kAwaitingApproval).job);
  for (UpgradeState s : TerminalStates()) EXPECT_FALSE(TableRow(s).job) << StateName(s);
}

TEST(StateTable, terminal_states_carry_the_cli_exit_codes) {
  std::map<std::string, int> expected = {{"succeeded", 0}, {"validated", 0},   {"blocked", 3},
                                         {"failed", 1},    {"rolled_back", 4}, {"rollback_failed", 5},
                                         {"cancelled", 1}};
  for (UpgradeState s : TerminalStates()) EXPECT_EQ(ExitCode(s), expected.at(std::string(StateName(s))));
  for (UpgradeState s : InFlightStates()) EXPECT_FALSE(ExitCode(s)) << StateName(s);
}

TEST(StateTable, terminal_states_lead_nowhere) {
  for (UpgradeState s : TerminalStates()) {
    EXPECT_EQ(TableRow(s).on_success, s);
    for (F kind : kFailureKinds) EXPECT_EQ(OnFailure(s, kind), s);
    EXPECT_EQ(TableRow(s).cancel, Cancel::kNever);
  }
}

TEST(StateTable, transitions_log_errors_only_into_failure_ends) {
  EXPECT_EQ(TransitionEvent(S::kDryRunning, S::kBlocked, std::string("x")).level, "error");
  EXPECT_EQ(TransitionEvent(S::kApplying, S::kFailed, std::string("x")).level, "error");
  EXPECT_EQ(TransitionEvent(S::kRollingBack, S::kRollbackFailed, std::string("x")).level, "error");
  EXPECT_EQ(TransitionEvent(S::kQueued, S::kCancelled, std::string("cancelled by request")).level, "info");
  EXPECT_EQ(TransitionEvent(S::kApplying, S::kFailed, std::nullopt).level, "info");
  NewEvent e = TransitionEvent(S::kVerifying, S::kFailed, std::string("boom"));
  EXPECT_EQ(e.phase, "failed");
  EXPECT_EQ(e.message, "state verifying -> failed: boom");
  EXPECT_EQ(e.detail, (json{{"from", "verifying"}, {"to", "failed"}}));
}

// --- the SQL, checked against the table ----------------------------------------------------------

std::filesystem::path SqlDir() { return std::filesystem::path(SU_SOURCE_DIR) / "sql"; }

// Every *.sql file below sql/, comments removed.
std::string AllSql() {
  std::string all;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(SqlDir())) {
    if (!entry.is_regular_file() || entry.path().extension() != ".sql") continue;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      auto dash = line.find("--");
      all += (dash == std::string::npos ? line : line.substr(0, dash)) + "\n";
    }
  }
  return all;
}

std::vector<std::string> Quoted(const std::string& list) {
  std::vector<std::string> out;
  static const std::regex quoted("'([^']*)'");
  for (std::sregex_iterator it(list.begin(), list.end(), quoted), end; it != end; ++it)
    out.push_back((*it)[1]);
  return out;
}

std::vector<std::vector<std::string>> Lists(const std::string& sql, const std::string& pattern) {
  std::vector<std::vector<std::string>> out;
  std::regex re(pattern, std::regex::icase | std::regex::ECMAScript);
  for (std::sregex_iterator it(sql.begin(), sql.end(), re), end; it != end; ++it)
    out.push_back(Quoted((*it)[1]));
  return out;
}

std::set<std::string> AsSet(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

TEST(StateTableSql, the_check_on_upgrades_state_lists_every_state) {
  std::vector<std::string> all = kInFlight;
  all.insert(all.end(), kTerminal.begin(), kTerminal.end());
  auto lists = Lists(AllSql(), R"(CHECK\s*\(\s*state\s+IN\s*\(([^)]*)\))");
  ASSERT_FALSE(lists.empty()) << "no CHECK (state IN (...)) under " << SqlDir();
  for (const auto& list : lists) EXPECT_EQ(AsSet(list), AsSet(all));
}

TEST(StateTableSql, the_state_functions_list_the_table_s_states_in_its_order) {
  const std::string sql = AllSql();
  auto in_flight = Lists(sql, R"(FUNCTION\s+[^\s(]*_in_flight_states\s*\(\s*\)[\s\S]*?ARRAY\s*\[([^\]]*)\])");
  ASSERT_EQ(in_flight.size(), 1u);
  EXPECT_EQ(in_flight[0], InFlightStateNames());
  auto terminal = Lists(sql, R"(FUNCTION\s+[^\s(]*_terminal_states\s*\(\s*\)[\s\S]*?ARRAY\s*\[([^\]]*)\])");
  ASSERT_EQ(terminal.size(), 1u);
  EXPECT_EQ(terminal[0], TerminalStateNames());
}

TEST(StateTableSql, the_one_in_flight_index_covers_the_in_flight_states) {
  auto lists = Lists(AllSql(), R"(upgrades_one_in_flight[^;]*WHERE\s+state\s+IN\s*\(([^)]*)\))");
  for (const auto& list : lists) EXPECT_EQ(AsSet(list), AsSet(kInFlight));
}

TEST(StateTableSql, every_state_the_sql_compares_or_writes_is_a_state_of_the_table) {
  const std::string sql = AllSql();
  std::vector<std::vector<std::string>> found;
  for (const char* pattern : {R"(\bstate\s+(?:NOT\s+)?IN\s*\(([^)]*)\))",       // state [NOT] IN ('a', 'b')
                              R"(\bstate\s*(?:=|<>|!=)\s*('[^']*'))",           // state = 'a'
                              R"(DEFAULT\s+('[^']*')\s+CHECK\s*\(\s*state\b)",  // the column's default
                              R"('(?:from|to)'\s*,\s*('[^']*'))"}) {            // an event's transition
    auto lists = Lists(sql, pattern);
    EXPECT_FALSE(lists.empty()) << pattern;
    found.insert(found.end(), lists.begin(), lists.end());
  }
  for (const auto& list : found)
    for (const auto& word : list)
      EXPECT_TRUE(ParseState(word)) << "'" << word << "' in the SQL is not a state";
}

// --- every transition, through the decisions -----------------------------------------------------

json Passed(const char* version = "2.0") {
  return json{{"databases", json::array({{{"datname", "app"}, {"extversion", version}}})}};
}

TEST(Transitions, a_job_s_success_leads_to_the_table_s_next_state) {
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kSnapshotting), json::object())), "dry_running");
  EXPECT_TRUE(OnJobSucceeded(Facts(S::kSnapshotting), json::object()).store_snapshot);
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kDryRunning), json::object())), "scheduled");
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kApplying), json::object())), "verifying");
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kVerifying), Passed())), "succeeded");
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kRollingBack), json::object())), "rolled_back");
  for (UpgradeState s : {S::kSnapshotting, S::kDryRunning, S::kApplying, S::kVerifying, S::kRollingBack})
    EXPECT_EQ(OnJobSucceeded(Facts(s), s == S::kVerifying ? Passed() : json::object()).next,
              TableRow(s).on_success);
}

TEST(Transitions, a_job_s_result_goes_to_the_state_s_report_key) {
  for (UpgradeState s : {S::kScheduled, S::kDryRunning, S::kApplying, S::kVerifying, S::kRollingBack}) {
    Decision d = OnJobSucceeded(Facts(s), Passed());
    ASSERT_FALSE(d.report.empty()) << StateName(s);
    EXPECT_EQ(d.report[0].first, TableRow(s).result_key);
    EXPECT_EQ(d.report[0].second, Passed());
  }
  EXPECT_TRUE(OnJobSucceeded(Facts(S::kSnapshotting), json::object()).report.empty());
}

TEST(Transitions, the_rollback_target_s_success_keeps_the_upgrade_scheduled_for_its_restore_point) {
  Decision d = OnJobSucceeded(Facts(S::kScheduled), json{{"path", "cold"}});
  EXPECT_FALSE(d.next);
  EXPECT_TRUE(d.forget_job);
  EXPECT_EQ(d.report,
            (std::vector<std::pair<std::string, json>>{{"rollback_target", json{{"path", "cold"}}}}));
}

TEST(Transitions, a_passed_dry_run_validates_waits_for_approval_or_schedules) {
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kDryRunning, {{"dry_run_only", true}}), json::object())),
            "validated");
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kDryRunning, {{"dry_run_only", "on"}}), json::object())),
            "validated");
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kDryRunning, {{"require_approval", true}}), json::object())),
            "awaiting_approval");
  UpgradeFacts approved = Facts(S::kDryRunning, {{"require_approval", "true"}});
  approved.approved = true;
  EXPECT_EQ(Next(OnJobSucceeded(approved, json::object())), "scheduled");
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kDryRunning, {{"require_approval", false}}), json::object())),
            "scheduled");
  Decision d = OnJobSucceeded(Facts(S::kDryRunning), json::object());
  EXPECT_TRUE(d.store_dependencies_after);
}

TEST(Transitions, a_verification_that_leaves_a_database_behind_is_a_failed_check) {
  json behind =
      json{{"databases", json::array({{{"datname", "app"}, {"extversion", "1.0"}}, {{"datname", "b"}}})}};
  Decision d = OnJobSucceeded(Facts(S::kVerifying), behind);
  EXPECT_EQ(Next(d), "rolling_back");
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_EQ(d.events[0].message,
            "health checks failed on production: pg_demo is not at 2.0 on production in app (1.0), b (not "
            "installed); rolling back");
  EXPECT_EQ(d.report, (std::vector<std::pair<std::string, json>>{{"verify", behind},
                                                                 {"verify", json{{"checks_failed", true}}}}));
  Decision none = OnJobSucceeded(Facts(S::kVerifying, {{"auto_rollback", false}}), json::object());
  EXPECT_EQ(Next(none), "failed");
  EXPECT_EQ(*none.error,
            "health checks failed on production: pg_demo is not at 2.0 on production in every database (none "
            "reported); auto_rollback is off, so the upgrade stays applied (run safe_upgrade.rollback(7) to "
            "undo it)");
}

TEST(Transitions, the_rollback_job_reports_its_outcome) {
  EXPECT_EQ(Next(OnJobSucceeded(Facts(S::kRollingBack), json{{"state", "rollback_failed"}})),
            "rollback_failed");
  EXPECT_THROW(OnJobSucceeded(Facts(S::kRollingBack), json{{"state", "bogus"}}), std::runtime_error);
}

// Each job state x each failure kind, with the default options.
TEST(Transitions, every_failure_kind_of_every_job_leads_where_the_table_says) {
  struct Expected {
    UpgradeState state;
    std::string failed, checks_failed, could_not_run, refused;  // next state; "retry", "resolve"
  };
  const Expected expected[] = {
      {S::kScheduled, "failed", "failed", "failed", "failed"},
      {S::kSnapshotting, "failed", "failed", "failed", "failed"},
      {S::kDryRunning, "blocked", "blocked", "blocked", "blocked"},
      {S::kApplying, "resolve", "resolve", "resolve", "resolve"},
      {S::kVerifying, "retry", "rolling_back", "retry", "retry"},
      {S::kRollingBack, "rollback_failed", "rollback_failed", "rollback_failed", "rollback_failed"},
  };
  for (const auto& e : expected) {
    const std::string* want[] = {&e.failed, &e.checks_failed, &e.could_not_run, &e.refused};
    for (int i = 0; i < 4; ++i) {
      Decision d = OnJobFailed(Facts(e.state), kFailureKinds[i], "boom", json::object());
      std::string got = d.resolve_apply ? "resolve" : d.forget_job && !d.next ? "retry" : Next(d);
      EXPECT_EQ(got, *want[i]) << StateName(e.state) << " failure " << i;
      UpgradeState table = OnFailure(e.state, kFailureKinds[i]);
      if (got == "retry" || got == "resolve") {
        EXPECT_EQ(table, e.state);
      } else {
        EXPECT_EQ(StateName(table), got);
      }
    }
  }
}

TEST(Transitions, failure_messages_name_the_step) {
  EXPECT_EQ(*OnJobFailed(Facts(S::kScheduled), F::kFailed, "boom", {}).error,
            "could not prepare the rollback target: boom");
  EXPECT_EQ(*OnJobFailed(Facts(S::kSnapshotting), F::kFailed, "boom", {}).error, "snapshot failed: boom");
  Decision dry = OnJobFailed(Facts(S::kDryRunning), F::kChecksFailed, "boom", json{{"x", 1}});
  EXPECT_EQ(*dry.error, "dry run failed: boom");
  EXPECT_EQ(dry.report, (std::vector<std::pair<std::string, json>>{{"dry_run", json{{"x", 1}}}}));
  Decision apply = OnJobFailed(Facts(S::kApplying), F::kFailed, "boom", json{{"x", 1}});
  EXPECT_EQ(*apply.resolve_apply, "apply failed: boom");
  EXPECT_EQ(apply.report, (std::vector<std::pair<std::string, json>>{{"apply", json{{"x", 1}}}}));
  Decision rollback = OnJobFailed(Facts(S::kRollingBack), F::kFailed, "boom", json{{"x", 1}});
  EXPECT_EQ(*rollback.error, "boom");
  EXPECT_EQ(rollback.report, (std::vector<std::pair<std::string, json>>{{"rollback", json{{"x", 1}}}}));
}

TEST(Transitions, verification_that_could_not_run_retries_with_backoff) {
  Decision d = OnJobFailed(Facts(S::kVerifying, {}, {{"verify_attempts", 2}}), F::kCouldNotRun, "refused",
                           json::object());
  EXPECT_FALSE(d.next);
  EXPECT_TRUE(d.forget_job);
  EXPECT_EQ(d.verify_retry_in_s, 20);
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_EQ(d.events[0].phase, "verifying");
  EXPECT_EQ(d.events[0].level, "warning");
  EXPECT_EQ(d.events[0].message, "verification could not run (refused); trying again in 20 s (attempt 3)");
  EXPECT_EQ(d.events[0].detail, (json{{"attempt", 3}, {"retry_in_s", 20}}));
  EXPECT_EQ(d.report,
            (std::vector<std::pair<std::string, json>>{{"verify", json::object()}, {"verify_attempts", 3}}));
  EXPECT_EQ(VerifyRetryDelaySeconds(1), 5);
  EXPECT_EQ(VerifyRetryDelaySeconds(4), 40);
  EXPECT_EQ(VerifyRetryDelaySeconds(5), 60);
  EXPECT_EQ(VerifyRetryDelaySeconds(30), 60);
}

TEST(Transitions, failed_checks_on_production_roll_back_unless_auto_rollback_is_off) {
  Decision on = OnJobFailed(Facts(S::kVerifying), F::kChecksFailed, "boom", {});
  EXPECT_EQ(Next(on), "rolling_back");
  EXPECT_FALSE(on.error);
  ASSERT_EQ(on.events.size(), 1u);
  EXPECT_EQ(on.events[0].level, "error");
  EXPECT_EQ(on.events[0].message, "health checks failed on production: boom; rolling back");
  Decision off = OnJobFailed(Facts(S::kVerifying, {{"auto_rollback", "off"}}), F::kChecksFailed, "boom", {});
  EXPECT_EQ(Next(off), "failed");
  EXPECT_EQ(
      *off.error,
      "health checks failed on production: boom; auto_rollback is off, so the upgrade stays applied (run "
      "safe_upgrade.rollback(7) to undo it)");
  EXPECT_TRUE(off.events.empty());
}

TEST(Transitions, a_refused_rollback_returns_to_the_state_it_left_or_fails) {
  Decision back = OnJobFailed(Facts(S::kRollingBack, {}, {{"state_before_rollback", "succeeded"}}),
                              F::kRefused, "no snapshot", json{{"stage", "precheck"}});
  EXPECT_EQ(Next(back), "succeeded");
  EXPECT_FALSE(back.error);
  ASSERT_EQ(back.events.size(), 1u);
  EXPECT_EQ(back.events[0].message, "rollback refused: no snapshot; nothing was changed");
  EXPECT_EQ(
      back.report,
      (std::vector<std::pair<std::string, json>>{{"rollback_refused", json{{"error", "no snapshot"}}}}));
  Decision failed = OnJobFailed(Facts(S::kRollingBack), F::kRefused, "no snapshot", {});
  EXPECT_EQ(Next(failed), "rollback_failed");
  EXPECT_EQ(*failed.error, "rollback could not start: no snapshot; production still runs the upgrade");
}

TEST(Transitions, a_cancel_takes_effect_when_the_snapshot_or_dry_run_ends) {
  for (UpgradeState s : {S::kSnapshotting, S::kDryRunning}) {
    UpgradeFacts u = Facts(s);
    u.cancel_requested = true;
    Decision ok = OnJobSucceeded(u, json{{"x", 1}});
    EXPECT_EQ(Next(ok), "cancelled");
    EXPECT_EQ(*ok.error, "cancelled by request");
    EXPECT_FALSE(ok.store_snapshot);
    EXPECT_EQ(ok.report.size(), s == S::kDryRunning ? 1u : 0u);
    for (F kind : kFailureKinds) {
      Decision failed = OnJobFailed(u, kind, "boom", {});
      EXPECT_EQ(Next(failed), "cancelled");
      EXPECT_EQ(*failed.error,
                "cancelled by request (the " + std::string(StateName(s)) + " step had failed: boom)");
    }
  }
  for (UpgradeState s : {S::kApplying, S::kVerifying, S::kRollingBack}) {
    UpgradeFacts u = Facts(s);
    u.cancel_requested = true;
    EXPECT_NE(Next(OnJobSucceeded(u, Passed())), "cancelled") << StateName(s);
    EXPECT_NE(Next(OnJobFailed(u, F::kFailed, "boom", {})), "cancelled") << StateName(s);
  }
}

TEST(Transitions, a_lost_job_is_resolved_left_to_the_agent_or_started_again) {
  EXPECT_EQ(*OnJobLost(Facts(S::kApplying)).resolve_apply, "the agent restarted during the apply");
  EXPECT_TRUE(OnJobLost(Facts(S::kRollingBack)).Empty());
  for (UpgradeState s : {S::kSnapshotting, S::kDryRunning, S::kScheduled, S::kVerifying}) {
    Decision d = OnJobLost(Facts(s));
    EXPECT_TRUE(d.forget_job);
    EXPECT_FALSE(d.next);
    ASSERT_EQ(d.events.size(), 1u);
    EXPECT_EQ(d.events[0].message,
              "the agent restarted during " + std::string(StateName(s)) + "; starting the step again");
  }
}

TEST(Transitions, a_silent_agent_fails_the_upgrade_only_before_production_is_touched) {
  UpgradeFacts u = Facts(S::kDryRunning);
  u.seconds_in_state = 31;
  EXPECT_EQ(*OnAgentSilent(u, "deadline", 30).error,
            "the agent stopped answering during dry_running: deadline");
  EXPECT_TRUE(OnAgentSilent(u, "deadline", 60).Empty());
  for (UpgradeState s : {S::kApplying, S::kVerifying, S::kRollingBack}) {
    u.state = s;
    EXPECT_TRUE(OnAgentSilent(u, "deadline", 30).Empty()) << StateName(s);
  }
}

TEST(Transitions, a_job_the_agent_will_not_start) {
  StartError busy{true, false, "busy"}, refused{false, true, "no"}, down{false, false, "down"};
  EXPECT_TRUE(OnJobNotStarted(Facts(S::kDryRunning), JobKind::kDryRun, busy, "unix:/a", 30).Empty());
  EXPECT_EQ(*OnJobNotStarted(Facts(S::kDryRunning), JobKind::kDryRun, refused, "unix:/a", 30).error,
            "the agent refused the dryrun job: no; production was not touched");
  EXPECT_EQ(*OnJobNotStarted(Facts(S::kScheduled), JobKind::kRollbackTarget, refused, "unix:/a", 30).error,
            "the agent refused the rollback_target job: no; production was not touched");
  EXPECT_EQ(*OnJobNotStarted(Facts(S::kApplying), JobKind::kApply, refused, "unix:/a", 30).resolve_apply,
            "the agent refused the apply job: no");
  Decision rb = OnJobNotStarted(Facts(S::kRollingBack), JobKind::kRollback, refused, "unix:/a", 30);
  EXPECT_EQ(Next(rb), "rollback_failed");
  EXPECT_EQ(*rb.error, "the agent refused the rollback job: no; production still runs the upgrade");
  for (const StartError& err : {refused, down}) {
    Decision v = OnJobNotStarted(Facts(S::kVerifying), JobKind::kVerify, err, "unix:/a", 30);
    EXPECT_TRUE(v.forget_job);
    ASSERT_EQ(v.events.size(), 1u);
    EXPECT_EQ(v.events[0].message, "verification could not run (the agent could not start it: " +
                                       err.message + "); trying again in 5 s (attempt 1)");
  }
  UpgradeFacts late = Facts(S::kSnapshotting);
  EXPECT_TRUE(OnJobNotStarted(late, JobKind::kSnapshot, down, "unix:/a", 30).Empty());
  late.seconds_in_state = 31;
  EXPECT_EQ(*OnJobNotStarted(late, JobKind::kSnapshot, down, "unix:/a", 30).error,
            "the agent is unreachable at unix:/a: down; production was not touched");
  for (UpgradeState s : {S::kApplying, S::kRollingBack}) {
    late.state = s;
    EXPECT_TRUE(OnJobNotStarted(late, *TableRow(s).job, down, "unix:/a", 30).Empty()) << StateName(s);
  }
}

TEST(Transitions, an_unknown_apply_is_decided_from_the_installed_versions) {
  UpgradeFacts u = Facts(S::kApplying);
  Decision wait =
      ResolveApply(u, "none", {}, std::string("the agent reported no database"), "apply failed: x");
  EXPECT_FALSE(wait.next);
  ASSERT_EQ(wait.events.size(), 1u);
  EXPECT_EQ(
      wait.events[0].message,
      "apply failed: x; the installed versions cannot be read yet (the agent reported no database), so the "
      "outcome is decided once they can");
  u.report = {{"apply_resolution_waits_for", "the agent reported no database"}};
  EXPECT_TRUE(ResolveApply(u, "none", {}, std::string("the agent reported no database"), "w").Empty());
  u.report = json::object();

  struct Case {
    std::string journal;
    std::map<std::string, std::string> versions;
    bool auto_rollback;
    std::string next, text;  // text: the transition's error, else the event's message
  };
  const Case cases[] = {
      {"committed",
       {{"a", "2.0"}, {"b", "2.0"}},
       true,
       "verifying",
       "w; pg_demo is at 2.0 in a (2.0), b (2.0), so the apply committed: verifying it (and rolling back if "
       "that "
       "fails), not applying it again"},
      {"committed",
       {{"a", "1.0"}},
       true,
       "failed",
       "w; the agent's journal says the apply committed, but pg_demo is not at 2.0 in a (1.0) (undone since, "
       "for "
       "example by a point-in-time recovery); the upgrade is not applied again"},
      {"none",
       {{"a", ""}},
       true,
       "failed",
       "w; the apply did not commit: pg_demo is still at its version in a (not installed) and the upgrade is "
       "not "
       "applied again"},
      {"partially_committed",
       {{"a", "2.0"}, {"b", "1.0"}},
       true,
       "rolling_back",
       "w; the upgrade committed in a (2.0) but not in b (1.0): rolling the whole cluster back to the "
       "restore "
       "point"},
      {"partially_committed",
       {{"a", "2.0"}, {"b", "1.0"}},
       false,
       "failed",
       "w; the upgrade committed in a (2.0) but not in b (1.0); auto_rollback is off, so those stay upgraded "
       "(run "
       "safe_upgrade.rollback(7) to undo it)"},
  };
  for (const auto& c : cases) {
    u.options = {{"auto_rollback", c.auto_rollback}};
    Decision d = ResolveApply(u, c.journal, c.versions, std::nullopt, "w");
    EXPECT_EQ(Next(d), c.next) << c.text;
    EXPECT_EQ(d.error ? *d.error : d.events.at(0).message, c.text);
    if (!d.error) {
      EXPECT_EQ(d.events[0].detail, (json{{"journal_apply", c.journal}, {"extversions", c.versions}}));
    }
  }
}

// --- steps -----------------------------------------------------------------------------------------

TEST(Steps, queued_snapshots_and_awaiting_approval_waits_for_approval) {
  StepPlan q = DecideStep(Facts(S::kQueued), "none", 0);
  EXPECT_EQ(q.action, StepAction::kDecision);
  EXPECT_EQ(Next(q.decision), "snapshotting");
  EXPECT_EQ(DecideStep(Facts(S::kAwaitingApproval), "none", 0).action, StepAction::kNone);
  UpgradeFacts approved = Facts(S::kAwaitingApproval);
  approved.approved = true;
  EXPECT_EQ(Next(DecideStep(approved, "none", 0).decision), "scheduled");
  EXPECT_EQ(DecideStep(Facts(S::kScheduled), "none", 0).action, StepAction::kScheduledStep);
}

TEST(Steps, a_cancel_takes_effect_at_the_step_until_a_restore_point_exists) {
  for (UpgradeState s : {S::kQueued, S::kAwaitingApproval, S::kScheduled}) {
    UpgradeFacts u = Facts(s);
    u.cancel_requested = true;
    StepPlan plan = DecideStep(u, "none", 0);
    EXPECT_EQ(Next(plan.decision), "cancelled") << StateName(s);
    EXPECT_EQ(*plan.decision.error, "cancelled by request");
    u.has_restore_point = true;
    EXPECT_NE(Next(DecideStep(u, "none", 0).decision), "cancelled") << StateName(s);
  }
  for (UpgradeState s : {S::kSnapshotting, S::kDryRunning, S::kApplying, S::kVerifying, S::kRollingBack}) {
    UpgradeFacts u = Facts(s);
    u.cancel_requested = true;
    EXPECT_NE(DecideStep(u, "none", 0).action, StepAction::kDecision) << StateName(s);
  }
}

TEST(Steps, job_states_start_or_follow_their_job) {
  for (UpgradeState s : {S::kSnapshotting, S::kDryRunning, S::kApplying, S::kVerifying, S::kRollingBack}) {
    UpgradeFacts u = Facts(s);
    EXPECT_EQ(DecideStep(u, "none", 0).action, StepAction::kStartJob) << StateName(s);
    u.agent_job = std::string(JobKindName(*TableRow(s).job)) + "-7";
    EXPECT_EQ(DecideStep(u, "none", 0).action, StepAction::kFollowJob) << StateName(s);
  }
  for (UpgradeState s : TerminalStates())
    EXPECT_EQ(DecideStep(Facts(s), "none", 0).action, StepAction::kNone);
}

TEST(Steps, verification_waits_for_its_retry_time) {
  UpgradeFacts u = Facts(S::kVerifying, {}, {{"verify_retry_at", 100.0}});
  EXPECT_EQ(DecideStep(u, "none", 99).action, StepAction::kNone);
  EXPECT_EQ(DecideStep(u, "none", 101).action, StepAction::kStartJob);
}

TEST(Steps, an_interrupted_apply_is_resolved_never_started_again) {
  StepPlan plan = DecideStep(Facts(S::kApplying), "started", 0);
  EXPECT_EQ(plan.action, StepAction::kDecision);
  EXPECT_EQ(*plan.decision.resolve_apply, "the apply was interrupted (journal: apply started)");
}

TEST(DatabaseOutcomes, each_job_records_its_outcome_per_database) {
  json dry = {{"datname", "b"},
              {"error", "boom"},
              {"databases", json::array({{{"datname", "a"}, {"checks", json::array({{{"ok", true}}})}},
                                         {{"datname", "b"}},
                                         {{"datname", "c"}, {"checks", json::array({{{"ok", false}}})}}})}};
  auto out = DatabaseOutcomes(Facts(S::kDryRunning), dry);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].outcome, "dry_run_passed");
  EXPECT_EQ(out[0].phase, "dry_run");
  EXPECT_FALSE(out[0].error);
  EXPECT_EQ(out[1].outcome, "dry_run_failed");
  EXPECT_EQ(*out[1].error, "boom");
  EXPECT_EQ(out[2].outcome, "dry_run_failed");
  auto applied = DatabaseOutcomes(
      Facts(S::kApplying),
      {{"databases", json::array({{{"datname", "a"}, {"committed", true}}, {{"datname", "b"}}})}});
  EXPECT_EQ(applied[0].outcome, "applied");
  EXPECT_EQ(applied[1].outcome, "not_applied");
  auto verified = DatabaseOutcomes(
      Facts(S::kVerifying),
      {{"reason", "behind"},
       {"databases", json::array({{{"datname", "a"}, {"extversion", "2.0"}}, {{"datname", "b"}}})}});
  EXPECT_EQ(verified[0].outcome, "verified");
  EXPECT_EQ(verified[1].outcome, "verify_failed");
  EXPECT_EQ(*verified[1].error, "behind");
  EXPECT_TRUE(DatabaseOutcomes(Facts(S::kRollingBack), dry).empty());
}

}  // namespace
}  // namespace safe_upgrade
