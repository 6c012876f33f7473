"""One service for all five exercises: api-design, pagination, idempotency, caching and
database-indexing. Standard library plus psycopg2; run with /usr/bin/python3.

Environment: PORT (and HOST), DATABASE_URL, PAYMENTS_URL, PROFILES_URL, CACHE_TTL_SECONDS,
REDIS_URL (only used with INDEP_STYLE=redis). INDEP_BUG / INDEP_STYLE: see BUGS.md.
"""

import json
import os
import re
import socket
import sys
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import caching  # noqa: E402
import db  # noqa: E402
import indexing  # noqa: E402
import payments  # noqa: E402
import products  # noqa: E402
from common import BUG, STYLES, TITLES, HttpError, bug, log, parse_json  # noqa: E402

MAX_BODY = 4 * 1024 * 1024
TRACE = os.environ.get("INDEP_TRACE") == "1"  # log each request's headers and body (debugging)


class Response:
    def __init__(self, status, body, headers=None, content_type="application/json", force_body=False):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type
        self.force_body = force_body


class Request:
    def __init__(self, handler, method, path, query, body):
        self.h = handler
        self.method = method
        self.path = path
        self.raw_query = query
        self.body = body
        self._json = None
        self._parsed = False

    def header(self, name):
        return self.h.headers.get(name)

    def header_all(self, name):
        return self.h.headers.get_all(name) or []

    def require_json(self, merge_patch_ok=False):
        ct = self.header("Content-Type")
        media = (ct or "").split(";", 1)[0].strip().lower()
        allowed = {"application/json"}
        if merge_patch_ok:
            allowed.add("application/merge-patch+json")
        if media not in allowed:
            raise HttpError(
                415,
                f"Send the body as {' or '.join(sorted(allowed))} (got {ct or 'no Content-Type'}).",
                headers={"Accept-Patch": "application/merge-patch+json, application/json"} if merge_patch_ok else {},
            )

    def json(self):
        if not self._parsed:
            self._json = parse_json(self.body)
            self._parsed = True
        return self._json

    def query_single(self, names):
        try:
            pairs = urllib.parse.parse_qsl(self.raw_query, keep_blank_values=True, strict_parsing=False, errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, "The query string is not valid UTF-8.")
        out = {}
        for k, v in pairs:
            if k in names:
                if k in out:
                    raise HttpError(400, f"Query parameter {k} is given more than once.")
                out[k] = v
        return out

    def reply(self, status, body, headers=None, force_body=False):
        return Response(status, body, headers, force_body=force_body)


def health(req):
    return req.reply(200, {"status": "ok"})


ROUTES = [
    (r"/healthz", {"GET": health}),
    (r"/products", {"GET": products.list_products, "POST": products.create}),
    (
        r"/products/([^/]+)",
        {"GET": products.read, "PUT": products.replace, "PATCH": products.patch, "DELETE": products.delete},
    ),
    (r"/payments", {"POST": payments.create}),
    (r"/payments/([^/]+)", {"GET": payments.read}),
    (r"/pages/([^/]+)", {"GET": caching.get_page, "PUT": caching.put_page}),
    (r"/profiles/([^/]+)", {"GET": caching.get_public_profile}),
    (r"/me", {"GET": caching.get_me, "PATCH": caching.patch_me}),
    (r"/customers", {"GET": indexing.customers_by_email}),
    (r"/customers/([^/]+)/orders", {"GET": indexing.customer_orders}),
    (r"/reports/orders", {"GET": indexing.orders_report}),
    (r"/orders", {"GET": indexing.recent_orders}),
]
ROUTES = [(re.compile(p), m) for p, m in ROUTES]


def allow_header(methods):
    ms = set(methods)
    if "GET" in ms:
        ms.add("HEAD")
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return ", ".join(m for m in order if m in ms)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "indep"
    sys_version = ""

    def version_string(self):
        return "indep"

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    # -- protocol-level errors (bad request line, header too long, ...) as problem details
    def send_error(self, code, message=None, explain=None):
        self.close_connection = True
        body = json.dumps(
            {
                "type": "about:blank",
                "title": TITLES.get(code) or message or "Error",
                "status": code,
                "detail": message or explain or "The request could not be read.",
            }
        ).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise HttpError(400, "Malformed chunked body.")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    raise HttpError(413, "The request body is too large.")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(16)
            return b"".join(chunks)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        if not cl.strip().isdigit():
            self.close_connection = True
            raise HttpError(400, "Invalid Content-Length.")
        n = int(cl)
        if n > MAX_BODY:
            self.close_connection = True
            raise HttpError(413, f"The request body is too large (at most {MAX_BODY} bytes).")
        return self.rfile.read(n) if n else b""

    def _dispatch(self):
        method = self.command
        try:
            try:
                body = self._read_body()
            except HttpError:
                raise
            if TRACE:
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "accept", "user-agent", "content-length")}
                log("TRACE >", method, self.path, hdrs, body[:400])
            parts = urllib.parse.urlsplit(self.path)
            path, query = parts.path, parts.query
            resp = None
            for rx, methods in ROUTES:
                m = rx.fullmatch(path)
                if not m:
                    continue
                handler = methods.get("GET" if method == "HEAD" else method)
                if handler is None:
                    raise HttpError(
                        405,
                        f"{method} is not supported on {path}; use {allow_header(methods)}.",
                        headers={"Allow": allow_header(methods)},
                    )
                args = [urllib.parse.unquote(g, errors="strict") for g in m.groups()]
                req = Request(self, method, path, query, body)
                resp = handler(req, *args)
                break
            if resp is None:
                raise HttpError(404, f"There is nothing at {path}.")
        except HttpError as e:
            resp = Response(e.status, e.problem(), e.headers, content_type="application/problem+json")
        except UnicodeDecodeError:
            resp = Response(404, HttpError(404, "There is nothing at this path.").problem(), content_type="application/problem+json")
        except Exception:
            tb = traceback.format_exc()
            log("unhandled error on", method, self.path, "\n" + tb)
            detail = "Something went wrong on our side; it has been logged."
            resp = Response(500, HttpError(500, detail).problem(), content_type="application/problem+json")
        if TRACE:
            log("TRACE <", resp.status, resp.headers, str(resp.body)[:300])
        self._write(resp)

    def _write(self, resp):
        status = resp.status
        body = resp.body
        if isinstance(body, (dict, list)):
            data = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
        elif isinstance(body, bytes):
            data = body
        elif body is None:
            data = b""
        else:
            data = str(body).encode()
        no_body = status in (204, 304) or 100 <= status < 200
        self.send_response(status)
        if not no_body or resp.force_body:
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(data)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        send = data and (resp.force_body or not no_body) and (self.command != "HEAD" or bug("head-body"))
        if send:
            self._headers_buffer.append(data)
        self.flush_headers()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True


def migrate():
    stmts = products.MIGRATIONS + payments.MIGRATIONS + caching.MIGRATIONS + indexing.migrations()
    with db.POOL.conn() as conn:
        with conn.cursor() as cur:
            for s in stmts:
                db.execute(cur, s, None, route="migrate")


def main():
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        log("DATABASE_URL is not set")
        sys.exit(2)
    db.init(dsn)
    migrate()
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    srv = Server((host, port), Handler)
    log(f"listening on {host}:{port} bug={BUG or '-'} styles={','.join(sorted(STYLES)) or '-'}")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
