#include "gateway_agent/agent/local_broker_setup.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>
#include <system_error>
#include <vector>

#include "gateway_agent/files.h"
#include "gateway_agent/openssl.h"
#include "local_broker_tls.h"

namespace ga {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr const char* kPluginFile = "mosquitto_dynamic_security.so";
constexpr int kDynsecIterations = 101;  // what mosquitto 2.0 uses for new passwords
constexpr int kDynsecSaltBytes = 12;
constexpr int kDynsecKeyBytes = 64;
constexpr int kPasswordBytes = 32;

Result<std::string> RandomBytes(int n, std::string_view what) {
  std::string out(static_cast<size_t>(n), '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), n) != 1) {
    return OpenSslError(what);
  }
  return out;
}

std::string Base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string Hex(std::string_view in) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(in.size() * 2);
  for (unsigned char c : in) {
    out += kDigits[c >> 4];
    out += kDigits[c & 0xf];
  }
  return out;
}

Result<std::string> RandomPassword(std::string_view whose) {
  GA_ASSIGN_OR_RETURN(std::string bytes,
                      RandomBytes(kPasswordBytes, "making a password for " + std::string(whose)));
  return Hex(bytes);
}

Json Acl(const char* type, const char* topic) {
  return Json{{"acltype", type}, {"topic", topic}, {"allow", true}};
}

Result<Json> Client(const std::string& user, const char* text_name, const std::string& password,
                    const char* role) {
  GA_ASSIGN_OR_RETURN(DynsecPasswordHash hash, HashDynsecPassword(password).With("client " + user));
  return Json{{"username", user},
              {"textName", text_name},
              {"password", hash.password},
              {"salt", hash.salt},
              {"iterations", hash.iterations},
              {"roles", Json::array({Json{{"rolename", role}}})}};
}

// The plugin's state: the same admin as `mosquitto_ctrl dynsec init` makes,
// the agent's client and role, and mosquitto_ctrl's default ACL access.
Result<std::string> DynsecState(const std::string& agent_user, const std::string& admin_password,
                                const std::string& agent_password) {
  GA_ASSIGN_OR_RETURN(Json admin,
                      Client(kLocalBrokerAdminUser, "Dynsec admin user", admin_password, "admin"));
  GA_ASSIGN_OR_RETURN(Json agent, Client(agent_user, "gateway-agent (bridges sensors to AWS IoT)",
                                         agent_password, kLocalBrokerAgentRole));
  Json admin_role{
      {"rolename", "admin"},
      {"acls", Json::array({Acl("publishClientSend", "$CONTROL/dynamic-security/#"),
                            Acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
                            Acl("subscribePattern", "$CONTROL/dynamic-security/#"),
                            Acl("publishClientReceive", "$SYS/#"),
                            Acl("subscribePattern", "$SYS/#"), Acl("publishClientReceive", "#"),
                            Acl("subscribePattern", "#"), Acl("unsubscribePattern", "#")})}};
  Json agent_role{{"rolename", kLocalBrokerAgentRole},
                  {"acls", Json::array({Acl("publishClientSend", "$CONTROL/dynamic-security/#"),
                                        Acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
                                        Acl("subscribePattern", "$CONTROL/dynamic-security/#"),
                                        Acl("subscribePattern", "sensors/+/#"),
                                        Acl("publishClientSend", "sensors/+/cmd/#")})}};
  Json state{{"clients", Json::array({admin, agent})},
             {"roles", Json::array({admin_role, agent_role})},
             {"defaultACLAccess",
              {{"publishClientSend", false},
               {"publishClientReceive", true},
               {"subscribe", false},
               {"unsubscribe", true}}}};
  return state.dump(1, '\t') + "\n";
}

std::string MosquittoConf(const LocalBrokerSetup& s, const fs::path& plugin, bool snippet) {
  std::string conf;
  if (snippet) {
    conf +=
        "# The gateway's local broker, written by `gateway-agent local-broker init --conf-d`:\n";
    conf += "# a snippet for the system's mosquitto (its mosquitto.conf sets persistence).\n";
  } else {
    conf += "# The gateway's local broker, written by `gateway-agent local-broker init`.\n";
  }
  conf += "# mosquitto must run as a user that can read and write " + s.dir.string() + ".\n";
  conf += "per_listener_settings false\n";
  conf += "listener " + std::to_string(s.port) + " " + s.bind_address + "\n";
  conf += "allow_anonymous false\n";
  conf +=
      "# Every client id is its user name: no client can take over another's client id\n"
      "# or persistent session (the agent's above all).\n";
  conf += "use_username_as_clientid true\n";
  conf +=
      "# Users, roles and ACLs: dynamic security, administered through\n"
      "# $CONTROL/dynamic-security/v1 (mosquitto_ctrl, or the agent for its sensors).\n";
  conf += "plugin " + plugin.string() + "\n";
  conf += "plugin_opt_config_file " + s.dynsec_file.string() + "\n";
  if (!snippet) {
    conf += "persistence true\n";
    conf += "persistence_location " + s.dir.string() + "/\n";
  }
  conf +=
      "# What is queued for the agent is saved every minute (the default, 30 minutes,\n"
      "# loses everything queued since the last save when the broker is killed).\n";
  conf += "autosave_interval 60\n";
  conf +=
      "# Room for what the sensors may send in a minute or two while the agent\n"
      "# restarts; past this mosquitto drops messages for it.\n";
  conf += "max_queued_messages 100000\n";
  conf += "max_queued_bytes 268435456\n";
  return conf;
}

// A line of `file` that the snippet would clash with, as an error naming it.
Status CheckConfFile(const fs::path& file, int port) {
  std::ifstream in(file);
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    std::istringstream words(line);
    std::string key, value;
    words >> key >> value;
    const bool clash = key == "plugin" || key == "auth_plugin" || key == "password_file" ||
                       key == "acl_file" || (key == "per_listener_settings" && value == "true") ||
                       ((key == "listener" || key == "port") && value == std::to_string(port));
    if (clash) {
      return FailedPrecondition(file.string() + ":" + std::to_string(number) + ": \"" + line +
                                "\" would clash with the gateway's broker setup (it brings its "
                                "own listener on port " +
                                std::to_string(port) +
                                " and the dynamic security plugin): remove it, pick another "
                                "--port, or use --dir alone for a broker of its own");
    }
  }
  return Status::Ok();
}

// The system's configuration around conf_d: its mosquitto.conf (the parent
// directory's) and every other *.conf in conf_d, the files mosquitto loads.
Status CheckConfD(const fs::path& conf_d, int port) {
  std::error_code ec;
  if (!fs::is_directory(conf_d, ec)) {
    return NotFound("--conf-d " + conf_d.string() +
                    " is not a directory (Debian's mosquitto has /etc/mosquitto/conf.d)");
  }
  GA_RETURN_IF_ERROR(CheckConfFile(conf_d.parent_path() / "mosquitto.conf", port));
  std::vector<fs::path> files;
  for (fs::directory_iterator it(conf_d, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.extension() == ".conf" && p.filename() != kConfDSnippet) files.push_back(p);
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) GA_RETURN_IF_ERROR(CheckConfFile(f, port));
  return Status::Ok();
}

bool HasControlCharacter(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

Status Validate(const LocalBrokerSetupOptions& o) {
  if (o.dir.empty()) return InvalidArgument("--dir: name the directory for the broker's files");
  if (HasControlCharacter(o.dir.string())) {
    return InvalidArgument("--dir: a path with a control character cannot go in mosquitto.conf");
  }
  if (HasControlCharacter(o.conf_d.string())) {
    return InvalidArgument("--conf-d: a path with a control character cannot be used");
  }
  if (o.port < 1 || o.port > 65535) {
    return InvalidArgument("--port " + std::to_string(o.port) + ": must be between 1 and 65535");
  }
  if (o.bind_address.empty() || o.bind_address.find_first_of(" \t\r\n") != std::string::npos) {
    return InvalidArgument("--bind \"" + o.bind_address + "\": name one address, e.g. 127.0.0.1");
  }
  const bool name_ok = !o.agent_user.empty() && o.agent_user.size() <= 64 &&
                       std::all_of(o.agent_user.begin(), o.agent_user.end(), [](char c) {
                         return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
                       });
  if (!name_ok) {
    return InvalidArgument("--agent-user \"" + o.agent_user +
                           "\": use 1 to 64 letters, digits, '-', '_' or '.'");
  }
  if (o.agent_user == kLocalBrokerAdminUser) {
    return InvalidArgument("--agent-user admin: that is the plugin's administrator; pick another");
  }
  return Status::Ok();
}

}  // namespace

Result<fs::path> FindDynamicSecurityPlugin() {
  std::vector<fs::path> candidates;
  std::error_code ec;
  // /usr/lib/<multiarch>/ (Debian), then the unsplit and local locations.
  for (fs::directory_iterator it("/usr/lib", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find("-linux-") != std::string::npos) candidates.push_back(it->path() / kPluginFile);
  }
  std::sort(candidates.begin(), candidates.end());
  candidates.push_back(fs::path("/usr/lib") / kPluginFile);
  candidates.push_back(fs::path("/usr/local/lib") / kPluginFile);
  for (const fs::path& p : candidates) {
    if (fs::is_regular_file(p, ec)) return p;
  }
  return NotFound(std::string(kPluginFile) +
                  " is not under /usr/lib/<multiarch>/, /usr/lib or /usr/local/lib: install "
                  "the Debian package `mosquitto` (2.0 or later)");
}

Result<DynsecPasswordHash> HashDynsecPassword(const std::string& password) {
  GA_ASSIGN_OR_RETURN(std::string salt, RandomBytes(kDynsecSaltBytes, "making a password salt"));
  std::string key(kDynsecKeyBytes, '\0');
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), kDynsecIterations, EVP_sha512(),
                        kDynsecKeyBytes, reinterpret_cast<unsigned char*>(key.data())) != 1) {
    return OpenSslError("PKCS5_PBKDF2_HMAC (SHA-512) of a password");
  }
  DynsecPasswordHash out;
  out.password = Base64(key);
  out.salt = Base64(salt);
  out.iterations = kDynsecIterations;
  return out;
}

namespace {

// Where the files of `options` go, the plugin found when not given.
Result<LocalBrokerSetup> Layout(const LocalBrokerSetupOptions& options, fs::path* plugin) {
  GA_RETURN_IF_ERROR(Validate(options));
  *plugin = options.plugin;
  if (plugin->empty()) {
    GA_ASSIGN_OR_RETURN(*plugin, FindDynamicSecurityPlugin());
  }
  std::error_code ec;
  fs::path dir = fs::absolute(options.dir, ec).lexically_normal();
  if (ec) return InvalidArgument("--dir " + options.dir.string() + ": " + ec.message());
  if (!dir.has_filename()) dir = dir.parent_path();  // "/x/y/" -> "/x/y"

  LocalBrokerSetup s;
  s.dir = dir;
  s.config_file = dir / "mosquitto.conf";
  if (!options.conf_d.empty()) {
    fs::path conf_d = fs::absolute(options.conf_d, ec).lexically_normal();
    if (ec) return InvalidArgument("--conf-d " + options.conf_d.string() + ": " + ec.message());
    if (!conf_d.has_filename()) conf_d = conf_d.parent_path();
    s.config_file = conf_d / kConfDSnippet;
  }
  s.dynsec_file = dir / "dynamic-security.json";
  s.admin_password_file = dir / "admin.password";
  s.agent_password_file = dir / "agent.password";
  s.bind_address = options.bind_address;
  s.port = options.port;
  s.agent_user = options.agent_user;
  GA_RETURN_IF_ERROR(PlanBrokerTls(options, s));
  return s;
}

}  // namespace

Result<std::string> LocalBrokerConf(const LocalBrokerSetupOptions& options) {
  fs::path plugin;
  GA_ASSIGN_OR_RETURN(LocalBrokerSetup s, Layout(options, &plugin));
  std::string conf = MosquittoConf(s, plugin, !options.conf_d.empty());
  if (s.tls_port != 0) conf += TlsListenerConf(s);
  return conf;
}

Result<LocalBrokerSetup> WriteLocalBrokerSetup(const LocalBrokerSetupOptions& options) {
  fs::path plugin;
  GA_ASSIGN_OR_RETURN(LocalBrokerSetup s, Layout(options, &plugin));
  const bool snippet = !options.conf_d.empty();
  if (snippet) GA_RETURN_IF_ERROR(CheckConfD(s.config_file.parent_path(), s.port));

  std::error_code ec;
  std::vector<fs::path> files = {s.config_file, s.dynsec_file, s.admin_password_file,
                                 s.agent_password_file};
  for (fs::path& f : BrokerTlsFiles(s)) files.push_back(std::move(f));
  if (!options.force) {
    for (const fs::path& f : files) {
      if (fs::symlink_status(f, ec).type() != fs::file_type::not_found) {
        return Status(Code::kAlreadyExists,
                      f.string() + " exists: a local broker is already set up in " +
                          s.dir.string() + " (--force replaces it, and its users and passwords)");
      }
    }
  }
  GA_RETURN_IF_ERROR(EnsureDirectory(s.dir, 0700).With("local broker directory"));

  GA_ASSIGN_OR_RETURN(std::string admin_password, RandomPassword("admin"));
  GA_ASSIGN_OR_RETURN(std::string agent_password, RandomPassword(options.agent_user));
  GA_ASSIGN_OR_RETURN(std::string state,
                      DynsecState(options.agent_user, admin_password, agent_password));
  const IfExists if_exists = options.force ? IfExists::kReplace : IfExists::kRefuse;
  // The passwords first and the configuration last: a half-written setup
  // has no mosquitto.conf to start a broker from.
  GA_RETURN_IF_ERROR(
      WriteFileAtomic(s.admin_password_file, admin_password + "\n", 0600, if_exists));
  GA_RETURN_IF_ERROR(
      WriteFileAtomic(s.agent_password_file, agent_password + "\n", 0600, if_exists));
  GA_RETURN_IF_ERROR(WriteFileAtomic(s.dynsec_file, state, 0600, if_exists));
  std::string conf = MosquittoConf(s, plugin, snippet);
  if (s.tls_port != 0) {
    GA_RETURN_IF_ERROR(WriteBrokerTls(s, options.force));
    conf += TlsListenerConf(s);
  }
  // A snippet holds no secret, and mosquitto re-reads conf.d as its own user
  // on a reload: 0644 like the rest of /etc/mosquitto.
  GA_RETURN_IF_ERROR(WriteFileAtomic(s.config_file, conf, snippet ? 0644 : 0600, if_exists));
  return s;
}

std::string LocalSectionToml(const LocalBrokerSetup& s) {
  auto quoted = [](const std::string& v) {
    std::string q = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q + "\"";
  };
  std::string out;
  if (s.config_file.filename() == kConfDSnippet) {
    out += "# The system's mosquitto loads " + s.config_file.string() +
           ": sudo systemctl restart mosquitto\n";
  } else {
    out += "# Start the broker: mosquitto -c " + s.config_file.string() + "\n";
  }
  out += "# Its administrator (mosquitto_ctrl -u " + std::string(kLocalBrokerAdminUser) +
         "): password in " + s.admin_password_file.string() + "\n";
  out += "[local]\n";
  // A broker listening on every address is reached on loopback.
  const bool any = s.bind_address == "0.0.0.0" || s.bind_address == "::";
  out += "host = " + quoted(any ? "127.0.0.1" : s.bind_address) + "\n";
  out += "port = " + std::to_string(s.port) + "\n";
  out += "username = " + quoted(s.agent_user) + "\n";
  out += "password_file = " + quoted(s.agent_password_file.string()) + "\n";
  out += "# The broker makes every client id its user name (use_username_as_clientid).\n";
  out += "client_id = " + quoted(s.agent_user) + "\n";
  out += "# Each sensor gets its own user and ACL on this broker (sensor credentials ID).\n";
  out += "manage_clients = true\n";
  if (s.tls_port != 0) {
    out += "# Sensors with certificates: TLS port " + std::to_string(s.tls_port) + " (broker " +
           s.tls_host + "), --cafile " + (s.sensor_ca_dir / "ca.pem").string() +
           ";\n# each gets its own with `gateway-agent sensor certify ID --csr FILE --out FILE`.\n";
    out += "sensor_ca_dir = " + quoted(s.sensor_ca_dir.string()) + "\n";
  }
  return out;
}

}  // namespace ga
