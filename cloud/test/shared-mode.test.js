// Shared mode: a gateway carries shared-mode sensors over its own connection, on the
// sensors' topics (`dt/<gateway>:<sensor id>/...`, `cmd/<gateway>:<sensor id>/...`).
// The Lambda's policy choice (OU=gateway → gateway policy, else the device policy) as a
// unit; the gateway policy under the evaluator; then end to end through iot-sim's JITR rule
// and the shipped Lambda: a gateway certificate may act for its sensors and nobody else, a
// sensor certificate still only for itself, and a gateway enrolled before shared mode gets
// the gateway policy with the aws CLI commands of the README.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parsePolicy, evaluate } from '../iot-sim/lib/policy.js';
import { roleOf, policyFor, renderPolicy, commonNameOf } from '../jitr-lambda/index.mjs';
import {
  startSim, tmpDir, makeCa, makeLeaf, registerCa, connect, closed, certIdOf, createJitrRule, waitFor,
  violations, aws, sleep, CLOUD_DIR
} from './helpers.js';

const A = 'arn:aws:iot:us-east-1:123456789012';
const GATEWAY = parsePolicy(renderPolicy('aws', 'us-east-1', '123456789012', 'gateway'));
const DEVICE = parsePolicy(renderPolicy('aws', 'us-east-1', '123456789012', 'device'));
const asThing = (thing) => ({ 'iot:Connection.Thing.ThingName': thing, 'iot:ClientId': thing });

let dir;
let ca;
let sim;
let caId;
before(async () => {
  dir = tmpDir('shared-');
  ca = await makeCa(dir, 'ca');
});
after(async () => {
  if (sim) await sim.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('Lambda policy choice: OU=gateway gets the gateway policy, any other subject the device policy', async () => {
  const leaf = async (name, subject) => (await makeLeaf(dir, ca, name, `unit-${name}`, { subject })).pem;
  const cases = [
    ['gw', '/OU=gateway/CN=gw', 'gateway'],
    ['gw-o', '/C=DE/O=Example/OU=gateway/CN=gw-o', 'gateway'],
    ['gw-2ou', '/OU=site-7/OU=gateway/CN=gw-2ou', 'gateway'],
    ['sensor', '/CN=sensor', 'device'],
    ['gw-upper', '/OU=Gateway/CN=gw-upper', 'device'],
    ['gw-plural', '/OU=gateways/CN=gw-plural', 'device'],
    ['gw-in-o', '/O=gateway/CN=gw-in-o', 'device'],
    ['gw-in-cn', '/CN=OU=gateway', 'device']
  ];
  for (const [name, subject, role] of cases) {
    assert.equal(roleOf(await leaf(name, subject)), role, subject);
  }
  assert.equal(commonNameOf(await leaf('gw-cn', '/OU=gateway/CN=gw-cn')), 'gw-cn', 'the OU does not change the thing name');

  assert.deepEqual(policyFor('gateway', {}), { role: 'gateway', policyName: 'gateway-agent-gateway' });
  assert.deepEqual(policyFor('device', {}), { role: 'device', policyName: 'gateway-agent-device' });
  const env = { POLICY_NAME: 'p-dev', GATEWAY_POLICY_NAME: 'p-gw' };
  assert.deepEqual([policyFor('gateway', env).policyName, policyFor('device', env).policyName], ['p-gw', 'p-dev']);
  assert.throws(() => policyFor('device', { POLICY_NAME: 'same', GATEWAY_POLICY_NAME: 'same' }), /must differ/);
  assert.throws(() => policyFor('gateway', { GATEWAY_POLICY_NAME: 'gateway-agent-device' }), /must differ/);
  assert.throws(() => renderPolicy('aws', 'us-east-1', '123456789012', 'admin'), /unknown/);
  assert.throws(() => renderPolicy('', 'us-east-1', '123456789012', 'device'), /partition/);
});

test('gateway policy under the evaluator: its own and its sensors\' topics, nothing else', () => {
  const v = asThing('gw1');
  const may = (action, resource) => evaluate([GATEWAY], action, `${A}:${resource}`, v);
  assert.equal(may('iot:Connect', 'client/gw1'), true);
  assert.equal(may('iot:Connect', 'client/gw1:s1'), false, 'connects only as itself');
  for (const t of ['dt/gw1/x', 'dt/gw1:s1/x', 'dt/gw1:s1/a/b', 'dt/gw1:7/x']) assert.equal(may('iot:Publish', `topic/${t}`), true, t);
  // `gw1-2`, `gw1-2:s1`, `gw1-s1`: another gateway whose name gw1 only prefixes, its sensor,
  // and an old-style name; the separator `:` keeps all of them out of gw1's reach
  for (const t of ['dt/other-thing/x', 'dt/gw10/x', 'dt/gw1s1/x', 'dt/xgw1:s1/x', 'dt/gw1', 'dt/gw1:s1', 'cmd/gw1:s1/x', 'dt/GW1:s1/x',
    'dt/gw1-2/x', 'dt/gw1-2:s1/x', 'dt/gw1-s1/x']) {
    assert.equal(may('iot:Publish', `topic/${t}`), false, t);
  }
  for (const f of ['cmd/gw1/#', 'cmd/gw1:s1/#', 'cmd/gw1:s1/+/set', 'cmd/gw1:s1/reboot']) assert.equal(may('iot:Subscribe', `topicfilter/${f}`), true, f);
  for (const f of ['cmd/#', 'cmd/+/#', 'cmd/gw2:s1/#', 'cmd/gw10/#', 'dt/gw1:s1/#', 'cmd/gw1-2/#', 'cmd/gw1-2:s1/#']) assert.equal(may('iot:Subscribe', `topicfilter/${f}`), false, f);
  assert.equal(may('iot:Receive', 'topic/cmd/gw1:s1/reboot'), true);
  assert.equal(may('iot:Receive', 'topic/cmd/gw1/reboot'), true);
  assert.equal(may('iot:Receive', 'topic/cmd/gw2:s1/reboot'), false);
  assert.equal(may('iot:Receive', 'topic/dt/gw1:s1/x'), false);
  // without a thing attached the policy allows nothing
  assert.equal(evaluate([GATEWAY], 'iot:Publish', `${A}:topic/dt/gw1:s1/x`, { 'iot:ClientId': 'gw1' }), false);
  // the device policy is unchanged: a sensor only for itself
  assert.equal(evaluate([DEVICE], 'iot:Publish', `${A}:topic/dt/gw1:s1/x`, asThing('gw1:s1')), true);
  assert.equal(evaluate([DEVICE], 'iot:Publish', `${A}:topic/dt/gw1:s2/x`, asThing('gw1:s1')), false);
  assert.equal(evaluate([DEVICE], 'iot:Publish', `${A}:topic/dt/gw1:s1/x`, asThing('gw1')), false);
});

test('evaluator: wildcards next to variables, and ${*} ${?} ${$} as literal characters', () => {
  const p = parsePolicy(JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Action: 'iot:Publish', Resource: `${A}:topic/a/*-\${iot:Connection.Thing.ThingName}?/*` },
      { Effect: 'Allow', Action: 'iot:Publish', Resource: `${A}:topic/lit/\${*}\${?}\${$}` }
    ]
  }));
  const may = (t) => evaluate([p], 'iot:Publish', `${A}:topic/${t}`, asThing('gw1'));
  assert.equal(may('a/x-gw12/y'), true);
  assert.equal(may('a/x/y-gw12/z'), true, '* matches across /');
  assert.equal(may('a/x-gw1/y'), false, '? needs one character');
  assert.equal(may('lit/*?$'), true);
  assert.equal(may('lit/ab$'), false);
});

// ---- end to end: JITR through the sim's rule and the shipped Lambda ----

const pub = (client, topic, payload = 'x') => new Promise((resolve) => client.publish(topic, payload, { qos: 1 }, (e) => resolve(e ? e.message : 'acked')));
const sub = (client, filter) => new Promise((resolve) => client.subscribe(filter, { qos: 1 }, (e, g) => resolve(e ? e.message : g[0].qos)));
const attachedPolicies = async (certificateId) =>
  (await sim.api('POST', `/attached-policies/${encodeURIComponent(`${A}:cert/${certificateId}`)}`)).body.policies.map((p) => p.policyName);

/** A certificate enrolled by JITR: the first CONNECT registers it, the Lambda activates it. */
async function enrolled (thing, subject) {
  const leaf = await makeLeaf(dir, ca, thing, thing, { subject });
  const id = certIdOf(leaf.pem);
  const first = await connect(sim, leaf, thing);
  assert.equal(first.ok, false, 'the first CONNECT only registers the certificate');
  await waitFor(async () => (await sim.api('GET', `/certificates/${id}`)).body.certificateDescription?.status === 'ACTIVE',
    { timeoutMs: 10000, what: `${thing} activated by the Lambda` });
  return { ...leaf, id };
}

test('end to end setup: sim with the JITR rule and the shipped Lambda', async () => {
  sim = await startSim(['--max-connects-per-second', '0']);
  caId = await registerCa(sim, dir, ca);
  await createJitrRule(sim);
  assert.match(caId, /^[0-9a-f]{64}$/);
});

test('a gateway enrolled before shared mode (no OU) gets the gateway policy by the README\'s aws CLI commands', async () => {
  const gw = await enrolled('sm-old', undefined);
  assert.deepEqual(await attachedPolicies(gw.id), ['gateway-agent-device']);
  let { client } = await connect(sim, gw, 'sm-old');
  let gone = closed(client);
  client.publish('dt/sm-old:s1/x', 'x', { qos: 1 });
  assert.equal(await gone, true, 'the device policy does not cover its shared-mode sensors');

  // README: render the policy, create it (if it does not exist yet), attach it to the gateway's certificate
  const rendered = path.join(dir, 'gateway-policy.rendered.json');
  const { stdout } = await promisify(execFile)('sed', ['-e', 's|{{partition}}|aws|g', '-e', 's|{{region}}|us-east-1|g', '-e', 's|{{accountId}}|123456789012|g',
    path.join(CLOUD_DIR, 'jitr-lambda', 'gateway-policy.json')]);
  fs.writeFileSync(rendered, stdout);
  const created = await aws(sim, ['create-policy', '--policy-name', 'gateway-agent-gateway', '--policy-document', `file://${rendered}`]);
  assert.equal(created.code, 0, created.stderr);
  const principals = await aws(sim, ['list-thing-principals', '--thing-name', 'sm-old', '--query', 'principals[0]']);
  assert.equal(principals.code, 0, principals.stderr);
  const certArn = principals.json;
  assert.equal(certArn, `${A}:cert/${gw.id}`);
  const attached = await aws(sim, ['attach-policy', '--policy-name', 'gateway-agent-gateway', '--target', certArn]);
  assert.equal(attached.code, 0, attached.stderr);
  assert.deepEqual((await attachedPolicies(gw.id)).sort(), ['gateway-agent-device', 'gateway-agent-gateway']);

  ({ client } = await connect(sim, gw, 'sm-old'));
  assert.equal(await pub(client, 'dt/sm-old:s1/x'), 'acked');
  assert.equal(await pub(client, 'dt/sm-old/x'), 'acked');
  gone = closed(client);
  client.publish('dt/other-thing/x', 'x', { qos: 1 });
  assert.equal(await gone, true);
});

test('a gateway certificate (OU=gateway) acts for its shared-mode sensors', async () => {
  const gw = await enrolled('sm-gw1', '/OU=gateway/CN=sm-gw1');
  assert.deepEqual(await attachedPolicies(gw.id), ['gateway-agent-gateway']);
  const doc = (await sim.api('GET', '/policies/gateway-agent-gateway')).body.policyDocument;
  assert.deepEqual(JSON.parse(doc), JSON.parse(renderPolicy('aws', 'us-east-1', '123456789012', 'gateway')));
  const inv = (await sim.api('GET', '/_sim/lambda')).body.invocations.filter((i) => i.event?.certificateId === gw.id && i.ok);
  assert.ok(inv.length >= 1);
  assert.deepEqual([inv[0].result.role, inv[0].result.policyName, inv[0].result.thingName], ['gateway', 'gateway-agent-gateway', 'sm-gw1']);

  // connects only as its own thing name, not as one of its sensors
  assert.equal((await connect(sim, gw, 'sm-gw1:s1')).ok, false);
  await sim.api('DELETE', '/_sim/violations/sm-gw1:s1');

  const { client } = await connect(sim, gw, 'sm-gw1');
  const got = [];
  client.on('message', (topic, payload) => got.push([topic, payload.toString()]));
  await sim.api('DELETE', '/_sim/publishes');
  assert.equal(await pub(client, 'dt/sm-gw1:s1/x', '1'), 'acked');
  assert.equal(await pub(client, 'dt/sm-gw1:s1/temp/inside', '2'), 'acked');
  assert.equal(await pub(client, 'dt/sm-gw1/x', '3'), 'acked');
  const log = (await sim.api('GET', '/_sim/publishes?clientId=sm-gw1')).body.publishes;
  assert.deepEqual(log.map((p) => [p.topic, p.thingName]), [['dt/sm-gw1:s1/x', 'sm-gw1'], ['dt/sm-gw1:s1/temp/inside', 'sm-gw1'], ['dt/sm-gw1/x', 'sm-gw1']]);

  assert.equal(await sub(client, 'cmd/sm-gw1:s1/#'), 1);
  assert.equal(await sub(client, 'cmd/sm-gw1/#'), 1);
  for (const [topic, payload] of [['cmd/sm-gw1:s1/reboot', '{"now":true}'], ['cmd/sm-gw1/ping', 'p'], ['cmd/sm-gw1:s2/reboot', 'not subscribed']]) {
    assert.equal((await sim.api('POST', '/_sim/publish', { topic, payload, qos: 1 })).status, 200);
  }
  await waitFor(() => got.length >= 2, { what: 'commands delivered' });
  await sleep(100);
  assert.deepEqual(got, [['cmd/sm-gw1:s1/reboot', '{"now":true}'], ['cmd/sm-gw1/ping', 'p']]);
  assert.equal((await violations(sim, 'sm-gw1')).total, 0);

  // another thing's topic: refused as AWS does, by disconnecting; the message goes nowhere
  const gone = closed(client);
  client.publish('dt/other-thing/x', 'x', { qos: 1 });
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'sm-gw1')).counters, { publishNotAuthorized: 1 });
  assert.equal((await sim.api('GET', '/_sim/publishes?topic=dt/other-thing/x')).body.publishes.length, 0);
});

test('a gateway certificate may not subscribe to another gateway\'s sensors, nor to a name it only prefixes', async () => {
  const gw = await enrolled('sm-gw2', '/OU=gateway/CN=sm-gw2');
  for (const filter of ['cmd/sm-gw1:s1/#', 'cmd/sm-gw20/#', 'cmd/+/reboot']) {
    const { client } = await connect(sim, gw, 'sm-gw2');
    const gone = closed(client);
    client.subscribe(filter, { qos: 1 });
    assert.equal(await gone, true, filter);
  }
  assert.deepEqual((await violations(sim, 'sm-gw2')).counters, { subscribeNotAuthorized: 3 });
});

test('a sensor certificate (no OU) still gets the device policy and acts only for itself', async () => {
  const s1 = await enrolled('sm-gw1:s1', undefined);
  assert.deepEqual(await attachedPolicies(s1.id), ['gateway-agent-device']);
  const { client } = await connect(sim, s1, 'sm-gw1:s1');
  assert.equal(await pub(client, 'dt/sm-gw1:s1/x'), 'acked');
  assert.equal(await sub(client, 'cmd/sm-gw1:s1/#'), 1);
  assert.equal((await violations(sim, 'sm-gw1:s1')).total, 0);
  const gone = closed(client);
  client.publish('dt/sm-gw1:s2/x', 'x', { qos: 1 });
  assert.equal(await gone, true);
  assert.deepEqual((await violations(sim, 'sm-gw1:s1')).counters, { publishNotAuthorized: 1 });
  assert.equal((await sim.api('GET', '/_sim/publishes?topic=dt/sm-gw1:s2/x')).body.publishes.length, 0);

  // nor for its gateway
  const again = await connect(sim, s1, 'sm-gw1:s1');
  const gone2 = closed(again.client);
  again.client.publish('dt/sm-gw1/x', 'x', { qos: 1 });
  assert.equal(await gone2, true);
});
