#include "gateway_agent/bridge/bridge.h"

#include <malloc.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string_view>
#include <thread>
#include <vector>

#include "gateway_agent/bridge/outbox.h"
#include "gateway_agent/files.h"
#include "gateway_agent/log.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/rate.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tls_client.h"
#include "gateway_agent/tpm/tpm_key.h"

namespace ga::bridge {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int64_t NowMs() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct MosqDeleter {
  void operator()(mosquitto* m) const { mosquitto_destroy(m); }
};
using MosqPtr = std::unique_ptr<mosquitto, MosqDeleter>;

std::vector<std::string> Levels(std::string_view topic) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t slash = topic.find('/', start);
    out.emplace_back(topic.substr(start, slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

// Raises the soft limit on open files to the hard limit: each cloud
// connection holds a socket, and 1,000 of them exceed the usual 1,024.
void RaiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

constexpr milliseconds kTick{100};
// The loop's pause before it waits again, after a wake-up for one or two
// events that came less than twice this after the one before (see Run):
// under load only, and at most this much latency.
constexpr std::chrono::microseconds kCoalesce{100};
constexpr milliseconds kReconnectMin{1000};
// Short enough that a fleet is back soon after an outage; aws.connect_rate
// still paces the reconnects.
constexpr milliseconds kReconnectMax{15000};
// AWS IoT allows one CONNECT per second per client id.
constexpr milliseconds kPerClientId{1100};
constexpr int kRefill = 200;  // outbox rows read per refill
// Packets read from one connection per readiness event: a bound on one batch
// (epoll is level-triggered, so the rest is read in the next iteration).
constexpr int kMaxReadsPerEvent = 1000;
// PUBACKed messages are deleted from the outbox in batches of this many (or
// once per tick), with the iteration's new messages when there are any: a
// crash before that re-sends them (at least once), it never loses one.
constexpr size_t kAckBatch = 1024;
// Busy connections that keep their TLS buffers (see HoldTlsBuffers): ~4 MiB.
constexpr size_t kTlsBufferHolders = 128;
// After this many handshakes, free heap memory goes back to the system once
// none has finished for each of these times (see ReleaseFreeMemory).
constexpr int kHandshakesBeforeTrim = 50;
constexpr std::chrono::seconds kTrimQuiet[] = {std::chrono::seconds(2), std::chrono::seconds(15)};

// Benchmark hook: GATEWAY_AGENT_TEST_UNLIMITED_RATE=1 lifts the per-connection
// publish and byte rates (bridge.publish_rate, bridge.byte_rate), e.g. against
// a test broker without AWS's limits. Never for AWS IoT: it would trip
// AWS's per-connection throttling. The in-flight window stays as configured.
bool TestUnlimitedRate() {
  static const bool on = [] {
    const char* v = std::getenv("GATEWAY_AGENT_TEST_UNLIMITED_RATE");
    return v != nullptr && std::string_view(v) == "1";
  }();
  return on;
}

}  // namespace

std::string CloudTopic(std::string_view topic_template, std::string_view thing,
                       std::string_view rest) {
  std::string out;
  for (size_t i = 0; i < topic_template.size();) {
    if (topic_template.compare(i, 7, "{thing}") == 0) {
      out += thing;
      i += 7;
    } else if (topic_template.compare(i, 6, "{rest}") == 0) {
      out += rest;
      i += 6;
    } else {
      out += topic_template[i++];
    }
  }
  return out;
}

std::string CheckAwsPublishLimits(std::string_view topic, size_t payload_bytes) {
  if (payload_bytes > kMaxPayloadBytes) {
    return "payload of " + std::to_string(payload_bytes) + " bytes exceeds AWS IoT's 128 KB";
  }
  if (topic.size() > kMaxTopicBytes) {
    return "topic of " + std::to_string(topic.size()) + " bytes exceeds AWS IoT's 256";
  }
  int levels = static_cast<int>(std::count(topic.begin(), topic.end(), '/')) + 1;
  if (levels > kMaxTopicLevels) {
    return "topic has " + std::to_string(levels) + " levels; AWS IoT allows 8";
  }
  if (!topic.empty() && topic[0] == '$') return "topics starting with $ are reserved";
  return "";
}

// One libmosquitto client on the loop.
struct Connection {
  std::string name;  // identity name, or "local"
  MosqPtr mosq;
  int fd = -1;              // registered in epoll
  bool want_write = false;  // EPOLLOUT registered
  bool connected = false;
  bool connecting = false;
  Clock::time_point next_connect{};
  Clock::time_point last_attempt{};
  int failures = 0;
  bool write_marked = false;  // in Loop::to_write_
  int published = 0;          // PUBLISH packets queued since the last Write
};

struct CloudConnection : Connection {
  BridgeIdentity identity;
  // A handshake thread owns `mosq` while this is set: the loop leaves it alone.
  bool handshaking = false;
  tpm::ClientIdentity tls_identity;  // installed on each handshake's SSL
  std::map<int, int64_t> inflight;   // mid -> outbox seq
  std::deque<OutboxMessage> pending;
  int64_t last_queued = 0;                 // highest seq handed to libmosquitto
  bool drained = false;                    // the outbox had nothing more after last_queued
  std::unique_ptr<TokenBucket> publishes;  // null when lifted (TestUnlimitedRate)
  std::unique_ptr<TokenBucket> bytes;
  // Shared mode. On a sensor: the connection that carries its messages (none
  // while that identity is not connected to the loop). On that connection:
  // the sensors it carries, and their messages it has in flight.
  CloudConnection* carrier = nullptr;
  std::vector<CloudConnection*> riders;
  std::map<int, std::pair<CloudConnection*, int64_t>> carried;  // mid -> rider, seq
  size_t next_turn = 0;  // round robin over itself and its riders
  // Command filters of riders that left while it was offline: its persistent
  // session still holds them, so they are unsubscribed on the next CONNACK.
  std::vector<std::string> stale_filters;
  bool certificate_checked = false;
  bool send_marked = false;    // in Loop::to_send_
  bool reread_marked = false;  // in Loop::reread_
  // TLS buffers: kept while the connection is busy (see HoldTlsBuffers).
  bool holds_tls_buffers = false;
  bool sent_this_tick = false;
};

// True when the first certificate in `chain_file` has OU=gateway in its
// subject (the JITR Lambda then gave it the gateway policy).
bool HasGatewayOu(const std::filesystem::path& chain_file) {
  BioPtr bio(BIO_new_file(chain_file.c_str(), "r"));
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  ClearOpenSslErrors();
  if (!cert) return false;
  const X509_NAME* subject = X509_get_subject_name(cert.get());
  for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, i)) >= 0;) {
    const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
    if (ASN1_STRING_length(value) == 7 &&
        std::memcmp(ASN1_STRING_get0_data(value), "gateway", 7) == 0) {
      return true;
    }
  }
  return false;
}

// AWS IoT takes at most 8 filters per SUBSCRIBE.
constexpr size_t kFiltersPerSubscribe = 8;

// The identity whose handshake runs on this thread (see SharedTlsContext).
thread_local const tpm::ClientIdentity* handshake_identity = nullptr;

// Drives the TLS handshake that mosquitto_connect started on its (by then
// non-blocking) socket to the end, within 30 s or until `stop`. While the handshake
// runs, libmosquitto's loop_read/loop_write only step SSL_connect: no packet
// is read and no callback runs, so this is safe on a thread other than the
// loop's.
int FinishTlsHandshake(mosquitto* m, const std::atomic<bool>& stop) {
  auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(m));
  if (ssl == nullptr) return MOSQ_ERR_SUCCESS;  // not TLS
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!SSL_is_init_finished(ssl)) {
    int fd = mosquitto_socket(m);
    if (fd < 0) return MOSQ_ERR_CONN_LOST;
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return MOSQ_ERR_TIMEOUT;
    if (stop) return MOSQ_ERR_CONN_LOST;
    pollfd p{fd, static_cast<short>(POLLIN | POLLRDHUP | (mosquitto_want_write(m) ? POLLOUT : 0)),
             0};
    int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 500)));
    if (n < 0 && errno != EINTR) return MOSQ_ERR_ERRNO;
    if (n <= 0) continue;
    if (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) {
      // Refused, reset or closed: say why instead of stepping SSL_connect on a dead socket.
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) return MOSQ_ERR_CONN_LOST;
      errno = err;
      return MOSQ_ERR_ERRNO;
    }
    int rc = (p.revents & POLLOUT) ? mosquitto_loop_write(m, 1) : mosquitto_loop_read(m, 1);
    if (rc != MOSQ_ERR_SUCCESS) return rc;
  }
  return MOSQ_ERR_SUCCESS;
}

// A few threads for the blocking part of connecting (TCP, TLS with a TPM
// signature). Jobs run in submission order.
// A blocking TCP connect to an endpoint that drops SYNs takes about two
// minutes to fail. Stop() interrupts the handshake threads still in one with
// this signal, whose handler does nothing and is installed without
// SA_RESTART, so connect() returns EINTR.
int ConnectInterruptSignal() {
  static const int sig = [] {
    int s = SIGRTMIN + 2;
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(s, &sa, nullptr);
    return s;
  }();
  return sig;
}

void MaskConnectInterrupt(int how) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, ConnectInterruptSignal());
  pthread_sigmask(how, &set, nullptr);
}
void BlockConnectInterrupt() {
  MaskConnectInterrupt(SIG_BLOCK);
}
void UnblockConnectInterrupt() {
  MaskConnectInterrupt(SIG_UNBLOCK);
}

class HandshakePool {
 public:
  explicit HandshakePool(int threads = 4) : threads_(threads) { ConnectInterruptSignal(); }
  ~HandshakePool() { Stop(); }

  // Runs `connect` (blocking) on a handshake thread so that Stop() can
  // interrupt it; MOSQ_ERR_CONN_LOST once stopping.
  int InterruptibleConnect(const std::function<int()>& connect) {
    {
      std::lock_guard lock(connecting_mu_);
      if (stopping_) return MOSQ_ERR_CONN_LOST;
      connecting_.insert(pthread_self());
    }
    // The certificate callback of this thread's previous handshake blocked it.
    UnblockConnectInterrupt();
    int rc = connect();
    int saved = errno;
    {
      std::lock_guard lock(connecting_mu_);
      connecting_.erase(pthread_self());
    }
    // Blocked if this handshake already reached the certificate callback: no
    // signal is sent from here on, and one still pending is harmless now.
    UnblockConnectInterrupt();
    errno = saved;
    return rc;
  }

  void Submit(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;
      jobs_.push_back(std::move(job));
      if (workers_.size() < static_cast<size_t>(threads_)) {
        workers_.emplace_back([this] { Work(); });
      }
    }
    cv_.notify_one();
  }

  // Set once Stop() begins: running jobs should give up.
  const std::atomic<bool>& stopping() const { return stopping_; }

  // Drops the jobs not started yet and waits for the running ones.
  void Stop() {
    stopping_ = true;
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
      jobs_.clear();
    }
    cv_.notify_all();
    // Only threads inside a TCP connect are signalled: never one using the TPM.
    while (true) {
      {
        std::lock_guard lock(connecting_mu_);
        if (connecting_.empty()) break;
        for (pthread_t t : connecting_) pthread_kill(t, ConnectInterruptSignal());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

 private:
  void Work() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopped_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopped and drained
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  int threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  std::vector<std::thread> workers_;        // guarded by mu_ (joined by Stop)
  bool stopped_ = false;                    // guarded by mu_
  std::atomic<bool> stopping_{false};
  std::mutex connecting_mu_;
  std::set<pthread_t> connecting_;  // threads inside a TCP connect; guarded by connecting_mu_
};

class Bridge::Loop {
 public:
  Loop(Bridge::Options options, std::unique_ptr<Outbox> outbox)
      : options_(std::move(options)), outbox_(std::move(outbox)), rng_(std::random_device{}()) {
    const auto& filter = options_.config.local.ingest_filter;
    auto levels = Levels(filter);
    for (size_t i = 0; i < levels.size(); ++i) {
      if (levels[i] == "+") {
        id_level_ = static_cast<int>(i);
        break;
      }
      prefix_ += levels[i] + "/";
    }
  }

  ~Loop() {
    for (int fd : {epoll_, wake_}) {
      if (fd >= 0) close(fd);
    }
  }

  Status Init(std::atomic<bool>* local_connected) {
    local_connected_ = local_connected;
    if (id_level_ < 0) {
      return InvalidArgument("local.ingest_filter \"" + options_.config.local.ingest_filter +
                             "\" has no + level for the sensor id (e.g. \"sensors/+/#\")");
    }
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) return ErrnoStatus("epoll_create1", errno);
    wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_ < 0) return ErrnoStatus("eventfd", errno);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &ev) != 0) return ErrnoStatus("epoll_ctl", errno);
    RaiseFileLimit();
    return Status::Ok();
  }

  void Post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      posted_.push_back(std::move(fn));
    }
    uint64_t one = 1;
    (void)!write(wake_, &one, sizeof one);
  }

  void RequestStop() {
    Post([this] { stopping_ = true; });
  }

  void Run() {
    if (TestUnlimitedRate()) {
      log::Warning(
          "GATEWAY_AGENT_TEST_UNLIMITED_RATE=1: bridge.publish_rate and bridge.byte_rate are "
          "not applied; for benchmarks against a test broker only, not for AWS IoT");
    }
    local_ = std::make_unique<Connection>();
    local_->name = "local";
    Status s = CreateLocal();
    if (!s.ok()) log::Error("local broker: " + s.message());
    std::vector<epoll_event> events(256);
    auto last_expire = Clock::now();
    auto next_tick = Clock::now();
    auto last_wake = Clock::now() - kTick;
    bool pause = false;
    while (!stopping_) {
      auto wait = std::chrono::duration_cast<milliseconds>(next_tick - Clock::now()).count();
      if (!reread_.empty()) {
        wait = 0;  // records OpenSSL holds are read at once
      } else if (pause) {
        // Under load the brokers' packets come one per wake-up: a short pause
        // lets them gather, so that one wake-up, one commit and one corked
        // write serve many.
        std::this_thread::sleep_for(kCoalesce);
      }
      int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                         static_cast<int>(std::clamp<int64_t>(wait, 0, kTick.count())));
      auto woke = Clock::now();
      pause = n > 0 && n <= 2 && woke - last_wake < 2 * kCoalesce;
      last_wake = woke;
      if (n < 0 && errno != EINTR) {
        log::Error(std::string("epoll_wait: ") + std::strerror(errno));
        break;
      }
      bool woken = false;
      for (int i = 0; i < n; ++i) {
        auto* c = static_cast<Connection*>(events[i].data.ptr);
        if (c == nullptr) {
          woken = true;  // posted work runs after this batch: it may drop connections
          continue;
        }
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) Read(*c);
        if (events[i].events & EPOLLOUT) MarkWrite(*c);
      }
      ReadHeld();
      // Everything read in this iteration is committed in one transaction
      // before any PUBACK goes back to the local broker.
      auto now = Clock::now();
      bool tick = now >= next_tick;
      CommitStaged(/*flush_acks=*/tick);
      // The local PUBACKs go out first: the broker sends the next messages
      // (it keeps only so many unacknowledged) while we publish these.
      if (local_ && local_->write_marked) Write(*local_);
      if (woken) {
        uint64_t v;
        (void)!read(wake_, &v, sizeof v);
        RunPosted();
      }
      // The time-based part (connects, keepalive, rate-limited sends) runs
      // once per tick over every connection; in between, only connections
      // with news (new messages, PUBACKs, readiness) are served.
      if (tick) {
        next_tick = now + kTick;
        Tick(now);
      }
      SendMarked();
      WriteMarked();
      if (now - last_expire > std::chrono::seconds(60)) {
        last_expire = now;
        auto expired = outbox_->Expire(NowMs());
        if (expired.ok() && *expired > 0) {
          log::Warning("outbox: dropped " + std::to_string(*expired) +
                       " message(s) older than bridge.outbox_max_age");
        }
      }
    }
    Shutdown();
  }

  void Upsert(const BridgeIdentity& identity) {
    identities_[identity.name] = identity;
    auto it = clouds_.find(identity.name);
    if (it != clouds_.end() && it->second->identity.via != identity.via) {
      DropCloud(identity.name);  // moves between its own and a shared connection
      it = clouds_.end();
    }
    if (!identity.via.empty()) {
      if (it == clouds_.end()) AddRider(identity);
      return;
    }
    if (identity.active && it == clouds_.end()) {
      auto c = std::make_unique<CloudConnection>();
      c->name = identity.name;
      c->identity = identity;
      double rate = options_.config.bridge.publish_rate;
      double byte_rate = static_cast<double>(options_.config.bridge.byte_rate);
      // Publishes: burst + refill per second = publish_rate, so no one-second
      // window exceeds it. Bytes: the burst holds the largest message (128
      // KiB), so a window may exceed byte_rate by up to one such message.
      if (!TestUnlimitedRate()) {
        double burst = std::max(1.0, rate / 10);
        c->publishes = std::make_unique<TokenBucket>(std::max(rate - burst, rate / 2), burst);
        c->bytes = std::make_unique<TokenBucket>(
            byte_rate, std::max(byte_rate / 10, static_cast<double>(kMaxPayloadBytes)));
      }
      // AWS allows one CONNECT per second per client id; enrollment just used one.
      c->next_connect = Clock::now() + kPerClientId;
      CloudConnection& carrier = *c;
      clouds_[identity.name] = std::move(c);
      for (auto& [name, rider] : clouds_) {
        if (rider->identity.via == identity.name) Attach(carrier, *rider);
      }
    } else if (!identity.active && it != clouds_.end()) {
      DropCloud(identity.name);
    }
  }

  void Remove(const std::string& name) {
    identities_.erase(name);
    DropCloud(name);
    Status s = outbox_->Forget(name);
    if (!s.ok()) log::Error(s.message(), {{"IDENTITY", name}});
  }

  Outbox& outbox() { return *outbox_; }

 private:
  // --- shared mode: sensors over another identity's connection ---

  void AddRider(const BridgeIdentity& identity) {
    auto c = std::make_unique<CloudConnection>();
    c->name = identity.name;
    c->identity = identity;
    CloudConnection& rider = *c;
    clouds_[identity.name] = std::move(c);
    auto carrier = clouds_.find(identity.via);
    if (carrier != clouds_.end() && carrier->second->identity.via.empty()) {
      Attach(*carrier->second, rider);
    }
  }

  void Attach(CloudConnection& carrier, CloudConnection& rider) {
    rider.carrier = &carrier;
    carrier.riders.push_back(&rider);
    std::erase(carrier.stale_filters, CommandFilter(rider));
    if (!carrier.certificate_checked) {
      carrier.certificate_checked = true;
      if (!HasGatewayOu(carrier.identity.chain_file)) {
        log::Warning("sensor " + rider.name + " travels over the connection of " + carrier.name +
                         ", whose certificate (" + carrier.identity.chain_file.string() +
                         ") has no OU=gateway: unless the gateway policy is attached to it by "
                         "hand, AWS IoT disconnects it when it publishes for a sensor "
                         "(cloud/README.md, shared mode)",
                     {{"IDENTITY", carrier.name}});
      }
    }
    if (carrier.connected) {
      SubscribeCommands(carrier, {&rider});
      SetConnected(rider, true);
      MarkWrite(carrier);
      MarkSend(carrier);
    }
  }

  void Detach(CloudConnection& rider) {
    CloudConnection* carrier = rider.carrier;
    if (carrier == nullptr) return;
    std::erase(carrier->riders, &rider);
    std::erase_if(carrier->carried, [&](const auto& e) { return e.second.first == &rider; });
    std::string filter = CommandFilter(rider);
    if (carrier->connected && carrier->mosq) {
      mosquitto_unsubscribe(carrier->mosq.get(), nullptr, filter.c_str());
      MarkWrite(*carrier);
    } else {
      carrier->stale_filters.push_back(filter);
    }
    rider.carrier = nullptr;
    SetConnected(rider, false);
    // What it had in flight is sent again by the next carrier.
    rider.pending.clear();
    rider.last_queued = 0;
    rider.drained = false;
  }

  std::string CommandFilter(const CloudConnection& c) const {
    return CloudTopic(options_.config.bridge.command_filter, c.identity.thing, "");
  }

  // Subscribes `carrier` to the command filters of `who`, 8 per SUBSCRIBE.
  void SubscribeCommands(CloudConnection& carrier, const std::vector<CloudConnection*>& who) {
    for (size_t i = 0; i < who.size(); i += kFiltersPerSubscribe) {
      std::vector<std::string> filters;
      for (size_t j = i; j < std::min(who.size(), i + kFiltersPerSubscribe); ++j) {
        filters.push_back(CommandFilter(*who[j]));
      }
      std::vector<char*> ptrs;
      for (auto& f : filters) ptrs.push_back(f.data());
      int rc = mosquitto_subscribe_multiple(
          carrier.mosq.get(), nullptr, static_cast<int>(ptrs.size()), ptrs.data(), 1, 0, nullptr);
      if (rc != MOSQ_ERR_SUCCESS) {
        log::Warning(
            "subscribing " + carrier.name + " to commands failed: " + mosquitto_strerror(rc),
            {{"IDENTITY", carrier.name}});
      }
    }
  }

  // --- connections and the epoll set ---

  void Watch(Connection& c) {
    int fd = mosquitto_socket(c.mosq.get());
    bool want = mosquitto_want_write(c.mosq.get());
    if (fd == c.fd && want == c.want_write) return;
    if (c.fd >= 0 && c.fd != fd) {
      epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
      c.fd = -1;
    }
    if (fd < 0) return;
    epoll_event ev{};
    ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
    ev.data.ptr = &c;
    if (epoll_ctl(epoll_, c.fd == fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) == 0) {
      c.fd = fd;
      c.want_write = want;
    }
  }

  void Unwatch(Connection& c) {
    if (c.fd >= 0) epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
    c.fd = -1;
    c.want_write = false;
  }

  // Reads every packet the socket (and, for TLS, OpenSSL's buffer) holds, up
  // to kMaxReadsPerEvent: mosquitto_loop_read handles one packet per call
  // when nothing of ours is in flight (the local connection), so one call
  // per event would commit one message per transaction.
  //
  // Whether the socket is empty: a cloud connection's loop_read reads until
  // its read() fails with EAGAIN. With TLS read-ahead, OpenSSL may hold whole
  // records the socket no longer has (SSL_has_pending sees them, SSL_pending
  // does not): they are read before epoll is asked again, and a connection
  // that stops at the cap with records held is read again in the next
  // iteration (reread_), as epoll would not report it.
  //
  // On the local connection errno cannot tell (queueing a PUBACK writes to
  // libmosquitto's unused wake-up socket pair, which leaves EAGAIN once
  // full), so FIONREAD says how many bytes wait and the sizes of the PUBLISH
  // packets read count them down; any other packet asks FIONREAD again.
  void Read(Connection& c) {
    if (!c.mosq) return;
    MarkWrite(c);  // reading may queue PUBACKs, PINGRESPs, ...
    mosquitto* m = c.mosq.get();
    const bool local = &c == local_.get();
    int64_t waiting = -1;  // local: bytes in the socket not read yet, -1 unknown
    for (int i = 0; i < kMaxReadsPerEvent; ++i) {
      const uint64_t before = local_bytes_read_;
      errno = 0;
      int rc = mosquitto_loop_read(m, 1);
      if (rc != MOSQ_ERR_SUCCESS) return ConnectionLost(c, rc);
      // libmosquitto may close the socket (and free its SSL) and still
      // report success: a CONNACK refused after OnCloudConnect disconnected.
      if (mosquitto_socket(m) < 0) return ConnectionLost(c, MOSQ_ERR_CONN_LOST);
      if (HoldsWholeRecords(m)) continue;
      if (!local) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      } else {
        auto got = static_cast<int64_t>(local_bytes_read_ - before);
        if (got > 0 && got < waiting) {
          waiting -= got;
          continue;
        }
      }
      int fd = mosquitto_socket(m);
      int available = 0;
      if (fd < 0 || ioctl(fd, FIONREAD, &available) != 0 || available <= 0) return;
      waiting = available;
    }
    if (!local) MarkReread(static_cast<CloudConnection&>(c));
  }

  // Whether OpenSSL holds data to read: SSL_has_pending is also 1 for a
  // partial record, which waits for the rest from the socket (the last read
  // wanted more: SSL_want_read), and epoll reports that rest.
  static bool HoldsWholeRecords(mosquitto* m) {
    auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(m));
    return ssl != nullptr && SSL_has_pending(ssl) == 1 && !SSL_want_read(ssl);
  }

  // A cloud connection whose TLS records OpenSSL holds unread.
  void MarkReread(CloudConnection& c) {
    if (c.reread_marked || !HoldsWholeRecords(c.mosq.get())) return;
    c.reread_marked = true;
    reread_.push_back(&c);
  }

  void ReadHeld() {
    std::vector<CloudConnection*> now;
    now.swap(reread_);
    for (CloudConnection* c : now) {
      c->reread_marked = false;
      if (c->fd >= 0 && !c->handshaking) Read(*c);
    }
  }

  void MarkWrite(Connection& c) {
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

  void SendMarked() {
    // SendFromOutbox does not mark for sending; it marks for writing.
    for (size_t i = 0; i < to_send_.size(); ++i) {
      CloudConnection* c = to_send_[i];
      c->send_marked = false;
      SendFromOutbox(*c);
    }
    to_send_.clear();
  }

  void WriteMarked() {
    for (size_t i = 0; i < to_write_.size(); ++i) {
      Connection* c = to_write_[i];
      c->write_marked = false;
      if (c == local_.get()) {
        Write(*c);
      } else if (!static_cast<CloudConnection*>(c)->handshaking) {
        Write(*c);
      }
    }
    to_write_.clear();
  }

  // Before a cloud connection is dropped.
  void Unmark(CloudConnection& c) {
    std::erase(to_write_, static_cast<Connection*>(&c));
    std::erase(to_send_, &c);
    std::erase(reread_, &c);
    ForgetTlsBuffers(c);
    c.write_marked = false;
    c.send_marked = false;
    c.reread_marked = false;
  }

  void Write(Connection& c) {
    int fd = c.mosq ? mosquitto_socket(c.mosq.get()) : -1;
    if (fd < 0) return;
    if (mosquitto_want_write(c.mosq.get())) {
      // libmosquitto writes each queued packet (a batch of PUBACKs, a cloud
      // connection's PUBLISHes) with its own write(): corked, they leave as
      // one segment, which the peer takes in with one wake-up.
      int on = 1, off = 0;
      bool corked = (&c == local_.get() || c.published > 1) &&
                    setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0;
      c.published = 0;
      int rc = mosquitto_loop_write(c.mosq.get(), 1);
      if (corked && mosquitto_socket(c.mosq.get()) == fd) {
        setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
      }
      if (rc != MOSQ_ERR_SUCCESS) return ConnectionLost(c, rc);
    }
    Watch(c);
  }

  void WriteAll() {
    if (local_) MarkWrite(*local_);
    for (auto& [name, c] : clouds_) MarkWrite(*c);
    WriteMarked();
  }

  void ConnectionLost(Connection& c, int rc) {
    Unwatch(c);
    if (&c != local_.get()) ForgetTlsBuffers(static_cast<CloudConnection&>(c));
    if (c.connected || c.connecting) {
      std::string why = rc == MOSQ_ERR_CONN_LOST ? "connection lost" : mosquitto_strerror(rc);
      log::Warning("MQTT connection " + c.name + " down: " + why, {{"IDENTITY", c.name}});
    }
    SetConnected(c, false);
    c.connecting = false;
    ++c.failures;
    BackoffPolicy policy{kReconnectMin, kReconnectMax, 2.0};
    c.next_connect =
        Clock::now() + std::max(kReconnectMin, FullJitterDelay(policy, c.failures, rng_));
  }

  void SetConnected(Connection& c, bool up) {
    if (c.connected == up) return;
    c.connected = up;
    if (&c == local_.get()) {
      local_connected_->store(up);
      return;
    }
    Status s = outbox_->SetConnected(c.name, up);
    if (!s.ok()) log::Error(s.message());
    auto& cloud = static_cast<CloudConnection&>(c);
    // Offline, new messages stay in the outbox only (not also in memory);
    // the next connection reads them back after last_queued.
    cloud.drained = false;
    cloud.pending.clear();
    for (CloudConnection* rider : cloud.riders) SetConnected(*rider, up);
  }

  // --- the local broker ---

  Status CreateLocal() {
    const LocalConfig& lc = options_.config.local;
    local_->mosq.reset(mosquitto_new(lc.client_id.c_str(), /*clean_session=*/false, this));
    if (!local_->mosq) return Internal("mosquitto_new failed");
    mosquitto* m = local_->mosq.get();
    mosquitto_threaded_set(m, true);  // PUBACKs wait in the queue for our loop_write
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (!lc.username.empty()) {
      std::string password;
      if (!lc.password_file.empty()) {
        auto pw = ReadFile(lc.password_file);
        if (!pw.ok()) return std::move(pw).take_status().With("local.password_file");
        password = *pw;
        while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
          password.pop_back();
        }
      }
      mosquitto_username_pw_set(m, lc.username.c_str(),
                                password.empty() ? nullptr : password.c_str());
    }
    mosquitto_connect_callback_set(
        m, [](mosquitto*, void* self, int rc) { static_cast<Loop*>(self)->OnLocalConnect(rc); });
    mosquitto_message_callback_set(m, [](mosquitto*, void* self, const mosquitto_message* msg) {
      static_cast<Loop*>(self)->OnLocalMessage(msg);
    });
    local_->next_connect = Clock::now();
    return Status::Ok();
  }

  void ConnectLocal() {
    const LocalConfig& lc = options_.config.local;
    Unwatch(*local_);  // a timed-out attempt's socket
    local_->connecting = true;
    local_->next_connect = Clock::now() + std::chrono::seconds(10);
    int rc;
    if (!lc.unix_socket.empty()) {
      rc = mosquitto_connect_bind_async(local_->mosq.get(), lc.unix_socket.c_str(), 0, 60, nullptr);
    } else {
      rc = mosquitto_connect_async(local_->mosq.get(), lc.host.c_str(), lc.port, 60);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
      log::Warning("local broker " + lc.host + ":" + std::to_string(lc.port) + ": " +
                   mosquitto_strerror(rc));
      return ConnectionLost(*local_, rc);
    }
    Watch(*local_);
  }

  void OnLocalConnect(int rc) {
    local_->connecting = false;
    if (rc != 0) {
      log::Error(std::string("local broker refused the connection: ") +
                 mosquitto_connack_string(rc));
      mosquitto_disconnect(local_->mosq.get());
      return;
    }
    local_->failures = 0;
    SetConnected(*local_, true);
    log::Info("connected to the local broker; subscribing to " +
              options_.config.local.ingest_filter);
    mosquitto_subscribe(local_->mosq.get(), nullptr, options_.config.local.ingest_filter.c_str(),
                        1);
  }

  void OnLocalMessage(const mosquitto_message* msg) {
    std::string_view topic = msg->topic;
    // The PUBLISH packet's size on the wire (MQTT 3.1.1), for Read.
    size_t remaining =
        2 + topic.size() + (msg->qos > 0 ? 2 : 0) + static_cast<size_t>(msg->payloadlen);
    size_t length_bytes = 1;
    for (size_t r = remaining; r >= 128; r >>= 7) ++length_bytes;
    local_bytes_read_ += 1 + length_bytes + remaining;
    // <level 0>/.../<sensor at id_level_>/<rest...>, without copying.
    size_t start = 0;
    for (int i = 0; i < id_level_; ++i) {
      size_t slash = topic.find('/', start);
      if (slash == std::string_view::npos) return;
      start = slash + 1;
    }
    size_t slash = topic.find('/', start);
    if (slash == std::string_view::npos) return;  // no level after the sensor id
    std::string_view sensor = topic.substr(start, slash - start);
    std::string_view rest = topic.substr(slash + 1);
    if (rest == "cmd" || rest.starts_with("cmd/")) return;  // our own command deliveries
    auto it = identities_.find(sensor);
    if (it == identities_.end() || it->second.name == "gateway") {
      ++staged_counts_[{std::string(sensor), kDroppedUnknown}];
      log::Warning("dropped a message from unknown sensor \"" + std::string(sensor) + "\" on " +
                   std::string(topic) + " (add it with gateway-agent sensor add)");
      return;
    }
    std::string cloud_topic =
        CloudTopic(options_.config.bridge.cloud_topic_template, it->second.thing, rest);
    std::string why = CheckAwsPublishLimits(cloud_topic, static_cast<size_t>(msg->payloadlen));
    if (!why.empty()) {
      ++staged_counts_[{std::string(sensor), kRejectedLimit}];
      log::Warning("not sent: sensor " + std::string(sensor) + ", topic " + std::string(topic) +
                       " -> " + cloud_topic + ": " + why,
                   {{"IDENTITY", std::string(sensor)}});
      return;
    }
    OutboxMessage m;
    m.identity = it->first;
    m.topic = std::move(cloud_topic);
    m.payload.assign(static_cast<const char*>(msg->payload), static_cast<size_t>(msg->payloadlen));
    m.created_ms = NowMs();
    staged_.push_back(std::move(m));
  }

  void CommitStaged(bool flush_acks) {
    bool acks_due = !acked_.empty() && (flush_acks || acked_.size() >= kAckBatch);
    if (staged_.empty() && staged_counts_.empty() && !acks_due) return;
    static const std::vector<int64_t> kNone;
    Status s = outbox_->Commit(staged_, staged_counts_, acks_due ? acked_ : kNone);
    if (!s.ok() && staged_.empty() && staged_counts_.empty()) {
      log::Error(s.message());  // only deletes: kept, and tried again
      return;
    }
    if (acks_due && s.ok()) acked_.clear();
    if (!s.ok()) {
      // The PUBACKs of these messages are still queued in libmosquitto: drop
      // the connection without writing them, so the broker redelivers.
      log::Error("outbox commit failed, reconnecting to the local broker so it redelivers: " +
                 s.message());
      Unwatch(*local_);
      SetConnected(*local_, false);
      local_->mosq.reset();
      staged_.clear();
      staged_counts_.clear();
      Status c = CreateLocal();
      if (!c.ok()) log::Error(c.message());
      local_->next_connect = Clock::now() + kReconnectMin;
      return;
    }
    // A connection that has sent everything older takes the new messages
    // straight from memory, in order, without reading them back.
    for (auto& m : staged_) {
      auto it = clouds_.find(m.identity);
      if (it == clouds_.end()) continue;
      CloudConnection& c = *it->second;
      if (c.drained) {
        c.pending.push_back(std::move(m));
        MarkSend(c);
      }
    }
    staged_.clear();
    staged_counts_.clear();
  }

  // --- the cloud ---

  // One TLS context for every cloud connection (trust anchor, host name,
  // ALPN); each connection's key and chain are installed per handshake.
  Result<SSL_CTX*> SharedTlsContext() {
    if (!shared_tls_) {
      const Config& cfg = options_.config;
      tpm::TlsClientOptions tls;
      tls.ca_file = cfg.aws.root_ca;
      tls.verify_host = cfg.aws.endpoint;
      if (cfg.aws.alpn) tls.alpn = {"x-amzn-mqtt-ca"};
      GA_ASSIGN_OR_RETURN(shared_tls_, tpm::MakeClientTlsContext(tls));
      // One read() takes every record the socket has (a PUBACK is a record
      // of its own): see Read for the records OpenSSL then holds.
      SSL_CTX_set_read_ahead(shared_tls_.get(), 1);
      SSL_CTX_set_cert_cb(
          shared_tls_.get(),
          [](SSL* ssl, void*) -> int {
            if (handshake_identity == nullptr) return 1;  // no certificate to offer
            // The TCP connect is over and the TPM signs next: a TPM command
            // must never be interrupted (see InterruptibleConnect).
            BlockConnectInterrupt();
            Status s = tpm::UseClientIdentity(ssl, *handshake_identity);
            if (!s.ok()) log::Error("TLS client certificate: " + s.message());
            return s.ok() ? 1 : 0;
          },
          nullptr);
    }
    return shared_tls_.get();
  }

  Status CreateCloud(CloudConnection& c) {
    const Config& cfg = options_.config;
    GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob, tpm::TpmKeyBlob::ReadFile(c.identity.key_file));
    GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::MakeEvpPkey(options_.tpm, blob));
    GA_ASSIGN_OR_RETURN(c.tls_identity,
                        tpm::LoadClientIdentity(std::move(key), c.identity.chain_file));
    GA_ASSIGN_OR_RETURN(SSL_CTX * ctx, SharedTlsContext());
    c.mosq.reset(mosquitto_new(c.identity.thing.c_str(), /*clean_session=*/false, &c));
    if (!c.mosq) return Internal("mosquitto_new failed");
    mosquitto* m = c.mosq.get();
    mosquitto_threaded_set(m, true);
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
    mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, ctx);  // libmosquitto takes a reference
    mosquitto_max_inflight_messages_set(m, static_cast<unsigned>(cfg.bridge.inflight_window));
    mosquitto_user_data_set(m, this);
    cloud_by_mosq_[m] = &c;
    mosquitto_connect_callback_set(m, [](mosquitto* mq, void* self, int rc) {
      static_cast<Loop*>(self)->OnCloudConnect(mq, rc);
    });
    mosquitto_publish_callback_set(m, [](mosquitto* mq, void* self, int mid) {
      static_cast<Loop*>(self)->OnCloudPuback(mq, mid);
    });
    mosquitto_message_callback_set(m, [](mosquitto* mq, void* self, const mosquitto_message* msg) {
      static_cast<Loop*>(self)->OnCloudMessage(mq, msg);
    });
    return Status::Ok();
  }

  void ConnectCloud(CloudConnection& c) {
    if (!c.mosq) {
      Status s = CreateCloud(c);
      if (!s.ok()) {
        log::Error("cloud connection " + c.name + ": " + s.message(), {{"IDENTITY", c.name}});
        return ConnectionLost(c, MOSQ_ERR_TLS);
      }
    }
    const AwsConfig& aws = options_.config.aws;
    int keepalive =
        static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(aws.keepalive).count());
    c.connecting = true;
    c.handshaking = true;
    ++handshakes_running_;
    c.next_connect = Clock::now() + std::chrono::seconds(60);
    Unwatch(c);
    // The TCP connect and the TLS handshake, whose signature is made in the TPM
    // (40-200 ms on a real chip), run on a handshake thread, so that they
    // never hold up the traffic of the connections this loop already carries.
    mosquitto* m = c.mosq.get();
    std::string host = aws.endpoint;
    int port = aws.port;
    CloudConnection* conn = &c;
    handshakes_.Submit([this, m, host, port, keepalive, conn] {
      // The shared context's certificate callback runs on this thread, inside
      // SSL_connect, and presents this connection's identity.
      handshake_identity = &conn->tls_identity;
      // Blocking TCP connect: libmosquitto then tries every address of the
      // endpoint in turn (its asynchronous connect stops at the first).
      int rc = handshakes_.InterruptibleConnect(
          [&] { return mosquitto_connect(m, host.c_str(), port, keepalive); });
      if (rc == MOSQ_ERR_SUCCESS) rc = FinishTlsHandshake(m, handshakes_.stopping());
      handshake_identity = nullptr;
      // errno belongs to this thread: turn it into text here.
      std::string why = rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc);
      Post([this, conn, rc, why] { HandshakeDone(*conn, rc, why); });
    });
  }

  void HandshakeDone(CloudConnection& c, int rc, const std::string& why) {
    c.handshaking = false;
    ForgetTlsBuffers(c);  // a new SSL, with the context's modes
    --handshakes_running_;
    ++handshakes_since_trim_;
    last_handshake_done_ = Clock::now();
    for (auto it = retired_.begin(); it != retired_.end(); ++it) {
      if (it->get() == &c) {  // dropped meanwhile: now it can go
        cloud_by_mosq_.erase(c.mosq.get());
        retired_.erase(it);
        return;
      }
    }
    if (rc != MOSQ_ERR_SUCCESS) {
      log::Warning(
          "cloud connection " + c.name + " to " + options_.config.aws.endpoint + ": " + why,
          {{"IDENTITY", c.name}});
      c.connecting = false;  // logged here; ConnectionLost only backs off
      return ConnectionLost(c, rc);
    }
    // CONNECT is queued; the CONNACK arrives through loop_read.
    c.last_attempt = Clock::now();
    c.next_connect = Clock::now() + std::chrono::seconds(30);
    Watch(c);
    MarkReread(c);
  }

  CloudConnection* CloudOf(mosquitto* m) {
    auto it = cloud_by_mosq_.find(m);
    return it == cloud_by_mosq_.end() ? nullptr : it->second;
  }

  void OnCloudConnect(mosquitto* m, int rc) {
    CloudConnection* c = CloudOf(m);
    if (c == nullptr) return;
    c->connecting = false;
    if (rc != 0) {
      log::Warning(
          "AWS IoT refused the connection of " + c->name + ": " + mosquitto_connack_string(rc),
          {{"IDENTITY", c->name}, {"THING", c->identity.thing}});
      mosquitto_disconnect(m);
      return;
    }
    bool was_failing = c->failures > 0;
    c->failures = 0;
    SetConnected(*c, true);
    log::Info("cloud connection " + c->name + " up as " + c->identity.thing,
              {{"IDENTITY", c->name}, {"THING", c->identity.thing}});
    if (was_failing) CloudIsBack();
    std::vector<CloudConnection*> who = {c};
    who.insert(who.end(), c->riders.begin(), c->riders.end());
    SubscribeCommands(*c, who);
    for (const std::string& filter : c->stale_filters) {
      mosquitto_unsubscribe(m, nullptr, filter.c_str());
    }
    c->stale_filters.clear();
    MarkSend(*c);
  }

  // A connection that had failed is up again: the endpoint is reachable, so
  // the others waiting out their backoff try now, one CONNECT per second per
  // client id at most and paced by aws.connect_rate (Tick).
  void CloudIsBack() {
    auto now = Clock::now();
    for (auto& [name, c] : clouds_) {
      if (!c->identity.via.empty() || c->connected || c->connecting || c->failures == 0) continue;
      c->next_connect = std::min(c->next_connect, std::max(now, c->last_attempt + kPerClientId));
    }
  }

  void OnCloudPuback(mosquitto* m, int mid) {
    CloudConnection* c = CloudOf(m);
    if (c == nullptr) return;
    auto it = c->inflight.find(mid);
    if (it != c->inflight.end()) {
      acked_.push_back(it->second);
      c->inflight.erase(it);
    } else if (auto carried = c->carried.find(mid); carried != c->carried.end()) {
      acked_.push_back(carried->second.second);
      c->carried.erase(carried);
    } else {
      return;
    }
    MarkSend(*c);  // the window has room again
  }

  void OnCloudMessage(mosquitto* m, const mosquitto_message* msg) {
    CloudConnection* c = CloudOf(m);
    if (c == nullptr || !local_ || !local_->connected) return;
    // cmd/<thing>/<rest> -> <prefix><sensor>/cmd/<rest>, for this connection's
    // own thing or one of the sensors it carries.
    std::string topic = msg->topic;
    std::vector<CloudConnection*> who = {c};
    who.insert(who.end(), c->riders.begin(), c->riders.end());
    for (CloudConnection* target : who) {
      std::string filter = CommandFilter(*target);
      std::string base = filter.substr(0, filter.find('#'));
      if (topic.rfind(base, 0) != 0) continue;
      std::string local_topic = prefix_ + target->name + "/cmd/" + topic.substr(base.size());
      int rc = mosquitto_publish(local_->mosq.get(), nullptr, local_topic.c_str(), msg->payloadlen,
                                 msg->payload, 1, false);
      MarkWrite(*local_);
      if (rc != MOSQ_ERR_SUCCESS) {
        log::Warning("command for " + target->name +
                     " not delivered locally: " + mosquitto_strerror(rc));
      }
      return;
    }
  }

  // Sends what the connection `c` may send now: its own messages and, in
  // turns, those of the sensors it carries, within its window and rates.
  void SendFromOutbox(CloudConnection& c) {
    if (!c.connected || !c.mosq) return;  // a carried sensor is sent by its carrier
    auto now = Clock::now();
    if (c.riders.empty()) {
      while (SendOne(c, c, now)) {
      }
      return;
    }
    std::vector<CloudConnection*> turns = {&c};
    turns.insert(turns.end(), c.riders.begin(), c.riders.end());
    std::rotate(turns.begin(), turns.begin() + static_cast<long>(c.next_turn % turns.size()),
                turns.end());
    for (bool progress = true; progress;) {
      progress = false;
      for (CloudConnection* sender : turns) {
        if (SendOne(*sender, c, now)) {
          progress = true;
          ++c.next_turn;
        }
      }
    }
  }

  // Hands the next message of `sender` to `via`'s connection; false when
  // there is none, or the window or a rate limit of `via` is spent.
  bool SendOne(CloudConnection& sender, CloudConnection& via, Clock::time_point now) {
    const size_t window = static_cast<size_t>(options_.config.bridge.inflight_window);
    if (via.inflight.size() + via.carried.size() >= window) return false;
    if (sender.pending.empty()) {
      if (sender.drained) return false;
      auto next = outbox_->Next(sender.name, sender.last_queued, kRefill);
      if (!next.ok()) {
        log::Error(next.status().message());
        return false;
      }
      if (next->empty()) {
        sender.drained = true;
        return false;
      }
      for (auto& m : *next) sender.pending.push_back(std::move(m));
    }
    OutboxMessage& m = sender.pending.front();
    // Both buckets are present or both absent (TestUnlimitedRate); a
    // publish token is only spent when the bytes are there too.
    const auto bytes = static_cast<double>(m.payload.size());
    if (via.bytes && via.bytes->TimeUntil(bytes, now).count() > 0) return false;
    if (via.publishes && !via.publishes->TryTake(1, now)) return false;
    if (via.bytes && !via.bytes->TryTake(bytes, now)) return false;
    int mid = 0;
    int rc = mosquitto_publish(via.mosq.get(), &mid, m.topic.c_str(),
                               static_cast<int>(m.payload.size()), m.payload.data(), 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
      log::Warning("publish for " + sender.name + " failed: " + mosquitto_strerror(rc));
      return false;
    }
    if (&sender == &via) {
      sender.inflight[mid] = m.seq;
    } else {
      via.carried[mid] = {&sender, m.seq};
    }
    sender.last_queued = m.seq;
    sender.pending.pop_front();
    ++via.published;
    HoldTlsBuffers(via);
    MarkWrite(via);
    return true;
  }

  // The shared context releases a connection's TLS buffers (about 34 KiB)
  // whenever they are empty (SSL_MODE_RELEASE_BUFFERS): right for the idle
  // connections that most of a gateway's are, costly for a busy one, which
  // would allocate and free them for every record. A connection holds them
  // from its first publish until a tick passes with nothing sent and nothing
  // in flight (Tick); at most kTlsBufferHolders connections at a time, so
  // memory stays bounded when every sensor is busy.
  void HoldTlsBuffers(CloudConnection& c) {
    c.sent_this_tick = true;
    if (c.holds_tls_buffers || tls_buffer_holders_ >= kTlsBufferHolders) return;
    auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(c.mosq.get()));
    if (ssl == nullptr) return;
    SSL_clear_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    c.holds_tls_buffers = true;
    ++tls_buffer_holders_;
  }

  void ForgetTlsBuffers(CloudConnection& c) {
    if (!c.holds_tls_buffers) return;
    c.holds_tls_buffers = false;
    --tls_buffer_holders_;
  }

  void ReleaseTlsBuffersIfIdle(CloudConnection& c) {
    const bool idle = !c.sent_this_tick && c.inflight.empty() && c.carried.empty();
    c.sent_this_tick = false;
    if (!c.holds_tls_buffers || !idle) return;
    auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(c.mosq.get()));
    if (ssl == nullptr) return;
    // Freed when the next read or write (a PINGREQ at the latest) leaves them
    // empty; not SSL_free_buffers, unsafe on a live connection before
    // OpenSSL 3.0.14.
    SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    ForgetTlsBuffers(c);
  }

  void DropCloud(const std::string& name) {
    auto it = clouds_.find(name);
    if (it == clouds_.end()) return;
    CloudConnection& c = *it->second;
    Detach(c);
    for (CloudConnection* rider : std::vector<CloudConnection*>(c.riders)) Detach(*rider);
    Unwatch(c);
    Unmark(c);
    if (c.handshaking) {
      retired_.push_back(std::move(it->second));
      clouds_.erase(it);
      return;
    }
    if (c.mosq) {
      if (c.connected) {
        mosquitto_disconnect(c.mosq.get());
        mosquitto_loop_write(c.mosq.get(), 1);
      }
      cloud_by_mosq_.erase(c.mosq.get());
    }
    Status s = outbox_->SetConnected(name, false);
    (void)s;
    clouds_.erase(it);
  }

  // --- time ---

  // A reconnect storm (every connection's TLS state and handshake, much of it
  // allocated on the handshake threads, in their own malloc arenas) leaves
  // megabytes of free heap that glibc keeps resident (malloc_trim from
  // outside released 7 MiB of 58 with 1,001 connections). Nothing is leaked
  // (heaptrack: the heap returns to the same size after each storm). This
  // hands free pages back once the handshakes have been quiet for a moment,
  // and again a little later.
  void ReleaseFreeMemory(Clock::time_point now) {
    if (handshakes_running_ > 0) return;
    if (handshakes_since_trim_ >= kHandshakesBeforeTrim) {
      trims_due_ = std::size(kTrimQuiet);
      handshakes_since_trim_ = 0;
    }
    if (trims_due_ == 0) return;
    size_t stage = std::size(kTrimQuiet) - trims_due_;
    if (now - last_handshake_done_ < kTrimQuiet[stage]) return;
    --trims_due_;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    log::Debug("released free heap memory after a burst of TLS handshakes");
  }

  void Tick(Clock::time_point now) {
    ReleaseFreeMemory(now);
    if (local_ && local_->mosq) {
      if (!local_->connected && !local_->connecting && now >= local_->next_connect) ConnectLocal();
      if (local_->connecting && now >= local_->next_connect)
        ConnectionLost(*local_, MOSQ_ERR_CONN_LOST);
      if (local_->fd >= 0) {
        int rc = mosquitto_loop_misc(local_->mosq.get());
        if (rc != MOSQ_ERR_SUCCESS) ConnectionLost(*local_, rc);
      }
      MarkWrite(*local_);
    } else if (local_ && !local_->mosq && now >= local_->next_connect) {
      Status s = CreateLocal();
      if (!s.ok()) log::Error(s.message());
    }
    for (auto& [name, c] : clouds_) {
      if (c->handshaking || !c->identity.via.empty()) continue;  // carried: sent by its carrier
      // The account-wide connect rate (aws.connect_rate).
      if (!c->connected && !c->connecting && now >= c->next_connect && connects_.TryTake(1, now)) {
        ConnectCloud(*c);
      } else if (c->connecting && now >= c->next_connect) {
        ConnectionLost(*c, MOSQ_ERR_CONN_LOST);
      }
      if (c->mosq && c->fd >= 0) {
        int rc = mosquitto_loop_misc(c->mosq.get());
        if (rc != MOSQ_ERR_SUCCESS) {
          ConnectionLost(*c, rc);
          continue;
        }
        MarkWrite(*c);  // a PINGREQ may be queued
        ReleaseTlsBuffersIfIdle(*c);
      }
      // Rate-limited connections, and anything not served on an event.
      MarkSend(*c);
    }
  }

  void RunPosted() {
    std::vector<std::function<void()>> work;
    {
      std::lock_guard lock(mu_);
      work.swap(posted_);
    }
    for (auto& fn : work) fn();
  }

  void Shutdown() {
    handshakes_.Stop();  // joins: no thread uses a connection after this
    CommitStaged(/*flush_acks=*/true);
    // Let queued PUBACKs to the local broker and DISCONNECTs go out.
    for (auto& [name, c] : clouds_) {
      if (c->mosq && c->connected) mosquitto_disconnect(c->mosq.get());
    }
    if (local_ && local_->mosq && local_->connected) mosquitto_disconnect(local_->mosq.get());
    WriteAll();
    for (auto& [name, c] : clouds_) {
      Status s = outbox_->SetConnected(name, false);
      (void)s;
    }
    to_write_.clear();
    to_send_.clear();
    reread_.clear();
    clouds_.clear();
    cloud_by_mosq_.clear();
    if (local_) local_connected_->store(false);
    local_.reset();
  }

  Bridge::Options options_;
  std::unique_ptr<Outbox> outbox_;
  SslCtxPtr shared_tls_;
  std::mt19937_64 rng_;
  std::string prefix_;
  int id_level_ = -1;
  int epoll_ = -1;
  int wake_ = -1;
  std::atomic<bool>* local_connected_ = nullptr;
  bool stopping_ = false;

  std::mutex mu_;
  std::vector<std::function<void()>> posted_;  // guarded by mu_

  std::unique_ptr<Connection> local_;
  std::map<std::string, std::unique_ptr<CloudConnection>, std::less<>> clouds_;
  // Connections dropped while a handshake thread still used them.
  std::vector<std::unique_ptr<CloudConnection>> retired_;
  HandshakePool handshakes_;
  // aws.connect_rate, with a burst of a tenth of a second's worth.
  TokenBucket connects_{options_.config.aws.connect_rate,
                        std::max(1.0, options_.config.aws.connect_rate / 10)};
  std::map<mosquitto*, CloudConnection*> cloud_by_mosq_;
  std::map<std::string, BridgeIdentity, std::less<>> identities_;
  std::vector<OutboxMessage> staged_;
  std::map<std::pair<std::string, std::string>, int64_t> staged_counts_;
  // PUBACKed, not yet deleted from the outbox (see kAckBatch).
  std::vector<int64_t> acked_;
  std::vector<CloudConnection*> reread_;  // TLS records held by OpenSSL (see Read)
  size_t tls_buffer_holders_ = 0;         // see HoldTlsBuffers
  // Connections with news in this iteration (see MarkSend, MarkWrite).
  std::vector<CloudConnection*> to_send_;
  std::vector<Connection*> to_write_;
  uint64_t local_bytes_read_ = 0;  // PUBLISH bytes read from the local broker (see Read)
  int handshakes_running_ = 0;     // ConnectCloud until HandshakeDone
  int handshakes_since_trim_ = 0;  // see ReleaseFreeMemory
  Clock::time_point last_handshake_done_{};
  size_t trims_due_ = 0;
};

namespace {
std::once_flag mosquitto_init;
}

Bridge::Bridge(std::unique_ptr<Loop> loop) : loop_(std::move(loop)) {}

Result<std::unique_ptr<Bridge>> Bridge::Create(Options options) {
  std::call_once(mosquitto_init, [] { mosquitto_lib_init(); });
  OutboxLimits limits;
  limits.max_bytes = options.config.bridge.outbox_max_bytes;
  limits.max_age = options.config.bridge.outbox_max_age;
  limits.on_full = options.config.bridge.on_full;
  limits.fsync_every_commit = options.config.bridge.fsync_every_commit;
  GA_ASSIGN_OR_RETURN(auto outbox,
                      Outbox::Open(options.config.agent.state_dir / kOutboxDb, limits));
  auto loop = std::make_unique<Loop>(std::move(options), std::move(outbox));
  std::unique_ptr<Bridge> bridge(new Bridge(std::move(loop)));
  GA_RETURN_IF_ERROR(bridge->loop_->Init(&bridge->local_connected_));
  return bridge;
}

Bridge::~Bridge() {
  Stop();
}

Status Bridge::Start() {
  if (thread_.joinable()) return FailedPrecondition("the bridge is already running");
  Loop* loop = loop_.get();
  thread_ = std::thread([loop] { loop->Run(); });
  return Status::Ok();
}

void Bridge::Stop() {
  if (!thread_.joinable()) return;
  loop_->RequestStop();
  thread_.join();
}

void Bridge::Upsert(const BridgeIdentity& identity) {
  loop_->Post([loop = loop_.get(), identity] { loop->Upsert(identity); });
}

void Bridge::Remove(const std::string& name) {
  loop_->Post([loop = loop_.get(), name] { loop->Remove(name); });
}

}  // namespace ga::bridge
