// Controlling a PostgreSQL cluster from outside: initdb, settings, start, stop, status and
// control-file facts. Used by the agent (stop/start for rollback, clones), the sandbox and the
// test harness.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/config.h"

namespace safe_upgrade {

struct ClusterFacts {
  uint64_t system_identifier = 0;
  uint32_t timeline = 0;
  std::string state;  // "in production", "shut down", ...
  // Where a recovery must at least replay to (the end of replay when a server in recovery
  // stopped), and its timeline: how the agent tells where a parked target stopped.
  std::string min_recovery_end_lsn;  // "0/0" when not in recovery
  uint32_t min_recovery_end_timeline = 0;
  // "0/0" once a server started from a base backup has replayed to the backup's end.
  std::string backup_start_lsn;
};

class ServerControl {
 public:
  // How to stop and start the server: "pg_ctl" (default), "pg_ctlcluster V NAME" or "systemd UNIT".
  ServerControl(std::string bin_dir, std::string data_dir, std::string control = "pg_ctl",
                std::string run_as = "", std::string server_log = "");
  // Stops and waits; mode is "fast" or "immediate".
  void Stop(const std::string& mode = "fast", std::chrono::seconds timeout = std::chrono::seconds(120));
  // Starts and waits until the server accepts connections (or exits). Extra "-c name=value"
  // options apply to this start only (pg_ctl control). wait = false (pg_ctl control): return once
  // the postmaster is launched, for servers whose readiness the caller judges itself.
  void Start(const std::vector<std::string>& extra_options = {},
             std::chrono::seconds timeout = std::chrono::seconds(600), bool wait = true);
  bool Running() const;
  // postmaster pid from postmaster.pid, or 0.
  long PostmasterPid() const;
  const std::string& data_dir() const { return data_dir_; }
  // Scratch servers (clones, the parked target before it is needed): started at low CPU and I/O
  // priority, so that production, busy or not, wins every contention with them.
  ServerControl& LowPriority() {
    low_priority_ = true;
    return *this;
  }

 private:
  bool QuitAndWait(std::chrono::seconds timeout) const;
  std::string bin_dir_, data_dir_, control_, run_as_, server_log_;
  bool low_priority_ = false;
};

ClusterFacts ReadControlData(const std::string& bin_dir, const std::string& data_dir,
                             const std::string& run_as = "");

// One switch of a timeline history file (pg_wal/<timeline>.history): the timeline it branched
// from, the LSN where, and PostgreSQL's reason ("at restore point \"rp\"", "no recovery target
// specified", ...).
struct TimelineSwitch {
  uint32_t parent = 0;
  std::string lsn;
  std::string reason;
};

// The last switch a history file lists: the one that created its timeline; nullopt if none.
std::optional<TimelineSwitch> LastTimelineSwitch(const std::string& history_text);

// "00000002.history"
std::string TimelineHistoryFileName(uint32_t timeline);

// Rewrites the block of lines between our markers at the end of postgresql.conf.
void WriteManagedSettings(const std::string& data_dir, const std::map<std::string, std::string>& settings);

// Quotes a value for postgresql.conf.
std::string ConfQuote(const std::string& value);

// A free TCP port on 127.0.0.1 (checked by binding), above 20000.
int FindFreePort();
bool PortOpen(int port);

}  // namespace safe_upgrade
