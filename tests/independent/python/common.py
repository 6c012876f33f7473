"""Shared bits: planted-bug / style switches, problem details, JSON parsing, time formatting."""

import datetime as dt
import email.utils
import json
import os
import sys

# INDEP_BUG=<name> switches on one planted bug (see BUGS.md); unset means the correct service.
BUG = os.environ.get("INDEP_BUG", "").strip()
# INDEP_STYLE=<name>[,<name>...] selects legitimate-but-unusual designs (see BUGS.md).
STYLES = {s.strip() for s in os.environ.get("INDEP_STYLE", "").split(",") if s.strip()}


def bug(name):
    return BUG == name


def style(name):
    return name in STYLES


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class HttpError(Exception):
    """Raised anywhere in a handler; the server turns it into a problem document."""

    def __init__(self, status, detail, errors=None, headers=None, extra=None, may_be_400=False):
        super().__init__(detail)
        # may_be_400: the README says "422 (400 is accepted too)" for this error
        if style("validation-400") and status == 422 and may_be_400:
            status = 400
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    def problem(self):
        body = {
            "type": "about:blank",
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def invalid(errors, may_be_400=False):
    """422 naming every offending field (errors: list of (pointer, detail))."""
    items = [{"pointer": p, "detail": d} for p, d in errors]
    summary = "; ".join(f"{p}: {d}" for p, d in errors)
    return HttpError(422, f"The request body is invalid: {summary}.", errors=items, may_be_400=may_be_400)


class TooBigInt:
    """A JSON integer literal too long to be worth converting (it is out of every range)."""

    def __init__(self, text):
        self.text = text


def _parse_int(text):
    if len(text.lstrip("-")) > 40:
        return TooBigInt(text)
    return int(text)


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw):
    """Parse a request body. Raises HttpError(400) if it is not JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "The request body is not valid UTF-8.")
    if text.startswith("\ufeff"):
        raise HttpError(400, "The request body starts with a byte order mark; send plain JSON.")
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)
    except RecursionError:
        raise HttpError(400, "The request body is nested too deeply.")
    except ValueError as ex:
        msg = getattr(ex, "msg", None) or "malformed JSON"
        raise HttpError(400, f"The request body is not valid JSON ({msg}).")


def is_int(v):
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, TooBigInt)


def int_in_range(v, lo, hi):
    """(ok, detail) for an integer field."""
    if bug("bool-price") and isinstance(v, bool):
        v = int(v)
    if not is_int(v):
        return False, "must be an integer"
    if isinstance(v, TooBigInt) or v < lo or v > hi:
        return False, f"must be an integer from {lo} to {hi}"
    return True, None


def has_lone_surrogate(s):
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def has_control(s):
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in s)


UTC = dt.timezone.utc


def rfc3339(t):
    """RFC 3339 in UTC with a Z; fractional seconds only when there are any."""
    t = t.astimezone(UTC)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        base += f".{t.microsecond:06d}"
    return base + "Z"


def http_date(t):
    """An IMF-fixdate of t, truncated to the second."""
    t = t.astimezone(UTC).replace(microsecond=0)
    return email.utils.format_datetime(t, usegmt=True)


def parse_http_date(value):
    """datetime (UTC) of an HTTP date, or None when invalid."""
    if not value:
        return None
    try:
        t = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def parse_rfc3339(value):
    """datetime of an RFC 3339 timestamp with an offset, or None."""
    import re

    if not isinstance(value, str) or not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", value
    ):
        return None
    v = value
    m = re.search(r"\.(\d+)", v)
    if m and len(m.group(1)) > 6:
        v = v.replace(m.group(0), "." + m.group(1)[:6])
    v = v.replace("z", "Z").replace("Z", "+00:00").replace("t", "T")
    try:
        return dt.datetime.fromisoformat(v)
    except ValueError:
        return None
