#!/usr/bin/python3
"""Shipping-quote service for the integration-resilience exercise, written from its README only.

It asks a carrier's API for every quote, and survives the carrier: a 1 s timeout per attempt and
a 4 s deadline per request, at most 3 attempts with jittered exponential backoff, Retry-After,
a circuit breaker, a bulkhead of 10 carrier calls, and a stale-quote fallback.

Standard library only (Debian's /usr/bin/python3, 3.11). Two server designs:
  - default: asyncio, one event loop; the HTTP server and the carrier client are written on
    asyncio streams (the standard library has no asyncio HTTP client), and the 1 s timeout is
    asyncio.wait_for around the whole attempt;
  - INDEP_STYLE=threads: http.server.ThreadingHTTPServer, a thread per request, blocking
    http.client calls with a socket timeout and a watchdog that bounds the whole attempt.

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
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
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

# res-3.1: these statuses are failed attempts, worth another try.
RETRYABLE_STATUSES = {429, 502, 503, 504}
# res-3.4: only these carry a Retry-After we honour.
RETRY_AFTER_STATUSES = {429, 503}

WEIGHT_RE = re.compile(r"[0-9]{1,9}")  # digits only; the range test follows
POSTCODE_RE = re.compile(r"[A-Za-z0-9]{1,10}")


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


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

    # -- routing --------------------------------------------------------------------------

    def route(self, method, target):
        """Returns an Answer, or ("estimate", weight, postcode) for the carrier-calling path."""
        parts = urllib.parse.urlsplit(target)
        path = parts.path
        if path == "/healthz":
            # res-1.4: nothing here touches the carrier, the breaker or the bulkhead.
            return self._only_get(method) or Answer(200, {"status": "ok"})
        if path == "/breaker":
            # res-1.3: reads the state, never calls the carrier.
            if (wrong := self._only_get(method)) is not None:
                return wrong
            state, failures = self.breaker.snapshot(time.monotonic())
            return Answer(200, {"state": state, "consecutive_failures": failures})
        if path == "/estimates":
            if (wrong := self._only_get(method)) is not None:
                return wrong
            return self.validate(parts.query)
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
    ctx = ssl.create_default_context() if svc.carrier_tls else None
    reader, writer = await asyncio.open_connection(svc.carrier_host, svc.carrier_port, ssl=ctx)
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


async def async_main(svc, port):
    bulkhead = AsyncBulkhead()

    async def dispatch(method, target, started):
        routed = svc.route(method, target)
        if isinstance(routed, Answer):
            return routed
        _, weight, postcode = routed
        try:
            return await async_estimate(svc, bulkhead, weight, postcode, started)
        except Exception as exc:  # a bug of ours still answers a problem document
            log(f"estimate failed: {exc!r}")
            return problem(500, "internal error")

    async def connection(reader, writer):
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
                fields = line.decode("latin-1").split()
                if len(fields) != 3 or not fields[2].startswith("HTTP/1."):
                    await _write(writer, "HTTP/1.1", problem(400, "malformed request line"), False, False)
                    break
                method, target, version = fields
                headers = await _read_headers(reader)
                if "content-length" in headers:
                    await reader.readexactly(int(headers["content-length"]))  # no body is used
                conn = headers.get("connection", "").lower()
                keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
                answer = await dispatch(method, target, started)
                await _write(writer, version, answer, keep_alive, method == "HEAD")
                if not keep_alive:
                    break
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, AsyncCarrierError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, host=None, port=port, backlog=256)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"asyncio service on port {port}; carrier {svc.carrier_netloc}; bug={BUG or '-'} styles={sorted(STYLES)}")
    async with server:
        await stop.wait()


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


def thread_main(svc, port):
    bulkhead = ThreadBulkhead()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # idle keep-alive connections do not hold a thread for ever

        def handle_one_request(self):
            self._started = time.monotonic()
            super().handle_one_request()

        def __getattr__(self, name):
            # Every method, even a made-up one, reaches the dispatcher (and gets a 405).
            if name.startswith("do_"):
                return self._dispatch
            raise AttributeError(name)

        def _dispatch(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            routed = svc.route(self.command, self.path)
            if isinstance(routed, Answer):
                answer = routed
            else:
                _, weight, postcode = routed
                try:
                    answer = thread_estimate(svc, bulkhead, weight, postcode, self._started)
                except Exception as exc:  # a bug of ours still answers a problem document
                    log(f"estimate failed: {exc!r}")
                    answer = problem(500, "internal error")
            body, headers = answer.encode()
            self.send_response(answer.status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

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

    server = Server(("0.0.0.0", port), Handler)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"threaded service on port {port}; carrier {svc.carrier_netloc}; bug={BUG or '-'} styles={sorted(STYLES)}")
    server.serve_forever()
    server.server_close()


def main():
    port = int(os.environ.get("PORT", "8080"))
    carrier = os.environ.get("CARRIER_URL")
    if not carrier:
        sys.exit("CARRIER_URL is not set")
    svc = Service(carrier)
    if "threads" in STYLES:
        thread_main(svc, port)
    else:
        asyncio.run(async_main(svc, port))


if __name__ == "__main__":
    main()
