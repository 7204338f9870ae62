// The C++/PostgreSQL boundary. Only files in src/pg/ include postgres.h, and they include it
// through this header, first.
//
// PostgreSQL reports an ERROR by longjmp, which skips C++ destructors and catch blocks; C++
// reports errors by exceptions, which PostgreSQL's C frames cannot carry. Two wrappers keep them
// apart, so that neither ever crosses the other's frames:
//  - inbound, PostgreSQL calling C++ (SQL functions, hooks, worker entry points):
//    CallFromPostgres / RunFromPostgres run the C++ body in try/catch, keep what the exception
//    said in plain palloc'd strings, and raise ereport(ERROR) only after the catch block has
//    closed and every C++ object of the body is gone;
//  - outbound, C++ calling PostgreSQL: PgGuard(fn, args...) calls one C function under its own
//    sigsetjmp, saving and restoring PG_exception_stack, error_context_stack and the memory
//    context; an ERROR becomes a PgException (SQLSTATE, message, detail, hint). fn is a
//    PostgreSQL function or one of our "C only" helpers (a function whose body holds no C++
//    object), and its arguments must be plain C values, checked at compile time, so that no C++
//    object is ever alive in a frame that a longjmp can skip.
// A call that cannot raise an ERROR (a pure macro such as PG_GETARG_INT64, a spinlock, SetLatch)
// is made directly, with a comment saying so.
#pragma once

extern "C" {
#include "postgres.h"

#include "fmgr.h"
#include "utils/elog.h"
#include "utils/memutils.h"
}

#include <setjmp.h>

#include <stdexcept>
#include <string>
#include <type_traits>

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

// A PostgreSQL ERROR caught by PgGuard and carried as a C++ exception.
class PgException : public SqlError {
 public:
  PgException(int sqlerrcode, const std::string& message, std::string detail, std::string hint)
      : SqlError(sqlerrcode, message, std::move(hint), std::move(detail)) {}
  int sqlerrcode() const { return sqlstate(); }
};

namespace internal {

// What the inbound wrappers raise once the C++ frames are gone. Plain C: it survives the
// longjmp of the ereport that reports it.
struct ErrorReport {
  int sqlstate;
  char* message;
  char* detail;
  char* hint;
};

// The three halves of the wrappers that need no template. FillReport runs inside a catch block
// and cannot raise an ERROR; RaiseReport runs after it; ThrowCaughtError turns the ERROR that
// PostgreSQL is holding into a PgException, with the memory context switched back to `context`.
void FillReport(ErrorReport* report, int sqlstate, const char* message, const char* detail, const char* hint);
[[noreturn]] void RaiseReport(const ErrorReport* report);
[[noreturn]] void ThrowCaughtError(MemoryContext context);

// Runs body() and returns true, or fills report from what it threw and returns false.
template <typename Body>
bool CatchIntoReport(ErrorReport* report, Body&& body) {
  sigjmp_buf* const saved_exception_stack = PG_exception_stack;
  ErrorContextCallback* const saved_context_stack = error_context_stack;
  try {
    body();
    return true;
  } catch (const SqlError& e) {
    FillReport(report, e.sqlstate(), e.what(), e.detail().c_str(), e.hint().c_str());
  } catch (const std::exception& e) {
    FillReport(report, ERRCODE_INTERNAL_ERROR, e.what(), nullptr, nullptr);
  } catch (...) {
    FillReport(report, ERRCODE_INTERNAL_ERROR, "unknown C++ exception", nullptr, nullptr);
  }
  // A C++ exception that left a PG_TRY block (a bug: PgGuard never lets one do that) would leave
  // these pointing into dead frames; the ereport that follows must find them as they were.
  PG_exception_stack = saved_exception_stack;
  error_context_stack = saved_context_stack;
  return false;
}

template <typename T>
constexpr bool kPlainC = std::is_trivially_copyable_v<std::decay_t<T>> && !std::is_class_v<std::decay_t<T>>;

}  // namespace internal

// An SQL-callable entry point: extern "C" Datum f(PG_FUNCTION_ARGS) { return CallFromPostgres(fcinfo, Impl);
// }
template <typename Body>
Datum CallFromPostgres(FunctionCallInfo fcinfo, Body body) {
  internal::ErrorReport report{};
  Datum result = 0;
  if (internal::CatchIntoReport(&report, [&] { result = body(fcinfo); })) return result;
  internal::RaiseReport(&report);
}

// Any other entry from PostgreSQL into C++ (_PG_init, hooks, a background worker's main).
template <typename Body>
void RunFromPostgres(Body body) {
  internal::ErrorReport report{};
  if (internal::CatchIntoReport(&report, body)) return;
  internal::RaiseReport(&report);
}

// Calls the C function fn(args...) so that a PostgreSQL ERROR comes back as a PgException.
// Nothing between the sigsetjmp and the return is a C++ object: the arguments are copied in as
// plain C values, and the result is a C value too.
template <typename R, typename... Params, typename... Args>
R PgGuard(R (*fn)(Params...), Args... args) {
  static_assert((internal::kPlainC<Args> && ...), "only plain C values may be passed into PostgreSQL");
  static_assert(std::is_void_v<R> || internal::kPlainC<R>, "PostgreSQL returns plain C values");
  sigjmp_buf* const saved_exception_stack = PG_exception_stack;
  ErrorContextCallback* const saved_context_stack = error_context_stack;
  MemoryContext const saved_memory_context = CurrentMemoryContext;
  sigjmp_buf local;
  if (sigsetjmp(local, 0) == 0) {
    PG_exception_stack = &local;
    if constexpr (std::is_void_v<R>) {
      fn(args...);
      PG_exception_stack = saved_exception_stack;
      error_context_stack = saved_context_stack;
      return;
    } else {
      R result = fn(args...);
      PG_exception_stack = saved_exception_stack;
      error_context_stack = saved_context_stack;
      return result;
    }
  }
  PG_exception_stack = saved_exception_stack;
  error_context_stack = saved_context_stack;
  internal::ThrowCaughtError(saved_memory_context);
}

// Server log lines and interrupt checks from C++, through PgGuard (elevel LOG or WARNING; an
// ERROR is thrown as SqlError instead).
void LogLine(int elevel, const std::string& message, const std::string& hint = "");
void CheckForInterrupts();

}  // namespace safe_upgrade::pg
