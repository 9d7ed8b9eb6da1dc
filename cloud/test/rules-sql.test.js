// The rules engine's SQL beyond `SELECT *`: select items with AS, the functions the retire
// and hand-over rules use, principal(), clientid() and topic(n), as the AWS IoT SQL reference
// gives them (developerguide/iot-sql-functions.html), and literal items ('handover' AS
// request; developerguide/iot-sql-select.html). Pure unit tests: no sim process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseSql, evaluateRule, callFunction } from '../iot-sim/lib/rules.js';
import { CLOUD_DIR } from './helpers.js';

const RETIRE_SQL = JSON.parse(fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'retire-rule.template.json'), 'utf8')).sql;
const HANDOVER_SQL = JSON.parse(fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'handover-rule.template.json'), 'utf8')).sql;
const JITR_SQL = JSON.parse(fs.readFileSync(path.join(CLOUD_DIR, 'jitr-lambda', 'topic-rule.template.json'), 'utf8')).sql;
const CERT = 'c'.repeat(64);

test('the shipped retire and hand-over rules parse to *, three functions and a constant with their names, and their filters', () => {
  // lifecycle/<thing>/<request>: the publisher's certificate id as `certificateField`
  const lifecycleRule = (request, certificateField) => ({
    filter: `lifecycle/+/${request}`,
    where: null,
    select: [
      { star: true },
      { fn: 'principal', arg: undefined, name: certificateField },
      { fn: 'clientid', arg: undefined, name: 'clientId' },
      { fn: 'topic', arg: 2, name: 'thingName' },
      { literal: request, name: 'request' }
    ]
  });
  assert.deepEqual(parseSql(RETIRE_SQL), lifecycleRule('retire', 'newCertificateId'));
  assert.deepEqual(parseSql(HANDOVER_SQL), lifecycleRule('handover', 'certificateId'));
});

test('the hand-over rule on a device publish: the payload plus the publisher\'s certificate id, client id, thing and the constant', () => {
  const q = parseSql(HANDOVER_SQL);
  const ca = 'b'.repeat(64);
  assert.deepEqual(evaluateRule(q, 'lifecycle/gw1:s1/handover', { caCertificateId: ca }, { clientId: 'gw1:s1', principal: CERT }), {
    caCertificateId: ca, certificateId: CERT, clientId: 'gw1:s1', thingName: 'gw1:s1', request: 'handover'
  });
  // the payload cannot forge what the items say, nor make it a retire request
  const forged = { caCertificateId: ca, certificateId: 'f'.repeat(64), clientId: 'other', thingName: 'other', request: 'retire' };
  assert.deepEqual(evaluateRule(q, 'lifecycle/gw1/handover', forged, { clientId: 'gw1', principal: CERT }), {
    caCertificateId: ca, certificateId: CERT, clientId: 'gw1', thingName: 'gw1', request: 'handover'
  });
  // nor a retire request's payload a hand-over request
  assert.equal(evaluateRule(parseSql(RETIRE_SQL), 'lifecycle/gw1/retire', { request: 'handover' }, { clientId: 'gw1', principal: CERT }).request, 'retire');
  assert.equal(evaluateRule(q, 'lifecycle/gw1/handover/accepted', { caCertificateId: ca }, { principal: CERT }), null);
});

test('literal items: a quoted string, a number, true/false; AS is required', () => {
  const q = parseSql("SELECT *, 15 as speed, 'on' AS state, FALSE AS f, -1.5 AS n FROM 'topic/subtopic'");
  assert.deepEqual(evaluateRule(q, 'topic/subtopic', { color: 'red', temperature: 50 }, {}),
    { color: 'red', temperature: 50, speed: 15, state: 'on', f: false, n: -1.5 });
});

test('the retire rule on a device publish: the payload plus the publisher\'s certificate id, client id and thing', () => {
  const q = parseSql(RETIRE_SQL);
  const doc = { oldCertificateId: 'a'.repeat(64) };
  assert.deepEqual(evaluateRule(q, 'lifecycle/gw1:s1/retire', doc, { clientId: 'gw1:s1', principal: CERT }), {
    oldCertificateId: 'a'.repeat(64), newCertificateId: CERT, clientId: 'gw1:s1', thingName: 'gw1:s1', request: 'retire'
  });
  // a payload cannot forge what the functions say: the named items come after *
  const forged = { oldCertificateId: 'a'.repeat(64), newCertificateId: 'f'.repeat(64), clientId: 'other', thingName: 'other' };
  assert.deepEqual(evaluateRule(q, 'lifecycle/gw1/retire', forged, { clientId: 'gw1', principal: CERT }), {
    oldCertificateId: 'a'.repeat(64), newCertificateId: CERT, clientId: 'gw1', thingName: 'gw1', request: 'retire'
  });
  // not a message the sim's own or the data plane published: no principal, no client id, and
  // the payload's keys of those names are not passed on as if they were
  assert.deepEqual(evaluateRule(q, 'lifecycle/gw1/retire', forged, {}), { oldCertificateId: 'a'.repeat(64), thingName: 'gw1', request: 'retire' });
  // other topics do not match the filter; non-JSON payloads are not modelled
  assert.equal(evaluateRule(q, 'lifecycle/gw1/retire/accepted', doc, { principal: CERT }), null);
  assert.equal(evaluateRule(q, 'lifecycle/gw1/x/retire', doc, { principal: CERT }), null);
  assert.equal(evaluateRule(q, 'lifecycle/gw1/retire', undefined, { principal: CERT }), null);
});

test('topic() is the whole topic, topic(n) its n-th level from 1, nothing past the last', () => {
  assert.equal(callFunction('topic', undefined, 'a/b/c'), 'a/b/c');
  assert.equal(callFunction('topic', 1, 'a/b/c'), 'a');
  assert.equal(callFunction('topic', 3, 'a/b/c'), 'c');
  assert.equal(callFunction('topic', 4, 'a/b/c'), undefined);
  assert.equal(callFunction('principal', undefined, 'a', { principal: CERT }), CERT);
  assert.equal(callFunction('clientid', undefined, 'a', { clientId: 'x' }), 'x');
  assert.equal(callFunction('clientid', undefined, 'a', {}), undefined);
});

test('select items: fields with and without AS, case-insensitive keywords and function names, order', () => {
  const q = parseSql("select a.b AS x, c, TOPIC() as t, Principal() AS p from 'dt/#'");
  assert.deepEqual(q.select, [
    { field: ['a', 'b'], name: 'x' }, { field: ['c'], name: 'c' },
    { fn: 'topic', arg: undefined, name: 't' }, { fn: 'principal', arg: undefined, name: 'p' }
  ]);
  assert.deepEqual(evaluateRule(q, 'dt/gw1/temp', { a: { b: 1 }, c: [2], d: 3 }, { principal: CERT }), { x: 1, c: [2], t: 'dt/gw1/temp', p: CERT });
  // an item whose value is missing is left out
  assert.deepEqual(evaluateRule(q, 'dt/gw1', { d: 3 }, {}), { t: 'dt/gw1' });
});

test('the JITR rule still works: SELECT * with WHERE on the event', () => {
  const q = parseSql(JITR_SQL);
  const ev = { certificateId: CERT, certificateStatus: 'PENDING_ACTIVATION', caCertificateId: 'b'.repeat(64) };
  assert.deepEqual(evaluateRule(q, `$aws/events/certificates/registered/${'b'.repeat(64)}`, ev, {}), ev);
  assert.equal(evaluateRule(q, `$aws/events/certificates/registered/${'b'.repeat(64)}`, { ...ev, certificateStatus: 'ACTIVE' }, {}), null);
  const withWhere = parseSql("SELECT *, topic(3) AS kind FROM 'dt/+/+' WHERE level = 'high'");
  assert.deepEqual(evaluateRule(withWhere, 'dt/gw1/alarm', { level: 'high' }, {}), { level: 'high', kind: 'alarm' });
  assert.equal(evaluateRule(withWhere, 'dt/gw1/alarm', { level: 'low' }, {}), null);
});

test('what the sim does not model is a SqlParseException, not a silent difference', () => {
  for (const bad of [
    "SELECT *, principal() FROM 'a'", // a function needs AS here
    "SELECT *, sourceip() AS ip FROM 'a'", // not modelled
    "SELECT *, topic(0) AS t FROM 'a'", "SELECT *, topic(x) AS t FROM 'a'", "SELECT principal(1) AS p FROM 'a'",
    "SELECT *, * FROM 'a'", "SELECT *, FROM 'a'", "SELECT a + 1 AS b FROM 'a'", "SELECT *, principal() AS p FROM 'a/#/b'",
    "SELECT *, 'x' FROM 'a'", // a literal needs AS here
    "SELECT *, 'a,b' AS x FROM 'a'", "SELECT 'it''s' AS x FROM 'a'" // commas and quotes in string literals are not modelled
  ]) {
    assert.throws(() => parseSql(bad), (e) => e.type === 'SqlParseException', bad);
  }
});
