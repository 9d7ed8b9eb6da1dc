#include "send_budget.h"

#include <algorithm>

#include "gateway_agent/aws_iot.h"

namespace ga::bridge {

SendBudget::SendBudget(double publish_rate, double byte_rate, size_t window, bool unlimited,
                       SteadyClock::time_point now)
    : window_(window) {
  if (unlimited) return;
  // Publishes: burst + refill per second = publish_rate, so no one-second
  // window exceeds it. Bytes: the burst holds the largest message (128 KiB),
  // so a window may exceed byte_rate by up to one such message.
  double burst = std::max(1.0, publish_rate / 10);
  publishes_ =
      std::make_unique<TokenBucket>(std::max(publish_rate - burst, publish_rate / 2), burst, now);
  bytes_ = std::make_unique<TokenBucket>(
      byte_rate, std::max(byte_rate / 10, static_cast<double>(aws::kMaxPayloadBytes)), now);
}

bool SendBudget::TryTake(size_t bytes, SteadyClock::time_point now) {
  if (!publishes_) return true;
  const auto b = static_cast<double>(bytes);
  if (bytes_->TimeUntil(b, now).count() > 0) return false;
  if (!publishes_->TryTake(1, now)) return false;
  return bytes_->TryTake(b, now);
}

}  // namespace ga::bridge
