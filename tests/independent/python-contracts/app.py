#!/usr/bin/python3
"""Listings service of a small marketplace, and its contract (the api-contracts exercise),
written from that exercise's README only.

- Debian's /usr/bin/python3 (3.11), standard library only: http.server.ThreadingHTTPServer,
  HTTP/1.1 with keep-alive and a Content-Length on every answer. Listings live in memory.
- Two OpenAPI 3.1 documents written by hand as Python dicts: revision 1.0 (GET
  /openapi/1.0.json) and revision 1.1 (GET /openapi.json). Both are built by one function,
  build_document(revision), so what they share is written once; 1.1 adds `tags` and deprecates
  the price operation (Deprecation / Sunset / Link headers on every answer it gives).
- Every error, whatever produced it (routing, validation, http.server's own parser, an
  exception), is an RFC 9457 problem document (application/problem+json).

INDEP_BUG=<name> switches on one planted bug, INDEP_STYLE=<name>[,<name>] legitimate
alternative designs; see BUGS.md. Unknown names make the service exit at start-up.
"""

import copy
import email.utils
import json
import os
import sys
import threading
import traceback
import urllib.parse
import uuid
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --------------------------------------------------------------------------------------------
# Bugs and styles

KNOWN_BUGS = {
    # task 1: the document
    "nullable-3.0",            # Problem.detail written the 3.0 way: {"type": "string", "nullable": true}
    "duplicate-operation-id",  # the price operation copy-pasted with operationId getListing
    # task 2: answers that break the document
    "validation-plain-json",   # 400/422 validation problems sent as application/json
    "delete-200-body",         # DELETE answers 200 with the deleted listing (only 204 documented)
    # task 3: lifecycle
    "delete-idempotent",       # deleting an unknown/deleted listing answers 204, not 404
    "list-keeps-deleted",      # soft delete: GET by id says 404, the list still shows it
    # contract (task 0)
    "price-max-exclusive",     # price_cents must be < 10000000: exactly 10000000 is refused
    "bool-price",              # isinstance(True, int): "price_cents": true is accepted
    # task 4: revision 1.1
    "v10-regenerated",         # /openapi/1.0.json is the current document with version 1.0.0
    "status-enum-grown",       # 1.1 adds "archived" to the shared Status enum (response enum added)
    "location-optional-1.1",   # 1.1's Location header is not required (response-header-became-optional)
    "tag-length-off-by-one",   # a tag of 31 characters is accepted
    "deprecation-only-on-200", # Deprecation/Sunset/Link only on the price operation's 200
    "x-sunset-http-date",      # 1.1's x-sunset copied from the Sunset header (an HTTP-date)
}
KNOWN_STYLES = {
    "validate-422",        # 422 instead of 400 for invalid bodies (400 stays for broken JSON
                           # syntax) and for an invalid ?status=
    "absolute-location",   # Location: http://<Host>/listings/<id>
    "charset-param",       # Content-Type: application/json; charset=utf-8 (and problem+json)
    "strict-media-type",   # 415 for a POST whose declared Content-Type is not JSON
    "integral-floats",     # price_cents 12500.0 is an integer (JSON Schema 2020-12 semantics)
}

BUG = os.environ.get("INDEP_BUG", "").strip()
STYLES = {s.strip() for s in os.environ.get("INDEP_STYLE", "").split(",") if s.strip()}
if BUG and BUG not in KNOWN_BUGS:
    sys.exit(f"unknown INDEP_BUG {BUG!r}; known: {', '.join(sorted(KNOWN_BUGS))}")
if STYLES - KNOWN_STYLES:
    sys.exit(f"unknown INDEP_STYLE {sorted(STYLES - KNOWN_STYLES)}; known: {sorted(KNOWN_STYLES)}")

INVALID_STATUS = 422 if "validate-422" in STYLES else 400

# --------------------------------------------------------------------------------------------
# Constants of the contract

TITLE_MAX = 120
PRICE_MAX = 10_000_000
CURRENCIES = ["EUR", "USD", "GBP"]
STATUSES = ["draft", "active"]
TAGS_MAX = 10
TAG_MAX = 30
MAX_BODY = 1 << 20  # 1 MiB: anything larger is 413

# The price operation was deprecated when revision 1.1 was published (2026-11-16T00:00:00Z) and
# stops answering at the end of June 2027: fixed dates, not computed at start-up.
DEPRECATED_AT = int(datetime(2026, 11, 16, tzinfo=timezone.utc).timestamp())
SUNSET_AT = int(datetime(2027, 6, 30, 23, 59, 59, tzinfo=timezone.utc).timestamp())
DEPRECATION_VALUE = f"@{DEPRECATED_AT}"
SUNSET_VALUE = email.utils.formatdate(SUNSET_AT, usegmt=True)  # IMF-fixdate

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"
OPENAPI_JSON = "application/openapi+json"


# --------------------------------------------------------------------------------------------
# The two OpenAPI documents

def ref(kind, name):
    return {"$ref": f"#/components/{kind}/{name}"}


def build_document(revision):
    """Revision "1.0" (as first published) or "1.1" (tags, price operation deprecated).

    Everything the two share is written once below; each `if v11` is a difference between them.
    """
    v11 = revision == "1.1"

    # ---- schemas -------------------------------------------------------------------------
    status_enum = list(STATUSES)
    if v11 and BUG == "status-enum-grown":
        status_enum.append("archived")  # "for the upcoming archive feature"

    schemas = {
        "ListingId": {
            "type": "string",
            "format": "uuid",
            "description": "Chosen by the service when the listing is created.",
            "examples": ["5d0c3b8e-1f2a-4c9b-8e7d-6a5b4c3d2e1f"],
        },
        "Title": {
            "type": "string",
            "minLength": 1,
            "maxLength": TITLE_MAX,
            "description": "Counted in Unicode code points.",
            "examples": ["Oak writing desk, 1960s"],
        },
        "PriceCents": {
            "type": "integer",
            "minimum": 0,
            "maximum": PRICE_MAX,
            "description": "The price in the currency's minor unit.",
            "examples": [12500],
        },
        "Currency": {"type": "string", "enum": list(CURRENCIES)},
        "Status": {"type": "string", "enum": status_enum},
        "NewListing": {
            "type": "object",
            "description": "A listing as a client creates it. Unknown members are ignored.",
            "required": ["title", "price_cents", "currency"],
            "properties": {
                "title": ref("schemas", "Title"),
                "price_cents": ref("schemas", "PriceCents"),
                "currency": ref("schemas", "Currency"),
                # 3.1: a $ref may have siblings.
                "status": {**ref("schemas", "Status"), "default": "draft"},
            },
        },
        "Listing": {
            "type": "object",
            "required": ["id", "title", "price_cents", "currency", "status", "created_at"],
            "properties": {
                "id": ref("schemas", "ListingId"),
                "title": ref("schemas", "Title"),
                "price_cents": ref("schemas", "PriceCents"),
                "currency": ref("schemas", "Currency"),
                "status": ref("schemas", "Status"),
                "created_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "RFC 3339, UTC, millisecond precision.",
                    "examples": ["2026-11-28T15:04:05.123Z"],
                },
            },
        },
        "ListingPage": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": ref("schemas", "Listing")}},
        },
        "Price": {
            "type": "object",
            "required": ["price_cents", "currency"],
            "properties": {
                "price_cents": ref("schemas", "PriceCents"),
                "currency": ref("schemas", "Currency"),
            },
        },
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status"],
            "properties": {
                "type": {"type": "string", "format": "uri-reference", "default": "about:blank"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "detail": {"type": ["string", "null"]},
                "instance": {"type": "string", "format": "uri-reference"},
                "errors": {
                    "type": "array",
                    "description": "What was wrong with the request, one entry per problem.",
                    "items": ref("schemas", "InvalidMember"),
                },
            },
        },
        "InvalidMember": {
            "type": "object",
            "required": ["detail"],
            "properties": {
                "pointer": {
                    "type": "string",
                    "description": "JSON Pointer (RFC 6901) into the request body.",
                },
                "parameter": {"type": "string", "description": "A query parameter's name."},
                "detail": {"type": "string"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
    }
    if BUG == "nullable-3.0":
        schemas["Problem"]["properties"]["detail"] = {"type": "string", "nullable": True}
    if v11:
        schemas["Tag"] = {"type": "string", "minLength": 1, "maxLength": TAG_MAX,
                          "examples": ["vintage"]}
        schemas["Tags"] = {"type": "array", "maxItems": TAGS_MAX, "items": ref("schemas", "Tag"),
                           "description": "In the order the client sent them."}
        schemas["NewListing"]["properties"]["tags"] = {**ref("schemas", "Tags"), "default": []}
        schemas["Listing"]["properties"]["tags"] = ref("schemas", "Tags")
        # Always present in a response (`[]` when none were sent); after status, as in the README.
        schemas["Listing"]["required"].insert(5, "tags")

    # ---- headers -------------------------------------------------------------------------
    headers = {
        "Location": {
            "description": "Where the new listing can be read: `/listings/{listingId}`.",
            "required": not (v11 and BUG == "location-optional-1.1"),
            "schema": {"type": "string", "format": "uri-reference"},
        },
    }
    if v11:
        headers["Deprecation"] = {
            "description": "RFC 9745: when this operation was deprecated, as a Structured "
                           "Fields date (`@` and Unix seconds).",
            "required": True,
            "schema": {"type": "string", "pattern": "^@-?[0-9]{1,15}$",
                       "examples": [DEPRECATION_VALUE]},
        }
        headers["Sunset"] = {
            "description": "RFC 8594: when this operation stops answering (an HTTP-date).",
            "required": True,
            "schema": {"type": "string", "examples": [SUNSET_VALUE]},
        }
        headers["Link"] = {
            "description": "The successor of this operation: `rel=\"successor-version\"`.",
            "required": False,
            "schema": {"type": "string"},
        }

    # ---- responses -----------------------------------------------------------------------
    def problem_content(status_schema):
        return {PROBLEM_JSON: {"schema": {"allOf": [
            ref("schemas", "Problem"),
            {"properties": {"status": status_schema}},
        ]}}}

    responses = {
        "NotFound": {
            "description": "There is no listing with this id (any more).",
            "content": problem_content({"const": 404}),
        },
        "ClientError": {
            "description": "The request is invalid (`400`), or not allowed for this resource.",
            "content": problem_content({"minimum": 400, "maximum": 499}),
        },
        "ServerError": {
            "description": "Something went wrong on our side.",
            "content": problem_content({"minimum": 500, "maximum": 599}),
        },
    }
    deprecation_headers = {name: ref("headers", name) for name in ("Deprecation", "Sunset", "Link")}
    if v11:
        # The price operation's errors carry the deprecation headers too: a referenced response
        # cannot be given extra headers, so these are copies with them.
        for name in ("NotFound", "ClientError", "ServerError"):
            responses["Deprecated" + name] = {
                **copy.deepcopy(responses[name]),
                "headers": copy.deepcopy(deprecation_headers),
            }

    def errors(not_found, deprecated=False):
        prefix = "Deprecated" if deprecated else ""
        out = {}
        if not_found:
            out["404"] = ref("responses", prefix + "NotFound")
        out["4XX"] = ref("responses", prefix + "ClientError")
        out["5XX"] = ref("responses", prefix + "ServerError")
        return out

    def json_body(schema_name, media=JSON):
        return {media: {"schema": ref("schemas", schema_name)}}

    # ---- operations ----------------------------------------------------------------------
    price_op = {
        "operationId": "getListing" if BUG == "duplicate-operation-id" else "getListingPrice",
        "summary": "Read a listing's price",
        "tags": ["listings"],
        "responses": {
            "200": {
                "description": "The listing's price.",
                "content": json_body("Price"),
            },
            **errors(not_found=True, deprecated=v11),
        },
    }
    if v11:
        price_op["deprecated"] = True
        price_op["description"] = (
            f"Deprecated since revision 1.1 ({DEPRECATION_VALUE}); stops answering after "
            f"{SUNSET_VALUE}. Read `price_cents` and `currency` from `getListing` instead.")
        # oasdiff's extension for the sunset date: a full-date or an RFC 3339 date-time
        price_op["x-sunset"] = SUNSET_VALUE if BUG == "x-sunset-http-date" else "2027-06-30"
        price_op["responses"]["200"]["headers"] = copy.deepcopy(deprecation_headers)

    paths = {
        "/listings": {
            "get": {
                "operationId": "listListings",
                "summary": "List listings",
                "tags": ["listings"],
                "parameters": [ref("parameters", "StatusFilter")],
                "responses": {
                    "200": {"description": "Every listing, or those with the status asked for; "
                                           "in no particular order.",
                            "content": json_body("ListingPage")},
                    **errors(not_found=False),
                },
            },
            "post": {
                "operationId": "createListing",
                "summary": "Create a listing",
                "tags": ["listings"],
                "requestBody": ref("requestBodies", "NewListing"),
                "responses": {
                    "201": {
                        "description": "Created.",
                        "headers": {"Location": ref("headers", "Location")},
                        "content": json_body("Listing"),
                    },
                    **errors(not_found=False),
                },
            },
        },
        "/listings/{listingId}": {
            "parameters": [ref("parameters", "ListingId")],
            "get": {
                "operationId": "getListing",
                "summary": "Read a listing",
                "tags": ["listings"],
                "responses": {
                    "200": {"description": "The listing.", "content": json_body("Listing")},
                    **errors(not_found=True),
                },
            },
            "delete": {
                "operationId": "deleteListing",
                "summary": "Delete a listing",
                "tags": ["listings"],
                "responses": {
                    "204": {"description": "Deleted; no body."},
                    **errors(not_found=True),
                },
            },
        },
        "/listings/{listingId}/price": {
            "parameters": [ref("parameters", "ListingId")],
            "get": price_op,
        },
        "/healthz": {
            "get": {
                "operationId": "getHealth",
                "summary": "Liveness",
                "tags": ["operations"],
                "responses": {
                    "200": {"description": "Ready.", "content": json_body("Health")},
                    "5XX": ref("responses", "ServerError"),
                },
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApiDocument",
                "summary": "This document (the newest revision)",
                "tags": ["operations"],
                "responses": {
                    "200": {"description": "The OpenAPI document.",
                            "content": {OPENAPI_JSON: {"schema": {"type": "object"}}}},
                    "5XX": ref("responses", "ServerError"),
                },
            },
        },
    }
    if v11:
        paths["/openapi/1.0.json"] = {
            "get": {
                "operationId": "getOpenApiDocumentRevision10",
                "summary": "Revision 1.0 of this document, as first published",
                "tags": ["operations"],
                "responses": {
                    "200": {"description": "The OpenAPI document, revision 1.0.",
                            "content": {OPENAPI_JSON: {"schema": {"type": "object"}}}},
                    "5XX": ref("responses", "ServerError"),
                },
            },
        }

    return {
        "openapi": "3.1.1",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "Marketplace listings",
            "summary": "Create, read, list and delete the listings of a small marketplace.",
            "version": "1.1.0" if v11 else "1.0.0",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "listings", "description": "Listings for sale."},
            {"name": "operations", "description": "Health and documents."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "headers": headers,
            "parameters": {
                "ListingId": {
                    "name": "listingId",
                    "in": "path",
                    "required": True,
                    "schema": ref("schemas", "ListingId"),
                },
                "StatusFilter": {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "description": "Only the listings with this status. Any other value is "
                                   "a client error.",
                    "schema": ref("schemas", "Status"),
                },
            },
            "requestBodies": {
                "NewListing": {
                    "required": True,
                    "content": {JSON: {"schema": ref("schemas", "NewListing")}},
                },
            },
        },
    }


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


DOC_11 = build_document("1.1")
if BUG == "v10-regenerated":
    # "we generate the document from the code": the old revision is today's with another number
    DOC_10 = copy.deepcopy(DOC_11)
    DOC_10["info"]["version"] = "1.0.0"
else:
    DOC_10 = build_document("1.0")
DOC_11_BYTES = dumps(DOC_11)
DOC_10_BYTES = dumps(DOC_10)


# --------------------------------------------------------------------------------------------
# Store

class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.listings = {}  # id -> listing (insertion order = creation order)
        self.deleted = set()  # only for INDEP_BUG=list-keeps-deleted

    def add(self, listing):
        with self.lock:
            self.listings[listing["id"]] = listing

    def get(self, listing_id):
        with self.lock:
            if listing_id in self.deleted:
                return None
            return self.listings.get(listing_id)

    def delete(self, listing_id):
        with self.lock:
            if BUG == "list-keeps-deleted":
                if listing_id in self.listings and listing_id not in self.deleted:
                    self.deleted.add(listing_id)
                    return self.listings[listing_id]
                return None
            return self.listings.pop(listing_id, None)

    def all(self, status=None):
        with self.lock:
            items = list(self.listings.values())
        items.reverse()  # newest first
        if BUG != "list-keeps-deleted":
            items = [l for l in items if l["id"] not in self.deleted]
        if status is not None:
            items = [l for l in items if l["status"] == status]
        return items


STORE = Store()


# --------------------------------------------------------------------------------------------
# Validation

class Invalid(Exception):
    def __init__(self, errors, status=None):
        super().__init__("invalid")
        self.errors = errors
        self.status = status or INVALID_STATUS


def has_surrogates(s):
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def check_string(value, pointer, lo, hi, errors):
    if not isinstance(value, str):
        errors.append({"pointer": pointer, "detail": "must be a string"})
    elif has_surrogates(value):
        errors.append({"pointer": pointer, "detail": "must be valid Unicode (a lone surrogate)"})
    elif not lo <= len(value) <= hi:  # code points
        errors.append({"pointer": pointer,
                       "detail": f"must be {lo} to {hi} characters long (has {len(value)})"})


def validate_new_listing(body):
    """The stored fields of a valid new listing, or raise Invalid."""
    if not isinstance(body, dict):
        raise Invalid([{"pointer": "", "detail": "the body must be a JSON object"}])
    errors = []
    fields = {}

    if "title" not in body:
        errors.append({"pointer": "/title", "detail": "is required"})
    else:
        check_string(body["title"], "/title", 1, TITLE_MAX, errors)
        fields["title"] = body["title"]

    if "price_cents" not in body:
        errors.append({"pointer": "/price_cents", "detail": "is required"})
    else:
        price = body["price_cents"]
        if isinstance(price, float) and "integral-floats" in STYLES and price.is_integer():
            price = int(price)
        is_int = isinstance(price, int) and (BUG == "bool-price" or not isinstance(price, bool))
        if not is_int:
            errors.append({"pointer": "/price_cents", "detail": "must be an integer"})
        elif not (0 <= price and (price < PRICE_MAX if BUG == "price-max-exclusive"
                                  else price <= PRICE_MAX)):
            errors.append({"pointer": "/price_cents",
                           "detail": f"must be from 0 to {PRICE_MAX}"})
        fields["price_cents"] = price

    if "currency" not in body:
        errors.append({"pointer": "/currency", "detail": "is required"})
    elif not isinstance(body["currency"], str) or body["currency"] not in CURRENCIES:
        errors.append({"pointer": "/currency", "detail": f"must be one of {', '.join(CURRENCIES)}"})
    else:
        fields["currency"] = body["currency"]

    status = body.get("status", "draft")
    if "status" in body and (not isinstance(status, str) or status not in STATUSES):
        errors.append({"pointer": "/status", "detail": "must be draft or active"})
    fields["status"] = status

    tags = body.get("tags", [])
    if not isinstance(tags, list):
        errors.append({"pointer": "/tags", "detail": "must be an array of strings"})
    else:
        if len(tags) > TAGS_MAX:
            errors.append({"pointer": "/tags", "detail": f"at most {TAGS_MAX} tags"})
        tag_max = TAG_MAX + 1 if BUG == "tag-length-off-by-one" else TAG_MAX
        for i, tag in enumerate(tags):
            check_string(tag, f"/tags/{i}", 1, tag_max, errors)
    fields["tags"] = list(tags) if isinstance(tags, list) else []

    if errors:
        raise Invalid(errors)
    return fields


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(raw):
    """Strict RFC 8259: UTF-8 (a BOM is refused), no NaN/Infinity."""
    text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return json.loads(text, parse_constant=reject_constant)


def now_rfc3339():
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------------------------
# HTTP

def media_type(content_type):
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media(mt):
    return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "listings/1.1"
    error_content_type = PROBLEM_JSON

    def version_string(self):
        return self.server_version

    def parse_request(self):
        self.path = None  # not the previous request's path in an error about this one
        return super().parse_request()

    # ---- plumbing ------------------------------------------------------------------------
    def log_message(self, fmt, *args):
        if os.environ.get("LOG_REQUESTS"):
            super().log_message(fmt, *args)

    def send(self, status, body=None, content_type=JSON, headers=()):
        """One answer: status, headers, and a body (bytes, or an object to encode as JSON)."""
        if self.deprecated and (BUG != "deprecation-only-on-200" or status == 200):
            headers = list(headers) + [
                ("Deprecation", DEPRECATION_VALUE),
                ("Sunset", SUNSET_VALUE),
                ("Link", f'<{self.successor}>; rel="successor-version"'),
            ]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if body is not None and status not in (204, 304):
            if not isinstance(body, bytes):
                body = dumps(body)
            if "charset-param" in STYLES:
                content_type += "; charset=utf-8"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        elif status not in (204, 304):
            self.send_header("Content-Length", "0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body is not None and status not in (204, 304) and self.command != "HEAD":
            self.wfile.write(body)

    def problem(self, status, detail=None, errors=None, type_="about:blank", title=None,
                headers=(), content_type=PROBLEM_JSON):
        doc = {
            "type": type_,
            "title": title or HTTPStatus(status).phrase,
            "status": status,
        }
        if detail is not None:
            doc["detail"] = detail
        if getattr(self, "path", None):
            doc["instance"] = urllib.parse.urlsplit(self.path).path or "/"
        if errors:
            doc["errors"] = errors
        self.send(status, doc, content_type=content_type, headers=headers)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, 414, 431, 501...) as problem documents."""
        self.close_connection = True
        self.deprecated = False  # not an operation of the document, whatever the path
        if not hasattr(self, "command") or self.command is None:
            self.command = "GET"
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # else http.server writes no status line, no headers
        try:
            self.problem(code, detail=explain or message)
        except OSError:
            pass

    def read_body(self):
        """The request body as bytes (Content-Length or chunked), or None after answering."""
        te = self.headers.get("Transfer-Encoding", "")
        if te:
            if te.strip().lower() != "chunked":
                self.close_connection = True
                self.problem(501, detail=f"Transfer-Encoding {te} is not supported")
                return None
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    self.problem(400, detail="malformed chunked body")
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    self.problem(413, detail=f"the body is larger than {MAX_BODY} bytes")
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self.problem(400, detail="Content-Length is not a number")
            return None
        if n > MAX_BODY:
            self.close_connection = True
            self.problem(413, detail=f"the body is larger than {MAX_BODY} bytes")
            return None
        return self.rfile.read(n)

    # ---- routing -------------------------------------------------------------------------
    def do_GET(self): self.dispatch()
    def do_HEAD(self): self.dispatch()
    def do_POST(self): self.dispatch()
    def do_PUT(self): self.dispatch()
    def do_PATCH(self): self.dispatch()
    def do_DELETE(self): self.dispatch()
    def do_OPTIONS(self): self.dispatch()

    def dispatch(self):
        self.deprecated = False
        self.successor = ""
        try:
            body = self.read_body()
            if body is None:
                return
            url = urllib.parse.urlsplit(self.path)
            segments = url.path.split("/")[1:]
            method = self.command
            if url.path == "/healthz":
                return self.route(method, {"GET": lambda: self.send(200, {"status": "ok"})})
            if url.path == "/openapi.json":
                return self.route(method, {"GET": lambda: self.send(
                    200, DOC_11_BYTES, content_type=OPENAPI_JSON)})
            if url.path == "/openapi/1.0.json":
                return self.route(method, {"GET": lambda: self.send(
                    200, DOC_10_BYTES, content_type=OPENAPI_JSON)})
            if segments == ["listings"]:
                return self.route(method, {
                    "GET": lambda: self.list_listings(url.query),
                    "POST": lambda: self.create_listing(body),
                })
            if len(segments) in (2, 3) and segments[0] == "listings" and segments[1]:
                listing_id = urllib.parse.unquote(segments[1])
                if len(segments) == 2:
                    return self.route(method, {
                        "GET": lambda: self.get_listing(listing_id),
                        "DELETE": lambda: self.delete_listing(listing_id),
                    })
                if segments[2] == "price":
                    self.deprecated = True
                    self.successor = "/listings/" + segments[1]
                    return self.route(method, {"GET": lambda: self.get_price(listing_id)})
            self.problem(404, detail=f"there is nothing at {url.path}")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc()
            self.close_connection = True
            try:
                self.problem(500, detail="an unexpected error; it has been logged")
            except OSError:
                pass

    def route(self, method, handlers):
        if "GET" in handlers:
            handlers["HEAD"] = handlers["GET"]  # RFC 9110 9.3.2: GET's answer without its body
        handler = handlers.get(method)
        if handler is None:
            allow = ", ".join(sorted(handlers))
            return self.problem(405, detail=f"{method} is not allowed here; use {allow}",
                                headers=[("Allow", allow)])
        return handler()

    # ---- operations ----------------------------------------------------------------------
    def invalid(self, exc):
        content_type = JSON if BUG == "validation-plain-json" else PROBLEM_JSON
        self.problem(exc.status, detail="the request is invalid; see errors",
                     errors=exc.errors, title="Invalid request",
                     type_="https://marketplace.example/problems/invalid-request",
                     content_type=content_type)

    def create_listing(self, raw):
        ctype = self.headers.get("Content-Type")
        if "strict-media-type" in STYLES and ctype and not is_json_media(media_type(ctype)):
            return self.problem(415, detail=f"send application/json, not {media_type(ctype)}",
                                headers=[("Accept-Post", JSON)])
        try:
            body = parse_json(raw)
        except ValueError as e:
            # validate-422 keeps 400 for a body that is not JSON at all (syntax), 422 for the rest
            return self.invalid(Invalid([{"pointer": "", "detail": f"not JSON: {e}"}], status=400))
        try:
            fields = validate_new_listing(body)
        except Invalid as e:
            return self.invalid(e)
        listing = {
            "id": str(uuid.uuid4()),
            "title": fields["title"],
            "price_cents": fields["price_cents"],
            "currency": fields["currency"],
            "status": fields["status"],
            "tags": fields["tags"],
            "created_at": now_rfc3339(),
        }
        STORE.add(listing)
        location = "/listings/" + urllib.parse.quote(listing["id"], safe="")
        if "absolute-location" in STYLES:
            host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}"
            location = f"http://{host}{location}"
        self.send(201, listing, headers=[("Location", location)])

    def get_listing(self, listing_id):
        listing = STORE.get(listing_id)
        if listing is None:
            return self.not_found(listing_id)
        self.send(200, listing)

    def list_listings(self, query):
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        status = None
        if "status" in params:
            values = params["status"]
            if len(values) != 1 or values[0] not in STATUSES:
                return self.invalid(Invalid([{
                    "parameter": "status",
                    "detail": "give status once, as draft or active",
                }]))
            status = values[0]
        self.send(200, {"items": STORE.all(status)})

    def delete_listing(self, listing_id):
        listing = STORE.delete(listing_id)
        if listing is None:
            if BUG == "delete-idempotent":
                return self.send(204)  # "DELETE is idempotent"
            return self.not_found(listing_id)
        if BUG == "delete-200-body":
            return self.send(200, listing)
        self.send(204)

    def get_price(self, listing_id):
        listing = STORE.get(listing_id)
        if listing is None:
            return self.not_found(listing_id)
        self.send(200, {"price_cents": listing["price_cents"], "currency": listing["currency"]})

    def not_found(self, listing_id):
        self.problem(404, detail=f"there is no listing {listing_id}")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = Server(("127.0.0.1", port), Handler)
    print(f"listening on 127.0.0.1:{port} (bug={BUG or '-'}, styles={sorted(STYLES) or '-'})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
