// Composition of the sim: registry + broker + rules + control API, started and stopped
// as one (bin/iot-sim.js is the only user). start() sets AWS_* variables in this process's
// environment for the in-process Lambda, so run one Sim per process.

import fs from 'node:fs';
import { Registry } from './registry.js';
import { Broker } from './broker.js';
import { RulesEngine } from './rules.js';
import { Api } from './api.js';
import { PublishLog } from './publish-log.js';
import { ViolationCounters } from './limits.js';
import { ensureServerPki } from './pki.js';
import { Iam, LAMBDA_ACCESS_KEY_ID } from './iam.js';

export class Sim {
  constructor (options) {
    this.options = options;
    this.log = options.verbose ? (m) => process.stderr.write(`iot-sim ${new Date().toISOString()}: ${m}\n`) : () => {};
  }

  async start () {
    const o = this.options;
    fs.mkdirSync(o.dataDir, { recursive: true });
    const pki = ensureServerPki(o.dataDir, o.endpoint);
    this.rootCaPath = pki.rootCaPath;
    this.registry = new Registry({ dataDir: o.dataDir, accountId: o.accountId, region: o.region });
    this.violations = new ViolationCounters();
    this.publishLog = new PublishLog(o.publishLogSize, o.publishLogBytes);
    this.iam = o.lambdaRolePolicy ? new Iam({ file: o.lambdaRolePolicy, registry: this.registry }) : null;
    this.rules = new RulesEngine({ registry: this.registry, lambdas: o.lambdas, delayMs: o.lambdaDelayMs, log: (m) => process.stderr.write(`iot-sim: ${m}\n`) });
    this.broker = new Broker({
      registry: this.registry,
      violations: this.violations,
      options: o,
      serverTls: pki,
      log: this.log,
      onPublished: (packet, gate) => this.onPublished(packet, gate)
    });
    this.api = new Api(this);
    await this.api.start();
    // The shipped Lambda builds its IoT clients from the environment; point both the control
    // plane (@aws-sdk/client-iot) and the data plane (@aws-sdk/client-iot-data-plane, whose
    // service-specific variable is AWS_ENDPOINT_URL_IOT_DATA_PLANE) at our API. Set before
    // any handler is imported (handlers load lazily on first invocation).
    process.env.AWS_ENDPOINT_URL_IOT = `http://127.0.0.1:${this.api.port}`;
    process.env.AWS_ENDPOINT_URL_IOT_DATA_PLANE = `http://127.0.0.1:${this.api.port}`;
    process.env.AWS_REGION = o.region;
    // The Lambda role's session credentials: the API recognises the Lambda's calls by this
    // access key and authorizes them against --lambda-role-policy (iam.js).
    process.env.AWS_ACCESS_KEY_ID = LAMBDA_ACCESS_KEY_ID;
    process.env.AWS_SECRET_ACCESS_KEY = 'iot-sim-lambda-secret';
    process.env.AWS_SESSION_TOKEN = 'iot-sim-lambda-session';
    await this.broker.start();
    return this.info();
  }

  onPublished (packet, gate) {
    this.publishLog.add({
      topic: packet.topic,
      clientId: gate ? gate.clientId : null,
      thingName: gate ? (gate.thingName() ?? null) : null,
      certificateId: gate ? gate.certificateId : null,
      qos: packet.qos,
      retain: Boolean(packet.retain),
      payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload ?? '')
    });
    // principal() and clientid() of the rules engine: the publishing device's certificate id
    // and client id; nothing for the sim's own messages.
    this.rules.onMessage(packet.topic, packet.payload, gate ? { clientId: gate.clientId, principal: gate.certificateId } : {});
  }

  info () {
    return {
      mqttPort: this.broker.port,
      apiPort: this.api.port,
      endpoint: this.options.endpoint,
      rootCa: this.rootCaPath,
      accountId: this.registry.accountId
    };
  }

  stats () {
    return { ...this.broker.stats, connected: this.broker.byClientId.size, openConnections: this.broker.gates.size };
  }

  async stop () {
    await this.rules?.close();
    await this.broker?.close();
    await this.api?.close();
    this.registry?.close();
  }
}
