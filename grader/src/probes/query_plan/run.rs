//! `query_plan`: drives an endpoint, then judges the statements the service ran for it (from
//! `pg_stat_statements`): their generic plans (no Seq Scan on a large table, no Sort under a
//! Limit, no index scan that filters afterwards or skips the index's first column), the shared
//! buffers per request against a budget, and the number of statements per request (N+1).

use super::params::QueryPlan;
use crate::engine::step::build_request;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::db::{self, Statement};
use crate::probes::upstream_calls::run::{judge as judge_response, Seen};

pub async fn run(p: &QueryPlan, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let client = db::connect(ctx).await?;
    db::sample(&client, &p.sample, ctx).await?;
    db::reset(&client).await?;
    let mut sent = Vec::new();
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;
    for round in 0..p.repeat {
        for r in &p.requests {
            let req = build_request(ctx, &r.spec)?;
            let summary = format!("{} {}", req.method, &req.url[url::Position::BeforePath..]);
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
                sent.push(summary);
            }
        }
    }
    let requests = (p.requests.len() as u32 * p.repeat) as f64;
    let what = sent.join(", ");
    let stmts = db::statements(&client).await?;
    if stmts.is_empty() {
        return Err(Failure::Fail(FailInfo {
            message: format!("{what}: no statement reached PostgreSQL"),
            expected: "the endpoint to read its data from the database (DATABASE_URL)".into(),
            actual: "pg_stat_statements recorded no SELECT, INSERT, UPDATE or DELETE from your service while it answered".into(),
            ..Default::default()
        }));
    }
    let buffers: i64 = stmts.iter().map(Statement::buffers).sum();
    let calls: i64 = stmts.iter().map(|s| s.calls).sum();
    let per_request = buffers as f64 / requests;
    let statements_per_request = calls as f64 / requests;
    let mut evidence = vec![format!(
        "{} request(s) to {what}: {} statement call(s), {per_request:.1} shared buffers (hit + read) per request",
        requests as u64, calls
    )];
    evidence.extend(stmts.iter().map(|s| format!("statement: {}", s.line())));

    if let Some(max) = p.max_statements_per_request {
        if statements_per_request > max + 1e-9 {
            let worst = stmts.iter().max_by_key(|s| s.calls).expect("non-empty");
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{what}: {statements_per_request:.1} statements per request, at most {max} expected; \"{}\" ran {} times for {} request(s)",
                    db::normalise(&worst.query),
                    worst.calls,
                    requests as u64
                ),
                expected: format!("at most {max} statements per request"),
                actual: format!(
                    "{statements_per_request:.1} statements per request ({calls} calls for {} requests)",
                    requests as u64
                ),
                evidence,
                ..Default::default()
            }));
        }
    }

    let mut problems: Vec<String> = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    let cat = db::catalog(&client).await?;
    for s in &stmts {
        match db::generic_plan(&client, &s.query).await {
            Ok(plan) => {
                let j = db::judge(&plan, &cat, p.large_table_rows);
                plans.push(format!("plan of: {}", db::normalise(&s.query)));
                plans.extend(j.tree.iter().map(|l| format!("  {l}")));
                if p.plan {
                    problems.extend(
                        j.problems
                            .iter()
                            .map(|x| format!("{x} — in: {}", db::normalise(&s.query))),
                    );
                    for h in j.hints {
                        if !hints.contains(&h) {
                            hints.push(h);
                        }
                    }
                }
            }
            Err(e) => plans.push(format!(
                "plan of: {}: the grader could not re-plan it ({e})",
                db::normalise(&s.query)
            )),
        }
    }
    evidence.extend(plans);
    if !problems.is_empty() {
        evidence.extend(hints.iter().map(|h| format!("would help: {h}")));
        return Err(Failure::Fail(FailInfo {
            message: format!("{what}: {}", problems[0]),
            expected: "every statement served by an index: no Seq Scan of a large table, no Sort under a Limit, no rows filtered after the index".into(),
            actual: problems.join("\n"),
            evidence,
            ..Default::default()
        }));
    }
    if let Some(max) = p.max_buffers_per_request {
        let allowed = max * (1.0 + p.tolerance);
        if per_request > allowed {
            evidence.extend(hints.iter().map(|h| format!("would help: {h}")));
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{what}: {per_request:.0} shared buffers per request, the budget is {max:.0} (+{:.0}%)",
                    p.tolerance * 100.0
                ),
                expected: format!(
                    "at most {max:.0} shared buffers (8 kB pages, hit + read) per request, {allowed:.0} with tolerance"
                ),
                actual: format!("{per_request:.1} per request ({buffers} for {} requests)", requests as u64),
                evidence,
                ..Default::default()
            }));
        }
    }
    let budget = p
        .max_buffers_per_request
        .map(|max| format!(" (budget {max:.0})"))
        .unwrap_or_default();
    let statement_limit = p
        .max_statements_per_request
        .map(|max| format!(" (at most {max})"))
        .unwrap_or_default();
    ctx.measured(format!(
        "{per_request:.1} shared buffers per request{budget}, {statements_per_request:.1} statements per request{statement_limit}"
    ));
    Ok(())
}
