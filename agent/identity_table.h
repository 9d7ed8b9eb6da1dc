// The identities as the running agent knows them: the last committed state of
// each, and which of them is held by an enrollment worker (in flight), by an
// operator's move (moving) or removal (removed). Workers and the sensor
// roster meet here.
//
// Thread-safe. Blocking calls return early once Stop() is called.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "gateway_agent/agent/clock.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/thread_annotations.h"

namespace ga {

class IdentityTable {
 public:
  explicit IdentityTable(Clock& clock) : clock_(clock) {}

  // Replaces every entry.
  void Reset(std::vector<Identity> identities) GA_EXCLUDES(mu_);
  void Start() GA_EXCLUDES(mu_);
  // Wakes every blocked call; they return as stopped.
  void Stop() GA_EXCLUDES(mu_);

  // Worker side.
  //
  // Waits until an identity has a step to take, is due and is held by no one;
  // marks it in flight and returns it. nullopt once stopped.
  std::optional<Identity> TakeDue() GA_EXCLUDES(mu_);
  // Ends the worker's hold on `identity.name`, keeping `identity` (the state
  // last committed) unless the identity was removed meanwhile.
  void Finish(const Identity& identity) GA_EXCLUDES(mu_);
  // Ends the worker's hold after a step that could not be committed: the
  // state last committed stays, with `error` and `next_attempt` (in memory
  // only, so that `status` and the next pick tell the truth).
  void FinishUncommitted(const std::string& name, const std::string& error, Millis next_attempt)
      GA_EXCLUDES(mu_);
  // Sleeps the whole of `d` (a change to the table does not end it early: a
  // caller may be spacing CONNECTs); false once stopped, at once.
  bool SleepFor(std::chrono::nanoseconds d) GA_EXCLUDES(mu_);
  bool Stopped() GA_EXCLUDES(mu_);

  // Both sides.
  bool IsRemoved(const std::string& name) GA_EXCLUDES(mu_);
  // Keeps a committed state unless the identity was removed meanwhile.
  void Keep(const Identity& identity) GA_EXCLUDES(mu_);

  // Roster side.
  //
  // Adds (or re-adds, after a removal) an identity already in the store.
  void Add(const Identity& identity) GA_EXCLUDES(mu_);
  bool InFlight(const std::string& name) GA_EXCLUDES(mu_);
  // Keeps workers away from `name` and waits for a step in progress to end.
  void HoldForMove(const std::string& name) GA_EXCLUDES(mu_);
  // Ends HoldForMove, keeping `moved` when the move was committed.
  void EndMove(const std::string& name, const std::optional<Identity>& moved) GA_EXCLUDES(mu_);
  // Marks `name` removed (workers commit nothing for it any more), waits for
  // a step in progress to end and drops its entry; returns the entry.
  std::optional<Identity> HoldForRemoval(const std::string& name) GA_EXCLUDES(mu_);
  // Undoes HoldForRemoval when the removal could not be committed.
  void CancelRemoval(const std::string& name, const std::optional<Identity>& entry)
      GA_EXCLUDES(mu_);
  // Each of `names` that is ACTIVE without a renewal in progress looks at its
  // certificate again now (one in flight: once its pass ends).
  void WakeActive(const std::set<std::string>& names) GA_EXCLUDES(mu_);
  // Sensors over the gateway's connection, removed ones left out.
  size_t CountShared() GA_EXCLUDES(mu_);

  std::vector<Identity> Snapshot() GA_EXCLUDES(mu_);
  std::optional<Identity> Get(const std::string& name) GA_EXCLUDES(mu_);
  EnrollmentCounts Counts() GA_EXCLUDES(mu_);

 private:
  void WaitNotInFlight(const std::string& name) GA_REQUIRES(mu_);

  Clock& clock_;
  Mutex mu_;
  std::condition_variable_any cv_;
  bool stop_ GA_GUARDED_BY(mu_) = false;
  std::map<std::string, Identity> identities_ GA_GUARDED_BY(mu_);
  std::set<std::string> in_flight_ GA_GUARDED_BY(mu_);
  std::set<std::string> removed_ GA_GUARDED_BY(mu_);
  std::set<std::string> moving_ GA_GUARDED_BY(mu_);
  std::set<std::string> woken_ GA_GUARDED_BY(mu_);  // WakeActive while in flight
};

}  // namespace ga
