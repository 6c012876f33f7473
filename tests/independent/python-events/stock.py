"""The stock service client: POST {STOCK_URL}/reservations, with a 2-second deadline overall."""

import http.client
import json
import logging
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout

log = logging.getLogger("indep.stock")

DEADLINE = 2.0
_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="stock")


def _call(base, sku, quantity):
    url = urllib.parse.urlsplit(base)
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(url.hostname, url.port, timeout=DEADLINE)
    try:
        body = json.dumps({"sku": sku, "quantity": quantity}).encode()
        conn.request("POST", url.path.rstrip("/") + "/reservations", body=body,
                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        resp = conn.getresponse()
        resp.read()  # a complete answer: the body too
        return resp.status
    finally:
        conn.close()


def reserve(base, sku, quantity):
    """'reserved' (201), 'out-of-stock' (409), or a reason the stock service is unavailable."""
    started = time.monotonic()
    future = _pool.submit(_call, base, sku, quantity)
    try:
        status = future.result(timeout=DEADLINE)
    except FutureTimeout:
        return "no answer within 2 seconds"
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    finally:
        log.debug("stock answered in %.3fs", time.monotonic() - started)
    if status == 201:
        return "reserved"
    if status == 409:
        return "out-of-stock"
    return f"it answered {status}"
