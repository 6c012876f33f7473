//! `metrics` parameters.
//!
//! ```toml
//! probe = "metrics"
//! [check.params]
//! judge = "counter"              # exposition | counter | histogram | cardinality
//! path = "/metrics"              # default
//! setup = [ ...requests ]        # sent first (a shipment to read), judged, with captures
//! max_new_series = 20            # cardinality: new series allowed after the traffic
//! [[check.params.traffic]]       # see probes/traffic.rs
//! ```

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, ProbeRequest};
use crate::probes::traffic::{self, parse_setup, parse_traffic, TrafficEntry};

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Judge {
    /// Both scrapes are the text format, with the request metrics under a known naming.
    Exposition,
    /// The request counter grew by exactly the requests sent, per method, route and status.
    Counter,
    /// The latency histogram is consistent, counted every request, and measures seconds.
    Histogram,
    /// No label holds an id the grader sent, and the traffic made few new series.
    Cardinality,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub judge: Judge,
    pub path: String,
    pub setup: Vec<ProbeRequest>,
    pub traffic: Vec<TrafficEntry>,
    pub max_new_series: usize,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MetricsParams")]
pub struct Raw {
    judge: Judge,
    path: Option<String>,
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    setup: Vec<toml::Value>,
    #[schemars(with = "Vec<crate::probes::traffic::RawTrafficEntry>")]
    traffic: Vec<toml::Value>,
    max_new_series: Option<usize>,
}

const DEFAULT_MAX_NEW_SERIES: usize = 20;

pub fn parse(params: toml::Value) -> Result<Metrics, String> {
    let raw: Raw = de("params of `metrics`", params)?;
    let setup = parse_setup("metrics", raw.setup)?;
    let traffic = parse_traffic("metrics", raw.traffic)?;
    let path = raw.path.unwrap_or_else(|| "/metrics".into());
    if !path.starts_with('/') {
        return Err(format!("params.path \"{path}\" must start with /"));
    }
    if raw.max_new_series.is_some() && raw.judge != Judge::Cardinality {
        return Err("params.max_new_series goes with judge = \"cardinality\"".into());
    }
    if raw.judge == Judge::Cardinality && !traffic.iter().any(|t| t.fresh) {
        return Err(
            "judge = \"cardinality\" needs a `fresh` traffic entry: many requests, each with a new id"
                .into(),
        );
    }
    Ok(Metrics {
        judge: raw.judge,
        path,
        setup,
        traffic,
        max_new_series: raw.max_new_series.unwrap_or(DEFAULT_MAX_NEW_SERIES),
    })
}

impl Metrics {
    pub fn template_strings(&self) -> Vec<String> {
        traffic::template_strings(&self.setup, &self.traffic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Metrics, String> {
        parse(toml::from_str(text).unwrap())
    }

    const TRAFFIC: &str = r#"
[[traffic]]
route = "/shipments/{id}"
times = 3
fresh = true
request = { method = "GET", path = "/shipments/{{id}}", status = 404 }
"#;

    #[test]
    fn a_judge_with_traffic_parses() {
        let p = parse_text(&format!("judge = \"cardinality\"\n{TRAFFIC}")).unwrap();
        assert_eq!(p.judge, Judge::Cardinality);
        assert_eq!(p.path, "/metrics");
        assert_eq!(p.traffic[0].times, 3);
        assert!(p
            .template_strings()
            .contains(&"/shipments/{{id}}".to_string()));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| parse_text(text).unwrap_err();
        assert!(err("judge = \"counter\"\ntraffic = []").contains("at least one"));
        assert!(err(&format!("judge = \"count\"\n{TRAFFIC}")).contains("unknown variant"));
        assert!(err(&format!(
            "judge = \"counter\"\nmax_new_series = 3\n{TRAFFIC}"
        ))
        .contains("goes with judge"));
        assert!(err(&format!(
            "judge = \"counter\"\npath = \"metrics\"\n{TRAFFIC}"
        ))
        .contains("must start with /"));
        let no_fresh = TRAFFIC.replace("fresh = true\n", "");
        assert!(err(&format!("judge = \"cardinality\"\n{no_fresh}")).contains("needs a `fresh`"));
        let zero = TRAFFIC.replace("times = 3", "times = 0");
        assert!(err(&format!("judge = \"counter\"\n{zero}")).contains("times is 1 to 500"));
    }
}
