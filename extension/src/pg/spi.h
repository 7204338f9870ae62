// SPI from C++: run parameterised SQL (parameters passed as text and cast in the query) and get
// rows of optional strings back. PostgreSQL errors surface as PgException (boundary.h).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace safe_upgrade::pg {

using SpiRow = std::vector<std::optional<std::string>>;

struct SpiResult {
  std::vector<SpiRow> rows;
  uint64_t processed = 0;
  // Value of column col in row 0, or nullopt.
  std::optional<std::string> Value(size_t col = 0) const {
    if (rows.empty() || rows[0].size() <= col) return std::nullopt;
    return rows[0][col];
  }
};

// Must be called inside a transaction with SPI connected (see SpiTransaction).
SpiResult SpiExec(const std::string& sql, const std::vector<std::optional<std::string>>& params = {},
                  bool read_only = false);

// Starts a transaction, connects SPI and pushes a snapshot; Commit() or the destructor (abort)
// ends it. Use only in the background worker.
class SpiTransaction {
 public:
  SpiTransaction();
  ~SpiTransaction();
  void Commit();

 private:
  bool done_ = false;
};

}  // namespace safe_upgrade::pg
