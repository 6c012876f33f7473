#!/usr/bin/python3
"""Shipping-quote service for the integration-resilience exercise, written from its README only.

It asks a carrier's API for every quote, and survives the carrier: a 1 s timeout per attempt and
a 4 s deadline per request, at most 3 attempts with jittered exponential backoff, Retry-After,
a circuit breaker, a bulkhead of 10 carrier calls, and a stale-quote fallback.

Task 7: bookings (POST /bookings, GET /bookings/{id}) kept in PostgreSQL at DATABASE_URL, and
GET /readyz. The database may hang (connections accepted or kept open, nothing answers) or refuse:
every database step (a pool slot, connecting, each query) is bounded by one 1.5 s deadline per
request, driven by us on a non-blocking driver; a connection given up on is closed (or, for a
connect still under way, put back when it ends), never reused with a query in flight; idle
connections are checked (socket not readable) before reuse, and a broken one is replaced, so the
service comes back by itself. /healthz, /estimates and /breaker never touch the database.

Task 8: on SIGTERM (or SIGINT) the service stops taking new work at once (the listening socket is
closed, so new connections are refused), lets every request that had arrived finish as it would
have without the signal (nothing is cancelled: quotes keep their attempts and waits, bookings
their database deadline; idle keep-alive connections are closed, busy ones answer with
Connection: close, pipelined requests already received are answered too), then closes the
database pool, stops its one background thread (the stale-quote sweeper) and exits with status 0,
4.2 s after the signal at the latest. The start command execs python, so the signal reaches it.

Debian's /usr/bin/python3 (3.11): standard library, plus the packaged PostgreSQL drivers. Two
server designs:
  - default: asyncio, one event loop; the HTTP server and the carrier client are written on
    asyncio streams (the standard library has no asyncio HTTP client), and the 1 s timeout is
    asyncio.wait_for around the whole attempt; the database is psycopg 3's AsyncConnection;
  - INDEP_STYLE=threads: http.server.ThreadingHTTPServer, a thread per request, blocking
    http.client calls with a socket timeout and a watchdog that bounds the whole attempt; the
    database is psycopg2 in its asynchronous mode (conn.poll() and poll(2) against the deadline).

The retry policy is written once, as a generator that yields "attempt" and "sleep" actions
(quote_plan); each design drives it with its own I/O, so the numbers and the planted bugs live in
one place.

INDEP_BUG=<name> plants one bug, INDEP_STYLE=<name>[,<name>] picks legitimate alternative
designs; see BUGS.md. Unknown names make the service exit at start-up.
"""

import asyncio
import collections
import email.utils
import http.client
import json
import math
import os
import random
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --------------------------------------------------------------------------------------------
# Bugs and styles

KNOWN_BUGS = {
    "timeout-too-long",
    "backoff-no-jitter",
    "retries-4-attempts",
    "retry-after-ignored",
    "breaker-counts-attempts",
    "breaker-cooldown-10s",
    "half-open-lets-all-through",
    "bulkhead-queues",
    "stale-served-when-healthy",
    # task 7 (bookings in PostgreSQL)
    "readyz-no-db-check",
    "healthz-queries-db",
    "db-no-timeouts",
    "single-connection",
    "pool-slot-leak",
    "all-routes-gated",
    # task 8 (stopping gracefully)
    "sigterm-default",
    "client-closed-first",
    "serves-while-draining",
    "sweeper-not-stopped",
    "sigterm-ignored",
    "drain-waits-for-idle",
}
KNOWN_STYLES = {"504-on-timeout", "threads", "breaker-lock-free"}

BUG = os.environ.get("INDEP_BUG", "").strip()
STYLES = {s.strip() for s in os.environ.get("INDEP_STYLE", "").split(",") if s.strip()}
if BUG and BUG not in KNOWN_BUGS:
    sys.exit(f"unknown INDEP_BUG {BUG!r}; known: {', '.join(sorted(KNOWN_BUGS))}")
if STYLES - KNOWN_STYLES:
    sys.exit(f"unknown INDEP_STYLE {sorted(STYLES - KNOWN_STYLES)}; known: {sorted(KNOWN_STYLES)}")

# --------------------------------------------------------------------------------------------
# The numbers of the README

# res-2.1: an attempt that has no answer 1 s after it started has failed.
ATTEMPT_TIMEOUT = 5.0 if BUG == "timeout-too-long" else 1.0
# res-2.2: the client has its answer within 4 s. We stop planning at 3.9 s so that writing the
# answer and the scheduler's jitter still fit; the bug drops the deadline altogether.
REQUEST_DEADLINE = None if BUG == "timeout-too-long" else 3.9
# res-3.1: the first attempt and 2 retries.
MAX_ATTEMPTS = 4 if BUG == "retries-4-attempts" else 3
# res-3.4: a Retry-After longer than this is not waited for.
MAX_RETRY_AFTER = 2.0
# res-4.1
BREAKER_THRESHOLD = 5
BREAKER_OPEN_SECONDS = 10.0 if BUG == "breaker-cooldown-10s" else 3.0
# res-5.1
BULKHEAD_SIZE = 10
# res-6.1
STALE_MAX_AGE = 300.0
STALE_MAX_ENTRIES = 50_000  # random data on every run: keep memory bounded
MAX_BODY = 1 << 20

# res-7.4, res-7.6: /readyz and the booking routes answer within 2 s whatever the database does.
# Everything the database part of a request does (waiting for a pooled connection, connecting,
# every query, one retry on a fresh connection) fits in this budget, counted from the request's
# arrival; the rest of the 2 s is for writing the answer. The bug drops every client-side bound
# and keeps only the server-side statement_timeout, which cannot help when the network hangs.
DB_BUDGET = None if BUG == "db-no-timeouts" else 1.5
# A backstop for an attempt to connect that the request gave up on (it finishes in the
# background, keeping its pool slot, and is then put back or closed): psycopg's connect_timeout,
# whole seconds.
DB_CONNECT_TIMEOUT = 2
# Server-side: a query stuck behind a lock (or abandoned by us) ends by itself.
DB_STATEMENT_TIMEOUT_MS = 1500
# At most this many connections to PostgreSQL, idle or busy.
DB_POOL_SIZE = 5
# Start-up: the table is created before the port opens; the database gets this long to appear.
DB_STARTUP_WAIT = 20.0

# res-8.3: after SIGTERM the process is gone within 5 s. Every request in flight ends within its
# own bound (4 s for a quote, 1.5 s for the database) anyway; this is the backstop after which
# whatever is still open is dropped and the process exits. The bug has none: it waits for every
# connection, idle keep-alive ones included, however long they stay.
DRAIN_LIMIT = None if BUG == "drain-waits-for-idle" else 4.2
# How often the drain looks at the connections still open (and closes idle ones).
DRAIN_POLL = 0.02
# The stale-quote sweeper (a background thread) drops quotes older than 5 minutes this often.
SWEEP_EVERY = 30.0

# res-3.1: these statuses are failed attempts, worth another try.
RETRYABLE_STATUSES = {429, 502, 503, 504}
# res-3.4: only these carry a Retry-After we honour.
RETRY_AFTER_STATUSES = {429, 503}

WEIGHT_RE = re.compile(r"[0-9]{1,9}")  # digits only; the range test follows
POSTCODE_RE = re.compile(r"[A-Za-z0-9]{1,10}")


def log(msg):
    # One write per line: print() writes the newline separately, and threads interleave.
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
    sys.stderr.flush()


def backoff_delay(retry_number):
    """res-3.2: before retry n, a random wait between half and all of 200 ms x 2^(n-1).

    Full range drawn afresh for every wait, so clients that failed together spread out."""
    ceiling = 0.2 * 2 ** (retry_number - 1)
    if BUG == "backoff-no-jitter":
        return ceiling
    return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value):
    """Retry-After in seconds (RFC 9110: delay-seconds or an HTTP-date); None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


# --------------------------------------------------------------------------------------------
# What one attempt gave


class Outcome:
    """The result of one call to the carrier.

    kind: "ok" (price_cents set), "refused" (a 4xx other than 429: the request is wrong, asking
    again gives the same answer), "failed" (worth retrying: reason is "status", "reset" or
    "timeout")."""

    __slots__ = ("kind", "reason", "status", "price_cents", "retry_after")

    def __init__(self, kind, reason=None, status=None, price_cents=None, retry_after=None):
        self.kind, self.reason, self.status = kind, reason, status
        self.price_cents, self.retry_after = price_cents, retry_after

    def __repr__(self):
        bits = [self.kind]
        if self.reason:
            bits.append(self.reason)
        if self.status:
            bits.append(str(self.status))
        if self.retry_after is not None:
            bits.append(f"ra={self.retry_after:g}")
        return "/".join(bits)


TIMED_OUT = Outcome("failed", "timeout")
RESET = Outcome("failed", "reset")


def classify(status, retry_after_header, body):
    if 200 <= status < 300:
        try:
            doc = json.loads(body)
            price = doc["price_cents"]
        except (ValueError, TypeError, KeyError):
            price = None
        if isinstance(price, int) and not isinstance(price, bool):
            return Outcome("ok", status=status, price_cents=price)
        # A 2xx we cannot read is the carrier misbehaving, not our request being wrong.
        return Outcome("failed", "status", status)
    if 400 <= status < 500 and status != 429:
        return Outcome("refused", status=status)
    # 429, 5xx (and anything else odd): a failed attempt.
    return Outcome("failed", "status", status, retry_after=parse_retry_after(retry_after_header))


# --------------------------------------------------------------------------------------------
# Circuit breakers (res-4.x). Both expose the same interface:
#   admit(now) -> Admission | None     None: refused, do not call the carrier
#   succeeded(adm, now), failed(adm, now)
#   abandon(adm)                       admitted, then turned away by the bulkhead: no outcome
#   may_retry(adm) -> bool             a quote stops retrying once the breaker is not closed
#   snapshot(now) -> (state, consecutive_failures)
#   reopens_in(now) -> seconds until a trial is allowed (for Retry-After on our 503)


class Admission:
    __slots__ = ("trial", "token")

    def __init__(self, trial, token=None):
        self.trial, self.token = trial, token


NORMAL = Admission(False)


class StateBreaker:
    """The textbook state machine: closed / open / half_open under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.trial_in_flight = False

    def _tick(self, now):
        # Open turns half-open by itself once the open period is over; only a trial closes it.
        if self.state == "open" and now - self.opened_at >= BREAKER_OPEN_SECONDS:
            self.state = "half_open"
            self.trial_in_flight = False

    def admit(self, now):
        with self.lock:
            self._tick(now)
            if self.state == "closed":
                return NORMAL
            if self.state == "open":
                # Refusals do not touch opened_at: they do not extend the open period.
                return None
            # half_open: one trial at a time, everyone else is refused while it runs.
            if self.trial_in_flight and BUG != "half-open-lets-all-through":
                return None
            self.trial_in_flight = True
            return Admission(True)

    def succeeded(self, adm, now):
        with self.lock:
            if adm.trial and self.state == "half_open":
                self.state, self.failures, self.trial_in_flight = "closed", 0, False
            elif self.state == "closed":
                self.failures = 0
            # A late success from a quote admitted before the breaker opened changes nothing:
            # only the trial decides when it closes.

    def failed(self, adm, now):
        with self.lock:
            if adm.trial and self.state == "half_open":
                self.failures += 1
                self.state, self.opened_at, self.trial_in_flight = "open", now, False
            elif self.state == "closed":
                self.failures += 1
                if self.failures >= BREAKER_THRESHOLD:
                    self.state, self.opened_at = "open", now
            # Already open: a late failure must not extend the open period.

    def abandon(self, adm):
        with self.lock:
            if adm.trial and self.state == "half_open":
                self.trial_in_flight = False

    def may_retry(self, adm):
        with self.lock:
            return not adm.trial and self.state == "closed"

    def snapshot(self, now):
        with self.lock:
            self._tick(now)
            return self.state, self.failures

    def reopens_in(self, now):
        with self.lock:
            return max(0.0, self.opened_at + BREAKER_OPEN_SECONDS - now)


class TimestampBreaker:
    """INDEP_STYLE=breaker-lock-free: no state enum and no lock.

    The state is derived from one reference, `period`: None while closed, else a tuple
    (open_until, tickets) where tickets is a list holding one trial ticket. now < open_until is
    open; past it is half-open, and whoever pops the ticket runs the trial. Rebinding an
    attribute, list.append and list.pop are atomic in CPython, and the tuple binds the deadline
    and its ticket together, so a thread that read an old period can only pop an old, already
    empty, ticket list. Failures are a list of timestamps (len() is the count), reset by
    rebinding a new list."""

    def __init__(self):
        self.period = None
        self.failures = []

    def _open(self, now):
        self.period = (now + BREAKER_OPEN_SECONDS, ["trial"])

    def admit(self, now):
        period = self.period
        if period is None:
            return NORMAL
        open_until, tickets = period
        if now < open_until:
            return None
        if BUG == "half-open-lets-all-through":
            return Admission(True, tickets)
        try:
            token = tickets.pop()
        except IndexError:
            return None  # somebody else holds the trial
        return Admission(True, (tickets, token))

    def succeeded(self, adm, now):
        if adm.trial and self.period is not None:
            self.failures = []
            self.period = None
        elif self.period is None and self.failures:
            self.failures = []

    def failed(self, adm, now):
        if adm.trial and self.period is not None:
            self.failures.append(now)
            self._open(now)
        elif self.period is None:
            self.failures.append(now)
            if len(self.failures) >= BREAKER_THRESHOLD:
                self._open(now)

    def abandon(self, adm):
        if adm.trial and isinstance(adm.token, tuple):
            tickets, token = adm.token
            tickets.append(token)  # give the ticket back: the next quote may run the trial

    def may_retry(self, adm):
        return not adm.trial and self.period is None

    def snapshot(self, now):
        period, count = self.period, len(self.failures)
        if period is None:
            return "closed", count
        return ("open" if now < period[0] else "half_open"), count

    def reopens_in(self, now):
        period = self.period
        return 0.0 if period is None else max(0.0, period[0] - now)


# --------------------------------------------------------------------------------------------
# Stale quotes (res-6.1): the last good price per (weight, postcode), kept 5 minutes, used only
# when the carrier cannot give one.


class StaleStore:
    def __init__(self):
        self.lock = threading.Lock()
        self.entries = collections.OrderedDict()  # key -> (price_cents, monotonic time)

    def put(self, key, price, now):
        with self.lock:
            self.entries[key] = (price, now)
            self.entries.move_to_end(key)
            while len(self.entries) > STALE_MAX_ENTRIES:
                self.entries.popitem(last=False)

    def get(self, key, now):
        with self.lock:
            hit = self.entries.get(key)
            if hit is None:
                return None
            price, at = hit
            if now - at > STALE_MAX_AGE:
                del self.entries[key]
                return None
            return price

    def sweep(self, now):
        """Drops the quotes older than 5 minutes (the oldest come first: put moves to the end)."""
        with self.lock:
            dropped = 0
            while self.entries:
                key, (_, at) = next(iter(self.entries.items()))
                if now - at <= STALE_MAX_AGE:
                    break
                del self.entries[key]
                dropped += 1
            return dropped


class Sweeper:
    """A background thread that drops expired stale quotes every SWEEP_EVERY seconds.

    A non-daemon thread, on purpose: it is stopped and joined at shutdown (res-8.3), and a
    shutdown that forgets it (INDEP_BUG=sweeper-not-stopped) keeps the process alive for ever,
    the way a forgotten worker thread does in many real services."""

    def __init__(self, stale):
        self.stale = stale
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stale-sweeper")

    def _run(self):
        while not self.stop_event.wait(SWEEP_EVERY):
            dropped = self.stale.sweep(time.monotonic())
            if dropped:
                log(f"stale quotes: dropped {dropped} older than {STALE_MAX_AGE:g} s")

    def start(self):
        self.thread.start()

    def stop(self):
        if BUG == "sweeper-not-stopped":
            return  # the bug: nobody tells the thread, and the interpreter waits for it at exit
        self.stop_event.set()
        self.thread.join(1.0)


# --------------------------------------------------------------------------------------------
# The retry policy (res-2.x, res-3.x), independent of the I/O design.


class QuoteResult:
    __slots__ = ("outcome", "attempts", "give_up")

    def __init__(self, outcome, attempts, give_up=None):
        self.outcome, self.attempts, self.give_up = outcome, attempts, give_up


def quote_plan(adm, breaker, started):
    """Yields ("attempt", timeout) and receives an Outcome, or yields ("sleep", seconds).

    Returns a QuoteResult whose outcome is the last attempt's."""
    per_attempt = BUG == "breaker-counts-attempts"
    max_attempts = 1 if adm.trial else MAX_ATTEMPTS  # res-4.2: a trial is one attempt
    attempt = 0
    while True:
        attempt += 1
        outcome = yield ("attempt", ATTEMPT_TIMEOUT)
        if per_attempt:
            # The bug: every failed attempt is reported to the breaker as it happens.
            if outcome.kind == "failed":
                breaker.failed(adm, time.monotonic())
            else:
                breaker.succeeded(adm, time.monotonic())
        if outcome.kind != "failed":
            return QuoteResult(outcome, attempt)
        if attempt >= max_attempts:
            return QuoteResult(outcome, attempt, "attempts exhausted")

        # How long before the next attempt: Retry-After when the carrier said so (res-3.4),
        # else the jittered backoff (res-3.2).
        wait = None
        if (
            BUG != "retry-after-ignored"
            and outcome.status in RETRY_AFTER_STATUSES
            and outcome.retry_after is not None
        ):
            if outcome.retry_after > MAX_RETRY_AFTER:
                return QuoteResult(outcome, attempt, f"Retry-After {outcome.retry_after:g}s > 2s")
            wait = outcome.retry_after
        if wait is None:
            wait = backoff_delay(attempt)

        # res-3.5: never start an attempt that could not finish within the deadline; give up
        # now rather than sleep for nothing.
        if REQUEST_DEADLINE is not None:
            if time.monotonic() - started + wait + ATTEMPT_TIMEOUT > REQUEST_DEADLINE:
                return QuoteResult(outcome, attempt, "deadline")
        # Another quote opened the breaker meanwhile: stop adding load to a carrier that is down.
        if not breaker.may_retry(adm):
            return QuoteResult(outcome, attempt, "breaker opened")
        yield ("sleep", wait)


# --------------------------------------------------------------------------------------------
# The service: what is common to both I/O designs.


class Answer:
    __slots__ = ("status", "doc", "headers")

    def __init__(self, status, doc, headers=None):
        self.status, self.doc, self.headers = status, doc, headers or {}

    def encode(self):
        body = json.dumps(self.doc).encode()
        ctype = "application/problem+json" if self.status >= 400 else "application/json"
        headers = {"Content-Type": ctype, "Content-Length": str(len(body)), "Cache-Control": "no-store"}
        headers.update(self.headers)
        return body, headers


def problem(status, detail, headers=None, **extra):
    # res-0.3: RFC 9457 document whose status member equals the HTTP status.
    doc = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    doc.update(extra)
    return Answer(status, doc, headers)


class Service:
    def __init__(self, carrier_url):
        parts = urllib.parse.urlsplit(carrier_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            sys.exit(f"CARRIER_URL must be an http(s) URL, got {carrier_url!r}")
        self.carrier_tls = parts.scheme == "https"
        self.carrier_host = parts.hostname
        self.carrier_port = parts.port or (443 if self.carrier_tls else 80)
        self.carrier_netloc = parts.netloc
        self.carrier_path = parts.path.rstrip("/") + "/rates"
        self.breaker = TimestampBreaker() if "breaker-lock-free" in STYLES else StateBreaker()
        self.stale = StaleStore()
        # INDEP_BUG=client-closed-first: the carrier calls in flight, so that shutdown can
        # "close the client" under them (asyncio: stream writers; threads: http.client conns).
        self.client_closed = False
        self.carrier_calls = set()
        self.carrier_lock = threading.Lock()

    def track_call(self, call, add):
        if BUG != "client-closed-first":
            return
        with self.carrier_lock:
            if add:
                self.carrier_calls.add(call)
            else:
                self.carrier_calls.discard(call)

    def close_client(self):
        """INDEP_BUG=client-closed-first: shutdown closes the carrier client before the drain.
        The calls in flight are cut (their answer never read), and every later attempt fails
        before connecting: the quotes in flight end in 503 instead of their price (res-8.2)."""
        self.client_closed = True
        with self.carrier_lock:
            calls = list(self.carrier_calls)
        for call in calls:
            try:
                if isinstance(call, http.client.HTTPConnection):
                    if call.sock is not None:
                        call.sock.shutdown(socket.SHUT_RDWR)
                else:
                    call.transport.abort()  # an asyncio StreamWriter
            except (OSError, AttributeError):
                pass
        log(f"shutdown: carrier client closed ({len(calls)} call(s) in flight cut)")

    # -- routing --------------------------------------------------------------------------

    def route(self, method, target, body=b""):
        """Returns an Answer (nothing left to do), ("estimate", weight, postcode) for the
        carrier-calling path, a DbWork for the database, or ("gated", inner) (a bug)."""
        parts = urllib.parse.urlsplit(target)
        path = parts.path
        routed = self._route(method, path, parts.query, body)
        if BUG == "all-routes-gated" and path not in ("/healthz", "/readyz"):
            # The bug: a "readiness middleware" that asks the database before every route.
            return ("gated", routed)
        return routed

    def _route(self, method, path, query, body):
        if path == "/healthz":
            # res-1.4, res-7.5: nothing here touches the carrier, the breaker, the bulkhead or
            # the database: liveness says the process runs, whatever its dependencies do.
            if (wrong := self._only_get(method)) is not None:
                return wrong
            if BUG == "healthz-queries-db":
                return DbWork("health", [("SELECT 1", None)])
            return Answer(200, {"status": "ok"})
        if path == "/readyz":
            # res-7.4: ready when the database answers a query.
            if (wrong := self._only_get(method)) is not None:
                return wrong
            if BUG == "readyz-no-db-check":
                return Answer(200, {"status": "ready"})
            return DbWork("ready", [("SELECT 1", None)])
        if path == "/breaker":
            # res-1.3: reads the state, never calls the carrier.
            if (wrong := self._only_get(method)) is not None:
                return wrong
            state, failures = self.breaker.snapshot(time.monotonic())
            return Answer(200, {"state": state, "consecutive_failures": failures})
        if path == "/estimates":
            if (wrong := self._only_get(method)) is not None:
                return wrong
            return self.validate(query)
        if path == "/bookings":
            if method != "POST":
                return problem(405, f"{method} is not allowed here; use POST", {"Allow": "POST"})
            return self.validate_booking(body)
        if path.startswith("/bookings/"):
            if (wrong := self._only_get(method)) is not None:
                return wrong
            ident = urllib.parse.unquote(path[len("/bookings/"):])
            if not ident or "/" in ident or len(ident) > 200:
                return problem(404, f"no booking {ident!r}")
            # Any other string is looked up: whether an id exists is the database's to say, so
            # during an outage every booking read answers 503, not a guess.
            return DbWork("fetch", [(SQL_FETCH, (ident,))], ident=ident)
        return problem(404, f"no resource at {path}")

    @staticmethod
    def _only_get(method):
        if method in ("GET", "HEAD"):
            return None
        return problem(405, f"{method} is not allowed here; use GET", {"Allow": "GET"})

    def validate(self, query):
        # res-1.2: a bad request is answered 400 before anything reaches the carrier.
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        errors = []
        weights, postcodes = params.get("weight_grams", []), params.get("postcode", [])
        weight = None
        if len(weights) != 1:
            errors.append("weight_grams must be given exactly once")
        elif not WEIGHT_RE.fullmatch(weights[0]) or not 1 <= int(weights[0]) <= 30000:
            errors.append("weight_grams must be an integer from 1 to 30000")
        else:
            weight = int(weights[0])
        if len(postcodes) != 1:
            errors.append("postcode must be given exactly once")
        elif not POSTCODE_RE.fullmatch(postcodes[0]):
            errors.append("postcode must be 1 to 10 letters and digits")
        if errors:
            return problem(400, "; ".join(errors), errors=errors)
        return ("estimate", weight, postcodes[0])

    @staticmethod
    def validate_booking(body):
        # res-7.2: checked before anything reaches the database, so nothing is stored.
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSON, or a 5000-digit int
            return problem(400, f"the body is not JSON: {exc}")
        if not isinstance(doc, dict):
            return problem(400, "the body must be a JSON object")
        errors = []

        def integer(name, low, high):
            value = doc.get(name)
            # JSON integers only: not true/false, not 1200.0, not "1200".
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                errors.append(f"{name} must be an integer from {low} to {high}")
                return None
            return value

        weight = integer("weight_grams", 1, 30000)
        price = integer("price_cents", 0, 10_000_000)
        postcode = doc.get("postcode")
        if not isinstance(postcode, str) or not POSTCODE_RE.fullmatch(postcode):
            errors.append("postcode must be a string of 1 to 10 ASCII letters and digits")
        if errors:
            return problem(422, "; ".join(errors), errors=errors)
        # The id is chosen here, before the INSERT, so that the INSERT can be retried on a
        # fresh connection without creating the booking twice (ON CONFLICT DO NOTHING).
        booking = {"id": str(uuid.uuid4()), "weight_grams": weight, "postcode": postcode,
                    "price_cents": price}
        return DbWork("create", [(SQL_INSERT, (booking["id"], weight, postcode, price))],
                      booking=booking)

    @staticmethod
    def db_answer(work, row):
        """The answer to a DbWork whose statements ran; row is the last statement's first row."""
        if work.kind == "health":
            return Answer(200, {"status": "ok"})
        if work.kind == "ready":
            return Answer(200, {"status": "ready"})
        if work.kind == "create":
            booking = work.extra["booking"]
            return Answer(201, booking, {"Location": f"/bookings/{booking['id']}"})
        ident = work.extra["ident"]
        if row is None:
            return problem(404, f"no booking {ident!r}")
        weight, postcode, price = row
        return Answer(200, {"id": ident, "weight_grams": weight, "postcode": postcode,
                            "price_cents": price})

    @staticmethod
    def db_unavailable(work, why, started):
        log(f"database: {work.kind} answered 503 after {(time.monotonic() - started) * 1000:.0f} ms: {why}")
        return problem(503, f"the database is not answering ({why}); try again shortly",
                       {"Retry-After": "1"})

    # -- before and after the carrier -----------------------------------------------------

    def before(self, weight, postcode):
        """Returns an Answer (no carrier call) or an Admission."""
        now = time.monotonic()
        if BUG == "stale-served-when-healthy":
            price = self.stale.get((weight, postcode), now)
            if price is not None:
                return self._quote(weight, postcode, price, stale=False)
        adm = self.breaker.admit(now)
        if adm is None:
            # res-4.1/4.2: refused without calling the carrier; res-6.1: a recent price is
            # better than an error page.
            return self._fallback(
                weight, postcode, now,
                "the carrier is failing; the circuit breaker is not letting quotes through",
                {"Retry-After": str(max(1, math.ceil(self.breaker.reopens_in(now))))},
            )
        return adm

    def bulkhead_full(self, adm):
        # res-5.1: refused at once, without calling the carrier. Turned away by the bulkhead,
        # the quote neither counts nor resets the breaker; a trial gives its ticket back. No
        # stale fallback here: the README answers the 11th quote 503 and lists only failed
        # attempts and an open breaker as reasons for a stale price.
        self.breaker.abandon(adm)
        return problem(503, f"{BULKHEAD_SIZE} carrier calls are already in flight; try again shortly",
                       {"Retry-After": "1"})

    def after(self, weight, postcode, adm, result, started):
        now = time.monotonic()
        outcome = result.outcome
        elapsed = now - started
        log(f"quote {weight}g {postcode}: {outcome!r} after {result.attempts} attempt(s)"
            f"{', ' + result.give_up if result.give_up else ''}{' [trial]' if adm.trial else ''}"
            f" in {elapsed * 1000:.0f} ms")
        per_quote = BUG != "breaker-counts-attempts"
        if outcome.kind == "ok":
            if per_quote:
                self.breaker.succeeded(adm, now)
            self.stale.put((weight, postcode), outcome.price_cents, now)
            return self._quote(weight, postcode, outcome.price_cents, stale=False)
        if outcome.kind == "refused":
            # res-3.3: the carrier says our request is wrong: 502 at once. The carrier answered,
            # so it is up: the breaker's count goes back to 0 (res-4 intro).
            if per_quote:
                self.breaker.succeeded(adm, now)
            return problem(502, f"the carrier refused the quote with status {outcome.status}",
                           carrier_status=outcome.status)
        # Every attempt failed: a failed quote, even when a stale price saves the answer.
        if per_quote:
            self.breaker.failed(adm, now)
        status = 503
        if outcome.reason == "timeout" and "504-on-timeout" in STYLES:
            status = 504
        why = {"timeout": "did not answer within 1 s", "reset": "was unreachable or dropped the connection"}
        detail = f"the carrier {why.get(outcome.reason, f'answered {outcome.status}')}" \
                 f" ({result.attempts} attempt(s); {result.give_up})"
        return self._fallback(weight, postcode, now, detail, status=status)

    def _fallback(self, weight, postcode, now, detail, headers=None, status=503):
        price = self.stale.get((weight, postcode), now)
        if price is not None:
            return self._quote(weight, postcode, price, stale=True)
        return problem(status, detail, headers)

    @staticmethod
    def _quote(weight, postcode, price, stale):
        return Answer(200, {"weight_grams": weight, "postcode": postcode, "price_cents": price, "stale": stale})

    def request_body(self, weight, postcode):
        return json.dumps({"weight_grams": weight, "postcode": postcode}).encode()


# --------------------------------------------------------------------------------------------
# Bookings in PostgreSQL (task 7): what is common to both drivers.
#
# The rules: /readyz and the booking routes answer within 2 s whatever the database does
# (res-7.4, res-7.6), nothing else waits on it (res-7.5, res-7.7), and the service recovers by
# itself (res-7.8). A database that hangs is the hard case: the TCP connection is accepted (or
# stays open) and then nothing comes back, so a blocking driver call would wait for ever, and
# libpq's own connect_timeout is per attempt (per address, and rounded to whole seconds). So each
# design drives its driver in non-blocking mode and bounds every step itself with one deadline
# per request: waiting for a pool slot, connecting, and every query. A connection whose query was
# given up on is in an unknown state (a query sent, its answer perhaps still to come): it is
# closed at once, never put back. An attempt to connect that was given up on keeps its pool slot
# until it ends (psycopg's connect_timeout bounds it) and is then put back or closed.

SQL_SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    id           text        PRIMARY KEY,
    weight_grams integer     NOT NULL CHECK (weight_grams BETWEEN 1 AND 30000),
    postcode     text        NOT NULL,
    price_cents  integer     NOT NULL CHECK (price_cents BETWEEN 0 AND 10000000),
    created_at   timestamptz NOT NULL DEFAULT now()
)"""
SQL_INSERT = ("INSERT INTO bookings (id, weight_grams, postcode, price_cents) "
              "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING")
SQL_FETCH = "SELECT weight_grams, postcode, price_cents FROM bookings WHERE id = %s"


class DbWork:
    """What a route needs from the database: statements run in order on one connection."""

    __slots__ = ("kind", "statements", "extra")

    def __init__(self, kind, statements, **extra):
        self.kind, self.statements, self.extra = kind, statements, extra


class DbUnavailable(Exception):
    """The database did not answer in time, or refused: the route answers 503."""


def db_deadline(started):
    return None if DB_BUDGET is None else started + DB_BUDGET


def time_left(deadline):
    """Seconds left before the deadline (None: no bound, the db-no-timeouts bug)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def socket_looks_dead(fd):
    """An idle connection's socket has nothing to say: readable means the server (or the link)
    closed it, or sent something we did not ask for. Either way it is not reused."""
    try:
        p = select.poll()
        p.register(fd, select.POLLIN | select.POLLPRI)
        return bool(p.poll(0))
    except (OSError, ValueError):
        return True


def connect_options(dsn_options):
    """libpq `options`: keep the URL's own, add a server-side statement_timeout."""
    mine = f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
    return f"{dsn_options} {mine}".strip() if dsn_options else mine


class GaveUpConnecting(Exception):
    def __init__(self, task):
        super().__init__("gave up connecting")
        self.task = task


class AsyncPool:
    """A small pool over psycopg 3's AsyncConnection (asyncio design).

    asyncio.wait_for bounds each step; psycopg's async connections never block the event loop
    (the socket is non-blocking and psycopg waits with loop.add_reader), so /healthz, /breaker and
    /estimates go on while a query hangs."""

    def __init__(self, dsn):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.pg = psycopg
        self.dsn = dsn
        self.options = connect_options(conninfo_to_dict(dsn).get("options"))
        self.idle = []
        self.slots_used = 0
        self.waiters = collections.deque()
        self.settling = set()  # background tasks: connections given up on, to be put back
        self.schema_ready = False
        self.single = None  # INDEP_BUG=single-connection
        self.single_lock = asyncio.Lock()

    def _connect_coro(self):
        kwargs = {"autocommit": True, "prepare_threshold": None, "options": self.options,
                  "application_name": "python-resilience"}
        if BUG != "db-no-timeouts":
            kwargs["connect_timeout"] = DB_CONNECT_TIMEOUT
        return self.pg.AsyncConnection.connect(self.dsn, **kwargs)

    # -- pool slots: at most DB_POOL_SIZE connections, idle or busy -----------------------------

    async def _take_slot(self, deadline):
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()
        if self.slots_used < DB_POOL_SIZE and not self.waiters:
            self.slots_used += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await asyncio.wait_for(fut, time_left(deadline))
        except (asyncio.TimeoutError, TimeoutError):
            raise DbUnavailable(f"all {DB_POOL_SIZE} database connections are busy") from None

    def _give_slot(self):
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes to the first waiter
                return
        self.slots_used -= 1

    # -- connections ------------------------------------------------------------------------------

    def _alive(self, conn):
        try:
            return (not conn.closed and conn.info.transaction_status == self.pg.pq.TransactionStatus.IDLE
                    and not socket_looks_dead(conn.pgconn.socket))
        except Exception:
            return False

    async def _close(self, conn):
        try:
            await conn.close()  # PQfinish on a non-blocking socket: does not wait for the server
        except Exception as exc:
            log(f"database: closing a connection: {exc!r}")

    def _checkin(self, conn):
        if self._alive(conn):
            self.idle.append(conn)
            return True
        return False

    async def _checkout(self, deadline, fresh):
        while self.idle and not fresh:
            conn = self.idle.pop()
            if self._alive(conn):
                return conn, True
            await self._close(conn)  # the outage broke it: replaced below
        task = asyncio.ensure_future(self._connect_coro())
        done, _ = await asyncio.wait({task}, timeout=time_left(deadline))
        if not done:
            raise GaveUpConnecting(task)
        try:
            return task.result(), False
        except self.pg.Error as exc:
            raise DbUnavailable(f"cannot connect: {str(exc).strip()[:200]}") from None

    async def _settle(self, task):
        """A connection we stopped waiting for: put it back if it came, then free its slot."""
        try:
            conn = await task
        except Exception:
            conn = None
        try:
            if conn is not None and not self._checkin(conn):
                await self._close(conn)
        finally:
            self._give_slot()

    async def _execute(self, conn, statements, deadline):
        async def run():
            row = None
            for sql, params in statements:
                cur = await conn.execute(sql, params)
                row = await cur.fetchone() if cur.description else None
            return row

        try:
            return await asyncio.wait_for(run(), time_left(deadline))
        except (asyncio.TimeoutError, TimeoutError):
            raise DbTimeout() from None

    # -- the one entry point --------------------------------------------------------------------

    async def run(self, work, deadline):
        """Runs the work's statements; returns the last one's first row, or raises
        DbUnavailable (503) or another psycopg error (500)."""
        statements = work.statements
        if not self.schema_ready:
            statements = [(SQL_SCHEMA, None)] + statements
        try:
            if BUG == "single-connection":
                row = await self._run_single(statements, deadline)
            elif BUG == "pool-slot-leak":
                row = await self._run_leaky(statements, deadline)
            else:
                row = await self._run_pooled(statements, deadline)
        except DbTimeout:
            raise DbUnavailable(f"no answer within {DB_BUDGET} s") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise DbUnavailable(f"no connection within {DB_BUDGET} s") from None
        except (self.pg.OperationalError, self.pg.InterfaceError) as exc:
            raise DbUnavailable(f"connection lost: {str(exc).strip()[:200]}") from None
        self.schema_ready = True
        return row

    async def _run_pooled(self, statements, deadline):
        await self._take_slot(deadline)
        keep_slot = False  # True: a connect settling in the background frees the slot
        try:
            for attempt in (1, 2):
                try:
                    conn, reused = await self._checkout(deadline, fresh=attempt == 2)
                except GaveUpConnecting as gave_up:
                    keep_slot = True
                    settle = asyncio.ensure_future(self._settle(gave_up.task))
                    self.settling.add(settle)
                    settle.add_done_callback(self.settling.discard)
                    raise DbUnavailable(f"no connection within {DB_BUDGET} s") from None
                try:
                    row = await self._execute(conn, statements, deadline)
                except DbTimeout:
                    # A query is in flight on it and its answer may still come: never reuse it.
                    await self._close(conn)
                    raise
                except (self.pg.OperationalError, self.pg.InterfaceError) as exc:
                    await self._close(conn)
                    if reused and attempt == 1 and (deadline is None or time_left(deadline) > 0.05):
                        # The outage broke it while it sat in the pool: once more on a new one
                        # (an INSERT too: its id, chosen beforehand, makes it safe to repeat).
                        log(f"database: a pooled connection was broken ({str(exc).strip()[:80]}); retrying")
                        continue
                    raise
                except self.pg.Error:
                    if not self._checkin(conn):
                        await self._close(conn)
                    raise
                self._checkin(conn)
                return row
        finally:
            if not keep_slot:
                self._give_slot()

    async def _run_leaky(self, statements, deadline):
        # The bug, as it is often written: the slot is given back, and the connection put back,
        # on the success path only. A request that times out or loses its connection keeps its
        # slot for ever, and the connection it had is neither closed nor reused.
        await self._take_slot(deadline)
        conn = None
        while self.idle and conn is None:
            conn = self.idle.pop()
            if not self._alive(conn):
                await self._close(conn)
                conn = None
        if conn is None:
            conn = await asyncio.wait_for(self._connect_coro(), time_left(deadline))
        row = await self._execute(conn, statements, deadline)
        self._checkin(conn)
        self._give_slot()
        return row

    async def _run_single(self, statements, deadline):
        # The bug: one connection, opened once (at start-up) and shared under a lock; the waits
        # are bounded, but nothing ever replaces it once the outage broke it.
        try:
            await asyncio.wait_for(self.single_lock.acquire(), time_left(deadline))
        except (asyncio.TimeoutError, TimeoutError):
            raise DbUnavailable("the database connection is busy") from None
        try:
            if self.single is None:
                self.single = await asyncio.wait_for(self._connect_coro(), time_left(deadline))
            return await self._execute(self.single, statements, deadline)
        finally:
            self.single_lock.release()

    async def close_all(self):
        for conn in self.idle + ([self.single] if self.single else []):
            await self._close(conn)
        self.idle.clear()


class DbTimeout(Exception):
    """A query's answer did not come before the request's deadline."""


def pg2_wait(conn, deadline):
    """Drives a psycopg2 asynchronous connection until its operation completes, or raises
    DbTimeout at the deadline. psycopg2's "async mode" never blocks: conn.poll() says whether it
    needs the socket readable or writable, and poll(2) waits for that with what is left."""
    import psycopg2
    from psycopg2 import extensions as ext

    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        if state == ext.POLL_READ:
            events = select.POLLIN
        elif state == ext.POLL_WRITE:
            events = select.POLLOUT
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        left = time_left(deadline)
        if left is not None and left <= 0:
            raise DbTimeout()
        p = select.poll()
        p.register(conn.fileno(), events)
        if not p.poll(None if left is None else max(1, math.ceil(left * 1000))):
            raise DbTimeout()


class ThreadPool:
    """A small pool over psycopg2 connections in asynchronous mode (threads design).

    A plain blocking psycopg2 call cannot be bounded from outside (libpq waits in poll() with no
    timeout; statement_timeout is the server's, and a hung link never brings its answer), so the
    connections are opened with async_=1 and every step is driven by pg2_wait against the
    request's deadline. Giving up on a connection (connecting, or a query) closes it at once: we
    hold its handle from the first moment, and closing a non-blocking socket does not wait."""

    def __init__(self, dsn):
        import psycopg2
        from psycopg2 import extensions

        self.pg = psycopg2
        self.dsn = dsn
        self.options = connect_options(extensions.parse_dsn(dsn).get("options"))
        self.lock = threading.Lock()
        self.idle = []
        self.slots = threading.Semaphore(DB_POOL_SIZE)
        self.schema_ready = False
        self.single = None  # INDEP_BUG=single-connection
        self.single_lock = threading.Lock()

    def _connect(self, deadline):
        kwargs = {"async_": 1, "options": self.options, "application_name": "python-resilience"}
        conn = self.pg.connect(self.dsn, **kwargs)  # PQconnectStart: returns at once
        try:
            pg2_wait(conn, deadline)
        except BaseException:
            conn.close()  # given up on (or refused): closed now, never lost
            raise
        return conn

    def _alive(self, conn):
        try:
            return not conn.closed and not conn.isexecuting() and not socket_looks_dead(conn.fileno())
        except Exception:
            return False

    @staticmethod
    def _close(conn):
        try:
            conn.close()
        except Exception as exc:
            log(f"database: closing a connection: {exc!r}")

    def _checkin(self, conn):
        if self._alive(conn):
            with self.lock:
                self.idle.append(conn)
            return True
        self._close(conn)
        return False

    def _checkout(self, deadline, fresh):
        while not fresh:
            with self.lock:
                conn = self.idle.pop() if self.idle else None
            if conn is None:
                break
            if self._alive(conn):
                return conn, True
            self._close(conn)  # the outage broke it: replaced below
        return self._connect(deadline), False

    def _execute(self, conn, statements, deadline):
        row = None
        for sql, params in statements:
            cur = conn.cursor()
            cur.execute(sql, params)  # async mode: sends (part of) the query, returns at once
            pg2_wait(conn, deadline)
            row = cur.fetchone() if cur.description else None
        return row

    def run(self, work, deadline):
        statements = work.statements
        if not self.schema_ready:
            statements = [(SQL_SCHEMA, None)] + statements
        try:
            if BUG == "single-connection":
                row = self._run_single(statements, deadline)
            elif BUG == "pool-slot-leak":
                row = self._run_leaky(statements, deadline)
            else:
                row = self._run_pooled(statements, deadline)
        except DbTimeout:
            raise DbUnavailable(f"no answer within {DB_BUDGET} s") from None
        except (self.pg.OperationalError, self.pg.InterfaceError) as exc:
            raise DbUnavailable(f"connection lost: {str(exc).strip()[:200]}") from None
        self.schema_ready = True
        return row

    def _take_slot(self, deadline):
        left = time_left(deadline)
        if not self.slots.acquire(timeout=left):
            raise DbUnavailable(f"all {DB_POOL_SIZE} database connections are busy")

    def _run_pooled(self, statements, deadline):
        self._take_slot(deadline)
        try:
            for attempt in (1, 2):
                try:
                    conn, reused = self._checkout(deadline, fresh=attempt == 2)
                except DbTimeout:
                    raise DbUnavailable(f"no connection within {DB_BUDGET} s") from None
                except self.pg.Error as exc:
                    raise DbUnavailable(f"cannot connect: {str(exc).strip()[:200]}") from None
                try:
                    row = self._execute(conn, statements, deadline)
                except DbTimeout:
                    # A query is in flight on it and its answer may still come: never reuse it.
                    self._close(conn)
                    raise
                except (self.pg.OperationalError, self.pg.InterfaceError) as exc:
                    self._close(conn)
                    if reused and attempt == 1 and (deadline is None or time_left(deadline) > 0.05):
                        log(f"database: a pooled connection was broken ({str(exc).strip()[:80]}); retrying")
                        continue
                    raise
                except self.pg.Error:
                    self._checkin(conn)
                    raise
                self._checkin(conn)
                return row
        finally:
            self.slots.release()

    def _run_leaky(self, statements, deadline):
        # The bug (see AsyncPool._run_leaky): slot and connection given back on success only.
        self._take_slot(deadline)
        conn = None
        while conn is None:
            with self.lock:
                conn = self.idle.pop() if self.idle else None
            if conn is None:
                break
            if not self._alive(conn):
                self._close(conn)
                conn = None
        if conn is None:
            conn = self.pg.connect(self.dsn, async_=1, options=self.options)
            pg2_wait(conn, deadline)  # on a timeout: neither closed nor given back
        row = self._execute(conn, statements, deadline)
        self._checkin(conn)
        self.slots.release()
        return row

    def _run_single(self, statements, deadline):
        # The bug (see AsyncPool._run_single): one connection, never replaced.
        left = time_left(deadline)
        if not self.single_lock.acquire(timeout=-1 if left is None else left):
            raise DbUnavailable("the database connection is busy")
        try:
            if self.single is None:
                self.single = self._connect(deadline)
            return self._execute(self.single, statements, deadline)
        finally:
            self.single_lock.release()

    def close_all(self):
        with self.lock:
            conns, self.idle = self.idle, []
        for conn in conns + ([self.single] if self.single else []):
            self._close(conn)


# --------------------------------------------------------------------------------------------
# Design 1 (default): asyncio


class AsyncBulkhead:
    def __init__(self):
        self.in_flight = 0
        self.queue = asyncio.Semaphore(BULKHEAD_SIZE) if BUG == "bulkhead-queues" else None

    async def acquire(self):
        if self.queue is not None:
            await self.queue.acquire()  # the bug: waits for a slot instead of refusing
            return True
        # One event loop: no lock needed between the test and the increment.
        if self.in_flight >= BULKHEAD_SIZE:
            return False
        self.in_flight += 1
        return True

    def release(self):
        if self.queue is not None:
            self.queue.release()
        else:
            self.in_flight -= 1


class AsyncCarrierError(Exception):
    pass


async def async_attempt(svc, body, timeout):
    try:
        # The timeout covers the whole attempt: connect, send, and the last byte of the answer.
        status, headers, data = await asyncio.wait_for(_async_call(svc, body), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        return TIMED_OUT
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, AsyncCarrierError, ValueError):
        return RESET
    except Exception as exc:  # whatever the carrier sends, the quote must end and free its slot
        log(f"carrier call: unexpected {exc!r}")
        return RESET
    return classify(status, headers.get("retry-after"), data)


async def _async_call(svc, body):
    if svc.client_closed:
        raise AsyncCarrierError("the carrier client is closed")  # INDEP_BUG=client-closed-first
    ctx = ssl.create_default_context() if svc.carrier_tls else None
    reader, writer = await asyncio.open_connection(svc.carrier_host, svc.carrier_port, ssl=ctx)
    svc.track_call(writer, True)
    try:
        writer.write(
            (f"POST {svc.carrier_path} HTTP/1.1\r\nHost: {svc.carrier_netloc}\r\n"
             f"Content-Type: application/json\r\nAccept: application/json\r\n"
             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        )
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise AsyncCarrierError("closed without an answer")
            fields = line.decode("latin-1").split(None, 2)
            if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
                raise AsyncCarrierError(f"bad status line {line!r}")
            status = int(fields[1])
            headers = await _read_headers(reader)
            if status >= 200 or status == 101:
                break  # skip 1xx interim answers
        if headers.get("transfer-encoding", "").lower().endswith("chunked"):
            data = await _read_chunked(reader)
        elif "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        else:
            data = await reader.read(1 << 20)
        return status, headers, data
    finally:
        svc.track_call(writer, False)
        writer.close()


async def _read_headers(reader):
    headers = {}
    for _ in range(200):
        line = await reader.readline()
        if not line:
            raise AsyncCarrierError("closed in the headers")
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    raise AsyncCarrierError("too many headers")


async def _read_chunked(reader):
    data = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"x", 16)
        if size == 0:
            await _read_headers(reader)  # trailers
            return bytes(data)
        data += await reader.readexactly(size)
        await reader.readline()


async def async_estimate(svc, bulkhead, weight, postcode, started):
    adm = svc.before(weight, postcode)
    if isinstance(adm, Answer):
        return adm
    if not await bulkhead.acquire():
        return svc.bulkhead_full(adm)
    try:
        plan = quote_plan(adm, svc.breaker, started)
        body = svc.request_body(weight, postcode)
        action = next(plan)
        while True:
            if action[0] == "attempt":
                outcome = await async_attempt(svc, body, action[1])
                action = plan.send(outcome)
            else:
                await asyncio.sleep(action[1])
                action = next(plan)
    except StopIteration as done:
        result = done.value
    finally:
        bulkhead.release()
    return svc.after(weight, postcode, adm, result, started)


async def async_db(svc, pool, work, started):
    try:
        row = await pool.run(work, db_deadline(started))
    except DbUnavailable as exc:
        return svc.db_unavailable(work, str(exc), started)
    return svc.db_answer(work, row)


async def async_schema(pool):
    """Creates the table before the port opens; a database that is not up yet gets a while."""
    until = time.monotonic() + DB_STARTUP_WAIT
    work = DbWork("schema", [])
    while True:
        try:
            await pool.run(work, time.monotonic() + 3.0)
            log("database: table bookings ready")
            return
        except Exception as exc:
            if time.monotonic() > until:
                log(f"database: no table yet ({exc}); starting anyway, it is created on first use")
                return
            log(f"database: waiting for it at start-up: {exc}")
            await asyncio.sleep(0.5)


async def async_main(svc, port, dsn):
    bulkhead = AsyncBulkhead()
    pool = AsyncPool(dsn)
    await async_schema(pool)

    async def dispatch(method, target, body, started):
        routed = svc.route(method, target, body)
        if isinstance(routed, tuple) and routed[0] == "gated":
            # INDEP_BUG=all-routes-gated: the database is asked before anything else.
            gate = DbWork("ready", [("SELECT 1", None)])
            try:
                await pool.run(gate, db_deadline(started))
            except DbUnavailable as exc:
                return svc.db_unavailable(gate, str(exc), started)
            routed = routed[1]
        if isinstance(routed, Answer):
            return routed
        if isinstance(routed, DbWork):
            try:
                return await async_db(svc, pool, routed, started)
            except Exception as exc:  # a bug of ours, or a database error that is not an outage
                log(f"database: {routed.kind} failed: {exc!r}")
                return problem(500, "internal error")
        _, weight, postcode = routed
        try:
            return await async_estimate(svc, bulkhead, weight, postcode, started)
        except Exception as exc:  # a bug of ours still answers a problem document
            log(f"estimate failed: {exc!r}")
            return problem(500, "internal error")

    live = set()  # AsyncConn: every client connection still open (the drain waits for them)
    draining = asyncio.Event()

    async def connection(reader, writer):
        conn_state = AsyncConn(reader, writer)
        live.add(conn_state)
        try:
            while True:
                try:
                    # Idle keep-alive connections are closed after a minute.
                    line = await asyncio.wait_for(reader.readline(), 60)
                except (asyncio.TimeoutError, TimeoutError):
                    break
                if not line:
                    break
                started = time.monotonic()  # res-2.2 counts from the request's arrival
                conn_state.busy = True  # from here on the drain waits for this request
                fields = line.decode("latin-1").split()
                if len(fields) != 3 or not fields[2].startswith("HTTP/1."):
                    await _write(writer, "HTTP/1.1", problem(400, "malformed request line"), False, False)
                    break
                method, target, version = fields
                headers = await _read_headers(reader)
                body = b""
                if headers.get("transfer-encoding", "").lower().endswith("chunked"):
                    body = await _read_chunked(reader)
                elif "content-length" in headers:
                    length = int(headers["content-length"])
                    if length > MAX_BODY:
                        await _write(writer, version, problem(413, f"bodies are limited to {MAX_BODY} bytes"), False, False)
                        break
                    body = await reader.readexactly(length)
                conn = headers.get("connection", "").lower()
                keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
                answer = await dispatch(method, target, body, started)
                if draining.is_set() and CLOSES_IDLE and not conn_state.has_input():
                    # res-8.1: shutting down, and no other request is waiting on this connection:
                    # this answer is its last one.
                    keep_alive = False
                await _write(writer, version, answer, keep_alive, method == "HEAD")
                conn_state.busy = False
                if not keep_alive:
                    break
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, AsyncCarrierError):
            pass
        finally:
            conn_state.busy = False
            live.discard(conn_state)
            writer.close()

    server = await asyncio.start_server(connection, host=None, port=port, backlog=256)
    loop = asyncio.get_running_loop()

    def on_signal(name):
        if draining.is_set():
            return  # a second signal changes nothing
        log(f"{name}: draining ({sum(c.busy for c in live)} request(s) in flight, {len(live)} connection(s) open)")
        draining.set()
        if BUG != "serves-while-draining":
            # res-8.1: stop taking new work at once, from the signal's own callback: new
            # connections are refused from now on. (Python 3.11's Server.close leaves the
            # connections already accepted alone; the drain below deals with them.)
            server.close()

    if BUG == "sigterm-ignored":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the bug: as a container's PID 1 would
    elif BUG != "sigterm-default":  # the bug: only Ctrl-C is handled; SIGTERM kills on the spot
        loop.add_signal_handler(signal.SIGTERM, on_signal, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_signal, "SIGINT")
    log(f"asyncio service on port {port}; carrier {svc.carrier_netloc}; bug={BUG or '-'} styles={sorted(STYLES)}")

    await draining.wait()
    signalled = time.monotonic()
    if BUG == "client-closed-first":
        svc.close_client()
    # res-8.2: nothing is cancelled: every request in flight runs to its answer (each has its own
    # bound: 4 s for a quote, 1.5 s for the database). Idle keep-alive connections are closed.
    while True:
        await asyncio.sleep(DRAIN_POLL)
        if CLOSES_IDLE:
            for c in list(live):
                if c.idle():
                    c.writer.close()  # the handler's readline sees the end of the stream
        if BUG == "serves-while-draining":
            done = not any(c.busy for c in live)  # the bug: new requests were served meanwhile
        else:
            done = not live
        if done:
            break
        if DRAIN_LIMIT is not None and time.monotonic() - signalled >= DRAIN_LIMIT:
            log(f"drain: {len(live)} connection(s) still open {DRAIN_LIMIT:g} s after the signal; exiting anyway")
            break
    server.close()
    # res-8.3: nothing left running: connects to the database still settling in the background
    # are cancelled, the pool's connections closed. asyncio.run then cancels whatever task is left
    # (only after DRAIN_LIMIT) and closes the loop; main() stops the sweeper thread.
    for task in list(pool.settling):
        task.cancel()
    await pool.close_all()
    log(f"drained in {(time.monotonic() - signalled) * 1000:.0f} ms; exiting")


# The drain closes idle keep-alive connections; two bugs do not (one of them serves new requests
# on them while it waits).
CLOSES_IDLE = BUG not in ("serves-while-draining", "drain-waits-for-idle")


def socket_has_input(fd):
    """Something to read on a socket (a request's bytes, or the peer's end of stream)?"""
    try:
        p = select.poll()
        p.register(fd, select.POLLIN | select.POLLPRI)
        return bool(p.poll(0))
    except (OSError, ValueError):
        return False


class AsyncConn:
    """One client connection of the asyncio server, as the drain sees it."""

    __slots__ = ("reader", "writer", "busy")

    def __init__(self, reader, writer):
        self.reader, self.writer, self.busy = reader, writer, False

    def has_input(self):
        # A request that has arrived is in the StreamReader's buffer, or still in the kernel's.
        if len(getattr(self.reader, "_buffer", b"")):
            return True
        sock = self.writer.get_extra_info("socket")
        return sock is not None and socket_has_input(sock.fileno())

    def idle(self):
        return not self.busy and not self.has_input()


async def _write(writer, version, answer, keep_alive, head_only):
    body, headers = answer.encode()
    headers["Connection"] = "keep-alive" if keep_alive else "close"
    status = HTTPStatus(answer.status)
    lines = [f"{version} {status.value} {status.phrase}"] + [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body))
    await writer.drain()


# --------------------------------------------------------------------------------------------
# Design 2 (INDEP_STYLE=threads): a thread per request, blocking calls


class ThreadBulkhead:
    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = 0
        self.queue = threading.Semaphore(BULKHEAD_SIZE) if BUG == "bulkhead-queues" else None

    def acquire(self):
        if self.queue is not None:
            return self.queue.acquire()  # the bug: blocks until a slot is free
        with self.lock:
            if self.in_flight >= BULKHEAD_SIZE:
                return False
            self.in_flight += 1
            return True

    def release(self):
        if self.queue is not None:
            self.queue.release()
        else:
            with self.lock:
                self.in_flight -= 1


def thread_attempt(svc, body, timeout):
    """One blocking call with http.client.

    A socket timeout bounds each read, not the attempt: a carrier that trickles a byte every
    0.9 s would never trip it. A watchdog timer therefore shuts the socket down when the attempt's
    second is up, which makes whatever read is blocked fail at once."""
    if svc.client_closed:
        return RESET  # INDEP_BUG=client-closed-first: fails before connecting
    cls = http.client.HTTPSConnection if svc.carrier_tls else http.client.HTTPConnection
    conn = cls(svc.carrier_host, svc.carrier_port, timeout=timeout)
    fired = threading.Event()

    def watchdog():
        fired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    svc.track_call(conn, True)
    try:
        conn.request("POST", svc.carrier_path, body=body,
                     headers={"Content-Type": "application/json", "Accept": "application/json",
                              "Connection": "close"})
        resp = conn.getresponse()
        data = resp.read()
        if fired.is_set():
            return TIMED_OUT  # the watchdog cut the answer short
        return classify(resp.status, resp.getheader("Retry-After"), data)
    except (socket.timeout, TimeoutError):
        return TIMED_OUT
    except (OSError, http.client.HTTPException):
        return TIMED_OUT if fired.is_set() else RESET
    except Exception as exc:  # whatever the carrier sends, the quote must end and free its slot
        log(f"carrier call: unexpected {exc!r}")
        return TIMED_OUT if fired.is_set() else RESET
    finally:
        svc.track_call(conn, False)
        timer.cancel()
        conn.close()


def thread_estimate(svc, bulkhead, weight, postcode, started):
    adm = svc.before(weight, postcode)
    if isinstance(adm, Answer):
        return adm
    if not bulkhead.acquire():
        return svc.bulkhead_full(adm)
    try:
        plan = quote_plan(adm, svc.breaker, started)
        body = svc.request_body(weight, postcode)
        action = next(plan)
        while True:
            if action[0] == "attempt":
                action = plan.send(thread_attempt(svc, body, action[1]))
            else:
                time.sleep(action[1])
                action = next(plan)
    except StopIteration as done:
        result = done.value
    finally:
        bulkhead.release()
    return svc.after(weight, postcode, adm, result, started)


def thread_db(svc, pool, work, started):
    try:
        row = pool.run(work, db_deadline(started))
    except DbUnavailable as exc:
        return svc.db_unavailable(work, str(exc), started)
    return svc.db_answer(work, row)


def thread_schema(pool):
    until = time.monotonic() + DB_STARTUP_WAIT
    work = DbWork("schema", [])
    while True:
        try:
            pool.run(work, time.monotonic() + 3.0)
            log("database: table bookings ready")
            return
        except Exception as exc:
            if time.monotonic() > until:
                log(f"database: no table yet ({exc}); starting anyway, it is created on first use")
                return
            log(f"database: waiting for it at start-up: {exc}")
            time.sleep(0.5)


def thread_main(svc, port, dsn):
    bulkhead = ThreadBulkhead()
    pool = ThreadPool(dsn)
    thread_schema(pool)

    def dispatch(method, target, body, started):
        routed = svc.route(method, target, body)
        if isinstance(routed, tuple) and routed[0] == "gated":
            # INDEP_BUG=all-routes-gated: the database is asked before anything else.
            gate = DbWork("ready", [("SELECT 1", None)])
            try:
                pool.run(gate, db_deadline(started))
            except DbUnavailable as exc:
                return svc.db_unavailable(gate, str(exc), started)
            routed = routed[1]
        if isinstance(routed, Answer):
            return routed
        if isinstance(routed, DbWork):
            try:
                return thread_db(svc, pool, routed, started)
            except Exception as exc:  # a bug of ours, or a database error that is not an outage
                log(f"database: {routed.kind} failed: {exc!r}")
                return problem(500, "internal error")
        _, weight, postcode = routed
        try:
            return thread_estimate(svc, bulkhead, weight, postcode, started)
        except Exception as exc:  # a bug of ours still answers a problem document
            log(f"estimate failed: {exc!r}")
            return problem(500, "internal error")

    draining = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # idle keep-alive connections do not hold a thread for ever

        def handle_one_request(self):
            self._started = time.monotonic()
            self._pipelined = False
            try:
                super().handle_one_request()
            finally:
                state = self.server.live.get(self.request)
                if state is not None:
                    # Still busy when the next request is already here (pipelined, while
                    # draining): the drain must not take the connection for an idle one.
                    state.busy = self._pipelined

        def parse_request(self):
            if not self.raw_requestline.endswith(b"\n"):
                # The stream ended in the middle of the request line (the client went away, or
                # the drain shut an idle connection whose request had not arrived): there is no
                # request to answer, and http.server would otherwise parse the half line.
                self.close_connection = True
                return False
            # The request line has arrived: res-2.2's clock starts now (not while the keep-alive
            # connection sat idle), and the drain waits for this request from now on.
            self._started = time.monotonic()
            state = self.server.live.get(self.request)
            if state is not None:
                state.busy = True
            return super().parse_request()

        def __getattr__(self, name):
            # Every method, even a made-up one, reaches the dispatcher (and gets a 405).
            if name.startswith("do_"):
                return self._dispatch
            raise AttributeError(name)

        def _read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower().endswith("chunked"):
                data = bytearray()
                while True:
                    size = int(self.rfile.readline(100).split(b";")[0].strip() or b"x", 16)
                    if size == 0:
                        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return bytes(data)
                    if len(data) + size > MAX_BODY:
                        raise ValueError("body too large")
                    data += self.rfile.read(size)
                    self.rfile.readline(100)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ValueError("body too large")
            return self.rfile.read(length) if length else b""

        def _dispatch(self):
            try:
                body = self._read_body()
            except ValueError as exc:
                self.send_error(400 if "too large" not in str(exc) else 413, str(exc))
                return
            answer = dispatch(self.command, self.path, body, self._started)
            body, headers = answer.encode()
            self.send_response(answer.status)
            for k, v in headers.items():
                self.send_header(k, v)
            if draining.is_set() and CLOSES_IDLE:
                if self._request_waiting():
                    self._pipelined = True  # it arrived before we closed: it is answered too
                else:
                    # res-8.1: shutting down: this answer is the connection's last.
                    self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _request_waiting(self):
            """Has another request (or part of one) arrived on this connection? Looks in the
            handler's read buffer (pipelined requests are read ahead into it) and then the
            kernel's, without blocking: peek on a non-blocking socket returns what is buffered."""
            try:
                self.connection.settimeout(0)
                try:
                    return bool(self.rfile.peek(1))
                finally:
                    self.connection.settimeout(self.timeout)
            except (OSError, ValueError):
                return False

        def send_error(self, code, message=None, explain=None):
            # Malformed requests get a problem document too (res-0.3).
            body, headers = problem(code, message or HTTPStatus(code).phrase).encode()
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, fmt, *args):
            pass  # quotes are logged by Service.after

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

        def __init__(self, *args, **kwargs):
            self.live = {}  # client socket -> ThreadConn, every connection still open
            self.live_lock = threading.Lock()
            super().__init__(*args, **kwargs)

        def process_request(self, request, client_address):
            # Registered in the accepting thread, before the handler's thread starts, so that
            # the drain cannot miss a connection that was just accepted.
            with self.live_lock:
                self.live[request] = ThreadConn(request)
            super().process_request(request, client_address)

        def shutdown_request(self, request):
            with self.live_lock:
                self.live.pop(request, None)
            super().shutdown_request(request)

        def handle_error(self, request, client_address):
            exc = sys.exc_info()[1]
            if isinstance(exc, ConnectionError):
                # The client went away before its answer was written (or the drain's backstop
                # shut its connection): one line, not a traceback.
                log(f"connection from {client_address[0]}:{client_address[1]}: {exc!r}")
                return
            super().handle_error(request, client_address)

        def in_flight(self):
            with self.live_lock:
                return [c for c in self.live.values() if c.busy]

    server = Server(("0.0.0.0", port), Handler)

    def wait_then_shutdown():
        # INDEP_BUG=serves-while-draining: the listening socket stays open (and new requests
        # are served) until nothing is in flight; only then does the accept loop stop.
        until = time.monotonic() + (DRAIN_LIMIT or 1e9)
        while server.in_flight() and time.monotonic() < until:
            time.sleep(DRAIN_POLL)
        server.shutdown()

    def on_signal(signum, frame):
        if draining.is_set():
            return  # a second signal changes nothing
        draining.set()
        # No lock here: this runs in the main thread, which may hold live_lock (process_request)
        # at the very moment the signal comes. list() of a dict's values is atomic under the GIL.
        conns = list(server.live.values())
        try:
            log(f"{signal.Signals(signum).name}: draining ({sum(c.busy for c in conns)} request(s) in flight, "
                f"{len(conns)} connection(s) open)")
        except RuntimeError:
            pass  # the main thread was writing to stderr when the signal came (reentrant write)
        if BUG == "serves-while-draining":
            threading.Thread(target=wait_then_shutdown, daemon=True).start()
            return
        # res-8.1: new connections are refused from now on. This runs in the main thread, between
        # two polls of serve_forever: shutdown() (not close()) takes the socket out of LISTEN
        # while its descriptor stays valid, so the poll that follows sees it ready, its accept
        # fails (socketserver ignores that) and the loop ends once server.shutdown() has asked.
        threading.Thread(target=server.shutdown, daemon=True).start()
        try:
            server.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    if BUG == "sigterm-ignored":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the bug: as a container's PID 1 would
    elif BUG != "sigterm-default":  # the bug: only Ctrl-C is handled; SIGTERM kills on the spot
        signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"threaded service on port {port}; carrier {svc.carrier_netloc}; bug={BUG or '-'} styles={sorted(STYLES)}")
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    signalled = time.monotonic()
    if BUG == "client-closed-first":
        svc.close_client()
    # res-8.2: the requests in flight run to their answers in their own threads (each has its own
    # bound: 4 s for a quote, 1.5 s for the database). Idle keep-alive connections are shut down:
    # the handler's readline sees the end of the stream and its thread ends.
    while True:
        with server.live_lock:
            conns = list(server.live.values())
        if CLOSES_IDLE:
            for c in conns:
                if c.idle():
                    try:
                        c.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        if BUG == "serves-while-draining":
            done = not any(c.busy for c in conns)
        else:
            done = not conns
        if done:
            break
        if DRAIN_LIMIT is not None and time.monotonic() - signalled >= DRAIN_LIMIT:
            log(f"drain: {len(conns)} connection(s) still open {DRAIN_LIMIT:g} s after the signal; exiting anyway")
            break
        time.sleep(DRAIN_POLL)
    # res-8.3: nothing left running: the pool's connections are closed; handler threads cut by
    # DRAIN_LIMIT and attempt watchdogs are daemon threads; main() stops the sweeper thread.
    pool.close_all()
    log(f"drained in {(time.monotonic() - signalled) * 1000:.0f} ms; exiting")


class ThreadConn:
    """One client connection of the threaded server, as the drain sees it."""

    __slots__ = ("sock", "busy")

    def __init__(self, sock):
        self.sock, self.busy = sock, False

    def idle(self):
        # Not serving a request (nor about to serve one read ahead into its handler's buffer:
        # the handler keeps busy set then), and no request waiting in the kernel.
        return not self.busy and not socket_has_input(self.sock.fileno())


def main():
    port = int(os.environ.get("PORT", "8080"))
    carrier = os.environ.get("CARRIER_URL")
    if not carrier:
        sys.exit("CARRIER_URL is not set")
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        sys.exit("DATABASE_URL is not set (task 7 keeps bookings in PostgreSQL)")
    svc = Service(carrier)
    sweeper = Sweeper(svc.stale)
    sweeper.start()
    try:
        if "threads" in STYLES:
            thread_main(svc, port, dsn)
        else:
            asyncio.run(async_main(svc, port, dsn))
    finally:
        # res-8.3: the one non-daemon thread; stopped on every way out (a failed start too), or
        # the interpreter would wait for it for ever.
        sweeper.stop()


if __name__ == "__main__":
    main()
