#include "gateway_agent/agent/status_report.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "gateway_agent/agent/clock.h"
#include "gateway_agent/agent/daemon.h"
#include "gateway_agent/bridge/bridge.h"

namespace ga {

namespace {

std::string Iso8601(Millis ms) {
  return ms <= 0 ? "" : FormatUtc(ms, "%Y-%m-%dT%H:%M:%SZ");
}

// How long until `at`, as one word (a table cell a script can split on).
std::string Relative(Millis at, Millis now) {
  if (at <= 0) return "-";
  int64_t s = (at - now) / 1000;
  if (s <= 0) return "now";
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 2 * 86400) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
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
  t.rejected = counter(bridge::kRejectedLimit) + counter(bridge::kRejectedFull) +
               counter(bridge::kRejectedTopic);
  t.dropped = counter(bridge::kDroppedFull) + counter(bridge::kDroppedAge) +
              counter(bridge::kDroppedUnknown);
  return t;
}

std::string_view AgentName(LiveHealth::Agent agent) {
  switch (agent) {
    case LiveHealth::Agent::kRunning: return "running";
    case LiveHealth::Agent::kNotRunning: return "not running";
    case LiveHealth::Agent::kNotReporting: return "not reporting";
  }
  return "?";
}

bool Expired(const Identity& id, Millis now) {
  return id.state == EnrollmentState::kActive && id.cert_not_after > 0 && id.cert_not_after <= now;
}

}  // namespace

std::string IdentityProblem(const Identity& id, Millis now, const LiveHealth* live) {
  if (Expired(id, now)) {
    return "certificate " + id.cert_id.substr(0, 12) + "... expired on " +
           Iso8601(id.cert_not_after) + ": AWS IoT refuses it (is the clock right?)";
  }
  if (live == nullptr || live->agent != LiveHealth::Agent::kRunning) return "";
  auto it = live->report.identities.find(id.name);
  return it == live->report.identities.end() ? "" : it->second;
}

bool NeedsAttention(const std::vector<Identity>& identities, Millis now, const LiveHealth& live) {
  if (live.agent != LiveHealth::Agent::kRunning || !live.report.ok()) return true;
  return std::any_of(identities.begin(), identities.end(), [&](const Identity& id) {
    return id.state == EnrollmentState::kParked || !IdentityProblem(id, now, &live).empty();
  });
}

BridgeReport ReadBridgeReport(const std::filesystem::path& state_dir) {
  const auto outbox = state_dir / bridge::kOutboxDb;
  BridgeReport report;
  auto traffic = bridge::ReadOutboxStats(outbox);
  auto unknown = bridge::ReadUnknownSenders(outbox);
  if (traffic.ok()) report.traffic = std::move(*traffic);
  if (unknown.ok()) report.unknown = std::move(*unknown);
  report.problem = !traffic.ok() ? traffic.status() : unknown.status();
  return report;
}

Result<StatusSnapshot> ReadStatus(const Config& config) {
  StatusSnapshot s;
  GA_ASSIGN_OR_RETURN(auto store, IdentityStore::OpenReadOnly(config.agent.state_dir / kStateDb));
  GA_ASSIGN_OR_RETURN(s.identities, store->List());
  s.bridge = ReadBridgeReport(config.agent.state_dir);
  s.now = NowMillis();
  s.live = JudgeHealth(config.agent.runtime_dir / kHealthFile, s.now);
  return s;
}

std::string StatusTable(const std::vector<Identity>& identities, Millis now,
                        const BridgeStats& bridge, const bridge::UnknownSenderReport& unknown,
                        const LiveHealth* live) {
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
    // An ACTIVE identity's next step is its certificate's renewal.
    const bool renewing = id.state == EnrollmentState::kActive &&
                          (id.renewal != RenewalStep::kNone || !id.retiring_cert_id.empty() ||
                           !id.renewal_error.empty());
    if (renewing) {
      note = id.renewal != RenewalStep::kNone
                 ? "renewing (" + std::string(RenewalStepName(id.renewal)) + ")" +
                       (id.renewal_error.empty() ? "" : ": " + id.renewal_error)
                 : id.renewal_error;
    }
    if (std::string problem = IdentityProblem(id, now, live); !problem.empty()) {
      note = "PROBLEM: " + problem;
    }
    // For an ACTIVE identity, when its certificate renews (or its renewal's
    // next attempt).
    std::string next =
        waiting || id.state == EnrollmentState::kActive ? Relative(id.next_attempt, now) : "-";
    Traffic t = TrafficOf(bridge, id.name, now);
    std::snprintf(line, sizeof line,
                  "%-16s %-7s %-28s %-11s %8d %-10s %-20s %-4s %7lld %9lld %7lld %5lld %5lld %s\n",
                  Cut(id.name, 16).c_str(), std::string(KindName(id.kind)).c_str(),
                  Cut(id.thing, 28).c_str(), std::string(StateName(id.state)).c_str(), id.attempts,
                  next.c_str(), id.cert_not_after ? Iso8601(id.cert_not_after).c_str() : "-",
                  t.connected ? "yes" : "no", static_cast<long long>(t.messages),
                  static_cast<long long>(t.bytes), static_cast<long long>(t.sent),
                  static_cast<long long>(t.rejected), static_cast<long long>(t.dropped),
                  Cut(note, 160).c_str());
    out += line;
  }
  out += std::to_string(active) + "/" + std::to_string(identities.size()) + " active";
  if (shared) out += ", " + std::to_string(shared) + " over the gateway's connection";
  out += "\n";
  if (live != nullptr) {
    if (live->agent == LiveHealth::Agent::kRunning) {
      out += "agent: running (pid " + std::to_string(live->report.pid) + ")\n";
    } else {
      out += "agent: " + std::string(AgentName(live->agent)) + ": " + live->agent_note + "\n";
    }
    for (const auto& p : live->report.problems) out += "needs attention: " + p + "\n";
    for (const auto& w : live->report.warnings) out += "warning: " + w + "\n";
  }
  if (unknown.dropped > 0) {
    out += "unknown sensor ids: " + std::to_string(unknown.dropped) + " message(s) dropped";
    if (!unknown.recent.empty()) {
      out += "; recent:";
      for (const auto& u : unknown.recent) {
        out += " " + u.id + " (" + std::to_string(u.messages) + ")";
      }
    }
    out += "\n";
  }
  return out;
}

std::string StatusJson(const std::vector<Identity>& identities, Millis now,
                       const BridgeStats& bridge, const bridge::UnknownSenderReport& unknown,
                       const LiveHealth* live) {
  // Keys keep the order they are written in: programs may read the output
  // with line-oriented tools, and its order is part of what we ship.
  using Json = nlohmann::ordered_json;
  Json list = Json::array();
  int counts[kEnrollmentStateCount] = {0};
  for (const Identity& id : identities) {
    ++counts[static_cast<int>(id.state)];
    Traffic t = TrafficOf(bridge, id.name, now);
    list.push_back({
        {"name", id.name},
        {"kind", KindName(id.kind)},
        {"thing", id.thing},
        {"state", StateName(id.state)},
        {"problem", IdentityProblem(id, now, live)},
        {"attempts", id.attempts},
        {"nextAttempt", Iso8601(id.next_attempt)},
        {"lastError", id.last_error},
        {"parkReason", id.park_reason},
        {"longPending", id.long_pending_reported},
        {"certificateId", id.cert_id},
        {"certificateExpires", Iso8601(id.cert_not_after)},
        {"renewal",
         {{"step", RenewalStepName(id.renewal)},
          {"renewals", id.renewals},
          {"renewsAt", id.state == EnrollmentState::kActive && id.renewal == RenewalStep::kNone &&
                               id.retiring_cert_id.empty()
                           ? Iso8601(id.next_attempt)
                           : ""},
          {"nextCertificateId", id.next_cert_id},
          {"retiringCertificateId", id.retiring_cert_id},
          {"error", id.renewal_error}}},
        {"keyFile", id.key_file},
        {"chainFile", id.chain_file},
        {"registeringSince", Iso8601(id.registering_since)},
        {"activeSince", Iso8601(id.active_since)},
        {"connected", t.connected},
        {"outbox",
         {{"messages", t.messages}, {"bytes", t.bytes}, {"oldestAgeSeconds", t.oldest_age_s}}},
        {"sent", t.sent},
        {"rejected", t.rejected},
        {"dropped", t.dropped},
    });
  }
  Json by_state = Json::object();
  for (int s = 0; s < kEnrollmentStateCount; ++s) {
    by_state[std::string(StateName(static_cast<EnrollmentState>(s)))] = counts[s];
  }
  by_state["total"] = identities.size();
  Json recent = Json::array();
  for (const auto& u : unknown.recent) {
    recent.push_back({{"id", u.id}, {"messages", u.messages}, {"lastSeen", Iso8601(u.last_ms)}});
  }
  Json health = Json::object();
  if (live != nullptr) {
    health = {{"ok", !NeedsAttention(identities, now, *live)},
              {"agent", AgentName(live->agent)},
              {"note", live->agent_note},
              {"problems", live->report.problems},
              {"warnings", live->report.warnings}};
  }
  Json out = {{"health", std::move(health)},
              {"identities", std::move(list)},
              {"counts", std::move(by_state)},
              {"unknownSensors", {{"dropped", unknown.dropped}, {"recent", std::move(recent)}}}};
  // Text from peers (TLS alerts, CA error output) may not be UTF-8.
  return out.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace ga
