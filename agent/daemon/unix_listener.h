// The agent's Unix socket listener. It accepts connections itself so that it can read the peer's
// credentials (SO_PEERCRED, fixed at connect time) before gRPC ever sees the connection, and
// decides once per connection: an allowed peer's connection goes to the agent's server, a refused
// peer's to a second server whose only answer to any call is PERMISSION_DENIED (and the attempt
// is logged). The decision is bound to the connection itself, not to an fd number that a later
// connection may reuse, so no call can be judged by another connection's credentials.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

namespace grpc {
class CallbackGenericService;
class Server;
}  // namespace grpc

namespace safe_upgrade {

class UnixListener {
 public:
  // Only the agent's own user (and root when allow_root) may call.
  UnixListener(std::string path, bool allow_root);
  ~UnixListener();
  // Binds (socket mode 0600 in a 0700 directory) and starts accepting: allowed peers into server.
  void Start(grpc::Server* server);
  void Stop();

 private:
  bool Allowed(uid_t uid) const;
  void AcceptLoop(grpc::Server* server);
  std::string path_;
  bool allow_root_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::unique_ptr<grpc::CallbackGenericService> refusal_service_;
  std::unique_ptr<grpc::Server> refusals_;
};

}  // namespace safe_upgrade
