// An upgrade and a plan rendered for people: the status view, the outcome summary, the dry-run
// summary and the plan report (one module each: render_*.cpp).
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>

#include "upgrade_doc.h"

namespace safe_upgrade::cli {

// Outcome paragraph of a finished upgrade: what happened, phase durations, drift, data-loss window.
void PrintOutcome(std::ostream& out, const UpgradeDoc& doc);
// The dry run's health checks and catalog drift (used before asking for approval, and by status).
void PrintDryRunSummary(std::ostream& out, const nlohmann::json& dry_run);
// The full status view: header, phases, restore point, reports, events.
void PrintStatus(std::ostream& out, const UpgradeDoc& doc);
// The readable plan report of safe_upgrade.plan(), verdict first.
void PrintPlan(std::ostream& out, const nlohmann::json& plan);

}  // namespace safe_upgrade::cli
