// Server-free parts of the dry run and apply: which hops an upgrade runs.
#include "postgres/upgrade_runner.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

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

}  // namespace
}  // namespace safe_upgrade
