//! `revalidate`: reads a resource, judges its validators (RFC 9110 §8.8), then sends conditional
//! GETs with them and judges each 304 against the 200 it stands for (§13.1.2, §13.1.3, §15.4.5).
//!
//! A 304 tells a cache "your stored 200 is still good, with these updated headers": so it must
//! carry no body, and must repeat the 200's ETag, Cache-Control, Vary, Content-Location and
//! Expires, or a cache would update its stored response with the wrong metadata.

use std::sync::LazyLock;

use regex::Regex;

use super::params::{Condition, Revalidate, Validator};
use crate::engine::assert::shorten;
use crate::engine::http::Response;
use crate::engine::step::build_request;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::request::query;
use crate::probes::upstream_calls::run::{judge, Seen};

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
    let mut seen: Vec<Seen> = Vec::new();
    for r in &p.setup {
        let req = build_request(ctx, &r.spec)?;
        let summary = format!("{} {}", req.method, req.url.path());
        let resp = ctx.send(&r.name, req).await?;
        if let Some(info) = judge(ctx, r, &summary, &resp, &seen, &identity)? {
            return Err(Failure::Fail(info));
        }
        seen.push(Seen::of(&resp, &identity));
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
        check_validator(*v, &first, &summary)?;
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

fn check_validator(v: Validator, resp: &Response, summary: &str) -> Result<(), Failure> {
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
                    format!("read it ({summary}): the 200 has no ETag, so clients cannot revalidate it or make conditional writes"),
                    want.into(),
                    "no ETag header".into(),
                ));
            };
            if !ENTITY_TAG.is_match(&tag) {
                return Err(fail(
                    format!("read it ({summary}): ETag {tag} is not an entity-tag: it must be in double quotes, optionally after W/"),
                    want.into(),
                    format!("ETag: {}", shorten(&tag, 120)),
                ));
            }
            if strong && tag.starts_with("W/") {
                return Err(fail(
                    format!("read it ({summary}): ETag {tag} is weak; If-Match compares strongly, so a weak tag can never allow a conditional write"),
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
                    format!("read it ({summary}): the 200 has no Last-Modified"),
                    want.into(),
                    "no Last-Modified header".into(),
                ));
            };
            let Some(modified) = parse_http_date(&text) else {
                return Err(fail(
                    format!("read it ({summary}): Last-Modified \"{}\" is not an HTTP-date in IMF-fixdate form", shorten(&text, 80)),
                    want.into(),
                    format!("Last-Modified: {}", shorten(&text, 80)),
                ));
            };
            let Some(date) = resp.header("date").as_deref().and_then(parse_http_date) else {
                return Err(fail(
                    format!("read it ({summary}): the 200 has Last-Modified but no valid Date to compare it with"),
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
                    format!("read it ({summary}): Last-Modified is {how_far} later than the response's Date: a modification time in the future (a time zone mix-up?)"),
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
pub(crate) fn parse_http_date(text: &str) -> Option<i64> {
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn entity_tags_need_quotes() {
        assert!(ENTITY_TAG.is_match("\"5d8c72a\""));
        assert!(ENTITY_TAG.is_match("W/\"5d8c72a\""));
        assert!(ENTITY_TAG.is_match("\"\""));
        assert!(!ENTITY_TAG.is_match("5d8c72a"));
        assert!(!ENTITY_TAG.is_match("\"a b\""));
    }
}
