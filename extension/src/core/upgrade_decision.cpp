// The scheduler's policy (see upgrade_decision.h): the state table's targets, with the messages,
// report keys and options that go with them. One switch per kind of event; no PostgreSQL.
#include "core/upgrade_decision.h"

#include <algorithm>
#include <functional>
#include <stdexcept>

#include "core/cpp_only.h"  // no PostgreSQL server header may reach this file

namespace safe_upgrade {
namespace {

using nlohmann::json;
using S = UpgradeState;

std::string Name(UpgradeState state) { return std::string(StateName(state)); }

std::string JoinList(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

Decision GoTo(UpgradeState next, std::optional<std::string> error = std::nullopt) {
  Decision d;
  d.next = next;
  d.error = std::move(error);
  return d;
}

Decision Cancelled(std::string error) { return GoTo(S::kCancelled, std::move(error)); }

bool CancelAtJobEnd(const UpgradeFacts& u) {
  return u.cancel_requested && TableRow(u.state).cancel == Cancel::kAtJobEnd;
}

void MergeResult(Decision& d, UpgradeState state, const json& result) {
  d.report.emplace_back(std::string(TableRow(state).result_key), result);
}

// Where production's health checks failed: roll back unless auto_rollback is off.
Decision ChecksFailedOnProduction(const UpgradeFacts& u, const std::string& error, Decision d) {
  if (OptionBool(u.options, "auto_rollback", true)) {
    d.events.push_back(
        {Name(u.state), "error", "health checks failed on production: " + error + "; rolling back"});
    d.next = OnFailure(u.state, JobFailureKind::kChecksFailed);
    return d;
  }
  d.next = S::kFailed;
  d.error = "health checks failed on production: " + error +
            "; auto_rollback is off, so the upgrade stays applied (run safe_upgrade.rollback(" +
            std::to_string(u.id) + ") to undo it)";
  return d;
}

// The checks could not run (server restarting, connection refused, pg_hba): that says nothing
// about the upgrade, so it is never a failed check and never a reason for a PITR by itself.
Decision RetryVerification(const UpgradeFacts& u, const std::string& error, Decision d) {
  int attempts = u.report.value("verify_attempts", 0) + 1;
  int delay = VerifyRetryDelaySeconds(attempts);
  d.report.emplace_back("verify_attempts", attempts);
  d.verify_retry_in_s = delay;
  d.events.push_back({Name(u.state),
                      "warning",
                      "verification could not run (" + error + "); trying again in " + std::to_string(delay) +
                          " s (attempt " + std::to_string(attempts) + ")",
                      {{"attempt", attempts}, {"retry_in_s", delay}}});
  d.forget_job = true;
  return d;
}

// Nothing was stopped or moved: the rollback was refused before it began.
Decision RollbackRefused(const UpgradeFacts& u, const std::string& error) {
  std::string before = u.report.value("state_before_rollback", "");
  if (before.empty())
    return GoTo(OnFailure(u.state, JobFailureKind::kRefused),
                "rollback could not start: " + error + "; production still runs the upgrade");
  auto state = ParseState(before);
  if (!state) throw std::runtime_error("the state before the rollback, \"" + before + "\", is not a state");
  Decision d = GoTo(*state);
  d.events.push_back({Name(u.state), "error", "rollback refused: " + error + "; nothing was changed"});
  d.report.emplace_back("rollback_refused", json{{"error", error}});
  return d;
}

bool AllChecksPassed(const json& part) {
  for (const auto& c : part.value("checks", json::array()))
    if (!c.value("ok", false)) return false;
  return true;
}

}  // namespace

bool OptionBool(const json& options, const char* key, bool fallback) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string()) return *it == "true" || *it == "on";
  return fallback;
}

bool Decision::Empty() const {
  return report.empty() && !verify_retry_in_s && !store_snapshot && !store_dependencies_after &&
         events.empty() && !resolve_apply && !forget_job && !next;
}

NewEvent TransitionEvent(UpgradeState from, UpgradeState to, const std::optional<std::string>& error) {
  std::string message = "state " + Name(from) + " -> " + Name(to);
  if (error) message += ": " + *error;
  return {Name(to),
          error && TableRow(to).failure_end ? "error" : "info",
          message,
          {{"from", Name(from)}, {"to", Name(to)}}};
}

int VerifyRetryDelaySeconds(int attempts) { return std::min(60, 5 << std::min(attempts - 1, 4)); }

Decision OnJobSucceeded(const UpgradeFacts& u, const json& result) {
  if (CancelAtJobEnd(u)) {
    Decision d = Cancelled("cancelled by request");
    if (!TableRow(u.state).result_key.empty()) MergeResult(d, u.state, result);
    return d;
  }
  const UpgradeState next = TableRow(u.state).on_success;
  Decision d;
  switch (u.state) {
    case S::kScheduled:
      // The rollback target is prepared (or the cold path chosen); the restore point comes next.
      MergeResult(d, u.state, result);
      d.forget_job = true;
      return d;
    case S::kSnapshotting:
      d.store_snapshot = true;
      d.next = next;
      return d;
    case S::kDryRunning:
      MergeResult(d, u.state, result);
      d.store_dependencies_after = true;
      if (OptionBool(u.options, "dry_run_only", false))
        d.next = S::kValidated;
      else if (OptionBool(u.options, "require_approval", false) && !u.approved)
        d.next = S::kAwaitingApproval;
      else
        d.next = next;
      return d;
    case S::kApplying:
      MergeResult(d, u.state, result);
      d.next = next;
      return d;
    case S::kVerifying: {
      MergeResult(d, u.state, result);
      // "succeeded" promises the extension is at its target version on production, everywhere.
      std::vector<std::string> behind;
      for (const auto& part : result.value("databases", json::array()))
        if (part.value("extversion", "") != u.to_version)
          behind.push_back(part.value("datname", "") + " (" + part.value("extversion", "not installed") +
                           ")");
      if (!result.contains("databases") || result["databases"].empty())
        behind.push_back("every database (none reported)");
      if (behind.empty()) {
        d.next = next;
        return d;
      }
      Decision failed =
          OnJobFailed(u, JobFailureKind::kChecksFailed,
                      u.extname + " is not at " + u.to_version + " on production in " + JoinList(behind),
                      json{{"checks_failed", true}});
      failed.report.insert(failed.report.begin(), d.report.begin(), d.report.end());
      return failed;
    }
    case S::kRollingBack: {
      MergeResult(d, u.state, result);
      std::string reported = result.value("state", Name(next));
      auto state = ParseState(reported);
      if (!state)
        throw std::runtime_error("the rollback job reported \"" + reported + "\", which is not a state");
      d.next = *state;
      return d;
    }
    default:
      return d;
  }
}

Decision OnJobFailed(const UpgradeFacts& u, JobFailureKind kind, const std::string& error,
                     const json& result) {
  if (CancelAtJobEnd(u))
    return Cancelled("cancelled by request (the " + Name(u.state) + " step had failed: " + error + ")");
  const UpgradeState next = OnFailure(u.state, kind);
  Decision d;
  switch (u.state) {
    case S::kScheduled:
      return GoTo(next, "could not prepare the rollback target: " + error);
    case S::kSnapshotting:
      return GoTo(next, "snapshot failed: " + error);
    case S::kDryRunning:
      MergeResult(d, u.state, result);
      d.next = next;
      d.error = "dry run failed: " + error;
      return d;
    case S::kApplying:
      MergeResult(d, u.state, result);
      // "failed" promises production untouched: an apply job can fail after its COMMIT (a journal
      // write, a lost commit whose resolution timed out, a later database), and the installed
      // versions tell.
      d.resolve_apply = "apply failed: " + error;
      return d;
    case S::kVerifying:
      MergeResult(d, u.state, result);
      if (next == u.state) return RetryVerification(u, error, std::move(d));
      return ChecksFailedOnProduction(u, error, std::move(d));
    case S::kRollingBack:
      if (kind == JobFailureKind::kRefused) return RollbackRefused(u, error);
      MergeResult(d, u.state, result);
      d.next = next;
      d.error = error;
      return d;
    default:
      return d;
  }
}

Decision OnJobLost(const UpgradeFacts& u) {
  Decision d;
  if (u.state == S::kApplying) {
    d.resolve_apply = "the agent restarted during the apply";
  } else if (u.state != S::kRollingBack) {  // the agent resumes rollbacks itself on start
    d.events.push_back({Name(u.state), "warning",
                        "the agent restarted during " + Name(u.state) + "; starting the step again"});
    d.forget_job = true;
  }
  return d;
}

Decision OnAgentSilent(const UpgradeFacts& u, const std::string& message, int unreachable_timeout_s) {
  if (ProductionMayBeTouched(u.state) || u.seconds_in_state <= unreachable_timeout_s) return {};
  return GoTo(S::kFailed, "the agent stopped answering during " + Name(u.state) + ": " + message);
}

Decision OnJobNotStarted(const UpgradeFacts& u, JobKind kind, const StartError& err,
                         const std::string& address, int unreachable_timeout_s) {
  if (err.busy) return {};  // another job is running; try on the next pass
  if (err.refused) {
    // The agent will not run this job (the upgrade is in a state it does not accept, its snapshot
    // is gone, ...): waiting would wait forever, so the upgrade ends with the agent's reason.
    std::string why = "the agent refused the " + std::string(JobKindName(kind)) + " job: " + err.message;
    if (u.state == S::kApplying) {
      Decision d;
      d.resolve_apply = why;
      return d;
    }
    if (u.state == S::kRollingBack)
      return GoTo(OnFailure(u.state, JobFailureKind::kRefused), why + "; production still runs the upgrade");
    if (!ProductionMayBeTouched(u.state)) return GoTo(S::kFailed, why + "; production was not touched");
  }
  // Verification that cannot start is verification that cannot run: retried with backoff.
  if (u.state == S::kVerifying)
    return OnJobFailed(u, JobFailureKind::kCouldNotRun, "the agent could not start it: " + err.message,
                       json::object());
  if (!ProductionMayBeTouched(u.state) && u.seconds_in_state > unreachable_timeout_s)
    return GoTo(S::kFailed, "the agent is unreachable at " + address + ": " + err.message +
                                "; production was not touched");
  return {};
}

// Production may have been touched, but the agent lost or failed the apply job: decide from the
// installed version in every database, never by running the upgrade again. The journal alone is
// not enough: a committed apply that something later undid must not be verified as if it were
// there. Committed in some databases only: the cluster is half upgraded, and one point-in-time
// recovery puts every database back.
Decision ResolveApply(const UpgradeFacts& u, const std::string& journal_apply,
                      const std::map<std::string, std::string>& versions,
                      const std::optional<std::string>& unreadable, const std::string& why) {
  Decision d;
  const std::string phase = Name(u.state);
  if (unreadable) {
    if (u.report.value("apply_resolution_waits_for", "") != *unreadable) {
      d.report.emplace_back("apply_resolution_waits_for", *unreadable);
      d.events.push_back({phase, "warning",
                          why + "; the installed versions cannot be read yet (" + *unreadable +
                              "), so the outcome is decided once they can"});
    }
    return d;
  }
  std::vector<std::string> upgraded, not_upgraded;
  for (const auto& [datname, version] : versions)
    (version == u.to_version ? upgraded : not_upgraded)
        .push_back(datname + " (" + (version.empty() ? "not installed" : version) + ")");
  json detail = {{"journal_apply", journal_apply}, {"extversions", versions}};
  if (not_upgraded.empty()) {
    d.events.push_back(
        {phase, "warning",
         why + "; " + u.extname + " is at " + u.to_version + " in " + JoinList(upgraded) +
             ", so the apply committed: verifying it (and rolling back if that fails), not applying "
             "it again",
         detail});
    d.next = TableRow(u.state).on_success;
  } else if (upgraded.empty() && (journal_apply == "committed" || journal_apply == "partially_committed")) {
    d = GoTo(S::kFailed,
             why + "; the agent's journal says the apply committed, but " + u.extname + " is not at " +
                 u.to_version + " in " + JoinList(not_upgraded) +
                 " (undone since, for example by a point-in-time recovery); the upgrade is not applied "
                 "again");
  } else if (upgraded.empty()) {
    d = GoTo(S::kFailed, why + "; the apply did not commit: " + u.extname + " is still at its version in " +
                             JoinList(not_upgraded) + " and the upgrade is not applied again");
  } else if (OptionBool(u.options, "auto_rollback", true)) {
    d.events.push_back({phase, "error",
                        why + "; the upgrade committed in " + JoinList(upgraded) + " but not in " +
                            JoinList(not_upgraded) + ": rolling the whole cluster back to the restore point",
                        detail});
    d.next = S::kRollingBack;
  } else {
    d = GoTo(S::kFailed, why + "; the upgrade committed in " + JoinList(upgraded) + " but not in " +
                             JoinList(not_upgraded) +
                             "; auto_rollback is off, so those stay upgraded (run safe_upgrade.rollback(" +
                             std::to_string(u.id) + ") to undo it)");
  }
  return d;
}

StepPlan DecideStep(const UpgradeFacts& u, const std::string& journal_apply, double now_epoch) {
  const StateRow& row = TableRow(u.state);
  StepPlan plan;
  auto decide = [&plan](Decision d) {
    plan.action = StepAction::kDecision;
    plan.decision = std::move(d);
    return plan;
  };
  if (u.cancel_requested && row.cancel == Cancel::kAtStep && !u.has_restore_point)
    return decide(Cancelled("cancelled by request"));
  switch (u.state) {
    case S::kQueued:
      return decide(GoTo(row.on_success));
    case S::kAwaitingApproval:
      return u.approved ? decide(GoTo(row.on_success)) : plan;
    case S::kScheduled:
      plan.action = StepAction::kScheduledStep;
      return plan;
    default:
      break;
  }
  if (!row.job || IsTerminal(u.state)) return plan;
  if (u.agent_job) {
    plan.action = StepAction::kFollowJob;
    return plan;
  }
  if (u.state == S::kVerifying && u.report.value("verify_retry_at", 0.0) > now_epoch) return plan;
  if (u.state == S::kApplying && journal_apply != "none") {
    Decision d;
    d.resolve_apply = "the apply was interrupted (journal: apply " + journal_apply + ")";
    return decide(std::move(d));
  }
  plan.action = StepAction::kStartJob;
  return plan;
}

// The dry run passed in a database unless a check failed or the dry run failed there; the apply
// committed or not; the verification passed when every check passed and the extension is at its
// target.
std::vector<DatabaseOutcome> DatabaseOutcomes(const UpgradeFacts& u, const json& result) {
  std::vector<DatabaseOutcome> out;
  const std::string failed_in = result.value("datname", "");
  const char *good = nullptr, *bad = nullptr;
  std::function<bool(const json&)> ok;
  switch (u.state) {
    case S::kDryRunning:
      good = "dry_run_passed", bad = "dry_run_failed";
      ok = [&](const json& part) { return AllChecksPassed(part) && part.value("datname", "") != failed_in; };
      break;
    case S::kApplying:
      good = "applied", bad = "not_applied";
      ok = [](const json& part) { return part.value("committed", false); };
      break;
    case S::kVerifying:
      good = "verified", bad = "verify_failed";
      ok = [&](const json& part) {
        return AllChecksPassed(part) && part.value("extversion", "") == u.to_version;
      };
      break;
    default:
      return out;
  }
  if (!result.contains("databases") || !result["databases"].is_array()) return out;
  for (const auto& part : result["databases"]) {
    if (!part.is_object() || !part.contains("datname")) continue;
    bool passed = ok(part);
    out.push_back({part.value("datname", ""), std::string(TableRow(u.state).result_key), passed ? good : bad,
                   part,
                   passed ? std::nullopt
                          : std::optional<std::string>(result.value("reason", result.value("error", "")))});
  }
  return out;
}

}  // namespace safe_upgrade
