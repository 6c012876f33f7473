"""A TCP proxy listen_port -> target_port that can be cut: POST /cut on the control port closes
every proxied connection and refuses new ones (the listening socket is closed); POST /restore
listens again."""
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN, TARGET, CONTROL = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
state = {"lsock": None, "conns": set()}
lock = threading.Lock()


def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
    with lock:
        state["conns"].discard(a)
        state["conns"].discard(b)


def accept_loop(lsock):
    while True:
        try:
            c, _ = lsock.accept()
        except OSError:
            return
        try:
            u = socket.create_connection(("127.0.0.1", TARGET))
        except OSError:
            c.close()
            continue
        with lock:
            state["conns"].update((c, u))
        threading.Thread(target=pipe, args=(c, u), daemon=True).start()
        threading.Thread(target=pipe, args=(u, c), daemon=True).start()


def listen():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", LISTEN))
    s.listen(64)
    state["lsock"] = s
    threading.Thread(target=accept_loop, args=(s,), daemon=True).start()


def cut():
    s = state["lsock"]
    if s:
        state["lsock"] = None
        try:
            s.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
        except OSError:
            pass
        s.close()
    with lock:
        conns = list(state["conns"])
    for c in conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        c.close()


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        if self.path == "/cut":
            cut()
        elif self.path == "/restore" and state["lsock"] is None:
            listen()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


listen()
ThreadingHTTPServer(("127.0.0.1", CONTROL), H).serve_forever()
