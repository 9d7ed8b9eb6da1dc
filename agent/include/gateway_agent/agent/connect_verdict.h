// What a JITR connect outcome means for the identity that tried: ACTIVE,
// parked until an operator acts, or a retry (counted as a registration
// attempt or not, with which backoff cap).
//
// Classify is a pure function: it reads nothing but its arguments.
#pragma once

#include <chrono>
#include <string>

#include "gateway_agent/agent/jitr_connect.h"
#include "gateway_agent/config.h"
#include "gateway_agent/log.h"

namespace ga {

struct ConnectVerdict {
  enum class Action {
    kActive,  // AWS IoT accepted the certificate
    kRetry,   // try again after a backoff
    kPark,    // stop: retrying cannot fix it (park_reason says what to do)
  };
  Action action = Action::kRetry;
  // kRetry: a registration attempt (JITR pending, refused) rather than a
  // failure to reach AWS IoT at all; only those count in `attempts`.
  bool counted = false;
  // kRetry: replaces the configured backoff cap when non-zero.
  std::chrono::milliseconds cap{0};
  // kRetry and kPark: what to record as the identity's last error.
  std::string error;
  // kPark: what happened and what the operator should do.
  std::string park_reason;
  // kRetry: how loud the retry is logged (pending is expected, the rest not).
  log::Level level = log::Level::kInfo;
};

// What Classify needs to know besides the outcome.
struct VerdictInputs {
  const AwsConfig& aws;                   // named in the advice
  const std::string& cert_id;             // the identity's certificate, named in the advice
  std::chrono::milliseconds backoff_max;  // the configured cap (enrollment.backoff_max)
};

ConnectVerdict Classify(const ConnectAttempt& attempt, const VerdictInputs& in);

}  // namespace ga
