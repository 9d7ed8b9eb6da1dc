// Shared test helpers: start/stop an iot-sim process, call its API, run the aws CLI,
// make certificates with openssl, connect MQTT clients. Everything uses temp dirs and
// port 0, so test files run in parallel; every process started is stopped by `after`.

import assert from 'node:assert/strict';
import { spawn, execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';

const execFileP = promisify(execFile);
export const CLOUD_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SIM_BIN = path.join(CLOUD_DIR, 'iot-sim', 'bin', 'iot-sim.js');
export const LAMBDA = path.join(CLOUD_DIR, 'jitr-lambda', 'index.mjs');
export const LAMBDA_ARN = 'arn:aws:lambda:us-east-1:123456789012:function:gateway-agent-jitr';
export const AWS = '/usr/bin/aws';
export const DEPLOY = path.join(CLOUD_DIR, 'jitr-lambda', 'deploy.sh');

/**
 * The Lambda role policy as deploy.sh renders it (--render-only), for `region`/`account`.
 * Returns the path of role-policy.json (in a temp dir removed at exit). `template`: another
 * role policy template to render instead of the shipped one (e.g. a regression fixture).
 */
export function renderRolePolicy ({ region = 'us-east-1', account = '123456789012', template } = {}) {
  const key = JSON.stringify([region, account, template]);
  if (renderedRoles.has(key)) return renderedRoles.get(key);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'role-policy-'));
  process.once('exit', () => fs.rmSync(out, { recursive: true, force: true }));
  const env = { ...process.env, ACCOUNT_ID: account };
  delete env.PARTITION;
  let deploy = DEPLOY;
  if (template) {
    // deploy.sh renders the template next to it: run a copy of the script beside `template`
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'role-template-'));
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    for (const f of fs.readdirSync(path.dirname(DEPLOY))) fs.copyFileSync(path.join(path.dirname(DEPLOY), f), path.join(dir, f));
    fs.copyFileSync(template, path.join(dir, 'lambda-role-policy.template.json'));
    deploy = path.join(dir, 'deploy.sh');
  }
  execFileSync(deploy, ['--render-only', out, '--region', region], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const file = path.join(out, 'role-policy.json');
  renderedRoles.set(key, file);
  return file;
}
const renderedRoles = new Map();

export function tmpDir (prefix = 'iot-sim-test-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value or `timeoutMs` passes (then throws). */
export async function waitFor (fn, { timeoutMs = 5000, intervalMs = 25, what = 'condition' } = {}) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * Start iot-sim as a child process. Returns {info, dataDir, api, stop, proc, stderr()}.
 * The child gets --exit-on-stdin-eof, so it dies with the test process in any case.
 * With the Lambda, its control-plane calls are authorized against the role policy
 * deploy.sh renders (--lambda-role-policy), unless `rolePolicy` names another file (or is
 * null: not checked) or args already have --lambda-role-policy.
 */
export async function startSim (args = [], { dataDir, lambda = true, rolePolicy } = {}) {
  const ownDir = dataDir === undefined; // a data dir we make is removed by stop()
  if (ownDir) dataDir = tmpDir();
  const argv = [SIM_BIN, '--data-dir', dataDir, '--exit-on-stdin-eof', ...args];
  if (lambda && !args.includes('--lambda')) argv.push('--lambda', `${LAMBDA_ARN}=${LAMBDA}`);
  if (lambda && !args.includes('--lambda-role-policy')) {
    if (rolePolicy === undefined) rolePolicy = renderRolePolicy();
    if (rolePolicy !== null) argv.push('--lambda-role-policy', rolePolicy);
  }
  const proc = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; if (err.length > 1e6) err = err.slice(-5e5); });
  const info = await new Promise((resolve, reject) => {
    let out = '';
    const onData = (d) => {
      out += d;
      const i = out.indexOf('\n');
      if (i >= 0) { proc.stdout.off('data', onData); resolve(JSON.parse(out.slice(0, i))); }
    };
    proc.stdout.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`iot-sim exited (${code}) before ready: ${err}`)));
  });
  const base = `http://127.0.0.1:${info.apiPort}`;
  const api = async (method, p, body, headers = {}) => {
    const res = await fetch(base + p, {
      method,
      headers: { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body))
    });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('x-amzn-errortype'), body: text ? JSON.parse(text) : {} };
  };
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 4000);
      await exited;
      clearTimeout(t);
    }
    if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true });
  };
  return { info, dataDir, api, stop, proc, base, stderr: () => err };
}

/** Run the aws CLI against the sim. Resolves {code, stdout, stderr, json}. */
export async function aws (sim, args) {
  const env = {
    PATH: process.env.PATH,
    HOME: sim.dataDir,
    AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'secret',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_PAGER: '',
    AWS_CONFIG_FILE: path.join(sim.dataDir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(sim.dataDir, 'no-aws-credentials')
  };
  try {
    const { stdout, stderr } = await execFileP(AWS, ['iot', ...args, '--endpoint-url', sim.base, '--output', 'json'], { env, cwd: sim.cwd || sim.dataDir });
    return { code: 0, stdout, stderr, json: stdout.trim() ? JSON.parse(stdout) : {} };
  } catch (e) {
    return { code: e.code, stdout: e.stdout, stderr: e.stderr, json: null };
  }
}

export async function openssl (cwd, args) {
  await execFileP('openssl', args, { cwd });
}

/** A CA (EC P-256) in `dir`: files <name>.key, <name>.pem. */
export async function makeCa (dir, name = 'ca') {
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  await openssl(dir, ['req', '-x509', '-new', '-key', `${name}.key`, '-sha256', '-days', '30', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', `${name}.pem`]);
  return { name, key: path.join(dir, `${name}.key`), cert: path.join(dir, `${name}.pem`), pem: fs.readFileSync(path.join(dir, `${name}.pem`), 'utf8') };
}

/**
 * A leaf certificate with subject CN=`cn` (or `subject`, an openssl -subj string such as
 * '/OU=gateway/CN=gw1'), signed by `ca`; files <name>.key/.pem/-chain.pem.
 */
export async function makeLeaf (dir, ca, cn, name = cn, { days = 30, extraArgs = [], subject = `/CN=${cn}` } = {}) {
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  await openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', subject, '-out', `${name}.csr`]);
  // a random serial, not -CAcreateserial: parallel signings would race on the serial file
  await openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', '0x' + crypto.randomBytes(12).toString('hex'),
    '-days', String(days), '-sha256', '-out', `${name}.pem`, ...extraArgs]);
  const pem = fs.readFileSync(path.join(dir, `${name}.pem`), 'utf8');
  fs.writeFileSync(path.join(dir, `${name}-chain.pem`), pem + ca.pem);
  return {
    key: path.join(dir, `${name}.key`), cert: path.join(dir, `${name}.pem`), chain: path.join(dir, `${name}-chain.pem`), pem,
    keyPem: fs.readFileSync(path.join(dir, `${name}.key`), 'utf8'), chainPem: pem + ca.pem
  };
}

/** Register `ca` via the control API (DEFAULT mode), ACTIVE with auto-registration. Returns its id. */
export async function registerCa (sim, dir, ca, { active = true, autoRegistration = true } = {}) {
  const code = (await sim.api('GET', '/registrationcode')).body.registrationCode;
  const v = await makeLeaf(dir, ca, code, `${ca.name}-verification`);
  const q = `?setAsActive=${active}&allowAutoRegistration=${autoRegistration}`;
  const r = await sim.api('POST', '/cacertificate' + q, { caCertificate: ca.pem, verificationCertificate: v.pem });
  if (r.status !== 200) throw new Error(`register CA failed: ${JSON.stringify(r.body)}`);
  return r.body.certificateId;
}

export function certIdOf (pem) {
  return crypto.createHash('sha256').update(new (crypto.X509Certificate)(pem).raw).digest('hex');
}
import crypto from 'node:crypto';

/**
 * Try an MQTT connect. Resolves {ok:true, client} on CONNACK 0, or {ok:false, reason} when
 * the connection closes or fails first. The caller ends `client`.
 */
export function connect (sim, leaf, clientId, opts = {}) {
  return new Promise((resolve) => {
    const client = mqtt.connect({
      protocol: 'mqtts',
      host: '127.0.0.1',
      port: sim.info.mqttPort,
      ca: fs.readFileSync(sim.info.rootCa),
      key: opts.keyPem ?? leaf.keyPem,
      cert: opts.certPem ?? (opts.noChain ? leaf.pem : leaf.chainPem),
      servername: opts.servername === undefined ? 'localhost' : opts.servername,
      clientId,
      protocolVersion: opts.protocolVersion ?? 4,
      keepalive: opts.keepalive ?? 30,
      clean: opts.clean ?? true,
      reconnectPeriod: 0,
      connectTimeout: opts.connectTimeout ?? 5000,
      ALPNProtocols: opts.alpn,
      minVersion: opts.minVersion,
      maxVersion: opts.maxVersion
    });
    let done = false;
    const finish = (v) => { if (!done) { done = true; resolve(v); } };
    client.on('connect', (p) => finish({ ok: p.returnCode === 0 || p.reasonCode === 0 || p.returnCode === undefined, client, connack: p }));
    client.on('error', (e) => { finish({ ok: false, reason: e.message, client }); client.end(true); });
    client.on('close', () => { finish({ ok: false, reason: 'closed', client }); client.end(true); });
  });
}

/** Resolves when the client's connection closes (or after timeoutMs with false). */
export function closed (client, timeoutMs = 3000) {
  return new Promise((resolve) => {
    if (!client.connected) return resolve(true);
    const t = setTimeout(() => resolve(false), timeoutMs);
    client.once('close', () => { clearTimeout(t); resolve(true); });
  });
}

/** Create a policy and attach it and a thing (named like the client) to the certificate. */
export async function provision (sim, certId, thingName, policyDocument, policyName = `p-${thingName}`) {
  const arn = `arn:aws:iot:us-east-1:${sim.info.accountId}:cert/${certId}`;
  let r = await sim.api('POST', `/policies/${policyName}`, { policyDocument: typeof policyDocument === 'string' ? policyDocument : JSON.stringify(policyDocument) });
  if (r.status !== 200 && r.type !== 'ResourceAlreadyExistsException') throw new Error(JSON.stringify(r.body));
  r = await sim.api('PUT', `/target-policies/${policyName}`, { target: arn });
  if (r.status !== 200) throw new Error(JSON.stringify(r.body));
  if (thingName) {
    await sim.api('POST', `/things/${thingName}`, {});
    r = await sim.api('PUT', `/things/${thingName}/principals`, undefined, { 'x-amzn-principal': arn });
    if (r.status !== 200) throw new Error(JSON.stringify(r.body));
  }
  return arn;
}

/** Create the shipped JITR topic rule (jitr-lambda/topic-rule.template.json) in the sim. */
export async function createJitrRule (sim, ruleName = 'jitr') {
  const text = fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'topic-rule.template.json'), 'utf8').replace('{{functionArn}}', LAMBDA_ARN);
  const r = await sim.api('POST', `/rules/${ruleName}`, text);
  if (r.status !== 200) throw new Error(`create rule: ${JSON.stringify(r.body)}`);
}

/**
 * A device certificate that is registered, ACTIVE, attached to thing `name` and to
 * `policy`. Registered by a JITR connect under a throwaway client id (so `name` is not
 * affected by the 1 CONNECT/s per client id limit) with the Lambda switched off.
 */
export async function activeDevice (sim, dir, ca, name, policy) {
  const dev = await makeLeaf(dir, ca, name);
  const id = certIdOf(dev.pem);
  const wasOn = (await sim.api('GET', '/_sim/lambda')).body.enabled;
  await sim.api('PUT', '/_sim/lambda', { enabled: false });
  try {
    const r = await connect(sim, dev, `${name}-jitr`);
    if (r.ok) throw new Error('JITR connect unexpectedly accepted');
  } finally { if (wasOn) await sim.api('PUT', '/_sim/lambda', { enabled: true }); }
  await provision(sim, id, name, policy);
  const u = await sim.api('PUT', `/certificates/${id}?newStatus=ACTIVE`);
  if (u.status !== 200) throw new Error(JSON.stringify(u.body));
  return { ...dev, certificateId: id };
}

export const ALLOW_ALL = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 'iot:*', Resource: '*' }] };

export async function violations (sim, clientId) {
  return (await sim.api('GET', `/_sim/violations/${encodeURIComponent(clientId)}`)).body;
}

/**
 * Run deploy.sh --rules-only against the sim (the aws CLI at /usr/bin/aws with
 * --endpoint-url). Resolves {code, stdout, stderr}.
 */
export async function deployRules (sim, args = []) {
  const env = {
    PATH: process.env.PATH,
    HOME: sim.dataDir,
    AWS_CLI: AWS,
    AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'secret',
    AWS_PAGER: '',
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null'
  };
  try {
    const { stdout, stderr } = await execFileP(DEPLOY, ['--rules-only', '--endpoint-url', sim.base, ...args], { env });
    return { code: 0, stdout, stderr };
  } catch (e) {
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/**
 * Enroll `leaf` by JITR through the sim's rule and Lambda: the first connect is refused,
 * the Lambda activates the certificate, the next connect (client id `clientId`) is accepted.
 * Resolves {client, certificateId}; the caller ends `client`.
 */
export async function enroll (sim, leaf, clientId) {
  const certificateId = certIdOf(leaf.pem);
  const first = await connect(sim, leaf, clientId);
  if (first.ok) { first.client.end(true); return { client: null, certificateId, already: true }; }
  await waitFor(async () => (await sim.api('GET', `/certificates/${certificateId}`)).body.certificateDescription?.status === 'ACTIVE',
    { timeoutMs: 15000, what: `certificate of ${clientId} ACTIVE` });
  const r = await connect(sim, leaf, clientId);
  if (!r.ok) throw new Error(`${clientId}: connect after activation refused: ${r.reason}`);
  return { client: r.client, certificateId };
}

/**
 * A lifecycle request as the agent sends it over `client` (thing `thing`): subscribe QoS 1 to
 * lifecycle/<thing>/<action>/+, publish `body` (QoS `qos`) to lifecycle/<thing>/<action>,
 * wait for the reply. Resolves {outcome: 'accepted'|'rejected', reply}.
 */
export function lifecycleRequest (client, thing, action, body, { timeoutMs = 10000, qos = 1 } = {}) {
  const base = `lifecycle/${thing}/${action}`;
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { client.off('message', onMessage); reject(new Error(`no reply on ${base}/+`)); }, timeoutMs);
    const onMessage = (topic, payload) => {
      if (!topic.startsWith(base + '/')) return;
      clearTimeout(t);
      client.off('message', onMessage);
      resolve({ outcome: topic.slice(base.length + 1), reply: JSON.parse(payload.toString()) });
    };
    client.on('message', onMessage);
    client.subscribe(`${base}/+`, { qos: 1 }, (err, granted) => {
      if (err || granted?.[0]?.qos === 128) { clearTimeout(t); reject(err ?? new Error('subscription refused')); return; }
      client.publish(base, typeof body === 'string' ? body : JSON.stringify(body), { qos }, (e) => {
        if (e) { clearTimeout(t); reject(e); }
      });
    });
  });
}

/** A retire request (QoS 1) to lifecycle/<thing>/retire: lifecycleRequest. */
export const retireRequest = (client, thing, body, opts = {}) => lifecycleRequest(client, thing, 'retire', body, { qos: 1, ...opts });

/** A hand-over request (QoS 0, as the agent sends it) to lifecycle/<thing>/handover: lifecycleRequest. */
export const handoverRequest = (client, thing, body, opts = {}) => lifecycleRequest(client, thing, 'handover', body, { qos: 0, ...opts });

// ---- the lifecycle requests' tests (renewal, hand-over) ----------------------------------

export const certArn = (id) => `arn:aws:iot:us-east-1:123456789012:cert/${id}`;
export const statusOf = async (sim, id) => (await sim.api('GET', `/certificates/${id}`)).body.certificateDescription.status;
export const principalsOf = async (sim, thing) => (await sim.api('GET', `/things/${encodeURIComponent(thing)}/principals`)).body.principals.sort();
export const lambdaState = async (sim) => (await sim.api('GET', '/_sim/lambda')).body;
/** A file name (for makeLeaf) for thing `cn`'s certificate `tag`. */
export const fileName = (cn, tag) => `${cn.replace(/[^\w-]/g, '_')}-${tag}`;

/** The JSON payloads the sim logged on `topic` (after sequence number `since`), oldest first. */
export async function publishedOn (sim, topic, { since } = {}) {
  const q = `${since === undefined ? '' : `since=${since}&`}topic=${encodeURIComponent(topic)}`;
  return (await sim.api('GET', `/_sim/publishes?${q}`)).body.publishes.map((p) => JSON.parse(Buffer.from(p.payload, 'base64')));
}

/**
 * Set the environment the Lambda needs to call `sim` when its handler is imported and called
 * directly. Returns a function that restores the environment as it was.
 */
export function useLambdaEnv (sim) {
  const saved = { ...process.env };
  Object.assign(process.env, {
    AWS_ENDPOINT_URL_IOT: sim.base, AWS_ENDPOINT_URL_IOT_DATA_PLANE: sim.base, AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test'
  });
  return () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  };
}

/**
 * Start a sim (as startSim with `args`) whose Lambda runs under the shipped role policy less
 * `action` (e.g. 'iot:DetachThingPrincipal'), which the shipped role has in a statement of
 * its own; the changed template is written to `dir`. The caller stops the sim.
 */
export async function simWithRoleWithout (dir, action, args = ['--max-connects-per-second', '0']) {
  const shipped = JSON.parse(fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'lambda-role-policy.template.json'), 'utf8'));
  const statements = shipped.Statement
    .map((s) => ({ ...s, Action: [s.Action].flat().filter((a) => a !== action) }))
    .filter((s) => s.Action.length > 0);
  assert.equal(statements.length, shipped.Statement.length - 1, `the shipped role has one statement for ${action}`);
  const template = path.join(dir, `role-without-${action.replace(/\W/g, '_')}.template.json`);
  fs.writeFileSync(template, JSON.stringify({ ...shipped, Statement: statements }, null, 2));
  return startSim(args, { rolePolicy: renderRolePolicy({ template }) });
}

/**
 * The sim recorded the Lambda's call of `action` (e.g. 'iot:DetachThingPrincipal') on
 * `resource` (an ARN) as denied by its role, and the run of rule `ruleName` as failed by it.
 */
export async function assertDeniedRun (sim, { action, resource, ruleName }) {
  const state = await lambdaState(sim);
  const denial = state.denied.find((d) => d.operation === action.replace(/^iot:/, ''));
  assert.ok(denial, JSON.stringify(state.denied));
  assert.match(denial.message, new RegExp(`is not authorized to perform: ${action} on resource: ${resource} because no identity-based policy allows`));
  const inv = state.invocations.find((i) => i.ruleName === ruleName);
  assert.equal(inv.ok, false);
  assert.match(inv.error, /AccessDeniedException|not authorized/);
}

/**
 * Thing `thing`, connected as `client` with certificate `leaf`, tries thing `victim`'s
 * lifecycle/<victim>/<action> topics: it publishes `body` (QoS `qos`) to the request topic,
 * then, connected again, subscribes to the replies. The policy refuses both: each closes the
 * connection and is counted as a violation. Then waits as long as a Lambda run would take
 * to show (the caller checks that none did).
 */
export async function assertOtherThingsLifecycleRefused (sim, { client, leaf, thing, victim, action, body, qos }) {
  // publish: the connection is closed, counted as publishNotAuthorized; no Lambda runs
  client.publish(`lifecycle/${victim}/${action}`, JSON.stringify(body), { qos });
  assert.equal(await closed(client, 5000), true);
  client.end(true);
  assert.deepEqual((await violations(sim, thing)).counters, { publishNotAuthorized: 1 });

  // subscribe to the other thing's replies: closed, subscribeNotAuthorized
  const again = await connect(sim, leaf, thing);
  assert.equal(again.ok, true);
  again.client.subscribe(`lifecycle/${victim}/${action}/+`, { qos: 1 });
  assert.equal(await closed(again.client, 5000), true);
  again.client.end(true);
  assert.deepEqual((await violations(sim, thing)).counters, { publishNotAuthorized: 1, subscribeNotAuthorized: 1 });

  await sleep(300);
}
