// deploy.sh --rules-only against a running iot-sim (the real aws CLI with --endpoint-url):
// it creates the JITR rule and the retire rule for the given function ARN, a second run
// replaces them (same result, no error), --ca-id narrows the JITR rule to that CA's
// registration events, and bad arguments are refused before anything is called.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSim, deployRules, aws, CLOUD_DIR } from './helpers.js';

const FN = 'arn:aws:lambda:us-east-1:123456789012:function:gateway-agent-jitr';
const CA = 'ab'.repeat(32);
const template = (f) => JSON.parse(fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', f), 'utf8'));
let sim;
before(async () => { sim = await startSim([], { lambda: false }); });
after(async () => { await sim.stop(); });

const rule = async (name) => (await aws(sim, ['get-topic-rule', '--rule-name', name])).json?.rule;

test('creates both rules, and running it again replaces them', async () => {
  let r = await deployRules(sim, ['--function-arn', FN, '--ca-id', CA]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^created rule gateway_agent_jitr$/m);
  assert.match(r.stdout, /^created rule gateway_agent_retire$/m);
  const jitr = await rule('gateway_agent_jitr');
  const retire = await rule('gateway_agent_retire');
  assert.equal(jitr.sql, `SELECT * FROM '$aws/events/certificates/registered/${CA}' WHERE certificateStatus = "PENDING_ACTIVATION"`);
  assert.equal(retire.sql, "SELECT *, principal() AS newCertificateId, clientid() AS clientId, topic(2) AS thingName FROM 'lifecycle/+/retire'");
  for (const x of [jitr, retire]) {
    assert.deepEqual(x.actions, [{ lambda: { functionArn: FN } }]);
    assert.equal(x.ruleDisabled, false);
    assert.equal(x.awsIotSqlVersion, '2016-03-23');
  }
  assert.equal(retire.description, template('retire-rule.template.json').description);

  // again: replaced, not created (create would fail with ResourceAlreadyExistsException)
  r = await deployRules(sim, ['--function-arn', FN, '--ca-id', CA]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^replaced rule gateway_agent_jitr$/m);
  assert.match(r.stdout, /^replaced rule gateway_agent_retire$/m);
  assert.deepEqual(await rule('gateway_agent_jitr'), jitr);
  assert.deepEqual(await rule('gateway_agent_retire'), retire);

  // without --ca-id the JITR rule takes every CA's events, as the full deploy's
  r = await deployRules(sim, ['--function-arn', FN]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await rule('gateway_agent_jitr')).sql, template('topic-rule.template.json').sql);
});

test('other rule names, and bad arguments refused before any call', async () => {
  let r = await deployRules(sim, ['--function-arn', FN, '--rule-name', 'my_jitr', '--retire-rule-name', 'my_retire']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(await rule('my_jitr'));
  assert.ok(await rule('my_retire'));
  for (const [args, why] of [
    [[], /--function-arn/],
    [['--function-arn', 'not-an-arn'], /--function-arn/],
    [['--function-arn', FN, '--ca-id', 'XYZ'], /--ca-id/],
    [['--function-arn', FN, '--rule-name', 'same', '--retire-rule-name', 'same'], /must differ/],
    [['--function-arn', FN, '--dry-run'], /--rules-only goes without/]
  ]) {
    r = await deployRules(sim, args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why);
  }
});
