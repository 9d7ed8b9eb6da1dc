// In-memory, bounded log of routed messages (device publishes and the sim's own), for
// tests: GET /_sim/publishes reads it, DELETE clears it. Bounded both in entries and in
// payload bytes (oldest dropped first), so a benchmark streaming large payloads cannot
// exhaust memory. Payloads are kept as Buffers and encoded to base64 only when read:
// logging costs no per-message encoding and no disk I/O.

export class PublishLog {
  constructor (capacity, maxBytes = 64 * 1024 * 1024) {
    this.capacity = capacity;
    this.maxBytes = maxBytes;
    this.entries = []; // entries[head..] are live, oldest first
    this.head = 0;
    this.bytes = 0;
    this.nextSeq = 1;
  }

  get size () { return this.entries.length - this.head; }

  add (e) {
    const entry = { seq: this.nextSeq++, time: Date.now(), ...e };
    if (this.capacity <= 0) return;
    this.entries.push(entry);
    this.bytes += entry.payload.length;
    while (this.size > this.capacity || (this.bytes > this.maxBytes && this.size > 1)) {
      this.bytes -= this.entries[this.head].payload.length;
      this.entries[this.head++] = undefined;
    }
    // compact once the dead prefix dominates, keeping add() amortised O(1)
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  /** Entries oldest first, filtered; `since` returns entries with seq > since. */
  list ({ since = 0, topic, clientId, limit = Infinity } = {}) {
    const out = [];
    for (let i = this.head; i < this.entries.length && out.length < limit; i++) {
      const e = this.entries[i];
      if (e.seq <= since) continue;
      if (topic !== undefined && e.topic !== topic) continue;
      if (clientId !== undefined && e.clientId !== clientId) continue;
      out.push({ ...e, payload: e.payload.toString('base64') });
    }
    return out;
  }

  clear () { this.entries = []; this.head = 0; this.bytes = 0; }
}
