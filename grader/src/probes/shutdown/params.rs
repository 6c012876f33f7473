//! `shutdown` parameters: the slow route, the requests in flight, the request after the signal,
//! and the time the service has to exit.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{copies, de, duration, request, ProbeRequest};

/// The variable a request in flight is rendered with: 1 for the first of `count`, 2 for the
/// second, ... (so each can ask about its own parcel).
pub const BURST_INDEX: &str = "burst_index";

#[derive(Debug, Clone)]
pub struct Shutdown {
    /// `[upstreams.NAME]`.
    pub upstream: String,
    /// `POST /rates`: the route the requests in flight wait on.
    pub route: String,
    /// How long the route takes to answer while the signal arrives.
    pub delay: Duration,
    /// `count` copies of one request (each rendered with its `burst_index`), released together;
    /// the signal is sent once the route has that many calls in flight.
    pub requests: Vec<ProbeRequest>,
    /// Sent on a new connection this long after the signal (`at`); it must be refused, closed
    /// unanswered, or answered `503`.
    pub after_signal: ProbeRequest,
    /// Every process of the service must be gone this long after the signal.
    pub exits_within: Duration,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ShutdownParams")]
pub struct Raw {
    upstream: String,
    route: String,
    delay: String,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    count: Option<u32>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    after_signal: toml::Value,
    exits_within: String,
}

const MAX_IN_FLIGHT: u32 = 50;

pub fn parse(params: toml::Value) -> Result<Shutdown, String> {
    let raw: Raw = de("params of `shutdown`", params)?;
    let count = raw.count.unwrap_or(1);
    if !(1..=MAX_IN_FLIGHT).contains(&count) {
        return Err(format!("`count` must be from 1 to {MAX_IN_FLIGHT}"));
    }
    let delay = duration("delay", &raw.delay)?;
    if delay.is_zero() {
        return Err("`delay` must be above 0: the requests must still be waiting on the upstream when the signal arrives".into());
    }
    let one = request("shutdown", 0, raw.request)?;
    let requests = copies(&one, count);
    let mut after_signal = request("shutdown", 1, raw.after_signal)?;
    if after_signal.name.starts_with("request ") {
        after_signal.name = "a new request after the signal".into();
    }
    Ok(Shutdown {
        upstream: raw.upstream,
        route: raw.route,
        delay,
        requests,
        after_signal,
        exits_within: duration("exits_within", &raw.exits_within)?,
    })
}

impl Shutdown {
    /// Every template the probe renders, for the static check of variables.
    pub fn template_strings(&self) -> Vec<String> {
        let all = [self.requests[0].clone(), self.after_signal.clone()];
        crate::probes::request::template_strings_except(&all, &[BURST_INDEX])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Shutdown, String> {
        parse(toml::from_str(text).unwrap())
    }

    const HEAD: &str = "upstream = \"carrier\"\nroute = \"POST /rates\"\nexits_within = \"5s\"\nafter_signal = { method = \"GET\", path = \"/healthz\", at = \"200ms\" }\n";

    #[test]
    fn the_requests_in_flight_and_the_bounds_parse() {
        let p = parse_text(&format!(
            "{HEAD}delay = \"800ms\"\ncount = 3\nrequest = {{ method = \"GET\", path = \"/x?n={{{{burst_index}}}}\", status = 200 }}\n"
        ))
        .unwrap();
        assert_eq!(p.requests.len(), 3);
        assert_eq!(p.delay, Duration::from_millis(800));
        assert_eq!(p.exits_within, Duration::from_secs(5));
        assert_eq!(p.after_signal.at, Duration::from_millis(200));
        assert_eq!(p.after_signal.name, "a new request after the signal");
    }

    #[test]
    fn mistakes_are_named() {
        let no_delay = parse_text(&format!(
            "{HEAD}delay = \"0s\"\nrequest = {{ method = \"GET\", path = \"/x\" }}\n"
        ));
        assert!(no_delay.unwrap_err().contains("`delay` must be above 0"));
        let many = parse_text(&format!(
            "{HEAD}delay = \"1s\"\ncount = 51\nrequest = {{ method = \"GET\", path = \"/x\" }}\n"
        ));
        assert!(many.unwrap_err().contains("from 1 to 50"));
    }
}
