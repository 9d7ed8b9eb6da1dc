// The control-plane HTTP API. Two parts:
//  - AWS IoT operations at the paths, methods and parameter locations of the IoT service
//    model (rest-json), so the aws CLI and the AWS SDKs work with --endpoint-url/endpoint.
//    Requests are not authenticated: any credentials are accepted.
//  - Test hooks under /_sim/ (violations, publish log, cloud->device publish, Lambda switch,
//    connected clients, refusals); their shapes are documented in cloud/README.md.
// Any malformed request yields an AWS-shaped error; no request can crash the process.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { AwsError, invalid } from './errors.js';
import { parseSql } from './rules.js';
import { LAMBDA_ACCESS_KEY_ID } from './iam.js';

const MAX_BODY = 1024 * 1024;

// The AWS IoT operation of each control-plane route (for IAM authorization, iam.js).
const OPERATION_OF = {
  'GET /registrationcode': 'GetRegistrationCode',
  'POST /cacertificate': 'RegisterCACertificate',
  'GET /cacertificate/{id}': 'DescribeCACertificate',
  'PUT /cacertificate/{id}': 'UpdateCACertificate',
  'GET /cacertificates': 'ListCACertificates',
  'GET /certificates/{id}': 'DescribeCertificate',
  'GET /certificates': 'ListCertificates',
  'GET /certificates-by-ca/{caId}': 'ListCertificatesByCA',
  'PUT /certificates/{id}': 'UpdateCertificate',
  'DELETE /certificates/{id}': 'DeleteCertificate',
  'POST /policies/{name}': 'CreatePolicy',
  'GET /policies/{name}': 'GetPolicy',
  'PUT /target-policies/{name}': 'AttachPolicy',
  'PUT /principal-policies/{name}': 'AttachPrincipalPolicy',
  'POST /attached-policies/{target}': 'ListAttachedPolicies',
  'POST /things/{name}': 'CreateThing',
  'GET /things/{name}': 'DescribeThing',
  'PATCH /things/{name}': 'UpdateThing',
  'PUT /things/{name}/principals': 'AttachThingPrincipal',
  'GET /things/{name}/principals': 'ListThingPrincipals',
  'GET /endpoint': 'DescribeEndpoint',
  'POST /rules/{name}': 'CreateTopicRule',
  'PATCH /rules/{name}': 'ReplaceTopicRule',
  'DELETE /rules/{name}': 'DeleteTopicRule',
  'DELETE /cacertificate/{id}': 'DeleteCACertificate',
  'POST /target-policies/{name}': 'DetachPolicy',
  'DELETE /policies/{name}': 'DeletePolicy',
  'GET /policies': 'ListPolicies',
  'DELETE /things/{name}/principals': 'DetachThingPrincipal',
  'DELETE /things/{name}': 'DeleteThing',
  'GET /things': 'ListThings',
  'GET /principals/things': 'ListPrincipalThings',
  'GET /rules/{name}': 'GetTopicRule',
  // the data plane (iot-data): one API port serves both, as AWS_ENDPOINT_URL_IOT_DATA_PLANE says
  'POST /topics/{topic+}': 'Publish'
};

/** A route; `raw`: the handler gets the body as a Buffer instead of parsed JSON. */
function route (method, pattern, fn, { raw = false } = {}) {
  return { method, parts: pattern.split('/').filter(Boolean), fn, raw, op: OPERATION_OF[`${method} ${pattern}`] ?? null };
}

/** The access key id of a SigV4-signed request, or null. */
function accessKeyOf (headers) {
  const m = /Credential=([^/,\s]+)\//.exec(headers.authorization || '');
  return m ? m[1] : null;
}

function match (r, method, parts) {
  if (r.method !== method) return null;
  const greedy = r.parts.at(-1).endsWith('+}'); // {name+}: the rest of the path, '/' included
  if (greedy ? parts.length < r.parts.length : r.parts.length !== parts.length) return null;
  const params = {};
  for (let i = 0; i < r.parts.length; i++) {
    const p = r.parts[i];
    if (greedy && i === r.parts.length - 1) params[p.slice(1, -2)] = parts.slice(i).join('/');
    else if (p.startsWith('{')) params[p.slice(1, -1)] = parts[i];
    else if (p !== parts[i]) return null;
  }
  return params;
}

/**
 * The data-plane Publish (IoT data plane API reference, Publish:
 * https://docs.aws.amazon.com/iot/latest/apireference/API_iotdata_Publish.html):
 * POST /topics/{topic}?qos=0|1&retain=true|false, the body is the payload as is. The SDK
 * sends the topic as one URL-encoded path segment; raw '/' are accepted too.
 */
function publishRequest (params, q, body) {
  const topic = params.topic;
  if (!topic || /[+#]/.test(topic)) throw invalid('topic must be a topic name without wildcards');
  if (Buffer.byteLength(topic) > 256) throw invalid('topic is longer than 256 bytes');
  if ((topic.match(/\//g) || []).length > 7) throw invalid('topic has more than 8 levels');
  const qos = q.has('qos') ? Number(q.get('qos')) : 0;
  if (qos !== 0 && qos !== 1) throw invalid('qos must be 0 or 1');
  if (body.length > 128 * 1024) throw new AwsError('RequestEntityTooLargeException', 'The payload exceeds the maximum size allowed');
  return { topic, payload: body, qos, retain: q.get('retain') === 'true' };
}

const bool = (v) => v === 'true';

/** Marker-based paging as the IoT list operations do it (marker = offset, opaque to clients). */
function page (items, q, { sizeKey = 'pageSize', markerKey = 'marker', ascendingKey = 'isAscendingOrder', max = 250 } = {}) {
  let list = items;
  if (ascendingKey && q.get(ascendingKey) !== 'true') list = [...list].reverse();
  const size = q.has(sizeKey) ? Number(q.get(sizeKey)) : 25;
  if (!Number.isInteger(size) || size < 1 || size > max) throw invalid(`${sizeKey} must be between 1 and ${max}`);
  const marker = q.get(markerKey);
  const start = marker ? Number.parseInt(marker, 10) : 0;
  if (!Number.isInteger(start) || start < 0) throw invalid(`Invalid ${markerKey}`);
  const slice = list.slice(start, start + size);
  const next = start + size < list.length ? String(start + size) : undefined;
  return { slice, next };
}

/** Validate a TopicRulePayload (CreateTopicRule / ReplaceTopicRule body). */
function rulePayload (name, b) {
  if (!/^[a-zA-Z0-9_]{1,128}$/.test(name)) throw invalid(`Invalid rule name: ${name}`);
  if (typeof b.sql !== 'string' || !b.sql) throw invalid('Missing required parameter: sql');
  if (!Array.isArray(b.actions)) throw invalid('Missing required parameter: actions');
  parseSql(b.sql);
  return {
    sql: b.sql, description: b.description, actions: b.actions, ruleDisabled: Boolean(b.ruleDisabled),
    awsIotSqlVersion: b.awsIotSqlVersion || '2015-10-08', errorAction: b.errorAction
  };
}

export class Api {
  /** @param {import('./sim.js').Sim} sim */
  constructor (sim) {
    this.sim = sim;
    const reg = sim.registry;
    const need = (body, key) => {
      if (body[key] === undefined || body[key] === null || body[key] === '') throw invalid(`Missing required parameter: ${key}`);
      return body[key];
    };
    this.routes = [
      // ---- AWS IoT ----
      route('GET', '/registrationcode', () => ({ registrationCode: reg.registrationCode() })),
      route('POST', '/cacertificate', (p, q, b) => reg.registerCa({
        caCertificate: need(b, 'caCertificate'),
        verificationCertificate: b.verificationCertificate,
        setAsActive: bool(q.get('setAsActive')),
        allowAutoRegistration: bool(q.get('allowAutoRegistration')),
        certificateMode: b.certificateMode
      })),
      route('GET', '/cacertificate/{id}', (p) => reg.describeCa(p.id)),
      route('PUT', '/cacertificate/{id}', (p, q) => {
        reg.updateCa(p.id, { newStatus: q.get('newStatus') ?? undefined, newAutoRegistrationStatus: q.get('newAutoRegistrationStatus') ?? undefined });
        return {};
      }),
      route('GET', '/cacertificates', (p, q) => {
        const { slice, next } = page(reg.listCas(), q);
        return { certificates: slice, nextMarker: next };
      }),
      route('GET', '/certificates/{id}', (p) => reg.describeCert(p.id)),
      route('GET', '/certificates', (p, q) => {
        const { slice, next } = page(reg.listCerts(), q);
        return { certificates: slice, nextMarker: next };
      }),
      route('GET', '/certificates-by-ca/{caId}', (p, q) => {
        const { slice, next } = page(reg.listCerts(p.caId), q);
        return { certificates: slice, nextMarker: next };
      }),
      route('PUT', '/certificates/{id}', (p, q) => {
        const s = q.get('newStatus');
        if (!s) throw invalid('Missing required parameter: newStatus');
        reg.updateCertStatus(p.id, s);
        return {};
      }),
      route('DELETE', '/certificates/{id}', (p, q) => { reg.deleteCert(p.id, bool(q.get('forceDelete'))); return {}; }),
      route('POST', '/policies/{name}', (p, q, b) => reg.createPolicy(p.name, need(b, 'policyDocument'))),
      route('GET', '/policies/{name}', (p) => reg.getPolicy(p.name)),
      route('PUT', '/target-policies/{name}', (p, q, b) => { reg.attachPolicy(p.name, need(b, 'target')); return {}; }),
      route('PUT', '/principal-policies/{name}', (p, q, b, h) => {
        const principal = h['x-amzn-iot-principal'];
        if (!principal) throw invalid('Missing required header: x-amzn-iot-principal');
        reg.attachPolicy(p.name, principal);
        return {};
      }),
      route('POST', '/attached-policies/{target}', (p, q) => {
        const { slice, next } = page(reg.listAttachedPolicies(p.target), q, { ascendingKey: null });
        return { policies: slice, nextMarker: next };
      }),
      route('POST', '/things/{name}', (p, q, b) => reg.createThing(p.name, b)),
      route('GET', '/things/{name}', (p) => reg.describeThing(p.name)),
      route('PATCH', '/things/{name}', (p, q, b) => { reg.updateThing(p.name, b); return {}; }),
      route('PUT', '/things/{name}/principals', (p, q, b, h) => {
        const principal = h['x-amzn-principal'];
        if (!principal) throw invalid('Missing required header: x-amzn-principal');
        reg.attachThingPrincipal(p.name, principal);
        return {};
      }),
      route('GET', '/things/{name}/principals', (p, q) => {
        const { slice, next } = page(reg.listThingPrincipals(p.name), q, { sizeKey: 'maxResults', markerKey: 'nextToken', ascendingKey: null });
        return { principals: slice, nextToken: next };
      }),
      route('GET', '/endpoint', (p, q) => {
        const t = q.get('endpointType');
        const known = [null, 'iot:Data', 'iot:Data-ATS', 'iot:CredentialProvider', 'iot:Jobs'];
        if (!known.includes(t)) throw invalid(`Invalid endpointType: ${t}`);
        return { endpointAddress: sim.options.endpoint };
      }),
      route('POST', '/rules/{name}', (p, q, b) => { reg.createRule(p.name, rulePayload(p.name, b)); return {}; }),
      route('PATCH', '/rules/{name}', (p, q, b) => { reg.replaceRule(p.name, rulePayload(p.name, b)); return {}; }),
      route('DELETE', '/rules/{name}', (p) => { reg.deleteRule(p.name); return {}; }),
      route('DELETE', '/cacertificate/{id}', (p) => { reg.deleteCa(p.id); return {}; }),
      route('POST', '/target-policies/{name}', (p, q, b) => { reg.detachPolicy(p.name, need(b, 'target')); return {}; }),
      route('DELETE', '/policies/{name}', (p) => { reg.deletePolicy(p.name); return {}; }),
      route('GET', '/policies', (p, q) => {
        const { slice, next } = page(reg.listPolicies(), q);
        return { policies: slice, nextMarker: next };
      }),
      route('DELETE', '/things/{name}/principals', (p, q, b, h) => {
        const principal = h['x-amzn-principal'];
        if (!principal) throw invalid('Missing required header: x-amzn-principal');
        reg.detachThingPrincipal(p.name, principal);
        return {};
      }),
      route('DELETE', '/things/{name}', (p, q) => { reg.deleteThing(p.name, q.get('expectedVersion') ?? undefined); return {}; }),
      route('GET', '/things', (p, q) => {
        const name = q.get('attributeName');
        const value = q.get('attributeValue');
        if ((name === null) !== (value === null)) throw invalid('attributeName and attributeValue must be given together');
        const things = reg.listThings().filter((t) => name === null || t.attributes[name] === value);
        const { slice, next } = page(things, q, { sizeKey: 'maxResults', markerKey: 'nextToken', ascendingKey: null });
        return { things: slice, nextToken: next };
      }),
      route('GET', '/principals/things', (p, q, b, h) => {
        const principal = h['x-amzn-principal'];
        if (!principal) throw invalid('Missing required header: x-amzn-principal');
        reg.cert(reg.certIdFromArn(principal));
        const { slice, next } = page(reg.thingsForCert(reg.certIdFromArn(principal)), q, { sizeKey: 'maxResults', markerKey: 'nextToken', ascendingKey: null });
        return { things: slice, nextToken: next };
      }),
      route('POST', '/topics/{topic+}', async (p, q, b) => {
        await sim.broker.publish(publishRequest(p, q, b));
        return {};
      }, { raw: true }),
      route('GET', '/rules/{name}', (p) => {
        const r = reg.rule(p.name);
        return {
          ruleArn: reg.arn('rule', p.name),
          rule: {
            ruleName: p.name, sql: r.sql, description: r.description, createdAt: r.createdAt / 1000,
            actions: r.actions, ruleDisabled: r.ruleDisabled, awsIotSqlVersion: r.awsIotSqlVersion, errorAction: r.errorAction
          }
        };
      }),
      // ---- test hooks ----
      route('GET', '/_sim/info', () => ({ ...sim.info(), stats: sim.stats() })),
      route('GET', '/_sim/violations', () => ({ clients: sim.violations.all() })),
      route('GET', '/_sim/violations/{clientId}', (p) => sim.violations.get(p.clientId)),
      route('DELETE', '/_sim/violations', () => { sim.violations.clear(); return {}; }),
      route('DELETE', '/_sim/violations/{clientId}', (p) => { sim.violations.clear(p.clientId); return {}; }),
      route('GET', '/_sim/publishes', (p, q) => {
        const num = (k) => (q.has(k) ? Number(q.get(k)) : undefined);
        const publishes = sim.publishLog.list({
          since: num('since') || 0, topic: q.get('topic') ?? undefined,
          clientId: q.get('clientId') ?? undefined, limit: num('limit') || Infinity
        });
        return { publishes, lastSeq: sim.publishLog.nextSeq - 1 };
      }),
      route('DELETE', '/_sim/publishes', () => { sim.publishLog.clear(); return {}; }),
      route('POST', '/_sim/publish', async (p, q, b) => {
        const topic = need(b, 'topic');
        if (typeof topic !== 'string' || /[+#]/.test(topic)) throw invalid('topic must be a topic name without wildcards');
        const qos = b.qos === undefined ? 0 : b.qos;
        if (qos !== 0 && qos !== 1) throw invalid('qos must be 0 or 1');
        let payload;
        if (b.payloadBase64 !== undefined) payload = Buffer.from(String(b.payloadBase64), 'base64');
        else if (typeof b.payload === 'string') payload = Buffer.from(b.payload, 'utf8');
        else if (b.payload !== undefined) payload = Buffer.from(JSON.stringify(b.payload));
        else payload = Buffer.alloc(0);
        await sim.broker.publish({ topic, payload, qos, retain: Boolean(b.retain) });
        return {};
      }),
      route('GET', '/_sim/lambda', () => ({
        enabled: sim.rules.enabled, paused: sim.rules.paused, held: sim.rules.held.length, invocations: sim.rules.invocations,
        denied: sim.rules.denied
      })),
      route('PUT', '/_sim/lambda', (p, q, b) => {
        if (b.enabled === undefined && b.paused === undefined) throw invalid('give enabled and/or paused');
        if (b.enabled !== undefined && typeof b.enabled !== 'boolean') throw invalid('enabled must be true or false');
        if (b.paused !== undefined && typeof b.paused !== 'boolean') throw invalid('paused must be true or false');
        if (b.enabled !== undefined) sim.rules.enabled = b.enabled;
        if (b.paused !== undefined) sim.rules.setPaused(b.paused);
        return { enabled: sim.rules.enabled, paused: sim.rules.paused, held: sim.rules.held.length };
      }),
      route('GET', '/_sim/clients', () => ({ clients: sim.broker.clients() })),
      route('DELETE', '/_sim/clients/{clientId}', (p) => {
        const g = sim.broker.byClientId.get(p.clientId);
        if (!g) throw new AwsError('ResourceNotFoundException', `Client ${p.clientId} is not connected`);
        g.kill('disconnectedByControlApi');
        return {};
      }),
      route('GET', '/_sim/refusals', (p, q) => {
        const since = Number(q.get('since') || 0);
        return { refusals: sim.broker.refusals.filter((r) => r.time > since) };
      })
    ];
  }

  async start () {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 2000;
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.sim.options.apiPort, this.sim.options.host, () => { this.server.off('error', reject); resolve(); });
    });
    this.port = this.server.address().port;
  }

  handle (req, res) {
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) tooLarge = true; else chunks.push(c);
    });
    req.on('error', () => {});
    req.on('end', () => {
      this.dispatch(req, tooLarge ? null : Buffer.concat(chunks))
        .then((out) => this.send(res, 200, out), (e) => this.sendError(res, e));
    });
  }

  async dispatch (req, body) {
    if (body === null) throw invalid('Request body too large');
    let url;
    try { url = new URL(req.url, 'http://sim'); } catch { throw invalid('Malformed request URL'); }
    let parts;
    try { parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent); } catch { throw invalid('Malformed URL encoding'); }
    for (const r of this.routes) {
      const params = match(r, req.method, parts);
      if (!params) continue;
      let json = {};
      if (!r.raw && body.length) {
        try { json = JSON.parse(body.toString('utf8')); } catch { throw invalid('Request body is not valid JSON'); }
        if (!json || typeof json !== 'object' || Array.isArray(json)) throw invalid('Request body must be a JSON object');
      }
      if (r.op && this.sim.iam && accessKeyOf(req.headers) === LAMBDA_ACCESS_KEY_ID) {
        const request = { params, query: url.searchParams, body: json, headers: req.headers };
        try {
          this.sim.iam.authorize(r.op, request);
        } catch (e) {
          if (e instanceof AwsError) this.sim.rules.recordDenial({ operation: r.op, message: e.message });
          throw e;
        }
      }
      return await r.fn(params, url.searchParams, r.raw ? body : json, req.headers);
    }
    throw new AwsError('UnknownOperationException', `iot-sim does not implement ${req.method} ${url.pathname}`);
  }

  send (res, status, obj) {
    const text = JSON.stringify(obj ?? {});
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'x-amzn-requestid': randomUUID()
    });
    res.end(text);
  }

  sendError (res, e) {
    let err = e;
    if (!(e instanceof AwsError)) {
      this.sim.log(`internal error: ${e && e.stack}`);
      err = new AwsError('InternalFailureException', 'Internal failure in iot-sim');
    }
    const text = JSON.stringify(err.body());
    if (res.headersSent) { res.destroy(); return; }
    res.writeHead(err.status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'x-amzn-errortype': err.type,
      'x-amzn-requestid': randomUUID()
    });
    res.end(text);
  }

  async close () {
    if (!this.server) return;
    this.server.close();
    this.server.closeAllConnections();
  }
}
