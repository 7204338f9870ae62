// The C++/PostgreSQL boundary. Only files in src/pg/ include postgres.h, and they include it
// through this header, first.
//
// Two wrappers keep C++ exceptions and PostgreSQL's longjmp-based errors apart:
//  - CallFromPostgres: a SQL-callable entry point runs its C++ body in try/catch, and raises
//    ereport(ERROR) only after the catch block has closed (no longjmp over live C++ frames).
//  - PgCall: C++ code calling into PostgreSQL runs the call under PG_TRY; an ERROR becomes a
//    PgException, with the memory context restored.
#pragma once

extern "C" {
#include "postgres.h"

#include "fmgr.h"
#include "utils/elog.h"
#include "utils/memutils.h"
}

#include <stdexcept>
#include <string>

namespace safe_upgrade::pg {

// An error meant for the user: SQLSTATE, message, and a hint saying what to do.
class SqlError : public std::runtime_error {
 public:
  SqlError(int sqlstate, const std::string& message, std::string hint = "", std::string detail = "")
      : std::runtime_error(message), sqlstate_(sqlstate), hint_(std::move(hint)), detail_(std::move(detail)) {}
  int sqlstate() const { return sqlstate_; }
  const std::string& hint() const { return hint_; }
  const std::string& detail() const { return detail_; }

 private:
  int sqlstate_;
  std::string hint_, detail_;
};

// A PostgreSQL ERROR caught at the boundary and carried as a C++ exception.
class PgException : public std::runtime_error {
 public:
  PgException(int sqlerrcode, const std::string& message, std::string detail, std::string hint)
      : std::runtime_error(message), sqlerrcode_(sqlerrcode), detail_(std::move(detail)), hint_(std::move(hint)) {}
  int sqlerrcode() const { return sqlerrcode_; }
  const std::string& detail() const { return detail_; }
  const std::string& hint() const { return hint_; }

 private:
  int sqlerrcode_;
  std::string detail_, hint_;
};

// Raises the error described by the arguments. Strings are copied into palloc'd memory first
// so that no C++ object is alive when ereport longjmps.
[[noreturn]] void RaiseError(int sqlstate, const char* message, const char* detail, const char* hint);

template <typename Body>
Datum CallFromPostgres(FunctionCallInfo fcinfo, Body body) {
  int sqlstate = 0;
  char* message = nullptr;
  char* detail = nullptr;
  char* hint = nullptr;
  try {
    return body(fcinfo);
  } catch (const SqlError& e) {
    sqlstate = e.sqlstate();
    message = pstrdup(e.what());
    detail = e.detail().empty() ? nullptr : pstrdup(e.detail().c_str());
    hint = e.hint().empty() ? nullptr : pstrdup(e.hint().c_str());
  } catch (const PgException& e) {
    sqlstate = e.sqlerrcode();
    message = pstrdup(e.what());
    detail = e.detail().empty() ? nullptr : pstrdup(e.detail().c_str());
    hint = e.hint().empty() ? nullptr : pstrdup(e.hint().c_str());
  } catch (const std::exception& e) {
    sqlstate = ERRCODE_INTERNAL_ERROR;
    message = pstrdup(e.what());
  }
  RaiseError(sqlstate, message, detail, hint);
}

// Runs a call into PostgreSQL; an ERROR it raises is rethrown as PgException.
template <typename Fn>
void PgCall(Fn fn) {
  MemoryContext ctx = CurrentMemoryContext;
  ErrorData* volatile edata = nullptr;
  PG_TRY();
  {
    fn();
  }
  PG_CATCH();
  {
    MemoryContextSwitchTo(ctx);
    edata = CopyErrorData();
    FlushErrorState();
  }
  PG_END_TRY();
  if (edata != nullptr) {
    ErrorData* e = edata;
    PgException ex(e->sqlerrcode, e->message ? e->message : "unknown error", e->detail ? e->detail : "",
                   e->hint ? e->hint : "");
    FreeErrorData(e);
    throw ex;
  }
}

}  // namespace safe_upgrade::pg
