// IAM in iot-sim (--lambda-role-policy): the per-operation table against the role policy
// deploy.sh renders (a dry run: nothing runs), the evaluation rules, the AccessDenied answer
// as the aws CLI sees it, and end to end: with the role policy of before (AttachThingPrincipal
// allowed on things only) a JITR run ends PENDING_ACTIVATION with the denial recorded; an
// explicit Deny wins over an Allow; the shipped role works in the aws-cn partition.
// (fixtures/lambda-role-policy.attach-on-thing.template.json is the shipped role with the
// one mistake of before: iot:AttachThingPrincipal allowed on thing/* instead of cert/*.)

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Iam, OPERATIONS, checkRolePolicy, decide, parseRolePolicy, partitionOf, LAMBDA_ACCESS_KEY_ID } from '../iot-sim/lib/iam.js';
import {
  startSim, tmpDir, makeCa, makeLeaf, registerCa, connect, certIdOf, createJitrRule, waitFor, violations,
  renderRolePolicy, aws, LAMBDA, CLOUD_DIR, AWS
} from './helpers.js';

const OLD_ROLE = path.join(CLOUD_DIR, 'test', 'fixtures', 'lambda-role-policy.attach-on-thing.template.json');
const dir = tmpDir('iam-');
const sims = [];
after(async () => {
  for (const s of sims) await s.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A registry stand-in for Iam: ARNs of a partition, region and account. */
const arnsOf = (region, accountId = '123456789012') => ({
  region, accountId, partition: partitionOf(region),
  arn (kind, name) { return `arn:${this.partition}:iot:${region}:${accountId}:${kind}/${name}`; }
});

// Every control-plane call the shipped Lambda makes, as a request of each operation.
const CERT = 'a'.repeat(64);
const LAMBDA_CALLS = (partition, region) => {
  const certArn = `arn:${partition}:iot:${region}:123456789012:cert/${CERT}`;
  return [
    ['DescribeCertificate', { params: { id: CERT } }],
    ['DescribeThing', { params: { name: 'gw1' } }],
    ['CreateThing', { params: { name: 'gw1:s1' } }],
    ['ListThingPrincipals', { params: { name: 'gw1' } }],
    ['UpdateThing', { params: { name: 'gw1' } }],
    ['CreatePolicy', { params: { name: 'gateway-agent-device' } }],
    ['CreatePolicy', { params: { name: 'gateway-agent-gateway' } }],
    ['AttachPolicy', { params: { name: 'gateway-agent-device' }, body: { target: certArn } }],
    ['AttachThingPrincipal', { params: { name: 'gw1' }, headers: { 'x-amzn-principal': certArn } }],
    ['UpdateCertificate', { params: { id: CERT } }],
    // retirement: the old certificate detached, the reply published
    ['DetachThingPrincipal', { params: { name: 'gw1:s1' }, headers: { 'x-amzn-principal': certArn } }],
    ['Publish', { params: { topic: 'lifecycle/gw1/retire/accepted' } }],
    ['Publish', { params: { topic: 'lifecycle/gw1:s1/retire/rejected' } }],
    // hand-over: the new CA described, the thing updated (above), the reply published
    ['DescribeCACertificate', { params: { id: 'b'.repeat(64) } }],
    ['Publish', { params: { topic: 'lifecycle/gw1/handover/accepted' } }],
    ['Publish', { params: { topic: 'lifecycle/gw1:s1/handover/rejected' } }]
  ].map(([op, r]) => [op, { params: {}, body: {}, headers: {}, ...r }]);
};

test('dry run: every IoT action of the rendered role names the resource type AWS authorizes it on', () => {
  const file = renderRolePolicy({ region: 'eu-west-1', account: '123456789012' });
  const { doc } = parseRolePolicy(fs.readFileSync(file, 'utf8'));
  assert.deepEqual(checkRolePolicy(doc), []);
  // and allows each call the Lambda makes, on the resource that call is authorized on
  const iam = Object.assign(Object.create(Iam.prototype), { registry: arnsOf('eu-west-1'), policy: parseRolePolicy(fs.readFileSync(file, 'utf8')) });
  for (const [op, req] of LAMBDA_CALLS('aws', 'eu-west-1')) {
    assert.doesNotThrow(() => iam.authorize(op, req), op);
  }
  // a policy other than the two named ones may not be created
  assert.throws(() => iam.authorize('CreatePolicy', { params: { name: 'admin' }, body: {}, headers: {} }), /AccessDenied|not authorized/);
  // it publishes retire and hand-over replies only: not requests, not to devices' other topics
  for (const topic of ['lifecycle/gw1/retire', 'cmd/gw1/reboot', 'dt/gw1/x', 'lifecycle/gw1/retire/other', 'lifecycle/gw1/handover',
    'lifecycle/gw1/handover/other']) {
    assert.throws(() => iam.authorize('Publish', { params: { topic }, body: {}, headers: {} }), /not authorized to perform: iot:Publish/, topic);
  }
  // the Lambda may not delete anything
  assert.throws(() => iam.authorize('DeleteThing', { params: { name: 'gw1' }, body: {}, headers: {} }), /not authorized/);
  assert.throws(() => iam.authorize('DeleteCertificate', { params: { id: CERT }, body: {}, headers: {} }), /not authorized/);
  // nor change a CA: DescribeCACertificate is all it may do with one
  assert.throws(() => iam.authorize('UpdateCACertificate', { params: { id: 'b'.repeat(64) }, body: {}, headers: {} }), /not authorized to perform: iot:UpdateCACertificate/);
});

test('dry run: the role policy of before (AttachThingPrincipal on thing/*) fails the check', () => {
  const { doc } = parseRolePolicy(fs.readFileSync(renderRolePolicy({ template: OLD_ROLE }), 'utf8'));
  const problems = checkRolePolicy(doc);
  assert.ok(problems.some((p) => /iot:AttachThingPrincipal is authorized on resource type cert/.test(p)), problems.join('\n'));
  const iam = Object.assign(Object.create(Iam.prototype), { registry: arnsOf('us-east-1'), policy: parseRolePolicy(JSON.stringify(doc)) });
  const [, attach] = LAMBDA_CALLS('aws', 'us-east-1').find(([op]) => op === 'AttachThingPrincipal');
  assert.throws(() => iam.authorize('AttachThingPrincipal', attach),
    /^Error: User: arn:aws:sts::123456789012:assumed-role\/.+ is not authorized to perform: iot:AttachThingPrincipal on resource: arn:aws:iot:us-east-1:123456789012:cert\/a{64} because no identity-based policy allows the iot:AttachThingPrincipal action$/);
});

test('the table: resource types from the Service Authorization Reference for the calls that matter', () => {
  const types = Object.fromEntries(Object.entries(OPERATIONS).map(([op, e]) => [op, e.type]));
  assert.equal(types.AttachThingPrincipal, 'cert');
  assert.equal(types.DetachThingPrincipal, 'cert');
  assert.equal(types.Publish, 'topic');
  assert.equal(types.AttachPolicy, 'cert');
  assert.equal(types.CreateThing, 'thing');
  assert.equal(types.DescribeThing, 'thing');
  assert.equal(types.UpdateThing, 'thing');
  assert.equal(types.ListThingPrincipals, 'thing');
  assert.equal(types.DescribeCertificate, 'cert');
  assert.equal(types.UpdateCertificate, 'cert');
  assert.equal(types.DescribeCACertificate, 'cacert');
  assert.equal(types.CreatePolicy, 'policy');
  assert.equal(types.ListThings, null);
  // a statement naming a resource of the wrong type for its action is reported
  const wrong = { Statement: [{ Effect: 'Allow', Action: ['iot:UpdateCertificate'], Resource: 'arn:aws:iot:us-east-1:1:thing/*' }] };
  assert.equal(checkRolePolicy(wrong).length, 2);
  assert.deepEqual(checkRolePolicy({ Statement: [{ Effect: 'Allow', Action: 'iot:ListThings', Resource: '*' }] }), []);
  assert.equal(checkRolePolicy({ Statement: [{ Effect: 'Allow', Action: 'iot:ListThings', Resource: 'arn:aws:iot:us-east-1:1:thing/*' }] }).length, 2);
});

test('evaluation: wildcards, case-insensitive actions, explicit Deny wins, unsupported elements refused', () => {
  const c = (statements) => parseRolePolicy(JSON.stringify({ Version: '2012-10-17', Statement: statements })).compiled;
  const A = 'arn:aws:iot:us-east-1:123456789012';
  const p = c([
    { Effect: 'Allow', Action: 'iot:Describe*', Resource: `${A}:cert/*` },
    { Effect: 'Allow', Action: 'IOT:creatething', Resource: `${A}:thing/gw?` },
    { Effect: 'Allow', Action: 'iot:*', Resource: `${A}:thing/site*` },
    { Effect: 'Deny', Action: 'iot:*Thing', Resource: `${A}:thing/site-locked` }
  ]);
  assert.equal(decide(p, 'iot:DescribeCertificate', `${A}:cert/${CERT}`), 'allow');
  assert.equal(decide(p, 'iot:UpdateCertificate', `${A}:cert/${CERT}`), 'implicit');
  assert.equal(decide(p, 'iot:CreateThing', `${A}:thing/gw1`), 'allow');
  assert.equal(decide(p, 'iot:CreateThing', `${A}:thing/gw12`), 'implicit', '? is one character');
  assert.equal(decide(p, 'iot:CreateThing', `${A}:thing/site-2`), 'allow');
  assert.equal(decide(p, 'iot:CreateThing', `${A}:thing/site-locked`), 'deny');
  assert.equal(decide(p, 'iot:DescribeThing', `${A}:thing/site-locked`), 'deny');
  assert.equal(decide(p, 'iot:DescribeCertificate', 'arn:aws-cn:iot:us-east-1:123456789012:cert/x'), 'implicit');
  for (const k of ['Condition', 'NotAction', 'NotResource']) {
    assert.throws(() => parseRolePolicy(JSON.stringify({ Statement: [{ Effect: 'Allow', Action: 'iot:*', Resource: '*', [k]: {} }] })), new RegExp(k));
  }
  assert.deepEqual([partitionOf('us-east-1'), partitionOf('cn-north-1'), partitionOf('us-gov-west-1')], ['aws', 'aws-cn', 'aws-us-gov']);
});

/** A CA and a sim with the JITR rule, the Lambda authorized against `rolePolicy`. */
async function jitrSim (name, rolePolicy, args = []) {
  const sim = await startSim(['--max-connects-per-second', '0', ...args], { rolePolicy });
  sims.push(sim);
  const ca = await makeCa(dir, `${name}-ca`);
  const caId = await registerCa(sim, dir, ca);
  await createJitrRule(sim);
  return { sim, ca, caId };
}

/** JITR-register `cn` and wait until the Lambda invocation for it has finished. */
async function register (sim, ca, cn) {
  const dev = await makeLeaf(dir, ca, cn, `${cn}-${Date.now()}`);
  const id = certIdOf(dev.pem);
  assert.equal((await connect(sim, dev, cn)).ok, false, 'the first CONNECT registers');
  const inv = await waitFor(async () => (await sim.api('GET', '/_sim/lambda')).body.invocations.find((i) => i.event?.certificateId === id && 'ok' in i),
    { timeoutMs: 10000, what: `the Lambda run for ${cn}` });
  return { dev, id, inv };
}

test('regression: with the role policy of before, JITR ends PENDING_ACTIVATION with AccessDenied on AttachThingPrincipal', async () => {
  const { sim, ca } = await jitrSim('old', renderRolePolicy({ template: OLD_ROLE }));
  const { dev, id, inv } = await register(sim, ca, 'iam-old-1');
  assert.equal(inv.ok, false);
  assert.match(inv.error, /AccessDeniedException: User: .* is not authorized to perform: iot:AttachThingPrincipal on resource: arn:aws:iot:us-east-1:123456789012:cert\//);
  const { denied } = (await sim.api('GET', '/_sim/lambda')).body;
  assert.deepEqual(denied.map((d) => d.operation), ['AttachThingPrincipal']);
  assert.match(denied[0].message, new RegExp(`cert/${id} because no identity-based policy allows`));
  // what the steps before it did stays done; the certificate is never activated
  assert.equal((await sim.api('GET', `/certificates/${id}`)).body.certificateDescription.status, 'PENDING_ACTIVATION');
  assert.equal((await sim.api('GET', '/things/iam-old-1')).status, 200);
  assert.deepEqual((await sim.api('GET', '/things/iam-old-1/principals')).body.principals, []);
  assert.equal((await connect(sim, dev, 'iam-old-1')).ok, false, 'the device stays out');
  assert.equal((await violations(sim, 'iam-old-1')).total, 0);
});

test('with the shipped role policy the same JITR run activates, and nothing is denied', async () => {
  const { sim, ca } = await jitrSim('new', undefined);
  const { dev, id, inv } = await register(sim, ca, 'iam-new-1');
  assert.equal(inv.ok, true, inv.error);
  assert.equal((await sim.api('GET', `/certificates/${id}`)).body.certificateDescription.status, 'ACTIVE');
  assert.deepEqual((await sim.api('GET', '/_sim/lambda')).body.denied, []);
  const r = await connect(sim, dev, 'iam-new-1');
  assert.equal(r.ok, true);
  r.client.end(true);
  assert.equal((await violations(sim, 'iam-new-1')).total, 0);

  // the AccessDenied answer as the aws CLI sees it: HTTP 403, AccessDeniedException, AWS's message
  const env = {
    PATH: process.env.PATH, HOME: dir, AWS_ACCESS_KEY_ID: LAMBDA_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: 'x', AWS_SESSION_TOKEN: 'x',
    AWS_DEFAULT_REGION: 'us-east-1', AWS_PAGER: '', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null'
  };
  const cli = (args) => promisify(execFile)(AWS, ['iot', ...args, '--endpoint-url', sim.base, '--debug'], { env }).then(() => ({ code: 0, stderr: '' }), (e) => e);
  const denied = await cli(['delete-thing', '--thing-name', 'iam-new-1']);
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /An error occurred \(AccessDeniedException\) when calling the DeleteThing operation: User: arn:aws:sts::123456789012:assumed-role\/[^ ]+ is not authorized to perform: iot:DeleteThing on resource: arn:aws:iot:us-east-1:123456789012:thing\/iam-new-1 because no identity-based policy allows the iot:DeleteThing action/);
  assert.match(denied.stderr, /Response headers: .*'x-amzn-errortype': 'AccessDeniedException'/i);
  assert.match(denied.stderr, /"DELETE \/things\/iam-new-1 HTTP\/1\.1" 403/);
  assert.equal((await sim.api('GET', '/things/iam-new-1')).status, 200, 'nothing was deleted');
  // the operator (other credentials) is not authorized against the Lambda's role, as before
  const operator = await aws(sim, ['describe-thing', '--thing-name', 'iam-new-1']);
  assert.equal(operator.code, 0, operator.stderr);
  assert.equal(operator.json.attributes.caCertificateId.length, 64);
});

test('an explicit Deny in the role wins over its Allow', async () => {
  const role = path.join(dir, 'deny-update-certificate.json');
  fs.writeFileSync(role, JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Action: 'iot:*', Resource: '*' },
      { Effect: 'Deny', Action: 'iot:UpdateCertificate', Resource: 'arn:aws:iot:us-east-1:123456789012:cert/*' }
    ]
  }));
  const { sim, ca } = await jitrSim('deny', role);
  const { id, inv } = await register(sim, ca, 'iam-deny-1');
  assert.equal(inv.ok, false);
  assert.match(inv.error, /not authorized to perform: iot:UpdateCertificate on resource: .*cert\/[0-9a-f]{64} with an explicit deny in an identity-based policy/);
  assert.equal((await sim.api('GET', `/certificates/${id}`)).body.certificateDescription.status, 'PENDING_ACTIVATION');
  assert.equal((await sim.api('GET', '/things/iam-deny-1/principals')).body.principals.length, 1, 'the steps before it were allowed');
  assert.equal((await violations(sim, 'iam-deny-1')).total, 0);
});

test('aws-cn: the role rendered for cn-north-1 and the Lambda under an arn:aws-cn: function ARN enroll a device', async () => {
  const role = renderRolePolicy({ region: 'cn-north-1' });
  const text = fs.readFileSync(role, 'utf8');
  assert.doesNotMatch(text, /arn:aws:/);
  assert.match(text, /arn:aws-cn:iot:cn-north-1:123456789012:cert\/\*/);
  const arn = 'arn:aws-cn:lambda:cn-north-1:123456789012:function:gateway-agent-jitr';
  const sim = await startSim(['--region', 'cn-north-1', '--max-connects-per-second', '0', '--lambda', `${arn}=${LAMBDA}`, '--lambda-role-policy', role]);
  sims.push(sim);
  const ca = await makeCa(dir, 'cn-ca');
  await registerCa(sim, dir, ca);
  const rule = fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'topic-rule.template.json'), 'utf8').replace('{{functionArn}}', arn);
  assert.equal((await sim.api('POST', '/rules/jitr', rule)).status, 200);
  const { dev, id, inv } = await register(sim, ca, 'cn-device-1');
  assert.equal(inv.ok, true, inv.error);
  const desc = (await sim.api('GET', `/certificates/${id}`)).body.certificateDescription;
  assert.equal(desc.status, 'ACTIVE');
  assert.equal(desc.certificateArn, `arn:aws-cn:iot:cn-north-1:123456789012:cert/${id}`);
  const policy = (await sim.api('GET', '/policies/gateway-agent-device')).body.policyDocument;
  for (const r of JSON.parse(policy).Statement.flatMap((s) => [s.Resource].flat())) assert.match(r, /^arn:aws-cn:iot:cn-north-1:123456789012:/);
  const r = await connect(sim, dev, 'cn-device-1');
  assert.equal(r.ok, true);
  await new Promise((resolve) => r.client.publish('dt/cn-device-1/t', '1', { qos: 1 }, resolve));
  r.client.end(true);
  assert.equal((await sim.api('GET', '/_sim/publishes?topic=dt/cn-device-1/t')).body.publishes.length, 1);
  assert.equal((await violations(sim, 'cn-device-1')).total, 0);
});
