// The short account of a pgBackRest stanza that Ping carries to plan(): its status, repositories,
// the newest archived segment and the backups a rollback builds on (the newest full one and what
// was taken after it), bounded in size so that it fits the extension's shared memory.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>

#include "postgres/pgbackrest.h"

namespace safe_upgrade {

// Ping's backend_summary_json is at most this long (the worker keeps it in a 4 KB field).
constexpr size_t kBackendSummaryMaxBytes = 4000;

// Pure: the summary of stanza, whose dump (Dump below) is at most max_bytes. When the backups do
// not fit, the oldest ones after the newest full backup go first, then the list itself
// ("backups_omitted" counts what was left out); when even the rest does not fit, the repositories,
// and at last everything but "ok" and "truncated".
nlohmann::json PgBackRestSummary(const PgBackRestStanza& stanza, size_t max_bytes = kBackendSummaryMaxBytes);

// The summary when `pgbackrest info` itself failed: {"ok": false, "info_error": ...}, bounded.
nlohmann::json PgBackRestInfoFailure(const std::string& message, size_t max_bytes = kBackendSummaryMaxBytes);

// JSON text as Ping sends it: compact, and invalid UTF-8 from pgBackRest's messages replaced
// rather than thrown on.
std::string DumpSummary(const nlohmann::json& summary);

// A message for a protobuf string field (which must be UTF-8): invalid bytes replaced by U+FFFD,
// and at most max_bytes long, cut at a character boundary.
std::string ProtoSafeText(const std::string& text, size_t max_bytes = 2000);

}  // namespace safe_upgrade
