//! Typed parameters of the database probes: `query_plan`, `deep_pages` and `redundant_indexes`
//! (their code is in `engine/probes/`). They need the grader's own PostgreSQL and an exercise
//! `[dataset]`; see exercises/AUTHORING.md.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::upstream_probes::{query, request, template_strings, ProbeRequest};
use super::JsonQuery;

/// `query_plan`: sends the requests (`repeat` times), then judges the statements the service ran
/// for them, read from `pg_stat_statements`: their plans, buffers and number.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// Variables taken from the data set, each by a read-only SQL query run by the grader.
    pub sample: Vec<(String, String)>,
    pub requests: Vec<ProbeRequest>,
    pub repeat: u32,
    /// Judge each statement's plan: no Seq Scan on a large table, no Sort under a Limit, no
    /// index scan that filters rows of a large table afterwards.
    pub plan: bool,
    /// Shared buffers (hit + read) per request, at most this (plus `tolerance`).
    pub max_buffers_per_request: Option<f64>,
    /// Statements per request, at most this.
    pub max_statements_per_request: Option<f64>,
    pub tolerance: f64,
    /// A table with at least this many rows (`pg_class.reltuples`) is large.
    pub large_table_rows: f64,
}

/// `deep_pages`: the buffers of page `page` of a list, reached through its next links, must stay
/// within `max_ratio` of page 1's.
#[derive(Debug, Clone)]
pub struct DeepPages {
    pub sample: Vec<(String, String)>,
    /// The first page.
    pub request: ProbeRequest,
    /// JSONPath of the next page's link (a path or URL); absent or null on the last page.
    pub next: JsonQuery,
    pub page: u32,
    pub max_ratio: f64,
    pub large_table_rows: f64,
}

/// `redundant_indexes`: no index on the tables duplicates another or is a leading prefix of
/// another (every write pays for each index).
#[derive(Debug, Clone)]
pub struct RedundantIndexes {
    pub tables: Vec<String>,
    /// Asked first (GET, must answer 2xx), so the catalog is read once the service's migrations
    /// have run; the report shows it.
    pub health_path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueryPlan {
    #[serde(default)]
    sample: BTreeMap<String, String>,
    requests: Vec<toml::Value>,
    repeat: Option<u32>,
    plan: Option<bool>,
    max_buffers_per_request: Option<f64>,
    max_statements_per_request: Option<f64>,
    tolerance: Option<f64>,
    large_table_rows: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeepPages {
    #[serde(default)]
    sample: BTreeMap<String, String>,
    request: toml::Value,
    next: Option<String>,
    page: Option<u32>,
    max_ratio: Option<f64>,
    large_table_rows: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedundant {
    tables: Vec<String>,
    health_path: Option<String>,
}

const DEFAULT_LARGE: f64 = 10_000.0;

fn de<T: serde::de::DeserializeOwned>(what: &str, v: toml::Value) -> Result<T, String> {
    v.try_into()
        .map_err(|e: toml::de::Error| format!("{what}: {}", e.message()))
}

fn sample(raw: BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    for (name, sql) in &raw {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("sample `{name}` is not a variable name"));
        }
        let head = sql.trim_start().to_ascii_lowercase();
        if !(head.starts_with("select") || head.starts_with("with")) {
            return Err(format!(
                "sample `{name}` must be a read-only SELECT (the grader never changes the learner's data)"
            ));
        }
    }
    Ok(raw.into_iter().collect())
}

pub fn parse_query_plan(params: toml::Value) -> Result<QueryPlan, String> {
    let raw: RawQueryPlan = de("params of `query_plan`", params)?;
    if raw.requests.is_empty() {
        return Err("`query_plan` needs at least one request".into());
    }
    let requests = raw
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, v)| request("query_plan", i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = raw.plan.unwrap_or(true);
    if !plan && raw.max_buffers_per_request.is_none() && raw.max_statements_per_request.is_none() {
        return Err(
            "`query_plan` with `plan = false` needs `max_buffers_per_request` or `max_statements_per_request`"
                .into(),
        );
    }
    let repeat = raw.repeat.unwrap_or(1);
    if !(1..=100).contains(&repeat) {
        return Err("`repeat` must be from 1 to 100".into());
    }
    let tolerance = raw.tolerance.unwrap_or(0.10);
    if !(0.0..=1.0).contains(&tolerance) {
        return Err("`tolerance` is a fraction from 0 to 1 (0.1 = 10%)".into());
    }
    Ok(QueryPlan {
        sample: sample(raw.sample)?,
        requests,
        repeat,
        plan,
        max_buffers_per_request: raw.max_buffers_per_request,
        max_statements_per_request: raw.max_statements_per_request,
        tolerance,
        large_table_rows: raw.large_table_rows.unwrap_or(DEFAULT_LARGE),
    })
}

pub fn parse_deep_pages(params: toml::Value) -> Result<DeepPages, String> {
    let raw: RawDeepPages = de("params of `deep_pages`", params)?;
    let page = raw.page.unwrap_or(50);
    if !(2..=500).contains(&page) {
        return Err("`page` must be from 2 to 500".into());
    }
    let max_ratio = raw.max_ratio.unwrap_or(3.0);
    if max_ratio < 1.0 {
        return Err("`max_ratio` must be at least 1".into());
    }
    Ok(DeepPages {
        sample: sample(raw.sample)?,
        request: request("deep_pages", 0, raw.request)?,
        next: query(raw.next.as_deref().unwrap_or("$.next"))?,
        page,
        max_ratio,
        large_table_rows: raw.large_table_rows.unwrap_or(DEFAULT_LARGE),
    })
}

pub fn parse_redundant_indexes(params: toml::Value) -> Result<RedundantIndexes, String> {
    let raw: RawRedundant = de("params of `redundant_indexes`", params)?;
    if raw.tables.is_empty() {
        return Err("`redundant_indexes` needs `tables`".into());
    }
    let health_path = raw.health_path.unwrap_or_else(|| "/healthz".into());
    if !health_path.starts_with('/') {
        return Err("`health_path` must start with /".into());
    }
    Ok(RedundantIndexes {
        tables: raw.tables,
        health_path,
    })
}

/// Template strings for the static variable check, with the sampled variables (which exist only
/// at run time) replaced by text.
pub fn db_template_strings(requests: &[ProbeRequest], sample: &[(String, String)]) -> Vec<String> {
    template_strings(requests, None)
        .into_iter()
        .map(|mut s| {
            for (name, _) in sample {
                s = s.replace(&format!("{{{{{name}}}}}"), "sampled");
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn query_plan_params() {
        let p = parse_query_plan(v(r#"
            sample = { cid = "SELECT 1" }
            requests = [{ method = "GET", path = "/c/{{cid}}", status = 200 }]
            max_buffers_per_request = 40
        "#))
        .unwrap();
        assert!(p.plan);
        assert_eq!(p.repeat, 1);
        assert_eq!(
            db_template_strings(&p.requests, &p.sample),
            vec!["/c/sampled"]
        );
        let err = parse_query_plan(v(r#"
            sample = { cid = "DELETE FROM orders" }
            requests = [{ method = "GET", path = "/" }]
        "#))
        .unwrap_err();
        assert!(err.contains("read-only"), "{err}");
        let err = parse_query_plan(v(r#"
            plan = false
            requests = [{ method = "GET", path = "/" }]
        "#))
        .unwrap_err();
        assert!(err.contains("needs `max_buffers_per_request`"), "{err}");
    }

    #[test]
    fn deep_pages_and_redundant_params() {
        let p = parse_deep_pages(v(r#"request = { method = "GET", path = "/x" }"#)).unwrap();
        assert_eq!(
            (p.page, p.max_ratio, p.next.text.as_str()),
            (50, 3.0, "$.next")
        );
        assert!(
            parse_deep_pages(v(r#"request = { method = "GET", path = "/x" }
page = 1"#))
            .is_err()
        );
        assert!(parse_redundant_indexes(v("tables = []")).is_err());
    }
}
