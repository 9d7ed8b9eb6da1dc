// AWS IoT per-connection and per-client-id limits, and the violation counters that make
// every tripped limit observable through the control API (GET /_sim/violations).

/**
 * Token bucket: `capacity` tokens, refilled continuously at `ratePerSec`.
 * take(n) returns false (and takes nothing) when fewer than n tokens are left.
 * A rate of 0 means "unlimited".
 */
export class TokenBucket {
  constructor (ratePerSec, capacity = ratePerSec) {
    this.rate = ratePerSec;
    this.capacity = capacity;
    this.tokens = capacity;
    this.last = performance.now();
  }

  take (n = 1) {
    if (!this.rate) return true;
    const now = performance.now();
    this.tokens = Math.min(this.capacity, this.tokens + (now - this.last) * this.rate / 1000);
    this.last = now;
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }
}

/**
 * CONNECT throttle per client id (AWS: 1 CONNECT/s per client id). One bucket per id;
 * idle buckets are pruned so a stream of distinct ids cannot grow the map without bound.
 */
export class ConnectThrottle {
  constructor (perSecond) {
    this.perSecond = perSecond;
    this.buckets = new Map();
  }

  allow (clientId) {
    if (!this.perSecond) return true;
    if (this.buckets.size > 10000) this.prune();
    let b = this.buckets.get(clientId);
    if (!b) {
      b = new TokenBucket(this.perSecond, 1);
      this.buckets.set(clientId, b);
    }
    return b.take(1);
  }

  prune () {
    const old = performance.now() - 2000;
    for (const [id, b] of this.buckets) if (b.last < old) this.buckets.delete(id);
  }
}

/** Names of the counters; the README documents each. */
export const VIOLATIONS = [
  'clientIdTooLong', 'clientIdReserved', 'keepAliveTooLarge', 'connectRate',
  'duplicateClientId', 'connectNotAuthorized',
  'qos2Publish', 'qos2Subscribe', 'payloadTooLarge', 'topicTooLong', 'topicTooManyLevels',
  'reservedTopic', 'publishRate', 'throughput', 'publishNotAuthorized',
  'subscribeNotAuthorized', 'invalidTopicFilter', 'protocolError'
];

/** Violation counters keyed by MQTT client id, in memory. */
export class ViolationCounters {
  constructor () { this.byClient = new Map(); }

  count (clientId, name) {
    const id = clientId ?? '';
    let c = this.byClient.get(id);
    if (!c) { c = {}; this.byClient.set(id, c); }
    c[name] = (c[name] || 0) + 1;
  }

  get (clientId) {
    const counters = { ...(this.byClient.get(clientId) || {}) };
    const total = Object.values(counters).reduce((a, b) => a + b, 0);
    return { clientId, total, counters };
  }

  all () {
    const clients = {};
    for (const [id, c] of this.byClient) clients[id] = { ...c };
    return clients;
  }

  clear (clientId) {
    if (clientId === undefined) this.byClient.clear(); else this.byClient.delete(clientId);
  }
}
