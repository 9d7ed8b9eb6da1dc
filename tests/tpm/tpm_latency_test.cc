// The TPM latency model (tests/fixtures/tpm_latency.h) in front of a real
// swtpm, driven by the agent's own TpmContext: every command reaches swtpm
// and is counted, and no response comes back before the modelled chip would
// have finished it.
#include "tpm_latency.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "fixtures.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;

// swtpm behind the model of `profile`, and the agent's TpmContext on it
// with its SRK.
struct ModelledTpm {
  std::unique_ptr<Swtpm> swtpm;
  std::unique_ptr<TpmLatencyRelay> relay;
  std::shared_ptr<tpm::TpmContext> tpm;
};

Result<ModelledTpm> StartModelled(const std::string& profile_name) {
  ModelledTpm m;
  GA_ASSIGN_OR_RETURN(m.swtpm, Swtpm::Start());
  GA_ASSIGN_OR_RETURN(TpmProfile profile, TpmProfileNamed(profile_name));
  GA_ASSIGN_OR_RETURN(m.relay, TpmLatencyRelay::Start(m.swtpm->port(), profile));
  GA_ASSIGN_OR_RETURN(m.tpm, tpm::TpmContext::Open({.tcti = m.relay->tcti()}));
  GA_RETURN_IF_ERROR(m.tpm->EnsureSrk().status());
  return m;
}

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
  auto start = Clock::now();
  auto m = StartModelled("discrete");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto& tpm = m->tpm;
  auto& relay = m->relay;
  auto key = tpm->CreateKey();
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  auto signature = tpm->SignDigest(*key, std::string(32, 'd'));
  ASSERT_TRUE(signature.ok()) << signature.status().ToString();
  auto elapsed = std::chrono::duration_cast<microseconds>(Clock::now() - start);

  auto stats = relay->stats();
  const std::string seen = TpmCommandCounts(stats.commands);
  EXPECT_EQ(stats.commands[kTpmCcCreate], 1) << seen;
  EXPECT_EQ(stats.commands[kTpmCcSign], 1) << seen;
  EXPECT_GE(stats.commands[kTpmCcLoad], 1);
  EXPECT_GE(stats.commands[kTpmCcFlushContext], 1);  // the signing key, flushed
  EXPECT_EQ(relay->TimeOf(stats.commands), stats.busy);
  // At least Create + Load + Sign + FlushContext of the profile, and the
  // responses came no sooner than the modelled chip could give them.
  EXPECT_GE(stats.busy, std::chrono::milliseconds(150 + 15 + 57 + 2));
  EXPECT_GE(elapsed, stats.busy);
}

TEST(TpmLatency, TheSwtpmProfileAddsNothingButCounts) {
  auto m = StartModelled("swtpm");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE(m->tpm->CreateKey().ok());
  auto stats = m->relay->stats();
  EXPECT_EQ(stats.commands[kTpmCcCreate], 1);
  EXPECT_EQ(stats.busy, microseconds(0));
}

}  // namespace
}  // namespace ga::testing
