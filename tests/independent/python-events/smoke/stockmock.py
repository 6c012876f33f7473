"""A tiny stock mock: POST /reservations answers per the current mode (201 by default).
POST /__mode with a body of 201, 409, 500, 200, slow (3 s) or close switches it; GET /__count
returns the number of reservations received."""
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode = {"m": "201", "count": 0}
lock = threading.Lock()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/__count":
            self.reply(200, str(mode["count"]).encode())
        else:
            self.reply(404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if self.path == "/__mode":
            mode["m"] = body.decode().strip()
            return self.reply(200)
        if self.path != "/reservations":
            return self.reply(404)
        with lock:
            mode["count"] += 1
        m = mode["m"]
        if m == "slow":
            time.sleep(3)
            return self.reply(201, b'{"reservation_id":"r"}')
        if m == "close":
            self.close_connection = True
            self.connection.close()
            return
        self.reply(int(m), b'{}')


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
