// The non-template halves of the boundary wrappers (see boundary.h).
#include "boundary.h"

extern "C" {
#include "miscadmin.h"
}

#include <cstring>

namespace safe_upgrade::pg::internal {
namespace {

// A copy of s in the current memory context, or nullptr for an empty string or when memory is
// short: MCXT_ALLOC_NO_OOM and a size below MaxAllocSize mean that this cannot raise an ERROR,
// which matters because it runs inside a catch block.
char* CopyForReport(const char* s) {
  if (s == nullptr || s[0] == '\0') return nullptr;
  size_t length = strnlen(s, MaxAllocSize - 1);
  auto* copy = static_cast<char*>(palloc_extended(length + 1, MCXT_ALLOC_NO_OOM));
  if (copy == nullptr) return nullptr;
  memcpy(copy, s, length);
  copy[length] = '\0';
  return copy;
}

}  // namespace

void FillReport(ErrorReport* report, int sqlstate, const char* message, const char* detail,
                const char* hint) {
  report->sqlstate = sqlstate;
  report->message = CopyForReport(message);
  report->detail = CopyForReport(detail);
  report->hint = CopyForReport(hint);
}

void RaiseReport(const ErrorReport* report) {
  ereport(ERROR, (errcode(report->sqlstate),
                  errmsg("%s", report->message ? report->message : "out of memory while reporting an error"),
                  report->detail ? errdetail("%s", report->detail) : 0,
                  report->hint ? errhint("%s", report->hint) : 0));
  pg_unreachable();
}

void ThrowCaughtError(MemoryContext context) {
  // CopyErrorData must not run in ErrorContext, and can itself fail when memory is short: then
  // both errors are dropped and a plain out-of-memory error is thrown instead.
  MemoryContextSwitchTo(context);
  sigjmp_buf* const saved_exception_stack = PG_exception_stack;
  ErrorContextCallback* const saved_context_stack = error_context_stack;
  ErrorData* volatile data = nullptr;
  sigjmp_buf local;
  if (sigsetjmp(local, 0) == 0) {
    PG_exception_stack = &local;
    data = CopyErrorData();
    FlushErrorState();
  } else {
    MemoryContextSwitchTo(context);
    FlushErrorState();
    data = nullptr;
  }
  PG_exception_stack = saved_exception_stack;
  error_context_stack = saved_context_stack;
  if (data == nullptr)
    throw PgException(ERRCODE_OUT_OF_MEMORY, "out of memory while copying an error", "", "");
  ErrorData* copied = data;
  int sqlerrcode = copied->sqlerrcode;
  std::string message = copied->message ? copied->message : "unknown error";
  std::string detail = copied->detail ? copied->detail : "";
  std::string hint = copied->hint ? copied->hint : "";
  PgGuard(&FreeErrorData, copied);
  throw PgException(sqlerrcode, message, std::move(detail), std::move(hint));
}

}  // namespace safe_upgrade::pg::internal

namespace safe_upgrade::pg {
namespace {

// C only.
void EmitLogLine(int elevel, const char* message, const char* hint) {
  ereport(elevel, (errmsg("%s", message), hint ? errhint("%s", hint) : 0));
}

// C only.
void ProcessPendingInterrupts() { CHECK_FOR_INTERRUPTS(); }

}  // namespace

void LogLine(int elevel, const std::string& message, const std::string& hint) {
  PgGuard(&EmitLogLine, elevel, message.c_str(), hint.empty() ? nullptr : hint.c_str());
}

void CheckForInterrupts() { PgGuard(&ProcessPendingInterrupts); }

}  // namespace safe_upgrade::pg
