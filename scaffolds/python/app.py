"""Starter service: it connects to PostgreSQL, answers GET /healthz, and implements nothing else.

The grader sets PORT and DATABASE_URL. Every other request gets 501 Not Implemented as problem
details (RFC 9457) until you build the exercise: README.md says where its tasks are.
"""

import logging
import os
import sys

import psycopg
from flask import Flask, jsonify, request

app = Flask(__name__)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def connect(url):
    """Opens the database connection, or stops the service with the reason."""
    if not url:
        sys.exit("DATABASE_URL is not set: this service needs PostgreSQL (grader check sets it)")
    try:
        # One connection, shared by the request threads (psycopg 3 connections are thread-safe;
        # psycopg_pool.ConnectionPool is the next step when requests should not wait on each other).
        conn = psycopg.connect(url, autocommit=True)
        conn.execute("SELECT 1")
        return conn
    except psycopg.Error as e:
        sys.exit(f"cannot connect to PostgreSQL at DATABASE_URL: {e}")


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.route("/", defaults={"path": ""}, methods=METHODS)
@app.route("/<path:path>", methods=METHODS)
def not_implemented(path):
    body = {
        "type": "about:blank",
        "title": "Not Implemented",
        "status": 501,
        "detail": f"{request.method} {request.path} is not implemented yet",
    }
    response = jsonify(body)
    response.status_code = 501
    response.content_type = "application/problem+json"
    return response


@app.after_request
def log_request(response):
    print(f"{request.method} {request.path} {response.status_code}", flush=True)
    return response


if __name__ == "__main__":
    db = connect(os.environ.get("DATABASE_URL"))
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    # One line per request comes from log_request above; silence the server's own copy.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    print(f"listening on {host}:{port}", flush=True)
    app.run(host=host, port=port, threaded=True)
