// CA hand-over asked by the device (a CA rollover), end to end against iot-sim with the
// shipped Lambda under the shipped role and the rules deploy.sh --rules-only creates. Two
// registered CAs, the old and the new: a thing enrolled under the old CA asks, over its
// old-CA certificate's connection, to be handed over to the new CA (QoS 0 to
// lifecycle/<thing>/handover); once accepted, a certificate of the new CA for the thing
// enrolls by JITR and retires the old-CA certificate. Without the hand-over the new CA's
// certificate stays refused. Also what is refused (by the Lambda, or by the policy before
// any Lambda runs), a sensor that must follow its gateway, the handler's own checks called
// directly, and a role without iot:DescribeCACertificate.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  startSim, tmpDir, makeCa, makeLeaf, registerCa, connect, closed, certIdOf, waitFor, violations,
  deployRules, enroll, retireRequest, handoverRequest, LAMBDA_ARN, CLOUD_DIR, certArn, statusOf, principalsOf,
  lambdaState, fileName, publishedOn, useLambdaEnv, simWithRoleWithout, assertDeniedRun, assertOtherThingsLifecycleRefused
} from './helpers.js';

const dir = tmpDir('handover-');
const sims = [];
let sim;
let caOld;
let caNew;
let oldId;
let newId;
before(async () => {
  sim = await startSim(['--max-connects-per-second', '0']);
  sims.push(sim);
  caOld = await makeCa(dir, 'ca-old');
  caNew = await makeCa(dir, 'ca-new');
  oldId = await registerCa(sim, dir, caOld);
  newId = await registerCa(sim, dir, caNew);
  // no --ca-id: the JITR rule takes both CAs' registration events
  const r = await deployRules(sim, ['--function-arn', LAMBDA_ARN]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^created rule gateway_agent_handover$/m);
});
after(async () => {
  for (const s of sims) await s.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const attributesOf = async (s, thing) => (await s.api('GET', `/things/${encodeURIComponent(thing)}`)).body.attributes;

/** The finished Lambda run for certificate `id`'s registration event after `since`. */
const jitrRun = (s, id, since) => waitFor(async () => (await lambdaState(s)).invocations
  .find((i) => i.time > since && i.event?.certificateId === id && !i.event?.request && 'ok' in i),
{ timeoutMs: 15000, what: `the Lambda run for ${id}` });

/** A JITR connect of `leaf` under a throwaway client id; resolves the Lambda's run. */
async function jitr (s, leaf, thing) {
  const since = Date.now() - 1;
  assert.equal((await connect(s, leaf, `${thing.replace(':', '_')}-jitr`)).ok, false, 'a JITR connect only registers');
  return jitrRun(s, certIdOf(leaf.pem), since);
}

/** Thing `thing` enrolled with a certificate of `ca`; resolves {leaf, id, client}. */
async function enrolled (s, thing, ca, { subject = `/CN=${thing}`, tag = 'old' } = {}) {
  const leaf = await makeLeaf(dir, ca, thing, fileName(thing, tag), { subject });
  const { client, certificateId } = await enroll(s, leaf, thing);
  return { leaf, id: certificateId, client };
}

test('a gateway hands itself over to the new CA; a certificate of the new CA then enrolls and retires the old one', async () => {
  const thing = 'gw-roll';
  const subject = `/OU=gateway/CN=${thing}`;
  const first = await enrolled(sim, thing, caOld, { subject });
  let client = first.client;
  try {
    assert.deepEqual(await attributesOf(sim, thing), { caCertificateId: oldId });

    // without the hand-over the binding holds: the new CA's certificate is refused
    const leaf2 = await makeLeaf(dir, caNew, thing, fileName(thing, 'new'), { subject });
    const id2 = certIdOf(leaf2.pem);
    const refused = await jitr(sim, leaf2, thing);
    assert.equal(refused.result.refused, `thing ${thing} belongs to CA ${oldId}, the certificate is from CA ${newId}`);
    assert.equal(await statusOf(sim, id2), 'PENDING_ACTIVATION');

    // the hand-over, asked over the old-CA certificate's connection
    let r = await handoverRequest(client, thing, { caCertificateId: newId });
    assert.deepEqual(r, { outcome: 'accepted', reply: { caCertificateId: newId, previousCaCertificateId: oldId } });
    assert.deepEqual(await attributesOf(sim, thing), { caCertificateId: newId, previousCaCertificateId: oldId });
    // the Lambda saw the publisher's certificate, client id, thing and the rule's constant
    const inv = (await lambdaState(sim)).invocations.find((i) => i.ruleName === 'gateway_agent_handover');
    assert.deepEqual(inv.event, { caCertificateId: newId, certificateId: first.id, clientId: thing, thingName: thing, request: 'handover' });
    assert.equal(inv.ok, true, inv.error);
    assert.deepEqual(inv.result, {
      thingName: thing, clientId: thing, caCertificateId: newId, certificateId: first.id, handedOver: true, previousCaCertificateId: oldId
    });
    // a repeated request (the reply was lost, say) gets the same answer, nothing changes
    r = await handoverRequest(client, thing, { caCertificateId: newId });
    assert.deepEqual(r, { outcome: 'accepted', reply: { caCertificateId: newId, previousCaCertificateId: oldId } });
    assert.deepEqual(await attributesOf(sim, thing), { caCertificateId: newId, previousCaCertificateId: oldId });

    // the new CA's certificate, refused before, enrolls on its next connect: a renewal
    const run = await jitr(sim, leaf2, thing);
    assert.equal(run.ok, true, run.error);
    assert.deepEqual([run.result.activated, run.result.renewal, run.result.role], [true, true, 'gateway']);
    assert.equal(await statusOf(sim, id2), 'ACTIVE');
    assert.deepEqual(await principalsOf(sim, thing), [certArn(first.id), certArn(id2)].sort());

    // over the old certificate, the new one cannot be retired: the requester is not from the thing's CA
    r = await retireRequest(client, thing, { oldCertificateId: id2 });
    assert.equal(r.outcome, 'rejected');
    assert.equal(r.reply.reason, `the certificate the request was published with was issued by CA ${oldId}, not by the CA of thing ${thing} (${newId})`);

    client.end(true);
    await closed(client);
    const second = await connect(sim, leaf2, thing);
    assert.equal(second.ok, true);
    client = second.client;
    // the new certificate asks again: accepted, it is the thing's CA's
    r = await handoverRequest(client, thing, { caCertificateId: newId });
    assert.deepEqual(r, { outcome: 'accepted', reply: { caCertificateId: newId, previousCaCertificateId: oldId } });
    // and retires the old CA's certificate
    r = await retireRequest(client, thing, { oldCertificateId: first.id });
    assert.deepEqual(r, { outcome: 'accepted', reply: { oldCertificateId: first.id, status: 'INACTIVE', detached: true } });
    assert.equal(await statusOf(sim, first.id), 'INACTIVE');
    assert.deepEqual(await principalsOf(sim, thing), [certArn(id2)]);
    assert.equal((await connect(sim, first.leaf, thing)).ok, false, 'the old certificate is out');
    assert.equal(client.connected, true);

    // the old CA no longer enrolls anything for the thing
    const late = await makeLeaf(dir, caOld, thing, fileName(thing, 'old-late'), { subject });
    assert.match((await jitr(sim, late, thing)).result.refused, new RegExp(`thing ${thing} belongs to CA ${newId}, the certificate is from CA ${oldId}`));
    assert.equal((await violations(sim, thing)).total, 0);
    assert.deepEqual((await lambdaState(sim)).denied, [], 'the shipped role allows every call of the hand-over');
  } finally { client.end(true); }
});

test('a sensor <gateway>:<id> follows its gateway: refused before the gateway is handed over, accepted after; the namespace checks hold', async () => {
  const gateway = 'site';
  const sensor = 'site:s1';
  const gw = await enrolled(sim, gateway, caOld, { subject: `/OU=gateway/CN=${gateway}` });
  const s1 = await enrolled(sim, sensor, caOld);
  try {
    let r = await handoverRequest(s1.client, sensor, { caCertificateId: newId });
    assert.deepEqual(r, {
      outcome: 'rejected',
      reply: { caCertificateId: newId, reason: `gateway thing ${gateway} belongs to CA ${oldId}, not to CA ${newId}: hand the gateway over first` }
    });
    assert.deepEqual(await attributesOf(sim, sensor), { caCertificateId: oldId });

    r = await handoverRequest(gw.client, gateway, { caCertificateId: newId });
    assert.equal(r.outcome, 'accepted');

    // the gateway's namespace is the new CA's now: the old CA enrolls no new sensor in it
    const squat = await makeLeaf(dir, caOld, 'site:s9', fileName('site:s9', 'old'));
    assert.equal((await jitr(sim, squat, 'site:s9')).result.refused, `gateway namespace ${gateway} belongs to CA ${newId}, the certificate is from CA ${oldId}`);
    // and the sensor's own thing is still the old CA's until it asks: its new-CA certificate is refused
    const leaf2 = await makeLeaf(dir, caNew, sensor, fileName(sensor, 'new'));
    assert.equal((await jitr(sim, leaf2, sensor)).result.refused, `thing ${sensor} belongs to CA ${oldId}, the certificate is from CA ${newId}`);

    r = await handoverRequest(s1.client, sensor, { caCertificateId: newId });
    assert.deepEqual(r, { outcome: 'accepted', reply: { caCertificateId: newId, previousCaCertificateId: oldId } });
    assert.deepEqual(await attributesOf(sim, sensor), { caCertificateId: newId, previousCaCertificateId: oldId });

    const run = await jitr(sim, leaf2, sensor);
    assert.deepEqual([run.result.activated, run.result.renewal, run.result.role], [true, true, 'device']);
    s1.client.end(true);
    await closed(s1.client);
    const second = await connect(sim, leaf2, sensor);
    assert.equal(second.ok, true);
    try {
      r = await retireRequest(second.client, sensor, { oldCertificateId: s1.id });
      assert.deepEqual(r, { outcome: 'accepted', reply: { oldCertificateId: s1.id, status: 'INACTIVE', detached: true } });
      assert.deepEqual(await principalsOf(sim, sensor), [certArn(certIdOf(leaf2.pem))]);
    } finally { second.client.end(true); }
    for (const c of [gateway, sensor]) assert.equal((await violations(sim, c)).total, 0, c);
  } finally { gw.client.end(true); s1.client.end(true); }
});

test('after a hand-over a renewal is still refused while a certificate an operator revoked is attached', async () => {
  const thing = 'gw-blocked';
  const subject = `/OU=gateway/CN=${thing}`;
  const first = await enrolled(sim, thing, caOld, { subject });
  assert.equal((await handoverRequest(first.client, thing, { caCertificateId: newId })).outcome, 'accepted');
  first.client.end(true);
  await closed(first.client);
  assert.equal((await sim.api('PUT', `/certificates/${first.id}?newStatus=REVOKED`)).status, 200);
  const leaf2 = await makeLeaf(dir, caNew, thing, fileName(thing, 'new'), { subject });
  const id2 = certIdOf(leaf2.pem);
  const run = await jitr(sim, leaf2, thing);
  assert.match(run.result.refused, new RegExp(`certificate ${first.id} of thing ${thing} is REVOKED`));
  assert.equal(await statusOf(sim, id2), 'PENDING_ACTIVATION');
  // the operator detaches it: the next connect enrolls the new CA's certificate
  assert.equal((await sim.api('DELETE', `/things/${thing}/principals`, undefined, { 'x-amzn-principal': certArn(first.id) })).status, 200);
  const second = await enroll(sim, leaf2, thing);
  second.client?.end(true);
  assert.equal(await statusOf(sim, id2), 'ACTIVE');
  assert.deepEqual(await principalsOf(sim, thing), [certArn(id2)]);
});

test('refused: a CA that is not registered or INACTIVE, a bad id, a requester from a CA that is not the thing\'s; nothing changes', async () => {
  const thing = 'gw-refuse';
  const subject = `/OU=gateway/CN=${thing}`;
  const own = await enrolled(sim, thing, caOld, { subject });
  const caOff = await makeCa(dir, 'ca-off');
  const offId = await registerCa(sim, dir, caOff, { active: false });
  let client = own.client;
  try {
    const unknown = 'ab'.repeat(32);
    let r = await handoverRequest(client, thing, { caCertificateId: unknown });
    assert.deepEqual(r, { outcome: 'rejected', reply: { caCertificateId: unknown, reason: `CA certificate ${unknown} is not registered in this account` } });
    r = await handoverRequest(client, thing, { caCertificateId: offId });
    assert.deepEqual(r, { outcome: 'rejected', reply: { caCertificateId: offId, reason: `CA certificate ${offId} is INACTIVE, not ACTIVE` } });
    r = await handoverRequest(client, thing, { caCertificateId: newId.toUpperCase() });
    assert.equal(r.outcome, 'rejected');
    assert.match(r.reply.reason, /64 lowercase hex/);
    r = await handoverRequest(client, thing, { something: 'else' });
    assert.deepEqual(r, { outcome: 'rejected', reply: { caCertificateId: null, reason: 'caCertificateId must be a CA certificate id (64 lowercase hex characters)' } });
    // a payload cannot pose as another certificate, client or thing, nor as a retire request
    r = await handoverRequest(client, thing, {
      caCertificateId: offId, certificateId: 'ef'.repeat(32), clientId: 'x', thingName: 'x', request: 'retire', oldCertificateId: own.id
    });
    assert.deepEqual(r, { outcome: 'rejected', reply: { caCertificateId: offId, reason: `CA certificate ${offId} is INACTIVE, not ACTIVE` } });
    assert.equal(await statusOf(sim, own.id), 'ACTIVE');

    // a certificate of the new CA with the thing's name that an operator activated and
    // attached by hand (the Lambda refused it): connected as the thing, it still cannot hand
    // the thing over, to its own CA or any other
    const foreign = await makeLeaf(dir, caNew, thing, fileName(thing, 'foreign'), { subject });
    const foreignId = certIdOf(foreign.pem);
    assert.match((await jitr(sim, foreign, thing)).result.refused, /belongs to CA/);
    assert.equal((await sim.api('PUT', `/certificates/${foreignId}?newStatus=ACTIVE`)).status, 200);
    assert.equal((await sim.api('PUT', '/target-policies/gateway-agent-gateway', { target: certArn(foreignId) })).status, 200);
    assert.equal((await sim.api('PUT', `/things/${thing}/principals`, undefined, { 'x-amzn-principal': certArn(foreignId) })).status, 200);
    client.end(true);
    await closed(client);
    const f = await connect(sim, foreign, thing);
    assert.equal(f.ok, true);
    client = f.client;
    for (const ca of [newId, oldId]) {
      r = await handoverRequest(client, thing, { caCertificateId: ca });
      assert.deepEqual(r, {
        outcome: 'rejected',
        reply: { caCertificateId: ca, reason: `the certificate the request was published with was issued by CA ${newId}, not by the CA of thing ${thing} (${oldId})` }
      });
    }
    assert.equal((await sim.api('DELETE', `/things/${thing}/principals`, undefined, { 'x-amzn-principal': certArn(foreignId) })).status, 200);

    // nothing changed by any of these
    assert.deepEqual(await attributesOf(sim, thing), { caCertificateId: oldId });
    assert.deepEqual(await principalsOf(sim, thing), [certArn(own.id)]);
    assert.equal(await statusOf(sim, own.id), 'ACTIVE');
    assert.equal((await violations(sim, thing)).total, 0);
    assert.deepEqual((await lambdaState(sim)).denied, []);
  } finally { client.end(true); }
});

test('the policy: a thing cannot publish a hand-over request for another thing, nor subscribe to its replies', async () => {
  const thing = 'gw-nosy';
  const victim = 'gw-victim';
  const v = await enrolled(sim, victim, caOld, { subject: `/OU=gateway/CN=${victim}` });
  v.client.end(true);
  const n = await enrolled(sim, thing, caOld, { subject: `/OU=gateway/CN=${thing}` });
  const runs = async () => (await lambdaState(sim)).invocations.filter((i) => i.ruleName === 'gateway_agent_handover').length;
  const before = await runs();

  await assertOtherThingsLifecycleRefused(sim, {
    client: n.client, leaf: n.leaf, thing, victim, action: 'handover', body: { caCertificateId: newId }, qos: 0
  });
  assert.equal(await runs(), before);
  assert.deepEqual(await attributesOf(sim, victim), { caCertificateId: oldId });
  assert.equal((await violations(sim, victim)).total, 0);
});

test('the handler\'s own checks, called directly: not attached, not ACTIVE, client id, no principal, no thing name; the dispatch', async () => {
  const thing = 'gw-direct';
  const own = await enrolled(sim, thing, caOld);
  own.client.end(true);
  const other = await enrolled(sim, 'gw-direct-other', caOld);
  other.client.end(true);
  const restoreEnv = useLambdaEnv(sim);
  try {
    const { handler, requestKind, isRetireRequest } = await import('../jitr-lambda/index.mjs');
    const ctx = { invokedFunctionArn: LAMBDA_ARN, awsRequestId: 'r' };
    const rejected = () => publishedOn(sim, `lifecycle/${thing}/handover/rejected`);
    const request = { caCertificateId: newId, certificateId: own.id, clientId: thing, thingName: thing, request: 'handover' };

    // the dispatch: what each rule's SELECT sets decides, not the payload
    assert.equal(requestKind(request), 'handover');
    assert.equal(requestKind({ certificateId: own.id, certificateStatus: 'PENDING_ACTIVATION', caCertificateId: oldId }), 'registration');
    assert.equal(requestKind({ oldCertificateId: own.id, newCertificateId: own.id, clientId: thing, thingName: thing, request: 'retire' }), 'retire');
    // the retire rule of before (no `request` of its own): the payload's `request` cannot make it a hand-over
    assert.equal(requestKind({ oldCertificateId: own.id, newCertificateId: own.id, clientId: thing, thingName: thing }), 'retire');
    assert.equal(requestKind({ request: 'handover', caCertificateId: newId, certificateId: other.id, newCertificateId: own.id, clientId: thing, thingName: thing }), 'invalid-handover');
    assert.equal(requestKind({ request: 'other', newCertificateId: own.id, clientId: thing, thingName: thing }), 'retire');
    assert.equal(isRetireRequest(request), false);
    assert.equal(requestKind(null), 'registration');

    let out = await handler({ ...request, newCertificateId: own.id, certificateId: other.id }, ctx);
    assert.equal(out.refused, 'a hand-over request may not carry newCertificateId');
    assert.equal((await rejected()).at(-1).reason, 'a hand-over request may not carry newCertificateId');

    out = await handler({ ...request, certificateId: other.id }, ctx);
    assert.equal(out.refused, `the certificate the request was published with is not attached to thing ${thing}`);
    out = await handler({ ...request, certificateId: 'cd'.repeat(32) }, ctx);
    assert.equal(out.refused, `the certificate the request was published with is not attached to thing ${thing}`);
    out = await handler({ ...request, clientId: 'someone-else' }, ctx);
    assert.match(out.refused, /client id "someone-else" is not the thing name gw-direct/);
    out = await handler({ ...request, certificateId: undefined }, ctx);
    assert.equal(out.refused, 'the request was not published with an X.509 certificate');
    assert.equal((await sim.api('PUT', `/certificates/${own.id}?newStatus=INACTIVE`)).status, 200);
    out = await handler(request, ctx);
    assert.equal(out.refused, 'the certificate the request was published with is INACTIVE, not ACTIVE');
    assert.equal((await sim.api('PUT', `/certificates/${own.id}?newStatus=ACTIVE`)).status, 200);
    assert.deepEqual((await rejected()).map((x) => x.caCertificateId), Array(6).fill(newId));

    const count = (await rejected()).length;
    out = await handler({ ...request, clientId: '', thingName: '' }, ctx); // lifecycle//handover
    assert.equal(out.refused, 'no valid thing name');
    assert.equal((await rejected()).length, count, 'no topic to answer on');
    assert.deepEqual(await attributesOf(sim, thing), { caCertificateId: oldId });

    // and then accepted, twice
    out = await handler(request, ctx);
    assert.deepEqual([out.handedOver, out.previousCaCertificateId, out.repeated], [true, oldId, undefined]);
    out = await handler(request, ctx);
    assert.deepEqual([out.handedOver, out.previousCaCertificateId, out.repeated], [true, oldId, true]);
    assert.deepEqual(await attributesOf(sim, thing), { caCertificateId: newId, previousCaCertificateId: oldId });
    // handing it back: the old certificate is no longer of the thing's CA
    out = await handler({ ...request, caCertificateId: oldId }, ctx);
    assert.match(out.refused, new RegExp(`issued by CA ${oldId}, not by the CA of thing ${thing} \\(${newId}\\)`));
  } finally { restoreEnv(); }
});

test('a thing without caCertificateId (from before CA binding) is handed over from the CA of the requesting certificate', async () => {
  const thing = 'legacy';
  const first = await enrolled(sim, thing, caOld);
  // as if enrolled before the attribute existed
  assert.equal((await sim.api('PATCH', `/things/${thing}`, { attributePayload: { attributes: { caCertificateId: '' }, merge: true } })).status, 200);
  assert.deepEqual(await attributesOf(sim, thing), {});
  try {
    const r = await handoverRequest(first.client, thing, { caCertificateId: newId });
    assert.deepEqual(r, { outcome: 'accepted', reply: { caCertificateId: newId, previousCaCertificateId: oldId } });
    assert.deepEqual(await attributesOf(sim, thing), { caCertificateId: newId, previousCaCertificateId: oldId });
  } finally { first.client.end(true); }
});

test('IAM: a role without iot:DescribeCACertificate fails the hand-over with AccessDenied, answered "try again later"', async () => {
  const s = await simWithRoleWithout(dir, 'iot:DescribeCACertificate');
  sims.push(s);
  assert.equal(await registerCa(s, dir, caOld), oldId);
  assert.equal(await registerCa(s, dir, caNew), newId);
  assert.equal((await deployRules(s, ['--function-arn', LAMBDA_ARN])).code, 0);

  const thing = 'gw-iam';
  const first = await enrolled(s, thing, caOld, { tag: 'iam' });
  try {
    const r = await handoverRequest(first.client, thing, { caCertificateId: newId });
    assert.deepEqual(r, {
      outcome: 'rejected',
      reply: { caCertificateId: newId, reason: 'the cloud could not hand the thing over (AccessDeniedException); try again later' }
    });
    await assertDeniedRun(s, {
      action: 'iot:DescribeCACertificate', resource: `arn:aws:iot:us-east-1:123456789012:cacert/${newId}`, ruleName: 'gateway_agent_handover'
    });
    assert.deepEqual(await attributesOf(s, thing), { caCertificateId: oldId });
  } finally { first.client.end(true); }
});

test('a retire rule deployed before `request` existed still retires; its payload cannot make a hand-over of it', async () => {
  const oldSql = "SELECT *, principal() AS newCertificateId, clientid() AS clientId, topic(2) AS thingName FROM 'lifecycle/+/retire'";
  const shipped = JSON.parse(fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'retire-rule.template.json'), 'utf8'));
  const put = async (sql) => {
    const r = await sim.api('PATCH', '/rules/gateway_agent_retire', { ...shipped, sql, actions: [{ lambda: { functionArn: LAMBDA_ARN } }] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  };
  const thing = 'gw-oldrule';
  const first = await enrolled(sim, thing, caOld);
  first.client.end(true);
  const leaf2 = await makeLeaf(dir, caOld, thing, fileName(thing, 'old-2'));
  const second = await enroll(sim, leaf2, thing);
  await put(oldSql);
  try {
    // a retire request dressed as a hand-over: refused on .../handover/rejected, nothing done
    const since = (await sim.api('GET', '/_sim/publishes?limit=1')).body.lastSeq;
    await new Promise((resolve) => second.client.publish(`lifecycle/${thing}/retire`,
      JSON.stringify({ request: 'handover', caCertificateId: newId, certificateId: first.id, oldCertificateId: first.id }), { qos: 1 }, resolve));
    const reply = await waitFor(async () => (await publishedOn(sim, `lifecycle/${thing}/handover/rejected`, { since }))[0],
      { timeoutMs: 10000, what: 'the rejection' });
    assert.deepEqual(reply, { caCertificateId: newId, reason: 'a hand-over request may not carry newCertificateId' });
    assert.deepEqual(await attributesOf(sim, thing), { caCertificateId: oldId });
    assert.equal(await statusOf(sim, first.id), 'ACTIVE');
    // the request as the agent sends it is a retire request, as before
    const r = await retireRequest(second.client, thing, { oldCertificateId: first.id });
    assert.deepEqual(r, { outcome: 'accepted', reply: { oldCertificateId: first.id, status: 'INACTIVE', detached: true } });
    assert.equal((await violations(sim, thing)).total, 0);
  } finally {
    second.client.end(true);
    await put(shipped.sql);
  }
});
