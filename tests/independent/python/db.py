"""A small blocking connection pool over psycopg2, and a query helper.

Connections run in autocommit mode: a read is one statement, nothing else (pg_stat_statements
sees exactly what the endpoint ran). Writes that need several statements use `transaction()`.
With INDEP_STYLE=sql-comments every statement is prefixed with a sqlcommenter-style comment.
With INDEP_STYLE=txn-reads, reads run the psycopg2 default way (BEGIN ... COMMIT around them).
"""

import contextlib
import os
import queue
import threading
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from common import log, style

_MAX = int(os.environ.get("INDEP_DB_POOL", "24"))


class Pool:
    def __init__(self, dsn, size=_MAX):
        self.dsn = dsn
        self.size = size
        self.idle = queue.LifoQueue()
        self.sem = threading.BoundedSemaphore(size)

    def _connect(self):
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        return conn

    @contextlib.contextmanager
    def conn(self):
        if not self.sem.acquire(timeout=30):
            from common import HttpError

            raise HttpError(503, "The service is overloaded; try again.")
        conn = None
        try:
            try:
                conn = self.idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
            raise
        finally:
            if conn is not None:
                if conn.closed or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    try:
                        conn.rollback()
                    except Exception:
                        try:
                            conn.close()
                        except Exception:
                            pass
                        conn = None
                if conn is not None and not conn.closed:
                    self.idle.put(conn)
            self.sem.release()


POOL = None


def init(dsn):
    global POOL
    deadline = time.time() + 60
    while True:
        try:
            c = psycopg2.connect(dsn)
            c.close()
            break
        except psycopg2.OperationalError as ex:
            if time.time() > deadline:
                raise
            log("database not ready yet:", ex)
            time.sleep(0.5)
    POOL = Pool(dsn)


def _sql(sql, route):
    if style("sql-comments"):
        return f"/* app='indep',route='{route}' */ {sql}"
    return sql


def execute(cur, sql, params=None, route="-"):
    cur.execute(_sql(sql, route), params)


def fetchall(sql, params=None, route="-"):
    with POOL.conn() as conn:
        if style("txn-reads"):
            conn.autocommit = False
            try:
                with conn.cursor() as cur:
                    execute(cur, sql, params, route)
                    rows = cur.fetchall()
                conn.commit()
            finally:
                conn.autocommit = True
            return rows
        with conn.cursor() as cur:
            execute(cur, sql, params, route)
            return cur.fetchall() if cur.description else []


def fetchone(sql, params=None, route="-"):
    rows = fetchall(sql, params, route)
    return rows[0] if rows else None


def run(sql, params=None, route="-"):
    """A single write statement; returns (rowcount, rows-or-[])."""
    with POOL.conn() as conn:
        with conn.cursor() as cur:
            execute(cur, sql, params, route)
            rows = cur.fetchall() if cur.description else []
            return cur.rowcount, rows


@contextlib.contextmanager
def transaction(route="-"):
    """Yields a cursor inside BEGIN ... COMMIT (ROLLBACK on any exception)."""
    with POOL.conn() as conn:
        with conn.cursor() as cur:
            execute(cur, "BEGIN", None, route)
            try:
                yield cur
            except BaseException:
                try:
                    execute(cur, "ROLLBACK", None, route)
                except Exception:
                    pass
                raise
            execute(cur, "COMMIT", None, route)


UniqueViolation = psycopg2.errors.UniqueViolation
