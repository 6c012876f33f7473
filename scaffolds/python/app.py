"""Starter service for the api-design exercise.

Run with PORT set (the grader sets it, and DATABASE_URL too). It answers GET /healthz and
answers every other request with 501 Not Implemented as problem details: replace that with the
tasks in exercises/api-design/README.md.

For the database, `pip install "psycopg[binary]"` and connect with os.environ["DATABASE_URL"].
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, body, content_type="application/json"):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _route(self):
        # Read (and drop) any body so the connection stays usable.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/healthz" and self.command == "GET":
            return self._send(200, {"status": "ok"})
        self._send(
            501,
            {
                "type": "about:blank",
                "title": "Not Implemented",
                "status": 501,
                "detail": f"{self.command} {self.path} is not implemented yet",
            },
            "application/problem+json",
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _route


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    print(f"listening on 127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
