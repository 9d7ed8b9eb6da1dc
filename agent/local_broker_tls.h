// Private to agent/: the TLS listener of `local-broker init --tls` (see
// local_broker_setup.h): the local-only CA, the broker's server certificate
// and the listener's lines of mosquitto.conf.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "gateway_agent/agent/local_broker_setup.h"
#include "gateway_agent/status.h"

namespace ga {

// Fills in s.tls_* and s.sensor_ca_dir for `options` (no file is touched);
// InvalidArgument naming the option when --tls-port or the host name is unusable.
Status PlanBrokerTls(const LocalBrokerSetupOptions& options, LocalBrokerSetup& s);

// The files PlanBrokerTls named, for the refusal to overwrite a setup.
std::vector<std::filesystem::path> BrokerTlsFiles(const LocalBrokerSetup& s);

// Creates the local-only CA (or keeps an existing one that opens, with
// `force`) and issues the broker's server key and certificate.
Status WriteBrokerTls(const LocalBrokerSetup& s, bool force);

// The TLS listener's lines of mosquitto.conf.
std::string TlsListenerConf(const LocalBrokerSetup& s);

}  // namespace ga
