"""A tiny JSON HTTP client for the mock upstreams (payment provider, profile service)."""

import http.client
import json
import socket
import time
import urllib.parse


class UpstreamError(Exception):
    pass


def call(method, url, body=None, timeout=5.0, headers=None):
    """(status, parsed JSON or None). Raises UpstreamError on network errors and timeouts.

    `timeout` bounds the whole exchange, not each socket operation.
    """
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https"):
        raise UpstreamError(f"unsupported upstream URL {url!r}")
    deadline = time.monotonic() + timeout
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname, u.port, timeout=timeout)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    data = None
    hdrs = {"Accept": "application/json", "Connection": "close"}
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=hdrs)
        sock = conn.sock
        left = deadline - time.monotonic()
        if left <= 0:
            raise UpstreamError("timed out")
        sock.settimeout(left)
        resp = conn.getresponse()
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UpstreamError("timed out reading the body")
            try:
                sock.settimeout(left)
            except OSError:
                pass
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
        raw = b"".join(chunks)
        status = resp.status
    except (OSError, socket.timeout, http.client.HTTPException) as ex:
        raise UpstreamError(f"{method} {url}: {ex!r}")
    finally:
        conn.close()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return status, parsed
