// A thing belongs to the CA that enrolled it. Two registered CAs, made with openssl and
// registered with the aws CLI the seed's way; devices connect with mosquitto_pub, as in the
// seed walkthrough. A certificate from the second CA naming a thing enrolled under the first
// is registered by JITR but not attached, not activated, and cannot connect or publish; one
// an operator activated is not touched either. Renewal under the same CA works; a `<gateway>:`
// namespace belongs to the gateway's CA; a thing from before CA binding is bound to the CA of
// its certificates; the operator's hand-over (cloud/README.md) moves a thing to a new CA
// (the device's own hand-over request is handover.test.js).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { startSim, aws, openssl, tmpDir, waitFor, sleep, violations, certIdOf, LAMBDA_ARN, CLOUD_DIR } from './helpers.js';

let sim;
const dir = tmpDir('ca-binding-');
const cas = {};
before(async () => {
  sim = await startSim([]); // AWS's limits, the shipped Lambda under the shipped role policy
  sim.cwd = dir;
  fs.copyFileSync(sim.info.rootCa, path.join(dir, 'root.cert'));
  for (const name of ['caOne', 'caTwo']) cas[name] = await registerCa(name);
  const rule = fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'topic-rule.template.json'), 'utf8').replace('{{functionArn}}', LAMBDA_ARN);
  fs.writeFileSync(path.join(dir, 'rule.json'), rule);
  assert.equal((await aws(sim, ['create-topic-rule', '--rule-name', 'jitr', '--topic-rule-payload', 'file://rule.json'])).code, 0);
});
after(async () => { await sim.stop(); fs.rmSync(dir, { recursive: true, force: true }); });

/** Seed steps 1-7 for CA `name`: key, certificate, verification certificate, register, activate. */
async function registerCa (name) {
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  await openssl(dir, ['req', '-x509', '-new', '-key', `${name}.key`, '-sha256', '-days', '30', '-out', `${name}.pem`,
    '-subj', `/O=Example/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const code = (await aws(sim, ['get-registration-code'])).json.registrationCode;
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}-verification.key`]);
  await openssl(dir, ['req', '-new', '-key', `${name}-verification.key`, '-out', `${name}-verification.csr`, '-subj', `/CN=${code}`]);
  await openssl(dir, ['x509', '-req', '-in', `${name}-verification.csr`, '-CA', `${name}.pem`, '-CAkey', `${name}.key`,
    '-set_serial', '1', '-out', `${name}-verification.crt`, '-days', '30', '-sha256']);
  const reg = await aws(sim, ['register-ca-certificate', '--ca-certificate', `file://${name}.pem`,
    '--verification-certificate', `file://${name}-verification.crt`, '--set-as-active', '--allow-auto-registration']);
  assert.equal(reg.code, 0, reg.stderr);
  return reg.json.certificateId;
}

let serial = 100;
/** Seed step 10: a device key and certificate with subject `subject`, from CA `ca`, and the chain file. */
async function deviceCert (ca, file, subject) {
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${file}.key`]);
  await openssl(dir, ['req', '-new', '-key', `${file}.key`, '-out', `${file}.csr`, '-subj', subject]);
  await openssl(dir, ['x509', '-req', '-in', `${file}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-set_serial', String(serial++),
    '-out', `${file}.crt`, '-days', '30', '-sha256']);
  const pem = fs.readFileSync(path.join(dir, `${file}.crt`), 'utf8');
  fs.writeFileSync(path.join(dir, `${file}-chain.crt`), pem + fs.readFileSync(path.join(dir, `${ca}.pem`), 'utf8'));
  return { file, id: certIdOf(pem), arn: `arn:aws:iot:us-east-1:123456789012:cert/${certIdOf(pem)}` };
}

const lastConnect = new Map(); // client id -> time of its last CONNECT
/**
 * Seed step 11: mosquitto_pub with the device's chain and key, as client `clientId`; at
 * most one CONNECT per second per client id, as AWS allows.
 */
async function pub (dev, clientId, topic) {
  const wait = (lastConnect.get(clientId) ?? 0) + 1100 - Date.now();
  if (wait > 0) await sleep(wait);
  lastConnect.set(clientId, Date.now());
  return new Promise((resolve) => {
    execFile('mosquitto_pub', ['--cafile', 'root.cert', '--cert', `${dev.file}-chain.crt`, '--key', `${dev.file}.key`,
      '-h', 'localhost', '-p', String(sim.info.mqttPort), '-q', '1', '-t', topic, '-i', clientId, '-m', 'hello', '-d'],
    { cwd: dir, timeout: 15000 }, (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, out: stdout + stderr }));
  });
}

const describe = async (id) => (await aws(sim, ['describe-certificate', '--certificate-id', id])).json.certificateDescription;
const principals = async (thing) => (await aws(sim, ['list-thing-principals', '--thing-name', thing])).json.principals.sort();
const attachedPolicies = async (arn) => (await aws(sim, ['list-attached-policies', '--target', arn])).json.policies;
const caOf = async (thing) => (await aws(sim, ['describe-thing', '--thing-name', thing])).json.attributes.caCertificateId;
const published = async (topic) => (await sim.api('GET', `/_sim/publishes?topic=${encodeURIComponent(topic)}`)).body.publishes;

/** The finished Lambda invocation for certificate `id` (after `since`). */
async function lambdaRun (id, since = 0) {
  return waitFor(async () => (await sim.api('GET', '/_sim/lambda')).body.invocations
    .find((i) => i.time > since && i.event?.certificateId === id && 'ok' in i), { timeoutMs: 10000, what: `the Lambda run for ${id}` });
}

/** First connect registers (no CONNACK), the Lambda runs; returns its invocation. */
async function jitr (dev, clientId) {
  const since = Date.now() - 1;
  const first = await pub(dev, clientId, `dt/${clientId}/hello`);
  assert.notEqual(first.code, 0, 'the first connect only registers the certificate');
  assert.doesNotMatch(first.out, /CONNACK/);
  return lambdaRun(dev.id, since);
}

test('a thing enrolled under CA one cannot be taken over by a certificate from CA two', async () => {
  const victim = await deviceCert('caOne', 'victim-1', '/CN=victim');
  const run = await jitr(victim, 'victim');
  assert.equal(run.ok, true, run.error);
  assert.equal((await describe(victim.id)).status, 'ACTIVE');
  assert.equal(await caOf('victim'), cas.caOne, 'the thing records the CA that enrolled it');
  const ok = await pub(victim, 'victim', 'dt/victim/hello');
  assert.equal(ok.code, 0, ok.out);
  assert.match(ok.out, /PUBACK/);

  // CA two names the same thing: registered by JITR, refused by the Lambda
  const intruder = await deviceCert('caTwo', 'intruder', '/CN=victim');
  const refused = await jitr(intruder, 'victim');
  assert.equal(refused.ok, true, refused.error);
  assert.equal(refused.result.refused, `thing victim belongs to CA ${cas.caOne}, the certificate is from CA ${cas.caTwo}`);
  assert.match(sim.stderr(), new RegExp(`"msg":"refused: the thing belongs to another CA".*"certificateCaId":"${cas.caTwo}","thingCaId":"${cas.caOne}"`));
  const desc = await describe(intruder.id);
  assert.equal(desc.status, 'PENDING_ACTIVATION', 'not activated');
  assert.equal(desc.caCertificateId, cas.caTwo);
  assert.deepEqual(await principals('victim'), [victim.arn], 'not attached');
  assert.deepEqual(await attachedPolicies(intruder.arn), [], 'no policy');
  assert.equal(await caOf('victim'), cas.caOne);

  // it cannot connect or publish as the thing: every connect is closed without CONNACK
  const before = (await published('dt/victim/hello')).length;
  const again = await pub(intruder, 'victim', 'dt/victim/hello');
  assert.notEqual(again.code, 0);
  assert.doesNotMatch(again.out, /CONNACK|PUBACK/);
  assert.equal((await published('dt/victim/hello')).length, before);
  const refusals = (await sim.api('GET', '/_sim/refusals')).body.refusals.filter((r) => r.certificateId === intruder.id);
  assert.ok(refusals.length >= 2 && refusals.every((r) => /pendingActivation|registeredPendingActivation/.test(r.reason)), JSON.stringify(refusals));
  await lambdaRun(intruder.id, Date.now() - 1500); // the repeated event is refused again, nothing changes
  assert.deepEqual(await principals('victim'), [victim.arn]);

  // the rightful device still works
  const still = await pub(victim, 'victim', 'dt/victim/hello');
  assert.equal(still.code, 0, still.out);
  assert.equal((await violations(sim, 'victim')).total, 0);
});

test('a certificate from the other CA that an operator activated is not touched', async () => {
  const dev = await deviceCert('caTwo', 'active-intruder', '/CN=victim');
  await jitr(dev, 'victim');
  assert.equal((await aws(sim, ['update-certificate', '--certificate-id', dev.id, '--new-status', 'ACTIVE'])).code, 0);
  // the event once more (AWS republishes it; here from the sim's publish hook)
  const since = Date.now() - 1;
  const event = { certificateId: dev.id, caCertificateId: cas.caTwo, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '123456789012', certificateRegistrationTimestamp: String(Date.now()) };
  assert.equal((await sim.api('POST', '/_sim/publish', { topic: `$aws/events/certificates/registered/${cas.caTwo}`, payload: event, qos: 0 })).status, 200);
  const run = await lambdaRun(dev.id, since);
  assert.match(run.result.refused, /belongs to CA/);
  assert.equal((await describe(dev.id)).status, 'ACTIVE', 'its status is left as the operator set it');
  assert.deepEqual(await attachedPolicies(dev.arn), []);
  assert.equal((await principals('victim')).includes(dev.arn), false);
  // without the thing and a policy it cannot connect as the thing
  const r = await pub(dev, 'victim', 'dt/victim/hello');
  assert.notEqual(r.code, 0);
  assert.doesNotMatch(r.out, /CONNACK/);
  // an ACTIVE certificate without a policy allowing iot:Connect: AWS counts a refused connect
  assert.deepEqual((await violations(sim, 'victim')).counters, { connectNotAuthorized: 1 });
  await sim.api('DELETE', '/_sim/violations/victim');
});

test('renewal under the same CA attaches the new certificate to the thing', async () => {
  const renewed = await deviceCert('caOne', 'victim-2', '/CN=victim');
  const run = await jitr(renewed, 'victim');
  assert.equal(run.ok, true, run.error);
  assert.equal(run.result.activated, true);
  assert.equal((await principals('victim')).length, 2);
  assert.ok((await principals('victim')).includes(renewed.arn));
  const r = await pub(renewed, 'victim', 'dt/victim/renewed');
  assert.equal(r.code, 0, r.out);
  assert.equal((await violations(sim, 'victim')).total, 0);
});

test('a gateway\'s namespace `<gateway>:` belongs to the gateway\'s CA; gateway names may not contain `:`', async () => {
  const gw = await deviceCert('caOne', 'site', '/OU=gateway/CN=site');
  assert.equal((await jitr(gw, 'site')).ok, true);
  // CA two may not enroll a thing in gateway site's namespace (which site's policy reaches)
  const squat = await deviceCert('caTwo', 'site-s1-squat', '/CN=site:s1');
  const refused = await jitr(squat, 'site:s1');
  assert.equal(refused.result.refused, `gateway namespace site belongs to CA ${cas.caOne}, the certificate is from CA ${cas.caTwo}`);
  assert.equal((await describe(squat.id)).status, 'PENDING_ACTIVATION');
  assert.equal((await aws(sim, ['describe-thing', '--thing-name', 'site:s1'])).code, 254, 'no thing was created');
  // its own gateway `site-2` and that gateway's sensor are fine: `site` only prefixes `site-2`
  const gw2 = await deviceCert('caTwo', 'site-2', '/OU=gateway/CN=site-2');
  assert.equal((await jitr(gw2, 'site-2')).result.activated, true);
  const s1 = await deviceCert('caTwo', 'site-2-s1', '/CN=site-2:s1');
  assert.equal((await jitr(s1, 'site-2:s1')).result.activated, true);
  // CA one's sensor of site, enrolled before or after its gateway, is fine
  const own = await deviceCert('caOne', 'site-s2', '/CN=site:s2');
  assert.equal((await jitr(own, 'site:s2')).result.activated, true);
  const early = await deviceCert('caOne', 'later-s1', '/CN=later:s1');
  assert.equal((await jitr(early, 'later:s1')).result.activated, true, 'the namespace is reserved for the sensor\'s CA');
  assert.equal(await caOf('later'), cas.caOne);
  // site's gateway certificate publishes for site:s2 but not for site-2's things
  const ok = await pub(gw, 'site', 'dt/site:s2/t');
  assert.equal(ok.code, 0, ok.out);
  const cross = await pub(gw, 'site', 'dt/site-2:s1/t');
  assert.notEqual(cross.code, 0, 'disconnected: not its namespace');
  assert.equal((await published('dt/site-2:s1/t')).length, 0);
  assert.deepEqual((await violations(sim, 'site')).counters, { publishNotAuthorized: 1 });
  // a gateway certificate whose name has the separator stays pending
  const bad = await deviceCert('caOne', 'bad-gw', '/OU=gateway/CN=a:b');
  const run = await jitr(bad, 'a:b');
  assert.equal(run.ok, false);
  assert.match(run.error, /a gateway's thing name may not contain ":"/);
  assert.equal((await describe(bad.id)).status, 'PENDING_ACTIVATION');
  for (const c of ['site-2', 'site-2:s1', 'site:s2', 'later:s1', 'a:b']) assert.equal((await violations(sim, c)).total, 0, c);
});

test('a thing from before CA binding takes the CA of its certificates; not a foreign one', async () => {
  // enrolled the old way: a thing without attributes, a certificate of CA one attached
  const old = await deviceCert('caOne', 'legacy-1', '/CN=legacy');
  await sim.api('PUT', '/_sim/lambda', { enabled: false });
  await pub(old, 'legacy', 'dt/legacy/x');
  await sim.api('PUT', '/_sim/lambda', { enabled: true });
  assert.equal((await aws(sim, ['create-thing', '--thing-name', 'legacy'])).code, 0);
  assert.equal((await aws(sim, ['attach-thing-principal', '--thing-name', 'legacy', '--principal', old.arn])).code, 0);
  assert.equal((await aws(sim, ['describe-thing', '--thing-name', 'legacy'])).json.attributes.caCertificateId, undefined);
  // a certificate of CA two is refused, and binds nothing
  const foreign = await deviceCert('caTwo', 'legacy-foreign', '/CN=legacy');
  assert.match((await jitr(foreign, 'legacy')).result.refused, new RegExp(`thing legacy belongs to CA ${cas.caOne}`));
  assert.equal((await aws(sim, ['describe-thing', '--thing-name', 'legacy'])).json.attributes.caCertificateId, undefined);
  // its renewal under CA one binds the thing to CA one
  const renewed = await deviceCert('caOne', 'legacy-2', '/CN=legacy');
  assert.equal((await jitr(renewed, 'legacy')).result.activated, true);
  assert.equal(await caOf('legacy'), cas.caOne);
  assert.equal((await violations(sim, 'legacy')).total, 0);
});

test('CA hand-over: the operator moves the things of CA one to CA two (README), then CA two enrolls them', async () => {
  // README "CA hand-over", with the CLI: every thing bound to the old CA gets the new one
  const things = (await aws(sim, ['list-things', '--attribute-name', 'caCertificateId', '--attribute-value', cas.caOne])).json.things;
  assert.deepEqual(things.map((t) => t.thingName).sort(), ['later', 'later:s1', 'legacy', 'site', 'site:s2', 'victim']);
  for (const t of things.filter((x) => x.thingName === 'victim')) {
    const payload = JSON.stringify({ attributes: { caCertificateId: cas.caTwo, previousCaCertificateId: cas.caOne }, merge: true });
    const r = await aws(sim, ['update-thing', '--thing-name', t.thingName, '--attribute-payload', payload, '--expected-version', String(t.version)]);
    assert.equal(r.code, 0, r.stderr);
    // a stale expected version is refused: nobody else changed it meanwhile
    const stale = await aws(sim, ['update-thing', '--thing-name', t.thingName, '--attribute-payload', payload, '--expected-version', String(t.version)]);
    assert.match(stale.stderr, /VersionConflictException/);
  }
  assert.equal(await caOf('victim'), cas.caTwo);
  assert.equal((await aws(sim, ['describe-thing', '--thing-name', 'victim'])).json.attributes.previousCaCertificateId, cas.caOne);
  // CA two's certificate, refused before, is now enrolled on its next connect
  const dev = { file: 'intruder', id: certIdOf(fs.readFileSync(path.join(dir, 'intruder.crt'), 'utf8')) };
  const run = await jitr(dev, 'victim');
  assert.equal(run.result.activated, true);
  const r = await pub(dev, 'victim', 'dt/victim/moved');
  assert.equal(r.code, 0, r.out);
  // and CA one's certificates no longer get new things attached: a renewal from CA one is refused
  const late = await deviceCert('caOne', 'victim-3', '/CN=victim');
  assert.match((await jitr(late, 'victim')).result.refused, new RegExp(`belongs to CA ${cas.caTwo}`));
  assert.equal((await violations(sim, 'victim')).total, 0);
});
