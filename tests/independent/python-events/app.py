"""Independent Python implementation of exercises/event-driven (written from its README only).

Threads:
  - the HTTP server (ThreadingHTTPServer, one thread per connection);
  - the outbox relay (its own AMQP connection, publisher confirms);
  - the payment consumer (its own AMQP connection, manual acks);
  - for some planted bugs only, a "direct publisher" thread (its own AMQP connection).
pika is not thread-safe: no AMQP connection is ever touched by two threads.

INDEP_BUG=<name> switches on one planted bug, INDEP_STYLE=<name>[,<name>] alternative correct
designs; both are described in BUGS.md.
"""

import json
import logging
import os
import queue
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pika
import pika.exceptions
import psycopg2
import psycopg2.errors
import psycopg2.extensions

import stock

BUG = os.environ.get("INDEP_BUG", "").strip()
STYLES = {s.strip() for s in os.environ.get("INDEP_STYLE", "").split(",") if s.strip()}
KNOWN_BUGS = {
    "", "publish-before-commit", "commit-then-publish", "backlog-unordered", "double-publish",
    "mark-uncommitted", "ack-before-processing", "consumer-not-idempotent", "poison-requeue",
    "message-id-purchase", "quantity-101", "customer-bytes", "cancel-not-idempotent",
    "unknown-purchase-acked", "transient-messages", "exit-on-broker-loss", "no-reconnect",
    "paid-cents-int4",
}
KNOWN_STYLES = {"uuid", "reserve-in-tx", "outbox-delete"}

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
log = logging.getLogger("indep")
logging.getLogger("pika").setLevel(logging.CRITICAL)

if BUG not in KNOWN_BUGS:
    sys.exit(f"unknown INDEP_BUG {BUG!r}")
if STYLES - KNOWN_STYLES:
    sys.exit(f"unknown INDEP_STYLE {sorted(STYLES - KNOWN_STYLES)}")

PORT = int(os.environ.get("PORT", "8080"))
DSN = os.environ["DATABASE_URL"]
AMQP_URL = os.environ["AMQP_URL"]
STOCK_URL = os.environ["STOCK_URL"].rstrip("/")

UUID_IDS = "uuid" in STYLES
EXCHANGE = "shop.events"
DLX = "shop.dead-letters"
PAYMENTS_QUEUE = "purchases.payments"
DEAD_QUEUE = "purchases.payments.dead"
MAX_DELIVERIES = 5


class State:
    db_ok = False
    relay_ok = False
    consumer_ok = False
    ready = False  # latched: once ready, /healthz keeps answering 200 (see FINDINGS.md)

    @classmethod
    def update(cls):
        if cls.db_ok and cls.relay_ok and cls.consumer_ok and not cls.ready:
            cls.ready = True
            log.info("ready")


relay_wake = threading.Event()

# --------------------------------------------------------------------------------------------
# PostgreSQL


class Pool:
    """A blocking pool of psycopg2 connections (ThreadedConnectionPool raises when exhausted)."""

    def __init__(self, size):
        self.sem = threading.BoundedSemaphore(size)
        self.lock = threading.Lock()
        self.idle = []

    def get(self):
        self.sem.acquire()
        with self.lock:
            conn = self.idle.pop() if self.idle else None
        if conn is not None and conn.closed:
            conn = None
        if conn is None:
            try:
                conn = psycopg2.connect(DSN, connect_timeout=5)
            except Exception:
                self.sem.release()
                raise
        return conn

    def put(self, conn, broken=False):
        try:
            if broken or conn.closed:
                try:
                    conn.close()
                except Exception:
                    pass
            else:
                if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    conn.rollback()
                with self.lock:
                    self.idle.append(conn)
        finally:
            self.sem.release()


POOL = Pool(20)


class Tx:
    """with Tx() as cur: ... commits on success, rolls back on an exception."""

    def __enter__(self):
        self.conn = POOL.get()
        self.cur = self.conn.cursor()
        return self.cur

    def __exit__(self, et, ev, tb):
        broken = False
        try:
            if et is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        except Exception:
            broken = True
            if et is None:
                raise
        finally:
            if isinstance(ev, (psycopg2.OperationalError, psycopg2.InterfaceError)):
                broken = True
            POOL.put(self.conn, broken)
        return False


def schema_sql():
    id_col = "uuid PRIMARY KEY DEFAULT gen_random_uuid()" if UUID_IDS else "bigserial PRIMARY KEY"
    paid = "integer" if BUG == "paid-cents-int4" else "bigint"
    # customer and sku are stored as `json` (the text of a JSON string): a JSON string may hold
    # U+0000, which a PostgreSQL `text` cannot, and `json` keeps its input text as it is.
    return f"""
    CREATE TABLE IF NOT EXISTS purchases (
        id {id_col},
        customer json NOT NULL,
        sku json NOT NULL,
        quantity integer NOT NULL,
        amount_cents bigint NOT NULL,
        status text NOT NULL DEFAULT 'created',
        paid_cents {paid} NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        cancelled_at timestamptz
    );
    CREATE TABLE IF NOT EXISTS outbox (
        seq bigserial PRIMARY KEY,
        event_id uuid NOT NULL UNIQUE,
        routing_key text NOT NULL,
        purchase_id text NOT NULL,
        body text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz
    );
    CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE published_at IS NULL;
    CREATE TABLE IF NOT EXISTS applied_payments (
        event_id text PRIMARY KEY,
        purchase_id text NOT NULL,
        amount_cents bigint NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    );
    """


def init_db():
    while True:
        try:
            conn = psycopg2.connect(DSN, connect_timeout=5)
            try:
                with conn:
                    with conn.cursor() as cur:
                        # Two copies starting at once must not race on CREATE ... IF NOT EXISTS.
                        cur.execute("SELECT pg_advisory_xact_lock(727274)")
                        cur.execute(schema_sql())
            finally:
                conn.close()
            State.db_ok = True
            State.update()
            return
        except Exception as e:
            log.warning("database not ready: %s", e)
            time.sleep(0.5)


# --------------------------------------------------------------------------------------------
# Purchases

ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$") if UUID_IDS \
    else re.compile(r"^(0|[1-9][0-9]{0,18})$")
MAX_BIGINT = 2**63 - 1


def parse_id_text(text):
    """The purchase id as the API shows it (id::text), or None for a form that names nothing."""
    if not isinstance(text, str) or not ID_RE.match(text):
        return None
    if not UUID_IDS and int(text) > MAX_BIGINT:
        return None
    return text


def api_id(db_id):
    """The id as the API shows it: a JSON number (bigserial) or a JSON string (uuid style)."""
    return str(db_id) if UUID_IDS else int(db_id)


def id_from_event(value):
    """purchase_id of a payment: must be the same JSON type and text as the API shows."""
    if UUID_IDS:
        return parse_id_text(value) if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if value < 0 or value > MAX_BIGINT:
        return None
    return str(value)


def now_utc():
    return datetime.now(timezone.utc)


def rfc3339(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


SELECT_PURCHASE = ("SELECT id::text, customer::text, sku::text, quantity, amount_cents, status, "
                   "paid_cents FROM purchases WHERE id::text = %s")


def row_to_purchase(row):
    pid, customer, sku, quantity, amount, status, paid = row
    return {"id": api_id(pid), "customer": json.loads(customer), "sku": json.loads(sku),
            "quantity": quantity, "amount_cents": amount, "status": status,
            "paid_cents": paid}


def id_where():
    # A uuid/bigint comparison that uses the primary key index; the text was validated first.
    return "id = %s::uuid" if UUID_IDS else "id = %s::bigint"


def get_purchase(cur, pid_text, for_update=False):
    cur.execute(SELECT_PURCHASE.replace("id::text = %s", id_where())
                + (" FOR UPDATE" if for_update else ""), (pid_text,))
    row = cur.fetchone()
    return row_to_purchase(row) if row else None


def json_dumps(obj):
    # ensure_ascii: the body is plain ASCII, so a lone surrogate or U+0000 travels as an escape.
    return json.dumps(obj, separators=(",", ":"))


def new_event(routing_key, purchase, occurred):
    event = {"event_id": str(uuid.uuid4()), "type": routing_key,
             "purchase_id": purchase["id"]}
    if routing_key == "purchase.created":
        for k in ("customer", "sku", "quantity", "amount_cents"):
            event[k] = purchase[k]
    event["occurred_at"] = rfc3339(occurred)
    return event


def insert_outbox(cur, event):
    cur.execute("INSERT INTO outbox (event_id, routing_key, purchase_id, body) "
                "VALUES (%s, %s, %s, %s)",
                (event["event_id"], event["type"], str(event["purchase_id"]),
                 json_dumps(event)))


def after_commit(event):
    """Called after the transaction that wrote `event` to the outbox committed."""
    if BUG == "commit-then-publish":
        DIRECT.submit_async(event)
    elif BUG == "double-publish":
        # "Fast path": publish right away, and leave the outbox row for the relay as a fallback
        # in case this publish fails... but the row is never marked published here.
        DIRECT.submit_async(event)
        relay_wake.set()
    else:
        relay_wake.set()


class ApiError(Exception):
    def __init__(self, status, title, detail=None, extra=None):
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra or {}


def validate_purchase(body):
    errors = []

    def bad(field, detail):
        errors.append({"pointer": "/" + field, "detail": detail})

    def string(field, maximum):
        v = body.get(field)
        if v is None and field not in body:
            bad(field, "is required")
        elif not isinstance(v, str):
            bad(field, "must be a string")
        else:
            n = len(v.encode("utf-8", "surrogatepass")) if (BUG == "customer-bytes" and
                                                             field == "customer") else len(v)
            if n < 1 or n > maximum:
                bad(field, f"must be 1 to {maximum} characters")

    def integer(field, maximum):
        v = body.get(field)
        if field not in body:
            bad(field, "is required")
        elif isinstance(v, bool) or not isinstance(v, int):
            bad(field, "must be an integer")
        elif v < 1 or v > maximum:
            bad(field, f"must be an integer from 1 to {maximum}")

    string("customer", 100)
    string("sku", 40)
    integer("quantity", 101 if BUG == "quantity-101" else 100)
    integer("amount_cents", 100_000_000)
    if errors:
        raise ApiError(422, "Invalid purchase", "The body breaks the rules of a purchase.",
                       {"errors": errors})
    return {k: body[k] for k in ("customer", "sku", "quantity", "amount_cents")}


def reserve_or_raise(sku, quantity):
    result = stock.reserve(STOCK_URL, sku, quantity)
    if result == "reserved":
        return
    if result == "out-of-stock":
        raise ApiError(409, "Out of stock", f"The stock service has not enough of {sku!r}.")
    raise ApiError(503, "Stock service unavailable",
                   f"The stock service could not reserve the items ({result}).")


def insert_purchase(cur, p):
    occurred = now_utc()
    cur.execute("INSERT INTO purchases (customer, sku, quantity, amount_cents, created_at) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id::text",
                (json_dumps(p["customer"]), json_dumps(p["sku"]), p["quantity"],
                 p["amount_cents"], occurred))
    pid = cur.fetchone()[0]
    purchase = dict(id=api_id(pid), status="created", paid_cents=0, **p)
    # Keep the key order of the README's example.
    purchase = {k: purchase[k] for k in ("id", "customer", "sku", "quantity", "amount_cents",
                                         "status", "paid_cents")}
    return purchase, new_event("purchase.created", purchase, occurred)


def place_purchase(body):
    p = validate_purchase(body)
    if BUG == "publish-before-commit":
        # Write, tell the world, then reserve, and commit only when the reservation succeeded.
        with Tx() as cur:
            purchase, event = insert_purchase(cur, p)
            DIRECT.publish_now(event)  # before the commit, and even if the commit never comes
            reserve_or_raise(p["sku"], p["quantity"])
        return purchase
    if "reserve-in-tx" in STYLES:
        with Tx() as cur:
            purchase, event = insert_purchase(cur, p)
            insert_outbox(cur, event)
            reserve_or_raise(p["sku"], p["quantity"])  # an ApiError rolls everything back
    else:
        reserve_or_raise(p["sku"], p["quantity"])
        with Tx() as cur:
            purchase, event = insert_purchase(cur, p)
            if BUG != "commit-then-publish":
                insert_outbox(cur, event)
    after_commit(event)
    return purchase


def cancel_purchase(pid_text):
    with Tx() as cur:
        if BUG == "cancel-not-idempotent":
            cur.execute(f"UPDATE purchases SET status = 'cancelled', cancelled_at = now() "
                        f"WHERE {id_where()} RETURNING id", (pid_text,))
            if cur.fetchone() is None:
                raise ApiError(404, "Purchase not found")
            purchase = get_purchase(cur, pid_text)
        else:
            purchase = get_purchase(cur, pid_text, for_update=True)
            if purchase is None:
                raise ApiError(404, "Purchase not found", f"No purchase has the id {pid_text}.")
            if purchase["status"] == "cancelled":
                raise ApiError(409, "Already cancelled", "This purchase is already cancelled.")
            cur.execute(f"UPDATE purchases SET status = 'cancelled', cancelled_at = now() "
                        f"WHERE {id_where()}", (pid_text,))
            purchase["status"] = "cancelled"
        event = new_event("purchase.cancelled", purchase, now_utc())
        if BUG != "commit-then-publish":
            insert_outbox(cur, event)
    after_commit(event)
    return purchase


# --------------------------------------------------------------------------------------------
# AMQP


def amqp_params():
    params = pika.URLParameters(AMQP_URL)
    params.heartbeat = 10
    params.blocked_connection_timeout = 10
    params.socket_timeout = 2
    params.stack_timeout = 5
    params.connection_attempts = 1
    params.retry_delay = 0
    return params


def declare_topology(ch):
    ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    ch.exchange_declare(DLX, exchange_type="fanout", durable=True)
    ch.queue_declare(DEAD_QUEUE, durable=True)
    ch.queue_bind(DEAD_QUEUE, DLX)
    ch.queue_declare(PAYMENTS_QUEUE, durable=True,
                     arguments={"x-dead-letter-exchange": DLX})
    ch.queue_bind(PAYMENTS_QUEUE, EXCHANGE, routing_key="payment.settled")


def message_properties(event):
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=1 if BUG == "transient-messages" else 2,
        message_id=str(event["purchase_id"]) if BUG == "message-id-purchase"
        else event["event_id"],
        type=event["type"],
        timestamp=int(time.time()),
    )


def close_quietly(conn):
    if conn is None:
        return
    try:
        if not conn.is_closed:
            conn.close()
    except Exception:
        pass


class Backoff:
    def __init__(self):
        self.delay = 0.2

    def sleep(self):
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 2.0)

    def reset(self):
        self.delay = 0.2


def broker_lost(thread):
    """What a thread does when it lost its AMQP connection. Returns False to stop the thread."""
    if BUG == "exit-on-broker-loss":
        log.error("%s lost the broker, exiting", thread)
        os._exit(1)
    if BUG == "no-reconnect" and State.ready:
        log.error("%s lost the broker, stopping", thread)
        return False
    return True


def relay_loop():
    backoff = Backoff()
    order = "event_id" if BUG == "backlog-unordered" else "seq"
    while True:
        amqp = db = None
        try:
            amqp = pika.BlockingConnection(amqp_params())
            ch = amqp.channel()
            declare_topology(ch)
            ch.confirm_delivery()
            db = psycopg2.connect(DSN, connect_timeout=5)
            State.relay_ok = True
            State.update()
            backoff.reset()
            log.info("relay connected")
            while True:
                relay_wake.clear()
                cur = db.cursor()
                cur.execute("SELECT seq, routing_key, body FROM outbox WHERE published_at IS NULL "
                            f"ORDER BY {order} LIMIT 500")
                rows = cur.fetchall()
                if BUG != "mark-uncommitted":
                    db.commit()
                for seq, routing_key, body in rows:
                    event = json.loads(body)
                    # basic_publish on a confirm channel returns once the broker confirmed.
                    ch.basic_publish(EXCHANGE, routing_key, body.encode("ascii"),
                                     message_properties(event))
                    if "outbox-delete" in STYLES:
                        cur.execute("DELETE FROM outbox WHERE seq = %s", (seq,))
                    else:
                        cur.execute("UPDATE outbox SET published_at = now() WHERE seq = %s",
                                    (seq,))
                    if BUG != "mark-uncommitted":
                        db.commit()
                cur.close()
                if len(rows) == 500:
                    continue
                # Wait for a commit to wake us, or poll once a second (events written by
                # another copy of the service, or missed wake-ups), serving heartbeats.
                deadline = time.monotonic() + 1.0
                while not relay_wake.is_set() and time.monotonic() < deadline:
                    amqp.process_data_events(time_limit=0.05)
        except Exception as e:
            log.warning("relay: %s: %s", type(e).__name__, e)
            close_quietly(amqp)
            if db is not None:
                try:
                    db.close()
                except Exception:
                    pass
            if isinstance(e, (pika.exceptions.AMQPError,)) or amqp is None:
                if not broker_lost("relay"):
                    return
            backoff.sleep()


class DirectPublisher:
    """Used by planted bugs only: a thread owning one AMQP connection, publishing on request."""

    def __init__(self):
        self.q = queue.Queue()
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.loop, name="direct", daemon=True)
        self.thread.start()

    def submit_async(self, event):
        self.q.put((event, None))

    def publish_now(self, event):
        done = {"ev": threading.Event(), "ok": False}
        self.q.put((event, done))
        done["ev"].wait(3)
        if not done["ok"]:
            log.warning("direct publish of %s failed; going on", event["event_id"])

    def loop(self):
        amqp = ch = None
        pending = None
        while True:
            if pending is None:
                pending = self.q.get()
            event, done = pending
            try:
                if amqp is None or amqp.is_closed:
                    amqp = pika.BlockingConnection(amqp_params())
                    ch = amqp.channel()
                    declare_topology(ch)
                    ch.confirm_delivery()
                ch.basic_publish(EXCHANGE, event["type"], json_dumps(event).encode("ascii"),
                                 message_properties(event))
                if done:
                    done["ok"] = True
                    done["ev"].set()
                pending = None
            except Exception as e:
                log.warning("direct publisher: %s: %s", type(e).__name__, e)
                close_quietly(amqp)
                amqp = None
                if done:  # synchronous: the caller gives up
                    done["ev"].set()
                    pending = None
                else:  # from memory: retry until the broker is back (or the process dies)
                    time.sleep(0.5)


DIRECT = DirectPublisher()


# --------------------------------------------------------------------------------------------
# Payment consumer


class Poison(Exception):
    pass


def parse_payment(body):
    try:
        text = body.decode("utf-8")
        msg = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise Poison(f"body is not JSON: {e}")
    if not isinstance(msg, dict):
        raise Poison("body is not a JSON object")
    event_id = msg.get("event_id")
    if not isinstance(event_id, str) or event_id == "":
        raise Poison("event_id is not a non-empty string")
    amount = msg.get("amount_cents")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= 100_000_000:
        raise Poison("amount_cents is not an integer from 1 to 100000000")
    pid_text = id_from_event(msg.get("purchase_id"))
    if pid_text is None:
        raise Poison("purchase_id names no purchase")
    return event_id, pid_text, amount


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


class Consumer:
    def __init__(self):
        self.db = None
        self.failures = {}  # delivery key -> deliveries that failed for a transient reason

    def conn(self):
        if self.db is None or self.db.closed:
            self.db = psycopg2.connect(DSN, connect_timeout=5)
        return self.db

    def apply(self, event_id, pid_text, amount):
        """Returns 'applied', 'duplicate' or 'unknown' (no such purchase)."""
        db = self.conn()
        try:
            with db.cursor() as cur:
                cur.execute(f"UPDATE purchases SET paid_cents = paid_cents + %s WHERE {id_where()}",
                            (amount, pid_text))
                if cur.rowcount == 0:
                    db.rollback()
                    return "unknown"
                if BUG != "consumer-not-idempotent":
                    cur.execute("INSERT INTO applied_payments (event_id, purchase_id, amount_cents)"
                                " VALUES (%s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                                (event_id, pid_text, amount))
                    if cur.rowcount == 0:
                        db.rollback()
                        return "duplicate"
            db.commit()
            return "applied"
        except Exception:
            try:
                db.rollback()
            except Exception:
                self.db = None
            raise

    def on_message(self, ch, method, props, body):
        tag = method.delivery_tag
        if BUG == "ack-before-processing":
            ch.basic_ack(tag)
        try:
            event_id, pid_text, amount = parse_payment(body)
            outcome = self.apply(event_id, pid_text, amount)
            if outcome == "unknown" and BUG != "unknown-purchase-acked":
                raise Poison(f"purchase_id {pid_text} names no purchase")
            log.info("payment %s for %s: %s", event_id, pid_text, outcome)
            if BUG != "ack-before-processing":
                ch.basic_ack(tag)
        except Poison as e:
            if BUG == "ack-before-processing":
                log.warning("poison message dropped: %s", e)
            elif BUG == "poison-requeue":
                ch.basic_nack(tag, requeue=True)
            else:
                log.warning("poison message to the dead letters: %s", e)
                ch.basic_reject(tag, requeue=False)
        except (psycopg2.DataError, psycopg2.IntegrityError) as e:
            # Can never pass (e.g. a value out of range): dead-letter it.
            log.warning("payment refused by the database, dead-lettered: %s", e)
            if BUG != "ack-before-processing":
                ch.basic_reject(tag, requeue=False)
        except (pika.exceptions.AMQPError,):
            raise
        except Exception as e:
            # Expected to pass later (the database was unreachable): requeue, at most 5 times.
            self.db = None
            key = (props.message_id, body)
            n = self.failures.get(key, 0) + 1
            self.failures[key] = n
            log.warning("payment failed (%d/%d): %s: %s", n, MAX_DELIVERIES, type(e).__name__, e)
            if BUG == "ack-before-processing":
                return
            if n >= MAX_DELIVERIES:
                self.failures.pop(key, None)
                ch.basic_reject(tag, requeue=False)
            else:
                time.sleep(0.5)
                ch.basic_nack(tag, requeue=True)

    def loop(self):
        backoff = Backoff()
        while True:
            amqp = None
            try:
                amqp = pika.BlockingConnection(amqp_params())
                ch = amqp.channel()
                declare_topology(ch)
                ch.basic_qos(prefetch_count=10)
                ch.basic_consume(PAYMENTS_QUEUE, self.on_message, auto_ack=False)
                self.conn()
                State.consumer_ok = True
                State.update()
                backoff.reset()
                log.info("consumer started")
                ch.start_consuming()
            except Exception as e:
                log.warning("consumer: %s: %s", type(e).__name__, e)
                close_quietly(amqp)
                if isinstance(e, pika.exceptions.AMQPError) or amqp is None:
                    if not broker_lost("consumer"):
                        return
                backoff.sleep()


# --------------------------------------------------------------------------------------------
# HTTP


def problem(status, title, detail=None, extra=None):
    doc = {"type": "about:blank", "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    if extra:
        doc.update(extra)
    return doc


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def version_string(self):
        return "indep-events"

    def log_message(self, fmt, *args):
        if os.environ.get("INDEP_TRACE"):
            log.info("%s %s", self.address_string(), fmt % args)

    def send(self, status, doc=None, headers=None, content_type="application/json"):
        body = b"" if doc is None else json_dumps(doc).encode("ascii")
        self.send_response(status)
        if doc is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_problem(self, status, title, detail=None, extra=None, headers=None):
        self.send(status, problem(status, title, detail, extra), headers,
                  "application/problem+json")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        n = int(length)
        if n < 0 or n > 1_000_000:
            raise ApiError(413, "Body too large")
        return self.rfile.read(n)

    def route(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            return {"GET": self.healthz, "HEAD": self.healthz}, ()
        if path == "/purchases":
            return {"POST": self.post_purchase}, ()
        m = re.fullmatch(r"/purchases/([^/]+)", path)
        if m:
            return {"GET": self.get_purchase, "HEAD": self.get_purchase}, (m.group(1),)
        m = re.fullmatch(r"/purchases/([^/]+)/cancel", path)
        if m:
            return {"POST": self.post_cancel}, (m.group(1),)
        return None, ()

    def dispatch(self):
        try:
            body = self.read_body()
        except (ValueError, ApiError):
            self.close_connection = True
            self.send_problem(400, "Unreadable body")
            return
        try:
            methods, args = self.route()
            if methods is None:
                raise ApiError(404, "Not found", f"No resource at {self.path}.")
            fn = methods.get(self.command)
            if fn is None:
                raise _method_not_allowed(methods)
            fn(body, *args)
        except ApiError as e:
            headers = e.extra.pop("_headers", None) if e.extra else None
            self.send_problem(e.status, e.title, e.detail, e.extra, headers)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            log.warning("database unavailable: %s", e)
            self.send_problem(503, "Database unavailable")
        except Exception:
            log.exception("unexpected error")
            self.send_problem(500, "Internal error")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = dispatch

    def healthz(self, body):
        if State.ready:
            self.send(200, {"status": "ok"})
        else:
            self.send_problem(503, "Not ready", "Still connecting to PostgreSQL or RabbitMQ.")

    def post_purchase(self, body):
        try:
            doc = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, "Malformed JSON", f"The body is not JSON: {e}")
        if not isinstance(doc, dict):
            raise ApiError(422, "Invalid purchase", "The body must be a JSON object.")
        purchase = place_purchase(doc)
        self.send(201, purchase, {"Location": f"/purchases/{purchase['id']}"})

    def get_purchase(self, body, raw_id):
        pid = parse_id_text(raw_id)
        purchase = None
        if pid is not None:
            with Tx() as cur:
                purchase = get_purchase(cur, pid)
        if purchase is None:
            raise ApiError(404, "Purchase not found", f"No purchase has the id {raw_id}.")
        self.send(200, purchase)

    def post_cancel(self, body, raw_id):
        pid = parse_id_text(raw_id)
        if pid is None:
            raise ApiError(404, "Purchase not found", f"No purchase has the id {raw_id}.")
        self.send(200, cancel_purchase(pid))


def _method_not_allowed(methods):
    allow = ", ".join(sorted(methods))
    return ApiError(405, "Method not allowed", f"Allowed: {allow}.", {"_headers": {"Allow": allow}})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    log.info("starting: bug=%r styles=%s", BUG, sorted(STYLES))
    server = Server(("0.0.0.0", PORT), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    init_db()
    if BUG in ("publish-before-commit", "commit-then-publish", "double-publish"):
        DIRECT.start()
    threading.Thread(target=relay_loop, name="relay", daemon=True).start()
    threading.Thread(target=Consumer().loop, name="consumer", daemon=True).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
