// The agent's facts as the worker keeps them in shared memory (fixed-size fields): text cut at a
// UTF-8 character boundary, and JSON that stays JSON when it does not fit.
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

}  // namespace safe_upgrade
