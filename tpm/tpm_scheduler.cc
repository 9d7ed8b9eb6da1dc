#include "gateway_agent/tpm/tpm_scheduler.h"

#include <atomic>

namespace ga::tpm {

namespace {

thread_local TpmWork current_work = TpmWork::kHandshake;
std::atomic<int> announced{0};
// When the last announcement ended (steady clock, nanoseconds since epoch).
std::atomic<int64_t> last_announcement_end{0};

// How often a yielding background caller looks at the announcements again.
constexpr std::chrono::milliseconds kYieldPoll{20};

}  // namespace

TpmWork CurrentTpmWork() {
  return current_work;
}

TpmWorkScope::TpmWorkScope(TpmWork work) : previous_(std::exchange(current_work, work)) {}

TpmWorkScope::~TpmWorkScope() {
  current_work = previous_;
}

HandshakeAnnouncement::HandshakeAnnouncement() {
  announced.fetch_add(1);
}

HandshakeAnnouncement::~HandshakeAnnouncement() {
  last_announcement_end.store(std::chrono::steady_clock::now().time_since_epoch().count());
  announced.fetch_sub(1);
}

bool HandshakeAnnouncement::Recent() {
  if (announced.load() > 0) return true;
  const auto end = std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(last_announcement_end.load()));
  return std::chrono::steady_clock::now() - end < kHandshakeQuiet;
}

TpmScheduler::Turn TpmScheduler::Enter(TpmWork work) {
  MutexLock lock(mu_);
  const std::pair<int, uint64_t> me{static_cast<int>(work), next_ticket_++};
  waiting_.insert(me);
  const bool background = work == TpmWork::kBackground;
  const auto patience_end = std::chrono::steady_clock::now() + kBackgroundPatience;
  while (true) {
    const bool first = *waiting_.begin() == me;
    const bool yield = background && HandshakeAnnouncement::Recent() &&
                       std::chrono::steady_clock::now() < patience_end;
    if (!busy_ && first && !yield) break;
    if (background) {
      cv_.wait_for(mu_, kYieldPoll);
    } else {
      cv_.wait(mu_);
    }
  }
  waiting_.erase(me);
  busy_ = true;
  return Turn(this);
}

void TpmScheduler::Leave() {
  {
    MutexLock lock(mu_);
    busy_ = false;
  }
  cv_.notify_all();
}

}  // namespace ga::tpm
