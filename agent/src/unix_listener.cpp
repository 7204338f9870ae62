// Unix socket listener with peer credential checks.
#include "unix_listener.h"

#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace safe_upgrade {

UnixListener::UnixListener(std::string path, bool allow_root) : path_(std::move(path)), allow_root_(allow_root) {}

UnixListener::~UnixListener() { Stop(); }

void UnixListener::Start(grpc::Server* server) {
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
  if (listen(listen_fd_, 64) != 0) throw std::runtime_error("could not listen on " + path_ + ": " + strerror(errno));
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
}

void UnixListener::AcceptLoop(grpc::Server* server) {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    ucred cred{};
    socklen_t len = sizeof cred;
    PeerInfo info;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      info.pid = cred.pid;
      info.uid = cred.uid;
      info.allowed = cred.uid == geteuid() || (allow_root_ && cred.uid == 0);
    }
    if (!info.allowed)
      spdlog::warn("refusing calls from pid {} (uid {}) on {}: only the agent's own user{} may call", info.pid,
                   info.uid, path_, allow_root_ ? " and root" : "");
    {
      std::lock_guard<std::mutex> lock(mu_);
      peers_[fd] = info;
    }
    // gRPC owns the fd from here on; denied peers get PERMISSION_DENIED on every call.
    grpc::AddInsecureChannelFromFd(server, fd);
  }
}

bool UnixListener::Lookup(const std::string& grpc_peer, PeerInfo& out) const {
  // gRPC names fd channels "fd:<n>" (possibly with a prefix); take the trailing number.
  auto pos = grpc_peer.find_last_not_of("0123456789");
  if (pos == std::string::npos || pos + 1 >= grpc_peer.size()) return false;
  int fd = std::stoi(grpc_peer.substr(pos + 1));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(fd);
  if (it == peers_.end()) return false;
  out = it->second;
  return true;
}

}  // namespace safe_upgrade
