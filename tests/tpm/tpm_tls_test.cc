// TLS client authentication with a TPM key, TLS 1.2 and 1.3, against
// `openssl s_server` and a real mosquitto broker through libmosquitto using
// the project's own SSL_CTX. The servers trust only the root CA, so a
// handshake succeeds only if the client sent the whole chain (leaf + CA).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "fixtures.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tls_client.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "tpm_test_support.h"

namespace ga::tpm {
namespace {

using ga::testing::FreePort;
using ga::testing::Mosquitto;
using ga::testing::MosquittoOptions;
using ga::testing::Process;
using ga::testing::ProcessOptions;
using ga::testing::Swtpm;
using ga::testing::TempDir;
using testing::ReadText;
using testing::TestPki;
using testing::WriteText;
using namespace std::chrono_literals;

struct HandshakeOutcome {
  bool ok = false;
  int version = 0;
  std::string error;
};

// Connects to 127.0.0.1:port, handshakes with SNI "localhost", sends `payload`.
HandshakeOutcome Handshake(SSL_CTX* ctx, int port, const std::string& payload) {
  HandshakeOutcome out;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    out.error = "connect failed";
    return out;
  }
  SslPtr ssl(SSL_new(ctx));
  SSL_set_fd(ssl.get(), fd);
  SSL_set_tlsext_host_name(ssl.get(), "localhost");
  int rc = SSL_connect(ssl.get());
  if (rc != 1) {
    int err = errno;
    out.error = OpenSslError("SSL_connect").message() + " / SSL_get_error " +
                std::to_string(SSL_get_error(ssl.get(), rc)) + " errno " + std::to_string(err) +
                " / verify: " + X509_verify_cert_error_string(SSL_get_verify_result(ssl.get()));
  } else {
    out.version = SSL_version(ssl.get());
    out.ok = SSL_write(ssl.get(), payload.data(), static_cast<int>(payload.size())) ==
             static_cast<int>(payload.size());
    if (!out.ok) out.error = OpenSslError("SSL_write").message();
    SSL_shutdown(ssl.get());
  }
  ssl.reset();
  close(fd);
  return out;
}

class TpmTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto swtpm = Swtpm::Start();
    ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
    swtpm_ = std::move(*swtpm);
    auto tpm = TpmContext::Open({.tcti = swtpm_->tcti()});
    ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
    tpm_ = *tpm;
    pki_ = TestPki::Create(dir_.path());
    auto blob = tpm_->CreateKey();
    ASSERT_TRUE(blob.ok()) << blob.status().ToString();
    auto key = MakeEvpPkey(tpm_, *blob);
    ASSERT_TRUE(key.ok()) << key.status().ToString();
    key_ = std::move(*key);
    auto csr = MakeCsr(key_.get(), "CN=device-1");
    ASSERT_TRUE(csr.ok()) << csr.status().ToString();
    leaf_pem_ = pki_.IssueClientCert(*CsrToPem(csr->get()), "device-1");
    chain_file_ = dir_ / "chain.pem";
    WriteText(chain_file_, leaf_pem_ + ReadText(pki_.intermediate_cert));
  }

  TlsClientOptions Options(int max_version, const std::string& host = "localhost") {
    TlsClientOptions o;
    o.key = key_.get();
    o.chain_file = chain_file_;
    o.ca_file = pki_.root_cert;
    o.verify_host = host;
    o.max_version = max_version;
    return o;
  }

  // Runs s_server for one connection with `version_flag`; returns its output.
  std::string RunServer(const std::string& version_flag, SSL_CTX* client, HandshakeOutcome* hs) {
    int port = FreePort();
    ProcessOptions po;
    po.capture_stdout = true;
    po.pipe_stdin = true;  // s_server ends the session at EOF on stdin
    po.stderr_file = dir_ / "s_server.err";
    auto server = Process::Start(
        {"openssl", "s_server", "-accept", std::to_string(port), "-cert", pki_.server_cert.string(),
         "-key", pki_.server_key.string(), "-CAfile", pki_.root_cert.string(), "-Verify", "3",
         "-verify_return_error", version_flag, "-naccept", "1"},
        po);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    if (!server.ok()) return {};
    std::string out;
    while (true) {
      auto line = server->ReadStdoutLine(10s);
      if (!line.ok()) break;
      out += *line + "\n";
      if (line->find("ACCEPT") != std::string::npos) break;
    }
    *hs = Handshake(client, port, "hello-from-the-tpm\n");
    server->Wait(10s);
    while (true) {
      auto line = server->ReadStdoutLine(1s);
      if (!line.ok()) break;
      out += *line + "\n";
    }
    return out + ReadText(dir_ / "s_server.err");
  }

  void ExpectNoTransients() {
    auto handles = tpm_->TransientHandles();
    ASSERT_TRUE(handles.ok()) << handles.status().ToString();
    EXPECT_TRUE(handles->empty());
  }

  TempDir dir_;
  std::unique_ptr<Swtpm> swtpm_;
  std::shared_ptr<TpmContext> tpm_;
  TestPki pki_;
  EvpPkeyPtr key_;
  std::string leaf_pem_;
  std::filesystem::path chain_file_;
};

TEST_F(TpmTlsTest, ClientAuthTls13AgainstOpensslServer) {
  auto ctx = MakeClientTlsContext(Options(TLS1_3_VERSION));
  ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
  HandshakeOutcome hs;
  std::string server = RunServer("-tls1_3", ctx->get(), &hs);
  ASSERT_TRUE(hs.ok) << hs.error << "\n" << server;
  EXPECT_EQ(hs.version, TLS1_3_VERSION);
  EXPECT_NE(server.find("hello-from-the-tpm"), std::string::npos) << server;
  EXPECT_NE(server.find("depth=1 CN = Test Device CA"), std::string::npos) << server;
  EXPECT_NE(server.find("depth=0 CN = device-1"), std::string::npos) << server;
  EXPECT_EQ(server.find("verify error"), std::string::npos) << server;
  ExpectNoTransients();
}

TEST_F(TpmTlsTest, ClientAuthTls12AgainstOpensslServer) {
  auto ctx = MakeClientTlsContext(Options(TLS1_2_VERSION));
  ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
  HandshakeOutcome hs;
  std::string server = RunServer("-tls1_2", ctx->get(), &hs);
  ASSERT_TRUE(hs.ok) << hs.error << "\n" << server;
  EXPECT_EQ(hs.version, TLS1_2_VERSION);
  EXPECT_NE(server.find("hello-from-the-tpm"), std::string::npos) << server;
  EXPECT_NE(server.find("depth=1 CN = Test Device CA"), std::string::npos) << server;
  EXPECT_EQ(server.find("verify error"), std::string::npos) << server;
  ExpectNoTransients();
}

TEST_F(TpmTlsTest, WrongServerHostNameIsRefused) {
  auto ctx = MakeClientTlsContext(Options(0, "wrong.example.com"));
  ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
  HandshakeOutcome hs;
  std::string server = RunServer("-tls1_3", ctx->get(), &hs);
  EXPECT_FALSE(hs.ok);
  EXPECT_NE(hs.error.find("certificate verify failed"), std::string::npos) << hs.error;
  EXPECT_NE(hs.error.find("hostname mismatch"), std::string::npos) << hs.error;
}

TEST_F(TpmTlsTest, OptionsAreChecked) {
  TlsClientOptions o = Options(0);
  o.verify_host.clear();
  EXPECT_EQ(MakeClientTlsContext(o).status().code(), Code::kInvalidArgument);
  o = Options(0);
  o.min_version = TLS1_1_VERSION;
  EXPECT_EQ(MakeClientTlsContext(o).status().code(), Code::kInvalidArgument);
  o = Options(0);
  o.chain_file = dir_ / "missing.pem";
  auto missing = MakeClientTlsContext(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("missing.pem"), std::string::npos)
      << missing.status().ToString();
  // A key that does not match the leaf certificate.
  auto other = tpm_->CreateKey();
  ASSERT_TRUE(other.ok());
  auto other_key = MakeEvpPkey(tpm_, *other);
  ASSERT_TRUE(other_key.ok());
  o = Options(0);
  o.key = other_key->get();
  auto mismatch = MakeClientTlsContext(o);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("does not match the leaf"), std::string::npos)
      << mismatch.status().ToString();
  // From memory, with ALPN.
  o = Options(0);
  o.chain_file.clear();
  o.chain_pem = ReadText(chain_file_);
  o.ca_file.clear();
  o.ca_pem = ReadText(pki_.root_cert);
  o.alpn = {"x-amzn-mqtt-ca"};
  auto mem = MakeClientTlsContext(o);
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  HandshakeOutcome hs;
  std::string server = RunServer("-tls1_3", mem->get(), &hs);
  EXPECT_TRUE(hs.ok) << hs.error << "\n" << server;
  EXPECT_NE(server.find("depth=1 CN = Test Device CA"), std::string::npos) << server;
}

// libmosquitto with the project's SSL_CTX against a broker requiring client certs.
struct MqttOutcome {
  bool connected = false;
  int connack = -1;
  std::string error;
};

MqttOutcome ConnectMqtt(SSL_CTX* ctx, int port) {
  MqttOutcome out;
  mosquitto_lib_init();
  struct mosquitto* m = mosquitto_new("tpm-device-1", true, &out);
  mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
  mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, ctx);
  mosquitto_connect_callback_set(m, [](struct mosquitto*, void* arg, int rc) {
    auto* o = static_cast<MqttOutcome*>(arg);
    o->connack = rc;
    o->connected = rc == 0;
  });
  int rc = mosquitto_connect(m, "localhost", port, 30);
  if (rc != MOSQ_ERR_SUCCESS) {
    out.error = std::string("mosquitto_connect: ") + mosquitto_strerror(rc);
  } else {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (out.connack < 0 && std::chrono::steady_clock::now() < deadline) {
      rc = mosquitto_loop(m, 100, 1);
      if (rc != MOSQ_ERR_SUCCESS) {
        out.error = std::string("mosquitto_loop: ") + mosquitto_strerror(rc);
        break;
      }
    }
    mosquitto_disconnect(m);
  }
  ERR_clear_error();
  mosquitto_destroy(m);
  mosquitto_lib_cleanup();
  return out;
}

class TpmMqttTest : public TpmTlsTest, public ::testing::WithParamInterface<int> {};

TEST_P(TpmMqttTest, BrokerRequiringCertificatesAcceptsTpmKey) {
  MosquittoOptions mo;
  mo.tls_cert = pki_.server_cert;
  mo.tls_key = pki_.server_key;
  mo.tls_client_ca = pki_.root_cert;
  mo.require_certificate = true;
  auto broker = Mosquitto::Start(mo);
  ASSERT_TRUE(broker.ok()) << broker.status().ToString();

  auto ctx = MakeClientTlsContext(Options(GetParam()));
  ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
  MqttOutcome out = ConnectMqtt(ctx->get(), (*broker)->port());
  EXPECT_TRUE(out.connected) << out.error << " connack=" << out.connack << "\n"
                             << ReadText((*broker)->dir() / "mosquitto.log");

  // The same key with only the leaf (no CA) is refused: the broker trusts
  // only the root, so the accepted connection above carried the chain.
  WriteText(dir_ / "leaf-only.pem", leaf_pem_);
  TlsClientOptions leaf_only = Options(GetParam());
  leaf_only.chain_file = dir_ / "leaf-only.pem";
  auto ctx2 = MakeClientTlsContext(leaf_only);
  ASSERT_TRUE(ctx2.ok()) << ctx2.status().ToString();
  MqttOutcome refused = ConnectMqtt(ctx2->get(), (*broker)->port());
  EXPECT_FALSE(refused.connected);

  // A wrong host name is refused by the client.
  auto ctx3 = MakeClientTlsContext(Options(GetParam(), "not-the-broker.example"));
  ASSERT_TRUE(ctx3.ok());
  MqttOutcome wrong_host = ConnectMqtt(ctx3->get(), (*broker)->port());
  EXPECT_FALSE(wrong_host.connected);
  ExpectNoTransients();
}

INSTANTIATE_TEST_SUITE_P(TlsVersions, TpmMqttTest,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == TLS1_2_VERSION ? std::string("Tls12")
                                                               : std::string("Tls13");
                         });

}  // namespace
}  // namespace ga::tpm
