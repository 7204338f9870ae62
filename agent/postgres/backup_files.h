// What PostgreSQL's backup tools write, parsed: pg_basebackup's progress lines, backup_label and
// backup_manifest. Kept apart from the snapshot job so unit tests can feed them text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace safe_upgrade {

struct BasebackupProgress {
  uint64_t done_kb = 0, total_kb = 0;
  int percent = 0;
};

// One line of `pg_basebackup --progress` ("  1234/56789 kB (2%), 0/1 tablespace ..."), or
// nullopt for any other line (warnings, errors).
std::optional<BasebackupProgress> ParseBasebackupProgress(const std::string& line);

struct BackupLabelFacts {
  std::string start_lsn;  // "0/2000028"
  uint32_t timeline = 0;
};

// START WAL LOCATION and START TIMELINE from a backup_label file's text; throws when missing.
BackupLabelFacts ParseBackupLabel(const std::string& text);

// The End-LSN of the newest WAL range in a backup_manifest's "WAL-Ranges" (the backup's stop
// LSN); throws when the manifest has none.
std::string ParseManifestStopLsn(const std::string& manifest_text);

// "X/Y" (hex halves) to a 64-bit position; throws on malformed input.
uint64_t ParseLsn(const std::string& lsn);

}  // namespace safe_upgrade
