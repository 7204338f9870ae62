// What an extension looks like in one database of the cluster (installed version, update path,
// dependents: core/catalog_queries.h), for plan() and begin() in the control database. An
// extension lives per database, and a session can read only its own database's catalog, so for
// any other database a short-lived background worker connects there, runs the same fixed,
// read-only query and sends its one JSON answer back through a shared-memory queue. The worker
// connects as the bootstrap superuser because it runs no code but that query; plan() decides
// what of the answer its caller may see. Every call into PostgreSQL goes through PgGuard
// (boundary.h); RunInventoryQuery is one "C only" unit under one guard.
#include "boundary.h"  // must be first: postgres.h

extern "C" {
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(safe_upgrade_database_inventory);
PGDLLEXPORT void safe_upgrade_inventory_main(Datum arg);
}

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/catalog_queries.h"

namespace safe_upgrade::pg {
namespace {

constexpr Size kQueueBytes = 64 * 1024;

// The request, at the start of the shared segment; the queue follows it.
struct InventoryRequest {
  Oid database;
  char extname[NAMEDATALEN];
  bool has_target;
  char target_version[256];
};

shm_mq* QueueOf(dsm_segment* segment) {
  return reinterpret_cast<shm_mq*>(static_cast<char*>(dsm_segment_address(segment)) +
                                   MAXALIGN(sizeof(InventoryRequest)));
}

// C only: runs the inventory query in the current database; the answer is palloc'd in the
// caller's memory context.
char* RunInventoryQuery(const char* query, const char* extname, const char* target_version) {
  Oid types[2] = {TEXTOID, TEXTOID};
  Datum values[2] = {PointerGetDatum(cstring_to_text(extname)),
                     target_version ? PointerGetDatum(cstring_to_text(target_version)) : (Datum)0};
  char nulls[3] = {' ', target_version ? ' ' : 'n', '\0'};
  MemoryContext caller = CurrentMemoryContext;
  SPI_connect();
  int rc = SPI_execute_with_args(query, 2, types, values, nulls, true, 1);
  if (rc != SPI_OK_SELECT || SPI_processed != 1)
    elog(ERROR, "the inventory query failed: %s", SPI_result_code_string(rc));
  char* answer = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
  MemoryContext spi = MemoryContextSwitchTo(caller);
  char* copy = pstrdup(answer);
  MemoryContextSwitchTo(spi);
  SPI_finish();
  return copy;
}

// C only: the shared segment with the request filled in and the queue, whose receiver is this
// backend.
dsm_segment* CreateRequest(Oid database, const char* extname, const char* target_version) {
  dsm_segment* segment = dsm_create(MAXALIGN(sizeof(InventoryRequest)) + kQueueBytes, 0);
  auto* request = static_cast<InventoryRequest*>(dsm_segment_address(segment));
  memset(request, 0, sizeof *request);
  request->database = database;
  strlcpy(request->extname, extname, sizeof request->extname);
  request->has_target = target_version != nullptr;
  if (target_version != nullptr)
    strlcpy(request->target_version, target_version, sizeof request->target_version);
  shm_mq* queue = shm_mq_create(QueueOf(segment), kQueueBytes);
  shm_mq_set_receiver(queue, MyProc);
  return segment;
}

// Starts the worker for one other database and waits for its answer.
std::string InventoryThroughWorker(Oid database, const std::string& datname, const std::string& extname,
                                   const std::optional<std::string>& target_version) {
  dsm_segment* segment =
      PgGuard(&CreateRequest, database, extname.c_str(), target_version ? target_version->c_str() : nullptr);
  BackgroundWorker worker;
  memset(&worker, 0, sizeof worker);
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_ConsistentState;
  worker.bgw_restart_time = BGW_NEVER_RESTART;
  snprintf(worker.bgw_library_name, BGW_MAXLEN, "safe_upgrade");
  snprintf(worker.bgw_function_name, BGW_MAXLEN, "safe_upgrade_inventory_main");
  snprintf(worker.bgw_name, BGW_MAXLEN, "safe_upgrade inventory of %s", datname.c_str());
  snprintf(worker.bgw_type, BGW_MAXLEN, "safe_upgrade inventory");
  // dsm_segment_handle only reads the segment: it cannot raise an ERROR.
  worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(segment));
  worker.bgw_notify_pid = MyProcPid;
  BackgroundWorkerHandle* handle = nullptr;
  std::string answer;
  std::string failure;
  if (!PgGuard(&RegisterDynamicBackgroundWorker, &worker, &handle)) {
    failure = "no background worker slot is free to read database \"" + datname + "\"";
  } else {
    shm_mq_handle* reader = PgGuard(&shm_mq_attach, QueueOf(segment), segment, handle);
    Size length = 0;
    void* data = nullptr;
    // An ERROR here (a cancel while waiting) leaves the segment to the transaction's abort.
    shm_mq_result result = PgGuard(&shm_mq_receive, reader, &length, &data, false);
    if (result == SHM_MQ_SUCCESS)
      answer.assign(static_cast<char*>(data), length);
    else
      failure = "the background worker reading database \"" + datname + "\" ended without an answer";
  }
  PgGuard(&dsm_detach, segment);
  if (!failure.empty())
    throw SqlError(ERRCODE_INSUFFICIENT_RESOURCES, failure,
                   "Raise max_worker_processes (each plan() and begin() uses one worker at a time, briefly), "
                   "and see the server log for the worker's error.");
  return answer;
}

// C only: the transaction snapshot, made the active one.
void PushTransactionSnapshot() { PushActiveSnapshot(GetTransactionSnapshot()); }

// C only: the jsonb value of text.
Datum JsonbOf(const char* text) { return DirectFunctionCall1(jsonb_in, CStringGetDatum(text)); }

Datum DatabaseInventoryImpl(FunctionCallInfo fcinfo) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
    throw SqlError(ERRCODE_NULL_VALUE_NOT_ALLOWED, "database and extension names must not be null");
  // PG_ARGISNULL, PG_GETARG_NAME and NameStr are pure macros over fcinfo.
  std::string datname = NameStr(*PG_GETARG_NAME(0));
  std::string extname = NameStr(*PG_GETARG_NAME(1));
  std::optional<std::string> target;
  if (!PG_ARGISNULL(2)) target = PgGuard(&text_to_cstring, static_cast<const text*>(PG_GETARG_TEXT_PP(2)));
  if (target && target->size() >= sizeof(InventoryRequest::target_version))
    throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "target version is too long");
  Oid database = PgGuard(&get_database_oid, datname.c_str(), true);
  if (database == InvalidOid)
    throw SqlError(ERRCODE_UNDEFINED_OBJECT, "database \"" + datname + "\" does not exist",
                   "List the databases with SELECT datname FROM pg_database.");
  std::string answer;
  if (database == MyDatabaseId) {
    answer = PgGuard(&RunInventoryQuery, DatabaseInventoryQuery().c_str(), extname.c_str(),
                     target ? target->c_str() : nullptr);
  } else {
    answer = InventoryThroughWorker(database, datname, extname, target);
  }
  return PgGuard(&JsonbOf, answer.c_str());
}

// The worker: attach, connect, answer, exit. An error of the query is sent as {"error": "..."}
// so that the caller can name it; a worker that cannot even connect simply ends, and the caller
// says so.
void InventoryWorkerMain(Datum arg) {
  BackgroundWorkerUnblockSignals();  // cannot raise an ERROR
  dsm_segment* segment = PgGuard(&dsm_attach, DatumGetUInt32(arg));
  if (segment == nullptr)
    throw SqlError(ERRCODE_INTERNAL_ERROR, "safe_upgrade inventory: could not attach its shared memory");
  auto* request = static_cast<InventoryRequest*>(dsm_segment_address(segment));  // reads the segment
  shm_mq* queue = QueueOf(segment);
  PgGuard(&shm_mq_set_sender, queue, MyProc);
  shm_mq_handle* writer =
      PgGuard(&shm_mq_attach, queue, segment, static_cast<BackgroundWorkerHandle*>(nullptr));
  PgGuard(&BackgroundWorkerInitializeConnectionByOid, request->database,
          static_cast<Oid>(BOOTSTRAP_SUPERUSERID), static_cast<uint32>(0));

  PgGuard(&SetCurrentStatementStartTimestamp);
  PgGuard(&StartTransactionCommand);
  PgGuard(&PushTransactionSnapshot);
  PgGuard(&pgstat_report_activity, STATE_RUNNING,
          "safe_upgrade: reading an extension's catalog for plan() or begin()");
  std::string answer;
  try {
    answer = PgGuard(&RunInventoryQuery, DatabaseInventoryQuery().c_str(),
                     static_cast<const char*>(request->extname),
                     request->has_target ? static_cast<const char*>(request->target_version) : nullptr);
  } catch (const PgException& e) {
    answer = nlohmann::json{{"error", std::string(e.what())}}.dump(-1, ' ', false,
                                                                   nlohmann::json::error_handler_t::replace);
  }
  PgGuard(&AbortCurrentTransaction);
  PgGuard(&shm_mq_send, writer, static_cast<Size>(answer.size()), static_cast<const void*>(answer.data()),
          false, true);
  PgGuard(&pgstat_report_activity, STATE_IDLE, static_cast<const char*>(nullptr));
  PgGuard(&dsm_detach, segment);
}

}  // namespace
}  // namespace safe_upgrade::pg

extern "C" Datum safe_upgrade_database_inventory(PG_FUNCTION_ARGS) {
  return safe_upgrade::pg::CallFromPostgres(fcinfo, safe_upgrade::pg::DatabaseInventoryImpl);
}

void safe_upgrade_inventory_main(Datum arg) {
  safe_upgrade::pg::RunFromPostgres([arg] { safe_upgrade::pg::InventoryWorkerMain(arg); });
}
