// The background worker: the database-side scheduler. Follows pg_cron's model: a latch loop
// with config reload, one short transaction of work per upgrade per pass, and WaitLatch with
// WL_EXIT_ON_PM_DEATH; it never sleeps. It is the only code in the server that talks to the agent.
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

#include <memory>
#include <string>

#include "gucs.h"
#include "rpc/agent_client.h"
#include "shared_state.h"
#include "upgrade_step.h"

namespace safe_upgrade::pg {
namespace {

volatile sig_atomic_t got_sigterm = 0;

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

void ClearWorkerLatch(int, Datum) {
  SharedState* s = Shared();
  SpinLockAcquire(&s->mutex);
  s->worker_latch = nullptr;
  s->worker_pid = 0;
  SpinLockRelease(&s->mutex);
}

void CopyString(char* into, size_t size, const std::string& value) { snprintf(into, size, "%s", value.c_str()); }

// Pings the agent and publishes the result for agent_status(). Logs only on a change, so a long
// outage leaves one line, not one per ping.
void CheckAgent() {
  AgentPing ping;
  AgentCallError err = client->Ping(ping);
  SharedState* s = Shared();
  bool was_checked, was_reachable;
  SpinLockAcquire(&s->mutex);
  was_checked = s->agent_checked;
  was_reachable = s->agent_reachable;
  s->agent_checked = true;
  s->agent_reachable = err.ok;
  s->checked_at = GetCurrentTimestamp();
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
    s->last_error[0] = '\0';
  } else {
    CopyString(s->last_error, sizeof s->last_error, err.message);
  }
  SpinLockRelease(&s->mutex);
  if (err.ok && (!was_checked || !was_reachable))
    ereport(LOG, (errmsg("safe_upgrade: agent at %s is reachable (version %s)", client_address.c_str(),
                         ping.agent_version.c_str())));
  if (!err.ok && (!was_checked || was_reachable))
    ereport(LOG, (errmsg("safe_upgrade: agent at %s is unreachable: %s", client_address.c_str(), err.message.c_str()),
                  errhint("Start safe-upgrade-agent, or set safe_upgrade.agent_address to its address.")));
}

void LogProblemOnce(const std::string& problem) {
  if (problem == last_logged_problem) return;
  last_logged_problem = problem;
  ereport(WARNING, (errmsg("safe_upgrade: %s", problem.c_str())));
}

}  // namespace
}  // namespace safe_upgrade::pg

using namespace safe_upgrade::pg;

void safe_upgrade_worker_main(Datum) {
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, HandleSigterm);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(guc_database, nullptr, 0);
  pgstat_report_appname("safe_upgrade scheduler");

  SharedState* s = Shared();
  SpinLockAcquire(&s->mutex);
  s->worker_latch = MyLatch;
  s->worker_pid = MyProcPid;
  SpinLockRelease(&s->mutex);
  on_shmem_exit(ClearWorkerLatch, 0);
  before_shmem_exit(ResetClient, 0);

  ereport(LOG, (errmsg("safe_upgrade: scheduler started in database \"%s\"", guc_database)));
  TimestampTz next_check = 0;
  while (!got_sigterm) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
      next_check = 0;  // a new address or interval applies at once
    }
    bool busy = false;
    try {
      EnsureClient();
      TimestampTz now = GetCurrentTimestamp();
      if (now >= next_check) {
        CheckAgent();
        next_check = TimestampTzPlusMilliseconds(now, guc_agent_check_interval_ms);
      }
      if (guc_enabled && !RecoveryInProgress()) busy = RunSchedulerPass(*client);
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
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
  ereport(LOG, (errmsg("safe_upgrade: scheduler shutting down")));
  client.reset();
  proc_exit(0);
}
