"""An independent notes service for the `security` exercise, written from its README alone.

Debian's /usr/bin/python3 with the standard library, psycopg2, PyJWT (+ cryptography) and
argon2-cffi. Environment: PORT (and HOST), DATABASE_URL, AUTH_ISSUER_URL, AUTH_AUDIENCE,
ALLOWED_ORIGIN. INDEP_BUG=<name> switches on one planted bug, INDEP_STYLE=<name>[,<name>] an
unusual but correct design: see BUGS.md.
"""

import base64
import collections
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import queue
import re
import secrets
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

import argon2
import jwt
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUG = os.environ.get("INDEP_BUG", "").strip()
STYLES = {s.strip() for s in os.environ.get("INDEP_STYLE", "").split(",") if s.strip()}


def bug(name):
    return BUG == name


def style(name):
    return name in STYLES


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


ISSUER = os.environ.get("AUTH_ISSUER_URL", "")
AUDIENCE = os.environ.get("AUTH_AUDIENCE", "notes-api")
ALLOWED_ORIGIN = os.environ.get("ALLOWED_ORIGIN", "")

MAX_BODY = 65536
CLOCK_SKEW = 300 if bug("skew-300") else 60
JWKS_TTL = 300.0  # seconds a fetched key set is trusted before it is fetched again
UNKNOWN_KID_MIN_INTERVAL = 1.0  # at most one fetch a second triggered by an unknown kid
LOGIN_WINDOW = 5.0
LOGIN_MAX = 5

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status, detail, headers=None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def problem(self):
        return {"type": "about:blank", "title": TITLES.get(self.status, "Error"), "status": self.status, "detail": self.detail}


# ---------------------------------------------------------------- database


class Pool:
    def __init__(self, dsn, size=16):
        self.dsn = dsn
        self.idle = queue.LifoQueue()
        self.sem = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def conn(self):
        if not self.sem.acquire(timeout=30):
            raise HttpError(503, "The service is busy; try again.")
        conn = None
        try:
            try:
                conn = self.idle.get_nowait()
            except queue.Empty:
                conn = psycopg2.connect(self.dsn)
                conn.autocommit = True
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            raise
        finally:
            if conn is not None and not conn.closed:
                if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                self.idle.put(conn)
            self.sem.release()


POOL = None


def query(sql, params=None):
    with POOL.conn() as conn:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []


def migrate():
    id_type = "text" if bug("counter-ids") else "uuid"
    query(
        f"""CREATE TABLE IF NOT EXISTS notes (
            id {id_type} PRIMARY KEY,
            owner_id text NOT NULL,
            title text NOT NULL,
            body text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )"""
    )
    query("CREATE INDEX IF NOT EXISTS notes_owner_created ON notes (owner_id, created_at DESC, id DESC)")
    query(
        """CREATE TABLE IF NOT EXISTS accounts (
            username text PRIMARY KEY,
            password_hash text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )"""
    )


# ---------------------------------------------------------------- identity provider keys


class KeyFetchError(Exception):
    pass


def http_get_json(url):
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status != 200:
                raise KeyFetchError(f"{url} answered {r.status}")
            return json.loads(r.read(1 << 20))
    except (urllib.error.URLError, OSError, ValueError) as ex:
        raise KeyFetchError(f"{url}: {ex}")


def key_from_jwk(jwk):
    """(alg, public key object) for a signing key we accept, or None. The algorithm follows
    from the key (its type and curve), never from a token."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
        return None
    if jwk.get("use") not in (None, "sig"):
        return None
    kty = jwk.get("kty")
    if kty == "RSA":
        alg = "RS256"
        algo = RSAAlgorithm
    elif kty == "EC" and jwk.get("crv") == "P-256":
        alg = "ES256"
        algo = ECAlgorithm
    else:
        return None
    if jwk.get("alg") not in (None, alg):
        return None
    try:
        key = algo.from_jwk(json.dumps(jwk))
    except Exception:
        return None
    if hasattr(key, "public_key") and not hasattr(key, "verify"):
        key = key.public_key()  # a JWK with private members: keep only the public half
    return alg, key


class KeyStore:
    def __init__(self, issuer):
        self.issuer = issuer
        self.lock = threading.Lock()
        self.keys = {}
        self.fetched_at = None  # monotonic time of the last successful fetch
        self.jwks_uri = None

    def _fetch(self):
        if self.jwks_uri is None:
            doc = http_get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
            if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
                raise KeyFetchError("the discovery document has no jwks_uri")
            self.jwks_uri = uri
        data = http_get_json(self.jwks_uri)
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeyFetchError("the key set has no keys")
        keys = {}
        for jwk in data["keys"]:
            k = key_from_jwk(jwk)
            if k is not None:
                keys[jwk["kid"]] = k
        self.keys = keys
        self.fetched_at = time.monotonic()
        log(f"fetched the issuer's key set: {len(keys)} signing keys")

    def _fresh(self, now):
        return self.fetched_at is not None and now - self.fetched_at < JWKS_TTL

    def get(self, kid):
        """(alg, key) for kid, fetching the key set when it is stale or the kid is unknown."""
        now = time.monotonic()
        if not bug("no-cache") and self._fresh(now) and kid in self.keys:
            return self.keys[kid]
        with self.lock:
            now = time.monotonic()
            if bug("no-cache"):
                self._fetch()
                return self.keys.get(kid)
            if self._fresh(now):
                if kid in self.keys:
                    return self.keys[kid]
                if bug("no-refetch"):
                    return None
                if now - self.fetched_at < UNKNOWN_KID_MIN_INTERVAL:
                    return None
            try:
                self._fetch()
            except KeyFetchError as ex:
                log("could not fetch the issuer's keys:", ex)
                if kid in self.keys:  # stale but better than nothing
                    return self.keys[kid]
                raise HttpError(503, "The identity provider's keys are unavailable; try again.")
            return self.keys.get(kid)

    def all(self):
        """Every known key (planted bugs only), fetching the set once if it never was."""
        if self.fetched_at is None:
            with self.lock:
                if self.fetched_at is None:
                    try:
                        self._fetch()
                    except KeyFetchError:
                        pass
        return dict(self.keys)


KEYS = KeyStore(ISSUER)


class InvalidToken(Exception):
    pass


def _b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _claims_unverified(token):
    """Planted bugs only: read the claims, checking everything but the signature."""
    return jwt.decode(
        token,
        options={"verify_signature": False, "verify_exp": True, "verify_nbf": True, "verify_iss": True, "verify_aud": True,
                 "require": ["exp", "iss", "aud", "sub"]},
        audience=AUDIENCE,
        issuer=ISSUER,
        leeway=CLOCK_SKEW,
    )


def _hs256_with_public_key(token, header):
    """INDEP_BUG=alg-hs256: an HS256 token is checked with the issuer's public key as secret."""
    signing_input, _, sig = token.rpartition(".")
    candidates = []
    keys = KEYS.all()
    kid = header.get("kid")
    entries = [keys[kid]] if isinstance(kid, str) and kid in keys else list(keys.values())
    for entry in entries:
        pub = entry[1]
        for fmt in (serialization.PublicFormat.SubjectPublicKeyInfo,):
            pem = pub.public_bytes(serialization.Encoding.PEM, fmt)
            candidates += [pem, pem.rstrip(b"\n"), pub.public_bytes(serialization.Encoding.DER, fmt)]
        if entry[0] == "RS256":
            candidates.append(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1))
    try:
        want = _b64url_decode(sig)
    except Exception:
        raise InvalidToken("signature")
    for secret in candidates:
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        if hmac.compare_digest(mac, want):
            return _claims_unverified(token)
    raise InvalidToken("signature")


def verify_token(token):
    """The claims of a valid access token; raises InvalidToken(short reason) otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed token")
    alg = header.get("alg")
    kid = header.get("kid")
    try:
        if bug("alg-none") and isinstance(alg, str) and alg.lower() == "none":
            return _claims_unverified(token)
        if bug("alg-hs256") and alg == "HS256":
            return _hs256_with_public_key(token, header)
        if alg not in ("RS256", "ES256"):
            raise InvalidToken("algorithm not accepted")
        if not isinstance(kid, str):
            raise InvalidToken("no key id")
        entry = KEYS.get(kid)
        if entry is None and bug("kid-fallback") and KEYS.all():
            entry = next((e for e in KEYS.all().values() if e[0] == alg), None)
        if entry is None:
            raise InvalidToken("unknown key id")
        key_alg, key = entry
        if alg != key_alg:
            raise InvalidToken("algorithm does not match the key")
        options = {"require": ["exp", "iss", "aud", "sub"]}
        if bug("no-aud"):
            options["verify_aud"] = False
            options["require"] = [c for c in options["require"] if c != "aud"]
        if bug("no-iss"):
            options["verify_iss"] = False
            options["require"] = [c for c in options["require"] if c != "iss"]
        if bug("no-exp"):
            options["verify_exp"] = False
            options["require"] = [c for c in options["require"] if c != "exp"]
        if bug("no-nbf"):
            options["verify_nbf"] = False
        return jwt.decode(
            token,
            key,
            algorithms=[key_alg],
            audience=None if bug("no-aud") else AUDIENCE,
            issuer=None if bug("no-iss") else ISSUER,
            leeway=CLOCK_SKEW,
            options=options,
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired")
    except jwt.ImmatureSignatureError:
        raise InvalidToken("token not valid yet")
    except jwt.InvalidAudienceError:
        raise InvalidToken("wrong audience")
    except jwt.InvalidIssuerError:
        raise InvalidToken("wrong issuer")
    except jwt.MissingRequiredClaimError:
        raise InvalidToken("a required claim is missing")
    except jwt.InvalidSignatureError:
        raise InvalidToken("bad signature")
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidToken("invalid token")


def authenticate(req):
    """The caller's claims. 401 with WWW-Authenticate when there is no valid bearer token."""
    auth = req.header("Authorization")
    if auth is None:
        raise HttpError(401, "This route needs an access token (Authorization: Bearer <token>).",
                        {"WWW-Authenticate": "Bearer"})
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise HttpError(401, "Send the access token as Authorization: Bearer <token>.", {"WWW-Authenticate": "Bearer"})
    token = token.strip()
    challenge = "Bearer" if bug("www-auth-no-error") else 'Bearer error="invalid_token"'
    try:
        claims = verify_token(token)
    except InvalidToken as ex:
        raise HttpError(401, f"The access token is not valid ({ex}).", {"WWW-Authenticate": challenge})
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise HttpError(401, "The access token is not valid (no subject).", {"WWW-Authenticate": challenge})
    return claims


# ---------------------------------------------------------------- passwords

PH = argon2.PasswordHasher(
    time_cost=1 if bug("argon2-weak") else 2,
    memory_cost=8192 if bug("argon2-weak") else 19456,  # KiB: 19 MiB, the OWASP minimum with t=2
    parallelism=1,
    hash_len=32,
    salt_len=16,
    type=argon2.Type.ID,
)
SCRYPT_LN, SCRYPT_R, SCRYPT_P = 17, 8, 1
HASH_SLOTS = threading.BoundedSemaphore(4)  # scrypt N=2^17 takes 128 MiB per hash


def _b64(b):
    return base64.b64encode(b).decode().rstrip("=")


def _unb64(s):
    return base64.b64decode(s + "=" * (-len(s) % 4))


def _scrypt(password, salt, ln, r, p):
    n = 1 << ln
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r + (1 << 20), dklen=32)


def hash_password(password):
    if bug("sha256-password"):
        return hashlib.sha256(password.encode("utf-8", "surrogatepass")).hexdigest()
    with HASH_SLOTS:
        if style("scrypt"):
            salt = secrets.token_bytes(16)
            dk = _scrypt(password, salt, SCRYPT_LN, SCRYPT_R, SCRYPT_P)
            return f"$scrypt$ln={SCRYPT_LN},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(dk)}"
        return PH.hash(password.encode("utf-8", "surrogatepass"))


def verify_password(stored, password):
    pw = password.encode("utf-8", "surrogatepass")
    with HASH_SLOTS:
        if stored.startswith("$argon2"):
            try:
                return PH.verify(stored, pw)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHash):
                return False
        if stored.startswith("$scrypt$"):
            try:
                _, _, params, salt, dk = stored.split("$")
                p = dict(kv.split("=") for kv in params.split(","))
                got = _scrypt(password, _unb64(salt), int(p["ln"]), int(p["r"]), int(p["p"]))
                return hmac.compare_digest(got, _unb64(dk))
            except (ValueError, KeyError):
                return False
    if bug("sha256-password"):
        return hmac.compare_digest(hashlib.sha256(pw).hexdigest(), stored)
    return False


DUMMY_HASH = None  # verified against for unknown usernames, so both cases cost the same


class LoginLimiter:
    """At most LOGIN_MAX attempts per username in any LOGIN_WINDOW seconds (a sliding log)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = {}
        self.failures = collections.Counter()  # only for INDEP_BUG=no-window / limit-after-check
        self.last_sweep = time.monotonic()

    def acquire(self, username):
        """0 if an attempt may go ahead (it is recorded), else the seconds to wait."""
        key = "*" if bug("global-login-limit") else username
        now = time.monotonic()
        with self.lock:
            if now - self.last_sweep > 60:
                for k in [k for k, d in self.attempts.items() if not d or d[-1] <= now - LOGIN_WINDOW]:
                    del self.attempts[k]
                self.last_sweep = now
            if bug("no-window"):
                return int(LOGIN_WINDOW) if self.failures[key] >= LOGIN_MAX else 0
            if bug("limit-after-check"):
                return 0
            d = self.attempts.setdefault(key, collections.deque())
            while d and d[0] <= now - LOGIN_WINDOW:
                d.popleft()
            if len(d) >= LOGIN_MAX:
                wait = max(1, math.ceil(d[0] + LOGIN_WINDOW - now))
                return wait * 1000 if bug("retry-after-ms") else wait
            d.append(now)
            return 0

    def result(self, username, ok):
        """INDEP_BUG=no-window / limit-after-check: a counter of failures."""
        with self.lock:
            if ok:
                self.failures.pop(username, None)
            else:
                self.failures[username] += 1
            return self.failures[username]


LIMITER = LoginLimiter()

# ---------------------------------------------------------------- request plumbing


class Response:
    def __init__(self, status, body=None, headers=None, content_type="application/json"):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


class Request:
    def __init__(self, handler, method, path, query, body):
        self.h = handler
        self.method = method
        self.path = path
        self.query = urllib.parse.parse_qs(query, keep_blank_values=True)
        self.body = body

    def header(self, name):
        return self.h.headers.get(name)

    def param(self, name):
        v = self.query.get(name)
        return v[0] if v else None

    def json_object(self):
        try:
            data = json.loads(self.body.decode("utf-8"), parse_constant=_no_constant)
        except RecursionError:
            raise HttpError(400, "The request body is nested too deeply.")
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "The request body is not valid JSON.")
        if not isinstance(data, dict):
            raise HttpError(422, "The request body must be a JSON object.")
        return data


def storable(s):
    """PostgreSQL text holds neither NUL nor lone surrogates."""
    if "\x00" in s:
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------- notes

UUID_RX = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
NOTE_COLS = "id, owner_id, title, body, created_at"
FORBIDDEN_FIELDS = ("owner_id", "id", "role", "is_admin", "created_at")
ID_COUNTER = iter(range(1, 1 << 62))
ID_COUNTER_LOCK = threading.Lock()


def note_json(row):
    nid, owner, title, body, created = row
    return {
        "id": str(nid),
        "owner_id": owner,
        "title": title,
        "body": body,
        "created_at": created.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def check_title(v):
    if not isinstance(v, str) or not 1 <= len(v) <= 200:
        raise HttpError(422, "title must be a string of 1 to 200 characters.")
    if not storable(v):
        raise HttpError(422, "title contains a character that cannot be stored (NUL or a lone surrogate).")


def check_body(v):
    if not isinstance(v, str) or len(v) > 10000:
        raise HttpError(422, "body must be a string of at most 10000 characters.")
    if not storable(v):
        raise HttpError(422, "body contains a character that cannot be stored (NUL or a lone surrogate).")


def reject_forbidden_fields(data):
    if style("strict-fields"):
        bad = [f for f in FORBIDDEN_FIELDS if f in data]
        if bad:
            raise HttpError(422, f"These fields are set by the service, not by clients: {', '.join(bad)}.")


def note_id_or_404(raw):
    if bug("uuid-db-error"):
        return raw
    if bug("counter-ids"):
        if not raw.isdigit() or len(raw) > 18:
            raise HttpError(404, "There is no such note.")
        return raw
    if not UUID_RX.fullmatch(raw):
        raise HttpError(404, "There is no such note.")
    return raw.lower()


def not_found_or_forbidden(nid):
    """For a note the caller does not own (or that does not exist)."""
    if style("forbidden-403") and query("SELECT 1 FROM notes WHERE id = %s", (nid,)):
        return HttpError(403, "This note belongs to someone else.")
    return HttpError(404, "There is no such note.")


def create_note(req, claims):
    data = req.json_object()
    reject_forbidden_fields(data)
    if "title" not in data:
        raise HttpError(422, "title is required.")
    check_title(data["title"])
    body = data.get("body", "")
    check_body(body)
    owner = claims["sub"]
    if bug("post-owner-from-body") and isinstance(data.get("owner_id"), str):
        owner = data["owner_id"]
    if bug("counter-ids"):
        with ID_COUNTER_LOCK:
            nid = str(next(ID_COUNTER))
    else:
        nid = str(uuid.uuid4())
    row = query(f"INSERT INTO notes (id, owner_id, title, body) VALUES (%s, %s, %s, %s) RETURNING {NOTE_COLS}",
                (nid, owner, data["title"], body))[0]
    return Response(201, note_json(row), {"Location": f"/notes/{nid}"})


def escape_like(s):
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_notes(req, claims):
    raw_limit = req.param("limit")
    limit = 20
    if raw_limit is not None:
        if not re.fullmatch(r"[0-9]{1,9}", raw_limit) or int(raw_limit) < 1:
            raise HttpError(400, "limit must be an integer from 1 to 100.")
        limit = int(raw_limit)
        if limit > 100 and not bug("limit-uncapped"):
            if not style("cap-limit"):
                raise HttpError(400, "limit must be an integer from 1 to 100.")
            limit = 100
    q = req.param("q")
    sub = claims["sub"]
    if q:
        if not storable(q):
            return Response(200, {"items": []})  # no stored title can contain it
        if bug("like-format"):
            sql = f"SELECT {NOTE_COLS} FROM notes WHERE owner_id = %s AND title ILIKE '%%{q}%%' ORDER BY created_at DESC, id DESC LIMIT %s"
            rows = query(sql, (sub, limit))
        elif bug("search-all-owners"):
            rows = query(f"SELECT {NOTE_COLS} FROM notes WHERE title ILIKE %s ESCAPE '\\' ORDER BY created_at DESC, id DESC LIMIT %s",
                         ("%" + escape_like(q) + "%", limit))
        else:
            pattern = "%" + (q if bug("like-unescaped") else escape_like(q)) + "%"
            rows = query(f"SELECT {NOTE_COLS} FROM notes WHERE owner_id = %s AND title ILIKE %s ESCAPE '\\' "
                         "ORDER BY created_at DESC, id DESC LIMIT %s", (sub, pattern, limit))
    else:
        rows = query(f"SELECT {NOTE_COLS} FROM notes WHERE owner_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
                     (sub, limit))
    return Response(200, {"items": [note_json(r) for r in rows]})


def get_note(req, claims, raw_id):
    nid = note_id_or_404(raw_id)
    if bug("idor-get"):
        rows = query(f"SELECT {NOTE_COLS} FROM notes WHERE id = %s", (nid,))
    else:
        rows = query(f"SELECT {NOTE_COLS} FROM notes WHERE id = %s AND owner_id = %s", (nid, claims["sub"]))
    if not rows:
        raise not_found_or_forbidden(nid)
    return Response(200, note_json(rows[0]))


def patch_note(req, claims, raw_id):
    nid = note_id_or_404(raw_id)
    data = req.json_object()
    reject_forbidden_fields(data)
    sets, params = [], []
    if "title" in data:
        check_title(data["title"])  # null is refused too: a note always has a title
        sets.append("title = %s")
        params.append(data["title"])
    if "body" in data:
        body = "" if data["body"] is None else data["body"]  # RFC 7396: null removes, back to the default
        check_body(body)
        sets.append("body = %s")
        params.append(body)
    if bug("patch-mass-assign") and isinstance(data.get("owner_id"), str):
        sets.append("owner_id = %s")
        params.append(data["owner_id"])
    sub = claims["sub"]
    if not sets:
        rows = query(f"SELECT {NOTE_COLS} FROM notes WHERE id = %s AND owner_id = %s", (nid, sub))
    elif bug("patch-act-then-check"):
        rows = query(f"UPDATE notes SET {', '.join(sets)} WHERE id = %s RETURNING {NOTE_COLS}", (*params, nid))
        if rows and rows[0][1] != sub:
            rows = []
    else:
        # the owner is part of the UPDATE's WHERE: check and write in one statement
        rows = query(f"UPDATE notes SET {', '.join(sets)} WHERE id = %s AND owner_id = %s RETURNING {NOTE_COLS}",
                     (*params, nid, sub))
    if not rows:
        raise not_found_or_forbidden(nid)
    return Response(200, note_json(rows[0]))


def delete_note(req, claims, raw_id):
    nid = note_id_or_404(raw_id)
    if bug("delete-no-owner"):
        rows = query("DELETE FROM notes WHERE id = %s RETURNING id", (nid,))
    else:
        rows = query("DELETE FROM notes WHERE id = %s AND owner_id = %s RETURNING id", (nid, claims["sub"]))
    if not rows:
        raise not_found_or_forbidden(nid)
    return Response(204)


def admin_stats(req, claims):
    roles = claims.get("roles")
    if not bug("admin-no-role") and not (isinstance(roles, list) and "admin" in roles):
        raise HttpError(403, "This route is for administrators.")
    notes, accounts = query("SELECT (SELECT count(*) FROM notes), (SELECT count(*) FROM accounts)")[0]
    return Response(200, {"notes": notes, "accounts": accounts})


# ---------------------------------------------------------------- local accounts

USERNAME_RX = re.compile(r"^[a-z0-9_-]{3,40}$")


def valid_username(u):
    if not isinstance(u, str):
        return False
    if bug("username-dollar"):
        return USERNAME_RX.match(u) is not None  # `$` also matches before a final newline
    return USERNAME_RX.fullmatch(u) is not None and not u.endswith("\n")


def password_length(p):
    return len(p.encode("utf-8", "surrogatepass")) if bug("password-bytes") else len(p)


def create_account(req):
    data = req.json_object()
    username, password = data.get("username"), data.get("password")
    if not valid_username(username):
        raise HttpError(422, "username must be 3 to 40 characters of a-z, 0-9, _ and -.")
    if not isinstance(password, str) or not 12 <= password_length(password) <= 128:
        raise HttpError(422, "password must be a string of 12 to 128 characters.")
    if query("SELECT 1 FROM accounts WHERE username = %s", (username,)):
        raise HttpError(409, "This username is taken.")
    stored = hash_password(password)
    rows = query("INSERT INTO accounts (username, password_hash) VALUES (%s, %s) ON CONFLICT (username) DO NOTHING "
                 "RETURNING username", (username, stored))
    if not rows:
        raise HttpError(409, "This username is taken.")
    out = {"username": username}
    if bug("account-leaks-hash"):
        out["password_hash"] = stored
    return Response(201, out)


def login(req):
    data = req.json_object()
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise HttpError(422, "Send a username and a password (strings).")
    wait = LIMITER.acquire(username)
    if wait:
        return Response(429, HttpError(429, "Too many login attempts for this username; try again later.").problem(),
                        {"Retry-After": str(wait)}, content_type="application/problem+json")
    row = query("SELECT password_hash FROM accounts WHERE username = %s", (username,)) if valid_username(username) else []
    if bug("log-login-body"):
        log(f"login attempt for {username!r} with password {password!r}")
    ok = verify_password(row[0][0] if row else DUMMY_HASH, password) and bool(row)
    if bug("no-window") or bug("limit-after-check"):
        failures = LIMITER.result(username, ok)
        if bug("limit-after-check") and not ok and failures > LOGIN_MAX:
            return Response(429, HttpError(429, "Too many login attempts; try again later.").problem(),
                            {"Retry-After": str(int(LOGIN_WINDOW))}, content_type="application/problem+json")
    if ok:
        return Response(200, {"username": username})
    if bug("login-enum") and not row:
        raise HttpError(401, "There is no account with this username.")
    raise HttpError(401, "Wrong username or password.")


def health(req):
    return Response(200, {"status": "ok"})


# ---------------------------------------------------------------- routing and HTTP

ROUTES = [
    (re.compile(r"/healthz"), False, {"GET": health}),
    (re.compile(r"/notes"), True, {"GET": list_notes, "POST": create_note}),
    (re.compile(r"/notes/([^/]*)"), True, {"GET": get_note, "PATCH": patch_note, "DELETE": delete_note}),
    (re.compile(r"/admin/stats"), True, {"GET": admin_stats}),
    (re.compile(r"/accounts"), False, {"POST": create_account}),
    (re.compile(r"/accounts/login"), False, {"POST": login}),
]
CORS_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "Content-Type" if bug("preflight-no-authorization") else "Authorization, Content-Type"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "notes"
    sys_version = ""

    def version_string(self):
        return "notes"

    def setup(self):
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass  # the default logs the whole request line; we log method, path and status ourselves

    def log_request(self, code="-", size="-"):
        pass

    def send_error(self, code, message=None, explain=None):
        self.close_connection = True
        self._write(Response(code, HttpError(code, message or "The request could not be read.").problem(),
                             content_type="application/problem+json"))

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise HttpError(400, "Malformed chunked body.")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY and not bug("no-size-limit"):
                    self.close_connection = True
                    raise HttpError(413, f"The request body is larger than {MAX_BODY} bytes.")
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
        too_big = n >= MAX_BODY if bug("size-off-by-one") else n > MAX_BODY
        if too_big and not bug("no-size-limit"):
            self.close_connection = True
            raise HttpError(413, f"The request body is larger than {MAX_BODY} bytes.")
        return self.rfile.read(n) if n else b""

    def _cors_headers(self, preflight):
        headers = getattr(self, "headers", None)
        origin = headers.get("Origin") if headers is not None else None
        h = {"Vary": "Origin"}
        if bug("cors-star-credentials"):
            h["Access-Control-Allow-Origin"] = "*"
            h["Access-Control-Allow-Credentials"] = "true"
        elif origin is not None and (origin == ALLOWED_ORIGIN or bug("cors-echo")):
            h["Access-Control-Allow-Origin"] = origin
        else:
            return h
        if preflight:
            h["Access-Control-Allow-Methods"] = CORS_METHODS
            requested = headers.get("Access-Control-Request-Headers")
            h["Access-Control-Allow-Headers"] = requested if (style("echo-request-headers") and requested) else CORS_HEADERS
            h["Access-Control-Max-Age"] = "600"
        else:
            h["Access-Control-Expose-Headers"] = "Location, Retry-After, WWW-Authenticate"
        return h

    def _dispatch(self):
        method = self.command
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        if bug("log-headers"):
            log("request", method, path, dict(self.headers.items()))
        try:
            body = self._read_body()
            if method == "OPTIONS":
                resp = Response(204, headers={"Allow": CORS_METHODS})
                self._write(resp, preflight=True)
                return
            resp = None
            for rx, needs_token, methods in ROUTES:
                m = rx.fullmatch(path)
                if not m:
                    continue
                handler = methods.get("GET" if method == "HEAD" else method)
                if handler is None:
                    allow = ", ".join(methods)
                    raise HttpError(405, f"{method} is not supported here; use {allow}.", {"Allow": allow})
                req = Request(self, method, path, parts.query, body)
                args = [urllib.parse.unquote(g) for g in m.groups()]
                if needs_token:
                    claims = authenticate(req)
                    resp = handler(req, claims, *args)
                else:
                    resp = handler(req, *args)
                break
            if resp is None:
                if path.startswith(("/notes/", "/admin/")):
                    authenticate(Request(self, method, path, parts.query, body))
                raise HttpError(404, "There is nothing here.")
        except HttpError as e:
            resp = Response(e.status, e.problem(), e.headers, content_type="application/problem+json")
        except Exception as ex:
            log(f"unhandled error on {method} {path}:\n{traceback.format_exc()}")
            detail = "Something went wrong on our side; it has been logged."
            if bug("uuid-db-error") and isinstance(ex, psycopg2.Error):
                detail = f"Database error: {ex}"
            resp = Response(500, HttpError(500, detail).problem(), content_type="application/problem+json")
        self._write(resp)
        log(f"{method} {path} -> {resp.status}")

    def _write(self, resp, preflight=False):
        status = resp.status
        no_body = status in (204, 304) or resp.body is None
        data = b"" if no_body else json.dumps(resp.body, ensure_ascii=False).encode("utf-8", "surrogatepass")
        content_type = resp.content_type
        if bug("errors-json") and content_type == "application/problem+json":
            content_type = "application/json"
        self.send_response(status, TITLES.get(status))
        if not no_body:
            self.send_header("Content-Type", content_type)
        if status not in (204, 304) and not 100 <= status < 200:
            self.send_header("Content-Length", str(len(data)))
        if not (bug("nosniff-success-only") and status >= 400):
            self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for k, v in {**self._cors_headers(preflight), **resp.headers}.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


def main():
    global POOL, DUMMY_HASH
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        log("DATABASE_URL is not set")
        sys.exit(2)
    if not ISSUER:
        log("AUTH_ISSUER_URL is not set")
        sys.exit(2)
    deadline = time.time() + 60
    while True:
        try:
            psycopg2.connect(dsn).close()
            break
        except psycopg2.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    POOL = Pool(dsn)
    migrate()
    DUMMY_HASH = hash_password(secrets.token_urlsafe(18))
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    srv = Server((host, port), Handler)
    log(f"listening on {host}:{port} issuer={ISSUER} audience={AUDIENCE} bug={BUG or '-'} "
        f"styles={','.join(sorted(STYLES)) or '-'}")
    with contextlib.suppress(KeyboardInterrupt):
        srv.serve_forever()


if __name__ == "__main__":
    main()
