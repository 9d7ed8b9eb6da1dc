// Prints, from one run against one swtpm:
//  - keys created per second: the project (ESAPI, one connection) vs.
//    `tpm2_create` processes (the operator's usual way), as a ratio;
//  - signatures per second: the project (load, sign, flush per signature)
//    vs. `tpm2_sign` processes;
//  - TLS 1.3 handshakes per second (in memory, mutual auth) with a TPM client
//    key vs. a software key.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "fixtures.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tls_client.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga::tpm {
namespace {

using ga::testing::RunCommand;
using ga::testing::Swtpm;
using ga::testing::TempDir;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "bench_tpm: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Must(Result<T> r, const char* what) {
  if (!r.ok()) Die(std::string(what) + ": " + r.status().ToString());
  return std::move(r).value();
}

void MustRun(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  auto r = RunCommand(argv, std::chrono::seconds(60), env);
  if (r.exit_code != 0) Die(argv[0] + " failed: " + r.output);
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string ReadText(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One in-memory TLS handshake between `client` and `server`; true on success.
bool Handshake(SSL_CTX* client, SSL_CTX* server) {
  SslPtr c(SSL_new(client));
  SslPtr s(SSL_new(server));
  BIO* cb = nullptr;
  BIO* sb = nullptr;
  BIO_new_bio_pair(&cb, 0, &sb, 0);
  SSL_set_bio(c.get(), cb, cb);
  SSL_set_bio(s.get(), sb, sb);
  SSL_set_connect_state(c.get());
  SSL_set_accept_state(s.get());
  SSL_set_tlsext_host_name(c.get(), "localhost");
  bool c_done = false, s_done = false;
  for (int i = 0; i < 50 && !(c_done && s_done); ++i) {
    if (!c_done) {
      int rc = SSL_do_handshake(c.get());
      if (rc == 1)
        c_done = true;
      else if (SSL_get_error(c.get(), rc) != SSL_ERROR_WANT_READ)
        return false;
    }
    if (!s_done) {
      int rc = SSL_do_handshake(s.get());
      if (rc == 1)
        s_done = true;
      else if (SSL_get_error(s.get(), rc) != SSL_ERROR_WANT_READ)
        return false;
    }
  }
  // TLS 1.3: the client's last flight reaches the server after the client is done.
  return c_done && s_done;
}

double HandshakesPerSecond(SSL_CTX* client, SSL_CTX* server, double budget_s) {
  int n = 0;
  auto start = Clock::now();
  while (Seconds(start) < budget_s) {
    if (!Handshake(client, server)) {
      ERR_print_errors_fp(stderr);
      Die("handshake failed");
    }
    ++n;
  }
  return n / Seconds(start);
}

int Main() {
  TempDir dir;
  auto swtpm = Must(Swtpm::Start(), "starting swtpm");
  std::map<std::string, std::string> env = {{"TPM2TOOLS_TCTI", swtpm->tcti()},
                                            {"TSS2_LOG", "all+none"}};
  setenv("TSS2_LOG", "all+none", 0);
  constexpr int kKeys = 30;
  constexpr int kToolSigs = 40;
  constexpr int kSigs = 300;

  // --- keys and signatures through the project
  auto tpm = Must(TpmContext::Open({.tcti = swtpm->tcti()}), "open TPM");
  Must(tpm->EnsureSrk(), "SRK");
  auto start = Clock::now();
  std::vector<TpmKeyBlob> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(Must(tpm->CreateKey(), "create key"));
  double project_keys = kKeys / Seconds(start);

  std::string digest(32, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(digest.data()), 32);
  start = Clock::now();
  for (int i = 0; i < kSigs; ++i) Must(tpm->SignDigest(keys[i % keys.size()], digest), "sign");
  double project_sigs = kSigs / Seconds(start);
  tpm.reset();  // swtpm serves one connection at a time

  // --- the same with tpm2-tools processes
  auto f = [&](const std::string& n) { return (dir / n).string(); };
  start = Clock::now();
  for (int i = 0; i < kKeys; ++i) {
    MustRun({"tpm2_create", "-Q", "-C", "0x81000001", "-G", "ecc256:ecdsa-sha256", "-u", f("k.pub"),
             "-r", f("k.priv")},
            env);
  }
  double tool_keys = kKeys / Seconds(start);
  MustRun({"tpm2_load", "-Q", "-C", "0x81000001", "-u", f("k.pub"), "-r", f("k.priv"), "-c",
           f("k.ctx")},
          env);
  MustRun({"tpm2_flushcontext", "-t"}, env);
  {
    std::ofstream out(f("digest"), std::ios::binary);
    out << digest;
  }
  double tool_time = 0;
  for (int i = 0; i < kToolSigs; ++i) {
    start = Clock::now();
    MustRun(
        {"tpm2_sign", "-Q", "-c", f("k.ctx"), "-g", "sha256", "-d", "-o", f("sig"), f("digest")},
        env);
    tool_time += Seconds(start);
    // Without a resource manager the tool leaves its object loaded; not timed.
    MustRun({"tpm2_flushcontext", "-t"}, env);
  }
  double tool_sigs = kToolSigs / tool_time;

  // --- TLS handshakes, TPM key vs software key
  tpm = Must(TpmContext::Open({.tcti = swtpm->tcti()}), "reopen TPM");
  OSSL_LIB_CTX* libctx = Must(LibCtx(), "libctx");
  auto s = [](const std::filesystem::path& p) { return p.string(); };
  {
    std::ofstream(dir / "ca.ext") << "basicConstraints=critical,CA:TRUE\n"
                                     "keyUsage=critical,keyCertSign\n";
    std::ofstream(dir / "srv.ext") << "subjectAltName=DNS:localhost\n";
    std::ofstream(dir / "cli.ext") << "extendedKeyUsage=clientAuth\n";
  }
  MustRun(
      {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", f("ca.key"), "-out", f("ca.pem"), "-subj", "/CN=Bench CA", "-days", "1"},
      {});
  MustRun({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", f("srv.key"), "-out", f("srv.csr"), "-subj", "/CN=localhost"},
          {});
  MustRun(
      {"openssl", "x509", "-req", "-in", f("srv.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"),
       "-CAcreateserial", "-days", "1", "-extfile", f("srv.ext"), "-out", f("srv.pem")},
      {});
  auto issue = [&](EVP_PKEY* key, const std::string& name) {
    auto csr = Must(MakeCsr(key, "CN=" + name), "csr");
    std::ofstream(dir / (name + ".csr")) << Must(CsrToPem(csr.get()), "csr pem");
    MustRun({"openssl", "x509", "-req", "-in", f(name + ".csr"), "-CA", f("ca.pem"), "-CAkey",
             f("ca.key"), "-CAcreateserial", "-days", "1", "-extfile", f("cli.ext"), "-out",
             f(name + ".pem")},
            {});
    return ReadText(dir / (name + ".pem")) + ReadText(dir / "ca.pem");
  };
  EvpPkeyPtr tpm_key = Must(MakeEvpPkey(tpm, keys[0]), "TPM EVP_PKEY");
  EvpPkeyPtr soft_key(EVP_PKEY_Q_keygen(libctx, nullptr, "EC", "P-256"));
  if (!soft_key) Die("software key");
  TlsClientOptions o;
  o.ca_file = dir / "ca.pem";
  o.verify_host = "localhost";
  o.key = tpm_key.get();
  o.chain_pem = issue(tpm_key.get(), "tpm-client");
  SslCtxPtr tpm_client = Must(MakeClientTlsContext(o), "TPM TLS context");
  o.key = soft_key.get();
  o.chain_pem = issue(soft_key.get(), "soft-client");
  SslCtxPtr soft_client = Must(MakeClientTlsContext(o), "software TLS context");

  SslCtxPtr server(SSL_CTX_new_ex(libctx, nullptr, TLS_server_method()));
  if (!server ||
      SSL_CTX_use_certificate_chain_file(server.get(), s(dir / "srv.pem").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(server.get(), s(dir / "srv.key").c_str(), SSL_FILETYPE_PEM) !=
          1 ||
      SSL_CTX_load_verify_file(server.get(), s(dir / "ca.pem").c_str()) != 1) {
    Die(OpenSslError("server context").ToString());
  }
  SSL_CTX_set_verify(server.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_session_cache_mode(server.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(server.get(), 0);

  double tls_tpm = HandshakesPerSecond(tpm_client.get(), server.get(), 3.0);
  double tls_soft = HandshakesPerSecond(soft_client.get(), server.get(), 3.0);
  auto leftover = Must(tpm->TransientHandles(), "transient handles");

  std::printf("TPM benchmark (swtpm %s, ECC P-256)\n", swtpm->tcti().c_str());
  std::printf("  keys created/s:      project %8.1f   tpm2_create %8.1f   ratio %5.1fx\n",
              project_keys, tool_keys, project_keys / tool_keys);
  std::printf("  signatures/s:        project %8.1f   tpm2_sign   %8.1f   ratio %5.1fx\n",
              project_sigs, tool_sigs, project_sigs / tool_sigs);
  std::printf(
      "  TLS 1.3 handshakes/s (mutual auth, in memory): TPM key %7.1f   software key "
      "%7.1f   ratio %5.2fx\n",
      tls_tpm, tls_soft, tls_tpm / tls_soft);
  std::printf("  transient objects left in the TPM: %zu\n", leftover.size());
  return leftover.empty() ? 0 : 1;
}

}  // namespace
}  // namespace ga::tpm

int main() {
  return ga::tpm::Main();
}
