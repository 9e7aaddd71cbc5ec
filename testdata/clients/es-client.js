// The official Elasticsearch client (@elastic/elasticsearch 8), unmodified,
// as an application would use it: create an index, index in bulk, get,
// search by a searchable field (term, match, terms, bool), count, mget,
// msearch, update, index one document, and print every answer as one JSON
// line, with the fields that differ between runs (took) left out.
//
// ES_URL is the datastore's URL: the sidecar, or the fake directly.
'use strict';
const { Client } = require('@elastic/elasticsearch');

const client = new Client({ node: process.env.ES_URL });
const index = process.env.ES_INDEX || 'orders';

function out(what, v) {
  const clean = JSON.parse(JSON.stringify(v, (k, x) => (k === 'took' ? undefined : x)));
  process.stdout.write(JSON.stringify({ what, v: clean }) + '\n');
}

async function main() {
  out('info', (await client.info()).version.number);
  out('create', await client.indices.create({
    index,
    mappings: { properties: { email: { type: 'keyword' }, card: { properties: { number: { type: 'keyword' } } } } },
  }));
  const docs = [
    { id: 'o-1', customer: 'c-1', email: 'ann@example.com', ssn: '123-45-6789', card: { number: '4111111111111111', exp: '12/29' }, total: 42.5, address: { city: 'Springfield', zip: '12345' } },
    { id: 'o-2', customer: 'c-2', email: 'bob@example.org', ssn: '987-65-4321', card: { number: '5500005555555559' }, total: 7 },
    { id: 'o-3', customer: 'c-1', email: 'ann@example.com', 'card.number': '4012888888881881', total: 19.99 },
  ];
  const operations = docs.flatMap((d) => {
    const { id, ...doc } = d;
    return [{ index: { _index: index, _id: id } }, doc];
  });
  const bulk = await client.bulk({ refresh: true, operations });
  out('bulk', bulk);
  out('get', await client.get({ index, id: 'o-1' }));
  out('term', await client.search({ index, query: { term: { email: 'ann@example.com' } } }));
  out('match', await client.search({ index, query: { match: { email: 'bob@example.org' } } }));
  out('terms', await client.search({ index, query: { terms: { 'card.number': ['4111111111111111', '4012888888881881'] } } }));
  out('bool', await client.search({
    index,
    query: { bool: { must: [{ term: { customer: 'c-1' } }], filter: [{ match: { email: 'ann@example.com' } }], must_not: [{ ids: { values: ['o-3'] } }] } },
  }));
  out('count', await client.count({ index, query: { term: { email: 'ann@example.com' } } }));
  out('mget', await client.mget({ index, ids: ['o-1', 'o-2'] }));
  out('msearch', await client.msearch({
    searches: [{ index }, { query: { term: { email: 'bob@example.org' } } }, {}, { query: { match_all: {} } }],
    index,
  }));
  out('update', await client.update({ index, id: 'o-2', doc: { email: 'bob.new@example.org' } }));
  out('get-updated', await client.get({ index, id: 'o-2' }));
  out('index', await client.index({ index, id: 'o-4', document: { email: 'cy@example.net', ssn: '111-22-3333' }, refresh: true }));
  out('term-new', await client.search({ index, query: { term: { email: 'cy@example.net' } } }));
  out('term-updated', await client.search({ index, query: { match_phrase: { email: 'bob.new@example.org' } } }));
  try {
    await client.search({ index, query: { range: { email: { gte: 'a' } } } });
    out('range', 'accepted');
  } catch (e) {
    out('range', { status: e.meta && e.meta.statusCode });
  }
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  if (e && e.meta) process.stderr.write(JSON.stringify(e.meta.body) + '\n');
  process.exit(1);
});
