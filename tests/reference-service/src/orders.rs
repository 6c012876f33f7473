//! Customers and orders: exercise `database-indexing` (task statement:
//! `exercises/database-indexing/README.md`). The grader creates and fills the tables before the
//! service starts; the migration here repeats them (`IF NOT EXISTS`, for runs without the data
//! set) and adds the indexes the endpoints need.
//!
//! `REFSVC_STYLE` switches to another correct design (a partial index per status, a `citext`
//! expression index, comment-prefixed statements; [`Style`]), which the grader must accept as it
//! accepts the default one.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::bugs::{self, Bug};
use crate::http::allow;
use crate::problem::{FieldError, Problem};
use crate::AppState;

const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS customers (
        id          bigint PRIMARY KEY,
        email       text NOT NULL,
        name        text NOT NULL,
        created_at  timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS orders (
        id           bigint PRIMARY KEY,
        customer_id  bigint NOT NULL REFERENCES customers (id),
        status       text NOT NULL,
        created_at   timestamptz NOT NULL,
        total_cents  bigint NOT NULL
    );
";

/// Equality columns first (customer, status), then the sort key and its tiebreaker: one index
/// finds a customer's orders of a status, already in page order, for every page.
const CUSTOMER_ORDERS_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS orders_customer_status_created_idx ON orders (customer_id, status, created_at, id);";
/// Ranges of created_at (the report).
const CREATED_INDEX: &str = "CREATE INDEX IF NOT EXISTS orders_created_idx ON orders (created_at);";
/// The newest orders of a status (the recent-orders list).
const STATUS_CREATED_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS orders_status_created_idx ON orders (status, created_at, id);";
/// The expression the lookup compares.
const LOWER_EMAIL_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS customers_lower_email_idx ON customers (lower(email));";

/// One index per status, each holding that status's orders in page order: the status is in the
/// predicate, so the key is (customer, sort key, id).
const PARTIAL_STATUS_INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS orders_pending_customer_idx ON orders (customer_id, created_at, id) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS orders_shipped_customer_idx ON orders (customer_id, created_at, id) WHERE status = 'shipped';
    CREATE INDEX IF NOT EXISTS orders_delivered_customer_idx ON orders (customer_id, created_at, id) WHERE status = 'delivered';
    CREATE INDEX IF NOT EXISTS orders_cancelled_customer_idx ON orders (customer_id, created_at, id) WHERE status = 'cancelled';
    CREATE INDEX IF NOT EXISTS orders_refunded_customer_idx ON orders (customer_id, created_at, id) WHERE status = 'refunded';
";
/// Case-insensitive text: the lookup compares `email::citext`, this index holds exactly that.
const CITEXT_EMAIL_INDEX: &str = "
    CREATE EXTENSION IF NOT EXISTS citext;
    CREATE INDEX IF NOT EXISTS customers_email_citext_idx ON customers ((email::citext));
";

/// Another correct design than the default one, for the grader's own tests: each must score
/// 100%. Chosen by `REFSVC_STYLE`; unset (or empty) is the default design above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Default,
    /// One partial index per status instead of the composite index with status in its key.
    PartialStatusIndex,
    /// `email::citext` compared, and an expression index on `(email::citext)`.
    CitextEmail,
    /// Every statement starts with a comment naming the route (`/* app=refsvc route=... */`,
    /// as sqlcommenter and query-tagging middlewares do).
    SqlComments,
    /// A background worker (the shape of an outbox relay) polls the database every millisecond, as a
    /// learner's one service for every exercise may: its statements land in the grader's
    /// measurement windows and must not be counted as the requests'.
    BackgroundPoller,
}

pub const STYLE_ENV: &str = "REFSVC_STYLE";
const STYLES: &[(&str, Style)] = &[
    ("partial-status-index", Style::PartialStatusIndex),
    ("citext-email", Style::CitextEmail),
    ("sql-comments", Style::SqlComments),
    ("background-poller", Style::BackgroundPoller),
];

/// The design `REFSVC_STYLE` names, read once. An unknown name stops the service at start-up
/// (the migration asks first), so a typo never tests the default design by mistake.
pub fn style() -> Style {
    static STYLE: OnceLock<Style> = OnceLock::new();
    *STYLE.get_or_init(|| match std::env::var(STYLE_ENV) {
        Ok(v) if !v.trim().is_empty() => STYLES
            .iter()
            .find(|(name, _)| *name == v.trim())
            .map(|(_, s)| *s)
            .unwrap_or_else(|| {
                let names: Vec<&str> = STYLES.iter().map(|(n, _)| *n).collect();
                panic!(
                    "unknown {STYLE_ENV}={v:?}; valid values are: {}",
                    names.join(", ")
                )
            }),
        _ => Style::Default,
    })
}

/// The statement as the service sends it: with the route's comment first in the `sql-comments`
/// style.
fn sql(route: &str, text: &str) -> String {
    match style() {
        Style::SqlComments => format!("/* app=refsvc route={route} */ {}", text.trim_start()),
        _ => text.to_string(),
    }
}

/// The tables and the indexes, as the active planted bug and style have them.
pub fn migration() -> String {
    let mut out = vec![TABLES];
    if bugs::is(Bug::IdxNone) {
        return sql("migration", TABLES);
    }
    if bugs::is(Bug::IdxWrongOrder) {
        // The range column first: "it serves the report too", so the created_at index went.
        out.push("CREATE INDEX IF NOT EXISTS orders_created_customer_status_idx ON orders (created_at, customer_id, status, id);");
    } else {
        out.push(match style() {
            Style::PartialStatusIndex => PARTIAL_STATUS_INDEXES,
            _ => CUSTOMER_ORDERS_INDEX,
        });
        if bugs::is(Bug::IdxBrinReport) {
            // "BRIN is tiny and the rows are in time order": one summary per 128 pages.
            out.push("CREATE INDEX IF NOT EXISTS orders_created_brin_idx ON orders USING brin (created_at);");
        } else {
            out.push(CREATED_INDEX);
        }
    }
    out.push(STATUS_CREATED_INDEX);
    if bugs::is(Bug::IdxNormaliseEmails) {
        // "Store emails in lower case once, and a plain index does": the customers' data changes.
        out.push("UPDATE customers SET email = lower(email) WHERE email <> lower(email);");
        out.push("CREATE INDEX IF NOT EXISTS customers_email_idx ON customers (email);");
    } else if bugs::is(Bug::IdxFunctionOnColumn) {
        // An index on the column, while the query compares lower(email).
        out.push("CREATE INDEX IF NOT EXISTS customers_email_idx ON customers (email);");
    } else if style() == Style::CitextEmail {
        out.push(CITEXT_EMAIL_INDEX);
    } else {
        out.push(LOWER_EMAIL_INDEX);
    }
    if bugs::is(Bug::IdxRedundant) {
        // A prefix of the composite index, and a second copy of the email index.
        out.push("CREATE INDEX IF NOT EXISTS orders_customer_idx ON orders (customer_id);");
        out.push(
            "CREATE INDEX IF NOT EXISTS customers_email_lower_idx ON customers (lower(email));",
        );
    }
    sql("migration", &out.concat())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/customers/{id}/orders",
            allow(get(customer_orders), "GET, HEAD"),
        )
        .route("/customers", allow(get(find_customers), "GET, HEAD"))
        .route("/reports/orders", allow(get(report), "GET, HEAD"))
        .route("/orders", allow(get(recent_orders), "GET, HEAD"))
}

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
const ORDER_COLUMNS: &str = "id, customer_id, status, created_at, total_cents";

type Params = Query<HashMap<String, String>>;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn order(row: &Row) -> Value {
    json!({
        "id": row.get::<_, i64>("id"),
        "customer_id": row.get::<_, i64>("customer_id"),
        "status": row.get::<_, String>("status"),
        "created_at": rfc3339(row.get("created_at")),
        "total_cents": row.get::<_, i64>("total_cents"),
    })
}

fn invalid(field: &str, detail: &str) -> Response {
    Problem::invalid(vec![FieldError::new(format!("/{field}"), detail)]).into_response()
}

// The error is the handler's finished answer; it is built once per bad request.
#[allow(clippy::result_large_err)]
fn limit(params: &HashMap<String, String>) -> Result<i64, Response> {
    match params.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(invalid("limit", "limit must be an integer from 1 to 100")),
        },
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn client(state: &AppState) -> Result<deadpool_postgres::Object, Response> {
    state
        .pool
        .get()
        .await
        .map_err(|e| Problem::internal(e).into_response())
}

/// `GET /customers/{id}/orders?status=S&limit=N&cursor=C`: keyset pages, newest first.
async fn customer_orders(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    const ROUTE: &str = "/customers/{id}/orders";
    let Ok(customer) = id.parse::<i64>() else {
        return Problem::not_found(format!("no customer {id}")).into_response();
    };
    let Some(status) = params.get("status").cloned() else {
        return invalid("status", "status is required");
    };
    let limit = match limit(&params) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let db = match client(&state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // The path's id as text, compared with the column cast to text: no index on customer_id
    // serves `customer_id::text`.
    let cast = bugs::is(Bug::IdxCastCustomer);
    let by_customer = if cast {
        "customer_id::text = $1"
    } else {
        "customer_id = $1"
    };
    let customer_param: &(dyn ToSql + Sync) = if cast { &id } else { &customer };
    let rows = if bugs::is(Bug::IdxOffsetDeepPages) {
        let offset = match params.get("offset").map(|o| o.parse::<i64>()) {
            None => 0,
            Some(Ok(o)) if o >= 0 => o,
            _ => return invalid("offset", "offset must be a non-negative integer"),
        };
        let q = sql(
            ROUTE,
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE {by_customer} AND status = $2
                 ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
            ),
        );
        match db
            .query(&q, &[customer_param, &status, &limit, &offset])
            .await
        {
            Ok(rows) => {
                let next = (rows.len() as i64 == limit).then(|| {
                    format!(
                        "/customers/{customer}/orders?status={}&limit={limit}&offset={}",
                        encode(&status),
                        offset + limit
                    )
                });
                return Json(json!({
                    "items": rows.iter().map(order).collect::<Vec<_>>(),
                    "next": next,
                }))
                .into_response();
            }
            Err(e) => return Problem::internal(e).into_response(),
        }
    } else {
        let cursor = match params.get("cursor") {
            None => None,
            Some(c) => match parse_cursor(c) {
                Some(at) => Some(at),
                None => return invalid("cursor", "cursor is not one this service issued"),
            },
        };
        if bugs::is(Bug::IdxSortInApp) {
            // "The database returns the customer's orders, the service pages them": every
            // matching row is read on every page.
            let q = sql(
                ROUTE,
                &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE {by_customer} AND status = $2"),
            );
            db.query(&q, &[customer_param, &status])
                .await
                .map(|mut rows| {
                    let key = |r: &Row| {
                        (
                            r.get::<_, DateTime<Utc>>("created_at"),
                            r.get::<_, i64>("id"),
                        )
                    };
                    rows.sort_by_key(|r| std::cmp::Reverse(key(r)));
                    rows.into_iter()
                        .filter(|r| cursor.is_none_or(|c| key(r) < c))
                        .take(limit as usize)
                        .collect()
                })
        } else {
            // Oldest first: "created_at, id" without DESC, and cursors continue upwards. As fast
            // as the right order (the same index, walked forwards), and wrong.
            let (order, after_op) = if bugs::is(Bug::IdxOldestFirst) {
                ("created_at, id", ">")
            } else {
                ("created_at DESC, id DESC", "<")
            };
            match cursor {
                None => {
                    let q = sql(
                        ROUTE,
                        &format!(
                            "SELECT {ORDER_COLUMNS} FROM orders WHERE {by_customer} AND status = $2
                             ORDER BY {order} LIMIT $3"
                        ),
                    );
                    db.query(&q, &[customer_param, &status, &limit]).await
                }
                Some((at, after)) => {
                    let q = sql(
                        ROUTE,
                        &format!(
                            "SELECT {ORDER_COLUMNS} FROM orders WHERE {by_customer} AND status = $2
                               AND (created_at, id) {after_op} ($3, $4)
                             ORDER BY {order} LIMIT $5"
                        ),
                    );
                    db.query(&q, &[customer_param, &status, &at, &after, &limit])
                        .await
                }
            }
        }
    };
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return Problem::internal(e).into_response(),
    };
    // The link's parameter is named `after`, the handler reads `cursor`.
    let cursor_param = if bugs::is(Bug::IdxNextRepeatsPage) {
        "after"
    } else {
        "cursor"
    };
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == limit => {
            let at: DateTime<Utc> = last.get("created_at");
            Some(format!(
                "/customers/{customer}/orders?status={}&limit={limit}&{cursor_param}={}_{}",
                encode(&status),
                at.timestamp_micros(),
                last.get::<_, i64>("id")
            ))
        }
        _ => None,
    };
    Json(json!({ "items": rows.iter().map(order).collect::<Vec<_>>(), "next": next }))
        .into_response()
}

fn parse_cursor(c: &str) -> Option<(DateTime<Utc>, i64)> {
    let (micros, id) = c.split_once('_')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// `GET /customers?email=E`: case-insensitive equality.
async fn find_customers(State(state): State<AppState>, Query(params): Params) -> Response {
    let Some(email) = params.get("email") else {
        return invalid("email", "email is required");
    };
    let db = match client(&state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = if bugs::is(Bug::IdxEmailParamNotLowered) {
        // The column is lower-cased, the parameter is not: an upper-case email finds nobody.
        "SELECT id, email, name FROM customers WHERE lower(email) = $1 ORDER BY id"
    } else if bugs::is(Bug::IdxNormaliseEmails) {
        "SELECT id, email, name FROM customers WHERE email = lower($1) ORDER BY id"
    } else if bugs::is(Bug::IdxIlikeEmail) {
        // "ILIKE ignores case": and no B-tree index serves it.
        "SELECT id, email, name FROM customers WHERE email ILIKE $1 ORDER BY id"
    } else if style() == Style::CitextEmail {
        "SELECT id, email, name FROM customers WHERE email::citext = ($1::text)::citext ORDER BY id"
    } else {
        "SELECT id, email, name FROM customers WHERE lower(email) = lower($1) ORDER BY id"
    };
    match db.query(&sql("/customers", q), &[email]).await {
        Ok(rows) => Json(json!({
            "items": rows.iter().map(|r| json!({
                "id": r.get::<_, i64>(0), "email": r.get::<_, String>(1), "name": r.get::<_, String>(2),
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => Problem::internal(e).into_response(),
    }
}

// The error is the handler's finished answer; it is built once per bad request.
#[allow(clippy::result_large_err)]
fn time_param(params: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, Response> {
    params
        .get(name)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| invalid(name, "must be an RFC 3339 timestamp"))
}

/// `GET /reports/orders?from=T1&to=T2`: count and revenue of a time range.
async fn report(State(state): State<AppState>, Query(params): Params) -> Response {
    let (from, to) = match (time_param(&params, "from"), time_param(&params, "to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let db = match client(&state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = if bugs::is(Bug::IdxReportBetween) {
        // BETWEEN includes both bounds: an order at `to` is counted here and in the next range.
        "SELECT count(*), coalesce(sum(total_cents), 0)::bigint FROM orders
         WHERE created_at BETWEEN $1 AND $2"
    } else {
        "SELECT count(*), coalesce(sum(total_cents), 0)::bigint FROM orders
         WHERE created_at >= $1 AND created_at < $2"
    };
    match db
        .query_one(&sql("/reports/orders", q), &[&from, &to])
        .await
    {
        Ok(row) => Json(json!({
            "from": rfc3339(from), "to": rfc3339(to),
            "orders": row.get::<_, i64>(0), "revenue_cents": row.get::<_, i64>(1),
        }))
        .into_response(),
        Err(e) => Problem::internal(e).into_response(),
    }
}

/// `GET /orders?status=S&limit=N`: the newest orders of a status, each with its customer.
async fn recent_orders(State(state): State<AppState>, Query(params): Params) -> Response {
    let Some(status) = params.get("status").cloned() else {
        return invalid("status", "status is required");
    };
    let limit = match limit(&params) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let db = match client(&state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let customer =
        |id: i64, email: String, name: String| json!({ "id": id, "email": email, "name": name });
    if bugs::is(Bug::IdxNPlusOne)
        || bugs::is(Bug::IdxImpersonateProbe)
        || bugs::is(Bug::IdxTamperAsSuperuser)
    {
        let q = sql(
            "/orders",
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE status = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
            ),
        );
        let rows = match db.query(&q, &[&status, &limit]).await {
            Ok(r) => r,
            Err(e) => return Problem::internal(e).into_response(),
        };
        let mut items = Vec::new();
        for row in &rows {
            let id: i64 = row.get("customer_id");
            let c = match db
                .query_one(
                    &sql("/orders", "SELECT email, name FROM customers WHERE id = $1"),
                    &[&id],
                )
                .await
            {
                Ok(c) => c,
                Err(e) => return Problem::internal(e).into_response(),
            };
            let mut o = order(row);
            o["customer"] = customer(id, c.get(0), c.get(1));
            items.push(o);
        }
        return Json(json!({ "items": items })).into_response();
    }
    // The status filter forgotten: the newest orders of any status (`$1 IS NOT NULL` keeps the
    // parameter's type known).
    let by_status = if bugs::is(Bug::IdxRecentIgnoresStatus) {
        "$1::text IS NOT NULL"
    } else {
        "o.status = $1"
    };
    let rows = match db
        .query(
            &sql(
                "/orders",
                &format!(
                    "SELECT o.id, o.customer_id, o.status, o.created_at, o.total_cents, c.email, c.name
                     FROM orders o JOIN customers c ON c.id = o.customer_id
                     WHERE {by_status} ORDER BY o.created_at DESC, o.id DESC LIMIT $2"
                ),
            ),
            &[&status, &limit],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return Problem::internal(e).into_response(),
    };
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut o = order(row);
            o["customer"] = customer(row.get("customer_id"), row.get("email"), row.get("name"));
            o
        })
        .collect();
    Json(json!({ "items": items })).into_response()
}
