// Starter service: it connects to PostgreSQL, answers GET /healthz, and implements nothing else.
//
// The grader sets PORT and DATABASE_URL. Every other request gets 501 Not Implemented as problem
// details (RFC 9457) until you build the exercise: README.md says where its tasks are.
'use strict';

const http = require('node:http');
const { Pool } = require('pg');

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 8080);

if (!process.env.DATABASE_URL) {
  console.error('DATABASE_URL is not set: this service needs PostgreSQL (grader check sets it)');
  process.exit(1);
}
const db = new Pool({ connectionString: process.env.DATABASE_URL });
db.on('error', (err) => console.error(`database: ${err.message}`));

function send(res, status, body, contentType = 'application/json') {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(data),
  });
  res.end(data);
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  res.on('finish', () => console.log(`${req.method} ${path} ${res.statusCode}`));
  // Read the whole body before answering, so the connection stays usable.
  req.resume();
  req.on('end', () => {
    if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
      return send(res, 200, { status: 'ok' });
    }
    send(
      res,
      501,
      {
        type: 'about:blank',
        title: 'Not Implemented',
        status: 501,
        detail: `${req.method} ${path} is not implemented yet`,
      },
      'application/problem+json',
    );
  });
});

db.query('SELECT 1')
  .then(() => {
    server.listen(port, host, () => console.log(`listening on ${host}:${port}`));
  })
  .catch((err) => {
    console.error(`cannot connect to PostgreSQL at DATABASE_URL: ${err.message}`);
    process.exit(1);
  });
