// Unit tests of the typed journal: every field survives a write and a read, a document written
// before the format field existed reads as format 1, and a document this agent cannot read whole
// (a newer format, an unknown state, a field of the wrong type) is refused and left as it is.
#include "base/journal.h"

#include <gtest/gtest.h>

#include "base/fs_util.h"
#include "temp_dir.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

class JournalTest : public TempDirTest {
 protected:
  std::string Path(int64_t id) const { return JoinPath(root_, "upgrade-" + std::to_string(id) + ".json"); }
};

JournalDoc FullDocument() {
  JournalDoc doc;
  doc.upgrade_id = 7;
  doc.apply = ApplyState::kPartiallyCommitted;
  doc.apply_at[ApplyState::kStarted] = "2026-12-01T21:04:02.123Z";
  doc.apply_at[ApplyState::kPartiallyCommitted] = "2026-12-01T21:04:05.000Z";
  doc.apply_job = "apply-7-1";
  doc.apply_databases = {{"app", DatabaseApplyState::kCommitted},
                         {"other", DatabaseApplyState::kNotCommitted}};
  doc.apply_backend_pid = 4242;
  doc.apply_error = "could not get the locks";
  doc.snapshot_id = "snap-7";
  doc.clones.push_back({"/w/clones/clone-7", "/w/clones/clone-7/data", "/w/clones/clone-7/run", 5433,
                        "dryrun-7-1", "snap-7", "2026-12-01T21:00:00Z"});
  RollbackTargetRecord target;
  target.dir = "/pg/data.ready-7";
  target.port = 5434;
  target.restore_point = "safe_upgrade_7";
  target.layout = {{"version_dir", "PG_15_202209061"}};
  target.state = TargetState::kParked;
  target.synced = RollbackTargetRecord::Synced{10, 3, 0.5};
  target.parked = json{{"timeline", 2}};
  doc.rollback_target = target;
  doc.rollback = RollbackState::kInProgress;
  doc.rollback_step = "moved_aside";
  RollbackContext rc;
  rc.fast = true;
  rc.snapshot_bytes = 123456789012ull;
  rc.rollback_target = target;
  rc.extname = "hstore";
  rc.from_version = "1.7";
  rc.to_version = "1.8";
  rc.databases = {{"app", "1.7"}};
  rc.snapshot_id = "snap-7";
  rc.system_identifier = "7400000000000000001";
  rc.restore_point = {"safe_upgrade_7", "0/3000060", 1, "750", "000000010000000000000003", "0/2000100"};
  rc.events.push_back({"2026-12-01T21:04:06Z", "rolling_back", "info", "stopping the server", {{"k", 1}}});
  rc.dir_suffix = "7-20261201T210402Z";
  rc.outside = {{"suffix", "7-20261201T210402Z"}};
  rc.set_aside = {{"/pg/data", "/pg/data.failed-7-20261201T210402Z"}};
  rc.catalog_events.push_back({"12", "2026-12-01T21:04:03Z", "applying", "info", "applied", json::object()});
  rc.report = {{"hops", json::array()}};
  rc.catalog_databases.push_back({"app", "committed", json::object(), std::nullopt});
  rc.catalog_databases.push_back({"other", "failed", json::object(), std::string("lock timeout")});
  rc.timeline_before = 1;
  DataLossWindow window;
  window.restore_point = "safe_upgrade_7";
  window.wal_bytes_discarded = 8192;
  window.transaction_ids_discarded = -1;
  rc.window = window;
  rc.downtime_started = 1764622000.25;
  rc.timeline_after = 2;
  doc.rollback_context = rc;
  doc.rollback_putting_back = "recovery failed";
  return doc;
}

TEST_F(JournalTest, every_field_survives_a_write_and_a_read) {
  Journal journal(root_);
  journal.Update(7, [](JournalDoc& doc) { doc = FullDocument(); });
  JournalDoc read = journal.Load(7);
  EXPECT_EQ(ToJson(read), ToJson(FullDocument()));
  EXPECT_EQ(read.rollback_context->restore_point.lsn, "0/3000060");
  EXPECT_EQ(read.rollback_context->snapshot_bytes, 123456789012ull);
  EXPECT_FALSE(read.rollback_context->downtime_s.has_value());
  EXPECT_EQ(read.rollback_context->catalog_databases[1].error, std::optional<std::string>("lock timeout"));
  EXPECT_FALSE(read.rollback_context->catalog_databases[0].error.has_value());
}

TEST_F(JournalTest, the_file_keeps_the_key_names_of_the_untyped_journal_and_says_format_1) {
  Journal journal(root_);
  journal.Update(7, [](JournalDoc& doc) { doc = FullDocument(); });
  json file = json::parse(ReadFile(Path(7)));
  EXPECT_EQ(file["format"], 1);
  EXPECT_EQ(file["upgrade_id"], 7);
  EXPECT_EQ(file["apply"], "partially_committed");
  EXPECT_EQ(file["apply_started_at"], "2026-12-01T21:04:02.123Z");
  EXPECT_EQ(file["apply_partially_committed_at"], "2026-12-01T21:04:05.000Z");
  EXPECT_EQ(file["apply_databases"]["app"], "committed");
  EXPECT_EQ(file["apply_backend_pid"], 4242);
  EXPECT_EQ(file["rollback"], "in_progress");
  EXPECT_EQ(file["rollback_step"], "moved_aside");
  EXPECT_EQ(file["rollback_target"]["state"], "parked");
  EXPECT_EQ(file["rollback_target"]["synced"]["files"], 10);
  EXPECT_EQ(file["rollback_context"]["restore_point"]["timeline"], 1);
  EXPECT_EQ(file["rollback_context"]["window"]["wal_bytes_discarded"], 8192);
  EXPECT_EQ(file["rollback_context"]["catalog_databases"][0]["error"], nullptr);
  EXPECT_EQ(file["rollback_putting_back"], "recovery failed");
  EXPECT_EQ(file["clones"][0]["port"], 5433);
}

TEST_F(JournalTest, a_document_without_a_format_reads_as_format_1) {
  AtomicWriteFile(Path(424243), R"({"upgrade_id": 424243, "apply": "committed", "rollback": "rolled_back",
      "rollback_step": "done", "snapshot_id": "snap-424243"})");
  Journal journal(root_);
  JournalDoc doc = journal.Load(424243);
  EXPECT_EQ(doc.apply, ApplyState::kCommitted);
  EXPECT_EQ(doc.rollback, RollbackState::kRolledBack);
  EXPECT_EQ(doc.rollback_step, "done");
  EXPECT_EQ(doc.snapshot_id, "snap-424243");
  EXPECT_FALSE(doc.rollback_context.has_value());
  // Rewritten, it says format 1 and keeps what it said.
  journal.Update(424243, [](JournalDoc&) {});
  json file = json::parse(ReadFile(Path(424243)));
  EXPECT_EQ(file["format"], 1);
  EXPECT_EQ(file["apply"], "committed");
}

TEST_F(JournalTest, no_document_is_the_default_one) {
  Journal journal(root_);
  EXPECT_FALSE(journal.Find(3).has_value());
  JournalDoc doc = journal.Load(3);
  EXPECT_EQ(doc.upgrade_id, 3);
  EXPECT_EQ(doc.apply, ApplyState::kNone);
  EXPECT_EQ(doc.rollback, RollbackState::kNone);
}

// The refusal names the file and what is wrong, and the file is not rewritten.
void ExpectRefused(Journal& journal, const std::string& path, int64_t id, const std::string& says) {
  std::string before = ReadFile(path);
  try {
    journal.Load(id);
    ADD_FAILURE() << "read " << before;
  } catch (const JournalError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
  EXPECT_THROW(journal.Update(id, [](JournalDoc& doc) { doc.snapshot_id = "snap-1"; }), JournalError);
  EXPECT_EQ(ReadFile(path), before);
}

TEST_F(JournalTest, a_document_of_a_newer_format_is_refused_naming_the_file_and_the_version) {
  AtomicWriteFile(Path(5), R"({"format": 2, "upgrade_id": 5, "apply": "committed"})");
  Journal journal(root_);
  ExpectRefused(journal, Path(5), 5, "format 2");
}

TEST_F(JournalTest, a_format_that_is_not_a_number_is_refused) {
  AtomicWriteFile(Path(5), R"({"format": "1", "upgrade_id": 5})");
  Journal journal(root_);
  ExpectRefused(journal, Path(5), 5, "format");
}

TEST_F(JournalTest, a_misspelled_apply_state_is_refused_not_read_as_none) {
  AtomicWriteFile(Path(6), R"({"upgrade_id": 6, "apply": "comitted"})");
  Journal journal(root_);
  ExpectRefused(journal, Path(6), 6, "\"apply\": apply state \"comitted\" is not one of");
}

TEST_F(JournalTest, unknown_rollback_and_target_states_are_refused) {
  AtomicWriteFile(Path(8), R"({"upgrade_id": 8, "rollback": "half_done"})");
  AtomicWriteFile(Path(9), R"({"upgrade_id": 9, "rollback_target": {"dir": "/x", "state": "warm"}})");
  AtomicWriteFile(Path(10), R"({"upgrade_id": 10, "apply_databases": {"app": "maybe"}})");
  Journal journal(root_);
  ExpectRefused(journal, Path(8), 8, "rollback state \"half_done\"");
  ExpectRefused(journal, Path(9), 9, "rollback target state \"warm\"");
  ExpectRefused(journal, Path(10), 10, "database apply state \"maybe\"");
}

TEST_F(JournalTest, a_field_of_the_wrong_type_is_refused_naming_it) {
  AtomicWriteFile(Path(11),
                  R"({"upgrade_id": 11, "rollback_context": {"restore_point": {"timeline": "one"}}})");
  AtomicWriteFile(Path(12), "not json");
  Journal journal(root_);
  ExpectRefused(journal, Path(11), 11,
                "\"rollback_context\": [json.exception.type_error.302] type must be number");
  ExpectRefused(journal, Path(12), 12, "cannot be read");
}

TEST(JournalEnums, the_journal_words_are_those_of_the_untyped_journal) {
  EXPECT_EQ(ToString(ApplyState::kNone), "none");
  EXPECT_EQ(ToString(ApplyState::kStarted), "started");
  EXPECT_EQ(ToString(ApplyState::kCommitted), "committed");
  EXPECT_EQ(ToString(ApplyState::kPartiallyCommitted), "partially_committed");
  EXPECT_EQ(ToString(ApplyState::kNotCommitted), "not_committed");
  EXPECT_EQ(ToString(RollbackState::kInProgress), "in_progress");
  EXPECT_EQ(ToString(RollbackState::kRolledBack), "rolled_back");
  EXPECT_EQ(ToString(RollbackState::kRollbackFailed), "rollback_failed");
  EXPECT_EQ(ParseRollbackState("none"), RollbackState::kNone);
  EXPECT_EQ(ParseApplyState("not_committed"), ApplyState::kNotCommitted);
  EXPECT_THROW(ParseApplyState(""), JournalError);
}

}  // namespace
}  // namespace safe_upgrade
