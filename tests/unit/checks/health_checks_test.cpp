// Server-free parts of the dry run and apply: which hops an upgrade runs, and how two sets of
// dependency rows differ.
#include "checks/health_checks.h"

#include <gtest/gtest.h>

#include "postgres/upgrade_runner.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

struct PathTo {
  std::vector<std::string> path;
  std::string to;
};
PathTo Upgrade(std::vector<std::string> path, std::string to) { return {std::move(path), std::move(to)}; }
std::vector<Hop> PlanHops(const PathTo& p, const std::string& current) {
  return safe_upgrade::PlanHops(p.path, p.to, current);
}

std::vector<std::string> Names(const std::vector<Hop>& hops) {
  std::vector<std::string> out;
  for (const auto& h : hops) out.push_back(h.Name());
  return out;
}

TEST(PlanHops, update_path_starting_at_the_installed_version_gives_one_hop_per_step) {
  EXPECT_EQ(Names(PlanHops(Upgrade({"1.4", "1.5", "1.6", "1.7", "1.8"}, "1.8"), "1.4")),
            (std::vector<std::string>{"1.4 -> 1.5", "1.5 -> 1.6", "1.6 -> 1.7", "1.7 -> 1.8"}));
}

TEST(PlanHops, update_path_without_the_installed_version_starts_from_it) {
  EXPECT_EQ(Names(PlanHops(Upgrade({"1.1", "1.2"}, "1.2"), "1.0")),
            (std::vector<std::string>{"1.0 -> 1.1", "1.1 -> 1.2"}));
}

TEST(PlanHops, empty_update_path_is_one_hop_to_the_target) {
  EXPECT_EQ(Names(PlanHops(Upgrade({}, "3.3.2next"), "3.3.2")),
            (std::vector<std::string>{"3.3.2 -> 3.3.2next"}));
}

TEST(PlanHops, update_path_not_ending_at_the_target_gets_a_last_hop_to_it) {
  EXPECT_EQ(Names(PlanHops(Upgrade({"1.0", "1.1"}, "1.2"), "1.0")),
            (std::vector<std::string>{"1.0 -> 1.1", "1.1 -> 1.2"}));
}

json Row(const std::string& type, const std::string& identity, const std::string& on) {
  return {{"object_type", type},           {"object_schema", "public"}, {"object_identity", identity},
          {"depends_on_type", "function"}, {"depends_on_identity", on}, {"deptype", "n"}};
}

TEST(DependencyDrift, identical_rows_have_no_drift) {
  json rows = json::array({Row("view", "public.v", "public.f()")});
  json d = DependencyDrift(rows, rows);
  EXPECT_TRUE(d["added"].empty());
  EXPECT_TRUE(d["removed"].empty());
  EXPECT_TRUE(d["changed"].empty());
}

TEST(DependencyDrift, dropped_view_is_removed_and_new_dependency_is_added) {
  json before = json::array({Row("view", "public.v", "public.f()"), Row("view", "public.w", "public.g()")});
  json after = json::array({Row("view", "public.w", "public.g()"), Row("view", "public.x", "public.g()")});
  json d = DependencyDrift(before, after);
  ASSERT_EQ(d["removed"].size(), 1u);
  EXPECT_EQ(d["removed"][0]["object_identity"], "public.v");
  ASSERT_EQ(d["added"].size(), 1u);
  EXPECT_EQ(d["added"][0]["object_identity"], "public.x");
  EXPECT_TRUE(d["changed"].empty());
}

TEST(DependencyDrift, object_bound_to_a_new_signature_is_changed) {
  json before = json::array({Row("view", "public.v", "public.f(integer)")});
  json after = json::array({Row("view", "public.v", "public.f(bigint)")});
  json d = DependencyDrift(before, after);
  ASSERT_EQ(d["changed"].size(), 1u);
  EXPECT_EQ(d["changed"][0]["object_identity"], "public.v");
  EXPECT_EQ(d["changed"][0]["before"][0], "function public.f(integer)");
  EXPECT_EQ(d["changed"][0]["after"][0], "function public.f(bigint)");
}

}  // namespace
}  // namespace safe_upgrade
