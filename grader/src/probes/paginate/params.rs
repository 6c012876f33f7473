//! Typed parameters of the `paginate` probe (its code is in `engine/probes/paginate.rs`): create
//! data through the API, walk a paginated list with optional writes in between, and judge every
//! page and the walk as a whole.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{query, request, template_strings, ProbeRequest};
use crate::spec::JsonQuery;

/// How the walk gets from one page to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Repeat the first request's query with `cursor_param` set to the page's `next_cursor`.
    Cursor,
    /// Follow the `Link: <...>; rel="next"` header (RFC 8288), or the body's `next_link`.
    Link,
}

/// A group of items the probe creates before the walk.
#[derive(Debug, Clone)]
pub struct SeedGroup {
    pub count: usize,
    pub request: ProbeRequest,
    /// The walk must show every item of this group exactly once (`true`) or none of them.
    pub in_walk: bool,
}

/// Writes between two pages: inserts (which should sort before the cursor) and deletes of items
/// not yet seen.
#[derive(Debug, Clone)]
pub struct Writes {
    /// After which page (1 = after the first page).
    pub after_page: usize,
    pub insert: Option<ProbeRequest>,
    pub insert_count: usize,
    /// Prefix of an item's URL; the id of an unseen item is appended and sent with DELETE.
    pub delete_prefix: Option<String>,
    pub delete_count: usize,
}

/// The sort order the pages must follow.
#[derive(Debug, Clone)]
pub struct Order {
    /// JSONPath into one item, e.g. `$.price_cents`.
    pub field: JsonQuery,
    pub descending: bool,
}

#[derive(Debug, Clone)]
pub struct Paginate {
    /// The list's path, e.g. `/products` (template).
    pub path: String,
    /// Query parameters of the first page (templates), in order.
    pub query: Vec<(String, String)>,
    /// JSONPath of the page's items array.
    pub items: JsonQuery,
    /// JSONPath of an item's identity, applied to each item.
    pub identity: JsonQuery,
    pub next_cursor: JsonQuery,
    pub has_more: Option<JsonQuery>,
    pub cursor_param: String,
    pub follow: Follow,
    /// A body field holding the next page's URL, accepted in place of a Link header.
    pub next_link: Option<JsonQuery>,
    pub max_page_size: Option<usize>,
    pub order: Option<Order>,
    pub seed: Vec<SeedGroup>,
    /// Variables generated afresh for every created item (a new SKU each time).
    pub fresh: Vec<String>,
    pub writes: Option<Writes>,
    /// Stop after this many pages instead of walking to the end.
    pub pages: Option<usize>,
    /// A 400 on the first page passes the check (an oversized limit may be refused).
    pub accept_refusal: bool,
    /// Give up (and fail) after this many pages.
    pub max_pages: usize,
    /// Every page that has a next page must hold exactly this many items (template: usually the
    /// query's `limit`); the last page at most this many.
    pub page_size: Option<String>,
    /// Another query of the same list (templates) whose first page must list the same items, in
    /// the same order, as this walk's first page (e.g. `limit=0` against no `limit`).
    pub same_first_page_as: Option<Vec<(String, String)>>,
    /// Every next cursor must be made of RFC 3986 unreserved characters only (A-Z a-z 0-9 - . _
    /// ~), so it can be put into a URL as it is.
    pub cursor_url_safe: bool,
    /// Every next link must repeat each parameter of the first query, with the same value.
    pub link_keeps_query: bool,
    /// After page 1, send its cursor truncated (one character off, cut in half) and forged (the
    /// JSON inside it, if the grader can decode it, with one value changed and re-encoded): each
    /// must answer 400 with a problem document.
    pub tamper: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PaginateParams")]
pub struct RawPaginate {
    path: String,
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    query: toml::Table,
    items: Option<String>,
    identity: Option<String>,
    next_cursor: Option<String>,
    has_more: Option<String>,
    cursor_param: Option<String>,
    follow: Option<String>,
    next_link: Option<String>,
    max_page_size: Option<usize>,
    order: Option<RawOrder>,
    #[serde(default)]
    seed: Vec<RawSeed>,
    #[serde(default)]
    fresh: Vec<String>,
    writes: Option<RawWrites>,
    pages: Option<usize>,
    #[serde(default)]
    accept_refusal: bool,
    max_pages: Option<usize>,
    #[schemars(with = "Option<serde_json::Value>")]
    page_size: Option<toml::Value>,
    #[schemars(with = "Option<std::collections::BTreeMap<String, serde_json::Value>>")]
    same_first_page_as: Option<toml::Table>,
    #[serde(default)]
    cursor_url_safe: bool,
    #[serde(default)]
    link_keeps_query: bool,
    #[serde(default)]
    tamper: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PaginateOrder")]
pub struct RawOrder {
    field: String,
    #[serde(default)]
    descending: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PaginateSeed")]
pub struct RawSeed {
    count: usize,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    #[serde(default = "yes")]
    in_walk: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PaginateWrites")]
pub struct RawWrites {
    after_page: usize,
    #[schemars(with = "Option<crate::probes::request::RawRequest>")]
    insert: Option<toml::Value>,
    #[serde(default = "one")]
    insert_count: usize,
    delete_prefix: Option<String>,
    #[serde(default = "one")]
    delete_count: usize,
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

const MAX_SEED: usize = 2000;

pub fn parse(params: toml::Value) -> Result<Paginate, String> {
    let raw: RawPaginate = params
        .try_into()
        .map_err(|e: toml::de::Error| format!("params of `paginate`: {}", e.message()))?;
    if !raw.path.starts_with('/') || raw.path.contains('?') {
        return Err(format!(
            "params.path \"{}\" must start with / and have no query (put it in params.query)",
            raw.path
        ));
    }
    let query_params = query_table("params.query", raw.query)?;
    let same_first_page_as = raw
        .same_first_page_as
        .map(|t| query_table("params.same_first_page_as", t))
        .transpose()?;
    let page_size = match raw.page_size {
        None => None,
        Some(toml::Value::Integer(n)) if n >= 1 => Some(n.to_string()),
        Some(toml::Value::String(s)) => Some(s),
        Some(other) => {
            return Err(format!(
                "params.page_size is a positive integer or a template like \"{{{{page_size}}}}\", not {other}"
            ))
        }
    };
    let follow = match raw.follow.as_deref().unwrap_or("cursor") {
        "cursor" => Follow::Cursor,
        "link" => Follow::Link,
        other => {
            return Err(format!(
                "params.follow is \"cursor\" or \"link\", not \"{other}\""
            ))
        }
    };
    if raw.link_keeps_query && follow != Follow::Link {
        return Err("params.link_keeps_query judges next links: it needs follow = \"link\"".into());
    }
    let mut seed = Vec::new();
    let mut total = 0;
    for (i, s) in raw.seed.into_iter().enumerate() {
        total += s.count;
        seed.push(SeedGroup {
            count: s.count,
            request: request("paginate", i, s.request)?,
            in_walk: s.in_walk,
        });
    }
    if total > MAX_SEED {
        return Err(format!(
            "params.seed creates {total} items; at most {MAX_SEED}"
        ));
    }
    let writes = match raw.writes {
        None => None,
        Some(w) => {
            if w.after_page == 0 {
                return Err("params.writes.after_page counts from 1".into());
            }
            if w.insert.is_none() && w.delete_prefix.is_none() {
                return Err("params.writes needs `insert` or `delete_prefix`".into());
            }
            Some(Writes {
                after_page: w.after_page,
                insert: w.insert.map(|v| request("paginate", 0, v)).transpose()?,
                insert_count: w.insert_count,
                delete_prefix: w.delete_prefix,
                delete_count: w.delete_count,
            })
        }
    };
    if raw.pages == Some(0) {
        return Err("params.pages must be at least 1".into());
    }
    Ok(Paginate {
        path: raw.path,
        query: query_params,
        items: query(raw.items.as_deref().unwrap_or("$.items"))?,
        identity: query(raw.identity.as_deref().unwrap_or("$.id"))?,
        next_cursor: query(raw.next_cursor.as_deref().unwrap_or("$.next_cursor"))?,
        has_more: raw.has_more.as_deref().map(query).transpose()?,
        cursor_param: raw.cursor_param.unwrap_or_else(|| "cursor".into()),
        follow,
        next_link: raw.next_link.as_deref().map(query).transpose()?,
        max_page_size: raw.max_page_size,
        order: raw
            .order
            .map(|o| {
                Ok::<_, String>(Order {
                    field: query(&o.field)?,
                    descending: o.descending,
                })
            })
            .transpose()?,
        seed,
        fresh: raw.fresh,
        writes,
        pages: raw.pages,
        accept_refusal: raw.accept_refusal,
        max_pages: raw.max_pages.unwrap_or(500),
        page_size,
        same_first_page_as,
        cursor_url_safe: raw.cursor_url_safe,
        link_keeps_query: raw.link_keeps_query,
        tamper: raw.tamper,
    })
}

/// A query table (`{ category = "{{category}}", limit = 10 }`) as ordered pairs of templates.
fn query_table(what: &str, table: toml::Table) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (k, v) in table {
        let v = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(format!(
                    "{what}.{k} must be a string or an integer, not {}",
                    other.type_str()
                ))
            }
        };
        pairs.push((k, v));
    }
    Ok(pairs)
}

impl Paginate {
    /// Template strings, for the static variable check.
    pub fn template_strings(&self) -> Vec<String> {
        let mut requests: Vec<ProbeRequest> = self.seed.iter().map(|s| s.request.clone()).collect();
        if let Some(insert) = self.writes.as_ref().and_then(|w| w.insert.clone()) {
            requests.push(insert);
        }
        let mut out = template_strings(&requests, None);
        out.push(self.path.clone());
        out.extend(self.query.iter().map(|(_, v)| v.clone()));
        out.extend(
            self.same_first_page_as
                .iter()
                .flatten()
                .map(|(_, v)| v.clone()),
        );
        out.extend(self.page_size.clone());
        out.extend(self.writes.iter().filter_map(|w| w.delete_prefix.clone()));
        out.extend(self.fresh.iter().map(|v| format!("{{{{{v}}}}}")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Result<Paginate, String> {
        parse(toml::from_str::<toml::Value>(text).unwrap())
    }

    #[test]
    fn parses_a_walk_with_writes() {
        let p = params(
            r#"
            path = "/products"
            query = { category = "{{category}}", limit = 10 }
            fresh = ["sku"]
            has_more = "$.has_more"
            order = { field = "$.price_cents" }
            [[seed]]
            count = 5
            request = { method = "POST", path = "/products", json = { sku = "{{sku}}" }, status = 201 }
            [writes]
            after_page = 2
            insert = { method = "POST", path = "/products", json = { sku = "{{sku}}" } }
            insert_count = 3
            delete_prefix = "/products/"
            "#,
        )
        .unwrap();
        assert_eq!(p.query[1], ("limit".to_string(), "10".to_string()));
        assert_eq!(p.follow, Follow::Cursor);
        assert_eq!(p.writes.as_ref().unwrap().insert_count, 3);
        assert!(p.template_strings().contains(&"{{category}}".to_string()));
    }

    #[test]
    fn parses_the_judging_options() {
        let p = params(
            r#"
            path = "/products"
            query = { category = "{{category}}", limit = 0 }
            same_first_page_as = { category = "{{category}}" }
            page_size = "{{page_size}}"
            follow = "link"
            link_keeps_query = true
            cursor_url_safe = true
            tamper = true
            "#,
        )
        .unwrap();
        assert_eq!(
            p.same_first_page_as.as_deref(),
            Some(&[("category".to_string(), "{{category}}".to_string())][..])
        );
        assert_eq!(p.page_size.as_deref(), Some("{{page_size}}"));
        assert!(p.cursor_url_safe && p.link_keeps_query && p.tamper);
        assert!(p.template_strings().contains(&"{{page_size}}".to_string()));
        assert_eq!(
            params("path = \"/p\"\npage_size = 100")
                .unwrap()
                .page_size
                .as_deref(),
            Some("100")
        );
        assert!(params("path = \"/p\"\npage_size = 0").is_err());
        let e = params("path = \"/p\"\nlink_keeps_query = true").unwrap_err();
        assert!(e.contains("follow"), "{e}");
        let e = params("path = \"/p\"\nsame_first_page_as = { limit = 1.5 }").unwrap_err();
        assert!(e.contains("same_first_page_as.limit"), "{e}");
    }

    #[test]
    fn rejects_a_query_in_the_path_and_unknown_follow() {
        assert!(params(r#"path = "/products?limit=1""#).is_err());
        let e = params("path = \"/products\"\nfollow = \"offset\"").unwrap_err();
        assert!(e.contains("cursor"), "{e}");
    }
}
