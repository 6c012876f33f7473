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
//! key = { json = "$.order_id" }         # or { header = "Idempotency-Key" }, or { path = "NAME" }
//!                                       # for a `{NAME}` segment: calls are counted per key
//! delay = "0ms"                         # latency before answering
//! fault = "503"                         # optional: a status, "timeout" (never answers), "drop" or "reset" (TCP RST)
//! response.status = 201
//! response.json = { id = "ch_{{seq}}", amount_cents = "{{request_amount_cents}}" }
//! ```
//!
//! Response templates know `{{seq}}` (the route's call number, from 1), `{{request_FIELD}}`
//! (a top-level field of the JSON request body) and `{{path_NAME}}` (a `{NAME}` path segment).
//!
//! A route with `store = "write"` keeps the fields of its JSON request body per key; a route with
//! `store = "read"` answers its canned JSON with the kept fields laid over it. That is enough to
//! stand in for a system of record (a profile service the learner's service updates and caches).
//! `service_env` hands the service extra settings that belong with this dependency (how long it
//! may cache its answers, for example).
//!
//! `read_on_arrival = true` on a `store = "read"` route takes the kept document when the call
//! arrives, before its delay, as a real system of record reads at the start of a slow call: a
//! write that lands during the delay is not in the answer. That makes the classic invalidation
//! race observable (a lookup that started before a write answers the old document after it).
//!
//! `kind = "oidc-issuer"` declares a built-in upstream instead of routes: the grader's mock
//! OpenID-Connect issuer (`super::issuer`), with `audience` (the default `aud` of the tokens it
//! signs for `gen = "jwt"` variables). Its two routes are fixed ([`ISSUER_ROUTES`]) and counted
//! like any other route.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
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
    /// More variables the service gets with the URL (`service_env = { CACHE_TTL_SECONDS = "2" }`).
    pub service_env: Vec<(String, String)>,
    /// Canned routes, or a built-in upstream.
    pub kind: UpstreamKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamKind {
    /// Declared `[[upstreams.NAME.route]]`s.
    Routes,
    /// The grader's mock OpenID-Connect issuer: discovery and JWKS, keys per run.
    OidcIssuer {
        /// The `aud` of the tokens it signs unless a variable says otherwise.
        audience: String,
    },
    /// The grader's OpenTelemetry collector (OTLP over HTTP): spans for the probes to read.
    OtlpCollector,
}

/// Route ids of the `oidc-issuer` upstream, as `upstream_calls` counts them.
pub const DISCOVERY_ROUTE: &str = "GET /.well-known/openid-configuration";
pub const JWKS_ROUTE: &str = "GET /.well-known/jwks.json";
pub const ISSUER_ROUTES: &[&str] = &[DISCOVERY_ROUTE, JWKS_ROUTE];

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: String,
    pub path: String,
    /// Where the per-key counter reads the key from.
    pub key: Option<KeySource>,
    /// Behaviour at the start of every check (probes may change it for one check).
    pub behaviour: Behaviour,
    pub response: CannedResponse,
    /// Whether the route keeps (`write`) or shows (`read`) a document per key.
    pub store: Option<Store>,
    /// A `read` route answers the document as it was when the call arrived (before the delay),
    /// not as it is when the answer leaves.
    pub read_on_arrival: bool,
}

impl RouteSpec {
    /// `POST /charges`: how probes and messages name a route.
    pub fn id(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The `{NAME}` segments of the path, as (NAME, value) when `method` and `path` match this
    /// route; `None` when they do not. A `{NAME}` segment matches one non-empty segment.
    pub fn matches(&self, method: &str, path: &str) -> Option<Vec<(String, String)>> {
        if method != self.method {
            return None;
        }
        let pattern: Vec<&str> = self.path.split('/').collect();
        let actual: Vec<&str> = path.split('/').collect();
        if pattern.len() != actual.len() {
            return None;
        }
        let mut params = Vec::new();
        for (want, got) in pattern.iter().zip(&actual) {
            match path_param(want) {
                Some(name) if !got.is_empty() => {
                    params.push((name.to_string(), percent_decode(got)));
                }
                Some(_) => return None,
                None if want == got => {}
                None => return None,
            }
        }
        Some(params)
    }

    /// Names of the route's `{NAME}` path segments.
    pub fn path_params(&self) -> Vec<&str> {
        self.path.split('/').filter_map(path_param).collect()
    }
}

/// `user` for the segment `{user}`.
fn path_param(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// `%20` and friends in a path segment, so keys compare as the service meant them.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Header(String),
    Json {
        text: String,
        path: JsonPath,
    },
    /// A `{NAME}` segment of the route's path.
    Path(String),
}

impl KeySource {
    pub fn describe(&self) -> String {
        match self {
            KeySource::Header(h) => format!("header {h}"),
            KeySource::Json { text, .. } => text.trim_start_matches("$.").to_string(),
            KeySource::Path(name) => name.clone(),
        }
    }
}

/// What a route does with the document the upstream keeps per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Lays the kept fields over the canned JSON answer.
    Read,
    /// Keeps the fields of the JSON request body (merged into what was kept), then answers like
    /// `Read`.
    Write,
}

/// How a route answers right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    pub delay: Duration,
    pub fault: Option<Fault>,
    /// `Some(n)`: the fault applies to the next `n` calls only, then the route answers normally.
    pub fault_times: Option<u32>,
    /// Seconds sent in a `Retry-After` header with a status fault (`503` + `Retry-After: 1`).
    pub retry_after: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (5xx usually) with a small JSON error body.
    Status(u16),
    /// Accept the request and never answer.
    Timeout,
    /// Close the connection without a response.
    Drop,
    /// Reset the connection (TCP RST) without a response.
    Reset,
}

impl Fault {
    pub fn parse(text: &str) -> Result<Fault, String> {
        match text {
            "timeout" => Ok(Fault::Timeout),
            "drop" => Ok(Fault::Drop),
            "reset" => Ok(Fault::Reset),
            s => match s.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => Ok(Fault::Status(code)),
                _ => Err(format!(
                    "fault \"{s}\" is not a status code, \"timeout\", \"drop\" or \"reset\""
                )),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Fault::Status(s) => format!("status {s}"),
            Fault::Timeout => "no answer (timeout)".into(),
            Fault::Drop => "a dropped connection".into(),
            Fault::Reset => "a reset connection".into(),
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
    /// Computed by the `oidc-issuer` upstream: its discovery document or its JWKS.
    Issuer(IssuerDocument),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerDocument {
    Discovery,
    Jwks,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Upstream")]
pub struct RawUpstream {
    kind: Option<String>,
    audience: Option<String>,
    env: Option<String>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    service_env: BTreeMap<String, String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpstreamRoute")]
pub struct RawRoute {
    method: String,
    path: String,
    key: Option<RawKey>,
    delay: Option<String>,
    fault: Option<String>,
    fault_times: Option<u32>,
    store: Option<String>,
    #[serde(default)]
    read_on_arrival: bool,
    #[serde(default)]
    response: RawResponse,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpstreamRouteKey")]
pub struct RawKey {
    header: Option<String>,
    json: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpstreamResponse")]
pub struct RawResponse {
    status: Option<u16>,
    #[schemars(with = "Option<serde_json::Value>")]
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
    let kind = match (raw.kind.as_deref(), raw.audience) {
        (None, None) => UpstreamKind::Routes,
        (None, Some(_)) => {
            return Err(format!(
                "upstream `{name}`: `audience` goes with kind = \"oidc-issuer\""
            ))
        }
        (Some("oidc-issuer"), audience) => {
            if !raw.route.is_empty() {
                return Err(format!(
                    "upstream `{name}` is an oidc-issuer: its routes are built in (discovery and JWKS), so it takes no [[upstreams.{name}.route]]"
                ));
            }
            let audience = audience.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
                format!(
                    "upstream `{name}`: an oidc-issuer needs `audience`, the `aud` of the tokens it signs (e.g. audience = \"notes-api\")"
                )
            })?;
            UpstreamKind::OidcIssuer { audience }
        }
        (Some("otlp-collector"), None) => {
            if !raw.route.is_empty() {
                return Err(format!(
                    "upstream `{name}` is an otlp-collector: its routes are built in (POST /v1/traces, /v1/metrics, /v1/logs), so it takes no [[upstreams.{name}.route]]"
                ));
            }
            UpstreamKind::OtlpCollector
        }
        (Some("otlp-collector"), Some(_)) => {
            return Err(format!(
                "upstream `{name}`: `audience` goes with kind = \"oidc-issuer\""
            ))
        }
        (Some(other), _) => {
            return Err(format!(
                "upstream `{name}`: kind \"{other}\" is unknown; the built-in kinds are \"oidc-issuer\" and \"otlp-collector\" (leave `kind` out for declared routes)"
            ))
        }
    };
    if raw.route.is_empty() && kind == UpstreamKind::Routes {
        return Err(format!(
            "upstream `{name}` has no routes; add [[upstreams.{name}.route]] tables"
        ));
    }
    let mut routes: Vec<RouteSpec> = Vec::new();
    if let UpstreamKind::OidcIssuer { .. } = kind {
        for (path, document) in [
            (
                "/.well-known/openid-configuration",
                IssuerDocument::Discovery,
            ),
            ("/.well-known/jwks.json", IssuerDocument::Jwks),
        ] {
            routes.push(RouteSpec {
                method: "GET".into(),
                path: path.into(),
                key: None,
                behaviour: Behaviour::default(),
                response: CannedResponse {
                    status: 200,
                    headers: Vec::new(),
                    body: CannedBody::Issuer(document),
                },
                store: None,
                read_on_arrival: false,
            });
        }
    }
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
                path: None,
            }) => Some(KeySource::Header(h.to_ascii_lowercase())),
            Some(RawKey {
                header: None,
                json: None,
                path: Some(p),
            }) => {
                if !r.path.split('/').filter_map(path_param).any(|n| n == p) {
                    return Err(format!(
                        "upstream `{name}`: key {{ path = \"{p}\" }} names no {{{p}}} segment of \"{}\"",
                        r.path
                    ));
                }
                Some(KeySource::Path(p))
            }
            Some(RawKey {
                header: None,
                json: Some(j),
                path: None,
            }) => Some(KeySource::Json {
                path: JsonPath::parse(&j).map_err(|e| {
                    format!("upstream `{name}`: \"{j}\" is not a valid JSONPath: {e}")
                })?,
                text: j,
            }),
            Some(_) => {
                return Err(format!(
                    "upstream `{name}`: a route key takes exactly one of `header`, `json` or `path`"
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
                let v = crate::spec::predicate::to_json(&j)?;
                for var in crate::spec::template::variables_in_json(&v)? {
                    let path_segment = var
                        .strip_prefix("path_")
                        .is_some_and(|p| r.path.split('/').filter_map(path_param).any(|n| n == p));
                    if var != "seq" && !var.starts_with("request_") && !path_segment {
                        return Err(format!(
                            "upstream `{name}`: response template `{{{{{var}}}}}` is unknown; use {{{{seq}}}}, {{{{request_FIELD}}}} or {{{{path_NAME}}}} for a {{NAME}} segment of the path"
                        ));
                    }
                }
                CannedBody::Json(v)
            }
            (None, Some(b)) => CannedBody::Text(b),
            (None, None) => CannedBody::Empty,
        };
        let store = match r.store.as_deref() {
            None => None,
            Some("read") => Some(Store::Read),
            Some("write") => Some(Store::Write),
            Some(other) => {
                return Err(format!(
                    "upstream `{name}`: store \"{other}\" is not \"read\" or \"write\""
                ))
            }
        };
        if r.read_on_arrival && store != Some(Store::Read) {
            return Err(format!(
                "upstream `{name}`: route {method} {} has `read_on_arrival`, which applies to `store = \"read\"` routes only",
                r.path
            ));
        }
        if store.is_some() {
            if key.is_none() {
                return Err(format!(
                    "upstream `{name}`: route {method} {} keeps documents per key, so `store` needs a `key`",
                    r.path
                ));
            }
            if !matches!(&body, CannedBody::Json(Value::Object(_))) {
                return Err(format!(
                    "upstream `{name}`: route {method} {} has `store`, so its response must be a JSON object (`response.json`)",
                    r.path
                ));
            }
        }
        let route = RouteSpec {
            method,
            path: r.path,
            key,
            store,
            read_on_arrival: r.read_on_arrival,
            behaviour: Behaviour {
                delay,
                fault,
                fault_times: r.fault_times,
                retry_after: None,
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
    let mut service_env = Vec::new();
    for (var, value) in raw.service_env {
        if !valid_env_name(&var) || var == env {
            return Err(format!(
                "upstream `{name}`: service_env variable \"{var}\" must be a valid environment variable name other than {env}"
            ));
        }
        service_env.push((var, value));
    }
    Ok(UpstreamSpec {
        name: name.to_string(),
        env,
        routes,
        service_env,
        kind,
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

    #[test]
    fn path_keys_and_stores_are_validated() {
        let route = |extra: &str| -> Result<UpstreamSpec, String> {
            let text =
                format!("[[route]]\nmethod = \"GET\"\npath = \"/profiles/{{user}}\"\n{extra}\n");
            parse("profiles", &toml::from_str(&text).unwrap())
        };
        let ok = route("key = { path = \"user\" }\nstore = \"read\"\nresponse.json = { id = \"{{path_user}}\" }")
            .unwrap();
        let r = &ok.routes[0];
        assert_eq!(r.path_params(), ["user"]);
        assert_eq!(
            r.matches("GET", "/profiles/amber"),
            Some(vec![("user".to_string(), "amber".to_string())])
        );
        assert_eq!(r.matches("GET", "/profiles/"), None);
        assert_eq!(r.matches("PATCH", "/profiles/amber"), None);
        assert!(route("key = { path = \"id\" }")
            .unwrap_err()
            .contains("names no {id} segment"));
        assert!(route("store = \"read\"\nresponse.json = { a = 1 }")
            .unwrap_err()
            .contains("needs a `key`"));
        assert!(route("key = { path = \"user\" }\nstore = \"read\"")
            .unwrap_err()
            .contains("must be a JSON object"));
        assert!(route("response.json = { id = \"{{path_id}}\" }")
            .unwrap_err()
            .contains("{{path_NAME}}"));
        assert!(!ok.routes[0].read_on_arrival);
        let on_arrival = route(
            "key = { path = \"user\" }\nstore = \"read\"\nread_on_arrival = true\nresponse.json = { id = \"{{path_user}}\" }",
        )
        .unwrap();
        assert!(on_arrival.routes[0].read_on_arrival);
        assert!(route("key = { path = \"user\" }\nstore = \"write\"\nread_on_arrival = true\nresponse.json = { id = \"{{path_user}}\" }")
            .unwrap_err()
            .contains("`store = \"read\"` routes only"));
        let env: toml::Value = toml::from_str(
            "service_env = { PAYMENTS_URL = \"x\" }\n[[route]]\nmethod = \"GET\"\npath = \"/x\"\n",
        )
        .unwrap();
        assert!(parse("payments", &env)
            .unwrap_err()
            .contains("other than PAYMENTS_URL"));
    }

    #[test]
    fn an_oidc_issuer_has_built_in_routes_and_an_audience() {
        let issuer = |text: &str| parse("issuer", &toml::from_str(text).unwrap());
        let ok = issuer(
            "kind = \"oidc-issuer\"\nenv = \"AUTH_ISSUER_URL\"\naudience = \"notes-api\"\nservice_env = { AUTH_AUDIENCE = \"notes-api\" }",
        )
        .unwrap();
        assert_eq!(
            ok.kind,
            UpstreamKind::OidcIssuer {
                audience: "notes-api".into()
            }
        );
        assert_eq!(ok.env, "AUTH_ISSUER_URL");
        let ids: Vec<String> = ok.routes.iter().map(RouteSpec::id).collect();
        assert_eq!(ids, ISSUER_ROUTES);
        assert!(issuer("kind = \"oidc-issuer\"")
            .unwrap_err()
            .contains("needs `audience`"));
        assert!(issuer("kind = \"oidc\"\naudience = \"a\"")
            .unwrap_err()
            .contains("kind \"oidc\" is unknown"));
        assert!(
            issuer("audience = \"a\"\n[[route]]\nmethod = \"GET\"\npath = \"/x\"")
                .unwrap_err()
                .contains("goes with kind")
        );
        assert!(issuer(
            "kind = \"oidc-issuer\"\naudience = \"a\"\n[[route]]\nmethod = \"GET\"\npath = \"/x\""
        )
        .unwrap_err()
        .contains("takes no"));
    }
}
