// Patroni REST client (see patroni.h): libcurl for HTTP, nlohmann-json for the answers.
#include "postgres/patroni.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace safe_upgrade {
namespace {

// Patroni's answers are a few kilobytes; anything far bigger is not Patroni.
constexpr size_t kMaxBodyBytes = 1 << 20;
// How much of a body an error message quotes.
constexpr size_t kQuotedBodyBytes = 500;
constexpr auto kPausePollInterval = std::chrono::milliseconds(100);

std::string Quoted(const std::string& body) {
  std::string text = body.size() <= kQuotedBodyBytes ? body : body.substr(0, kQuotedBodyBytes) + "...";
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string Lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

bool IsHostnameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'; }

void ValidateHostname(const std::string& host) {
  if (host.empty()) throw std::invalid_argument("the Patroni URL has no host");
  if (!std::all_of(host.begin(), host.end(), IsHostnameChar))
    throw std::invalid_argument("the Patroni URL's host \"" + host +
                                "\" may hold only letters, digits, '-' and '.'");
  if (host.front() == '.' || host.front() == '-' || host.find("..") != std::string::npos)
    throw std::invalid_argument("the Patroni URL's host \"" + host + "\" is not a host name");
}

void ValidateIpv6(const std::string& address) {
  bool ok = !address.empty() && std::all_of(address.begin(), address.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
  });
  if (!ok || address.find(':') == std::string::npos)
    throw std::invalid_argument("the Patroni URL's host \"[" + address + "]\" is not an IPv6 address");
}

int ParsePort(const std::string& text) {
  if (text.empty())
    throw std::invalid_argument("the Patroni URL has no port (Patroni listens on 8008 by default)");
  if (text.size() > 5 || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw std::invalid_argument("the Patroni URL's port \"" + text + "\" is not a number from 1 to 65535");
  int port = std::stoi(text);
  if (port < 1 || port > 65535)
    throw std::invalid_argument("the Patroni URL's port " + text + " is not from 1 to 65535");
  return port;
}

// libcurl's global state, set up once before the first handle (curl_global_init is not safe to
// race with other threads).
void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      throw std::runtime_error("curl_global_init failed");
  });
}

struct CurlDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
struct HeadersDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

struct BodySink {
  std::string body;
  bool too_big = false;
};

size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<BodySink*>(user);
  size_t n = size * count;
  if (sink->body.size() + n > kMaxBodyBytes) {
    sink->too_big = true;
    return 0;  // makes curl fail the transfer with CURLE_WRITE_ERROR
  }
  sink->body.append(data, n);
  return n;
}

std::string StringField(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

int64_t IntField(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

bool PauseField(const nlohmann::json& object) {
  auto it = object.find("pause");
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

nlohmann::json ParseObject(const std::string& json, const char* what) {
  auto parsed = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object())
    throw PatroniError(std::string("Patroni's answer to ") + what + " is not a JSON object: " + Quoted(json),
                       "");
  return parsed;
}

std::chrono::milliseconds Left(std::chrono::steady_clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
}

}  // namespace

PatroniError::PatroniError(const std::string& what, std::string url, long status, std::string body)
    : std::runtime_error(what), url_(std::move(url)), status_(status), body_(std::move(body)) {}

const PatroniClusterMember* PatroniClusterView::Leader() const {
  for (const auto& member : members)
    if (member.role == "primary") return &member;
  return nullptr;
}

std::string NormalisePatroniRole(const std::string& role) {
  if (role == "master" || role == "primary" || role == "leader") return "primary";
  if (role == "replica" || role == "sync_standby" || role == "quorum_standby") return "replica";
  return role;
}

std::string PatroniEndpoint::BaseUrl() const { return scheme + "://" + host + ":" + std::to_string(port); }

PatroniEndpoint ParsePatroniBaseUrl(const std::string& base_url) {
  // Whatever curl would read differently from us (spaces, control characters, escapes, a user,
  // a query) is refused before looking any further, and not quoted back: it may hold what a log
  // should not.
  for (size_t i = 0; i < base_url.size(); ++i) {
    auto u = static_cast<unsigned char>(base_url[i]);
    if (u <= 0x20 || u >= 0x7f || u == '%' || u == '@' || u == '?' || u == '#' || u == '\\') {
      char found[64];
      snprintf(found, sizeof found, "byte 0x%02x at offset %zu", u, i);
      throw std::invalid_argument(
          std::string("the Patroni URL may not hold spaces, control characters, non-ASCII, "
                      "'%', '@', '?', '#' or '\\' (found ") +
          found + ")");
    }
  }
  PatroniEndpoint endpoint;
  auto scheme_end = base_url.find("://");
  if (scheme_end == std::string::npos)
    throw std::invalid_argument("the Patroni URL \"" + base_url +
                                "\" does not start with http:// or https://");
  endpoint.scheme = Lower(base_url.substr(0, scheme_end));
  if (endpoint.scheme != "http" && endpoint.scheme != "https")
    throw std::invalid_argument("the Patroni URL's scheme \"" + endpoint.scheme + "\" is not http or https");
  std::string authority = base_url.substr(scheme_end + 3);
  if (!authority.empty() && authority.back() == '/') authority.pop_back();
  if (authority.find('/') != std::string::npos)
    throw std::invalid_argument(
        "the Patroni URL \"" + base_url +
        "\" has a path; give only scheme, host and port (the client adds /patroni, /cluster, /config)");
  std::string port_text;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string::npos)
      throw std::invalid_argument("the Patroni URL's IPv6 host has no closing ']'");
    ValidateIpv6(authority.substr(1, close - 1));
    endpoint.host = authority.substr(0, close + 1);
    if (close + 1 < authority.size() && authority[close + 1] != ':')
      throw std::invalid_argument("the Patroni URL has text after its IPv6 host");
    port_text = close + 2 <= authority.size() ? authority.substr(close + 2) : "";
  } else {
    auto colon = authority.find(':');
    endpoint.host = Lower(authority.substr(0, colon));
    ValidateHostname(endpoint.host);
    port_text = colon == std::string::npos ? "" : authority.substr(colon + 1);
  }
  endpoint.port = ParsePort(port_text);
  return endpoint;
}

PatroniMember ParsePatroniMember(const std::string& json) {
  auto object = ParseObject(json, "GET /patroni");
  PatroniMember member;
  if (auto patroni = object.find("patroni"); patroni != object.end() && patroni->is_object())
    member.name = StringField(*patroni, "name");  // Patroni 3.0.3 and later
  member.role = NormalisePatroniRole(StringField(object, "role"));
  member.state = StringField(object, "state");
  member.timeline = static_cast<int>(IntField(object, "timeline"));
  member.pause = PauseField(object);
  member.server_version = static_cast<int>(IntField(object, "server_version"));
  if (member.role.empty() || member.state.empty())
    throw PatroniError("Patroni's answer to GET /patroni has no role or state: " + Quoted(json), "");
  return member;
}

PatroniClusterView ParsePatroniCluster(const std::string& json) {
  auto object = ParseObject(json, "GET /cluster");
  PatroniClusterView view;
  view.pause = PauseField(object);
  auto members = object.find("members");
  if (members == object.end() || !members->is_array())
    throw PatroniError("Patroni's answer to GET /cluster has no members list: " + Quoted(json), "");
  for (const auto& item : *members) {
    if (!item.is_object()) continue;
    PatroniClusterMember member;
    member.name = StringField(item, "name");
    member.role = NormalisePatroniRole(StringField(item, "role"));
    member.state = StringField(item, "state");
    member.host = StringField(item, "host");
    member.port = static_cast<int>(IntField(item, "port"));
    member.timeline = static_cast<int>(IntField(item, "timeline"));
    member.api_url = StringField(item, "api_url");
    // Patroni writes the lag as a number of bytes, or the string "unknown".
    if (auto lag = item.find("lag"); lag != item.end() && lag->is_number_integer())
      member.lag_bytes = lag->get<int64_t>();
    view.members.push_back(std::move(member));
  }
  return view;
}

PatroniClient::PatroniClient(std::string base_url, std::chrono::milliseconds timeout, std::string ca_file)
    : base_url_(ParsePatroniBaseUrl(base_url).BaseUrl()), timeout_(timeout), ca_file_(std::move(ca_file)) {
  if (timeout_.count() <= 0) throw std::invalid_argument("the Patroni timeout must be positive");
  InitCurlOnce();
}

PatroniClient::Response PatroniClient::Request(const std::string& method, const std::string& path,
                                               const std::string& body,
                                               std::chrono::milliseconds timeout) const {
  const std::string url = base_url_ + path;
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) throw PatroniError(method + " " + url + ": curl_easy_init failed", url);
  std::unique_ptr<curl_slist, HeadersDeleter> headers;
  BodySink sink;
  char error[CURL_ERROR_SIZE] = "";
  long timeout_ms = std::max<long>(1, static_cast<long>(timeout.count()));
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  // Redirects are not followed: an answer must come from the Patroni that was configured.
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  // The agent talks to its own cluster's Patroni; a proxy from the environment must not carry
  // (or see) a pause request.
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  // No SIGALRM-based DNS timeouts: the agent has threads.
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  if (!ca_file_.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, ca_file_.c_str());
  if (method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    headers.reset(curl_slist_append(nullptr, "Content-Type: application/json"));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  }
  CURLcode code = curl_easy_perform(h);
  if (code != CURLE_OK) {
    std::string reason =
        sink.too_big ? "the answer is over 1 MiB" : (*error ? error : curl_easy_strerror(code));
    throw PatroniError(method + " " + url + " failed: " + reason, url);
  }
  Response response;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
  response.body = std::move(sink.body);
  return response;
}

std::string PatroniClient::GetJson(const std::string& path, std::chrono::milliseconds timeout) const {
  auto response = Request("GET", path, "", timeout);
  if (response.status != 200)
    throw PatroniError("GET " + base_url_ + path + " answered HTTP " + std::to_string(response.status) +
                           ": " + Quoted(response.body),
                       base_url_ + path, response.status, response.body);
  return response.body;
}

PatroniMember PatroniClient::Member() const {
  PatroniMember member;
  try {
    member = ParsePatroniMember(GetJson("/patroni", timeout_));
  } catch (const PatroniError& e) {
    if (!e.url().empty()) throw;
    throw PatroniError(std::string(e.what()) + " (from " + base_url_ + "/patroni)", base_url_ + "/patroni");
  }
  if (member.name.empty()) {
    // Compared, never requested: api_url is what the member advertises (restapi.connect_address).
    for (const auto& m : Cluster().members)
      if (m.api_url == base_url_ + "/patroni") member.name = m.name;
  }
  return member;
}

PatroniClusterView PatroniClient::Cluster() const {
  try {
    return ParsePatroniCluster(GetJson("/cluster", timeout_));
  } catch (const PatroniError& e) {
    if (!e.url().empty()) throw;
    throw PatroniError(std::string(e.what()) + " (from " + base_url_ + "/cluster)", base_url_ + "/cluster");
  }
}

void PatroniClient::Pause() { SetPause(true); }
void PatroniClient::Resume() { SetPause(false); }

void PatroniClient::SetPause(bool pause) {
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  const std::string url = base_url_ + "/config";
  const std::string body = nlohmann::json{{"pause", pause}}.dump();
  auto response = Request("PATCH", "/config", body, timeout_);
  if (response.status != 200)
    throw PatroniError("PATCH " + url + " " + body + " answered HTTP " + std::to_string(response.status) +
                           ": " + Quoted(response.body),
                       url, response.status, response.body);
  std::string last_seen = "no answer";
  while (true) {
    auto left = Left(deadline);
    if (left.count() <= 0) break;
    try {
      auto status = GetJson("/patroni", left);
      if (ParsePatroniMember(status).pause == pause) return;
      last_seen = "\"pause\" is still " + std::string(pause ? "false" : "true");
    } catch (const PatroniError& e) {
      last_seen = e.what();  // Patroni may be busy; it has until the deadline
    }
    std::this_thread::sleep_for(
        std::min(kPausePollInterval, std::max(Left(deadline), std::chrono::milliseconds(0))));
  }
  throw PatroniError("Patroni at " + base_url_ + " accepted {\"pause\": " + (pause ? "true" : "false") +
                         "} but GET /patroni did not show it within " + std::to_string(timeout_.count()) +
                         " ms (last: " + last_seen + "); its loop_wait may be longer than the timeout",
                     base_url_ + "/patroni");
}

}  // namespace safe_upgrade
