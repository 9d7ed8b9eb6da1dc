// AWS IoT limits: each one tripped once by a real MQTT client, observed both as the
// client sees it (no ack / disconnect / refused CONNECT) and in the violation counters.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import tls from 'node:tls';
import { once } from 'node:events';
import mqttPacket from 'mqtt-packet';
import { startSim, tmpDir, makeCa, registerCa, connect, closed, activeDevice, violations, ALLOW_ALL, sleep, waitFor } from './helpers.js';

let sim;
let dir;
let ca;
before(async () => {
  dir = tmpDir('limits-');
  sim = await startSim(); // AWS defaults: 1 CONNECT/s per client id, 100 pub/s, 512 KiB/s
  ca = await makeCa(dir, 'ca');
  await registerCa(sim, dir, ca);
});
after(async () => { await sim.stop(); fs.rmSync(dir, { recursive: true, force: true }); });

/** A connected client for a fresh ACTIVE device with an allow-all policy. */
async function device (name, opts) {
  const dev = await activeDevice(sim, dir, ca, name, ALLOW_ALL);
  const r = await connect(sim, dev, name, opts);
  assert.equal(r.ok, true, `connect ${name}: ${r.reason}`);
  return { dev, client: r.client };
}

const publish = (client, topic, payload, qos = 1) => new Promise((resolve) => {
  client.publish(topic, payload, { qos }, (err) => resolve(err || 'acked'));
});
const within = (p, ms) => Promise.race([p, sleep(ms).then(() => 'timeout')]);
const logged = async (topic) => (await sim.api('GET', `/_sim/publishes?topic=${encodeURIComponent(topic)}`)).body.publishes.length;

test('QoS 2 PUBLISH gets no PUBREC and is not routed; QoS 2 SUBSCRIBE gets no SUBACK; the connection stays', async () => {
  const { client } = await device('lim-qos2');
  assert.equal(await within(publish(client, 'dt/lim-qos2/a', 'x', 2), 500), 'timeout');
  assert.equal(await logged('dt/lim-qos2/a'), 0);
  const sub = new Promise((resolve) => client.subscribe('cmd/lim-qos2/#', { qos: 2 }, () => resolve('suback')));
  assert.equal(await within(sub, 500), 'timeout');
  assert.equal(await within(publish(client, 'dt/lim-qos2/b', 'y', 1), 2000), 'acked');
  assert.deepEqual((await violations(sim, 'lim-qos2')).counters, { qos2Publish: 1, qos2Subscribe: 1 });
  client.end(true);
});

test('payload: 128 KB is accepted, one byte more disconnects', async () => {
  const { client } = await device('lim-payload');
  assert.equal(await publish(client, 'dt/lim-payload/a', Buffer.alloc(128 * 1024)), 'acked');
  const gone = closed(client);
  client.publish('dt/lim-payload/b', Buffer.alloc(128 * 1024 + 1), { qos: 1 });
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'lim-payload')).counters, { payloadTooLarge: 1 });
});

test('topic: > 256 bytes or > 8 levels disconnects; 8 levels are fine', async () => {
  let { client } = await device('lim-topic');
  assert.equal(await publish(client, 'dt/lim-topic/3/4/5/6/7/8', 'x'), 'acked');
  let gone = closed(client);
  client.publish('dt/lim-topic/3/4/5/6/7/8/9', 'x', { qos: 1 });
  assert.equal(await gone, true);
  await sleep(1100);
  ({ client } = await connect(sim, (await activeDevice(sim, dir, ca, 'lim-topic-b', ALLOW_ALL)), 'lim-topic-b'));
  gone = closed(client);
  client.publish('dt/' + 'x'.repeat(254), 'x', { qos: 1 });
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'lim-topic')).counters, { topicTooManyLevels: 1 });
  assert.deepEqual((await violations(sim, 'lim-topic-b')).counters, { topicTooLong: 1 });
});

test('publishing to a reserved $ topic disconnects', async () => {
  const { client } = await device('lim-dollar');
  const gone = closed(client);
  client.publish('$aws/events/certificates/registered/x', '{}', { qos: 1 });
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'lim-dollar')).counters, { reservedTopic: 1 });
});

test('more than 100 publishes/s on a connection disconnects', async () => {
  const { client } = await device('lim-rate');
  const gone = closed(client);
  // 400 in one burst: even a slow, loaded machine cannot spread them over the 3 s it would
  // take the bucket (100 tokens, 100/s) to let them all through
  for (let i = 0; i < 400; i++) client.publish('dt/lim-rate/x', 'x', { qos: 0 });
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'lim-rate')).counters, { publishRate: 1 });
  const n = await logged('dt/lim-rate/x');
  assert.ok(n >= 100 && n < 400, `routed ${n}`); // those before the violating one are routed
});

test('more than 512 KiB/s on a connection disconnects', async () => {
  const { client } = await device('lim-bytes');
  const gone = closed(client);
  for (let i = 0; i < 12; i++) client.publish('dt/lim-bytes/x', Buffer.alloc(120 * 1024), { qos: 0 }); // 1.4 MiB
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'lim-bytes')).counters, { throughput: 1 });
});

test('client id longer than 128 bytes or starting with $ is refused; 128 bytes is fine', async () => {
  const dev = await activeDevice(sim, dir, ca, 'lim-id', ALLOW_ALL);
  const long = 'a'.repeat(129);
  assert.equal((await connect(sim, dev, long)).ok, false);
  assert.equal((await connect(sim, dev, '$lim-id')).ok, false);
  const ok = await connect(sim, dev, 'b'.repeat(128));
  assert.equal(ok.ok, true);
  ok.client.end(true);
  assert.deepEqual((await violations(sim, long)).counters, { clientIdTooLong: 1 });
  assert.deepEqual((await violations(sim, '$lim-id')).counters, { clientIdReserved: 1 });
  assert.equal((await violations(sim, 'b'.repeat(128))).total, 0);
});

test('keep-alive above 1200 s is refused; 1200 s is fine', async () => {
  const dev = await activeDevice(sim, dir, ca, 'lim-ka', ALLOW_ALL);
  assert.equal((await connect(sim, dev, 'lim-ka', { keepalive: 1201 })).ok, false);
  await sleep(1100);
  const ok = await connect(sim, dev, 'lim-ka', { keepalive: 1200 });
  assert.equal(ok.ok, true);
  ok.client.end(true);
  assert.deepEqual((await violations(sim, 'lim-ka')).counters, { keepAliveTooLarge: 1 });
});

test('more than 1 CONNECT/s per client id is refused; a second connection with the same id drops the first', async () => {
  const { dev, client } = await device('lim-dup');
  assert.equal((await connect(sim, dev, 'lim-dup')).ok, false); // within 1 s
  assert.equal(client.connected, true);
  await sleep(1100);
  const gone = closed(client);
  const second = await connect(sim, dev, 'lim-dup');
  assert.equal(second.ok, true);
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'lim-dup')).counters, { connectRate: 1, duplicateClientId: 1 });
  second.client.end(true);
});

/** A raw TLS connection as dev, so a test decides every byte; resolves once the handshake is done. */
async function rawTls (dev) {
  const socket = tls.connect({
    host: '127.0.0.1', port: sim.info.mqttPort, ca: fs.readFileSync(sim.info.rootCa),
    key: dev.keyPem, cert: dev.chainPem, servername: 'localhost'
  });
  await once(socket, 'secureConnect');
  socket.received = Buffer.alloc(0);
  socket.on('data', (d) => { socket.received = Buffer.concat([socket.received, d]); });
  return socket;
}
const connectPacket = (clientId, keepalive) =>
  mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive });
const CONNACK_ACCEPTED = [0x20, 2, 0, 0];

test('a client silent for 1.5 x its keep-alive is over: connecting again with its id is no duplicate, even before the sim\'s timer ran', async () => {
  const dev = await activeDevice(sim, dir, ca, 'lim-silent', ALLOW_ALL);
  // The first connection sends CONNECT (keep-alive 1 s) and then nothing, not even PINGREQ.
  const first = await rawTls(dev);
  const gone = once(first, 'close');
  first.write(connectPacket('lim-silent', 1));
  await waitFor(() => first.received.length >= 4, { what: 'CONNACK' });
  assert.deepEqual([...first.received.subarray(0, 4)], CONNACK_ACCEPTED);
  // The second CONNECT reaches a sim whose timers are late (stopped for 2 s: a loaded
  // machine): it is read before the timer that ends the first connection runs.
  const second = await rawTls(dev);
  await sleep(1100); // AWS: 1 CONNECT/s per client id
  sim.proc.kill('SIGSTOP');
  try {
    second.write(connectPacket('lim-silent', 30));
    await sleep(2000);
  } finally { sim.proc.kill('SIGCONT'); }
  await waitFor(() => second.received.length >= 4, { what: 'CONNACK' });
  assert.deepEqual([...second.received.subarray(0, 4)], CONNACK_ACCEPTED);
  await gone;
  assert.deepEqual((await violations(sim, 'lim-silent')).counters, {});
  // Taking the id over from a live connection is still a duplicate.
  await sleep(1100);
  const third = await rawTls(dev);
  third.write(connectPacket('lim-silent', 30));
  await waitFor(() => third.received.length >= 4, { what: 'CONNACK' });
  assert.deepEqual((await violations(sim, 'lim-silent')).counters, { duplicateClientId: 1 });
  second.destroy();
  third.destroy();
});

test('a well-behaved client trips nothing', async () => {
  const { client } = await device('lim-good');
  for (let i = 0; i < 20; i++) assert.equal(await publish(client, `dt/lim-good/${i}`, 'x'), 'acked');
  await new Promise((resolve) => client.subscribe('cmd/lim-good/#', { qos: 1 }, resolve));
  client.end(true);
  assert.deepEqual(await violations(sim, 'lim-good'), { clientId: 'lim-good', total: 0, counters: {} });
});
