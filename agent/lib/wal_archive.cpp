// Placeholder; replaced by the real WAL archive commands.
#include "wal_archive.h"

#include <cstdio>

namespace safe_upgrade {
int WalPush(const AgentConfig&, const std::string&) {
  fprintf(stderr, "wal-push is not implemented yet\n");
  return 1;
}
int WalFetch(const AgentConfig&, const std::string&, const std::string&) {
  fprintf(stderr, "wal-fetch is not implemented yet\n");
  return 1;
}
}  // namespace safe_upgrade
