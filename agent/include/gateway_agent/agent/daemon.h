// `gateway-agent run`: the service.
#pragma once

#include "gateway_agent/config.h"
#include "gateway_agent/status.h"

namespace ga {

inline constexpr const char* kStateDb = "state.db";
inline constexpr const char* kControlSocket = "control.sock";

// Exit codes of `run`: a start-up failure that a restart cannot fix (an
// invalid configuration, a file missing or of the wrong mode: a person must
// act; the unit's RestartPreventExitStatus) and one that may pass (the TPM
// or a disk not there yet).
inline constexpr int kExitNeedsOperator = 2;
inline constexpr int kExitTransient = 1;

// The files `run` opens before anything else, checked as `run` checks them
// (the local CA's certificate and key, with the key's mode, and the sensors'
// local-only CA when [local] sensor_ca_dir is set): check-config refuses
// what `run` would.
Status CheckStartupFiles(const Config& config);

// Runs until SIGTERM or SIGINT; returns the process exit code. Talks the
// sd_notify protocol when NOTIFY_SOCKET is set (READY, STATUS, WATCHDOG,
// STOPPING).
int RunAgent(const Config& config);

}  // namespace ga
