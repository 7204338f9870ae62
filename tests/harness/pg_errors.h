// Expecting an error from PostgreSQL in a test: the error a statement raises, to check its
// SQLSTATE, message and hint.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "postgres/pg_conn.h"

namespace safe_upgrade::testing {

// The error that sql raises; a test failure (and an empty PgError) when it succeeds.
inline PgError ErrorOf(PgConn& conn, const std::string& sql,
                       const std::vector<std::optional<std::string>>& params = {}) {
  try {
    auto r = conn.Exec(sql, params);
    ADD_FAILURE() << "expected an error from: " << sql << " (it returned "
                  << (r.rows.empty() || !r.rows[0][0] ? std::string("nothing") : *r.rows[0][0]) << ")";
  } catch (const PgError& e) {
    return e;
  }
  return PgError("", "");
}

}  // namespace safe_upgrade::testing
