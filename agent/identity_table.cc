#include "identity_table.h"

namespace ga {

namespace {

// States with a step to take.
bool Actionable(const Identity& identity) {
  switch (identity.state) {
    case EnrollmentState::kNew:
    case EnrollmentState::kKeyed:
    case EnrollmentState::kCertified:
    case EnrollmentState::kRegistering:
    case EnrollmentState::kActive: return true;  // its certificate's renewal
    default: return false;
  }
}

}  // namespace

void IdentityTable::Reset(std::vector<Identity> identities) {
  MutexLock lock(mu_);
  identities_.clear();
  for (auto& id : identities) identities_[id.name] = std::move(id);
}

void IdentityTable::Start() {
  MutexLock lock(mu_);
  stop_ = false;
}

void IdentityTable::Stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

std::optional<Identity> IdentityTable::TakeDue() {
  MutexLock lock(mu_);
  while (!stop_) {
    const Identity* next = nullptr;
    for (const auto& [name, id] : identities_) {
      // A sensor being removed is never picked again: its entry is not updated
      // any more, so it would look due forever and starve the removal's wait.
      if (!Actionable(id) || in_flight_.count(name) || removed_.count(name) ||
          moving_.count(name)) {
        continue;
      }
      if (next == nullptr || id.next_attempt < next->next_attempt) next = &id;
    }
    if (next == nullptr) {
      cv_.wait(mu_);
      continue;
    }
    Millis now = clock_.WallMillis();
    if (next->next_attempt > now) {
      cv_.wait_for(mu_, std::chrono::milliseconds(next->next_attempt - now));
      continue;
    }
    in_flight_.insert(next->name);
    return *next;
  }
  return std::nullopt;
}

void IdentityTable::Finish(const Identity& identity) {
  {
    MutexLock lock(mu_);
    in_flight_.erase(identity.name);
    if (!removed_.count(identity.name)) {
      Identity& kept = identities_[identity.name] = identity;
      if (woken_.erase(identity.name) && kept.state == EnrollmentState::kActive) {
        kept.next_attempt = std::min(kept.next_attempt, clock_.WallMillis());
      }
    }
  }
  cv_.notify_all();
}

void IdentityTable::WakeActive(const std::set<std::string>& names) {
  {
    MutexLock lock(mu_);
    const Millis now = clock_.WallMillis();
    for (auto& [name, id] : identities_) {
      if (!names.count(name) || id.state != EnrollmentState::kActive ||
          id.renewal != RenewalStep::kNone) {
        continue;
      }
      if (in_flight_.count(name)) {
        woken_.insert(name);
      } else {
        id.next_attempt = std::min(id.next_attempt, now);
      }
    }
  }
  cv_.notify_all();
}

void IdentityTable::FinishUncommitted(const std::string& name, const std::string& error,
                                      Millis next_attempt) {
  {
    MutexLock lock(mu_);
    in_flight_.erase(name);
    auto it = identities_.find(name);
    if (it != identities_.end() && !removed_.count(name)) {
      it->second.last_error = error;
      it->second.next_attempt = next_attempt;
    }
  }
  cv_.notify_all();
}

bool IdentityTable::SleepFor(std::chrono::nanoseconds d) {
  MutexLock lock(mu_);
  const auto until = std::chrono::steady_clock::now() + d;
  while (!stop_ && cv_.wait_until(mu_, until) == std::cv_status::no_timeout) {
  }
  return !stop_;
}

bool IdentityTable::Stopped() {
  MutexLock lock(mu_);
  return stop_;
}

bool IdentityTable::IsRemoved(const std::string& name) {
  MutexLock lock(mu_);
  return removed_.count(name) > 0;
}

void IdentityTable::Keep(const Identity& identity) {
  MutexLock lock(mu_);
  if (!removed_.count(identity.name)) identities_[identity.name] = identity;
}

void IdentityTable::Add(const Identity& identity) {
  {
    MutexLock lock(mu_);
    removed_.erase(identity.name);
    identities_[identity.name] = identity;
  }
  cv_.notify_all();
}

bool IdentityTable::InFlight(const std::string& name) {
  MutexLock lock(mu_);
  return in_flight_.count(name) > 0;
}

void IdentityTable::WaitNotInFlight(const std::string& name) {
  while (in_flight_.count(name)) cv_.wait(mu_);
}

void IdentityTable::HoldForMove(const std::string& name) {
  MutexLock lock(mu_);
  moving_.insert(name);
  WaitNotInFlight(name);
}

void IdentityTable::EndMove(const std::string& name, const std::optional<Identity>& moved) {
  {
    MutexLock lock(mu_);
    moving_.erase(name);
    if (moved) identities_[name] = *moved;
  }
  cv_.notify_all();
}

std::optional<Identity> IdentityTable::HoldForRemoval(const std::string& name) {
  MutexLock lock(mu_);
  removed_.insert(name);
  // A step in progress finishes first: it will not commit any more.
  WaitNotInFlight(name);
  auto it = identities_.find(name);
  if (it == identities_.end()) return std::nullopt;
  Identity entry = std::move(it->second);
  identities_.erase(it);
  return entry;
}

void IdentityTable::CancelRemoval(const std::string& name, const std::optional<Identity>& entry) {
  {
    MutexLock lock(mu_);
    removed_.erase(name);
    if (entry) identities_[name] = *entry;
  }
  cv_.notify_all();
}

size_t IdentityTable::CountShared() {
  MutexLock lock(mu_);
  size_t shared = 0;
  for (const auto& [name, id] : identities_) {
    if (id.state == EnrollmentState::kShared && !removed_.count(name)) ++shared;
  }
  return shared;
}

std::vector<Identity> IdentityTable::Snapshot() {
  MutexLock lock(mu_);
  std::vector<Identity> out;
  for (const auto& [name, id] : identities_) out.push_back(id);
  return out;
}

EnrollmentCounts IdentityTable::Counts() {
  MutexLock lock(mu_);
  EnrollmentCounts c;
  for (const auto& [name, id] : identities_) {
    ++c.total;
    if (id.renewal == RenewalStep::kProving) ++c.proving;
    switch (id.state) {
      case EnrollmentState::kActive: ++c.active; break;
      case EnrollmentState::kRegistering: ++c.registering; break;
      case EnrollmentState::kParked: ++c.parked; break;
      case EnrollmentState::kShared: ++c.shared; break;
      default: ++c.in_progress; break;
    }
  }
  return c;
}

std::optional<Identity> IdentityTable::Get(const std::string& name) {
  MutexLock lock(mu_);
  auto it = identities_.find(name);
  if (it == identities_.end()) return std::nullopt;
  return it->second;
}

}  // namespace ga
