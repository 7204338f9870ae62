// Extension entry: _PG_init (GUCs, shared memory, the background worker) and the SQL-callable
// C functions. Each SQL entry point is a one-line call through CallFromPostgres, each hook runs
// through RunFromPostgres, and every call into PostgreSQL goes through PgGuard (boundary.h).
#include "boundary.h"  // must be first: postgres.h

extern "C" {
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_control.h"
#include "common/controldata_utils.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void _PG_init(void);
PG_FUNCTION_INFO_V1(safe_upgrade_agent_status);
PG_FUNCTION_INFO_V1(safe_upgrade_wake_worker_at_commit);
PG_FUNCTION_INFO_V1(safe_upgrade_restore_point_name);
}

#include <string>

#include "core/agent_facts.h"
#include "core/restore_point.h"
#include "gucs.h"
#include "shared_state.h"

namespace safe_upgrade::pg {

bool guc_enabled = true;
char* guc_database = nullptr;
char* guc_agent_address = nullptr;
int guc_agent_check_interval_ms = 5000;
int guc_agent_timeout_ms = 5000;
int guc_poll_interval_ms = 500;
int guc_archive_wait_timeout_s = 120;
int guc_agent_unreachable_timeout_s = 120;
char* guc_agent_tls_ca_file = nullptr;
char* guc_agent_tls_cert_file = nullptr;
char* guc_agent_tls_key_file = nullptr;

namespace {

SharedState* shared = nullptr;
shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;
bool wake_at_commit = false;

void ShmemRequest() {
  RunFromPostgres([] {
    if (prev_shmem_request_hook) PgGuard(prev_shmem_request_hook);
    PgGuard(&RequestAddinShmemSpace, static_cast<Size>(MAXALIGN(sizeof(SharedState))));
  });
}

void ShmemStartup() {
  RunFromPostgres([] {
    if (prev_shmem_startup_hook) PgGuard(prev_shmem_startup_hook);
    InitSharedState();
  });
}

// Runs at commit, where an ERROR would be a PANIC: it calls nothing that can raise one (the
// spinlock and SetLatch cannot) and throws nothing.
void WakeWorker() {
  SharedState* s = shared;
  if (s == nullptr) return;
  SpinLockAcquire(&s->mutex);
  Latch* latch = s->worker_latch;
  SpinLockRelease(&s->mutex);
  if (latch != nullptr) SetLatch(latch);
}

// A transaction callback: only WakeWorker and plain assignments, so no wrapper is needed.
void OnXactEvent(XactEvent event, void*) {
  if (event == XACT_EVENT_COMMIT && wake_at_commit) WakeWorker();
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
    wake_at_commit = false;
}

void DefineGucs() {
  PgGuard(&DefineCustomBoolVariable, "safe_upgrade.enabled",
          "Whether the safe_upgrade background worker acts on upgrades.",
          "Off on clones made for dry runs, so that their worker never acts.", &guc_enabled, true, PGC_SIGHUP,
          0, nullptr, nullptr, nullptr);
  PgGuard(&DefineCustomStringVariable, "safe_upgrade.database",
          "Database in which the safe_upgrade extension is installed.",
          "The background worker connects to this database.", &guc_database, "postgres", PGC_POSTMASTER, 0,
          nullptr, nullptr, nullptr);
  PgGuard(&DefineCustomStringVariable, "safe_upgrade.agent_address", "Address of the safe-upgrade-agent.",
          "unix:/path/to/agent.sock, or host:port for TLS.", &guc_agent_address,
          "unix:/var/run/safe-upgrade/agent.sock", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  PgGuard(&DefineCustomIntVariable, "safe_upgrade.agent_check_interval",
          "How often the idle worker checks the agent.", nullptr, &guc_agent_check_interval_ms, 5000, 1000,
          3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  PgGuard(&DefineCustomIntVariable, "safe_upgrade.agent_timeout", "Deadline of each call to the agent.",
          nullptr, &guc_agent_timeout_ms, 5000, 100, 600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
          nullptr);
  PgGuard(&DefineCustomIntVariable, "safe_upgrade.poll_interval",
          "How often the worker polls while an upgrade is in flight.", nullptr, &guc_poll_interval_ms, 500,
          50, 60 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  PgGuard(&DefineCustomIntVariable, "safe_upgrade.archive_wait_timeout",
          "How long to wait for the restore point's WAL segment to be archived before applying.", nullptr,
          &guc_archive_wait_timeout_s, 120, 1, 24 * 3600, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
  PgGuard(&DefineCustomIntVariable, "safe_upgrade.agent_unreachable_timeout",
          "How long an upgrade that has not touched production waits for an unreachable agent "
          "before it fails.",
          nullptr, &guc_agent_unreachable_timeout_s, 120, 1, 24 * 3600, PGC_SIGHUP, GUC_UNIT_S, nullptr,
          nullptr, nullptr);
  PgGuard(&DefineCustomStringVariable, "safe_upgrade.agent_tls_ca_file",
          "CA certificate that signed the agent's TLS certificate.",
          "Only for a TCP agent_address; the agent requires a client certificate.", &guc_agent_tls_ca_file,
          "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
  PgGuard(&DefineCustomStringVariable, "safe_upgrade.agent_tls_cert_file",
          "Client certificate presented to a TCP agent.", nullptr, &guc_agent_tls_cert_file, "", PGC_SIGHUP,
          GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
  PgGuard(&DefineCustomStringVariable, "safe_upgrade.agent_tls_key_file",
          "Private key of the client certificate.", nullptr, &guc_agent_tls_key_file, "", PGC_SIGHUP,
          GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
  PgGuard(&MarkGUCPrefixReserved, "safe_upgrade");
}

void RegisterWorker() {
  BackgroundWorker worker;
  memset(&worker, 0, sizeof worker);
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = 5;
  snprintf(worker.bgw_library_name, BGW_MAXLEN, "safe_upgrade");
  snprintf(worker.bgw_function_name, BGW_MAXLEN, "safe_upgrade_worker_main");
  snprintf(worker.bgw_name, BGW_MAXLEN, "safe_upgrade scheduler");
  snprintf(worker.bgw_type, BGW_MAXLEN, "safe_upgrade scheduler");
  PgGuard(&RegisterBackgroundWorker, &worker);
}

uint64 SystemIdentifier() {
  bool crc_ok = false;
  ControlFileData* control = PgGuard(&get_controlfile, static_cast<const char*>(DataDir), &crc_ok);
  uint64 id = control->system_identifier;
  PgGuard(&pfree, static_cast<void*>(control));
  return id;
}

// C only: a text Datum of value.
Datum TextDatum(const char* value) { return CStringGetTextDatum(value); }

// C only: the agent_status() row of what the worker last published (copy). Everything in it is
// a PostgreSQL call or plain C, so it runs under one PgGuard.
Datum AgentStatusTuple(TupleDesc desc, const SharedState* copy, const char* system_identifier,
                       bool may_read_settings, const char* standby_agents, const char* stale_libraries) {
  constexpr int kColumns = 31;
  Datum values[kColumns];
  bool nulls[kColumns];
  for (int i = 0; i < kColumns; ++i) nulls[i] = i >= 8;
  if (!copy->agent_checked) {
    for (bool& n : nulls) n = true;
    values[0] = BoolGetDatum(false);
    nulls[0] = false;
    values[5] = CStringGetTextDatum(copy->worker_pid ? "the worker has not checked the agent yet"
                                                     : "the safe_upgrade worker is not running");
    nulls[5] = false;
  } else {
    values[0] = BoolGetDatum(copy->agent_reachable);
    values[1] = CStringGetTextDatum(copy->agent_version);
    nulls[1] = copy->agent_version[0] == '\0';
    values[2] = DirectFunctionCall3(numeric_in, CStringGetDatum(system_identifier),
                                    ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
    nulls[2] = copy->system_identifier == 0;
    values[3] = CStringGetTextDatum(copy->data_directory);
    nulls[3] = copy->data_directory[0] == '\0' || !may_read_settings;
    values[4] = CStringGetTextDatum(copy->address);
    values[5] = CStringGetTextDatum(copy->last_error);
    nulls[5] = copy->last_error[0] == '\0';
    values[6] = TimestampTzGetDatum(copy->checked_at);
    if (copy->agent_reachable) {
      values[8] = Int64GetDatum(static_cast<int64>(copy->snapshot_free_bytes));
      values[9] = Int64GetDatum(static_cast<int64>(copy->disk_reserve_bytes));
      values[10] = BoolGetDatum(copy->wal_archive_writable);
      values[11] = Int64GetDatum(static_cast<int64>(copy->data_free_bytes));
      nulls[8] = nulls[9] = nulls[10] = nulls[11] = false;
      // An agent that does not report its archive leaves these NULL (unknown), never "empty".
      const char* archive_texts[3] = {copy->wal_archive_newest, copy->wal_archive_oldest,
                                      copy->wal_needed_from};
      for (int i = 0; i < 3; ++i) {
        values[12 + i] = CStringGetTextDatum(archive_texts[i]);
        nulls[12 + i] = archive_texts[i][0] == '\0' || !copy->wal_archive_reported;
      }
      values[15] = Int64GetDatum(static_cast<int64>(copy->wal_archive_files));
      values[16] = Int64GetDatum(static_cast<int64>(copy->wal_archive_bytes));
      nulls[15] = nulls[16] = !copy->wal_archive_reported;
      // An agent that does not know snapshot methods leaves these NULL.
      bool method_known = copy->snapshot_method[0] != '\0';
      values[17] = CStringGetTextDatum(copy->snapshot_method_configured);
      values[18] = CStringGetTextDatum(copy->snapshot_method);
      values[19] = CStringGetTextDatum(copy->snapshot_method_reason);
      values[20] = BoolGetDatum(copy->snapshot_method_possible);
      nulls[17] = nulls[18] = nulls[19] = nulls[20] = !method_known;
      // The backend: check_ok, problem and checked_at stay NULL until a check has run (and for
      // "local", which has none); the summary is NULL when the agent sent none.
      values[21] = CStringGetTextDatum(copy->backend_kind);
      nulls[21] = copy->backend_kind[0] == '\0';
      values[22] = CStringGetTextDatum(copy->backend_stanza);
      nulls[22] = copy->backend_stanza[0] == '\0';
      values[23] = BoolGetDatum(copy->backend_check_ok);
      nulls[23] = !copy->backend_checked;
      values[24] = CStringGetTextDatum(copy->backend_problem);
      nulls[24] = !copy->backend_checked || copy->backend_problem[0] == '\0';
      values[25] = CStringGetTextDatum(copy->backend_summary);
      nulls[25] = copy->backend_summary[0] == '\0';
      values[26] = TimestampTzGetDatum(copy->backend_checked_at);
      nulls[26] = !copy->backend_checked;
      // Older agents report no role, no standbys and no pg_rewind: all three stay NULL (unknown).
      bool role_known = copy->agent_role[0] != '\0';
      values[27] = CStringGetTextDatum(copy->agent_role);
      nulls[27] = !role_known;
      if (standby_agents[0] != '\0')
        values[28] = DirectFunctionCall1(jsonb_in, CStringGetDatum(standby_agents));
      nulls[28] = standby_agents[0] == '\0';
      values[29] = BoolGetDatum(copy->pg_rewind_available);
      nulls[29] = !role_known;
      if (stale_libraries[0] != '\0') values[30] = DirectFunctionCall1(jsonb_in, CStringGetDatum(stale_libraries));
      nulls[30] = stale_libraries[0] == '\0';
    }
  }
  values[7] = Int32GetDatum(copy->worker_pid);
  nulls[7] = copy->worker_pid == 0;
  HeapTuple tuple = heap_form_tuple(desc, values, nulls);
  return HeapTupleGetDatum(tuple);
}

Datum AgentStatusImpl(FunctionCallInfo fcinfo) {
  TupleDesc desc = nullptr;
  if (PgGuard(&get_call_result_type, fcinfo, static_cast<Oid*>(nullptr), &desc) != TYPEFUNC_COMPOSITE)
    throw SqlError(ERRCODE_FEATURE_NOT_SUPPORTED,
                   "agent_status must be called in a context that accepts a record");
  desc = PgGuard(&BlessTupleDesc, desc);
  SharedState* s = Shared();
  SharedState copy;
  // A spinlock and a memcpy: nothing here can raise an ERROR.
  SpinLockAcquire(&s->mutex);
  memcpy(&copy, s, sizeof copy);
  SpinLockRelease(&s->mutex);
  // The server's own rule for its data_directory setting: superusers and pg_read_all_settings.
  bool may_read_settings =
      PgGuard(&has_privs_of_role, PgGuard(&GetUserId), static_cast<Oid>(ROLE_PG_READ_ALL_SETTINGS));
  std::string system_identifier = std::to_string(copy.system_identifier);
  // The standbys' data directories are hidden by the same rule as this server's.
  std::string standby_agents = copy.standby_agents;
  if (!may_read_settings && !standby_agents.empty()) standby_agents = WithoutKey(standby_agents, "data_directory");
  // So are the directories of the replaced libraries (their file names stay).
  std::string stale_libraries = copy.stale_libraries;
  if (!may_read_settings && !stale_libraries.empty()) stale_libraries = WithoutKey(stale_libraries, "path");
  return PgGuard(&AgentStatusTuple, desc, static_cast<const SharedState*>(&copy), system_identifier.c_str(),
                 may_read_settings, static_cast<const char*>(standby_agents.c_str()),
                 static_cast<const char*>(stale_libraries.c_str()));
}

Datum WakeWorkerAtCommitImpl(FunctionCallInfo) {
  wake_at_commit = true;
  PG_RETURN_VOID();
}

Datum RestorePointNameImpl(FunctionCallInfo fcinfo) {
  int64 upgrade_id = PG_GETARG_INT64(0);  // a pure macro: reads fcinfo
  std::string name = RestorePointName(upgrade_id, SystemIdentifier());
  return PgGuard(&TextDatum, name.c_str());
}

}  // namespace

void RequestSharedState() {}

void InitSharedState() {
  bool found = false;
  PgGuard(&LWLockAcquire, AddinShmemInitLock, LW_EXCLUSIVE);
  try {
    shared =
        static_cast<SharedState*>(PgGuard(&ShmemInitStruct, "safe_upgrade", sizeof(SharedState), &found));
  } catch (...) {
    PgGuard(&LWLockRelease, AddinShmemInitLock);
    throw;
  }
  if (!found) {
    memset(shared, 0, sizeof(SharedState));
    SpinLockInit(&shared->mutex);  // a pure macro
  }
  PgGuard(&LWLockRelease, AddinShmemInitLock);
}

SharedState* Shared() {
  if (shared == nullptr)
    throw SqlError(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "safe_upgrade shared memory is not initialized",
                   "Add safe_upgrade to shared_preload_libraries and restart the server.");
  return shared;
}

}  // namespace safe_upgrade::pg

using namespace safe_upgrade::pg;

void _PG_init(void) {
  RunFromPostgres([] {
    if (!process_shared_preload_libraries_in_progress)
      throw SqlError(
          ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
          "safe_upgrade must be loaded via shared_preload_libraries",
          "Add safe_upgrade to shared_preload_libraries in postgresql.conf and restart the server.");
    DefineGucs();
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = ShmemRequest;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = ShmemStartup;
    PgGuard(&RegisterXactCallback, &OnXactEvent, static_cast<void*>(nullptr));
    RegisterWorker();
  });
}

extern "C" Datum safe_upgrade_agent_status(PG_FUNCTION_ARGS) { return CallFromPostgres(fcinfo, AgentStatusImpl); }
extern "C" Datum safe_upgrade_wake_worker_at_commit(PG_FUNCTION_ARGS) {
  return CallFromPostgres(fcinfo, WakeWorkerAtCommitImpl);
}
extern "C" Datum safe_upgrade_restore_point_name(PG_FUNCTION_ARGS) {
  return CallFromPostgres(fcinfo, RestorePointNameImpl);
}
