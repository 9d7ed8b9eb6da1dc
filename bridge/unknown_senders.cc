#include "unknown_senders.h"

#include <algorithm>

#include "gateway_agent/log.h"

namespace ga::bridge {

void UnknownSenders::Note(std::string_view sensor, std::string_view topic, Clock::time_point now,
                          int64_t wall_ms) {
  ++pending_;
  std::string shown = log::Printable(sensor, kShownBytes);
  auto it = std::find_if(recent_.begin(), recent_.end(),
                         [&](const UnknownSender& u) { return u.id == shown; });
  UnknownSender entry{shown, 0, wall_ms};
  if (it != recent_.end()) {
    entry.messages = it->messages;
    recent_.erase(it);
  } else if (recent_.size() == kRecent) {
    recent_.erase(recent_.begin());
  }
  ++entry.messages;
  recent_.push_back(std::move(entry));

  if (now < next_log_) {
    ++unlogged_;
    return;
  }
  std::string line = "dropped a message from unknown sensor \"" + shown + "\" on " +
                     log::Printable(topic) + " (add it with gateway-agent sensor add)";
  if (unlogged_ > 0) {
    line += "; " + std::to_string(unlogged_) +
            " more from unknown sensor ids since the last such line (see gateway-agent status)";
  }
  log::Warning(line);
  unlogged_ = 0;
  next_log_ = now + kLogEvery;
}

Status UnknownSenders::Flush(Outbox& outbox, Clock::time_point now, bool force) {
  if (pending_ == 0 || (!force && now < next_flush_)) return Status::Ok();
  GA_RETURN_IF_ERROR(outbox.RecordUnknownSenders(pending_, recent_));
  pending_ = 0;
  for (UnknownSender& u : recent_) u.messages = 0;  // counted in the outbox now
  next_flush_ = now + kFlushEvery;
  return Status::Ok();
}

}  // namespace ga::bridge
