// The bridge's composition: the parts (bridge/*.h) built and wired together,
// and the event loop's iteration over them. Each part's own header says what
// it owns.
#include "gateway_agent/bridge/bridge.h"

#include <algorithm>
#include <mutex>
#include <random>
#include <thread>

#include "agenda.h"
#include "cloud_links.h"
#include "event_loop.h"
#include "gateway_agent/log.h"
#include "gateway_agent/rate.h"
#include "gateway_agent/thread_annotations.h"
#include "lifecycle_request.h"
#include "local_link.h"
#include "outbox_full_log.h"
#include "outbox_staging.h"
#include "topic_map.h"

namespace ga::bridge {

namespace {

using std::chrono::milliseconds;

constexpr milliseconds kTick{100};
// The loop's pause before it waits again, after a wake-up for one or two
// events that came less than twice this after the one before (see Run):
// under load only, and at most this much latency.
constexpr std::chrono::microseconds kCoalesce{100};
constexpr std::chrono::seconds kExpireEvery{60};

}  // namespace

class Bridge::Loop {
 public:
  static Result<std::unique_ptr<Loop>> Create(Options options, std::atomic<bool>& local_connected) {
    OutboxLimits limits;
    limits.max_bytes = options.bridge.outbox_max_bytes;
    limits.max_age = options.bridge.outbox_max_age;
    limits.on_full = options.bridge.on_full;
    limits.fsync_every_commit = options.bridge.fsync_every_commit;
    GA_ASSIGN_OR_RETURN(auto outbox, Outbox::Open(options.state_dir / kOutboxDb, limits));
    GA_ASSIGN_OR_RETURN(auto events, EventLoop::Create());
    GA_ASSIGN_OR_RETURN(TopicMap topics, TopicMap::Create(options.local.ingest_filter,
                                                          options.bridge.cloud_topic_template,
                                                          options.bridge.command_filter));
    std::unique_ptr<Loop> loop(new Loop(std::move(outbox), std::move(events), std::move(topics)));
    LocalLink::Parts local{*loop->events_, loop->agenda_,     loop->staging_, *loop->outbox_,
                           loop->topics_,  loop->identities_, loop->rng_,     local_connected};
    GA_ASSIGN_OR_RETURN(loop->local_,
                        LocalLink::Create(options.local, local, options.boundary_probe_password));
    CloudLinks::Settings settings{
        std::move(options.aws), std::move(options.bridge), options.connect_interrupt_signal,
        std::move(options.release_free_memory), std::move(options.tpm_problem)};
    CloudLinks::Parts cloud{*loop->events_, loop->agenda_, *loop->outbox_, loop->staging_,
                            loop->topics_,  *loop->local_, loop->rng_};
    loop->clouds_ = std::make_unique<CloudLinks>(std::move(settings), cloud);
    return loop;
  }

  void Post(std::function<void()> fn) { events_->Post(std::move(fn)); }

  void RequestStop() {
    Post([this] { stopping_ = true; });
  }

  void Run() {
    if (TestUnlimitedRate()) {
      log::Warning(
          "GATEWAY_AGENT_TEST_UNLIMITED_RATE=1: bridge.publish_rate and bridge.byte_rate are "
          "not applied; for benchmarks against a test broker only, not for AWS IoT");
    }
    std::vector<EventLoop::Event> events;
    auto last_expire = Clock::now();
    auto next_tick = Clock::now();
    auto last_wake = Clock::now() - kTick;
    bool pause = false;
    while (!stopping_) {
      auto wait = std::chrono::duration_cast<milliseconds>(next_tick - Clock::now());
      if (agenda_.has_rereads()) {
        wait = milliseconds(0);  // records OpenSSL holds are read at once
      } else if (pause) {
        // Under load the brokers' packets come one per wake-up: a short pause
        // lets them gather, so that one wake-up, one commit and one corked
        // write serve many.
        std::this_thread::sleep_for(kCoalesce);
      }
      if (!events_->Wait(std::clamp(wait, milliseconds(0), kTick), &events)) break;
      auto woke = Clock::now();
      pause = !events.empty() && events.size() <= 2 && woke - last_wake < 2 * kCoalesce;
      last_wake = woke;
      bool woken = false;
      for (const EventLoop::Event& e : events) {
        if (e.connection == nullptr) {
          woken = true;  // posted work runs after this batch: it may drop connections
          continue;
        }
        if (e.readable) Read(*e.connection);
        if (e.writable) agenda_.MarkWrite(*e.connection);
      }
      agenda_.DrainRereads([&](CloudConnection& c) {
        if (c.fd >= 0) clouds_->Read(c);
      });
      // Everything read in this iteration is committed in one transaction
      // before any PUBACK goes back to the local broker.
      auto now = Clock::now();
      bool tick = now >= next_tick;
      CommitStaged(/*flush_acks=*/tick);
      // The local PUBACKs go out first: the broker sends the next messages
      // (it keeps only so many unacknowledged) while we publish these.
      if (local_->connection().write_marked) local_->Write();
      if (woken) events_->RunPosted();
      // The time-based part (connects, keepalive, rate-limited sends) runs
      // once per tick over every connection; in between, only connections
      // with news (new messages, PUBACKs, readiness) are served.
      if (tick) {
        next_tick = now + kTick;
        local_->Tick(now);
        clouds_->Tick(now);
        full_log_.Tick(*outbox_, now);
        PublishHealth();
      }
      agenda_.DrainSends([&](CloudConnection& c) { clouds_->Send(c); });
      agenda_.DrainWrites([&](MqttConnection& c) { Write(c); });
      if (now - last_expire > kExpireEvery) {
        last_expire = now;
        Expire();
      }
    }
    Shutdown();
  }

  void Upsert(const BridgeIdentity& identity) {
    auto known = identities_.find(identity.name);
    std::string old_password = known == identities_.end() ? "" : known->second.local_password;
    identities_[identity.name] = identity;
    clouds_->Upsert(identity);
    if (identity.sensor && !identity.local_password.empty() &&
        identity.local_password != old_password) {
      local_->IssueClient(identity.name, identity.local_password, !old_password.empty());
    }
  }

  void Ask(const std::string& name, const std::shared_ptr<LifecycleRequest>& request) {
    clouds_->Ask(name, request);
  }

  BridgeHealth Health() const {
    MutexLock lock(health_mu_);
    return health_;
  }

  void Remove(const std::string& name) {
    if (auto it = identities_.find(name);
        it != identities_.end() && !it->second.local_password.empty()) {
      local_->RetireClient(name);
    }
    identities_.erase(name);
    clouds_->Drop(name);
    if (Status s = outbox_->Forget(name); !s.ok()) log::Error(s.message(), {{"IDENTITY", name}});
  }

 private:
  Loop(std::unique_ptr<Outbox> outbox, std::unique_ptr<EventLoop> events, TopicMap topics)
      : outbox_(std::move(outbox)),
        events_(std::move(events)),
        topics_(std::move(topics)),
        staging_(*outbox_),
        rng_(std::random_device{}()) {}

  void Read(MqttConnection& c) {
    if (c.local) return local_->Read();
    clouds_->Read(static_cast<CloudConnection&>(c));
  }

  void Write(MqttConnection& c) {
    if (c.local) return local_->Write();
    clouds_->Write(static_cast<CloudConnection&>(c));
  }

  void CommitStaged(bool flush_acks) {
    const bool accepted = staging_.has_accepted();
    Status s = staging_.Commit(flush_acks);
    if (s.ok()) {
      if (accepted) outbox_problem_.clear();
      return clouds_->TakeCommitted(staging_.committed());
    }
    // Typically the state directory's disk is full or read-only.
    outbox_problem_ =
        "outbox commit failed (is the state directory's disk full or read-only?): " + s.message();
    if (!accepted) {
      log::Error(s.message());  // only deletes: kept, and tried again
      return;
    }
    // The PUBACKs of these messages are still queued in libmosquitto: drop
    // the connection without writing them, so the broker redelivers.
    log::Error("outbox commit failed, reconnecting to the local broker so it redelivers: " +
               s.message());
    local_->DropUnacknowledged();
  }

  void PublishHealth() {
    BridgeHealth h;
    h.local_connected = local_->connected();
    h.local_sessions = local_->sessions();
    // Empty until a connect has failed (the first one is not a problem yet).
    if (!h.local_connected) h.local_problem = local_->connection().problem;
    h.outbox_problem = outbox_problem_;
    h.cloud_connected = clouds_->CollectProblems(h.cloud_problems, h.cloud_refusals);
    h.local_client_problems = local_->ClientProblems();
    MutexLock lock(health_mu_);
    health_ = std::move(h);
  }

  void Expire() {
    auto expired = outbox_->Expire(UnixMillis());
    if (!expired.ok()) {
      log::Error(expired.status().message());
    } else if (*expired > 0) {
      log::Warning("outbox: dropped " + std::to_string(*expired) +
                   " message(s) older than bridge.outbox_max_age");
    }
  }

  void Shutdown() {
    clouds_->StopHandshakes();  // joined: no thread uses a connection after this
    CommitStaged(/*flush_acks=*/true);
    // Let queued PUBACKs to the local broker and DISCONNECTs go out.
    clouds_->DisconnectAll();
    local_->Disconnect();
    agenda_.MarkWrite(local_->connection());
    clouds_->MarkAllWrite();
    agenda_.DrainWrites([&](MqttConnection& c) { Write(c); });
    agenda_.Clear();
    clouds_->Clear();
    local_.reset();
  }

  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<EventLoop> events_;
  const TopicMap topics_;
  Agenda agenda_;
  OutboxStaging staging_;
  OutboxFullLog full_log_;
  IdentityTable identities_;
  std::mt19937_64 rng_;
  std::unique_ptr<LocalLink> local_;
  std::unique_ptr<CloudLinks> clouds_;
  bool stopping_ = false;
  std::string outbox_problem_;
  mutable Mutex health_mu_;
  BridgeHealth health_ GA_GUARDED_BY(health_mu_);
};

namespace {
std::once_flag mosquitto_init;
}

Bridge::Bridge(std::unique_ptr<Loop> loop) : loop_(std::move(loop)) {}

Result<std::unique_ptr<Bridge>> Bridge::Create(Options options) {
  std::call_once(mosquitto_init, [] { mosquitto_lib_init(); });
  std::unique_ptr<Bridge> bridge(new Bridge(nullptr));
  GA_ASSIGN_OR_RETURN(bridge->loop_, Loop::Create(std::move(options), bridge->local_connected_));
  return bridge;
}

Bridge::~Bridge() {
  Stop();
}

Status Bridge::Start() {
  if (thread_.joinable()) return FailedPrecondition("the bridge is already running");
  Loop* loop = loop_.get();
  thread_ = std::thread([loop] { loop->Run(); });
  MutexLock lock(asked_mu_);
  running_ = true;
  return Status::Ok();
}

void Bridge::Stop() {
  if (thread_.joinable()) {
    loop_->RequestStop();
    thread_.join();
  }
  MutexLock lock(asked_mu_);
  running_ = false;
  for (const auto& weak : asked_) {
    if (auto request = weak.lock()) {
      LifecycleReply none;
      none.detail = "the bridge stopped before the answer";
      request->Complete(std::move(none));
    }
  }
  asked_.clear();
}

void Bridge::Upsert(const BridgeIdentity& identity) {
  loop_->Post([loop = loop_.get(), identity] { loop->Upsert(identity); });
}

LifecycleReply Bridge::Ask(const std::string& name, const aws::LifecycleAsk& ask,
                           std::chrono::milliseconds timeout) {
  auto request = std::make_shared<LifecycleRequest>(ask);
  {
    MutexLock lock(asked_mu_);
    if (!running_) {
      LifecycleReply none;
      none.detail = "the bridge is not running";
      return none;
    }
    std::erase_if(asked_, [](const std::weak_ptr<LifecycleRequest>& w) { return w.expired(); });
    asked_.push_back(request);
  }
  loop_->Post([loop = loop_.get(), name, request] { loop->Ask(name, request); });
  return request->Wait(timeout);
}

BridgeHealth Bridge::Health() const {
  return loop_->Health();
}

void Bridge::Remove(const std::string& name) {
  loop_->Post([loop = loop_.get(), name] { loop->Remove(name); });
}

}  // namespace ga::bridge
