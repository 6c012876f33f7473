//! Runs `grpc_deadline`: one call per deadline, each judged at both ends.

use std::time::{Duration, Instant};

use super::params::GrpcDeadline;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::grpc::call::{self, CallSpec};
use crate::grpc::code_name;
use crate::probes::rpc::{self, Sent};
use crate::runtime::seconds;

pub async fn run(p: &GrpcDeadline, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let upstream =
        crate::probes::upstream_calls::run::delay_route(ctx, &p.upstream, &p.route, p.delay)?;
    let channel = rpc::connect(ctx).await?;
    let reflected = rpc::reflect(&channel, &p.service).await?;
    let method = rpc::method(&reflected, &p.method)?;
    let mut figures = Vec::new();
    for (round, deadline) in p.deadlines.iter().copied().enumerate() {
        let step = format!(
            "a call with a deadline of {} while the upstream takes {}",
            seconds(deadline),
            seconds(p.delay)
        );
        let spec = CallSpec {
            method: &method,
            request: &p.json,
            metadata: &[],
            deadline: Some(deadline),
        };
        let started = Instant::now();
        // Waits well past the deadline: a server that ignores it answers late, and that is what
        // the check is there to see.
        let result = call::unary(&channel, &spec, p.delay + rpc::CALL_WAIT).await;
        let sent = Sent {
            step: &step,
            method: &p.method,
            request: &p.json,
            metadata: &[],
            deadline: Some(deadline),
        };
        let recorded = rpc::record(ctx, &sent, &result);
        if round > 0 {
            // One exchange in the report: the latest round's, which is the one that failed when
            // one did (the earlier round's is the exchange just before it).
            ctx.exchanges.remove(recorded - 1);
        }
        let bound = deadline + p.slack;
        let reply = match result {
            Ok(reply) => reply,
            Err(call::CallError::NoAnswer(waited)) => {
                return Err(late(
                    &step,
                    deadline,
                    bound,
                    format!("no status within {}", seconds(waited)),
                ))
            }
            Err(e) => return Err(rpc::call_failure(ctx, &step, &p.method, e).await),
        };
        let ended = reply.elapsed;
        match reply.code {
            tonic::Code::DeadlineExceeded if ended <= bound => {}
            tonic::Code::Ok if p.ok_before_deadline && ended <= deadline => {}
            tonic::Code::Ok if ended > deadline => {
                return Err(late(
                    &step,
                    deadline,
                    bound,
                    format!(
                        "OK after {}, when the caller had given up at {}",
                        seconds(ended),
                        seconds(deadline)
                    ),
                ))
            }
            tonic::Code::DeadlineExceeded => {
                return Err(late(
                    &step,
                    deadline,
                    bound,
                    format!("DEADLINE_EXCEEDED only after {}", seconds(ended)),
                ))
            }
            other => {
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "{step}: expected DEADLINE_EXCEEDED, got {}",
                        reply.status_line()
                    ),
                    expected: expected_call(p, deadline, bound),
                    actual: format!("{} after {}", code_name(other), seconds(ended)),
                    ..Default::default()
                }))
            }
        }
        // The upstream request made for this call must be closed by the bound.
        let wait_until = started + bound + Duration::from_millis(100);
        tokio::time::sleep_until(wait_until.into()).await;
        let ended_calls = upstream
            .ended_since(&p.route, started)
            .map_err(Failure::Error)?;
        let (in_flight, _) = upstream.in_flight(&p.route).map_err(Failure::Error)?;
        let arrived = upstream.calls(&p.route, None).count;
        if ended_calls.is_empty() && in_flight == 0 {
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{step}: the service answered {} without asking {} ({})",
                    code_name(reply.code),
                    p.upstream,
                    p.route
                ),
                expected: format!("a request to {} ({}) for this call", p.upstream, p.route),
                actual: format!("no request reached {} during the call", p.upstream),
                ..Default::default()
            }));
        }
        let late_calls: Vec<String> = ended_calls
            .iter()
            .filter(|e| e.waited_out || e.ended_at > started + bound)
            .map(|e| {
                format!(
                    "a request that arrived {} after the call began stayed open until {} after it",
                    seconds(e.arrived_at - started),
                    seconds(e.ended_at - started)
                )
            })
            .collect();
        if in_flight > 0 || !late_calls.is_empty() {
            let mut actual = late_calls;
            if in_flight > 0 {
                actual.push(format!(
                    "{in_flight} request{} still open {} after the call began",
                    if in_flight == 1 { " was" } else { "s were" },
                    seconds(started.elapsed())
                ));
            }
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{step}: the call ended, but its request to {} ({}) was still open {} after the deadline",
                    p.upstream,
                    p.route,
                    seconds(p.slack)
                ),
                expected: format!(
                    "the request to {} abandoned (its connection closed) by {} after the call began: the deadline passed down",
                    p.upstream,
                    seconds(bound)
                ),
                actual: actual.join("\n"),
                evidence: vec![format!(
                    "{} answers after {}; {arrived} request(s) reached it in this check",
                    p.upstream,
                    seconds(p.delay)
                )],
                ..Default::default()
            }));
        }
        let closed = ended_calls
            .iter()
            .map(|e| e.ended_at - started)
            .max()
            .unwrap_or_default();
        figures.push(format!(
            "deadline {}: {} after {}, the upstream request closed after {}",
            seconds(deadline),
            code_name(reply.code),
            seconds(ended),
            seconds(closed)
        ));
    }
    for line in figures {
        ctx.measured(line);
    }
    Ok(())
}

fn expected_call(p: &GrpcDeadline, deadline: Duration, bound: Duration) -> String {
    let early = if p.ok_before_deadline {
        format!(", or OK before {}", seconds(deadline))
    } else {
        String::new()
    };
    format!("DEADLINE_EXCEEDED by {}{early}", seconds(bound))
}

fn late(step: &str, deadline: Duration, bound: Duration, actual: String) -> Failure {
    Failure::Fail(FailInfo {
        message: format!(
            "{step}: the call did not end by {} after it began (the deadline plus {}): {actual}",
            seconds(bound),
            seconds(bound - deadline)
        ),
        expected: format!("DEADLINE_EXCEEDED by {}", seconds(bound)),
        actual,
        ..Default::default()
    })
}
