'use strict';
// An independent, from-the-README implementation of the graphql exercise.
// Node 20, node's standard library, graphql-js 16 and node-postgres (Debian's packages).
//
// INDEP_BUG=<name>            switches on one planted bug (see BUGS.md)
// INDEP_STYLE=<name>[,<name>] switches on legitimate alternative designs (see BUGS.md)

const http = require('http');
const { Buffer } = require('buffer');
const {
  buildSchema, parse, validate, execute, specifiedRules, getOperationAST,
  GraphQLError, Kind,
} = require('graphql');
const { Pool } = require('pg');

// ---------------------------------------------------------------------------
// Planted bugs and styles

const BUGS = new Set([
  'loader-per-row',              // Order.customer: one SELECT per order
  'depth-off-by-one',            // depth 9 still runs (limit compared with > 9)
  'depth-ignores-fragments',     // depth does not follow fragment spreads
  'aliases-not-counted',         // field count per distinct field name in a selection set
  'fragments-counted-once',      // a fragment's fields are counted at its first use only
  'limits-after-execution',      // the query runs, then the limits refuse it
  'introspection-by-name',       // anything whose alias or fragment name starts with "__" is exempt
  'data-null-on-request-error',  // request errors carry "data": null
  'status-200-request-errors',   // request errors answered 200 whatever the media type
  'always-json',                 // Content-Type is always application/json
  'get-mutation-executes',       // a mutation over GET runs (answered 200)
  'get-mutation-runs-then-405',  // a mutation over GET runs, then is answered 405
  '405-without-allow',           // 405 answers have no Allow header
  'error-status-on-field-errors',// any error in the result makes the status 400
  'loyalty-nulls-parent',        // the tier is fetched with the customer: a failure nulls the customer
  'loyalty-leaks-details',       // the loyalty error message has the upstream URL, status and body
  'error-path-no-indexes',       // loyalty errors are collected by hand, path without list indexes
  'no-loyalty-timeout',          // the loyalty call waits up to 30 s instead of 2 s
  'offset-cursors',              // cursor = offset in the result
  'hasnext-page-full',           // hasNextPage = (page is full)
  'end-cursor-first-edge',       // endCursor is the first edge's cursor
  'first-clamped',               // first > 100 silently gives 100 orders; first < 0 gives 0
  'missing-customer-error',      // customer(id) for an unknown id is an error
  'createdat-not-rfc3339',       // createdAt is Postgres' text form "2025-03-01 12:00:00.123456+00"
  'sort-by-id',                  // newest first by id only, keyset on id only
  'customer-orders-ignores-status', // Customer.orders ignores its status argument
  'bad-json-500',                // a body that is not JSON is answered 500
]);
const STYLES = new Set([
  'join-customers',     // the page query joins customers, no loader
  'no-get',             // GET /graphql is not served at all (405, Allow: POST)
  'json-400',           // request errors under application/json answered 400 (not 200)
  'validation-422',     // validation/limit/variable errors answered 422 (both media types)
  'prefer-json',        // application/json when the client accepts both (or anything)
  'count-introspection',// introspection fields are counted in the limits too
  'plain-cursor',       // cursors are readable "<created_at>|<id>" strings, not base64
  'offset-createdat',   // createdAt in +05:30 with millisecond precision
  'strict-accept',      // 406 when Accept lists neither JSON media type (probe)
]);

const BUG = process.env.INDEP_BUG || '';
if (BUG && !BUGS.has(BUG)) {
  console.error(`unknown INDEP_BUG=${BUG}; known: ${[...BUGS].join(', ')}`);
  process.exit(2);
}
const STYLE = new Set((process.env.INDEP_STYLE || '').split(',').map((s) => s.trim()).filter(Boolean));
for (const s of STYLE) {
  if (!STYLES.has(s)) {
    console.error(`unknown INDEP_STYLE=${s}; known: ${[...STYLES].join(', ')}`);
    process.exit(2);
  }
}
const bug = (name) => BUG === name;
const style = (name) => STYLE.has(name);

function log(...args) {
  console.error(new Date().toISOString(), ...args);
}

// ---------------------------------------------------------------------------
// Configuration

const PORT = Number(process.env.PORT || 8080);
const DATABASE_URL = process.env.DATABASE_URL;
const LOYALTY_URL = (process.env.LOYALTY_URL || '').replace(/\/+$/, '');
const LOYALTY_TIMEOUT_MS = bug('no-loyalty-timeout') ? 30000 : 2000;
const MAX_DEPTH = 8;
const MAX_FIELDS = 100;
const DEFAULT_FIRST = 10;
const MAX_FIRST = 100;
const MAX_BODY = 1 << 20;

if (!DATABASE_URL) {
  console.error('DATABASE_URL is not set');
  process.exit(2);
}

const pool = new Pool({ connectionString: DATABASE_URL, max: 10 });
pool.on('error', (e) => log('postgres pool error:', e.message));

// ---------------------------------------------------------------------------
// Errors a client may see. Anything else is logged and replaced by "internal error".

class PublicError extends GraphQLError {}

function guarded(fn) {
  return async function guardedResolver(...args) {
    try {
      return await fn(...args);
    } catch (e) {
      if (e instanceof GraphQLError) throw e;
      log('resolver failed:', e && e.stack ? e.stack : e);
      throw new PublicError('internal error');
    }
  };
}

// ---------------------------------------------------------------------------
// SQL helpers

// createdAt as served; the cursor keeps the exact value (microseconds, UTC).
const TS_EXACT = (col) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
function tsServed(col) {
  if (bug('createdat-not-rfc3339')) return `${col}::text`;
  if (style('offset-createdat')) {
    return `to_char(${col} AT TIME ZONE 'UTC' + interval '5 hours 30 minutes', 'YYYY-MM-DD"T"HH24:MI:SS.MS') || '+05:30'`;
  }
  return TS_EXACT(col);
}

const CUSTOMER_COLS = (t) => `${t}.id, ${t}.email, ${t}.name, ${tsServed(`${t}.created_at`)} AS created_at`;
const ORDER_COLS = (t) =>
  `${t}.id, ${t}.customer_id, ${t}.status, ${t}.total_cents, ${tsServed(`${t}.created_at`)} AS created_at, ` +
  `${TS_EXACT(`${t}.created_at`)} AS created_at_exact`;

// An ID argument is a bigint or it names nothing.
function parseDbId(value) {
  if (value === null || value === undefined) return null;
  const s = String(value);
  if (!/^-?\d{1,19}$/.test(s)) return null;
  const b = BigInt(s);
  if (b > 9223372036854775807n || b < -9223372036854775808n) return null;
  return b.toString();
}

function customerFromRow(r) {
  return { id: String(r.id), email: r.email, name: r.name, createdAt: r.created_at };
}

function orderFromRow(r) {
  const o = {
    id: String(r.id),
    customerId: String(r.customer_id),
    status: r.status,
    totalCents: Number(r.total_cents),
    createdAt: r.created_at,
    _exact: r.created_at_exact,
  };
  if (r.c_id !== undefined) {
    o._customer = { id: String(r.c_id), email: r.c_email, name: r.c_name, createdAt: r.c_created_at };
  }
  return o;
}

// ---------------------------------------------------------------------------
// A small DataLoader: keys asked for in the same turn of the event loop are loaded together.

class Loader {
  constructor(batchFn) {
    this.batchFn = batchFn;
    this.cache = new Map();
    this.queue = null;
  }

  load(key) {
    const k = String(key);
    const hit = this.cache.get(k);
    if (hit) return hit;
    let resolve;
    let reject;
    const p = new Promise((res, rej) => { resolve = res; reject = rej; });
    p.catch(() => {}); // a rejection is seen by whoever awaits it
    this.cache.set(k, p);
    if (!this.queue) {
      this.queue = [];
      // setImmediate runs after every pending promise job, so every resolver of a list that
      // became ready together has queued its key by then.
      setImmediate(() => this.dispatch());
    }
    this.queue.push({ key: k, resolve, reject });
    return p;
  }

  async dispatch() {
    const batch = this.queue;
    this.queue = null;
    try {
      const values = await this.batchFn(batch.map((b) => b.key));
      batch.forEach((b, i) => {
        if (values[i] instanceof Error) b.reject(values[i]);
        else b.resolve(values[i]);
      });
    } catch (e) {
      batch.forEach((b) => b.reject(e));
    }
  }
}

async function loadCustomers(keys) {
  const ids = keys.map(parseDbId);
  const valid = [...new Set(ids.filter((x) => x !== null))];
  const byId = new Map();
  if (valid.length) {
    const { rows } = await pool.query(
      `SELECT ${CUSTOMER_COLS('c')} FROM shop_customers c WHERE c.id = ANY($1::bigint[])`, [valid]);
    for (const r of rows) byId.set(String(r.id), customerFromRow(r));
  }
  return ids.map((id) => (id === null ? null : byId.get(id) || null));
}

async function customerById(id) {
  const dbId = parseDbId(id);
  if (dbId === null) return null;
  const { rows } = await pool.query(`SELECT ${CUSTOMER_COLS('c')} FROM shop_customers c WHERE c.id = $1`, [dbId]);
  return rows.length ? customerFromRow(rows[0]) : null;
}

// ---------------------------------------------------------------------------
// Loyalty

async function fetchTier(customerId) {
  const url = `${LOYALTY_URL}/tiers/${encodeURIComponent(customerId)}`;
  const leak = bug('loyalty-leaks-details');
  const signal = AbortSignal.timeout(LOYALTY_TIMEOUT_MS);
  let res;
  let body;
  try {
    if (!LOYALTY_URL) throw new Error('LOYALTY_URL is not set');
    res = await fetch(url, { signal, headers: { accept: 'application/json' } });
    body = await res.text();
  } catch (e) {
    log(`loyalty GET ${url} failed: ${e && e.name}: ${e && e.message}${e && e.cause ? ` (${e.cause.message || e.cause})` : ''}`);
    throw new PublicError(leak ? `loyalty service GET ${url} failed: ${e.message}` : 'loyalty tier unavailable');
  }
  if (res.status < 200 || res.status > 299) {
    log(`loyalty GET ${url} answered ${res.status}: ${body.slice(0, 500)}`);
    throw new PublicError(leak ? `loyalty service GET ${url} answered ${res.status}: ${body}` : 'loyalty tier unavailable');
  }
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch (e) {
    parsed = undefined;
  }
  if (parsed && typeof parsed === 'object' && (typeof parsed.tier === 'string' || parsed.tier === null)) {
    return parsed.tier;
  }
  log(`loyalty GET ${url} answered ${res.status} without a tier: ${body.slice(0, 500)}`);
  throw new PublicError(leak ? `loyalty service GET ${url} answered ${body}` : 'loyalty tier unavailable');
}

function tierLoader() {
  const cache = new Map();
  return (id) => {
    let p = cache.get(id);
    if (!p) {
      p = fetchTier(id);
      p.catch(() => {});
      cache.set(id, p);
    }
    return p;
  };
}

function asksForLoyalty(info) {
  return info.fieldNodes.some((n) => n.selectionSet &&
    n.selectionSet.selections.some((s) => s.kind === Kind.FIELD && s.name.value === 'loyaltyTier'));
}

// bug loyalty-nulls-parent: "enrich" the customer with its tier when the query asks for it.
async function withTier(customer, ctx, info) {
  if (!bug('loyalty-nulls-parent') || !customer || !asksForLoyalty(info)) return customer;
  const tier = await ctx.tier(customer.id);
  return { ...customer, _tier: tier };
}

// ---------------------------------------------------------------------------
// Connections

function encodeCursor(exactTs, id, offset) {
  if (bug('offset-cursors')) return Buffer.from(`offset:${offset}`).toString('base64url');
  const raw = `${exactTs}|${id}`;
  if (style('plain-cursor')) return raw;
  return Buffer.from(`v1|${raw}`).toString('base64url');
}

function decodeCursor(cursor) {
  const bad = () => new PublicError('invalid cursor');
  if (typeof cursor !== 'string') throw bad();
  if (bug('offset-cursors')) {
    const m = /^offset:(\d{1,9})$/.exec(Buffer.from(cursor, 'base64url').toString());
    if (!m) throw bad();
    return { offset: Number(m[1]) };
  }
  let raw = cursor;
  if (!style('plain-cursor')) {
    if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
    raw = Buffer.from(cursor, 'base64url').toString();
    if (!raw.startsWith('v1|')) throw bad();
    raw = raw.slice(3);
  }
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)\|(\d{1,19})$/.exec(raw);
  if (!m || parseDbId(m[2]) === null) throw bad();
  return { ts: m[1], id: m[2] };
}

async function ordersConnection(args, customerId) {
  let first = args.first === undefined || args.first === null ? DEFAULT_FIRST : args.first;
  if (first > MAX_FIRST || first < 0) {
    if (bug('first-clamped')) first = Math.max(0, Math.min(first, MAX_FIRST));
    else throw new PublicError(`first must be between 0 and ${MAX_FIRST}, got ${first}`);
  }
  const after = args.after === undefined || args.after === null ? null : decodeCursor(args.after);
  const status = customerId !== null && bug('customer-orders-ignores-status') ? null : args.status;

  const where = [];
  const params = [];
  if (customerId !== null) {
    params.push(customerId);
    where.push(`o.customer_id = $${params.length}`);
  }
  if (status !== undefined && status !== null) {
    params.push(status);
    where.push(`o.status = $${params.length}`);
  }
  let offset = 0;
  if (after && after.offset !== undefined) {
    offset = after.offset + 1;
  } else if (after && bug('sort-by-id')) {
    params.push(after.id);
    where.push(`o.id < $${params.length}::bigint`);
  } else if (after) {
    params.push(after.ts, after.id);
    where.push(`(o.created_at, o.id) < ($${params.length - 1}::timestamptz, $${params.length}::bigint)`);
  }
  params.push(first + 1);
  const limit = `$${params.length}`;
  const join = style('join-customers');
  const cols = ORDER_COLS('o') + (join
    ? `, c.id AS c_id, c.email AS c_email, c.name AS c_name, ${tsServed('c.created_at')} AS c_created_at`
    : '');
  const sql =
    `SELECT ${cols} FROM shop_orders o${join ? ' JOIN shop_customers c ON c.id = o.customer_id' : ''}` +
    (where.length ? ` WHERE ${where.join(' AND ')}` : '') +
    (bug('sort-by-id') ? ' ORDER BY o.id DESC' : ' ORDER BY o.created_at DESC, o.id DESC') +
    ` LIMIT ${limit}` + (offset ? ` OFFSET ${Number(offset)}` : '');
  const { rows } = await pool.query(sql, params);

  const page = rows.slice(0, first);
  const edges = page.map((r, i) => ({
    cursor: encodeCursor(r.created_at_exact, String(r.id), offset + i),
    node: orderFromRow(r),
  }));
  const hasNextPage = bug('hasnext-page-full') ? edges.length === first && first > 0 : rows.length > first;
  let endCursor = edges.length ? edges[edges.length - 1].cursor : null;
  if (bug('end-cursor-first-edge') && edges.length) endCursor = edges[0].cursor;
  return { edges, pageInfo: { hasNextPage, endCursor } };
}

// ---------------------------------------------------------------------------
// Schema

const SDL = `
type Query {
  customer(id: ID!): Customer
  orders(first: Int, after: String, status: String): OrderConnection
}

type Mutation {
  createCustomer(email: String!, name: String!): Customer
  placeOrder(customerId: ID!, totalCents: Int!): Order
}

type Customer {
  id: ID!
  email: String!
  name: String!
  createdAt: String!
  loyaltyTier: String
  orders(first: Int, after: String, status: String): OrderConnection!
}

type Order {
  id: ID!
  status: String!
  totalCents: Int!
  createdAt: String!
  customer: Customer!
}

type OrderConnection {
  edges: [OrderEdge!]!
  pageInfo: PageInfo!
}

type OrderEdge {
  cursor: String!
  node: Order!
}

type PageInfo {
  hasNextPage: Boolean!
  endCursor: String
}
`;

const schema = buildSchema(SDL);

const resolvers = {
  Query: {
    customer: async (_root, { id }, ctx, info) => {
      const c = await ctx.customers.load(id);
      if (!c && bug('missing-customer-error')) throw new PublicError(`customer ${id} not found`);
      return withTier(c, ctx, info);
    },
    orders: (_root, args) => ordersConnection(args, null),
  },
  Mutation: {
    createCustomer: async (_root, { email, name }) => {
      const { rows } = await pool.query(
        `INSERT INTO shop_customers (email, name) VALUES ($1, $2) RETURNING ${CUSTOMER_COLS('shop_customers')}`,
        [email, name]);
      return customerFromRow(rows[0]);
    },
    placeOrder: async (_root, { customerId, totalCents }) => {
      const id = parseDbId(customerId);
      if (id === null) throw new PublicError(`no customer with id ${customerId}`);
      try {
        const { rows } = await pool.query(
          `INSERT INTO shop_orders (customer_id, status, created_at, total_cents) VALUES ($1, 'pending', now(), $2) ` +
          `RETURNING ${ORDER_COLS('shop_orders')}`, [id, totalCents]);
        return orderFromRow(rows[0]);
      } catch (e) {
        if (e && e.code === '23503') throw new PublicError(`no customer with id ${customerId}`);
        throw e;
      }
    },
  },
  Customer: {
    loyaltyTier: async (c, _args, ctx, info) => {
      if (c._tier !== undefined) return c._tier;
      if (bug('error-path-no-indexes')) {
        // errors collected by hand, "to control the message"
        try {
          return await ctx.tier(c.id);
        } catch (e) {
          const path = [];
          for (let p = info.path; p; p = p.prev) if (typeof p.key === 'string') path.unshift(p.key);
          ctx.extraErrors.push({ message: e.message, path });
          return null;
        }
      }
      return ctx.tier(c.id);
    },
    orders: (c, args) => ordersConnection(args, c.id),
  },
  Order: {
    customer: async (o, _args, ctx, info) => {
      let c;
      if (o._customer) c = o._customer;
      else if (bug('loader-per-row')) c = await customerById(o.customerId);
      else c = await ctx.customers.load(o.customerId);
      if (!c) throw new Error(`order ${o.id}: customer ${o.customerId} missing`);
      return withTier(c, ctx, info);
    },
  },
};

for (const [typeName, fields] of Object.entries(resolvers)) {
  const type = schema.getType(typeName);
  const defs = type.getFields();
  for (const [fieldName, fn] of Object.entries(fields)) defs[fieldName].resolve = guarded(fn);
}

// ---------------------------------------------------------------------------
// Limits: depth and field count, over the document, fragments expanded where used.

const INTROSPECTION = new Set(['__schema', '__type', '__typename']);

function measureLimits(document) {
  const fragments = new Map();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const skipIntrospection = !style('count-introspection');
  const memo = new Map(); // fragment name -> {count, depth}; its own fields' count and max depth
  const inProgress = new Set();

  // Returns {count, depth} of a selection set whose fields sit one level below "here".
  function measureSet(selectionSet) {
    let count = 0;
    let depth = 0;
    const seenNames = new Set();
    for (const sel of selectionSet.selections) {
      if (sel.kind === Kind.FIELD) {
        const name = sel.name.value;
        if (skipIntrospection && INTROSPECTION.has(name)) continue;
        if (bug('introspection-by-name') && (sel.alias ? sel.alias.value : name).startsWith('__')) continue;
        const sub = sel.selectionSet ? measureSet(sel.selectionSet) : { count: 0, depth: 0 };
        if (bug('aliases-not-counted')) {
          if (!seenNames.has(name)) count += 1;
          seenNames.add(name);
        } else {
          count += 1;
        }
        count += sub.count;
        depth = Math.max(depth, 1 + sub.depth);
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        const sub = measureSet(sel.selectionSet);
        count += sub.count;
        depth = Math.max(depth, sub.depth);
      } else if (sel.kind === Kind.FRAGMENT_SPREAD) {
        const name = sel.name.value;
        if (bug('introspection-by-name') && name.startsWith('__')) continue;
        const frag = fragments.get(name);
        if (!frag || inProgress.has(name)) continue; // unknown or cyclic: validation refuses it
        const firstUse = !memo.has(name);
        if (firstUse) {
          inProgress.add(name);
          memo.set(name, measureSet(frag.selectionSet));
          inProgress.delete(name);
        }
        const sub = memo.get(name);
        if (!(bug('fragments-counted-once') && !firstUse)) count += sub.count;
        if (!bug('depth-ignores-fragments')) depth = Math.max(depth, sub.depth);
      }
    }
    return { count, depth };
  }

  const errors = [];
  const maxDepth = bug('depth-off-by-one') ? MAX_DEPTH + 1 : MAX_DEPTH;
  for (const d of document.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue;
    const { count, depth } = measureSet(d.selectionSet);
    const opName = d.name ? ` "${d.name.value}"` : '';
    if (depth > maxDepth) {
      errors.push(new GraphQLError(`operation${opName} is too deep: depth ${depth}, at most ${MAX_DEPTH} allowed`, { nodes: [d] }));
    }
    if (count > MAX_FIELDS) {
      errors.push(new GraphQLError(`operation${opName} selects too many fields: ${count}, at most ${MAX_FIELDS} allowed`, { nodes: [d] }));
    }
  }
  return errors;
}

// graphql-js 16 validates a subscription against a schema without Subscription and then fails at
// execution with "data": null; refuse operations of a type the schema does not have up front.
function KnownOperationTypes(context) {
  return {
    OperationDefinition(node) {
      if (!context.getSchema().getRootType(node.operation)) {
        context.reportError(new GraphQLError(`this service has no ${node.operation} operations`, { nodes: [node] }));
      }
    },
  };
}
const RULES = [...specifiedRules, KnownOperationTypes];

// ---------------------------------------------------------------------------
// HTTP

const GQL_RESPONSE = 'application/graphql-response+json';
const JSON_TYPE = 'application/json';

// Returns the media type to answer with, or null when the client accepts neither.
function negotiate(acceptHeader) {
  const preferred = style('prefer-json') ? JSON_TYPE : GQL_RESPONSE;
  if (bug('always-json')) return JSON_TYPE;
  if (acceptHeader === undefined || acceptHeader.trim() === '') return preferred;
  const q = { [GQL_RESPONSE]: -1, [JSON_TYPE]: -1 };
  const spec = { [GQL_RESPONSE]: -1, [JSON_TYPE]: -1 };
  for (const part of acceptHeader.split(',')) {
    const [rangeRaw, ...paramsRaw] = part.split(';');
    const range = rangeRaw.trim().toLowerCase();
    if (!range) continue;
    let qv = 1;
    for (const p of paramsRaw) {
      const [k, v] = p.split('=').map((s) => s.trim().toLowerCase());
      if (k === 'q') {
        const n = Number(v);
        qv = Number.isFinite(n) ? Math.min(Math.max(n, 0), 1) : 0;
      }
    }
    for (const type of [GQL_RESPONSE, JSON_TYPE]) {
      let s = -1;
      if (range === type) s = 2;
      else if (range === 'application/*') s = 1;
      else if (range === '*/*') s = 0;
      if (s > spec[type]) { spec[type] = s; q[type] = qv; }
    }
  }
  const qg = q[GQL_RESPONSE];
  const qj = q[JSON_TYPE];
  if (qg <= 0 && qj <= 0) return style('strict-accept') ? null : JSON_TYPE;
  if (qg > qj) return GQL_RESPONSE;
  if (qj > qg) return JSON_TYPE;
  return preferred;
}

function send(res, status, mediaType, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': mediaType,
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(text);
}

// kind: "syntax" (does not parse), "invalid" (validation, limits, variables, operation name)
function requestErrorStatus(mediaType, kind) {
  if (bug('status-200-request-errors')) return 200;
  if (style('validation-422') && kind === 'invalid') return 422;
  if (mediaType === JSON_TYPE) return style('json-400') ? 400 : 200;
  return 400;
}

function requestErrorBody(errors) {
  const body = { errors: errors.map((e) => (e instanceof GraphQLError ? e.toJSON() : { message: String(e.message || e) })) };
  if (bug('data-null-on-request-error')) body.data = null;
  return body;
}

function allowHeader() {
  if (bug('405-without-allow')) return {};
  return { Allow: style('no-get') ? 'POST' : 'GET, POST' };
}

function newContext() {
  return {
    customers: new Loader(loadCustomers),
    tier: tierLoader(),
    extraErrors: [],
  };
}

async function runGraphQL(res, mediaType, params, method) {
  const { query, variables, operationName } = params;
  let document;
  try {
    document = parse(query);
  } catch (e) {
    if (!(e instanceof GraphQLError)) throw e;
    return send(res, requestErrorStatus(mediaType, 'syntax'), mediaType, requestErrorBody([e]));
  }

  let refuseAfter = false;
  if (method === 'GET') {
    const op = getOperationAST(document, operationName);
    const isMutation = op ? op.operation !== 'query' :
      document.definitions.some((d) => d.kind === Kind.OPERATION_DEFINITION && d.operation !== 'query');
    if (isMutation) {
      if (bug('get-mutation-runs-then-405')) {
        refuseAfter = true;
      } else if (!bug('get-mutation-executes')) {
        return send(res, 405, mediaType,
          requestErrorBody([new GraphQLError('mutations are accepted over POST only')]), allowHeader());
      }
    }
  }

  let limitErrors = [];
  if (!bug('limits-after-execution')) {
    limitErrors = measureLimits(document);
    if (limitErrors.length) return send(res, requestErrorStatus(mediaType, 'invalid'), mediaType, requestErrorBody(limitErrors));
  }

  const validationErrors = validate(schema, document, RULES);
  if (validationErrors.length) {
    return send(res, requestErrorStatus(mediaType, 'invalid'), mediaType, requestErrorBody(validationErrors));
  }

  const ctx = newContext();
  const result = await execute({
    schema, document, variableValues: variables || undefined, operationName: operationName || undefined, contextValue: ctx,
  });

  if (refuseAfter) {
    return send(res, 405, mediaType, requestErrorBody([new GraphQLError('mutations are accepted over POST only')]), allowHeader());
  }
  if (bug('limits-after-execution')) {
    limitErrors = measureLimits(document);
    if (limitErrors.length) return send(res, requestErrorStatus(mediaType, 'invalid'), mediaType, requestErrorBody(limitErrors));
  }

  if (!('data' in result)) {
    // the operation could not start: variables that do not coerce, no or an unknown operation name
    return send(res, requestErrorStatus(mediaType, 'invalid'), mediaType, requestErrorBody(result.errors || []));
  }
  const errors = [...(result.errors || []).map((e) => e.toJSON()), ...ctx.extraErrors];
  const body = {};
  if (errors.length) body.errors = errors;
  body.data = result.data;
  const status = bug('error-status-on-field-errors') && errors.length ? 400 : 200;
  return send(res, status, mediaType, body);
}

function badRequest(res, mediaType, message) {
  const status = bug('bad-json-500') && /JSON/.test(message) ? 500 : 400;
  return send(res, status, mediaType, requestErrorBody([{ message }]));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function paramsFromBody(raw) {
  let body;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    return { error: 'the body is not valid JSON' };
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return { error: 'the body must be a JSON object' };
  return checkParams(body.query, body.variables, body.operationName);
}

function checkParams(query, variables, operationName) {
  if (typeof query !== 'string') return { error: 'the request needs a "query" string' };
  if (variables !== undefined && variables !== null && (typeof variables !== 'object' || Array.isArray(variables))) {
    return { error: '"variables" must be a JSON object' };
  }
  if (operationName !== undefined && operationName !== null && typeof operationName !== 'string') {
    return { error: '"operationName" must be a string' };
  }
  return { query, variables: variables || null, operationName: operationName || null };
}

function paramsFromQueryString(sp) {
  const query = sp.get('query');
  let variables = sp.get('variables');
  if (variables !== null && variables !== '') {
    try {
      variables = JSON.parse(variables);
    } catch (e) {
      return { error: '"variables" is not valid JSON' };
    }
  } else {
    variables = null;
  }
  const operationName = sp.get('operationName') || null;
  return checkParams(query === null ? undefined : query, variables, operationName);
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/healthz') {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': 0 });
      return res.end();
    }
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 3 });
    return res.end(req.method === 'HEAD' ? undefined : 'ok\n');
  }
  if (url.pathname !== '/graphql') {
    const text = JSON.stringify({ errors: [{ message: 'not found' }] });
    res.writeHead(404, { 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(text) });
    return res.end(text);
  }

  let mediaType = negotiate(req.headers.accept);
  if (mediaType === null) {
    return send(res, 406, JSON_TYPE, { errors: [{ message: `acceptable: ${GQL_RESPONSE}, ${JSON_TYPE}` }] });
  }

  if (req.method === 'POST') {
    let raw;
    try {
      raw = await readBody(req);
    } catch (e) {
      return send(res, e.status || 400, mediaType, requestErrorBody([{ message: e.message }]), { Connection: 'close' });
    }
    const params = paramsFromBody(raw);
    if (params.error) return badRequest(res, mediaType, params.error);
    return runGraphQL(res, mediaType, params, 'POST');
  }
  if (req.method === 'GET' && !style('no-get')) {
    const params = paramsFromQueryString(url.searchParams);
    if (params.error) return badRequest(res, mediaType, params.error);
    return runGraphQL(res, mediaType, params, 'GET');
  }
  req.resume();
  return send(res, 405, mediaType,
    requestErrorBody([new GraphQLError(`${req.method} is not allowed on /graphql`)]), allowHeader());
}

process.on('unhandledRejection', (e) => log('unhandled rejection:', e && e.stack ? e.stack : e));

async function main() {
  // ready once the database answers
  for (let attempt = 1; ; attempt += 1) {
    try {
      await pool.query('SELECT 1');
      break;
    } catch (e) {
      if (attempt >= 60) throw e;
      log(`waiting for postgres: ${e.message}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
      log('request failed:', e && e.stack ? e.stack : e);
      if (!res.headersSent) send(res, 500, JSON_TYPE, { errors: [{ message: 'internal error' }] });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 65000;
  server.listen(PORT, '127.0.0.1', () => {
    log(`listening on 127.0.0.1:${PORT}` + (BUG ? ` INDEP_BUG=${BUG}` : '') + (STYLE.size ? ` INDEP_STYLE=${[...STYLE].join(',')}` : ''));
  });
  const stop = () => { server.close(); pool.end().finally(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  log('start-up failed:', e && e.stack ? e.stack : e);
  process.exit(1);
});
