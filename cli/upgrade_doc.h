// One upgrade as the command line sees it, read from the catalog tables (upgrades, events,
// restore_points, which are part of the contract), and its renderings: the status view, the
// outcome summary, the dry-run summary, the plan report and the --json document.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "postgres/pg_conn.h"

namespace safe_upgrade::cli {

struct UpgradeDoc {
  int64_t id = 0;
  nlohmann::json upgrade;        // the upgrades row (to_jsonb)
  nlohmann::json restore_point;  // the restore_points row, or null
  nlohmann::json databases;      // the upgrade_databases rows, in name order
  nlohmann::json events;         // events rows with id > the cursor asked for, each plus "at_epoch"
  double created_epoch = 0, updated_epoch = 0, now_epoch = 0;  // server clock

  std::string State() const;
  std::string Extname() const;
  std::string FromVersion() const;
  std::string ToVersion() const;
  const nlohmann::json& Report() const;
};

// nullopt when there is no such upgrade. Events are those with id > after_event_id.
std::optional<UpgradeDoc> LoadUpgradeDoc(PgConn& conn, int64_t id, int64_t after_event_id = 0);
// The in-flight upgrade, else the most recent one; nullopt when there are none.
std::optional<int64_t> CurrentUpgradeId(PgConn& conn);

bool IsTerminalState(const std::string& state);
// The `run` exit code for a terminal state (0, 1, 3, 4, 5).
int ExitCodeForState(const std::string& state);
// What a state means, in a few plain words.
std::string StateMeaning(const std::string& state);

// A state transition event ("state a -> b", detail {"from", "to"}); returns the new state.
std::optional<std::string> TransitionTarget(const nlohmann::json& event);

struct PhaseSpan {
  std::string state, started_at;
  double start_epoch = 0;
  std::optional<double> duration_s;  // nullopt for the final state of a finished upgrade
};
// The states the upgrade went through, from its transition events (doc.events must be all of them).
std::vector<PhaseSpan> PhaseTimeline(const UpgradeDoc& doc);

// The --json document of `run` and `status` (fields documented in docs/cli.md).
nlohmann::json DocToJson(const UpgradeDoc& doc);

// Outcome paragraph of a finished upgrade: what happened, phase durations, drift, data-loss window.
void PrintOutcome(std::ostream& out, const UpgradeDoc& doc);
// The dry run's health checks and catalog drift (used before asking for approval, and by status).
void PrintDryRunSummary(std::ostream& out, const nlohmann::json& dry_run);
// The full status view: header, phases, restore point, reports, events.
void PrintStatus(std::ostream& out, const UpgradeDoc& doc);
// The readable plan report, verdict first.
void PrintPlan(std::ostream& out, const nlohmann::json& plan);

}  // namespace safe_upgrade::cli
