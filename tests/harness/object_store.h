// Test harness: a real S3-compatible object store (the npm package s3rver) served on loopback
// over TLS with a throwaway CA, for tests that give pgBackRest a repo1-type=s3 repository. The
// package is installed by `make object-store-deps` into tests/object_store/node_modules.
#pragma once

#include <sys/types.h>

#include <ostream>
#include <string>
#include <vector>

namespace safe_upgrade::testing {

class ObjectStoreServer {
 public:
  // Generates the CA and the server certificate, starts the server on a free port, waits until
  // it answers and creates the bucket. Throws std::runtime_error (with the server's log) when it
  // does not come up.
  ObjectStoreServer();
  // Stops the server and removes the certificates and the stored objects.
  ~ObjectStoreServer();
  ObjectStoreServer(const ObjectStoreServer&) = delete;
  ObjectStoreServer& operator=(const ObjectStoreServer&) = delete;

  // Why the store cannot run here (node, the s3rver package, openssl or pgbackrest missing), or
  // "" when it can. Tests GTEST_SKIP with this reason.
  static std::string Unavailable();

  // [global] lines of a pgbackrest.conf pointing repository 1 at this store, TLS verified with
  // the throwaway CA.
  std::vector<std::string> RepoOptions() const;

  // Stops the server (SIGTERM, then SIGKILL) and waits until it is gone; the stored objects stay,
  // so Start() serves them again on the same port. The "repository unreachable" fault.
  void Stop();
  void Start();
  bool Running() const;

  int port() const { return port_; }
  const std::string& ca_file() const { return ca_file_; }
  const std::string& bucket() const { return bucket_; }
  std::string Log() const;
  void PrintLog(std::ostream& out) const;

 private:
  void MakeCertificates();
  bool StartOnce();

  std::string dir_;  // 0755 so the postgres OS user can read ca.crt; the keys stay 0600
  std::string ca_file_, cert_file_, key_file_, data_dir_, log_file_;
  std::string bucket_ = "su-repo";
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace safe_upgrade::testing
