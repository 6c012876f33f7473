//! Runs a `shutdown`, from a fresh process each round so that what earlier checks left in the
//! service's memory cannot stand in the way:
//!
//! 1. the route slowed down, the requests released together with no signal: what each gets is
//!    "the answer it would have had";
//! 2. a keep-alive connection left idle, the requests released again, and `SIGTERM` once the
//!    upstream holds all of their calls (every one in flight by the service's own progress,
//!    however loaded the machine); a new request `at` after the signal, while the upstream still
//!    holds calls; the wait for every process of the service to be gone;
//! 3. the service started again, and the verdict in the order a learner fixes things: answers
//!    lost or changed, the exit, new work taken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::Barrier;

use super::params::{Shutdown, BURST_INDEX};
use crate::engine::http::{HttpClient, OutgoingRequest, Sent};
use crate::engine::step::build_request;
use crate::engine::wire::Held;
use crate::engine::{CheckContext, FailInfo, Failure, LOG_TAIL_LINES};
use crate::probes::request::ProbeRequest;
use crate::probes::upstream_calls::run::judge;
use crate::runtime::{ServiceState, StartError};

/// How long the requests may take to reach the upstream before the check gives up on sending
/// the signal with all of them in flight.
const REACH_UPSTREAM: Duration = Duration::from_secs(5);

/// Why the check cannot run with `--runtime external`.
pub const EXTERNAL: &str = "this check sends SIGTERM to your service and starts it again; with --runtime external the grader does not run your service, so it does not run this check";

/// What happened after the signal.
struct AfterSignal {
    /// The new request's answer, or why there was none.
    sent: Sent,
    /// When it was answered (or given up on), after the signal.
    answered_after: Duration,
    /// Whether the upstream still held a call in flight when it went out: a drain was on.
    draining: bool,
    /// How long after the signal every process of the service was gone (None: still running).
    exited_after: Option<Duration>,
}

pub async fn run(p: &Shutdown, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    if ctx.service.kind == "external" {
        return Err(Failure::Skip(EXTERNAL.into()));
    }
    // A fresh process first: what earlier checks left in memory (an open breaker, a full
    // bulkhead) must not keep the requests from reaching the upstream, or this check would
    // grade those instead of the shutdown.
    restart(ctx, "before the check").await?;
    let upstream =
        crate::probes::upstream_calls::run::delay_route(ctx, &p.upstream, &p.route, p.delay)?;
    let count = p.requests.len();
    // "The answer it would have had without the signal", measured: the same requests (their own
    // keys: indexes after the shutdown round's) on the same slow upstream, with no signal.
    let baseline = release(ctx, p, count).await?;
    // And afresh again: the round without the signal may have counted towards a breaker (five
    // failed quotes open one), which must not meet the round with it.
    restart(ctx, "after the round without the signal").await?;
    let outgoing = render(ctx, p, 0)?;
    let after_request = build_request(ctx, &p.after_signal.spec)?;
    let after_summary = format!("{} {}", after_request.method, after_request.url.path());
    let in_flight_wanted = count as u32;

    let http = ctx.http;
    let service = ctx.service;
    // A keep-alive connection left idle across the signal: a drain that waits for every
    // connection to close, rather than closing the idle ones, never ends.
    let idle = Held::open(&service.base_url, &service.health_path, http.timeout())
        .await
        .map_err(|e| Failure::Error(format!("could not open a keep-alive connection: {e}")))?;
    let requests = send_together(http, outgoing);
    let signaller = async {
        let deadline = Instant::now() + REACH_UPSTREAM;
        loop {
            let (now, _) = upstream.in_flight(&p.route).map_err(Failure::Error)?;
            if now >= in_flight_wanted {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "only {now} of the {in_flight_wanted} requests released together were waiting on {} ({}) {} later; the check sends SIGTERM while all of them are in flight",
                        p.upstream,
                        p.route,
                        humantime::format_duration(REACH_UPSTREAM)
                    ),
                    expected: format!("{in_flight_wanted} calls to {} in flight at once", p.upstream),
                    actual: format!("{now} in flight"),
                    ..Default::default()
                }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let signalled = Instant::now();
        let wait_for_exit = async {
            let state = service
                .signal_service(Signal::SIGTERM, p.exits_within)
                .await
                .map_err(|e| Failure::Error(format!("could not send SIGTERM: {e}")))?;
            Ok::<_, Failure>(match state {
                ServiceState::Exited { .. } => Some(signalled.elapsed()),
                ServiceState::Running => None,
            })
        };
        let new_request = async {
            tokio::time::sleep(p.after_signal.at).await;
            // The new request must meet a drain in progress, or its answer says nothing about
            // new work during one: the upstream still holds the calls in flight.
            let draining = upstream
                .in_flight(&p.route)
                .map(|(now, _)| now > 0)
                .unwrap_or(false);
            let sent = http.send(&p.after_signal.name, after_request).await;
            (sent, signalled.elapsed(), draining)
        };
        let (exited_after, (sent, sent_after, draining)) = tokio::join!(wait_for_exit, new_request);
        Ok(AfterSignal {
            sent,
            answered_after: sent_after,
            draining,
            exited_after: exited_after?,
        })
    };
    let (answers, after) = tokio::join!(requests, signaller);
    drop(idle);
    show(ctx, &answers);
    // The service goes on for the checks after this one, whatever this one found.
    let restarted = restart(ctx, "after SIGTERM").await;
    let after = after?;
    ctx.exchanges.push(after.sent.exchange.clone());
    let verdict = judge_shutdown(p, ctx, &baseline, &answers, &after, &after_summary);
    let restart_took = verdict.and(restarted)?;
    ctx.measured(format!(
        "SIGTERM with {in_flight_wanted} {} waiting on {} and a keep-alive connection idle: every one answered as without the signal, a new request {} later {}, and the service gone {} after the signal",
        if in_flight_wanted == 1 { "request" } else { "requests" },
        p.upstream,
        millis(p.after_signal.at),
        match &after.sent.response {
            Ok(r) => format!("answered {}", r.status),
            Err(_) => "refused".to_string(),
        },
        after.exited_after.map(millis).unwrap_or_default()
    ));
    ctx.measured(format!(
        "your service was started again after SIGTERM and answered its health check {} later",
        millis(restart_took)
    ));
    Ok(())
}

/// The `count` requests rendered with `{{burst_index}}` from `offset + 1`.
fn render<'p>(
    ctx: &mut CheckContext<'_>,
    p: &'p Shutdown,
    offset: usize,
) -> Result<Vec<(&'p ProbeRequest, OutgoingRequest)>, Failure> {
    let mut outgoing = Vec::new();
    for (i, r) in p.requests.iter().enumerate() {
        ctx.scope
            .insert(BURST_INDEX.into(), Value::from(offset + i + 1));
        outgoing.push((r, build_request(ctx, &r.spec)?));
    }
    ctx.scope.remove(BURST_INDEX);
    Ok(outgoing)
}

/// Sends the requests released together at a barrier; each answer with its `METHOD path`.
async fn send_together(
    http: &HttpClient,
    outgoing: Vec<(&ProbeRequest, OutgoingRequest)>,
) -> Vec<(Sent, String)> {
    let barrier = Arc::new(Barrier::new(outgoing.len()));
    join_all(outgoing.into_iter().map(|(r, req)| {
        let barrier = barrier.clone();
        async move {
            let summary = format!("{} {}", req.method, req.url.path());
            barrier.wait().await;
            (http.send(&r.name, req).await, summary)
        }
    }))
    .await
}

/// The baseline round: the requests, with no signal, and what each got (`None`: no answer).
async fn release(
    ctx: &mut CheckContext<'_>,
    p: &Shutdown,
    offset: usize,
) -> Result<Vec<Option<Baseline>>, Failure> {
    let outgoing = render(ctx, p, offset)?;
    let answers = send_together(ctx.http, outgoing).await;
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;
    let mut baseline = Vec::new();
    for (index, ((sent, summary), r)) in answers.iter().zip(&p.requests).enumerate() {
        baseline.push(match &sent.response {
            Ok(resp) => {
                ctx.scope
                    .insert(BURST_INDEX.into(), Value::from(offset + index + 1));
                let as_expected = judge(ctx, r, summary, resp, &[], &identity)?.is_none();
                Some(Baseline {
                    status: resp.status,
                    as_expected,
                })
            }
            Err(_) => None,
        });
    }
    ctx.scope.remove(BURST_INDEX);
    Ok(baseline)
}

/// What a request got without the signal.
struct Baseline {
    status: u16,
    /// Whether it met the request's expectations (then the answer in flight must too).
    as_expected: bool,
}

/// One exchange per distinct outcome of the requests in flight is enough evidence.
fn show(ctx: &mut CheckContext<'_>, answers: &[(Sent, String)]) {
    let mut shown: Vec<String> = Vec::new();
    for (sent, _) in answers {
        let outcome = match &sent.response {
            Ok(r) => r.status.to_string(),
            Err(_) => "no answer".into(),
        };
        if !shown.contains(&outcome) {
            shown.push(outcome);
            ctx.exchanges.push(sent.exchange.clone());
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Answers lost or changed first (the reason for a graceful shutdown), then the exit, then new
/// work taken. Every rule broken is reported: the first as the failure, the others as evidence.
fn judge_shutdown(
    p: &Shutdown,
    ctx: &mut CheckContext<'_>,
    baseline: &[Option<Baseline>],
    answers: &[(Sent, String)],
    after: &AfterSignal,
    after_summary: &str,
) -> Result<(), Failure> {
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;
    let mut in_flight: Vec<FailInfo> = Vec::new();
    for (index, (((sent, summary), r), before)) in
        answers.iter().zip(&p.requests).zip(baseline).enumerate()
    {
        let resp = match &sent.response {
            Ok(resp) => resp,
            Err(e) => {
                in_flight.push(FailInfo {
                    message: format!(
                        "{} ({summary}) was in flight when SIGTERM came and got no answer: {e}",
                        r.name
                    ),
                    expected: "the answer it would have had without the signal".into(),
                    actual: format!("no answer ({e})"),
                    log_tail: ctx.service.log_tail(LOG_TAIL_LINES),
                    ..Default::default()
                });
                continue;
            }
        };
        ctx.scope.insert(BURST_INDEX.into(), Value::from(index + 1));
        match before {
            // Without the signal it met its expectations: so must it now.
            Some(b) if b.as_expected => {
                if let Some(mut info) = judge(ctx, r, summary, resp, &[], &identity)? {
                    info.message = format!("in flight when SIGTERM came: {}", info.message);
                    in_flight.push(info);
                }
            }
            // It did not (a service with a timeout bug): the same status is the same answer.
            Some(b) if b.status != resp.status => in_flight.push(FailInfo {
                message: format!(
                    "{} ({summary}) was in flight when SIGTERM came and was answered {}; without the signal the same request was answered {}",
                    r.name, resp.status, b.status
                ),
                expected: format!("{}, as without the signal", b.status),
                actual: resp.status.to_string(),
                ..Default::default()
            }),
            _ => {}
        }
    }
    ctx.scope.remove(BURST_INDEX);
    let mut problems: Vec<FailInfo> = Vec::new();
    let lost = in_flight.len();
    if let Some(mut first) = in_flight.into_iter().next() {
        if lost > 1 {
            first.message = format!(
                "{} (and {} more of the {} in flight)",
                first.message,
                lost - 1,
                answers.len()
            );
        }
        problems.push(first);
    }
    if after.exited_after.is_none() {
        problems.push(FailInfo {
            message: format!(
                "your service was still running {} after SIGTERM",
                humantime::format_duration(p.exits_within)
            ),
            expected: format!(
                "every process of the service gone within {} of SIGTERM",
                humantime::format_duration(p.exits_within)
            ),
            actual: "still running".into(),
            log_tail: ctx.service.log_tail(LOG_TAIL_LINES),
            ..Default::default()
        });
    }
    if let Ok(resp) = &after.sent.response {
        if resp.status != 503 {
            problems.push(FailInfo {
                message: format!(
                    "{} ({after_summary}), sent on a new connection {} after SIGTERM while the requests in flight were still waiting, was answered {} after {}: the service kept taking new work after the signal",
                    p.after_signal.name,
                    millis(p.after_signal.at),
                    resp.status,
                    millis(after.answered_after)
                ),
                expected: "the connection refused, or a 503".into(),
                actual: format!("{}", resp.status),
                ..Default::default()
            });
        }
    }
    if problems.is_empty() && !after.draining {
        // Refused, but after the drain had ended: nothing was seen of new work during one.
        return Err(Failure::Error(format!(
            "the requests in flight were all answered before the new request went out {} after SIGTERM, so whether the service takes new work while it drains could not be seen: the upstream's {} delay was too short for this machine",
            millis(p.after_signal.at),
            millis(p.delay)
        )));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut first = problems.remove(0);
    first
        .evidence
        .extend(problems.into_iter().map(|p| format!("also: {}", p.message)));
    Err(Failure::Fail(first))
}

/// Starts the service again (`when`: "before the check", "after SIGTERM"). A service that does
/// not come back fails the check (it must start on the state it left); anything else is the
/// grader's error.
pub async fn restart(ctx: &CheckContext<'_>, when: &str) -> Result<Duration, Failure> {
    match ctx.service.restart_service().await {
        Ok(took) => Ok(took),
        Err(StartError::ServiceDidNotStart { message, log_tail }) => Err(Failure::Fail(FailInfo {
            message: format!("{when} the grader started your service again, and {message}"),
            expected: "your service starts again and answers its health check".into(),
            actual: message,
            log_tail,
            ..Default::default()
        })),
        Err(e) => Err(Failure::Error(format!(
            "could not start your service again {when}: {e}"
        ))),
    }
}
