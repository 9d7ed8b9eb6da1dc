// Who uses the TPM next. A discrete TPM chip runs one command at a time and
// takes 50-230 ms to create a key and 23-190 ms to sign, so after a cloud
// outage the reconnect handshakes of every identity queue on it, while new
// enrollments want keys too. Each caller says what its work is for (a
// thread-local TpmWork, set with TpmWorkScope), and the TpmContext lets the
// most urgent waiting caller in first:
//
//   1. the gateway's own handshake (its connection carries the shared-mode
//      sensors and the gateway's own traffic);
//   2. handshakes of identities with messages waiting in the outbox;
//   3. other handshakes;
//   4. background work: key creation, CSR signing and JITR connects of new
//      enrollments and renewals, key tests.
//
// Background work also yields while handshakes are announced (queued, or TCP
// connected with their signature next) and until none has been for
// kHandshakeQuiet, for at
// most kBackgroundPatience per TPM call, so a long run of reconnects delays
// enrollments but never starves them.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <set>
#include <utility>

#include "gateway_agent/thread_annotations.h"

namespace ga::tpm {

enum class TpmWork : int {
  kGatewayHandshake = 0,
  kWaitingHandshake = 1,
  kHandshake = 2,
  kBackground = 3,
};

// The calling thread's class of TPM work: kHandshake unless a scope says.
TpmWork CurrentTpmWork();

// Sets the calling thread's class of TPM work until destroyed.
class TpmWorkScope {
 public:
  explicit TpmWorkScope(TpmWork work);
  ~TpmWorkScope();
  TpmWorkScope(const TpmWorkScope&) = delete;
  TpmWorkScope& operator=(const TpmWorkScope&) = delete;

 private:
  TpmWork previous_;
};

// A handshake that will need the TPM (queued for a handshake thread, or its
// TCP connect done): background work waits while any is announced.
// Process-wide: the agent has one TPM.
class HandshakeAnnouncement {
 public:
  HandshakeAnnouncement();
  ~HandshakeAnnouncement();
  HandshakeAnnouncement(const HandshakeAnnouncement&) = delete;
  HandshakeAnnouncement& operator=(const HandshakeAnnouncement&) = delete;
  // Whether one is announced, or one ended less than kHandshakeQuiet ago
  // (between a handshake's end and its CONNACK, which lets others in).
  static bool Recent();
};

inline constexpr std::chrono::milliseconds kHandshakeQuiet{50};
inline constexpr std::chrono::seconds kBackgroundPatience{20};

// One user at a time, the most urgent class first and in arrival order
// within a class.
class TpmScheduler {
 public:
  // Holds the TPM from Enter to destruction.
  class Turn {
   public:
    Turn(Turn&& other) noexcept : scheduler_(std::exchange(other.scheduler_, nullptr)) {}
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;
    Turn& operator=(Turn&&) = delete;
    ~Turn() {
      if (scheduler_ != nullptr) scheduler_->Leave();
    }

   private:
    friend class TpmScheduler;
    explicit Turn(TpmScheduler* scheduler) : scheduler_(scheduler) {}
    TpmScheduler* scheduler_;
  };

  // Waits for the TPM as `work` (the calling thread's class by default).
  Turn Enter(TpmWork work = CurrentTpmWork()) GA_EXCLUDES(mu_);

 private:
  void Leave() GA_EXCLUDES(mu_);
  Mutex mu_;
  std::condition_variable_any cv_;
  bool busy_ GA_GUARDED_BY(mu_) = false;
  uint64_t next_ticket_ GA_GUARDED_BY(mu_) = 0;
  // (class, ticket) of every waiter; the first one goes next.
  std::set<std::pair<int, uint64_t>> waiting_ GA_GUARDED_BY(mu_);
};

}  // namespace ga::tpm
