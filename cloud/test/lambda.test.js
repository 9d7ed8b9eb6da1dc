// The shipped JITR Lambda against the sim: invoked directly in this process (its SDK
// client reaches the sim through AWS_ENDPOINT_URL_IOT, via a recording proxy so the call
// order is visible), then through the sim's own rule for a burst of devices, and the
// deploy script's rendered documents.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { renderPolicy } from '../jitr-lambda/index.mjs';
import { startSim, tmpDir, makeCa, makeLeaf, registerCa, connect, certIdOf, createJitrRule, waitFor, CLOUD_DIR } from './helpers.js';

let sim;
let dir;
let ca;
let caId;
let proxy;
const calls = [];
let handler;

before(async () => {
  dir = tmpDir('lambda-');
  sim = await startSim(['--max-connects-per-second', '0']);
  ca = await makeCa(dir, 'ca');
  caId = await registerCa(sim, dir, ca);
  // recording proxy in front of the sim's API
  proxy = http.createServer((req, res) => {
    calls.push(`${req.method} ${decodeURIComponent(req.url)}`);
    const up = http.request({ host: '127.0.0.1', port: sim.info.apiPort, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    req.pipe(up);
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  process.env.AWS_ENDPOINT_URL_IOT = `http://127.0.0.1:${proxy.address().port}`;
  process.env.AWS_REGION = 'us-east-1';
  process.env.AWS_ACCESS_KEY_ID = 'test';
  process.env.AWS_SECRET_ACCESS_KEY = 'test';
  delete process.env.POLICY_NAME;
  ({ handler } = await import('../jitr-lambda/index.mjs'));
});
after(async () => {
  proxy.close();
  proxy.closeAllConnections();
  await sim.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const ctx = { invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:jitr', awsRequestId: 'r' };

/** JITR-register a device (no rule in the sim yet) and return the event AWS would send. */
async function pendingDevice (cn, { subject } = {}) {
  const dev = await makeLeaf(dir, ca, cn, cn.replace(/[^\w-]/g, '_'), { subject });
  assert.equal((await connect(sim, dev, 'x-' + cn.replace(/[^\w-]/g, '_'))).ok, false);
  const id = certIdOf(dev.pem);
  const pubs = (await sim.api('GET', `/_sim/publishes?topic=${encodeURIComponent(`$aws/events/certificates/registered/${caId}`)}`)).body.publishes;
  const ev = pubs.map((p) => JSON.parse(Buffer.from(p.payload, 'base64'))).find((e) => e.certificateId === id);
  assert.ok(ev);
  return { dev, id, event: ev, arn: `arn:aws:iot:us-east-1:123456789012:cert/${id}` };
}
const status = async (id) => (await sim.api('GET', `/certificates/${id}`)).body.certificateDescription.status;

test('provisions thing, policy and attachments, and activates the certificate last', async () => {
  const { id, event, arn, dev } = await pendingDevice('lambda-gw-1');
  calls.length = 0;
  const out = await handler(event, ctx);
  assert.deepEqual(out, { certificateId: id, thingName: 'lambda-gw-1', role: 'device', policyName: 'gateway-agent-device', activated: true });
  assert.deepEqual(calls.map((c) => c.split('?')[0].replace(id, 'ID')), [
    'GET /certificates/ID',
    'GET /things/lambda-gw-1',
    'POST /things/lambda-gw-1',
    'POST /policies/gateway-agent-device',
    'PUT /target-policies/gateway-agent-device',
    'PUT /things/lambda-gw-1/principals',
    'PUT /certificates/ID'
  ]);
  assert.match(calls.at(-1), /newStatus=ACTIVE/);
  assert.equal(await status(id), 'ACTIVE');
  assert.deepEqual((await sim.api('GET', '/things/lambda-gw-1/principals')).body.principals, [arn]);
  assert.deepEqual((await sim.api('GET', '/things/lambda-gw-1')).body.attributes, { caCertificateId: caId }, 'the thing belongs to the CA');
  const pol = JSON.parse((await sim.api('GET', '/policies/gateway-agent-device')).body.policyDocument);
  assert.equal(pol.Statement[0].Resource, 'arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}');
  const r = await connect(sim, dev, 'lambda-gw-1');
  assert.equal(r.ok, true);
  r.client.end(true);

  // the same event again converges: nothing changes, nothing fails
  const again = await handler(event, ctx);
  assert.equal(again.activated, false);
  assert.equal(await status(id), 'ACTIVE');
  assert.deepEqual((await sim.api('POST', `/attached-policies/${encodeURIComponent(arn)}`)).body.policies.map((p) => p.policyName), ['gateway-agent-device']);
  assert.deepEqual((await sim.api('GET', '/things/lambda-gw-1/principals')).body.principals, [arn]);
});

test('a gateway certificate (subject OU=gateway) gets the gateway policy, with the same steps and idempotence', async () => {
  const { id, event, arn } = await pendingDevice('lambda-gw-4', { subject: '/O=Example/OU=gateway/CN=lambda-gw-4' });
  calls.length = 0;
  const out = await handler(event, ctx);
  assert.deepEqual(out, { certificateId: id, thingName: 'lambda-gw-4', role: 'gateway', policyName: 'gateway-agent-gateway', activated: true });
  assert.deepEqual(calls.map((c) => c.split('?')[0].replace(id, 'ID')), [
    'GET /certificates/ID',
    'GET /things/lambda-gw-4',
    'POST /things/lambda-gw-4',
    'POST /policies/gateway-agent-gateway',
    'PUT /target-policies/gateway-agent-gateway',
    'PUT /things/lambda-gw-4/principals',
    'PUT /certificates/ID'
  ]);
  const pol = (await sim.api('GET', '/policies/gateway-agent-gateway')).body.policyDocument;
  assert.equal(pol, renderPolicy('aws', 'us-east-1', '123456789012', 'gateway'));
  const again = await handler(event, ctx);
  assert.deepEqual([again.role, again.policyName, again.activated], ['gateway', 'gateway-agent-gateway', false]);
  assert.deepEqual((await sim.api('POST', `/attached-policies/${encodeURIComponent(arn)}`)).body.policies.map((p) => p.policyName), ['gateway-agent-gateway']);
  assert.equal(await status(id), 'ACTIVE');

  // GATEWAY_POLICY_NAME names it; equal to POLICY_NAME is a configuration error that changes nothing
  process.env.GATEWAY_POLICY_NAME = 'my-gateways';
  try {
    const gw = await pendingDevice('lambda-gw-5', { subject: '/OU=gateway/CN=lambda-gw-5' });
    assert.equal((await handler(gw.event, ctx)).policyName, 'my-gateways');
    const other = await pendingDevice('lambda-gw-6', { subject: '/OU=gateway/CN=lambda-gw-6' });
    process.env.POLICY_NAME = 'my-gateways';
    calls.length = 0;
    await assert.rejects(handler(other.event, ctx), /must differ/);
    assert.deepEqual(calls, []);
    assert.equal(await status(other.id), 'PENDING_ACTIVATION');
  } finally { delete process.env.GATEWAY_POLICY_NAME; delete process.env.POLICY_NAME; }
});

test('an invalid CN is not activated', async () => {
  const { id, event } = await pendingDevice('bad name!');
  await assert.rejects(handler(event, ctx), /not a valid thing name/);
  assert.equal(await status(id), 'PENDING_ACTIVATION');
  assert.equal((await sim.api('GET', `/attached-policies/${id}`)).status, 404);
});

test('events that are not PENDING_ACTIVATION, and certificates an operator disabled, are left alone', async () => {
  const { id, event } = await pendingDevice('lambda-gw-2');
  assert.equal((await handler({ ...event, certificateStatus: 'ACTIVE' }, ctx)).skipped, 'not PENDING_ACTIVATION');
  await sim.api('PUT', `/certificates/${id}?newStatus=REVOKED`);
  assert.equal((await handler(event, ctx)).skipped, 'status REVOKED');
  assert.equal(await status(id), 'REVOKED');
  await assert.rejects(handler({ certificateId: 'nope' }, ctx), /certificateId/);
});

test('an existing device policy is reused, not replaced', async () => {
  process.env.POLICY_NAME = 'preexisting';
  try {
    const doc = JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }] });
    assert.equal((await sim.api('POST', '/policies/preexisting', { policyDocument: doc })).status, 200);
    const { id, event, arn } = await pendingDevice('lambda-gw-3');
    assert.equal((await handler(event, ctx)).policyName, 'preexisting');
    assert.equal(await status(id), 'ACTIVE');
    assert.equal((await sim.api('GET', '/policies/preexisting')).body.policyDocument, doc);
    assert.deepEqual((await sim.api('POST', `/attached-policies/${encodeURIComponent(arn)}`)).body.policies.map((p) => p.policyName), ['preexisting']);
  } finally { delete process.env.POLICY_NAME; }
});

test('through the sim\'s rule: a burst of 20 devices is provisioned concurrently', async () => {
  await createJitrRule(sim);
  const devs = await Promise.all(Array.from({ length: 20 }, (_, i) => makeLeaf(dir, ca, `burst-${i}`)));
  const first = await Promise.all(devs.map((d, i) => connect(sim, d, `burst-${i}`)));
  assert.ok(first.every((r) => !r.ok));
  await waitFor(async () => {
    const certs = (await sim.api('GET', `/certificates-by-ca/${caId}?pageSize=250`)).body.certificates;
    const ids = new Set(devs.map((d) => certIdOf(d.pem)));
    return certs.filter((c) => ids.has(c.certificateId) && c.status === 'ACTIVE').length === 20;
  }, { timeoutMs: 15000, what: 'all burst devices active' });
  const inv = (await sim.api('GET', '/_sim/lambda')).body.invocations.filter((i) => i.event && i.event.certificateId);
  assert.ok(inv.length >= 20);
  assert.ok(inv.every((i) => i.ok), JSON.stringify(inv.find((i) => !i.ok)));
  const second = await Promise.all(devs.map((d, i) => connect(sim, d, `burst-${i}`)));
  assert.ok(second.every((r) => r.ok));
  for (const r of second) r.client.end(true);
});

test('deploy.sh --dry-run renders valid documents for the given account and region', async () => {
  const { stdout } = await promisify(execFile)(path.join(CLOUD_DIR, 'jitr-lambda', 'deploy.sh'),
    ['--dry-run', '--region', 'eu-west-1', '--policy-name', 'my-devices', '--gateway-policy-name', 'my-gateways'], { env: { ...process.env, ACCOUNT_ID: '210987654321' } });
  const work = /rendered documents in (\S+)/.exec(stdout)[1];
  try {
    const role = JSON.parse(fs.readFileSync(path.join(work, 'role-policy.json'), 'utf8'));
    const rule = JSON.parse(fs.readFileSync(path.join(work, 'topic-rule.json'), 'utf8'));
    assert.ok(JSON.stringify(role).includes('arn:aws:iot:eu-west-1:210987654321:policy/my-devices'));
    assert.ok(JSON.stringify(role).includes('arn:aws:iot:eu-west-1:210987654321:policy/my-gateways'));
    const policyStatement = role.Statement.find((st) => [st.Action].flat().includes('iot:CreatePolicy'));
    assert.deepEqual([policyStatement.Action].flat(), ['iot:CreatePolicy']);
    assert.deepEqual(policyStatement.Resource, ['arn:aws:iot:eu-west-1:210987654321:policy/my-devices', 'arn:aws:iot:eu-west-1:210987654321:policy/my-gateways']);
    // AttachPolicy and AttachThingPrincipal are authorized on the certificate
    const certStatement = role.Statement.find((st) => [st.Action].flat().includes('iot:AttachThingPrincipal'));
    assert.ok([certStatement.Action].flat().includes('iot:AttachPolicy'));
    assert.equal(certStatement.Resource, 'arn:aws:iot:eu-west-1:210987654321:cert/*');
    assert.ok(!JSON.stringify(role).includes('{{'));
    assert.equal(rule.actions[0].lambda.functionArn, 'arn:aws:lambda:eu-west-1:210987654321:function:gateway-agent-jitr');
    assert.equal(rule.sql, "SELECT * FROM '$aws/events/certificates/registered/#' WHERE certificateStatus = \"PENDING_ACTIVATION\"");
    assert.match(stdout, /lambda create-function .*--runtime nodejs20\.x/);
    assert.match(stdout, /lambda create-function .*POLICY_NAME=my-devices.*GATEWAY_POLICY_NAME=my-gateways/);
    assert.match(stdout, /lambda remove-permission --function-name gateway-agent-jitr --statement-id iot-jitr-rule\n(.*\n)?\+ aws lambda add-permission .*--principal iot\.amazonaws\.com .*--source-arn arn:aws:iot:eu-west-1:210987654321:rule\/gateway_agent_jitr/);
    assert.match(stdout, /iot create-topic-rule --rule-name gateway_agent_jitr/);
    // the retire rule: same function, its own invoke permission
    const retire = JSON.parse(fs.readFileSync(path.join(work, 'retire-rule.json'), 'utf8'));
    assert.equal(retire.actions[0].lambda.functionArn, 'arn:aws:lambda:eu-west-1:210987654321:function:gateway-agent-jitr');
    assert.equal(retire.sql, "SELECT *, principal() AS newCertificateId, clientid() AS clientId, topic(2) AS thingName, 'retire' AS request FROM 'lifecycle/+/retire'");
    assert.match(stdout, /lambda remove-permission --function-name gateway-agent-jitr --statement-id iot-retire-rule\n(.*\n)?\+ aws lambda add-permission .*--statement-id iot-retire-rule .*--source-arn arn:aws:iot:eu-west-1:210987654321:rule\/gateway_agent_retire/);
    assert.match(stdout, /iot create-topic-rule --rule-name gateway_agent_retire --topic-rule-payload file:\/\/\S+\/retire-rule\.json/);
    // the hand-over rule likewise
    const handover = JSON.parse(fs.readFileSync(path.join(work, 'handover-rule.json'), 'utf8'));
    assert.equal(handover.actions[0].lambda.functionArn, 'arn:aws:lambda:eu-west-1:210987654321:function:gateway-agent-jitr');
    assert.equal(handover.sql, "SELECT *, principal() AS certificateId, clientid() AS clientId, topic(2) AS thingName, 'handover' AS request FROM 'lifecycle/+/handover'");
    assert.match(stdout, /lambda remove-permission --function-name gateway-agent-jitr --statement-id iot-handover-rule\n(.*\n)?\+ aws lambda add-permission .*--statement-id iot-handover-rule .*--source-arn arn:aws:iot:eu-west-1:210987654321:rule\/gateway_agent_handover/);
    assert.match(stdout, /iot create-topic-rule --rule-name gateway_agent_handover --topic-rule-payload file:\/\/\S+\/handover-rule\.json/);
    // the role reads CA certificates, nothing more on them
    const caStatement = role.Statement.find((st) => [st.Action].flat().includes('iot:DescribeCACertificate'));
    assert.deepEqual([caStatement.Action].flat(), ['iot:DescribeCACertificate']);
    assert.equal(caStatement.Resource, 'arn:aws:iot:eu-west-1:210987654321:cacert/*');
    assert.match(stdout, /iot describe-endpoint --endpoint-type iot:Data-ATS/);
    assert.match(stdout, /lambda create-function .*IOT_DATA_ENDPOINT=https:/);
    const { stdout: listing } = await promisify(execFile)('python3', ['-m', 'zipfile', '-l', path.join(work, 'function.zip')]);
    assert.deepEqual(listing.split('\n').slice(1).filter(Boolean).map((l) => l.split(/\s+/)[0]).sort(),
      ['device-policy.json', 'gateway-policy.json', 'index.mjs'], 'the zip holds every file the Lambda reads');
  } finally { fs.rmSync(work, { recursive: true, force: true }); }
});
