// The control-plane REST API, driven by the real aws CLI (Debian's awscli 2.x) and the
// AWS SDK v3, including AWS-shaped errors and malformed requests.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { IoTClient, DescribeThingCommand, ListCertificatesCommand, ResourceNotFoundException } from '@aws-sdk/client-iot';
import { startSim, aws, tmpDir, makeCa, makeLeaf, connect, certIdOf } from './helpers.js';

let sim;
let dir;
before(async () => {
  dir = tmpDir('api-');
  sim = await startSim(['--max-connects-per-second', '0']);
  sim.cwd = dir;
});
after(async () => { await sim.stop(); fs.rmSync(dir, { recursive: true, force: true }); });

const cli = (...args) => aws(sim, args);
const write = (name, text) => { fs.writeFileSync(path.join(dir, name), text); return `file://${name}`; };
function assertCliError (r, type, op) {
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`An error occurred \\(${type}\\) when calling the ${op} operation: \\S`), r.stderr);
}

// Every operation is called once through the aws CLI; further cases (most error paths)
// go straight to the HTTP API to keep the suite fast (each CLI run costs ~0.7 s of CPU).
const api = (...a) => sim.api(...a);
const assertApiError = (r, status, type) => assert.deepEqual([r.status, r.type, typeof r.body.message], [status, type, 'string'], JSON.stringify(r.body));

test('CA lifecycle through the aws CLI, with AWS errors', async () => {
  const code = (await cli('get-registration-code')).json.registrationCode;
  const ca = await makeCa(dir, 'ca');
  const other = await makeCa(dir, 'other');
  const good = await makeLeaf(dir, ca, code, 'verif');
  const wrongCn = await makeLeaf(dir, ca, 'not-the-code', 'verif-cn');
  const wrongSigner = await makeLeaf(dir, other, code, 'verif-signer');

  assertCliError(await cli('register-ca-certificate', '--ca-certificate', `file://${ca.cert}`, '--verification-certificate', `file://${wrongCn.cert}`),
    'RegistrationCodeValidationException', 'RegisterCACertificate');
  assertApiError(await api('POST', '/cacertificate', { caCertificate: ca.pem, verificationCertificate: wrongSigner.pem }), 400, 'CertificateValidationException');
  assertApiError(await api('POST', '/cacertificate', { caCertificate: ca.pem }), 400, 'InvalidRequestException');
  assertApiError(await api('POST', '/cacertificate', { caCertificate: 'junk', verificationCertificate: good.pem }), 400, 'CertificateValidationException');
  assertApiError(await api('POST', '/cacertificate', { caCertificate: good.pem, verificationCertificate: good.pem }), 400, 'CertificateValidationException');

  const reg = await cli('register-ca-certificate', '--ca-certificate', `file://${ca.cert}`, '--verification-certificate', `file://${good.cert}`,
    '--allow-auto-registration', '--set-as-active');
  assert.equal(reg.code, 0, reg.stderr);
  const id = reg.json.certificateId;
  assert.equal(id, certIdOf(ca.pem));
  const dup = await api('POST', '/cacertificate', { caCertificate: ca.pem, verificationCertificate: good.pem });
  assertApiError(dup, 409, 'ResourceAlreadyExistsException');
  assert.equal(dup.body.resourceId, id);
  let d = (await cli('describe-ca-certificate', '--certificate-id', id)).json.certificateDescription;
  assert.deepEqual([d.status, d.autoRegistrationStatus, d.certificateMode, d.ownedBy], ['ACTIVE', 'ENABLE', 'DEFAULT', '123456789012']);
  assert.equal(d.certificatePem.trim(), ca.pem.trim());

  // SNI_ONLY needs no verification certificate
  const sni = await cli('register-ca-certificate', '--ca-certificate', `file://${other.cert}`, '--certificate-mode', 'SNI_ONLY');
  assert.equal(sni.code, 0, sni.stderr);
  assert.equal((await api('GET', `/cacertificate/${sni.json.certificateId}`)).body.certificateDescription.certificateMode, 'SNI_ONLY');

  assert.equal((await cli('update-ca-certificate', '--certificate-id', id, '--new-status', 'INACTIVE', '--new-auto-registration-status', 'DISABLE')).code, 0);
  d = (await api('GET', `/cacertificate/${id}`)).body.certificateDescription;
  assert.deepEqual([d.status, d.autoRegistrationStatus], ['INACTIVE', 'DISABLE']);
  assertApiError(await api('PUT', `/cacertificate/${'f'.repeat(64)}?newStatus=ACTIVE`), 404, 'ResourceNotFoundException');
  assertApiError(await api('PUT', `/cacertificate/${id}?newStatus=REVOKED`), 400, 'InvalidRequestException');
  const list = (await cli('list-ca-certificates')).json.certificates.map((c) => c.certificateId).sort();
  assert.deepEqual(list, [id, sni.json.certificateId].sort());
});

test('device certificates, policies and things through the aws CLI', async () => {
  const ca = await makeCa(dir, 'ca-dev');
  const code = (await api('GET', '/registrationcode')).body.registrationCode;
  const v = await makeLeaf(dir, ca, code, 'verif-dev');
  const caId = (await api('POST', '/cacertificate?setAsActive=true&allowAutoRegistration=true', { caCertificate: ca.pem, verificationCertificate: v.pem })).body.certificateId;
  const dev = await makeLeaf(dir, ca, 'api-thing');
  assert.equal((await connect(sim, dev, 'api-thing')).ok, false); // JITR; no rule in this sim
  const id = certIdOf(dev.pem);
  const arn = `arn:aws:iot:us-east-1:123456789012:cert/${id}`;

  const c = (await cli('describe-certificate', '--certificate-id', id)).json.certificateDescription;
  assert.deepEqual([c.status, c.caCertificateId, c.certificateArn], ['PENDING_ACTIVATION', caId, arn]);
  assert.deepEqual((await cli('list-certificates')).json.certificates.map((x) => x.certificateId), [id]);
  assert.deepEqual((await cli('list-certificates-by-ca', '--ca-certificate-id', caId)).json.certificates.map((x) => x.status), ['PENDING_ACTIVATION']);
  assertCliError(await cli('describe-certificate', '--certificate-id', '0'.repeat(64)), 'ResourceNotFoundException', 'DescribeCertificate');

  // PENDING_* cannot be set by a caller
  assertCliError(await cli('update-certificate', '--certificate-id', id, '--new-status', 'PENDING_ACTIVATION'), 'CertificateStateException', 'UpdateCertificate');
  assertApiError(await api('PUT', `/certificates/${id}?newStatus=PENDING_TRANSFER`), 406, 'CertificateStateException');
  assert.equal((await cli('update-certificate', '--certificate-id', id, '--new-status', 'ACTIVE')).code, 0);

  const policyDoc = JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }] });
  assertCliError(await cli('create-policy', '--policy-name', 'bad', '--policy-document', '{"Statement": 5}'), 'MalformedPolicyException', 'CreatePolicy');
  const p = await cli('create-policy', '--policy-name', 'api-policy', '--policy-document', write('policy.json', policyDoc));
  assert.equal(p.code, 0, p.stderr);
  assert.deepEqual([p.json.policyName, p.json.policyVersionId, p.json.policyArn], ['api-policy', '1', 'arn:aws:iot:us-east-1:123456789012:policy/api-policy']);
  assertApiError(await api('POST', '/policies/api-policy', { policyDocument: policyDoc }), 409, 'ResourceAlreadyExistsException');
  const g = (await cli('get-policy', '--policy-name', 'api-policy')).json;
  assert.deepEqual([g.policyDocument, g.defaultVersionId], [policyDoc, '1']);
  assertApiError(await api('GET', '/policies/nope'), 404, 'ResourceNotFoundException');

  assert.equal((await api('POST', '/policies/api-policy-2', { policyDocument: policyDoc })).status, 200);
  assert.equal((await cli('attach-policy', '--policy-name', 'api-policy', '--target', arn)).code, 0);
  assert.equal((await api('PUT', '/target-policies/api-policy', { target: arn })).status, 200, 'idempotent');
  assert.equal((await cli('attach-principal-policy', '--policy-name', 'api-policy-2', '--principal', arn)).code, 0);
  assertApiError(await api('PUT', '/target-policies/nope', { target: arn }), 404, 'ResourceNotFoundException');
  assertApiError(await api('PUT', '/target-policies/api-policy', { target: 'not-an-arn' }), 400, 'InvalidRequestException');
  assertApiError(await api('PUT', '/principal-policies/api-policy'), 400, 'InvalidRequestException');
  assert.deepEqual((await cli('list-attached-policies', '--target', arn)).json.policies.map((x) => x.policyName), ['api-policy', 'api-policy-2']);

  const t = await cli('create-thing', '--thing-name', 'api-thing');
  assert.equal(t.code, 0, t.stderr);
  assert.equal(t.json.thingArn, 'arn:aws:iot:us-east-1:123456789012:thing/api-thing');
  assert.equal((await api('POST', '/things/api-thing', {})).body.thingId, t.json.thingId, 'idempotent');
  assertApiError(await api('POST', '/things/api-thing', { attributePayload: { attributes: { a: 'b' } } }), 409, 'ResourceAlreadyExistsException');
  assertApiError(await api('POST', '/things/bad%20name', {}), 400, 'InvalidRequestException');
  assert.equal((await cli('describe-thing', '--thing-name', 'api-thing')).json.thingId, t.json.thingId);
  assertApiError(await api('GET', '/things/nope'), 404, 'ResourceNotFoundException');

  // attributes: create-thing with a payload, update-thing (merge, replace, remove, expected
  // version), list-things by attribute
  const attrs = (name) => cli('describe-thing', '--thing-name', name).then((r) => [r.json.attributes, r.json.version]);
  assert.equal((await cli('create-thing', '--thing-name', 'api-attr', '--attribute-payload', '{"attributes":{"caCertificateId":"c1","site":"s7"}}')).code, 0);
  assert.deepEqual(await attrs('api-attr'), [{ caCertificateId: 'c1', site: 's7' }, 1]);
  assert.equal((await cli('update-thing', '--thing-name', 'api-attr', '--attribute-payload', '{"attributes":{"caCertificateId":"c2"},"merge":true}', '--expected-version', '1')).code, 0);
  assert.deepEqual(await attrs('api-attr'), [{ caCertificateId: 'c2', site: 's7' }, 2]);
  assertCliError(await cli('update-thing', '--thing-name', 'api-attr', '--attribute-payload', '{"attributes":{"caCertificateId":"c3"},"merge":true}', '--expected-version', '1'),
    'VersionConflictException', 'UpdateThing');
  assert.equal((await cli('update-thing', '--thing-name', 'api-attr', '--attribute-payload', '{"attributes":{"site":""},"merge":true}')).code, 0);
  assert.deepEqual(await attrs('api-attr'), [{ caCertificateId: 'c2' }, 3], 'an empty value removes the attribute');
  assert.equal((await cli('update-thing', '--thing-name', 'api-attr', '--attribute-payload', '{"attributes":{"x":"y"}}')).code, 0);
  assert.deepEqual(await attrs('api-attr'), [{ x: 'y' }, 4], 'without merge the attributes are replaced');
  assertCliError(await cli('update-thing', '--thing-name', 'nope', '--attribute-payload', '{"attributes":{"x":"y"}}'), 'ResourceNotFoundException', 'UpdateThing');
  assertApiError(await api('POST', '/things/api-attr-bad', { attributePayload: { attributes: { 'bad name': 'v' } } }), 400, 'InvalidRequestException');
  assertApiError(await api('POST', '/things/api-attr-4', { attributePayload: { attributes: { a: '1', b: '2', c: '3', d: '4' } } }), 400, 'InvalidRequestException');
  assert.deepEqual((await cli('list-things', '--attribute-name', 'x', '--attribute-value', 'y')).json.things.map((x) => x.thingName), ['api-attr']);
  assert.deepEqual((await cli('list-things', '--attribute-name', 'x', '--attribute-value', 'z')).json.things, []);
  assert.equal((await cli('attach-thing-principal', '--thing-name', 'api-thing', '--principal', arn)).code, 0);
  assertApiError(await api('PUT', '/things/nope/principals', undefined, { 'x-amzn-principal': arn }), 404, 'ResourceNotFoundException');
  assert.deepEqual((await cli('list-thing-principals', '--thing-name', 'api-thing')).json.principals, [arn]);

  // the device now connects
  const ok = await connect(sim, dev, 'api-thing');
  assert.equal(ok.ok, true);
  ok.client.end(true);

  // deletion: not while ACTIVE, not while attached; a detached, revoked certificate goes
  assertCliError(await cli('delete-certificate', '--certificate-id', id), 'CertificateStateException', 'DeleteCertificate');
  assert.equal((await api('PUT', `/certificates/${id}?newStatus=REVOKED`)).status, 200);
  assertApiError(await api('DELETE', `/certificates/${id}`), 409, 'DeleteConflictException');
  const dev2 = await makeLeaf(dir, ca, 'api-thing-2');
  assert.equal((await connect(sim, dev2, 'api-thing-2')).ok, false);
  const id2 = certIdOf(dev2.pem);
  assert.equal((await api('PUT', `/certificates/${id2}?newStatus=INACTIVE`)).status, 200);
  assert.equal((await cli('delete-certificate', '--certificate-id', id2)).code, 0);
  assertApiError(await api('GET', `/certificates/${id2}`), 404, 'ResourceNotFoundException');
});

test('describe-endpoint, topic rules, and the SDK', async () => {
  assert.equal((await cli('describe-endpoint', '--endpoint-type', 'iot:Data-ATS')).json.endpointAddress, 'localhost');
  assert.equal((await api('GET', '/endpoint')).body.endpointAddress, 'localhost');
  assertApiError(await api('GET', '/endpoint?endpointType=bogus'), 400, 'InvalidRequestException');
  const payload = write('rule.json', JSON.stringify({
    sql: "SELECT * FROM 'dt/+/alarm' WHERE level = \"high\"", awsIotSqlVersion: '2016-03-23',
    actions: [{ lambda: { functionArn: 'arn:aws:lambda:us-east-1:123456789012:function:f' } }]
  }));
  assert.equal((await cli('create-topic-rule', '--rule-name', 'alarms', '--topic-rule-payload', payload)).code, 0);
  const body = JSON.parse(fs.readFileSync(path.join(dir, 'rule.json'), 'utf8'));
  assertApiError(await api('POST', '/rules/alarms', body), 409, 'ResourceAlreadyExistsException');
  assertApiError(await api('POST', '/rules/bad', { sql: 'SELECT nonsense', actions: [] }), 400, 'SqlParseException');
  assertApiError(await api('POST', '/rules/bad-name', body), 400, 'InvalidRequestException');
  const r = (await cli('get-topic-rule', '--rule-name', 'alarms')).json;
  assert.equal(r.ruleArn, 'arn:aws:iot:us-east-1:123456789012:rule/alarms');
  assert.equal(r.rule.sql, "SELECT * FROM 'dt/+/alarm' WHERE level = \"high\"");
  assert.equal(r.rule.ruleDisabled, false);
  assertApiError(await api('GET', '/rules/nope'), 401, 'UnauthorizedException');

  const sdk = new IoTClient({ region: 'us-east-1', endpoint: sim.base, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });
  await assert.rejects(sdk.send(new DescribeThingCommand({ thingName: 'nope' })), (e) => e instanceof ResourceNotFoundException);
  const certs = await sdk.send(new ListCertificatesCommand({ pageSize: 1 }));
  assert.ok(Array.isArray(certs.certificates));
  sdk.destroy();
});

test('detach, delete and list operations through the aws CLI', async () => {
  const ca = await makeCa(dir, 'ca-cleanup');
  const code = (await api('GET', '/registrationcode')).body.registrationCode;
  const v = await makeLeaf(dir, ca, code, 'verif-cleanup');
  const caId = (await api('POST', '/cacertificate?setAsActive=true&allowAutoRegistration=true', { caCertificate: ca.pem, verificationCertificate: v.pem })).body.certificateId;
  const dev = await makeLeaf(dir, ca, 'cleanup-t');
  assert.equal((await connect(sim, dev, 'cleanup-t')).ok, false);
  const arn = `arn:aws:iot:us-east-1:123456789012:cert/${certIdOf(dev.pem)}`;
  const doc = JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }] });
  assert.equal((await api('POST', '/policies/cleanup-p', { policyDocument: doc })).status, 200);
  assert.equal((await api('PUT', '/target-policies/cleanup-p', { target: arn })).status, 200);
  assert.equal((await api('POST', '/things/cleanup-t', {})).status, 200);
  assert.equal((await api('PUT', '/things/cleanup-t/principals', undefined, { 'x-amzn-principal': arn })).status, 200);

  assert.ok((await cli('list-things')).json.things.some((t) => t.thingName === 'cleanup-t'));
  assert.ok((await cli('list-policies')).json.policies.some((p) => p.policyName === 'cleanup-p'));
  assert.deepEqual((await cli('list-principal-things', '--principal', arn)).json.things, ['cleanup-t']);
  assertCliError(await cli('delete-policy', '--policy-name', 'cleanup-p'), 'DeleteConflictException', 'DeletePolicy');
  assertCliError(await cli('delete-thing', '--thing-name', 'cleanup-t'), 'InvalidRequestException', 'DeleteThing');
  assert.equal((await cli('detach-policy', '--policy-name', 'cleanup-p', '--target', arn)).code, 0);
  assert.equal((await cli('detach-thing-principal', '--thing-name', 'cleanup-t', '--principal', arn)).code, 0);
  assert.deepEqual((await api('POST', `/attached-policies/${encodeURIComponent(arn)}`)).body.policies, []);
  assert.equal((await cli('delete-policy', '--policy-name', 'cleanup-p')).code, 0);
  assert.equal((await cli('delete-thing', '--thing-name', 'cleanup-t')).code, 0);
  assertApiError(await api('GET', '/things/cleanup-t'), 404, 'ResourceNotFoundException');
  assert.equal((await api('DELETE', '/things/cleanup-t')).status, 200, 'deleting a missing thing succeeds');

  const rule = { sql: "SELECT * FROM 'a/#'", actions: [] };
  assert.equal((await api('POST', '/rules/cleanup_r', rule)).status, 200);
  assert.equal((await cli('replace-topic-rule', '--rule-name', 'cleanup_r', '--topic-rule-payload', write('rule2.json', JSON.stringify({ sql: "SELECT * FROM 'b/#'", actions: [] })))).code, 0);
  assert.equal((await api('GET', '/rules/cleanup_r')).body.rule.sql, "SELECT * FROM 'b/#'");
  assert.equal((await cli('delete-topic-rule', '--rule-name', 'cleanup_r')).code, 0);
  assertApiError(await api('GET', '/rules/cleanup_r'), 401, 'UnauthorizedException');

  assertCliError(await cli('delete-ca-certificate', '--certificate-id', caId), 'CertificateStateException', 'DeleteCACertificate');
  assert.equal((await api('PUT', `/cacertificate/${caId}?newStatus=INACTIVE`)).status, 200);
  assert.equal((await cli('delete-ca-certificate', '--certificate-id', caId)).code, 0);
  assertApiError(await api('GET', `/cacertificate/${caId}`), 404, 'ResourceNotFoundException');
});

test('malformed requests get AWS-shaped errors and never crash the sim', async () => {
  const raw = (method, p, body, headers = {}) => fetch(sim.base + p, { method, body, headers }).then(async (res) => ({
    status: res.status, type: res.headers.get('x-amzn-errortype'), body: await res.json()
  }));
  let r = await raw('POST', '/policies/x', '{not json');
  assert.deepEqual([r.status, r.type], [400, 'InvalidRequestException']);
  assert.equal(typeof r.body.message, 'string');
  r = await raw('POST', '/policies/x', '[1,2]');
  assert.deepEqual([r.status, r.type], [400, 'InvalidRequestException']);
  r = await raw('GET', '/things/%E0%A4%A');
  assert.deepEqual([r.status, r.type], [400, 'InvalidRequestException']);
  r = await raw('GET', '/no/such/operation');
  assert.deepEqual([r.status, r.type], [404, 'UnknownOperationException']);
  r = await raw('POST', '/things/x', 'x'.repeat(2 * 1024 * 1024));
  assert.deepEqual([r.status, r.type], [400, 'InvalidRequestException']);
  r = await raw('GET', '/cacertificates?pageSize=-1');
  assert.deepEqual([r.status, r.type], [400, 'InvalidRequestException']);
  r = await raw('PUT', '/certificates/abc?newStatus=BOGUS');
  assert.deepEqual([r.status, r.type], [400, 'InvalidRequestException']);
  r = await raw('POST', '/_sim/publish', JSON.stringify({ topic: 'a/#' }));
  assert.deepEqual([r.status, r.type], [400, 'InvalidRequestException']);
  // garbage on the MQTT port as well
  await new Promise((resolve) => {
    const s = net.connect(sim.info.mqttPort, '127.0.0.1', () => s.end('GET / HTTP/1.1\r\n\r\n'));
    s.on('error', resolve); s.on('close', resolve);
  });
  r = await raw('GET', '/_sim/info');
  assert.equal(r.status, 200);
  assert.equal(r.body.mqttPort, sim.info.mqttPort);
  assert.equal(sim.proc.exitCode, null);
});
