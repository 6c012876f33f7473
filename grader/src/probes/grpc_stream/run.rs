//! Runs `grpc_stream`.

use std::time::Duration;

use serde_json::Value;

use super::params::{GrpcStream, Order, Pace};
use crate::dataset::SERVICE_ROLE;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::grpc::call::{self, CallError, CallSpec, PacedStream, Reply};
use crate::pg::db_error;
use crate::probes::db::{self, answers};
use crate::probes::rpc::{self, Sent};
use crate::runtime::seconds;

pub async fn run(p: &GrpcStream, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let client = db::connect(ctx).await?;
    db::sample(&client, &p.sample, ctx).await?;
    let channel = rpc::connect(ctx).await?;
    let reflected = rpc::reflect(&channel, &p.service).await?;
    let method = rpc::method(&reflected, &p.method)?;
    let spec = CallSpec {
        method: &method,
        request: &p.json,
        metadata: &[],
        deadline: None,
    };
    if let Some(order) = &p.order {
        let step = format!("the first {} messages of {}", order.read, p.method);
        let stream = read(ctx, p, &step, &spec, order.read, Duration::ZERO).await?;
        judge_order(ctx, p, &step, order, &stream)?;
    }
    if let Some(pace) = &p.pace {
        db::reset(&client).await?;
        let step = format!(
            "{}: {} messages read, then nothing for {}, then cancelled",
            p.method,
            pace.read,
            seconds(pace.pause)
        );
        let stream = read(ctx, p, &step, &spec, pace.read, pace.pause).await?;
        if stream.received.len() < pace.read {
            return Err(ended_early(&step, pace.read, &stream));
        }
        tokio::time::sleep(pace.after_cancel).await;
        db::wait_idle(&client).await?;
        judge_pace(ctx, &step, pace, &client).await?;
    }
    Ok(())
}

/// Opens the stream, reads `count` messages, pauses, cancels; records the exchange (its
/// messages as a JSON array).
async fn read(
    ctx: &mut CheckContext<'_>,
    p: &GrpcStream,
    step: &str,
    spec: &CallSpec<'_>,
    count: usize,
    pause: Duration,
) -> Result<PacedStream, Failure> {
    let channel = rpc::connect(ctx).await?;
    let result = call::paced_server_stream(&channel, spec, count, pause, rpc::CALL_WAIT).await;
    let as_reply = result.as_ref().map(|stream| Reply {
        code: stream.ended.as_ref().map_or(tonic::Code::Ok, |r| r.code),
        message: stream
            .ended
            .as_ref()
            .map_or_else(|| "(cancelled by the grader)".into(), |r| r.message.clone()),
        response: Some(Value::Array(stream.received.clone())),
        details: stream
            .ended
            .as_ref()
            .map_or(call::Details::Absent, |r| r.details.clone()),
        elapsed: stream.elapsed,
    });
    let sent = Sent {
        step,
        method: &p.method,
        request: &p.json,
        metadata: &[],
        deadline: None,
    };
    rpc::record(ctx, &sent, &as_reply.map_err(CallError::clone));
    match result {
        Ok(stream) => Ok(stream),
        Err(e) => Err(rpc::call_failure(ctx, step, &p.method, e).await),
    }
}

fn ended_early(step: &str, wanted: usize, stream: &PacedStream) -> Failure {
    let status = stream
        .ended
        .as_ref()
        .map_or_else(|| "OK".to_string(), Reply::status_line);
    Failure::Fail(FailInfo {
        message: format!(
            "{step}: the stream ended with {status} after {} message(s)",
            stream.received.len()
        ),
        expected: format!("at least {wanted} messages"),
        actual: format!("{} messages, then {status}", stream.received.len()),
        ..Default::default()
    })
}

fn judge_order(
    ctx: &mut CheckContext<'_>,
    p: &GrpcStream,
    step: &str,
    order: &Order,
    stream: &PacedStream,
) -> Result<(), Failure> {
    if let Some(reply) = &stream.ended {
        if reply.code != tonic::Code::Ok {
            return Err(ended_early(step, order.read, stream));
        }
    }
    let doc = Value::Array(stream.received.clone());
    if let Some(w) = answers::compare(&order.answer, &doc, &ctx.scope).map_err(Failure::Error)? {
        return Err(Failure::Fail(FailInfo {
            message: format!("{step}: {}", w.message),
            expected: w.expected,
            actual: w.actual,
            ..Default::default()
        }));
    }
    ctx.measured(format!(
        "the first {} messages of {} match the grader's data, in order",
        stream.received.len(),
        p.method
    ));
    Ok(())
}

async fn judge_pace(
    ctx: &mut CheckContext<'_>,
    step: &str,
    pace: &Pace,
    client: &tokio_postgres::Client,
) -> Result<(), Failure> {
    let tables = pace
        .tables
        .iter()
        .map(|t| regex::escape(t))
        .collect::<Vec<_>>()
        .join("|");
    let rows = client
        .query(
            "SELECT s.query, s.calls, s.rows FROM pg_stat_statements s
             WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND s.userid = (SELECT oid FROM pg_roles WHERE rolname = $1)
               AND (s.query ~* ('\\m(' || $2 || ')\\M') OR s.query ~* '^\\s*fetch\\M')
             ORDER BY s.rows DESC",
            &[&SERVICE_ROLE, &tables],
        )
        .await
        .map_err(|e| Failure::Error(format!("reading pg_stat_statements: {}", db_error(&e))))?;
    let statements: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let total: i64 = statements.iter().map(|(_, _, rows)| rows).sum();
    let lines: Vec<String> = statements
        .iter()
        .take(8)
        .map(|(query, calls, rows)| {
            format!(
                "{rows} rows in {calls} call(s): {}",
                crate::engine::assert::shorten(&db::normalise(query), 140)
            )
        })
        .collect();
    if statements.is_empty() {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "{step}: no completed statement on {} (and no cursor FETCH) of your service reached PostgreSQL while the stream was read",
                pace.tables.join(", ")
            ),
            expected: "the messages read from PostgreSQL page by page while the stream is written (a statement the client's cancellation aborted is not recorded: pages end, so they are)".into(),
            actual: "nothing measured: the orders came from memory, or from one statement that never completed".into(),
            ..Default::default()
        }));
    }
    if total > pace.max_rows {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "{step}: your service's statements returned {total} rows, more than {}: it read ahead of the reader (or went on after the cancellation)",
                pace.max_rows
            ),
            expected: format!(
                "at most {} rows read: pages of at most 1,000, the next read only once the last one is written, none after the cancellation",
                pace.max_rows
            ),
            actual: format!("{total} rows"),
            evidence: lines,
            ..Default::default()
        }));
    }
    ctx.measured(format!(
        "{total} rows read by your service's statements (budget {}), in {} statement(s)",
        pace.max_rows,
        statements.iter().map(|(_, calls, _)| calls).sum::<i64>()
    ));
    Ok(())
}
