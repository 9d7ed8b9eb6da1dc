// Certificate renewal end to end against iot-sim, with the shipped Lambda under the shipped
// role and the rules deploy.sh --rules-only creates: a thing's second certificate from the
// same CA enrolls onto the same thing (both ACTIVE), then a retire request published over
// the NEW certificate's connection makes the old one INACTIVE and detaches it; the reply
// comes on lifecycle/<thing>/retire/accepted, a refusal on .../rejected. Also what is refused
// (by the Lambda, or by the policy before any Lambda runs), the handler's own checks called
// directly, and a role without iot:DetachThingPrincipal (AccessDenied, recorded by the sim).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  startSim, tmpDir, makeCa, makeLeaf, registerCa, connect, closed, certIdOf, waitFor, violations,
  deployRules, enroll, retireRequest, LAMBDA_ARN, certArn, statusOf, principalsOf, lambdaState, fileName,
  publishedOn, useLambdaEnv, simWithRoleWithout, assertDeniedRun, assertOtherThingsLifecycleRefused
} from './helpers.js';

const dir = tmpDir('renewal-');
let sim;
let ca;
let caId;
const sims = [];
before(async () => {
  sim = await startSim(['--max-connects-per-second', '0']);
  sims.push(sim);
  ca = await makeCa(dir, 'ca');
  caId = await registerCa(sim, dir, ca);
  const r = await deployRules(sim, ['--function-arn', LAMBDA_ARN, '--ca-id', caId]);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  for (const s of sims) await s.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A thing's two certificates from `caObj`, both enrolled (the second as a renewal). */
async function renewedThing (s, thing, { subject = `/CN=${thing}`, caObj = ca } = {}) {
  const leaf1 = await makeLeaf(dir, caObj, thing, fileName(thing, 1), { subject });
  const first = await enroll(s, leaf1, thing);
  first.client.end(true);
  const leaf2 = await makeLeaf(dir, caObj, thing, fileName(thing, 2), { subject });
  const second = await enroll(s, leaf2, thing);
  return { leaf1, leaf2, id1: first.certificateId, id2: second.certificateId, client2: second.client };
}

test('a renewed gateway retires its old certificate over its new one; a repeated request is accepted again', async () => {
  const thing = 'gw-renew';
  const { leaf1, id1, id2, client2 } = await renewedThing(sim, thing, { subject: '/OU=gateway/CN=gw-renew' });
  try {
    // the renewal: the new certificate is attached to the same thing, both ACTIVE
    assert.deepEqual(await principalsOf(sim, thing), [certArn(id1), certArn(id2)].sort());
    assert.equal(await statusOf(sim, id1), 'ACTIVE');
    assert.equal(await statusOf(sim, id2), 'ACTIVE');
    const enrolled = (await lambdaState(sim)).invocations.filter((i) => i.event?.certificateId === id2 && i.ok && i.result?.activated);
    assert.equal(enrolled.length, 1);
    assert.equal(enrolled[0].result.renewal, true, 'the Lambda says it was a renewal');
    assert.equal(enrolled[0].result.role, 'gateway');

    // retire over the new certificate's connection
    const r = await retireRequest(client2, thing, { oldCertificateId: id1 });
    assert.deepEqual(r, { outcome: 'accepted', reply: { oldCertificateId: id1, status: 'INACTIVE', detached: true } });
    assert.equal(await statusOf(sim, id1), 'INACTIVE');
    assert.equal(await statusOf(sim, id2), 'ACTIVE');
    assert.deepEqual(await principalsOf(sim, thing), [certArn(id2)]);
    // the Lambda saw the publisher's certificate, client id and thing from the rule's SQL
    const inv = (await lambdaState(sim)).invocations.find((i) => i.ruleName === 'gateway_agent_retire');
    assert.deepEqual(inv.event, { oldCertificateId: id1, newCertificateId: id2, clientId: thing, thingName: thing, request: 'retire' });
    assert.equal(inv.ok, true, inv.error);

    // the old certificate can no longer connect; the new connection is untouched
    const old = await connect(sim, leaf1, thing);
    assert.equal(old.ok, false);
    const refusals = (await sim.api('GET', '/_sim/refusals')).body.refusals;
    assert.ok(refusals.some((x) => x.certificateId === id1 && x.reason === 'certificateInactive'), JSON.stringify(refusals.slice(-3)));
    assert.equal(client2.connected, true);

    // a repeated request (the reply was lost, say) gets the same answer
    assert.deepEqual(await retireRequest(client2, thing, { oldCertificateId: id1 }),
      { outcome: 'accepted', reply: { oldCertificateId: id1, status: 'INACTIVE', detached: true } });
    assert.deepEqual(await principalsOf(sim, thing), [certArn(id2)]);
    assert.equal((await violations(sim, thing)).total, 0);
    assert.deepEqual((await lambdaState(sim)).denied, [], 'the shipped role allows every call of the retirement');
  } finally { client2.end(true); }
});

test('a sensor thing <gateway>:<id> (device policy) renews and retires the same way; the old connection is closed', async () => {
  const thing = 'gw-renew:s1';
  const leaf1 = await makeLeaf(dir, ca, thing, fileName(thing, 1));
  const first = await enroll(sim, leaf1, `${thing}`);
  // the sensor keeps its old connection until the new certificate is enrolled (another client id
  // for the JITR connect, so the old connection is not taken over)
  const leaf2 = await makeLeaf(dir, ca, thing, fileName(thing, 2));
  assert.equal((await connect(sim, leaf2, 'gw-renew_s1-jitr')).ok, false);
  const id2 = certIdOf(leaf2.pem);
  await waitFor(async () => (await statusOf(sim, id2)) === 'ACTIVE', { timeoutMs: 15000, what: 'second certificate ACTIVE' });
  first.client.end(true);
  await closed(first.client);
  const second = await connect(sim, leaf2, thing);
  assert.equal(second.ok, true);
  try {
    const r = await retireRequest(second.client, thing, { oldCertificateId: first.certificateId });
    assert.deepEqual(r, { outcome: 'accepted', reply: { oldCertificateId: first.certificateId, status: 'INACTIVE', detached: true } });
    assert.deepEqual(await principalsOf(sim, thing), [certArn(id2)]);
    assert.equal((await connect(sim, leaf1, thing)).ok, false);
    assert.equal((await violations(sim, thing)).total, 0);
  } finally { second.client.end(true); }

  // a live connection of a certificate that becomes INACTIVE is closed (the sim does it at once)
  const thing3 = 'gw-renew:s3';
  const a = await renewedThing(sim, thing3);
  try {
    a.client2.end(true);
    await closed(a.client2);
    const oldConn = await connect(sim, a.leaf1, thing3);
    assert.equal(oldConn.ok, true);
    assert.equal((await sim.api('PUT', `/certificates/${a.id1}?newStatus=INACTIVE`)).status, 200);
    assert.equal(await closed(oldConn.client), true, 'the INACTIVE certificate\'s connection is closed');
  } finally { a.client2.end(true); }
});

test('refused: another thing\'s certificate, the old certificate naming the new one, itself, a bad id, a certificate of another CA', async () => {
  const thing = 'gw-refuse';
  const { leaf1, id1, id2, client2 } = await renewedThing(sim, thing, { subject: '/OU=gateway/CN=gw-refuse' });
  const other = await enroll(sim, await makeLeaf(dir, ca, 'gw-other', 'gw-other'), 'gw-other');
  other.client.end(true);
  let client = client2;
  try {
    let r = await retireRequest(client, thing, { oldCertificateId: other.certificateId });
    assert.equal(r.outcome, 'rejected');
    assert.equal(r.reply.oldCertificateId, other.certificateId);
    assert.match(r.reply.reason, /is not attached to thing gw-refuse/);
    assert.equal(await statusOf(sim, other.certificateId), 'ACTIVE');
    assert.deepEqual(await principalsOf(sim, 'gw-other'), [certArn(other.certificateId)]);

    r = await retireRequest(client, thing, { oldCertificateId: id2 });
    assert.equal(r.outcome, 'rejected');
    assert.match(r.reply.reason, /the certificate this request was published with/);

    r = await retireRequest(client, thing, { oldCertificateId: id1.toUpperCase() });
    assert.equal(r.outcome, 'rejected');
    assert.match(r.reply.reason, /64 lowercase hex/);
    r = await retireRequest(client, thing, { something: 'else' });
    assert.deepEqual(r, { outcome: 'rejected', reply: { oldCertificateId: null, reason: 'oldCertificateId must be a certificate id (64 lowercase hex characters)' } });

    // a certificate from another registered CA with the thing's name: registered, but the
    // JITR rule (deployed with --ca-id of the first CA) does not even run for it; an operator
    // attaches it to the thing by hand. Still not retirable by the thing.
    const ca2 = await makeCa(dir, 'ca2');
    await registerCa(sim, dir, ca2);
    const foreign = await makeLeaf(dir, ca2, thing, 'gw-refuse-ca2');
    const foreignId = certIdOf(foreign.pem);
    assert.equal((await connect(sim, foreign, 'gw-refuse-ca2-jitr')).ok, false);
    assert.equal(await statusOf(sim, foreignId), 'PENDING_ACTIVATION');
    assert.ok(!(await lambdaState(sim)).invocations.some((i) => i.event?.certificateId === foreignId));
    assert.equal((await sim.api('PUT', `/things/${thing}/principals`, undefined, { 'x-amzn-principal': certArn(foreignId) })).status, 200);
    r = await retireRequest(client, thing, { oldCertificateId: foreignId });
    assert.equal(r.outcome, 'rejected');
    assert.match(r.reply.reason, /was issued by CA [0-9a-f]{64}, not by the CA of thing gw-refuse/);
    assert.equal((await sim.api('DELETE', `/things/${thing}/principals`, undefined, { 'x-amzn-principal': certArn(foreignId) })).status, 200);

    // over the OLD certificate's connection, naming the new one: the request proves the old
    // certificate only, and it cannot retire the one that replaces it
    client.end(true);
    await closed(client);
    const oldConn = await connect(sim, leaf1, thing);
    assert.equal(oldConn.ok, true);
    client = oldConn.client;
    r = await retireRequest(client, thing, { oldCertificateId: id2 });
    assert.equal(r.outcome, 'rejected');
    assert.match(r.reply.reason, /was registered after the certificate the request was published with/);

    // nothing changed by any of these
    assert.equal(await statusOf(sim, id1), 'ACTIVE');
    assert.equal(await statusOf(sim, id2), 'ACTIVE');
    assert.deepEqual(await principalsOf(sim, thing), [certArn(id1), certArn(id2)].sort());
    assert.equal((await violations(sim, thing)).total, 0);
    assert.deepEqual((await lambdaState(sim)).denied, []);
  } finally { client.end(true); }
});

test('the policy: a thing cannot publish a retire request for another thing, nor subscribe to its replies', async () => {
  const thing = 'gw-nosy';
  const victim = 'gw-victim';
  const v = await enroll(sim, await makeLeaf(dir, ca, victim, victim, { subject: `/OU=gateway/CN=${victim}` }), victim);
  v.client.end(true);
  const leaf = await makeLeaf(dir, ca, thing, thing, { subject: `/OU=gateway/CN=${thing}` });
  const n = await enroll(sim, leaf, thing);
  const before = (await lambdaState(sim)).invocations.filter((i) => i.ruleName === 'gateway_agent_retire').length;

  await assertOtherThingsLifecycleRefused(sim, {
    client: n.client, leaf, thing, victim, action: 'retire', body: { oldCertificateId: v.certificateId }, qos: 1
  });
  assert.equal((await lambdaState(sim)).invocations.filter((i) => i.ruleName === 'gateway_agent_retire').length, before);
  assert.equal(await statusOf(sim, v.certificateId), 'ACTIVE');
  assert.equal((await violations(sim, victim)).total, 0);
});

test('the handler\'s own checks, called directly: client id other than the thing, no principal, an empty thing name; a REVOKED old certificate', async () => {
  const thing = 'gw-direct';
  const { id1, id2, client2 } = await renewedThing(sim, thing);
  client2.end(true);
  const restoreEnv = useLambdaEnv(sim);
  try {
    const { handler, isRetireRequest } = await import('../jitr-lambda/index.mjs');
    const ctx = { invokedFunctionArn: LAMBDA_ARN, awsRequestId: 'r' };
    const rejected = () => publishedOn(sim, `lifecycle/${thing}/retire/rejected`);
    assert.equal(isRetireRequest({ certificateId: id1, certificateStatus: 'PENDING_ACTIVATION' }), false);

    let out = await handler({ oldCertificateId: id1, newCertificateId: id2, clientId: 'someone-else', thingName: thing }, ctx);
    assert.match(out.refused, /client id "someone-else" is not the thing name gw-direct/);
    assert.match((await rejected()).at(-1).reason, /client id/);

    out = await handler({ oldCertificateId: id1, clientId: thing, thingName: thing }, ctx);
    assert.equal(out.refused, 'the request was not published with an X.509 certificate');

    const count = (await rejected()).length;
    out = await handler({ oldCertificateId: id1, newCertificateId: id2, clientId: '', thingName: '' }, ctx); // lifecycle//retire
    assert.equal(out.refused, 'no valid thing name');
    assert.equal((await rejected()).length, count, 'no topic to answer on');
    // a payload dressed as a registration event is still a retire request (the rule adds thingName)
    assert.equal(isRetireRequest({ certificateId: id1, certificateStatus: 'PENDING_ACTIVATION', thingName: thing }), true);

    // the registration path is unchanged: a registration event is not a retire request
    await assert.rejects(handler({ certificateId: 'nope' }, ctx), /certificateId/);
    assert.equal(await statusOf(sim, id1), 'ACTIVE');
    assert.deepEqual(await principalsOf(sim, thing), [certArn(id1), certArn(id2)].sort());

    // an old certificate an operator already revoked stays REVOKED; it is detached
    assert.equal((await sim.api('PUT', `/certificates/${id1}?newStatus=REVOKED`)).status, 200);
    const request = { oldCertificateId: id1, newCertificateId: id2, clientId: thing, thingName: thing };
    out = await handler(request, ctx);
    assert.deepEqual([out.retired, out.status, out.repeated], [true, 'REVOKED', undefined]);
    assert.equal(await statusOf(sim, id1), 'REVOKED');
    assert.deepEqual(await principalsOf(sim, thing), [certArn(id2)]);
    out = await handler(request, ctx);
    assert.deepEqual([out.retired, out.status, out.repeated], [true, 'REVOKED', true]);
    const accepted = await publishedOn(sim, `lifecycle/${thing}/retire/accepted`);
    assert.deepEqual(accepted, [1, 2].map(() => ({ oldCertificateId: id1, status: 'REVOKED', detached: true })));
  } finally { restoreEnv(); }
});

test('a thing with a certificate an operator revoked does not renew: the new one stays PENDING_ACTIVATION until the revoked one is detached', async () => {
  const thing = 'gw-blocked';
  const subject = '/OU=gateway/CN=gw-blocked';
  const leaf1 = await makeLeaf(dir, ca, thing, fileName(thing, 1), { subject });
  const first = await enroll(sim, leaf1, thing);
  first.client.end(true);
  const id1 = first.certificateId;
  assert.equal((await sim.api('PUT', `/certificates/${id1}?newStatus=REVOKED`)).status, 200);

  const leaf2 = await makeLeaf(dir, ca, thing, fileName(thing, 2), { subject });
  const id2 = certIdOf(leaf2.pem);
  const refusedFor = async () => (await lambdaState(sim)).invocations
    .filter((i) => i.event?.certificateId === id2 && i.ok && i.result?.refused);
  assert.equal((await connect(sim, leaf2, thing)).ok, false);
  await waitFor(async () => (await refusedFor()).length > 0, { timeoutMs: 15000, what: 'the Lambda refusing the renewal' });
  assert.match((await refusedFor())[0].result.refused, new RegExp(`certificate ${id1} of thing gw-blocked is REVOKED`));
  assert.equal(await statusOf(sim, id2), 'PENDING_ACTIVATION');
  assert.deepEqual(await principalsOf(sim, thing), [certArn(id1)]);

  // the operator detaches the revoked certificate: the device's next connect renews
  const detached = await sim.api('DELETE', `/things/${thing}/principals`, undefined, { 'x-amzn-principal': certArn(id1) });
  assert.equal(detached.status, 200);
  const second = await enroll(sim, leaf2, thing);
  second.client?.end(true);
  assert.equal(await statusOf(sim, id2), 'ACTIVE');
  assert.equal(await statusOf(sim, id1), 'REVOKED');
  assert.deepEqual(await principalsOf(sim, thing), [certArn(id2)]);
  assert.equal((await violations(sim, thing)).total, 0);
});

test('IAM: a role without iot:DetachThingPrincipal fails the retirement with AccessDenied, recorded by the sim', async () => {
  const s = await simWithRoleWithout(dir, 'iot:DetachThingPrincipal');
  sims.push(s);
  assert.equal(await registerCa(s, dir, ca), caId);
  assert.equal((await deployRules(s, ['--function-arn', LAMBDA_ARN])).code, 0);

  const thing = 'gw-iam';
  const { id1, id2, client2 } = await renewedThing(s, thing);
  try {
    const r = await retireRequest(client2, thing, { oldCertificateId: id1 });
    assert.equal(r.outcome, 'rejected');
    assert.match(r.reply.reason, /could not retire the certificate \(AccessDeniedException\)/);
    await assertDeniedRun(s, { action: 'iot:DetachThingPrincipal', resource: certArn(id1), ruleName: 'gateway_agent_retire' });
    // UpdateCertificate came first and was allowed; the detach did not happen
    assert.equal(await statusOf(s, id1), 'INACTIVE');
    assert.deepEqual(await principalsOf(s, thing), [certArn(id1), certArn(id2)].sort());
  } finally { client2.end(true); }
});
