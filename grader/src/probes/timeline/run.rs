//! Runs a `timeline`: phase after phase, set the route's behaviour, send the requests (in order,
//! or released together with the `also` requests beside them), judge each response, then judge
//! the calls the phase caused from the mock's log: their count, each request's gaps, the spread
//! of those gaps, the peak in flight.
//!
//! A phase's calls are those that arrived from its start until the next phase starts (its wait
//! included), so a late retry is still counted against the phase that caused it; the last phase
//! keeps [`SETTLE`] after its last response for the same reason. Every time is the grader's: the
//! arrival times are taken by the mock as each call comes in, the response times by the client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::Barrier;

use super::params::{DatabaseStep, Phase, Timeline, BURST_INDEX, SETTLE_EVERY};
use crate::engine::http::{OutgoingRequest, Response, Sent};
use crate::engine::lifecycle::{fail_database, DatabaseFailure, DatabaseFault};
use crate::engine::step::{apply_captures, build_request};
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::request::ProbeRequest;
use crate::probes::upstream_calls::run::judge;
use crate::upstream::{Call, Upstream};

/// How long after the last phase's last response a late call is still counted.
const SETTLE: Duration = Duration::from_millis(300);
/// Calls listed in a failure's evidence.
const SHOWN_CALLS: usize = 12;

/// One request's answer, and how long it took on the grader's clock.
struct Answered {
    name: String,
    summary: String,
    response: Result<Response, String>,
    took: Duration,
    /// Which request of the burst (1-based), for its `burst_index`.
    index: usize,
}

pub async fn run(p: &Timeline, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let upstream = ctx
        .upstreams
        .get(&p.upstream)
        .map_err(Failure::Error)?
        .clone();
    let calls_for = p
        .calls_for
        .as_deref()
        .map(|t| crate::spec::template::render(t, &ctx.scope))
        .transpose()
        .map_err(Failure::Error)?;
    let mut total_requests = 0;
    let mut total_calls = 0;
    // Held while the database fails; dropped (the database restored) on every way out.
    let mut database_fault: Option<DatabaseFault> = None;
    let mut outage = Outage::default();
    for (i, phase) in p.phases.iter().enumerate() {
        // A later phase's wait was served at the end of the phase before it (inside that phase's
        // window); only the first phase's is served here.
        if i == 0 && !phase.wait.is_zero() {
            tokio::time::sleep(phase.wait).await;
        }
        // The window starts before the wait of the next phase: see the module's comment.
        let started = Instant::now();
        if let Some(b) = &phase.behaviour {
            upstream
                .set_behaviour(&p.route, b.clone())
                .map_err(Failure::Error)?;
        }
        upstream.reset_peak(&p.route).map_err(Failure::Error)?;
        match phase.database {
            Some(DatabaseStep::Fail(how)) => {
                // The previous fault is restored first, so a hang after a drop is a hang.
                drop(database_fault.take());
                outage.ended();
                database_fault = Some(fail_database(ctx, how)?);
                outage.began(how);
            }
            Some(DatabaseStep::Restore) => {
                database_fault = None;
                outage.ended();
            }
            None => {}
        }
        let named = format!("phase {} ({})", i + 1, phase.name);
        let answered = if let Some(limit) = phase.settle {
            settle(p, phase, ctx, &named, limit).await?
        } else if phase.together {
            burst(phase, ctx).await?
        } else {
            in_order(phase, ctx).await?
        };
        total_requests += answered.len();
        let delay = upstream.behaviour(&p.route).map_err(Failure::Error)?.delay;
        if phase.judged {
            judge_answers(p, phase, ctx, &named, &answered, delay)?;
        }
        let next_wait = p.phases.get(i + 1).map_or(SETTLE, |next| next.wait);
        // Calls are read once the window has closed: after the next phase's wait, or the settle.
        tokio::time::sleep(next_wait).await;
        let calls = calls_since(&upstream, &p.route, started)
            .into_iter()
            .filter(|c| belongs(p, c, calls_for.as_deref()))
            .collect::<Vec<_>>();
        total_calls += calls.len();
        if phase.judged {
            judge_calls(p, phase, &upstream, &named, &calls, started)?;
        }
    }
    drop(database_fault);
    outage.ended();
    if let Some(line) = outage.describe() {
        ctx.measured(line);
    }
    ctx.measured(format!(
        "{} {}, {total_requests} {}, {total_calls} {} to {} ({}) timed on the grader's clock",
        p.phases.len(),
        plural("phase", p.phases.len()),
        plural("request", total_requests),
        plural(&p.noun, total_calls),
        p.upstream,
        p.route
    ));
    Ok(())
}

/// How long the database failed, per kind, on the grader's clock.
#[derive(Default)]
struct Outage {
    current: Option<(DatabaseFailure, Instant)>,
    hung: Duration,
    dropped: Duration,
}

impl Outage {
    fn began(&mut self, how: DatabaseFailure) {
        self.current = Some((how, Instant::now()));
    }

    fn ended(&mut self) {
        if let Some((how, since)) = self.current.take() {
            match how {
                DatabaseFailure::Hang => self.hung += since.elapsed(),
                DatabaseFailure::Drop => self.dropped += since.elapsed(),
            }
        }
    }

    /// "the database hung for 4.2 s and refused connections for 1.1 s", or None without one.
    fn describe(&self) -> Option<String> {
        let seconds = |d: Duration| {
            if d < Duration::from_secs(1) {
                format!("{} ms", d.as_millis())
            } else {
                format!("{:.1} s", d.as_secs_f64())
            }
        };
        let parts: Vec<String> = [
            (self.hung, "hung"),
            (
                self.dropped,
                "dropped every connection and refused new ones",
            ),
        ]
        .into_iter()
        .filter(|(d, _)| !d.is_zero())
        .map(|(d, what)| format!("{what} for {}", seconds(d)))
        .collect();
        (!parts.is_empty()).then(|| format!("your database {}", parts.join(" and ")))
    }
}

/// `noun` for one, its plural (the shared English rule of `upstream_calls`) for any other count.
fn plural(noun: &str, n: usize) -> String {
    if n == 1 {
        noun.to_string()
    } else {
        crate::probes::upstream_calls::run::plural(noun)
    }
}

/// The route's calls that arrived since `since`, oldest first.
fn calls_since(upstream: &Upstream, route: &str, since: Instant) -> Vec<Call> {
    let (calls, _) = upstream.all_calls();
    calls
        .into_iter()
        .filter(|c| c.known_route && c.route == route && c.arrived_at >= since)
        .collect()
}

/// Whether a call is this check's: its key starts with the check's own text (when the probe says
/// which), so calls a service still makes for an earlier check are left out.
fn belongs(p: &Timeline, c: &Call, calls_for: Option<&str>) -> bool {
    match calls_for {
        None => true,
        Some(prefix) => call_key(p, c).is_some_and(|k| k.starts_with(prefix)),
    }
}

/// Asks again until the request answers as it expects (an open breaker left by an earlier check
/// closes), for at most `limit`; then fails naming the last answer.
async fn settle(
    p: &Timeline,
    phase: &Phase,
    ctx: &mut CheckContext<'_>,
    named: &str,
    limit: Duration,
) -> Result<Vec<Answered>, Failure> {
    let r = &phase.requests[0];
    let began = Instant::now();
    loop {
        let req = render(ctx, r, 1)?;
        let summary = format!("{} {}", req.method, req.url.path());
        let started = Instant::now();
        let sent = ctx.http.send(&r.name, req).await;
        let took = started.elapsed();
        let verdict = match &sent.response {
            Ok(resp) => judge(ctx, r, &summary, resp, &[], &p.identity)?,
            Err(e) => Some(FailInfo {
                message: format!("no response: {e}"),
                expected: "a response".into(),
                actual: e.clone(),
                ..Default::default()
            }),
        };
        let out_of_time = began.elapsed() + SETTLE_EVERY > limit;
        if verdict.is_none() || out_of_time {
            ctx.exchanges.push(sent.exchange);
        }
        match verdict {
            None => {
                if let Ok(resp) = &sent.response {
                    apply_captures(ctx, &r.name, &r.captures, resp)?;
                }
                return Ok(vec![Answered {
                    name: r.name.clone(),
                    summary,
                    response: sent.response,
                    took,
                    index: 1,
                }])
            }
            Some(info) if out_of_time => {
                return Err(fail(
                    format!(
                        "{named}: {} ({summary}) was asked again every {} ms for {}, and never answered as expected; the last time: {}",
                        r.name,
                        SETTLE_EVERY.as_millis(),
                        humantime::format_duration(limit),
                        info.message
                    ),
                    info.expected,
                    info.actual,
                    Vec::new(),
                ))
            }
            Some(_) => tokio::time::sleep(SETTLE_EVERY).await,
        }
    }
}

fn render(
    ctx: &mut CheckContext<'_>,
    r: &ProbeRequest,
    index: usize,
) -> Result<OutgoingRequest, Failure> {
    ctx.scope.insert(BURST_INDEX.into(), Value::from(index));
    build_request(ctx, &r.spec)
}

async fn in_order(phase: &Phase, ctx: &mut CheckContext<'_>) -> Result<Vec<Answered>, Failure> {
    let mut answered = Vec::new();
    for (i, r) in phase.requests.iter().enumerate() {
        let req = render(ctx, r, i + 1)?;
        let summary = format!("{} {}", req.method, req.url.path());
        let started = Instant::now();
        let sent = ctx.http.send(&r.name, req).await;
        let took = started.elapsed();
        ctx.exchanges.push(sent.exchange);
        // A later phase's request may name what this one created (`{{shipment}}` from its
        // Location); a response that is not a success is judged with the rest of the phase.
        if let Some(resp) = sent.response.as_ref().ok().filter(|r| r.status < 300) {
            apply_captures(ctx, &r.name, &r.captures, resp)?;
        }
        answered.push(Answered {
            name: r.name.clone(),
            summary,
            response: sent.response,
            took,
            index: i + 1,
        });
    }
    Ok(answered)
}

/// Releases the burst and the `also` requests together (each `also` after its `at`).
async fn burst(phase: &Phase, ctx: &mut CheckContext<'_>) -> Result<Vec<Answered>, Failure> {
    let mut outgoing = Vec::new();
    for (i, r) in phase.requests.iter().chain(&phase.also).enumerate() {
        outgoing.push((r, render(ctx, r, i + 1)?, i + 1));
    }
    let barrier = Arc::new(Barrier::new(outgoing.len()));
    let http = ctx.http;
    let results: Vec<(Sent, Duration, String, String, usize)> =
        join_all(outgoing.into_iter().map(|(r, req, index)| {
            let barrier = barrier.clone();
            async move {
                let summary = format!("{} {}", req.method, req.url.path());
                barrier.wait().await;
                if !r.at.is_zero() {
                    tokio::time::sleep(r.at).await;
                }
                let started = Instant::now();
                let sent = http.send(&r.name, req).await;
                (sent, started.elapsed(), r.name.clone(), summary, index)
            }
        }))
        .await;
    // One exchange per distinct status is enough evidence for a burst.
    let mut shown: Vec<String> = Vec::new();
    let mut answered = Vec::new();
    for (sent, took, name, summary, index) in results {
        let outcome = match &sent.response {
            Ok(r) => r.status.to_string(),
            Err(_) => "no response".into(),
        };
        if !shown.contains(&outcome) {
            shown.push(outcome);
            ctx.exchanges.push(sent.exchange);
        }
        answered.push(Answered {
            name,
            summary,
            response: sent.response,
            took,
            index,
        });
    }
    Ok(answered)
}

fn fail(message: String, expected: String, actual: String, evidence: Vec<String>) -> Failure {
    Failure::Fail(FailInfo {
        message,
        expected,
        actual,
        evidence,
        ..Default::default()
    })
}

/// Each response as its request expects, in time, and the burst's refusals fast.
/// A burst's copies of one request, judged together: which copy was the one to fail depends on
/// the interleaving, so the failure counts the outcomes instead of naming a copy ("of the 5
/// requests released together, 4 got status: 504").
fn judge_burst_expectations(
    p: &Timeline,
    phase: &Phase,
    ctx: &mut CheckContext<'_>,
    named: &str,
    answered: &[Answered],
) -> Result<(), Failure> {
    let burst = phase.requests.len();
    let mut wrong: BTreeMap<String, usize> = BTreeMap::new();
    let mut expected = String::new();
    for a in answered.iter().filter(|a| a.index <= burst) {
        let info = match &a.response {
            Ok(resp) => {
                ctx.scope.insert(BURST_INDEX.into(), Value::from(a.index));
                judge(
                    ctx,
                    &phase.requests[a.index - 1],
                    &a.summary,
                    resp,
                    &[],
                    &p.identity,
                )?
            }
            Err(e) => Some(FailInfo {
                expected: "a response".into(),
                actual: format!("no response ({e})"),
                ..Default::default()
            }),
        };
        if let Some(info) = info {
            *wrong.entry(info.actual).or_default() += 1;
            if expected.is_empty() {
                expected = info.expected;
            }
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let got = wrong
        .iter()
        .map(|(actual, n)| format!("{n} got {actual}"))
        .collect::<Vec<_>>()
        .join(" and ");
    Err(fail(
        format!("{named}: of the {burst} requests released together, {got}; expected {expected}"),
        expected,
        got,
        Vec::new(),
    ))
}

fn judge_answers(
    p: &Timeline,
    phase: &Phase,
    ctx: &mut CheckContext<'_>,
    named: &str,
    answered: &[Answered],
    delay: Duration,
) -> Result<(), Failure> {
    let requests: Vec<&ProbeRequest> = phase.requests.iter().chain(&phase.also).collect();
    let burst = phase.requests.len();
    if phase.together && burst > 1 {
        judge_burst_expectations(p, phase, ctx, named, answered)?;
    }
    let mut successes = 0;
    for a in answered {
        let r = requests[a.index - 1];
        let resp = match &a.response {
            Ok(resp) => resp,
            Err(e) => {
                return Err(fail(
                    format!("{named}: {} ({}) got no response: {e}", a.name, a.summary),
                    "a response".into(),
                    e.clone(),
                    Vec::new(),
                ))
            }
        };
        ctx.scope.insert(BURST_INDEX.into(), Value::from(a.index));
        if let Some(mut info) = judge(ctx, r, &a.summary, resp, &[], &p.identity)? {
            info.message = format!("{named}: {}", info.message);
            return Err(Failure::Fail(info));
        }
        let is_burst = a.index <= burst;
        if is_burst && (200..300).contains(&resp.status) {
            successes += 1;
        }
        if let Some(within) = phase.within.filter(|_| is_burst) {
            if a.took > within {
                return Err(fail(
                    format!(
                        "{named}: {} ({}) was answered after {} ms; it must be answered within {} ms, whatever the service waits on does",
                        a.name,
                        a.summary,
                        a.took.as_millis(),
                        within.as_millis()
                    ),
                    format!("a response within {} ms", within.as_millis()),
                    format!("{} after {} ms", resp.status, a.took.as_millis()),
                    Vec::new(),
                ));
            }
        }
        let bound = |share: f64| delay.mul_f64(share);
        let refusal_bound = phase
            .refusals_under_delay
            .filter(|_| is_burst && !(200..300).contains(&resp.status))
            .map(bound);
        let own_bound = r.under_upstream_delay.map(bound);
        for b in [refusal_bound, own_bound].into_iter().flatten() {
            if a.took >= b {
                return Err(fail(
                    format!(
                        "{named}: {} ({}) answered {} after {} ms; it must not wait for the upstream (its delay is {} ms): answer in under {} ms",
                        a.name,
                        a.summary,
                        resp.status,
                        a.took.as_millis(),
                        delay.as_millis(),
                        b.as_millis()
                    ),
                    format!("a response in under {} ms", b.as_millis()),
                    format!("{} ms", a.took.as_millis()),
                    Vec::new(),
                ));
            }
        }
    }
    if let Some(max) = phase.max_successes {
        if successes > max {
            return Err(fail(
                format!(
                    "{named}: {successes} of the {burst} requests released together succeeded; at most {max} can, the others must be turned away at once rather than wait for a free slot"
                ),
                format!("at most {max} successes"),
                format!("{successes} successes"),
                Vec::new(),
            ));
        }
    }
    Ok(())
}

/// A call as evidence: when it arrived after the phase began, for which request, and what the
/// mock answered.
fn describe_call(c: &Call, started: Instant, key: Option<&str>) -> String {
    let at = c.arrived_at.saturating_duration_since(started).as_millis();
    match key {
        Some(k) => format!("+{at} ms  {} for {k} → {}", c.route, c.answered),
        None => format!("+{at} ms  {} → {}", c.route, c.answered),
    }
}

/// What the key is called in messages: `postcode` for `$.postcode`.
fn key_name(p: &Timeline) -> &str {
    p.call_key.as_ref().map_or("key", |q| {
        q.text.trim_start_matches("$.").trim_start_matches('$')
    })
}

/// A call's key as evidence shows it: `postcode 75011`.
fn labelled_key(p: &Timeline, c: &Call) -> Option<String> {
    call_key(p, c).map(|k| format!("{} {k}", key_name(p)))
}

fn call_key(p: &Timeline, c: &Call) -> Option<String> {
    let q = p.call_key.as_ref()?;
    let doc = c.json()?;
    let found = q.path.query(&doc).at_most_one().ok().flatten()?;
    Some(crate::spec::template::text_of(found))
}

fn judge_calls(
    p: &Timeline,
    phase: &Phase,
    upstream: &Upstream,
    named: &str,
    calls: &[Call],
    started: Instant,
) -> Result<(), Failure> {
    let evidence = || -> Vec<String> {
        // By request, then by arrival: a burst's calls interleave differently on every run.
        let mut sorted: Vec<&Call> = calls.iter().collect();
        sorted.sort_by_key(|c| (call_key(p, c), c.arrived_at));
        let mut lines: Vec<String> = sorted
            .into_iter()
            .take(SHOWN_CALLS)
            .map(|c| describe_call(c, started, labelled_key(p, c).as_deref()))
            .collect();
        if calls.len() > SHOWN_CALLS {
            lines.push(format!("… and {} more", calls.len() - SHOWN_CALLS));
        }
        lines
    };
    let what = format!("{} ({})", p.upstream, p.route);
    let n = calls.len() as u32;
    let count_wrong = match (phase.calls, phase.max_calls) {
        (Some(exact), _) if n != exact => Some(format!("exactly {exact}")),
        (_, Some(max)) if n > max => Some(format!("at most {max}")),
        _ => None,
    };
    if let Some(expected) = count_wrong {
        return Err(fail(
            format!(
                "{named}: {what} got {n} {}; expected {expected}",
                plural(&p.noun, n as usize)
            ),
            format!("{expected} {}", plural(&p.noun, 2)),
            format!("{n}"),
            evidence(),
        ));
    }
    if let Some(expected) = phase.peak_in_flight {
        let (_, peak) = upstream.in_flight(&p.route).map_err(Failure::Error)?;
        if peak != expected {
            return Err(fail(
                format!(
                    "{named}: at most {peak} {} to {what} were in flight at once; expected exactly {expected}",
                    plural(&p.noun, peak as usize)
                ),
                format!("{expected} in flight at the peak"),
                format!("{peak}"),
                evidence(),
            ));
        }
    }
    if phase.gaps.is_empty() && phase.min_gap_spread.is_none() {
        return Ok(());
    }
    let mut per_request: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for c in calls {
        if let Some(k) = call_key(p, c) {
            per_request.entry(k).or_default().push(c.arrived_at);
        }
    }
    for (key, times) in &per_request {
        for (g, (low, high)) in phase.gaps.iter().enumerate() {
            let (Some(before), Some(after)) = (times.get(g), times.get(g + 1)) else {
                continue;
            };
            let gap = after.saturating_duration_since(*before);
            if gap < *low || gap > *high {
                return Err(fail(
                    format!(
                        "{named}: for {} {key}, {} {} arrived {} ms after {} {}; expected {} to {} ms",
                        key_name(p),
                        p.noun,
                        g + 2,
                        gap.as_millis(),
                        p.noun,
                        g + 1,
                        low.as_millis(),
                        high.as_millis()
                    ),
                    format!("a gap of {} to {} ms", low.as_millis(), high.as_millis()),
                    format!("{} ms", gap.as_millis()),
                    evidence(),
                ));
            }
        }
    }
    if let Some(spread) = phase.min_gap_spread {
        let first_gaps: Vec<Duration> = per_request
            .values()
            .filter_map(|t| Some(t.get(1)?.saturating_duration_since(*t.first()?)))
            .collect();
        if first_gaps.len() < 2 {
            return Err(fail(
                format!(
                    "{named}: only {} of the requests were tried again, so the spread of their waits cannot be measured",
                    first_gaps.len()
                ),
                "every request tried again".into(),
                format!("{} retried", first_gaps.len()),
                evidence(),
            ));
        }
        let (min, max) = (
            *first_gaps.iter().min().unwrap_or(&Duration::ZERO),
            *first_gaps.iter().max().unwrap_or(&Duration::ZERO),
        );
        if max - min < spread {
            return Err(fail(
                format!(
                    "{named}: the requests waited {} to {} ms before trying again, all within {} ms of each other; random waits (jitter) spread over at least {} ms",
                    min.as_millis(),
                    max.as_millis(),
                    (max - min).as_millis(),
                    spread.as_millis()
                ),
                format!("first waits spread over at least {} ms", spread.as_millis()),
                format!("spread over {} ms", (max - min).as_millis()),
                evidence(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::test_service::{self, Harness, Reply};
    use crate::upstream::{UpstreamOptions, Upstreams};

    /// How a quoting service in the test retries a failed carrier call.
    #[derive(Clone, Copy)]
    enum Retries {
        /// Up to 3 attempts, 150 ms then 300 ms apart.
        Backoff,
        /// Up to 3 attempts, at once.
        Immediate,
    }

    async fn quoting_service(mode: Retries, carrier: url::Url) -> url::Url {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        test_service::serve(move |_, _, _| {
            let client = client.clone();
            let carrier = carrier.clone();
            async move {
                for attempt in 0..3u64 {
                    if attempt > 0 {
                        if let Retries::Backoff = mode {
                            tokio::time::sleep(Duration::from_millis(150 * attempt)).await;
                        }
                    }
                    let answer = client
                        .post(carrier.join("/rates").unwrap())
                        .json(&json!({ "postcode": "P1", "weight_grams": 5 }))
                        .send()
                        .await;
                    if let Ok(r) = answer {
                        if r.status() == 200 {
                            return Reply::json(200, json!({ "price_cents": 5 }));
                        }
                    }
                }
                Reply::json(503, json!({ "status": 503 }))
            }
        })
        .await
    }

    async fn two_failures_then_an_answer(mode: Retries) -> (Result<(), Failure>, Vec<String>) {
        let carrier: toml::Value = toml::from_str(
            r#"
            [[route]]
            method = "POST"
            path = "/rates"
            response.json = { price_cents = 5 }
            "#,
        )
        .unwrap();
        let carrier = crate::upstream::spec::parse("carrier", &carrier).unwrap();
        let upstreams = Upstreams::start(&[carrier], &UpstreamOptions::default())
            .await
            .unwrap();
        let url = url::Url::parse(&upstreams.get("carrier").unwrap().url).unwrap();
        let p = super::super::params::parse(
            toml::from_str(
                r#"
                upstream = "carrier"
                route = "POST /rates"
                call_key = "$.postcode"
                noun = "rate request"
                [[phase]]
                name = "two 503s, then a price"
                behaviour = { fault = "503", fault_times = 2 }
                request = { method = "GET", path = "/estimates", status = 200 }
                calls = 3
                gaps = [["90ms", "450ms"], ["190ms", "650ms"]]
                "#,
            )
            .unwrap(),
        )
        .unwrap();
        let harness = Harness::new(quoting_service(mode, url).await);
        let mut ctx = harness.context(Default::default(), &upstreams);
        let result = run(&p, &mut ctx).await;
        (result, ctx.measurements)
    }

    #[tokio::test]
    async fn retries_that_back_off_pass_and_immediate_ones_fail_with_the_gap() {
        let (result, measured) = two_failures_then_an_answer(Retries::Backoff).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            measured,
            ["1 phase, 1 request, 3 rate requests to carrier (POST /rates) timed on the grader's clock"]
        );
        match two_failures_then_an_answer(Retries::Immediate).await.0 {
            Err(Failure::Fail(info)) => {
                assert!(
                    info.message.starts_with(
                        "phase 1 (two 503s, then a price): for postcode P1, rate request 2 arrived "
                    ) && info
                        .message
                        .ends_with(" ms after rate request 1; expected 90 to 450 ms"),
                    "{}",
                    info.message
                );
                assert_eq!(info.evidence.len(), 3, "{:?}", info.evidence);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// With `--runtime external` the grader runs neither the service nor its database: a phase
    /// that makes the database fail skips the check (never passes it), and restores nothing.
    #[tokio::test]
    async fn a_database_fault_without_the_grader_s_database_skips_the_check() {
        let carrier: toml::Value =
            toml::from_str("[[route]]\nmethod = \"POST\"\npath = \"/rates\"\n").unwrap();
        let carrier = crate::upstream::spec::parse("carrier", &carrier).unwrap();
        let upstreams = Upstreams::start(&[carrier], &UpstreamOptions::default())
            .await
            .unwrap();
        let p = super::super::params::parse(
            toml::from_str(
                r#"
                upstream = "carrier"
                route = "POST /rates"
                [[phase]]
                name = "the database hangs"
                database = "hang"
                request = { method = "GET", path = "/readyz", status = 503 }
                "#,
            )
            .unwrap(),
        )
        .unwrap();
        let service = test_service::serve(|_, _, _| async { Reply::json(200, json!({})) }).await;
        let harness = Harness::new(service);
        let mut ctx = harness.context(Default::default(), &upstreams);
        match run(&p, &mut ctx).await {
            Err(Failure::Skip(reason)) => {
                assert!(reason.contains("--runtime external"), "{reason}")
            }
            other => panic!("expected a skip, got {other:?}"),
        }
    }
}
