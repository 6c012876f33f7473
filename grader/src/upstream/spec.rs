//! What an exercise declares about a mock upstream (`[upstreams.NAME]` in `exercise.toml`), parsed
//! and validated before anything starts.
//!
//! ```toml
//! [upstreams.payments]
//! env = "PAYMENTS_URL"                  # default: NAME_URL, upper-cased
//!
//! [[upstreams.payments.route]]
//! method = "POST"
//! path = "/charges"
//! key = { json = "$.order_id" }         # or { header = "Idempotency-Key" }: calls are counted per key
//! delay = "0ms"                         # latency before answering
//! fault = "503"                         # optional: a status, "timeout" (never answers) or "drop"
//! response.status = 201
//! response.json = { id = "ch_{{seq}}", amount_cents = "{{request_amount_cents}}" }
//! ```
//!
//! Response templates know `{{seq}}` (the route's call number, from 1) and `{{request_FIELD}}`
//! (a top-level field of the JSON request body).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;

/// A mock upstream an exercise needs.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    /// Default env var that hands its URL to the service (a learner's grader.toml may rename it).
    pub env: String,
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: String,
    pub path: String,
    /// Where the per-key counter reads the key from.
    pub key: Option<KeySource>,
    /// Behaviour at the start of every check (probes may change it for one check).
    pub behaviour: Behaviour,
    pub response: CannedResponse,
}

impl RouteSpec {
    /// `POST /charges`: how probes and messages name a route.
    pub fn id(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Header(String),
    Json { text: String, path: JsonPath },
}

impl KeySource {
    pub fn describe(&self) -> String {
        match self {
            KeySource::Header(h) => format!("header {h}"),
            KeySource::Json { text, .. } => text.trim_start_matches("$.").to_string(),
        }
    }
}

/// How a route answers right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    pub delay: Duration,
    pub fault: Option<Fault>,
    /// `Some(n)`: the fault applies to the next `n` calls only, then the route answers normally.
    pub fault_times: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (5xx usually) with a small JSON error body.
    Status(u16),
    /// Accept the request and never answer.
    Timeout,
    /// Close the connection without a response.
    Drop,
}

impl Fault {
    pub fn parse(text: &str) -> Result<Fault, String> {
        match text {
            "timeout" => Ok(Fault::Timeout),
            "drop" => Ok(Fault::Drop),
            s => match s.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => Ok(Fault::Status(code)),
                _ => Err(format!(
                    "fault \"{s}\" is not a status code, \"timeout\" or \"drop\""
                )),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Fault::Status(s) => format!("status {s}"),
            Fault::Timeout => "no answer (timeout)".into(),
            Fault::Drop => "a dropped connection".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CannedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: CannedBody,
}

#[derive(Debug, Clone)]
pub enum CannedBody {
    Json(Value),
    Text(String),
    Empty,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    env: Option<String>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: String,
    path: String,
    key: Option<RawKey>,
    delay: Option<String>,
    fault: Option<String>,
    fault_times: Option<u32>,
    #[serde(default)]
    response: RawResponse,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    header: Option<String>,
    json: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    status: Option<u16>,
    json: Option<toml::Value>,
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Parses `[upstreams.NAME]`. Errors are plain messages; the caller locates them at NAME.
pub fn parse(name: &str, value: &toml::Value) -> Result<UpstreamSpec, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "upstream name \"{name}\" must be lower-case letters, digits and _"
        ));
    }
    let raw: RawUpstream = value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| format!("upstream `{name}`: {}", e.message()))?;
    let env = raw
        .env
        .unwrap_or_else(|| format!("{}_URL", name.to_ascii_uppercase()));
    if !valid_env_name(&env) {
        return Err(format!(
            "upstream `{name}`: \"{env}\" is not a valid environment variable name"
        ));
    }
    if raw.route.is_empty() {
        return Err(format!(
            "upstream `{name}` has no routes; add [[upstreams.{name}.route]] tables"
        ));
    }
    let mut routes: Vec<RouteSpec> = Vec::new();
    for r in raw.route {
        let method = r.method.to_ascii_uppercase();
        if !r.path.starts_with('/') {
            return Err(format!(
                "upstream `{name}`: route path \"{}\" must start with /",
                r.path
            ));
        }
        let key = match r.key {
            None => None,
            Some(RawKey {
                header: Some(h),
                json: None,
            }) => Some(KeySource::Header(h.to_ascii_lowercase())),
            Some(RawKey {
                header: None,
                json: Some(j),
            }) => Some(KeySource::Json {
                path: JsonPath::parse(&j).map_err(|e| {
                    format!("upstream `{name}`: \"{j}\" is not a valid JSONPath: {e}")
                })?,
                text: j,
            }),
            Some(_) => {
                return Err(format!(
                    "upstream `{name}`: a route key takes exactly one of `header` or `json`"
                ))
            }
        };
        let delay = match r.delay {
            None => Duration::ZERO,
            Some(d) => humantime::parse_duration(&d)
                .map_err(|e| format!("upstream `{name}`: delay \"{d}\" is not a duration: {e}"))?,
        };
        let fault = r.fault.as_deref().map(Fault::parse).transpose()?;
        let body = match (r.response.json, r.response.body) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "upstream `{name}`: a response has `json` or `body`, not both"
                ))
            }
            (Some(j), None) => {
                let v = crate::exercise::predicate::to_json(&j)?;
                for var in crate::exercise::template::variables_in_json(&v)? {
                    if var != "seq" && !var.starts_with("request_") {
                        return Err(format!(
                            "upstream `{name}`: response template `{{{{{var}}}}}` is unknown; use {{{{seq}}}} or {{{{request_FIELD}}}}"
                        ));
                    }
                }
                CannedBody::Json(v)
            }
            (None, Some(b)) => CannedBody::Text(b),
            (None, None) => CannedBody::Empty,
        };
        let route = RouteSpec {
            method,
            path: r.path,
            key,
            behaviour: Behaviour {
                delay,
                fault,
                fault_times: r.fault_times,
            },
            response: CannedResponse {
                status: r.response.status.unwrap_or(200),
                headers: r.response.headers.into_iter().collect(),
                body,
            },
        };
        if routes.iter().any(|x| x.id() == route.id()) {
            return Err(format!(
                "upstream `{name}`: route {} is declared twice",
                route.id()
            ));
        }
        routes.push(route);
    }
    Ok(UpstreamSpec {
        name: name.to_string(),
        env,
        routes,
    })
}

pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_payment_provider() {
        let v: toml::Value = toml::from_str(
            r#"
            [[route]]
            method = "POST"
            path = "/charges"
            key = { json = "$.order_id" }
            response.status = 201
            response.json = { id = "ch_{{seq}}", amount_cents = "{{request_amount_cents}}" }
            "#,
        )
        .unwrap();
        let s = parse("payments", &v).unwrap();
        assert_eq!(s.env, "PAYMENTS_URL");
        assert_eq!(s.routes[0].id(), "POST /charges");
        assert_eq!(s.routes[0].response.status, 201);
        let bad: toml::Value =
            toml::from_str("[[route]]\nmethod = \"GET\"\npath = \"/x\"\nfault = \"sometimes\"\n")
                .unwrap();
        assert!(parse("p", &bad).unwrap_err().contains("sometimes"));
    }
}
