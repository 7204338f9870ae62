// The agent's facts as the worker keeps them in shared memory (fixed-size fields): text cut at a
// UTF-8 character boundary, and JSON that stays JSON (of the same kind) when it does not fit.
#pragma once

#include <cstddef>
#include <string>

namespace safe_upgrade {

// At most max_bytes bytes of text, never ending inside a UTF-8 sequence.
std::string TruncateUtf8(const std::string& text, size_t max_bytes);

// The agent's backend summary (a JSON object) in at most max_bytes bytes, always a JSON object:
// as it is when it fits; else with an empty "backups" list ("backups_omitted" counting them); else
// {"truncated": true} with "ok" kept. Text that is not a JSON object gives {"invalid": true}.
std::string FitBackendSummary(const std::string& json_text, size_t max_bytes);

// The primary's standby agents (Ping's standbys_json, a JSON array of objects) in at most max_bytes
// bytes, always a JSON array: as it is when it fits; else with each "error" cut to a short line;
// else the leading standbys that fit, then {"truncated": true, "omitted": N}; else
// [{"truncated": true}]. Text that is not a JSON array gives [{"invalid": true}]. A reader tells
// from a "truncated" element that standbys may be missing from the list.
std::string FitStandbyAgents(const std::string& json_text, size_t max_bytes);

// Any JSON array in at most max_bytes bytes, always a JSON array: as it is when it fits; else the
// leading elements that fit, then {"truncated": true, "omitted": N}; else [{"truncated": true}].
// Text that is not a JSON array gives [{"invalid": true}]. (Ping's stale_libraries_json.)
std::string FitJsonArray(const std::string& json_text, size_t max_bytes);

// A JSON array of objects without their key, e.g. the standby agents without their "data_directory"
// or the stale libraries without their "path", for roles that may not read the server's own
// settings (agent_status() hides data_directory the same way). Text that is not a JSON array is
// returned as it is.
std::string WithoutKey(const std::string& json_text, const std::string& key);

}  // namespace safe_upgrade
