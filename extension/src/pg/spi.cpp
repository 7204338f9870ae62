// SPI wrapper implementation.
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

SpiResult SpiExec(const std::string& sql, const std::vector<std::optional<std::string>>& params, bool read_only) {
  SpiResult result;
  PgCall([&] {
    int n = static_cast<int>(params.size());
    Oid* types = n ? static_cast<Oid*>(palloc(sizeof(Oid) * n)) : nullptr;
    Datum* values = n ? static_cast<Datum*>(palloc(sizeof(Datum) * n)) : nullptr;
    char* nulls = n ? static_cast<char*>(palloc(n + 1)) : nullptr;
    for (int i = 0; i < n; ++i) {
      types[i] = TEXTOID;
      if (params[i]) {
        values[i] = PointerGetDatum(cstring_to_text(params[i]->c_str()));
        nulls[i] = ' ';
      } else {
        values[i] = (Datum)0;
        nulls[i] = 'n';
      }
    }
    int rc = SPI_execute_with_args(sql.c_str(), n, types, values, nulls, read_only, 0);
    if (rc < 0) elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
    result.processed = SPI_processed;
    if (SPI_tuptable != nullptr) {
      TupleDesc desc = SPI_tuptable->tupdesc;
      for (uint64 r = 0; r < SPI_processed; ++r) {
        SpiRow row;
        for (int c = 1; c <= desc->natts; ++c) {
          char* v = SPI_getvalue(SPI_tuptable->vals[r], desc, c);
          row.push_back(v ? std::optional<std::string>(v) : std::nullopt);
        }
        result.rows.push_back(std::move(row));
      }
    }
  });
  return result;
}

SpiTransaction::SpiTransaction() {
  PgCall([] {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
  });
}

void SpiTransaction::Commit() {
  PgCall([] {
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
  });
  done_ = true;
}

SpiTransaction::~SpiTransaction() {
  if (done_) return;
  // An error left the transaction half done: abort it (this also releases SPI and snapshots).
  AbortCurrentTransaction();
}

}  // namespace safe_upgrade::pg
