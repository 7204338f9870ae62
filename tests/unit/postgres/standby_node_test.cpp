// Unit tests of the standby-side helpers that need no server (agent/postgres/standby_node.cpp); the
// rewind and the re-clone run against real standbys in tests/integration/standby_test.cpp.
#include "postgres/standby_node.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

TEST(StandbyNode, the_primary_is_queried_through_primary_conninfo_with_the_control_database) {
  EXPECT_EQ(PrimaryQueryConnInfo("host=/run port=5432 user=postgres application_name=standby1", "postgres"),
            "host=/run port=5432 user=postgres application_name=standby1 dbname='postgres'");
  EXPECT_EQ(PrimaryQueryConnInfo("host=h", "my db"), "host=h dbname='my db'");
  EXPECT_EQ(PrimaryQueryConnInfo("postgresql://h:5432/app", "postgres"), "postgresql://h:5432/app");
}

}  // namespace
}  // namespace safe_upgrade
