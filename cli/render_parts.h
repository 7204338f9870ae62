// Pieces the renderers share (renderers.h): list items, millisecond durations, the drift, check,
// database and standby tables, and the phase table.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "timeline.h"
#include "upgrade_doc.h"

namespace safe_upgrade::cli {

std::string PlainItem(const nlohmann::json& item);
// "a, b, c and 4 more" for short listings of drift items and the like.
std::string ListSome(const nlohmann::json& items, size_t max_items = 5);
// Sub-second steps (hops, checks) read better in milliseconds.
std::string Millis(double ms);

// The dependency drift the dry run found (nothing when no dry run got that far).
void PrintDrift(std::ostream& out, const nlohmann::json& drift, const std::string& indent);
// Health-check results as a table.
void PrintChecks(std::ostream& out, const nlohmann::json& checks, const std::string& indent);
// One line per database of the upgrade: where it started and how far it got.
void PrintDatabases(std::ostream& out, const nlohmann::json& databases, const std::string& indent);
// One line per standby of the upgrade (upgrade_standbys): what it was when the upgrade began and,
// after a rollback, what became of it.
void PrintUpgradeStandbys(std::ostream& out, const nlohmann::json& standbys, const std::string& indent);
// The phase table: each phase, when it started (since the upgrade was created), how long it took.
void PrintPhases(std::ostream& out, const UpgradeDoc& doc, const std::vector<PhaseSpan>& timeline);

}  // namespace safe_upgrade::cli
