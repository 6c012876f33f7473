//! Built-in probes an exercise can name, with their typed parameters.
//!
//! A probe is Rust code for what declarative steps cannot say (many inputs, concurrency, walks,
//! database inspection). The exercise names it and passes parameters; this module parses and
//! validates them, and `engine::probes` runs them.

use serde::Deserialize;
use serde_json::Value;

/// A probe with its parameters, ready to run.
#[derive(Debug, Clone)]
pub enum ProbeCall {
    NoInternalsLeak(NoInternalsLeak),
    Concurrent(Box<super::upstream_probes::Concurrent>),
    UpstreamCalls(Box<super::upstream_probes::UpstreamCalls>),
    QueryPlan(Box<super::db_probes::QueryPlan>),
    DeepPages(Box<super::db_probes::DeepPages>),
    RedundantIndexes(super::db_probes::RedundantIndexes),
    Paginate(Box<super::paginate::Paginate>),
    Revalidate(Box<super::revalidate::Revalidate>),
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
];

/// `no_internals_leak`: sends awkward input (control characters, huge numbers, wrong types,
/// deeply nested JSON, invalid UTF-8, odd ids) and fails if any response leaks a stack trace, a
/// database error or a source path, or if the service stops answering its health path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoInternalsLeak {
    /// Method of the write endpoint to attack, e.g. `POST`.
    pub method: String,
    /// Path of the write endpoint, e.g. `/products`.
    pub path: String,
    /// A valid JSON body (templates allowed); the probe breaks one field at a time.
    pub body: Value,
    /// Fields that take strings: get control characters, NUL, very long text, wrong types.
    #[serde(default)]
    pub string_fields: Vec<String>,
    /// Fields that take numbers: get huge, fractional, negative and non-numeric values.
    #[serde(default)]
    pub number_fields: Vec<String>,
    /// Prefix of an item URL, e.g. `/products/`; odd ids are appended and sent with GET.
    pub item_path: Option<String>,
    /// Health path that must still answer 2xx after the barrage.
    #[serde(default = "default_health")]
    pub health_path: String,
}

fn default_health() -> String {
    "/healthz".into()
}

/// Parses `probe = NAME` with its `params`. Errors are plain messages; the caller locates them.
pub fn parse(name: &str, params: Option<&toml::Value>) -> Result<ProbeCall, String> {
    let params = params
        .cloned()
        .unwrap_or(toml::Value::Table(Default::default()));
    match name {
        "no_internals_leak" => {
            let p: NoInternalsLeak = params.try_into().map_err(|e: toml::de::Error| {
                format!("params of `no_internals_leak`: {}", e.message())
            })?;
            if !p.body.is_object() {
                return Err(
                    "params.body of `no_internals_leak` must be a table (a valid JSON object body)"
                        .into(),
                );
            }
            for f in p.string_fields.iter().chain(&p.number_fields) {
                if p.body.get(f).is_none() {
                    return Err(format!(
                        "field `{f}` is listed but not present in params.body"
                    ));
                }
            }
            Ok(ProbeCall::NoInternalsLeak(p))
        }
        "concurrent" => super::upstream_probes::parse_concurrent(params)
            .map(|p| ProbeCall::Concurrent(Box::new(p))),
        "upstream_calls" => super::upstream_probes::parse_upstream_calls(params)
            .map(|p| ProbeCall::UpstreamCalls(Box::new(p))),
        "query_plan" => {
            super::db_probes::parse_query_plan(params).map(|p| ProbeCall::QueryPlan(Box::new(p)))
        }
        "deep_pages" => {
            super::db_probes::parse_deep_pages(params).map(|p| ProbeCall::DeepPages(Box::new(p)))
        }
        "redundant_indexes" => {
            super::db_probes::parse_redundant_indexes(params).map(ProbeCall::RedundantIndexes)
        }
        "paginate" => super::paginate::parse(params).map(|p| ProbeCall::Paginate(Box::new(p))),
        "revalidate" => {
            super::revalidate::parse(params).map(|p| ProbeCall::Revalidate(Box::new(p)))
        }
        other => Err(
            match crate::diagnostic::did_you_mean(other, PROBE_NAMES.iter().copied()) {
                Some(s) => format!("unknown probe `{other}`; did you mean `{s}`?"),
                None => format!(
                    "unknown probe `{other}`; known probes: {}",
                    PROBE_NAMES.join(", ")
                ),
            },
        ),
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
        }
    }

    /// Template strings the probe will render, for the static variable check.
    pub fn template_strings(&self) -> Vec<String> {
        match self {
            ProbeCall::NoInternalsLeak(p) => {
                let mut out = vec![p.path.clone()];
                if let Ok(vars) = super::template::variables_in_json(&p.body) {
                    out.extend(vars.into_iter().map(|v| format!("{{{{{v}}}}}")));
                }
                out.extend(p.item_path.clone());
                out
            }
            ProbeCall::Concurrent(p) => {
                super::upstream_probes::template_strings(&p.requests, p.upstream.as_ref())
            }
            ProbeCall::UpstreamCalls(p) => {
                super::upstream_probes::template_strings(&p.requests, Some(&p.upstream))
            }
            ProbeCall::QueryPlan(p) => {
                super::db_probes::db_template_strings(&p.requests, &p.sample)
            }
            ProbeCall::DeepPages(p) => {
                super::db_probes::db_template_strings(std::slice::from_ref(&p.request), &p.sample)
            }
            ProbeCall::RedundantIndexes(_) => Vec::new(),
            ProbeCall::Paginate(p) => p.template_strings(),
            ProbeCall::Revalidate(p) => p.template_strings(),
        }
    }
}
