// Unit tests of the standby-side helpers that need no server (agent/postgres/standby_node.cpp); the
// rewind and the re-clone run against real standbys in tests/integration/standby_test.cpp.
#include "postgres/standby_node.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

TEST(StandbyNode, the_primary_is_queried_where_primary_conninfo_points_as_the_agents_user) {
  // The replication role and its password give way to the agent's user; host, port, TLS stay (in
  // libpq's order of keywords).
  EXPECT_EQ(PrimaryQueryConnInfo("user=replicator password=s3cret host=10.0.0.1 port=5433 sslmode=require "
                                 "application_name=node2",
                                 "postgres", "postgres"),
            "host='10.0.0.1' port='5433' application_name='node2' sslmode='require' user='postgres' dbname='postgres'");
  // No user of its own: primary_conninfo's, with its password.
  EXPECT_EQ(PrimaryQueryConnInfo("host=/run port=5432 user=postgres password=pw", "", "my db"),
            "password='pw' host='/run' port='5432' user='postgres' dbname='my db'");
  EXPECT_EQ(PrimaryQueryConnInfo("postgresql://rep@h:5432/x?sslmode=disable", "postgres", "postgres"),
            "host='h' port='5432' sslmode='disable' user='postgres' dbname='postgres'");
  EXPECT_THROW(PrimaryQueryConnInfo("host='unterminated", "postgres", "postgres"), std::runtime_error);
}

}  // namespace
}  // namespace safe_upgrade
