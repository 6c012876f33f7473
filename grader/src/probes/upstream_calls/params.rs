//! `upstream_calls` parameters: requests sent in order, and the calls the upstream must see.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, query, request, upstream, ProbeRequest, UpstreamParams};
use crate::spec::JsonQuery;

/// `upstream_calls`: sends the requests in order (with a fault or latency set on the upstream
/// for this check), checks each response, then counts the upstream's calls.
#[derive(Debug, Clone)]
pub struct UpstreamCalls {
    pub requests: Vec<ProbeRequest>,
    pub identity: JsonQuery,
    pub upstream: UpstreamParams,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpstreamCallsParams")]
pub struct RawUpstreamCalls {
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    requests: Vec<toml::Value>,
    identity: Option<String>,
    #[schemars(with = "crate::probes::request::RawUpstream")]
    upstream: toml::Value,
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
    if upstream.calls.is_none() && upstream.max_calls.is_none() && upstream.body_json.is_empty() {
        return Err(
            "params.upstream needs `calls` (the expected count), `max_calls` or `body_json`".into(),
        );
    }
    Ok(UpstreamCalls {
        requests,
        identity: query(raw.identity.as_deref().unwrap_or("$.id"))?,
        upstream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn params(text: &str) -> toml::Value {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn wait_latency_share_and_max_calls_parse_for_upstream_calls_only() {
        let p = parse_upstream_calls(params(
            r#"
            upstream = { name = "profiles", route = "GET /profiles/{user}", key = "{{user}}", max_calls = 2 }
            [[requests]]
            method = "GET"
            path = "/profiles/{{user}}"
            [[requests]]
            method = "GET"
            path = "/profiles/{{user}}"
            wait = "3s"
            under_upstream_delay = 0.5
            "#,
        ))
        .unwrap();
        assert_eq!(p.upstream.max_calls, Some(2));
        assert_eq!(p.requests[0].wait, Duration::ZERO);
        assert_eq!(p.requests[1].wait, Duration::from_secs(3));
        assert_eq!(p.requests[1].under_upstream_delay, Some(0.5));

        let share = parse_upstream_calls(params(
            r#"
            upstream = { name = "p", route = "GET /x", calls = 1 }
            requests = [{ method = "GET", path = "/x", under_upstream_delay = 2.0 }]
            "#,
        ));
        assert!(share.unwrap_err().contains("at most 1"));
        let both = parse_upstream_calls(params(
            r#"
            upstream = { name = "p", route = "GET /x", calls = 1, max_calls = 2 }
            requests = [{ method = "GET", path = "/x" }]
            "#,
        ));
        assert!(both.unwrap_err().contains("not both"));
    }
}
