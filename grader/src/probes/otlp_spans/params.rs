//! `otlp_spans` parameters.
//!
//! ```toml
//! probe = "otlp_spans"
//! [check.params]
//! collector = "otel"                                  # a kind = "otlp-collector" upstream
//! request = { method = "GET", path = "/quotes?destination={{dest}}&weight_grams={{weight}}", status = 200 }
//! upstream = { name = "carrier", route = "POST /rates" }
//! server_route = "/quotes"                            # the server span's http.route
//! client_method = "POST"                              # the client span's http.request.method
//! wait = "10s"                                        # how long the spans may take to arrive
//! ```

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, duration_or, request, template_strings, ProbeRequest};

const DEFAULT_WAIT: Duration = Duration::from_secs(10);
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct OtlpSpans {
    pub collector: String,
    pub request: ProbeRequest,
    pub upstream: String,
    pub route: String,
    pub server_route: String,
    pub client_method: String,
    pub wait: Duration,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OtlpSpansParams")]
pub struct Raw {
    collector: String,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    upstream: crate::probes::trace_context::params::RawUpstreamRoute,
    server_route: String,
    client_method: String,
    wait: Option<String>,
}

pub fn parse(params: toml::Value) -> Result<OtlpSpans, String> {
    let raw: Raw = de("params of `otlp_spans`", params)?;
    let request = request("otlp_spans", 0, raw.request)?;
    if request
        .spec
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
    {
        return Err("params.request sets traceparent itself; the probe sends a known one".into());
    }
    let wait = duration_or("params.wait", raw.wait.as_deref(), DEFAULT_WAIT, MAX_WAIT)?;
    if wait.is_zero() {
        return Err("params.wait is above 0".into());
    }
    if !raw.server_route.starts_with('/') {
        return Err(format!(
            "params.server_route \"{}\" is a route template such as \"/quotes\"",
            raw.server_route
        ));
    }
    let (upstream, route) = raw.upstream.into_parts();
    Ok(OtlpSpans {
        collector: raw.collector,
        request,
        upstream,
        route,
        server_route: raw.server_route,
        client_method: raw.client_method.to_ascii_uppercase(),
        wait,
    })
}

impl OtlpSpans {
    pub fn template_strings(&self) -> Vec<String> {
        template_strings(std::slice::from_ref(&self.request), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<OtlpSpans, String> {
        parse(toml::from_str(text).unwrap())
    }

    const BASE: &str = "collector = \"otel\"\nrequest = { method = \"GET\", path = \"/quotes\", status = 200 }\nupstream = { name = \"carrier\", route = \"POST /rates\" }\nserver_route = \"/quotes\"\nclient_method = \"post\"";

    #[test]
    fn parses_with_a_default_wait() {
        let p = parse_text(BASE).unwrap();
        assert_eq!(p.wait, DEFAULT_WAIT);
        assert_eq!(p.client_method, "POST");
        assert_eq!(p.route, "POST /rates");
    }

    #[test]
    fn mistakes_are_named() {
        let err = |extra: &str| parse_text(&format!("{BASE}\n{extra}")).unwrap_err();
        assert!(err("wait = \"1m\"").contains("at most 30s"));
        assert!(err("wait = \"0s\"").contains("above 0"));
        let bad_route = BASE.replace("server_route = \"/quotes\"", "server_route = \"quotes\"");
        assert!(parse_text(&bad_route)
            .unwrap_err()
            .contains("route template"));
    }
}
