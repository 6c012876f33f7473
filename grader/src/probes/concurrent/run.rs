//! `concurrent`: fires N requests together (or staggered by each request's `at`) and judges the
//! whole set: every response as its request expects, no 5xx and no transport failure, every 2xx
//! naming the same resource, and what reached the mock upstream.
//!
//! Races only show under real concurrency: requests are rendered first, every connection is
//! opened and warmed with one request (so the service has accepted it and has a thread or task
//! ready), then all requests are released together at a barrier. The burst repeats for `rounds`
//! rounds with fresh data, so a race with a narrow window is still caught; a seed replays the
//! data, never the thread interleaving. The report keeps one exchange per distinct outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::Barrier;

use super::params::Concurrent;
use crate::engine::assert::describe_json;
use crate::engine::http::{OutgoingRequest, Sent};
use crate::engine::step::build_request;
use crate::engine::wire::Held;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::request::ProbeRequest;
use crate::probes::upstream_calls::run::{
    apply_behaviour, check_calls, identity_of, judge, send_in_order, Seen,
};
use crate::spec::template;
use crate::upstream::Upstream;

/// Exchanges kept in the report: one per distinct status, at most this many.
const SHOWN_EXCHANGES: usize = 4;

pub async fn run(p: &Concurrent, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let mut warm_connections = 0;
    for round in 1..=p.rounds {
        if round > 1 {
            // Each round is a new trial: new keys, new orders, new users.
            ctx.scope = ctx.fresh_scope();
        }
        send_in_order(ctx, &p.setup)
            .await
            .map_err(|f| in_round(f, round, p.rounds))?;
        if let Some(u) = &p.upstream {
            apply_behaviour(ctx, u)?;
        }
        let burst = burst(p, ctx).await?;
        warm_connections += burst.warm;
        if let Some(u) = burst.unanchored {
            return Err(in_round(
                unanchored_failure(p, ctx, burst.sent, u),
                round,
                p.rounds,
            ));
        }
        judge_round(p, ctx, burst.sent).map_err(|f| in_round(f, round, p.rounds))?;
    }
    let n = p.requests.len();
    let total = n * p.rounds as usize;
    let rounds = format!(
        "{} round{} of {n} requests released together",
        p.rounds,
        if p.rounds == 1 { "" } else { "s" }
    );
    // Only an unusual service (one closing connections after one request) changes this line, so
    // it stays the same from run to run.
    ctx.measured(if !p.warm {
        format!("{rounds} on new connections")
    } else if warm_connections == total {
        format!("{rounds} on connections warmed first")
    } else {
        format!(
            "{rounds}, {warm_connections} of {total} on connections warmed first (the service closed the others after one request)"
        )
    });
    Ok(())
}

fn in_round(failure: Failure, round: u32, rounds: u32) -> Failure {
    match failure {
        Failure::Fail(mut info) if rounds > 1 => {
            info.message = format!("round {round} of {rounds}: {}", info.message);
            Failure::Fail(info)
        }
        other => other,
    }
}

/// The call a request with `after_upstream_call` waits for: this round's first call to the
/// check's upstream route with the check's key.
struct Anchor {
    upstream: Arc<Upstream>,
    route: String,
    key: String,
    /// Calls with the key before the burst (none for fresh data, but a setup may have made some).
    before: usize,
    /// How many requests do not wait: once all of them are answered, no call is coming.
    starters: usize,
    answered: AtomicUsize,
}

impl Anchor {
    fn of(p: &Concurrent, ctx: &CheckContext<'_>) -> Result<Option<Anchor>, Failure> {
        let (Some(u), true) = (
            &p.upstream,
            p.requests.iter().any(|r| r.after_upstream_call),
        ) else {
            return Ok(None);
        };
        // Parsing made sure a waiting request comes with a keyed upstream.
        let key = template::render(u.key.as_deref().unwrap_or_default(), &ctx.scope)
            .map_err(Failure::Error)?;
        let upstream = ctx
            .upstreams
            .get(&u.name)
            .cloned()
            .map_err(Failure::Error)?;
        let before = upstream.calls(&u.route, Some(&key)).count;
        Ok(Some(Anchor {
            upstream,
            route: u.route.clone(),
            key,
            before,
            starters: p.requests.iter().filter(|r| !r.after_upstream_call).count(),
            answered: AtomicUsize::new(0),
        }))
    }

    /// Waits (at most `timeout`) until the service has called the upstream with this round's key.
    /// Gives up, with the reason, when every request that could make the call was answered first.
    async fn call_arrived(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.upstream.calls(&self.route, Some(&self.key)).count > self.before {
                return Ok(());
            }
            if self.answered.load(Ordering::SeqCst) >= self.starters {
                return Err("the requests before it were answered first".into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "none came within {}",
                    humantime::format_duration(timeout)
                ));
            }
            tokio::time::sleep(ANCHOR_POLL).await;
        }
    }
}

/// How often a waiting request looks for the upstream call: small next to any delay a check sets.
const ANCHOR_POLL: Duration = Duration::from_millis(5);

/// Why a request that waits for the upstream call was sent without it.
struct Unanchored {
    request: String,
    reason: String,
}

/// Sends one request of the burst at its time: `at` after the release, or `at` after the
/// upstream call it waits for.
async fn timed<F: std::future::Future<Output = Sent>>(
    r: &ProbeRequest,
    anchor: Option<&Anchor>,
    timeout: Duration,
    send: impl FnOnce() -> F,
) -> (Sent, Option<Unanchored>) {
    let mut unanchored = None;
    if let (true, Some(a)) = (r.after_upstream_call, anchor) {
        if let Err(reason) = a.call_arrived(timeout).await {
            unanchored = Some(Unanchored {
                request: r.name.clone(),
                reason,
            });
        }
    }
    if !r.at.is_zero() {
        tokio::time::sleep(r.at).await;
    }
    let sent = send().await;
    if let (false, Some(a)) = (r.after_upstream_call, anchor) {
        a.answered.fetch_add(1, Ordering::SeqCst);
    }
    (sent, unanchored)
}

/// What one burst gave: every send, how many connections were warm, and a request that waited
/// for an upstream call that never came.
struct Burst {
    sent: Vec<Sent>,
    warm: usize,
    unanchored: Option<Unanchored>,
}

/// Opens (and warms) one connection per request, waits until all are open, then releases every
/// request at once (each at its own time).
async fn burst(p: &Concurrent, ctx: &mut CheckContext<'_>) -> Result<Burst, Failure> {
    let requests: Vec<OutgoingRequest> = p
        .requests
        .iter()
        .map(|r| build_request(ctx, &r.spec))
        .collect::<Result<_, _>>()?;
    let anchor = Anchor::of(p, ctx)?;
    let anchor = anchor.as_ref();
    let base = ctx.service.base_url.clone();
    let timeout = ctx.http.timeout();
    let finish = |results: Vec<(Sent, Option<Unanchored>)>, warm: usize| {
        let mut unanchored = None;
        let mut sent = Vec::with_capacity(results.len());
        for (s, u) in results {
            sent.push(s);
            unanchored = unanchored.or(u);
        }
        Burst {
            sent,
            warm,
            unanchored,
        }
    };
    if !p.warm {
        let http = ctx.http;
        let results = join_all(
            p.requests
                .iter()
                .zip(requests)
                .map(|(r, req)| timed(r, anchor, timeout, move || http.send(&r.name, req))),
        )
        .await;
        return Ok(finish(results, 0));
    }
    let warm_path = ctx.service.health_path.clone();
    let opened =
        join_all((0..requests.len()).map(|_| Held::open(&base, &warm_path, timeout))).await;
    let mut held = Vec::with_capacity(opened.len());
    for (r, h) in p.requests.iter().zip(opened) {
        match h {
            Ok(h) => held.push(h),
            Err(e) => {
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "{}: could not open {} connections to the service before the burst: {e}",
                        r.name,
                        p.requests.len()
                    ),
                    expected: format!("{} connections accepted at once", p.requests.len()),
                    actual: e,
                    ..Default::default()
                }))
            }
        }
    }
    let warm = held.iter().filter(|h| h.warm).count();
    let barrier = Barrier::new(held.len());
    let barrier = &barrier;
    let results = join_all(p.requests.iter().zip(requests).zip(held).map(
        |((r, req), h)| async move {
            barrier.wait().await;
            timed(r, anchor, timeout, move || h.send(&r.name, req, timeout)).await
        },
    ))
    .await;
    Ok(finish(results, warm))
}

/// A request meant to arrive while the upstream call is in flight went out without one: the
/// timeline the check needs never happened, because the service did not call the upstream.
fn unanchored_failure(
    p: &Concurrent,
    ctx: &mut CheckContext<'_>,
    sent: Vec<Sent>,
    u: Unanchored,
) -> Failure {
    let upstream = p
        .upstream
        .as_ref()
        .map(|u| format!("{} ({})", u.name, u.route))
        .unwrap_or_default();
    let noun = p
        .upstream
        .as_ref()
        .map(|u| u.noun.clone())
        .unwrap_or_default();
    for s in sent {
        ctx.exchanges.push(s.exchange);
    }
    Failure::Fail(FailInfo {
        message: format!(
            "{} is sent once the service has called {upstream} for this request's data, but no such call came: {}",
            u.request, u.reason
        ),
        expected: format!("a {noun} at {upstream} while the first request is in flight"),
        actual: format!("no {noun} at {upstream}"),
        ..Default::default()
    })
}

/// Judges one round: transport failures and 5xx, each response as its request expects, the
/// upstream's calls, and one resource for every success.
fn judge_round(p: &Concurrent, ctx: &mut CheckContext<'_>, sent: Vec<Sent>) -> Result<(), Failure> {
    let upstream = p
        .upstream
        .as_ref()
        .map(|u| ctx.upstreams.get(&u.name).cloned().map_err(Failure::Error))
        .transpose()?;
    let summary = sent
        .first()
        .map(|s| {
            let url = url::Url::parse(&s.exchange.request.url)
                .map(|u| u.path().to_string())
                .unwrap_or_default();
            format!("{} {url}", s.exchange.request.method)
        })
        .unwrap_or_default();
    // Keep the evidence short: the first exchange of each outcome.
    let mut shown: Vec<String> = Vec::new();
    for s in &sent {
        let outcome = s
            .response
            .as_ref()
            .map(|r| r.status.to_string())
            .unwrap_or_else(|_| "no response".into());
        if !shown.contains(&outcome) && shown.len() < SHOWN_EXCHANGES {
            shown.push(outcome);
            ctx.exchanges.push(s.exchange.clone());
        }
    }

    let n = sent.len();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sent {
        let key = match &s.response {
            Ok(r) => r.status.to_string(),
            Err(_) => "no response".into(),
        };
        *tally.entry(key).or_default() += 1;
    }
    let distribution = tally
        .iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut problems: Vec<String> = Vec::new();
    let mut first: Option<FailInfo> = None;

    // Transport failures and 5xx: the service broke under concurrency.
    for (r, s) in p.requests.iter().zip(&sent) {
        match &s.response {
            Err(e) => problems.push(format!("{}: no response: {e}", r.name)),
            Ok(resp) if resp.status >= 500 => problems.push(format!(
                "{} answered {}: {}",
                r.name,
                resp.status,
                crate::engine::assert::shorten(&resp.text(), 160)
            )),
            _ => {}
        }
    }
    if !problems.is_empty() {
        let count = problems.len();
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "{n} concurrent {summary}: {count} got a 5xx or no response (statuses: {distribution})"
            ),
            expected: "every response a deliberate answer (2xx, or 4xx such as 409), never a 5xx"
                .into(),
            actual: format!("statuses: {distribution}"),
            evidence: problems.into_iter().take(10).collect(),
            ..Default::default()
        }));
    }

    // Each response as its request expects (and replays as their originals).
    let mut seen: Vec<Seen> = Vec::new();
    for (r, s) in p.requests.iter().zip(&sent) {
        let Ok(resp) = &s.response else { continue };
        if let Some(info) = judge(ctx, r, &summary, resp, &seen, &p.identity)? {
            problems.push(info.message.clone());
            first.get_or_insert(info);
        }
        seen.push(Seen::of(resp, &p.identity));
    }
    if let Some(mut info) = first {
        info.message = format!(
            "{} (of {n} concurrent requests; statuses: {distribution})",
            info.message
        );
        info.evidence = problems.into_iter().take(10).collect();
        return Err(Failure::Fail(info));
    }

    // What reached the upstream: the evidence that matters most ("3 charges").
    if let (Some(u), Some(up)) = (&p.upstream, &upstream) {
        check_calls(ctx, u, up).map_err(|f| match f {
            Failure::Fail(mut info) => {
                info.message = format!(
                    "{} after {n} concurrent {summary} (statuses: {distribution})",
                    info.message
                );
                Failure::Fail(info)
            }
            other => other,
        })?;
    }
    // One resource: every success names the same one.
    if p.same_resource {
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for s in &sent {
            if let Ok(resp) = &s.response {
                if (200..300).contains(&resp.status) {
                    let id = identity_of(resp, &p.identity)
                        .as_ref()
                        .map(describe_json)
                        .unwrap_or_else(|| "none".into());
                    *ids.entry(id).or_default() += 1;
                }
            }
        }
        if ids.len() > 1 {
            let list = ids
                .iter()
                .map(|(id, c)| format!("{id} ×{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{n} identical concurrent {summary} created {} different resources ({}: {list})",
                    ids.len(),
                    p.identity.text
                ),
                expected: format!("every 2xx response with the same {}", p.identity.text),
                actual: list,
                ..Default::default()
            }));
        }
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use serde_json::{json, Value};

    use super::*;
    use crate::engine::test_service::{self, Harness, Reply};
    use crate::upstream::{UpstreamOptions, Upstreams};

    /// How a payment service in the test treats a retry of a payment still in flight.
    #[derive(Clone, Copy)]
    enum Payments {
        /// Claims the key, then calls the provider; a retry that finds the claim answers 409.
        /// `slow_start` is a loaded machine: the first request to arrive reaches its claim only
        /// that late.
        ClaimFirst { slow_start: Duration },
        /// Calls the provider first and claims afterwards, so a retry during the call charges again.
        ClaimAfterCall,
        /// Answers at once without calling the provider.
        NeverCalls,
    }

    async fn payment_service(mode: Payments, provider: url::Url) -> url::Url {
        let claims: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
        let arrivals = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        test_service::serve(move |_, _, doc: Value| {
            let claims = claims.clone();
            let first = arrivals.fetch_add(1, Ordering::SeqCst) == 0;
            let client = client.clone();
            let provider = provider.clone();
            async move {
                let order = doc["order_id"].as_str().unwrap_or_default().to_string();
                let charge = || async {
                    client
                        .post(provider.join("/charges").unwrap())
                        .json(&json!({ "order_id": order }))
                        .send()
                        .await
                        .unwrap();
                };
                match mode {
                    Payments::NeverCalls => {}
                    Payments::ClaimFirst { slow_start } => {
                        if first {
                            tokio::time::sleep(slow_start).await;
                        }
                        if claims.lock().unwrap().insert(order.clone(), true).is_some() {
                            return Reply::json(409, json!({ "status": 409 }));
                        }
                        charge().await;
                    }
                    Payments::ClaimAfterCall => {
                        if claims.lock().unwrap().contains_key(&order) {
                            return Reply::json(409, json!({ "status": 409 }));
                        }
                        charge().await;
                        claims.lock().unwrap().insert(order.clone(), true);
                    }
                }
                Reply::json(201, json!({ "id": order }))
            }
        })
        .await
    }

    /// The idempotency exercise's in-flight retry: a 1 s provider, and a retry 200 ms after the
    /// provider got the first charge.
    async fn retry_in_flight(mode: Payments) -> Result<(), Failure> {
        let provider: toml::Value = toml::from_str(
            r#"
            [[route]]
            method = "POST"
            path = "/charges"
            key = { json = "$.order_id" }
            response.status = 201
            response.json = { id = "ch_{{seq}}" }
            "#,
        )
        .unwrap();
        let provider = crate::upstream::spec::parse("payments", &provider).unwrap();
        let upstreams = Upstreams::start(&[provider], &UpstreamOptions::default())
            .await
            .unwrap();
        let provider_url = url::Url::parse(&upstreams.get("payments").unwrap().url).unwrap();
        let p = super::super::params::parse_concurrent(
            toml::from_str(
                r#"
                rounds = 1
                [upstream]
                name = "payments"
                route = "POST /charges"
                key = "{{order}}"
                noun = "charge"
                delay = "1s"
                calls = 1
                [[requests]]
                method = "POST"
                path = "/payments"
                json = { order_id = "{{order}}" }
                status = 201
                [[requests]]
                method = "POST"
                path = "/payments"
                json = { order_id = "{{order}}" }
                status = 409
                after_upstream_call = true
                at = "200ms"
                "#,
            )
            .unwrap(),
        )
        .unwrap();
        let harness = Harness::new(payment_service(mode, provider_url).await);
        let mut scope = crate::spec::template::Scope::new();
        scope.insert("order".into(), json!("order-1"));
        let mut ctx = harness.context(scope, &upstreams);
        run(&p, &mut ctx).await
    }

    fn message(result: Result<(), Failure>) -> String {
        match result {
            Err(Failure::Fail(info)) => info.message,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_retry_waits_for_the_provider_call_however_late_the_first_request_makes_it() {
        // 600 ms before the claim: a retry timed from the release (the old `at = "300ms"`) would
        // reach this correct service before the first request had claimed anything.
        let slow = Payments::ClaimFirst {
            slow_start: Duration::from_millis(600),
        };
        let result = retry_in_flight(slow).await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_service_that_claims_after_the_call_or_never_calls_fails_with_the_reason() {
        let m = message(retry_in_flight(Payments::ClaimAfterCall).await);
        assert!(m.contains("expected status 409, got 201"), "{m}");
        let m = message(retry_in_flight(Payments::NeverCalls).await);
        assert!(
            m.contains("is sent once the service has called payments (POST /charges) for this request's data, but no such call came: the requests before it were answered first"),
            "{m}"
        );
    }
}
