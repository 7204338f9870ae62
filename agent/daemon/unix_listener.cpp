// Unix socket listener with peer credential checks.
#include "daemon/unix_listener.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace safe_upgrade {
namespace {

// The server of refused connections: every call, whatever its method, ends PERMISSION_DENIED.
class RefuseEveryCall final : public grpc::CallbackGenericService {
 public:
  explicit RefuseEveryCall(std::string message) : message_(std::move(message)) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    class Reactor final : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(const std::string& message) {
        Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, message));
      }
      void OnDone() override { delete this; }
    };
    return new Reactor(message_);
  }

 private:
  std::string message_;
};

}  // namespace

UnixListener::UnixListener(std::string path, bool allow_root)
    : path_(std::move(path)), allow_root_(allow_root) {}

UnixListener::~UnixListener() { Stop(); }

bool UnixListener::Allowed(uid_t uid) const { return uid == geteuid() || (allow_root_ && uid == 0); }

void UnixListener::Start(grpc::Server* server) {
  refusal_service_ = std::make_unique<RefuseEveryCall>(
      "this caller may not call this agent: only its own OS user (uid " + std::to_string(geteuid()) + ")" +
      (allow_root_ ? " and root" : "") + " may; the refused peer's pid and uid are in the agent's log");
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(refusal_service_.get());
  builder.SetMaxReceiveMessageSize(64 * 1024);
  refusals_ = builder.BuildAndStart();
  if (!refusals_) throw std::runtime_error("could not start the server that refuses unknown callers");
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error(std::string("socket failed: ") + strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof addr.sun_path) throw std::runtime_error("socket path too long: " + path_);
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
  mode_t old = umask(0177);
  int rc = bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old);
  if (rc != 0) throw std::runtime_error("could not bind " + path_ + ": " + strerror(errno));
  chmod(path_.c_str(), 0600);
  if (listen(listen_fd_, 64) != 0)
    throw std::runtime_error("could not listen on " + path_ + ": " + strerror(errno));
  thread_ = std::thread([this, server] { AcceptLoop(server); });
}

void UnixListener::Stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
    unlink(path_.c_str());
  }
  if (refusals_) {
    refusals_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    refusals_.reset();
  }
}

void UnixListener::AcceptLoop(grpc::Server* server) {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    ucred cred{};
    socklen_t len = sizeof cred;
    bool known = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
    if (known && Allowed(cred.uid)) {
      // gRPC owns the fd from here on.
      grpc::AddInsecureChannelFromFd(server, fd);
      continue;
    }
    if (known)
      spdlog::warn("refusing calls from pid {} (uid {}) on {}: only the agent's own user{} may call",
                   cred.pid, cred.uid, path_, allow_root_ ? " and root" : "");
    else
      spdlog::warn("refusing calls from a peer on {} whose credentials cannot be read: {}", path_,
                   strerror(errno));
    grpc::AddInsecureChannelFromFd(refusals_.get(), fd);
  }
}

}  // namespace safe_upgrade
