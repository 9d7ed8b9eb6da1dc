// TpmContext against a real swtpm: SRK handling, key creation, signing, and
// the errors an operator sees; no transient object is ever left behind.
#include "gateway_agent/tpm/tpm_context.h"

#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <thread>

#include "fixtures.h"
#include "tpm_test_support.h"

namespace ga::tpm {
namespace {

using ga::testing::FreePort;
using ga::testing::Swtpm;
using ga::testing::TempDir;
using testing::MustRun;
using testing::TpmToolsEnv;
using testing::VerifySha256;

std::string Sha256(const std::string& m) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(m.data()), m.size(), d);
  return std::string(reinterpret_cast<char*>(d), sizeof(d));
}

bool Contains(const Status& s, std::string_view fragment) {
  return s.message().find(fragment) != std::string::npos;
}

class TpmContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto swtpm = Swtpm::Start();
    ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
    swtpm_ = std::move(*swtpm);
  }
  std::shared_ptr<TpmContext> Open(uint32_t srk = kDefaultSrkHandle) {
    auto tpm = TpmContext::Open({.tcti = swtpm_->tcti(), .srk_handle = srk});
    EXPECT_TRUE(tpm.ok()) << tpm.status().ToString();
    return tpm.ok() ? *tpm : nullptr;
  }
  void ExpectNoTransients(TpmContext& tpm) {
    auto handles = tpm.TransientHandles();
    ASSERT_TRUE(handles.ok()) << handles.status().ToString();
    EXPECT_TRUE(handles->empty()) << handles->size() << " transient objects left";
  }
  std::unique_ptr<Swtpm> swtpm_;
  TempDir dir_;
};

TEST(TpmOpenTest, NoTpmAtTctiIsUnavailableAndNamesIt) {
  std::string tcti = "swtpm:host=127.0.0.1,port=" + std::to_string(FreePort(2));
  auto tpm = TpmContext::Open({.tcti = tcti});
  ASSERT_FALSE(tpm.ok());
  EXPECT_EQ(tpm.status().code(), Code::kUnavailable) << tpm.status().ToString();
  EXPECT_TRUE(Contains(tpm.status(), tcti)) << tpm.status().ToString();
  EXPECT_TRUE(Contains(tpm.status(), "Tss2_TctiLdr_Initialize")) << tpm.status().ToString();
}

TEST(TpmOpenTest, MissingDeviceAndUnknownTcti) {
  auto dev = TpmContext::Open({.tcti = "device:/nonexistent/tpmrm9"});
  ASSERT_FALSE(dev.ok());
  EXPECT_TRUE(Contains(dev.status(), "/nonexistent/tpmrm9")) << dev.status().ToString();
  auto unknown = TpmContext::Open({.tcti = "nosuchtcti:foo"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(Contains(unknown.status(), "nosuchtcti")) << unknown.status().ToString();
}

TEST(TpmOpenTest, SrkHandleMustBePersistent) {
  auto tpm = TpmContext::Open({.tcti = "device:/dev/null", .srk_handle = 0x80000001});
  ASSERT_FALSE(tpm.ok());
  EXPECT_EQ(tpm.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(tpm.status(), "0x80000001")) << tpm.status().ToString();
}

TEST_F(TpmContextTest, InfoDescribesTheTpm) {
  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto info = tpm->Info();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->manufacturer, "IBM");
  EXPECT_FALSE(info->firmware_version.empty());
  EXPECT_FALSE(info->srk_present);
  EXPECT_GT(info->free_transient_slots, 0u);
  EXPECT_GT(info->free_persistent_slots, 0u);
  ASSERT_TRUE(tpm->EnsureSrk().ok());
  info = tpm->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->srk_present);
}

TEST_F(TpmContextTest, SrkIsCreatedOnceAndNeverRecreated) {
  std::string point;
  {
    auto tpm = Open();
    ASSERT_TRUE(tpm);
    auto created = tpm->EnsureSrk();
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    EXPECT_TRUE(*created);
    auto key = tpm->CreateKey();
    ASSERT_TRUE(key.ok()) << key.status().ToString();
    ASSERT_TRUE(key->WriteFile(dir_ / "k.pem").ok());
  }
  ASSERT_TRUE(swtpm_->Restart().ok());  // a reboot
  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto created = tpm->EnsureSrk();
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_FALSE(*created);
  // A key made before the reboot still loads under the same SRK.
  auto key = TpmKeyBlob::ReadFile(dir_ / "k.pem");
  ASSERT_TRUE(key.ok());
  auto sig = tpm->SignDigest(*key, Sha256("after reboot"));
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  EXPECT_TRUE(VerifySha256(*key, "after reboot", *sig));
  ExpectNoTransients(*tpm);
}

TEST_F(TpmContextTest, EccKeySignsVerifiably) {
  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto key = tpm->CreateKey(KeyAlgorithm::kEccP256);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(key->algorithm(), KeyAlgorithm::kEccP256);
  EXPECT_EQ(key->ec_point().size(), 65u);
  auto sig = tpm->SignDigest(*key, Sha256("hello"));
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  EXPECT_LE(sig->size(), 72u);
  EXPECT_TRUE(VerifySha256(*key, "hello", *sig));
  EXPECT_FALSE(VerifySha256(*key, "hellO", *sig));
  // The key's scheme fixes SHA-256.
  auto sig384 = tpm->SignDigest(*key, std::string(48, 'x'));
  EXPECT_EQ(sig384.status().code(), Code::kInvalidArgument);
  auto bad = tpm->SignDigest(*key, "short");
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  ExpectNoTransients(*tpm);
}

TEST_F(TpmContextTest, RsaKeySignsVerifiably) {
  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto key = tpm->CreateKey(KeyAlgorithm::kRsa2048);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(key->algorithm(), KeyAlgorithm::kRsa2048);
  auto sig = tpm->SignDigest(*key, Sha256("hello rsa"));
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  EXPECT_EQ(sig->size(), 256u);
  EXPECT_TRUE(VerifySha256(*key, "hello rsa", *sig));
  ExpectNoTransients(*tpm);
}

TEST_F(TpmContextTest, ForeignKeyIsRefusedClearly) {
  auto other_swtpm = Swtpm::Start();
  ASSERT_TRUE(other_swtpm.ok());
  auto other = TpmContext::Open({.tcti = (*other_swtpm)->tcti()});
  ASSERT_TRUE(other.ok());
  auto foreign = (*other)->CreateKey();
  ASSERT_TRUE(foreign.ok());

  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto sig = tpm->SignDigest(*foreign, Sha256("x"));
  ASSERT_FALSE(sig.ok());
  EXPECT_EQ(sig.status().code(), Code::kInvalidArgument) << sig.status().ToString();
  EXPECT_TRUE(Contains(sig.status(), "another TPM")) << sig.status().ToString();
  EXPECT_TRUE(Contains(sig.status(), "Esys_Load")) << sig.status().ToString();
  EXPECT_TRUE(Contains(sig.status(), swtpm_->tcti())) << sig.status().ToString();
  EXPECT_TRUE(Contains(sig.status(), "0x81000001")) << sig.status().ToString();
  ExpectNoTransients(*tpm);
}

TEST_F(TpmContextTest, DamagedPrivateBlobIsRefused) {
  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto key = tpm->CreateKey();
  ASSERT_TRUE(key.ok());
  std::string priv = key->private_area();
  priv[priv.size() / 2] ^= 0x5a;
  auto damaged = TpmKeyBlob::FromParts(key->public_area(), priv, key->parent(), true, "test");
  ASSERT_TRUE(damaged.ok()) << damaged.status().ToString();
  auto sig = tpm->SignDigest(*damaged, Sha256("x"));
  ASSERT_FALSE(sig.ok());
  EXPECT_EQ(sig.status().code(), Code::kInvalidArgument) << sig.status().ToString();
  ExpectNoTransients(*tpm);
}

TEST_F(TpmContextTest, KeyFileParentDifferentFromConfiguredSrk) {
  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto key = tpm->CreateKey();
  ASSERT_TRUE(key.ok());
  auto moved =
      TpmKeyBlob::FromParts(key->public_area(), key->private_area(), 0x81000005, true, "test");
  ASSERT_TRUE(moved.ok());
  auto sig = tpm->SignDigest(*moved, Sha256("x"));
  ASSERT_FALSE(sig.ok());
  EXPECT_EQ(sig.status().code(), Code::kFailedPrecondition);
  EXPECT_TRUE(Contains(sig.status(), "0x81000005")) << sig.status().ToString();
  EXPECT_TRUE(Contains(sig.status(), "0x81000001")) << sig.status().ToString();
}

TEST_F(TpmContextTest, SrkHandleHoldingASigningKeyIsNotUsed) {
  // An operator's signing key persisted at 0x81000002 (with tpm2-tools).
  auto env = TpmToolsEnv(swtpm_->tcti());
  MustRun({"tpm2_startup", "-c"}, env);
  MustRun({"tpm2_createprimary", "-C", "o", "-G", "ecc256:ecdsa-sha256", "-a",
           "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign", "-c",
           (dir_ / "p.ctx").string()},
          env);
  MustRun({"tpm2_evictcontrol", "-C", "o", "-c", (dir_ / "p.ctx").string(), "0x81000002"}, env);
  MustRun({"tpm2_flushcontext", "-t"}, env);

  auto tpm = Open(0x81000002);
  ASSERT_TRUE(tpm);
  auto key = tpm->CreateKey();
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), Code::kFailedPrecondition) << key.status().ToString();
  EXPECT_TRUE(Contains(key.status(), "0x81000002")) << key.status().ToString();
  EXPECT_TRUE(Contains(key.status(), "not a storage key")) << key.status().ToString();
  auto info = tpm->Info();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_FALSE(info->srk_present);
  EXPECT_FALSE(info->srk_problem.empty());
  ExpectNoTransients(*tpm);
}

TEST_F(TpmContextTest, DictionaryAttackLockoutIsReported) {
  std::string blob_path = (dir_ / "k.pem").string();
  {
    auto tpm = Open();
    ASSERT_TRUE(tpm);
    auto key = tpm->CreateKey();
    ASSERT_TRUE(key.ok());
    ASSERT_TRUE(key->WriteFile(blob_path).ok());
  }
  // One allowed failure, then one wrong password on a DA-protected key made
  // with tpm2-tools: the TPM enters lockout for every DA-protected key.
  auto env = TpmToolsEnv(swtpm_->tcti());
  auto f = [&](const char* name) { return (dir_ / name).string(); };
  MustRun({"tpm2_dictionarylockout", "-s", "-n", "1", "-t", "600", "-l", "600"}, env);
  MustRun({"tpm2_create", "-C", "0x81000001", "-G", "ecc", "-p", "secret", "-u", f("pub"), "-r",
           f("priv")},
          env);
  MustRun({"tpm2_load", "-C", "0x81000001", "-u", f("pub"), "-r", f("priv"), "-c", f("key.ctx")},
          env);
  testing::WriteText(dir_ / "msg", "x");
  auto wrong = ga::testing::RunCommand(
      {"tpm2_sign", "-c", f("key.ctx"), "-p", "wrong", "-g", "sha256", "-o", f("sig"), f("msg")},
      std::chrono::seconds(30), env);
  EXPECT_NE(wrong.exit_code, 0) << wrong.output;
  MustRun({"tpm2_flushcontext", "-t"}, env);

  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto info = tpm->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->in_lockout);
  auto key = TpmKeyBlob::ReadFile(blob_path);
  ASSERT_TRUE(key.ok());
  auto sig = tpm->SignDigest(*key, Sha256("x"));
  ASSERT_FALSE(sig.ok());
  EXPECT_EQ(sig.status().code(), Code::kUnavailable) << sig.status().ToString();
  EXPECT_TRUE(Contains(sig.status(), "lockout")) << sig.status().ToString();
  EXPECT_TRUE(Contains(sig.status(), "Esys_Sign")) << sig.status().ToString();
  ExpectNoTransients(*tpm);
}

// swtpm killed under an open context and started again on the same port and
// state: the context reconnects by itself, says "TPM unreachable" meanwhile,
// and keys made before keep signing.
TEST_F(TpmContextTest, ReconnectsAfterTheTpmRestarts) {
  auto tpm = Open();
  ASSERT_NE(tpm, nullptr);
  auto key = tpm->CreateKey();
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_TRUE(tpm->Health().ok());

  swtpm_->Kill();
  auto lost = tpm->SignDigest(*key, Sha256("while away"));
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), Code::kUnavailable) << lost.status().ToString();
  Status health = tpm->Health();
  EXPECT_EQ(health.code(), Code::kUnavailable);
  EXPECT_TRUE(Contains(health, "TPM unreachable: " + swtpm_->tcti() + ": ")) << health.ToString();
  // Paced: a second call right away does not reconnect, it reports the same.
  auto again = tpm->CreateKey();
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(Contains(again.status(), "TPM unreachable")) << again.status().ToString();

  ASSERT_TRUE(swtpm_->Relaunch().ok());
  Result<std::string> sig = Unavailable("not tried");
  for (int i = 0; i < 100 && !sig.ok(); ++i) {  // the pacing is at most 5 s
    sig = tpm->SignDigest(*key, Sha256("back"));
    if (!sig.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  EXPECT_TRUE(VerifySha256(*key, "back", *sig));
  EXPECT_TRUE(tpm->Health().ok()) << tpm->Health().ToString();
  auto fresh = tpm->CreateKey();
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  auto fresh_sig = tpm->SignDigest(*fresh, Sha256("fresh"));
  ASSERT_TRUE(fresh_sig.ok()) << fresh_sig.status().ToString();
  EXPECT_TRUE(VerifySha256(*fresh, "fresh", *fresh_sig));

  // A restart between two calls (no call sees the TPM away): the next call
  // reconnects and succeeds on its first try, transparently.
  ASSERT_TRUE(swtpm_->Restart().ok());
  auto after = tpm->SignDigest(*key, Sha256("after restart"));
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_TRUE(VerifySha256(*key, "after restart", *after));
  ExpectNoTransients(*tpm);
}

TEST_F(TpmContextTest, ManyOperationsAndFailuresLeaveNoTransientObject) {
  auto other_swtpm = Swtpm::Start();
  ASSERT_TRUE(other_swtpm.ok());
  auto other = TpmContext::Open({.tcti = (*other_swtpm)->tcti()});
  ASSERT_TRUE(other.ok());
  auto foreign = (*other)->CreateKey();
  ASSERT_TRUE(foreign.ok());

  auto tpm = Open();
  ASSERT_TRUE(tpm);
  std::vector<TpmKeyBlob> keys;
  for (int i = 0; i < 5; ++i) {
    auto key = tpm->CreateKey(i == 4 ? KeyAlgorithm::kRsa2048 : KeyAlgorithm::kEccP256);
    ASSERT_TRUE(key.ok()) << key.status().ToString();
    keys.push_back(*key);
  }
  // More signatures than swtpm has object slots, mixed with failures.
  for (int i = 0; i < 30; ++i) {
    const TpmKeyBlob& key = keys[i % keys.size()];
    std::string msg = "message " + std::to_string(i);
    auto sig = tpm->SignDigest(key, Sha256(msg));
    ASSERT_TRUE(sig.ok()) << i << ": " << sig.status().ToString();
    EXPECT_TRUE(VerifySha256(key, msg, *sig));
    EXPECT_FALSE(tpm->SignDigest(*foreign, Sha256(msg)).ok());
  }
  ExpectNoTransients(*tpm);
}

TEST_F(TpmContextTest, ConcurrentSignersShareOneContext) {
  auto tpm = Open();
  ASSERT_TRUE(tpm);
  auto key = tpm->CreateKey();
  ASSERT_TRUE(key.ok());
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        std::string msg = std::to_string(t) + "/" + std::to_string(i);
        auto sig = tpm->SignDigest(*key, Sha256(msg));
        if (sig.ok() && VerifySha256(*key, msg, *sig)) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 40);
  ExpectNoTransients(*tpm);
}

}  // namespace
}  // namespace ga::tpm
