//! `upstream_calls`: sends requests in order, with a fault or latency set on a mock upstream for
//! this check, checks each response, then counts what reached the upstream ("2 calls to payments
//! POST /charges for order_id ord-19, expected exactly 1").
//!
//! The helpers here (applying upstream behaviour, judging a response, counting calls) are shared
//! with `concurrent`.

use std::sync::Arc;

use serde_json::Value;

use super::params::UpstreamCalls;
use crate::engine::assert::{self, describe_json, Actual};
use crate::engine::http::Response;
use crate::engine::step::{apply_captures, build_request};
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::request::{ProbeRequest, UpstreamParams};
use crate::spec::template;
use crate::spec::JsonQuery;
use crate::upstream::{Fault, Upstream};

/// Calls listed as evidence; more are summarised in one line.
const MAX_EVIDENCE: usize = 5;

pub async fn run(p: &UpstreamCalls, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let upstream = apply_behaviour(ctx, &p.upstream)?;
    let mut seen: Vec<Seen> = Vec::new();
    for r in &p.requests {
        if !r.wait.is_zero() {
            tokio::time::sleep(r.wait).await;
        }
        let req = build_request(ctx, &r.spec)?;
        let summary = format!("{} {}", req.method, req.url.path());
        let started = std::time::Instant::now();
        let resp = ctx.send(&r.name, req).await?;
        let took = started.elapsed();
        if let Some(info) = judge(ctx, r, &summary, &resp, &seen, &p.identity)? {
            return Err(Failure::Fail(info));
        }
        apply_captures(ctx, &r.name, &r.captures, &resp)?;
        if let Some(share) = r.under_upstream_delay {
            let fastest = fastest_of_tries(ctx, p, r, &summary, &seen, took, |took| {
                super::latency::check(&p.upstream, &upstream, &r.name, &summary, share, took)
                    .is_ok()
            })
            .await?;
            let name = if fastest.1 > 1 {
                format!("{} (the fastest of {} tries)", r.name, fastest.1)
            } else {
                r.name.clone()
            };
            super::latency::check(&p.upstream, &upstream, &name, &summary, share, fastest.0)?;
        }
        if r.waits_for_upstream {
            super::latency::check_waited(&p.upstream, &upstream, &r.name, &summary, took)?;
        }
        seen.push(Seen::of(&resp, &p.identity));
    }
    check_calls(ctx, &p.upstream, &upstream)
}

/// How many times a safe request whose answer must beat the upstream is sent before its
/// slowness counts.
const LATENCY_TRIES: u32 = 3;

/// A response slower than its bound on a loaded machine proves nothing, while a single fast one
/// proves the service did not wait for the upstream (no answer can beat the mock's own sleep).
/// So a safe request (`GET`, `HEAD`) that was too slow is sent again, each answer judged as the
/// first, up to [`LATENCY_TRIES`] in all; returns the fastest time and the number of tries. An
/// unsafe request is never repeated: its one time counts.
async fn fastest_of_tries(
    ctx: &mut CheckContext<'_>,
    p: &UpstreamCalls,
    r: &ProbeRequest,
    summary: &str,
    seen: &[Seen],
    first: std::time::Duration,
    fast_enough: impl Fn(std::time::Duration) -> bool,
) -> Result<(std::time::Duration, u32), Failure> {
    let safe = matches!(r.spec.method.as_str(), "GET" | "HEAD");
    let (mut fastest, mut tries) = (first, 1);
    while safe && !fast_enough(fastest) && tries < LATENCY_TRIES {
        let req = build_request(ctx, &r.spec)?;
        let started = std::time::Instant::now();
        let resp = ctx.send(&r.name, req).await?;
        let took = started.elapsed();
        tries += 1;
        if let Some(info) = judge(ctx, r, summary, &resp, seen, &p.identity)? {
            return Err(Failure::Fail(info));
        }
        fastest = fastest.min(took);
    }
    Ok((fastest, tries))
}

/// What an earlier response showed, for `same_as`.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub status: u16,
    pub identity: Option<Value>,
}

impl Seen {
    pub fn of(resp: &Response, identity: &JsonQuery) -> Seen {
        Seen {
            status: resp.status,
            identity: identity_of(resp, identity),
        }
    }
}

pub(crate) fn identity_of(resp: &Response, identity: &JsonQuery) -> Option<Value> {
    let doc: Value = serde_json::from_slice(&resp.body).ok()?;
    identity
        .path
        .query(&doc)
        .at_most_one()
        .ok()
        .flatten()
        .cloned()
}

/// Sets the latency or fault the probe asks for on the upstream route, for this check only (the
/// engine resets every route before the next check). Unknown upstreams and routes are the
/// exercise's error.
pub(crate) fn apply_behaviour(
    ctx: &CheckContext<'_>,
    u: &UpstreamParams,
) -> Result<Arc<Upstream>, Failure> {
    let upstream = ctx.upstreams.get(&u.name).map_err(Failure::Error)?.clone();
    let mut behaviour = upstream.behaviour(&u.route).map_err(Failure::Error)?;
    if let Some(d) = u.delay {
        behaviour.delay = d;
    }
    if let Some(f) = u.fault {
        behaviour.fault = Some(f);
        behaviour.fault_times = u.fault_times;
    }
    upstream
        .set_behaviour(&u.route, behaviour)
        .map_err(Failure::Error)?;
    Ok(upstream)
}

/// Gives `route` this fault on every call from now until the check ends: a check that provokes
/// each kind of failure in turn (a status, then a reset connection, ...) calls it between them.
pub(crate) fn set_fault(upstream: &Upstream, route: &str, fault: Fault) -> Result<(), Failure> {
    let mut behaviour = upstream.behaviour(route).map_err(Failure::Error)?;
    behaviour.fault = Some(fault);
    behaviour.fault_times = None;
    upstream
        .set_behaviour(route, behaviour)
        .map_err(Failure::Error)
}

/// Slows `route` of the upstream `name` to `delay`, for this check only (as
/// [`apply_behaviour`]); the probes that need a call held in flight use it.
pub(crate) fn delay_route(
    ctx: &CheckContext<'_>,
    name: &str,
    route: &str,
    delay: std::time::Duration,
) -> Result<Arc<Upstream>, Failure> {
    let upstream = ctx.upstreams.get(name).map_err(Failure::Error)?.clone();
    let mut behaviour = upstream.behaviour(route).map_err(Failure::Error)?;
    behaviour.delay = delay;
    upstream
        .set_behaviour(route, behaviour)
        .map_err(Failure::Error)?;
    Ok(upstream)
}

/// The English plural of a noun phrase's last word: "charge" → "charges", "key-set fetch" →
/// "key-set fetches", "retry" → "retries".
pub(crate) fn plural(noun: &str) -> String {
    let sibilant = ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|end| noun.ends_with(end));
    let consonant_y =
        noun.ends_with('y') && !noun[..noun.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if sibilant {
        format!("{noun}es")
    } else if consonant_y {
        format!("{}ies", &noun[..noun.len() - 1])
    } else {
        format!("{noun}s")
    }
}

/// Sends `requests` in order, each judged as it expects (replays against the earlier responses):
/// the set-up requests a probe makes before it measures (sign-ups, say). The first response that
/// is not as expected fails the check.
pub(crate) async fn send_in_order(
    ctx: &mut CheckContext<'_>,
    requests: &[ProbeRequest],
) -> Result<Vec<Seen>, Failure> {
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;
    let mut seen: Vec<Seen> = Vec::new();
    for r in requests {
        let req = build_request(ctx, &r.spec)?;
        let summary = format!("{} {}", req.method, req.url.path());
        let resp = ctx.send(&r.name, req).await?;
        if let Some(info) = judge(ctx, r, &summary, &resp, &seen, &identity)? {
            return Err(Failure::Fail(info));
        }
        apply_captures(ctx, &r.name, &r.captures, &resp)?;
        seen.push(Seen::of(&resp, &identity));
    }
    Ok(seen)
}

/// Checks one response: its expectations (via `engine::assert`) and, for a replay, that it repeats
/// the status and resource of the earlier response it names. `Ok(None)` means it is as expected.
pub(crate) fn judge(
    ctx: &CheckContext<'_>,
    r: &ProbeRequest,
    summary: &str,
    resp: &Response,
    seen: &[Seen],
    identity: &JsonQuery,
) -> Result<Option<FailInfo>, Failure> {
    let mismatches = assert::check_expect(&r.expect, resp, &ctx.scope).map_err(Failure::Error)?;
    if let Some(m) = mismatches.first() {
        let more = match mismatches.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Ok(Some(FailInfo {
            message: format!(
                "{} ({summary}): expected {} {}, got {}{more}",
                r.name, m.subject, m.expected, m.actual
            ),
            expected: assert::mismatch_lines(&mismatches, |m| &m.expected),
            actual: assert::mismatch_lines(&mismatches, |m| &m.actual),
            ..Default::default()
        }));
    }
    let Some(n) = r.same_as else { return Ok(None) };
    let Some(first) = seen.get(n - 1) else {
        return Ok(None);
    };
    let now = Seen::of(resp, identity);
    let show = |v: &Option<Value>| v.as_ref().map_or("none".into(), describe_json);
    if now.status != first.status || now.identity != first.identity || now.identity.is_none() {
        return Ok(Some(FailInfo {
            message: format!(
                "{} ({summary}) is a replay of request {n}, but answered {} with {} {} instead of {} with {}",
                r.name,
                now.status,
                identity.text,
                show(&now.identity),
                first.status,
                show(&first.identity)
            ),
            expected: format!(
                "the stored response of request {n}: status {}, {} {}",
                first.status,
                identity.text,
                show(&first.identity)
            ),
            actual: format!(
                "status {}, {} {}",
                now.status,
                identity.text,
                show(&now.identity)
            ),
            ..Default::default()
        }));
    }
    Ok(None)
}

/// Counts the upstream's calls (for the key, when given) and checks their bodies.
pub(crate) fn check_calls(
    ctx: &CheckContext<'_>,
    u: &UpstreamParams,
    upstream: &Upstream,
) -> Result<(), Failure> {
    let key = u
        .key
        .as_deref()
        .map(|k| template::render(k, &ctx.scope))
        .transpose()
        .map_err(Failure::Error)?;
    let calls = upstream.calls(&u.route, key.as_deref());
    let whose = match (&key, upstream.key_name(&u.route)) {
        (Some(k), Some(name)) => format!(" for {name} {k}"),
        (Some(k), None) => format!(" for key {k}"),
        (None, _) => String::new(),
    };
    let what = format!("{} ({})", u.name, u.route);
    let noun = |n: usize| {
        if n == 1 {
            u.noun.clone()
        } else {
            plural(&u.noun)
        }
    };
    if !calls.counted {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "the service called {} with more than {} distinct keys in this run, so the mock stopped counting calls per key and cannot count the {} at {what}{whose}",
                u.name,
                crate::upstream::MAX_COUNTED_KEYS,
                plural(&u.noun)
            ),
            expected: format!("calls to {} with at most {} distinct keys", u.name, crate::upstream::MAX_COUNTED_KEYS),
            actual: format!("more than {} distinct keys", crate::upstream::MAX_COUNTED_KEYS),
            ..Default::default()
        }));
    }
    // Calls are numbered from the first of the run (or check), also when the first ones are no
    // longer kept.
    let dropped = calls.dropped();
    let mut evidence: Vec<String> = Vec::new();
    if dropped > 0 {
        evidence.push(format!(
            "the mock upstream keeps its last {} calls: the first {dropped} {} at {what}{whose} were counted but not kept",
            crate::upstream::MAX_KEPT_CALLS,
            noun(dropped)
        ));
    }
    evidence.extend(
        calls
            .kept
            .iter()
            .take(MAX_EVIDENCE)
            .enumerate()
            .map(|(i, c)| {
                // A lookup (GET) has no body worth showing; a write's body is the evidence.
                let body = match String::from_utf8_lossy(&c.body) {
                    b if b.is_empty() => String::new(),
                    b => format!("; body {}", assert::shorten(&b, 200)),
                };
                format!(
                    "{} {} at {what}{whose}: answered {}{body}",
                    u.noun,
                    dropped + i + 1,
                    c.answered,
                )
            }),
    );
    if calls.kept.len() > MAX_EVIDENCE {
        evidence.push(format!(
            "… and {} more {}",
            calls.kept.len() - MAX_EVIDENCE,
            noun(calls.kept.len() - MAX_EVIDENCE)
        ));
    }
    // An exact count (`calls`) or a ceiling (`max_calls`): the same failure, worded for each.
    let bound = match (u.calls, u.max_calls) {
        (Some(want), _) if calls.count != want as usize => Some(("exactly", "", want)),
        (_, Some(most)) if calls.count > most as usize => Some(("at most", "at most ", most)),
        _ => None,
    };
    if let Some((how, how_expected, limit)) = bound {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "{} {} at {what}{whose}, expected {how} {limit}",
                calls.count,
                noun(calls.count)
            ),
            expected: format!(
                "{how_expected}{limit} {} at {what}{whose}",
                noun(limit as usize)
            ),
            actual: format!(
                "{} {} (the mock upstream counted every request it received)",
                calls.count,
                noun(calls.count)
            ),
            evidence,
            ..Default::default()
        }));
    }
    for (i, call) in calls.kept.iter().enumerate() {
        let number = dropped + i + 1;
        if call.body_dropped > 0 && !u.body_json.is_empty() {
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{} {number} at {what}{whose} has a body of {} bytes; the mock upstream keeps {} bytes of a body, so it cannot check {}",
                    u.noun,
                    call.body.len() + call.body_dropped,
                    crate::upstream::MAX_KEPT_BODY,
                    u.body_json
                        .iter()
                        .map(|(q, _)| q.text.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                expected: format!("a body of at most {} bytes", crate::upstream::MAX_KEPT_BODY),
                actual: format!("{} bytes", call.body.len() + call.body_dropped),
                evidence,
                ..Default::default()
            }));
        }
        let doc = call.json();
        for (q, pred) in &u.body_json {
            let actual = match doc
                .as_ref()
                .map(|d| q.path.query(d).at_most_one().ok().flatten().cloned())
            {
                Some(Some(v)) => Actual::Json(v),
                _ => Actual::Missing,
            };
            let failed = assert::check(pred, &actual, &ctx.scope).map_err(Failure::Error)?;
            if let Some((expected, got)) = failed.into_iter().next() {
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "{} {number} at {what}{whose}: expected {} {expected} in its body, got {got}",
                        u.noun,
                        q.text
                    ),
                    expected: format!("{}: {expected}", q.text),
                    actual: format!("{}: {got}", q.text),
                    evidence,
                    ..Default::default()
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod plural_tests {
    use super::plural;

    #[test]
    fn nouns_take_their_english_plural() {
        assert_eq!(plural("charge"), "charges");
        assert_eq!(plural("profile lookup"), "profile lookups");
        assert_eq!(plural("key-set fetch"), "key-set fetches");
        assert_eq!(plural("retry"), "retries");
        assert_eq!(plural("key"), "keys");
    }
}

#[cfg(test)]
mod latency_tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::engine::test_service::{serve, Harness, Reply};
    use crate::upstream::{UpstreamOptions, Upstreams};

    /// A profile service in front of the mock: the first read asks the upstream, later reads
    /// answer from a cache; with `slow_hits`, that many hits are late first (a loaded machine),
    /// and with `None` every read asks the upstream (no cache at all).
    async fn outcome(slow_hits: Option<usize>) -> Result<(), Failure> {
        let profiles: toml::Value = toml::from_str(
            "[[route]]\nmethod = \"GET\"\npath = \"/profiles/{user}\"\ndelay = \"300ms\"\nresponse.json = { user_id = \"u1\" }\n",
        )
        .unwrap();
        let profiles = crate::upstream::spec::parse("profiles", &profiles).unwrap();
        let upstreams = Upstreams::start(&[profiles], &UpstreamOptions::default())
            .await
            .unwrap();
        let mock = url::Url::parse(&upstreams.get("profiles").unwrap().url).unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let service = serve(move |_, _, _| {
            let (reads, client, mock) = (reads.clone(), client.clone(), mock.clone());
            async move {
                let read = reads.fetch_add(1, SeqCst);
                let asks = match slow_hits {
                    None => true,
                    Some(_) => read == 0,
                };
                if asks {
                    let _ = client.get(mock.join("/profiles/u1").unwrap()).send().await;
                } else if read <= slow_hits.unwrap_or(0) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Reply::json(200, json!({ "user_id": "u1" }))
            }
        })
        .await;
        let p = super::super::params::parse_upstream_calls(
            toml::from_str(
                r#"
                upstream = { name = "profiles", route = "GET /profiles/{user}", noun = "profile lookup", calls = 1 }
                [[requests]]
                method = "GET"
                path = "/profiles/u1"
                [[requests]]
                method = "GET"
                path = "/profiles/u1"
                under_upstream_delay = 0.5
                "#,
            )
            .unwrap(),
        )
        .unwrap();
        let harness = Harness::new(service);
        let mut ctx = harness.context(Default::default(), &upstreams);
        run(&p, &mut ctx).await
    }

    #[tokio::test]
    async fn one_late_hit_is_asked_again_and_a_service_that_always_waits_fails() {
        // Two late hits, then a fast one: the fast one proves the cache.
        assert!(outcome(Some(2)).await.is_ok());
        match outcome(None).await {
            Err(Failure::Fail(info)) => assert!(
                info.message.contains("(the fastest of 3 tries)")
                    && info.message.contains("waited for the upstream"),
                "{}",
                info.message
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
        // Three late hits in a row: the bound holds.
        assert!(matches!(outcome(Some(3)).await, Err(Failure::Fail(_))));
    }
}
