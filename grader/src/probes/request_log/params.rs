//! `request_log` parameters.
//!
//! ```toml
//! probe = "request_log"
//! [check.params]
//! wait = "5s"                    # how long the lines may take to appear
//! setup = [ ...requests ]        # sent first (untagged), judged, with captures
//! [[check.params.traffic]]       # see probes/traffic.rs; each request is tagged
//! ```

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, duration_or, ProbeRequest};
use crate::probes::traffic::{self, parse_setup, parse_traffic, TrafficEntry};

const DEFAULT_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RequestLog {
    pub setup: Vec<ProbeRequest>,
    pub traffic: Vec<TrafficEntry>,
    pub wait: Duration,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RequestLogParams")]
pub struct Raw {
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    setup: Vec<toml::Value>,
    #[schemars(with = "Vec<crate::probes::traffic::RawTrafficEntry>")]
    traffic: Vec<toml::Value>,
    wait: Option<String>,
}

pub fn parse(params: toml::Value) -> Result<RequestLog, String> {
    let raw: Raw = de("params of `request_log`", params)?;
    let setup = parse_setup("request_log", raw.setup)?;
    let traffic = parse_traffic("request_log", raw.traffic)?;
    for entry in &traffic {
        if entry.request.spec.headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("x-request-id") || k.eq_ignore_ascii_case("traceparent")
        }) {
            return Err("params.traffic: the probe sets X-Request-Id and traceparent on every request itself".into());
        }
    }
    let wait = duration_or("params.wait", raw.wait.as_deref(), DEFAULT_WAIT, MAX_WAIT)?;
    if wait.is_zero() {
        return Err("params.wait is above 0".into());
    }
    Ok(RequestLog {
        setup,
        traffic,
        wait,
    })
}

impl RequestLog {
    pub fn template_strings(&self) -> Vec<String> {
        traffic::template_strings(&self.setup, &self.traffic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<RequestLog, String> {
        parse(toml::from_str(text).unwrap())
    }

    const TRAFFIC: &str = "[[traffic]]\nroute = \"/quotes\"\nrequest = { method = \"GET\", path = \"/quotes\", status = 200 }";

    #[test]
    fn parses_and_refuses_its_own_headers() {
        assert_eq!(parse_text(TRAFFIC).unwrap().wait, DEFAULT_WAIT);
        let own = TRAFFIC.replace(
            "status = 200",
            "headers = { X-Request-Id = \"a\" }, status = 200",
        );
        assert!(parse_text(&own).unwrap_err().contains("sets X-Request-Id"));
        assert!(parse_text(&format!("wait = \"20s\"\n{TRAFFIC}"))
            .unwrap_err()
            .contains("at most 10s"));
    }
}
