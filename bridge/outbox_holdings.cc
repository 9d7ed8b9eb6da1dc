#include "outbox_holdings.h"

namespace ga::bridge {

void OutboxHoldings::Set(Entries::iterator it, int64_t bytes) {
  Entry& e = it->second;
  if (begun_ && !e.touched) {
    e.touched = true;
    e.saved = e.bytes;
    touched_.push_back(it);
  }
  total_ += bytes - e.bytes;
  if (e.bytes > 0) {
    // Moved to its new place without a new node.
    auto node = by_bytes_.extract({e.bytes, std::string_view(it->first)});
    if (bytes > 0) {
      node.value().first = bytes;
      by_bytes_.insert(std::move(node));
    }
  } else if (bytes > 0) {
    by_bytes_.emplace(bytes, std::string_view(it->first));
  }
  e.bytes = bytes;
  if (bytes <= 0 && !begun_) entries_.erase(it);
}

void OutboxHoldings::Add(std::string_view identity, int64_t delta) {
  if (delta == 0) return;
  auto it = entries_.find(identity);
  if (it == entries_.end()) it = entries_.emplace(std::string(identity), Entry{}).first;
  Set(it, it->second.bytes + delta);
}

void OutboxHoldings::Clear(std::string_view identity) {
  auto it = entries_.find(identity);
  if (it != entries_.end()) Set(it, 0);
}

void OutboxHoldings::ClearAll() {
  entries_.clear();
  by_bytes_.clear();
  touched_.clear();
  total_ = 0;
  begun_ = false;
}

void OutboxHoldings::Begin() {
  Keep();  // a transaction left open keeps its changes
  begun_ = true;
  saved_total_ = total_;
}

void OutboxHoldings::Keep() {
  begun_ = false;
  for (auto it : touched_) {
    it->second.touched = false;
    if (it->second.bytes <= 0) entries_.erase(it);
  }
  touched_.clear();
}

void OutboxHoldings::Undo() {
  if (!begun_) return;
  for (auto it : touched_) {
    Entry& e = it->second;
    if (e.bytes > 0) by_bytes_.erase({e.bytes, std::string_view(it->first)});
    e.bytes = e.saved;
    if (e.bytes > 0) by_bytes_.emplace(e.bytes, std::string_view(it->first));
  }
  total_ = saved_total_;
  Keep();
}

int64_t OutboxHoldings::of(std::string_view identity) const {
  auto it = entries_.find(identity);
  return it == entries_.end() ? 0 : it->second.bytes;
}

std::string_view OutboxHoldings::largest() const {
  return by_bytes_.empty() ? std::string_view() : by_bytes_.begin()->second;
}

}  // namespace ga::bridge
