// Running user code as the role that owns it, never as the agent's session (see run_as.cpp for
// why that holds), and a session setting that is put back when it goes out of scope.
#pragma once

#include <optional>
#include <string>

#include "postgres/pg_conn.h"

namespace safe_upgrade {

// Sets a session setting and puts the old value back when it goes out of scope.
class ScopedSetting {
 public:
  ScopedSetting(PgConn& conn, const std::string& name, const std::string& value) : conn_(conn), name_(name) {
    old_ = conn_.Exec("SELECT pg_catalog.current_setting($1)", {name_}).Scalar();
    conn_.Exec("SELECT pg_catalog.set_config($1, $2, false)", {name_, value});
  }
  ~ScopedSetting() {
    try {
      if (conn_.Ok()) conn_.Exec("SELECT pg_catalog.set_config($1, $2, false)", {name_, old_});
    } catch (...) {
    }
  }

 private:
  PgConn& conn_;
  std::string name_, old_;
};

struct RunAsResult {
  bool returned_row = false;
  int columns = 0;
  std::optional<std::string> first_value;
};

// Runs one statement as role, in a transaction of its own that is rolled back. whose names the
// code for the error when the role does not exist ("health check X", "view Y").
RunAsResult RunAs(PgConn& conn, const std::string& role, const std::string& whose,
                  const std::string& statement);

// The steps of RunAs for a caller that sends the statement itself (asynchronously, to cancel it):
// in an open transaction, PrepareRunAs; then send RunAsCall() with the statement as $1; read the
// answer with ToRunAsResult; end with EndRunAs (also after an error).
void PrepareRunAs(PgConn& conn, const std::string& role, const std::string& whose);
const char* RunAsCall();
RunAsResult ToRunAsResult(const QueryResult& r);
void EndRunAs(PgConn& conn);

}  // namespace safe_upgrade
