"""database-indexing: four read endpoints over customers and orders, each served by an index."""

import datetime as dt
import re
import urllib.parse

import db
from common import UTC, HttpError, bug, parse_rfc3339, rfc3339, style

STATUSES = ("pending", "shipped", "delivered", "cancelled", "refunded")

TABLES = [
    """CREATE TABLE IF NOT EXISTS customers (
        id          bigint PRIMARY KEY,
        email       text NOT NULL,
        name        text NOT NULL,
        created_at  timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS orders (
        id           bigint PRIMARY KEY,
        customer_id  bigint NOT NULL REFERENCES customers (id),
        status       text NOT NULL,
        created_at   timestamptz NOT NULL,
        total_cents  bigint NOT NULL
    )""",
]


def migrations():
    m = list(TABLES)
    # 2 and 5: a customer's orders of one status, newest first, keyset-paginated.
    if bug("idx-wrong-order"):
        m.append("CREATE INDEX IF NOT EXISTS orders_status_created_customer ON orders (status, created_at, customer_id)")
    elif style("partial-index"):
        for s in STATUSES:
            m.append(
                f"CREATE INDEX IF NOT EXISTS orders_customer_{s} ON orders (customer_id, created_at, id) "
                f"WHERE status = '{s}'"
            )
    else:
        m.append("CREATE INDEX IF NOT EXISTS orders_customer_status_created ON orders (customer_id, status, created_at, id)")
    # 6: the newest orders of one status.
    m.append("CREATE INDEX IF NOT EXISTS orders_status_created ON orders (status, created_at, id)")
    # 4: the date-range report, index-only where the visibility map allows.
    m.append("CREATE INDEX IF NOT EXISTS orders_created_total ON orders (created_at) INCLUDE (total_cents)")
    # 3: email lookup ignoring case.
    if style("citext"):
        m.append("CREATE EXTENSION IF NOT EXISTS citext")
        m.append("CREATE INDEX IF NOT EXISTS customers_email_ci ON customers ((email::citext))")
    else:
        m.append("CREATE INDEX IF NOT EXISTS customers_email_lower ON customers (lower(email))")
    if bug("dup-index"):
        m.append("CREATE INDEX IF NOT EXISTS orders_status ON orders (status)")
    m.append("ANALYZE customers")
    m.append("ANALYZE orders")
    return m


ORDER_COLS = "o.id, o.customer_id, o.status, o.created_at, o.total_cents"


def order_json(r):
    return {
        "id": r[0],
        "customer_id": r[1],
        "status": r[2],
        "created_at": rfc3339(r[3]),
        "total_cents": r[4],
    }


def _limit(q, default=20, maximum=100):
    v = q.get("limit")
    if v is None or v == "":
        return default
    if not re.fullmatch(r"[0-9]{1,9}", v):
        raise HttpError(400, "limit must be a whole number from 1 to 100.")
    n = int(v)
    if n == 0:
        return default
    return min(n, maximum)


def _status(q):
    s = q.get("status")
    if s is None:
        raise HttpError(400, "The status query parameter is required.")
    if s not in STATUSES:
        raise HttpError(400, f"status must be one of {', '.join(STATUSES)}.")
    return s


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _encode_cursor(created_at, oid):
    micros = (created_at - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}_{oid}"


def _decode_cursor(c):
    m = re.fullmatch(r"(-?[0-9]{1,17})_([0-9]{1,18})", c)
    if not m:
        raise HttpError(400, "The cursor is not valid; follow the next link as it is.")
    return _EPOCH + dt.timedelta(microseconds=int(m.group(1))), int(m.group(2))


def customer_orders(req, cid):
    if not re.fullmatch(r"[0-9]{1,18}", cid):
        raise HttpError(404, f"No customer {cid!r}.")
    cid = int(cid)
    q = req.query_single(("status", "limit", "cursor", "offset"))
    status = _status(q)
    limit = _limit(q)
    if bug("offset-pagination"):
        off_raw = q.get("offset") or "0"
        if not re.fullmatch(r"[0-9]{1,9}", off_raw):
            raise HttpError(400, "offset must be a whole number.")
        off = int(off_raw)
        rows = db.fetchall(
            f"SELECT {ORDER_COLS} FROM orders o WHERE o.customer_id = %s AND o.status = %s "
            "ORDER BY o.created_at DESC, o.id DESC LIMIT %s OFFSET %s",
            (cid, status, limit + 1, off),
            route="customers.orders",
        )
        nxt = None
        if len(rows) > limit:
            nxt = f"/customers/{cid}/orders?status={status}&limit={limit}&offset={off + limit}"
        return req.reply(200, {"items": [order_json(r) for r in rows[:limit]], "next": nxt})
    cursor = q.get("cursor")
    if cursor is None:
        rows = db.fetchall(
            f"SELECT {ORDER_COLS} FROM orders o WHERE o.customer_id = %s AND o.status = %s "
            "ORDER BY o.created_at DESC, o.id DESC LIMIT %s",
            (cid, status, limit + 1),
            route="customers.orders",
        )
    else:
        at, oid = _decode_cursor(cursor)
        rows = db.fetchall(
            f"SELECT {ORDER_COLS} FROM orders o WHERE o.customer_id = %s AND o.status = %s "
            "AND (o.created_at, o.id) < (%s, %s) "
            "ORDER BY o.created_at DESC, o.id DESC LIMIT %s",
            (cid, status, at, oid, limit + 1),
            route="customers.orders",
        )
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = f"/customers/{cid}/orders?" + urllib.parse.urlencode(
            [("status", status), ("limit", str(limit)), ("cursor", _encode_cursor(last[3], last[0]))]
        )
    return req.reply(200, {"items": [order_json(r) for r in rows[:limit]], "next": nxt})


def customers_by_email(req):
    q = req.query_single(("email",))
    email = q.get("email")
    if email is None or email == "":
        raise HttpError(400, "The email query parameter is required.")
    if bug("ilike-email"):
        sql = "SELECT id, email, name FROM customers WHERE email ILIKE %s ORDER BY id"
    elif style("citext"):
        sql = "SELECT id, email, name FROM customers WHERE email::citext = %s::citext ORDER BY id"
    else:
        sql = "SELECT id, email, name FROM customers WHERE lower(email) = lower(%s) ORDER BY id"
    rows = db.fetchall(sql, (email,), route="customers.by_email")
    return req.reply(200, {"items": [{"id": r[0], "email": r[1], "name": r[2]} for r in rows]})


def orders_report(req):
    q = req.query_single(("from", "to"))
    f, t = q.get("from"), q.get("to")
    tf, tt = parse_rfc3339(f), parse_rfc3339(t)
    if tf is None or tt is None:
        raise HttpError(400, "from and to are required RFC 3339 timestamps, e.g. 2025-06-01T00:00:00Z.")
    r = db.fetchone(
        "SELECT count(*), COALESCE(sum(total_cents), 0) FROM orders "
        "WHERE created_at >= %s AND created_at < %s",
        (tf, tt),
        route="reports.orders",
    )
    return req.reply(200, {"from": f, "to": t, "orders": int(r[0]), "revenue_cents": int(r[1])})


def recent_orders(req):
    q = req.query_single(("status", "limit"))
    status = _status(q)
    limit = _limit(q)
    if bug("n-plus-one"):
        rows = db.fetchall(
            f"SELECT {ORDER_COLS} FROM orders o WHERE o.status = %s ORDER BY o.created_at DESC, o.id DESC LIMIT %s",
            (status, limit),
            route="orders.recent",
        )
        items = []
        for r in rows:
            c = db.fetchone("SELECT id, email, name FROM customers WHERE id = %s", (r[1],), route="orders.recent")
            o = order_json(r)
            o["customer"] = {"id": c[0], "email": c[1], "name": c[2]}
            items.append(o)
        return req.reply(200, {"items": items})
    rows = db.fetchall(
        f"SELECT {ORDER_COLS}, c.id, c.email, c.name FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE o.status = %s ORDER BY o.created_at DESC, o.id DESC LIMIT %s",
        (status, limit),
        route="orders.recent",
    )
    items = []
    for r in rows:
        o = order_json(r)
        o["customer"] = {"id": r[5], "email": r[6], "name": r[7]}
        items.append(o)
    return req.reply(200, {"items": items})
