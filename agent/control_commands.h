// The requests the control socket serves, in terms of the enrollment:
//   {"command":"sensor-add","id":…[,"thing":…][,"connection":"own"|"gateway"]}
//   {"command":"sensor-remove","id":…}
//   {"command":"sensor-list"}
#pragma once

#include "gateway_agent/agent/control.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/config.h"

namespace ga {

// `config` is the configuration the agent started with (its state directory).
ControlReply HandleControl(Enrollment& enrollment, const Config& config,
                           const ControlCommand& request);

}  // namespace ga
