"""api-design (the product catalogue) and pagination (GET /products)."""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import urllib.parse
import uuid

import db
from common import (
    HttpError,
    bug,
    has_control,
    has_lone_surrogate,
    int_in_range,
    invalid,
    rfc3339,
    style,
)

MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS products (
        id uuid PRIMARY KEY,
        sku text NOT NULL UNIQUE,
        name text NOT NULL,
        description_json text,            -- the JSON encoding of the string (any code point)
        price_cents bigint NOT NULL,
        category text,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    "CREATE INDEX IF NOT EXISTS products_category_created ON products (category, created_at, id)",
    "CREATE INDEX IF NOT EXISTS products_category_price ON products (category, price_cents, id)",
    "CREATE INDEX IF NOT EXISTS products_created ON products (created_at, id)",
    "CREATE INDEX IF NOT EXISTS products_price ON products (price_cents, id)",
]

COLS = "id, sku, name, description_json, price_cents, category, created_at, updated_at"

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
SKU_RE = re.compile(r"[A-Z0-9-]{3,64}")
CATEGORY_RE = re.compile(r"[a-z0-9-]{1,64}")

DEFAULT_LIMIT = 25  # "choose it": not the usual 20
MAX_LIMIT = 100


def row_to_product(r):
    return {
        "id": str(r[0]),
        "sku": r[1],
        "name": r[2],
        "description": None if r[3] is None else json.loads(r[3]),
        "price_cents": r[4],
        "category": r[5],
        "created_at": rfc3339(r[6]),
        "updated_at": rfc3339(r[7]),
    }


# ---------------------------------------------------------------- validation


def _sku_ok(v):
    return isinstance(v, str) and SKU_RE.fullmatch(v) is not None


def validate_product(body):
    """Validate a full representation (POST, PUT, or the result of a merge patch)."""
    if not isinstance(body, dict):
        raise HttpError(422, "The request body must be a JSON object.", errors=[{"pointer": "", "detail": "must be a JSON object"}], may_be_400=True)
    errs = []
    sku = body.get("sku")
    if "sku" not in body or sku is None:
        errs.append(("/sku", "is required"))
    elif not _sku_ok(sku):
        errs.append(("/sku", "must be 3 to 64 characters of A-Z, 0-9 and -"))

    name = body.get("name")
    max_name = 201 if bug("name-201") else 200
    if "name" not in body or name is None:
        errs.append(("/name", "is required"))
    elif not isinstance(name, str):
        errs.append(("/name", "must be a string"))
    elif has_lone_surrogate(name):
        errs.append(("/name", "must be valid Unicode"))
    elif not 1 <= len(name) <= max_name:
        errs.append(("/name", "must be 1 to 200 characters"))
    elif has_control(name) and not bug("name-control-chars"):
        errs.append(("/name", "must not contain control characters"))

    desc = body.get("description")
    if desc is not None:
        if not isinstance(desc, str):
            errs.append(("/description", "must be a string or null"))
        elif has_lone_surrogate(desc):
            errs.append(("/description", "must be valid Unicode"))
        elif len(desc) > 2000:
            errs.append(("/description", "must be at most 2000 characters"))

    if "price_cents" not in body or body["price_cents"] is None:
        errs.append(("/price_cents", "is required"))
    else:
        ok, detail = int_in_range(body["price_cents"], 0, 100_000_000)
        if not ok:
            errs.append(("/price_cents", detail))

    cat = body.get("category")
    if cat is not None and not (isinstance(cat, str) and CATEGORY_RE.fullmatch(cat)):
        errs.append(("/category", "must be null or 1 to 64 characters of a-z, 0-9 and -"))

    if errs:
        raise invalid(errs, may_be_400=True)
    return {
        "sku": sku,
        "name": name,
        "description": desc,
        "price_cents": int(body["price_cents"]),
        "category": cat,
    }


def merge_patch(target, patch):
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            if bug("patch-null-ignored"):
                continue
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _check_id(pid):
    if bug("bad-uuid-500"):
        return pid  # handed to PostgreSQL as it is
    if not UUID_RE.fullmatch(pid):
        raise HttpError(404, f"No product with id {pid!r}: not a valid product id.")
    return pid.lower()


def _not_found(pid):
    return HttpError(404, f"No product with id {pid}.")


def _dup_sku(sku):
    return HttpError(
        409,
        f"A product with SKU {sku} already exists.",
        errors=[{"pointer": "/sku", "detail": "is already taken"}],
    )


# ---------------------------------------------------------------- handlers


def create(req):
    req.require_json()
    p = validate_product(req.json())
    pid = str(uuid.uuid4())
    desc = None if p["description"] is None else json.dumps(p["description"])
    try:
        _, rows = db.run(
            f"INSERT INTO products (id, sku, name, description_json, price_cents, category) "
            f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {COLS}",
            (pid, p["sku"], p["name"], desc, p["price_cents"], p["category"]),
            route="products.create",
        )
    except db.UniqueViolation:
        raise _dup_sku(p["sku"])
    prod = row_to_product(rows[0])
    return req.reply(201, prod, headers={"Location": f"/products/{prod['id']}"})


def read(req, pid):
    pid = _check_id(pid)
    try:
        r = db.fetchone(f"SELECT {COLS} FROM products WHERE id = %s", (pid,), route="products.read")
    except db.psycopg2.DataError:
        if bug("bad-uuid-500"):
            raise HttpError(500, "Something went wrong on our side.")
        raise
    if r is None:
        raise _not_found(pid)
    return req.reply(200, row_to_product(r))


def replace(req, pid):
    pid = _check_id(pid)
    req.require_json()
    p = validate_product(req.json())
    desc = None if p["description"] is None else json.dumps(p["description"])
    try:
        n, rows = db.run(
            f"UPDATE products SET sku = %s, name = %s, description_json = %s, price_cents = %s, "
            f"category = %s, updated_at = clock_timestamp() WHERE id = %s RETURNING {COLS}",
            (p["sku"], p["name"], desc, p["price_cents"], p["category"], pid),
            route="products.replace",
        )
        if not rows and bug("put-unknown-creates"):
            _, rows = db.run(
                f"INSERT INTO products (id, sku, name, description_json, price_cents, category) "
                f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {COLS}",
                (pid, p["sku"], p["name"], desc, p["price_cents"], p["category"]),
                route="products.replace",
            )
            prod = row_to_product(rows[0])
            return req.reply(201, prod, headers={"Location": f"/products/{prod['id']}"})
    except db.UniqueViolation:
        raise _dup_sku(p["sku"])
    except db.psycopg2.DataError:
        if bug("bad-uuid-500"):
            raise HttpError(500, "Something went wrong on our side.")
        raise
    if not rows:
        raise _not_found(pid)
    return req.reply(200, row_to_product(rows[0]))


def patch(req, pid):
    pid = _check_id(pid)
    req.require_json(merge_patch_ok=True)
    body = req.json()
    if not isinstance(body, dict):
        raise HttpError(422, "A merge patch for a product must be a JSON object.", errors=[{"pointer": "", "detail": "must be a JSON object"}], may_be_400=True)
    try:
        with db.transaction(route="products.patch") as cur:
            db.execute(cur, f"SELECT {COLS} FROM products WHERE id = %s FOR UPDATE", (pid,), route="products.patch")
            r = cur.fetchone()
            if r is None:
                raise _not_found(pid)
            current = row_to_product(r)
            doc = {k: current[k] for k in ("sku", "name", "description", "price_cents", "category")}
            merged = merge_patch(doc, body)
            p = validate_product(merged)
            if all(p[k] == doc[k] for k in doc):
                return req.reply(200, current)
            desc = None if p["description"] is None else json.dumps(p["description"])
            db.execute(
                cur,
                f"UPDATE products SET sku = %s, name = %s, description_json = %s, price_cents = %s, "
                f"category = %s, updated_at = clock_timestamp() WHERE id = %s RETURNING {COLS}",
                (p["sku"], p["name"], desc, p["price_cents"], p["category"], pid),
                route="products.patch",
            )
            r = cur.fetchone()
    except db.UniqueViolation:
        raise _dup_sku(body.get("sku"))
    except db.psycopg2.DataError:
        if bug("bad-uuid-500"):
            raise HttpError(500, "Something went wrong on our side.")
        raise
    return req.reply(200, row_to_product(r))


def delete(req, pid):
    pid = _check_id(pid)
    try:
        n, _ = db.run("DELETE FROM products WHERE id = %s", (pid,), route="products.delete")
    except db.psycopg2.DataError:
        if bug("bad-uuid-500"):
            raise HttpError(500, "Something went wrong on our side.")
        raise
    if n == 0:
        raise _not_found(pid)
    return req.reply(204, None)


# ---------------------------------------------------------------- pagination

_SECRET = os.urandom(32)
_B64_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def _b64e(b):
    if bug("cursor-std-base64"):
        return base64.b64encode(b).decode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _b64d(s):
    if bug("cursor-std-base64"):
        return base64.b64decode(s, validate=True)
    if not _B64_ALPHABET.fullmatch(s) or len(s) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _sign(payload):
    return hmac.new(_SECRET, payload, hashlib.sha256).digest()[:18]


def _list_fingerprint(sort, category, lo, hi):
    text = json.dumps([sort, category, lo, hi])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(sort, fp, last):
    if sort == "-created_at":
        key = last["_created_at_iso"]
    else:
        key = last["price_cents"]
    doc = {"v": 1, "s": sort, "f": fp, "k": key}
    if not bug("cursor-no-tiebreak"):
        doc["i"] = last["id"]
    payload = json.dumps(doc, separators=(",", ":")).encode()
    return _b64e(payload) + "." + _b64e(_sign(payload))


def decode_cursor(text, sort, fp):
    bad = HttpError(400, "The cursor is not valid: send back the next_cursor of a page unchanged.")
    try:
        p, s = text.split(".")
        payload, sig = _b64d(p), _b64d(s)
    except (ValueError, binascii.Error):
        raise bad
    if not hmac.compare_digest(sig, _sign(payload)):
        raise bad
    try:
        doc = json.loads(payload)
    except ValueError:
        raise bad
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise bad
    if doc.get("s") != sort or doc.get("f") != fp:
        raise HttpError(
            400,
            "This cursor belongs to a list with other filters or another sort; "
            "start again from the first page of this list.",
        )
    return doc


def _int_param(q, name, minimum=None):
    v = q.get(name)
    if v is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,15}", v):
        raise HttpError(400, f"Query parameter {name} must be a whole number.", errors=[{"pointer": f"?{name}", "detail": "must be a whole number"}])
    n = int(v)
    if minimum is not None and n < minimum:
        raise HttpError(400, f"Query parameter {name} must be at least {minimum}.", errors=[{"pointer": f"?{name}", "detail": f"must be at least {minimum}"}])
    return n


def list_products(req):
    q = req.query_single(("limit", "cursor", "sort", "category", "min_price_cents", "max_price_cents"))
    limit_raw = q.get("limit")
    if limit_raw is None:
        limit = DEFAULT_LIMIT
    else:
        if not re.fullmatch(r"[0-9]{1,18}", limit_raw):
            raise HttpError(400, "limit must be a whole number from 0 to 100 (0 means the default).", errors=[{"pointer": "?limit", "detail": "must be a non-negative whole number"}])
        limit = int(limit_raw)
        if limit == 0:
            limit = 0 if bug("limit-zero-empty") else DEFAULT_LIMIT
        elif limit > MAX_LIMIT:
            if style("refuse-limit"):
                raise HttpError(400, f"limit must be at most {MAX_LIMIT}.", errors=[{"pointer": "?limit", "detail": f"must be at most {MAX_LIMIT}"}])
            limit = MAX_LIMIT
    sort = q.get("sort") or "-created_at"
    if sort not in ("-created_at", "price_cents"):
        raise HttpError(400, "sort must be -created_at or price_cents.", errors=[{"pointer": "?sort", "detail": "must be -created_at or price_cents"}])
    category = q.get("category")
    lo = _int_param(q, "min_price_cents")
    hi = _int_param(q, "max_price_cents")
    fp = _list_fingerprint(sort, category, lo, hi)

    conds, params = [], []
    if category is not None:
        conds.append("category = %s")
        params.append(category)
    if lo is not None:
        conds.append("price_cents >= %s")
        params.append(lo)
    if hi is not None:
        conds.append("price_cents < %s" if bug("max-price-exclusive") else "price_cents <= %s")
        params.append(hi)
    cur = q.get("cursor")
    if cur is not None:
        doc = decode_cursor(cur, sort, fp)
        try:
            if sort == "-created_at":
                key = doc["k"]
                if not isinstance(key, str):
                    raise TypeError
                if bug("cursor-no-tiebreak"):
                    conds.append("created_at < %s::timestamptz")
                    params.append(key)
                else:
                    uuid.UUID(doc["i"])
                    conds.append("(created_at, id) < (%s::timestamptz, %s::uuid)")
                    params += [key, doc["i"]]
            else:
                key = doc["k"]
                if not isinstance(key, int):
                    raise TypeError
                if bug("cursor-no-tiebreak"):
                    conds.append("price_cents > %s")
                    params.append(key)
                else:
                    uuid.UUID(doc["i"])
                    conds.append("(price_cents, id) > (%s, %s::uuid)")
                    params += [key, doc["i"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise HttpError(400, "The cursor is not valid.")
    order = "created_at DESC, id DESC" if sort == "-created_at" else "price_cents ASC, id ASC"
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    rows = db.fetchall(
        f"SELECT {COLS} FROM products {where} ORDER BY {order} LIMIT %s",
        tuple(params) + (limit + 1,),
        route="products.list",
    )
    if bug("has-more-full-page"):
        page = rows[:limit]
        has_more = limit > 0 and len(page) == limit
    else:
        page = rows[:limit]
        has_more = len(rows) > limit
    items = []
    for r in page:
        p = row_to_product(r)
        items.append(p)
    body = {"items": items, "next_cursor": None, "has_more": has_more}
    headers = {}
    if has_more and page:
        last = row_to_product(page[-1])
        last["_created_at_iso"] = page[-1][6].isoformat()
        token = encode_cursor(sort, fp, last)
        body["next_cursor"] = token
        link_q = []
        if category is not None:
            link_q.append(("category", category))
        if lo is not None:
            link_q.append(("min_price_cents", str(lo)))
        if hi is not None:
            link_q.append(("max_price_cents", str(hi)))
        link_q.append(("sort", sort))
        link_q.append(("limit", str(limit)))
        link_q.append(("cursor", token))
        url = "/products?" + urllib.parse.urlencode(link_q, safe="-_.~")
        headers["Link"] = f'<{url}>; rel="next"'
    return req.reply(200, body, headers=headers)
