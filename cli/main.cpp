// safe-upgrade: the command line for people and CI. Parses the command line, then runs the one
// subcommand given; usage errors print the relevant usage on stderr and exit 2.
#include <signal.h>
#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "build_info.h"
#include "commands.h"

namespace {

// The first word that is neither an option nor --dsn's value: what the user meant as subcommand.
std::string FirstWord(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dsn") {
      ++i;
      continue;
    }
    if (!a.empty() && a[0] != '-') return a;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace safe_upgrade::cli;
  // A closed pipe (safe-upgrade status | head) must not kill us mid-write.
  signal(SIGPIPE, SIG_IGN);
  // libpq reads these from the environment unless the DSN says otherwise.
  setenv("PGAPPNAME", "safe-upgrade", 0);
  setenv("PGCONNECT_TIMEOUT", "10", 0);

  CLI::App app{"safe-upgrade: recoverable PostgreSQL extension upgrades", "safe-upgrade"};
  app.set_version_flag("--version", std::string(safe_upgrade::kVersion));
  static GlobalOptions global;
  app.add_option("--dsn", global.dsn,
                 "libpq connection string or URI (default: libpq's environment, PGHOST, PGPORT, PGUSER, "
                 "PGDATABASE, ...)");
  app.require_subcommand(1);
  // --dsn may also follow the subcommand: `safe-upgrade status --dsn ...`.
  app.fallthrough();
  app.footer(
      "exit codes: 0 success (run: succeeded or validated), 1 failure, 2 usage, 3 blocked, 4 rolled back,\n"
      "5 rollback failed, 130 interrupted (the upgrade goes on). Documentation: docs/cli.md");
  int exit_code = kExitOk;
  AddUpgradeCommands(app, global, exit_code);
  AddSandboxCommands(app, exit_code);
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) sub->fallthrough();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    std::string word = FirstWord(argc, argv);
    if (app.get_subcommands().empty() && !word.empty()) message = "unknown subcommand \"" + word + "\"";
    // app.help() shows the usage of the subcommand being parsed, if any.
    std::cerr << "safe-upgrade: " << message << "\n\n" << app.help();
    return kExitUsage;
  }
  return exit_code;
}
