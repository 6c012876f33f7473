"""idempotency: POST /payments with Idempotency-Key, GET /payments/{id}."""

import hashlib
import json
import os
import re
import uuid

import db
import upstream
from common import HttpError, bug, int_in_range, invalid, log, rfc3339

MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS payments (
        id uuid PRIMARY KEY,
        client_id text NOT NULL,
        order_id text NOT NULL,
        amount_cents bigint NOT NULL,
        currency text NOT NULL,
        status text NOT NULL,
        charge_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    # One row per (client, key): claimed before the provider is called.
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        client_id text NOT NULL,
        key text NOT NULL,
        fingerprint text NOT NULL,
        state text NOT NULL,                 -- in_flight | done
        response_status int,
        response_body text,
        response_location text,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        UNIQUE (client_id, key)
    )""",
    # Only used by the planted check-then-insert bug: the same table without the constraint.
    """CREATE TABLE IF NOT EXISTS idempotency_keys_racy (
        client_id text NOT NULL,
        key text NOT NULL,
        fingerprint text NOT NULL,
        state text NOT NULL,
        response_status int,
        response_body text,
        response_location text,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
]

CURRENCY_RE = re.compile(r"[A-Z]{3}")
KEY_RE = re.compile(r"[!-~]{1,%d}" % (256 if bug("idem-key-256") else 255))
SF_STRING_RE = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')

TABLE = "idempotency_keys_racy" if bug("idem-check-then-insert") else "idempotency_keys"


def client_id(req):
    cid = (req.header("X-Client-Id") or "").strip()
    if not cid:
        if bug("idem-missing-client-ok"):
            return "anonymous"
        raise HttpError(401, "Send an X-Client-Id header naming your client.", headers={"WWW-Authenticate": 'ClientId realm="payments"'})
    return cid


def parse_key(values):
    if not values:
        raise HttpError(400, "POST /payments requires an Idempotency-Key header: without it a retry cannot be recognised.")
    if len(values) > 1:
        raise HttpError(400, "Send exactly one Idempotency-Key header.")
    raw = values[0].strip(" \t")
    key = raw
    if not bug("idem-quoted-distinct"):
        m = SF_STRING_RE.fullmatch(raw)
        if m:
            key = re.sub(r"\\(.)", r"\1", m.group(1))
    if not KEY_RE.fullmatch(key):
        raise HttpError(400, "The Idempotency-Key must be 1 to 255 characters of visible ASCII (! to ~), without spaces.")
    return key


def validate(body):
    if not isinstance(body, dict):
        raise HttpError(422, "The request body must be a JSON object.", errors=[{"pointer": "", "detail": "must be a JSON object"}])
    errs = []
    oid = body.get("order_id")
    if oid is None:
        errs.append(("/order_id", "is required"))
    elif not isinstance(oid, str) or not 1 <= len(oid) <= 100:
        errs.append(("/order_id", "must be a string of 1 to 100 characters"))
    elif "\x00" in oid or any(0xD800 <= ord(c) <= 0xDFFF for c in oid):
        errs.append(("/order_id", "must not contain NUL or unpaired surrogates"))
    amt = body.get("amount_cents")
    if amt is None:
        errs.append(("/amount_cents", "is required"))
    else:
        ok, d = int_in_range(amt, 1, 100_000_000)
        if not ok:
            errs.append(("/amount_cents", d))
    cur = body.get("currency")
    if cur is None:
        errs.append(("/currency", "is required"))
    elif not isinstance(cur, str) or not CURRENCY_RE.fullmatch(cur):
        errs.append(("/currency", "must be three upper-case letters, e.g. EUR"))
    if errs:
        raise invalid(errs)


def fingerprint(body):
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()


def _payment_json(r):
    return {
        "id": str(r[0]),
        "order_id": r[1],
        "amount_cents": r[2],
        "currency": r[3],
        "status": r[4],
        "charge_id": r[5],
        "created_at": rfc3339(r[6]),
    }


def _replay(req, row):
    status, body, location = row
    headers = {"Idempotent-Replayed": "true"}
    if location:
        headers["Location"] = location
    return req.reply(status, json.loads(body), headers=headers)


def _claim(cid, key, fp):
    """True when this request now owns the key; otherwise the stored row."""
    if bug("idem-check-then-insert"):
        row = db.fetchone(
            f"SELECT fingerprint, state, response_status, response_body, response_location FROM {TABLE} "
            "WHERE client_id = %s AND key = %s LIMIT 1",
            (cid, key),
            route="payments.claim",
        )
        if row is None:
            db.run(
                f"INSERT INTO {TABLE} (client_id, key, fingerprint, state) VALUES (%s, %s, %s, 'in_flight')",
                (cid, key, fp),
                route="payments.claim",
            )
            return True, None
        return False, row
    _, rows = db.run(
        f"INSERT INTO {TABLE} (client_id, key, fingerprint, state) VALUES (%s, %s, %s, 'in_flight') "
        "ON CONFLICT (client_id, key) DO NOTHING RETURNING 1",
        (cid, key, fp),
        route="payments.claim",
    )
    if rows:
        return True, None
    row = db.fetchone(
        f"SELECT fingerprint, state, response_status, response_body, response_location FROM {TABLE} "
        "WHERE client_id = %s AND key = %s",
        (cid, key),
        route="payments.claim",
    )
    if row is None:  # released between our insert and our read: try once more
        return _claim(cid, key, fp)
    return False, row


def _release(cid, key):
    db.run(f"DELETE FROM {TABLE} WHERE client_id = %s AND key = %s AND state = 'in_flight'", (cid, key), route="payments.release")


def create(req):
    cid = client_id(req)
    key = parse_key(req.header_all("Idempotency-Key"))
    req.require_json()
    body = req.json()
    validate(body)  # a 422 is not remembered: the client may fix the body and retry
    fp = fingerprint(body)
    scope = "*" if bug("idem-no-client-scope") else cid

    owned, row = _claim(scope, key, fp)
    if not owned:
        stored_fp, state, status, rbody, location = row
        if stored_fp != fp:
            raise HttpError(
                422,
                "This Idempotency-Key was already used with a different request body; "
                "use a new key for a new payment.",
                may_be_400=True,
            )
        if state != "done":
            raise HttpError(
                409,
                "A request with this Idempotency-Key is still being processed; retry later.",
                headers={"Retry-After": "1"},
            )
        return _replay(req, (status, rbody, location))

    # We own the key: charge, then store the answer.
    base = os.environ.get("PAYMENTS_URL")
    try:
        if not base:
            raise upstream.UpstreamError("PAYMENTS_URL is not set")
        status, charge = upstream.call(
            "POST",
            base.rstrip("/") + "/charges",
            {"order_id": body["order_id"], "amount_cents": body["amount_cents"], "currency": body["currency"]},
            timeout=5.0,
        )
        if not 200 <= status < 300 or not isinstance(charge, dict) or not isinstance(charge.get("id"), str):
            raise upstream.UpstreamError(f"provider answered {status}")
    except upstream.UpstreamError as ex:
        log("payment provider failed:", ex)
        err = HttpError(502, "The payment provider failed or did not answer in time; nothing was charged. Retry with the same Idempotency-Key.")
        if bug("idem-store-failure"):
            db.run(
                f"UPDATE {TABLE} SET state = 'done', response_status = 502, response_body = %s "
                "WHERE client_id = %s AND key = %s",
                (json.dumps(err.problem()), scope, key),
                route="payments.store",
            )
        else:
            _release(scope, key)
        raise err
    except BaseException:
        _release(scope, key)
        raise

    pay_id = str(uuid.uuid4())
    try:
        with db.transaction(route="payments.store") as cur:
            db.execute(
                cur,
                "INSERT INTO payments (id, client_id, order_id, amount_cents, currency, status, charge_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "RETURNING id, order_id, amount_cents, currency, status, charge_id, created_at",
                (pay_id, cid, body["order_id"], body["amount_cents"], body["currency"], "succeeded", charge["id"]),
                route="payments.store",
            )
            payment = _payment_json(cur.fetchone())
            location = f"/payments/{pay_id}"
            db.execute(
                cur,
                f"UPDATE {TABLE} SET state = 'done', response_status = 201, response_body = %s, "
                "response_location = %s WHERE client_id = %s AND key = %s",
                (json.dumps(payment), location, scope, key),
                route="payments.store",
            )
    except BaseException:
        _release(scope, key)
        raise
    return req.reply(201, payment, headers={"Location": location})


UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def read(req, pid):
    cid = client_id(req)
    if not UUID_RE.fullmatch(pid):
        raise HttpError(404, f"No payment with id {pid!r}.")
    r = db.fetchone(
        "SELECT id, order_id, amount_cents, currency, status, charge_id, created_at FROM payments "
        "WHERE id = %s AND client_id = %s",
        (pid.lower(), cid),
        route="payments.read",
    )
    if r is None:
        raise HttpError(404, f"No payment with id {pid}.")
    return req.reply(200, _payment_json(r))
