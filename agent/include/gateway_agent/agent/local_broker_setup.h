// The gateway's local broker as the agent expects it: a mosquitto
// configuration with the dynamic security plugin, written into one directory
// by `gateway-agent local-broker init`.
//
// The directory holds (all mode 0600, the directory 0700, owned by the
// caller): mosquitto.conf, dynamic-security.json (the plugin's state, in the
// format `mosquitto_ctrl dynsec init` writes), admin.password and
// agent.password. Nobody connects anonymously; every client id is its user
// name (use_username_as_clientid), so no client can take over the agent's
// persistent session. mosquitto must run as a user that can read and write
// the directory (it saves the plugin's state and its persistence file there).
//
// With `tls`, sensors may also authenticate by certificate: the directory
// gets a local-only CA in sensor-ca/ (ca.pem, ca.key 0600, ca.toml; never the
// CA registered with AWS), the broker's server key and certificate issued by
// it (broker-tls.key 0600, broker-tls.pem), and mosquitto.conf a second
// listener that requires a client certificate from that CA and takes its CN
// as the user name, so the same dynamic-security roles apply (the password
// check is skipped for such clients; see sensor_ca.h).
#pragma once

#include <filesystem>
#include <string>

#include "gateway_agent/status.h"

namespace ga {

struct LocalBrokerSetupOptions {
  std::filesystem::path dir;  // made absolute; created 0700 when missing
  int port = 1883;
  std::string bind_address = "127.0.0.1";
  std::string agent_user = "gateway-agent";
  bool force = false;  // replace an existing setup in `dir`
  // mosquitto_dynamic_security.so; empty: FindDynamicSecurityPlugin().
  std::filesystem::path plugin;
  // A TLS listener for sensors with certificates on tls_port (same address).
  bool tls = false;
  int tls_port = 8883;
  // The name sensors reach the broker by, for its certificate; empty: this
  // host's name.
  std::string tls_host;
  // Set: the include_dir of the system's mosquitto (Debian:
  // /etc/mosquitto/conf.d, next to its mosquitto.conf). The configuration
  // goes there as gateway-agent.conf, a snippet without the persistence
  // settings the main file already has; refused when the main file or
  // another *.conf there already loads a plugin, a password or ACL file,
  // sets per_listener_settings true or listens on the same port.
  std::filesystem::path conf_d;
};

// The file name of the snippet in conf_d.
inline constexpr const char* kConfDSnippet = "gateway-agent.conf";

// What WriteLocalBrokerSetup wrote.
struct LocalBrokerSetup {
  std::filesystem::path dir;
  std::filesystem::path config_file;          // dir/mosquitto.conf, or conf_d/gateway-agent.conf
  std::filesystem::path dynsec_file;          // dir/dynamic-security.json
  std::filesystem::path admin_password_file;  // dir/admin.password
  std::filesystem::path agent_password_file;  // dir/agent.password
  std::string bind_address;
  int port = 0;
  std::string agent_user;
  // With tls (tls_port 0 without): the local-only CA's directory and the
  // broker's server certificate and key.
  int tls_port = 0;
  std::filesystem::path sensor_ca_dir;  // dir/sensor-ca
  std::filesystem::path tls_cert_file;  // dir/broker-tls.pem
  std::filesystem::path tls_key_file;   // dir/broker-tls.key
  std::string tls_host;
};

// The user name of the plugin's administrator (role "admin": the
// $CONTROL/dynamic-security topics and reading every topic, as
// `mosquitto_ctrl dynsec init` makes it).
inline constexpr const char* kLocalBrokerAdminUser = "admin";
// The role of the agent's own client: publishClientSend, publishClientReceive
// and subscribePattern on $CONTROL/dynamic-security/# (it creates the sensors'
// clients), subscribePattern sensors/+/# (the ingest filter) and
// publishClientSend sensors/+/cmd/# (commands delivered to sensors).
inline constexpr const char* kLocalBrokerAgentRole = "gateway-agent";

// The installed plugin: /usr/lib/<multiarch>/mosquitto_dynamic_security.so.
// NotFound naming the Debian package `mosquitto` when absent.
Result<std::filesystem::path> FindDynamicSecurityPlugin();

// Writes the four files (and with tls, the CA and the server certificate).
// Without `force`, AlreadyExists naming the first of them that exists, and
// nothing is written; with `force`, an existing sensor-ca/ is kept when it
// opens (the certificates it issued stay valid). Each file is replaced atomically;
// the passwords are random (32 bytes, hex) and never returned.
Result<LocalBrokerSetup> WriteLocalBrokerSetup(const LocalBrokerSetupOptions& options);

// The mosquitto configuration WriteLocalBrokerSetup writes for `options` (a
// whole mosquitto.conf, or with conf_d the snippet), nothing written: the
// .deb ships it as an example made by this function.
Result<std::string> LocalBrokerConf(const LocalBrokerSetupOptions& options);

// The [local] section of agent.toml for `setup`, with a comment saying how to
// start the broker and where the admin password is.
std::string LocalSectionToml(const LocalBrokerSetup& setup);

// A dynamic security client entry's "password" and "salt" (base64) for
// `password`: PBKDF2-HMAC-SHA512 with 101 iterations, 64 bytes, a random
// 12-byte salt, as mosquitto 2.0 hashes and checks it.
struct DynsecPasswordHash {
  std::string password;  // base64 of the derived key
  std::string salt;      // base64 of the salt
  int iterations = 101;
};
Result<DynsecPasswordHash> HashDynsecPassword(const std::string& password);

}  // namespace ga
