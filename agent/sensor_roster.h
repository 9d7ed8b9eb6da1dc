// Which sensors the agent has: the gateway and the [[sensor]]s of the
// configuration at start, sensors added, moved between their own connection
// and the gateway's, and removed at run time (the control socket, a reload).
// The gateway's connection carries at most kMaxGatewayConnectionSensors
// sensors, each with a thing name its policy allows.
//
// Thread-safe: changes are serialized; enrollment workers may run meanwhile.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/thread_annotations.h"
#include "identity_table.h"

namespace ga {

class Enrollment;

class SensorRoster {
 public:
  // Everything is borrowed and must outlive the roster.
  SensorRoster(const Config& config, IdentityStore& store, IdentityTable& table,
               const std::function<void(const Identity&)>& on_change)
      : config_(config), store_(store), table_(table), on_change_(on_change) {}

  // Adds the gateway and every [[sensor]] of the config that the store does
  // not know yet, moves those whose connection changed, and loads all
  // identities into the table.
  Status Load() GA_EXCLUDES(changes_mu_);

  Result<Identity> Add(const std::string& id, const std::string& thing_name,
                       SensorConnection connection) GA_EXCLUDES(changes_mu_);
  Result<Identity> SetConnection(const std::string& id, SensorConnection connection)
      GA_EXCLUDES(changes_mu_);
  // Marks the sensor REMOVED (committed first), then deletes its directory.
  // Refuses a sensor of the configuration file (see SetFileSensors).
  Result<Identity> Remove(const std::string& id) GA_EXCLUDES(changes_mu_);
  // An ACTIVE identity (the gateway or a sensor) that cannot work any more
  // enrolls again from `from`: kNew (its key is gone: a new key, certificate
  // and JITR) or kKeyed (its certificate does not fit its key: a new
  // certificate for the same key, then JITR). Logged as an error with `reason`.
  Result<Identity> Reenroll(const std::string& name, EnrollmentState from,
                            const std::string& reason) GA_EXCLUDES(changes_mu_);
  // The [[sensor]]s of the file in effect; Load starts from the config's.
  void SetFileSensors(const std::vector<SensorConfig>& sensors) GA_EXCLUDES(changes_mu_);

 private:
  Status CheckGatewayMayCarry(const std::string& thing, int more);
  void Changed(const Identity& identity) {
    if (on_change_) on_change_(identity);
  }

  const Config& config_;
  IdentityStore& store_;
  IdentityTable& table_;
  const std::function<void(const Identity&)>& on_change_;
  // Serializes additions, removals and moves (control socket, reload).
  Mutex changes_mu_;
  std::set<std::string> file_sensors_ GA_GUARDED_BY(changes_mu_);
};

// SIGHUP: makes `next`'s [[sensor]]s the file's, adds the sensors new in
// `next` and removes those that `running`
// had from the file and `next` no longer has; moves those whose connection
// changed. Sensors added at run time (`gateway-agent sensor add`) are not in
// the file and are left alone. Each failure is logged. Returns the sensors in
// effect afterwards: `next`'s, except that a sensor that could not be removed
// stays and one that could not be added is left out, so the next reload tries
// again.
std::vector<SensorConfig> ApplySensorChanges(const Config& running, const Config& next,
                                             Enrollment& enrollment);

}  // namespace ga
