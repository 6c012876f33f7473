//! `trace_context` parameters.
//!
//! ```toml
//! probe = "trace_context"
//! [check.params]
//! mode = "propagate"           # propagate | start | invalid
//! rounds = 3                   # requests, each judged (invalid: one malformed form each)
//! request = { method = "GET", path = "/quotes?destination={{dest}}&weight_grams={{weight}}", status = 200 }
//! upstream = { name = "carrier", route = "POST /rates" }
//! ```

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, request, template_strings, ProbeRequest};

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A valid `traceparent` in: the upstream gets the same trace id and a new parent id.
    Propagate,
    /// None in: the upstream gets a valid one, a new trace id per request.
    Start,
    /// A malformed one in: treated as absent (a new trace), never forwarded.
    Invalid,
}

/// The malformed forms `invalid` sends, one per round.
pub const MALFORMED_FORMS: usize = 5;

#[derive(Debug, Clone)]
pub struct TraceContext {
    pub mode: Mode,
    pub rounds: usize,
    pub request: ProbeRequest,
    /// The upstream's name and route (`POST /rates`) whose calls carry the header.
    pub upstream: String,
    pub route: String,
}

/// An upstream's name and one of its routes: `{ name = "carrier", route = "POST /rates" }`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamRoute {
    name: String,
    route: String,
}

impl RawUpstreamRoute {
    pub fn into_parts(self) -> (String, String) {
        (self.name, self.route)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TraceContextParams")]
pub struct Raw {
    mode: Mode,
    rounds: Option<usize>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    upstream: RawUpstreamRoute,
}

pub fn parse(params: toml::Value) -> Result<TraceContext, String> {
    let raw: Raw = de("params of `trace_context`", params)?;
    let rounds = raw.rounds.unwrap_or(match raw.mode {
        Mode::Invalid => MALFORMED_FORMS,
        _ => 3,
    });
    if !(1..=20).contains(&rounds) {
        return Err("params.rounds is 1 to 20".into());
    }
    if raw.mode == Mode::Start && rounds < 2 {
        return Err(
            "mode = \"start\" needs at least 2 rounds: a new trace per request is judged across requests"
                .into(),
        );
    }
    let request = request("trace_context", 0, raw.request)?;
    if request
        .spec
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
    {
        return Err("params.request sets traceparent itself; the probe sets it per mode".into());
    }
    Ok(TraceContext {
        mode: raw.mode,
        rounds,
        request,
        upstream: raw.upstream.name,
        route: raw.upstream.route,
    })
}

impl TraceContext {
    pub fn template_strings(&self) -> Vec<String> {
        template_strings(std::slice::from_ref(&self.request), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<TraceContext, String> {
        parse(toml::from_str(text).unwrap())
    }

    const REST: &str = "request = { method = \"GET\", path = \"/quotes\", status = 200 }\nupstream = { name = \"carrier\", route = \"POST /rates\" }";

    #[test]
    fn modes_parse_with_their_rounds() {
        let p = parse_text(&format!("mode = \"invalid\"\n{REST}")).unwrap();
        assert_eq!((p.mode, p.rounds), (Mode::Invalid, MALFORMED_FORMS));
        let p = parse_text(&format!("mode = \"propagate\"\n{REST}")).unwrap();
        assert_eq!((p.rounds, p.route.as_str()), (3, "POST /rates"));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| parse_text(text).unwrap_err();
        assert!(err(&format!("mode = \"start\"\nrounds = 1\n{REST}")).contains("at least 2"));
        assert!(err(&format!("mode = \"start\"\nrounds = 50\n{REST}")).contains("1 to 20"));
        assert!(err(&format!("mode = \"relay\"\n{REST}")).contains("unknown variant"));
        let own = REST.replace(
            "status = 200",
            "headers = { traceparent = \"x\" }, status = 200",
        );
        assert!(err(&format!("mode = \"start\"\n{own}")).contains("sets traceparent itself"));
    }
}
