// The upgrade row and its events: read FOR UPDATE into the core's UpgradeFacts, and a Decision
// (core/upgrade_decision.h) executed through SPI in the step's transaction.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/upgrade_decision.h"
#include "rpc/agent_client.h"

namespace safe_upgrade::pg {

using Upgrade = UpgradeFacts;

nlohmann::json ParseJson(const std::optional<std::string>& text);

// Locks the row; nullopt when there is none (or its state is not one of the table's).
std::optional<Upgrade> LoadUpgrade(int64_t id);

void AddEvent(int64_t id, const NewEvent& event, const std::optional<std::string>& at = std::nullopt);
void Transition(Upgrade& u, UpgradeState to, const std::optional<std::string>& error = std::nullopt);
void MergeReport(const Upgrade& u, const std::string& key, const nlohmann::json& value);
// The state stays; its next step starts a new agent job.
void ForgetAgentJob(const Upgrade& u);

// Each database's part of a finished job's result goes to its upgrade_databases row.
void RecordDatabaseResults(const Upgrade& u, const nlohmann::json& result);

// Executes d, in the order Decision documents. result: the job's result d refers to.
void Execute(Upgrade& u, const Decision& d, const nlohmann::json& result, AgentClient& agent,
             const AgentJournal& journal);

double NowEpochSeconds();

}  // namespace safe_upgrade::pg
