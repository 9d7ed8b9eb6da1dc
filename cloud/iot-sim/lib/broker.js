// The MQTT side of the sim: a TLS server with client certificates in front of an aedes
// broker. Every TLS connection gets a Gate, a Duplex placed between the socket and aedes.
// The Gate frames the inbound MQTT byte stream, parses each packet once, and applies what
// AWS IoT applies before a packet takes effect: admission on CONNECT (JITR, certificate
// state, iot:Connect, client-id and keep-alive rules, CONNECT throttle), per-PUBLISH and
// per-SUBSCRIBE limits and policy. A packet that passes is forwarded byte-for-byte to
// aedes; one that is refused is never seen by aedes, which is how a refused CONNECT closes
// without a CONNACK and a QoS 2 PUBLISH/SUBSCRIBE gets no acknowledgement. Outbound bytes
// (aedes -> device) pass straight through; iot:Receive is checked in aedes'
// authorizeForward hook.

import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { constants as cryptoConstants } from 'node:crypto';
import { Aedes } from 'aedes';
import mqttPacket from 'mqtt-packet';
import { decide, registeredEvent, tlsFacts } from './jitr.js';
import { evaluate } from './policy.js';
import { ConnectThrottle, TokenBucket } from './limits.js';
import { slashCount, validFilter } from './topics.js';

const MAX_PAYLOAD = 128 * 1024;
const MAX_TOPIC_BYTES = 256;
const MAX_SLASHES = 7;
const MAX_CLIENT_ID_BYTES = 128;
const MAX_KEEPALIVE = 1200;
// Frames larger than this are refused before they are buffered (payload limit + headroom
// for topic, packet id and MQTT 5 properties).
const MAX_FRAME = MAX_PAYLOAD + 64 * 1024;
// `$` topics a device may publish to. Shadows are not modelled, but their topics are
// accepted so a device publishing to them is not disconnected.
const ALLOWED_DOLLAR_PREFIXES = ['$aws/things/'];
const PACKET_TYPES = { 1: 'connect', 3: 'publish', 8: 'subscribe' };

export class Broker {
  /**
   * @param {object} o
   * @param {import('./registry.js').Registry} o.registry
   * @param {import('./limits.js').ViolationCounters} o.violations
   * @param {object} o.options parsed CLI options (see options.js)
   * @param {{key:Buffer, cert:Buffer}} o.serverTls
   * @param {(packet:object, gate:Gate|null)=>void} o.onPublished every routed message
   * @param {(msg:string)=>void} o.log
   */
  constructor ({ registry, violations, options, serverTls, onPublished, log }) {
    this.registry = registry;
    this.violations = violations;
    this.options = options;
    this.serverTls = serverTls;
    this.onPublished = onPublished;
    this.log = log;
    this.gates = new Set();
    this.byClientId = new Map();
    this.throttle = new ConnectThrottle(options.maxConnectsPerSecond);
    this.authzEpoch = 0;
    this.refusals = []; // bounded log of refused connections
    this.stats = { connections: 0, refused: 0, registered: 0 };
    registry.on('authzChanged', () => { this.authzEpoch++; });
    registry.on('certificateStatus', (e) => this.onCertificateStatus(e));
  }

  async start () {
    const self = this;
    this.aedes = await Aedes.createBroker({
      maxClientsIdLength: 65535, // the Gate enforces AWS's 128-byte limit itself
      heartbeatInterval: 3600000,
      connectTimeout: 30000,
      authorizeForward (client, packet) {
        const gate = client && client.conn;
        if (!(gate instanceof Gate)) return packet;
        return gate.allowed('iot:Receive', 'topic', packet.topic) ? packet : null;
      }
    });
    this.aedes.on('publish', (packet, client) => {
      if (packet.topic.startsWith('$SYS/')) return;
      const gate = client && client.conn instanceof Gate ? client.conn : null;
      this.onPublished(packet, gate);
    });
    // aedes emits this once the subscriptions are stored (persistent sessions included).
    this.aedes.on('subscribe', (subscriptions, client) => {
      const gate = client && client.conn instanceof Gate ? client.conn : null;
      if (gate) for (const s of subscriptions) gate.subscriptions.add(s.topic);
    });
    this.server = tls.createServer({
      key: this.serverTls.key,
      cert: this.serverTls.cert,
      requestCert: true,
      rejectUnauthorized: false, // certificate trust is the registry's decision, not OpenSSL's
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.3',
      secureOptions: cryptoConstants.SSL_OP_NO_TICKET, // AWS IoT: no SessionTicket extension
      ALPNCallback: ({ protocols }) => (protocols.includes('x-amzn-mqtt-ca') ? 'x-amzn-mqtt-ca' : protocols[0])
    });
    this.server.on('secureConnection', (socket) => this.onSecureConnection(socket));
    this.server.on('tlsClientError', (err) => this.log(`tls client error: ${err.code || err.message}`));
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.mqttPort, this.options.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = this.server.address().port;
  }

  onSecureConnection (socket) {
    socket.setNoDelay(true);
    let facts;
    try { facts = tlsFacts(socket); } catch (e) { socket.destroy(); return; }
    if (this.options.port443 && socket.alpnProtocol !== 'x-amzn-mqtt-ca') {
      // AWS IoT, "Device communication protocols" (developerguide/protocols.html): on port
      // 443, MQTT with an X.509 client certificate requires the ALPN protocol name
      // x-amzn-mqtt-ca; without it the port serves HTTPS and the MQTT client gets nowhere.
      this.refuse(null, facts, 'tls', 'port 443 without ALPN x-amzn-mqtt-ca');
      socket.destroy();
      return;
    }
    if (this.options.refuseAtTls) {
      // With --refuse-at-tls, certificates AWS would never accept are dropped right after
      // the handshake, before any MQTT byte (JITR still needs the CONNECT).
      const d = decide(this.registry, facts, this.options);
      if (d.kind === 'refuse') {
        this.refuse(null, facts, 'tls', d.reason);
        socket.destroy();
        return;
      }
    }
    const gate = new Gate(this, socket, facts);
    this.gates.add(gate);
    this.stats.connections++;
    gate.once('close', () => {
      this.log(`closed client=${gate.clientId ?? '-'}${gate.killReason ? ` (${gate.killReason})` : ''}`);
      this.gates.delete(gate);
      if (gate.clientId !== null && this.byClientId.get(gate.clientId) === gate) this.byClientId.delete(gate.clientId);
    });
    this.aedes.handle(gate);
  }

  refuse (clientId, facts, stage, reason) {
    this.stats.refused++;
    this.refusals.push({ time: Date.now(), stage, reason, clientId, certificateId: facts.certificateId });
    if (this.refusals.length > 1000) this.refusals.shift();
    this.log(`refused ${stage} client=${clientId} cert=${facts.certificateId}: ${reason}`);
  }

  /**
   * Admission of a CONNECT. Returns true to let aedes complete the connect (CONNACK 0);
   * false means the connection is closed without a CONNACK, as AWS does.
   */
  admit (gate, packet) {
    const id = packet.clientId;
    const facts = gate.facts;
    const no = (reason, violation) => {
      if (violation) this.violations.count(id, violation);
      this.refuse(id, facts, 'connect', reason);
      return false;
    };
    if (Buffer.byteLength(id) > MAX_CLIENT_ID_BYTES) return no('clientIdTooLong', 'clientIdTooLong');
    if (id.startsWith('$')) return no('clientIdReserved', 'clientIdReserved');
    if (packet.keepalive > MAX_KEEPALIVE) return no('keepAliveTooLarge', 'keepAliveTooLarge');
    if (!this.throttle.allow(id)) return no('connectRate', 'connectRate');
    const d = decide(this.registry, facts, this.options);
    if (d.kind === 'register') {
      const cert = this.registry.registerPending(d.leaf, d.ca.certificateId);
      this.stats.registered++;
      this.publishEvent(cert);
      return no('registeredPendingActivation');
    }
    if (d.kind === 'pending') {
      this.publishEvent(d.cert);
      return no('pendingActivation');
    }
    if (d.kind === 'refuse') return no(d.reason);
    gate.clientId = id;
    gate.certificateId = d.cert.certificateId;
    if (!gate.allowed('iot:Connect', 'client', id)) return no('connectNotAuthorized', 'connectNotAuthorized');
    gate.keepAlive = packet.keepalive;
    const previous = this.byClientId.get(id);
    if (previous && previous !== gate) {
      if (previous.silentPastKeepAlive()) {
        // MQTT 3.1.1 section 3.1.2.10, and AWS IoT ("disconnect after 1.5 x keep-alive of
        // silence", docs.aws.amazon.com/iot/latest/developerguide/mqtt.html): that connection
        // is already over. aedes's timer that ends it may run late on a loaded machine; a
        // client that reconnects after the moment is not taking over a live session.
        previous.kill('keepAliveTimeout');
      } else {
        // AWS: a second connection with the same client id drops the first (DUPLICATE_CLIENTID).
        this.violations.count(id, 'duplicateClientId');
        previous.kill('duplicateClientId');
      }
    }
    this.byClientId.set(id, gate);
    gate.connectedAt = Date.now();
    this.log(`connected client=${id} cert=${gate.certificateId} thing=${gate.thingName() ?? '-'}`);
    return true;
  }

  publishEvent (cert) {
    const topic = `$aws/events/certificates/registered/${cert.caCertificateId}`;
    const payload = Buffer.from(JSON.stringify(registeredEvent(this.registry, cert)));
    this.aedes.publish({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, () => {});
  }

  /** Publish a message as the cloud (control API /_sim/publish). */
  publish ({ topic, payload, qos = 0, retain = false }) {
    return new Promise((resolve, reject) => {
      this.aedes.publish({ cmd: 'publish', topic, payload, qos, retain, dup: false }, (err) => (err ? reject(err) : resolve()));
    });
  }

  onCertificateStatus ({ certificateId, to }) {
    if (to === 'ACTIVE') return;
    // AWS disconnects within minutes of a certificate leaving ACTIVE; the sim does it now.
    for (const g of this.gates) if (g.certificateId === certificateId) g.kill('certificateNotActive');
  }

  clients () {
    const out = [];
    for (const g of this.byClientId.values()) {
      out.push({
        clientId: g.clientId,
        thingName: g.thingName() ?? null,
        certificateId: g.certificateId,
        remoteAddress: g.socket.remoteAddress,
        remotePort: g.socket.remotePort,
        protocolVersion: g.protocolVersion,
        tlsVersion: g.facts.tlsVersion,
        alpn: g.facts.alpn || null,
        servername: g.facts.servername,
        connectedAt: g.connectedAt,
        subscriptions: [...g.subscriptions]
      });
    }
    return out;
  }

  async close () {
    if (this.server) {
      this.server.close();
      for (const g of this.gates) g.kill('shutdown');
    }
    if (this.aedes) await new Promise((r) => this.aedes.close(r));
  }
}

/** One device connection: the TLS socket on one side, aedes on the other. */
class Gate extends Duplex {
  constructor (broker, socket, facts) {
    super({ allowHalfOpen: false });
    this.broker = broker;
    this.socket = socket;
    this.facts = facts;
    this.clientId = null;
    this.certificateId = null;
    this.connected = false;
    this.protocolVersion = 4;
    this.buf = null;
    this.parser = mqttPacket.parser({ protocolVersion: 4 });
    this.packet = null;
    this.parser.on('packet', (p) => { this.packet = p; });
    this.parser.on('error', () => { this.packet = null; });
    const o = broker.options;
    this.publishBucket = new TokenBucket(o.maxPublishRate);
    this.byteBucket = new TokenBucket(o.maxThroughput);
    this.authzCache = new Map();
    this.authzEpoch = -1;
    this.subscriptions = new Set(); // filters this connection subscribed to (stored by aedes)
    this.thingCache = undefined;
    this.inputEnded = false;
    this.keepAlive = 0; // seconds, from the CONNECT
    this.lastInputAt = Date.now();
    socket.on('data', (d) => this.onData(d));
    socket.on('end', () => this.endInput());
    socket.on('close', () => this.endInput());
    socket.on('error', () => this.endInput());
  }

  /**
   * No more input: end our readable side so aedes still processes the packets already
   * forwarded (AWS routes what it received before a violation), then closes the client
   * and destroys us. The timer is a backstop in case aedes never does.
   */
  endInput () {
    if (this.inputEnded) return;
    this.inputEnded = true;
    this.push(null);
    setTimeout(() => this.destroy(), 5000).unref();
  }

  _read () { if (this.socket.isPaused()) this.socket.resume(); }

  _write (chunk, enc, cb) {
    if (this.socket.destroyed) return cb();
    if (this.socket.write(chunk)) cb(); else this.socket.once('drain', () => cb());
  }

  _final (cb) { this.socket.end(); cb(); }

  _destroy (err, cb) {
    if (!this.socket.destroyed) this.socket.destroy();
    cb(err);
  }

  /** Close the connection (AWS closes the TCP connection; no DISCONNECT is sent in 3.1.1). */
  kill (reason) {
    this.killReason = this.killReason || reason;
    this.socket.destroy();
    this.endInput();
  }

  violation (name) {
    this.broker.violations.count(this.clientId, name);
    this.kill(name);
  }

  /** True once the client has sent nothing for 1.5 x its keep-alive. */
  silentPastKeepAlive () {
    return this.keepAlive > 0 && Date.now() - this.lastInputAt > this.keepAlive * 1500;
  }

  onData (chunk) {
    if (this.inputEnded) return;
    this.lastInputAt = Date.now();
    let buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    this.buf = null;
    let off = 0;
    while (!this.inputEnded) {
      if (buf.length - off < 2) break;
      // fixed header: type byte, then the remaining length as a 1-4 byte varint
      let len = 0;
      let mul = 1;
      let i = off + 1;
      let complete = false;
      for (; i < buf.length && i < off + 5; i++) {
        len += (buf[i] & 0x7f) * mul;
        mul *= 128;
        if ((buf[i] & 0x80) === 0) { complete = true; i++; break; }
      }
      if (!complete) {
        if (i >= off + 5) { this.violation('protocolError'); return; }
        break;
      }
      const type = buf[off] >> 4;
      if (len > MAX_FRAME) { this.violation(type === 3 ? 'payloadTooLarge' : 'protocolError'); return; }
      if (buf.length - i < len) break;
      const frame = buf.subarray(off, i + len);
      off = i + len;
      this.onFrame(type, frame);
    }
    if (!this.inputEnded && off < buf.length) {
      this.buf = buf.subarray(off);
      // a partial frame needs no more than MAX_FRAME bytes of buffer, checked above
    }
  }

  parse (frame) {
    this.packet = null;
    this.parser.parse(frame);
    const p = this.packet;
    this.packet = null;
    return p;
  }

  forward (frame) {
    if (this.inputEnded) return;
    if (!this.push(frame)) this.socket.pause();
  }

  onFrame (type, frame) {
    if (!this.connected) {
      const p = type === 1 ? this.parse(frame) : null;
      if (!p || p.cmd !== 'connect') { this.kill('protocolError'); return; }
      if (!this.broker.admit(this, p)) { this.kill('refused'); return; }
      this.connected = true;
      this.protocolVersion = p.protocolVersion;
      this.parser.settings.protocolVersion = p.protocolVersion;
      this.forward(frame);
      return;
    }
    if (type === 1) { this.violation('protocolError'); return; }
    if (!PACKET_TYPES[type]) { this.forward(frame); return; }
    const p = this.parse(frame);
    if (!p) { this.violation('protocolError'); return; }
    if (type === 3) this.onPublish(p, frame);
    else this.onSubscribe(p, frame);
  }

  onPublish (p, frame) {
    const topic = p.topic;
    if (p.qos === 2) { this.broker.violations.count(this.clientId, 'qos2Publish'); return; } // no PUBREC, dropped
    if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES) return this.violation('topicTooLong');
    if (slashCount(topic) > MAX_SLASHES) return this.violation('topicTooManyLevels');
    if (topic.startsWith('$') && !ALLOWED_DOLLAR_PREFIXES.some((x) => topic.startsWith(x))) return this.violation('reservedTopic');
    if (p.payload.length > MAX_PAYLOAD) return this.violation('payloadTooLarge');
    if (!this.publishBucket.take(1)) return this.violation('publishRate');
    if (!this.byteBucket.take(frame.length)) return this.violation('throughput');
    if (!this.allowed('iot:Publish', 'topic', topic)) return this.violation('publishNotAuthorized');
    this.forward(frame);
  }

  onSubscribe (p, frame) {
    for (const s of p.subscriptions) {
      if (s.qos === 2) { this.broker.violations.count(this.clientId, 'qos2Subscribe'); return; } // no SUBACK
    }
    for (const s of p.subscriptions) {
      if (!validFilter(s.topic)) return this.violation('invalidTopicFilter');
      if (Buffer.byteLength(s.topic) > MAX_TOPIC_BYTES) return this.violation('topicTooLong');
      if (slashCount(s.topic) > MAX_SLASHES) return this.violation('topicTooManyLevels');
      if (!this.allowed('iot:Subscribe', 'topicfilter', s.topic)) return this.violation('subscribeNotAuthorized');
    }
    this.forward(frame);
  }

  /**
   * The thing this connection acts as, for ${iot:Connection.Thing.ThingName}. With AWS's
   * default (non-exclusive) thing association the thing name is the MQTT client id, and
   * only when the certificate is attached to a thing of that name; undefined otherwise.
   */
  thingName () {
    this.refreshAuthz();
    if (this.thingCache === undefined) {
      const things = this.certificateId ? this.broker.registry.thingsForCert(this.certificateId) : [];
      this.thingCache = things.includes(this.clientId) ? this.clientId : null;
    }
    return this.thingCache ?? undefined;
  }

  refreshAuthz () {
    if (this.authzEpoch !== this.broker.authzEpoch) {
      this.authzEpoch = this.broker.authzEpoch;
      this.authzCache.clear();
      this.thingCache = undefined;
    }
  }

  /** Policy decision for `action` on `kind/name` (kind: client, topic, topicfilter), cached. */
  allowed (action, kind, name) {
    this.refreshAuthz();
    const key = action + '\0' + name;
    let v = this.authzCache.get(key);
    if (v === undefined) {
      const reg = this.broker.registry;
      const vars = { 'iot:ClientId': this.clientId ?? undefined, 'iot:Connection.Thing.ThingName': this.thingName() };
      v = evaluate(reg.policiesForCert(this.certificateId), action, reg.arn(kind, name), vars);
      if (this.authzCache.size > 1000) this.authzCache.clear();
      this.authzCache.set(key, v);
    }
    return v;
  }
}
