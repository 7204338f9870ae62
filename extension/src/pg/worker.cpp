// The background worker: the database-side scheduler. Follows pg_cron's model: a latch loop
// with config reload, one short transaction of work per upgrade per pass, and WaitLatch with
// WL_EXIT_ON_PM_DEATH; it never sleeps. It is the only code in the server that talks to the agent.
// Its main runs through RunFromPostgres and calls PostgreSQL only through PgGuard (boundary.h).
#include "boundary.h"  // must be first: postgres.h

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

PGDLLEXPORT void safe_upgrade_worker_main(Datum arg);
}

#include <algorithm>
#include <memory>
#include <string>

#include "core/agent_facts.h"
#include "gucs.h"
#include "rpc/agent_client.h"
#include "shared_state.h"
#include "upgrade_step.h"

namespace safe_upgrade::pg {
namespace {

volatile sig_atomic_t got_sigterm = 0;

// A signal handler: SetLatch is async-signal-safe and cannot raise an ERROR.
void HandleSigterm(SIGNAL_ARGS) {
  int save_errno = errno;
  got_sigterm = 1;
  SetLatch(MyLatch);
  errno = save_errno;
}

std::unique_ptr<AgentClient> client;
std::string client_address;
std::string client_key;
std::string last_logged_problem;

// before_shmem_exit callback: C++ only (the client's destructor), no PostgreSQL call.
void ResetClient(int, Datum) { client.reset(); }

std::string GucText(const char* value) { return value ? value : ""; }

// (Re)creates the client when the address or TLS files changed on reload.
void EnsureClient() {
  AgentTls tls{GucText(guc_agent_tls_ca_file), GucText(guc_agent_tls_cert_file), GucText(guc_agent_tls_key_file)};
  std::string key = GucText(guc_agent_address) + "|" + tls.ca_file + "|" + tls.cert_file + "|" + tls.key_file + "|" +
                    std::to_string(guc_agent_timeout_ms);
  if (!client || client_key != key) {
    client.reset();
    client_address = GucText(guc_agent_address);
    client_key = key;
    client = AgentClient::Create(client_address, guc_agent_timeout_ms, tls);
  }
}

// on_shmem_exit callback.
void ClearWorkerLatch(int, Datum) {
  RunFromPostgres([] {
    SharedState* s = Shared();
    SpinLockAcquire(&s->mutex);  // spinlocks cannot raise an ERROR (a stuck one is a PANIC)
    s->worker_latch = nullptr;
    s->worker_pid = 0;
    SpinLockRelease(&s->mutex);
  });
}

void CopyString(char* into, size_t size, const std::string& value) { snprintf(into, size, "%s", value.c_str()); }

// Pings the agent and publishes the result for agent_status(). Logs only on a change, so a long
// outage leaves one line, not one per ping.
void CheckAgent() {
  AgentPing ping;
  AgentCallError err = client->Ping(ping);
  SharedState* s = Shared();
  TimestampTz now = PgGuard(&GetCurrentTimestamp);
  // Fitted before the spinlock: JSON stays JSON, and text is cut between characters.
  std::string backend_summary =
      ping.backend_summary_json.empty()
          ? std::string()
          : FitBackendSummary(ping.backend_summary_json, sizeof s->backend_summary - 1);
  std::string standby_agents =
      ping.standbys_json.empty() ? std::string()
                                 : FitStandbyAgents(ping.standbys_json, sizeof s->standby_agents - 1);
  std::string stale_libraries = ping.stale_libraries_json.empty()
                                    ? std::string()
                                    : FitJsonArray(ping.stale_libraries_json, sizeof s->stale_libraries - 1);
  std::string agent_role = TruncateUtf8(ping.role, sizeof s->agent_role - 1);
  std::string backend_problem = TruncateUtf8(ping.backend_problem, sizeof s->backend_problem - 1);
  std::string backend_stanza = TruncateUtf8(ping.backend_stanza, sizeof s->backend_stanza - 1);
  std::string backend_kind = ping.backend_kind.empty() ? "local" : ping.backend_kind;
  TimestampTz backend_checked_at =
      now -
      static_cast<TimestampTz>(std::min<uint64_t>(ping.backend_checked_age_ms, 1000ULL * 86400 * 365)) * 1000;
  bool was_checked, was_reachable;
  // Under the spinlock only plain stores and snprintf: nothing that can raise an ERROR.
  SpinLockAcquire(&s->mutex);
  was_checked = s->agent_checked;
  was_reachable = s->agent_reachable;
  s->agent_checked = true;
  s->agent_reachable = err.ok;
  s->checked_at = now;
  CopyString(s->address, sizeof s->address, client_address);
  if (err.ok) {
    CopyString(s->agent_version, sizeof s->agent_version, ping.agent_version);
    CopyString(s->data_directory, sizeof s->data_directory, ping.data_directory);
    s->system_identifier = ping.system_identifier;
    s->snapshot_free_bytes = ping.snapshot_free_bytes;
    s->disk_reserve_bytes = ping.disk_reserve_bytes;
    s->data_free_bytes = ping.data_free_bytes;
    s->wal_archive_writable = ping.wal_archive_writable;
    CopyString(s->wal_archive_newest, sizeof s->wal_archive_newest, ping.wal_archive_newest);
    CopyString(s->wal_archive_oldest, sizeof s->wal_archive_oldest, ping.wal_archive_oldest);
    CopyString(s->wal_needed_from, sizeof s->wal_needed_from, ping.wal_needed_from);
    s->wal_archive_files = ping.wal_archive_files;
    s->wal_archive_bytes = ping.wal_archive_bytes;
    s->wal_archive_reported = ping.wal_archive_reported;
    CopyString(s->snapshot_method_configured, sizeof s->snapshot_method_configured,
               ping.snapshot_method_configured);
    CopyString(s->snapshot_method, sizeof s->snapshot_method, ping.snapshot_method);
    CopyString(s->snapshot_method_reason, sizeof s->snapshot_method_reason, ping.snapshot_method_reason);
    s->snapshot_method_possible = ping.snapshot_method_possible;
    CopyString(s->backend_kind, sizeof s->backend_kind, backend_kind);
    CopyString(s->backend_stanza, sizeof s->backend_stanza, backend_stanza);
    s->backend_checked = ping.backend_checked;
    s->backend_check_ok = ping.backend_check_ok;
    s->backend_checked_at = backend_checked_at;
    CopyString(s->backend_problem, sizeof s->backend_problem, backend_problem);
    CopyString(s->backend_summary, sizeof s->backend_summary, backend_summary);
    CopyString(s->agent_role, sizeof s->agent_role, agent_role);
    CopyString(s->standby_agents, sizeof s->standby_agents, standby_agents);
    s->pg_rewind_available = ping.pg_rewind_available;
    CopyString(s->stale_libraries, sizeof s->stale_libraries, stale_libraries);
    s->last_error[0] = '\0';
  } else {
    CopyString(s->last_error, sizeof s->last_error, err.message);
  }
  SpinLockRelease(&s->mutex);
  if (err.ok && (!was_checked || !was_reachable))
    LogLine(LOG, "safe_upgrade: agent at " + client_address + " is reachable (version " + ping.agent_version +
                     ")");
  if (!err.ok && (!was_checked || was_reachable))
    LogLine(LOG, "safe_upgrade: agent at " + client_address + " is unreachable: " + err.message,
            "Start safe-upgrade-agent, or set safe_upgrade.agent_address to its address.");
}

void LogProblemOnce(const std::string& problem) {
  if (problem == last_logged_problem) return;
  last_logged_problem = problem;
  LogLine(WARNING, "safe_upgrade: " + problem);
}

void WorkerMain() {
  // Installing handlers and unblocking signals cannot raise an ERROR.
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, HandleSigterm);
  BackgroundWorkerUnblockSignals();
  PgGuard(&BackgroundWorkerInitializeConnection, static_cast<const char*>(guc_database),
          static_cast<const char*>(nullptr), static_cast<uint32>(0));
  PgGuard(&pgstat_report_appname, "safe_upgrade scheduler");
  // The scheduler's bookkeeping never waits for a synchronous standby: a rollback stops the
  // standbys to rewind them, and a commit waiting for one would hold the upgrade's rows (and the
  // agent's outcome behind them) until it came back, if ever.
  PgGuard(&SetConfigOption, "synchronous_commit", "local", PGC_USERSET, PGC_S_SESSION);

  SharedState* s = Shared();
  SpinLockAcquire(&s->mutex);
  s->worker_latch = MyLatch;
  s->worker_pid = MyProcPid;
  SpinLockRelease(&s->mutex);
  PgGuard(&on_shmem_exit, &ClearWorkerLatch, Datum(0));
  PgGuard(&before_shmem_exit, &ResetClient, Datum(0));

  LogLine(LOG, std::string("safe_upgrade: scheduler started in database \"") + guc_database + "\"");
  TimestampTz next_check = 0;
  while (!got_sigterm) {
    CheckForInterrupts();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      PgGuard(&ProcessConfigFile, PGC_SIGHUP);
      next_check = 0;  // a new address or interval applies at once
    }
    bool busy = false;
    try {
      EnsureClient();
      TimestampTz now = PgGuard(&GetCurrentTimestamp);
      if (now >= next_check) {
        CheckAgent();
        next_check = TimestampTzPlusMilliseconds(now, guc_agent_check_interval_ms);
      }
      if (guc_enabled && !PgGuard(&RecoveryInProgress)) busy = RunSchedulerPass(*client);
      last_logged_problem.clear();
    } catch (const std::exception& e) {
      LogProblemOnce(e.what());
    }
    // While the agent is unreachable, back off to the check interval instead of polling fast.
    bool reachable;
    SpinLockAcquire(&s->mutex);
    reachable = s->agent_reachable;
    SpinLockRelease(&s->mutex);
    if (busy && !reachable) next_check = 0;
    long timeout = busy && reachable ? guc_poll_interval_ms : guc_agent_check_interval_ms;
    (void)PgGuard(&WaitLatch, MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout,
                  static_cast<uint32>(PG_WAIT_EXTENSION));
    PgGuard(&ResetLatch, MyLatch);
  }
  LogLine(LOG, "safe_upgrade: scheduler shutting down");
  client.reset();
}

}  // namespace
}  // namespace safe_upgrade::pg

void safe_upgrade_worker_main(Datum) {
  safe_upgrade::pg::RunFromPostgres(safe_upgrade::pg::WorkerMain);
  // Outside every C++ frame: proc_exit does not return.
  proc_exit(0);
}
