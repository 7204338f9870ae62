// How two sets of dependency rows differ (drift), without a server.
#include "postgres/dependency_rows.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

using nlohmann::json;

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
