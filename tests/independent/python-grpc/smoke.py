#!/usr/bin/python3
"""The smoke client of smoke.sh: for each variant (the correct service, each style, each planted
bug) it makes a fresh copy of the template database, starts the service with grader.toml's
command, checks every README rule with a grpcio client (and one raw HTTP/2 client for the
server-side deadline), then compares the requirement ids that failed with BUGS.md's prediction.

It uses no code of the service: its messages come from a descriptor set that smoke.sh compiled
from the exercise's own shop.proto, Debian's health/reflection protos and google.rpc protos
written in smoke.sh.
"""

import datetime
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import psycopg2
from google.protobuf import descriptor_pb2, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
TMP = os.environ["SMOKE_TMP"]
PGPORT = int(os.environ["PGPORT"])
PIDFILE = os.environ["PIDFILE"]

FDS = descriptor_pb2.FileDescriptorSet.FromString(open(os.environ["SMOKE_DESCRIPTORS"], "rb").read())
M = message_factory.GetMessages(FDS.file)
EXPECTED_SHOP = next(f for f in FDS.file if f.name == "shop.proto")
Order, Customer = M["shop.v1.Order"], M["shop.v1.Customer"]
HealthReq, HealthResp = M["grpc.health.v1.HealthCheckRequest"], M["grpc.health.v1.HealthCheckResponse"]
Status, BadRequest = M["google.rpc.Status"], M["google.rpc.BadRequest"]
SERVING, NOT_SERVING = 1, 2

with open(os.path.join(HERE, "grader.toml"), "rb") as f:
    MANIFEST = tomllib.load(f)
BUILD = MANIFEST["service"].get("build", "")
COMMAND = MANIFEST["service"]["command"]
assert MANIFEST["exercises"] == ["grpc"] and "health_path" not in MANIFEST["service"]

ALL = ["grpc-0.1", "grpc-0.6", "grpc-0.7", "grpc-0.8", "grpc-1.1", "grpc-1.2", "grpc-2.1",
       "grpc-2.2", "grpc-2.3", "grpc-2.4", "grpc-3.1", "grpc-3.2", "grpc-4.1", "grpc-4.2",
       "grpc-4.3", "grpc-5.1", "grpc-5.2"]

STYLES = ["empty-tier-before-deadline", "v1alpha-only", "server-cursor", "own-additions"]
# BUGS.md's table, as (must, may); written before any bug was run
PREDICTIONS = {
    "missing-row-unknown": ({"grpc-2.1"}, {"grpc-2.4"}),
    "created-at-no-offset": ({"grpc-0.6"}, {"grpc-0.8", "grpc-5.1"}),
    "reflection-missing-health": ({"grpc-1.1"}, set()),
    "proto-int32-total": ({"grpc-1.2"}, {"grpc-0.5"}),
    "no-badrequest-details": ({"grpc-2.3"}, set()),
    "email-case-sensitive": ({"grpc-2.1"}, {"grpc-2.2"}),
    "duplicate-email-internal": ({"grpc-2.1"}, set()),
    "permission-check-missing": ({"grpc-2.1"}, {"grpc-2.2"}),
    "validate-before-auth": ({"grpc-2.2"}, set()),
    "sql-in-message": ({"grpc-2.4"}, set()),
    "deadline-ignored": ({"grpc-3.2"}, set()),
    "no-loyalty-cap": ({"grpc-3.1"}, set()),
    "loyalty-error-fails-call": ({"grpc-3.1"}, set()),
    # a race with odds that vary from run to run: 2 late OKs in about 50 tries in the first runs,
    # 0 in 60 in a later one (FINDINGS.md); so the smoke test allows it but cannot require it
    "late-ok-race": (set(), {"grpc-3.2"}),
    "health-serving-during-shutdown": ({"grpc-4.2"}, set()),
    "exit-at-once-on-sigterm": ({"grpc-4.2", "grpc-4.3"}, set()),
    "no-grace": ({"grpc-4.3"}, set()),
    "health-unknown-service-status": ({"grpc-4.1"}, set()),
    "load-all-then-stream": ({"grpc-5.2"}, set()),
    "sort-by-id": ({"grpc-5.1"}, set()),
}

A, B = 10000005, 10000010          # the customers of tokA and tokB
TOKENS = f"tokA={A}, tokB={B}"
FORBIDDEN = re.compile(r"SELECT|INSERT|UPDATE |DELETE |rpc_orders|rpc_customers|Traceback|File \"|"
                       r"\.py\b|Exception|[A-Za-z]+Error\b|psycopg|NoneType|/usr/|/work/|/tmp/")
RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def note_pid(pid):
    with open(PIDFILE, "a") as f:
        f.write(f"{pid}\n")


# ---------------------------------------------------------------------------------------------
# loyalty mock: per-customer rules, and for every request when it came and when its connection
# was closed by the service

class Mock:
    def __init__(self):
        self.rules = {}
        self.records = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), MockHandler)
        self.server.daemon_threads = True
        self.server.mock = self
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5},
                         daemon=True).start()

    def record(self, cid):
        with self.lock:
            for rec in reversed(self.records):
                if rec["cid"] == cid:
                    return dict(rec)
        return None


class MockHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        mock = self.server.mock
        m = re.fullmatch(r"/tiers/(\d+)", self.path)
        cid = int(m.group(1)) if m else None
        rule = mock.rules.get(cid, {})
        rec = {"cid": cid, "start": time.monotonic(), "closed": None, "answered": None}
        with mock.lock:
            mock.records.append(rec)
        self.close_connection = True
        if rule.get("mode") == "drop":
            return  # closes the connection without an answer
        end = rec["start"] + rule.get("delay", 0.0)
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable:
                try:
                    data = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:
                    rec["closed"] = time.monotonic()
                    return
                time.sleep(min(left, 0.05))
        body = json.dumps({"tier": rule.get("tier", "gold")}).encode()
        try:
            self.send_response(rule.get("status", 200))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            rec["closed"] = time.monotonic()
            return
        rec["answered"] = time.monotonic()
        readable, _, _ = select.select([self.connection], [], [], 5)
        if readable:
            rec["closed"] = time.monotonic()


MOCK = Mock()


# ---------------------------------------------------------------------------------------------
# the service under test

class Result:
    def __init__(self, code, resp, details, trailing, elapsed):
        self.code, self.resp, self.details, self.trailing, self.elapsed = code, resp, details, trailing, elapsed

    def __repr__(self):
        return f"{self.code.name} {self.details!r} after {self.elapsed:.2f}s"


class Service:
    def __init__(self, name, bug, styles, dbname):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INDEP_", "SMOKE_"))}
        env.update(PORT=str(self.port), DATABASE_URL=f"postgres://svc@127.0.0.1:{PGPORT}/{dbname}",
                   LOYALTY_URL=f"http://127.0.0.1:{MOCK.port}", API_TOKENS=TOKENS)
        if bug:
            env["INDEP_BUG"] = bug
        if styles:
            env["INDEP_STYLE"] = ",".join(styles)
        logdir = os.environ.get("SMOKE_LOGDIR") or TMP  # SMOKE_LOGDIR: keep the service logs
        os.makedirs(logdir, exist_ok=True)
        self.logpath = os.path.join(logdir, f"service-{name.replace(':', '-').replace(',', '+')}.log")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen(["bash", "-c", COMMAND], cwd=HERE, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        note_pid(self.proc.pid)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def unary(self, path, req, resp_cls, metadata=None, timeout=10):
        fn = self.channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=resp_cls.FromString)
        t = time.monotonic()
        try:
            resp, call = fn.with_call(req, metadata=metadata, timeout=timeout)
            return Result(grpc.StatusCode.OK, resp, "", call.trailing_metadata() or (), time.monotonic() - t)
        except grpc.RpcError as e:
            return Result(e.code(), None, e.details() or "", e.trailing_metadata() or (), time.monotonic() - t)

    def shop(self, method, resp_cls=Order, metadata=None, timeout=10, **fields):
        req = M[f"shop.v1.{method}Request"](**fields)
        return self.unary(f"/shop.v1.Shop/{method}", req, resp_cls, metadata, timeout)

    def check_health(self, service="", timeout=2):
        return self.unary("/grpc.health.v1.Health/Check", HealthReq(service=service), HealthResp,
                          timeout=timeout)

    def wait_ready(self, limit=30):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            r = self.check_health(timeout=1)
            if r.code == grpc.StatusCode.OK and r.resp.status == SERVING:
                return True
            time.sleep(0.2)
        return False

    def stop(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Report:
    def __init__(self):
        self.fails = {}
        self.passed = 0

    def check(self, req, ok, what):
        if ok:
            self.passed += 1
        else:
            self.fails.setdefault(req, []).append(what)
            print(f"    FAIL [{req}] {what}")
        return ok


# ---------------------------------------------------------------------------------------------
# the checks, one function per part of the README

def rfc3339_ok(text, ts):
    m = RFC3339.match(text or "")
    if not m:
        return False
    frac = m.group(7) or ""
    try:
        norm = text[:19].replace("t", "T") + (frac[:7] if frac else "") + \
            ("+00:00" if m.group(8) in "Zz" else m.group(8))
        parsed = datetime.datetime.fromisoformat(norm)
    except ValueError:
        return False
    precision = 10 ** -(len(frac) - 1) if frac else 1
    return abs((parsed - ts).total_seconds()) < precision


def part_reflection(svc, R):
    version = None
    for v in ("v1", "v1alpha"):
        req_cls = M[f"grpc.reflection.{v}.ServerReflectionRequest"]
        resp_cls = M[f"grpc.reflection.{v}.ServerReflectionResponse"]
        fn = svc.channel.stream_stream(f"/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=resp_cls.FromString)
        try:
            resps = list(fn(iter([req_cls(list_services=""),
                                  req_cls(file_containing_symbol="shop.v1.Shop"),
                                  req_cls(file_containing_symbol="no.such.Symbol")]), timeout=5))
            version = v
            break
        except grpc.RpcError as e:
            if v == "v1" and e.code() == grpc.StatusCode.UNIMPLEMENTED:
                continue
            R.check("grpc-1.1", False, f"reflection {v}: {e.code().name} {e.details()}")
            return
    if version is None:
        R.check("grpc-1.1", False, "neither v1 nor v1alpha reflection")
        return
    if not R.check("grpc-1.1", len(resps) == 3, f"3 answers on one stream, got {len(resps)}"):
        return
    names = {s.name for s in resps[0].list_services_response.service}
    R.check("grpc-1.1", {"shop.v1.Shop", "grpc.health.v1.Health"} <= names,
            f"list_services names Shop and Health: {sorted(names)}")
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in resps[1].file_descriptor_response.file_descriptor_proto]
    by_name = {f.name: f for f in files}
    missing = {d for f in files for d in f.dependency if d not in by_name}
    R.check("grpc-1.1", files and not missing,
            f"file_containing_symbol shop.v1.Shop comes with its dependencies (missing {sorted(missing)})")
    R.check("info", resps[2].WhichOneof("message_response") == "error_response",
            "an unknown symbol gets error_response")
    # grpc-1.2: what reflection describes is shop.proto
    messages, services = {}, {}

    def walk(prefix, msgs):
        for m in msgs:
            messages[f"{prefix}.{m.name}"] = m
            walk(f"{prefix}.{m.name}", m.nested_type)
    for f in files:
        walk(f.package, f.message_type)
        for s in f.service:
            services[f"{f.package}.{s.name}"] = s
    shop = services.get("shop.v1.Shop")
    if not R.check("grpc-1.2", shop is not None, "reflection describes service shop.v1.Shop"):
        return
    methods = {m.name: m for m in shop.method}
    for em in EXPECTED_SHOP.service[0].method:
        got = methods.get(em.name)
        R.check("grpc-1.2", got is not None and
                (got.input_type, got.output_type, got.client_streaming, got.server_streaming) ==
                (em.input_type, em.output_type, em.client_streaming, em.server_streaming),
                f"method {em.name} as in shop.proto")
    for emsg in EXPECTED_SHOP.message_type:
        got = messages.get(f"shop.v1.{emsg.name}")
        if not R.check("grpc-1.2", got is not None, f"message {emsg.name}"):
            continue
        fields = {fd.name: fd for fd in got.field}
        for ef in emsg.field:
            gf = fields.get(ef.name)
            R.check("grpc-1.2", gf is not None and
                    (gf.number, gf.type, gf.label, gf.type_name) == (ef.number, ef.type, ef.label, ef.type_name),
                    f"field {emsg.name}.{ef.name} = {ef.number} ({descriptor_pb2.FieldDescriptorProto.Type.Name(ef.type)}); "
                    f"got {(gf.number, descriptor_pb2.FieldDescriptorProto.Type.Name(gf.type)) if gf else None}")
    print(f"    reflection {version}: {len(files)} file(s) {sorted(by_name)}")


def part_reads(svc, R, db):
    with db.cursor() as cur:
        cur.execute("SELECT id, customer_id, status, total_cents, created_at FROM rpc_orders "
                    "ORDER BY id LIMIT 1 OFFSET 777")
        row = cur.fetchone()
        cur.execute("SELECT id, email, name FROM rpc_customers WHERE id = %s", (A,))
        cust = cur.fetchone()
    r = svc.shop("GetOrder", id=row[0])
    if R.check("grpc-0.6", r.code == grpc.StatusCode.OK, f"GetOrder {row[0]}: {r}"):
        o = r.resp
        R.check("grpc-0.6", (o.id, o.customer_id, o.status, o.total_cents) == row[:4],
                f"GetOrder fields {(o.id, o.customer_id, o.status, o.total_cents)} vs {row[:4]}")
        R.check("grpc-0.6", rfc3339_ok(o.created_at, row[4]),
                f"GetOrder created_at {o.created_at!r} is RFC 3339 and {row[4].isoformat()}")
    MOCK.rules[A] = {"tier": "gold"}
    r = svc.shop("GetCustomer", Customer, id=A)
    if R.check("grpc-0.6", r.code == grpc.StatusCode.OK, f"GetCustomer {A}: {r}"):
        c = r.resp
        R.check("grpc-0.6", (c.id, c.email, c.name) == cust, f"GetCustomer fields {(c.id, c.email, c.name)}")
        R.check("grpc-3.1", c.loyalty_tier == "gold", f"loyalty_tier 'gold', got {c.loyalty_tier!r}")


def part_writes(svc, R, db):
    email = f"New.Person{random.randrange(10**6)}@Example.org"
    r = svc.shop("CreateCustomer", Customer, email=email, name="New Person")
    if R.check("grpc-0.7", r.code == grpc.StatusCode.OK, f"CreateCustomer: {r}"):
        c = r.resp
        R.check("grpc-0.7", c.id > 0 and c.email == email and c.name == "New Person", f"answer {c}")
        with db.cursor() as cur:
            cur.execute("SELECT email, name FROM rpc_customers WHERE id = %s", (c.id,))
            R.check("grpc-0.7", cur.fetchone() == (email, "New Person"), "the row is in rpc_customers")
    long_email = "x" * (254 - len("@example.org")) + "@example.org"
    r = svc.shop("CreateCustomer", Customer, email=long_email, name="N" * 100)
    R.check("grpc-0.7", r.code == grpc.StatusCode.OK, f"email of 254 and name of 100 characters: {r}")
    for total in (1234, 1, 1_000_000):
        r = svc.shop("PlaceOrder", metadata=[("authorization", "Bearer tokA")], customer_id=A,
                     total_cents=total)
        if not R.check("grpc-0.8", r.code == grpc.StatusCode.OK, f"PlaceOrder total {total}: {r}"):
            continue
        o = r.resp
        R.check("grpc-0.8", (o.customer_id, o.status, o.total_cents) == (A, "pending", total),
                f"answer {(o.customer_id, o.status, o.total_cents)}")
        with db.cursor() as cur:
            cur.execute("SELECT customer_id, status, total_cents, created_at, now() FROM rpc_orders "
                        "WHERE id = %s", (o.id,))
            row = cur.fetchone()
        if R.check("grpc-0.8", row is not None and row[:3] == (A, "pending", total), f"row {row}"):
            R.check("grpc-0.8", abs((row[4] - row[3]).total_seconds()) < 10, "created_at is now")
            R.check("grpc-0.6", rfc3339_ok(o.created_at, row[3]), f"PlaceOrder created_at {o.created_at!r}")


def check_details(R, r, fields, label):
    raw = [v for k, v in r.trailing if k == "grpc-status-details-bin"]
    if not R.check("grpc-2.3", len(raw) == 1, f"{label}: grpc-status-details-bin present"):
        return
    st = Status.FromString(raw[0])
    R.check("grpc-2.3", st.code == 3 and st.message == r.details,
            f"{label}: Status code {st.code} and message {st.message!r} == {r.details!r}")
    ok = len(st.details) == 1 and st.details[0].type_url.endswith("/google.rpc.BadRequest")
    if not R.check("grpc-2.3", ok, f"{label}: one google.rpc.BadRequest in details"):
        return
    br = BadRequest.FromString(st.details[0].value)
    got = sorted(v.field for v in br.field_violations)
    R.check("grpc-2.3", got == sorted(fields) and all(v.description for v in br.field_violations),
            f"{label}: violations {got}, expected {sorted(fields)}")


def counts(db):
    with db.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM rpc_orders), (SELECT count(*) FROM rpc_customers)")
        return cur.fetchone()


def part_errors(svc, R, db):
    IA, NF, AE = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS
    UA, PD = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    with db.cursor() as cur:
        cur.execute("SELECT email FROM rpc_customers WHERE id = %s", (B,))
        taken = cur.fetchone()[0]
    auth = [("authorization", "Bearer tokA")]
    ok_name = "Someone"
    cases = [  # req, method, fields, metadata, expected code, BadRequest fields
        ("grpc-2.1", "GetOrder", dict(id=0), None, IA, ["id"]),
        ("grpc-2.1", "GetOrder", dict(id=-5), None, IA, ["id"]),
        ("grpc-2.1", "GetCustomer", dict(id=0), None, IA, ["id"]),
        ("grpc-2.1", "GetOrder", dict(id=99999999), None, NF, None),
        ("grpc-2.1", "GetCustomer", dict(id=99999999), None, NF, None),
        ("grpc-2.1", "CreateCustomer", dict(email="no-at.example.com", name=ok_name), None, IA, ["email"]),
        ("grpc-2.1", "CreateCustomer", dict(email="a@b@example.com", name=ok_name), None, IA, ["email"]),
        ("grpc-2.1", "CreateCustomer", dict(email="@example.com", name=ok_name), None, IA, ["email"]),
        ("grpc-2.1", "CreateCustomer", dict(email="someone@", name=ok_name), None, IA, ["email"]),
        ("grpc-2.1", "CreateCustomer", dict(email="", name=ok_name), None, IA, ["email"]),
        ("grpc-2.1", "CreateCustomer", dict(email="y" * 243 + "@example.com", name=ok_name), None, IA, ["email"]),
        ("grpc-2.1", "CreateCustomer", dict(email="fresh1@example.com", name=""), None, IA, ["name"]),
        ("grpc-2.1", "CreateCustomer", dict(email="fresh2@example.com", name="n" * 101), None, IA, ["name"]),
        ("grpc-2.1", "CreateCustomer", dict(email="bad", name=""), None, IA, ["email", "name"]),
        ("grpc-2.1", "CreateCustomer", dict(email=taken, name=ok_name), None, AE, None),
        ("grpc-2.1", "CreateCustomer", dict(email=taken.upper(), name=ok_name), None, AE, None),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=A, total_cents=100), None, UA, None),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=A, total_cents=100), [("authorization", "tokA")], UA, None),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=A, total_cents=100), [("authorization", "Token tokA")], UA, None),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=A, total_cents=100), [("authorization", "Bearer nope")], UA, None),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=A, total_cents=100), [("authorization", "Bearer ")], UA, None),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=A, total_cents=0), auth, IA, ["total_cents"]),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=A, total_cents=-3), auth, IA, ["total_cents"]),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=A, total_cents=1_000_001), auth, IA, ["total_cents"]),
        ("grpc-2.1", "PlaceOrder", dict(customer_id=B, total_cents=100), auth, PD, None),
        # several mistakes: the first in UNAUTHENTICATED, INVALID_ARGUMENT, PERMISSION_DENIED, ...
        ("grpc-2.2", "PlaceOrder", dict(customer_id=B, total_cents=0), None, UA, None),
        ("grpc-2.2", "PlaceOrder", dict(customer_id=B, total_cents=0), [("authorization", "Bearer nope")], UA, None),
        ("grpc-2.2", "PlaceOrder", dict(customer_id=B, total_cents=0), auth, IA, ["total_cents"]),
        ("grpc-2.2", "PlaceOrder", dict(customer_id=99999999, total_cents=5), auth, PD, None),
        ("grpc-2.2", "CreateCustomer", dict(email=taken.upper(), name=""), None, IA, ["name"]),
    ]
    before = counts(db)
    for req, method, fields, md, code, bad in cases:
        resp_cls = Customer if method in ("GetCustomer", "CreateCustomer") else Order
        label = f"{method}({', '.join(f'{k}={str(v)[:20]!r}' for k, v in fields.items())}"
        label += f", auth={md[0][1]!r})" if md else ")"
        r = svc.shop(method, resp_cls, metadata=md, **fields)
        R.check(req, r.code == code, f"{label}: {code.name}, got {r}")
        if r.code != grpc.StatusCode.OK:
            R.check("grpc-2.4", r.details and not FORBIDDEN.search(r.details),
                    f"{label}: message {r.details!r} says what was wrong, no SQL/exception text")
        if bad and r.code == IA:
            check_details(R, r, bad, label)
    after = counts(db)
    R.check("grpc-2.2", before == after, f"refused calls changed nothing (orders, customers) {before} -> {after}")
    # racing creates of one email in different cases: exactly one wins
    email = f"Race{random.randrange(10**6)}@Example.net"
    variants = [email, email.lower(), email.upper(), email.swapcase(), email, email.lower()]
    results = [None] * len(variants)

    def create(i):
        results[i] = svc.shop("CreateCustomer", Customer, email=variants[i], name="Racer")
    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(variants))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.code.name for r in results)
    R.check("grpc-2.1", codes.count("OK") == 1 and codes.count("ALREADY_EXISTS") == len(variants) - 1,
            f"6 racing CreateCustomer of one email in different cases: {codes}")


def part_loyalty(svc, R):
    cases = [(10000101, {"status": 500}, ""), (10000102, {"mode": "drop"}, ""),
             (10000103, {"delay": 3.5}, ""), (10000104, {"tier": "silver", "delay": 0.3}, "silver"),
             (10000105, {"status": 404}, "")]
    for cid, rule, tier in cases:
        MOCK.rules[cid] = rule
        r = svc.shop("GetCustomer", Customer, id=cid, timeout=15)
        ok = r.code == grpc.StatusCode.OK and r.resp.id == cid and r.resp.loyalty_tier == tier
        R.check("grpc-3.1", ok, f"GetCustomer with loyalty {rule}: OK tier {tier!r}, got {r}"
                f"{' tier ' + repr(r.resp.loyalty_tier) if r.resp else ''}")
        if rule.get("delay", 0) > 2:
            R.check("grpc-3.1", r.elapsed <= 2.6, f"loyalty slower than 2 s: answered after {r.elapsed:.2f}s")
    # a deadline that leaves the loyalty service enough time
    MOCK.rules[10000106] = {"delay": 0.4, "tier": "bronze"}
    r = svc.shop("GetCustomer", Customer, id=10000106, timeout=1.8)
    R.check("grpc-3.1", r.code == grpc.StatusCode.OK and r.resp.loyalty_tier == "bronze",
            f"deadline 1.8 s, loyalty answers after 0.4 s: bronze, got {r}")


def wait_closed(cid, since, limit):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        rec = MOCK.record(cid)
        if rec and rec["closed"]:
            return rec["closed"] - since
        time.sleep(0.05)
    rec = MOCK.record(cid)
    return None if rec is None or rec["closed"] is None else rec["closed"] - since


def h2_call(port, path, payload, grpc_timeout, wait=5.0):
    """A raw HTTP/2 call that sends grpc-timeout but does not enforce it: what the server does."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    t0 = time.monotonic()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
                            ("te", "trailers"), ("grpc-timeout", grpc_timeout)])
    conn.send_data(sid, b"\x00" + len(payload).to_bytes(4, "big") + payload, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, ended, data, buf, seen = None, None, b"", b"", []

    def frames(chunk):
        # fed to h2 one frame at a time, so that an error on one frame (h2 refuses an RST_STREAM
        # that follows a GOAWAY, or any frame after its stream's END_STREAM) keeps the events of
        # the frames before it; such a frame is then judged from its 9-byte header alone
        nonlocal buf, ended
        buf += chunk
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = 9 + int.from_bytes(buf[:3], "big")
            frame, buf = buf[:n], buf[n:]
            ftype, flags, fsid = frame[3], frame[4], int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
            seen.append((ftype, flags, fsid))
            try:
                yield from conn.receive_data(frame)
            except h2.exceptions.ProtocolError as exc:
                if ended is None and fsid == sid and ftype == 0x3:
                    ended = ("reset", time.monotonic() - t0)
                elif ended is None and fsid == sid and ftype in (0x0, 0x1) and flags & 0x1:
                    ended = ("end (unparsed)", time.monotonic() - t0)
                elif ended is None:
                    ended = (f"h2 error {exc!r}, frames {seen}", time.monotonic() - t0)
                return
    try:
        while ended is None and time.monotonic() - t0 < wait:
            sock.settimeout(max(0.05, wait - (time.monotonic() - t0)))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                ended = ("eof", time.monotonic() - t0)
                break
            for ev in frames(chunk):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    for k, v in ev.headers:
                        if k == "grpc-status":
                            status = int(v)
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = ("end", time.monotonic() - t0)
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    ended = ("reset", time.monotonic() - t0)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    finally:
        sock.close()
    if os.environ.get("SMOKE_H2_DEBUG"):
        print(f"    h2 frames (type, flags, stream): {seen}")
    return status, ended, data, t0


def part_deadline(svc, R, repeat=3):
    # repeated: an answer ready at the deadline itself races grpc-core's DEADLINE_EXCEEDED, and a
    # late OK shows only in some tries
    for i in range(repeat):
        cid = 10000107 + 10 * i
        MOCK.rules[cid] = {"delay": 3.0}
        t0 = time.monotonic()
        r = svc.shop("GetCustomer", Customer, id=cid, timeout=1.0)
        late = r.code == grpc.StatusCode.OK and r.elapsed >= 1.0
        R.check("grpc-3.2", (r.code == grpc.StatusCode.DEADLINE_EXCEEDED and r.elapsed <= 1.5) or
                (r.code == grpc.StatusCode.OK and not late and r.resp.loyalty_tier == ""),
                f"deadline 1 s, loyalty answers after 3 s: {r}")
        closed = wait_closed(cid, t0, 3.0)
        print(f"    deadline 1 s: {r}; loyalty connection closed at {closed if closed is None else round(closed, 2)} s")
        R.check("grpc-3.2", closed is not None and closed <= 1.5,
                f"loyalty connection closed {closed if closed is None else round(closed, 2)} s after the call "
                f"started (deadline 1 s)")
        # the same, from a client that does not enforce the deadline itself
        cid = 10000108 + 10 * i
        MOCK.rules[cid] = {"delay": 3.0}
        payload = M["shop.v1.GetCustomerRequest"](id=cid).SerializeToString()
        status, ended, data, t0 = h2_call(svc.port, "/shop.v1.Shop/GetCustomer", payload, "1000m")
        R.check("grpc-3.2", ended is not None and ended[0].startswith(("end", "reset")) and ended[1] <= 1.5
                and (status != 0 or ended[1] < 1.0),
                f"raw HTTP/2, grpc-timeout 1000m: the server ended the call: {ended}, grpc-status {status}")
        closed = wait_closed(cid, t0, 3.0)
        print(f"    raw HTTP/2 grpc-timeout 1000m: ended {ended}, grpc-status {status}; loyalty closed at "
              f"{closed if closed is None else round(closed, 2)} s")
        R.check("grpc-3.2", closed is not None and closed <= 1.5,
                f"raw HTTP/2: loyalty connection closed {closed if closed is None else round(closed, 2)} s "
                f"after the call started")


def part_health(svc, R):
    for service in ("", "shop.v1.Shop"):
        r = svc.check_health(service)
        R.check("grpc-4.1", r.code == grpc.StatusCode.OK and r.resp.status == SERVING,
                f"Check({service!r}) SERVING: {r} {r.resp}")
    for service in ("shop.v1.Nope", "grpc.health.v1.Health", "x"):
        r = svc.check_health(service)
        R.check("grpc-4.1", r.code == grpc.StatusCode.NOT_FOUND, f"Check({service!r}) NOT_FOUND: {r}")


def expected_ids(db, status=""):
    with db.cursor() as cur:
        if status:
            cur.execute("SELECT id FROM rpc_orders WHERE status = %s ORDER BY created_at DESC, id DESC", (status,))
        else:
            cur.execute("SELECT id FROM rpc_orders ORDER BY created_at DESC, id DESC")
        return [r[0] for r in cur.fetchall()]


def list_orders(svc, status="", timeout=60, options=None):
    channel = svc.channel if options is None else grpc.insecure_channel(f"127.0.0.1:{svc.port}", options=options)
    fn = channel.unary_stream("/shop.v1.Shop/ListOrders", request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=Order.FromString)
    return channel, fn(M["shop.v1.ListOrdersRequest"](status=status), timeout=timeout)


def part_list(svc, R, db):
    for status in ("", "shipped"):
        want = expected_ids(db, status)
        _, it = list_orders(svc, status)
        try:
            got = [o for o in it]
        except grpc.RpcError as e:
            R.check("grpc-5.1", False, f"ListOrders({status!r}): {e.code().name} {e.details()}")
            continue
        ids = [o.id for o in got]
        first_bad = next((i for i, (a, b) in enumerate(zip(ids, want)) if a != b), None)
        R.check("grpc-5.1", ids == want, f"ListOrders({status!r}): {len(ids)} orders, expected {len(want)}"
                f"{'' if first_bad is None else f'; first difference at #{first_bad}'}")
        if status:
            R.check("grpc-5.1", all(o.status == status for o in got), "only that status")
        with db.cursor() as cur:
            cur.execute("SELECT id, created_at FROM rpc_orders WHERE id = ANY(%s)", ([o.id for o in got[:40]],))
            times = dict(cur.fetchall())
        R.check("grpc-0.6", all(rfc3339_ok(o.created_at, times.get(o.id)) for o in got[:40]),
                f"ListOrders created_at RFC 3339, e.g. {got[0].created_at if got else None!r}")


def rows_read(admin):
    with admin.cursor() as cur:
        cur.execute("SELECT coalesce(sum(s.rows), 0) FROM pg_stat_statements s "
                    "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() "
                    "AND s.userid = 'svc'::regrole AND (s.query ILIKE '%%rpc_orders%%' OR s.query ILIKE 'fetch%%')")
        return int(cur.fetchone()[0])


def reset_stats(admin):
    with admin.cursor() as cur:
        cur.execute("SELECT pg_stat_statements_reset()")


WINDOW_64K = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 65535)]


def part_backpressure(svc, R, db, admin):
    want = expected_ids(db)
    reset_stats(admin)
    channel, it = list_orders(svc, timeout=60, options=WINDOW_64K)
    try:
        got = [next(it).id for _ in range(20)]
        time.sleep(3.0)
        paused = rows_read(admin)
        got += [next(it).id for _ in range(1500)]
        R.check("grpc-5.1", got == want[:len(got)], "a slow reader gets the same order")
        time.sleep(1.0)
        it.cancel()
        time.sleep(1.0)
        after1 = rows_read(admin)
        time.sleep(2.0)
        after2 = rows_read(admin)
    except (grpc.RpcError, StopIteration) as e:
        R.check("grpc-5.2", False, f"slow reader: {e!r}")
        channel.close()
        return
    channel.close()
    print(f"    rows read: {paused} while the reader paused after 20, {after1} 1 s after cancel, {after2} 3 s after")
    R.check("grpc-5.2", paused <= 5000, f"rows read while the reader paused after 20 messages: {paused}")
    R.check("grpc-5.2", after2 == after1 and after1 <= 7000, f"no page read 1 s after cancel: {after1} -> {after2}")
    # the deadline passes while the reader does not read
    reset_stats(admin)
    channel, it = list_orders(svc, timeout=2.0, options=WINDOW_64K)
    try:
        for _ in range(10):
            next(it)
    except grpc.RpcError as e:
        R.check("grpc-5.2", False, f"deadline stream: {e.code().name}")
    time.sleep(3.0)
    after1 = rows_read(admin)
    time.sleep(2.0)
    after2 = rows_read(admin)
    channel.close()
    print(f"    deadline 2 s, reader stopped after 10: {after1} rows at deadline+1 s, {after2} at +3 s")
    R.check("grpc-5.2", after1 <= 5000 and after2 == after1,
            f"deadline passed while not reading: {after1} -> {after2} rows")


def part_shutdown(svc, R):
    cid = 10000109
    MOCK.rules[cid] = {"delay": 1.9, "tier": "platinum"}
    inflight = {}

    def run():
        inflight["r"] = svc.shop("GetCustomer", Customer, id=cid, timeout=15)
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.25)
    t_sig = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    flipped = None
    while time.monotonic() - t_sig < 0.8:
        a, b = svc.check_health("", timeout=0.3), svc.check_health("shop.v1.Shop", timeout=0.3)
        if all(r.code == grpc.StatusCode.OK and r.resp.status == NOT_SERVING for r in (a, b)):
            flipped = time.monotonic() - t_sig
            break
        time.sleep(0.05)
    R.check("grpc-4.2", flipped is not None and flipped <= 0.5,
            f"Check NOT_SERVING within 0.5 s of SIGTERM: {flipped if flipped is None else round(flipped, 2)} "
            f"(last: {a} {a.resp} / {b} {b.resp})")
    while time.monotonic() - t_sig < 0.95:
        time.sleep(0.02)
    a = svc.check_health("", timeout=1)
    R.check("grpc-4.2", a.code == grpc.StatusCode.OK and a.resp.status == NOT_SERVING,
            f"Check at +0.95 s answers NOT_SERVING: {a} {a.resp}")
    r = svc.shop("GetOrder", id=10000000 + 1234, timeout=2)
    R.check("grpc-4.2", r.code == grpc.StatusCode.OK, f"a new call at +0.95 s is answered: {r}")
    t.join(15)
    r = inflight.get("r")
    R.check("grpc-4.3", r is not None and r.code == grpc.StatusCode.OK and r.resp.loyalty_tier == "platinum",
            f"the call running at SIGTERM (loyalty answers after 1.9 s) finishes normally: {r} "
            f"{r.resp.loyalty_tier if r and r.resp else ''}")
    try:
        rc = svc.proc.wait(timeout=max(0.1, 10.0 - (time.monotonic() - t_sig)))
        took = time.monotonic() - t_sig
    except subprocess.TimeoutExpired:
        rc, took = None, None
    # the README's "exit with status 0 within 10 s" bullet has no id of its own: counted as 4.3
    R.check("grpc-4.3", rc == 0, f"exit status 0 within 10 s of SIGTERM: status {rc} after "
            f"{took if took is None else round(took, 2)} s")
    if took is not None:
        print(f"    exited {took:.2f} s after SIGTERM with status {rc}")


# ---------------------------------------------------------------------------------------------

def admin_connect(dbname):
    conn = psycopg2.connect(host="127.0.0.1", port=PGPORT, user="postgres", dbname=dbname)
    conn.autocommit = True
    return conn


def run_variant(n, name):
    bug = name[4:] if name.startswith("bug:") else ""
    styles = name[6:].split(",") if name.startswith("style:") else []
    dbname = f"v{n}"
    root = admin_connect("postgres")
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE {dbname} TEMPLATE shop_tpl OWNER svc")
    print(f"\n== {name}")
    R = Report()
    svc = Service(name, bug, styles, dbname)
    admin = admin_connect(dbname)
    try:
        if not R.check("grpc-0.1", svc.wait_ready(), "Health/Check('') answers SERVING within 30 s"):
            for req in ALL:
                R.check(req, False, "service not ready")
            return R
        parts = [("grpc-1.1", lambda: part_reflection(svc, R)),
                 ("grpc-0.6", lambda: part_reads(svc, R, admin)),
                 ("grpc-0.7", lambda: part_writes(svc, R, admin)),
                 ("grpc-2.1", lambda: part_errors(svc, R, admin)),
                 ("grpc-3.1", lambda: part_loyalty(svc, R)),
                 ("grpc-3.2", lambda: part_deadline(svc, R, int(os.environ.get("SMOKE_DEADLINE_REPEAT") or (30 if bug == "late-ok-race" else 3)))),
                 ("grpc-4.1", lambda: part_health(svc, R)),
                 ("grpc-5.1", lambda: part_list(svc, R, admin)),
                 ("grpc-5.2", lambda: part_backpressure(svc, R, admin, admin)),
                 ("grpc-4.2", lambda: part_shutdown(svc, R))]
        for req, part in parts:
            try:
                part()
            except Exception as exc:  # noqa: BLE001 - a broken part fails its requirement
                R.check(req, False, f"smoke part crashed: {exc!r}")
    finally:
        svc.stop()
        admin.close()
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        root.close()
    return R


def main(args):
    if BUILD:
        subprocess.run(["bash", "-c", BUILD], cwd=HERE, check=True)
    variants = []
    for a in args or ["all"]:
        if a in ("all", "correct"):
            variants.append("correct")
        if a in ("all", "styles"):
            variants += [f"style:{s}" for s in STYLES] + ["style:" + ",".join(STYLES)]
        if a in ("all", "bugs"):
            variants += [f"bug:{b}" for b in PREDICTIONS]
        if a.startswith(("style:", "bug:")):
            variants.append(a)
    rows = []
    for n, name in enumerate(variants):
        R = run_variant(n, name)
        failed = {k for k in R.fails if k != "info"}
        must, may = PREDICTIONS.get(name[4:], (set(), set())) if name.startswith("bug:") else (set(), set())
        verdict = "as predicted" if must <= failed <= must | may else "NOT as predicted"
        rows.append((name, must, may, failed, verdict))
        print(f"   {R.passed} checks passed; failing: {sorted(failed) or '-'} -> {verdict}"
              f"{'  (info: ' + '; '.join(R.fails['info']) + ')' if 'info' in R.fails else ''}")
    print("\n| variant | predicted (must) | predicted (may) | observed failing | verdict |")
    print("|---|---|---|---|---|")
    short = lambda s: ", ".join(x.replace("grpc-", "") for x in sorted(s)) or "-"  # noqa: E731
    for name, must, may, failed, verdict in rows:
        print(f"| {name} | {short(must)} | {short(may)} | {short(failed)} | {verdict} |")
    bad = [r for r in rows if r[4] != "as predicted"]
    print(f"\n{len(rows) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
