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

use futures_util::future::join_all;
use tokio::sync::Barrier;

use super::params::Concurrent;
use crate::engine::assert::describe_json;
use crate::engine::http::{OutgoingRequest, Sent};
use crate::engine::step::build_request;
use crate::engine::wire::Held;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::upstream_calls::run::{
    apply_behaviour, check_calls, identity_of, judge, send_in_order, Seen,
};

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
        let (sent, warm) = burst(p, ctx).await?;
        warm_connections += warm;
        judge_round(p, ctx, sent).map_err(|f| in_round(f, round, p.rounds))?;
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

/// Opens (and warms) one connection per request, waits until all are open, then releases every
/// request at once (each after its own `at`). Returns the sends and how many connections were
/// warm.
async fn burst(p: &Concurrent, ctx: &mut CheckContext<'_>) -> Result<(Vec<Sent>, usize), Failure> {
    let requests: Vec<OutgoingRequest> = p
        .requests
        .iter()
        .map(|r| build_request(ctx, &r.spec))
        .collect::<Result<_, _>>()?;
    let base = ctx.service.base_url.clone();
    let timeout = ctx.http.timeout();
    if !p.warm {
        let http = ctx.http;
        let sent = join_all(p.requests.iter().zip(requests).map(|(r, req)| async move {
            if !r.at.is_zero() {
                tokio::time::sleep(r.at).await;
            }
            http.send(&r.name, req).await
        }))
        .await;
        return Ok((sent, 0));
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
    let sent = join_all(p.requests.iter().zip(requests).zip(held).map(
        |((r, req), h)| async move {
            barrier.wait().await;
            if !r.at.is_zero() {
                tokio::time::sleep(r.at).await;
            }
            h.send(&r.name, req, timeout).await
        },
    ))
    .await;
    Ok((sent, warm))
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
