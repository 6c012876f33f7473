//! `concurrent` parameters: the requests fired together, and what the responses and the upstream
//! must show.

use serde::Deserialize;

use crate::probes::request::{de, query, request, upstream, ProbeRequest, UpstreamParams};
use crate::spec::JsonQuery;

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

fn yes() -> bool {
    true
}

const MAX_CONCURRENT: usize = 500;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_belongs_to_upstream_calls_not_concurrent() {
        let params: toml::Value = toml::from_str(
            r#"
            count = 2
            request = { method = "GET", path = "/x", wait = "1s" }
            "#,
        )
        .unwrap();
        assert!(parse_concurrent(params)
            .unwrap_err()
            .contains("`concurrent` staggers with `at`"));
    }
}
