// The seed document's JITR walkthrough, run with the real tools against iot-sim:
// openssl for the CA, verification and device certificates (steps 1, 3, 4, 10), the aws
// CLI for steps 2, 5-7 and 9 and to watch the certificate, and mosquitto_pub for step 11.
// Step 8 (the Lambda) is the shipped cloud/jitr-lambda, mapped with --lambda, its calls
// authorized against the IAM role policy deploy.sh renders (--lambda-role-policy).
//
// One deliberate difference from the seed: the device publishes as its own thing name to
// dt/<thing>/..., because the shipped policy is least-privilege; the seed's literal
// `-i anyclientID -t foo/bar` is shown to be refused by that policy.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { startSim, aws, openssl, tmpDir, waitFor, sleep, LAMBDA_ARN, CLOUD_DIR } from './helpers.js';

let sim;
const dir = tmpDir('seed-');
before(async () => { sim = await startSim(['--lambda-delay-ms', '200']); sim.cwd = dir; });
after(async () => { await sim.stop(); fs.rmSync(dir, { recursive: true, force: true }); });

function mosquittoPub (args) {
  return new Promise((resolve) => {
    execFile('mosquitto_pub', args, { cwd: dir, timeout: 15000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

test('seed JITR walkthrough with openssl, aws CLI and mosquitto_pub', async () => {
  // 1. the CA
  await openssl(dir, ['genrsa', '-out', 'sampleCACertificate.key', '2048']);
  await openssl(dir, ['req', '-x509', '-new', '-nodes', '-key', 'sampleCACertificate.key', '-sha256', '-days', '365',
    '-out', 'sampleCACertificate.pem', '-subj', '/C=US/O=Example/CN=sample CA']);
  // 2. registration code
  const code = (await aws(sim, ['get-registration-code'])).json.registrationCode;
  assert.match(code, /^[0-9a-f]{64}$/);
  // 3. + 4. verification certificate with CN = registration code, signed by the CA
  await openssl(dir, ['genrsa', '-out', 'privateKeyVerification.key', '2048']);
  await openssl(dir, ['req', '-new', '-key', 'privateKeyVerification.key', '-out', 'privateKeyVerification.csr', '-subj', `/CN=${code}`]);
  await openssl(dir, ['x509', '-req', '-in', 'privateKeyVerification.csr', '-CA', 'sampleCACertificate.pem',
    '-CAkey', 'sampleCACertificate.key', '-CAcreateserial', '-out', 'privateKeyVerification.crt', '-days', '365', '-sha256']);
  // 5. register the CA: it starts INACTIVE
  const reg = await aws(sim, ['register-ca-certificate', '--ca-certificate', 'file://sampleCACertificate.pem',
    '--verification-certificate', 'file://privateKeyVerification.crt']);
  assert.equal(reg.code, 0, reg.stderr);
  const caId = reg.json.certificateId;
  assert.match(caId, /^[0-9a-f]{64}$/);
  assert.equal(reg.json.certificateArn, `arn:aws:iot:us-east-1:123456789012:cacert/${caId}`);
  let ca = (await aws(sim, ['describe-ca-certificate', '--certificate-id', caId])).json.certificateDescription;
  assert.equal(ca.status, 'INACTIVE');
  assert.equal(ca.autoRegistrationStatus, 'DISABLE');
  // 6. + 7. activate, enable auto-registration
  assert.equal((await aws(sim, ['update-ca-certificate', '--certificate-id', caId, '--new-status', 'ACTIVE'])).code, 0);
  assert.equal((await aws(sim, ['update-ca-certificate', '--certificate-id', caId, '--new-auto-registration-status', 'ENABLE'])).code, 0);
  ca = (await aws(sim, ['describe-ca-certificate', '--certificate-id', caId])).json.certificateDescription;
  assert.equal(ca.status, 'ACTIVE');
  assert.equal(ca.autoRegistrationStatus, 'ENABLE');
  // 9. the rule, from the shipped template
  const rule = fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'topic-rule.template.json'), 'utf8').replace('{{functionArn}}', LAMBDA_ARN);
  fs.writeFileSync(path.join(dir, 'rule.json'), rule);
  assert.equal((await aws(sim, ['create-topic-rule', '--rule-name', 'jitr', '--topic-rule-payload', 'file://rule.json'])).code, 0);
  const got = (await aws(sim, ['get-topic-rule', '--rule-name', 'jitr'])).json;
  assert.equal(got.rule.actions[0].lambda.functionArn, LAMBDA_ARN);
  // 10. the device certificate and the chain file
  await openssl(dir, ['genrsa', '-out', 'deviceCert.key', '2048']);
  await openssl(dir, ['req', '-new', '-key', 'deviceCert.key', '-out', 'deviceCert.csr', '-subj', '/CN=seed-device-1']);
  await openssl(dir, ['x509', '-req', '-in', 'deviceCert.csr', '-CA', 'sampleCACertificate.pem', '-CAkey', 'sampleCACertificate.key',
    '-CAcreateserial', '-out', 'deviceCert.crt', '-days', '365', '-sha256']);
  fs.writeFileSync(path.join(dir, 'deviceCertAndCACert.crt'),
    fs.readFileSync(path.join(dir, 'deviceCert.crt'), 'utf8') + fs.readFileSync(path.join(dir, 'sampleCACertificate.pem'), 'utf8'));
  fs.copyFileSync(sim.info.rootCa, path.join(dir, 'root.cert'));
  // 11. endpoint, then the publish
  const endpoint = (await aws(sim, ['describe-endpoint', '--endpoint-type', 'iot:Data-ATS'])).json.endpointAddress;
  assert.equal(endpoint, 'localhost');
  const pub = (clientId, topic) => mosquittoPub(['--cafile', 'root.cert', '--cert', 'deviceCertAndCACert.crt', '--key', 'deviceCert.key',
    '-h', endpoint, '-p', String(sim.info.mqttPort), '-q', '1', '-t', topic, '-i', clientId, '--tls-version', 'tlsv1.2', '-m', 'Hello', '-d']);

  // hold the Lambda so the PENDING_ACTIVATION state can be looked at with the CLI
  await sim.api('PUT', '/_sim/lambda', { paused: true });
  const first = await pub('seed-device-1', 'dt/seed-device-1/hello');
  assert.notEqual(first.code, 0, 'the first publish must fail: AWS drops the connection after registering');
  assert.doesNotMatch(first.out, /CONNACK/, first.out);
  const listed = (await aws(sim, ['list-certificates-by-ca', '--ca-certificate-id', caId])).json.certificates;
  assert.equal(listed.length, 1);
  const certId = listed[0].certificateId;
  let desc = (await aws(sim, ['describe-certificate', '--certificate-id', certId])).json.certificateDescription;
  assert.equal(desc.status, 'PENDING_ACTIVATION');
  assert.equal(desc.caCertificateId, caId);

  // release the Lambda: it runs (200 ms after release) and activates the certificate
  assert.deepEqual((await sim.api('PUT', '/_sim/lambda', { paused: false })).body, { enabled: true, paused: false, held: 0 });
  await waitFor(async () => (await sim.api('GET', `/certificates/${certId}`)).body.certificateDescription.status === 'ACTIVE',
    { timeoutMs: 10000, what: 'certificate ACTIVE' });
  desc = (await aws(sim, ['describe-certificate', '--certificate-id', certId])).json.certificateDescription;
  assert.equal(desc.status, 'ACTIVE');
  const principals = (await aws(sim, ['list-thing-principals', '--thing-name', 'seed-device-1'])).json.principals;
  assert.deepEqual(principals, [desc.certificateArn]);
  const policies = (await aws(sim, ['list-attached-policies', '--target', desc.certificateArn])).json.policies;
  assert.deepEqual(policies.map((p) => p.policyName), ['gateway-agent-device']);
  const thing = (await aws(sim, ['describe-thing', '--thing-name', 'seed-device-1'])).json;
  assert.deepEqual(thing.attributes, { caCertificateId: caId }, 'the thing belongs to the CA that enrolled it');
  assert.deepEqual((await sim.api('GET', '/_sim/lambda')).body.denied, [], 'the role policy allowed every call');

  await sleep(1100); // AWS allows 1 CONNECT/s per client id
  const second = await pub('seed-device-1', 'dt/seed-device-1/hello');
  assert.equal(second.code, 0, second.out);
  assert.match(second.out, /CONNACK/);
  assert.match(second.out, /PUBACK/);
  const log = (await sim.api('GET', '/_sim/publishes?topic=dt/seed-device-1/hello')).body.publishes;
  assert.equal(log.length, 1);
  assert.equal(Buffer.from(log[0].payload, 'base64').toString(), 'Hello');
  assert.equal(log[0].thingName, 'seed-device-1');
  assert.equal(log[0].certificateId, certId);

  // the seed's literal client id is refused by the least-privilege policy
  const literal = await pub('anyclientID', 'foo/bar');
  assert.notEqual(literal.code, 0);
  assert.equal((await sim.api('GET', '/_sim/violations/anyclientID')).body.counters.connectNotAuthorized, 1);
  assert.equal((await sim.api('GET', '/_sim/violations/seed-device-1')).body.total, 0);
});
