// The requests the control socket serves, in terms of the enrollment:
//   {"command":"sensor-add","id":…[,"thing":…][,"connection":"own"|"gateway"]}
//   {"command":"sensor-remove","id":…}
//   {"command":"sensor-list"}
//   {"command":"sensor-credentials","id":…[,"rotate":"yes"][,"json":"yes"]}
//   {"command":"renew","identity":…|"all":"yes"[,"rekey":"yes"]}
#pragma once

#include <functional>

#include "gateway_agent/agent/control.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/config.h"
#include "local_credentials.h"

namespace ga {

struct ControlParts {
  Enrollment& enrollment;
  const Config& config;  // the configuration the agent started with
  // local.manage_clients; null otherwise.
  LocalCredentials* credentials = nullptr;
  // Tells the bridge about an identity again (a rotated password).
  std::function<void(const Identity&)> refeed;
};

ControlReply HandleControl(const ControlParts& parts, const ControlCommand& request);

}  // namespace ga
