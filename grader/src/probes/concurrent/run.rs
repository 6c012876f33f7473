//! `concurrent`: fires N requests together (or staggered by each request's `at`) and judges the
//! whole set: every response as its request expects, no 5xx and no transport failure, every 2xx
//! naming the same resource, and what reached the mock upstream.
//!
//! Races only show under real concurrency, so requests are rendered first and then released at
//! once; the report keeps one exchange per distinct outcome, not all N.

use std::collections::BTreeMap;
use std::time::Duration;

use super::params::Concurrent;
use crate::engine::assert::describe_json;
use crate::engine::http::{OutgoingRequest, Sent};
use crate::engine::step::build_request;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::upstream_calls::run::{apply_behaviour, check_calls, identity_of, judge, Seen};
use futures_util::future::join_all;

/// Exchanges kept in the report: one per distinct status, at most this many.
const SHOWN_EXCHANGES: usize = 4;

pub async fn run(p: &Concurrent, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let upstream = p
        .upstream
        .as_ref()
        .map(|u| apply_behaviour(ctx, u))
        .transpose()?;
    let requests: Vec<OutgoingRequest> = p
        .requests
        .iter()
        .map(|r| build_request(ctx, &r.spec))
        .collect::<Result<_, _>>()?;
    let summary = requests
        .first()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .unwrap_or_default();
    let http = ctx.http;
    let sent: Vec<Sent> = join_all(p.requests.iter().zip(requests).map(|(r, req)| {
        let at: Duration = r.at;
        async move {
            if !at.is_zero() {
                tokio::time::sleep(at).await;
            }
            http.send(&r.name, req).await
        }
    }))
    .await;

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
