// Test harness: s3rver on loopback over TLS (see object_store.h).
#include "object_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "base/fs_util.h"
#include "base/process.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

// Where `make object-store-deps` ran `npm ci`; SU_OBJECT_STORE_DIR overrides it.
std::string PackageDir() {
  const char* dir = getenv("SU_OBJECT_STORE_DIR");
  return dir && *dir ? dir : JoinPath(kSourceDir, "tests/object_store");
}

std::string ServerScript() { return JoinPath(PackageDir(), "node_modules/s3rver/bin/s3rver.js"); }

void Openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions opt;
  opt.timeout = std::chrono::minutes(1);
  RunChecked(argv, opt);
}

// A double-forked process is re-parented to PID 1, which may never reap it inside a container:
// a zombie counts as gone.
bool Gone(pid_t pid) {
  if (!ProcessAlive(pid)) return true;
  std::string stat = ReadFileOr("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

}  // namespace

std::string ObjectStoreServer::Unavailable() {
  if (!CommandRuns({"node", "--version"})) return "node (Debian package nodejs) is not installed";
  if (!PathExists(ServerScript()))
    return "the npm package s3rver is not installed in " + PackageDir() + "; run `make object-store-deps`";
  if (!CommandRuns({"openssl", "version"})) return "openssl is not installed";
  if (!CommandRuns({"pgbackrest", "version"})) return "pgbackrest is not installed";
  return "";
}

ObjectStoreServer::ObjectStoreServer() {
  std::string tmpl = "/tmp/su-s3-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed in /tmp");
  dir_ = tmpl;
  try {
    chmod(dir_.c_str(), 0755);
    data_dir_ = JoinPath(dir_, "data");
    log_file_ = JoinPath(dir_, "s3rver.log");
    EnsureDir(data_dir_, 0700);
    MakeCertificates();
    Start();
  } catch (...) {
    if (pid_ > 0) Stop();
    PrintLog(std::cerr);
    RemoveTree(dir_);
    throw;
  }
}

ObjectStoreServer::~ObjectStoreServer() {
  if (::testing::Test::HasFailure() || std::uncaught_exceptions() > 0) PrintLog(std::cerr);
  try {
    Stop();
  } catch (...) {
  }
  if (getenv("SU_KEEP_TEST_DIRS")) {
    std::cerr << "object store directory kept: " << dir_ << "\n";
    return;
  }
  try {
    RemoveTree(dir_);
  } catch (...) {
  }
}

void ObjectStoreServer::MakeCertificates() {
  ca_file_ = JoinPath(dir_, "ca.crt");
  cert_file_ = JoinPath(dir_, "server.crt");
  key_file_ = JoinPath(dir_, "server.key");
  std::string ca_key = JoinPath(dir_, "ca.key"), csr = JoinPath(dir_, "server.csr");
  std::string ext = JoinPath(dir_, "server.ext");
  Openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_file_, "-days", "2",
           "-subj", "/CN=pg_safe_upgrade throwaway test CA", "-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  Openssl(
      {"req", "-newkey", "rsa:2048", "-nodes", "-keyout", key_file_, "-out", csr, "-subj", "/CN=127.0.0.1"});
  // pgBackRest 2.45 matches the endpoint against DNS names only (an IP SAN is ignored), so
  // 127.0.0.1 is a DNS entry too; the IP entry is for other clients (curl, openssl s_client).
  AtomicWriteFile(ext,
                  "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost\n"
                  "basicConstraints=CA:FALSE\n"
                  "keyUsage=digitalSignature,keyEncipherment\n"
                  "extendedKeyUsage=serverAuth\n",
                  0600);
  Openssl({"x509", "-req", "-in", csr, "-CA", ca_file_, "-CAkey", ca_key, "-CAcreateserial", "-out",
           cert_file_, "-days", "2", "-extfile", ext});
  // pgBackRest runs as postgres and reads the CA; the keys stay root's.
  chmod(ca_file_.c_str(), 0644);
}

bool ObjectStoreServer::StartOnce() {
  // The bucket is created before the server listens (--configure-bucket), so an open port means
  // the store is ready.
  ProcessOptions opt;
  opt.output_file = log_file_;
  pid_ = SpawnDetached({"node", ServerScript(), "--directory", data_dir_, "--address", "127.0.0.1", "--port",
                        std::to_string(port_), "--key", key_file_, "--cert", cert_file_, "--no-vhost-buckets",
                        "--configure-bucket", bucket_},
                       opt);
  bool up = WaitUntil([&] { return Gone(pid_) || PortOpen(port_); }, std::chrono::seconds(30));
  if (up && !Gone(pid_)) return true;
  Stop();
  return false;
}

void ObjectStoreServer::Start() {
  if (Running()) return;
  // A restart keeps its port (RepoOptions() already went into a pgbackrest.conf); a first start
  // retries on another port when the free one was taken meanwhile.
  bool keep_port = port_ != 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (!keep_port) port_ = FindFreePort();
    if (StartOnce()) return;
  }
  throw std::runtime_error("s3rver did not start on 127.0.0.1:" + std::to_string(port_) + ":\n" + Log());
}

void ObjectStoreServer::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  if (!WaitUntil([&] { return Gone(pid_); }, std::chrono::seconds(10))) {
    kill(pid_, SIGKILL);
    WaitUntil([&] { return Gone(pid_); }, std::chrono::seconds(10));
  }
  pid_ = -1;
}

bool ObjectStoreServer::Running() const { return pid_ > 0 && !Gone(pid_); }

std::vector<std::string> ObjectStoreServer::RepoOptions() const {
  return {
      "repo1-type=s3",
      "repo1-s3-endpoint=127.0.0.1",
      // s3rver serves buckets by path; vhost style would need <bucket>.127.0.0.1 to resolve.
      "repo1-s3-uri-style=path",
      "repo1-s3-bucket=" + bucket_,
      // s3rver accepts any region in the signature; pgBackRest requires one.
      "repo1-s3-region=us-east-1",
      // s3rver's fixed account.
      "repo1-s3-key=S3RVER",
      "repo1-s3-key-secret=S3RVER",
      "repo1-storage-port=" + std::to_string(port_),
      "repo1-storage-ca-file=" + ca_file_,
      "repo1-storage-verify-tls=y",
      "repo1-path=/pgbackrest",
  };
}

std::string ObjectStoreServer::Log() const { return ReadFileOr(log_file_); }

void ObjectStoreServer::PrintLog(std::ostream& out) const {
  out << "--- " << log_file_ << " ---\n" << FileTail(log_file_, 16000) << "\n";
}

}  // namespace safe_upgrade::testing
