// The running agent's watch over what breaks while nobody looks: the TPM
// (probed every few seconds, so an idle agent notices it leave and come
// back), the bridge's links and outbox, and each ACTIVE identity's key and
// certificate files (re-read when they change on disk). It writes the health
// report that `gateway-agent status` reads (agent_health.h), gives the
// service's STATUS= its first problem, warns while the local broker lets
// anonymous clients in (probed now and then), and repairs what enrolling again can
// repair: an identity whose key is gone gets a new key and certificate, one
// whose certificate does not fit its key a new certificate (at most once per
// kRepairSpacing per identity, so a fault that comes back is not a loop); the
// fault stays the identity's problem in the report until it is ACTIVE again. An
// identity whose certificate AWS IoT turns away while other connections are
// up (an operator's INACTIVE or REVOKED) is PARKED, not renewed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bridge_feed.h"
#include "gateway_agent/agent/agent_health.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/bridge/bridge.h"
#include "gateway_agent/thread_annotations.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {

class HealthMonitor {
 public:
  static constexpr std::chrono::seconds kTpmProbeEvery{3};
  static constexpr std::chrono::seconds kFilesCheckEvery{3};
  static constexpr std::chrono::minutes kRepairSpacing{10};
  // CONNECTs in a row turned away by AWS IoT, with other connections up,
  // after which an identity is PARKED.
  static constexpr int kRefusalsToPark = 3;
  // An identity whose cloud connection fails has its key tried in the TPM
  // (one signature) at most this often.
  static constexpr std::chrono::minutes kKeyTestEvery{1};
  // and at most this many per TPM probe, only while some connection is up.
  static constexpr size_t kKeyTestsPerProbe = 4;
  // The local broker is asked whether it lets an anonymous client in, and
  // whether it lets a client publish outside its own topics, this often (an
  // operator who fixes it sees the warning go), after each new connection of
  // the bridge to it, and every kBoundaryRetry while it cannot tell.
  static constexpr std::chrono::minutes kBoundaryProbeEvery{5};
  static constexpr std::chrono::seconds kBoundaryRetry{10};

  struct Parts {
    std::shared_ptr<tpm::TpmContext> tpm;
    bridge::Bridge* bridge = nullptr;
    std::filesystem::path report;             // runtime_dir / kHealthFile
    LocalCredentials* credentials = nullptr;  // local.manage_clients
    LocalConfig local;                        // for the boundary probes
  };
  explicit HealthMonitor(Parts parts);
  // Stops the TPM probe and removes the report (the agent is not running).
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // Tells the bridge about `id` (TellBridge) and keeps the outcome: a fault
  // is shown and repaired, files that load are watched. Any thread.
  void Feed(const Identity& id) GA_EXCLUDES(mu_, feed_mu_);

  // The main loop, about once a second: re-feeds identities whose files
  // changed, repairs faulty ones through `enrollment`, and writes the report
  // when it changed or is due. Returns the report, for STATUS=.
  const AgentHealth& Tick(Enrollment& enrollment) GA_EXCLUDES(mu_);

 private:
  struct FileStamp {
    bool exists = false;
    int64_t size = 0, mtime_ns = 0, inode = 0;
    bool operator==(const FileStamp&) const = default;
  };
  struct Watched {
    Identity identity;
    FileStamp key, chain;
    CredentialCheck check;
    std::chrono::steady_clock::time_point next_key_test{};
  };
  static FileStamp Stamp(const std::string& path);
  void ProbeTpm();
  void ProbeBoundary() GA_EXCLUDES(mu_);
  // An open broker, else (local.manage_clients) one that lets the probe's
  // client publish to a sensor's topic; an error when it could not tell.
  Result<std::optional<std::string>> BoundaryWarning();
  // Waits `period` or until the monitor stops; true when it stops.
  bool Stopped(std::chrono::steady_clock::duration period) GA_EXCLUDES(probe_mu_);
  // A key the TPM refuses to load or use: what to say, or nullopt when the
  // key works (or the TPM is away). Runs one signature in the TPM.
  std::optional<std::string> KeyRefusedByTpm(const Identity& id);
  // The probe thread: the keys of identities whose connection fails.
  void TestKeysOfFailingConnections() GA_EXCLUDES(mu_);
  AgentHealth Gather() GA_EXCLUDES(mu_);
  void Repair(Enrollment& enrollment) GA_EXCLUDES(mu_);
  void ParkRefused(Enrollment& enrollment) GA_EXCLUDES(mu_);
  void RecheckFiles() GA_EXCLUDES(mu_, feed_mu_);
  void FeedLocked(const Identity& id) GA_REQUIRES(feed_mu_) GA_EXCLUDES(mu_);

  Parts parts_;
  // One Feed at a time, so that a re-feed of files that changed never tells
  // the bridge an identity older than the one a worker fed meanwhile (a
  // renewal's switch deletes the previous files). Taken before mu_.
  Mutex feed_mu_;
  Mutex mu_;
  std::map<std::string, Watched> watched_ GA_GUARDED_BY(mu_);
  // Identities enrolled again by Repair, with the fault that made it so:
  // shown as their problem until they are ACTIVE again (or leave enrolling).
  std::map<std::string, std::string> reenrolling_ GA_GUARDED_BY(mu_);
  std::optional<std::string> open_broker_ GA_GUARDED_BY(mu_);
  std::map<std::string, std::chrono::steady_clock::time_point> repaired_;  // main loop only
  AgentHealth last_;                                                       // main loop only
  std::chrono::steady_clock::time_point next_files_check_{}, next_write_{};

  Mutex probe_mu_;
  std::condition_variable_any probe_cv_;
  bool stop_ GA_GUARDED_BY(probe_mu_) = false;
  std::thread probe_, boundary_;
};

}  // namespace ga
