//! `concurrent` parameters: the requests fired together, and what the responses and the upstream
//! must show.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, query, request, upstream, ProbeRequest, UpstreamParams};
use crate::spec::JsonQuery;

/// `concurrent`: fires the requests together (or staggered by `at`), then checks each response,
/// that no response is a 5xx, that every 2xx names the same resource, and the upstream counts.
#[derive(Debug, Clone)]
pub struct Concurrent {
    /// Sent in order before each round's burst, each judged (and captures taken), e.g. the two
    /// accounts a burst of transfers needs.
    pub setup: Vec<ProbeRequest>,
    pub requests: Vec<ProbeRequest>,
    /// JSONPath of the resource's identity in a response body (default `$.id`).
    pub identity: JsonQuery,
    /// Every 2xx response must carry the same identity.
    pub same_resource: bool,
    pub upstream: Option<UpstreamParams>,
    /// How many times the burst is repeated, each time with fresh data (a race that shows one
    /// time in three still fails the check).
    pub rounds: u32,
    /// Open every connection and send one request on it before the burst, then release all
    /// requests together; off only to test what a cold burst does.
    pub warm: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConcurrentParams")]
pub struct RawConcurrent {
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    setup: Vec<toml::Value>,
    #[schemars(with = "Option<crate::probes::request::RawRequest>")]
    request: Option<toml::Value>,
    count: Option<usize>,
    #[schemars(with = "Option<Vec<crate::probes::request::RawRequest>>")]
    requests: Option<Vec<toml::Value>>,
    identity: Option<String>,
    #[serde(default = "yes")]
    same_resource: bool,
    #[schemars(with = "Option<crate::probes::request::RawUpstream>")]
    upstream: Option<toml::Value>,
    rounds: Option<u32>,
    #[serde(default = "yes")]
    warm: bool,
}

fn yes() -> bool {
    true
}

const MAX_CONCURRENT: usize = 500;
/// Rounds when the file does not say: enough that a race with a narrow window is still caught.
pub const DEFAULT_ROUNDS: u32 = 3;

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
    let rounds = raw.rounds.unwrap_or(DEFAULT_ROUNDS);
    if !(1..=20).contains(&rounds) {
        return Err("`rounds` must be from 1 to 20".into());
    }
    let upstream = raw.upstream.map(upstream).transpose()?;
    if let Some(u) = &upstream {
        if rounds > 1 && u.key.is_none() && (u.calls.is_some() || u.max_calls.is_some()) {
            return Err(
                "params.upstream counts calls without a `key`, so later rounds would count the earlier rounds' calls too: give it a `key` (rendered from this round's data) or set `rounds = 1`"
                    .into(),
            );
        }
    }
    let setup = raw
        .setup
        .into_iter()
        .enumerate()
        .map(|(i, v)| request("concurrent", i, v))
        .collect::<Result<Vec<_>, _>>()?;
    if setup
        .iter()
        .any(|r| !r.at.is_zero() || r.after_upstream_call)
    {
        return Err(
            "`at` and `after_upstream_call` go with the burst's requests, not with `setup`".into(),
        );
    }
    if requests.iter().any(|r| r.after_upstream_call) {
        match &upstream {
            None => {
                return Err(
                    "`after_upstream_call` waits for a call to the check's upstream: add `params.upstream` (name, route and key)"
                        .into(),
                )
            }
            Some(u) if u.key.is_none() => {
                return Err(
                    "`after_upstream_call` waits for this round's call: give `params.upstream` a `key` rendered from this round's data"
                        .into(),
                )
            }
            Some(_) => {}
        }
        if requests.iter().all(|r| r.after_upstream_call) {
            return Err(
                "every request has `after_upstream_call`, so none would make the call they wait for: leave it off the request that starts the timeline"
                    .into(),
            );
        }
    }
    Ok(Concurrent {
        setup,
        requests,
        identity: query(raw.identity.as_deref().unwrap_or("$.id"))?,
        same_resource: raw.same_resource,
        upstream,
        rounds,
        warm: raw.warm,
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

    #[test]
    fn rounds_default_to_several_and_need_a_key_to_count_calls() {
        let p = parse_concurrent(
            toml::from_str(r#"request = { method = "GET", path = "/x" }"#).unwrap(),
        )
        .unwrap();
        assert_eq!((p.rounds, p.warm), (DEFAULT_ROUNDS, true));
        let unkeyed = parse_concurrent(
            toml::from_str(
                r#"
                request = { method = "GET", path = "/x" }
                upstream = { name = "p", route = "GET /x", max_calls = 1 }
                "#,
            )
            .unwrap(),
        );
        assert!(unkeyed.unwrap_err().contains("give it a `key`"));
        let one_round = parse_concurrent(
            toml::from_str(
                r#"
                rounds = 1
                request = { method = "GET", path = "/x" }
                upstream = { name = "p", route = "GET /x", max_calls = 1 }
                "#,
            )
            .unwrap(),
        );
        assert!(one_round.is_ok());
    }

    #[test]
    fn after_upstream_call_needs_a_keyed_upstream_and_a_request_that_starts_the_timeline() {
        let parse = |text: &str| parse_concurrent(toml::from_str(text).unwrap());
        let first = r#"[[requests]]
            method = "POST"
            path = "/pay"
        "#;
        let waiting = r#"[[requests]]
            method = "POST"
            path = "/pay"
            after_upstream_call = true
        "#;
        let keyed = r#"[upstream]
            name = "p"
            route = "POST /charges"
            key = "{{order}}"
        "#;
        let unkeyed = "[upstream]\nname = \"p\"\nroute = \"POST /charges\"\n";
        assert!(parse(&format!("{first}{waiting}"))
            .unwrap_err()
            .contains("add `params.upstream`"));
        assert!(parse(&format!("rounds = 1\n{unkeyed}{first}{waiting}"))
            .unwrap_err()
            .contains("give `params.upstream` a `key`"));
        assert!(parse(&format!("{keyed}{waiting}{waiting}"))
            .unwrap_err()
            .contains("leave it off the request that starts the timeline"));
        let p = parse(&format!("{keyed}{first}{waiting}")).unwrap();
        assert_eq!(
            p.requests
                .iter()
                .map(|r| r.after_upstream_call)
                .collect::<Vec<_>>(),
            [false, true]
        );
        let in_setup = format!(
            "{keyed}{first}{waiting}[[setup]]\nmethod = \"POST\"\npath = \"/a\"\nafter_upstream_call = true\n"
        );
        assert!(parse(&in_setup).unwrap_err().contains("not with `setup`"));
    }
}
