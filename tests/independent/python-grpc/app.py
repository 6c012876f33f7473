#!/usr/bin/python3
"""shop.v1.Shop over gRPC (exercises/grpc), an independent implementation written from the
exercise's README.md and shop.proto only.

grpcio (Debian's 1.51, the synchronous thread-pool server), psycopg2, the standard library.
The generated code comes from gen.sh (the grader.toml build step) in build/.

INDEP_BUG=<name> switches on one planted bug, INDEP_STYLE=<name>[,<name>] legitimate
alternative designs; see BUGS.md. An unknown name stops the service at start-up.
"""

import http.client
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
from concurrent import futures
from datetime import timezone

HERE = os.path.dirname(os.path.abspath(__file__))

BUGS = {
    # task 0 / 1
    "missing-row-unknown", "created-at-no-offset", "reflection-missing-health",
    "proto-int32-total",
    # task 2
    "no-badrequest-details", "email-case-sensitive", "duplicate-email-internal",
    "permission-check-missing", "validate-before-auth", "sql-in-message",
    # task 3
    "deadline-ignored", "no-loyalty-cap", "loyalty-error-fails-call", "late-ok-race",
    # task 4
    "health-serving-during-shutdown", "exit-at-once-on-sigterm", "no-grace",
    "health-unknown-service-status",
    # task 5
    "load-all-then-stream", "sort-by-id",
}
STYLES = {"empty-tier-before-deadline", "v1alpha-only", "server-cursor", "own-additions"}

BUG = os.environ.get("INDEP_BUG", "").strip()
STYLE = {s.strip() for s in os.environ.get("INDEP_STYLE", "").split(",") if s.strip()}
if BUG and BUG not in BUGS:
    sys.exit(f"unknown INDEP_BUG {BUG!r}; known: {', '.join(sorted(BUGS))}")
if STYLE - STYLES:
    sys.exit(f"unknown INDEP_STYLE {', '.join(sorted(STYLE - STYLES))}; known: {', '.join(sorted(STYLES))}")
if BUG == "proto-int32-total" and "own-additions" in STYLE:
    sys.exit("INDEP_BUG=proto-int32-total and INDEP_STYLE=own-additions use two different shop.proto")

# generated code: build/gen, and before it the variant of shop.proto this run serves
GEN = os.path.join(HERE, "build", "gen")
if not os.path.isdir(GEN):
    sys.exit("build/gen is missing: run ./gen.sh first (grader.toml's build step)")
sys.path.insert(0, GEN)
if BUG == "proto-int32-total":
    sys.path.insert(0, os.path.join(HERE, "build", "gen-int32"))
if "own-additions" in STYLE:
    sys.path.insert(0, os.path.join(HERE, "build", "gen-extended"))

import grpc  # noqa: E402
import psycopg2  # noqa: E402
import psycopg2.errors  # noqa: E402
import psycopg2.extensions  # noqa: E402
import psycopg2.pool  # noqa: E402
from google.protobuf import any_pb2, descriptor_pool  # noqa: E402

import shop_pb2  # noqa: E402
import shop_pb2_grpc  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1 import reflection_pb2 as refl_v1  # noqa: E402
from grpc_reflection.v1 import reflection_pb2_grpc as refl_v1_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2 as refl_v1alpha  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2_grpc as refl_v1alpha_grpc  # noqa: E402

if "own-additions" in STYLE:
    from google.protobuf import timestamp_pb2  # noqa: E402

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
log = logging.getLogger("shop")

SHOP_SERVICE = "shop.v1.Shop"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"

PAGE_SIZE = 500           # ListOrders: rows per page (the README allows at most 1,000)
LOYALTY_CAP = 2.0         # seconds: the longest the loyalty service is waited for
DRAIN_KEEP_SERVING = 1.5  # seconds after SIGTERM during which everything is still served
DRAIN_GRACE = 6.0         # then: no new calls, running ones get this long to finish
EXIT_WATCHDOG = 9.5       # exit 0 no later than this after SIGTERM, whatever still runs
MAX_WORKERS = 32
LATE_OK_MARGIN = 0.05     # seconds: an answer ready closer than this to the deadline is not sent


# ---------------------------------------------------------------------------------------------
# errors: one exception type carries a status to the edge of every handler

class RpcError(Exception):
    def __init__(self, code, message, violations=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or []


def invalid(violations):
    """INVALID_ARGUMENT with one google.rpc.BadRequest field violation per wrong field."""
    message = "invalid request: " + "; ".join(f"{field} {desc}" for field, desc in violations)
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message, violations)


def abort(context, err):
    if err.violations and BUG != "no-badrequest-details":
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in err.violations])
        detail = any_pb2.Any()
        detail.Pack(bad)  # type.googleapis.com/google.rpc.BadRequest
        status = status_pb2.Status(code=err.code.value[0], message=err.message, details=[detail])
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
    context.abort(err.code, err.message)


def handle_errors(method, context, exc):
    """Maps what a handler raised to a status for the caller (and never its text)."""
    if isinstance(exc, RpcError):
        abort(context, exc)
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.pool.PoolError)):
        log.warning("%s: database unavailable: %s", method, exc)
        context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; try again")
    if BUG == "missing-row-unknown":
        raise exc  # no catch-all: grpcio answers UNKNOWN "Exception calling application: ..."
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error")


def unary(fn):
    def wrapper(self, request, context):
        try:
            answer = fn(self, request, context)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in handle_errors
            handle_errors(fn.__name__, context, exc)
        # Never a late OK. grpc-core ends the call with DEADLINE_EXCEEDED at the deadline, but
        # an answer that is ready at the same instant (the loyalty request given up exactly at
        # the deadline, as min(2 s, time left) makes it) can win that race and reach the
        # caller as an OK a few milliseconds after its deadline.
        if context.time_remaining() < LATE_OK_MARGIN and BUG != "late-ok-race":
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed")
        return answer
    wrapper.__name__ = fn.__name__
    return wrapper


def streaming(fn):
    def wrapper(self, request, context):
        try:
            yield from fn(self, request, context)
        except Exception as exc:  # noqa: BLE001
            handle_errors(fn.__name__, context, exc)
    wrapper.__name__ = fn.__name__
    return wrapper


# ---------------------------------------------------------------------------------------------
# database

class Db:
    def __init__(self, url):
        # libpq takes the URL as it is; statement_timeout so that no query runs on for ever
        self.pool = psycopg2.pool.ThreadedConnectionPool(
            1, MAX_WORKERS + 4, url, application_name="python-grpc",
            options="-c statement_timeout=10000")

    def _get(self):
        conn = self.pool.getconn()
        if conn.closed:
            self.pool.putconn(conn, close=True)
            conn = self.pool.getconn()
        if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            conn.rollback()
        conn.autocommit = True
        return conn

    def _put(self, conn, broken=False):
        try:
            if not conn.closed and not broken and \
                    conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                conn.rollback()
        except psycopg2.Error:
            broken = True
        self.pool.putconn(conn, close=broken or bool(conn.closed))

    def run(self, work):
        """work(cursor) on a pooled autocommit connection; a broken connection is dropped."""
        conn = self._get()
        broken = False
        try:
            with conn.cursor() as cur:
                return work(cur)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            self._put(conn, broken)

    def connection(self):
        return self._get()

    def close(self):
        self.pool.closeall()


ORDER_COLUMNS = "id, customer_id, status, total_cents, created_at"


def rfc3339(ts):
    if BUG == "created-at-no-offset":
        # converted to UTC, then the offset dropped: "2025-03-01T12:00:00.123456"
        return ts.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def order_message(row):
    order = shop_pb2.Order(id=row[0], customer_id=row[1], status=row[2], total_cents=row[3],
                           created_at=rfc3339(row[4]))
    if "own-additions" in STYLE:
        order.created_time.FromDatetime(row[4].astimezone(timezone.utc).replace(tzinfo=None))
    return order


# ---------------------------------------------------------------------------------------------
# the loyalty service

class Loyalty:
    def __init__(self, base_url):
        self.base = (base_url or "").rstrip("/")
        parts = urllib.parse.urlsplit(self.base)
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path

    def tier(self, customer_id, context):
        """The customer's tier, or "" when the loyalty service fails, is slow or is given up on."""
        if not self.host:
            return ""
        remaining = context.time_remaining()  # no deadline: about 2**63 ns away, not None
        if BUG == "deadline-ignored":
            budget = LOYALTY_CAP
        elif BUG == "no-loyalty-cap":
            budget = remaining if remaining < 10 ** 6 else None
        else:
            budget = min(LOYALTY_CAP, remaining)
            if "empty-tier-before-deadline" in STYLE and remaining < 10 ** 6:
                # leave time to answer OK (empty tier) before the caller's deadline
                budget = min(budget, remaining - 0.3)
        if budget is not None and budget <= 0.01:
            return ""
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=budget)
        given_up = threading.Event()

        def give_up():
            # The call ended (deadline, cancellation) or the budget is spent: close the
            # connection now. shutdown() wakes a thread blocked in recv(); close() would not.
            given_up.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = None
        if budget is not None:
            # the socket timeout bounds each read; this bounds the whole exchange
            timer = threading.Timer(budget, give_up)
            timer.daemon = True
            timer.start()
        if BUG != "deadline-ignored":
            context.add_callback(give_up)
        try:
            conn.connect()
            if given_up.is_set():
                return ""
            conn.request("GET", f"{self.prefix}/tiers/{customer_id}",
                         headers={"Accept": "application/json", "Connection": "close"})
            resp = conn.getresponse()
            body = resp.read(64 * 1024)
            if not 200 <= resp.status < 300:
                log.info("loyalty: %s for customer %s", resp.status, customer_id)
                if BUG == "loyalty-error-fails-call":
                    raise RpcError(grpc.StatusCode.UNAVAILABLE,
                                   "the loyalty service is unavailable")
                return ""
            tier = json.loads(body).get("tier")
            return tier if isinstance(tier, str) else ""
        except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
            log.info("loyalty: gave up for customer %s: %s", customer_id,
                     "deadline or cancellation" if given_up.is_set() else exc)
            if BUG == "loyalty-error-fails-call":
                raise RpcError(grpc.StatusCode.UNAVAILABLE, "the loyalty service is unavailable")
            return ""
        finally:
            if timer is not None:
                timer.cancel()
            conn.close()


# ---------------------------------------------------------------------------------------------
# shop.v1.Shop

def parse_tokens(text):
    tokens = {}
    for pair in (text or "").split(","):
        token, sep, customer = pair.strip().partition("=")
        if sep and token.strip() and customer.strip():
            try:
                tokens[token.strip()] = int(customer.strip())
            except ValueError:
                log.warning("API_TOKENS: %r is not token=customer_id", pair)
    return tokens


def has_nul(text):
    return "\x00" in text


class Shop(shop_pb2_grpc.ShopServicer):
    def __init__(self, db, loyalty, tokens):
        self.db = db
        self.loyalty = loyalty
        self.tokens = tokens

    # -- helpers --------------------------------------------------------------------------

    def not_found(self, what, ident, cur):
        if BUG == "sql-in-message":
            return RpcError(grpc.StatusCode.NOT_FOUND,
                            f"no {what} found by query: {cur.query.decode()}")
        return RpcError(grpc.StatusCode.NOT_FOUND, f"no {what} has id {ident}")

    def authenticate(self, context):
        values = [v for k, v in context.invocation_metadata() if k == "authorization"]
        if len(values) != 1:
            raise RpcError(grpc.StatusCode.UNAUTHENTICATED,
                           "missing authorization: send 'authorization: Bearer <token>'")
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
            raise RpcError(grpc.StatusCode.UNAUTHENTICATED,
                           "authorization must be 'Bearer <token>'")
        customer = self.tokens.get(token)
        if customer is None:
            raise RpcError(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        return customer

    # -- unary methods ----------------------------------------------------------------------

    @unary
    def GetOrder(self, request, context):
        if request.id < 1:
            raise invalid([("id", "must be 1 or more")])

        def work(cur):
            cur.execute(f"SELECT {ORDER_COLUMNS} FROM rpc_orders WHERE id = %s", (request.id,))
            row = cur.fetchone()
            if BUG == "missing-row-unknown":
                return order_message(row)  # TypeError on None
            if row is None:
                raise self.not_found("order", request.id, cur)
            return order_message(row)
        return self.db.run(work)

    @unary
    def GetCustomer(self, request, context):
        if request.id < 1:
            raise invalid([("id", "must be 1 or more")])

        def work(cur):
            cur.execute("SELECT id, email, name FROM rpc_customers WHERE id = %s", (request.id,))
            row = cur.fetchone()
            if BUG == "missing-row-unknown":
                return shop_pb2.Customer(id=row[0], email=row[1], name=row[2])
            if row is None:
                raise self.not_found("customer", request.id, cur)
            return shop_pb2.Customer(id=row[0], email=row[1], name=row[2])
        customer = self.db.run(work)  # the connection goes back before the loyalty call
        customer.loyalty_tier = self.loyalty.tier(customer.id, context)
        return customer

    @unary
    def CreateCustomer(self, request, context):
        email, name = request.email, request.name
        violations = []
        if len(email) > 254:
            violations.append(("email", "must be at most 254 characters long"))
        elif email.count("@") != 1 or email.startswith("@") or email.endswith("@"):
            violations.append(("email", "must be one '@' with at least one character on each side"))
        elif has_nul(email):
            violations.append(("email", "must not contain a NUL character"))
        if name == "":
            violations.append(("name", "must not be empty"))
        elif len(name) > 100:
            violations.append(("name", "must be at most 100 characters long"))
        elif has_nul(name):
            violations.append(("name", "must not contain a NUL character"))
        if violations:
            raise invalid(violations)

        def work(cur):
            if BUG == "duplicate-email-internal":
                # relies on the unique index made at start-up, and maps no error
                cur.execute("INSERT INTO rpc_customers (email, name) VALUES (%s, %s) "
                            "RETURNING id, email, name", (email, name))
                return cur.fetchone()
            cur.execute("BEGIN")
            # one CreateCustomer per email at a time, so that two racing calls cannot both insert
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(lower(%s)))", (email,))
            if BUG == "email-case-sensitive":
                cur.execute("SELECT 1 FROM rpc_customers WHERE email = %s LIMIT 1", (email,))
            else:
                cur.execute("SELECT 1 FROM rpc_customers WHERE lower(email) = lower(%s) LIMIT 1",
                            (email,))
            if cur.fetchone() is not None:
                cur.execute("ROLLBACK")
                raise RpcError(grpc.StatusCode.ALREADY_EXISTS,
                               "a customer with this email already exists")
            cur.execute("INSERT INTO rpc_customers (email, name) VALUES (%s, %s) "
                        "RETURNING id, email, name", (email, name))
            row = cur.fetchone()
            cur.execute("COMMIT")
            return row
        row = self.db.run(work)
        return shop_pb2.Customer(id=row[0], email=row[1], name=row[2], loyalty_tier="")

    @unary
    def PlaceOrder(self, request, context):
        def check_total():
            if not 1 <= request.total_cents <= 1_000_000:
                raise invalid([("total_cents", "must be between 1 and 1000000")])
        if BUG == "validate-before-auth":
            check_total()
            token_customer = self.authenticate(context)
        else:
            token_customer = self.authenticate(context)
            check_total()
        if request.customer_id != token_customer and BUG != "permission-check-missing":
            raise RpcError(grpc.StatusCode.PERMISSION_DENIED,
                           "the token may only place orders for its own customer")

        def work(cur):
            cur.execute(
                f"INSERT INTO rpc_orders (customer_id, status, created_at, total_cents) "
                f"SELECT c.id, 'pending', now(), %s FROM rpc_customers c WHERE c.id = %s "
                f"RETURNING {ORDER_COLUMNS}", (request.total_cents, request.customer_id))
            row = cur.fetchone()
            if row is None:
                raise self.not_found("customer", request.customer_id, cur)
            return order_message(row)
        return self.db.run(work)

    if "own-additions" in STYLE:
        @unary
        def CountOrders(self, request, context):
            def work(cur):
                if request.status:
                    cur.execute("SELECT count(*) FROM rpc_orders WHERE status = %s",
                                (request.status,))
                else:
                    cur.execute("SELECT count(*) FROM rpc_orders")
                return shop_pb2.OrderCount(count=cur.fetchone()[0])
            return self.db.run(work)

    # -- the stream ---------------------------------------------------------------------------

    @streaming
    def ListOrders(self, request, context):
        status = request.status
        if BUG == "load-all-then-stream":
            yield from self._list_all(status)
        elif "server-cursor" in STYLE:
            yield from self._list_cursor(status, context)
        else:
            yield from self._list_keyset(status, context)

    def _list_keyset(self, status, context):
        """Keyset pages. grpcio asks this generator for the next message only once the previous
        one was handed to HTTP/2 (and its flow-control window), so a page is read only when
        the previous one has been written, and not at all once the call is cancelled."""
        where = "WHERE status = %s" if status else "WHERE true"
        after = None
        while context.is_active():
            def page(cur):
                params = [status] if status else []
                if BUG == "sort-by-id":
                    sql = f"SELECT {ORDER_COLUMNS} FROM rpc_orders {where}"
                    if after is not None:
                        sql += " AND id < %s"
                        params.append(after[1])
                    sql += " ORDER BY id DESC LIMIT %s"
                else:
                    sql = f"SELECT {ORDER_COLUMNS} FROM rpc_orders {where}"
                    if after is not None:
                        sql += " AND (created_at, id) < (%s, %s)"
                        params += [after[0], after[1]]
                    sql += " ORDER BY created_at DESC, id DESC LIMIT %s"
                cur.execute(sql, params + [PAGE_SIZE])
                return cur.fetchall()
            rows = self.db.run(page)  # the connection is not held while the page is written
            for row in rows:
                yield order_message(row)
            if len(rows) < PAGE_SIZE:
                return
            after = (rows[-1][4], rows[-1][0])

    def _list_cursor(self, status, context):
        """INDEP_STYLE=server-cursor: one transaction with a server-side cursor, FETCHed
        PAGE_SIZE rows at a time (psycopg2's named cursor and itersize)."""
        conn = self.db.connection()
        broken = False
        try:
            conn.autocommit = False
            with conn.cursor(name="list_orders") as cur:
                cur.itersize = PAGE_SIZE
                if status:
                    cur.execute(f"SELECT {ORDER_COLUMNS} FROM rpc_orders WHERE status = %s "
                                f"ORDER BY created_at DESC, id DESC", (status,))
                else:
                    cur.execute(f"SELECT {ORDER_COLUMNS} FROM rpc_orders "
                                f"ORDER BY created_at DESC, id DESC")
                n = 0
                for row in cur:
                    yield order_message(row)
                    n += 1
                    if n % PAGE_SIZE == 0 and not context.is_active():
                        return
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            # also on GeneratorExit, when grpcio drops a cancelled stream
            try:
                if not conn.closed:
                    conn.rollback()
            except psycopg2.Error:
                broken = True
            self.db._put(conn, broken)

    def _list_all(self, status):
        # INDEP_BUG=load-all-then-stream: a plain cursor, iterated as if it streamed
        conn = self.db.connection()
        try:
            with conn.cursor() as cur:
                if status:
                    cur.execute(f"SELECT {ORDER_COLUMNS} FROM rpc_orders WHERE status = %s "
                                f"ORDER BY created_at DESC, id DESC", (status,))
                else:
                    cur.execute(f"SELECT {ORDER_COLUMNS} FROM rpc_orders "
                                f"ORDER BY created_at DESC, id DESC")
                rows = cur.fetchall()
        finally:
            self.db._put(conn)
        for row in rows:
            yield order_message(row)


# ---------------------------------------------------------------------------------------------
# grpc.health.v1.Health

class Health(health_pb2_grpc.HealthServicer):
    KNOWN = ("", SHOP_SERVICE)

    def __init__(self):
        self.cond = threading.Condition()
        self.serving = False
        self.closed = False

    def set_serving(self, serving):
        with self.cond:
            self.serving = serving
            self.cond.notify_all()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _status(self):
        S = health_pb2.HealthCheckResponse
        return S.SERVING if self.serving else S.NOT_SERVING

    def Check(self, request, context):
        if request.service not in self.KNOWN:
            if BUG == "health-unknown-service-status":
                return health_pb2.HealthCheckResponse(
                    status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self._status())

    def Watch(self, request, context):
        if request.service not in self.KNOWN:
            yield health_pb2.HealthCheckResponse(
                status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            return
        last = None
        while context.is_active():
            with self.cond:
                if self._status() == last and not self.closed:
                    self.cond.wait(1.0)
                current, closed = self._status(), self.closed
            if current != last:
                yield health_pb2.HealthCheckResponse(status=current)
                last = current
            if closed:
                return


# ---------------------------------------------------------------------------------------------
# server reflection, v1 and v1alpha (same messages, two packages)

def reflection_servicer(pb2, pb2_grpc, service_names):
    pool = descriptor_pool.Default()

    class Reflection(pb2_grpc.ServerReflectionServicer):
        def ServerReflectionInfo(self, request_iterator, context):
            for request in request_iterator:
                yield self.answer(request)

        @staticmethod
        def files(fd):
            """fd and every file it depends on, transitively, fd first."""
            out, seen, todo = [], set(), [fd]
            while todo:
                f = todo.pop(0)
                if f.name in seen:
                    continue
                seen.add(f.name)
                out.append(f.serialized_pb)
                todo.extend(f.dependencies)
            return pb2.FileDescriptorResponse(file_descriptor_proto=out)

        def answer(self, request):
            resp = pb2.ServerReflectionResponse(valid_host=request.host, original_request=request)
            kind = request.WhichOneof("message_request")
            try:
                if kind == "list_services":
                    resp.list_services_response.CopyFrom(pb2.ListServiceResponse(
                        service=[pb2.ServiceResponse(name=n) for n in service_names]))
                elif kind == "file_by_filename":
                    resp.file_descriptor_response.CopyFrom(
                        self.files(pool.FindFileByName(request.file_by_filename)))
                elif kind == "file_containing_symbol":
                    resp.file_descriptor_response.CopyFrom(
                        self.files(pool.FindFileContainingSymbol(request.file_containing_symbol)))
                elif kind == "file_containing_extension":
                    ext = request.file_containing_extension
                    msg = pool.FindMessageTypeByName(ext.containing_type)
                    field = pool.FindExtensionByNumber(msg, ext.extension_number)
                    resp.file_descriptor_response.CopyFrom(self.files(field.file))
                elif kind == "all_extension_numbers_of_type":
                    msg = pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                    resp.all_extension_numbers_response.CopyFrom(pb2.ExtensionNumberResponse(
                        base_type_name=msg.full_name,
                        extension_number=[f.number for f in pool.FindAllExtensions(msg)]))
                else:
                    resp.error_response.CopyFrom(pb2.ErrorResponse(
                        error_code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                        error_message="no request in message_request"))
            except KeyError:
                resp.error_response.CopyFrom(pb2.ErrorResponse(
                    error_code=grpc.StatusCode.NOT_FOUND.value[0], error_message="not found"))
            return resp

    return Reflection()


# ---------------------------------------------------------------------------------------------
# start, serve, drain

def main():
    port = os.environ.get("PORT", "50051")
    db = None
    for attempt in range(60):  # the database may come up a moment after us
        try:
            db = Db(os.environ["DATABASE_URL"])
            break
        except psycopg2.OperationalError as exc:
            if attempt == 59:
                raise
            log.info("waiting for the database: %s", str(exc).strip())
            time.sleep(0.5)

    def setup(cur):
        cur.execute("CREATE INDEX IF NOT EXISTS rpc_customers_email_lower "
                    "ON rpc_customers (lower(email))")
        if BUG == "duplicate-email-internal":
            cur.execute("CREATE UNIQUE INDEX IF NOT EXISTS rpc_customers_email_lower_unique "
                        "ON rpc_customers (lower(email))")
    db.run(setup)

    tokens = parse_tokens(os.environ.get("API_TOKENS", ""))
    loyalty = Loyalty(os.environ.get("LOYALTY_URL", ""))
    health = Health()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS,
                                                    thread_name_prefix="rpc"),
                         options=[("grpc.so_reuseport", 0)])
    shop_pb2_grpc.add_ShopServicer_to_server(Shop(db, loyalty, tokens), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [SHOP_SERVICE]
    if BUG != "reflection-missing-health":
        names.append(HEALTH_SERVICE)
    if "v1alpha-only" not in STYLE:
        names.append(REFLECTION_V1)
    names.append(REFLECTION_V1ALPHA)
    if "v1alpha-only" not in STYLE:
        refl_v1_grpc.add_ServerReflectionServicer_to_server(
            reflection_servicer(refl_v1, refl_v1_grpc, names), server)
    refl_v1alpha_grpc.add_ServerReflectionServicer_to_server(
        reflection_servicer(refl_v1alpha, refl_v1alpha_grpc, names), server)

    if server.add_insecure_port(f"0.0.0.0:{port}") == 0:
        sys.exit(f"cannot listen on port {port}")

    stop = threading.Event()
    if BUG != "exit-at-once-on-sigterm":  # that learner leaves SIGTERM to Python's default
        def on_signal(signum, _frame):
            if not stop.is_set():
                if BUG != "health-serving-during-shutdown":
                    health.serving = False  # at once; the Condition is notified below
                stop.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    server.start()
    health.set_serving(True)
    log.info("serving on port %s (bug=%s, style=%s)", port, BUG or "-", ",".join(sorted(STYLE)) or "-")

    # Short waits: the kernel may deliver SIGTERM to one of grpcio's threads, and CPython runs
    # the Python handler only when the main thread wakes (the grader saw health turn NOT_SERVING
    # about a second late with wait(1.0); FINDINGS.md).
    while not stop.wait(0.05):
        pass
    t0 = time.monotonic()
    if BUG != "health-serving-during-shutdown":
        health.set_serving(False)
    log.info("SIGTERM: health NOT_SERVING; still serving for %.1f s", DRAIN_KEEP_SERVING)

    def watchdog():
        time.sleep(EXIT_WATCHDOG)
        log.warning("drain did not end in %.1f s; exiting", EXIT_WATCHDOG)
        logging.shutdown()
        os._exit(0)
    threading.Thread(target=watchdog, daemon=True, name="watchdog").start()

    if BUG == "no-grace":
        time.sleep(1.0)
        health.close()
        server.stop(None).wait()  # cancels every call still running
    else:
        time.sleep(DRAIN_KEEP_SERVING)
        health.close()  # Watch streams end
        # no new calls from here on; running ones get DRAIN_GRACE to finish
        server.stop(DRAIN_GRACE).wait()
    db.close()
    log.info("stopped %.2f s after SIGTERM", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
