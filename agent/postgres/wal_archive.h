// WAL archive commands: `safe-upgrade-agent wal-push %p` (archive_command) and
// `wal-fetch %f %p` (restore_command), storing segments in the configured archive directory.
#pragma once

#include <cstdint>
#include <string>

#include "base/config.h"

namespace safe_upgrade {

// Returns a process exit code (0 on success) and prints the reason on stderr otherwise.
int WalPush(const AgentConfig& config, const std::string& source_path);
int WalFetch(const AgentConfig& config, const std::string& file_name, const std::string& dest_path);

// What the archive holds, for plan(): counts, and the oldest segment and the newest file in
// PostgreSQL's archiving order (names compare as PostgreSQL archives them: segments, .partial,
// .backup and .history files of later timelines sort later).
struct WalArchiveSummary {
  uint64_t files = 0, bytes = 0;
  std::string oldest_segment, newest_file;
  uint32_t segment_bytes = 0;  // the archive's WAL segment size (0 while it holds no segment)
};
WalArchiveSummary SummarizeWalArchive(const AgentConfig& config);

// The name of the WAL segment that holds lsn on timeline, for segments of seg_size bytes.
std::string WalSegmentName(uint32_t timeline, uint64_t lsn, uint32_t seg_size);

// Proves that the archive can replay from_lsn to to_lsn on timeline: every segment in between
// (inclusive) is present under its name, readable, a PostgreSQL 15 segment of system_identifier
// that starts where its name says. Returns how many segments it checked; throws
// std::runtime_error naming the first segment that is missing or wrong.
size_t ProveWalArchiveCovers(const AgentConfig& config, uint64_t system_identifier, uint32_t timeline,
                             uint64_t from_lsn, uint64_t to_lsn);

struct WalPruneOutcome {
  uint64_t files = 0, bytes = 0;
  std::string kept_from;  // the first segment position kept ("" when nothing was pruned)
};
// Removes the archived segments (and their .partial and .backup files) that lie wholly before
// keep_from_lsn, on every timeline: no snapshot the agent keeps can replay them. Timeline history
// files are always kept (they are tiny, and recovery reads them to follow a timeline switch).
WalPruneOutcome PruneWalArchive(const AgentConfig& config, uint64_t keep_from_lsn);

}  // namespace safe_upgrade
