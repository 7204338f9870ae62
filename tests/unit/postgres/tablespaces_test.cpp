// Unit tests of the layout outside a data directory (tablespaces, a linked pg_wal) on plain
// directories: reading it, refusing what a rollback could not set aside, the pg_basebackup
// mappings, and the rollback's moves (aside, restore, put back), each safe to run again.
#include "postgres/tablespaces.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "base/fs_util.h"
#include "temp_dir.h"

namespace safe_upgrade {
namespace {

namespace fs = std::filesystem;

constexpr const char* kVersion = "PG_15_202209061";

// A fake cluster: <root>/data with pg_tblspc/16384 -> <root>/disk/ts and pg_wal -> <root>/disk/wal,
// and a snapshot <root>/snap with its own copy of the tablespace.
class LayoutTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    data_ = JoinPath(root_, "data");
    ts_ = JoinPath(root_, "disk/ts");
    wal_ = JoinPath(root_, "disk/wal");
    EnsureDir(JoinPath(data_, "pg_tblspc"));
    EnsureDir(JoinPath(ts_, std::string(kVersion) + "/5"));
    EnsureDir(wal_);
    AtomicWriteFile(JoinPath(ts_, std::string(kVersion) + "/5/16385"), "production rows");
    AtomicWriteFile(JoinPath(wal_, "000000010000000000000009"), "production wal");
    fs::create_directory_symlink(ts_, JoinPath(data_, "pg_tblspc/16384"));
    fs::create_directory_symlink(wal_, JoinPath(data_, "pg_wal"));
  }
  OutsidePlan Plan() const {
    OutsidePlan plan;
    plan.production = ReadExternalLayout(data_, kVersion);
    plan.snapshot = plan.production;
    plan.snapshot.wal_dir = "";
    plan.snapshot_dir = JoinPath(root_, "snap");
    plan.suffix = "7-20261201T210402Z";
    return plan;
  }

  // A restoring copy as the cold path makes it: the snapshot's data with links to its tablespaces.
  std::string RestoringCopy() const {
    std::string snap_ts = JoinPath(root_, "snap/tablespaces/16384");
    EnsureDir(JoinPath(snap_ts, std::string(kVersion) + "/5"));
    AtomicWriteFile(JoinPath(snap_ts, std::string(kVersion) + "/5/16385"), "snapshot rows");
    std::string copy = JoinPath(root_, "data.restoring");
    EnsureDir(JoinPath(copy, "pg_tblspc"));
    EnsureDir(JoinPath(copy, "pg_wal"));
    AtomicWriteFile(JoinPath(copy, "pg_wal/000000010000000000000003"), "snapshot wal");
    fs::create_directory_symlink(snap_ts, JoinPath(copy, "pg_tblspc/16384"));
    return copy;
  }

  std::string Link(const std::string& path) const { return fs::read_symlink(path).string(); }

  std::string data_, ts_, wal_;
};

TEST_F(LayoutTest, reads_tablespace_links_and_the_wal_link_and_round_trips_through_json) {
  ExternalLayout layout = ReadExternalLayout(data_, kVersion);
  ASSERT_EQ(layout.tablespaces.size(), 1u);
  EXPECT_EQ(layout.tablespaces[0].oid, "16384");
  EXPECT_EQ(layout.tablespaces[0].location, ts_);
  EXPECT_EQ(layout.wal_dir, wal_);
  ExternalLayout back = ExternalLayout::FromJson(layout.ToJson());
  EXPECT_EQ(back.ToJson(), layout.ToJson());
  EXPECT_EQ(LayoutRefusal(layout, data_), "");
  // A snapshot from before layouts were recorded: nothing outside.
  EXPECT_TRUE(ExternalLayout::FromJson(nullptr).tablespaces.empty());
}

TEST_F(LayoutTest, refuses_a_tablespace_inside_the_data_directory_and_a_relative_wal_link) {
  ExternalLayout layout = ReadExternalLayout(data_, kVersion);
  layout.tablespaces[0].location = JoinPath(data_, "my_ts");
  EXPECT_NE(LayoutRefusal(layout, data_).find("inside the data directory"), std::string::npos);
  layout = ReadExternalLayout(data_, kVersion);
  layout.wal_dir = "../wal";
  EXPECT_NE(LayoutRefusal(layout, data_).find("relative"), std::string::npos);
}

TEST_F(LayoutTest, basebackup_mapping_sends_each_tablespace_to_its_oid_and_escapes_equals_signs) {
  ExternalLayout layout;
  layout.tablespaces = {{"16384", "/srv/a=b", 0}};
  EXPECT_EQ(TablespaceMappingArgs(layout, "/snap/tablespaces.partial"),
            std::vector<std::string>{"--tablespace-mapping=/srv/a\\=b=/snap/tablespaces.partial/16384"});
}

TEST_F(LayoutTest, room_is_refused_naming_the_filesystem_that_is_short) {
  EXPECT_EQ(RoomRefusal({{root_, 1}, {ts_, 1}}, 0), "");
  std::string short_of = RoomRefusal({{ts_, uint64_t{1} << 60}}, 0);
  EXPECT_NE(short_of.find(ts_), std::string::npos) << short_of;
}

TEST_F(LayoutTest, moving_aside_then_putting_back_restores_every_directory_and_link_and_can_run_twice) {
  OutsidePlan plan = Plan();
  std::string aside = data_ + ".failed-" + plan.suffix;
  fs::rename(data_, aside);
  plan.MoveAside(aside);
  plan.MoveAside(aside);  // resumed after a crash: nothing left to move
  std::string ts_slot = JoinPath(ts_, std::string(kVersion) + ".failed-" + plan.suffix);
  std::string wal_slot = wal_ + ".failed-" + plan.suffix;
  EXPECT_FALSE(PathExists(JoinPath(ts_, kVersion)));
  EXPECT_FALSE(PathExists(wal_));
  // The moved-aside data directory is whole on its own: its links follow its files.
  EXPECT_EQ(Link(JoinPath(aside, "pg_tblspc/16384")), ts_slot);
  EXPECT_EQ(Link(JoinPath(aside, "pg_wal")), wal_slot);
  EXPECT_EQ(ReadFile(JoinPath(aside, "pg_tblspc/16384/" + std::string(kVersion) + "/5/16385")),
            "production rows");
  EXPECT_EQ(plan.SetAside().size(), 2u);

  EXPECT_TRUE(plan.PutOriginalBack(aside, JoinPath(root_, "none")).empty());
  plan.PutOriginalBack(aside, JoinPath(root_, "none"));
  EXPECT_EQ(ReadFile(JoinPath(ts_, std::string(kVersion) + "/5/16385")), "production rows");
  EXPECT_EQ(ReadFile(JoinPath(wal_, "000000010000000000000009")), "production wal");
  EXPECT_EQ(Link(JoinPath(aside, "pg_tblspc/16384")), ts_);
  EXPECT_EQ(Link(JoinPath(aside, "pg_wal")), wal_);
  EXPECT_FALSE(PathExists(ts_slot));
  EXPECT_FALSE(PathExists(wal_slot));
}

TEST_F(LayoutTest, a_restored_copy_lands_at_production_s_places_with_its_links_pointing_there) {
  OutsidePlan plan = Plan();
  std::string aside = data_ + ".failed-" + plan.suffix;
  fs::rename(data_, aside);
  plan.MoveAside(aside);
  std::string copy = RestoringCopy();
  plan.PrepareRestore(copy);
  EXPECT_EQ(Link(JoinPath(copy, "pg_tblspc/16384")),
            JoinPath(ts_, std::string(kVersion) + ".restoring-" + plan.suffix));
  plan.PutInPlace(copy);
  plan.PutInPlace(copy);  // resumed after a crash
  EXPECT_EQ(Link(JoinPath(copy, "pg_tblspc/16384")), ts_);
  EXPECT_EQ(Link(JoinPath(copy, "pg_wal")), wal_);
  EXPECT_EQ(ReadFile(JoinPath(ts_, std::string(kVersion) + "/5/16385")), "snapshot rows");
  EXPECT_EQ(ReadFile(JoinPath(wal_, "000000010000000000000003")), "snapshot wal");
  EXPECT_FALSE(PathExists(JoinPath(wal_, "000000010000000000000009")));

  // Recovery failed: the restored parts go aside as .rollback-failed, production's come back.
  std::string failed = data_ + ".rollback-failed-" + plan.suffix;
  fs::rename(copy, failed);
  auto kept = plan.PutOriginalBack(aside, failed);
  EXPECT_EQ(kept.size(), 2u);
  EXPECT_EQ(ReadFile(JoinPath(ts_, std::string(kVersion) + "/5/16385")), "production rows");
  EXPECT_EQ(ReadFile(JoinPath(wal_, "000000010000000000000009")), "production wal");
  EXPECT_EQ(ReadFile(JoinPath(failed, "pg_tblspc/16384/" + std::string(kVersion) + "/5/16385")),
            "snapshot rows");
  EXPECT_EQ(ReadFile(JoinPath(failed, "pg_wal/000000010000000000000003")), "snapshot wal");
}

TEST_F(LayoutTest, the_parked_target_s_copies_sit_next_to_production_s_and_are_discarded_unless_swapped_in) {
  ExternalLayout layout = ReadExternalLayout(data_, kVersion);
  std::string target = RestoringCopy();
  CopyOutsideForTarget(layout, target, 7);
  std::string slot = JoinPath(ts_, std::string(kVersion) + ".ready-7");
  EXPECT_EQ(Link(JoinPath(target, "pg_tblspc/16384")), slot);
  EXPECT_EQ(Link(JoinPath(target, "pg_wal")), wal_ + ".ready-7");
  EXPECT_EQ(ReadFile(JoinPath(slot, std::string(kVersion) + "/5/16385")), "snapshot rows");
  // Production's own files are untouched.
  EXPECT_EQ(ReadFile(JoinPath(ts_, std::string(kVersion) + "/5/16385")), "production rows");
  DiscardTargetOutside(layout, 7);
  EXPECT_FALSE(PathExists(slot));
  EXPECT_FALSE(PathExists(wal_ + ".ready-7"));
  EXPECT_TRUE(PathExists(wal_));
}

}  // namespace
}  // namespace safe_upgrade
