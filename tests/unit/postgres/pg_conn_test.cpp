// Array literals for bind parameters: every element quoted, quotes and backslashes escaped.
#include "postgres/pg_conn.h"

#include <gtest/gtest.h>

namespace safe_upgrade {
namespace {

TEST(ArrayLiteral, quotes_every_element_and_escapes_quotes_and_backslashes) {
  EXPECT_EQ(ArrayLiteral({}), "{}");
  EXPECT_EQ(ArrayLiteral({"postgis", "postgis_raster"}), R"({"postgis","postgis_raster"})");
  EXPECT_EQ(ArrayLiteral({"a,b", "c\"d", "e\\f", "{x}", ""}), R"({"a,b","c\"d","e\\f","{x}",""})");
}

}  // namespace
}  // namespace safe_upgrade
