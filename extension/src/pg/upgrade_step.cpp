// The scheduler pass: each in-flight upgrade advanced by at most a few steps, each in its own
// transaction. A step reads the upgrade row FOR UPDATE, asks the core what to do
// (core/upgrade_decision.h), talks to the agent (short RPCs with deadlines) and writes the new
// state and events in the same transaction.
#include "boundary.h"  // must be first: postgres.h


#include <map>
#include <string>
#include <vector>

#include "spi.h"
#include "upgrade_jobs.h"
#include "upgrade_restore_point.h"
#include "upgrade_row.h"
#include "upgrade_step.h"

namespace safe_upgrade::pg {
namespace {

void StepUpgrade(Upgrade& u, AgentClient& agent) {
  AgentJournal journal;
  if (TableRow(u.state).may_roll_back) {
    // From here on the agent's journal is the authority: a rollback it has journaled (even one
    // that PITR hid from this catalog) must be left to the agent, and an apply is never re-run.
    AgentCallError err = agent.GetJournal(u.id, journal);
    if (!err.ok) return;
    if (journal.rollback != "none") return;
  }
  StepPlan plan = DecideStep(u, journal.apply, NowEpochSeconds());
  switch (plan.action) {
    case StepAction::kNone:
      return;
    case StepAction::kDecision:
      return Execute(u, plan.decision, nlohmann::json::object(), agent, journal);
    case StepAction::kScheduledStep:
      return StepScheduled(u, agent, journal);
    case StepAction::kStartJob:
      return StartJob(u, agent, journal);
    case StepAction::kFollowJob:
      return FollowJob(u, agent, journal);
  }
}

// One step of one upgrade, in the caller's transaction. True when it moved to another in-flight
// state, whose first step can run at once instead of a poll interval later (a rollback starts
// sooner, for one).
bool Step(int64_t id, AgentClient& agent) {
  auto loaded = LoadUpgrade(id);
  if (!loaded || !IsInFlight(loaded->state)) return false;
  const UpgradeState before = loaded->state;
  StepUpgrade(*loaded, agent);
  return loaded->state != before && IsInFlight(loaded->state);
}

// The states as a text[] literal: {a,b,c} (state names need no quoting).
std::string TextArray(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ",") + name;
  return "{" + out + "}";
}

}  // namespace

bool RunSchedulerPass(AgentClient& agent) {
  std::vector<int64_t> ids;
  {
    SpiTransaction tx;
    auto ext = SpiExec("SELECT 1 FROM pg_extension WHERE extname = 'safe_upgrade'");
    if (!ext.rows.empty()) {
      auto r = SpiExec("SELECT id FROM safe_upgrade.upgrades WHERE state <> ALL ($1::text[]) ORDER BY id",
                       {TextArray(TerminalStateNames())});
      for (const auto& row : r.rows) ids.push_back(std::stoll(*row[0]));
    }
    tx.Commit();
  }
  static std::map<int64_t, std::string> last_problem;
  for (int64_t id : ids) {
    CheckForInterrupts();
    std::string problem;
    try {
      for (int round = 0; round < 3; ++round) {
        SpiTransaction tx;
        bool moved = Step(id, agent);
        tx.Commit();
        if (!moved) break;
      }
    } catch (const std::exception& e) {
      problem = e.what();
    }
    // Logged once per distinct problem, outside the catch block, so a stuck upgrade cannot flood the log.
    if (!problem.empty() && last_problem[id] != problem)
      LogLine(WARNING, "safe_upgrade: upgrade " + std::to_string(id) + ": " + problem);
    last_problem[id] = problem;
  }
  return !ids.empty();
}

}  // namespace safe_upgrade::pg
