//! `query_plan`: drives an endpoint, then judges the statements the service ran for each request,
//! from their executed plans (the grader's `auto_explain` log, see `probes::db`): the plans (no
//! Seq Scan on a large table, no Sort under a Limit, no index scan that throws rows away or skips
//! the index's first column), the shared buffers per request against a budget, and the number of
//! statements per request (N+1). Responses are compared with answers the grader computes from
//! its own data set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::params::QueryPlan;
use crate::engine::step::build_request;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::db::{self, answers, Execution, Statement};
use crate::probes::upstream_calls::run::{judge as judge_response, Seen};

pub async fn run(p: &QueryPlan, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let client = db::connect(ctx).await?;
    db::sample(&client, &p.sample, ctx).await?;
    let log = match p.measures() {
        true => Some(db::Log::open(&client).await?),
        false => None,
    };
    if log.is_some() {
        db::reset(&client).await?;
    }
    let mut sent = Vec::new();
    let mut per_request: Vec<Vec<Execution>> = Vec::new();
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;
    for round in 0..p.repeat {
        for (i, r) in p.requests.iter().enumerate() {
            let req = build_request(ctx, &r.spec)?;
            let summary = format!("{} {}", req.method, &req.url[url::Position::BeforePath..]);
            let mark = match &log {
                Some(l) => Some(l.mark(&client).await?),
                None => None,
            };
            let resp = ctx.send(&r.name, req).await?;
            if round > 0 {
                // One round of exchanges is enough for the report.
                ctx.exchanges.pop();
            }
            if let Some(info) = judge_response(ctx, r, &summary, &resp, &[] as &[Seen], &identity)?
            {
                return Err(Failure::Fail(info));
            }
            if round == 0 {
                let doc: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
                for a in p.answers.iter().filter(|a| a.at == i + 1) {
                    if let Some(w) =
                        answers::compare(a, &doc, &ctx.scope).map_err(Failure::Error)?
                    {
                        return Err(Failure::Fail(FailInfo {
                            message: format!("{summary}: {}", w.message),
                            expected: w.expected,
                            actual: w.actual,
                            ..Default::default()
                        }));
                    }
                }
                sent.push(summary);
            }
            if let (Some(l), Some(m)) = (&log, mark) {
                per_request.push(l.since(&client, &m).await?);
            }
        }
    }
    if !p.unchanged.is_empty() {
        db::unchanged(&client, &p.unchanged).await?;
    }
    let Some(log) = &log else {
        return Ok(());
    };
    let what = sent.join(", ");
    let verdict = judge(p, ctx, &client, &per_request, &what, None).await;
    let Err(Failure::Fail(_)) = verdict else {
        return verdict;
    };
    // Before failing, make sure what was measured is the requests' own work. Statements the
    // service also runs with no request in flight (an outbox relay's poll, a cache refresher) are
    // background work that happened to land in a window: they are left out, and the windows judged
    // again. The service's own statements alone decide; if nothing is left, the first verdict
    // stands (a check that measured nothing has not passed).
    let idle = log_idle_window(log, &client).await?;
    if idle.is_empty() {
        return verdict;
    }
    let everything: Vec<&Execution> = per_request.iter().flatten().chain(&idle).collect();
    let texts = db::normalised_texts(&client, &everything).await?;
    let background: BTreeSet<String> = idle.iter().map(|e| shape(e, &texts)).collect();
    let own: Vec<Vec<Execution>> = per_request
        .iter()
        .map(|window| {
            window
                .iter()
                .filter(|e| !background.contains(&shape(e, &texts)))
                .cloned()
                .collect()
        })
        .collect();
    if own.iter().all(Vec::is_empty) {
        return verdict;
    }
    let note = format!(
        "left out, as the service also ran them with no request in flight ({} statement(s) in {}): {}",
        idle.len(),
        humantime::format_duration(IDLE_WINDOW),
        background.into_iter().collect::<Vec<_>>().join(" | ")
    );
    judge(p, ctx, &client, &own, &what, Some(note)).await
}

/// Judges the statements each request ran (`per_request`, one window per request sent): their
/// number, their plans and the pages they read. `note` joins the evidence.
async fn judge(
    p: &QueryPlan,
    ctx: &mut CheckContext<'_>,
    client: &tokio_postgres::Client,
    per_request: &[Vec<Execution>],
    what: &str,
    note: Option<String>,
) -> Result<(), Failure> {
    let requests = per_request.len();
    let all: Vec<&Execution> = per_request.iter().flatten().collect();
    if all.is_empty() {
        return Err(db::nothing_measured(client, what).await);
    }
    let texts = db::normalised_texts(client, &all).await?;
    let stmts = db::group(&all, &texts);
    let buffers: i64 = all.iter().map(|e| e.buffers()).sum();
    let calls = all.len();
    let request_buffers: Vec<i64> = per_request
        .iter()
        .map(|e| e.iter().map(Execution::buffers).sum())
        .collect();
    let most_buffers = request_buffers.iter().copied().max().unwrap_or(0) as f64;
    let most_statements = per_request.iter().map(Vec::len).max().unwrap_or(0) as f64;
    let mut evidence = vec![format!(
        "{requests} request(s) to {what}: {calls} statement call(s), {:.1} shared buffers (hit + read) per request on average, {most_buffers:.0} at most",
        buffers as f64 / requests as f64
    )];
    let left_out = match &note {
        Some(_) => ", background statements left out",
        None => "",
    };
    evidence.extend(note);
    evidence.extend(stmts.iter().map(|s| format!("statement: {}", s.line())));

    if let Some(max) = p.max_statements_per_request {
        if most_statements > max + 1e-9 {
            let worst: &Statement = stmts.iter().max_by_key(|s| s.calls).expect("non-empty");
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{what}: {most_statements:.0} statements for one request, at most {max} expected; \"{}\" ran {} times for {requests} request(s)",
                    db::normalise(&worst.query),
                    worst.calls,
                ),
                expected: format!("at most {max} statements per request"),
                actual: format!(
                    "{most_statements:.0} statements for one request ({calls} calls for {requests} requests)"
                ),
                evidence,
                ..Default::default()
            }));
        }
    }

    let cat = db::catalog(client).await?;
    let (plans, judged) = db::judge_statements(&stmts, &cat, p.large_table_rows);
    evidence.extend(plans);
    let hints: Vec<String> = judged
        .hints
        .iter()
        .map(|h| format!("would help: {h}"))
        .collect();
    if p.plan && !judged.problems.is_empty() {
        evidence.extend(hints);
        return Err(Failure::Fail(FailInfo {
            message: format!("{what}: {}", judged.problems[0]),
            expected: "every statement served by an index: no Seq Scan of a large table, no Sort under a Limit, no rows thrown away after the index".into(),
            actual: judged.problems.join("\n"),
            evidence,
            ..Default::default()
        }));
    }
    let mut budget_text = String::new();
    if let Some(budget) = &p.max_buffers_per_request {
        let max = budget.value(&ctx.scope).map_err(Failure::Error)?;
        let allowed = max * (1.0 + p.tolerance);
        budget_text = format!(" (budget {max:.0})");
        if most_buffers > allowed {
            evidence.extend(hints);
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{what}: {most_buffers:.0} shared buffers per request, the budget is {max:.0} (+{:.0}%){}",
                    p.tolerance * 100.0,
                    budget.origin()
                ),
                expected: format!(
                    "at most {max:.0} shared buffers (8 kB pages, hit + read) per request, {allowed:.0} with tolerance"
                ),
                actual: format!(
                    "{most_buffers:.0} for one request ({buffers} for {requests} requests)"
                ),
                evidence,
                ..Default::default()
            }));
        }
    }
    let statement_limit = p
        .max_statements_per_request
        .map(|max| format!(" (at most {max})"))
        .unwrap_or_default();
    ctx.measured(format!(
        "{most_buffers:.1} shared buffers per request{budget_text}, {most_statements:.1} statements per request{statement_limit}{left_out}"
    ));
    Ok(())
}

/// How long the service is watched with no request in flight, when what its requests ran fails
/// the check: longer than the poll interval of the usual background worker (an outbox relay, a
/// scheduler), short enough to cost little (only a failing check pays it).
const IDLE_WINDOW: Duration = Duration::from_secs(2);

/// The statements the service runs on its own, in [`IDLE_WINDOW`] with no request from the
/// grader.
async fn log_idle_window(
    log: &db::Log,
    client: &tokio_postgres::Client,
) -> Result<Vec<Execution>, Failure> {
    let mark = log.mark(client).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    log.since(client, &mark).await
}

/// A statement's normalised text: the same statement with other parameters has the same shape.
fn shape(execution: &Execution, texts: &BTreeMap<i64, String>) -> String {
    let text = execution
        .query_id
        .and_then(|q| texts.get(&q))
        .unwrap_or(&execution.text);
    db::normalise(text)
}
