// The agent's configuration: one TOML file parsed into plain per-section
// structs. Key names, defaults and allowed ranges live in config.cc, in one
// place (the Visit* functions), shared by the parser and the printer.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/aws_iot.h"
#include "gateway_agent/log.h"
#include "gateway_agent/proxy.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm_handle.h"

namespace ga {

using Duration = std::chrono::milliseconds;

inline constexpr std::string_view kDefaultConfigPath = "/etc/gateway-agent/agent.toml";

enum class KeyType { kEccP256, kRsa2048 };
enum class CaBackend { kFile, kTpm, kCommand };
enum class OnFull { kDropOldest, kRejectNew };
// How a sensor's traffic reaches AWS IoT.
enum class SensorConnection {
  kOwn,      // its own TPM key, certificate and MQTT connection
  kGateway,  // over the gateway's connection (no certificate of its own)
};

struct AgentConfig {
  std::string thing_name;  // the gateway's AWS thing name (required)
  std::filesystem::path state_dir = "/var/lib/gateway-agent";
  std::filesystem::path runtime_dir = "/run/gateway-agent";
  log::Level log_level = log::Level::kInfo;
};

struct TpmConfig {
  std::string tcti = "device:/dev/tpmrm0";
  uint32_t srk_handle = kDefaultSrkHandle;
  KeyType key_type = KeyType::kEccP256;
};

struct CaConfig {
  CaBackend backend = CaBackend::kFile;
  std::filesystem::path cert = "/etc/gateway-agent/ca/ca.pem";
  std::filesystem::path key = "/etc/gateway-agent/ca/ca.key";  // file: PEM key; tpm: TSS2 key blob
  std::vector<std::string> command;  // command: argv, CSR on stdin, certificate on stdout
  Duration command_timeout = std::chrono::seconds(30);
  // How long the certificates it issues are valid (capped at the CA's own
  // notAfter): `validity = "365d"`, or `validity_days = 365` as before.
  Duration validity = std::chrono::hours(24 * 365);
};

// When and how identities get new certificates before theirs expire.
struct RenewalConfig {
  // Renew once this fraction of a certificate's validity has passed...
  double threshold = 0.8;
  // ...or once this little of it is left (0: only the threshold counts).
  Duration before = Duration(0);
  bool rekey = true;  // a new TPM key with each certificate
  Duration retry_initial = std::chrono::seconds(30);
  Duration retry_max = std::chrono::hours(1);
};

struct AwsConfig {
  std::string endpoint;  // e.g. abc123-ats.iot.eu-west-1.amazonaws.com (required)
  int port = 8883;       // 8883, or 443 with ALPN x-amzn-mqtt-ca
  std::filesystem::path root_ca = "/etc/gateway-agent/AmazonRootCA1.pem";
  bool alpn = false;         // forced on for port 443
  double connect_rate = 50;  // account-wide CONNECTs per second (AWS allows 500)
  Duration keepalive = std::chrono::seconds(60);
  // "http://[user@]host:port" or "socks5://[user@]host:port": every cloud
  // connection (JITR, bridge, probe, check) goes through it. Empty: direct.
  std::string proxy;
  std::filesystem::path proxy_password_file;  // 0600; the password never sits in the TOML
};

struct EnrollmentConfig {
  Duration backoff_initial = std::chrono::seconds(1);
  Duration backoff_max = std::chrono::minutes(5);
  double backoff_multiplier = 2.0;
  int concurrency = 8;
  Duration pending_report_after = std::chrono::hours(1);
};

struct LocalConfig {
  std::string host = "127.0.0.1";
  int port = 1883;
  std::filesystem::path unix_socket;  // when set, used instead of host/port
  std::string username;
  std::filesystem::path password_file;  // the password never sits in this file
  std::string client_id = "gateway-agent";
  std::string ingest_filter = "sensors/+/#";
  // The agent gives each sensor its own user and ACL on the local broker
  // through mosquitto's dynamic security plugin (`gateway-agent local-broker
  // init` sets such a broker up).
  bool manage_clients = false;
  // The local-only CA (a directory as `ca init` writes it) that issues the
  // sensors' client certificates for the broker's TLS listener (`local-broker
  // init --tls`, `sensor certify`). Empty: no certificate mode. Never the
  // [ca] registered with AWS.
  std::filesystem::path sensor_ca_dir;
};

struct BridgeConfig {
  std::string cloud_topic_template = "dt/{thing}/{rest}";
  std::string command_filter = "cmd/{thing}/#";
  uint64_t outbox_max_bytes = 256ull << 20;
  Duration outbox_max_age = std::chrono::hours(24 * 7);
  OnFull on_full = OnFull::kDropOldest;
  int publish_rate = 100;             // per connection per second (AWS: 100)
  uint64_t byte_rate = 512ull << 10;  // per connection per second (AWS: 512 KiB)
  int inflight_window = 100;          // unacknowledged QoS 1 per connection (AWS: 100)
  bool fsync_every_commit = false;    // power-loss durability at a throughput cost
};

struct SensorConfig {
  std::string id;          // local id: topic sensors/<id>/...
  std::string thing_name;  // empty: "<gateway thing>:<id>"
  SensorConnection connection = SensorConnection::kOwn;
};

// Sensors over the gateway's connection cost one subscription each there, and
// AWS IoT allows 50 per connection (one is the gateway's own).
inline constexpr size_t kMaxGatewayConnectionSensors = aws::kMaxSubscriptionsPerConnection - 1;

struct Config {
  std::filesystem::path source;
  AgentConfig agent;
  TpmConfig tpm;
  CaConfig ca;
  AwsConfig aws;
  EnrollmentConfig enrollment;
  RenewalConfig renewal;
  LocalConfig local;
  BridgeConfig bridge;
  std::vector<SensorConfig> sensors;

  // The thing name a sensor enrolls as.
  std::string SensorThingName(const SensorConfig& sensor) const;
  // The gateway's policy lets it publish for things named "<gateway thing>:<id>":
  // only those can travel over its connection.
  bool GatewayMayCarry(std::string_view thing) const;
};

// One thing wrong with a config file, with where it is.
struct ConfigProblem {
  std::string file;
  int line = 0;  // 0 when not tied to a place in the file
  int column = 0;
  std::string key;  // dotted: "bridge.publish_rate", "sensor[2].id"
  std::string message;
  // "agent.toml:12:1: bridge.publish_rate: must be at most 100 (AWS allows 100 publishes/s per
  // connection)"
  std::string ToString() const;
};

struct ParsedConfig {
  Config config;
  std::vector<ConfigProblem> problems;  // empty when valid
  bool ok() const { return problems.empty(); }
};

// Parses and validates `text`; every problem is reported, not just the first.
ParsedConfig ParseConfig(std::string_view text, std::string_view file_name);

// Reads and parses `path`, and checks that the files the configuration names
// for reading later (local.password_file) can be read; a problem if not. A
// Status error only when `path` itself cannot be read.
Result<ParsedConfig> LoadConfig(const std::filesystem::path& path);

// The effective configuration (defaults filled in) as TOML.
std::string FormatConfig(const Config& config);

// AWS thing-name rules: 1-128 characters of [a-zA-Z0-9:_-].
// Why aws.proxy and aws.proxy_password_file cannot work together, or "".
std::string ProxySettingProblem(const AwsConfig& aws);
// The proxy of the cloud connections with its password read from
// aws.proxy_password_file (read on each call: a new password needs no
// restart); nullopt when aws.proxy is empty.
Result<std::optional<ProxyEndpoint>> CloudProxy(const AwsConfig& aws);

bool IsValidThingName(std::string_view name);
// Separates a gateway's thing name from a sensor id ("<gateway thing>:<id>"): a
// gateway's own thing name may not contain it, so the gateway policy's
// "<gateway thing>:*" reaches no other gateway's things (cloud/README.md).
inline constexpr char kThingSeparator = ':';
// The gateway's own identity name: no sensor may take it as its id.
inline constexpr std::string_view kGatewayIdentityName = "gateway";
// A configuration file larger than this is refused (it is not a configuration).
inline constexpr size_t kMaxConfigBytes = 1024 * 1024;
// A thing name the agent can enroll: it becomes the certificate's subject CN,
// which X.509 limits to 64 characters.
inline constexpr size_t kMaxEnrollableThingName = aws::kMaxCommonNameBytes;
bool IsEnrollableThingName(std::string_view name);
// A sensor id is one MQTT topic level: 1-64 characters of [a-zA-Z0-9_-].
bool IsValidSensorId(std::string_view id);

// "30s", "5m", "1h", "250ms", "7d".
std::optional<Duration> ParseDuration(std::string_view text);
// "256MiB", "512KiB", "1GiB", "100KB", "4096" (bytes).
std::optional<uint64_t> ParseSize(std::string_view text);
std::string FormatDuration(Duration d);
std::string FormatSize(uint64_t bytes);

}  // namespace ga
