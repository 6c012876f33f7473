"""Hand test of the service against the private environment that env.sh starts.

    INDEP_BUG=... INDEP_STYLE=... /usr/bin/python3 smoke/smoke.py

Starts app.py (its own process group) on a fresh database, runs the README's tasks, prints each
failed expectation with its requirement id, and a summary line `FAILED ids: ...`.
"""

import http.client as httpc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pika
import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE_DIR = os.path.dirname(HERE)
BASE = os.environ.get("BASE", "/tmp/indep-events")
PG = "postgresql://postgres@127.0.0.1:27432/"
RMQ_DIRECT = "amqp://grader:s3cret@127.0.0.1:27672/%2f"
RMQ_PROXY = "amqp://grader:s3cret@127.0.0.1:27680/%2f"
PORT = 27600
STOCK = ("127.0.0.1", 27501)
PROXY_CTL = ("127.0.0.1", 27681)

failures = []  # (id, message)
QUICK = "--quick" in sys.argv


def fail(req, msg):
    failures.append((req, msg))
    print(f"  FAIL [{req}] {msg}", flush=True)


def expect(cond, req, msg):
    if not cond:
        fail(req, msg)
    return cond


def http(method, path, body=None, addr=("127.0.0.1", PORT), raw=None, timeout=10):
    """(status, headers, parsed body); status 0 when the service does not answer."""
    try:
        return _http(method, path, body, addr, raw, timeout)
    except OSError as e:
        if addr != ("127.0.0.1", PORT) or path == "/healthz":
            raise
        return 0, {}, {"error": str(e)}


def _http(method, path, body, addr, raw, timeout):
    c = httpc.HTTPConnection(*addr, timeout=timeout)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    payload = r.read()
    c.close()
    doc = None
    if payload:
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = payload
    return r.status, dict(r.getheaders()), doc


def control(addr, path, body=b""):
    c = httpc.HTTPConnection(*addr, timeout=5)
    c.request("POST" if path != "/__count" else "GET", path, body=body)
    r = c.getresponse()
    data = r.read()
    c.close()
    return data


def stock_mode(m):
    control(STOCK, "/__mode", m.encode())


def stock_count():
    return int(control(STOCK, "/__count"))


# ----------------------------------------------------------------------------- the service

class Service:
    def __init__(self, db):
        self.db = db
        self.proc = None
        self.log = open(os.path.join(BASE, "service.log"), "ab")

    def start(self, wait=True):
        env = dict(os.environ, PORT=str(PORT), DATABASE_URL=PG + self.db, AMQP_URL=RMQ_PROXY,
                   STOCK_URL="http://%s:%d" % STOCK)
        self.proc = subprocess.Popen(["/usr/bin/python3", "-u", "app.py"], cwd=SERVICE_DIR,
                                     env=env, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        self.started = time.monotonic()
        if wait:
            return self.wait_ready()

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if http("GET", "/healthz", timeout=1)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None


# ----------------------------------------------------------------------------- the broker side

class Events:
    """Reads everything published to shop.events from our own queue (its own thread)."""

    def __init__(self):
        self.msgs = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.queue = "smoke." + uuid.uuid4().hex[:8]
        threading.Thread(target=self.run, daemon=True).start()
        self.ready.wait(10)

    def run(self):
        conn = pika.BlockingConnection(pika.URLParameters(RMQ_DIRECT))
        ch = conn.channel()
        ch.exchange_declare("shop.events", exchange_type="topic", durable=True, passive=True)
        ch.queue_declare(self.queue, exclusive=True)
        ch.queue_bind(self.queue, "shop.events", routing_key="purchase.*")
        self.ready.set()
        for method, props, body in ch.consume(self.queue, auto_ack=True):
            with self.lock:
                self.msgs.append((method.routing_key, props, body, time.monotonic()))

    def all(self):
        with self.lock:
            return list(self.msgs)

    def for_purchase(self, pid):
        out = []
        for rk, props, body, t in self.all():
            try:
                doc = json.loads(body)
            except ValueError:
                continue
            if doc.get("purchase_id") == pid:
                out.append((rk, props, doc, t))
        return out

    def wait_for(self, pid, n, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.for_purchase(pid)) >= n:
                break
            time.sleep(0.05)
        return self.for_purchase(pid)


class Payments:
    def __init__(self):
        self.conn = pika.BlockingConnection(pika.URLParameters(RMQ_DIRECT))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def publish(self, body, message_id=None, raw=False):
        data = body if raw else json.dumps(body).encode()
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                     message_id=message_id)
        try:
            self.ch.basic_publish("shop.events", "payment.settled", data, props, mandatory=True)
            return True
        except pika.exceptions.UnroutableError:
            return False

    def dead_count(self):
        return self.ch.queue_declare("purchases.payments.dead", passive=True).method.message_count

    def payments_depth(self):
        q = self.ch.queue_declare("purchases.payments", passive=True).method
        return q.message_count

    def close(self):
        self.conn.close()


def payment(pid, amount, event_id=None):
    eid = event_id or str(uuid.uuid4())
    return {"event_id": eid, "type": "payment.settled", "purchase_id": pid,
            "amount_cents": amount}, eid


def db_paid(db, pid):
    with psycopg2.connect(PG + db) as c, c.cursor() as cur:
        cur.execute("SELECT paid_cents FROM purchases WHERE id::text = %s", (str(pid),))
        row = cur.fetchone()
    c.close()
    return row[0] if row else None


def db_count(db):
    with psycopg2.connect(PG + db) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM purchases")
        n = cur.fetchone()[0]
    c.close()
    return n


def wait_paid(db, pid, want, timeout=5):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = db_paid(db, pid)
        if got == want:
            return got
        time.sleep(0.05)
    return got


def new_purchase(**kw):
    body = {"customer": "Amber Otter", "sku": "KB-1042", "quantity": 2, "amount_cents": 4999}
    body.update(kw)
    return body


def place(body=None):
    st, h, doc = http("POST", "/purchases", body or new_purchase())
    return st, h, doc


# ----------------------------------------------------------------------------- the checks

def check_columns(db):
    with psycopg2.connect(PG + db) as c, c.cursor() as cur:
        cur.execute("SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = 'purchases' AND column_name = 'paid_cents'")
        row = cur.fetchone()
    c.close()
    expect(row == ("bigint",), "evt-0.7", f"paid_cents is {row}")


def check_place(ev):
    print("place + read + event", flush=True)
    body = new_purchase(customer="Zoë Ünal", sku="SKU-é")
    st, h, doc = place(body)
    if not expect(st == 201, "evt-1.7", f"place answered {st} {doc}"):
        return None
    pid = doc["id"]
    expect(h.get("Location") == f"/purchases/{pid}", "evt-1.7", f"Location {h.get('Location')}")
    for k, v in body.items():
        expect(doc.get(k) == v, "evt-1.8", f"{k}: {doc.get(k)!r}")
    expect(doc.get("status") == "created" and doc.get("paid_cents") == 0, "evt-1.8", str(doc))
    st, h, got = http("GET", f"/purchases/{pid}")
    expect(st == 200 and got == doc, "evt-1.9", f"GET {st} {got}")
    evs = ev.wait_for(pid, 1)
    if expect(len(evs) == 1, "evt-3.7", f"{len(evs)} events for a placed purchase"):
        rk, props, e, _ = evs[0]
        expect(rk == "purchase.created" and e.get("type") == rk, "evt-3.3", rk)
        for k, v in body.items():
            expect(e.get(k) == v, "evt-3.4", f"event {k}: {e.get(k)!r}")
        expect(isinstance(e.get("event_id"), str) and props.message_id == e["event_id"],
               "evt-3.5", f"message_id {props.message_id} event_id {e.get('event_id')}")
        expect(props.content_type == "application/json" and props.delivery_mode == 2,
               "evt-3.6", f"{props.content_type} {props.delivery_mode}")
        expect(isinstance(e.get("occurred_at"), str), "evt-3.2", str(e))
    return pid


def check_validation(db, ev):
    print("validation", flush=True)
    ok = [("customer", "é" * 100), ("customer", "a"), ("sku", "s" * 40), ("quantity", 100),
          ("quantity", 1), ("amount_cents", 100000000), ("amount_cents", 1),
          ("customer", "😀" * 100)]
    for field, value in ok:
        st, _, doc = place(new_purchase(**{field: value}))
        expect(st == 201, {"customer": "evt-1.1", "sku": "evt-1.2", "quantity": "evt-1.3",
                           "amount_cents": "evt-1.4"}[field],
               f"{field}={str(value)[:12]}… ({len(str(value))}) answered {st}")
    bad = [("customer", "é" * 101), ("customer", ""), ("customer", 5), ("sku", "s" * 41),
           ("sku", ""), ("quantity", 101), ("quantity", 0), ("quantity", 2.5), ("quantity", "2"),
           ("quantity", True), ("quantity", 2.0), ("amount_cents", 100000001),
           ("amount_cents", 0), ("amount_cents", None)]
    time.sleep(1)  # the events of the valid ones above
    n0, s0, e0 = db_count(db), stock_count(), len(ev.all())
    for field, value in bad:
        st, h, doc = place(new_purchase(**{field: value}))
        req = {"customer": "evt-1.1", "sku": "evt-1.2", "quantity": "evt-1.3",
               "amount_cents": "evt-1.4"}[field]
        expect(st == 422, req, f"{field}={str(value)[:12]} answered {st}")
        expect(h.get("Content-Type") == "application/problem+json" and isinstance(doc, dict)
               and doc.get("status") == st, "evt-0.4", f"problem {h.get('Content-Type')} {doc}")
    for missing in ("customer", "sku", "quantity", "amount_cents"):
        b = new_purchase()
        del b[missing]
        st, _, _ = place(b)
        expect(st == 422, "evt-1.5", f"missing {missing}: {st}")
    for raw in (b"[1]", b"\"x\"", b"null", b"{", b"", b"NaN"):
        st, h, doc = http("POST", "/purchases", raw=raw)
        expect(st in (400, 422), "evt-0.4", f"body {raw!r} answered {st}")
    time.sleep(1)
    expect(db_count(db) == n0, "evt-1.6", f"rows {n0} -> {db_count(db)}")
    expect(stock_count() == s0, "evt-1.6", f"reservations {s0} -> {stock_count()}")
    expect(len(ev.all()) == e0, "evt-1.6", f"events {e0} -> {len(ev.all())}")
    for path in ("/purchases/999999999", "/purchases/abc", "/purchases/007",
                 "/purchases/99999999999999999999999", "/purchases/8c5e1f2a-0000-4000-8000-000000000000"):
        st, h, doc = http("GET", path)
        expect(st == 404, "evt-1.10", f"GET {path} answered {st}")


def check_stock(db, ev):
    print("stock refusals", flush=True)
    for mode, want, req in (("409", (409,), "evt-2.2"), ("500", (502, 503, 504), "evt-2.3"),
                            ("200", (502, 503, 504), "evt-2.3"),
                            ("slow", (502, 503, 504), "evt-2.3"),
                            ("close", (502, 503, 504), "evt-2.3")):
        stock_mode(mode)
        n0, e0 = db_count(db), len(ev.all())
        t = time.monotonic()
        st, h, doc = place(new_purchase(customer="refused " + mode))
        took = time.monotonic() - t
        expect(st in want, req, f"stock {mode}: answered {st} {doc}")
        expect(took < 3, req, f"stock {mode}: took {took:.1f}s")
        time.sleep(0.7)
        expect(db_count(db) == n0, "evt-2.4", f"stock {mode}: rows {n0} -> {db_count(db)}")
        expect(len(ev.all()) == e0, "evt-2.4", f"stock {mode}: events {e0} -> {len(ev.all())}")
    stock_mode("201")


def check_cancel(ev):
    print("cancel", flush=True)
    st, _, doc = place()
    pid = doc["id"]
    st, _, c = http("POST", f"/purchases/{pid}/cancel")
    expect(st == 200 and c.get("status") == "cancelled" and c.get("id") == pid, "evt-4.1",
           f"cancel {st} {c}")
    st2, _, c2 = http("POST", f"/purchases/{pid}/cancel")
    expect(st2 == 409, "evt-4.2", f"second cancel {st2}")
    st3, _, _ = http("POST", "/purchases/987654321/cancel")
    expect(st3 == 404, "evt-4.3", f"unknown cancel {st3}")
    st4, _, _ = http("POST", "/purchases/zzz/cancel")
    expect(st4 == 404, "evt-4.3", f"garbage cancel {st4}")
    evs = ev.wait_for(pid, 2)
    time.sleep(1)
    evs = ev.for_purchase(pid)
    expect([e[0] for e in evs] == ["purchase.created", "purchase.cancelled"], "evt-3.7",
           f"events {[e[0] for e in evs]}")
    if len(evs) == 2:
        ids = {e[2]["event_id"] for e in evs}
        expect(len(ids) == 2, "evt-3.5", "created and cancelled share an event_id")
        expect({e[1].message_id for e in evs} == ids, "evt-3.5",
               f"message_ids {[e[1].message_id for e in evs]}")
    return pid


def check_payments(db, pay):
    print("payments, duplicates, poison", flush=True)
    st, _, doc = place(new_purchase(amount_cents=10000))
    pid = doc["id"]
    p, eid = payment(pid, 2500)
    expect(pay.publish(p, eid), "evt-6.1", "payment unroutable")
    expect(wait_paid(db, pid, 2500) == 2500, "evt-6.2", f"paid {db_paid(db, pid)}")
    st, _, g = http("GET", f"/purchases/{pid}")
    expect(g.get("paid_cents") == 2500, "evt-6.2", f"API paid_cents {g.get('paid_cents')}")
    pay.publish(p, eid)  # duplicate
    pay.publish(p, eid)
    p2, eid2 = payment(pid, 100)
    pay.publish(p2, eid2)
    got = wait_paid(db, pid, 2600)
    time.sleep(1)
    got = db_paid(db, pid)
    expect(got == 2600, "evt-7.1", f"after duplicates paid {got}, want 2600")
    dead0 = pay.dead_count()
    poisons = [b"not json", b"[1,2]", json.dumps({"event_id": "", "purchase_id": pid,
                                                  "amount_cents": 5}).encode(),
               json.dumps({"event_id": 5, "purchase_id": pid, "amount_cents": 5}).encode(),
               json.dumps({"event_id": str(uuid.uuid4()), "purchase_id": pid,
                           "amount_cents": 0}).encode(),
               json.dumps({"event_id": str(uuid.uuid4()), "purchase_id": pid,
                           "amount_cents": 2.5}).encode(),
               json.dumps({"event_id": str(uuid.uuid4()), "purchase_id": pid,
                           "amount_cents": 100000001}).encode(),
               json.dumps({"event_id": str(uuid.uuid4()), "purchase_id": 987654321
                           if isinstance(pid, int) else str(uuid.uuid4()),
                           "amount_cents": 5}).encode()]
    for b in poisons:
        pay.publish(b, "poison", raw=True)
    p3, eid3 = payment(pid, 7)
    pay.publish(p3, eid3)
    expect(wait_paid(db, pid, 2607) == 2607, "evt-8.3", f"after poison paid {db_paid(db, pid)}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pay.dead_count() < dead0 + len(poisons):
        time.sleep(0.1)
    expect(pay.dead_count() == dead0 + len(poisons), "evt-8.1",
           f"dead letters {pay.dead_count() - dead0} of {len(poisons)}")
    time.sleep(0.5)
    expect(pay.payments_depth() == 0, "evt-8.1", f"{pay.payments_depth()} messages still queued")
    return pid


def check_outage_restart(svc, db, ev):
    print("broker cut, requests, SIGKILL, restore, restart", flush=True)
    control(PROXY_CTL, "/cut")
    time.sleep(0.5)
    pids = []
    for i in range(6):
        t = time.monotonic()
        st, _, doc = place(new_purchase(customer=f"outage {i}"))
        expect(st == 201 and time.monotonic() - t < 5, "evt-5.1", f"place during cut {st}")
        if st == 201:
            pids.append(doc["id"])
    for pid in pids[:4]:
        t = time.monotonic()
        st, _, _ = http("POST", f"/purchases/{pid}/cancel")
        expect(st == 200 and time.monotonic() - t < 5, "evt-5.1", f"cancel during cut {st}")
    time.sleep(1)
    expect(svc.alive(), "evt-5.2", "the service exited during the cut")
    svc.kill()
    control(PROXY_CTL, "/restore")
    svc.start(wait=False)
    t0 = time.monotonic()
    expect(svc.wait_ready(), "evt-0.5", "not healthy after restart")
    deadline = t0 + 10
    while time.monotonic() < deadline:
        if all(len(ev.for_purchase(p)) >= (2 if i < 4 else 1) for i, p in enumerate(pids)):
            break
        time.sleep(0.1)
    time.sleep(1.5)
    for i, pid in enumerate(pids):
        want = ["purchase.created", "purchase.cancelled"] if i < 4 else ["purchase.created"]
        got = [e[0] for e in ev.for_purchase(pid)]
        req = "evt-3.9" if sorted(got) == sorted(want) else "evt-5.3"
        expect(got == want, req, f"purchase {pid}: events {got}")


def check_all_once(ev):
    """No event (event_id) published twice, over the whole run."""
    seen = {}
    for rk, props, body, t in ev.all():
        eid = json.loads(body).get("event_id")
        seen[eid] = seen.get(eid, 0) + 1
    dups = {k: v for k, v in seen.items() if v > 1}
    expect(not dups, "evt-3.7", f"{len(dups)} event ids published more than once")


def check_cut_no_restart(svc, db, ev, pay):
    print("broker cut and restore, no restart", flush=True)
    st, _, doc = place()
    pid = doc["id"]
    ev.wait_for(pid, 1)
    control(PROXY_CTL, "/cut")
    time.sleep(0.5)
    st, _, _ = http("POST", f"/purchases/{pid}/cancel")
    expect(st == 200, "evt-5.1", f"cancel during cut {st}")
    control(PROXY_CTL, "/restore")
    t = time.monotonic()
    evs = ev.wait_for(pid, 2, timeout=8)
    expect([e[0] for e in evs] == ["purchase.created", "purchase.cancelled"], "evt-3.8",
           f"after restore without restart: {[e[0] for e in evs]} "
           f"({time.monotonic() - t:.1f}s)")
    p, eid = payment(pid, 42)
    time.sleep(1)
    pay.publish(p, eid)
    expect(wait_paid(db, pid, 42, timeout=8) == 42, "evt-6.2",
           f"payment after restore without restart: paid {db_paid(db, pid)}")


def check_locked_kill(svc, db, pay):
    print("locked tables, SIGKILL mid-payment, restart", flush=True)
    st, _, doc = place()
    pid = doc["id"]
    locker = psycopg2.connect(PG + db)
    cur = locker.cursor()
    cur.execute("LOCK TABLE purchases IN ACCESS EXCLUSIVE MODE")
    p, eid = payment(pid, 333)
    pay.publish(p, eid)
    time.sleep(1.5)
    svc.kill()
    locker.rollback()
    locker.close()
    svc.start()
    expect(wait_paid(db, pid, 333, timeout=6) == 333, "evt-7.3",
           f"paid after restart {db_paid(db, pid)}")
    time.sleep(1)
    expect(db_paid(db, pid) == 333, "evt-7.1", f"paid {db_paid(db, pid)}")


def main():
    db = "smoke_" + uuid.uuid4().hex[:8]
    admin = psycopg2.connect(PG + "postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {db}")
    stock_mode("201")
    svc = Service(db)
    print(f"bug={os.environ.get('INDEP_BUG', '')!r} style={os.environ.get('INDEP_STYLE', '')!r}"
          f" db={db}", flush=True)
    try:
        expect(svc.start(), "evt-0.5", "never healthy")
        ev = Events()
        pay = Payments()
        steps = [
            ("evt-0.7", lambda: check_columns(db)),
            ("evt-1.7", lambda: check_place(ev)),
            ("evt-1.5", lambda: check_validation(db, ev)),
            ("evt-2.1", lambda: check_stock(db, ev)),
            ("evt-4.1", lambda: check_cancel(ev)),
            ("evt-6.2", lambda: check_payments(db, pay)),
            ("evt-0.6", lambda: (svc.kill(), expect(svc.start(), "evt-0.6",
                                                     "not healthy after a plain restart"))),
            ("evt-5.3", lambda: check_outage_restart(svc, db, ev)),
            ("evt-7.3", lambda: check_locked_kill(svc, db, Payments())),
            ("evt-3.8", lambda: check_cut_no_restart(svc, db, ev, Payments())),
        ]
        for req, step in steps:
            try:
                step()
            except Exception as e:  # e.g. the service is gone: a check that cannot finish
                fail(req, f"check crashed: {type(e).__name__}: {e}")
                control(PROXY_CTL, "/restore")
                if not svc.alive():
                    svc.kill()
                    svc.start()
        time.sleep(1)
        check_all_once(ev)
        expect(svc.alive(), "evt-5.2", "service died")
    finally:
        svc.kill()
        control(PROXY_CTL, "/restore")
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()
    ids = sorted({r for r, _ in failures})
    print("FAILED ids:", " ".join(ids) if ids else "none", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
