// SPI wrapper implementation. Every call into PostgreSQL goes through PgGuard; the C++ vectors
// and strings live outside those calls.
#include "boundary.h"  // must be first: postgres.h

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
}

#include "spi.h"

namespace safe_upgrade::pg {
namespace {

// C only: a text Datum of s.
Datum TextDatum(const char* s) { return PointerGetDatum(cstring_to_text(s)); }

// C only: the transaction snapshot, made the active one.
void PushTransactionSnapshot() { PushActiveSnapshot(GetTransactionSnapshot()); }

// Ends the transaction that a failed SpiTransaction leaves open. Aborting is the last thing
// that can be done with it, so an error here is dropped (the worker's next pass starts clean,
// or the process exits).
void AbortQuietly() noexcept {
  try {
    PgGuard(&AbortCurrentTransaction);
  } catch (...) {
  }
}

}  // namespace

SpiResult SpiExec(const std::string& sql, const std::vector<std::optional<std::string>>& params, bool read_only) {
  const int n = static_cast<int>(params.size());
  std::vector<Oid> types(n, TEXTOID);
  std::vector<Datum> values(n, Datum(0));
  std::string nulls(n, ' ');
  for (int i = 0; i < n; ++i) {
    if (params[i])
      values[i] = PgGuard(&TextDatum, params[i]->c_str());
    else
      nulls[i] = 'n';
  }
  int rc = PgGuard(&SPI_execute_with_args, sql.c_str(), n, n ? types.data() : nullptr,
                   n ? values.data() : nullptr, n ? nulls.c_str() : nullptr, read_only, 0L);
  // SPI_result_code_string only names the code (static strings): it cannot raise an ERROR.
  if (rc < 0)
    throw PgException(ERRCODE_INTERNAL_ERROR,
                      std::string("SPI_execute_with_args failed: ") + SPI_result_code_string(rc), "", "");
  SpiResult result;
  // SPI_processed and SPI_tuptable are plain globals that the call above set.
  result.processed = SPI_processed;
  SPITupleTable* table = SPI_tuptable;
  if (table != nullptr) {
    TupleDesc desc = table->tupdesc;
    for (uint64 r = 0; r < result.processed; ++r) {
      SpiRow row;
      for (int c = 1; c <= desc->natts; ++c) {
        char* v = PgGuard(&SPI_getvalue, table->vals[r], desc, c);
        row.push_back(v ? std::optional<std::string>(v) : std::nullopt);
      }
      result.rows.push_back(std::move(row));
    }
  }
  return result;
}

SpiTransaction::SpiTransaction() {
  PgGuard(&SetCurrentStatementStartTimestamp);
  PgGuard(&StartTransactionCommand);
  try {
    PgGuard(&SPI_connect);
    PgGuard(&PushTransactionSnapshot);
  } catch (...) {
    // The destructor of a half-constructed object does not run: end the transaction here.
    AbortQuietly();
    throw;
  }
}

void SpiTransaction::Commit() {
  PgGuard(&SPI_finish);
  PgGuard(&PopActiveSnapshot);
  PgGuard(&CommitTransactionCommand);
  done_ = true;
}

SpiTransaction::~SpiTransaction() {
  if (done_) return;
  // An error left the transaction half done: abort it (this also releases SPI and snapshots).
  AbortQuietly();
}

}  // namespace safe_upgrade::pg
