#include "gateway_agent/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "cross_checks.h"
#include "gateway_agent/files.h"
#include "gateway_agent/log.h"

namespace ga {

namespace {

// Each section is described once, by a Visit function over a visitor that
// either reads the TOML (Reader) or writes it back (Writer). Key names,
// defaults (the struct initialisers) and ranges therefore live in one place.

template <typename E>
struct EnumName {
  std::string_view name;
  E value;
};

const EnumName<log::Level> kLevels[] = {{"debug", log::Level::kDebug},
                                        {"info", log::Level::kInfo},
                                        {"warning", log::Level::kWarning},
                                        {"error", log::Level::kError}};
const EnumName<KeyType> kKeyTypes[] = {{"ecc-p256", KeyType::kEccP256},
                                       {"rsa-2048", KeyType::kRsa2048}};
const EnumName<CaBackend> kBackends[] = {
    {"file", CaBackend::kFile}, {"tpm", CaBackend::kTpm}, {"command", CaBackend::kCommand}};
const EnumName<OnFull> kOnFull[] = {{"drop-oldest", OnFull::kDropOldest},
                                    {"reject-new", OnFull::kRejectNew}};
const EnumName<SensorConnection> kConnections[] = {{"own", SensorConnection::kOwn},
                                                   {"gateway", SensorConnection::kGateway}};

template <typename V>
void VisitAgent(V& v, AgentConfig& c) {
  v.Str("thing_name", c.thing_name);
  v.Path("state_dir", c.state_dir);
  v.Path("runtime_dir", c.runtime_dir);
  v.Enum("log_level", c.log_level, kLevels);
}

template <typename V>
void VisitTpm(V& v, TpmConfig& c) {
  v.Str("tcti", c.tcti);
  v.Handle("srk_handle", c.srk_handle);
  v.Enum("key_type", c.key_type, kKeyTypes);
}

template <typename V>
void VisitCa(V& v, CaConfig& c) {
  v.Enum("backend", c.backend, kBackends);
  v.Path("cert", c.cert);
  v.Path("key", c.key);
  v.StrList("command", c.command);
  v.Dur("command_timeout", c.command_timeout, Duration(100), std::chrono::hours(1));
  v.Dur("validity", c.validity, std::chrono::minutes(1), std::chrono::hours(24 * 36500));
  v.Days("validity_days", c.validity, 1, 36500, "validity");
}

template <typename V>
void VisitRenewal(V& v, RenewalConfig& c) {
  v.Double("threshold", c.threshold, 0.05, 0.95,
           "a certificate renews once this fraction of its validity has passed");
  v.Dur("before", c.before, Duration(0), std::chrono::hours(24 * 36500));
  v.Bool("rekey", c.rekey);
  v.Dur("retry_initial", c.retry_initial, std::chrono::seconds(1), std::chrono::hours(24));
  v.Dur("retry_max", c.retry_max, std::chrono::seconds(1), std::chrono::hours(24 * 7));
}

template <typename V>
void VisitAws(V& v, AwsConfig& c) {
  v.Str("endpoint", c.endpoint);
  v.Int("port", c.port, 1, 65535, "");
  v.Path("root_ca", c.root_ca);
  v.Bool("alpn", c.alpn);
  v.Double("connect_rate", c.connect_rate, 0.01, 500,
           "AWS IoT allows 500 CONNECTs per second per account");
  v.Dur("keepalive", c.keepalive, std::chrono::seconds(5), std::chrono::seconds(1200));
  v.Str("proxy", c.proxy);
  v.Path("proxy_password_file", c.proxy_password_file);
}

template <typename V>
void VisitEnrollment(V& v, EnrollmentConfig& c) {
  v.Dur("backoff_initial", c.backoff_initial, Duration(10), std::chrono::hours(1));
  v.Dur("backoff_max", c.backoff_max, Duration(10), std::chrono::hours(24));
  v.Double("backoff_multiplier", c.backoff_multiplier, 1.0, 10.0, "");
  v.Int("concurrency", c.concurrency, 1, 1000, "");
  v.Dur("pending_report_after", c.pending_report_after, std::chrono::seconds(1),
        std::chrono::hours(24 * 30));
}

template <typename V>
void VisitLocal(V& v, LocalConfig& c) {
  v.Str("host", c.host);
  v.Int("port", c.port, 1, 65535, "");
  v.Path("unix_socket", c.unix_socket);
  v.Str("username", c.username);
  v.Path("password_file", c.password_file);
  v.Str("client_id", c.client_id);
  v.Str("ingest_filter", c.ingest_filter);
  v.Bool("manage_clients", c.manage_clients);
  v.Path("sensor_ca_dir", c.sensor_ca_dir);
}

template <typename V>
void VisitBridge(V& v, BridgeConfig& c) {
  v.Str("cloud_topic_template", c.cloud_topic_template);
  v.Str("command_filter", c.command_filter);
  v.Size("outbox_max_bytes", c.outbox_max_bytes, 1 << 20, 1ull << 40, "");
  v.Dur("outbox_max_age", c.outbox_max_age, std::chrono::minutes(1), std::chrono::hours(24 * 365));
  v.Enum("on_full", c.on_full, kOnFull);
  v.Int("publish_rate", c.publish_rate, 1, 100,
        "AWS IoT allows 100 publishes per second per connection");
  v.Size("byte_rate", c.byte_rate, 1024, 512 << 10,
         "AWS IoT allows 512 KiB per second per connection");
  v.Int("inflight_window", c.inflight_window, 1, 100,
        "AWS IoT allows 100 unacknowledged QoS 1 messages per connection");
  v.Bool("fsync_every_commit", c.fsync_every_commit);
}

template <typename V>
void VisitSensor(V& v, SensorConfig& c) {
  v.Str("id", c.id);
  v.Str("thing_name", c.thing_name);
  v.Enum("connection", c.connection, kConnections);
}

template <typename V>
void VisitSections(V& v, Config& c) {
  v.Section("agent", [&] { VisitAgent(v, c.agent); });
  v.Section("tpm", [&] { VisitTpm(v, c.tpm); });
  v.Section("ca", [&] { VisitCa(v, c.ca); });
  v.Section("aws", [&] { VisitAws(v, c.aws); });
  v.Section("enrollment", [&] { VisitEnrollment(v, c.enrollment); });
  v.Section("renewal", [&] { VisitRenewal(v, c.renewal); });
  v.Section("local", [&] { VisitLocal(v, c.local); });
  v.Section("bridge", [&] { VisitBridge(v, c.bridge); });
  v.Array("sensor", c.sensors, [&](SensorConfig& s) { VisitSensor(v, s); });
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Suggest(std::string_view unknown, const std::vector<std::string>& known) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& k : known) {
    size_t d = EditDistance(unknown, k);
    if (d < best_d) best_d = d, best = k;
  }
  if (best.empty() || best_d > std::max<size_t>(2, unknown.size() / 3)) return "";
  return best;
}

std::string TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date/time";
  }
}

std::string FormatNumber(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", d);
  return buf;
}

class Reader {
 public:
  Reader(const toml::table& root, std::string file, std::vector<ConfigProblem>& problems)
      : root_(root), file_(std::move(file)), problems_(problems) {}

  void Finish() {
    std::vector<std::string> known(sections_.begin(), sections_.end());
    for (auto&& [k, node] : root_) {
      std::string name(k.str());
      if (sections_.count(name)) continue;
      std::string hint = Suggest(name, known);
      Problem(
          k.source(), name,
          "unknown section" + (hint.empty() ? std::string() : "; did you mean [" + hint + "]?"));
    }
  }

  template <typename F>
  void Section(std::string_view name, F visit) {
    sections_.insert(std::string(name));
    const toml::node* node = root_.get(name);
    if (node != nullptr && !node->is_table()) {
      Problem(node->source(), std::string(name), "must be a table ([" + std::string(name) + "])");
      return;
    }
    static const toml::table kEmpty;
    Enter(node ? *node->as_table() : kEmpty, std::string(name));
    visit();
    Leave();
  }

  template <typename T, typename F>
  void Array(std::string_view name, std::vector<T>& out, F visit) {
    sections_.insert(std::string(name));
    const toml::node* node = root_.get(name);
    if (node == nullptr) return;
    const toml::array* arr = node->as_array();
    if (arr == nullptr || !arr->is_array_of_tables()) {
      Problem(node->source(), std::string(name),
              "must be an array of tables ([[" + std::string(name) + "]])");
      return;
    }
    out.clear();
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::table& t = *(*arr)[i].as_table();
      T item;
      Enter(t, std::string(name) + "[" + std::to_string(i) + "]");
      visit(item);
      Leave();
      out.push_back(std::move(item));
    }
  }

  void Str(std::string_view key, std::string& out) {
    if (auto* n = Get(key)) {
      if (auto v = n->value<std::string>())
        out = *v;
      else
        Expected(*n, key, "a string");
    }
  }

  void Path(std::string_view key, std::filesystem::path& out) {
    std::string s = out.string();
    Str(key, s);
    out = s;
  }

  void StrList(std::string_view key, std::vector<std::string>& out) {
    auto* n = Get(key);
    if (n == nullptr) return;
    auto* arr = n->as_array();
    if (arr == nullptr) return Expected(*n, key, "an array of strings");
    std::vector<std::string> v;
    for (auto& e : *arr) {
      auto s = e.value<std::string>();
      if (!s) return Expected(e, key, "an array of strings");
      v.push_back(*s);
    }
    out = std::move(v);
  }

  void Bool(std::string_view key, bool& out) {
    if (auto* n = Get(key)) {
      if (auto v = n->value<bool>())
        out = *v;
      else
        Expected(*n, key, "true or false");
    }
  }

  void Int(std::string_view key, int& out, int lo, int hi, std::string_view why) {
    auto* n = Get(key);
    if (n == nullptr) return;
    if (!n->is_integer()) return Expected(*n, key, "an integer");
    int64_t v = n->as_integer()->get();
    if (v < lo || v > hi) return OutOfRange(*n, key, std::to_string(lo), std::to_string(hi), why);
    out = static_cast<int>(v);
  }

  void Handle(std::string_view key, uint32_t& out) {
    auto* n = Get(key);
    if (n == nullptr) return;
    if (!n->is_integer()) return Expected(*n, key, "an integer handle such as 0x81000001");
    int64_t v = n->as_integer()->get();
    if (!IsPersistentHandle(v)) {
      return Problem(n->source(), Dotted(key),
                     "must be a persistent handle between 0x81000000 and 0x81FFFFFF");
    }
    out = static_cast<uint32_t>(v);
  }

  void Double(std::string_view key, double& out, double lo, double hi, std::string_view why) {
    auto* n = Get(key);
    if (n == nullptr) return;
    if (!n->is_number()) return Expected(*n, key, "a number");
    double v = n->value<double>().value_or(0);
    if (!(v >= lo && v <= hi)) return OutOfRange(*n, key, FormatNumber(lo), FormatNumber(hi), why);
    out = v;
  }

  void Dur(std::string_view key, Duration& out, Duration lo, Duration hi) {
    auto* n = Get(key);
    if (n == nullptr) return;
    auto s = n->value<std::string>();
    if (!s || !n->is_string())
      return Expected(*n, key, "a duration string such as \"30s\" or \"5m\"");
    auto d = ParseDuration(*s);
    if (!d) {
      return Problem(n->source(), Dotted(key),
                     "\"" + *s + "\" is not a duration; use a number and a unit (ms, s, m, h, d)");
    }
    if (*d < lo || *d > hi) return OutOfRange(*n, key, FormatDuration(lo), FormatDuration(hi), "");
    out = *d;
  }

  // An integer number of days for a duration also settable as `other`.
  void Days(std::string_view key, Duration& out, int lo, int hi, std::string_view other) {
    int days = 0;
    Int(key, days, lo, hi, "");
    if (days == 0) return;
    if (frames_.back().table->get(other) != nullptr) {
      return Problem(
          Get(key)->source(), Dotted(key),
          "give either " + std::string(other) + " or " + std::string(key) + ", not both");
    }
    out = std::chrono::hours(24 * days);
  }

  void Size(std::string_view key, uint64_t& out, uint64_t lo, uint64_t hi, std::string_view why) {
    auto* n = Get(key);
    if (n == nullptr) return;
    std::optional<uint64_t> v;
    if (n->is_integer()) {
      int64_t i = n->as_integer()->get();
      if (i >= 0) v = static_cast<uint64_t>(i);
    } else if (auto s = n->value<std::string>(); s && n->is_string()) {
      v = ParseSize(*s);
    } else {
      return Expected(*n, key, "a size such as \"256MiB\"");
    }
    if (!v) {
      return Problem(n->source(), Dotted(key),
                     "is not a size; use bytes or a number and a unit (KiB, MiB, GiB, KB, MB, GB)");
    }
    if (*v < lo || *v > hi) return OutOfRange(*n, key, FormatSize(lo), FormatSize(hi), why);
    out = *v;
  }

  template <typename E, size_t N>
  void Enum(std::string_view key, E& out, const EnumName<E> (&names)[N]) {
    auto* n = Get(key);
    if (n == nullptr) return;
    std::string allowed;
    for (const auto& e : names)
      allowed += (allowed.empty() ? "\"" : ", \"") + std::string(e.name) + "\"";
    auto s = n->value<std::string>();
    if (!s || !n->is_string()) return Expected(*n, key, "one of " + allowed);
    for (const auto& e : names) {
      if (e.name == *s) {
        out = e.value;
        return;
      }
    }
    Problem(n->source(), Dotted(key), "\"" + *s + "\" is not one of " + allowed);
  }

  void Problem(const toml::source_region& where, std::string key, std::string message) {
    problems_.push_back({file_, static_cast<int>(where.begin.line),
                         static_cast<int>(where.begin.column), std::move(key), std::move(message)});
  }

 private:
  struct Frame {
    const toml::table* table;
    std::string prefix;
    std::vector<std::string> known;
  };

  void Enter(const toml::table& t, std::string prefix) {
    frames_.push_back({&t, std::move(prefix), {}});
  }

  void Leave() {
    Frame& f = frames_.back();
    for (auto&& [k, node] : *f.table) {
      std::string name(k.str());
      if (std::find(f.known.begin(), f.known.end(), name) != f.known.end()) continue;
      std::string hint = Suggest(name, f.known);
      Problem(k.source(), f.prefix + "." + name,
              "unknown key" + (hint.empty() ? std::string() : "; did you mean \"" + hint + "\"?"));
    }
    frames_.pop_back();
  }

  const toml::node* Get(std::string_view key) {
    frames_.back().known.emplace_back(key);
    return frames_.back().table->get(key);
  }

  std::string Dotted(std::string_view key) const {
    return frames_.back().prefix + "." + std::string(key);
  }

  void Expected(const toml::node& n, std::string_view key, const std::string& what) {
    Problem(n.source(), Dotted(key), "expected " + what + ", found " + TypeName(n));
  }

  void OutOfRange(const toml::node& n, std::string_view key, const std::string& lo,
                  const std::string& hi, std::string_view why) {
    std::string m = "must be between " + lo + " and " + hi;
    if (!why.empty()) m += " (" + std::string(why) + ")";
    Problem(n.source(), Dotted(key), m);
  }

  const toml::table& root_;
  std::string file_;
  std::vector<ConfigProblem>& problems_;
  std::set<std::string> sections_;
  std::vector<Frame> frames_;
};

// A TOML basic string.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

class Writer {
 public:
  template <typename F>
  void Section(std::string_view name, F visit) {
    out_ << "\n[" << name << "]\n";
    visit();
  }
  template <typename T, typename F>
  void Array(std::string_view name, std::vector<T>& items, F visit) {
    for (auto& item : items) {
      out_ << "\n[[" << name << "]]\n";
      visit(item);
    }
  }
  void Str(std::string_view k, std::string& v) { Line(k, Quote(v)); }
  void Path(std::string_view k, std::filesystem::path& v) { Line(k, Quote(v.string())); }
  void StrList(std::string_view k, std::vector<std::string>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + Quote(v[i]);
    Line(k, s + "]");
  }
  void Bool(std::string_view k, bool& v) { Line(k, v ? "true" : "false"); }
  void Int(std::string_view k, int& v, int, int, std::string_view) { Line(k, std::to_string(v)); }
  void Handle(std::string_view k, uint32_t& v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08X", v);
    Line(k, buf);
  }
  void Double(std::string_view k, double& v, double, double, std::string_view) {
    std::string s = FormatNumber(v);
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    Line(k, s);
  }
  void Dur(std::string_view k, Duration& v, Duration, Duration) {
    Line(k, Quote(FormatDuration(v)));
  }
  void Days(std::string_view, Duration&, int, int, std::string_view) {}  // written as a Dur
  void Size(std::string_view k, uint64_t& v, uint64_t, uint64_t, std::string_view) {
    Line(k, Quote(FormatSize(v)));
  }
  template <typename E, size_t N>
  void Enum(std::string_view k, E& v, const EnumName<E> (&names)[N]) {
    for (const auto& e : names) {
      if (e.value == v) Line(k, Quote(e.name));
    }
  }
  std::string str() const { return out_.str(); }

 private:
  void Line(std::string_view k, const std::string& v) { out_ << k << " = " << v << "\n"; }
  std::ostringstream out_;
};

}  // namespace

std::string Config::SensorThingName(const SensorConfig& sensor) const {
  if (!sensor.thing_name.empty()) return sensor.thing_name;
  return agent.thing_name + kThingSeparator + sensor.id;
}

bool Config::GatewayMayCarry(std::string_view thing) const {
  std::string prefix = agent.thing_name + kThingSeparator;
  return thing.size() > prefix.size() && thing.substr(0, prefix.size()) == prefix &&
         thing.find(kThingSeparator, prefix.size()) == std::string_view::npos;
}

std::string ConfigProblem::ToString() const {
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line) + ":" + std::to_string(column);
  s += ": ";
  if (!key.empty()) s += key + ": ";
  // Values quoted from the file may hold control characters (a NUL, a
  // newline): shown escaped, the message stays whole and on one line.
  s += log::Printable(message, message.size() * 4 + 16);
  return s;
}

ParsedConfig ParseConfig(std::string_view text, std::string_view file_name) {
  ParsedConfig result;
  std::string file(file_name);
  result.config.source = file;
  toml::table root;
  try {
    root = toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    result.problems.push_back({file, static_cast<int>(e.source().begin.line),
                               static_cast<int>(e.source().begin.column), "",
                               "TOML syntax: " + std::string(e.description())});
    return result;
  }
  Reader reader(root, file, result.problems);
  VisitSections(reader, result.config);
  reader.Finish();
  if (result.config.aws.port == 443) result.config.aws.alpn = true;  // AWS IoT's MQTT on 443
  CheckAcrossSections(result.config, root, file, result.problems);
  std::stable_sort(result.problems.begin(), result.problems.end(),
                   [](const ConfigProblem& a, const ConfigProblem& b) {
                     return (a.line ? a.line : 1 << 30) < (b.line ? b.line : 1 << 30);
                   });
  return result;
}

Result<ParsedConfig> LoadConfig(const std::filesystem::path& path) {
  GA_ASSIGN_OR_RETURN(std::string text,
                      ReadFile(path, kMaxConfigBytes).With("reading the configuration"));
  ParsedConfig parsed = ParseConfig(text, path.string());
  // A file named by the config that the agent reads only once running: an
  // unreadable one makes the configuration unusable, so say so here.
  if (const auto& pw = parsed.config.local.password_file; !pw.empty()) {
    if (auto read = ReadFile(pw); !read.ok()) {
      parsed.problems.push_back({path.string(), 0, 0, "local.password_file",
                                 "cannot be read: " + read.status().message()});
    }
  }
  if (!parsed.config.aws.proxy_password_file.empty() && !parsed.config.aws.proxy.empty()) {
    if (auto proxy = CloudProxy(parsed.config.aws); !proxy.ok()) {
      parsed.problems.push_back(
          {path.string(), 0, 0, "aws.proxy_password_file", proxy.status().message()});
    }
  }
  return parsed;
}

std::string FormatConfig(const Config& config) {
  Config copy = config;
  Writer writer;
  VisitSections(writer, copy);
  std::string s = writer.str();
  return s.empty() ? s : s.substr(1);
}

}  // namespace ga
