// The settings of a scratch server (a dry-run clone, a restored copy, the sandbox) that is
// reachable only through its unix socket: no TCP.
#pragma once

#include <map>
#include <string>

#include "postgres/cluster.h"

namespace safe_upgrade {

// On port, with its socket in socket_dir: for WriteManagedSettings, or to start a list of its own.
inline std::map<std::string, std::string> SocketOnlySettings(int port, const std::string& socket_dir) {
  return {{"port", std::to_string(port)},
          {"listen_addresses", "''"},
          {"unix_socket_directories", ConfQuote(socket_dir)}};
}

}  // namespace safe_upgrade
