// deploy.sh --rules-only against a running iot-sim (the real aws CLI with --endpoint-url):
// it creates the JITR rule, the retire rule and the hand-over rule for the given function
// ARN, a second run
// replaces them (same result, no error), --ca-id narrows the JITR rule to that CA's
// registration events, and bad arguments are refused before anything is called. Also the
// sim's data-plane Publish through the aws CLI (aws iot-data publish --endpoint-url).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startSim, deployRules, aws, AWS, CLOUD_DIR } from './helpers.js';

const FN = 'arn:aws:lambda:us-east-1:123456789012:function:gateway-agent-jitr';
const CA = 'ab'.repeat(32);
const template = (f) => JSON.parse(fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', f), 'utf8'));
let sim;
before(async () => { sim = await startSim([], { lambda: false }); });
after(async () => { await sim.stop(); });

const rule = async (name) => (await aws(sim, ['get-topic-rule', '--rule-name', name])).json?.rule;

test('creates the three rules, and running it again replaces them', async () => {
  let r = await deployRules(sim, ['--function-arn', FN, '--ca-id', CA]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^created rule gateway_agent_jitr$/m);
  assert.match(r.stdout, /^created rule gateway_agent_retire$/m);
  assert.match(r.stdout, /^created rule gateway_agent_handover$/m);
  const jitr = await rule('gateway_agent_jitr');
  const retire = await rule('gateway_agent_retire');
  const handover = await rule('gateway_agent_handover');
  assert.equal(jitr.sql, `SELECT * FROM '$aws/events/certificates/registered/${CA}' WHERE certificateStatus = "PENDING_ACTIVATION"`);
  assert.equal(retire.sql, "SELECT *, principal() AS newCertificateId, clientid() AS clientId, topic(2) AS thingName, 'retire' AS request FROM 'lifecycle/+/retire'");
  assert.equal(handover.sql, "SELECT *, principal() AS certificateId, clientid() AS clientId, topic(2) AS thingName, 'handover' AS request FROM 'lifecycle/+/handover'");
  for (const x of [jitr, retire, handover]) {
    assert.deepEqual(x.actions, [{ lambda: { functionArn: FN } }]);
    assert.equal(x.ruleDisabled, false);
    assert.equal(x.awsIotSqlVersion, '2016-03-23');
  }
  assert.equal(retire.description, template('retire-rule.template.json').description);
  assert.equal(handover.description, template('handover-rule.template.json').description);

  // again: replaced, not created (create would fail with ResourceAlreadyExistsException)
  r = await deployRules(sim, ['--function-arn', FN, '--ca-id', CA]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^replaced rule gateway_agent_jitr$/m);
  assert.match(r.stdout, /^replaced rule gateway_agent_retire$/m);
  assert.match(r.stdout, /^replaced rule gateway_agent_handover$/m);
  assert.deepEqual(await rule('gateway_agent_jitr'), jitr);
  assert.deepEqual(await rule('gateway_agent_retire'), retire);
  assert.deepEqual(await rule('gateway_agent_handover'), handover);

  // without --ca-id the JITR rule takes every CA's events, as the full deploy's
  r = await deployRules(sim, ['--function-arn', FN]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await rule('gateway_agent_jitr')).sql, template('topic-rule.template.json').sql);
});

test('other rule names, and bad arguments refused before any call', async () => {
  let r = await deployRules(sim, ['--function-arn', FN, '--rule-name', 'my_jitr', '--retire-rule-name', 'my_retire', '--handover-rule-name', 'my_handover']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(await rule('my_jitr'));
  assert.ok(await rule('my_retire'));
  assert.match((await rule('my_handover')).sql, /FROM 'lifecycle\/\+\/handover'$/);
  for (const [args, why] of [
    [[], /--function-arn/],
    [['--function-arn', 'not-an-arn'], /--function-arn/],
    [['--function-arn', FN, '--ca-id', 'XYZ'], /--ca-id/],
    [['--function-arn', FN, '--rule-name', 'same', '--retire-rule-name', 'same'], /must differ/],
    [['--function-arn', FN, '--retire-rule-name', 'same', '--handover-rule-name', 'same'], /must differ/],
    [['--function-arn', FN, '--handover-rule-name', 'gateway_agent_jitr'], /must differ/],
    [['--function-arn', FN, '--handover-rule-name', 'bad-name'], /rule name may contain only/],
    [['--function-arn', FN, '--dry-run'], /--rules-only goes without/]
  ]) {
    r = await deployRules(sim, args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why);
  }
});

test('the data plane: aws iot-data publish reaches the sim, raw / in the path too; bad requests are refused', async () => {
  const env = {
    PATH: process.env.PATH, HOME: sim.dataDir, AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret',
    AWS_DEFAULT_REGION: 'us-east-1', AWS_PAGER: '', AWS_CONFIG_FILE: '/dev/null'
  };
  await promisify(execFile)(AWS, ['iot-data', 'publish', '--endpoint-url', sim.base, '--topic', 'lifecycle/gw1:s1/retire/accepted',
    '--qos', '1', '--cli-binary-format', 'raw-in-base64-out', '--payload', '{"x":1}'], { env });
  let log = (await sim.api('GET', `/_sim/publishes?topic=${encodeURIComponent('lifecycle/gw1:s1/retire/accepted')}`)).body.publishes;
  assert.equal(log.length, 1);
  assert.deepEqual([log[0].qos, log[0].clientId, Buffer.from(log[0].payload, 'base64').toString()], [1, null, '{"x":1}']);
  // a raw (not URL-encoded) '/' in the path is the same topic
  const res = await fetch(`${sim.base}/topics/dt/gw1/raw?qos=0`, { method: 'POST', body: 'not json' });
  assert.equal(res.status, 200);
  log = (await sim.api('GET', '/_sim/publishes?topic=dt%2Fgw1%2Fraw')).body.publishes;
  assert.equal(Buffer.from(log[0].payload, 'base64').toString(), 'not json');
  for (const [url, type] of [['/topics/a%2F%2B?qos=1', 'InvalidRequestException'], ['/topics/a?qos=2', 'InvalidRequestException']]) {
    const r = await fetch(sim.base + url, { method: 'POST', body: 'x' });
    assert.equal(r.headers.get('x-amzn-errortype'), type, url);
  }
});
