// deploy.sh against a stand-in aws CLI (fixtures/fake-aws-cli.mjs) that keeps the state of
// the role, the function's resource policy and the rules, and answers errors as AWS does:
// re-deploying with another --rule-name moves the invoke permission to the new rule; a real
// error is not swallowed; the partition comes from the caller's identity (aws-cn renders
// arn:aws-cn: everywhere); --dry-run prints the permission replacement.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { tmpDir, DEPLOY, CLOUD_DIR } from './helpers.js';

const FAKE_AWS = path.join(CLOUD_DIR, 'test', 'fixtures', 'fake-aws-cli.mjs');
const dir = tmpDir('deploy-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** A fresh fake account; deploy(args) runs deploy.sh against it. */
function account (callerArn = 'arn:aws:iam::123456789012:user/deployer') {
  const stateFile = path.join(dir, `state-${n++}.json`);
  const env = { PATH: process.env.PATH, HOME: dir, AWS_CLI: FAKE_AWS, FAKE_AWS_STATE: stateFile, FAKE_AWS_CALLER_ARN: callerArn };
  return {
    deploy: (args, extra = {}) => promisify(execFile)(DEPLOY, args, { env: { ...env, ...extra } }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }), (e) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr })),
    state: () => JSON.parse(fs.readFileSync(stateFile, 'utf8')),
    calls: () => fs.readFileSync(stateFile + '.log', 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  };
}

/** May AWS IoT's rule `ruleArn` invoke the function (its resource policy)? */
const mayInvoke = (fn, ruleArn) => fn.statements.some((s) => s.Principal === 'iot.amazonaws.com' &&
  s.Action === 'lambda:InvokeFunction' && s.SourceArn === ruleArn && s.SourceAccount === '123456789012');

test('deployed twice with different --rule-name: the second rule can invoke the function, the first no longer', async () => {
  const a = account();
  let r = await a.deploy(['--region', 'eu-west-1', '--rule-name', 'first_rule']);
  assert.equal(r.code, 0, r.stderr);
  let fn = a.state().functions['gateway-agent-jitr'];
  assert.ok(mayInvoke(fn, 'arn:aws:iot:eu-west-1:123456789012:rule/first_rule'));

  r = await a.deploy(['--region', 'eu-west-1', '--rule-name', 'second_rule']);
  assert.equal(r.code, 0, r.stderr);
  fn = a.state().functions['gateway-agent-jitr'];
  assert.ok(mayInvoke(fn, 'arn:aws:iot:eu-west-1:123456789012:rule/second_rule'), JSON.stringify(fn.statements));
  assert.equal(mayInvoke(fn, 'arn:aws:iot:eu-west-1:123456789012:rule/first_rule'), false);
  // one statement per rule: the JITR rule's, the retire rule's and the hand-over rule's
  assert.deepEqual(fn.statements.map((s) => s.Sid).sort(), ['iot-handover-rule', 'iot-jitr-rule', 'iot-retire-rule']);
  assert.ok(mayInvoke(fn, 'arn:aws:iot:eu-west-1:123456789012:rule/gateway_agent_retire'));
  assert.ok(mayInvoke(fn, 'arn:aws:iot:eu-west-1:123456789012:rule/gateway_agent_handover'));
  assert.deepEqual(Object.keys(a.state().rules).sort(), ['first_rule', 'gateway_agent_handover', 'gateway_agent_retire', 'second_rule']);
  assert.match(a.state().rules.gateway_agent_retire.sql, /^SELECT \*, principal\(\) AS newCertificateId, clientid\(\) AS clientId, topic\(2\) AS thingName, 'retire' AS request FROM 'lifecycle\/\+\/retire'$/);
  assert.match(a.state().rules.gateway_agent_handover.sql, /^SELECT \*, principal\(\) AS certificateId, clientid\(\) AS clientId, topic\(2\) AS thingName, 'handover' AS request FROM 'lifecycle\/\+\/handover'$/);
  assert.equal(a.state().rules.gateway_agent_handover.actions[0].lambda.functionArn, 'arn:aws:lambda:eu-west-1:123456789012:function:gateway-agent-jitr');
  // the command sequence of the second run: each statement is removed, then added
  const lambdaCalls = a.calls().filter((c) => c[0] === 'lambda' && /permission/.test(c[1]));
  assert.deepEqual(lambdaCalls.map((c) => `${c[1]} ${c[c.indexOf('--statement-id') + 1]}`), [
    'remove-permission iot-jitr-rule', 'add-permission iot-jitr-rule', 'remove-permission iot-retire-rule', 'add-permission iot-retire-rule',
    'remove-permission iot-handover-rule', 'add-permission iot-handover-rule',
    'remove-permission iot-jitr-rule', 'add-permission iot-jitr-rule', 'remove-permission iot-retire-rule', 'add-permission iot-retire-rule',
    'remove-permission iot-handover-rule', 'add-permission iot-handover-rule'
  ]);
  assert.equal(lambdaCalls.at(-5)[lambdaCalls.at(-5).indexOf('--source-arn') + 1], 'arn:aws:iot:eu-west-1:123456789012:rule/second_rule');
  // the function sends its retire replies to the account's data endpoint
  assert.match(a.state().functions['gateway-agent-jitr'].environment, /,IOT_DATA_ENDPOINT=https:\/\/[a-z0-9]+-ats\.iot\.eu-west-1\.amazonaws\.com\}$/);
  // a third run with the same rule converges
  r = await a.deploy(['--region', 'eu-west-1', '--rule-name', 'second_rule']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(mayInvoke(a.state().functions['gateway-agent-jitr'], 'arn:aws:iot:eu-west-1:123456789012:rule/second_rule'));
});

test('a real error of remove-permission or add-permission stops the deploy, with the error', async () => {
  const a = account();
  assert.equal((await a.deploy(['--region', 'eu-west-1'])).code, 0);
  for (const command of ['lambda remove-permission', 'lambda add-permission']) {
    const r = await a.deploy(['--region', 'eu-west-1', '--rule-name', 'other_rule'], { FAKE_AWS_FAIL: command });
    assert.notEqual(r.code, 0, command);
    assert.match(r.stderr, /AccessDeniedException/, command);
    assert.doesNotMatch(r.stdout, /^deployed:/m, command);
  }
});

test('the partition comes from the caller identity: aws-cn gives arn:aws-cn: everywhere', async () => {
  const a = account('arn:aws-cn:iam::123456789012:user/deployer');
  const r = await a.deploy(['--region', 'cn-north-1']);
  assert.equal(r.code, 0, r.stderr);
  const s = a.state();
  const role = s.roles['gateway-agent-jitr-lambda'];
  const arns = JSON.stringify(role.policies['gateway-agent-jitr']).match(/arn:[^"]*/g);
  assert.ok(arns.length >= 5);
  for (const arn of arns) assert.match(arn, /^arn:aws-cn:(iot|logs):cn-north-1:123456789012:/);
  const fn = s.functions['gateway-agent-jitr'];
  assert.equal(fn.role, 'arn:aws-cn:iam::123456789012:role/gateway-agent-jitr-lambda');
  assert.ok(mayInvoke(fn, 'arn:aws-cn:iot:cn-north-1:123456789012:rule/gateway_agent_jitr'));
  assert.equal(s.rules.gateway_agent_jitr.actions[0].lambda.functionArn, 'arn:aws-cn:lambda:cn-north-1:123456789012:function:gateway-agent-jitr');
  assert.doesNotMatch(r.stdout + JSON.stringify(s), /arn:aws:/);
});

test('--render-only and --dry-run for aws-cn: no arn:aws: in any rendered document or command', async () => {
  const out = path.join(dir, 'render-cn');
  const r = await promisify(execFile)(DEPLOY, ['--render-only', out, '--region', 'cn-northwest-1'], { env: { ...process.env, ACCOUNT_ID: '210987654321' } });
  assert.match(r.stdout, /arn:aws-cn:lambda:cn-northwest-1:210987654321:function:gateway-agent-jitr/);
  assert.deepEqual(fs.readdirSync(out).sort(), ['handover-rule.json', 'retire-rule.json', 'role-policy.json', 'topic-rule.json']);
  for (const f of fs.readdirSync(out)) {
    const text = fs.readFileSync(path.join(out, f), 'utf8');
    assert.doesNotMatch(text, /arn:aws:|\{\{/, f);
    assert.match(text, /arn:aws-cn:/, f);
  }
  const dry = await promisify(execFile)(DEPLOY, ['--dry-run', '--region', 'cn-north-1', '--rule-name', 'r2'], { env: { ...process.env, ACCOUNT_ID: '210987654321' } });
  const work = /rendered documents in (\S+)/.exec(dry.stdout)[1];
  try {
    assert.doesNotMatch(dry.stdout, /arn:aws:/);
    assert.match(dry.stdout, /\+ aws lambda remove-permission --function-name gateway-agent-jitr --statement-id iot-jitr-rule\n/);
    assert.match(dry.stdout, /\+ aws lambda add-permission .*--source-arn arn:aws-cn:iot:cn-north-1:210987654321:rule\/r2/);
    assert.match(dry.stdout, /--role arn:aws-cn:iam::210987654321:role\/gateway-agent-jitr-lambda/);
    assert.doesNotMatch(fs.readFileSync(path.join(work, 'role-policy.json'), 'utf8'), /arn:aws:/);
  } finally { fs.rmSync(work, { recursive: true, force: true }); }
  // the Lambda's policy templates carry the partition too: nothing hard-coded
  for (const f of ['device-policy.json', 'gateway-policy.json', 'lambda-role-policy.template.json', 'deploy.sh', 'index.mjs']) {
    assert.doesNotMatch(fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', f), 'utf8'), /arn:aws:/, f);
  }
});
