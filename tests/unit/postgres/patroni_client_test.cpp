// Unit tests of the Patroni REST client (agent/postgres/patroni.cpp) without Patroni: which base
// URLs it accepts, how it reads the JSON Patroni 3.0.2 sends (captured from a real cluster), and
// the errors it raises against a closed port, a server that never answers and one that refuses.
// tests/integration/patroni_test.cpp runs it against real Patroni.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "postgres/cluster.h"
#include "postgres/patroni.h"

namespace safe_upgrade {
namespace {

using std::chrono::milliseconds;

void ExpectRejected(const std::string& url, const std::string& why_contains) {
  try {
    ParsePatroniBaseUrl(url);
    ADD_FAILURE() << "accepted \"" << url << "\"";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(why_contains), std::string::npos)
        << "\"" << url << "\": " << e.what() << " (expected it to mention \"" << why_contains << "\")";
  }
}

TEST(PatroniUrl, scheme_host_and_port_are_accepted) {
  auto e = ParsePatroniBaseUrl("http://127.0.0.1:8008");
  EXPECT_EQ(e.scheme, "http");
  EXPECT_EQ(e.host, "127.0.0.1");
  EXPECT_EQ(e.port, 8008);
  EXPECT_EQ(e.BaseUrl(), "http://127.0.0.1:8008");
  EXPECT_EQ(ParsePatroniBaseUrl("https://pg-node-1.example.com:8443").BaseUrl(),
            "https://pg-node-1.example.com:8443");
  EXPECT_EQ(ParsePatroniBaseUrl("http://[::1]:8008").BaseUrl(), "http://[::1]:8008");
  EXPECT_EQ(ParsePatroniBaseUrl("HTTP://LocalHost:8008").BaseUrl(), "http://localhost:8008");
}

TEST(PatroniUrl, a_lone_trailing_slash_is_dropped) {
  EXPECT_EQ(ParsePatroniBaseUrl("http://127.0.0.1:8008/").BaseUrl(), "http://127.0.0.1:8008");
  EXPECT_EQ(PatroniClient("http://127.0.0.1:8008/").base_url(), "http://127.0.0.1:8008");
}

TEST(PatroniUrl, other_schemes_are_refused) {
  ExpectRejected("ftp://127.0.0.1:8008", "not http or https");
  ExpectRejected("file:///etc/passwd", "not http or https");
  ExpectRejected("gopher://127.0.0.1:8008", "not http or https");
  ExpectRejected("127.0.0.1:8008", "does not start with http");
  ExpectRejected("//127.0.0.1:8008", "does not start with http");
  ExpectRejected("", "does not start with http");
}

TEST(PatroniUrl, paths_queries_fragments_and_users_are_refused) {
  ExpectRejected("http://127.0.0.1:8008/patroni", "has a path");
  ExpectRejected("http://127.0.0.1:8008//", "has a path");
  ExpectRejected("http://127.0.0.1:8008/../config", "has a path");
  ExpectRejected("http://127.0.0.1:8008?pause=true", "'?'");
  ExpectRejected("http://127.0.0.1:8008#x", "'#'");
  ExpectRejected("http://admin:secret@127.0.0.1:8008", "'@'");
  ExpectRejected("http://127.0.0.1%2F:8008", "'%'");
}

TEST(PatroniUrl, hosts_and_ports_must_be_well_formed) {
  ExpectRejected("http://127.0.0.1", "no port");
  ExpectRejected("http://127.0.0.1:", "no port");
  ExpectRejected("http://:8008", "no host");
  ExpectRejected("http://127.0.0.1:0", "from 1 to 65535");
  ExpectRejected("http://127.0.0.1:65536", "from 1 to 65535");
  ExpectRejected("http://127.0.0.1:80a", "not a number");
  ExpectRejected("http://127.0.0.1:-1", "not a number");
  ExpectRejected("http://127.0.0.1:8008:9", "not a number");
  ExpectRejected("http://host_name:8008", "only letters, digits");
  ExpectRejected("http://..:8008", "not a host name");
  ExpectRejected("http://[::1:8008", "no closing ']'");
  ExpectRejected("http://[zz::1]:8008", "not an IPv6 address");
  ExpectRejected("http://[::1]x:8008", "text after its IPv6 host");
}

TEST(PatroniUrl, header_and_command_injection_is_refused) {
  ExpectRejected("http://127.0.0.1:8008\r\nX-Injected: 1", "byte 0x0d at offset 21");
  ExpectRejected("http://127.0.0.1:8008\n", "control characters");
  ExpectRejected(std::string("http://127.0.0.1:8008\0/x", 24), "byte 0x00 at offset 21");
  ExpectRejected("http://127.0.0.1:8008 -o /tmp/x", "spaces");
  ExpectRejected("http://127.0.0.1:8008;rm -rf /", "spaces");
  ExpectRejected("http://127.0.0.1:$(id)", "not a number");
  ExpectRejected("http://127.0.0.1\\@evil:8008", "'@'");
  ExpectRejected("http://caf\xc3\xa9.example:8008", "byte 0xc3 at offset 10");
}

TEST(PatroniUrl, client_refuses_a_bad_url_and_a_non_positive_timeout) {
  EXPECT_THROW(PatroniClient("http://127.0.0.1:8008/cluster"), std::invalid_argument);
  EXPECT_THROW(PatroniClient("http://127.0.0.1:8008", milliseconds(0)), std::invalid_argument);
}

TEST(PatroniParse, roles_are_normalised_to_primary_and_replica) {
  EXPECT_EQ(NormalisePatroniRole("master"), "primary");
  EXPECT_EQ(NormalisePatroniRole("primary"), "primary");
  EXPECT_EQ(NormalisePatroniRole("leader"), "primary");
  EXPECT_EQ(NormalisePatroniRole("replica"), "replica");
  EXPECT_EQ(NormalisePatroniRole("sync_standby"), "replica");
  EXPECT_EQ(NormalisePatroniRole("standby_leader"), "standby_leader");
}

// GET /patroni of a Patroni 3.0.2 leader while paused: no member name, "master".
TEST(PatroniParse, member_status_of_patroni_3_0_2) {
  auto m =
      ParsePatroniMember(R"({"state": "running", "postmaster_start_time": "2026-12-02 14:24:16.514252+00:00",
    "role": "master", "server_version": 150020, "xlog": {"location": 50331744}, "timeline": 1,
    "replication": [{"usename": "replicator", "application_name": "node2", "client_addr": "127.0.0.1",
    "state": "streaming", "sync_state": "async", "sync_priority": 0}], "pause": true,
    "dcs_last_seen": 1796221489, "database_system_identifier": "7714712410353630174",
    "patroni": {"version": "3.0.2", "scope": "exp"}})");
  EXPECT_EQ(m.name, "");
  EXPECT_EQ(m.role, "primary");
  EXPECT_EQ(m.state, "running");
  EXPECT_EQ(m.timeline, 1);
  EXPECT_TRUE(m.pause);
  EXPECT_EQ(m.server_version, 150020);
  // Newer Patroni names the member; without "pause" the cluster is not paused.
  auto newer = ParsePatroniMember(
      R"({"state": "stopped", "role": "replica", "patroni": {"version": "3.3.0", "scope": "s", "name": "n2"}})");
  EXPECT_EQ(newer.name, "n2");
  EXPECT_EQ(newer.role, "replica");
  EXPECT_EQ(newer.timeline, 0);
  EXPECT_FALSE(newer.pause);
}

TEST(PatroniParse, cluster_view_with_an_unknown_lag_and_no_leader) {
  auto v = ParsePatroniCluster(R"({"members": [
    {"name": "node1", "role": "replica", "state": "stopped", "api_url": "http://127.0.0.1:8001/patroni",
     "host": "127.0.0.1", "port": 54401, "lag": "unknown"},
    {"name": "node2", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:8002/patroni",
     "host": "127.0.0.1", "port": 54402, "timeline": 1, "lag": 120}], "pause": true})");
  EXPECT_TRUE(v.pause);
  ASSERT_EQ(v.members.size(), 2u);
  EXPECT_EQ(v.Leader(), nullptr);
  EXPECT_EQ(v.members[0].state, "stopped");
  EXPECT_FALSE(v.members[0].lag_bytes.has_value());
  EXPECT_EQ(v.members[1].port, 54402);
  EXPECT_EQ(v.members[1].timeline, 1);
  EXPECT_EQ(v.members[1].lag_bytes, 120);
  EXPECT_EQ(v.members[1].api_url, "http://127.0.0.1:8002/patroni");
  auto led = ParsePatroniCluster(R"({"members": [{"name": "a", "role": "leader", "state": "running"}]})");
  ASSERT_NE(led.Leader(), nullptr);
  EXPECT_EQ(led.Leader()->name, "a");
  EXPECT_FALSE(led.pause);
}

TEST(PatroniParse, answers_of_another_shape_are_errors) {
  EXPECT_THROW(ParsePatroniMember("<html>502 Bad Gateway</html>"), PatroniError);
  EXPECT_THROW(ParsePatroniMember("[]"), PatroniError);
  EXPECT_THROW(ParsePatroniMember(R"({"patroni": {}})"), PatroniError);
  EXPECT_THROW(ParsePatroniCluster(R"({"members": "none"})"), PatroniError);
  EXPECT_THROW(ParsePatroniCluster(""), PatroniError);
}

// A listening socket on loopback that a test serves by hand (or never serves).
class LoopbackListener {
 public:
  LoopbackListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd_, 4) != 0)
      throw std::runtime_error("cannot listen on loopback");
    socklen_t len = sizeof addr;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~LoopbackListener() { close(fd_); }
  int port() const { return port_; }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Accepts one connection, reads the request (headers and a Content-Length body) and answers.
  std::string AnswerOnce(const std::string& response) {
    int client = accept(fd_, nullptr, nullptr);
    if (client < 0) return "";
    std::string request;
    char buf[4096];
    while (true) {
      auto end = request.find("\r\n\r\n");
      if (end != std::string::npos) {
        auto cl = request.find("Content-Length: ");
        size_t body = cl == std::string::npos ? 0 : std::stoul(request.substr(cl + 16));
        if (request.size() >= end + 4 + body) break;
      }
      ssize_t n = read(client, buf, sizeof buf);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    (void)!write(client, response.data(), response.size());
    close(client);
    return request;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(PatroniClient, closed_port_is_an_error_naming_the_url) {
  int port = FindFreePort();  // free, so nothing listens there
  PatroniClient client("http://127.0.0.1:" + std::to_string(port), milliseconds(2000));
  try {
    client.Member();
    FAIL() << "no error from a closed port";
  } catch (const PatroniError& e) {
    std::string url = "http://127.0.0.1:" + std::to_string(port) + "/patroni";
    EXPECT_EQ(e.url(), url);
    EXPECT_EQ(e.status(), 0);
    EXPECT_NE(std::string(e.what()).find("GET " + url + " failed"), std::string::npos) << e.what();
  }
  EXPECT_THROW(client.Pause(), PatroniError);
}

TEST(PatroniClient, server_that_never_answers_times_out) {
  LoopbackListener silent;  // the kernel accepts the connection; nobody reads or writes
  PatroniClient client(silent.Url(), milliseconds(300));
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(client.Cluster(), PatroniError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST(PatroniClient, refused_pause_names_status_and_body) {
  LoopbackListener server;
  std::string request;
  std::thread serve([&] {
    request = server.AnswerOnce(
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: "
        "close\r\n\r\n"
        "no auth header present");
  });
  PatroniClient client(server.Url(), milliseconds(3000));
  try {
    client.Pause();
    ADD_FAILURE() << "a 401 was taken for success";
  } catch (const PatroniError& e) {
    EXPECT_EQ(e.status(), 401);
    EXPECT_EQ(e.body(), "no auth header present");
    EXPECT_EQ(e.url(), server.Url() + "/config");
    std::string what = e.what();
    EXPECT_NE(what.find("PATCH " + server.Url() + "/config"), std::string::npos) << what;
    EXPECT_NE(what.find("HTTP 401: no auth header present"), std::string::npos) << what;
  }
  serve.join();
  EXPECT_EQ(request.rfind("PATCH /config HTTP/1.1\r\n", 0), 0u) << request;
  EXPECT_NE(request.find("Content-Type: application/json"), std::string::npos) << request;
  EXPECT_NE(request.find("\r\n\r\n{\"pause\":true}"), std::string::npos) << request;
}

}  // namespace
}  // namespace safe_upgrade
