// The snapshot as a pgBackRest backup (backend.kind = "pgbackrest"): an incremental or
// differential backup of the stanza (a full one when there is none yet), with the WAL it needs
// for consistency copied into it, checked by `pgbackrest verify`. Nothing is written to
// snapshot_dir but snapshot.json: the backup lives in the stanza's repositories.
#include <chrono>

#include "postgres/pgbackrest.h"
#include "snapshots/snapshot_methods.h"

namespace safe_upgrade {

PgBackRestTaken TakePgBackRestSnapshot(JobContext& ctx, uint64_t system_identifier) {
  const AgentConfig& config = ctx.config();
  PgBackRest pgbackrest(config);
  auto timeout = std::chrono::seconds(std::max(60, config.job_timeout_s));
  PgBackRestTaken taken;
  try {
    // The archive must work before a backup is worth taking: a stanza whose archive_command
    // fails would give a backup no rollback can replay past.
    auto started = std::chrono::steady_clock::now();
    pgbackrest.Check(std::chrono::seconds(60));
    ctx.Info("snapshot", pgbackrest.Describe() + ": pgbackrest check passed in " +
                             std::to_string(SecondsSince(started)).substr(0, 4) + " s");
    PgBackRestStanza before = pgbackrest.Info();
    if (before.system_identifier != system_identifier)
      throw JobFailure(pgbackrest.Describe() + " belongs to system " +
                       std::to_string(before.system_identifier) + ", not to the cluster served (" +
                       std::to_string(system_identifier) + ")");
    std::string prior = before.backups.empty() ? "" : before.backups.back().label;
    ctx.Info("snapshot", "pgbackrest backup --type=" + config.backend.backup_type +
                             (prior.empty() ? " (no backup yet: pgBackRest takes a full one)"
                                            : " (the newest backup is " + prior + ")"));
    started = std::chrono::steady_clock::now();
    taken.backup = pgbackrest.Backup(config.backend.backup_type, config.backup_checkpoint == "fast", timeout);
    taken.backup_s = SecondsSince(started);
    if (taken.backup.error)
      throw JobFailure(pgbackrest.Describe() + ": backup " + taken.backup.label +
                       " has checksum errors; it is not a snapshot to roll back to");
    ctx.Info("snapshot",
             "backup " + taken.backup.label + " (" + taken.backup.type + ") taken in " +
                 std::to_string(taken.backup_s).substr(0, 5) +
                 " s: " + std::to_string(taken.backup.repo_delta_bytes / (1024 * 1024)) +
                 " MB written to the repository",
             taken.backup.ToJson());
    started = std::chrono::steady_clock::now();
    pgbackrest.Verify(taken.backup.label, timeout);
    taken.verify_s = SecondsSince(started);
  } catch (const PgBackRestError& e) {
    throw JobFailure(std::string("cannot take the snapshot: ") + e.what() + "; production was not touched",
                     {{"hint", "Run `pgbackrest --stanza=" + config.backend.stanza +
                                   " check` as the agent's OS user; production was not touched."}});
  }
  return taken;
}

}  // namespace safe_upgrade
