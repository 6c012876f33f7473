//! What probe parameters share: a request with its expectations (`ProbeRequest`), and what a
//! probe does to and expects from a mock upstream route (`UpstreamParams`). Parsed from the
//! exercise file like steps, from the same vocabulary (`spec`).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json_path::JsonPath;

use crate::spec::{
    predicate, template, BodySpec, CaptureSpec, Expect, JsonQuery, RequestSpec, StatusSpec,
};
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
    /// When to send it, after the burst's release (`concurrent` only), or after the upstream's
    /// first call with `after_upstream_call`.
    pub at: Duration,
    /// Sent `at` after the check's upstream received this round's first call (`concurrent` only),
    /// not `at` after the release: the timeline is anchored on the service's own progress (the
    /// first request is known to be in flight), so a loaded machine cannot reorder it.
    pub after_upstream_call: bool,
    /// How long to pause before sending it, after the previous response (`upstream_calls` only):
    /// the grader's own clock, e.g. a cache's TTL plus a margin.
    pub wait: Duration,
    /// The response must arrive in less than this share of the upstream route's delay
    /// (`upstream_calls` only): 0.5 means "in under half the time the upstream takes", proof that
    /// it did not wait for the upstream. Relative, so a slow machine does not make it flaky.
    pub under_upstream_delay: Option<f64>,
    /// The response must not arrive before the upstream route's delay has passed (`upstream_calls`
    /// only): proof that the service waited for a fresh answer instead of serving a stored one
    /// while it refreshes in the background. A response cannot depend on an answer that did not
    /// exist yet, so this bound cannot be flaky either.
    pub waits_for_upstream: bool,
    /// Values taken from the response for later requests' templates (`{{account}}` from a
    /// `Location`), as a step's `capture`.
    pub captures: Vec<(String, CaptureSpec)>,
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
    /// At most this many calls for the key (a stampede may let one extra through).
    pub max_calls: Option<u32>,
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

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ProbeRequest")]
pub struct RawRequest {
    name: Option<String>,
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[schemars(with = "Option<serde_json::Value>")]
    json: Option<toml::Value>,
    body: Option<String>,
    #[schemars(with = "Option<crate::spec::schema::StatusSchema>")]
    status: Option<toml::Value>,
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    expect_json: BTreeMap<String, toml::Value>,
    /// Predicates on response headers, by name: `{ Content-Type = { media_type = "application/problem+json" } }`.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    expect_headers: BTreeMap<String, toml::Value>,
    same_as: Option<usize>,
    at: Option<String>,
    #[serde(default)]
    after_upstream_call: bool,
    wait: Option<String>,
    under_upstream_delay: Option<f64>,
    #[serde(default)]
    waits_for_upstream: bool,
    #[serde(default)]
    capture: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpstreamExpectation")]
pub struct RawUpstream {
    name: String,
    route: String,
    key: Option<String>,
    calls: Option<u32>,
    max_calls: Option<u32>,
    delay: Option<String>,
    fault: Option<String>,
    fault_times: Option<u32>,
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    body_json: BTreeMap<String, toml::Value>,
    noun: Option<String>,
}

pub fn de<T: serde::de::DeserializeOwned>(what: &str, v: toml::Value) -> Result<T, String> {
    v.try_into()
        .map_err(|e: toml::de::Error| format!("{what}: {}", e.message()))
}

pub fn query(text: &str) -> Result<JsonQuery, String> {
    Ok(JsonQuery {
        path: JsonPath::parse(text)
            .map_err(|e| format!("\"{text}\" is not a valid JSONPath: {e}"))?,
        text: text.to_string(),
    })
}

/// An optional duration parameter: `default` when absent, at most `max`.
pub fn duration_or(
    what: &str,
    text: Option<&str>,
    default: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let d = text
        .map(|t| duration(what, t))
        .transpose()?
        .unwrap_or(default);
    if d > max {
        return Err(format!(
            "`{what}` is at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

pub fn duration(what: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{what} \"{text}\" is not a duration: {e}"))
}

/// `count` copies of one request for a burst, named `request #1`, `request #2`, ... (one alone
/// keeps its name); each is rendered with its own `{{burst_index}}` when sent.
pub fn copies(one: &ProbeRequest, count: u32) -> Vec<ProbeRequest> {
    (1..=count)
        .map(|n| ProbeRequest {
            name: if count == 1 {
                one.name.clone()
            } else {
                format!("{} #{n}", one.name.replace("request 1", "request"))
            },
            ..one.clone()
        })
        .collect()
}

pub fn request(probe: &str, index: usize, v: toml::Value) -> Result<ProbeRequest, String> {
    let r: RawRequest = de(&format!("params of `{probe}`, request {}", index + 1), v)?;
    let body = match (r.json, r.body) {
        (Some(_), Some(_)) => return Err("a request has `json` or `body`, not both".into()),
        (Some(j), None) => Some(BodySpec::Json(predicate::to_json(&j)?)),
        (None, Some(b)) => Some(BodySpec::Raw(b)),
        (None, None) => None,
    };
    if !(r.path.starts_with('/') || r.path.starts_with("{{")) {
        return Err(format!(
            "request path \"{}\" must start with / (or be a captured URL like \"{{{{account}}}}\")",
            r.path
        ));
    }
    let mut expect = Expect {
        status: r.status.as_ref().map(StatusSpec::parse).transpose()?,
        ..Default::default()
    };
    for (path, pred) in r.expect_json {
        expect.json.push((query(&path)?, predicate::parse(&pred)?));
    }
    for (name, pred) in r.expect_headers {
        expect.headers.push((name, predicate::parse(&pred)?));
    }
    let timed_by_upstream = probe == "timeline" && r.wait.is_none() && !r.waits_for_upstream;
    if probe != "upstream_calls"
        && !timed_by_upstream
        && (r.wait.is_some() || r.under_upstream_delay.is_some() || r.waits_for_upstream)
    {
        return Err(format!(
            "request {}: `wait`, `under_upstream_delay` and `waits_for_upstream` go with `upstream_calls` requests (`concurrent` staggers with `at`)",
            index + 1
        ));
    }
    if probe != "concurrent" && r.after_upstream_call {
        return Err(format!(
            "request {}: `after_upstream_call` goes with `concurrent` requests",
            index + 1
        ));
    }
    if r.waits_for_upstream && r.under_upstream_delay.is_some() {
        return Err(format!(
            "request {}: a response cannot both answer before the upstream (`under_upstream_delay`) and wait for it (`waits_for_upstream`)",
            index + 1
        ));
    }
    if let Some(share) = r.under_upstream_delay {
        if !(share > 0.0 && share <= 1.0) {
            return Err(format!(
                "request {}: `under_upstream_delay` is a share of the upstream's delay, above 0 and at most 1 (0.5 means half)",
                index + 1
            ));
        }
    }
    if let Some(n) = r.same_as {
        if n == 0 || n > index {
            return Err(format!(
                "request {}: `same_as = {n}` must name an earlier request (1 to {index})",
                index + 1
            ));
        }
    }
    let mut captures = Vec::new();
    for (name, source) in r.capture {
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(format!(
                "request {}: \"{name}\" is not a variable name",
                index + 1
            ));
        }
        let spec = match (source.len(), source.get("header"), source.get("json")) {
            (1, Some(h), None) => CaptureSpec::Header(h.clone()),
            (1, None, Some(j)) => CaptureSpec::Json(query(j)?),
            _ => {
                return Err(format!(
                    "request {}: capture `{name}` takes exactly one of `header` or `json` (e.g. {name} = {{ header = \"Location\" }})",
                    index + 1
                ))
            }
        };
        captures.push((name, spec));
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
        after_upstream_call: r.after_upstream_call,
        wait: r
            .wait
            .as_deref()
            .map(|w| duration("`wait`", w))
            .transpose()?
            .unwrap_or(Duration::ZERO),
        under_upstream_delay: r.under_upstream_delay,
        waits_for_upstream: r.waits_for_upstream,
        captures,
    })
}

/// The variables the requests capture, for the static check of later templates.
pub fn captured_names(requests: &[ProbeRequest]) -> impl Iterator<Item = &str> {
    requests
        .iter()
        .flat_map(|r| r.captures.iter().map(|(n, _)| n.as_str()))
}

pub fn upstream(v: toml::Value) -> Result<UpstreamParams, String> {
    let u: RawUpstream = de("params.upstream", v)?;
    if u.calls.is_some() && u.max_calls.is_some() {
        return Err(
            "params.upstream takes `calls` (exactly) or `max_calls` (at most), not both".into(),
        );
    }
    let mut body_json = Vec::new();
    for (path, pred) in u.body_json {
        body_json.push((query(&path)?, predicate::parse(&pred)?));
    }
    Ok(UpstreamParams {
        name: u.name,
        route: u.route,
        key: u.key,
        calls: u.calls,
        max_calls: u.max_calls,
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

/// Template strings of requests that also know the probe's own variables (`{{etag}}`,
/// `{{attempt}}`, `{{from}}`): those are left out, so the static check sees only the exercise's.
pub fn template_strings_except(requests: &[ProbeRequest], probe_vars: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in template_strings(requests, None) {
        match template::variables(&s) {
            Ok(names) => out.extend(
                names
                    .into_iter()
                    .filter(|n| !probe_vars.contains(&n.as_str()))
                    .map(|n| format!("{{{{{n}}}}}")),
            ),
            // Let the static check report the syntax error.
            Err(_) => out.push(s),
        }
    }
    out
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
