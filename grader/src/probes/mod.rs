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

pub mod broker_topology;
pub mod concurrent;
pub mod consumed_payments;
pub mod contract;
pub mod contract_diff;
pub mod db;
pub mod db_params;
pub mod deep_pages;
pub mod grpc_calls;
pub mod grpc_contract;
pub mod grpc_deadline;
pub mod grpc_shutdown;
pub mod grpc_stream;
pub mod ledger;
pub mod metrics;
pub mod no_internals_leak;
pub mod openapi;
pub mod openapi_document;
pub mod otlp_spans;
pub mod paginate;
pub mod published_events;
pub mod query_plan;
pub mod rate_limit;
pub mod redundant_indexes;
pub mod request;
pub mod request_log;
pub mod revalidate;
pub mod rpc;
pub mod service_log;
pub mod shutdown;
pub mod stored_secrets;
pub mod timeline;
pub mod trace_context;
pub mod traffic;
pub mod upstream_calls;
pub mod walk;

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
    BrokerTopology(Box<broker_topology::Params>),
    PublishedEvents(Box<published_events::Params>),
    ConsumedPayments(Box<consumed_payments::Params>),
    Metrics(Box<metrics::Params>),
    TraceContext(Box<trace_context::Params>),
    OtlpSpans(Box<otlp_spans::Params>),
    RequestLog(Box<request_log::Params>),
    Timeline(Box<timeline::Params>),
    Shutdown(Box<shutdown::Params>),
    OpenapiDocument(Box<openapi_document::Params>),
    Contract(Box<contract::Params>),
    ContractDiff(Box<contract_diff::Params>),
    GrpcCalls(Box<grpc_calls::Params>),
    GrpcContract(Box<grpc_contract::Params>),
    GrpcDeadline(Box<grpc_deadline::Params>),
    GrpcShutdown(Box<grpc_shutdown::Params>),
    GrpcStream(Box<grpc_stream::Params>),
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
    "broker_topology",
    "published_events",
    "consumed_payments",
    "metrics",
    "trace_context",
    "otlp_spans",
    "request_log",
    "timeline",
    "shutdown",
    "openapi_document",
    "contract",
    "contract_diff",
    "grpc_calls",
    "grpc_contract",
    "grpc_deadline",
    "grpc_shutdown",
    "grpc_stream",
];

/// Every probe's name with the JSON Schema of its `params` table: the raw struct its `params.rs`
/// deserialises, derived (`exercise::schema` makes the check table a `oneOf` keyed by `probe`).
pub fn params_schemas(
    gen: &mut schemars::gen::SchemaGenerator,
) -> Vec<(&'static str, schemars::schema::Schema)> {
    vec![
        (
            "no_internals_leak",
            gen.subschema_for::<no_internals_leak::params::NoInternalsLeak>(),
        ),
        (
            "concurrent",
            gen.subschema_for::<concurrent::params::RawConcurrent>(),
        ),
        (
            "upstream_calls",
            gen.subschema_for::<upstream_calls::params::RawUpstreamCalls>(),
        ),
        (
            "query_plan",
            gen.subschema_for::<query_plan::params::RawQueryPlan>(),
        ),
        (
            "deep_pages",
            gen.subschema_for::<deep_pages::params::RawDeepPages>(),
        ),
        (
            "redundant_indexes",
            gen.subschema_for::<redundant_indexes::params::RawRedundant>(),
        ),
        (
            "paginate",
            gen.subschema_for::<paginate::params::RawPaginate>(),
        ),
        (
            "revalidate",
            gen.subschema_for::<revalidate::params::RawRevalidate>(),
        ),
        ("rate_limit", gen.subschema_for::<rate_limit::params::Raw>()),
        (
            "stored_secrets",
            gen.subschema_for::<stored_secrets::params::Raw>(),
        ),
        (
            "service_log",
            gen.subschema_for::<service_log::params::Raw>(),
        ),
        ("ledger", gen.subschema_for::<ledger::params::RawLedger>()),
        (
            "broker_topology",
            gen.subschema_for::<broker_topology::params::Raw>(),
        ),
        (
            "published_events",
            gen.subschema_for::<published_events::params::Raw>(),
        ),
        (
            "consumed_payments",
            gen.subschema_for::<consumed_payments::params::Raw>(),
        ),
        ("metrics", gen.subschema_for::<metrics::params::Raw>()),
        (
            "trace_context",
            gen.subschema_for::<trace_context::params::Raw>(),
        ),
        ("otlp_spans", gen.subschema_for::<otlp_spans::params::Raw>()),
        (
            "request_log",
            gen.subschema_for::<request_log::params::Raw>(),
        ),
        ("timeline", gen.subschema_for::<timeline::params::Raw>()),
        ("shutdown", gen.subschema_for::<shutdown::params::Raw>()),
        (
            "openapi_document",
            gen.subschema_for::<openapi_document::params::Raw>(),
        ),
        ("contract", gen.subschema_for::<contract::params::Raw>()),
        (
            "contract_diff",
            gen.subschema_for::<contract_diff::params::Raw>(),
        ),
        ("grpc_calls", gen.subschema_for::<grpc_calls::params::Raw>()),
        (
            "grpc_contract",
            gen.subschema_for::<grpc_contract::params::Raw>(),
        ),
        (
            "grpc_deadline",
            gen.subschema_for::<grpc_deadline::params::Raw>(),
        ),
        (
            "grpc_shutdown",
            gen.subschema_for::<grpc_shutdown::params::Raw>(),
        ),
        (
            "grpc_stream",
            gen.subschema_for::<grpc_stream::params::Raw>(),
        ),
    ]
}

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
        "broker_topology" => ProbeCall::BrokerTopology(Box::new(broker_topology::parse(params)?)),
        "published_events" => {
            ProbeCall::PublishedEvents(Box::new(published_events::parse(params)?))
        }
        "consumed_payments" => {
            ProbeCall::ConsumedPayments(Box::new(consumed_payments::parse(params)?))
        }
        "metrics" => ProbeCall::Metrics(Box::new(metrics::parse(params)?)),
        "trace_context" => ProbeCall::TraceContext(Box::new(trace_context::parse(params)?)),
        "otlp_spans" => ProbeCall::OtlpSpans(Box::new(otlp_spans::parse(params)?)),
        "request_log" => ProbeCall::RequestLog(Box::new(request_log::parse(params)?)),
        "timeline" => ProbeCall::Timeline(Box::new(timeline::parse(params)?)),
        "shutdown" => ProbeCall::Shutdown(Box::new(shutdown::parse(params)?)),
        "openapi_document" => {
            ProbeCall::OpenapiDocument(Box::new(openapi_document::parse(params)?))
        }
        "contract" => ProbeCall::Contract(Box::new(contract::parse(params)?)),
        "contract_diff" => ProbeCall::ContractDiff(Box::new(contract_diff::parse(params)?)),
        "grpc_calls" => ProbeCall::GrpcCalls(Box::new(grpc_calls::parse(params)?)),
        "grpc_contract" => ProbeCall::GrpcContract(Box::new(grpc_contract::parse(params)?)),
        "grpc_deadline" => ProbeCall::GrpcDeadline(Box::new(grpc_deadline::parse(params)?)),
        "grpc_shutdown" => ProbeCall::GrpcShutdown(Box::new(grpc_shutdown::parse(params)?)),
        "grpc_stream" => ProbeCall::GrpcStream(Box::new(grpc_stream::parse(params)?)),
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
        ProbeCall::BrokerTopology(p) => broker_topology::run(p, ctx).await,
        ProbeCall::PublishedEvents(p) => published_events::run(p, ctx).await,
        ProbeCall::ConsumedPayments(p) => consumed_payments::run(p, ctx).await,
        ProbeCall::Metrics(p) => metrics::run(p, ctx).await,
        ProbeCall::TraceContext(p) => trace_context::run(p, ctx).await,
        ProbeCall::OtlpSpans(p) => otlp_spans::run(p, ctx).await,
        ProbeCall::RequestLog(p) => request_log::run(p, ctx).await,
        ProbeCall::Timeline(p) => timeline::run(p, ctx).await,
        ProbeCall::Shutdown(p) => shutdown::run(p, ctx).await,
        ProbeCall::OpenapiDocument(p) => openapi_document::run(p, ctx).await,
        ProbeCall::Contract(p) => contract::run(p, ctx).await,
        ProbeCall::ContractDiff(p) => contract_diff::run(p, ctx).await,
        ProbeCall::GrpcCalls(p) => grpc_calls::run(p, ctx).await,
        ProbeCall::GrpcContract(p) => grpc_contract::run(p, ctx).await,
        ProbeCall::GrpcDeadline(p) => grpc_deadline::run(p, ctx).await,
        ProbeCall::GrpcShutdown(p) => grpc_shutdown::run(p, ctx).await,
        ProbeCall::GrpcStream(p) => grpc_stream::run(p, ctx).await,
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
            ProbeCall::BrokerTopology(_) => "broker_topology",
            ProbeCall::PublishedEvents(_) => "published_events",
            ProbeCall::ConsumedPayments(_) => "consumed_payments",
            ProbeCall::Metrics(_) => "metrics",
            ProbeCall::TraceContext(_) => "trace_context",
            ProbeCall::OtlpSpans(_) => "otlp_spans",
            ProbeCall::RequestLog(_) => "request_log",
            ProbeCall::Timeline(_) => "timeline",
            ProbeCall::Shutdown(_) => "shutdown",
            ProbeCall::OpenapiDocument(_) => "openapi_document",
            ProbeCall::Contract(_) => "contract",
            ProbeCall::ContractDiff(_) => "contract_diff",
            ProbeCall::GrpcCalls(_) => "grpc_calls",
            ProbeCall::GrpcContract(_) => "grpc_contract",
            ProbeCall::GrpcDeadline(_) => "grpc_deadline",
            ProbeCall::GrpcShutdown(_) => "grpc_shutdown",
            ProbeCall::GrpcStream(_) => "grpc_stream",
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
            ProbeCall::BrokerTopology(p) => p.template_strings(),
            ProbeCall::PublishedEvents(p) => p.template_strings(),
            ProbeCall::ConsumedPayments(p) => p.template_strings(),
            ProbeCall::Metrics(p) => p.template_strings(),
            ProbeCall::TraceContext(p) => p.template_strings(),
            ProbeCall::OtlpSpans(p) => p.template_strings(),
            ProbeCall::RequestLog(p) => p.template_strings(),
            ProbeCall::Timeline(p) => p.template_strings(),
            ProbeCall::Shutdown(p) => p.template_strings(),
            ProbeCall::OpenapiDocument(p) => p.template_strings(),
            ProbeCall::Contract(p) => p.template_strings(),
            ProbeCall::ContractDiff(p) => p.template_strings(),
            ProbeCall::GrpcCalls(p) => p.template_strings(),
            ProbeCall::GrpcContract(_)
            | ProbeCall::GrpcDeadline(_)
            | ProbeCall::GrpcShutdown(_)
            | ProbeCall::GrpcStream(_) => Vec::new(),
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
            ProbeCall::Metrics(p) => request::captured_names(&p.setup),
            ProbeCall::RequestLog(p) => request::captured_names(&p.setup),
            ProbeCall::Contract(p) => request::captured_names(&p.requests),
            ProbeCall::GrpcCalls(p) => return p.captured_names(),
            ProbeCall::Timeline(p) => {
                return p
                    .phases
                    .iter()
                    .flat_map(|phase| request::captured_names(&phase.requests[..1]))
                    .map(String::from)
                    .collect()
            }
            _ => return Vec::new(),
        };
        names.map(String::from).collect()
    }

    /// The mock upstream the probe uses, if any (for the static check that it is declared).
    pub fn upstream(&self) -> Option<&UpstreamParams> {
        match self {
            ProbeCall::Concurrent(p) => p.upstream.as_ref(),
            ProbeCall::UpstreamCalls(p) => Some(&p.upstream),
            ProbeCall::PublishedEvents(p) => p.upstream.as_ref(),
            ProbeCall::GrpcCalls(p) => p.upstream.as_ref(),
            _ => None,
        }
    }

    /// Whether the probe reads cluster-wide database statistics (`pg_stat_statements`, buffer
    /// counts, the catalog). Requests from checks of other exercises running at the same time
    /// would land in the same statistics, so an exercise with such a probe is graded alone.
    pub fn reads_database_statistics(&self) -> bool {
        matches!(
            self,
            ProbeCall::QueryPlan(_)
                | ProbeCall::DeepPages(_)
                | ProbeCall::RedundantIndexes(_)
                | ProbeCall::GrpcStream(_)
        )
    }

    /// Whether the probe reads the service's own process-wide counters (its `/metrics`): the new
    /// series other exercises' traffic makes would land in the same scrape, so an exercise with
    /// such a probe is graded alone.
    pub fn reads_service_metrics(&self) -> bool {
        matches!(self, ProbeCall::Metrics(_))
    }

    /// Whether the probe times the service against its upstream's call log: another exercise's
    /// traffic on the same machine would blur retries' gaps and a bulkhead's peak, and its calls
    /// to a shared mock would be counted, so an exercise with such a probe is graded alone.
    pub fn times_upstream_calls(&self) -> bool {
        matches!(self, ProbeCall::Timeline(_))
    }

    /// Whether the probe releases many requests at once (a race) or counts requests inside a time
    /// window (a rate limit): while it runs, no other check may be in flight. A service graded
    /// on several exercises has one connection pool for all of them; another exercise's burst
    /// holding every connection would turn this burst's requests into timeouts (and stretch a
    /// rate limit's attempts past their window), a verdict on the grader's schedule rather than
    /// on the service.
    pub fn sends_bursts(&self) -> bool {
        match self {
            ProbeCall::Concurrent(_) | ProbeCall::Ledger(_) | ProbeCall::RateLimit(_) => true,
            ProbeCall::Revalidate(p) => p.race.is_some(),
            _ => false,
        }
    }

    /// Whether the probe makes the service's database fail: the run then gives the service its
    /// PostgreSQL through a link the grader can stall and cut.
    pub fn fails_database(&self) -> bool {
        match self {
            ProbeCall::Timeline(p) => p.phases.iter().any(|phase| phase.database.is_some()),
            _ => false,
        }
    }

    /// Reads the files of the exercise's folder the probe names (a `.proto`) with `read`, and
    /// checks them; `Err` says what is wrong, for a diagnostic at the check.
    pub fn load_exercise_files(
        &mut self,
        read: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        match self {
            ProbeCall::GrpcContract(p) => {
                let text = read(&p.proto)
                    .ok_or_else(|| format!("cannot read {} in the exercise's folder", p.proto))?;
                p.load(&text)
            }
            _ => Ok(()),
        }
    }

    /// Whether the probe reads or writes the run's broker: its exercise must declare `[broker]`.
    pub fn uses_broker(&self) -> bool {
        matches!(
            self,
            ProbeCall::BrokerTopology(_)
                | ProbeCall::PublishedEvents(_)
                | ProbeCall::ConsumedPayments(_)
        )
    }

    /// Whether the probe kills and restarts the service (or cuts it off the broker): checks of
    /// other exercises running at the same time would see it die, so such an exercise is graded
    /// alone.
    pub fn restarts_service(&self) -> bool {
        match self {
            ProbeCall::PublishedEvents(p) => p.restarts_service(),
            ProbeCall::ConsumedPayments(p) => p.restarts_service(),
            ProbeCall::Shutdown(_) | ProbeCall::GrpcShutdown(_) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The schema's probe table lists every probe `parse` knows, in the same order.
    #[test]
    fn every_probe_has_a_params_schema() {
        let mut gen = schemars::gen::SchemaGenerator::default();
        let names: Vec<&str> = super::params_schemas(&mut gen)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, super::PROBE_NAMES);
    }
}
