// `gateway-agent run`: the service.
#pragma once

#include "gateway_agent/config.h"

namespace ga {

inline constexpr const char* kStateDb = "state.db";
inline constexpr const char* kControlSocket = "control.sock";

// Runs until SIGTERM or SIGINT; returns the process exit code. Talks the
// sd_notify protocol when NOTIFY_SOCKET is set (READY, STATUS, WATCHDOG,
// STOPPING).
int RunAgent(const Config& config);

}  // namespace ga
