// The connections with news in one iteration of the event loop: to write
// (queued packets), to send from (new messages, room in the window) and to
// read again (TLS records OpenSSL holds). Each connection is listed once;
// the loop drains the lists every iteration.
#pragma once

#include <algorithm>
#include <vector>

#include "mqtt_connection.h"

namespace ga::bridge {

class Agenda {
 public:
  void MarkWrite(MqttConnection& c) {
    if (c.write_marked) return;
    c.write_marked = true;
    to_write_.push_back(&c);
  }

  // A carried sensor's messages are sent by its carrier.
  void MarkSend(CloudConnection& sender) {
    CloudConnection& c = sender.carrier ? *sender.carrier : sender;
    if (c.send_marked) return;
    c.send_marked = true;
    to_send_.push_back(&c);
  }

  // A cloud connection whose TLS records OpenSSL holds unread.
  void MarkReread(CloudConnection& c) {
    if (c.reread_marked || !c.mosq || !HoldsWholeRecords(c.mosq.get())) return;
    c.reread_marked = true;
    reread_.push_back(&c);
  }

  // Before a cloud connection is dropped.
  void Unmark(CloudConnection& c) {
    std::erase(to_write_, static_cast<MqttConnection*>(&c));
    std::erase(to_send_, &c);
    std::erase(reread_, &c);
    c.write_marked = false;
    c.send_marked = false;
    c.reread_marked = false;
  }

  // Calls `fn` for each listed connection (also those listed meanwhile),
  // then empties the list.
  template <typename Fn>
  void DrainWrites(Fn&& fn) {
    DrainGrowing(
        to_write_, [](MqttConnection& c) { c.write_marked = false; }, fn);
  }
  template <typename Fn>
  void DrainSends(Fn&& fn) {
    DrainGrowing(
        to_send_, [](CloudConnection& c) { c.send_marked = false; }, fn);
  }
  template <typename Fn>
  void DrainRereads(Fn&& fn) {
    std::vector<CloudConnection*> now;
    now.swap(reread_);
    for (CloudConnection* c : now) {
      c->reread_marked = false;
      fn(*c);
    }
  }

  bool has_rereads() const { return !reread_.empty(); }

  void Clear() {
    to_write_.clear();
    to_send_.clear();
    reread_.clear();
  }

 private:
  template <typename T, typename Unmark, typename Fn>
  static void DrainGrowing(std::vector<T*>& list, Unmark unmark, Fn& fn) {
    for (size_t i = 0; i < list.size(); ++i) {
      T* c = list[i];
      unmark(*c);
      fn(*c);
    }
    list.clear();
  }

  std::vector<MqttConnection*> to_write_;
  std::vector<CloudConnection*> to_send_;
  std::vector<CloudConnection*> reread_;
};

}  // namespace ga::bridge
