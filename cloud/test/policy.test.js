// IoT policy evaluation: unit tests of the evaluator, and the shipped least-privilege
// device policy enforced on a live connection (Connect, Publish, Subscribe, Receive).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { parsePolicy, evaluate } from '../iot-sim/lib/policy.js';
import { renderPolicy } from '../jitr-lambda/index.mjs';
import { startSim, tmpDir, makeCa, registerCa, connect, closed, activeDevice, violations, sleep } from './helpers.js';

const A = 'arn:aws:iot:us-east-1:123456789012';
const doc = (...Statement) => parsePolicy(JSON.stringify({ Version: '2012-10-17', Statement }));
const vars = (thing, clientId = thing) => ({ 'iot:Connection.Thing.ThingName': thing, 'iot:ClientId': clientId });

test('evaluator: default deny, Allow, explicit Deny wins across policies', () => {
  const allow = doc({ Effect: 'Allow', Action: 'iot:Publish', Resource: `${A}:topic/a/*` });
  const deny = doc({ Effect: 'Deny', Action: 'iot:*', Resource: `${A}:topic/a/secret` });
  assert.equal(evaluate([], 'iot:Publish', `${A}:topic/a/b`, {}), false);
  assert.equal(evaluate([allow], 'iot:Publish', `${A}:topic/a/b`, {}), true);
  assert.equal(evaluate([allow], 'iot:Publish', `${A}:topic/b/a`, {}), false);
  assert.equal(evaluate([allow], 'iot:Subscribe', `${A}:topic/a/b`, {}), false);
  assert.equal(evaluate([allow, deny], 'iot:Publish', `${A}:topic/a/secret`, {}), false);
  assert.equal(evaluate([allow, deny], 'iot:Publish', `${A}:topic/a/open`, {}), true);
});

test('evaluator: * and ? wildcards in actions and resources, action names case-insensitive', () => {
  const p = doc({ Effect: 'Allow', Action: ['iot:Pub*', 'iot:Receiv?'], Resource: [`${A}:topic/dev?/*`] });
  assert.equal(evaluate([p], 'iot:Publish', `${A}:topic/dev1/x/y`, {}), true);
  assert.equal(evaluate([p], 'iot:publish', `${A}:topic/dev1/x`, {}), true);
  assert.equal(evaluate([p], 'iot:Receive', `${A}:topic/dev2/x`, {}), true);
  assert.equal(evaluate([p], 'iot:Publish', `${A}:topic/dev10/x`, {}), false);
  assert.equal(evaluate([p], 'iot:Connect', `${A}:client/dev1`, {}), false);
});

test('evaluator: policy variables are literal, unresolved variables match nothing', () => {
  const p = doc(
    { Effect: 'Allow', Action: 'iot:Connect', Resource: `${A}:client/\${iot:Connection.Thing.ThingName}` },
    { Effect: 'Allow', Action: 'iot:Publish', Resource: `${A}:topic/c/\${iot:ClientId}` }
  );
  assert.equal(evaluate([p], 'iot:Connect', `${A}:client/gw1`, vars('gw1')), true);
  assert.equal(evaluate([p], 'iot:Connect', `${A}:client/gw2`, vars('gw1')), false);
  assert.equal(evaluate([p], 'iot:Connect', `${A}:client/gw1`, { 'iot:ClientId': 'gw1' }), false);
  assert.equal(evaluate([p], 'iot:Publish', `${A}:topic/c/a*b`, vars('x', 'a*b')), true);
  assert.equal(evaluate([p], 'iot:Publish', `${A}:topic/c/aZZb`, vars('x', 'a*b')), false, 'a * inside a variable value is not a wildcard');
  // MQTT wildcards in policy resources are literal characters
  const f = doc({ Effect: 'Allow', Action: 'iot:Subscribe', Resource: `${A}:topicfilter/a/+` });
  assert.equal(evaluate([f], 'iot:Subscribe', `${A}:topicfilter/a/+`, {}), true);
  assert.equal(evaluate([f], 'iot:Subscribe', `${A}:topicfilter/a/b`, {}), false);
});

test('evaluator: malformed documents are refused with MalformedPolicyException', () => {
  for (const bad of ['', 'not json', '[]', '{"Statement":[]}', '{"Statement":{"Effect":"Maybe","Action":"iot:*","Resource":"*"}}',
    '{"Statement":{"Effect":"Allow","Resource":"*"}}', '{"Statement":{"Effect":"Allow","Action":"iot:*"}}']) {
    assert.throws(() => parsePolicy(bad), (e) => e.type === 'MalformedPolicyException', bad);
  }
});

let sim;
let dir;
let ca;
before(async () => {
  dir = tmpDir('policy-');
  sim = await startSim(['--max-connects-per-second', '0']);
  ca = await makeCa(dir, 'ca');
  await registerCa(sim, dir, ca);
});
after(async () => { await sim.stop(); fs.rmSync(dir, { recursive: true, force: true }); });

const DEVICE_POLICY = JSON.parse(renderPolicy('aws', 'us-east-1', '123456789012'));
const pub = (client, topic, payload = 'x') => new Promise((resolve) => client.publish(topic, payload, { qos: 1 }, (e) => resolve(e || 'acked')));

test('shipped device policy: connect only as its own thing name', async () => {
  const dev = await activeDevice(sim, dir, ca, 'pol-gw1', DEVICE_POLICY);
  assert.equal((await connect(sim, dev, 'someone-else')).ok, false);
  assert.equal((await violations(sim, 'someone-else')).counters.connectNotAuthorized, 1);
  const r = await connect(sim, dev, 'pol-gw1');
  assert.equal(r.ok, true);
  r.client.end(true);
});

test('shipped device policy: own dt/ and cmd/ topics work; commands from the cloud are received', async () => {
  const dev = await activeDevice(sim, dir, ca, 'pol-gw2', DEVICE_POLICY);
  const { client } = await connect(sim, dev, 'pol-gw2');
  assert.equal(await pub(client, 'dt/pol-gw2/temp', '21.5'), 'acked');
  const granted = await new Promise((resolve) => client.subscribe('cmd/pol-gw2/#', { qos: 1 }, (e, g) => resolve(g)));
  assert.equal(granted[0].qos, 1);
  const got = new Promise((resolve) => client.once('message', (topic, payload) => resolve([topic, payload.toString()])));
  const r = await sim.api('POST', '/_sim/publish', { topic: 'cmd/pol-gw2/reboot', payload: '{"now":true}', qos: 1 });
  assert.equal(r.status, 200);
  assert.deepEqual(await got, ['cmd/pol-gw2/reboot', '{"now":true}']);
  client.end(true);
  assert.equal((await violations(sim, 'pol-gw2')).total, 0);
});

test('shipped device policy: publishing to another thing\'s topic disconnects', async () => {
  const dev = await activeDevice(sim, dir, ca, 'pol-gw3', DEVICE_POLICY);
  const { client } = await connect(sim, dev, 'pol-gw3');
  const gone = closed(client);
  client.publish('dt/pol-other/temp', 'x', { qos: 1 });
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'pol-gw3')).counters, { publishNotAuthorized: 1 });
  const log = (await sim.api('GET', '/_sim/publishes?topic=dt/pol-other/temp')).body.publishes;
  assert.equal(log.length, 0);
});

test('shipped device policy: subscribing to another thing\'s commands disconnects', async () => {
  const dev = await activeDevice(sim, dir, ca, 'pol-gw4', DEVICE_POLICY);
  const { client } = await connect(sim, dev, 'pol-gw4');
  const gone = closed(client);
  client.subscribe('cmd/pol-other/#', { qos: 1 });
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'pol-gw4')).counters, { subscribeNotAuthorized: 1 });
});

test('iot:Receive is checked per delivered message; a policy change applies to live connections', async () => {
  const policy = {
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Action: ['iot:Connect'], Resource: '*' },
      { Effect: 'Allow', Action: ['iot:Subscribe'], Resource: '*' },
      { Effect: 'Allow', Action: ['iot:Receive'], Resource: `${A}:topic/open/*` }
    ]
  };
  const dev = await activeDevice(sim, dir, ca, 'pol-rx', policy);
  const { client } = await connect(sim, dev, 'pol-rx');
  await new Promise((resolve) => client.subscribe('#', { qos: 1 }, resolve));
  const got = [];
  client.on('message', (t) => got.push(t));
  await sim.api('POST', '/_sim/publish', { topic: 'closed/x', payload: '1', qos: 1 });
  await sim.api('POST', '/_sim/publish', { topic: 'open/x', payload: '2', qos: 1 });
  await sleep(200);
  assert.deepEqual(got, ['open/x']);
  // a Deny policy attached later takes effect without reconnecting
  const arn = `${A}:cert/${dev.certificateId}`;
  await sim.api('POST', '/policies/deny-open', { policyDocument: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Deny', Action: 'iot:Receive', Resource: `${A}:topic/open/*` }] }) });
  await sim.api('PUT', '/target-policies/deny-open', { target: arn });
  await sim.api('POST', '/_sim/publish', { topic: 'open/y', payload: '3', qos: 1 });
  await sleep(200);
  assert.deepEqual(got, ['open/x']);
  client.end(true);
});

test('shipped device and gateway policies: own lifecycle/T/handover request and replies only', () => {
  for (const role of ['device', 'gateway']) {
    const p = parsePolicy(renderPolicy('aws', 'us-east-1', '123456789012', role));
    const v = vars('gw1');
    assert.equal(evaluate([p], 'iot:Publish', `${A}:topic/lifecycle/gw1/handover`, v), true, role);
    assert.equal(evaluate([p], 'iot:Subscribe', `${A}:topicfilter/lifecycle/gw1/handover/+`, v), true, role);
    assert.equal(evaluate([p], 'iot:Receive', `${A}:topic/lifecycle/gw1/handover/accepted`, v), true, role);
    assert.equal(evaluate([p], 'iot:Receive', `${A}:topic/lifecycle/gw1/handover/rejected`, v), true, role);
    // not another thing's, not its sensors' (a sensor asks over its own certificate), not the replies
    for (const t of ['lifecycle/gw2/handover', 'lifecycle/gw1:s1/handover', 'lifecycle/gw1/handover/accepted', 'lifecycle/gw10/handover']) {
      assert.equal(evaluate([p], 'iot:Publish', `${A}:topic/${t}`, v), false, `${role} ${t}`);
    }
    assert.equal(evaluate([p], 'iot:Subscribe', `${A}:topicfilter/lifecycle/gw2/handover/+`, v), false, role);
    assert.equal(evaluate([p], 'iot:Receive', `${A}:topic/lifecycle/gw2/handover/accepted`, v), false, role);
  }
});

test('shipped device policy: its own hand-over request goes out and the reply comes in', async () => {
  const dev = await activeDevice(sim, dir, ca, 'pol-ho', DEVICE_POLICY);
  const { client } = await connect(sim, dev, 'pol-ho');
  const granted = await new Promise((resolve) => client.subscribe('lifecycle/pol-ho/handover/+', { qos: 1 }, (e, g) => resolve(g)));
  assert.equal(granted[0].qos, 1);
  assert.equal(await pub(client, 'lifecycle/pol-ho/handover', '{"caCertificateId":"x"}'), 'acked');
  const got = new Promise((resolve) => client.once('message', (topic) => resolve(topic)));
  assert.equal((await sim.api('POST', '/_sim/publish', { topic: 'lifecycle/pol-ho/handover/accepted', payload: '{}', qos: 1 })).status, 200);
  assert.equal(await got, 'lifecycle/pol-ho/handover/accepted');
  client.end(true);
  assert.equal((await violations(sim, 'pol-ho')).total, 0);
});
