//! `revalidate`: reads a resource, judges its validators (RFC 9110 §8.8), then sends conditional
//! GETs with them and judges each 304 against the 200 it stands for (§13.1.2, §13.1.3, §15.4.5).
//!
//! A 304 tells a cache "your stored 200 is still good, with these updated headers": so it must
//! carry no body, and must repeat the 200's ETag, Cache-Control, Vary, Content-Location and
//! Expires, or a cache would update its stored response with the wrong metadata.
//!
//! Then, optionally: the same content written again after a pause must keep the validators
//! (`rewrite`), and writes sent together with the ETag just read must have exactly one winner
//! (`race`, RFC 9110 §13.1.1: the precondition is evaluated with the write, not before it).

use crate::spec::calendar::days_from_civil;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use futures_util::future::join_all;
use regex::Regex;
use serde_json::Value;

use super::params::{Condition, Race, Revalidate, Rewrite, Validator};
use crate::engine::assert::{describe_json, shorten};
use crate::engine::http::{OutgoingRequest, Response, Sent};
use crate::engine::step::{apply_captures, build_request};
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::request::query;
use crate::probes::upstream_calls::run::{judge, Seen};
use crate::spec::JsonQuery;

/// Exchanges of a race kept in the report: one per distinct status, at most this many.
const SHOWN_RACE_EXCHANGES: usize = 4;

/// Headers a 304 must repeat from the 200 (RFC 9110 §15.4.5), compared by value.
const REPEATED: &[&str] = &[
    "ETag",
    "Cache-Control",
    "Vary",
    "Content-Location",
    "Expires",
];

/// `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE` (RFC 9110 §8.8.3).
static ENTITY_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^(W/)?"[\x21\x23-\x7e\x80-\xff]*"$"#).expect("valid regex"));

pub async fn run(p: &Revalidate, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let identity = query("$.id").map_err(Failure::Error)?;
    // The read's path may be captured by a set-up request (a created resource's Location): until
    // then no set-up request can be a write of it.
    let mut read_path = build_request(ctx, &p.read)
        .ok()
        .map(|r| r.url.path().to_string());
    let mut seen: Vec<Seen> = Vec::new();
    // 2xx answers to writes of the resource itself: they carry its validators (cache-1.2).
    let mut writes: Vec<(String, String, Response)> = Vec::new();
    for r in &p.setup {
        let req = build_request(ctx, &r.spec)?;
        let summary = format!("{} {}", req.method, req.url.path());
        let same_resource = read_path.as_deref() == Some(req.url.path());
        let resp = ctx.send(&r.name, req).await?;
        if let Some(info) = judge(ctx, r, &summary, &resp, &seen, &identity)? {
            return Err(Failure::Fail(info));
        }
        apply_captures(ctx, &r.name, &r.captures, &resp)?;
        if read_path.is_none() {
            read_path = build_request(ctx, &p.read)
                .ok()
                .map(|r| r.url.path().to_string());
        }
        seen.push(Seen::of(&resp, &identity));
        if same_resource && (200..300).contains(&resp.status) {
            writes.push((r.name.clone(), summary, resp));
        }
    }

    let req = build_request(ctx, &p.read)?;
    let summary = format!("GET {}", req.url.path());
    let first = ctx.send("read it", req).await?;
    if first.status != 200 {
        return Err(fail(
            format!(
                "read it ({summary}): expected status 200, got {}",
                first.status
            ),
            "status 200".into(),
            format!("status {}", first.status),
        ));
    }
    for v in &p.validators {
        check_validator(*v, &first, "read it", &summary)?;
    }
    if p.setup_validators {
        // After the read's own validators, so a service whose every response is wrong fails on
        // the read, the request a cache makes most.
        for (name, write_summary, resp) in &writes {
            for v in &p.validators {
                check_validator(*v, resp, name, write_summary)?;
            }
        }
        if let (Some((name, write_summary, resp)), Some(read_tag)) =
            (writes.last(), first.header("etag"))
        {
            let write_tag = resp.header("etag").unwrap_or_default();
            if write_tag != read_tag {
                return Err(fail(
                    format!("{name} ({write_summary}) answered ETag {write_tag}, but reading the page right after gives {read_tag}: a client that saves with If-Match using the tag its write returned gets a 412"),
                    format!("the write's ETag equal to the next read's ({read_tag})"),
                    format!("ETag {write_tag} from the write, {read_tag} from the read"),
                ));
            }
        }
    }

    for c in &p.conditions {
        let (header, value) = condition_header(*c, &first, &summary)?;
        let mut spec = p.read.clone();
        spec.headers.push((header.into(), value.clone()));
        let req = build_request(ctx, &spec)?;
        let name = format!("revalidate: {header}: {value}");
        let resp = ctx.send(&name, req).await?;
        check_not_modified(*c, &first, &resp, &summary)?;
    }

    if p.rewrite.is_some() || p.race.is_some() {
        match first.header("etag") {
            Some(tag) => ctx.scope.insert("etag".into(), Value::String(tag)),
            None => ctx.scope.remove("etag"),
        };
    }
    if let Some(rewrite) = &p.rewrite {
        run_rewrite(ctx, p, rewrite, &first, &summary).await?;
    }
    if let Some(race) = &p.race {
        run_race(ctx, p, race, &summary).await?;
    }
    Ok(())
}

/// Validators and JSON fields compared between the first read and what came after it.
const KEPT_HEADERS: &[&str] = &["ETag", "Last-Modified"];

/// The same content written again after a pause keeps the validators and the `keep` fields.
async fn run_rewrite(
    ctx: &mut CheckContext<'_>,
    p: &Revalidate,
    rewrite: &Rewrite,
    first: &Response,
    summary: &str,
) -> Result<(), Failure> {
    tokio::time::sleep(rewrite.after).await;
    let r = &rewrite.request;
    let req = build_request(ctx, &r.spec)?;
    let write_summary = format!("{} {}", req.method, req.url.path());
    let resp = ctx.send(&r.name, req).await?;
    let identity = query("$.id").map_err(Failure::Error)?;
    if let Some(info) = judge(ctx, r, &write_summary, &resp, &[], &identity)? {
        return Err(Failure::Fail(info));
    }
    // The write's answer: its validators, when it sends them, are the unchanged ones.
    for name in KEPT_HEADERS {
        if let (Some(before), Some(after)) = (first.header(name), resp.header(name)) {
            if before != after {
                return Err(unchanged_failure(
                    format!("{} ({write_summary}), {} later and with the same content, answered a different {name}", r.name, pause(rewrite)),
                    name,
                    &before,
                    &after,
                ));
            }
        }
    }
    let req = build_request(ctx, &p.read)?;
    let again = ctx.send("read it again", req).await?;
    if again.status != 200 {
        return Err(fail(
            format!(
                "read it again ({summary}): expected status 200, got {}",
                again.status
            ),
            "status 200".into(),
            format!("status {}", again.status),
        ));
    }
    for name in KEPT_HEADERS {
        let (before, after) = (first.header(name), again.header(name));
        if before != after {
            return Err(unchanged_failure(
                format!(
                    "read it again ({summary}): after {} that changed nothing, its {name} changed",
                    r.name
                ),
                name,
                &before.unwrap_or_else(|| "absent".into()),
                &after.unwrap_or_else(|| "absent".into()),
            ));
        }
    }
    let (doc_before, doc_after) = (json_of(first), json_of(&again));
    for q in &rewrite.keep {
        let before = doc_before.as_ref().and_then(|d| at(d, q));
        let after = doc_after.as_ref().and_then(|d| at(d, q));
        if before != after {
            let show = |v: &Option<Value>| v.as_ref().map_or("absent".into(), describe_json);
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "read it again ({summary}): after {} that changed nothing, {} changed",
                    r.name, q.text
                ),
                expected: format!("{} as before: {}", q.text, show(&before)),
                actual: format!("{} now: {}", q.text, show(&after)),
                ..Default::default()
            }));
        }
    }
    Ok(())
}

/// "1.5 s": how long the rewrite waited, for messages.
fn pause(rewrite: &Rewrite) -> String {
    let seconds = rewrite.after.as_secs_f64();
    if seconds.fract() == 0.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{seconds:.1} s")
    }
}

/// A validator that moved although nothing changed. Dates change from run to run, so the message
/// names the header; the values are in `expected` and `actual` (and the exchanges).
fn unchanged_failure(message: String, name: &str, before: &str, after: &str) -> Failure {
    let dated = name.eq_ignore_ascii_case("last-modified");
    Failure::Fail(FailInfo {
        message: format!("{message}: a save that changes nothing must leave the validators alone, or every cache downloads the page again and every editor holding the old tag gets a 412"),
        expected: format!("{name} as before{}", if dated { String::new() } else { format!(": {before}") }),
        actual: if dated {
            format!("{name} changed")
        } else {
            format!("{name}: {after}")
        },
        ..Default::default()
    })
}

fn json_of(resp: &Response) -> Option<Value> {
    serde_json::from_slice(&resp.body).ok()
}

fn at(doc: &Value, q: &JsonQuery) -> Option<Value> {
    q.path.query(doc).at_most_one().ok().flatten().cloned()
}

/// Writes sent together, all with the ETag just read: exactly one may succeed.
async fn run_race(
    ctx: &mut CheckContext<'_>,
    p: &Revalidate,
    race: &Race,
    summary: &str,
) -> Result<(), Failure> {
    let mut requests: Vec<OutgoingRequest> = Vec::new();
    for (i, r) in race.requests.iter().enumerate() {
        ctx.scope.insert("writer".into(), Value::from(i + 1));
        requests.push(build_request(ctx, &r.spec)?);
    }
    ctx.scope.remove("writer");
    let n = requests.len();
    let write_summary = requests
        .first()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .unwrap_or_default();
    let bodies: Vec<Option<Value>> = requests
        .iter()
        .map(|r| {
            r.body
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
        })
        .collect();
    let http = ctx.http;
    let sent: Vec<Sent> = join_all(
        race.requests
            .iter()
            .zip(requests)
            .map(|(r, req)| http.send(&r.name, req)),
    )
    .await;

    let mut shown: Vec<String> = Vec::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sent {
        let outcome = s
            .response
            .as_ref()
            .map(|r| r.status.to_string())
            .unwrap_or_else(|_| "no response".into());
        if !shown.contains(&outcome) && shown.len() < SHOWN_RACE_EXCHANGES {
            shown.push(outcome.clone());
            ctx.exchanges.push(s.exchange.clone());
        }
        *tally.entry(outcome).or_default() += 1;
    }
    let statuses = tally
        .iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let context = format!("{n} concurrent {write_summary} with If-Match of the ETag just read");

    let mut problems: Vec<String> = Vec::new();
    for (r, s) in race.requests.iter().zip(&sent) {
        match &s.response {
            Err(e) => problems.push(format!("{}: no response: {e}", r.name)),
            Ok(resp) if resp.status >= 500 => problems.push(format!(
                "{} answered {}: {}",
                r.name,
                resp.status,
                shorten(&resp.text(), 160)
            )),
            Ok(resp) => {
                if let Some(info) = judge(ctx, r, &write_summary, resp, &[], &race.identity)? {
                    problems.push(info.message);
                }
            }
        }
    }
    if let Some(first_problem) = problems.first() {
        return Err(Failure::Fail(FailInfo {
            message: format!("{context}: {first_problem} (statuses: {statuses})"),
            expected:
                "one write succeeds (200), every other answers 412 Precondition Failed; never a 5xx"
                    .into(),
            actual: format!("statuses: {statuses}"),
            evidence: problems.into_iter().take(10).collect(),
            ..Default::default()
        }));
    }
    let winners: Vec<usize> = sent
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.response
                .as_ref()
                .is_ok_and(|r| (200..300).contains(&r.status))
        })
        .map(|(i, _)| i)
        .collect();
    let expected =
        "exactly one write succeeds; the others answer 412, since the tag they were based on is gone";
    let [winner] = winners.as_slice() else {
        let message = if winners.is_empty() {
            format!("{context}: none succeeded, though the first of them to arrive was based on the current ETag (statuses: {statuses})")
        } else {
            format!("{context}: {} succeeded, so all but one of them overwrote a version their writer had never read: lost updates (statuses: {statuses})", winners.len())
        };
        return Err(Failure::Fail(FailInfo {
            message,
            expected: expected.into(),
            actual: format!("statuses: {statuses}"),
            ..Default::default()
        }));
    };

    // The read afterwards shows the one write that won.
    let want = bodies[*winner].as_ref().and_then(|b| at(b, &race.identity));
    let req = build_request(ctx, &p.read)?;
    let after = ctx.send("read it after the race", req).await?;
    let got = json_of(&after).and_then(|d| at(&d, &race.identity));
    let show = |v: &Option<Value>| v.as_ref().map_or("absent".into(), describe_json);
    if after.status != 200 || got != want {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "read it after the race ({summary}): expected status 200 with {} {} (the write that succeeded, {}), got status {} with {}",
                race.identity.text,
                show(&want),
                race.requests[*winner].name,
                after.status,
                show(&got)
            ),
            expected: format!("status 200, {} {}", race.identity.text, show(&want)),
            actual: format!("status {}, {} {}", after.status, race.identity.text, show(&got)),
            ..Default::default()
        }));
    }
    Ok(())
}

fn fail(message: String, expected: String, actual: String) -> Failure {
    Failure::Fail(FailInfo {
        message,
        expected,
        actual,
        ..Default::default()
    })
}

/// Judges one validator on `resp`, the answer to the request `step` (`summary`: its method and
/// path).
fn check_validator(
    v: Validator,
    resp: &Response,
    step: &str,
    summary: &str,
) -> Result<(), Failure> {
    let the = format!("the {}", resp.status);
    match v {
        Validator::Etag | Validator::StrongEtag => {
            let strong = v == Validator::StrongEtag;
            let want = if strong {
                "a strong ETag, like \"5d8c72a\" (in double quotes, no W/)"
            } else {
                "an ETag, like \"5d8c72a\" or W/\"5d8c72a\" (in double quotes)"
            };
            let Some(tag) = resp.header("etag") else {
                return Err(fail(
                    format!("{step} ({summary}): {the} has no ETag, so clients cannot revalidate it or make conditional writes"),
                    want.into(),
                    "no ETag header".into(),
                ));
            };
            if !ENTITY_TAG.is_match(&tag) {
                return Err(fail(
                    format!("{step} ({summary}): ETag {tag} is not an entity-tag: it must be in double quotes, optionally after W/"),
                    want.into(),
                    format!("ETag: {}", shorten(&tag, 120)),
                ));
            }
            if strong && tag.starts_with("W/") {
                return Err(fail(
                    format!("{step} ({summary}): ETag {tag} is weak; If-Match compares strongly, so a weak tag can never allow a conditional write"),
                    want.into(),
                    format!("ETag: {}", shorten(&tag, 120)),
                ));
            }
            Ok(())
        }
        Validator::LastModified => {
            let want = "Last-Modified and Date as IMF-fixdates (Sun, 06 Nov 1994 08:49:37 GMT), Last-Modified not later than Date";
            let Some(text) = resp.header("last-modified") else {
                return Err(fail(
                    format!("{step} ({summary}): {the} has no Last-Modified"),
                    want.into(),
                    "no Last-Modified header".into(),
                ));
            };
            let Some(modified) = parse_http_date(&text) else {
                return Err(fail(
                    format!("{step} ({summary}): Last-Modified \"{}\" is not an HTTP-date in IMF-fixdate form", shorten(&text, 80)),
                    want.into(),
                    format!("Last-Modified: {}", shorten(&text, 80)),
                ));
            };
            let Some(date) = resp.header("date").as_deref().and_then(parse_http_date) else {
                return Err(fail(
                    format!("{step} ({summary}): {the} has Last-Modified but no valid Date to compare it with"),
                    want.into(),
                    format!(
                        "Date: {}",
                        resp.header("date").unwrap_or_else(|| "absent".into())
                    ),
                ));
            };
            if modified > date {
                // The dates themselves change every run; how far ahead it is does not.
                let ahead = modified - date;
                let how_far = if ahead >= 120 {
                    format!("{} minutes", (ahead + 30) / 60)
                } else {
                    format!("{ahead} seconds")
                };
                return Err(fail(
                    format!("{step} ({summary}): Last-Modified is {how_far} later than the response's Date: a modification time in the future (a time zone mix-up?)"),
                    want.into(),
                    format!("Last-Modified {how_far} after Date"),
                ));
            }
            Ok(())
        }
    }
}

/// The header a condition sends, built from the 200's validators.
fn condition_header(
    c: Condition,
    first: &Response,
    summary: &str,
) -> Result<(&'static str, String), Failure> {
    let missing = |what: &str| {
        fail(
            format!("read it ({summary}): the 200 has no {what} to revalidate with"),
            format!("a {what} header"),
            format!("no {what}"),
        )
    };
    Ok(match c {
        Condition::IfNoneMatch => (
            "If-None-Match",
            first.header("etag").ok_or_else(|| missing("ETag"))?,
        ),
        Condition::IfNoneMatchWeak => {
            let tag = first.header("etag").ok_or_else(|| missing("ETag"))?;
            let opaque = tag.strip_prefix("W/").unwrap_or(&tag);
            ("If-None-Match", format!("W/{opaque}"))
        }
        Condition::IfModifiedSince => (
            "If-Modified-Since",
            first
                .header("last-modified")
                .ok_or_else(|| missing("Last-Modified"))?,
        ),
    })
}

/// A 304 with no body that repeats the 200's metadata.
fn check_not_modified(
    c: Condition,
    first: &Response,
    resp: &Response,
    summary: &str,
) -> Result<(), Failure> {
    if resp.status != 304 {
        return Err(fail(
            format!(
                "{} ({summary}): expected 304 Not Modified, got {}",
                c.describe(),
                resp.status
            ),
            "status 304, no body".into(),
            format!("status {}", resp.status),
        ));
    }
    let mut problems: Vec<String> = Vec::new();
    if !resp.body.is_empty() {
        problems.push(format!(
            "it has a {}-byte body; a 304 has none",
            resp.body.len()
        ));
    }
    for name in REPEATED {
        match (first.header(name), resp.header(name)) {
            (Some(want), None) => {
                problems.push(format!("it lacks {name}, which the 200 had ({want})"))
            }
            (None, Some(got)) => {
                problems.push(format!("it has {name}: {got}, which the 200 did not have"))
            }
            (Some(want), Some(got)) if want != got => {
                problems.push(format!("its {name} is {got}, the 200's was {want}"))
            }
            _ => {}
        }
    }
    if first.header("date").is_some() && resp.header("date").is_none() {
        problems.push("it lacks Date, which the 200 had".into());
    }
    let Some(first_problem) = problems.first() else {
        return Ok(());
    };
    Err(Failure::Fail(FailInfo {
        message: format!(
            "{} ({summary}): the 304 does not stand for the 200: {first_problem}{}",
            c.describe(),
            match problems.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            }
        ),
        expected: format!(
            "a 304 with no body, repeating the 200's {}",
            REPEATED.join(", ")
        ),
        actual: problems.join("\n"),
        evidence: problems.clone(),
        ..Default::default()
    }))
}

/// Seconds since the Unix epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only
/// form a sender may generate (RFC 9110 §5.6.7).
pub fn parse_http_date(text: &str) -> Option<i64> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.trim().split(' ').collect();
    let [day_name, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    if !DAYS.contains(&day_name.strip_suffix(',')?) || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let clock: Vec<i64> = time
        .split(':')
        .map(|p| (p.len() == 2).then(|| p.parse().ok()).flatten())
        .collect::<Option<_>>()?;
    let [hour, minute, second] = clock.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *hour > 23 || *minute > 59 || *second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_imf_fixdates_only() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sat, 29 Feb 2020 23:59:59 GMT"),
            Some(1_583_020_799)
        );
        // RFC 850 and asctime forms are obsolete: recipients accept them, senders must not send.
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 +0000"), None);
        assert_eq!(parse_http_date("2026-11-28T15:04:05Z"), None);
    }

    #[test]
    fn rewrite_messages_name_the_pause_and_never_print_dates() {
        let rewrite = |ms: u64| Rewrite {
            after: std::time::Duration::from_millis(ms),
            request: crate::probes::request::request(
                "revalidate",
                0,
                toml::from_str("method = \"PUT\"\npath = \"/x\"").unwrap(),
            )
            .unwrap(),
            keep: Vec::new(),
        };
        assert_eq!(pause(&rewrite(1500)), "1.5 s");
        assert_eq!(pause(&rewrite(2000)), "2 s");
        // Dates change from run to run: a moved Last-Modified is named, not quoted.
        let Failure::Fail(info) = unchanged_failure(
            "m".into(),
            "Last-Modified",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:39 GMT",
        ) else {
            panic!("a failure")
        };
        assert!(!info.expected.contains("1994") && !info.actual.contains("1994"));
        let Failure::Fail(info) = unchanged_failure("m".into(), "ETag", "\"a\"", "\"b\"") else {
            panic!("a failure")
        };
        assert_eq!(info.expected, "ETag as before: \"a\"");
        assert_eq!(info.actual, "ETag: \"b\"");
    }

    #[test]
    fn entity_tags_need_quotes() {
        assert!(ENTITY_TAG.is_match("\"5d8c72a\""));
        assert!(ENTITY_TAG.is_match("W/\"5d8c72a\""));
        assert!(ENTITY_TAG.is_match("\"\""));
        assert!(!ENTITY_TAG.is_match("5d8c72a"));
        assert!(!ENTITY_TAG.is_match("\"a b\""));
    }
}
