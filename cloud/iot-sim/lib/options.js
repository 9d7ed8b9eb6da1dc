// Command-line options of iot-sim. Every AWS behaviour that field reports disagree on is a
// switch here; the defaults follow AWS-IOT-FACTS.md.

import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { parseRolePolicy } from './iam.js';

export const HELP = `Usage: iot-sim --data-dir DIR [options]

A local AWS IoT: MQTT over TLS with client certificates (JITR, policies, limits) and the
control-plane REST API for the aws CLI. Prints one JSON line when ready:
  {"mqttPort":N,"apiPort":N,"endpoint":"...","rootCa":"<path>","accountId":"..."}

Options:
  --data-dir DIR              registry, root CA and server certificate live here (required)
  --mqtt-port N               MQTT/TLS port, 0 = pick a free port (default 0)
  --api-port N                control API port, 0 = pick a free port (default 0)
  --host ADDR                 address to listen on (default 127.0.0.1)
  --endpoint NAME             endpoint host name for the server certificate and
                              describe-endpoint (default localhost)
  --account-id ID             AWS account id of a new data dir (default 123456789012)
  --region REGION             AWS region used in ARNs (default us-east-1)
  --lambda ARN=PATH           run the module at PATH (exporting handler) for the topic rule
                              lambda action with functionArn ARN; repeatable
  --lambda-delay-ms N         delay before a Lambda runs (default 0)
  --lambda-role-policy FILE   the IAM policy of the Lambda's role: every control-plane call
                              of an in-process Lambda is authorized against it as AWS does
                              (AccessDeniedException otherwise); default: not checked
  --publish-log-size N        messages kept in the publish log (default 10000)
  --publish-log-bytes N       payload bytes kept in the publish log (default 67108864)
  --max-publish-rate N        publishes/s per connection, 0 = unlimited (default 100)
  --max-throughput N          inbound bytes/s per connection, 0 = unlimited (default 524288)
  --max-connects-per-second N CONNECTs/s per client id, 0 = unlimited (default 1)
Switches (AWS behaviours that vary or changed over time):
  --refuse-at-tls             close connections with an unknown-CA, INACTIVE or REVOKED
                              certificate right after the TLS handshake instead of after
                              their MQTT CONNECT (default: after CONNECT, no CONNACK)
  --require-ca-in-chain       JITR requires the device to send the CA certificate in its
                              chain even when it sends SNI (older AWS behaviour)
  --port-443                  the MQTT port behaves like AWS IoT's port 443: a client that
                              does not offer the ALPN protocol x-amzn-mqtt-ca is closed
                              right after the TLS handshake
Process:
  --exit-on-stdin-eof         exit when standard input reaches end of file, or when the
                              parent process dies (so no orphan outlives its starter)
  --verbose                   log connections and refusals to stderr
  --help                      print this help
`;

export function parseOptions (argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      'data-dir': { type: 'string' },
      'mqtt-port': { type: 'string', default: '0' },
      'api-port': { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      endpoint: { type: 'string', default: 'localhost' },
      'account-id': { type: 'string', default: '123456789012' },
      region: { type: 'string', default: 'us-east-1' },
      lambda: { type: 'string', multiple: true, default: [] },
      'lambda-delay-ms': { type: 'string', default: '0' },
      'lambda-role-policy': { type: 'string' },
      'publish-log-size': { type: 'string', default: '10000' },
      'publish-log-bytes': { type: 'string', default: String(64 * 1024 * 1024) },
      'max-publish-rate': { type: 'string', default: '100' },
      'max-throughput': { type: 'string', default: String(512 * 1024) },
      'max-connects-per-second': { type: 'string', default: '1' },
      'refuse-at-tls': { type: 'boolean', default: false },
      'require-ca-in-chain': { type: 'boolean', default: false },
      'port-443': { type: 'boolean', default: false },
      'exit-on-stdin-eof': { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    }
  });
  if (values.help) return { help: true };
  const int = (name, min, max) => {
    const v = Number(values[name]);
    if (!Number.isInteger(v) || v < min || v > max) throw new Error(`--${name} must be an integer in [${min}, ${max}]`);
    return v;
  };
  if (!values['data-dir']) throw new Error('--data-dir is required');
  if (!/^\d{12}$/.test(values['account-id'])) throw new Error('--account-id must be 12 digits');
  const lambdas = new Map();
  for (const l of values.lambda) {
    const i = l.lastIndexOf('=');
    if (i <= 0 || i === l.length - 1) throw new Error(`--lambda expects FUNCTION_ARN=PATH, got ${l}`);
    const file = l.slice(i + 1);
    if (!fs.existsSync(file)) throw new Error(`--lambda handler module not found: ${file}`);
    lambdas.set(l.slice(0, i), file);
  }
  const rolePolicy = values['lambda-role-policy'];
  if (rolePolicy !== undefined) {
    if (!fs.existsSync(rolePolicy)) throw new Error(`--lambda-role-policy file not found: ${rolePolicy}`);
    parseRolePolicy(fs.readFileSync(rolePolicy, 'utf8'));
  }
  return {
    dataDir: values['data-dir'],
    lambdaRolePolicy: rolePolicy ?? null,
    mqttPort: int('mqtt-port', 0, 65535),
    apiPort: int('api-port', 0, 65535),
    host: values.host,
    endpoint: values.endpoint,
    accountId: values['account-id'],
    region: values.region,
    lambdas,
    lambdaDelayMs: int('lambda-delay-ms', 0, 3600000),
    publishLogSize: int('publish-log-size', 0, 10000000),
    publishLogBytes: int('publish-log-bytes', 0, 1e12),
    maxPublishRate: int('max-publish-rate', 0, 1e9),
    maxThroughput: int('max-throughput', 0, 1e12),
    maxConnectsPerSecond: int('max-connects-per-second', 0, 1e9),
    refuseAtTls: values['refuse-at-tls'],
    port443: values['port-443'],
    requireCaInChain: values['require-ca-in-chain'],
    exitOnStdinEof: values['exit-on-stdin-eof'],
    verbose: values.verbose
  };
}
