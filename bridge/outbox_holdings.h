// What each sensor holds in the outbox, in payload bytes, and which one holds
// the most: the outbox's fair share (Outbox, "When full") asks this on every
// drop, so the largest holder is found in O(log n) for n sensors.
//
// Changes made between Begin() and Keep() can be undone by Undo() (the outbox
// transaction that made them rolled back); outside, changes are kept at once.
// Not thread-safe: owned by the Outbox.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ga::bridge {

class OutboxHoldings {
 public:
  // Adds `delta` (negative: freed) to what `identity` holds.
  void Add(std::string_view identity, int64_t delta);
  // Everything of `identity` is gone.
  void Clear(std::string_view identity);
  void ClearAll();

  void Begin();
  void Keep();
  void Undo();

  int64_t total() const { return total_; }
  int64_t of(std::string_view identity) const;
  // How many identities hold at least one byte.
  size_t holders() const { return by_bytes_.size(); }
  // The identity holding the most bytes (of two holding as much, the one
  // whose name sorts first); empty when nobody holds anything.
  std::string_view largest() const;

 private:
  struct Entry {
    int64_t bytes = 0;
    int64_t saved = 0;  // bytes at Begin(), when touched since
    bool touched = false;
  };
  using Entries = std::map<std::string, Entry, std::less<>>;
  // Orders holders by bytes, most first, then by name.
  struct MostFirst {
    bool operator()(const std::pair<int64_t, std::string_view>& a,
                    const std::pair<int64_t, std::string_view>& b) const {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    }
  };

  void Set(Entries::iterator it, int64_t bytes);

  Entries entries_;  // also at 0 bytes while a change may be undone
  std::set<std::pair<int64_t, std::string_view>, MostFirst> by_bytes_;  // bytes > 0 only
  int64_t total_ = 0;
  bool begun_ = false;
  int64_t saved_total_ = 0;
  std::vector<Entries::iterator> touched_;
};

}  // namespace ga::bridge
