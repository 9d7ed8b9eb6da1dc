// The file CA: `ca init` output, the device certificate profile checked with
// the openssl command, and every bad input refused with a clear error.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <thread>

#include "fixtures.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/pki/local_ca.h"
#include "pki_test_support.h"

namespace ga::pki {
namespace {

using ga::testing::TempDir;
using testing::CertText;
using testing::LoadCsr;
using testing::MakeCsrFiles;
using testing::MustRun;
using testing::ReadText;
using testing::WriteCert;

class FileCaTest : public ::testing::Test {
 protected:
  // A file CA in dir_/name; returns its [ca] section.
  CaConfig InitCa(const std::string& name = "ca", int days = 3650) {
    CaInitOptions init;
    init.backend = CaBackend::kFile;
    init.subject = "CN=Test Gateway CA,O=Acme";
    init.days = days;
    init.out_dir = dir_ / name;
    auto result = InitLocalCa(init);
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    auto read = ReadCaDirectory(dir_ / name);
    EXPECT_TRUE(read.ok()) << read.status().ToString();
    return read.ok() ? read->ca : CaConfig{};
  }
  std::unique_ptr<LocalCa> Open(const CaConfig& config) {
    auto ca = OpenLocalCa(config);
    EXPECT_TRUE(ca.ok()) << ca.status().ToString();
    return ca.ok() ? std::move(*ca) : nullptr;
  }
  TempDir dir_;
};

// A TLS server certificate (a local broker's listener): serverAuth, not
// clientAuth, and exactly the names asked for in its subjectAltName.
TEST_F(FileCaTest, IssuesAServerCertificateWithItsNamesOnly) {
  auto ca = Open(InitCa());
  ASSERT_TRUE(ca);
  auto files = MakeCsrFiles(dir_.path(), "srv", "P-256", "/CN=broker");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto issued = ca->IssueServerCertificate(csr.get(), "broker", {"DNS:broker", "IP:10.0.0.5"});
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  WriteCert(dir_ / "srv.pem", issued->cert.get());
  std::string text = CertText(dir_ / "srv.pem");
  EXPECT_NE(text.find("TLS Web Server Authentication"), std::string::npos) << text;
  EXPECT_EQ(text.find("TLS Web Client Authentication"), std::string::npos) << text;
  EXPECT_NE(text.find("DNS:broker, IP Address:10.0.0.5\n"), std::string::npos) << text;

  // A name that would smuggle in another entry, no name at all: refused.
  auto smuggled = ca->IssueServerCertificate(csr.get(), "broker", {"DNS:broker,DNS:evil"});
  EXPECT_EQ(smuggled.status().code(), Code::kInvalidArgument) << smuggled.status().ToString();
  EXPECT_NE(smuggled.status().message().find("DNS:broker,DNS:evil"), std::string::npos);
  EXPECT_FALSE(ca->IssueServerCertificate(csr.get(), "broker", {}).ok());
}

TEST_F(FileCaTest, InitWritesAP256CaCertificateAndPrivateKey) {
  CaConfig config = InitCa();
  EXPECT_EQ(config.backend, CaBackend::kFile);
  EXPECT_EQ(config.cert, dir_ / "ca" / "ca.pem");
  EXPECT_EQ(config.key, dir_ / "ca" / "ca.key");
  struct stat st {};
  ASSERT_EQ(stat(config.key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(ReadText(config.key).find("-----BEGIN PRIVATE KEY-----"), std::string::npos);

  std::string text = CertText(config.cert);
  EXPECT_NE(text.find("Version: 3"), std::string::npos) << text;
  EXPECT_NE(text.find("Subject: CN = Test Gateway CA, O = Acme"), std::string::npos) << text;
  EXPECT_NE(text.find("NIST CURVE: P-256"), std::string::npos) << text;
  EXPECT_NE(text.find("X509v3 Basic Constraints: critical\n                CA:TRUE"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("X509v3 Subject Key Identifier"), std::string::npos) << text;
  std::string verify =
      MustRun({"openssl", "verify", "-CAfile", config.cert.string(), config.cert.string()});
  EXPECT_NE(verify.find(": OK"), std::string::npos) << verify;
  MustRun({"openssl", "pkey", "-in", config.key.string(), "-noout"});
}

TEST_F(FileCaTest, InitRefusesToOverwriteACa) {
  CaConfig config = InitCa();
  std::string before = ReadText(config.key);
  CaInitOptions init;
  init.subject = "CN=Other";
  init.out_dir = dir_ / "ca";
  auto again = InitLocalCa(init);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists) << again.status().ToString();
  EXPECT_EQ(ReadText(config.key), before);

  init.out_dir = dir_ / "bad";
  init.subject = "CN";
  EXPECT_EQ(InitLocalCa(init).status().code(), Code::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "bad" / "ca.key"));
}

TEST_F(FileCaTest, IssuesDeviceCertificatesThatOpensslVerifies) {
  CaConfig config = InitCa();
  config.validity = std::chrono::hours(24 * 90);
  auto ca = Open(config);
  ASSERT_TRUE(ca);
  EXPECT_EQ(ca->backend(), "file");

  auto files = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-0001");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto before = std::chrono::system_clock::now();
  auto issued = ca->Issue(csr.get(), "gw-0001");
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  WriteCert(dir_ / "dev.pem", issued->cert.get());
  ASSERT_TRUE(WriteChainFile(dir_ / "deviceCertAndCACert.crt", *issued).ok());

  std::string verify =
      MustRun({"openssl", "verify", "-CAfile", config.cert.string(), (dir_ / "dev.pem").string()});
  EXPECT_NE(verify.find(": OK"), std::string::npos) << verify;
  // The chain file: device certificate, then the CA certificate.
  ASSERT_EQ(issued->chain.size(), 1u);
  EXPECT_EQ(ReadText(dir_ / "deviceCertAndCACert.crt"),
            ReadText(dir_ / "dev.pem") + ReadText(config.cert));
  EXPECT_EQ(*issued->ChainPem(), ReadText(dir_ / "deviceCertAndCACert.crt"));

  std::string text = CertText(dir_ / "dev.pem");
  EXPECT_NE(text.find("Version: 3"), std::string::npos) << text;
  EXPECT_NE(text.find("Subject: CN = gw-0001\n"), std::string::npos) << text;
  EXPECT_NE(text.find("Issuer: CN = Test Gateway CA, O = Acme"), std::string::npos) << text;
  EXPECT_NE(text.find("X509v3 Basic Constraints: critical\n                CA:FALSE"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("X509v3 Key Usage: critical\n                Digital Signature\n"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find("X509v3 Extended Key Usage: \n                TLS Web Client Authentication\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("X509v3 Subject Key Identifier"), std::string::npos) << text;
  EXPECT_NE(text.find("X509v3 Authority Key Identifier"), std::string::npos) << text;
  // The AKI is the CA's SKI.
  std::string ca_text = CertText(config.cert);
  static constexpr std::string_view kSki = "Subject Key Identifier: \n                ";
  size_t at = ca_text.find(kSki);
  ASSERT_NE(at, std::string::npos) << ca_text;
  at += kSki.size();
  std::string ski = ca_text.substr(at, ca_text.find('\n', at) - at);
  EXPECT_EQ(ski.size(), 59u) << ski;  // 20 bytes as AA:BB:...
  EXPECT_NE(text.find("Authority Key Identifier: \n                " + ski + "\n"),
            std::string::npos)
      << text;

  // A random 128-bit serial: 16 bytes, top bit set.
  std::string serial =
      MustRun({"openssl", "x509", "-in", (dir_ / "dev.pem").string(), "-noout", "-serial"});
  ASSERT_EQ(serial.size(), 7u + 32u + 1u) << serial;
  EXPECT_EQ(serial.rfind("serial=", 0), 0u) << serial;
  EXPECT_EQ(serial.find_first_not_of("0123456789ABCDEF", 7), 39u) << serial;
  EXPECT_NE(std::string_view("89ABCDEF").find(serial[7]), std::string_view::npos) << serial;

  // notBefore a few minutes back, notAfter validity_days ahead.
  auto not_before = ToTimePoint(X509_get0_notBefore(issued->cert.get()));
  auto not_after = ToTimePoint(X509_get0_notAfter(issued->cert.get()));
  EXPECT_LE(not_before, before - std::chrono::minutes(4));
  EXPECT_GE(not_before, before - std::chrono::minutes(6));
  EXPECT_NEAR(std::chrono::duration_cast<std::chrono::hours>(not_after - before).count(), 90 * 24,
              1);

  EXPECT_EQ(issued->AwsId(), testing::OpensslCertId(dir_ / "dev.pem"));
  EXPECT_EQ(AwsCertificateId(ca->certificate()), testing::OpensslCertId(config.cert));

  // Two issues never share a serial.
  auto second = ca->Issue(csr.get(), "gw-0001");
  ASSERT_TRUE(second.ok());
  EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(issued->cert.get()),
                             X509_get0_serialNumber(second->cert.get())),
            0);
}

TEST_F(FileCaTest, AcceptsEveryKeyAwsAccepts) {
  auto ca = Open(InitCa());
  ASSERT_TRUE(ca);
  for (const char* algorithm : {"P-384", "P-521", "RSA-2048"}) {
    auto files = MakeCsrFiles(dir_.path(), algorithm, algorithm, "/CN=gw-1/O=Ignored");
    X509ReqPtr csr = LoadCsr(files.csr);
    auto issued = ca->Issue(csr.get(), "gw-1");
    ASSERT_TRUE(issued.ok()) << algorithm << ": " << issued.status().ToString();
    auto pem = WriteCert(dir_ / (std::string(algorithm) + ".pem"), issued->cert.get());
    std::string verify =
        MustRun({"openssl", "verify", "-CAfile", (dir_ / "ca" / "ca.pem").string(), pem.string()});
    EXPECT_NE(verify.find(": OK"), std::string::npos) << verify;
    // Only the CN of the CSR's subject is carried over.
    EXPECT_EQ(NameToString(X509_get_subject_name(issued->cert.get())), "CN = gw-1");
  }
  // A CSR without CN gets the thing name.
  auto files = MakeCsrFiles(dir_.path(), "nocn", "P-256", "/O=Acme");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto issued = ca->Issue(csr.get(), "sensor_7:a");
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  EXPECT_EQ(NameToString(X509_get_subject_name(issued->cert.get())), "CN = sensor_7:a");
}

TEST_F(FileCaTest, TheGatewaysCertificateCarriesItsOrganizationalUnit) {
  auto ca = Open(InitCa());
  ASSERT_TRUE(ca);
  auto files = MakeCsrFiles(dir_.path(), "gw", "P-256", "/OU=gateway/CN=gw-1");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto issued = ca->Issue(csr.get(), "gw-1", "gateway");
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  EXPECT_EQ(NameToString(X509_get_subject_name(issued->cert.get())), "OU = gateway, CN = gw-1");
  // The OU comes from the caller, never from the CSR.
  auto plain = ca->Issue(csr.get(), "gw-1");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(NameToString(X509_get_subject_name(plain->cert.get())), "CN = gw-1");
}

TEST_F(FileCaTest, RefusesBadCsrsAndThingNames) {
  auto ca = Open(InitCa());
  ASSERT_TRUE(ca);
  auto expect_refused = [&](X509_REQ* csr, const std::string& thing, const std::string& why) {
    auto issued = ca->Issue(csr, thing);
    ASSERT_FALSE(issued.ok()) << thing << " / " << why;
    EXPECT_EQ(issued.status().code(), Code::kInvalidArgument) << issued.status().ToString();
    EXPECT_NE(issued.status().message().find(why), std::string::npos) << issued.status().ToString();
  };
  for (const char* algorithm : {"RSA-1024", "ED25519", "secp256k1"}) {
    auto files = MakeCsrFiles(dir_.path(), algorithm, algorithm, "/CN=gw-1");
    X509ReqPtr csr = LoadCsr(files.csr);
    expect_refused(csr.get(), "gw-1", "is not usable with AWS IoT");
  }
  auto files = MakeCsrFiles(dir_.path(), "good", "P-256", "/CN=gw-1");
  X509ReqPtr good = LoadCsr(files.csr);
  X509ReqPtr corrupt = testing::CorruptSignature(good.get());
  ASSERT_TRUE(corrupt);
  expect_refused(corrupt.get(), "gw-1", "signature does not verify");
  expect_refused(good.get(), "gw-2", "CSR's CN \"gw-1\" is not the thing name");
  expect_refused(nullptr, "gw-1", "no CSR");

  auto nocn = MakeCsrFiles(dir_.path(), "nocn", "P-256", "/O=Acme");
  X509ReqPtr csr = LoadCsr(nocn.csr);
  for (std::string bad : {std::string(""), std::string("gw 1"), std::string("gw/1"),
                          std::string("gw.1"), std::string("gw#1"), std::string(129, 'a')}) {
    expect_refused(csr.get(), bad, "is not a valid AWS thing name");
  }
  // AWS allows 128 characters, a certificate's CN only 64.
  expect_refused(csr.get(), std::string(65, 'a'), "a certificate CN holds at most 64");
  EXPECT_TRUE(ca->Issue(csr.get(), std::string(64, 'a')).ok());
}

TEST_F(FileCaTest, VerificationCertificateHasTheRegistrationCode) {
  CaConfig config = InitCa();
  auto ca = Open(config);
  ASSERT_TRUE(ca);
  auto files = MakeCsrFiles(dir_.path(), "verify", "P-256", "/CN=ignored");
  X509ReqPtr csr = LoadCsr(files.csr);
  std::string code(64, 'f');
  code[0] = 'A';
  auto issued = ca->IssueVerificationCertificate(csr.get(), code);
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  auto pem = WriteCert(dir_ / "verification.pem", issued->cert.get());
  std::string out = MustRun({"openssl", "verify", "-CAfile", config.cert.string(), pem.string()});
  EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  std::string subject = MustRun({"openssl", "x509", "-in", pem.string(), "-noout", "-subject"});
  EXPECT_EQ(subject, "subject=CN = " + code + "\n");

  for (std::string bad :
       {std::string(""), std::string("abc def"), std::string("a,CN=b"), std::string(65, 'a')}) {
    auto refused = ca->IssueVerificationCertificate(csr.get(), bad);
    EXPECT_EQ(refused.status().code(), Code::kInvalidArgument) << bad;
  }
}

TEST_F(FileCaTest, NotAfterIsCappedAtTheCas) {
  CaConfig config = InitCa("short", 10);
  config.validity = std::chrono::hours(24 * 365);
  auto ca = Open(config);
  ASSERT_TRUE(ca);
  auto files = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-1");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto issued = ca->Issue(csr.get(), "gw-1");
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  EXPECT_EQ(ASN1_TIME_compare(X509_get0_notAfter(issued->cert.get()),
                              X509_get0_notAfter(ca->certificate())),
            0);
}

TEST_F(FileCaTest, RefusesKeyReadableByOthers) {
  CaConfig config = InitCa();
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    ASSERT_EQ(chmod(config.key.c_str(), mode), 0);
    auto ca = OpenLocalCa(config);
    ASSERT_FALSE(ca.ok()) << std::oct << mode;
    EXPECT_EQ(ca.status().code(), Code::kPermissionDenied) << ca.status().ToString();
    EXPECT_NE(ca.status().message().find("accessible by group or others"), std::string::npos)
        << ca.status().ToString();
    EXPECT_NE(ca.status().message().find(config.key.string()), std::string::npos);
  }
  ASSERT_EQ(chmod(config.key.c_str(), 0400), 0);
  EXPECT_TRUE(OpenLocalCa(config).ok());
}

TEST_F(FileCaTest, RefusesKeyOfAnotherCa) {
  CaConfig a = InitCa("a");
  CaConfig b = InitCa("b");
  CaConfig mixed = a;
  mixed.key = b.key;
  auto ca = OpenLocalCa(mixed);
  ASSERT_FALSE(ca.ok());
  EXPECT_EQ(ca.status().code(), Code::kInvalidArgument);
  EXPECT_NE(ca.status().message().find("does not match CA certificate"), std::string::npos)
      << ca.status().ToString();
}

TEST_F(FileCaTest, RefusesExpiredNotYetValidAndNonCaCertificates) {
  struct Case {
    const char* name;
    long from, to;
    bool ca;
    Code code;
    const char* why;
  } cases[] = {
      {"expired", -30, -1, true, Code::kFailedPrecondition, "expired on"},
      {"future", 2, 30, true, Code::kFailedPrecondition, "not valid before"},
      {"leaf", -1, 30, false, Code::kInvalidArgument, "not a CA certificate"},
  };
  for (const Case& c : cases) {
    testing::MakeSelfSigned(dir_.path(), c.name, c.from, c.to, c.ca);
    CaConfig config;
    config.cert = dir_ / (std::string(c.name) + ".pem");
    config.key = dir_ / (std::string(c.name) + ".key");
    auto ca = OpenLocalCa(config);
    ASSERT_FALSE(ca.ok()) << c.name;
    EXPECT_EQ(ca.status().code(), c.code) << ca.status().ToString();
    EXPECT_NE(ca.status().message().find(c.why), std::string::npos) << ca.status().ToString();
  }
  CaConfig missing;
  missing.cert = dir_ / "missing.pem";
  missing.key = dir_ / "missing.key";
  EXPECT_EQ(OpenLocalCa(missing).status().code(), Code::kNotFound);
}

TEST_F(FileCaTest, CaCertificateWithoutSkiStillIssues) {
  // A CA made elsewhere (here: no SKI, no keyUsage) works; the AKI is left out.
  testing::MakeSelfSigned(dir_.path(), "plain", -1, 30, true);
  CaConfig config;
  config.cert = dir_ / "plain.pem";
  config.key = dir_ / "plain.key";
  auto ca = Open(config);
  ASSERT_TRUE(ca);
  auto files = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-1");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto issued = ca->Issue(csr.get(), "gw-1");
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  auto pem = WriteCert(dir_ / "dev.pem", issued->cert.get());
  std::string out = MustRun({"openssl", "verify", "-CAfile", config.cert.string(), pem.string()});
  EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  EXPECT_EQ(CertText(pem).find("Authority Key Identifier"), std::string::npos);
}

TEST_F(FileCaTest, IssuesFromManyThreads) {
  auto ca = Open(InitCa());
  ASSERT_TRUE(ca);
  auto files = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-1");
  X509ReqPtr csr = LoadCsr(files.csr);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        if (ca->Issue(csr.get(), "gw-1").ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 40);
}

TEST_F(FileCaTest, CsrOnlyThenImportOfARootSignedCaCertificate) {
  CaInitOptions init;
  init.subject = "CN=Site CA,O=Acme";
  init.out_dir = dir_ / "site";
  init.csr_only = true;
  auto made = InitLocalCa(init);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "site" / "ca.pem"));
  auto config = ReadCaDirectory(dir_ / "site");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(OpenLocalCa(config->ca).status().code(), Code::kNotFound);

  // The organisation's root signs the CSR as a CA certificate.
  testing::MakeSelfSigned(dir_.path(), "root", -1, 3650, true);
  testing::WriteText(dir_ / "ext.cnf",
                     "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                     "subjectKeyIdentifier=hash\n");
  MustRun({"openssl", "x509", "-req", "-in", made->csr.string(), "-CA",
           (dir_ / "root.pem").string(), "-CAkey", (dir_ / "root.key").string(), "-days", "365",
           "-extfile", (dir_ / "ext.cnf").string(), "-out", (dir_ / "signed.pem").string()});
  // A certificate for another key is refused, and nothing is written.
  Status wrong = ImportCaCertificate(config->ca, nullptr, ReadText(dir_ / "root.pem"));
  EXPECT_EQ(wrong.code(), Code::kInvalidArgument) << wrong.ToString();
  EXPECT_FALSE(std::filesystem::exists(config->ca.cert));

  Status imported = ImportCaCertificate(config->ca, nullptr, ReadText(dir_ / "signed.pem"));
  ASSERT_TRUE(imported.ok()) << imported.ToString();
  auto ca = Open(config->ca);
  ASSERT_TRUE(ca);
  auto files = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-1");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto issued = ca->Issue(csr.get(), "gw-1");
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  auto pem = WriteCert(dir_ / "dev.pem", issued->cert.get());
  std::string out = MustRun({"openssl", "verify", "-CAfile", (dir_ / "root.pem").string(),
                             "-untrusted", config->ca.cert.string(), pem.string()});
  EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  // The CA's own CSR can be made again from the key (renewal).
  auto again = MakeCaCsr(config->ca, nullptr, "");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(NameToString(X509_REQ_get_subject_name(again->get())), "CN = Site CA, O = Acme");
}

}  // namespace
}  // namespace ga::pki
