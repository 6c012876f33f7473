#!/usr/bin/python3
"""Shipping service for the observability exercise, written from its README only.

Standard library HTTP server, Debian's python3-prometheus-client for /metrics, and a small
hand-written tracer: W3C traceparent in and out, spans exported to the collector as OTLP/HTTP
JSON by a batching background thread.

INDEP_BUG=<name> plants one bug, INDEP_STYLE=<name>[,<name>] picks legitimate alternative
designs; see BUGS.md. Unknown names make the service exit at start-up.
"""

import datetime
import gzip
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.exposition import choose_encoder, gzip_accepted

# --------------------------------------------------------------------------------------------
# Bugs and styles

KNOWN_BUGS = {
    "status-class-labels",
    "histogram-ms",
    "id-in-route-label",
    "forward-traceparent",
    "no-trace-if-absent",
    "uppercase-trace-ids",
    "server-span-no-parent",
    "log-status-as-string",
    "log-once-per-error-only",
    "request-id-ignored",
    "card-in-logs",
    "no-readyz",
    "quote-not-from-carrier",
    # my own
    "metrics-skip-errors",
    "log-auth-header",
    "client-span-orphan",
    "status-attr-string",
    "carrier-error-500",
}
KNOWN_STYLES = {
    "otel-names",
    "colon-routes",
    "count-metrics",
    "text-banner",
    "int-ids",
    "no-status-histogram",
}

BUG = os.environ.get("INDEP_BUG", "").strip()
STYLES = {s.strip() for s in os.environ.get("INDEP_STYLE", "").split(",") if s.strip()}
if BUG and BUG not in KNOWN_BUGS:
    sys.stderr.write(f"unknown INDEP_BUG={BUG!r}; known: {', '.join(sorted(KNOWN_BUGS))}\n")
    sys.exit(2)
_unknown_styles = STYLES - KNOWN_STYLES
if _unknown_styles:
    sys.stderr.write(f"unknown INDEP_STYLE {sorted(_unknown_styles)}; known: {sorted(KNOWN_STYLES)}\n")
    sys.exit(2)

OTEL_NAMES = "otel-names" in STYLES
TEXT_BANNER = "text-banner" in STYLES

ROUTE_SHIPMENTS = "/shipments"
ROUTE_SHIPMENT = "/shipments/:id" if "colon-routes" in STYLES else "/shipments/{id}"
ROUTE_QUOTES = "/quotes"
ROUTE_HEALTHZ = "/healthz"
ROUTE_READYZ = "/readyz"
ROUTE_METRICS = "/metrics"
ROUTE_UNMATCHED = "unmatched"  # no route template matched the path (404 of an unknown path)

# --------------------------------------------------------------------------------------------
# Configuration

PORT = int(os.environ.get("PORT", "8080"))
CARRIER_URL = os.environ.get("CARRIER_URL", "http://127.0.0.1:41235").rstrip("/")
CARRIER_TIMEOUT = 5.0
SERVICE_NAME = os.environ.get("OTEL_SERVICE_NAME", "").strip()


def _traces_url():
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if explicit:
        return explicit
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def _env_int(name, default):
    try:
        value = int(os.environ.get(name, "").strip())
        return value if value >= 0 else default
    except ValueError:
        return default


def _otlp_headers():
    """OTEL_EXPORTER_OTLP_HEADERS / _TRACES_HEADERS: comma-separated, URL-encoded key=value."""
    headers = {}
    for var in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for item in os.environ.get(var, "").split(","):
            if "=" in item:
                k, v = item.split("=", 1)
                headers[urllib.parse.unquote(k.strip())] = urllib.parse.unquote(v.strip())
    return headers


TRACES_URL = _traces_url()
BSP_DELAY_S = _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000.0
BSP_MAX_QUEUE = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048) or 2048
BSP_MAX_BATCH = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) or 512, BSP_MAX_QUEUE)
OTLP_TIMEOUT_S = (_env_int("OTEL_EXPORTER_OTLP_TIMEOUT", 10000) or 10000) / 1000.0
OTLP_GZIP = os.environ.get("OTEL_EXPORTER_OTLP_COMPRESSION", "").strip().lower() == "gzip"

# Never go through an HTTP proxy from the environment: carrier and collector are local.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# --------------------------------------------------------------------------------------------
# Output: one JSON line per request on stdout; plain text only with the text-banner style

_out_lock = threading.Lock()


def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def write_stdout(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def warn(message, **fields):
    """Operational warnings that belong to no request (span export failures)."""
    if TEXT_BANNER:
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        write_stdout(f"WARNING {message} {extra}".rstrip())
    else:
        rec = {"timestamp": _now_iso(), "level": "warn", "message": message}
        rec.update(fields)
        with _out_lock:
            sys.stderr.write(json.dumps(rec) + "\n")
            sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# Tracing: W3C trace context and OTLP/HTTP JSON export

ZERO_TRACE = "0" * 32
ZERO_SPAN = "0" * 16
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z",
                             re.S)
_TRACESTATE_RE = re.compile(r"[\x20-\x7e]{0,512}\Z")


def new_trace_id():
    while True:
        if BUG == "uppercase-trace-ids":
            tid = format(secrets.randbits(128), "032X")
        else:
            tid = format(secrets.randbits(128), "032x")
        if tid != ZERO_TRACE:
            return tid


def new_span_id():
    while True:
        sid = format(secrets.randbits(64), "016x")
        if sid != ZERO_SPAN:
            return sid


class Parent:
    """A remote span context extracted from a valid traceparent."""

    def __init__(self, trace_id, span_id, flags, tracestate):
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.tracestate = tracestate


def extract(headers):
    """The caller's context, or None when traceparent is absent or malformed."""
    values = headers.get_all("traceparent") or []
    if len(values) != 1:
        return None
    value = values[0].strip()
    m = _TRACEPARENT_RE.match(value)
    if not m:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff":
        return None
    if version == "00" and rest is not None:
        return None  # version 00 is exactly 55 characters
    if trace_id == ZERO_TRACE or span_id == ZERO_SPAN:
        return None
    tracestate = ",".join(v.strip() for v in (headers.get_all("tracestate") or []))
    if not _TRACESTATE_RE.match(tracestate):
        tracestate = ""
    return Parent(trace_id, span_id, int(flags, 16), tracestate)


class Span:
    SERVER = 2
    CLIENT = 3

    def __init__(self, name, kind, trace_id, parent_span_id, sampled, tracestate="",
                 parent_remote=False):
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = new_span_id()
        self.parent_span_id = parent_span_id
        self.sampled = sampled
        self.tracestate = tracestate
        self.parent_remote = parent_remote
        self.start_ns = time.time_ns()
        self.end_ns = None
        self.attributes = {}
        self.status_code = 0  # STATUS_CODE_UNSET
        self.status_message = ""

    def set(self, key, value):
        self.attributes[key] = value

    def error(self, message=""):
        self.status_code = 2  # STATUS_CODE_ERROR
        self.status_message = message

    def traceparent(self):
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def end(self):
        if self.end_ns is not None:
            return
        self.end_ns = time.time_ns()
        if self.sampled:
            EXPORTER.enqueue(self)

    def to_otlp(self):
        flags = (0x01 if self.sampled else 0) | 0x100 | (0x200 if self.parent_remote else 0)
        out = {
            "traceId": self.trace_id,
            "spanId": self.span_id,
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": str(self.start_ns),
            "endTimeUnixNano": str(self.end_ns),
            "attributes": [_otlp_attr(k, v) for k, v in self.attributes.items()],
            "flags": flags,
        }
        if self.parent_span_id:
            out["parentSpanId"] = self.parent_span_id
        if self.tracestate:
            out["traceState"] = self.tracestate
        if self.status_code:
            out["status"] = {"code": self.status_code}
            if self.status_message:
                out["status"]["message"] = self.status_message
        return out


def _otlp_attr(key, value):
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}  # int64: a decimal string in the proto3 JSON mapping
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


def _resource_attributes():
    attrs = {}
    for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            if k.strip():
                attrs[urllib.parse.unquote(k.strip())] = urllib.parse.unquote(v.strip())
    if SERVICE_NAME:
        attrs["service.name"] = SERVICE_NAME
    attrs.setdefault("service.name", "unknown_service:python3")
    attrs["service.instance.id"] = str(uuid.uuid4())
    attrs["telemetry.sdk.name"] = "indep-handmade"
    attrs["telemetry.sdk.language"] = "python"
    attrs["telemetry.sdk.version"] = "0.1.0"
    attrs["process.pid"] = os.getpid()
    return [_otlp_attr(k, v) for k, v in attrs.items()]


class BatchExporter:
    """A batch span processor: exports every OTEL_BSP_SCHEDULE_DELAY ms, or sooner when a
    full batch is waiting; drops spans when the queue is full."""

    def __init__(self):
        self.queue = []
        self.cond = threading.Condition()
        self.stopping = False
        self.resource = {"attributes": _resource_attributes()}
        self.headers = _otlp_headers()
        self.thread = threading.Thread(target=self._run, name="span-exporter", daemon=True)

    def start(self):
        self.thread.start()

    def enqueue(self, span):
        with self.cond:
            if len(self.queue) >= BSP_MAX_QUEUE:
                return
            self.queue.append(span)
            if len(self.queue) >= BSP_MAX_BATCH:
                self.cond.notify()

    def shutdown(self, timeout=5.0):
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout)

    def _run(self):
        deadline = time.monotonic() + BSP_DELAY_S
        while True:
            with self.cond:
                while (not self.stopping and len(self.queue) < BSP_MAX_BATCH
                       and time.monotonic() < deadline):
                    self.cond.wait(max(0.0, deadline - time.monotonic()))
                batch, self.queue = self.queue, []
                stopping = self.stopping
            for i in range(0, len(batch), BSP_MAX_BATCH):
                self._export(batch[i:i + BSP_MAX_BATCH])
            if stopping:
                return
            deadline = time.monotonic() + BSP_DELAY_S

    def _export(self, spans):
        payload = {
            "resourceSpans": [{
                "resource": self.resource,
                "scopeSpans": [{
                    "scope": {"name": "indep.shipping", "version": "0.1.0"},
                    "spans": [s.to_otlp() for s in spans],
                    "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
                }],
            }],
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = dict(self.headers)
        headers["Content-Type"] = "application/json"
        if OTLP_GZIP:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        for attempt in range(3):
            retry = False
            try:
                req = urllib.request.Request(TRACES_URL, data=body, method="POST", headers=headers)
                with OPENER.open(req, timeout=OTLP_TIMEOUT_S) as resp:
                    resp.read()
                return
            except urllib.error.HTTPError as e:
                retry = e.code in (429, 502, 503, 504)
                problem = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                retry = True
                problem = type(e).__name__ + ": " + str(getattr(e, "reason", e))
            if not retry or attempt == 2:
                warn("span export failed", url=TRACES_URL, spans=len(spans), error=problem)
                return
            time.sleep(0.1 * (attempt + 1))


EXPORTER = BatchExporter()

# --------------------------------------------------------------------------------------------
# Metrics

if OTEL_NAMES:
    HISTOGRAM = Histogram(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests.",
        ["http_request_method", "http_route", "http_response_status_code", "url_scheme"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
    )
    COUNTER = None
else:
    COUNTER = Counter("http_requests_total", "HTTP requests answered, by route, method and status.",
                      ["method", "route", "status"])
    if "no-status-histogram" in STYLES:
        HISTOGRAM = Histogram("http_request_duration_seconds", "HTTP request latency in seconds.",
                              ["method", "route"])
    else:
        HISTOGRAM = Histogram("http_request_duration_seconds", "HTTP request latency in seconds.",
                              ["method", "route", "status"])


def record_metrics(method, route, status, seconds):
    if route == ROUTE_METRICS and "count-metrics" not in STYLES:
        return
    if BUG == "metrics-skip-errors" and status >= 400:
        return
    status_label = f"{status // 100}xx" if BUG == "status-class-labels" else str(status)
    value = seconds * 1000.0 if BUG == "histogram-ms" else seconds
    if OTEL_NAMES:
        HISTOGRAM.labels(http_request_method=method, http_route=route,
                         http_response_status_code=status_label, url_scheme="http").observe(value)
        return
    COUNTER.labels(method=method, route=route, status=status_label).inc()
    if "no-status-histogram" in STYLES:
        HISTOGRAM.labels(method=method, route=route).observe(value)
    else:
        HISTOGRAM.labels(method=method, route=route, status=status_label).observe(value)


# --------------------------------------------------------------------------------------------
# Domain

DEST_RE = re.compile(r"[A-Z]{2}\Z")
CARD_RE = re.compile(r"[0-9]{12,19}\Z")
WEIGHT_QS_RE = re.compile(r"[0-9]{1,9}\Z")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,200}\Z")
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
MAX_BODY = 1 << 20

_store_lock = threading.Lock()
_shipments = {}
_next_id = [1]


def new_shipment_id():
    if "int-ids" in STYLES:
        with _store_lock:
            n = _next_id[0]
            _next_id[0] += 1
        return str(n)
    return str(uuid.uuid4())


def valid_destination(v):
    return isinstance(v, str) and DEST_RE.match(v) is not None


def valid_weight(v):
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 30000


class HttpError(Exception):
    def __init__(self, status, detail, headers=()):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = list(headers)


def json_response(status, obj, headers=()):
    body = json.dumps(obj).encode()
    return status, [("Content-Type", "application/json")] + list(headers), body


def problem(status, detail, instance, request_id, headers=()):
    doc = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
    }
    return status, [("Content-Type", "application/problem+json")] + list(headers), \
        json.dumps(doc).encode()


# --------------------------------------------------------------------------------------------
# HTTP

class Request:
    """What one request handler needs: its parsed parts and its server span."""

    def __init__(self, handler, method, path, query, body, span, parent, request_id):
        self.handler = handler
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.span = span
        self.parent = parent
        self.request_id = request_id
        self.log_extra = {}


def create_shipment(req):
    if BUG == "card-in-logs":
        req.log_extra["body"] = req.body.decode("utf-8", "replace")
    try:
        data = json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the body is not a JSON document")
    if not isinstance(data, dict):
        raise HttpError(400, "the body must be a JSON object")
    errors = []
    if not valid_destination(data.get("destination")):
        errors.append("destination must be two upper-case letters")
    if not valid_weight(data.get("weight_grams")):
        errors.append("weight_grams must be an integer from 1 to 30000")
    card = data.get("card_number")
    if not (isinstance(card, str) and CARD_RE.match(card)):
        errors.append("card_number must be a string of 12 to 19 digits")
    if errors:
        raise HttpError(422, "; ".join(errors))
    shipment = {
        "id": new_shipment_id(),
        "destination": data["destination"],
        "weight_grams": data["weight_grams"],
        "card_last4": card[-4:],
    }
    with _store_lock:
        _shipments[shipment["id"]] = dict(shipment)
    return json_response(201, shipment, [("Location", f"/shipments/{shipment['id']}")])


def get_shipment(req, shipment_id):
    with _store_lock:
        shipment = _shipments.get(shipment_id)
    if shipment is None:
        raise HttpError(404, "no shipment with this id")
    return json_response(200, dict(shipment))


def get_quote(req):
    params = urllib.parse.parse_qs(req.query, keep_blank_values=True)
    destination = (params.get("destination") or [None])[0]
    weight_text = (params.get("weight_grams") or [None])[0]
    errors = []
    if not valid_destination(destination):
        errors.append("destination must be two upper-case letters")
    weight = None
    if weight_text is not None and WEIGHT_QS_RE.match(weight_text):
        weight = int(weight_text)
    if not valid_weight(weight):
        errors.append("weight_grams must be an integer from 1 to 30000")
    if errors:
        raise HttpError(400, "; ".join(errors))

    if BUG == "quote-not-from-carrier":
        # "the carrier's tariff is 4.90 plus 1 cent per 10 g", says the old spreadsheet
        price = 490 + weight // 10
        return json_response(200, {"destination": destination, "weight_grams": weight,
                                   "price_cents": price})

    price = call_carrier(req, destination, weight)
    return json_response(200, {"destination": destination, "weight_grams": weight,
                               "price_cents": price})


def call_carrier(req, destination, weight):
    url = CARRIER_URL + "/rates"
    server = req.span
    if BUG == "client-span-orphan" and req.parent is not None:
        # parented on the extracted (caller's) context instead of the current span
        span = Span("POST", Span.CLIENT, req.parent.trace_id, req.parent.span_id, server.sampled,
                    server.tracestate, parent_remote=True)
    else:
        span = Span("POST", Span.CLIENT, server.trace_id, server.span_id, server.sampled,
                    server.tracestate)
    parts = urllib.parse.urlsplit(url)
    span.set("http.request.method", "POST")
    span.set("url.full", urllib.parse.urlunsplit(
        (parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path,
         "", "")))
    span.set("server.address", parts.hostname or "")
    span.set("server.port", parts.port or (443 if parts.scheme == "https" else 80))

    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "X-Request-Id": req.request_id}
    incoming = req.handler.headers.get("traceparent")
    if BUG == "forward-traceparent" and incoming is not None:
        headers["traceparent"] = incoming
    elif BUG == "no-trace-if-absent" and req.parent is None:
        pass
    else:
        headers["traceparent"] = span.traceparent()
        if span.tracestate:
            headers["tracestate"] = span.tracestate

    body = json.dumps({"destination": destination, "weight_grams": weight}).encode()
    failure = None
    price = None
    try:
        try:
            r = urllib.request.Request(url, data=body, method="POST", headers=headers)
            with OPENER.open(r, timeout=CARRIER_TIMEOUT) as resp:
                code = resp.status
                raw = resp.read()
        except urllib.error.HTTPError as e:
            code = e.code
            try:
                raw = e.read()
            except OSError:
                raw = b""
        span.set("http.response.status_code", code)
        if code >= 400:
            span.set("error.type", str(code))
            span.error()
            failure = f"carrier answered {code}"
        elif code != 200:
            failure = f"carrier answered {code}"
        else:
            try:
                doc = json.loads(raw.decode("utf-8"))
                candidate = doc.get("price_cents") if isinstance(doc, dict) else None
            except (UnicodeDecodeError, ValueError):
                candidate = None
            if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate >= 0:
                price = candidate
            else:
                failure = "carrier answered without a valid price_cents"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        span.set("error.type", type(reason).__name__ if not isinstance(reason, str) else "URLError")
        span.error(str(reason)[:200])
        failure = f"carrier unreachable: {type(reason).__name__}"
    finally:
        span.end()
    if failure is not None:
        req.log_extra["error"] = failure
        raise HttpError(500 if BUG == "carrier-error-500" else 502, "the carrier failed: " + failure)
    return price


def healthz(req):
    return json_response(200, {"status": "ok"})


def readyz(req):
    return json_response(200, {"status": "ready"})


def metrics(req):
    encoder, content_type = choose_encoder(req.handler.headers.get("Accept"))
    output = encoder(REGISTRY)
    if content_type.startswith("application/openmetrics-text"):
        # prometheus_client 0.16 labels its OpenMetrics 1.0 output "version=0.0.1"
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    headers = [("Content-Type", content_type)]
    if gzip_accepted(req.handler.headers.get("Accept-Encoding")):
        output = gzip.compress(output)
        headers.append(("Content-Encoding", "gzip"))
    return 200, headers, output


GET_ONLY = ("GET", "HEAD")


def resolve(method, path):
    """(route template, allowed methods, handler taking (req))."""
    if path == "/shipments":
        return ROUTE_SHIPMENTS, ("POST",), create_shipment
    if path.startswith("/shipments/"):
        rest = path[len("/shipments/"):]
        if rest and "/" not in rest:
            route = path if BUG == "id-in-route-label" else ROUTE_SHIPMENT
            return route, GET_ONLY, lambda req: get_shipment(req, rest)
    if path == "/quotes":
        return ROUTE_QUOTES, GET_ONLY, get_quote
    if path == "/healthz":
        return ROUTE_HEALTHZ, GET_ONLY, healthz
    if path == "/readyz" and BUG != "no-readyz":
        return ROUTE_READYZ, GET_ONLY, readyz
    if path == "/metrics":
        return ROUTE_METRICS, GET_ONLY, metrics
    return ROUTE_UNMATCHED, None, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shipping/0.1"

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # no access log on stderr: the JSON line is the log
        pass

    def send_error(self, code, message=None, explain=None):
        """Requests http.server rejects before routing (bad request line, huge headers)."""
        body = json.dumps({"type": "about:blank", "title": HTTPStatus(code).phrase,
                           "status": code, "detail": message or ""}).encode()
        self.close_connection = True
        self.send_response(code, message)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise HttpError(413, "the body is too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise HttpError(400, "invalid Content-Length")
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            raise HttpError(413, "the body is too large")
        return self.rfile.read(n)

    def handle_any(self):
        started = time.perf_counter()
        raw_method = self.command
        method = raw_method if raw_method in KNOWN_METHODS else "_OTHER"
        target = self.path
        if not target.startswith("/"):
            parts = urllib.parse.urlsplit(target)  # absolute-form request target
            target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        path, _, query = target.partition("?")

        given_id = (self.headers.get("X-Request-Id") or "").strip()
        if BUG != "request-id-ignored" and REQUEST_ID_RE.match(given_id):
            request_id = given_id
        else:
            request_id = str(uuid.uuid4())

        parent = extract(self.headers)
        route, allowed, func = resolve(method, path)
        if parent is not None:
            parent_span_id = None if BUG == "server-span-no-parent" else parent.span_id
            span = Span(method, Span.SERVER, parent.trace_id, parent_span_id,
                        bool(parent.flags & 1), parent.tracestate, parent_remote=True)
        else:
            span = Span(method, Span.SERVER, new_trace_id(), None, True)
        if route != ROUTE_UNMATCHED:
            span.name = f"{method} {route}"
            span.set("http.route", route)
        span.set("http.request.method", method)
        if method == "_OTHER":
            span.set("http.request.method_original", raw_method)
        span.set("url.path", path)
        span.set("url.scheme", "http")
        span.set("network.protocol.version", self.request_version.partition("/")[2] or "1.0")
        if self.headers.get("User-Agent"):
            span.set("user_agent.original", self.headers.get("User-Agent"))

        req = Request(self, method, path, query, b"", span, parent, request_id)
        try:
            req.body = self.read_body()
            if func is None:
                raise HttpError(404, "no such resource")
            if method not in allowed:
                raise HttpError(405, f"{raw_method} is not allowed here",
                                [("Allow", ", ".join(allowed))])
            status, headers, body = func(req)
        except HttpError as e:
            status, headers, body = problem(e.status, e.detail, path, request_id, e.headers)
        except Exception as e:  # a bug of ours: answer 500, keep serving
            req.log_extra["error"] = f"internal error: {type(e).__name__}"
            status, headers, body = problem(500, "internal error", path, request_id)
        headers.append(("X-Request-Id", request_id))

        # Metrics, span and log line are done before the response leaves, so that whoever got
        # the response and then scrapes /metrics sees this request counted.
        elapsed = time.perf_counter() - started
        record_metrics(method, route, status, elapsed)
        if BUG == "status-attr-string":
            span.set("http.response.status_code", str(status))
        else:
            span.set("http.response.status_code", status)
        if status >= 500:
            span.set("error.type", str(status))
            span.error()
        span.end()
        self.log_request_line(req, route, status, elapsed)

        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if raw_method != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def log_request_line(self, req, route, status, elapsed):
        if BUG == "log-once-per-error-only" and status < 400:
            return
        rec = {
            "timestamp": _now_iso(),
            "level": "error" if status >= 500 else ("warn" if status >= 400 else "info"),
            "message": "request completed",
            "method": req.method,
            "route": route,
            "path": req.path,
            "status": str(status) if BUG == "log-status-as-string" else status,
            "duration_ms": round(elapsed * 1000.0, 3),
            "trace_id": req.span.trace_id,
            "span_id": req.span.span_id,
            "request_id": req.request_id,
        }
        if BUG == "log-auth-header":
            rec["headers"] = {k: v for k, v in self.headers.items()}
        rec.update(req.log_extra)
        write_stdout(json.dumps(rec))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    server = Server(("0.0.0.0", PORT), Handler)
    EXPORTER.start()
    if TEXT_BANNER:
        write_stdout("shipping service (independent python-observability) starting")
        write_stdout(f"listening on 0.0.0.0:{PORT}, carrier at {CARRIER_URL}")
        write_stdout(f"exporting spans to {TRACES_URL} every {int(BSP_DELAY_S * 1000)} ms")

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        EXPORTER.shutdown()
        if TEXT_BANNER:
            write_stdout("shipping service stopped")


if __name__ == "__main__":
    main()
