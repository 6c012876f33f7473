//! `query_plan`: drives an endpoint, then judges the statements the service ran for each request,
//! from their executed plans (the grader's `auto_explain` log, see `probes::db`): the plans (no
//! Seq Scan on a large table, no Sort under a Limit, no index scan that throws rows away or skips
//! the index's first column), the shared buffers per request against a budget, and the number of
//! statements per request (N+1). Responses are compared with answers the grader computes from
//! its own data set.

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
    if log.is_none() {
        return Ok(());
    }
    let requests = per_request.len();
    let what = sent.join(", ");
    let all: Vec<&Execution> = per_request.iter().flatten().collect();
    if all.is_empty() {
        return Err(db::nothing_measured(&client, &what).await);
    }
    let texts = db::normalised_texts(&client, &all).await?;
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

    let cat = db::catalog(&client).await?;
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
        "{most_buffers:.1} shared buffers per request{budget_text}, {most_statements:.1} statements per request{statement_limit}"
    ));
    Ok(())
}
