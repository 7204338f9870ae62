// The throwaway PKI (pki.h), made with openssl.
#include "pki.h"

#include "base/fs_util.h"
#include "base/process.h"

namespace safe_upgrade::testing {

Pki MakePki(const TestCluster& c) {
  Pki p;
  p.dir = c.ScratchDir("pki");
  auto f = [&](const std::string& n) { return JoinPath(p.dir, n); };
  auto run = [](const std::vector<std::string>& argv) { RunChecked(argv); };
  auto make_ca = [&](const std::string& name) {
    run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=" + name, "-keyout",
         f(name + ".key"), "-out", f(name + ".crt")});
  };
  auto make_cert = [&](const std::string& name, const std::string& ca, const std::string& cn, bool server) {
    run({"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + cn, "-keyout", f(name + ".key"), "-out",
         f(name + ".csr")});
    AtomicWriteFile(f(name + ".ext"), server ? "subjectAltName=IP:127.0.0.1,DNS:localhost\n" : "extendedKeyUsage=clientAuth\n",
                    0644);
    run({"openssl", "x509", "-req", "-in", f(name + ".csr"), "-CA", f(ca + ".crt"), "-CAkey", f(ca + ".key"),
         "-CAcreateserial", "-days", "2", "-extfile", f(name + ".ext"), "-out", f(name + ".crt")});
  };
  make_ca("ca");
  make_ca("rogue-ca");
  make_cert("server", "ca", "127.0.0.1", true);
  make_cert("client", "ca", "safe-upgrade-worker", false);
  make_cert("rogue", "rogue-ca", "intruder", false);
  ChownTree(p.dir, c.info().os_user);
  p.ca = f("ca.crt");
  p.server_cert = f("server.crt");
  p.server_key = f("server.key");
  p.client_cert = f("client.crt");
  p.client_key = f("client.key");
  p.rogue_cert = f("rogue.crt");
  p.rogue_key = f("rogue.key");
  return p;
}

}  // namespace safe_upgrade::testing
