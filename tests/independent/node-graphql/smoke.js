'use strict';
// Self-check of server.js (not the grader). Run by smoke.sh, which owns the throwaway PostgreSQL.
//
//   node smoke.js               the correct service, every check printed
//   node smoke.js --bugs        also every planted bug: which checks each one changes
//   node smoke.js --styles      also every style alone and all together: must pass everything
//   node smoke.js --bug NAME    one bug;  --style A,B  one style combination
//
// Environment (from smoke.sh): ADMIN_URL (superuser, database shop), SVC_URL (the service's role),
// PORTS ("service mock"), PIDFILE (children's pids, for smoke.sh's trap).

const http = require('http');
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const { Client } = require('pg');

const ADMIN_URL = process.env.ADMIN_URL;
const SVC_URL = process.env.SVC_URL;
const [SVC_PORT, MOCK_PORT] = (process.env.PORTS || '').split(' ').map(Number);
const PIDFILE = process.env.PIDFILE;
const HERE = __dirname;

// what each planted bug must change in this self-check (a subset of BUGS.md's prediction:
// the ids this smoke test can observe)
const BUG_EXPECT = {
  'loader-per-row': ['gql-4.1'],
  'depth-off-by-one': ['gql-5.2'],
  'depth-ignores-fragments': ['gql-5.2'],
  'aliases-not-counted': ['gql-5.3'],
  'fragments-counted-once': ['gql-5.3'],
  'limits-after-execution': ['gql-5.1'],
  'introspection-by-name': ['gql-5.4'],
  'data-null-on-request-error': ['gql-2.3'],
  'status-200-request-errors': ['gql-2.3'],
  'always-json': ['gql-2.2'],
  'get-mutation-executes': ['gql-2.6'],
  'get-mutation-runs-then-405': ['gql-2.6'],
  '405-without-allow': ['gql-2.6'],
  'error-status-on-field-errors': ['gql-0.8', 'gql-2.5', 'gql-3.2', 'gql-6.2'],
  'loyalty-nulls-parent': ['gql-3.2'],
  'loyalty-leaks-details': ['gql-3.3'],
  'error-path-no-indexes': ['gql-3.2'],
  'no-loyalty-timeout': ['gql-3.2'],
  'offset-cursors': ['gql-6.5'],
  'hasnext-page-full': ['gql-6.4'],
  'end-cursor-first-edge': ['gql-6.3'],
  'first-clamped': ['gql-6.2'],
  'missing-customer-error': ['gql-0.7'],
  'createdat-not-rfc3339': ['gql-0.6'],
  'sort-by-id': ['gql-1.1'],
  'customer-orders-ignores-status': ['gql-1.1'],
  'bad-json-500': ['gql-2.4'],
};
const STYLE_NAMES = ['join-customers', 'no-get', 'json-400', 'validation-422', 'prefer-json',
  'count-introspection', 'plain-cursor', 'offset-createdat', 'strict-accept'];

// ---------------------------------------------------------------------------
// children (service), tracked for smoke.sh's trap

const children = new Set();
function recordPids() {
  if (PIDFILE) fs.writeFileSync(PIDFILE, [...children].map((c) => c.pid).join('\n') + '\n');
}
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL'); } catch (e) { /* gone */ } } });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

// ---------------------------------------------------------------------------
// the loyalty mock

const mock = { mode: 'ok', calls: 0 };
const TIERS = ['bronze', 'silver', 'gold'];
const tierOf = (id) => TIERS[Number(BigInt(id) % 3n)];
const mockServer = http.createServer((req, res) => {
  mock.calls += 1;
  const m = /^\/tiers\/(\d+)$/.exec(req.url);
  if (!m) { res.writeHead(404); res.end('no'); return; }
  const id = m[1];
  const fail = mock.mode === '500' || (mock.mode === 'mixed' && BigInt(id) % 2n === 0n);
  if (mock.mode === 'slow') {
    setTimeout(() => { res.writeHead(200, { 'Content-Type': 'application/json' }); res.end(JSON.stringify({ tier: tierOf(id) })); }, 5000);
    return;
  }
  if (mock.mode === 'reset') { req.socket.destroy(); return; }
  if (fail) {
    res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end('upstream exploded in /internal/secret-handler');
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ tier: tierOf(id) }));
});

// ---------------------------------------------------------------------------
// HTTP client without default headers

function request({ method = 'POST', path: p = '/graphql', headers = {}, body, timeout = 10000 }) {
  return new Promise((resolve) => {
    const started = Date.now();
    const req = http.request({ host: '127.0.0.1', port: SVC_PORT, method, path: p, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try { json = JSON.parse(text); } catch (e) { json = undefined; }
        const ct = (res.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
        resolve({ status: res.statusCode, headers: res.headers, ct, text, json, ms: Date.now() - started });
      });
    });
    req.setTimeout(timeout, () => { req.destroy(new Error('client timeout')); });
    req.on('error', (e) => resolve({ status: 0, headers: {}, ct: '', text: String(e.message), json: undefined, ms: Date.now() - started }));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const GR = 'application/graphql-response+json';
const JS = 'application/json';

function gql(query, variables, opts = {}) {
  const payload = { query };
  if (variables) payload.variables = variables;
  if (opts.operationName) payload.operationName = opts.operationName;
  const headers = { 'Content-Type': 'application/json' };
  if (opts.accept !== null) headers.Accept = opts.accept || GR;
  return request({ headers, body: JSON.stringify(payload), timeout: opts.timeout });
}

function gqlGet(query, opts = {}) {
  const qs = new URLSearchParams({ query });
  return request({ method: 'GET', path: `/graphql?${qs}`, headers: { Accept: opts.accept || GR } });
}

// ---------------------------------------------------------------------------
// checks

let results = [];
function check(id, name, ok, detail) {
  results.push({ id, name, ok: !!ok, detail: ok ? '' : detail });
}
const short = (r) => `status ${r.status} ${r.ct} ${r.text.slice(0, 300)}`;
const isRequestError = (r) => r.json && Array.isArray(r.json.errors) && r.json.errors.length > 0 && !('data' in r.json);
const refused = (r) => (r.status === 400 || r.status === 422) && r.ct === GR && isRequestError(r);
const noErrors = (r) => r.status === 200 && r.json && !r.json.errors && r.json.data;

async function withAdmin(fn) {
  const c = new Client({ connectionString: ADMIN_URL });
  await c.connect();
  try { return await fn(c); } finally { await c.end(); }
}
let admin;
const q = async (sql, params) => (await admin.query(sql, params)).rows;
async function svcStatements() {
  const rows = await q(`SELECT coalesce(sum(calls), 0)::int AS n FROM pg_stat_statements
    WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = 'svc')`);
  return rows[0].n;
}
const resetStatements = () => q('SELECT pg_stat_statements_reset()');

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

async function oracleOrders({ customerId = null, status = null, limit, afterIndex = 0 }) {
  const where = [];
  const params = [];
  if (customerId) { params.push(customerId); where.push(`customer_id = $${params.length}`); }
  if (status) { params.push(status); where.push(`status = $${params.length}`); }
  params.push(limit, afterIndex);
  return (await q(`SELECT id::text FROM shop_orders ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
    ORDER BY created_at DESC, id DESC LIMIT $${params.length - 1} OFFSET $${params.length}`, params)).map((r) => r.id);
}

async function runChecks() {
  results = [];
  mock.mode = 'ok';
  const someCustomer = (await q('SELECT id::text FROM shop_customers ORDER BY id LIMIT 1 OFFSET 7'))[0].id;
  // the customer with the most orders (at most 100) other than someCustomer, who gets new orders
  const busy = (await q(`SELECT customer_id::text AS id, count(*)::int AS n FROM shop_orders WHERE customer_id <> $1
    GROUP BY customer_id HAVING count(*) <= 100 ORDER BY count(*) DESC, customer_id LIMIT 1`, [someCustomer]))[0];
  const evenCustomer = (await q(`SELECT customer_id::text AS id FROM shop_orders WHERE customer_id % 2 = 0
    GROUP BY customer_id HAVING count(*) >= 4 ORDER BY customer_id LIMIT 1`))[0].id;

  // 0.1
  const h = await request({ method: 'GET', path: '/healthz' });
  check('gql-0.1', 'GET /healthz answers 200', h.status === 200, short(h));

  // 0.4 schema
  {
    const r = await gql(`{ q: __type(name: "Query") { fields { name args { name type { name kind ofType { name } } } } }
      c: __type(name: "Customer") { fields { name } } o: __type(name: "Order") { fields { name } }
      m: __type(name: "Mutation") { fields { name } } }`);
    const names = (t) => (r.json && r.json.data && r.json.data[t] ? r.json.data[t].fields.map((f) => f.name).sort().join(',') : '');
    check('gql-0.4', 'schema: Query, Customer, Order, Mutation fields as the README',
      names('q') === 'customer,orders' && names('c') === 'createdAt,email,id,loyaltyTier,name,orders' &&
      names('o') === 'createdAt,customer,id,status,totalCents' && names('m') === 'createCustomer,placeOrder', short(r));
  }

  // 0.5 / 0.6 / customer fields
  {
    const db = (await q(`SELECT id::text, email, name, (extract(epoch FROM created_at) * 1000)::float8 AS ms
      FROM shop_customers WHERE id = $1`, [someCustomer]))[0];
    const r = await gql(`{ customer(id: ${someCustomer}) { id email name createdAt } }`);
    const c = r.json && r.json.data && r.json.data.customer;
    check('gql-0.5', 'an integer id literal is accepted; ids are serialized as strings',
      noErrors(r) && c && c.id === someCustomer, short(r));
    const r2 = await gql('query($id: ID!) { customer(id: $id) { id } }', { id: Number(someCustomer) });
    check('gql-0.5', 'an integer id variable is accepted', noErrors(r2) && r2.json.data.customer && r2.json.data.customer.id === someCustomer, short(r2));
    check('gql-1.1', 'customer fields are the row\'s', c && c.email === db.email && c.name === db.name, short(r));
    check('gql-0.6', 'createdAt is RFC 3339 and the stored instant',
      c && RFC3339.test(c.createdAt) && Math.abs(Date.parse(c.createdAt) - Math.floor(db.ms)) < 1, `${c && c.createdAt} vs ${db.ms}`);
    const r3 = await gql('{ orders(first: 3) { edges { node { createdAt } } } }');
    const ok3 = noErrors(r3) && r3.json.data.orders.edges.every((e) => RFC3339.test(e.node.createdAt));
    check('gql-0.6', 'Order.createdAt is RFC 3339', ok3, short(r3));
  }

  // 0.7
  {
    const r = await gql('{ customer(id: "999999999") { id } }');
    check('gql-0.7', 'unknown customer is null, not an error', noErrors(r) && r.json.data.customer === null, short(r));
  }

  // 0.8 / 1.2 mutations
  {
    const email = `smoke-${Date.now()}@example.test`;
    const r = await gql('mutation($e: String!, $n: String!) { createCustomer(email: $e, name: $n) { id email name createdAt } }',
      { e: email, n: 'Smoke Test' });
    const c = r.json && r.json.data && r.json.data.createCustomer;
    const rows = c ? await q('SELECT email, name FROM shop_customers WHERE id = $1', [c.id]) : [];
    check('gql-0.8', 'createCustomer inserts and returns the customer', noErrors(r) && c && c.email === email &&
      /^\d+$/.test(c.id) && rows.length === 1 && rows[0].name === 'Smoke Test', short(r));
    if (c) {
      const r1 = await gql(`{ customer(id: "${c.id}") { id email orders { edges { node { id } } pageInfo { hasNextPage endCursor } } } }`);
      const cc = r1.json && r1.json.data && r1.json.data.customer;
      check('gql-1.2', 'the created customer is visible to the next query', cc && cc.email === email, short(r1));
      check('gql-6.3', 'a customer without orders: empty page, endCursor null, hasNextPage false',
        cc && cc.orders.edges.length === 0 && cc.orders.pageInfo.endCursor === null && cc.orders.pageInfo.hasNextPage === false, short(r1));
      const r2 = await gql(`mutation { placeOrder(customerId: "${c.id}", totalCents: 4321) { id status totalCents createdAt customer { id email } } }`);
      const o = r2.json && r2.json.data && r2.json.data.placeOrder;
      const orow = o ? await q('SELECT status, total_cents::int AS t, customer_id::text AS c, now() - created_at < interval \'1 minute\' AS fresh FROM shop_orders WHERE id = $1', [o.id]) : [];
      check('gql-0.8', 'placeOrder inserts a pending order now and returns it', noErrors(r2) && o && o.status === 'pending' &&
        o.totalCents === 4321 && o.customer.id === c.id && orow.length === 1 && orow[0].status === 'pending' &&
        orow[0].t === 4321 && orow[0].fresh, short(r2));
      const r3 = await gql(`{ customer(id: "${c.id}") { orders(first: 1) { edges { node { id totalCents } } } } }`);
      check('gql-1.2', 'the placed order is visible to the next query', o && r3.json && r3.json.data &&
        r3.json.data.customer.orders.edges[0] && r3.json.data.customer.orders.edges[0].node.id === o.id, short(r3));
    }
    const r4 = await gql('mutation { po: placeOrder(customerId: "1", totalCents: 5) { id } }');
    check('gql-0.8', 'placeOrder for an unknown customer: null, error at ["po"] (alias), status 200',
      r4.status === 200 && r4.json && r4.json.data && r4.json.data.po === null && r4.json.errors &&
      r4.json.errors.length === 1 && JSON.stringify(r4.json.errors[0].path) === '["po"]', short(r4));
  }

  // 1.1 lists
  {
    const r = await gql('{ orders { edges { node { id } } } }');
    const got = r.json && r.json.data && r.json.data.orders ? r.json.data.orders.edges.map((e) => e.node.id) : [];
    const want = await oracleOrders({ limit: 10 });
    check('gql-1.1', 'orders: newest first (created_at, id), 10 by default', noErrors(r) && JSON.stringify(got) === JSON.stringify(want),
      `${JSON.stringify(got)} vs ${JSON.stringify(want)}`);
    const r2 = await gql('{ orders(first: 40, status: "shipped") { edges { node { id status } } } }');
    const got2 = r2.json && r2.json.data && r2.json.data.orders ? r2.json.data.orders.edges.map((e) => e.node.id) : [];
    const want2 = await oracleOrders({ status: 'shipped', limit: 40 });
    check('gql-1.1', 'orders(status:) filters, newest first', JSON.stringify(got2) === JSON.stringify(want2), short(r2));
    const r3 = await gql(`{ customer(id: "${busy.id}") { orders(first: 100) { edges { node { id } } } a: orders(first: 100, status: "delivered") { edges { node { id } } } } }`);
    const cd = r3.json && r3.json.data && r3.json.data.customer;
    const want3 = await oracleOrders({ customerId: busy.id, limit: 100 });
    const want3b = await oracleOrders({ customerId: busy.id, status: 'delivered', limit: 100 });
    check('gql-1.1', 'Customer.orders: that customer\'s, newest first', cd && JSON.stringify(cd.orders.edges.map((e) => e.node.id)) === JSON.stringify(want3), short(r3));
    check('gql-1.1', 'Customer.orders(status:) filters', cd && JSON.stringify(cd.a.edges.map((e) => e.node.id)) === JSON.stringify(want3b), short(r3));
    const r4 = await gql('{ orders(first: 30) { edges { node { id totalCents customer { id email } } } } }');
    const edges = r4.json && r4.json.data && r4.json.data.orders ? r4.json.data.orders.edges : [];
    const dbRows = await q('SELECT o.id::text, o.total_cents::int AS t, c.id::text AS cid, c.email FROM shop_orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = ANY($1::bigint[])', [edges.map((e) => e.node.id)]);
    const byId = new Map(dbRows.map((x) => [x.id, x]));
    check('gql-1.1', 'Order.customer and totalCents are the rows\'', edges.length === 30 && edges.every((e) => {
      const d = byId.get(e.node.id);
      return d && d.t === e.node.totalCents && d.cid === e.node.customer.id && d.email === e.node.customer.email;
    }), short(r4));
  }

  // 2.1
  {
    const r = await gql('query A { customer(id: "1") { id } } query B($n: Int) { orders(first: $n) { edges { cursor } } }',
      { n: 2 }, { operationName: 'B' });
    check('gql-2.1', 'variables and operationName are honoured', noErrors(r) && r.json.data.orders && r.json.data.orders.edges.length === 2, short(r));
  }

  // 2.2
  {
    const QQ = '{ orders(first: 1) { edges { cursor } } }';
    const a = await gql(QQ, null, { accept: GR });
    check('gql-2.2', 'Accept: graphql-response+json only -> that media type', a.status === 200 && a.ct === GR, short(a));
    const b = await gql(QQ, null, { accept: JS });
    check('gql-2.2', 'Accept: application/json only -> application/json', b.status === 200 && b.ct === JS, short(b));
    for (const acc of [`${GR}, ${JS}`, `${JS};q=0.9, ${GR}`, '*/*', null]) {
      const c = await gql(QQ, null, { accept: acc });
      check('gql-2.2', `Accept: ${acc === null ? '(none)' : acc} -> either JSON type`, c.status === 200 && (c.ct === GR || c.ct === JS), short(c));
    }
    const d = await gql('{ nope }', null, { accept: JS });
    check('gql-2.2', 'a request error under application/json is application/json', d.ct === JS, short(d));
  }

  // 2.3 request errors
  {
    const cases = [
      ['syntax error', '{ customer(id: "1") { id }'],
      ['unknown field', '{ customer(id: "1") { nope } }'],
      ['missing required argument', '{ customer { id } }'],
      ['wrong argument type', '{ orders(first: "ten") { edges { cursor } } }'],
      ['variable of the wrong type', 'query($n: Int) { orders(first: $n) { edges { cursor } } }', { n: 'x' }],
      ['unknown operationName', 'query A { orders { edges { cursor } } }', null, 'Nope'],
    ];
    for (const [name, query, vars, op] of cases) {
      await resetStatements();
      const r = await gql(query, vars, { accept: GR, operationName: op });
      check('gql-2.3', `${name} under graphql-response+json: 400/422, errors, no data`,
        (r.status === 400 || r.status === 422) && r.ct === GR && isRequestError(r), short(r));
      const r2 = await gql(query, vars, { accept: JS, operationName: op });
      check('gql-2.3', `${name} under application/json: 200/400/422, errors, no data`,
        [200, 400, 422].includes(r2.status) && r2.ct === JS && isRequestError(r2), short(r2));
      const n = await svcStatements();
      check('gql-2.3', `${name}: nothing executed`, n === 0, `${n} statements`);
    }
  }

  // 2.4
  {
    for (const [name, body] of [['not JSON', '{"query": "{ orders { edges { cursor } } }"'], ['no query', '{"variables": {}}'],
      ['query not a string', '{"query": 7}'], ['a JSON array', '[{"query": "{ __typename }"}]']]) {
      const r = await request({ headers: { 'Content-Type': 'application/json', Accept: GR }, body });
      check('gql-2.4', `a body that is ${name} -> 400`, r.status === 400, short(r));
    }
  }

  // 2.5 field errors
  for (const acc of [GR, JS]) {
    const r = await gql('{ orders(first: 101) { edges { cursor } } c: customer(id: "1") { id } }', null, { accept: acc });
    check('gql-2.5', `a field error under ${acc} -> 200 with data`, r.status === 200 && r.json && r.json.data && r.json.errors, short(r));
  }

  // 2.6 GET
  {
    const g = await gqlGet('{ orders(first: 2) { edges { cursor } } }');
    check('gql-2.6', 'GET query: served (200) or refused with 405 + Allow: POST',
      (g.status === 200 && g.json && g.json.data && g.json.data.orders.edges.length === 2) ||
      (g.status === 405 && /\bPOST\b/.test(g.headers.allow || '')), short(g));
    const email = `get-${Date.now()}@example.test`;
    const m = await gqlGet(`mutation { createCustomer(email: "${email}", name: "via GET") { id } }`);
    const rows = await q('SELECT 1 FROM shop_customers WHERE email = $1', [email]);
    check('gql-2.6', 'GET mutation -> 405', m.status === 405, short(m));
    check('gql-2.6', 'GET mutation -> Allow lists POST', /\bPOST\b/.test(m.headers.allow || ''), JSON.stringify(m.headers));
    check('gql-2.6', 'GET mutation changes nothing', rows.length === 0, `${rows.length} rows with ${email}`);
  }

  // 3 loyalty
  {
    mock.mode = 'ok';
    const r = await gql(`{ customer(id: "${someCustomer}") { loyaltyTier } }`);
    check('gql-3.1', 'loyaltyTier is the loyalty service\'s tier', noErrors(r) && r.json.data.customer.loyaltyTier === tierOf(someCustomer), short(r));

    // a list of orders of many customers, some of whose tiers fail (even ids): aliases and indexes
    const Q = `{ o: orders(first: 20, status: "delivered") { e: edges { n: node { id cu: customer { id t: loyaltyTier name } } } } }`;
    mock.mode = 'mixed';
    const m = await gql(Q);
    mock.mode = 'ok';
    let ok = m.status === 200 && m.json && m.json.data && m.json.data.o;
    const errs = (m.json && m.json.errors) || [];
    let expectedErrors = 0;
    const paths = new Set(errs.map((e) => JSON.stringify(e.path)));
    if (ok) {
      m.json.data.o.e.forEach((edge, i) => {
        const cu = edge.n.cu;
        if (!cu || typeof cu.name !== 'string') { ok = false; return; }
        if (BigInt(cu.id) % 2n === 0n) {
          expectedErrors += 1;
          if (cu.t !== null || !paths.has(JSON.stringify(['o', 'e', i, 'n', 'cu', 't']))) ok = false;
        } else if (cu.t !== tierOf(cu.id)) ok = false;
      });
    }
    check('gql-3.2', `failing tiers in a list: 200, null tier, siblings kept, one error per failed field at its exact path (${expectedErrors} of 20 fail)`,
      ok && expectedErrors > 0 && errs.length === expectedErrors, short(m));
    // the README's own path shape
    mock.mode = 'mixed';
    const m2 = await gql(`{ customer(id: "${evenCustomer}") { orders(first: 4) { edges { node { customer { loyaltyTier } } } } } }`);
    mock.mode = 'ok';
    const want2 = [0, 1, 2, 3].map((i) => JSON.stringify(['customer', 'orders', 'edges', i, 'node', 'customer', 'loyaltyTier'])).sort();
    const got2 = ((m2.json && m2.json.errors) || []).map((e) => JSON.stringify(e.path)).sort();
    check('gql-3.2', 'the README\'s path ["customer","orders","edges",i,"node","customer","loyaltyTier"], one error per field',
      m2.status === 200 && JSON.stringify(got2) === JSON.stringify(want2) && m2.json.data.customer &&
      m2.json.data.customer.orders.edges.every((e) => e.node.customer.loyaltyTier === null), short(m2));

    for (const mode of ['500', 'reset', 'slow']) {
      mock.mode = mode;
      const r2 = await gql(`{ customer(id: "${someCustomer}") { id name loyaltyTier email } }`, null, { timeout: 4500 });
      mock.mode = 'ok';
      const c = r2.json && r2.json.data && r2.json.data.customer;
      check('gql-3.2', `loyalty ${mode}: 200, loyaltyTier null with an error at its path, siblings kept`,
        r2.status === 200 && c && c.loyaltyTier === null && c.id === someCustomer && typeof c.email === 'string' &&
        r2.json.errors && r2.json.errors.length === 1 && JSON.stringify(r2.json.errors[0].path) === '["customer","loyaltyTier"]' &&
        (mode !== 'slow' || r2.ms < 3500), `${r2.ms} ms ${short(r2)}`);
      const text = JSON.stringify((r2.json && r2.json.errors) || []);
      check('gql-3.3', `loyalty ${mode}: nothing internal in the errors`, r2.json && r2.json.errors &&
        !text.includes(String(MOCK_PORT)) && !/127\.0\.0\.1|localhost|http:|\/tiers|exploded|secret|stack|ECONN|    at /i.test(text), text);
    }
  }

  // 4.1 statements
  for (const n of [5, 50]) {
    await resetStatements();
    const r = await gql(`{ orders(first: ${n}, status: "delivered") { edges { node { id customer { email name } } } } }`);
    const count = await svcStatements();
    const edges = r.json && r.json.data && r.json.data.orders ? r.json.data.orders.edges : [];
    check('gql-4.1', `first ${n} delivered orders with customers: at most 3 statements`, noErrors(r) && edges.length === n && count <= 3,
      `${count} statements, ${edges.length} edges`);
  }

  // 5 limits
  {
    const X = someCustomer;
    const d8 = `{ customer(id: "${X}") { orders(first: 1) { edges { node { customer { orders(first: 1) { edges { cursor } } } } } } } }`;
    const d9 = `{ customer(id: "${X}") { orders(first: 1) { edges { node { customer { orders(first: 1) { edges { node { id } } } } } } } } }`;
    const r8 = await gql(d8);
    check('gql-5.2', 'depth 8 runs', noErrors(r8), short(r8));
    await resetStatements();
    const r9 = await gql(d9);
    const n9 = await svcStatements();
    check('gql-5.2', 'depth 9 is a request error', refused(r9), short(r9));
    check('gql-5.1', 'a refused query runs no SQL', n9 === 0, `${n9} statements`);
    const f8 = `query { customer(id: "${X}") { ...A } }
      fragment A on Customer { orders(first: 1) { ... on OrderConnection { edges { node { ...B } } } } }
      fragment B on Order { customer { ... { orders(first: 1) { edges { ...C } } } } }
      fragment C on OrderEdge { cursor }`;
    const rf8 = await gql(f8);
    check('gql-5.2', 'depth 8 through fragments and inline fragments runs', noErrors(rf8), short(rf8));
    const f9 = f8.replace('fragment C on OrderEdge { cursor }', 'fragment C on OrderEdge { node { id } }');
    await resetStatements();
    const rf9 = await gql(f9);
    const nf9 = await svcStatements();
    check('gql-5.2', 'depth 9 through fragments is a request error', refused(rf9), short(rf9));
    check('gql-5.1', 'a refused query (fragments) runs no SQL', nf9 === 0, `${nf9} statements`);

    const ids = (k) => Array.from({ length: k }, (_, i) => `f${i}: id`).join(' ');
    const r100 = await gql(`{ customer(id: "${X}") { ${ids(99)} } }`);
    check('gql-5.3', '100 fields (aliases) run', noErrors(r100), short(r100));
    await resetStatements();
    const r101 = await gql(`{ customer(id: "${X}") { ${ids(100)} } }`);
    const n101 = await svcStatements();
    check('gql-5.3', '101 fields (aliases) are a request error', refused(r101), short(r101));
    check('gql-5.1', 'a refused query (fields) runs no SQL', n101 === 0, `${n101} statements`);
    const rootAliases = `{ a: customer(id: "${X}") { id } b: customer(id: "${X}") { id } }`;
    const ra = await gql(rootAliases);
    check('gql-5.3', 'the README\'s 4-field example runs', noErrors(ra), short(ra));
    const frag = (k) => `fragment F on Customer { ${ids(k)} }`;
    const three = `{ a: customer(id: "${X}") { ...F } b: customer(id: "${X}") { ...F } c: customer(id: "${X}") { ...F } }`;
    const r99 = await gql(`${three} ${frag(32)}`);
    check('gql-5.3', 'a fragment used 3 times counts 3 times: 99 runs', noErrors(r99), short(r99));
    const r102 = await gql(`${three} ${frag(33)}`);
    check('gql-5.3', 'a fragment used 3 times counts 3 times: 102 refused', refused(r102), short(r102));
    const rint = await gql('{ __schema { queryType { name } } __typename }');
    check('gql-5.4', 'introspection runs', noErrors(rint), short(rint));
    const aliasIntro = `{ __schema: customer(id: "${X}") { ${ids(100)} } }`;
    const rai = await gql(aliasIntro);
    check('gql-5.4', 'an alias called __schema is counted (101 refused)', refused(rai), short(rai));
    const fragIntro = `{ customer(id: "${X}") { ...__schema } } fragment __schema on Customer { ${ids(100)} }`;
    const rfi = await gql(fragIntro);
    check('gql-5.4', 'a fragment called __schema is counted (101 refused)', refused(rfi), short(rfi));
    const deepAlias = `{ customer(id: "${X}") { orders(first: 1) { edges { node { __type: customer { orders(first: 1) { edges { node { id } } } } } } } } }`;
    const rda = await gql(deepAlias);
    check('gql-5.4', 'an alias called __type is not introspection for depth (9 refused)', refused(rda), short(rda));
  }

  // a few more: a fragment bomb, a subscription, q=0
  {
    const defs = [];
    for (let i = 0; i < 30; i += 1) defs.push(`fragment F${i} on Query { ...F${i + 1} ...F${i + 1} }`);
    defs.push('fragment F30 on Query { orders(first: 1) { edges { cursor } } }');
    const started = Date.now();
    await resetStatements();
    const rb = await gql(`{ ...F0 } ${defs.join(' ')}`);
    const nb = await svcStatements();
    check('gql-5.3', 'a fragment bomb (2^30 expansions) is refused at once, without SQL', refused(rb) && Date.now() - started < 2000 && nb === 0,
      `${Date.now() - started} ms ${short(rb)}`);
    const rs = await gql('subscription { customer(id: "1") { id } }');
    check('gql-2.3', 'a subscription (the schema has none) is a request error', refused(rs), short(rs));
    const rq = await gql('{ orders(first: 1) { edges { cursor } } }', null, { accept: `${GR};q=0, ${JS}` });
    check('gql-2.2', 'Accept: graphql-response+json;q=0, application/json -> application/json', rq.status === 200 && rq.ct === JS, short(rq));
  }

  // 6 connections
  {
    const r = await gql('{ orders(first: 100) { edges { cursor } } }');
    check('gql-6.2', 'first 100 gives 100', noErrors(r) && r.json.data.orders.edges.length === 100, short(r));
    for (const bad of [101, -1]) {
      const r2 = await gql(`{ orders(first: ${bad}) { edges { cursor } } other: customer(id: "${someCustomer}") { id } }`);
      check('gql-6.2', `orders(first: ${bad}): field error at ["orders"], orders null, siblings kept`,
        r2.status === 200 && r2.json && r2.json.data && r2.json.data.orders === null && r2.json.data.other &&
        r2.json.errors && JSON.stringify(r2.json.errors[0].path) === '["orders"]', short(r2));
    }
    const r3 = await gql(`{ customer(id: "${someCustomer}") { id orders(first: 101) { edges { cursor } } } }`);
    check('gql-6.2', 'Customer.orders(first: 101): customer null, error at ["customer","orders"]',
      r3.status === 200 && r3.json && r3.json.data && r3.json.data.customer === null && r3.json.errors &&
      JSON.stringify(r3.json.errors[0].path) === '["customer","orders"]', short(r3));

    // 6.3 endCursor and after
    const p1 = await gql('{ orders(first: 7, status: "delivered") { edges { cursor node { id } } pageInfo { endCursor hasNextPage } } }');
    const c1 = p1.json && p1.json.data && p1.json.data.orders;
    check('gql-6.3', 'each edge has a cursor string; endCursor is the last edge\'s', c1 && c1.edges.every((e) => typeof e.cursor === 'string' && e.cursor) &&
      c1.pageInfo.endCursor === c1.edges[c1.edges.length - 1].cursor, short(p1));
    if (c1) {
      const p2 = await gql('query($a: String) { orders(first: 7, status: "delivered", after: $a) { edges { node { id } } } }', { a: c1.pageInfo.endCursor });
      const got = p2.json && p2.json.data && p2.json.data.orders ? p2.json.data.orders.edges.map((e) => e.node.id) : [];
      const want = await oracleOrders({ status: 'delivered', limit: 7, afterIndex: 7 });
      check('gql-6.3', 'after: endCursor continues with the next orders', JSON.stringify(got) === JSON.stringify(want), `${JSON.stringify(got)} vs ${JSON.stringify(want)}`);
      const mid = c1.edges[2].cursor;
      const p3 = await gql('query($a: String) { orders(first: 2, status: "delivered", after: $a) { edges { node { id } } } }', { a: mid });
      const got3 = p3.json && p3.json.data && p3.json.data.orders ? p3.json.data.orders.edges.map((e) => e.node.id) : [];
      check('gql-6.3', 'after: any edge\'s cursor continues after that edge', JSON.stringify(got3) === JSON.stringify(c1.edges.slice(3, 5).map((e) => e.node.id)), short(p3));
    }
    const e = await gql('{ orders(status: "no-such-status") { edges { cursor } pageInfo { endCursor hasNextPage } } }');
    check('gql-6.3', 'an empty page: endCursor null', noErrors(e) && e.json.data.orders.edges.length === 0 && e.json.data.orders.pageInfo.endCursor === null, short(e));

    // 6.4 hasNextPage
    const n = (await q('SELECT count(*)::int AS n FROM shop_orders WHERE customer_id = $1', [busy.id]))[0].n;
    const hp = await gql(`{ customer(id: "${busy.id}") { full: orders(first: ${n}) { edges { cursor } pageInfo { hasNextPage } }
      less: orders(first: ${n - 1}) { pageInfo { hasNextPage } } } }`);
    const cd = hp.json && hp.json.data && hp.json.data.customer;
    check('gql-6.4', `a full page holding the last orders says hasNextPage false (${n} of ${n})`, cd && cd.full.edges.length === n && cd.full.pageInfo.hasNextPage === false, short(hp));
    check('gql-6.4', 'a page with more after it says hasNextPage true', cd && cd.less.pageInfo.hasNextPage === true, short(hp));

    // 6.5 a walk while orders are placed
    const snapshot = await oracleOrders({ limit: 100000 });
    const walked = [];
    let after = null;
    let pages = 0;
    let walkOk = true;
    while (pages < 100) {
      const pr = await gql('query($a: String) { orders(first: 100, after: $a) { edges { node { id } } pageInfo { hasNextPage endCursor } } }', { a: after });
      const conn = pr.json && pr.json.data && pr.json.data.orders;
      if (!conn) { walkOk = false; break; }
      walked.push(...conn.edges.map((x) => x.node.id));
      pages += 1;
      // a few orders placed between the pages, newer than everything listed
      for (let i = 0; i < 3; i += 1) await gql(`mutation { placeOrder(customerId: "${someCustomer}", totalCents: ${100 + i}) { id } }`);
      if (!conn.pageInfo.hasNextPage) break;
      after = conn.pageInfo.endCursor;
    }
    check('gql-6.5', `walking all orders (first 100, ${pages} pages) while orders are placed: each pre-existing order exactly once, in order`,
      walkOk && JSON.stringify(walked) === JSON.stringify(snapshot), `walked ${walked.length}, snapshot ${snapshot.length}, unique ${new Set(walked).size}`);
  }
  return results;
}

// ---------------------------------------------------------------------------

function startService(env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(HERE, 'server.js')], {
      env: {
        ...process.env, PORT: String(SVC_PORT), DATABASE_URL: SVC_URL, LOYALTY_URL: `http://127.0.0.1:${MOCK_PORT}`,
        NODE_PATH: '/usr/share/nodejs:/usr/local/share/grader/nodejs', ...env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.add(child);
    recordPids();
    let log = '';
    child.stderr.on('data', (d) => { log += d; });
    child.on('exit', (code) => { children.delete(child); recordPids(); child.exited = code; });
    child.getLog = () => log;
    const deadline = Date.now() + 15000;
    const poll = async () => {
      if (child.exited !== undefined) return reject(new Error(`service exited ${child.exited}: ${log}`));
      const r = await request({ method: 'GET', path: '/healthz', timeout: 1000 });
      if (r.status === 200) return resolve(child);
      if (Date.now() > deadline) return reject(new Error(`service not healthy: ${log}`));
      setTimeout(poll, 150);
    };
    setTimeout(poll, 150);
  });
}

function stopService(child) {
  return new Promise((resolve) => {
    if (child.exited !== undefined) return resolve();
    child.on('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => { try { child.kill('SIGKILL'); } catch (e) { /* gone */ } }, 3000).unref();
  });
}

async function runConfig(env) {
  const child = await startService(env);
  try {
    return await runChecks();
  } finally {
    await stopService(child);
  }
}

function failedIds(res) {
  return [...new Set(res.filter((r) => !r.ok).map((r) => r.id))].sort();
}

async function main() {
  const args = process.argv.slice(2);
  await new Promise((r) => mockServer.listen(MOCK_PORT, '127.0.0.1', r));
  admin = new Client({ connectionString: ADMIN_URL });
  await admin.connect();
  let failures = 0;
  try {
    // an unknown bug name must stop the service at start-up
    await new Promise((resolve) => {
      const c = spawn(process.execPath, [path.join(HERE, 'server.js')], {
        env: { ...process.env, PORT: String(SVC_PORT), DATABASE_URL: SVC_URL, INDEP_BUG: 'no-such-bug', NODE_PATH: '/usr/local/share/grader/nodejs' },
        stdio: 'ignore',
      });
      children.add(c);
      const t = setTimeout(() => { c.kill('SIGKILL'); }, 5000);
      c.on('exit', (code) => {
        clearTimeout(t);
        children.delete(c);
        const ok = code !== 0 && code !== null;
        console.log(`${ok ? 'PASS' : 'FAIL'} unknown INDEP_BUG exits at start-up (code ${code})`);
        if (!ok) failures += 1;
        resolve();
      });
    });

    const only = (flag) => { const i = args.indexOf(flag); return i >= 0 ? args[i + 1] : null; };
    if (!only('--bug') && !only('--style')) {
      console.log('\n== correct service ==');
      const res = await runConfig({});
      for (const r of res) console.log(`${r.ok ? 'PASS' : 'FAIL'} [${r.id}] ${r.name}${r.ok ? '' : `\n      ${r.detail}`}`);
      const bad = res.filter((r) => !r.ok).length;
      console.log(`correct service: ${res.length - bad}/${res.length} checks pass`);
      failures += bad;
    }

    const styleSets = [];
    if (args.includes('--styles')) {
      for (const s of STYLE_NAMES) styleSets.push(s);
      styleSets.push(STYLE_NAMES.filter((s) => s !== 'strict-accept').join(','));
    }
    if (only('--style')) styleSets.push(only('--style'));
    if (styleSets.length) console.log('\n== styles (must pass everything) ==');
    for (const s of styleSets) {
      const res = await runConfig({ INDEP_STYLE: s });
      const bad = res.filter((r) => !r.ok);
      console.log(`${bad.length ? 'FAIL' : 'PASS'} style ${s}: ${res.length - bad.length}/${res.length}`);
      for (const b of bad) console.log(`      [${b.id}] ${b.name}: ${b.detail}`);
      failures += bad.length ? 1 : 0;
    }

    const bugs = [];
    if (args.includes('--bugs')) bugs.push(...Object.keys(BUG_EXPECT));
    if (only('--bug')) bugs.push(only('--bug'));
    if (bugs.length) console.log('\n== planted bugs (each must fail what BUG_EXPECT says) ==');
    for (const b of bugs) {
      const res = await runConfig({ INDEP_BUG: b });
      const failed = failedIds(res);
      const want = BUG_EXPECT[b] || [];
      const missing = want.filter((id) => !failed.includes(id));
      const extra = failed.filter((id) => !want.includes(id));
      const ok = missing.length === 0 && failed.length > 0;
      console.log(`${ok ? 'PASS' : 'FAIL'} bug ${b}: fails ${failed.join(' ') || '(nothing)'}` +
        (missing.length ? `; expected but passing: ${missing.join(' ')}` : '') + (extra.length ? `; also: ${extra.join(' ')}` : ''));
      for (const r of res.filter((x) => !x.ok)) console.log(`      [${r.id}] ${r.name}`);
      if (!ok) failures += 1;
    }
  } finally {
    await admin.end();
    mockServer.close();
  }
  console.log(failures ? `\nSMOKE: ${failures} failure(s)` : '\nSMOKE: all good');
  process.exit(failures ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
