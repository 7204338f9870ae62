// Following an upgrade live, for `safe-upgrade run`.
//
// Everything is read from the catalog by polling (one query per pass: the row, the new events and
// the restore point), so following never depends on the agent and works from any host libpq
// reaches. A rollback restarts the server and rewinds the catalog to the restore point; the
// follower then reconnects with backoff, re-reads all events (printing only the ones it has not
// shown) and keeps showing "rolling_back" until the agent has written the outcome back.
#include "follow.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "commands.h"
#include "core/state_table.h"
#include "db.h"
#include "output.h"
#include "renderers.h"
#include "state_words.h"
#include "timeline.h"
#include "upgrade_doc.h"
#include "upgrade_json.h"

namespace safe_upgrade::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_interrupted = 0;

void OnSigint(int) { g_interrupted = 1; }

// Where an in-flight state sits in an upgrade's life; -1 for others.
int Rank(const std::string& state) {
  auto parsed = ParseState(state);
  return parsed ? PipelineRank(*parsed) : -1;
}

bool IsProgressEvent(const json& detail) {
  return detail.is_object() &&
         (detail.contains("percent") || detail.contains("mb_per_s") || detail.contains("done_mb"));
}

std::string DescribeBlocker(const json& b) {
  if (!b.is_object()) return JsonText(b);
  std::string out;
  auto add = [&](const std::string& s) {
    if (!s.empty()) out += (out.empty() ? "" : ", ") + s;
  };
  if (b.contains("pid")) add("pid " + JsonText(b["pid"]));
  for (const char* k : {"usename", "user", "application_name", "state", "mode", "wait_event"})
    if (b.contains(k) && !JsonText(b[k]).empty()) add(JsonText(b[k]));
  for (const char* k : {"transaction_age_s", "xact_age_s", "duration_s", "age_s", "waiting_s"})
    if (auto s = JsonNumber(b, k)) add("for " + FormatDuration(*s));
  for (const char* k : {"query", "statement"})
    if (b.contains(k) && !JsonText(b[k]).empty()) add("\"" + Truncate(OneLine(JsonText(b[k])), 80) + "\"");
  return out.empty() ? b.dump() : out;
}

class Follower {
 public:
  explicit Follower(const FollowOptions& o)
      : o_(o), out_(o.json ? std::cerr : std::cout), tty_(o.json ? StderrIsTerminal() : StdoutIsTerminal()) {}

  int Run() {
    try {
      conn_ = Connect(o_.dsn);
    } catch (const ConnectError& e) {
      // begin() has just committed, so the server was there a moment ago: retry as for any
      // lost connection.
      last_connect_error_ = e.what();
      MarkLost(e.what());
    }
    while (true) {
      if (g_interrupted) return Interrupted();
      if (!conn_ && !Reconnect()) {
        if (GaveUp()) return LostForGood();
        Sleep(backoff_ms_);
        continue;
      }
      try {
        auto doc = LoadUpgradeDoc(*conn_, o_.id, last_event_id_);
        if (!doc) {
          ClearProgress();
          std::cerr << "safe-upgrade: upgrade " << o_.id << " does not exist\n";
          return Finish(kExitFailure, nullptr,
                        ErrorJson("upgrade " + std::to_string(o_.id) + " does not exist"));
        }
        Process(*doc);
        if (IsTerminalState(doc->State())) {
          auto full = LoadUpgradeDoc(*conn_, o_.id, 0);
          return Summary(full ? *full : *doc);
        }
        if (StateIs(doc->State(), UpgradeState::kAwaitingApproval) && o_.ask_approval && !approval_asked_) {
          int rc = AskApproval(*doc);
          if (rc >= 0) return rc;
          continue;
        }
      } catch (const PgError& e) {
        if (IsConnectionLoss(e, conn_.get())) {
          conn_.reset();
          MarkLost(e.message());
          continue;
        }
        ClearProgress();
        PrintServerError(std::cerr, e);
        return Finish(kExitFailure, nullptr, ErrorJson(e));
      }
      Sleep(o_.poll_interval_ms);
    }
  }

 private:
  // ---- output ---------------------------------------------------------------------------------

  void ClearProgress() {
    if (progress_shown_) {
      out_ << "\r\033[K" << std::flush;
      progress_shown_ = false;
    }
  }

  void Line(const std::string& text) {
    ClearProgress();
    out_ << text << "\n" << std::flush;
  }

  std::string Stamp(double elapsed) const {
    char buf[32];
    snprintf(buf, sizeof buf, "[%7s]", FormatDuration(std::max(0.0, elapsed)).c_str());
    return buf;
  }

  void ShowPhase(const std::string& state, double elapsed) {
    shown_state_ = state;
    if (StateIs(state, UpgradeState::kRollingBack)) saw_rolling_back_ = true;
    samples_.clear();
    last_quarter_ = -1;
    event_rate_mb_s_.reset();
    progress_events_ = false;
    event_total_mb_.reset();
    estimated_total_bytes_.reset();
    char name[24];
    snprintf(name, sizeof name, "%-17s", state.c_str());
    Line(Stamp(elapsed) + " " + name + " " + StateMeaning(state));
  }

  void HandleEvent(const json& e, const UpgradeDoc& doc) {
    double elapsed = JsonNumber(e, "at_epoch").value_or(doc.now_epoch) - doc.created_epoch;
    if (auto to = TransitionTarget(e)) {
      // After a rollback's restart the catalog is the restored one; older transitions must not
      // make the display go backwards.
      bool backwards =
          saw_rolling_back_ && !IsTerminalState(*to) && !StateIs(*to, UpgradeState::kRollingBack);
      if (*to != shown_state_ && !backwards) ShowPhase(*to, elapsed);
      return;
    }
    const json& detail = e.contains("detail") ? e["detail"] : json();
    std::string level = JsonString(e, "level", "info");
    std::string message = JsonString(e, "message");
    if (IsProgressEvent(detail)) {
      progress_events_ = true;
      if (auto r = JsonNumber(detail, "mb_per_s")) event_rate_mb_s_ = *r;
      if (auto t = JsonNumber(detail, "total_mb")) event_total_mb_ = *t;
      if (tty_ && level == "info") return;  // the progress bar shows it
    }
    const char* mark = level == "error" ? "  x " : level == "warning" ? "  ! " : "  - ";
    Line(mark + message);
    if (detail.is_object() && detail.contains("blockers") && detail["blockers"].is_array())
      for (const auto& b : detail["blockers"]) Line("      blocked by " + DescribeBlocker(b));
    // The rollback writes its outcome as an event of the final phase rather than as a transition.
    std::string phase = JsonString(e, "phase");
    if (IsTerminalState(phase) && phase == doc.State() && phase != shown_state_) ShowPhase(phase, elapsed);
  }

  void Process(const UpgradeDoc& doc) {
    for (const auto& e : doc.events) {
      if (auto id = JsonNumber(e, "id"))
        last_event_id_ = std::max<int64_t>(last_event_id_, static_cast<int64_t>(*id));
      // Keyed by content, not id: after a rollback the agent writes the events back into the
      // restored catalog, and we re-read them all.
      std::string key = JsonString(e, "at") + "|" + JsonString(e, "phase") + "|" + JsonString(e, "message");
      if (!printed_.insert(key).second) continue;
      HandleEvent(e, doc);
    }
    std::string state = doc.State();
    // A catalog that went backwards (say from verifying to scheduled) was restored by a rollback
    // whose start we did not see before the connection dropped.
    if (!IsTerminalState(state) && !IsTerminalState(shown_state_) && Rank(state) < Rank(shown_state_))
      saw_rolling_back_ = true;
    if (saw_rolling_back_ && !IsTerminalState(state)) state = StateName(UpgradeState::kRollingBack);
    if (state != shown_state_) ShowPhase(state, doc.now_epoch - doc.created_epoch);
    ShowProgress(doc);
  }

  void ShowProgress(const UpgradeDoc& doc) {
    auto fraction = JsonNumber(doc.upgrade, "progress");
    if (!fraction || IsTerminalState(doc.State())) return;
    auto now = Clock::now();
    samples_.push_back({now, *fraction});
    while (samples_.size() > 2 && now - samples_.front().first > std::chrono::seconds(5))
      samples_.pop_front();

    std::string rate;
    double total_bytes = 0;
    if (event_total_mb_) total_bytes = *event_total_mb_ * 1024 * 1024;
    if (total_bytes <= 0) total_bytes = EstimatedTotalBytes(doc);
    // The rate over the last seconds, from the progress fraction and what the copy moves; else
    // the rate the agent last reported.
    if (samples_.size() >= 2) {
      double dt = std::chrono::duration<double>(samples_.back().first - samples_.front().first).count();
      double df = samples_.back().second - samples_.front().second;
      if (dt > 0.5 && df > 0)
        rate = total_bytes > 0 ? "~" + FormatBytes(df * total_bytes / dt) + "/s"
                               : std::to_string(static_cast<int>(std::lround(df * 100 / dt))) + "%/s";
    }
    if (rate.empty() && event_rate_mb_s_) rate = FormatBytes(*event_rate_mb_s_ * 1024 * 1024) + "/s";
    if (tty_) {
      std::string bar = ProgressBar(*fraction, rate);
      if (progress_shown_ && bar == last_bar_) return;  // redraw only what changed
      out_ << "\r\033[K          " << bar << std::flush;
      last_bar_ = bar;
      progress_shown_ = true;
    } else if (!progress_events_) {  // the agent's own progress events already say it
      int quarter = static_cast<int>(std::floor(*fraction * 4));
      if (quarter > last_quarter_) {
        last_quarter_ = quarter;
        char pct[16];
        snprintf(pct, sizeof pct, "%.0f%%", *fraction * 100);
        Line(std::string("  - progress ") + pct + (rate.empty() ? "" : ", " + rate));
      }
    }
  }

  // What a copy in this phase moves: the cluster while snapshotting, the snapshot afterwards.
  double EstimatedTotalBytes(const UpgradeDoc& doc) {
    if (estimated_total_bytes_) return *estimated_total_bytes_;
    double total = 0;
    if (StateIs(doc.State(), UpgradeState::kSnapshotting)) {
      try {
        total = std::stod(conn_->Exec("SELECT sum(pg_database_size(oid))::text FROM pg_database").Scalar());
      } catch (const std::exception&) {
        total = 0;
      }
    } else if (doc.upgrade.contains("snapshot")) {
      total = JsonNumber(doc.upgrade["snapshot"], "size_bytes").value_or(0);
    }
    estimated_total_bytes_ = total;
    return total;
  }

  // ---- approval -------------------------------------------------------------------------------

  // Returns -1 to go on following, else the exit code.
  int AskApproval(const UpgradeDoc& doc) {
    approval_asked_ = true;
    std::string id = std::to_string(o_.id);
    ClearProgress();
    const json& report = doc.Report();
    if (report.contains("dry_run")) {
      out_ << "the dry run passed on a clone of production:\n";
      PrintDryRunSummary(out_, report["dry_run"]);
    }
    if (!StdinIsTerminal()) {
      out_ << "upgrade " << id << " is waiting for approval before it touches production.\n"
           << "  approve it:  safe-upgrade approve " << id << "\n"
           << "  follow it:   safe-upgrade status " << id << "\n"
           << "  or cancel:   safe-upgrade cancel " << id << "\n"
           << "(pass --approve to `run` to apply without asking)\n"
           << std::flush;
      return Finish(kExitFailure, &doc);
    }
    out_ << "apply " << doc.Extname() << " " << doc.FromVersion() << " -> " << doc.ToVersion()
         << " to production? [y/N] " << std::flush;
    std::string answer;
    bool interrupted = !ReadAnswer(answer);
    if (interrupted || g_interrupted) {
      out_ << "\n";
      return Interrupted();
    }
    if (answer != "y" && answer != "Y" && answer != "yes" && answer != "YES" && answer != "Yes") {
      out_ << "not approved: upgrade " << id << " stays waiting for approval; production was not touched.\n"
           << "  approve it later:  safe-upgrade approve " << id << "\n"
           << "  or cancel it:      safe-upgrade cancel " << id << "\n"
           << std::flush;
      return Finish(kExitFailure, &doc);
    }
    try {
      conn_->Exec("SELECT safe_upgrade.approve($1::bigint)::text", {id});
    } catch (const PgError& e) {
      PrintServerError(std::cerr, e);
      return Finish(kExitFailure, &doc, ErrorJson(e));
    }
    Line("approved; applying to production");
    return -1;
  }

  // A line from stdin; false when Ctrl-C interrupted the read.
  bool ReadAnswer(std::string& answer) {
    char c;
    while (true) {
      ssize_t n = read(STDIN_FILENO, &c, 1);
      if (n < 0 && errno == EINTR) {
        if (g_interrupted) return false;
        continue;
      }
      if (n <= 0 || c == '\n') break;
      answer += c;
    }
    answer = OneLine(answer);
    return true;
  }

  // ---- connection -----------------------------------------------------------------------------

  void MarkLost(const std::string& reason) {
    if (lost_since_) return;
    lost_since_ = Clock::now();
    backoff_ms_ = 250;
    Line("  ~ lost the connection to the server (" + OneLine(reason.substr(0, reason.find('\n'))) + ")" +
         (saw_rolling_back_ ? "; the rollback restarts the server" : "") + "; reconnecting for up to " +
         FormatDuration(o_.reconnect_timeout_s));
  }

  bool Reconnect() {
    try {
      conn_ = Connect(o_.dsn, std::chrono::seconds(5));
    } catch (const ConnectError& e) {
      last_connect_error_ = e.what();
      backoff_ms_ = std::min(backoff_ms_ * 2, 5000);
      return false;
    }
    if (lost_since_) {
      double away = std::chrono::duration<double>(Clock::now() - *lost_since_).count();
      Line("  ~ reconnected after " + FormatDuration(away));
      lost_since_.reset();
    }
    last_event_id_ = 0;  // re-read everything: the catalog may have been restored
    return true;
  }

  bool GaveUp() const {
    return lost_since_ && Clock::now() - *lost_since_ > std::chrono::seconds(o_.reconnect_timeout_s);
  }

  int LostForGood() {
    std::string id = std::to_string(o_.id);
    ClearProgress();
    std::cerr << "safe-upgrade: gave up reconnecting after " << FormatDuration(o_.reconnect_timeout_s) << ": "
              << last_connect_error_ << "\n"
              << "the upgrade may still be in progress on the server; check it with: safe-upgrade status "
              << id << "\n";
    return Finish(kExitFailure, nullptr,
                  ErrorJson("lost the connection to the server: " + last_connect_error_));
  }

  // Sleeps, but returns early on Ctrl-C.
  void Sleep(int ms) {
    auto until = Clock::now() + std::chrono::milliseconds(ms);
    while (!g_interrupted && Clock::now() < until) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      struct timespec ts {
        static_cast<time_t>(left.count() / 1000), static_cast<long>((left.count() % 1000) * 1000000)
      };
      nanosleep(&ts, nullptr);
    }
  }

  // ---- endings --------------------------------------------------------------------------------

  int Interrupted() {
    ClearProgress();
    std::string id = std::to_string(o_.id);
    std::cerr << "\ninterrupted: stopped following, but upgrade " << id
              << " goes on in the server (Ctrl-C never cancels an upgrade)\n"
              << "  follow it:  safe-upgrade status " << id << "\n"
              << "  cancel it:  safe-upgrade cancel " << id << "\n"
              << std::flush;
    json extra = {{"interrupted", true}};
    return Finish(kExitInterrupted, nullptr, extra);
  }

  int Summary(const UpgradeDoc& doc) {
    ClearProgress();
    out_ << "\n";
    PrintOutcome(out_, doc);
    out_ << std::flush;
    return Finish(ExitCodeForState(doc.State()), &doc);
  }

  // With --json, the document on stdout (read afresh, with all events); always returns code.
  int Finish(int code, const UpgradeDoc* doc, const json& extra = json::object()) {
    if (!o_.json) return code;
    json out = json::object();
    if (conn_) {
      try {
        if (auto d = LoadUpgradeDoc(*conn_, o_.id, 0)) out = DocToJson(*d);
      } catch (const std::exception&) {
      }
    }
    if (out.empty() && doc) out = DocToJson(*doc);
    if (out.empty()) out["id"] = o_.id;
    for (auto it = extra.begin(); it != extra.end(); ++it) out[it.key()] = *it;
    out["exit_code"] = code;
    std::cout << out.dump(2) << "\n" << std::flush;
    return code;
  }

  const FollowOptions& o_;
  std::ostream& out_;
  bool tty_;
  std::unique_ptr<PgConn> conn_;
  int64_t last_event_id_ = 0;
  std::set<std::string> printed_;
  std::string shown_state_;
  bool saw_rolling_back_ = false;
  bool approval_asked_ = false;
  std::optional<Clock::time_point> lost_since_;
  int backoff_ms_ = 250;
  std::string last_connect_error_;
  // progress
  bool progress_shown_ = false;
  bool progress_events_ = false;  // this phase's events report progress themselves
  std::string last_bar_;
  std::deque<std::pair<Clock::time_point, double>> samples_;
  int last_quarter_ = -1;
  std::optional<double> event_rate_mb_s_, event_total_mb_, estimated_total_bytes_;
};

}  // namespace

void CatchInterrupts() {
  // Installed without SA_RESTART, so that a blocking read of the approval answer returns at once.
  struct sigaction sa {};
  sa.sa_handler = OnSigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
}

int FollowUpgrade(const FollowOptions& options) {
  CatchInterrupts();
  return Follower(options).Run();
}

}  // namespace safe_upgrade::cli
