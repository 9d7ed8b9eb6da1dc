// The iot-sim process: command line, ready line, shutdown, TLS versions and ALPN, MQTT 5,
// and a bounded load check (hundreds of TLS connections, thousands of QoS 1 messages).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startSim, tmpDir, makeCa, registerCa, connect, activeDevice, ALLOW_ALL, SIM_BIN, sleep } from './helpers.js';

const run = promisify(execFile);

test('--help documents the switches; bad arguments exit 2', async () => {
  const { stdout } = await run(process.execPath, [SIM_BIN, '--help']);
  for (const flag of ['--data-dir', '--mqtt-port', '--api-port', '--lambda', '--lambda-delay-ms', '--refuse-at-tls', '--require-ca-in-chain', '--port-443', '--exit-on-stdin-eof']) {
    assert.ok(stdout.includes(flag), flag);
  }
  await assert.rejects(run(process.execPath, [SIM_BIN]), (e) => e.code === 2 && /--data-dir is required/.test(e.stderr));
  await assert.rejects(run(process.execPath, [SIM_BIN, '--data-dir', '/tmp', '--bogus']), (e) => e.code === 2);
  await assert.rejects(run(process.execPath, [SIM_BIN, '--data-dir', '/tmp', '--lambda', 'noequals']), (e) => e.code === 2);
  await assert.rejects(run(process.execPath, [SIM_BIN, '--data-dir', '/tmp', '--lambda', 'arn:x=/nonexistent/handler.mjs']),
    (e) => e.code === 2 && /handler module not found/.test(e.stderr));
});

test('ready line, SIGTERM exits promptly with a client connected, stdin EOF exits with --exit-on-stdin-eof', async () => {
  const dir = tmpDir('proc-');
  try {
    const sim = await startSim([]);
    assert.deepEqual(Object.keys(sim.info).sort(), ['accountId', 'apiPort', 'endpoint', 'mqttPort', 'rootCa']);
    assert.ok(fs.readFileSync(sim.info.rootCa, 'utf8').includes('BEGIN CERTIFICATE'));
    const ca = await makeCa(dir, 'ca');
    await registerCa(sim, dir, ca);
    const dev = await activeDevice(sim, dir, ca, 'proc-dev', ALLOW_ALL);
    const r = await connect(sim, dev, 'proc-dev');
    assert.equal(r.ok, true);
    const t0 = Date.now();
    const exit = new Promise((resolve) => sim.proc.once('exit', (code, sig) => resolve([code, sig])));
    sim.proc.kill('SIGTERM');
    assert.deepEqual(await exit, [0, null]);
    await sim.stop(); // already exited: only removes its data dir
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
    r.client.end(true);

    const sim2 = await startSim([]);
    const exit2 = new Promise((resolve) => sim2.proc.once('exit', (code) => resolve(code)));
    sim2.proc.stdin.end();
    assert.equal(await exit2, 0);
    await sim2.stop();

    // without the flag, stdin EOF does not stop it
    const data = tmpDir('proc-noflag-');
    const p = spawn(process.execPath, [SIM_BIN, '--data-dir', data], { stdio: ['pipe', 'pipe', 'ignore'] });
    await new Promise((resolve) => p.stdout.once('data', resolve));
    p.stdin.end();
    await sleep(300);
    assert.equal(p.exitCode, null);
    const exit3 = new Promise((resolve) => p.once('exit', resolve));
    p.kill('SIGINT');
    await exit3;
    fs.rmSync(data, { recursive: true, force: true });
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

let sim;
let dir;
let dev;
before(async () => {
  dir = tmpDir('proc-tls-');
  sim = await startSim(['--max-connects-per-second', '0']);
  const ca = await makeCa(dir, 'ca');
  await registerCa(sim, dir, ca);
  dev = await activeDevice(sim, dir, ca, 'tls-dev', ALLOW_ALL);
});
after(async () => { await sim.stop(); fs.rmSync(dir, { recursive: true, force: true }); });

test('TLS 1.2 and 1.3, ALPN x-amzn-mqtt-ca, MQTT 3.1.1 (5 is refused)', async () => {
  for (const v of ['TLSv1.2', 'TLSv1.3']) {
    const r = await connect(sim, dev, `tls-${v}`, { minVersion: v, maxVersion: v });
    assert.equal(r.ok, true, v);
    assert.equal(r.client.stream.getProtocol(), v);
    r.client.end(true);
  }
  const a = await connect(sim, dev, 'tls-alpn', { alpn: ['x-amzn-mqtt-ca'] });
  assert.equal(a.ok, true);
  assert.equal(a.client.stream.alpnProtocol, 'x-amzn-mqtt-ca');
  a.client.end(true);
  // MQTT 5 is not modelled: aedes speaks 3.1 and 3.1.1 only (see README)
  const m5 = await connect(sim, dev, 'tls-mqtt5', { protocolVersion: 5 });
  assert.equal(m5.ok, false);
  const m4 = await connect(sim, dev, 'tls-mqtt311', { protocolVersion: 4 });
  assert.equal(m4.ok, true);
  const c = (await sim.api('GET', '/_sim/clients')).body.clients.find((x) => x.clientId === 'tls-mqtt311');
  // the thing name is the client id, and only if the certificate is attached to that thing
  assert.deepEqual([c.protocolVersion, c.certificateId, c.thingName], [4, dev.certificateId, null]);
  m4.client.end(true);
});

test('200 concurrent TLS connections, 4000 QoS 1 messages, all acknowledged and logged', async () => {
  const N = 200;
  const PER = 20;
  const t0 = Date.now();
  const conns = await Promise.all(Array.from({ length: N }, (_, i) => connect(sim, dev, `load-${i}`, { connectTimeout: 20000 })));
  assert.equal(conns.filter((r) => r.ok).length, N);
  const t1 = Date.now();
  await sim.api('DELETE', '/_sim/publishes');
  const before = (await sim.api('GET', '/_sim/publishes?limit=1')).body.lastSeq;
  await Promise.all(conns.map((r, i) => Promise.all(Array.from({ length: PER }, (_, k) => new Promise((resolve, reject) => {
    r.client.publish(`dt/load-${i}/m`, `msg-${k}`, { qos: 1 }, (e) => (e ? reject(e) : resolve()));
  })))));
  const t2 = Date.now();
  const after = (await sim.api('GET', '/_sim/publishes?limit=1')).body.lastSeq;
  assert.equal(after - before, N * PER);
  const v = (await sim.api('GET', '/_sim/violations')).body.clients;
  assert.deepEqual(Object.keys(v).filter((k) => k.startsWith('load-')), []);
  for (const r of conns) r.client.end(true);
  const rate = Math.round(N * PER / ((t2 - t1) / 1000));
  console.log(`# ${N} connections in ${t1 - t0} ms; ${N * PER} QoS 1 messages in ${t2 - t1} ms (${rate}/s)`);
});

test('garbage MQTT from an authenticated device closes only that connection', async () => {
  const { default: mqttPacket } = await import('mqtt-packet');
  const tls = await import('node:tls');
  const { randomBytes } = await import('node:crypto');
  const connectFrame = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'fuzz', keepalive: 30 });
  const garbage = [
    randomBytes(64),
    Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]), // remaining length over 4 bytes
    Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), // 256 MB publish announced
    Buffer.concat([Buffer.from([0x82, 0x03, 0x00, 0x01, 0x00])]), // truncated SUBSCRIBE
    Buffer.from([0x10, 0x02, 0x00, 0x00]), // second CONNECT, malformed
    Buffer.from([0xf0, 0x00]) // reserved packet type 15
  ];
  for (const g of garbage) {
    const s = tls.connect({ host: '127.0.0.1', port: sim.info.mqttPort, servername: 'localhost', ca: fs.readFileSync(sim.info.rootCa), key: dev.keyPem, cert: dev.chainPem });
    await new Promise((resolve) => s.once('secureConnect', resolve));
    s.write(connectFrame);
    await new Promise((resolve) => s.once('data', resolve)); // CONNACK
    await sleep(1);
    const end = new Promise((resolve) => { s.on('close', resolve); s.on('error', () => {}); });
    s.write(g);
    const t = setTimeout(() => s.destroy(), 3000);
    await end;
    clearTimeout(t);
  }
  const r = await connect(sim, dev, 'after-fuzz');
  assert.equal(r.ok, true);
  r.client.end(true);
  assert.equal(sim.proc.exitCode, null);
  assert.ok(((await sim.api('GET', '/_sim/violations/fuzz')).body.counters.protocolError ?? 0) >= 3);
});
