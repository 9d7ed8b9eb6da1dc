#include "outbox_full_log.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "gateway_agent/log.h"

namespace ga::bridge {

OutboxFullLog::Line OutboxFullLog::Take(Outbox& outbox, Clock::time_point now) {
  for (auto& [identity, loss] : outbox.TakeFullLosses()) {
    FullLoss& all = pending_[identity];
    all.dropped += loss.dropped;
    all.rejected += loss.rejected;
  }
  if (pending_.empty() || now < next_log_) return {};
  std::vector<std::pair<std::string, FullLoss>> most(pending_.begin(), pending_.end());
  std::stable_sort(most.begin(), most.end(), [](const auto& a, const auto& b) {
    return a.second.dropped + a.second.rejected > b.second.dropped + b.second.rejected;
  });
  std::string line =
      "outbox full (bridge.outbox_max_bytes = " + std::to_string(outbox.max_bytes()) +
      "): messages lost by sensors over their fair share:";
  for (size_t i = 0; i < most.size() && i < kShown; ++i) {
    const auto& [identity, loss] = most[i];
    line += std::string(i == 0 ? " " : "; ") + "sensor " + identity + " " +
            std::to_string(loss.dropped) + " dropped, " + std::to_string(loss.rejected) +
            " rejected (holds " + std::to_string(outbox.held(identity)) + " bytes)";
  }
  if (most.size() > kShown) {
    line += "; and " + std::to_string(most.size() - kShown) + " more sensor(s)";
  }
  line +=
      ". The other sensors keep their messages; to keep more, raise bridge.outbox_max_bytes or "
      "make the sensor send less (counts: gateway-agent status)";
  pending_.clear();
  next_log_ = now + kLogEvery;
  return {std::move(line), most[0].first};
}

void OutboxFullLog::Tick(Outbox& outbox, Clock::time_point now) {
  Line line = Take(outbox, now);
  if (!line.text.empty()) log::Warning(line.text, {{"IDENTITY", line.top}});
}

}  // namespace ga::bridge
