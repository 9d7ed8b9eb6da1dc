// Issues device certificates with the file CA and the tpm CA (on swtpm) and
// compares them with the seed's route: `openssl x509 -req` per certificate.
// Prints certificates per second and ratios; exits non-zero on any failure.
//
//   pki_issue_bench [count]      (default 200; the tpm CA does count/4)
#include <openssl/pem.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fixtures.h"
#include "gateway_agent/files.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int Fail(const std::string& what, const ga::Status& s) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), s.ToString().c_str());
  return 1;
}

// Certificates per second for `count` issues by `ca`, or a negative value.
double IssueRate(ga::pki::LocalCa& ca, X509_REQ* csr, int count) {
  auto start = Clock::now();
  for (int i = 0; i < count; ++i) {
    auto issued = ca.Issue(csr, "bench-thing");
    if (!issued.ok()) {
      Fail("issue", issued.status());
      return -1;
    }
  }
  return count / Seconds(Clock::now() - start);
}

}  // namespace

int main(int argc, char** argv) {
  int count = argc > 1 ? std::atoi(argv[1]) : 200;
  if (count < 4) count = 4;
  ga::testing::TempDir dir;

  auto libctx = ga::tpm::LibCtx();
  if (!libctx.ok()) return Fail("LibCtx", libctx.status());
  ga::EvpPkeyPtr device_key(EVP_PKEY_Q_keygen(*libctx, nullptr, "EC", "P-256"));
  auto csr = ga::tpm::MakeCsr(device_key.get(), "CN=bench-thing");
  if (!csr.ok()) return Fail("csr", csr.status());
  auto csr_pem = ga::CsrToPem(csr->get());
  if (!csr_pem.ok()) return Fail("csr pem", csr_pem.status());
  if (auto s = ga::WriteFileAtomic(dir / "dev.csr", *csr_pem, 0644); !s.ok()) return Fail("w", s);

  // File CA.
  ga::pki::CaInitOptions init;
  init.subject = "CN=Bench CA";
  init.out_dir = dir / "file";
  if (auto r = ga::pki::InitLocalCa(init); !r.ok()) return Fail("init file CA", r.status());
  auto file_dir = ga::pki::ReadCaDirectory(dir / "file");
  if (!file_dir.ok()) return Fail("read file CA", file_dir.status());
  auto file_ca = ga::pki::OpenLocalCa(file_dir->ca);
  if (!file_ca.ok()) return Fail("open file CA", file_ca.status());
  double file_rate = IssueRate(**file_ca, csr->get(), count);
  if (file_rate < 0) return 1;

  // The peer: the seed's `openssl x509 -req` per certificate, same CA.
  int cli_count = count / 4;
  auto start = Clock::now();
  for (int i = 0; i < cli_count; ++i) {
    auto r = ga::testing::RunCommand({"openssl", "x509", "-req", "-in", (dir / "dev.csr").string(),
                                      "-CA", (dir / "file" / "ca.pem").string(), "-CAkey",
                                      (dir / "file" / "ca.key").string(), "-days", "365", "-sha256",
                                      "-out", (dir / "cli.pem").string()});
    if (r.exit_code != 0) {
      std::fprintf(stderr, "openssl x509 -req failed: %s\n", r.output.c_str());
      return 1;
    }
  }
  double cli_rate = cli_count / Seconds(Clock::now() - start);

  // TPM CA on swtpm. (The TSS logs the expected "no SRK yet" lookup otherwise.)
  setenv("TSS2_LOG", "all+none", 0);
  auto swtpm = ga::testing::Swtpm::Start();
  if (!swtpm.ok()) return Fail("swtpm", swtpm.status());
  auto tpm = ga::tpm::TpmContext::Open({.tcti = (*swtpm)->tcti()});
  if (!tpm.ok()) return Fail("tpm", tpm.status());
  init.backend = ga::CaBackend::kTpm;
  init.out_dir = dir / "tpm";
  init.tpm = *tpm;
  if (auto r = ga::pki::InitLocalCa(init); !r.ok()) return Fail("init tpm CA", r.status());
  auto tpm_dir = ga::pki::ReadCaDirectory(dir / "tpm");
  if (!tpm_dir.ok()) return Fail("read tpm CA", tpm_dir.status());
  auto tpm_ca = ga::pki::OpenLocalCa(tpm_dir->ca, *tpm);
  if (!tpm_ca.ok()) return Fail("open tpm CA", tpm_ca.status());
  double tpm_rate = IssueRate(**tpm_ca, csr->get(), count / 4);
  if (tpm_rate < 0) return 1;

  std::printf("file CA (LocalCa::Issue):        %8.1f certificates/s (%d)\n", file_rate, count);
  std::printf("openssl x509 -req per cert:      %8.1f certificates/s (%d)\n", cli_rate, cli_count);
  std::printf("tpm CA on swtpm (LocalCa::Issue):%8.1f certificates/s (%d)\n", tpm_rate, count / 4);
  std::printf("ratio file CA / openssl CLI:     %8.1fx\n", file_rate / cli_rate);
  std::printf("ratio tpm CA / openssl CLI:      %8.1fx\n", tpm_rate / cli_rate);
  return 0;
}
