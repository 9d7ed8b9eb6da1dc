#include "gateway_agent/agent/status_report.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace ga {

namespace {

std::string Iso8601(Millis ms) {
  if (ms <= 0) return "";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Relative(Millis at, Millis now) {
  if (at <= 0) return "-";
  int64_t s = (at - now) / 1000;
  if (s <= 0) return "now";
  if (s < 120) return "in " + std::to_string(s) + "s";
  if (s < 7200) return "in " + std::to_string(s / 60) + "m";
  return "in " + std::to_string(s / 3600) + "h";
}

std::string Cut(std::string s, size_t width) {
  if (s.size() > width) s = s.substr(0, width - 3) + "...";
  return s;
}

struct Traffic {
  bool connected = false;
  int64_t messages = 0, bytes = 0, oldest_age_s = 0, sent = 0, rejected = 0, dropped = 0;
};

Traffic TrafficOf(const BridgeStats& bridge, const std::string& name, Millis now) {
  Traffic t;
  auto it = bridge.find(name);
  if (it == bridge.end()) return t;
  const auto& s = it->second;
  auto counter = [&](const char* n) {
    auto c = s.counters.find(n);
    return c == s.counters.end() ? int64_t{0} : c->second;
  };
  t.connected = s.connected;
  t.messages = s.messages;
  t.bytes = s.bytes;
  t.oldest_age_s = s.oldest_ms > 0 ? std::max<int64_t>(0, (now - s.oldest_ms) / 1000) : 0;
  t.sent = counter(bridge::kSent);
  t.rejected = counter(bridge::kRejectedLimit) + counter(bridge::kRejectedFull);
  t.dropped = counter(bridge::kDroppedFull) + counter(bridge::kDroppedAge) +
              counter(bridge::kDroppedUnknown);
  return t;
}

}  // namespace

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string StatusTable(const std::vector<Identity>& identities, Millis now,
                        const BridgeStats& bridge) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line,
                "%-16s %-7s %-28s %-11s %8s %-10s %-20s %-4s %7s %9s %7s %5s %5s %s\n", "NAME",
                "KIND", "THING", "STATE", "ATTEMPTS", "NEXT", "CERT EXPIRES", "CONN", "OUTBOX",
                "BYTES", "SENT", "REJ", "DROP", "LAST ERROR / REASON");
  out += line;
  int active = 0, shared = 0;
  for (const auto& id : identities) {
    if (id.state == EnrollmentState::kActive) ++active;
    if (id.state == EnrollmentState::kShared) ++shared;
    bool waiting = id.state != EnrollmentState::kActive && id.state != EnrollmentState::kParked &&
                   id.state != EnrollmentState::kRemoved && id.state != EnrollmentState::kShared;
    std::string note = id.state == EnrollmentState::kParked ? id.park_reason : id.last_error;
    if (id.long_pending_reported && id.state == EnrollmentState::kRegistering) {
      note = "LONG PENDING: " + note;
    }
    if (id.state == EnrollmentState::kShared) {
      note = "travels over the gateway's connection";
    }
    Traffic t = TrafficOf(bridge, id.name, now);
    std::snprintf(line, sizeof line,
                  "%-16s %-7s %-28s %-11s %8d %-10s %-20s %-4s %7lld %9lld %7lld %5lld %5lld %s\n",
                  Cut(id.name, 16).c_str(), std::string(KindName(id.kind)).c_str(),
                  Cut(id.thing, 28).c_str(), std::string(StateName(id.state)).c_str(), id.attempts,
                  waiting ? Relative(id.next_attempt, now).c_str() : "-",
                  id.cert_not_after ? Iso8601(id.cert_not_after).c_str() : "-",
                  t.connected ? "yes" : "no", static_cast<long long>(t.messages),
                  static_cast<long long>(t.bytes), static_cast<long long>(t.sent),
                  static_cast<long long>(t.rejected), static_cast<long long>(t.dropped),
                  Cut(note, 160).c_str());
    out += line;
  }
  out += std::to_string(active) + "/" + std::to_string(identities.size()) + " active";
  if (shared) out += ", " + std::to_string(shared) + " over the gateway's connection";
  out += "\n";
  return out;
}

std::string StatusJson(const std::vector<Identity>& identities, Millis now,
                       const BridgeStats& bridge) {
  std::string out = "{\"identities\":[";
  int counts[kEnrollmentStateCount] = {0};
  for (size_t i = 0; i < identities.size(); ++i) {
    const Identity& id = identities[i];
    ++counts[static_cast<int>(id.state)];
    if (i) out += ",";
    out += "{\"name\":" + JsonString(id.name);
    out += ",\"kind\":" + JsonString(KindName(id.kind));
    out += ",\"thing\":" + JsonString(id.thing);
    out += ",\"state\":" + JsonString(StateName(id.state));
    out += ",\"attempts\":" + std::to_string(id.attempts);
    out += ",\"nextAttempt\":" + JsonString(Iso8601(id.next_attempt));
    out += ",\"lastError\":" + JsonString(id.last_error);
    out += ",\"parkReason\":" + JsonString(id.park_reason);
    out += ",\"longPending\":" + std::string(id.long_pending_reported ? "true" : "false");
    out += ",\"certificateId\":" + JsonString(id.cert_id);
    out += ",\"certificateExpires\":" + JsonString(Iso8601(id.cert_not_after));
    out += ",\"keyFile\":" + JsonString(id.key_file);
    out += ",\"chainFile\":" + JsonString(id.chain_file);
    out += ",\"registeringSince\":" + JsonString(Iso8601(id.registering_since));
    out += ",\"activeSince\":" + JsonString(Iso8601(id.active_since));
    Traffic t = TrafficOf(bridge, id.name, now);
    out += ",\"connected\":" + std::string(t.connected ? "true" : "false");
    out += ",\"outbox\":{\"messages\":" + std::to_string(t.messages) +
           ",\"bytes\":" + std::to_string(t.bytes) +
           ",\"oldestAgeSeconds\":" + std::to_string(t.oldest_age_s) + "}";
    out += ",\"sent\":" + std::to_string(t.sent);
    out += ",\"rejected\":" + std::to_string(t.rejected);
    out += ",\"dropped\":" + std::to_string(t.dropped);
    out += "}";
  }
  out += "],\"counts\":{";
  bool first = true;
  for (int s = 0; s < kEnrollmentStateCount; ++s) {
    if (!first) out += ",";
    first = false;
    out += JsonString(StateName(static_cast<EnrollmentState>(s))) + ":" + std::to_string(counts[s]);
  }
  out += ",\"total\":" + std::to_string(identities.size()) + "}}\n";
  return out;
}

}  // namespace ga
