//! `query_plan` parameters: which requests to send, the budgets their statements must meet, and
//! the answers their responses must give.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::db_params::{parse_answers, parse_sample, Answer, Budget, DEFAULT_LARGE};
use crate::probes::request::de;
use crate::probes::request::{request, ProbeRequest};

/// `query_plan`: sends the requests (`repeat` times), then judges the statements the service ran
/// for each, from their executed plans: the plans, the shared buffers, the number of statements;
/// and compares the responses with answers computed from the grader's data set.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// Variables taken from the data set, each by a read-only SQL query run by the grader.
    pub sample: Vec<(String, String)>,
    pub requests: Vec<ProbeRequest>,
    pub repeat: u32,
    /// Judge each statement's executed plan: no Seq Scan on a large table, no Sort under a Limit,
    /// no index scan that throws rows away after the index or skips the index's first column.
    pub plan: bool,
    /// Shared buffers (hit + read) each request's statements may touch, at most this (plus
    /// `tolerance`); a number or a sample variable.
    pub max_buffers_per_request: Option<Budget>,
    /// Statements per request, at most this.
    pub max_statements_per_request: Option<f64>,
    pub tolerance: f64,
    /// A table with at least this many rows (`pg_class.reltuples`) is large.
    pub large_table_rows: f64,
    /// Responses compared with answers the grader computes from its data set.
    pub answers: Vec<Answer>,
    /// Tables whose rows must still be the ones the grader loaded (count and checksum), after
    /// the requests.
    pub unchanged: Vec<String>,
}

impl QueryPlan {
    /// Whether the check reads the service's statements (a plan or a budget to judge); a check
    /// with answers only does not, so an answer served from memory is judged on its content.
    pub fn measures(&self) -> bool {
        self.plan
            || self.max_buffers_per_request.is_some()
            || self.max_statements_per_request.is_some()
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "QueryPlanParams")]
pub struct RawQueryPlan {
    #[serde(default)]
    sample: BTreeMap<String, String>,
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    requests: Vec<toml::Value>,
    repeat: Option<u32>,
    plan: Option<bool>,
    #[schemars(with = "Option<serde_json::Value>")]
    max_buffers_per_request: Option<toml::Value>,
    max_statements_per_request: Option<f64>,
    tolerance: Option<f64>,
    large_table_rows: Option<f64>,
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::db_params::RawAnswer>")]
    answers: Vec<toml::Value>,
    #[serde(default)]
    unchanged: Vec<String>,
}

pub fn parse_query_plan(params: toml::Value) -> Result<QueryPlan, String> {
    let raw: RawQueryPlan = de("params of `query_plan`", params)?;
    if raw.requests.is_empty() {
        return Err("`query_plan` needs at least one request".into());
    }
    let sample = parse_sample(raw.sample)?;
    let requests = raw
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, v)| request("query_plan", i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let count = requests.len();
    let answers = parse_answers(
        raw.answers,
        "request",
        |n| (1..=count).contains(&n),
        &sample,
    )?;
    let plan = raw.plan.unwrap_or(true);
    let max_buffers_per_request = Budget::parse(
        "`max_buffers_per_request`",
        raw.max_buffers_per_request,
        &sample,
    )?;
    if !plan
        && max_buffers_per_request.is_none()
        && raw.max_statements_per_request.is_none()
        && answers.is_empty()
        && raw.unchanged.is_empty()
    {
        return Err(
            "`query_plan` with `plan = false` needs `max_buffers_per_request`, `max_statements_per_request`, `answers` or `unchanged`"
                .into(),
        );
    }
    if let Some(t) = raw
        .unchanged
        .iter()
        .find(|t| t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(format!("`unchanged` lists table names; \"{t}\" is not one"));
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
        sample,
        requests,
        repeat,
        plan,
        max_buffers_per_request,
        max_statements_per_request: raw.max_statements_per_request,
        tolerance,
        large_table_rows: raw.large_table_rows.unwrap_or(DEFAULT_LARGE),
        answers,
        unchanged: raw.unchanged,
    })
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
        assert_eq!(p.max_buffers_per_request, Some(Budget::Fixed(40.0)));
        assert_eq!(
            crate::probes::db_params::template_strings(&p.requests, &p.sample),
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
    fn answers_alone_measure_nothing_and_budgets_may_be_sampled() {
        let p = parse_query_plan(v(r#"
            sample = { rows = "SELECT json_agg(1)", pages = "SELECT 30" }
            requests = [{ method = "GET", path = "/" }]
            plan = false
            answers = [{ fields = ["id"], equals = "{{rows}}" }]
        "#))
        .unwrap();
        assert!(!p.measures());
        assert_eq!(p.answers[0].at, 1);
        let p = parse_query_plan(v(r#"
            requests = [{ method = "GET", path = "/" }]
            plan = false
            unchanged = ["orders"]
        "#))
        .unwrap();
        assert_eq!(p.unchanged, vec!["orders"]);
        let err = parse_query_plan(v(r#"
            requests = [{ method = "GET", path = "/" }]
            plan = false
            unchanged = ["orders; DROP TABLE x"]
        "#))
        .unwrap_err();
        assert!(err.contains("is not one"), "{err}");
        let p = parse_query_plan(v(r#"
            sample = { pages = "SELECT 30" }
            requests = [{ method = "GET", path = "/" }]
            plan = false
            max_buffers_per_request = "{{pages}}"
        "#))
        .unwrap();
        assert!(p.measures());
        assert_eq!(
            p.max_buffers_per_request,
            Some(Budget::Sampled("pages".into()))
        );
    }
}
