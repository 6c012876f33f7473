//! Built-in probes: Rust code for what declarative steps cannot say (many inputs, concurrency,
//! walks, database inspection, conditional requests).
//!
//! One probe, one folder: `probes/<name>/params.rs` (typed parameters, parsed and validated
//! from the exercise file before anything runs) and `probes/<name>/run.rs` (the code that runs
//! against the service). This file is the one registry that maps a probe's name to both. Shared
//! pieces: `request` (a request with expectations, upstream expectations), `db` and `db_params`
//! (the grader's PostgreSQL), `upstream_calls::run` (judging responses).
//!
//! Layering: probes sit above `engine` (they run with a `CheckContext`) and below `exercise`
//! (which parses `probe = NAME` through [`parse`]); nothing here imports `exercise`.

pub mod concurrent;
pub mod db;
pub mod db_params;
pub mod deep_pages;
pub mod ledger;
pub mod no_internals_leak;
pub mod paginate;
pub mod query_plan;
pub mod rate_limit;
pub mod redundant_indexes;
pub mod request;
pub mod revalidate;
pub mod service_log;
pub mod stored_secrets;
pub mod upstream_calls;

use crate::engine::{CheckContext, Failure};
use request::UpstreamParams;

/// A probe with its parameters, ready to run.
#[derive(Debug, Clone)]
pub enum ProbeCall {
    NoInternalsLeak(Box<no_internals_leak::Params>),
    Concurrent(Box<concurrent::Params>),
    UpstreamCalls(Box<upstream_calls::Params>),
    QueryPlan(Box<query_plan::Params>),
    DeepPages(Box<deep_pages::Params>),
    RedundantIndexes(Box<redundant_indexes::Params>),
    Paginate(Box<paginate::Params>),
    Revalidate(Box<revalidate::Params>),
    RateLimit(Box<rate_limit::Params>),
    StoredSecrets(Box<stored_secrets::Params>),
    ServiceLog(Box<service_log::Params>),
    Ledger(Box<ledger::Params>),
}

/// Every probe name, for suggestions and documentation.
pub const PROBE_NAMES: &[&str] = &[
    "no_internals_leak",
    "concurrent",
    "upstream_calls",
    "query_plan",
    "deep_pages",
    "redundant_indexes",
    "paginate",
    "revalidate",
    "rate_limit",
    "stored_secrets",
    "service_log",
    "ledger",
];

/// Parses `probe = NAME` with its `params`. Errors are plain messages; the caller locates them.
pub fn parse(name: &str, params: Option<&toml::Value>) -> Result<ProbeCall, String> {
    let params = params
        .cloned()
        .unwrap_or(toml::Value::Table(Default::default()));
    Ok(match name {
        "no_internals_leak" => {
            ProbeCall::NoInternalsLeak(Box::new(no_internals_leak::parse(params)?))
        }
        "concurrent" => ProbeCall::Concurrent(Box::new(concurrent::parse(params)?)),
        "upstream_calls" => ProbeCall::UpstreamCalls(Box::new(upstream_calls::parse(params)?)),
        "query_plan" => ProbeCall::QueryPlan(Box::new(query_plan::parse(params)?)),
        "deep_pages" => ProbeCall::DeepPages(Box::new(deep_pages::parse(params)?)),
        "redundant_indexes" => {
            ProbeCall::RedundantIndexes(Box::new(redundant_indexes::parse(params)?))
        }
        "paginate" => ProbeCall::Paginate(Box::new(paginate::parse(params)?)),
        "revalidate" => ProbeCall::Revalidate(Box::new(revalidate::parse(params)?)),
        "rate_limit" => ProbeCall::RateLimit(Box::new(rate_limit::parse(params)?)),
        "stored_secrets" => ProbeCall::StoredSecrets(Box::new(stored_secrets::parse(params)?)),
        "service_log" => ProbeCall::ServiceLog(Box::new(service_log::parse(params)?)),
        "ledger" => ProbeCall::Ledger(Box::new(ledger::parse(params)?)),
        other => {
            return Err(
                match crate::diagnostic::did_you_mean(other, PROBE_NAMES.iter().copied()) {
                    Some(s) => format!("unknown probe `{other}`; did you mean `{s}`?"),
                    None => format!(
                        "unknown probe `{other}`; known probes: {}",
                        PROBE_NAMES.join(", ")
                    ),
                },
            )
        }
    })
}

/// Runs a probe against the service.
pub async fn run(call: &ProbeCall, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    match call {
        ProbeCall::NoInternalsLeak(p) => no_internals_leak::run(p, ctx).await,
        ProbeCall::Concurrent(p) => concurrent::run(p, ctx).await,
        ProbeCall::UpstreamCalls(p) => upstream_calls::run(p, ctx).await,
        ProbeCall::QueryPlan(p) => query_plan::run(p, ctx).await,
        ProbeCall::DeepPages(p) => deep_pages::run(p, ctx).await,
        ProbeCall::RedundantIndexes(p) => redundant_indexes::run(p, ctx).await,
        ProbeCall::Paginate(p) => paginate::run(p, ctx).await,
        ProbeCall::Revalidate(p) => revalidate::run(p, ctx).await,
        ProbeCall::RateLimit(p) => rate_limit::run(p, ctx).await,
        ProbeCall::StoredSecrets(p) => stored_secrets::run(p, ctx).await,
        ProbeCall::ServiceLog(p) => service_log::run(p, ctx).await,
        ProbeCall::Ledger(p) => ledger::run(p, ctx).await,
    }
}

impl ProbeCall {
    pub fn name(&self) -> &'static str {
        match self {
            ProbeCall::NoInternalsLeak(_) => "no_internals_leak",
            ProbeCall::Concurrent(_) => "concurrent",
            ProbeCall::UpstreamCalls(_) => "upstream_calls",
            ProbeCall::QueryPlan(_) => "query_plan",
            ProbeCall::DeepPages(_) => "deep_pages",
            ProbeCall::RedundantIndexes(_) => "redundant_indexes",
            ProbeCall::Paginate(_) => "paginate",
            ProbeCall::Revalidate(_) => "revalidate",
            ProbeCall::RateLimit(_) => "rate_limit",
            ProbeCall::StoredSecrets(_) => "stored_secrets",
            ProbeCall::ServiceLog(_) => "service_log",
            ProbeCall::Ledger(_) => "ledger",
        }
    }

    /// Template strings the probe will render, for the static variable check.
    pub fn template_strings(&self) -> Vec<String> {
        match self {
            ProbeCall::NoInternalsLeak(p) => p.template_strings(),
            ProbeCall::Concurrent(p) => {
                let mut all = p.setup.clone();
                all.extend(p.requests.iter().cloned());
                request::template_strings(&all, p.upstream.as_ref())
            }
            ProbeCall::UpstreamCalls(p) => {
                request::template_strings(&p.requests, Some(&p.upstream))
            }
            ProbeCall::QueryPlan(p) => db_params::template_strings(&p.requests, &p.sample),
            ProbeCall::DeepPages(p) => {
                db_params::template_strings(std::slice::from_ref(&p.request), &p.sample)
            }
            ProbeCall::RedundantIndexes(_) => Vec::new(),
            ProbeCall::Paginate(p) => p.template_strings(),
            ProbeCall::Revalidate(p) => p.template_strings(),
            ProbeCall::RateLimit(p) => p.template_strings(),
            ProbeCall::StoredSecrets(p) => p.template_strings(),
            ProbeCall::ServiceLog(p) => p.template_strings(),
            ProbeCall::Ledger(p) => p.template_strings(),
        }
    }

    /// Variables the probe's own requests capture (`capture = { account = { header = "Location" } }`),
    /// which its later templates may name.
    pub fn captured_names(&self) -> Vec<String> {
        let names = match self {
            ProbeCall::UpstreamCalls(p) => request::captured_names(&p.requests),
            ProbeCall::Revalidate(p) => request::captured_names(&p.setup),
            ProbeCall::Concurrent(p) => request::captured_names(&p.setup),
            ProbeCall::RateLimit(p) => request::captured_names(&p.setup),
            ProbeCall::StoredSecrets(p) => request::captured_names(&p.requests),
            ProbeCall::ServiceLog(p) => request::captured_names(&p.requests),
            _ => return Vec::new(),
        };
        names.map(String::from).collect()
    }

    /// The mock upstream the probe uses, if any (for the static check that it is declared).
    pub fn upstream(&self) -> Option<&UpstreamParams> {
        match self {
            ProbeCall::Concurrent(p) => p.upstream.as_ref(),
            ProbeCall::UpstreamCalls(p) => Some(&p.upstream),
            _ => None,
        }
    }

    /// Whether the probe reads cluster-wide database statistics (`pg_stat_statements`, buffer
    /// counts, the catalog). Requests from checks of other exercises running at the same time
    /// would land in the same statistics, so an exercise with such a probe is graded alone.
    pub fn reads_database_statistics(&self) -> bool {
        matches!(
            self,
            ProbeCall::QueryPlan(_) | ProbeCall::DeepPages(_) | ProbeCall::RedundantIndexes(_)
        )
    }
}
