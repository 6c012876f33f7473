#!/usr/bin/env python3
"""Hand-written self-check of app.py, written from the README before any grading (not the
grader): exercises every route and holds every answer of the five operations to the served
revision 1.1 the way the README's task 2 describes (status documented: exact, else range, else
default; media type listed; body valid as JSON Schema 2020-12 with $refs into components;
required headers present), plus the README's behaviour rules. Prints one line per failed
expectation and "N passed, N failed".

Needs jsonschema and referencing (a venv: python3 -m venv /tmp/oasv &&
/tmp/oasv/bin/pip install openapi-spec-validator), and the service running:
    PORT=18090 /usr/bin/python3 app.py &
    /tmp/oasv/bin/python smoke.py http://127.0.0.1:18090
"""

import email.utils
import http.client
import json
import random
import re
import string
import sys
import time
import urllib.parse

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18090"
U = urllib.parse.urlsplit(BASE)
passed = failed = 0


def ok(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL", what)
    return cond


def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(U.hostname, U.port, timeout=5)
    h = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, raw


# ---- the documents --------------------------------------------------------------------------
s, h, raw = call("GET", "/openapi.json")
ok(s == 200, f"GET /openapi.json -> {s}")
ok(h.get("content-type", "").split(";")[0] in (
    "application/json", "application/openapi+json", "application/vnd.oai.openapi+json"),
    f"openapi.json content-type {h.get('content-type')}")
DOC = json.loads(raw)
s10, _, raw10 = call("GET", "/openapi/1.0.json")
ok(s10 == 200, f"GET /openapi/1.0.json -> {s10}")
DOC10 = json.loads(raw10)
ok(DOC["openapi"] in ("3.1.0", "3.1.1"), "openapi 3.1")
ok(DOC["info"]["version"] == "1.1.0", "1.1 info.version")
ok(DOC10["info"]["version"] == "1.0.0", "1.0 info.version")
ok("tags" not in json.dumps(DOC10["components"]["schemas"]), "1.0 has no tags")
ok(not DOC10["paths"]["/listings/{listingId}/price"]["get"].get("deprecated"),
   "1.0 price op not deprecated")
ok(DOC["paths"]["/listings/{listingId}/price"]["get"].get("deprecated") is True,
   "1.1 price op deprecated")
op_ids = [op["operationId"] for p in DOC["paths"].values() for m, op in p.items()
          if m in ("get", "post", "put", "patch", "delete", "head", "options", "trace")]
ok(len(op_ids) == len(set(op_ids)), f"operationIds unique {op_ids}")
ok("nullable" not in json.dumps(DOC), "no 3.0 nullable")

URI = "urn:doc"


def deref(obj):
    while isinstance(obj, dict) and "$ref" in obj and obj["$ref"].startswith("#/"):
        node = DOC
        for part in obj["$ref"][2:].split("/"):
            node = node[part]
        obj = node
    return obj


def find_op(method, path):
    for tpl, item in DOC["paths"].items():
        rx = "^" + re.sub(r"\{[^}]+\}", "[^/]+", tpl) + "$"
        if re.match(rx, path) and method.lower() in item:
            return item[method.lower()]
    return None


def held(method, path, status, headers, raw, what):
    """The README's task 2 rules for one answer."""
    op = find_op(method, urllib.parse.urlsplit(path).path)
    if not ok(op is not None, f"{what}: no operation for {method} {path}"):
        return
    rs = op["responses"]
    key = str(status) if str(status) in rs else f"{str(status)[0]}XX" if f"{str(status)[0]}XX" in rs \
        else "default" if "default" in rs else None
    if not ok(key is not None, f"{what}: status {status} not documented for {op['operationId']}"):
        return
    resp = deref(rs[key])
    for name, hdr in (resp.get("headers") or {}).items():
        hdr = deref(hdr)
        if hdr.get("required"):
            ok(name.lower() in headers, f"{what}: required header {name} missing on {status}")
    if raw:
        mt = headers.get("content-type", "").split(";")[0].strip().lower()
        content = resp.get("content") or {}
        if not ok(mt in content, f"{what}: media type {mt!r} not listed for {status} "
                                 f"({list(content)})"):
            return
        schema = content[mt]["schema"]
        body = json.loads(raw)
        # validate with the document as the base so that #/components/... resolve
        doc_with = dict(DOC)
        doc_with["x-schema"] = schema
        reg = Registry().with_resource(URI, Resource(contents=doc_with,
                                                     specification=DRAFT202012))
        v = jsonschema.Draft202012Validator({"$ref": URI + "#/x-schema"}, registry=reg)
        errs = list(v.iter_errors(body))
        ok(not errs, f"{what}: body does not match schema: {[e.message for e in errs][:3]}")


def do(method, path, body=None, headers=None, what=""):
    s, h, raw = call(method, path, body, headers)
    held(method, path, s, h, raw, what or f"{method} {path}")
    return s, h, raw


def rand_title(n):
    alphabet = string.ascii_letters + " éß漢字🙂"
    return "".join(random.choice(alphabet) for _ in range(n))


# ---- task 3: a listing's life ---------------------------------------------------------------
title = rand_title(random.randint(1, 120))
s, h, raw = do("POST", "/listings", {"title": title, "price_cents": 4321, "currency": "USD"},
               what="create 1.0-style")
ok(s == 201, f"create -> {s} {raw[:200]}")
L = json.loads(raw)
ok(L["title"] == title and L["status"] == "draft" and L["tags"] == [], f"defaults {L}")
loc = h.get("location", "")
ok(urllib.parse.urlsplit(loc).path == f"/listings/{L['id']}", f"Location {loc}")
s, h, raw = do("GET", f"/listings/{L['id']}")
ok(s == 200 and json.loads(raw) == L, "read back")
s, h, raw = do("GET", "/listings?status=draft")
ok(any(i["id"] == L["id"] for i in json.loads(raw)["items"]), "in draft list")
s, h, raw = do("GET", "/listings?status=active")
ok(not any(i["id"] == L["id"] for i in json.loads(raw)["items"]), "not in active list")
s, h, raw = do("GET", f"/listings/{L['id']}/price")
ok(s == 200 and json.loads(raw) == {"price_cents": 4321, "currency": "USD"}, f"price {raw}")
dep = h.get("deprecation", "")
sun = h.get("sunset", "")
ok(re.fullmatch(r"@\d+", dep) is not None, f"Deprecation {dep!r}")
try:
    sun_t = email.utils.parsedate_to_datetime(sun).timestamp()
    ok(sun_t >= int(dep[1:] or 0) and sun_t > time.time(), f"Sunset {sun!r} after {dep}")
except (TypeError, ValueError):
    ok(False, f"Sunset {sun!r}")
s, h, raw = do("DELETE", f"/listings/{L['id']}")
ok(s == 204 and raw == b"", f"delete -> {s}")
for m, p in (("GET", f"/listings/{L['id']}"), ("DELETE", f"/listings/{L['id']}"),
             ("GET", f"/listings/{L['id']}/price")):
    s, h, raw = do(m, p, what=f"after delete {m} {p}")
    ok(s == 404, f"after delete {m} {p} -> {s}")
    if p.endswith("/price"):
        ok("deprecation" in h and "sunset" in h, "deprecation headers on the price 404")
s, h, raw = do("GET", "/listings")
ok(not any(i["id"] == L["id"] for i in json.loads(raw)["items"]), "gone from the list")

# ---- task 4: tags ---------------------------------------------------------------------------
tags = ["".join(random.choice("abcxyz🙂é") for _ in range(30)) for _ in range(10)]
s, h, raw = do("POST", "/listings", {"title": "t", "price_cents": 0, "currency": "GBP",
                                     "status": "active", "tags": tags}, what="10x30 tags")
ok(s == 201 and json.loads(raw)["tags"] == tags, f"10 tags of 30 -> {s}")
A = json.loads(raw)
s, h, raw = do("GET", "/listings?status=active")
ok(any(i["id"] == A["id"] for i in json.loads(raw)["items"]), "active in active list")

# ---- invalid bodies -------------------------------------------------------------------------
good = {"title": "ok", "price_cents": 1, "currency": "EUR"}
invalid = [
    ("not JSON", "nope"), ("array", "[]"), ("null", "null"), ("string", '"x"'),
    ("no title", {k: v for k, v in good.items() if k != "title"}),
    ("no price", {k: v for k, v in good.items() if k != "price_cents"}),
    ("no currency", {k: v for k, v in good.items() if k != "currency"}),
    ("title empty", {**good, "title": ""}), ("title 121", {**good, "title": "🙂" * 121}),
    ("title number", {**good, "title": 5}), ("price string", {**good, "price_cents": "1"}),
    ("price float", {**good, "price_cents": 1.5}), ("price -1", {**good, "price_cents": -1}),
    ("price max+1", {**good, "price_cents": 10000001}), ("price bool", {**good, "price_cents": True}),
    ("currency JPY", {**good, "currency": "JPY"}), ("currency eur", {**good, "currency": "eur"}),
    ("status sold", {**good, "status": "sold"}), ("status null", {**good, "status": None}),
    ("11 tags", {**good, "tags": ["a"] * 11}), ("tag 31", {**good, "tags": ["a" * 31]}),
    ("tag empty", {**good, "tags": [""]}), ("tag number", {**good, "tags": [1]}),
    ("tags string", {**good, "tags": "a"}), ("NaN", '{"title":"t","price_cents":NaN,"currency":"EUR"}'),
]
for what, body in invalid:
    s, h, raw = do("POST", "/listings", body, headers={"Content-Type": "application/json"},
                   what=f"invalid {what}")
    ok(s in (400, 422), f"invalid {what} -> {s}")
    ok(h.get("content-type", "").startswith("application/problem+json"), f"{what}: problem type")
    if raw:
        p = json.loads(raw)
        ok(p.get("status") == s and isinstance(p.get("type"), str) and
           isinstance(p.get("title"), str), f"{what}: problem members {p}")
valid = [
    ("title 120 astral", {**good, "title": "🙂" * 120}), ("price 0", {**good, "price_cents": 0}),
    ("price max", {**good, "price_cents": 10000000}), ("unknown member", {**good, "colour": "red"}),
    ("charset", good),
]
for what, body in valid:
    hdrs = {"Content-Type": "application/json; charset=utf-8"} if what == "charset" else None
    s, h, raw = do("POST", "/listings", body, headers=hdrs, what=f"valid {what}")
    ok(s == 201, f"valid {what} -> {s} {raw[:200]}")
for q in ("?status=sold", "?status=", "?status=draft&status=active", "?status=DRAFT"):
    s, h, raw = do("GET", "/listings" + q)
    ok(s in (400, 422), f"list {q} -> {s}")
s, h, raw = do("GET", "/listings/" + "00000000-0000-4000-8000-000000000000")
ok(s == 404, "unknown id 404")
s, h, raw = call("GET", "/healthz")
ok(s == 200, "healthz")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
