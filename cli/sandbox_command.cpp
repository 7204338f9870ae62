// `safe-upgrade sandbox up|down|env`: a local cluster with archiving, the extension and an agent.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>
#include <string>

#include "commands.h"
#include "sandbox/sandbox.h"

namespace safe_upgrade::cli {
namespace {

// Runs one subcommand's body: kExitOk when it returns, kExitFailure (with the error, after
// prefix) when it throws.
void Run(int& exit_code, const std::string& prefix, const std::function<void()>& body) {
  try {
    body();
    exit_code = kExitOk;
  } catch (const std::exception& e) {
    std::cerr << "safe-upgrade: " << prefix << e.what() << "\n";
    exit_code = kExitFailure;
  }
}

}  // namespace

void AddSandboxCommands(CLI::App& app, int& exit_code) {
  auto* sandbox = app.add_subcommand("sandbox", "a local PostgreSQL cluster with the extension and an agent");
  sandbox->require_subcommand(1);
  static std::string dir;
  static int port = 0;
  static std::string backend = "local";
  static int standbys = 0;

  auto* up = sandbox->add_subcommand("up", "create the sandbox, or start whatever of it is not running");
  up->add_option("--dir", dir, "sandbox directory")->required();
  up->add_option("--port", port, "port for the server (default: a free one)")->check(CLI::Range(1024, 65535));
  up->add_option("--backend", backend,
                 "where snapshots and archived WAL live: local (the agent's own) or pgbackrest (a stanza "
                 "in a repository inside the sandbox); chosen when the sandbox is created")
      ->check(CLI::IsMember({"local", "pgbackrest"}));
  up->add_option("--standbys", standbys,
                 "streaming standbys on this machine, each with its own agent, in DIR/standby1 ... (0-9); "
                 "chosen when the sandbox is created")
      ->check(CLI::Range(0, 9));
  up->callback([&exit_code] {
    Run(exit_code, "sandbox up failed: ", [] {
      SandboxOptions options;
      options.port = port;
      options.backend = backend;
      options.standbys = standbys;
      options.progress = [](const std::string& line) { std::cerr << "sandbox: " << line << "\n"; };
      SandboxInfo info = SandboxUp(dir, options);
      std::cout << "sandbox is up in " << info.dir << "\n"
                << "  server:  port " << info.port << ", socket directory " << info.socket_dir << "\n"
                << "  agent:   " << info.agent_config.listen << "\n";
      if (info.agent_config.backend.IsPgBackRest())
        std::cout << "  backend: pgBackRest stanza \"" << info.agent_config.backend.stanza << "\" ("
                  << info.agent_config.backend.config << ")\n";
      for (const auto& standby : info.standbys)
        std::cout << "  standby: " << standby.dir << " (port " << standby.port << ", agent "
                  << standby.agent_config.listen << ", env " << standby.env_path << ")\n";
      std::cout << "  logs:    " << info.dir << "/postgres.log, " << info.dir << "/agent.log\n"
                << "connect with:  set -a; . " << info.env_path << "; set +a; psql\n";
    });
  });

  auto* down = sandbox->add_subcommand("down", "stop the sandbox's agent and server (files are kept)");
  down->add_option("--dir", dir, "sandbox directory")->required();
  down->callback([&exit_code] {
    Run(exit_code, "sandbox down failed: ", [] {
      SandboxDown(dir);
      std::cout << "sandbox in " << dir << " is stopped\n";
    });
  });

  auto* env = sandbox->add_subcommand("env", "print shell lines to connect to the sandbox (eval \"$(...)\")");
  env->add_option("--dir", dir, "sandbox directory")->required();
  env->callback(
      [&exit_code] { Run(exit_code, "", [] { std::cout << SandboxEnvLines(SandboxOpen(dir), true); }); });
}

}  // namespace safe_upgrade::cli
