// safe-upgrade: the command line for people and CI.
#include <CLI/CLI.hpp>
#include <iostream>

#include "build_info.h"
#include "commands.h"

int main(int argc, char** argv) {
  using namespace safe_upgrade::cli;
  CLI::App app{"safe-upgrade: recoverable PostgreSQL extension upgrades"};
  app.set_version_flag("--version", std::string(safe_upgrade::kVersion));
  static GlobalOptions global;
  app.add_option("--dsn", global.dsn, "connection string (default: libpq's environment, PGHOST, PGPORT, ...)");
  app.require_subcommand(1);
  int exit_code = kExitOk;
  AddSandboxCommands(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return exit_code;
}
