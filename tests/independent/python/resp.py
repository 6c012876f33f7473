"""A minimal Redis client over a raw socket (RESP2), one connection per thread."""

import socket
import threading
import urllib.parse


class RedisError(Exception):
    pass


class Client:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.password = urllib.parse.unquote(u.password) if u.password else None
        self.db = int(u.path.lstrip("/") or 0) if u.path not in ("", "/") else 0
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            s = socket.create_connection((self.host, self.port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = (s, s.makefile("rb"))
            self.local.conn = c
            if self.password:
                self._roundtrip(c, ("AUTH", self.password))
            if self.db:
                self._roundtrip(c, ("SELECT", str(self.db)))
        return c

    def call(self, *args):
        c = self._conn()
        try:
            return self._roundtrip(c, args)
        except (OSError, EOFError):
            self.local.conn = None
            try:
                c[0].close()
            except OSError:
                pass
            raise

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _roundtrip(self, c, args):
        c[0].sendall(self._encode(args))
        return self._read(c[1])

    def _read(self, f):
        line = f.readline()
        if not line.endswith(b"\r\n"):
            raise EOFError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read(f) for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")
