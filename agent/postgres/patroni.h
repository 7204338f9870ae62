// A client for the REST API of Patroni (https://patroni.readthedocs.io/en/latest/rest_api.html), for
// clusters that Patroni manages: a rollback pauses Patroni (maintenance mode) first, so that no
// failover, restart or demotion fights it, and resumes it afterwards. The client reads the member
// it talks to (GET /patroni) and the cluster (GET /cluster), and switches pause on and off
// (PATCH /config). It only ever requests fixed paths below a base URL that the operator configured
// and that it validated; nothing it reads from the network becomes a URL.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace safe_upgrade {

// A request that failed: the server could not be reached, answered with a status other than 200,
// or sent something that is not the JSON Patroni sends. status() is 0 when there was no answer.
class PatroniError : public std::runtime_error {
 public:
  PatroniError(const std::string& what, std::string url, long status = 0, std::string body = "");
  const std::string& url() const { return url_; }
  long status() const { return status_; }
  const std::string& body() const { return body_; }

 private:
  std::string url_;
  long status_;
  std::string body_;
};

// The member the client talks to, from GET /patroni.
struct PatroniMember {
  // Patroni 3.0.2 does not name the member in GET /patroni; it is then the /cluster member whose
  // api_url is this client's, and "" when none is.
  std::string name;
  std::string role;   // NormalisePatroniRole of Patroni's word
  std::string state;  // Patroni's word: "running", "stopped", "starting", "crashed", "unknown" ...
  int timeline = 0;   // 0 when PostgreSQL is not running
  bool pause = false;
  int server_version = 0;  // 150004 for 15.4; 0 when Patroni does not know it
};

// One member of the cluster, from GET /cluster.
struct PatroniClusterMember {
  std::string name;
  std::string role;  // NormalisePatroniRole of Patroni's word
  std::string state;
  std::string host;
  int port = 0;
  int timeline = 0;
  // The replica's replay lag behind the leader in bytes; nullopt for the leader and when Patroni
  // says "unknown" (the member's PostgreSQL is not running).
  std::optional<int64_t> lag_bytes;
  std::string api_url;  // as the member advertises it; shown to people, never requested
};

struct PatroniClusterView {
  std::vector<PatroniClusterMember> members;
  bool pause = false;
  // The member holding the leader key, or nullptr when none does (e.g. while paused with the
  // leader's PostgreSQL stopped: Patroni then releases the key).
  const PatroniClusterMember* Leader() const;
};

// "primary" for the leader's words ("master", "primary", "leader"), "replica" for a replica's
// ("replica", "sync_standby", "quorum_standby"); any other word (e.g. "standby_leader", which
// follows a cluster outside Patroni's) unchanged.
std::string NormalisePatroniRole(const std::string& role);

// The parts of a validated base URL: "http" or "https", a host (a DNS name, an IPv4 address or a
// bracketed IPv6 address) and a port, and nothing else (no user, path, query or fragment; a lone
// trailing "/" is accepted). Throws std::invalid_argument saying what is wrong.
struct PatroniEndpoint {
  std::string scheme;
  std::string host;
  int port = 0;
  std::string BaseUrl() const;  // "http://127.0.0.1:8008"
};
PatroniEndpoint ParsePatroniBaseUrl(const std::string& base_url);

// The JSON of GET /patroni and GET /cluster as the client reads it; throw PatroniError (with
// an empty URL) on JSON of another shape.
PatroniMember ParsePatroniMember(const std::string& json);
PatroniClusterView ParsePatroniCluster(const std::string& json);

class PatroniClient {
 public:
  // base_url: Patroni's REST API, e.g. "http://127.0.0.1:8008" (restapi.listen). timeout bounds
  // each request, and Pause()/Resume()'s wait. ca_file: the CA certificate that signs an https
  // server's certificate ("": the system's CAs). Throws std::invalid_argument on a bad URL.
  explicit PatroniClient(std::string base_url, std::chrono::milliseconds timeout = std::chrono::seconds(5),
                         std::string ca_file = "");

  const std::string& base_url() const { return base_url_; }

  PatroniMember Member() const;
  PatroniClusterView Cluster() const;

  // Turn maintenance mode on / off: PATCH /config {"pause": true|false}, then wait until this
  // member's GET /patroni reflects it (Patroni applies the change on its next loop, up to
  // loop_wait later). Throws PatroniError when the request fails or the timeout passes first.
  void Pause();
  void Resume();

 private:
  struct Response {
    long status = 0;
    std::string body;
  };
  // One request to base_url_ + path (a fixed path of ours), bounded by timeout.
  Response Request(const std::string& method, const std::string& path, const std::string& body,
                   std::chrono::milliseconds timeout) const;
  std::string GetJson(const std::string& path, std::chrono::milliseconds timeout) const;
  void SetPause(bool pause);

  std::string base_url_;
  std::chrono::milliseconds timeout_;
  std::string ca_file_;
};

}  // namespace safe_upgrade
