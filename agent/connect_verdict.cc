#include "gateway_agent/agent/connect_verdict.h"

#include <openssl/ssl.h>

namespace ga {

namespace {

ConnectVerdict Park(const ConnectAttempt& attempt, std::string reason) {
  ConnectVerdict v;
  v.action = ConnectVerdict::Action::kPark;
  v.error = attempt.detail;
  v.park_reason = std::move(reason);
  v.level = log::Level::kError;
  return v;
}

ConnectVerdict Retry(std::string error, bool counted, log::Level level,
                     std::chrono::milliseconds cap = {}) {
  ConnectVerdict v;
  v.action = ConnectVerdict::Action::kRetry;
  v.counted = counted;
  v.cap = cap;
  v.error = std::move(error);
  v.level = level;
  return v;
}

}  // namespace

ConnectVerdict Classify(const ConnectAttempt& a, const VerdictInputs& in) {
  switch (a.outcome) {
    case ConnectOutcome::kAccepted: {
      ConnectVerdict v;
      v.action = ConnectVerdict::Action::kActive;
      return v;
    }
    case ConnectOutcome::kServerUntrusted:
      return Park(a, "the server at " + in.aws.endpoint + ":" + std::to_string(in.aws.port) +
                         " is not trusted (" + a.detail + "): check [aws] endpoint and " +
                         "root_ca (" + in.aws.root_ca.string() +
                         "), then restart the agent or run gateway-agent probe");
    case ConnectOutcome::kTlsAlert:
      if (a.tls_alert == SSL_AD_CERTIFICATE_REVOKED) {
        return Park(a, "AWS IoT refuses certificate " + in.cert_id +
                           " as revoked: remove and add the sensor to enroll a new one");
      }
      return Retry(a.detail, true, log::Level::kInfo);
    case ConnectOutcome::kClosed: return Retry(a.detail, true, log::Level::kInfo);
    case ConnectOutcome::kRefused:
      // Typically activated before its policy was attached: retry, with a
      // longer cap, since only someone fixing the policy can help now.
      return Retry(a.detail, true, log::Level::kWarning, in.backoff_max * 4);
    case ConnectOutcome::kNetworkError:
      return Retry(a.name_not_found ? a.detail + " (check [aws] endpoint)" : a.detail, false,
                   log::Level::kWarning);
  }
  return Retry(a.detail, false, log::Level::kWarning);
}

}  // namespace ga
