// The TPM latency model (tests/fixtures/tpm_latency.h) in front of a real
// swtpm, driven by the agent's own TpmContext: every command reaches swtpm
// and is counted, and no response comes back before the modelled chip would
// have finished it.
#include "tpm_latency.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "fixtures.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;

TEST(TpmLatency, ProfilesAreKnownByName) {
  auto swtpm = TpmProfileNamed("swtpm");
  ASSERT_TRUE(swtpm.ok());
  EXPECT_EQ(swtpm->DelayOf(kTpmCcSign), microseconds(0));
  auto discrete = TpmProfileNamed("discrete");
  ASSERT_TRUE(discrete.ok());
  EXPECT_EQ(discrete->DelayOf(kTpmCcCreate), std::chrono::milliseconds(150));
  EXPECT_EQ(discrete->DelayOf(kTpmCcSign), std::chrono::milliseconds(57));
  auto unknown = TpmProfileNamed("fast");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("known: swtpm, discrete"), std::string::npos);
  EXPECT_EQ(TpmCommandName(kTpmCcFlushContext), "FlushContext");
  EXPECT_EQ(TpmCommandName(0x999), "0x999");
}

TEST(TpmLatency, ADiscreteChipTakesItsTimeForEachCommand) {
  auto swtpm = Swtpm::Start();
  ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
  auto profile = TpmProfileNamed("discrete");
  ASSERT_TRUE(profile.ok());
  auto relay = TpmLatencyRelay::Start((*swtpm)->port(), *profile);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();

  auto start = Clock::now();
  auto tpm = tpm::TpmContext::Open({.tcti = (*relay)->tcti()});
  ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
  ASSERT_TRUE((*tpm)->EnsureSrk().ok());
  auto key = (*tpm)->CreateKey();
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  auto signature = (*tpm)->SignDigest(*key, std::string(32, 'd'));
  ASSERT_TRUE(signature.ok()) << signature.status().ToString();
  auto elapsed = std::chrono::duration_cast<microseconds>(Clock::now() - start);

  auto stats = (*relay)->stats();
  std::string seen;
  for (const auto& [code, n] : stats.commands)
    seen += TpmCommandName(code) + "=" + std::to_string(n) + " ";
  EXPECT_EQ(stats.commands[kTpmCcCreate], 1) << seen;
  EXPECT_EQ(stats.commands[kTpmCcSign], 1) << seen;
  EXPECT_GE(stats.commands[kTpmCcLoad], 1);
  EXPECT_GE(stats.commands[kTpmCcFlushContext], 1);  // the signing key, flushed
  EXPECT_EQ((*relay)->TimeOf(stats.commands), stats.busy);
  // At least Create + Load + Sign + FlushContext of the profile, and the
  // responses came no sooner than the modelled chip could give them.
  EXPECT_GE(stats.busy, std::chrono::milliseconds(150 + 15 + 57 + 2));
  EXPECT_GE(elapsed, stats.busy);
}

// Like a chip, the model runs one command at a time, whoever sends it: two
// contexts signing at once take the sum of their signatures.
TEST(TpmLatency, TwoClientsAreServedOneCommandAtATime) {
  auto swtpm = Swtpm::Start();
  ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
  auto profile = TpmProfileNamed("discrete");
  ASSERT_TRUE(profile.ok());
  auto relay = TpmLatencyRelay::Start((*swtpm)->port(), *profile);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  auto tpm = tpm::TpmContext::Open({.tcti = (*relay)->tcti()});
  ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
  ASSERT_TRUE((*tpm)->EnsureSrk().ok());
  auto key = (*tpm)->CreateKey();
  ASSERT_TRUE(key.ok()) << key.status().ToString();

  auto before = (*relay)->stats();
  auto start = Clock::now();
  std::vector<std::thread> signers;
  for (int i = 0; i < 3; ++i) {
    signers.emplace_back([&] { EXPECT_TRUE((*tpm)->SignDigest(*key, std::string(32, 'x')).ok()); });
  }
  for (auto& t : signers) t.join();
  auto elapsed = std::chrono::duration_cast<microseconds>(Clock::now() - start);
  auto after = (*relay)->stats();
  EXPECT_EQ(after.commands[kTpmCcSign] - before.commands[kTpmCcSign], 3);
  EXPECT_GE(elapsed, 3 * profile->DelayOf(kTpmCcSign));
}

TEST(TpmLatency, TheSwtpmProfileAddsNothingButCounts) {
  auto swtpm = Swtpm::Start();
  ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
  auto profile = TpmProfileNamed("swtpm");
  ASSERT_TRUE(profile.ok());
  auto relay = TpmLatencyRelay::Start((*swtpm)->port(), *profile);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  auto tpm = tpm::TpmContext::Open({.tcti = (*relay)->tcti()});
  ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
  ASSERT_TRUE((*tpm)->EnsureSrk().ok());
  ASSERT_TRUE((*tpm)->CreateKey().ok());
  auto stats = (*relay)->stats();
  EXPECT_EQ(stats.commands[kTpmCcCreate], 1);
  EXPECT_EQ(stats.busy, microseconds(0));
}

}  // namespace
}  // namespace ga::testing
