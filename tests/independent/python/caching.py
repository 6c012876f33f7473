"""caching: pages with HTTP validators and conditional requests; a profile cache (cache-aside,
TTL, invalidation, single flight) in front of the slow profile service."""

import datetime as dt
import hashlib
import json
import os
import threading
import time
import urllib.parse

import db
import upstream
from common import HttpError, bug, http_date, invalid, log, parse_http_date, rfc3339, style

MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS pages (
        slug text PRIMARY KEY,
        title_json text NOT NULL,
        body_json text NOT NULL,
        version bigint NOT NULL DEFAULT 1,
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
]

PAGE_CACHE_CONTROL = "public, max-age=60"

# ---------------------------------------------------------------- entity tags


def parse_etag_list(value):
    """A list of (weak, opaque) from an If-Match / If-None-Match value, or '*'."""
    v = value.strip()
    if v == "*":
        return "*"
    tags = []
    i, n = 0, len(v)
    while i < n:
        while i < n and v[i] in " \t,":
            i += 1
        if i >= n:
            break
        weak = False
        if v.startswith("W/", i):
            weak = True
            i += 2
        if i < n and v[i] == '"':
            j = v.find('"', i + 1)
            if j < 0:
                break  # malformed: ignore the rest
            tags.append((weak, v[i + 1 : j]))
            i = j + 1
        else:  # not an entity-tag: skip to the next comma
            j = v.find(",", i)
            i = n if j < 0 else j + 1
    return tags


def strong_match(tags, current):
    if tags == "*":
        return True
    return any(not weak and op == current for weak, op in tags)


def weak_match(tags, current):
    if tags == "*":
        return True
    return any(op == current for _, op in tags)


# ---------------------------------------------------------------- pages


class Page:
    def __init__(self, row):
        self.slug, title_json, body_json, self.version, self.updated_at = row
        self.title = json.loads(title_json)
        self.body = json.loads(body_json)

    def doc(self):
        return {
            "slug": self.slug,
            "title": self.title,
            "body": self.body,
            "updated_at": rfc3339(self.updated_at),
        }

    def bytes(self):
        return json.dumps(self.doc(), ensure_ascii=False).encode("utf-8")

    def opaque(self):
        if style("version-etag"):
            return f"v{self.version}"
        return hashlib.sha256(self.bytes()).hexdigest()[:32]

    def etag(self):
        return f'"{self.opaque()}"'

    def last_modified(self):
        return http_date(self.updated_at)

    def headers(self):
        return {
            "ETag": self.etag(),
            "Last-Modified": self.last_modified(),
            "Cache-Control": PAGE_CACHE_CONTROL,
        }


def _slug(raw):
    if not raw or len(raw) > 512:
        raise HttpError(404, "No such page.")
    return raw


def validate_page(body):
    if not isinstance(body, dict):
        raise HttpError(422, "The request body must be a JSON object.", errors=[{"pointer": "", "detail": "must be a JSON object"}])
    errs = []
    title = body.get("title")
    if title is None:
        errs.append(("/title", "is required"))
    elif not isinstance(title, str) or not 1 <= len(title) <= 200:
        errs.append(("/title", "must be a string of 1 to 200 characters"))
    text = body.get("body")
    if text is None:
        errs.append(("/body", "is required"))
    elif not isinstance(text, str) or len(text) > 100_000:
        errs.append(("/body", "must be a string of at most 100000 characters"))
    if errs:
        raise invalid(errs)
    for v in (title, text):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            raise invalid([("/title" if v is title else "/body", "must be valid Unicode")])
    return title, text


PAGE_COLS = "slug, title_json, body_json, version, updated_at"


def get_page(req, slug):
    slug = _slug(slug)
    r = db.fetchone(f"SELECT {PAGE_COLS} FROM pages WHERE slug = %s", (slug,), route="pages.get")
    if r is None:
        raise HttpError(404, f"No page {slug!r}.")
    page = Page(r)
    headers = page.headers()
    if req.header("Authorization"):
        # a response to a request with credentials is that user's: never public
        headers["Cache-Control"] = "private, max-age=60"
    inm = req.header("If-None-Match")
    ims = req.header("If-Modified-Since")
    not_modified = False
    if inm is not None:
        not_modified = weak_match(parse_etag_list(inm), page.opaque())
    elif ims is not None:
        since = parse_http_date(ims)
        if since is not None:
            if bug("ims-subsecond"):
                not_modified = page.updated_at <= since
            else:
                not_modified = page.updated_at.replace(microsecond=0) <= since
    if not_modified:
        h = {"ETag": headers["ETag"], "Cache-Control": headers["Cache-Control"]}
        if bug("304-body"):
            return req.reply(304, page.doc(), headers=h, force_body=True)
        return req.reply(304, None, headers=h)
    return req.reply(200, page.bytes(), headers=headers)


def put_page(req, slug):
    slug = _slug(slug)
    req.require_json()
    title, text = validate_page(req.json())
    title_json = json.dumps(title)
    body_json = json.dumps(text)
    im_raw = req.header("If-Match")
    inm_raw = req.header("If-None-Match")
    im = parse_etag_list(im_raw) if im_raw is not None else None
    inm = parse_etag_list(inm_raw) if inm_raw is not None else None
    if bug("if-match-race"):
        return _put_page_racy(req, slug, title_json, body_json, im, inm)

    for _attempt in range(5):
        with db.transaction(route="pages.put") as cur:
            db.execute(cur, f"SELECT {PAGE_COLS} FROM pages WHERE slug = %s FOR UPDATE", (slug,), route="pages.put")
            r = cur.fetchone()
            if r is None:
                if im is not None:
                    raise HttpError(412, f"Page {slug!r} does not exist, so If-Match cannot match.")
                db.execute(
                    cur,
                    f"INSERT INTO pages (slug, title_json, body_json) VALUES (%s, %s, %s) "
                    f"ON CONFLICT (slug) DO NOTHING RETURNING {PAGE_COLS}",
                    (slug, title_json, body_json),
                    route="pages.put",
                )
                r = cur.fetchone()
                if r is None:
                    continue  # created by a concurrent PUT: evaluate against it
                page = Page(r)
                return req.reply(
                    201,
                    page.bytes(),
                    headers=dict(page.headers(), Location="/pages/" + urllib.parse.quote(slug, safe="")),
                )
            page = Page(r)
            if im is not None and not strong_match(im, page.opaque()):
                raise HttpError(412, "The page changed since you read it (If-Match does not match its current ETag); reload it and merge.", headers={"ETag": page.etag()})
            if inm is not None and weak_match(inm, page.opaque()):
                raise HttpError(412, "The page already exists (If-None-Match).", headers={"ETag": page.etag()})
            if page.title == title and page.body == text:
                return req.reply(200, page.bytes(), headers=page.headers())
            db.execute(
                cur,
                f"UPDATE pages SET title_json = %s, body_json = %s, version = version + 1, "
                f"updated_at = clock_timestamp() WHERE slug = %s RETURNING {PAGE_COLS}",
                (title_json, body_json, slug),
                route="pages.put",
            )
            page = Page(cur.fetchone())
            return req.reply(200, page.bytes(), headers=page.headers())
    raise HttpError(409, "The page is being written concurrently; retry.")


def _put_page_racy(req, slug, title_json, body_json, im, inm):
    """Planted bug: read, compare in Python, then write (no lock, no conditional UPDATE)."""
    r = db.fetchone(f"SELECT {PAGE_COLS} FROM pages WHERE slug = %s", (slug,), route="pages.put")
    if r is None:
        if im is not None:
            raise HttpError(412, "Page does not exist.")
        _, rows = db.run(
            f"INSERT INTO pages (slug, title_json, body_json) VALUES (%s, %s, %s) "
            f"ON CONFLICT (slug) DO UPDATE SET title_json = excluded.title_json, body_json = excluded.body_json, "
            f"version = pages.version + 1, updated_at = clock_timestamp() RETURNING {PAGE_COLS}",
            (slug, title_json, body_json),
            route="pages.put",
        )
        page = Page(rows[0])
        return req.reply(201, page.bytes(), headers=dict(page.headers(), Location="/pages/" + urllib.parse.quote(slug, safe="")))
    page = Page(r)
    if im is not None and not strong_match(im, page.opaque()):
        raise HttpError(412, "The page changed since you read it.")
    if inm is not None and weak_match(inm, page.opaque()):
        raise HttpError(412, "The page already exists.")
    if page.title == json.loads(title_json) and page.body == json.loads(body_json):
        return req.reply(200, page.bytes(), headers=page.headers())
    time.sleep(0.05)  # "render the page preview" between the check and the write
    _, rows = db.run(
        f"UPDATE pages SET title_json = %s, body_json = %s, version = version + 1, "
        f"updated_at = clock_timestamp() WHERE slug = %s RETURNING {PAGE_COLS}",
        (title_json, body_json, slug),
        route="pages.put",
    )
    page = Page(rows[0])
    return req.reply(200, page.bytes(), headers=page.headers())


# ---------------------------------------------------------------- profile cache


def ttl_seconds():
    try:
        return max(0.0, float(os.environ.get("CACHE_TTL_SECONDS", "60")))
    except ValueError:
        return 60.0


class NotFound(Exception):
    pass


def fetch_profile(uid):
    base = os.environ.get("PROFILES_URL")
    if not base:
        raise upstream.UpstreamError("PROFILES_URL is not set")
    status, body = upstream.call(
        "GET", base.rstrip("/") + "/profiles/" + urllib.parse.quote(uid, safe=""), timeout=10.0
    )
    if status == 404:
        raise NotFound(uid)
    if status != 200 or not isinstance(body, dict):
        raise upstream.UpstreamError(f"profile service answered {status}")
    return body


class _Flight:
    def __init__(self, version):
        self.version = version
        self.done = threading.Event()
        self.result = None
        self.error = None


class LocalCache:
    """In-process cache-aside with per-key versions and single flight."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries = {}  # key -> (profile, expires_at monotonic)
        self.versions = {}  # key -> int, bumped by every invalidation
        self.flights = {}  # key -> _Flight

    def _evict(self, now):
        if len(self.entries) > 10000:
            for k in [k for k, (_, exp) in self.entries.items() if exp <= now]:
                del self.entries[k]

    def get(self, uid):
        key = "profile:" + uid
        ttl = ttl_seconds()
        with self.lock:
            now = time.monotonic()
            hit = self.entries.get(key)
            if hit is not None and hit[1] > now:
                return hit[0]
            version = self.versions.get(key, 0)
            flight = None if bug("stampede") else self.flights.get(key)
            leader = flight is None or flight.version != version
            if leader:
                flight = _Flight(version)
                self.flights[key] = flight
        if not leader:
            if not flight.done.wait(15):
                raise upstream.UpstreamError("timed out waiting for the profile lookup")
            if flight.error is not None:
                raise flight.error
            return flight.result
        started = time.monotonic()
        try:
            profile = fetch_profile(uid)
        except Exception as ex:
            flight.error = ex
            with self.lock:
                if self.flights.get(key) is flight:
                    del self.flights[key]
            flight.done.set()
            raise
        with self.lock:
            if bug("invalidate-race") or self.versions.get(key, 0) == flight.version:
                self.entries[key] = (profile, started + ttl)
                self._evict(time.monotonic())
            if self.flights.get(key) is flight:
                del self.flights[key]
        flight.result = profile
        flight.done.set()
        return profile

    def invalidate(self, uid):
        key = "profile:" + uid
        with self.lock:
            self.versions[key] = self.versions.get(key, 0) + 1
            self.entries.pop(key, None)


class RedisCache:
    """The same cache in Redis (INDEP_STYLE=redis): a version key per user, a lock per
    (user, version), a Lua script that stores only when the version did not move."""

    STORE = (
        "if (redis.call('GET', KEYS[2]) or '0') == ARGV[2] then "
        "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return 1 end return 0"
    )
    UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

    def __init__(self, url):
        import resp

        self.r = resp.Client(url)

    def get(self, uid):
        key, vkey = "profile:" + uid, "profile-version:" + uid
        ttl_ms = int(ttl_seconds() * 1000)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            cached = self.r.call("GET", key)
            if cached is not None:
                return json.loads(cached)
            version = (self.r.call("GET", vkey) or b"0").decode()
            lock = f"lock:{key}:{version}"
            token = os.urandom(8).hex()
            if self.r.call("SET", lock, token, "NX", "PX", "5000") is not None:
                started = time.monotonic()
                try:
                    profile = fetch_profile(uid)
                    left = ttl_ms - int((time.monotonic() - started) * 1000)
                    if left > 0:
                        self.r.call("EVAL", self.STORE, "2", key, vkey, json.dumps(profile), version, str(left))
                    return profile
                finally:
                    self.r.call("EVAL", self.UNLOCK, "1", lock, token)
            # someone else is fetching: wait for its result
            for _ in range(400):
                time.sleep(0.02)
                cached = self.r.call("GET", key)
                if cached is not None:
                    return json.loads(cached)
                if self.r.call("EXISTS", lock) == 0:
                    break
        raise upstream.UpstreamError("timed out waiting for the profile lookup")

    def invalidate(self, uid):
        self.r.call("INCR", "profile-version:" + uid)
        self.r.call("DEL", "profile:" + uid)


_cache = None
_cache_lock = threading.Lock()


def cache():
    global _cache
    with _cache_lock:
        if _cache is None:
            url = os.environ.get("REDIS_URL")
            if style("redis") and url:
                _cache = RedisCache(url)
            else:
                _cache = LocalCache()
            log("profile cache:", type(_cache).__name__)
        return _cache


def _profile(uid):
    try:
        return cache().get(uid)
    except NotFound:
        raise HttpError(404, f"No profile for user {uid!r}.")
    except upstream.UpstreamError as ex:
        log("profile service failed:", ex)
        raise HttpError(502, "The profile service failed; try again.")


def bearer(req):
    h = req.header("Authorization")
    if h:
        parts = h.strip().split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1].strip():
            return parts[1].strip()
    raise HttpError(401, "Send Authorization: Bearer <token>.", headers={"WWW-Authenticate": 'Bearer realm="shop"', "Cache-Control": "no-store"})


ME_CACHE_CONTROL = "private, no-cache"


def get_public_profile(req, uid):
    if not uid:
        raise HttpError(404, "No such profile.")
    p = _profile(uid)
    return req.reply(
        200,
        {"user_id": p.get("user_id", uid), "display_name": p.get("display_name")},
        headers={"Cache-Control": "no-cache"},
    )


def get_me(req):
    uid = bearer(req)
    p = _profile(uid)
    return req.reply(200, p, headers={"Cache-Control": ME_CACHE_CONTROL, "Vary": "Authorization"})


def patch_me(req):
    uid = bearer(req)
    req.require_json(merge_patch_ok=True)
    body = req.json()
    if not isinstance(body, dict):
        raise HttpError(422, "The request body must be a JSON object.", errors=[{"pointer": "", "detail": "must be a JSON object"}])
    name = body.get("display_name")
    if name is None or not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise invalid([("/display_name", "must be a string of 1 to 100 characters")])
    base = os.environ.get("PROFILES_URL")
    try:
        if not base:
            raise upstream.UpstreamError("PROFILES_URL is not set")
        status, prof = upstream.call(
            "PATCH",
            base.rstrip("/") + "/profiles/" + urllib.parse.quote(uid, safe=""),
            {"display_name": name},
            timeout=10.0,
        )
    except upstream.UpstreamError as ex:
        log("profile service failed:", ex)
        raise HttpError(502, "The profile service failed; the change was not saved.", headers={"Cache-Control": "no-store"})
    if status == 404:
        raise HttpError(404, f"No profile for user {uid!r}.", headers={"Cache-Control": "no-store"})
    if status != 200 or not isinstance(prof, dict):
        raise HttpError(502, f"The profile service answered {status}.", headers={"Cache-Control": "no-store"})
    cache().invalidate(uid)
    return req.reply(200, prof, headers={"Cache-Control": ME_CACHE_CONTROL, "Vary": "Authorization"})
