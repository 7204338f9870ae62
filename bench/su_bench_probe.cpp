// su-bench-probe: the bench's two client-side samplers (bench/run.sh), so that downtime and disk
// are measured as a user would see them rather than taken from the program's own events.
//
//   su-bench-probe writes --out FILE [--state FILE] [--interval-ms 5] [--dsn DSN]
//     Commits a write (SELECT txid_current()) every few milliseconds, reconnecting after any
//     failure, until SIGTERM. An outage runs from the start of the first refused write to the end
//     of the next accepted one. It also adds up the WAL written meanwhile from the LSN each accepted
//     write returns (a PITR moves the LSN back; the rewound part is not counted twice). --state is
//     rewritten on every change: "up <epoch>" or "down <epoch>", so the bench can wait on it.
//   su-bench-probe disk --out FILE [--interval-ms 100] [--tree DIR]... PATH...
//     Samples the used bytes of the filesystems holding PATH... (each counted once) until SIGTERM,
//     and keeps the first value and the peak. A --tree is also walked each time (allocated blocks,
//     hard links once): a cross-check that other users of a shared filesystem cannot disturb, but
//     that counts extents shared by reflink copies once per copy.
#include <ftw.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using nlohmann::json;

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Sleeps until `until` (epoch seconds) unless a signal asks us to stop.
void SleepUntil(double until) {
  while (!g_stop) {
    double left = until - Now();
    if (left <= 0) return;
    std::this_thread::sleep_for(std::chrono::duration<double>(std::min(left, 0.05)));
  }
}

void WriteAtomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
  }
  std::rename(tmp.c_str(), path.c_str());
}

// "16/B374D848" -> byte position; 0 when unparsable.
unsigned long long ParseLsn(const char* text) {
  unsigned int hi = 0, lo = 0;
  if (!text || std::sscanf(text, "%X/%X", &hi, &lo) != 2) return 0;
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

std::string FirstLine(const char* message) {
  std::string s = message ? message : "";
  size_t nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

int RunWrites(const std::string& out_path, const std::string& state_path, int interval_ms,
              const std::string& dsn) {
  // A refused connection must fail fast, and a write that hangs counts as refused after 5 s.
  std::string conninfo =
      dsn + " connect_timeout=2 application_name=su-bench-probe options='-c statement_timeout=5000'";
  PGconn* conn = nullptr;
  json outages = json::array();
  json current;  // the outage in progress, if any
  long attempts = 0, refused = 0;
  double max_ok_latency = 0, last_ok_end = 0, started = Now();
  unsigned long long prev_lsn = 0, wal_bytes = 0;
  std::string state;
  auto set_state = [&](const char* s, double at) {
    if (state == s) return;
    state = s;
    if (!state_path.empty()) WriteAtomically(state_path, state + " " + std::to_string(at) + "\n");
  };
  set_state("down", started);
  double next = started;
  while (!g_stop) {
    double t0 = Now();
    bool ok = false;
    std::string error;
    unsigned long long lsn = 0;
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
      if (conn) PQfinish(conn);
      conn = PQconnectdb(conninfo.c_str());
      if (PQstatus(conn) != CONNECTION_OK) error = FirstLine(PQerrorMessage(conn));
      PQsetNoticeProcessor(
          conn, [](void*, const char*) {}, nullptr);  // shutdown warnings: not ours to print
    }
    if (error.empty()) {
      PGresult* res = PQexec(conn, "SELECT txid_current(), pg_current_wal_lsn()");
      if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        ok = true;
        lsn = ParseLsn(PQgetvalue(res, 0, 1));
      } else {
        error = FirstLine(PQerrorMessage(conn));
      }
      PQclear(res);
    }
    double t1 = Now();
    ++attempts;
    if (ok) {
      max_ok_latency = std::max(max_ok_latency, t1 - t0);
      if (prev_lsn && lsn > prev_lsn) wal_bytes += lsn - prev_lsn;
      prev_lsn = lsn;
      if (!current.is_null()) {
        current["end"] = t1;
        current["s"] = t1 - current["start"].get<double>();
        outages.push_back(current);
        current = nullptr;
      }
      last_ok_end = t1;
      set_state("up", t1);
    } else {
      ++refused;
      if (current.is_null() && last_ok_end > 0)  // refusals before the first accepted write are not an outage
        current = {{"start", t0}, {"last_accepted_end", last_ok_end}, {"first_error", error}, {"refused", 0}};
      if (!current.is_null()) current["refused"] = current["refused"].get<long>() + 1;
      set_state("down", t1);
    }
    next += interval_ms / 1000.0;
    if (next < t1) next = t1;  // a slow attempt does not make the next ones come in a burst
    SleepUntil(next);
  }
  if (conn) PQfinish(conn);
  double stopped = Now();
  double longest = 0, total = 0;
  for (const auto& o : outages) {
    longest = std::max(longest, o["s"].get<double>());
    total += o["s"].get<double>();
  }
  json doc = {{"started_at", started},
              {"stopped_at", stopped},
              {"interval_ms", interval_ms},
              {"write", "SELECT txid_current(), pg_current_wal_lsn()"},
              {"attempts", attempts},
              {"refused", refused},
              {"outages", outages},
              {"outage_count", outages.size()},
              {"longest_outage_s", outages.empty() ? json(nullptr) : json(longest)},
              {"total_outage_s", total},
              {"unfinished_outage", current},
              {"ever_accepted", last_ok_end > 0},
              {"max_accepted_write_latency_s", max_ok_latency},
              {"wal_bytes", wal_bytes}};
  WriteAtomically(out_path, doc.dump(2) + "\n");
  return 0;
}

// --- disk ---------------------------------------------------------------------------------------

unsigned long long g_tree_bytes = 0;
std::set<std::pair<dev_t, ino_t>> g_seen_links;  // nftw's callback takes no argument

int AddEntry(const char*, const struct stat* st, int type, struct FTW*) {
  if (type != FTW_F && type != FTW_D && type != FTW_SL) return 0;  // vanished meanwhile: skip it
  if (st->st_nlink > 1 && type == FTW_F && !g_seen_links.insert({st->st_dev, st->st_ino}).second) return 0;
  g_tree_bytes += static_cast<unsigned long long>(st->st_blocks) * 512;
  return 0;
}

unsigned long long TreeBytes(const std::vector<std::string>& trees) {
  g_seen_links.clear();
  g_tree_bytes = 0;
  for (const auto& t : trees) nftw(t.c_str(), AddEntry, 64, FTW_PHYS);
  return g_tree_bytes;
}

// Used bytes of the distinct filesystems holding paths.
unsigned long long UsedBytes(const std::vector<std::string>& paths) {
  std::set<unsigned long> seen;
  unsigned long long used = 0;
  for (const auto& p : paths) {
    struct statvfs vfs;
    if (statvfs(p.c_str(), &vfs) != 0 || !seen.insert(vfs.f_fsid).second) continue;
    used += static_cast<unsigned long long>(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize;
  }
  return used;
}

int RunDisk(const std::string& out_path, int interval_ms, const std::vector<std::string>& paths,
            const std::vector<std::string>& trees) {
  double started = Now(), next = started, peak_at = started, tree_peak_at = started;
  unsigned long long first = UsedBytes(paths), peak = first, last = first;
  unsigned long long tree_first = trees.empty() ? 0 : TreeBytes(trees), tree_peak = tree_first;
  long samples = 1;
  while (!g_stop) {
    next += interval_ms / 1000.0;
    SleepUntil(next);
    last = UsedBytes(paths);
    if (last > peak) peak = last, peak_at = Now();
    if (!trees.empty()) {
      unsigned long long t = TreeBytes(trees);
      if (t > tree_peak) tree_peak = t, tree_peak_at = Now();
    }
    ++samples;
  }
  json doc = {{"started_at", started},
              {"stopped_at", Now()},
              {"interval_ms", interval_ms},
              {"samples", samples},
              {"paths", paths},
              {"used_start_bytes", first},
              {"used_peak_bytes", peak},
              {"used_end_bytes", last},
              {"peak_at", peak_at},
              {"peak_extra_bytes", peak - first}};
  if (!trees.empty())
    doc["tree"] = {{"dirs", trees},
                   {"start_bytes", tree_first},
                   {"peak_bytes", tree_peak},
                   {"peak_at", tree_peak_at},
                   {"peak_extra_bytes", tree_peak - std::min(tree_first, tree_peak)}};
  WriteAtomically(out_path, doc.dump(2) + "\n");
  return 0;
}

int Usage() {
  std::fprintf(stderr,
               "usage: su-bench-probe writes --out FILE [--state FILE] [--interval-ms N] [--dsn DSN]\n"
               "       su-bench-probe disk --out FILE [--interval-ms N] [--tree DIR]... PATH...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  std::string mode = argv[1], out, state, dsn;
  int interval_ms = mode == "disk" ? 100 : 5;
  std::vector<std::string> paths, trees;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) std::exit(Usage());
      return argv[++i];
    };
    if (a == "--out")
      out = value();
    else if (a == "--state")
      state = value();
    else if (a == "--dsn")
      dsn = value();
    else if (a == "--tree")
      trees.push_back(value());
    else if (a == "--interval-ms")
      interval_ms = std::atoi(value().c_str());
    else if (!a.empty() && a[0] != '-')
      paths.push_back(a);
    else
      return Usage();
  }
  if (out.empty() || interval_ms <= 0) return Usage();
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  if (mode == "writes" && paths.empty()) return RunWrites(out, state, interval_ms, dsn);
  if (mode == "disk" && !paths.empty()) return RunDisk(out, interval_ms, paths, trees);
  return Usage();
}
