//! `deep_pages`: walks a list through its next links and compares the shared buffers of page N
//! with page 1's. Keyset pagination (`WHERE (created_at, id) < (...)`) reads the same few pages
//! wherever it is; OFFSET reads and throws away every row before the page.

use serde_json::Value;

use super::params::DeepPages;
use crate::engine::step::build_request;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::db::{self, Statement};
use crate::probes::upstream_calls::run::{judge as judge_response, Seen};
use crate::spec::RequestSpec;

pub async fn run(p: &DeepPages, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let client = db::connect(ctx).await?;
    db::sample(&client, &p.sample, ctx).await?;
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;

    db::reset(&client).await?;
    let mut spec: RequestSpec = p.request.spec.clone();
    let mut first: Option<(i64, Vec<Statement>)> = None;
    for page in 1..=p.page {
        if page == p.page {
            db::reset(&client).await?;
        }
        let req = build_request(ctx, &spec)?;
        let summary = format!("{} {}", req.method, &req.url[url::Position::BeforePath..]);
        let resp = ctx.send(&format!("page {page}"), req).await?;
        // Keep the report short: page 1 and the deep page.
        if page > 1 && page < p.page {
            ctx.exchanges.pop();
        }
        if let Some(info) =
            judge_response(ctx, &p.request, &summary, &resp, &[] as &[Seen], &identity)?
        {
            return Err(Failure::Fail(info));
        }
        if page == 1 {
            let stmts = db::statements(&client).await?;
            let b: i64 = stmts.iter().map(Statement::buffers).sum();
            first = Some((b, stmts));
        }
        if page == p.page {
            break;
        }
        let doc: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let next = p
            .next
            .path
            .query(&doc)
            .at_most_one()
            .ok()
            .flatten()
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(next) = next.filter(|n| !n.is_empty()) else {
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "page {page} ({summary}) has no next link at {}, but the data set has more than {} pages for this list",
                    p.next.text, p.page
                ),
                expected: format!("a next link at {} up to page {}", p.next.text, p.page),
                actual: format!("none on page {page}"),
                ..Default::default()
            }));
        };
        spec.path = if next.starts_with("http://") || next.starts_with("https://") {
            ctx.url(&next)?[url::Position::BeforePath..].to_string()
        } else {
            next
        };
        // A next link is data from the service, not a template.
        spec.path = spec.path.replace("{{", "%7B%7B");
        spec.body = None;
    }
    let deep = db::statements(&client).await?;
    let (b1, first_stmts) = first.expect("page 1 was measured");
    let bn: i64 = deep.iter().map(Statement::buffers).sum();
    let ratio = bn as f64 / (b1.max(1)) as f64;
    let mut evidence = vec![format!(
        "page 1: {b1} shared buffers; page {}: {bn} shared buffers ({ratio:.1}×)",
        p.page
    )];
    evidence.extend(
        first_stmts
            .iter()
            .map(|s| format!("page 1 statement: {}", s.line())),
    );
    evidence.extend(
        deep.iter()
            .map(|s| format!("page {} statement: {}", p.page, s.line())),
    );
    if ratio <= p.max_ratio {
        ctx.measured(format!(
            "page 1: {b1} shared buffers, page {}: {bn} ({ratio:.1}×, at most {}×)",
            p.page, p.max_ratio
        ));
        return Ok(());
    }
    let cat = db::catalog(&client).await?;
    if let Some(s) = deep.first() {
        if let Ok(plan) = db::generic_plan(&client, &s.query).await {
            let j = db::judge(&plan, &cat, p.large_table_rows);
            evidence.push(format!("plan of: {}", db::normalise(&s.query)));
            evidence.extend(j.tree.iter().map(|l| format!("  {l}")));
        }
        if s.query.to_ascii_lowercase().contains("offset") {
            evidence.push("would help: OFFSET makes PostgreSQL read and discard every row before the page; continue after the last row seen instead (a cursor holding its sort key and id), which an index on (equality columns, sort key, id) serves directly".into());
        }
    }
    Err(Failure::Fail(FailInfo {
        message: format!(
            "page {} costs {bn} shared buffers, {ratio:.1}× page 1's {b1}; at most {}× expected",
            p.page, p.max_ratio
        ),
        expected: format!(
            "page {} to read about as many pages as page 1 (at most {}×)",
            p.page, p.max_ratio
        ),
        actual: format!("page 1: {b1} buffers, page {}: {bn} buffers", p.page),
        evidence,
        ..Default::default()
    }))
}
