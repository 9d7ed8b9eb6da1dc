// Unit tests of the sim's pure parts: rule SQL, topic matching, the publish log ring,
// token buckets and the registry's persistence.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseSql } from '../iot-sim/lib/rules.js';
import { topicMatches, validFilter, slashCount } from '../iot-sim/lib/topics.js';
import { PublishLog } from '../iot-sim/lib/publish-log.js';
import { TokenBucket, ConnectThrottle, ViolationCounters } from '../iot-sim/lib/limits.js';
import { Registry } from '../iot-sim/lib/registry.js';
import { tmpDir } from './helpers.js';

test('rule SQL subset', () => {
  assert.deepEqual(parseSql("SELECT * FROM '$aws/events/certificates/registered/#' WHERE certificateStatus = \"PENDING_ACTIVATION\""),
    { filter: '$aws/events/certificates/registered/#', where: { field: ['certificateStatus'], value: 'PENDING_ACTIVATION' }, select: [{ star: true }] });
  assert.deepEqual(parseSql("select * from 'a/+/c'"), { filter: 'a/+/c', where: null, select: [{ star: true }] });
  assert.deepEqual(parseSql("SELECT * FROM 'a' WHERE x.y = 'v'").where, { field: ['x', 'y'], value: 'v' });
  assert.deepEqual(parseSql("SELECT * FROM 'a' WHERE n = 42").where, { field: ['n'], value: '42' });
  for (const bad of ['', 'SELECT FROM \'x\'', "SELECT * FROM 'a/#/b'", "SELECT * FROM 'a' WHERE x > 1", "SELECT * FROM 'a' WHERE x = \"1\" AND y = \"2\""]) {
    assert.throws(() => parseSql(bad), (e) => e.type === 'SqlParseException', bad);
  }
});

test('MQTT topic filter matching and validation', () => {
  assert.equal(topicMatches('$aws/events/certificates/registered/#', '$aws/events/certificates/registered/abc'), true);
  assert.equal(topicMatches('#', '$aws/events/x'), false, '$ topics are not matched by a leading wildcard');
  assert.equal(topicMatches('a/+/c', 'a/b/c'), true);
  assert.equal(topicMatches('a/+/c', 'a/b/c/d'), false);
  assert.equal(topicMatches('a/#', 'a'), true);
  assert.equal(topicMatches('a/b', 'a/b'), true);
  assert.equal(topicMatches('a/b', 'a/bc'), false);
  assert.equal(validFilter('a/#/b'), false);
  assert.equal(validFilter('a/b+'), false);
  assert.equal(validFilter(''), false);
  assert.equal(validFilter('+/x/#'), true);
  assert.equal(slashCount('1/2/3/4/5/6/7/8'), 7);
});

test('publish log is a bounded ring with stable sequence numbers', () => {
  const log = new PublishLog(3);
  for (let i = 1; i <= 5; i++) log.add({ topic: `t/${i % 2}`, clientId: 'c', payload: Buffer.from(String(i)) });
  assert.deepEqual(log.list().map((e) => e.seq), [3, 4, 5]);
  assert.deepEqual(log.list({ since: 3 }).map((e) => Buffer.from(e.payload, 'base64').toString()), ['4', '5']);
  assert.deepEqual(log.list({ topic: 't/1' }).map((e) => e.seq), [3, 5]);
  assert.deepEqual(log.list({ limit: 1 }).map((e) => e.seq), [3]);
  log.clear();
  log.add({ topic: 'x', payload: Buffer.alloc(0) });
  assert.deepEqual(log.list().map((e) => e.seq), [6]);
  // the byte bound drops the oldest entries, but always keeps the newest
  const small = new PublishLog(100, 10);
  for (let i = 0; i < 4; i++) small.add({ topic: 't', payload: Buffer.alloc(4) });
  assert.deepEqual(small.list().map((e) => e.seq), [3, 4]);
  small.add({ topic: 't', payload: Buffer.alloc(50) });
  assert.deepEqual(small.list().map((e) => e.seq), [5]);
  // long runs stay correct across compaction
  const big = new PublishLog(1000);
  for (let i = 0; i < 5000; i++) big.add({ topic: 't', payload: Buffer.from([i & 255]) });
  const l = big.list();
  assert.deepEqual([l.length, l[0].seq, l.at(-1).seq], [1000, 4001, 5000]);
});

test('token bucket, connect throttle and violation counters', async () => {
  const b = new TokenBucket(10);
  let n = 0;
  while (b.take()) n++;
  assert.equal(n, 10);
  await new Promise((r) => setTimeout(r, 220));
  assert.equal(b.take(), true, 'refilled');
  assert.equal(new TokenBucket(0).take(1e9), true, 'rate 0 = unlimited');
  const t = new ConnectThrottle(1);
  assert.equal(t.allow('a'), true);
  assert.equal(t.allow('a'), false);
  assert.equal(t.allow('b'), true);
  const v = new ViolationCounters();
  v.count('a', 'x'); v.count('a', 'x'); v.count('a', 'y');
  assert.deepEqual(v.get('a'), { clientId: 'a', total: 3, counters: { x: 2, y: 1 } });
  assert.deepEqual(v.get('zz'), { clientId: 'zz', total: 0, counters: {} });
  v.clear('a');
  assert.deepEqual(v.all(), {});
});

test('registry persists atomically and reloads; flush on close', () => {
  const dir = tmpDir('registry-');
  try {
    const r = new Registry({ dataDir: dir, accountId: '111122223333', region: 'eu-west-1' });
    const code = r.registrationCode();
    r.createPolicy('p', JSON.stringify({ Statement: { Effect: 'Allow', Action: 'iot:*', Resource: '*' } }));
    r.createThing('t1');
    r.close();
    assert.equal(fs.existsSync(path.join(dir, 'registry.json.tmp')), false);
    const r2 = new Registry({ dataDir: dir, accountId: '999999999999', region: 'eu-west-1' });
    assert.equal(r2.accountId, '111122223333', 'the account of an existing registry is kept');
    assert.equal(r2.registrationCode(), code);
    assert.equal(r2.getPolicy('p').policyArn, 'arn:aws:iot:eu-west-1:111122223333:policy/p');
    assert.equal(r2.describeThing('t1').thingName, 't1');
    r2.close();
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});
