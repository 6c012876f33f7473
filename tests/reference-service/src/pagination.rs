//! `GET /products`, paginated: exercise `pagination` (task statement:
//! `exercises/pagination/README.md`).
//!
//! Keyset pagination: a page continues strictly after the last item of the previous one, by the
//! sort key and the id as a unique tiebreaker (`WHERE (price_cents, id) > ($1, $2)`), so inserts
//! and deletes elsewhere in the list never shift it (use-the-index-luke.com/no-offset). The cursor
//! is opaque and URL-safe (hex), carries a checksum, and is bound to the sort and the filters it
//! was issued for.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::bugs::{self, Bug};
use crate::problem::Problem;
use crate::products::{Product, COLUMNS};
use crate::AppState;

/// The category column (products are created with it by `products.rs`) and the indexes that
/// serve every sort, with and without the category filter, straight from the index.
pub const SCHEMA: &str = "
    ALTER TABLE products ADD COLUMN IF NOT EXISTS category text;
    CREATE INDEX IF NOT EXISTS products_created_id ON products (created_at, id);
    CREATE INDEX IF NOT EXISTS products_category_created_id ON products (category, created_at, id);
    CREATE INDEX IF NOT EXISTS products_category_price_id ON products (category, price_cents, id);
    CREATE INDEX IF NOT EXISTS products_price_id ON products (price_cents, id);
";

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// Mixed into the cursor checksum, so that a client cannot forge a valid cursor by accident.
const CURSOR_KEY: &str = "reference-service cursor v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    /// `-created_at` (the default): newest first.
    Newest,
    /// `price_cents`: cheapest first.
    Price,
}

impl Sort {
    fn name(self) -> &'static str {
        match self {
            Sort::Newest => "-created_at",
            Sort::Price => "price_cents",
        }
    }
}

/// A validated list request.
#[derive(Debug)]
struct ListQuery {
    limit: i64,
    sort: Sort,
    category: Option<String>,
    min_price: Option<i32>,
    max_price: Option<i32>,
    after: Option<After>,
}

/// Where a page starts: after this item, or (planted bug) after this many rows.
#[derive(Debug)]
enum After {
    Key { key: i64, id: Uuid },
    Offset(i64),
}

/// What a cursor holds, before encoding.
#[derive(Debug, Serialize, Deserialize)]
struct CursorData {
    /// The sort it belongs to.
    s: String,
    /// The filters it belongs to (a fingerprint).
    f: String,
    /// The sort key of the last item (price in cents, or created_at in microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<Uuid>,
    /// Planted bug `page-offset`: rows to skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<i64>,
}

fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, detail)
}

fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn encode_cursor(data: &CursorData) -> String {
    let payload = serde_json::to_string(data).expect("a cursor serialises");
    let checksum = fnv(&format!("{CURSOR_KEY}{payload}"));
    // Planted bug: the signed JSON goes out as it is, with characters a URL cannot carry.
    if bugs::is(Bug::PageCursorRawJson) {
        return format!("{payload}{checksum:016x}");
    }
    format!("{}{checksum:016x}", hex(payload.as_bytes()))
}

/// Decodes and checks a cursor. Anything wrong is the client's mistake: 400.
fn decode_cursor(cursor: &str) -> Result<CursorData, Problem> {
    let invalid =
        || bad_request("The cursor is not valid; use next_cursor from a page, unchanged.");
    if bugs::is(Bug::PageCursorUnvalidated) {
        // Trusts the cursor: whatever fails to decode surfaces as a 500.
        let payload = unhex(cursor.get(..cursor.len().saturating_sub(16)).unwrap_or(""))
            .ok_or_else(|| Problem::internal("cursor is not hex"))?;
        return serde_json::from_slice(&payload).map_err(Problem::internal);
    }
    if cursor.len() <= 16 || cursor.len() > 1024 {
        return Err(invalid());
    }
    let Some((body, sum)) = cursor
        .is_char_boundary(cursor.len() - 16)
        .then(|| cursor.split_at(cursor.len() - 16))
    else {
        return Err(invalid());
    };
    let payload = if bugs::is(Bug::PageCursorRawJson) {
        Some(body.to_string())
    } else {
        unhex(body).and_then(|b| String::from_utf8(b).ok())
    }
    .ok_or_else(invalid)?;
    // Planted bug page-cursor-unsigned: the checksum is never compared.
    if format!("{:016x}", fnv(&format!("{CURSOR_KEY}{payload}"))) != sum
        && !bugs::is(Bug::PageCursorUnsigned)
    {
        return Err(invalid());
    }
    serde_json::from_str(&payload).map_err(|_| invalid())
}

/// The filters a cursor is bound to (not the limit: a client may change it between pages).
fn fingerprint(
    sort: Sort,
    category: Option<&str>,
    min: Option<i32>,
    max: Option<i32>,
    limit: i64,
) -> String {
    let text = if bugs::is(Bug::PageCursorIgnoresPrices) {
        format!("{}|{category:?}", sort.name())
    } else if bugs::is(Bug::PageCursorBoundToLimit) {
        format!("{}|{category:?}|{min:?}|{max:?}|{limit}", sort.name())
    } else {
        format!("{}|{category:?}|{min:?}|{max:?}", sort.name())
    };
    format!("{:016x}", fnv(&text))
}

fn parse_price(name: &str, value: &str) -> Result<i32, Problem> {
    value
        .parse::<i32>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| bad_request(format!("{name} must be a non-negative integer.")))
}

impl ListQuery {
    fn parse(params: &[(String, String)]) -> Result<Self, Problem> {
        let get = |name: &str| {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let limit = match get("limit") {
            None if bugs::is(Bug::PageDefaultUnbounded) => 10_000,
            None => DEFAULT_LIMIT,
            Some(raw) if bugs::is(Bug::PageLimitUnchecked) => raw
                .parse::<i64>()
                .unwrap_or(DEFAULT_LIMIT)
                .clamp(1, MAX_LIMIT),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n < 0 => return Err(bad_request("limit must not be negative.")),
                Ok(0) if bugs::is(Bug::PageLimitZeroRefused) => {
                    return Err(bad_request("limit must be at least 1."))
                }
                Ok(0) => DEFAULT_LIMIT,
                Ok(n) if n >= MAX_LIMIT && bugs::is(Bug::PageLimitMaxRefused) => {
                    return Err(bad_request("limit must be less than 100."))
                }
                Ok(n)
                    if bugs::is(Bug::PageLimitUnbounded)
                        || bugs::is(Bug::PageClampAfterLookahead) =>
                {
                    n
                }
                Ok(n) => n.min(MAX_LIMIT),
                // Larger than any i64: as oversized as it gets.
                Err(_) if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) => MAX_LIMIT,
                Err(_) => {
                    return Err(bad_request(format!(
                        "limit must be an integer from 1 to {MAX_LIMIT}."
                    )))
                }
            },
        };
        let sort = match get("sort") {
            None | Some("-created_at") => Sort::Newest,
            Some("price_cents") => Sort::Price,
            Some(other) => {
                return Err(bad_request(format!(
                    "sort must be -created_at or price_cents, not {other:?}."
                )))
            }
        };
        let category = get("category").map(str::to_string);
        let min_price = get("min_price_cents")
            .map(|v| parse_price("min_price_cents", v))
            .transpose()?;
        let max_price = get("max_price_cents")
            .map(|v| parse_price("max_price_cents", v))
            .transpose()?;
        let after = match get("cursor") {
            None | Some("") => None,
            Some(cursor) => {
                let data = decode_cursor(cursor)?;
                let changed = || {
                    bad_request("This cursor belongs to a list with other filters or another sort; start again from the first page.")
                };
                if data.s != sort.name() {
                    return Err(changed());
                }
                let filters = fingerprint(sort, category.as_deref(), min_price, max_price, limit);
                if data.f != filters && !bugs::is(Bug::PageCursorUnbound) {
                    return Err(changed());
                }
                Some(match (data.k, data.i, data.o) {
                    (Some(key), Some(id), None) => After::Key { key, id },
                    (None, None, Some(offset)) if offset >= 0 => After::Offset(offset),
                    _ => return Err(bad_request("The cursor is not valid.")),
                })
            }
        };
        Ok(Self {
            limit,
            sort,
            category,
            min_price,
            max_price,
            after,
        })
    }

    fn fingerprint(&self) -> String {
        fingerprint(
            self.sort,
            self.category.as_deref(),
            self.min_price,
            self.max_price,
            self.limit,
        )
    }
}

#[derive(Serialize)]
struct Page {
    items: Vec<Product>,
    next_cursor: Option<String>,
    has_more: bool,
}

/// `GET /products?limit=&cursor=&sort=&category=&min_price_cents=&max_price_cents=`.
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) =
        params.map_err(|e| bad_request(format!("The query string is invalid: {e}.")))?;
    let q = ListQuery::parse(&params)?;

    let mut conditions: Vec<String> = Vec::new();
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let arg = |value: Box<dyn ToSql + Sync + Send>, args: &mut Vec<_>| {
        args.push(value);
        format!("${}", args.len())
    };
    if let Some(category) = &q.category {
        let a = arg(Box::new(category.clone()), &mut args);
        conditions.push(format!("category = {a}"));
    }
    // Planted bug: the query for later pages forgot the price filters.
    let price_filters = !(bugs::is(Bug::PageFilterFirstPageOnly) && q.after.is_some());
    if let (Some(min), true) = (q.min_price, price_filters) {
        let a = arg(Box::new(min), &mut args);
        conditions.push(format!("price_cents >= {a}"));
    }
    if let (Some(max), true) = (q.max_price, price_filters) {
        let a = arg(Box::new(max), &mut args);
        // Planted bug page-max-price-exclusive: "up to 1000" leaves out 1000.
        let op = if bugs::is(Bug::PageMaxPriceExclusive) {
            "<"
        } else {
            "<="
        };
        conditions.push(format!("price_cents {op} {a}"));
    }
    let no_tiebreaker = bugs::is(Bug::PageNoTiebreaker);
    let (column, op, direction) = match q.sort {
        Sort::Newest if bugs::is(Bug::PageDefaultOldestFirst) => ("created_at", ">", "ASC"),
        Sort::Newest => ("created_at", "<", "DESC"),
        Sort::Price => ("price_cents", ">", "ASC"),
    };
    let mut offset = 0;
    match q.after {
        Some(After::Key { key, id }) => {
            let k = match q.sort {
                Sort::Newest => {
                    let at = DateTime::<Utc>::from_timestamp_micros(key)
                        .ok_or_else(|| bad_request("The cursor is not valid."))?;
                    arg(Box::new(at), &mut args)
                }
                Sort::Price => {
                    let price =
                        i32::try_from(key).map_err(|_| bad_request("The cursor is not valid."))?;
                    arg(Box::new(price), &mut args)
                }
            };
            if no_tiebreaker {
                conditions.push(format!("{column} {op} {k}"));
            } else {
                let i = arg(Box::new(id), &mut args);
                conditions.push(format!("({column}, id) {op} ({k}, {i})"));
            }
        }
        Some(After::Offset(o)) => offset = o,
        None => {}
    }
    let order = if no_tiebreaker {
        format!("{column} {direction}")
    } else {
        format!("{column} {direction}, id {direction}")
    };
    let always_next = bugs::is(Bug::PageAlwaysNext);
    // One row more than the page: whether it exists says whether there is a next page.
    let fetch = if always_next {
        q.limit
    } else if bugs::is(Bug::PageClampAfterLookahead) {
        // Clamps the rows fetched, but not the page cut from them.
        (q.limit + 1).min(MAX_LIMIT + 1)
    } else {
        q.limit + 1
    };
    let l = arg(Box::new(fetch), &mut args);
    let mut sql = format!(
        "SELECT {COLUMNS} FROM products{} ORDER BY {order} LIMIT {l}",
        if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        }
    );
    if bugs::is(Bug::PageOffset) {
        let o = arg(Box::new(offset), &mut args);
        sql.push_str(&format!(" OFFSET {o}"));
    }
    let refs: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let client = state.pool.get().await?;
    let rows = client.query(&sql, &refs).await?;
    let mut items: Vec<Product> = rows.iter().map(Product::from_row).collect();
    let has_more = if always_next {
        !items.is_empty()
    } else {
        let more = items.len() as i64 > q.limit;
        items.truncate(q.limit as usize);
        more
    };
    let next_cursor = match (has_more, items.last()) {
        (true, Some(last)) => {
            let filters = q.fingerprint();
            let data = if bugs::is(Bug::PageOffset) {
                CursorData {
                    s: q.sort.name().into(),
                    f: filters,
                    k: None,
                    i: None,
                    o: Some(offset + items.len() as i64),
                }
            } else {
                CursorData {
                    s: q.sort.name().into(),
                    f: filters,
                    k: Some(match q.sort {
                        Sort::Newest => last.created_at.timestamp_micros(),
                        Sort::Price => i64::from(last.price_cents),
                    }),
                    i: Some(last.id),
                    o: None,
                }
            };
            Some(encode_cursor(&data))
        }
        _ => None,
    };
    let link = next_cursor.as_deref().map(|cursor| next_link(&q, cursor));
    let mut response = Json(json!(Page {
        items,
        next_cursor,
        has_more
    }))
    .into_response();
    if let (Some(link), false) = (link, bugs::is(Bug::PageNoLink)) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// `</products?...&cursor=...>; rel="next"` (RFC 8288 §3), with the same filters and limit.
fn next_link(q: &ListQuery, cursor: &str) -> String {
    let mut pairs = vec![
        ("limit", q.limit.to_string()),
        ("sort", q.sort.name().to_string()),
    ];
    if bugs::is(Bug::PageLinkDropsLimit) {
        pairs.remove(0);
    }
    if let Some(c) = &q.category {
        pairs.push(("category", c.clone()));
    }
    if let Some(p) = q.min_price {
        pairs.push(("min_price_cents", p.to_string()));
    }
    if let Some(p) = q.max_price {
        pairs.push(("max_price_cents", p.to_string()));
    }
    pairs.push(("cursor", cursor.to_string()));
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    format!("</products?{}>; rel=\"next\"", query.join("&"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_are_validated_defaulted_and_clamped() {
        let limit = |v: &str| ListQuery::parse(&params(&[("limit", v)])).map(|q| q.limit);
        assert_eq!(ListQuery::parse(&[]).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(limit("0").unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit("7").unwrap(), 7);
        assert_eq!(limit("1000000").unwrap(), MAX_LIMIT);
        assert_eq!(limit("99999999999999999999999").unwrap(), MAX_LIMIT);
        for bad in ["-1", "abc", "1.5", ""] {
            assert_eq!(
                limit(bad).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_tampering_and_other_filters() {
        let f = fingerprint(Sort::Price, Some("tea"), None, None, 20);
        let cursor = encode_cursor(&CursorData {
            s: "price_cents".into(),
            f,
            k: Some(120),
            i: Some(Uuid::nil()),
            o: None,
        });
        assert!(cursor.bytes().all(|b| b.is_ascii_hexdigit()));
        let ok = ListQuery::parse(&params(&[
            ("sort", "price_cents"),
            ("category", "tea"),
            ("cursor", &cursor),
        ]))
        .unwrap();
        assert!(matches!(ok.after, Some(After::Key { key: 120, .. })));
        for (category, cursor) in [
            ("coffee", cursor.clone()),
            ("tea", format!("{cursor}00")),
            ("tea", cursor.replacen("7", "6", 1)),
            ("tea", "garbage".into()),
        ] {
            let err = ListQuery::parse(&params(&[
                ("sort", "price_cents"),
                ("category", category),
                ("cursor", &cursor),
            ]))
            .unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        }
    }
}
