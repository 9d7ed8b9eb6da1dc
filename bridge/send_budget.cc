#include "send_budget.h"

#include <algorithm>

#include "gateway_agent/aws_iot.h"

namespace ga::bridge {

SendBudget::SendBudget(double publish_rate, double byte_rate, size_t window, bool unlimited,
                       SteadyClock::time_point now)
    : window_(window) {
  if (unlimited) return;
  // Publishes: burst + refill per second = publish_rate, so no one-second
  // window exceeds it. Bytes: the burst holds the largest message (128 KiB
  // and its topic), so a window may exceed byte_rate by up to one such message.
  double burst = std::max(1.0, publish_rate / 10);
  publishes_ =
      std::make_unique<TokenBucket>(std::max(publish_rate - burst, publish_rate / 2), burst, now);
  bytes_ = std::make_unique<TokenBucket>(
      byte_rate, std::max(byte_rate / 10, static_cast<double>(aws::kMaxPublishPacketBytes)), now);
  // AWS's buckets hold a second's worth; the bytes' at least one maximal message.
  server_publishes_ = {publish_rate, publish_rate, 0, now};
  server_bytes_ = {byte_rate, std::max(byte_rate, static_cast<double>(aws::kMaxPublishPacketBytes)),
                   0, now};
  NewConnection(now);
}

bool SendBudget::TryTake(size_t bytes, SteadyClock::time_point now) {
  if (!publishes_) return true;
  const auto b = static_cast<double>(bytes);
  // Room at the server even if everything in flight arrives with it.
  if (server_publishes_.Tokens(now) - static_cast<double>(in_flight_publishes_) < 1) return false;
  if (server_bytes_.Tokens(now) - static_cast<double>(in_flight_bytes_) < b) return false;
  if (bytes_->TimeUntil(b, now).count() > 0) return false;
  if (!publishes_->TryTake(1, now)) return false;
  bytes_->TryTake(b, now);
  ++in_flight_publishes_;
  in_flight_bytes_ += bytes;
  return true;
}

void SendBudget::Acknowledged(size_t bytes, SteadyClock::time_point now) {
  if (!publishes_ || in_flight_publishes_ == 0) return;
  --in_flight_publishes_;
  in_flight_bytes_ -= std::min<uint64_t>(in_flight_bytes_, bytes);
  SentWithoutAck(bytes, now);  // counted by the server by now
}

void SendBudget::SentWithoutAck(size_t bytes, SteadyClock::time_point now) {
  if (!publishes_) return;
  server_publishes_.tokens = server_publishes_.Tokens(now) - 1;
  server_bytes_.tokens = server_bytes_.Tokens(now) - static_cast<double>(bytes);
}

void SendBudget::NewConnection(SteadyClock::time_point now) {
  in_flight_publishes_ = 0;
  in_flight_bytes_ = 0;
  for (ServerBucket* b : {&server_publishes_, &server_bytes_}) {
    b->tokens = b->capacity;
    b->last = now;
  }
}

double SendBudget::ServerBucket::Tokens(SteadyClock::time_point now) {
  if (now > last) {
    tokens = std::min(capacity, tokens + rate * std::chrono::duration<double>(now - last).count());
    last = now;
  }
  return tokens;
}

}  // namespace ga::bridge
