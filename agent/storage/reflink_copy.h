// The file copy of a reflink snapshot: every file of the running cluster cloned (FICLONE) into
// the layout a plain pg_basebackup writes, leaving out what pg_basebackup leaves out. Runs
// between pg_backup_start and pg_backup_stop; the WAL replayed from the backup's start makes the
// copy consistent, as it does for pg_basebackup's own copy.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "postgres/tablespaces.h"

namespace safe_upgrade {

// What to do with one entry of a data directory, by its path relative to the data directory
// ("postmaster.pid", "pg_wal", "base/5/16384"). Tablespace links (pg_tblspc/<oid>) are handled by
// the copy itself.
enum class CopyRule {
  kCopy,            // clone the file, or copy the directory with its contents
  kSkip,            // leave it out
  kEmptyDirectory,  // the directory, without its contents (pg_wal, pg_replslot, pg_subtrans, ...)
};
CopyRule BackupCopyRule(const std::string& relative_path, bool is_directory);

// In the listing of one database directory: the files of unlogged relations that pg_basebackup
// leaves out (every fork and segment of a relation that has an init fork, except the init fork
// itself; recovery rebuilds them from it).
std::set<std::string> UnloggedFilesToSkip(const std::vector<std::string>& names);

struct ReflinkCopyStats {
  uint64_t files = 0, directories = 0, links = 0;
  uint64_t bytes = 0;     // logical size of the files cloned
  uint64_t vanished = 0;  // files removed by the server while the copy ran (as pg_basebackup skips them)
};

// Clones data_dir into target (which must not exist): pg_wal becomes an empty directory (with
// archive_status), each tablespace of layout goes to <tablespaces_target>/<oid>/<version dir> and
// the copy's pg_tblspc/<oid> links there. A tablespace that is not in layout (created since the
// layout was read) is an error. on_file is called after each file, with the running totals.
ReflinkCopyStats ReflinkCopyDataDirectory(const std::string& data_dir, const std::string& target,
                                          const std::string& tablespaces_target, const ExternalLayout& layout,
                                          const std::function<void(const ReflinkCopyStats&)>& on_file);

}  // namespace safe_upgrade
