// State shared between the background worker and backends, in shared memory: the worker's
// latch (to wake it) and what it last saw of the agent (for agent_status()).
#pragma once

#include "boundary.h"

extern "C" {
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/timestamp.h"
}

namespace safe_upgrade::pg {

struct SharedState {
  slock_t mutex;
  Latch* worker_latch;
  int worker_pid;
  bool agent_checked;
  bool agent_reachable;
  char agent_version[32];
  char data_directory[1024];
  char address[1024];
  char last_error[1024];
  uint64 system_identifier;
  uint64 snapshot_free_bytes;
  uint64 disk_reserve_bytes;
  uint64 data_free_bytes;
  bool wal_archive_writable;
  char wal_archive_newest[64];
  char wal_archive_oldest[64];
  char wal_needed_from[64];
  uint64 wal_archive_files;
  uint64 wal_archive_bytes;
  bool wal_archive_reported;
  char snapshot_method_configured[16];
  char snapshot_method[16];
  char snapshot_method_reason[512];
  bool snapshot_method_possible;
  // The agent's backend ("" until an agent answered; "local" for older agents). backend_summary
  // is a JSON object (FitBackendSummary), "" when there is none.
  char backend_kind[16];
  char backend_stanza[256];
  bool backend_checked;
  bool backend_check_ok;
  TimestampTz backend_checked_at;
  char backend_problem[1024];
  char backend_summary[4096];
  // The node the agent serves ("primary", "standby"; "" from older agents, which report neither
  // this nor the next two). standby_agents is a JSON array (FitStandbyAgents), "" when none came.
  char agent_role[16];
  char standby_agents[4096];
  bool pg_rewind_available;
  // The replaced libraries the server's processes map (FitJsonArray); "" from older agents.
  char stale_libraries[4096];
  TimestampTz checked_at;
};

void RequestSharedState();
void InitSharedState();
SharedState* Shared();

}  // namespace safe_upgrade::pg
