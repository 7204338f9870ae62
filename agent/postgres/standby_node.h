// A streaming standby seen from its own host: what it follows, whether it streams, and the two
// ways to make it follow a primary that a rollback put on a new timeline: pg_rewind against the
// primary, or a fresh pg_basebackup from it. Both keep the standby's own settings (its
// postgresql.conf, postgresql.auto.conf with primary_conninfo, pg_hba.conf, pg_ident.conf and
// standby.signal), which pg_rewind and pg_basebackup would replace with the primary's.
#pragma once

#include <chrono>
#include <string>

#include "base/config.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

struct StandbyState {
  bool in_recovery = false;
  std::string primary_conninfo, primary_slot_name;
  // pg_stat_wal_receiver: "" when no receiver runs (e.g. the primary refuses its timeline).
  std::string receiver_status;
  int received_tli = 0;
  // The timeline of the standby's last restartpoint (pg_control_checkpoint()).
  int checkpoint_tli = 0;
  bool Streaming(int primary_timeline) const {
    return receiver_status == "streaming" && received_tli == primary_timeline;
  }
};

StandbyState ReadStandbyState(PgConn& standby);

// A conninfo to the primary for pg_rewind and queries: where the standby's primary_conninfo
// points (host, port, TLS settings, passfile...), as user (the agent's [cluster] user; "" keeps the
// primary_conninfo's, typically a replication role that may not read the files pg_rewind needs),
// to database. A password in primary_conninfo is kept only for its own user. Throws when
// primary_conninfo cannot be parsed.
std::string PrimaryQueryConnInfo(const std::string& primary_conninfo, const std::string& user,
                                 const std::string& database);
// The primary's current timeline (its current WAL file's), over conninfo.
int PrimaryTimeline(const std::string& conninfo);

// The files of the data directory that make the node this standby; copied to into and back.
void SaveStandbySettings(const std::string& data_dir, const std::string& into);
void RestoreStandbySettings(const std::string& saved, const std::string& data_dir);

// pg_rewind of a cleanly stopped standby against the primary; throws with pg_rewind's words.
void RewindStandby(const AgentConfig& config, const std::string& source_conninfo);
// Moves the data directory to aside (kept: never deleted) and takes a new pg_basebackup of the
// primary in its place; throws when the copy fails (the partial copy stays in the data
// directory, the original in aside).
void RecloneStandby(const AgentConfig& config, const std::string& primary_conninfo, const std::string& aside);

// Polls the standby until it streams on primary_timeline; false at the deadline.
bool WaitUntilStreaming(const AgentConfig& config, int primary_timeline, std::chrono::seconds timeout);

}  // namespace safe_upgrade
