// The agent's Unix socket listener. It accepts connections itself so that it can read the peer's
// credentials (SO_PEERCRED) before handing the connection to gRPC; the service then refuses calls
// from peers that are not allowed (PERMISSION_DENIED), and the attempt is logged.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace grpc {
class Server;
}

namespace safe_upgrade {

struct PeerInfo {
  pid_t pid = 0;
  uid_t uid = 0;
  bool allowed = false;
};

class UnixListener {
 public:
  // Only the agent's own user (and root when allow_root) may call.
  UnixListener(std::string path, bool allow_root);
  ~UnixListener();
  // Binds (socket mode 0600 in a 0700 directory) and starts accepting into server.
  void Start(grpc::Server* server);
  void Stop();
  // The credentials of the connection behind a gRPC peer string ("fd:<n>" style); nullptr when unknown.
  bool Lookup(const std::string& grpc_peer, PeerInfo& out) const;

 private:
  void AcceptLoop(grpc::Server* server);
  std::string path_;
  bool allow_root_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<int, PeerInfo> peers_;  // by connection fd
};

}  // namespace safe_upgrade
