//! `paginate`: creates items through the API (from the check's seeded random stream), walks a
//! paginated list by its cursor or its `Link rel="next"`, optionally writes in between (inserts
//! that sort before the cursor, deletes of items not seen yet), and judges the walk: page sizes,
//! sort order, the end signal, and that every item alive for the whole walk appeared exactly once
//! ("item 7f3a… appeared on pages 2 and 3").

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use serde_json::Value;
use url::Url;

use super::cursor;
use super::order::out_of_order;
use super::params::{Follow, Paginate};
use crate::engine::assert::{self, describe_json, shorten};
use crate::engine::http::{OutgoingRequest, Response};
use crate::engine::step::build_request;
use crate::engine::{fail, CheckContext, FailInfo, Failure};
use crate::outcome::Exchange;
use crate::probes::request::ProbeRequest;
use crate::probes::upstream_calls::run::{identity_of, judge, Seen};
use crate::probes::walk::{too_many_items, SeenItems};
use crate::spec::template;
use crate::spec::{Expect, Predicate, PredicateOp, StatusSpec};

/// Problems listed as evidence; more are summarised in one line.
const MAX_EVIDENCE: usize = 12;

pub async fn run(p: &Paginate, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let mut kept = Kept::default();
    let result = walk(p, ctx, &mut kept).await;
    // The report shows a few exchanges that matter, not hundreds of creates and pages.
    ctx.exchanges = kept.into_exchanges(std::mem::take(&mut ctx.exchanges));
    result
}

/// The exchanges worth showing: the first create, the first write, the first page and the last
/// two pages.
#[derive(Default)]
struct Kept {
    first_create: Option<Exchange>,
    first_write: Option<Exchange>,
    reference_page: Option<Exchange>,
    first_page: Option<Exchange>,
    previous_page: Option<Exchange>,
    last_page: Option<Exchange>,
}

impl Kept {
    fn page(&mut self, ex: Exchange, page: usize) {
        if page == 1 {
            self.first_page = Some(ex);
        } else {
            self.previous_page = self.last_page.take().filter(|_| page > 2);
            self.last_page = Some(ex);
        }
    }

    fn into_exchanges(self, rest: Vec<Exchange>) -> Vec<Exchange> {
        [
            self.first_create,
            self.first_write,
            self.reference_page,
            self.first_page,
            self.previous_page,
            self.last_page,
        ]
        .into_iter()
        .flatten()
        .chain(rest)
        .collect()
    }
}

/// An item the probe created, and what happened to it.
struct Created {
    id: String,
    in_walk: bool,
    /// The name of the request that created it ("create a product priced exactly 1000").
    label: String,
}

async fn walk(p: &Paginate, ctx: &mut CheckContext<'_>, kept: &mut Kept) -> Result<(), Failure> {
    for name in &p.fresh {
        if !ctx.vars.iter().any(|(n, _)| n == name) {
            return Err(Failure::Error(format!(
                "params.fresh names `{name}`, which is not in the exercise's [vars]"
            )));
        }
    }
    // 1. Create the data, each item with fresh values for the `fresh` variables.
    let mut created: Vec<Created> = Vec::new();
    for group in &p.seed {
        for _ in 0..group.count {
            let id = create(p, ctx, &group.request, kept).await?;
            created.push(Created {
                id,
                in_walk: group.in_walk,
                label: group.request.name.clone(),
            });
        }
    }
    let seeded: BTreeMap<&str, bool> = created.iter().map(|c| (c.id.as_str(), c.in_walk)).collect();
    let labels: BTreeMap<&str, &str> = created
        .iter()
        .map(|c| (c.id.as_str(), c.label.as_str()))
        .collect();
    let made_by = |id: &str| {
        labels
            .get(id)
            .map(|l| format!(" (made by \"{l}\")"))
            .unwrap_or_default()
    };
    let mut expected: BTreeSet<String> = created
        .iter()
        .filter(|c| c.in_walk)
        .map(|c| c.id.clone())
        .collect();

    let page_size = match &p.page_size {
        None => None,
        Some(t) => {
            let text = template::render(t, &ctx.scope).map_err(Failure::Error)?;
            Some(text.trim().parse::<usize>().map_err(|_| {
                Failure::Error(format!(
                    "params.page_size is \"{text}\", not a number of items"
                ))
            })?)
        }
    };
    // The page the first page must equal, read before the walk.
    let reference = match &p.same_first_page_as {
        None => None,
        Some(q) => {
            let (summary, ids) = reference_page(p, q, ctx, kept).await?;
            if ids.is_empty() && !expected.is_empty() {
                return Err(fail(
                    format!(
                        "the reference page ({summary}) lists no items, though {} created items match it",
                        expected.len()
                    ),
                    "a first page with items when items match",
                    "0 items".into(),
                    vec![],
                ));
            }
            Some((summary, ids))
        }
    };

    // 2. Walk.
    let base = first_url(p, ctx)?;
    let first_query: Vec<(String, String)> = base.query_pairs().into_owned().collect();
    let mut url = base.clone();
    // Bounded: the items seen (see `probes::walk`), and problems counted past the ones shown.
    let mut pages_of = SeenItems::default();
    let mut problems = Problems::default();
    let mut deleted: Vec<String> = Vec::new();
    let mut inserted: BTreeSet<String> = BTreeSet::new();
    let mut previous_key: Option<(Value, String, usize)> = None;
    let mut last_len = 0;
    let mut page = 0;
    let mut ended = false;
    while page < p.max_pages {
        page += 1;
        let label = format!("page {page}");
        let summary = format!("GET {}", &url[url::Position::BeforePath..]);
        let resp = send(ctx, &label, url.clone(), kept, page).await?;
        if page == 1 && p.accept_refusal && resp.status == 400 {
            return Ok(());
        }
        let doc = page_document(ctx, &label, &summary, &resp)?;
        let items = match p.items.path.query(&doc).at_most_one() {
            Ok(Some(Value::Array(items))) => items.clone(),
            other => {
                let actual = match other {
                    Ok(Some(v)) => describe_json(v),
                    _ => "absent".into(),
                };
                return Err(fail(
                    format!(
                        "{label} ({summary}): expected an array at {}, got {actual}",
                        p.items.text
                    ),
                    format!("the page's items as an array at {}", p.items.text),
                    actual,
                    vec![],
                ));
            }
        };
        if let Some(max) = p.max_page_size {
            if items.len() > max {
                return Err(fail(
                    format!(
                        "{label} ({summary}) has {} items; a page must never hold more than {max}",
                        items.len()
                    ),
                    format!("at most {max} items on a page"),
                    format!("{} items", items.len()),
                    vec![],
                ));
            }
        }
        for (i, item) in items.iter().enumerate() {
            let Some(id) = item_id(item, p) else {
                return Err(fail(
                    format!("{label}: item {} has no {}", i + 1, p.identity.text),
                    format!("every item to have {}", p.identity.text),
                    shorten(&item.to_string(), 200),
                    vec![],
                ));
            };
            pages_of
                .see(&id, page)
                .map_err(|_| too_many_items(&label))?;
            if seeded.get(id.as_str()) == Some(&false) {
                problems.push(format!(
                    "item {id}{} appeared on page {page}, but it does not match the list's filters ({})",
                    made_by(&id),
                    describe_query(&p.query, ctx)
                ));
            }
            if let Some(order) = &p.order {
                let key = order
                    .field
                    .path
                    .query(item)
                    .at_most_one()
                    .ok()
                    .flatten()
                    .cloned()
                    .unwrap_or(Value::Null);
                if let Some((prev, prev_id, prev_page)) = &previous_key {
                    if out_of_order(prev, &key, order.descending) {
                        problems.push(format!(
                            "item {id} (page {page}, {} {}) comes after item {prev_id} (page {prev_page}, {} {}): the list must be sorted by {} {}",
                            order.field.text,
                            describe_json(&key),
                            order.field.text,
                            describe_json(prev),
                            order.field.text,
                            if order.descending { "descending" } else { "ascending" }
                        ));
                    }
                }
                previous_key = Some((key, id.clone(), page));
            }
        }

        if let (1, Some((ref_summary, ref_ids))) = (page, &reference) {
            let ids: Vec<String> = items.iter().filter_map(|i| item_id(i, p)).collect();
            if let Some(problem) = compare_pages(&ids, ref_ids) {
                return Err(fail(
                    format!("{label} ({summary}) is not the same page as {ref_summary}: {problem}"),
                    format!("the same items, in the same order, as {ref_summary}"),
                    format!(
                        "{} items on {label}, {} on the reference page",
                        ids.len(),
                        ref_ids.len()
                    ),
                    vec![],
                ));
            }
        }

        // What the page says about the next one.
        let signals = Signals::read(p, &doc, &resp, &ctx.service.base_url, &url)?;
        if let (true, Some(c)) = (p.cursor_url_safe, &signals.cursor) {
            if let Some(bad) = cursor::first_unsafe(c) {
                return Err(fail(
                    format!(
                        "{label} ({summary}): the next cursor \"{}\" holds {bad:?}, which is not URL-safe: a cursor may hold only A-Z a-z 0-9 - . _ ~ so that a client can put it into a query string as it is",
                        shorten(c, 80)
                    ),
                    "a next cursor of A-Z a-z 0-9 - . _ ~ only (RFC 3986 unreserved characters)",
                    format!("{} = \"{}\"", p.next_cursor.text, shorten(c, 120)),
                    vec![],
                ));
            }
        }
        if let Some(problem) = signals.has_more_problem(p, &label) {
            return Err(fail(
                problem.clone(),
                "has_more to say whether a next page exists",
                problem,
                vec![],
            ));
        }
        let next = match p.follow {
            Follow::Cursor => signals.cursor.as_ref().map(|c| {
                let mut next = base.clone();
                next.query_pairs_mut().append_pair(&p.cursor_param, c);
                next
            }),
            Follow::Link => {
                if signals.cursor.is_some() && signals.link.is_none() {
                    return Err(fail(
                        format!(
                            "{label} ({summary}) has a next cursor but no Link header with rel=\"next\"{}",
                            p.next_link.as_ref().map(|q| format!(" (nor a next link at {})", q.text)).unwrap_or_default()
                        ),
                        "Link: <URL of the next page>; rel=\"next\" (RFC 8288 §3) while there are more items",
                        format!("Link: {}", resp.header("link").unwrap_or_else(|| "absent".into())),
                        vec![],
                    ));
                }
                signals.link.clone()
            }
        };
        if let Some(size) = page_size {
            let short = next.is_some() && items.len() != size;
            if short || items.len() > size {
                return Err(fail(
                    format!(
                        "{label} ({summary}) holds {} items{}, but the page size asked for is {size}: {}",
                        items.len(),
                        if next.is_some() { " and has a next page" } else { "" },
                        if short {
                            "every page but the last must hold exactly that many"
                        } else {
                            "no page may hold more"
                        }
                    ),
                    format!(
                        "{size} items on every page but the last, at most {size} on the last"
                    ),
                    format!("{} items", items.len()),
                    vec![],
                ));
            }
        }
        if let (true, Some(next_url)) = (p.link_keeps_query, &next) {
            let pairs: Vec<(String, String)> = next_url.query_pairs().into_owned().collect();
            let dropped: Vec<String> = first_query
                .iter()
                .filter(|kv| !pairs.contains(kv))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !dropped.is_empty() {
                return Err(fail(
                    format!(
                        "{label} ({summary}): the next link <{}> does not repeat {}: the link must keep the request's filters, sort and limit, and add the cursor",
                        &next_url[url::Position::BeforePath..],
                        dropped.join(", ")
                    ),
                    format!(
                        "a next link with {} and a cursor",
                        first_query
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join("&")
                    ),
                    next_url[url::Position::BeforePath..].to_string(),
                    vec![],
                ));
            }
        }
        if let (1, true, Some(c)) = (page, p.tamper, &signals.cursor) {
            tamper(p, ctx, &base, c).await?;
        }
        last_len = items.len();
        let stop_here = p.pages == Some(page);
        match next {
            None => {
                // The end: every signal must agree.
                if let Some(problem) = signals.end_problem(p) {
                    return Err(fail(
                        format!("{label} ({summary}) is the last page, but {problem}"),
                        "on the last page: no next cursor, has_more false, no Link rel=\"next\"",
                        problem,
                        vec![],
                    ));
                }
                ended = true;
                break;
            }
            Some(next_url) => {
                if next_url == url {
                    return Err(fail(
                        format!("{label}: the next page's URL is this page's own URL, so the walk would never end"),
                        "a next page URL that moves forward",
                        next_url.to_string(),
                        vec![],
                    ));
                }
                url = next_url;
            }
        }
        if stop_here {
            break;
        }
        if let Some(w) = p.writes.as_ref().filter(|w| w.after_page == page) {
            if let Some(insert) = &w.insert {
                for _ in 0..w.insert_count {
                    let id = create(p, ctx, insert, kept).await?;
                    inserted.insert(id);
                }
            }
            if let Some(prefix) = &w.delete_prefix {
                let mut unseen: Vec<&String> = expected
                    .iter()
                    .filter(|id| !pages_of.contains(id))
                    .collect();
                unseen.shuffle(&mut ctx.rng);
                let victims: Vec<String> =
                    unseen.into_iter().take(w.delete_count).cloned().collect();
                for id in victims {
                    delete(ctx, prefix, &id, kept).await?;
                    expected.remove(&id);
                    deleted.push(id);
                }
            }
        }
    }
    if !ended && p.pages.is_none() {
        return Err(fail(
            format!("the walk did not end after {} pages", p.max_pages),
            "the last page to have no next cursor",
            format!("a next page after page {}", p.max_pages),
            vec![],
        ));
    }

    // 3. The walk as a whole.
    for (id, pages) in pages_of.iter() {
        if pages.times > 1 {
            problems.push(format!("item {id} appeared on pages {}", pages.describe()));
        }
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !pages_of.contains(id))
        .collect();
    if ended {
        for id in &missing {
            problems.push(format!(
                "item {id}{} was on no page, though it existed for the whole walk and matches the filters",
                made_by(id)
            ));
        }
        let walked_after_writes = p.writes.as_ref().is_some_and(|w| w.after_page < page);
        if page > 1 && last_len == 0 && !walked_after_writes {
            problems.push(format!(
                "page {} promised more (a next cursor, has_more true) but page {page} was empty: signal the end on the last page that has items",
                page - 1
            ));
        }
    }
    // A partial walk (`pages`) stopped where the service said more exists: nothing is missing.
    if problems.is_empty() {
        let writes = if inserted.is_empty() && deleted.is_empty() {
            String::new()
        } else {
            format!(
                ", while {} items were inserted and {} deleted",
                inserted.len(),
                deleted.len()
            )
        };
        let verdict = if ended {
            "each seen exactly once"
        } else {
            "none repeated (a partial walk)"
        };
        ctx.measured(format!(
            "walked {page} page{}: {} items, {verdict}{writes}",
            if page == 1 { "" } else { "s" },
            pages_of.len()
        ));
        return Ok(());
    }
    let mut evidence: Vec<String> = problems.shown.clone();
    if problems.count > MAX_EVIDENCE {
        evidence.push(format!("… and {} more", problems.count - MAX_EVIDENCE));
    }
    let duplicates = pages_of.iter().filter(|(_, p)| p.times > 1).count();
    evidence.push(format!(
        "the walk: {page} pages, {} distinct items; created {} items before it ({} matching the filters){}",
        pages_of.len(),
        created.len(),
        created.iter().filter(|c| c.in_walk).count(),
        match (inserted.len(), deleted.len()) {
            (0, 0) => String::new(),
            (i, d) => format!("; after page {} inserted {i} and deleted {d} ({})", p.writes.as_ref().map_or(0, |w| w.after_page), deleted.join(", ")),
        }
    ));
    Err(fail(
        problems.shown[0].clone(),
        "every item that existed for the whole walk on exactly one page, in order, and nothing else",
        format!(
            "{duplicates} duplicated, {} missing, {} problems in all",
            if ended { missing.len() } else { 0 },
            problems.count
        ),
        evidence,
    ))
}

/// What a page says about the next one.
struct Signals {
    /// A non-empty next cursor.
    cursor: Option<String>,
    /// `has_more`, when the probe reads it.
    has_more: Option<Value>,
    /// The next page's URL, from `Link rel="next"` or the body's next link.
    link: Option<Url>,
    /// The raw `rel="next"` target of the Link header, if any.
    link_header_next: Option<String>,
}

impl Signals {
    fn read(
        p: &Paginate,
        doc: &Value,
        resp: &Response,
        base: &Url,
        url: &Url,
    ) -> Result<Signals, Failure> {
        let at =
            |q: &crate::spec::JsonQuery| q.path.query(doc).at_most_one().ok().flatten().cloned();
        let cursor = match at(&p.next_cursor) {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let link_header_next = resp.header("link").and_then(|h| next_link(&h));
        let body_link = p
            .next_link
            .as_ref()
            .and_then(at)
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|s| !s.is_empty());
        let target = link_header_next.clone().or(body_link);
        let link = match target {
            None => None,
            Some(t) => Some(
                crate::engine::resolve_on_service(base, url, &t).map_err(|e| {
                    Failure::Fail(FailInfo {
                        message: format!("the next link: {e}"),
                        expected:
                            "a URI reference (RFC 3986) in the next link, on the service's own host"
                                .into(),
                        actual: t.clone(),
                        ..Default::default()
                    })
                })?,
            ),
        };
        Ok(Signals {
            cursor,
            has_more: p.has_more.as_ref().and_then(at),
            link,
            link_header_next,
        })
    }

    /// `has_more` must be a boolean that agrees with the next cursor.
    fn has_more_problem(&self, p: &Paginate, label: &str) -> Option<String> {
        let q = p.has_more.as_ref()?;
        match &self.has_more {
            Some(Value::Bool(more)) => {
                if *more != self.cursor.is_some() {
                    Some(format!(
                        "{label}: has_more is {more} but the next cursor is {}",
                        if self.cursor.is_some() {
                            "present"
                        } else {
                            "absent"
                        }
                    ))
                } else {
                    None
                }
            }
            Some(other) => Some(format!(
                "{label}: {} is {}, expected a boolean",
                q.text,
                describe_json(other)
            )),
            None => Some(format!("{label}: the page has no {}", q.text)),
        }
    }

    /// On the last page, what still claims there is more.
    fn end_problem(&self, p: &Paginate) -> Option<String> {
        if let Some(c) = &self.cursor {
            return Some(format!(
                "it has a next cursor ({} = \"{}\")",
                p.next_cursor.text,
                shorten(c, 60)
            ));
        }
        if let Some(Value::Bool(true)) = self.has_more {
            return Some("has_more is true".into());
        }
        if let Some(l) = &self.link_header_next {
            return Some(format!("its Link header has rel=\"next\" (<{l}>)"));
        }
        None
    }
}

/// The target of the first link with relation type `next` in a Link header (RFC 8288 §3):
/// `<uri>; rel="next"`, `rel=next`, or `rel="prev next"`, links separated by commas.
pub fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let after = &rest[end + 1..];
        // Parameters run to the next link, which starts with `<` after a comma.
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim().to_string());
        }
        rest = after;
    }
}

fn item_id(item: &Value, p: &Paginate) -> Option<String> {
    match p.identity.path.query(item).at_most_one().ok().flatten()? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The walk's problems: the first [`MAX_EVIDENCE`] as written, and how many in all (a page out
/// of order is one problem per item, so a long walk could hold one per item seen).
#[derive(Default)]
struct Problems {
    shown: Vec<String>,
    count: usize,
}

impl Problems {
    fn push(&mut self, problem: String) {
        self.count += 1;
        if self.shown.len() < MAX_EVIDENCE {
            self.shown.push(problem);
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

fn describe_query(query: &[(String, String)], ctx: &CheckContext<'_>) -> String {
    query
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                template::render(v, &ctx.scope).unwrap_or_else(|_| v.clone())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The first page's URL: the path with the rendered query.
fn first_url(p: &Paginate, ctx: &CheckContext<'_>) -> Result<Url, Failure> {
    let path = template::render(&p.path, &ctx.scope).map_err(Failure::Error)?;
    let mut url = ctx.url(&path)?;
    if !p.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &p.query {
            pairs.append_pair(k, &template::render(v, &ctx.scope).map_err(Failure::Error)?);
        }
    }
    Ok(url)
}

/// Sends one page request and keeps its exchange aside.
async fn send(
    ctx: &mut CheckContext<'_>,
    label: &str,
    url: Url,
    kept: &mut Kept,
    page: usize,
) -> Result<Response, Failure> {
    let req = OutgoingRequest {
        method: "GET".into(),
        url,
        headers: vec![("Accept".into(), "application/json".into())],
        body: None,
    };
    let result = ctx.send(label, req).await;
    if let Some(ex) = ctx.exchanges.pop() {
        kept.page(ex, page);
    }
    result
}

/// A page must answer 200 with a JSON body (judged by `engine::assert`, like a step).
fn page_document(
    ctx: &CheckContext<'_>,
    label: &str,
    summary: &str,
    resp: &Response,
) -> Result<Value, Failure> {
    let expect = Expect {
        status: Some(StatusSpec {
            codes: vec![200],
            classes: vec![],
        }),
        ..Default::default()
    };
    let mismatches = assert::check_expect(&expect, resp, &ctx.scope).map_err(Failure::Error)?;
    if let Some(m) = mismatches.first() {
        return Err(fail(
            format!(
                "{label} ({summary}): expected {} {}, got {}",
                m.subject, m.expected, m.actual
            ),
            format!("{}: {}", m.subject, m.expected),
            format!("{}: {}", m.subject, m.actual),
            vec![],
        ));
    }
    serde_json::from_slice(&resp.body).map_err(|e| {
        fail(
            format!("{label} ({summary}): the body is not JSON ({e})"),
            "a JSON page",
            shorten(&resp.text(), 200),
            vec![],
        )
    })
}

/// Creates one item with fresh values for the `fresh` variables; returns its identity.
async fn create(
    p: &Paginate,
    ctx: &mut CheckContext<'_>,
    r: &ProbeRequest,
    kept: &mut Kept,
) -> Result<String, Failure> {
    let fresh = ctx.fresh_scope();
    let saved = ctx.scope.clone();
    for name in &p.fresh {
        if let Some(v) = fresh.get(name) {
            ctx.scope.insert(name.clone(), v.clone());
        }
    }
    let built = build_request(ctx, &r.spec);
    let req = match built {
        Ok(req) => req,
        Err(e) => {
            ctx.scope = saved;
            return Err(e);
        }
    };
    let summary = format!("{} {}", req.method, req.url.path());
    let sent = ctx.send(&r.name, req).await;
    if let Some(ex) = ctx.exchanges.pop() {
        // Of the creates before the walk only the first is kept; of the writes, the first.
        if kept.first_create.is_none() {
            kept.first_create = Some(ex);
        } else if kept.first_page.is_some() && kept.first_write.is_none() {
            kept.first_write = Some(ex);
        }
    }
    let judged = match &sent {
        Ok(resp) => judge(ctx, r, &summary, resp, &[] as &[Seen], &p.identity),
        Err(_) => Ok(None),
    };
    ctx.scope = saved;
    let resp = sent?;
    if let Some(info) = judged? {
        return Err(Failure::Fail(info));
    }
    match identity_of(&resp, &p.identity) {
        Some(Value::String(s)) => Ok(s),
        Some(v) if !v.is_null() => Ok(v.to_string()),
        _ => Err(fail(
            format!("{} ({summary}): the response has no {}, so the item cannot be followed through the pages", r.name, p.identity.text),
            format!("the created item's {} in the response", p.identity.text),
            shorten(&resp.text(), 200),
            vec![],
        )),
    }
}

/// Deletes an item the walk has not reached yet.
async fn delete(
    ctx: &mut CheckContext<'_>,
    prefix: &str,
    id: &str,
    kept: &mut Kept,
) -> Result<(), Failure> {
    let prefix = template::render(prefix, &ctx.scope).map_err(Failure::Error)?;
    let url = ctx.url(&format!("{prefix}{id}"))?;
    let summary = format!("DELETE {}", url.path());
    let resp = ctx
        .send(
            "delete an item the walk has not reached",
            OutgoingRequest {
                method: "DELETE".into(),
                url,
                headers: vec![],
                body: None,
            },
        )
        .await;
    if let Some(ex) = ctx.exchanges.pop() {
        if kept.first_write.is_none() {
            kept.first_write = Some(ex);
        }
    }
    let resp = resp?;
    if !(200..300).contains(&resp.status) {
        return Err(fail(
            format!("{summary}: expected a 2xx status, got {}", resp.status),
            "status 2xx (the item is deleted)",
            resp.status.to_string(),
            vec![],
        ));
    }
    Ok(())
}

/// Reads the first page of the list with another query, before the walk: the page the walk's
/// first page must equal. Returns how to name it and its item ids.
async fn reference_page(
    p: &Paginate,
    query: &[(String, String)],
    ctx: &mut CheckContext<'_>,
    kept: &mut Kept,
) -> Result<(String, Vec<String>), Failure> {
    let path = template::render(&p.path, &ctx.scope).map_err(Failure::Error)?;
    let mut url = ctx.url(&path)?;
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, &template::render(v, &ctx.scope).map_err(Failure::Error)?);
        }
    }
    let summary = format!("GET {}", &url[url::Position::BeforePath..]);
    let label = "the reference page";
    let req = OutgoingRequest {
        method: "GET".into(),
        url,
        headers: vec![("Accept".into(), "application/json".into())],
        body: None,
    };
    let sent = ctx.send(label, req).await;
    if let Some(ex) = ctx.exchanges.pop() {
        kept.reference_page = Some(ex);
    }
    let resp = sent?;
    let doc = page_document(ctx, label, &summary, &resp)?;
    let ids = match p.items.path.query(&doc).at_most_one() {
        Ok(Some(Value::Array(items))) => items.iter().filter_map(|i| item_id(i, p)).collect(),
        _ => {
            return Err(fail(
                format!("{label} ({summary}) has no array at {}", p.items.text),
                format!("the page's items as an array at {}", p.items.text),
                shorten(&resp.text(), 200),
                vec![],
            ))
        }
    };
    Ok((summary, ids))
}

/// Why two pages differ (by their item ids, in order), or `None` when they are the same.
fn compare_pages(ids: &[String], reference: &[String]) -> Option<String> {
    if ids == reference {
        return None;
    }
    if ids.len() != reference.len() {
        return Some(format!(
            "it lists {} item{}, the reference page {}",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" },
            reference.len()
        ));
    }
    let at = ids.iter().zip(reference).position(|(a, b)| a != b)?;
    Some(format!(
        "both list {} items, but item {} is {} here and {} there",
        ids.len(),
        at + 1,
        ids[at],
        reference[at]
    ))
}

/// Sends tampered forms of page 1's cursor (truncated, forged): each must answer 400 with a
/// problem document. A cursor the grader cannot decode is only truncated.
async fn tamper(
    p: &Paginate,
    ctx: &mut CheckContext<'_>,
    base: &Url,
    cursor: &str,
) -> Result<(), Failure> {
    let expect = Expect {
        status: Some(StatusSpec {
            codes: vec![400],
            classes: vec![],
        }),
        headers: vec![(
            "content-type".into(),
            Predicate {
                ops: vec![PredicateOp::MediaType("application/problem+json".into())],
            },
        )],
        ..Default::default()
    };
    let forms = cursor::tampered(cursor);
    let mut refused = 0;
    for form in &forms {
        let mut url = base.clone();
        url.query_pairs_mut()
            .append_pair(&p.cursor_param, &form.cursor);
        let summary = format!("GET {}", &url[url::Position::BeforePath..]);
        let step = format!("send {}", form.how);
        let resp = ctx
            .send(
                &step,
                OutgoingRequest {
                    method: "GET".into(),
                    url,
                    headers: vec![("Accept".into(), "application/json".into())],
                    body: None,
                },
            )
            .await?;
        let mismatches =
            assert::check_expect(&expect, &resp, &ctx.scope).map_err(Failure::Error)?;
        if let Some(m) = mismatches.first() {
            return Err(fail(
                format!(
                    "{step} ({summary}): expected {} {}, got {}",
                    m.subject, m.expected, m.actual
                ),
                "400 with a problem document (application/problem+json) for a cursor that is not one the service issued, unchanged",
                mismatches
                    .iter()
                    .map(|m| format!("{}: {}", m.subject, m.actual))
                    .collect::<Vec<_>>()
                    .join("\n"),
                vec![format!(
                    "page 1's cursor was \"{}\"; the grader sent \"{}\"",
                    shorten(cursor, 120),
                    shorten(&form.cursor, 120)
                )],
            ));
        }
        // Passed: the exchange is not worth showing.
        ctx.exchanges.pop();
        refused += 1;
    }
    let forged = forms.iter().any(|f| f.how.starts_with("a forged"));
    ctx.measured(format!(
        "{refused} tampered cursors refused with 400{}",
        if forged {
            ""
        } else {
            " (the cursor does not decode to JSON the grader can change, so none was forged)"
        }
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_next_link_in_rfc_8288_forms() {
        assert_eq!(
            next_link(r#"</products?cursor=abc>; rel="next""#).as_deref(),
            Some("/products?cursor=abc")
        );
        assert_eq!(
            next_link(r#"<https://x/p?c=1>; rel="prev", <https://x/p?c=3>; rel=next"#).as_deref(),
            Some("https://x/p?c=3")
        );
        assert_eq!(
            next_link(r#"</a>; title="x"; rel="prev NEXT""#).as_deref(),
            Some("/a")
        );
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn pages_compare_by_ids_in_order() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(compare_pages(&ids(&["a", "b"]), &ids(&["a", "b"])), None);
        assert_eq!(
            compare_pages(&ids(&[]), &ids(&["a", "b"])).unwrap(),
            "it lists 0 items, the reference page 2"
        );
        assert_eq!(
            compare_pages(&ids(&["a", "c"]), &ids(&["a", "b"])).unwrap(),
            "both list 2 items, but item 2 is c here and b there"
        );
    }
}
