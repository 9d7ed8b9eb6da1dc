// JITR sequences and certificate states, end to end over MQTT/TLS against a sim process.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import tls from 'node:tls';
import { createJitrRule, startSim, tmpDir, makeCa, makeLeaf, registerCa, connect, closed, provision, certIdOf, waitFor, sleep } from './helpers.js';

const ALLOW_ALL = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 'iot:*', Resource: '*' }] };
let sim;
let dir;
let ca;
let caId;
before(async () => {
  dir = tmpDir('jitr-');
  sim = await startSim(['--max-connects-per-second', '0']);
  ca = await makeCa(dir, 'ca');
  caId = await registerCa(sim, dir, ca);
  await createJitrRule(sim);
});
after(async () => { await sim.stop(); fs.rmSync(dir, { recursive: true, force: true }); });

const cert = async (id) => (await sim.api('GET', `/certificates/${id}`)).body.certificateDescription;
const events = async (id) => (await sim.api('GET', `/_sim/publishes?topic=${encodeURIComponent(`$aws/events/certificates/registered/${caId}`)}`))
  .body.publishes.map((p) => JSON.parse(Buffer.from(p.payload, 'base64'))).filter((e) => e.certificateId === id);
const refusals = async (certificateId) => (await sim.api('GET', '/_sim/refusals')).body.refusals.filter((r) => r.certificateId === certificateId);

test('unknown certificate of an auto-registering CA: registered PENDING_ACTIVATION on CONNECT, event, no CONNACK', async () => {
  await sim.api('PUT', '/_sim/lambda', { enabled: false });
  try {
    const dev = await makeLeaf(dir, ca, 'jitr-dev-1');
    const id = certIdOf(dev.pem);
    const r1 = await connect(sim, dev, 'jitr-dev-1');
    assert.equal(r1.ok, false);
    assert.equal(r1.connack, undefined);
    const c = await cert(id);
    assert.equal(c.status, 'PENDING_ACTIVATION');
    assert.equal(c.caCertificateId, caId);
    const ev = await events(id);
    assert.equal(ev.length, 1);
    assert.deepEqual(Object.keys(ev[0]).sort(), ['awsAccountId', 'caCertificateId', 'certificateId', 'certificateRegistrationTimestamp', 'certificateStatus', 'timestamp']);
    assert.equal(ev[0].certificateStatus, 'PENDING_ACTIVATION');
    assert.equal(ev[0].awsAccountId, '123456789012');
    assert.equal(ev[0].caCertificateId, caId);
    assert.equal(ev[0].caCertificateId, certIdOf(ca.pem));
    assert.equal(typeof ev[0].timestamp, 'number');
    // every later connect while pending publishes again and is closed
    const r2 = await connect(sim, dev, 'jitr-dev-1');
    assert.equal(r2.ok, false);
    assert.equal((await events(id)).length, 2);
    assert.equal((await cert(id)).status, 'PENDING_ACTIVATION');
    // the rule saw both, but the Lambda action was switched off
    const inv = (await sim.api('GET', '/_sim/lambda')).body;
    assert.equal(inv.enabled, false);
    assert.ok(inv.invocations.filter((i) => i.event === undefined && i.skipped).length >= 2);
  } finally {
    await sim.api('PUT', '/_sim/lambda', { enabled: true });
  }
});

test('with the Lambda on, the next connect is accepted (CONNACK 0)', async () => {
  const dev = await makeLeaf(dir, ca, 'jitr-dev-2');
  const id = certIdOf(dev.pem);
  assert.equal((await connect(sim, dev, 'jitr-dev-2')).ok, false);
  await waitFor(async () => (await cert(id)).status === 'ACTIVE', { what: 'activation' });
  const r = await connect(sim, dev, 'jitr-dev-2');
  assert.equal(r.ok, true);
  assert.equal(r.connack.returnCode, 0);
  const clients = (await sim.api('GET', '/_sim/clients')).body.clients;
  const me = clients.find((c) => c.clientId === 'jitr-dev-2');
  assert.equal(me.thingName, 'jitr-dev-2');
  assert.equal(me.certificateId, id);
  r.client.end(true);
});

test('a bare TLS handshake without CONNECT registers nothing', async () => {
  const dev = await makeLeaf(dir, ca, 'jitr-bare');
  const s = tls.connect({ host: '127.0.0.1', port: sim.info.mqttPort, servername: 'localhost', ca: fs.readFileSync(sim.info.rootCa), key: dev.keyPem, cert: dev.chainPem });
  await new Promise((resolve, reject) => { s.once('secureConnect', resolve); s.once('error', reject); });
  s.end();
  await sleep(100);
  const r = await sim.api('GET', `/certificates/${certIdOf(dev.pem)}`);
  assert.equal(r.status, 404);
  assert.equal(r.type, 'ResourceNotFoundException');
});

test('CA INACTIVE or auto-registration disabled: refused, nothing registered; registered certificates keep working', async () => {
  const ca2 = await makeCa(dir, 'ca2');
  const ca2Id = await registerCa(sim, dir, ca2, { active: false, autoRegistration: true });
  const dev = await makeLeaf(dir, ca2, 'jitr-inactive-ca');
  const id = certIdOf(dev.pem);
  assert.equal((await connect(sim, dev, 'jitr-inactive-ca')).ok, false);
  assert.equal((await sim.api('GET', `/certificates/${id}`)).status, 404);
  assert.equal((await refusals(id)).at(-1).reason, 'caInactive');

  await sim.api('PUT', `/cacertificate/${ca2Id}?newStatus=ACTIVE&newAutoRegistrationStatus=DISABLE`);
  assert.equal((await connect(sim, dev, 'jitr-inactive-ca')).ok, false);
  assert.equal((await refusals(id)).at(-1).reason, 'autoRegistrationDisabled');

  await sim.api('PUT', `/cacertificate/${ca2Id}?newAutoRegistrationStatus=ENABLE`);
  assert.equal((await connect(sim, dev, 'jitr-inactive-ca')).ok, false);
  await waitFor(async () => (await cert(id)).status === 'ACTIVE', { what: 'activation' });
  // deactivating the CA does not affect certificates already registered
  await sim.api('PUT', `/cacertificate/${ca2Id}?newStatus=INACTIVE`);
  const r = await connect(sim, dev, 'jitr-inactive-ca');
  assert.equal(r.ok, true);
  r.client.end(true);
});

test('the registered CA must be the direct issuer', async () => {
  const inter = await makeLeaf(dir, ca, 'intermediate', 'intermediate', {
    extraArgs: ['-extfile', fs.writeFileSync(`${dir}/inter.ext`, 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n') || `${dir}/inter.ext`]
  });
  const interCa = { name: 'intermediate', key: inter.key, cert: inter.cert, pem: inter.pem };
  const dev = await makeLeaf(dir, interCa, 'jitr-grandchild');
  const r = await connect(sim, dev, 'jitr-grandchild', { certPem: dev.pem + inter.pem + ca.pem });
  assert.equal(r.ok, false);
  assert.equal((await refusals(certIdOf(dev.pem))).at(-1).reason, 'unknownCa');
});

test('neither CA in the chain nor SNI: refused; SNI alone is enough', async () => {
  const dev = await makeLeaf(dir, ca, 'jitr-nosni');
  const id = certIdOf(dev.pem);
  assert.equal((await connect(sim, dev, 'jitr-nosni', { noChain: true, servername: '' })).ok, false);
  assert.equal((await refusals(id)).at(-1).reason, 'neitherCaNorSni');
  assert.equal((await sim.api('GET', `/certificates/${id}`)).status, 404);
  assert.equal((await connect(sim, dev, 'jitr-nosni', { noChain: true })).ok, false);
  assert.equal((await cert(id)).caCertificateId, caId);
});

test('ACTIVE certificate: no policy -> closed without CONNACK; iot:Connect allowed -> CONNACK 0', async () => {
  const dev = await makeLeaf(dir, ca, 'manual-1');
  const id = certIdOf(dev.pem);
  await sim.api('PUT', '/_sim/lambda', { enabled: false });
  try {
    await connect(sim, dev, 'manual-1');
  } finally { await sim.api('PUT', '/_sim/lambda', { enabled: true }); }
  assert.equal((await sim.api('PUT', `/certificates/${id}?newStatus=ACTIVE`)).status, 200);
  const r1 = await connect(sim, dev, 'manual-1');
  assert.equal(r1.ok, false);
  assert.equal(r1.connack, undefined);
  assert.equal((await refusals(id)).at(-1).reason, 'connectNotAuthorized');
  await provision(sim, id, 'manual-1', ALLOW_ALL);
  const r2 = await connect(sim, dev, 'manual-1');
  assert.equal(r2.ok, true);
  // leaving ACTIVE disconnects live connections
  const gone = closed(r2.client);
  assert.equal((await sim.api('PUT', `/certificates/${id}?newStatus=INACTIVE`)).status, 200);
  assert.equal(await gone, true);
  // INACTIVE and REVOKED are refused after CONNECT
  assert.equal((await connect(sim, dev, 'manual-1')).ok, false);
  assert.equal((await refusals(id)).at(-1).reason, 'certificateInactive');
  assert.equal((await refusals(id)).at(-1).stage, 'connect');
  await sim.api('PUT', `/certificates/${id}?newStatus=REVOKED`);
  assert.equal((await connect(sim, dev, 'manual-1')).ok, false);
  assert.equal((await refusals(id)).at(-1).reason, 'certificateRevoked');
});

test('--refuse-at-tls: refused certificates are closed before any MQTT packet; restart keeps the registry', async () => {
  const data = tmpDir('jitr-tls-');
  let s2 = await startSim(['--refuse-at-tls', '--max-connects-per-second', '0'], { dataDir: data });
  try {
    const caT = await makeCa(dir, 'ca-tls');
    await registerCa(s2, dir, caT);
    await createJitrRule(s2);
    const unknownCa = await makeCa(dir, 'ca-unknown');
    const stranger = await makeLeaf(dir, unknownCa, 'stranger');
    const r = await connect(s2, stranger, 'stranger');
    assert.equal(r.ok, false);
    const ref = (await s2.api('GET', '/_sim/refusals')).body.refusals;
    assert.deepEqual([ref.at(-1).stage, ref.at(-1).reason, ref.at(-1).clientId], ['tls', 'unknownCa', null]);
    // JITR still happens on CONNECT
    const dev = await makeLeaf(dir, caT, 'tls-dev');
    assert.equal((await connect(s2, dev, 'tls-dev')).ok, false);
    const id = certIdOf(dev.pem);
    await waitFor(async () => (await s2.api('GET', `/certificates/${id}`)).body.certificateDescription?.status === 'ACTIVE', { what: 'activation' });
    await s2.stop();
    s2 = await startSim(['--refuse-at-tls', '--max-connects-per-second', '0'], { dataDir: data });
    assert.equal((await s2.api('GET', `/certificates/${id}`)).body.certificateDescription.status, 'ACTIVE');
    const again = await connect(s2, dev, 'tls-dev');
    assert.equal(again.ok, true);
    again.client.end(true);
  } finally {
    await s2.stop();
    fs.rmSync(data, { recursive: true, force: true });
  }
});

test('--require-ca-in-chain: SNI without the CA in the chain is refused', async () => {
  const s3 = await startSim(['--require-ca-in-chain', '--max-connects-per-second', '0']);
  try {
    await registerCa(s3, dir, ca);
    const dev = await makeLeaf(dir, ca, 'chain-dev');
    assert.equal((await connect(s3, dev, 'chain-dev', { noChain: true })).ok, false);
    const ref = (await s3.api('GET', '/_sim/refusals')).body.refusals;
    assert.equal(ref.at(-1).reason, 'caNotInChain');
    assert.equal((await connect(s3, dev, 'chain-dev')).ok, false);
    assert.equal((await s3.api('GET', `/certificates/${certIdOf(dev.pem)}`)).body.certificateDescription.status, 'PENDING_ACTIVATION');
  } finally { await s3.stop(); }
});
