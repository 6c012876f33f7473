//! Typed parameters of the probes that send several requests and look at the mock upstreams:
//! `concurrent` and `upstream_calls` (their code is in `engine/probes/`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json_path::JsonPath;

use super::{predicate, template, BodySpec, Expect, JsonQuery, RequestSpec};
use crate::upstream::Fault;

/// A request a probe sends, with what its response must show.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    /// Shown in messages and exchanges.
    pub name: String,
    pub spec: RequestSpec,
    /// Status and JSON expectations, evaluated by `engine::assert`.
    pub expect: Expect,
    /// 1-based position of an earlier request whose status and resource (`identity`) this
    /// response must repeat: a replay.
    pub same_as: Option<usize>,
    /// When to send it, after the first request (`concurrent` only).
    pub at: Duration,
}

/// What a probe does to, and expects from, a mock upstream route.
#[derive(Debug, Clone)]
pub struct UpstreamParams {
    /// The upstream's name (`[upstreams.NAME]`).
    pub name: String,
    /// `POST /charges`.
    pub route: String,
    /// The key whose calls are counted (template); all calls to the route when absent.
    pub key: Option<String>,
    /// Exactly this many calls for the key by the end of the check.
    pub calls: Option<u32>,
    /// Latency for this check only.
    pub delay: Option<Duration>,
    /// A fault for this check only, on the next `fault_times` calls (all calls when absent).
    pub fault: Option<Fault>,
    pub fault_times: Option<u32>,
    /// Predicates on the JSON body of every counted call (`$.amount_cents = "{{amount}}"`).
    pub body_json: Vec<(JsonQuery, predicate::Predicate)>,
    /// What a call is, for messages: `charge` gives "3 charges at payments (POST /charges)".
    pub noun: String,
}

/// `concurrent`: fires the requests together (or staggered by `at`), then checks each response,
/// that no response is a 5xx, that every 2xx names the same resource, and the upstream counts.
#[derive(Debug, Clone)]
pub struct Concurrent {
    pub requests: Vec<ProbeRequest>,
    /// JSONPath of the resource's identity in a response body (default `$.id`).
    pub identity: JsonQuery,
    /// Every 2xx response must carry the same identity.
    pub same_resource: bool,
    pub upstream: Option<UpstreamParams>,
}

/// `upstream_calls`: sends the requests in order (with a fault or latency set on the upstream
/// for this check), checks each response, then counts the upstream's calls.
#[derive(Debug, Clone)]
pub struct UpstreamCalls {
    pub requests: Vec<ProbeRequest>,
    pub identity: JsonQuery,
    pub upstream: UpstreamParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    name: Option<String>,
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    json: Option<toml::Value>,
    body: Option<String>,
    status: Option<toml::Value>,
    #[serde(default)]
    expect_json: BTreeMap<String, toml::Value>,
    same_as: Option<usize>,
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    route: String,
    key: Option<String>,
    calls: Option<u32>,
    delay: Option<String>,
    fault: Option<String>,
    fault_times: Option<u32>,
    #[serde(default)]
    body_json: BTreeMap<String, toml::Value>,
    noun: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrent {
    request: Option<toml::Value>,
    count: Option<usize>,
    requests: Option<Vec<toml::Value>>,
    identity: Option<String>,
    #[serde(default = "yes")]
    same_resource: bool,
    upstream: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamCalls {
    requests: Vec<toml::Value>,
    identity: Option<String>,
    upstream: toml::Value,
}

fn yes() -> bool {
    true
}

const MAX_CONCURRENT: usize = 500;

fn de<T: serde::de::DeserializeOwned>(what: &str, v: toml::Value) -> Result<T, String> {
    v.try_into()
        .map_err(|e: toml::de::Error| format!("{what}: {}", e.message()))
}

pub(crate) fn query(text: &str) -> Result<JsonQuery, String> {
    Ok(JsonQuery {
        path: JsonPath::parse(text)
            .map_err(|e| format!("\"{text}\" is not a valid JSONPath: {e}"))?,
        text: text.to_string(),
    })
}

fn duration(what: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{what} \"{text}\" is not a duration: {e}"))
}

pub(crate) fn request(probe: &str, index: usize, v: toml::Value) -> Result<ProbeRequest, String> {
    let r: RawRequest = de(&format!("params of `{probe}`, request {}", index + 1), v)?;
    let body = match (r.json, r.body) {
        (Some(_), Some(_)) => return Err("a request has `json` or `body`, not both".into()),
        (Some(j), None) => Some(BodySpec::Json(predicate::to_json(&j)?)),
        (None, Some(b)) => Some(BodySpec::Raw(b)),
        (None, None) => None,
    };
    if !r.path.starts_with('/') {
        return Err(format!("request path \"{}\" must start with /", r.path));
    }
    let mut expect = Expect {
        status: r
            .status
            .as_ref()
            .map(super::parse::parse_status)
            .transpose()?,
        ..Default::default()
    };
    for (path, pred) in r.expect_json {
        expect.json.push((query(&path)?, predicate::parse(&pred)?));
    }
    if let Some(n) = r.same_as {
        if n == 0 || n > index {
            return Err(format!(
                "request {}: `same_as = {n}` must name an earlier request (1 to {index})",
                index + 1
            ));
        }
    }
    Ok(ProbeRequest {
        name: r.name.unwrap_or_else(|| format!("request {}", index + 1)),
        spec: RequestSpec {
            method: r.method.to_ascii_uppercase(),
            path: r.path,
            headers: r.headers.into_iter().collect(),
            body,
        },
        expect,
        same_as: r.same_as,
        at: r
            .at
            .as_deref()
            .map(|a| duration("`at`", a))
            .transpose()?
            .unwrap_or(Duration::ZERO),
    })
}

fn upstream(v: toml::Value) -> Result<UpstreamParams, String> {
    let u: RawUpstream = de("params.upstream", v)?;
    let mut body_json = Vec::new();
    for (path, pred) in u.body_json {
        body_json.push((query(&path)?, predicate::parse(&pred)?));
    }
    Ok(UpstreamParams {
        name: u.name,
        route: u.route,
        key: u.key,
        calls: u.calls,
        delay: u
            .delay
            .as_deref()
            .map(|d| duration("delay", d))
            .transpose()?,
        fault: u.fault.as_deref().map(Fault::parse).transpose()?,
        fault_times: u.fault_times,
        body_json,
        noun: u.noun.unwrap_or_else(|| "call".into()),
    })
}

pub fn parse_concurrent(params: toml::Value) -> Result<Concurrent, String> {
    let raw: RawConcurrent = de("params of `concurrent`", params)?;
    let requests = match (raw.request, raw.requests) {
        (Some(r), None) => {
            let count = raw.count.unwrap_or(2);
            if !(2..=MAX_CONCURRENT).contains(&count) {
                return Err(format!("`count` must be from 2 to {MAX_CONCURRENT}"));
            }
            let one = request("concurrent", 0, r)?;
            (0..count)
                .map(|i| ProbeRequest {
                    name: format!("{} #{}", one.name.replace("request 1", "request"), i + 1),
                    ..one.clone()
                })
                .collect()
        }
        (None, Some(list)) => {
            if raw.count.is_some() {
                return Err("`count` goes with `request`, not with `requests`".into());
            }
            if list.len() < 2 {
                return Err("`requests` needs at least two requests".into());
            }
            list.into_iter()
                .enumerate()
                .map(|(i, v)| request("concurrent", i, v))
                .collect::<Result<Vec<_>, _>>()?
        }
        _ => {
            return Err(
                "`concurrent` takes `request` (with `count`) or `requests`, exactly one".into(),
            )
        }
    };
    Ok(Concurrent {
        requests,
        identity: query(raw.identity.as_deref().unwrap_or("$.id"))?,
        same_resource: raw.same_resource,
        upstream: raw.upstream.map(upstream).transpose()?,
    })
}

pub fn parse_upstream_calls(params: toml::Value) -> Result<UpstreamCalls, String> {
    let raw: RawUpstreamCalls = de("params of `upstream_calls`", params)?;
    let requests = raw
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, v)| request("upstream_calls", i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let upstream = upstream(raw.upstream)?;
    if upstream.calls.is_none() && upstream.body_json.is_empty() {
        return Err("params.upstream needs `calls` (the expected count) or `body_json`".into());
    }
    Ok(UpstreamCalls {
        requests,
        identity: query(raw.identity.as_deref().unwrap_or("$.id"))?,
        upstream,
    })
}

/// Template strings of requests and upstream params, for the static variable check.
pub fn template_strings(
    requests: &[ProbeRequest],
    upstream: Option<&UpstreamParams>,
) -> Vec<String> {
    let mut out = Vec::new();
    let placeholder = |v: String| format!("{{{{{v}}}}}");
    for r in requests {
        out.push(r.spec.path.clone());
        out.extend(r.spec.headers.iter().map(|(_, v)| v.clone()));
        match &r.spec.body {
            Some(BodySpec::Json(v)) => {
                if let Ok(vars) = template::variables_in_json(v) {
                    out.extend(vars.into_iter().map(placeholder));
                }
            }
            Some(BodySpec::Raw(t)) => out.push(t.clone()),
            None => {}
        }
        for (_, p) in &r.expect.json {
            out.extend(predicate::template_strings(p).into_iter().map(String::from));
        }
    }
    if let Some(u) = upstream {
        out.extend(u.key.clone());
        for (_, p) in &u.body_json {
            out.extend(predicate::template_strings(p).into_iter().map(String::from));
        }
    }
    out
}

/// The upstream a probe uses, if any (for the static check that it is declared).
pub fn upstream_of(call: &super::ProbeCall) -> Option<&UpstreamParams> {
    match call {
        super::ProbeCall::Concurrent(p) => p.upstream.as_ref(),
        super::ProbeCall::UpstreamCalls(p) => Some(&p.upstream),
        _ => None,
    }
}

/// Why a probe's upstream reference is wrong, if it is: the upstream or its route is not declared.
pub fn check_upstream_ref(
    u: &UpstreamParams,
    declared: &[crate::upstream::UpstreamSpec],
) -> Option<String> {
    let Some(spec) = declared.iter().find(|s| s.name == u.name) else {
        let names: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
        return Some(format!(
            "params.upstream names `{}`, which this exercise does not declare (declared: {})",
            u.name,
            if names.is_empty() {
                "none; add [upstreams.NAME]".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    if !spec.routes.iter().any(|r| r.id() == u.route) {
        let routes: Vec<String> = spec.routes.iter().map(|r| r.id()).collect();
        return Some(format!(
            "upstream `{}` has no route \"{}\"; its routes: {}",
            u.name,
            u.route,
            routes.join(", ")
        ));
    }
    None
}
