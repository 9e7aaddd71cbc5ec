'use strict';
// PouchDB replication, unmodified, against a CouchDB server: a local
// in-memory PouchDB with plaintext documents (an edit history, a
// deletion, a conflict) replicates up into COUCH_DB, twice (the second
// run resumes from its checkpoint), then a second local database
// replicates everything down again and a live pull picks up a document
// written to the server while it runs. Run by internal/e2e
// (clients_test.go) through the sidecar and against a second store
// directly; prints a JSON summary on stdout and exits 1 if the copy that
// came down differs from the one that went up.
//
// Environment: COUCH_URL (server URL, no trailing slash), COUCH_DB (a
// database name; created by the replication if missing).
const assert = require('node:assert/strict');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

const remoteURL = process.env.COUCH_URL + '/' + process.env.COUCH_DB;

const summary = (r) => ({ ok: r.ok, docs_read: r.docs_read, docs_written: r.docs_written, doc_write_failures: r.doc_write_failures, errors: r.errors.length });

async function main() {
  const up = new PouchDB('up', { adapter: 'memory' });
  await up.bulkDocs([
    { _id: 'rep-ann', type: 'patient', name: 'Rep Ann', ssn: '600-11-2222', email: 'rep.ann@example.com', ward: 'B',
      contact: { name: 'Rep Kin', email: 'rep.kin@example.com' }, visits: [{ diagnosis: 'Rep Visit Dx' }] },
    { _id: 'rep-bob', type: 'patient', name: 'Rep Bob', ssn: '600-33-4444', email: 'rep.bob@example.com', ward: 'C', diagnosis: 'Rep Bob Dx' },
    { _id: 'rep-gone', type: 'patient', name: 'Rep Gone', ssn: '600-55-6666' },
  ]);
  // An edit history, a deletion and a conflict.
  let ann = await up.get('rep-ann');
  ann.diagnosis = 'Rep Ann Dx v2';
  await up.put(ann);
  ann = await up.get('rep-ann');
  ann.diagnosis = 'Rep Ann Dx v3';
  await up.put(ann);
  await up.remove(await up.get('rep-gone'));
  await up.bulkDocs([
    { _id: 'rep-conf', _rev: '1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', name: 'Rep Conflict A', email: 'rep.conf.a@example.com' },
    { _id: 'rep-conf', _rev: '1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', name: 'Rep Conflict B', email: 'rep.conf.b@example.com' },
  ], { new_edits: false });

  const remote = new PouchDB(remoteURL);
  const first = await up.replicate.to(remote);
  assert.equal(first.ok, true);
  assert.equal(first.doc_write_failures, 0);

  // A later edit: the second replication resumes from its checkpoint
  // (a _local document on the server).
  const bob = await up.get('rep-bob');
  bob.phone = 'Rep Phone 0199';
  await up.put(bob);
  const second = await up.replicate.to(remote);
  assert.equal(second.ok, true);
  assert.equal(second.docs_written, 1, 'the second run writes only the edit');

  const down = new PouchDB('down', { adapter: 'memory' });
  const pulled = await down.replicate.from(remote);
  assert.equal(pulled.ok, true);
  assert.equal(pulled.doc_write_failures, 0);

  const opts = { include_docs: true, conflicts: true };
  const [mine, theirs] = [await up.allDocs(opts), await down.allDocs(opts)];
  assert.deepEqual(theirs.rows, mine.rows, 'the copy that came down is the one that went up');
  const conflict = await down.get('rep-conf', { conflicts: true });
  assert.deepEqual(conflict._conflicts, ['1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa']);
  const history = await down.get('rep-ann', { revs: true });
  assert.equal(history._revisions.ids.length, 3);
  const leaves = await down.get('rep-conf', { open_revs: 'all' });
  assert.equal(leaves.length, 2);

  // A live pull (long-poll changes feed through the server) picks up a
  // document written to the server while it runs.
  const live = down.replicate.from(remote, { live: true, heartbeat: 1000 });
  let timer;
  const arrived = new Promise((resolve, reject) => {
    live.on('change', (info) => { if (info.docs.some((d) => d._id === 'rep-live')) resolve(info.docs.find((d) => d._id === 'rep-live')); });
    live.on('error', reject);
    timer = setTimeout(() => reject(new Error('the live pull did not deliver rep-live in 20s')), 20000);
  });
  await remote.put({ _id: 'rep-live', name: 'Rep Live', ssn: '600-77-8888', email: 'rep.live@example.com' });
  const liveDoc = await arrived;
  clearTimeout(timer);
  live.cancel();
  assert.equal(liveDoc.ssn, '600-77-8888');

  process.stdout.write(JSON.stringify({
    up: [summary(first), summary(second)],
    down: summary(pulled),
    docs: (await down.allDocs(opts)).rows,
    leaves,
    history: history._revisions,
    live: liveDoc,
  }), () => process.exit(0)); // a cancelled live feed may hold the event loop until its poll ends
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
