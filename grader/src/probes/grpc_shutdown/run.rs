//! Runs `grpc_shutdown`: a fresh service, a call waiting on the slow upstream, `SIGTERM`, then
//! health polled on new connections, a new call, the call in flight's answer and the exit, all
//! on the grader's clock from the signal.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::params::{CallParams, GrpcShutdown};
use crate::engine::{CheckContext, FailInfo, Failure, LOG_TAIL_LINES};
use crate::grpc::call::{self, CallError, CallSpec, Reply};
use crate::grpc::health::{self, Health};
use crate::grpc::{self, Channel};
use crate::probes::rpc::{self, Sent};
use crate::probes::shutdown::run::{restart, EXTERNAL};
use crate::runtime::{seconds, ServiceState};

const POLL_INTERVAL: Duration = Duration::from_millis(50);
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// A poll sent this close to the end of `serves_for` is not judged: a server that stops right
/// at the bound may cut its answer, and that is not a server that stopped early.
const SERVING_MARGIN: Duration = Duration::from_millis(100);

/// One health poll: when it was sent (after the signal), for which name, and the answer.
struct Poll {
    sent_after: Duration,
    service: String,
    answer: Result<Health, String>,
}

pub async fn run(p: &GrpcShutdown, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    if ctx.service.kind == "external" {
        return Err(Failure::Skip(EXTERNAL.into()));
    }
    restart(ctx, "before the check").await?;
    let outcome = signalled(p, ctx).await;
    // Whatever happened, the run goes on with a service.
    let restarted = restart(ctx, "after SIGTERM").await;
    outcome.and(restarted.map(|_| ()))
}

async fn signalled(p: &GrpcShutdown, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let upstream =
        crate::probes::upstream_calls::run::delay_route(ctx, &p.upstream, &p.route, p.delay)?;
    let address = rpc::address(ctx);
    let channel = rpc::connect(ctx).await?;
    let reflected = rpc::reflect(&channel, &p.service).await?;
    let in_flight_method = rpc::method(&reflected, &p.in_flight.method)?;
    let new_method = rpc::method(&reflected, &p.new_call.method)?;

    // The call in flight, sent now; the signal goes once the upstream holds its request.
    let in_flight = call_on(
        &channel,
        &in_flight_method,
        &p.in_flight,
        p.delay + rpc::CALL_WAIT,
    );
    let service = ctx.service;
    let exits_within = p.exits_within;
    let held = async {
        let waited = Instant::now();
        loop {
            let (now, _) = upstream.in_flight(&p.route).map_err(Failure::Error)?;
            if now > 0 {
                return Ok(());
            }
            if waited.elapsed() > Duration::from_secs(5) {
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "the call {} did not reach {} ({}) within 5 s, so no call was in flight to send SIGTERM during",
                        p.in_flight.method, p.upstream, p.route
                    ),
                    expected: format!("{} asks {} while it runs", p.in_flight.method, p.upstream),
                    actual: "no request arrived".into(),
                    evidence: vec![format!(
                        "{} {} sent, {} of {} ({}) in flight after 5 s",
                        p.in_flight.method, p.in_flight.json, now, p.upstream, p.route
                    )],
                    ..Default::default()
                }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let signal_and_watch = async {
        held.await?;
        let signalled = Instant::now();
        let exit = async {
            let state = service.signal_service(Signal::SIGTERM, exits_within).await;
            (state, signalled.elapsed())
        };
        let polls = poll_health(
            &address,
            &p.service,
            signalled,
            p.serves_for + POLL_INTERVAL * 4,
        );
        let new_call = async {
            tokio::time::sleep_until((signalled + p.new_call_at).into()).await;
            let sent_after = signalled.elapsed();
            let result = match grpc::connect(&address, POLL_TIMEOUT).await {
                Ok(fresh) => call_on(&fresh, &new_method, &p.new_call, rpc::CALL_WAIT).await,
                Err(why) => Err(CallError::Transport(why)),
            };
            (sent_after, result)
        };
        let (exit, polls, new_call) = tokio::join!(exit, polls, new_call);
        Ok::<_, Failure>((exit, polls, new_call))
    };
    let (in_flight_result, watched) = tokio::join!(in_flight, signal_and_watch);
    let step = format!("{} in flight when SIGTERM came", p.in_flight.method);
    record(ctx, &step, &p.in_flight, &in_flight_result);
    let ((exit, exit_after), polls, (new_sent_after, new_result)) = watched?;

    let new_step = format!(
        "{} on a new connection {} after SIGTERM",
        p.new_call.method,
        seconds(new_sent_after)
    );
    record(ctx, &new_step, &p.new_call, &new_result);
    let timeline: Vec<String> = polls
        .iter()
        .map(|poll| {
            format!(
                "{:>6} Check({:?}): {}",
                seconds(poll.sent_after),
                poll.service,
                match &poll.answer {
                    Ok(h) => h.to_string(),
                    Err(why) => why.clone(),
                }
            )
        })
        .collect();
    let fail = |message: String, expected: String, actual: String| {
        Failure::Fail(FailInfo {
            message,
            expected,
            actual,
            evidence: vec![format!("health after SIGTERM:\n{}", timeline.join("\n"))],
            log_tail: service.log_tail(LOG_TAIL_LINES),
        })
    };

    // 1. NOT_SERVING soon, for both names.
    if let Some(poll) = first_still_serving(&polls, &p.service, p.not_serving_within) {
        return Err(fail(
            format!(
                "Check({:?}) still answered SERVING {} after SIGTERM: a load balancer keeps sending calls to a server that is going away",
                poll.service,
                seconds(poll.sent_after)
            ),
            format!("NOT_SERVING within {} of SIGTERM", seconds(p.not_serving_within)),
            format!("SERVING at {}", seconds(poll.sent_after)),
        ));
    }
    // 2. Still serving for a while: every poll sent before `serves_for` is answered.
    if let Some(poll) = polls.iter().find(|poll| {
        poll.sent_after + SERVING_MARGIN < p.serves_for
            && !matches!(poll.answer, Ok(Health::Serving | Health::NotServing))
    }) {
        let got = match &poll.answer {
            Ok(h) => h.to_string(),
            Err(why) => why.clone(),
        };
        return Err(fail(
            format!(
                "Check({:?}) sent {} after SIGTERM got {got}: the server stopped serving before {} had passed",
                poll.service,
                seconds(poll.sent_after),
                seconds(p.serves_for)
            ),
            format!(
                "NOT_SERVING (or SERVING in the first {}) for {} after SIGTERM",
                seconds(p.not_serving_within),
                seconds(p.serves_for)
            ),
            got,
        ));
    }
    let not_serving_seen = polls
        .iter()
        .filter(|poll| matches!(poll.answer, Ok(Health::NotServing)))
        .count();
    if not_serving_seen == 0 {
        return Err(fail(
            "no health check after SIGTERM answered NOT_SERVING".into(),
            format!(
                "NOT_SERVING within {} of SIGTERM",
                seconds(p.not_serving_within)
            ),
            format!("{} polls, none NOT_SERVING", polls.len()),
        ));
    }
    // 3. A new call while draining is answered.
    match &new_result {
        Ok(reply) if reply.code == tonic::Code::Ok => {}
        other => {
            return Err(fail(
                format!(
                    "{new_step}: {}, while the server should still serve",
                    describe(other)
                ),
                "OK: calls that arrive in the first second after SIGTERM still get their answers"
                    .into(),
                describe(other),
            ))
        }
    }
    // 4. The call in flight finishes normally.
    match &in_flight_result {
        Ok(reply) if reply.code == tonic::Code::Ok => {}
        other => {
            return Err(fail(
                format!("{step}: {}", describe(other)),
                "OK: a unary call running when SIGTERM came finishes normally".into(),
                describe(other),
            ))
        }
    }
    // 5. The exit.
    match exit {
        Ok(ServiceState::Exited { code: Some(0), .. }) => {}
        Ok(ServiceState::Exited { code, signal }) => {
            return Err(fail(
                format!(
                    "after SIGTERM your service {}",
                    crate::engine::exit_words(code, signal)
                ),
                "exit status 0".into(),
                crate::engine::exit_words(code, signal),
            ))
        }
        Ok(ServiceState::Running) => {
            return Err(fail(
                format!(
                    "your service was still running {} after SIGTERM",
                    seconds(p.exits_within)
                ),
                format!("exit with status 0 within {}", seconds(p.exits_within)),
                "still running".into(),
            ))
        }
        Err(why) => return Err(Failure::Error(why)),
    }
    let first_not_serving = polls
        .iter()
        .find(|poll| matches!(poll.answer, Ok(Health::NotServing)))
        .map(|poll| poll.sent_after)
        .unwrap_or_default();
    let last_answer = polls
        .iter()
        .filter(|poll| poll.answer.is_ok())
        .map(|poll| poll.sent_after)
        .max()
        .unwrap_or_default();
    ctx.measured(format!(
        "NOT_SERVING from {}, health answered until at least {}, the call in flight answered OK, exit 0 after {}",
        seconds(first_not_serving),
        seconds(last_answer),
        seconds(exit_after)
    ));
    Ok(())
}

/// The first poll sent after `bound` that still got SERVING. The overall name is looked at
/// before the service's, so a server serving both is reported by the same name whichever of a
/// round's two polls happened to be the first past the bound.
fn first_still_serving<'p>(polls: &'p [Poll], service: &str, bound: Duration) -> Option<&'p Poll> {
    let for_name = |name: &str| {
        polls.iter().find(|poll| {
            poll.service == name
                && poll.sent_after > bound
                && matches!(poll.answer, Ok(Health::Serving))
        })
    };
    for_name("").or_else(|| for_name(service))
}

fn describe(result: &Result<Reply, CallError>) -> String {
    match result {
        Ok(reply) => reply.status_line(),
        Err(e) => e.to_string(),
    }
}

async fn call_on(
    channel: &Channel,
    method: &prost_reflect::MethodDescriptor,
    params: &CallParams,
    wait: Duration,
) -> Result<Reply, CallError> {
    let spec = CallSpec {
        method,
        request: &params.json,
        metadata: &[],
        deadline: None,
    };
    call::unary(channel, &spec, wait).await
}

fn record(
    ctx: &mut CheckContext<'_>,
    step: &str,
    params: &CallParams,
    result: &Result<Reply, CallError>,
) {
    let sent = Sent {
        step,
        method: &params.method,
        request: &params.json,
        metadata: &[],
        deadline: None,
    };
    rpc::record(ctx, &sent, result);
}

/// Polls `Check("")` and `Check(service)` on a new connection each time, until `until` after the
/// signal.
async fn poll_health(
    address: &str,
    service: &str,
    signalled: Instant,
    until: Duration,
) -> Vec<Poll> {
    let mut polls = Vec::new();
    while signalled.elapsed() < until {
        let round = Instant::now();
        let channel = grpc::connect(address, POLL_TIMEOUT).await;
        for name in ["", service] {
            let sent_after = signalled.elapsed();
            let answer = match &channel {
                Ok(channel) => health::check(channel, name, POLL_TIMEOUT).await,
                Err(why) => Err(why.clone()),
            };
            polls.push(Poll {
                sent_after,
                service: name.to_string(),
                answer,
            });
        }
        tokio::time::sleep_until((round + POLL_INTERVAL).into()).await;
    }
    polls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(ms: u64, service: &str, answer: Health) -> Poll {
        Poll {
            sent_after: Duration::from_millis(ms),
            service: service.into(),
            answer: Ok(answer),
        }
    }

    #[test]
    fn a_server_serving_both_names_is_reported_by_the_overall_name() {
        let bound = Duration::from_millis(500);
        // The round's first poll went out just before the bound, its second just after.
        let polls = [
            poll(499, "", Health::Serving),
            poll(501, "shop.v1.Shop", Health::Serving),
            poll(550, "", Health::Serving),
            poll(551, "shop.v1.Shop", Health::Serving),
        ];
        let found = first_still_serving(&polls, "shop.v1.Shop", bound).unwrap();
        assert_eq!(
            (found.service.as_str(), found.sent_after.as_millis()),
            ("", 550)
        );
    }

    #[test]
    fn only_the_service_name_still_serving_is_caught() {
        let bound = Duration::from_millis(500);
        let polls = [
            poll(550, "", Health::NotServing),
            poll(551, "shop.v1.Shop", Health::Serving),
        ];
        let found = first_still_serving(&polls, "shop.v1.Shop", bound).unwrap();
        assert_eq!(found.service, "shop.v1.Shop");
        let drained = [
            poll(450, "shop.v1.Shop", Health::Serving),
            poll(550, "", Health::NotServing),
            poll(551, "shop.v1.Shop", Health::NotServing),
        ];
        assert!(first_still_serving(&drained, "shop.v1.Shop", bound).is_none());
    }
}
