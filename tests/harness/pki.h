// Test harness: a throwaway public-key infrastructure for the agents' TCP listeners (mTLS).
#pragma once

#include <string>

#include "test_cluster.h"

namespace safe_upgrade::testing {

// A throwaway CA, a server certificate for 127.0.0.1, a client certificate, and a rogue CA's
// client certificate, made with openssl in a scratch directory of c that its service user reads.
struct Pki {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key, rogue_cert, rogue_key;
};

Pki MakePki(const TestCluster& c);

}  // namespace safe_upgrade::testing
