'use strict';
// Masked values written back (issue 19) with the official CouchDB client,
// nano, unmodified: an application that is shown a card number masked
// (last4: "***1111") reads a record, changes another field and saves it
// with db.insert(doc); then reads two records with db.fetch, changes them
// and saves them with db.bulk. Run by internal/e2e (masked_test.go)
// against a sidecar that masks the card key; the test then reads the
// records through a second sidecar that opens the key and expects the
// original card numbers. Prints every answer as one JSON document on
// stdout; fails (exit 1) on the first answer that is not what the
// application expects.
//
// Environment: COUCH_URL (the masking sidecar, no trailing slash),
// COUCH_DB (an existing database).
const assert = require('node:assert/strict');
const nano = require('nano');

const db = nano({ url: process.env.COUCH_URL }).use(process.env.COUCH_DB);
const out = [];
const record = (step, result) => { out.push({ step, result }); return result; };

async function main() {
  // Written through the masking sidecar: sealed in the store.
  record('insert ann', await db.insert({ _id: 'mask-ann', type: 'patient', name: 'Mask Ann', ward: 'B',
    card: { number: '4111111111111111', exp: '12/29' } }));
  record('insert bob', await db.insert({ _id: 'mask-bob', type: 'patient', name: 'Mask Bob', ward: 'C',
    card: { number: '5500005555555559', exp: '01/30' } }));
  record('insert cy', await db.insert({ _id: 'mask-cy', type: 'patient', name: 'Mask Cy', ward: 'D',
    card: { number: '4012888888881881', exp: '02/31' } }));

  // Read, change another field, write back: db.insert(doc) is a POST of
  // the document with its _id and _rev, the masked card number in it.
  const ann = record('get ann', await db.get('mask-ann'));
  assert.equal(ann.card.number, '***1111', 'the application is shown the card number masked');
  assert.equal(ann.name, 'Mask Ann');
  ann.ward = 'E';
  const saved = record('write back ann', await db.insert(ann));
  assert.equal(saved.ok, true);
  const again = record('get ann again', await db.get('mask-ann'));
  assert.equal(again.ward, 'E');
  assert.equal(again.card.number, '***1111');

  // The same through db.fetch and db.bulk: two records written back
  // masked, one given a new card number (new data).
  const fetched = record('fetch', await db.fetch({ keys: ['mask-bob', 'mask-cy'] }));
  const [bob, cy] = fetched.rows.map((r) => r.doc);
  assert.equal(bob.card.number, '***5559');
  assert.equal(cy.card.number, '***1881');
  bob.ward = 'F';
  cy.ward = 'G';
  cy.card.number = '4000056655665556';
  const bulk = record('bulk write back', await db.bulk({ docs: [bob, cy] }));
  assert.equal(bulk.length, 2);
  assert.ok(bulk.every((r) => r.ok), 'both written');
  const list = record('list', await db.list({ include_docs: true }));
  const byId = Object.fromEntries(list.rows.map((r) => [r.id, r.doc]));
  assert.equal(byId['mask-bob'].card.number, '***5559');
  assert.equal(byId['mask-cy'].card.number, '***5556');
  assert.equal(byId['mask-bob'].ward, 'F');
  process.stdout.write(JSON.stringify(out), () => process.exit(0));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  if (err && err.statusCode) console.error('status', err.statusCode, JSON.stringify(err.description || err.reason || ''));
  process.exit(1);
});
