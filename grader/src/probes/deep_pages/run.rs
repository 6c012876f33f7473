//! `deep_pages`: walks a list through its next links and compares the shared buffers of page N
//! with page 1's. Keyset pagination (`WHERE (created_at, id) < (...)`) reads the same few pages
//! wherever it is; OFFSET reads and throws away every row before the page. On the way it checks
//! that the walk advances (no item on two pages: a next link that serves page 1 again costs what
//! page 1 costs, and only this catches it) and compares pages with the grader's own data.

use std::collections::BTreeMap;

use serde_json::Value;

use super::params::DeepPages;
use crate::engine::assert::describe_json;
use crate::engine::step::build_request;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::db::{self, answers, Execution};
use crate::probes::upstream_calls::run::{judge as judge_response, Seen};
use crate::probes::walk::{id_key, too_many_items, SeenItems};
use crate::spec::RequestSpec;

pub async fn run(p: &DeepPages, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let client = db::connect(ctx).await?;
    db::sample(&client, &p.sample, ctx).await?;
    let log = db::Log::open(&client).await?;
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;

    let mut spec: RequestSpec = p.request.spec.clone();
    let mut measured: BTreeMap<u32, Vec<Execution>> = BTreeMap::new();
    // Identity of every item seen, with the pages it was on (bounded: see `probes::walk`).
    let mut seen = SeenItems::default();
    for page in 1..=p.page {
        let req = build_request(ctx, &spec)?;
        let summary = format!("{} {}", req.method, &req.url[url::Position::BeforePath..]);
        let measure = page == 1 || page == p.page;
        let mark = match measure {
            true => {
                // pg_stat_statements from here on holds this page's statements only: the guard
                // that tells "nothing ran" from "the log missed it".
                db::reset(&client).await?;
                Some(log.mark(&client).await?)
            }
            false => None,
        };
        let resp = ctx.send(&format!("page {page}"), req).await?;
        // Keep the report short: page 1 and the deep page (and a page that repeats items).
        if page > 1 && page < p.page {
            ctx.exchanges.pop();
        }
        if let Some(info) =
            judge_response(ctx, &p.request, &summary, &resp, &[] as &[Seen], &identity)?
        {
            return Err(Failure::Fail(info));
        }
        if let Some(m) = mark {
            let execs = log.since(&client, &m).await?;
            // A check that measured nothing has not passed: a page that ran no statement leaves
            // nothing to compare.
            if execs.is_empty() {
                return Err(
                    db::nothing_measured(&client, &format!("page {page} ({summary})")).await,
                );
            }
            measured.insert(page, execs);
        }
        let doc: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        for item in p.items.path.query(&doc).all() {
            let Some(id) = p.identity.path.query(item).at_most_one().ok().flatten() else {
                continue;
            };
            let id = describe_json(id);
            let pages = seen
                .see(&id, page as usize)
                .map_err(|_| too_many_items(&format!("page {page}")))?;
            if pages.times > 1 {
                let earlier = pages.first();
                let id = id_key(&id);
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "page {page} ({summary}) repeats item {id} of page {earlier}: the next link does not continue after the last row of the page before"
                    ),
                    expected: format!(
                        "each page to continue after the last item of the page before (no item on two pages), up to page {}",
                        p.page
                    ),
                    actual: format!("item {id} on page {earlier} and on page {page}"),
                    evidence: vec![format!("page {page}'s link came from page {}: {summary}", page - 1)],
                    ..Default::default()
                }));
            }
        }
        for a in p.answers.iter().filter(|a| a.at == page as usize) {
            if let Some(w) = answers::compare(a, &doc, &ctx.scope).map_err(Failure::Error)? {
                return Err(Failure::Fail(FailInfo {
                    message: format!("page {page} ({summary}): {}", w.message),
                    expected: w.expected,
                    actual: w.actual,
                    ..Default::default()
                }));
            }
        }
        if page == p.page {
            break;
        }
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
    let first = measured.remove(&1).expect("page 1 was measured");
    let deep = measured
        .remove(&p.page)
        .expect("the deep page was measured");
    let b1: i64 = first.iter().map(Execution::buffers).sum();
    let bn: i64 = deep.iter().map(Execution::buffers).sum();
    let all: Vec<&Execution> = first.iter().chain(&deep).collect();
    let texts = db::normalised_texts(&client, &all).await?;
    let first_stmts = db::group(&first.iter().collect::<Vec<_>>(), &texts);
    let deep_stmts = db::group(&deep.iter().collect::<Vec<_>>(), &texts);
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
        deep_stmts
            .iter()
            .map(|s| format!("page {} statement: {}", p.page, s.line())),
    );
    if b1 == 0 && bn == 0 {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "page 1 and page {} read no shared buffers: the statements read no table or index, so there is nothing to compare",
                p.page
            ),
            expected: "the pages to be read from the data set's tables".into(),
            actual: "0 shared buffers on both pages".into(),
            evidence,
            ..Default::default()
        }));
    }
    if ratio <= p.max_ratio {
        ctx.measured(format!(
            "page 1: {b1} shared buffers, page {}: {bn} ({ratio:.1}×, at most {}×)",
            p.page, p.max_ratio
        ));
        return Ok(());
    }
    let cat = db::catalog(&client).await?;
    let (plans, _) = db::judge_statements(&deep_stmts, &cat, p.large_table_rows);
    evidence.extend(plans);
    if deep_stmts.iter().any(|s| {
        db::normalise(&s.query)
            .to_ascii_lowercase()
            .contains("offset")
    }) {
        evidence.push("would help: OFFSET makes PostgreSQL read and discard every row before the page; continue after the last row seen instead (a cursor holding its sort key and id), which an index on (equality columns, sort key, id) serves directly".into());
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
