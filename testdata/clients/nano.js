'use strict';
// Drives a CouchDB server with the official client, nano, as an
// application would: insert, get, bulk, view lookups with {key} and
// {keys}, createIndex twice, find. Run by internal/e2e (clients_test.go)
// once through the sidecar and once against a second store directly; it
// prints every answer as one JSON document on stdout, so that the test
// can compare the two runs, and fails (exit 1) on the first answer that
// is not what a CouchDB server gives.
//
// Environment: COUCH_URL (server URL, no trailing slash), COUCH_DB (an
// existing database holding the design document _design/patients with
// the views by_email and by_ward_email).
const assert = require('node:assert/strict');
const nano = require('nano');

const server = nano({ url: process.env.COUCH_URL });
const db = server.use(process.env.COUCH_DB);
const out = [];
const record = (step, result) => { out.push({ step, result }); return result; };

async function main() {
  const ann = { _id: 'nano-ann', type: 'patient', name: 'Nano Ann', ssn: '555-12-3456', email: 'nano.ann@example.com', ward: 'B', diagnosis: 'R05 nano cough' };
  const ins = record('insert', await db.insert(ann));
  assert.equal(ins.ok, true);
  const got = record('get', await db.get('nano-ann'));
  assert.equal(got.ssn, ann.ssn);
  assert.equal(got.email, ann.email);

  const bulk = record('bulk', await db.bulk({ docs: [
    { _id: 'nano-bob', type: 'patient', name: 'Nano Bob', ssn: '555-98-7654', email: 'nano.bob@example.com', ward: 'C' },
    { _id: 'nano-cy', type: 'patient', name: 'Nano Cy', email: 'nano.cy@example.com', ward: 'B', diagnosis: null },
  ] }));
  assert.equal(bulk.length, 2);
  assert.ok(bulk.every((r) => r.ok));

  // nano JSON-encodes key, keys, startkey and endkey; the encoded key
  // must find the document.
  const byKey = record('view key', await db.view('patients', 'by_email', { key: 'nano.bob@example.com', include_docs: true }));
  assert.equal(byKey.rows.length, 1, 'view {key} finds the document');
  assert.equal(byKey.rows[0].key, 'nano.bob@example.com');
  assert.equal(byKey.rows[0].doc.name, 'Nano Bob');
  const byKeys = record('view keys', await db.view('patients', 'by_email', { keys: ['nano.cy@example.com', 'nano.ann@example.com'] }));
  assert.deepEqual(byKeys.rows.map((r) => r.id), ['nano-cy', 'nano-ann']);
  const compound = record('view compound key', await db.view('patients', 'by_ward_email', { key: ['C', 'nano.bob@example.com'] }));
  assert.equal(compound.rows.length, 1);
  assert.deepEqual(compound.rows[0].key, ['C', 'nano.bob@example.com']);

  // createIndex twice: the name and fields reach the store as written,
  // so the second call finds the first index.
  const def = { index: { fields: ['email'] }, name: 'nano-by-email' };
  const first = record('createIndex', await db.createIndex(def));
  const second = record('createIndex again', await db.createIndex(def));
  assert.equal(first.result, 'created');
  assert.equal(second.result, 'exists');
  assert.equal(second.id, first.id);
  const indexes = record('indexes', await server.request({ db: process.env.COUCH_DB, path: '_index' }));
  assert.equal(indexes.indexes.filter((i) => i.name === 'nano-by-email').length, 1, 'one index');

  const found = record('find', await db.find({ selector: { email: 'nano.ann@example.com' }, use_index: first.id }));
  assert.equal(found.docs.length, 1);
  assert.equal(found.docs[0].name, 'Nano Ann');
  const foundOr = record('find $or', await db.find({ selector: { $or: [{ email: 'nano.ann@example.com' }, { email: 'nano.cy@example.com' }] } }));
  assert.equal(foundOr.docs.length, 2);

  const list = record('list', await db.list({ include_docs: true }));
  assert.ok(list.rows.some((r) => r.doc && r.doc.ssn === '555-98-7654'));
  process.stdout.write(JSON.stringify(out), () => process.exit(0));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  if (err && err.statusCode) console.error('status', err.statusCode, JSON.stringify(err.description || err.reason || ''));
  process.exit(1);
});
