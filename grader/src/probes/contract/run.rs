//! `contract`: the document first (a service without a valid one cannot be held to it), then
//! each request: the exercise's expectations, then the document's (`openapi::conform`), then,
//! for a deprecated operation, its announcement.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use super::params::Contract;
use crate::engine::http::Response;
use crate::engine::step::{apply_captures, build_request};
use crate::engine::{fail, CheckContext, Failure};
use crate::probes::openapi::{self, conform};
use crate::probes::upstream_calls::run::judge as judge_expectations;

/// Notes quoted on a pass: a few say what the rest would.
const NOTES_SHOWN: usize = 3;

pub async fn run(p: &Contract, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let doc = openapi::fetch(ctx, &p.document).await?;
    for key in &p.deprecated {
        match doc.operation_by_key(key) {
            Some(op) if op.deprecated => {}
            Some(op) => {
                return Err(fail(
                    format!(
                        "{} does not mark {} deprecated",
                        p.document,
                        op.shown()
                    ),
                    "\"deprecated\": true on the operation (OpenAPI 3.1 §4.8.10), so generated clients warn their users",
                    format!("\"deprecated\": {}", op.deprecated),
                    Vec::new(),
                ))
            }
            None => {
                return Err(fail(
                    format!("{} does not document {}", p.document, key.replace("{}", "{…}")),
                    "the deprecated operation still documented (deprecated is not removed)",
                    "absent".into(),
                    Vec::new(),
                ))
            }
        }
    }
    // The document's exchange is the evidence for what it says about deprecation; from here on
    // the report shows the service's answers that broke it.
    ctx.exchanges.clear();
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;
    let mut notes: BTreeSet<String> = BTreeSet::new();
    let mut announced = 0;
    for r in &p.requests {
        let req = build_request(ctx, &r.spec)?;
        let method = req.method.clone();
        let path = req.url.path().to_string();
        let summary = format!("{method} {path}");
        let resp = ctx.send(&r.name, req).await?;
        if let Some(info) = judge_expectations(ctx, r, &summary, &resp, &[], &identity)? {
            return Err(Failure::Fail(info));
        }
        let judgement = conform::judge(&doc, &method, &path, &resp);
        if let Some(first) = judgement.violations.first() {
            return Err(fail(
                format!("{} ({summary}) → {}: {first}", r.name, resp.status),
                format!("a response as {} documents it", p.document),
                first.clone(),
                judgement.violations[1..].to_vec(),
            ));
        }
        notes.extend(judgement.notes);
        let deprecated = doc
            .operation_for(&method, &path)
            .is_some_and(|op| p.deprecated.contains(&op.key()));
        if deprecated {
            let (problems, warnings) = announcement(&resp);
            if let Some(first) = problems.first() {
                return Err(fail(
                    format!("{} ({summary}) → {}: {first}", r.name, resp.status),
                    "Deprecation: @<unix seconds> (RFC 9745) and Sunset: <HTTP-date> (RFC 8594), no earlier than the deprecation",
                    format!(
                        "Deprecation: {}; Sunset: {}",
                        resp.header("deprecation").unwrap_or_else(|| "(absent)".into()),
                        resp.header("sunset").unwrap_or_else(|| "(absent)".into())
                    ),
                    problems[1..].to_vec(),
                ));
            }
            notes.extend(warnings);
            announced += 1;
        }
        apply_captures(ctx, &r.name, &r.captures, &resp)?;
    }
    ctx.measured(format!(
        "{} responses as {} documents them (status, media type, body schema, required headers)",
        p.requests.len(),
        p.document
    ));
    if announced > 0 {
        ctx.measured(format!(
            "{announced} responses of a deprecated operation, each with Deprecation and Sunset"
        ));
    }
    let total = notes.len();
    for note in notes.into_iter().take(NOTES_SHOWN) {
        ctx.measured(format!("note: {note}"));
    }
    if total > NOTES_SHOWN {
        ctx.measured(format!("note: and {} more", total - NOTES_SHOWN));
    }
    Ok(())
}

/// What a deprecated operation's response announces: problems (failures) and warnings (notes).
fn announcement(resp: &Response) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let deprecated_at = match resp.header("deprecation") {
        None => {
            problems
                .push("no Deprecation header (RFC 9745: `Deprecation: @<unix seconds>`)".into());
            None
        }
        Some(value) => match structured_date(&value) {
            Some(seconds) => Some(seconds),
            None if value.trim().eq_ignore_ascii_case("true") => {
                warnings.push(
                    "Deprecation: true is the form of the draft before RFC 9745; it says that the operation is deprecated but not since when (send `@<unix seconds>`)"
                        .into(),
                );
                None
            }
            None => {
                problems.push(format!(
                    "Deprecation: {value} is not a Structured Fields date (RFC 9745 §2.1: `@` and the unix seconds, e.g. @1767225600)"
                ));
                None
            }
        },
    };
    match resp.header("sunset") {
        None => problems.push(
            "no Sunset header (RFC 8594: when the operation stops answering, as an HTTP-date)".into(),
        ),
        Some(value) => match httpdate::parse_http_date(value.trim()) {
            Err(_) => problems.push(format!(
                "Sunset: {value} is not an HTTP-date (RFC 8594 §3, e.g. Thu, 31 Dec 2026 23:59:59 GMT)"
            )),
            Ok(sunset) => {
                if let Some(seconds) = deprecated_at {
                    let since = if seconds >= 0 {
                        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
                    } else {
                        UNIX_EPOCH
                    };
                    if sunset < since {
                        problems.push(format!(
                            "Sunset ({}) comes before Deprecation ({}): an operation cannot stop before it is deprecated (RFC 9745 §3)",
                            value.trim(),
                            httpdate::fmt_http_date(since)
                        ));
                    }
                }
            }
        },
    }
    (problems, warnings)
}

/// An RFC 8941 Date (`@1767225600`): the seconds, or `None` when it is not one.
fn structured_date(value: &str) -> Option<i64> {
    let digits = value.trim().strip_prefix('@')?;
    let unsigned = digits.strip_prefix('-').unwrap_or(digits);
    if unsigned.is_empty() || unsigned.len() > 15 || !unsigned.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(headers: &[(&str, &str)]) -> Response {
        Response::for_test(200, headers, "")
    }

    #[test]
    fn a_dated_deprecation_and_a_later_sunset_pass() {
        let (p, w) = announcement(&with(&[
            ("deprecation", "@1780272000"),
            ("sunset", "Thu, 31 Dec 2026 23:59:59 GMT"),
        ]));
        assert!(p.is_empty() && w.is_empty(), "{p:?} {w:?}");
    }

    #[test]
    fn the_drafts_true_is_a_warning_and_missing_or_early_sunsets_fail() {
        let (p, w) = announcement(&with(&[
            ("deprecation", "true"),
            ("sunset", "Thu, 31 Dec 2026 23:59:59 GMT"),
        ]));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(w.len(), 1);
        let (p, _) = announcement(&with(&[("deprecation", "@1780272000")]));
        assert!(p[0].contains("no Sunset"), "{p:?}");
        let (p, _) = announcement(&with(&[
            ("deprecation", "@1798761599"),
            ("sunset", "Mon, 01 Jun 2026 00:00:00 GMT"),
        ]));
        assert!(p[0].contains("comes before Deprecation"), "{p:?}");
        let (p, _) = announcement(&with(&[
            ("deprecation", "Mon, 01 Jun 2026 00:00:00 GMT"),
            ("sunset", "Thu, 31 Dec 2026 23:59:59 GMT"),
        ]));
        assert!(p[0].contains("not a Structured Fields date"), "{p:?}");
        let (p, _) = announcement(&with(&[]));
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn structured_dates_are_at_and_digits() {
        assert_eq!(structured_date("@1767225600"), Some(1_767_225_600));
        assert_eq!(structured_date(" @-5 "), Some(-5));
        for not in ["1767225600", "@", "@1.5", "@x", "true"] {
            assert_eq!(structured_date(not), None, "{not}");
        }
    }
}
