//! `trace_context`: one request per round, then the `traceparent` each new upstream call carried,
//! judged against W3C Trace Context (§3.2 the header's form, §3.4 what a vendor sends on).

use std::collections::BTreeSet;

use super::params::{Mode, TraceContext};
use crate::engine::step::build_request;
use crate::engine::{fail, CheckContext, Failure};
use crate::probes::request::ProbeRequest;
use crate::probes::traffic::new_trace;
use crate::probes::upstream_calls::run::judge;
use crate::upstream::{Call, Upstream};

/// A `traceparent` as W3C Trace Context §3.2 defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceParent {
    pub version: String,
    pub trace_id: String,
    pub parent_id: String,
    pub flags: String,
}

/// Parses a `traceparent` strictly: lower-case hex only, version not `ff`, version `00` exactly
/// four fields, ids not all zeros. The error says which rule the value breaks.
pub fn parse_traceparent(value: &str) -> Result<TraceParent, String> {
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let fields: Vec<&str> = value.split('-').collect();
    if fields.len() < 4 {
        return Err("it has fewer than four dash-separated fields".into());
    }
    let (version, trace_id, parent_id, flags) = (fields[0], fields[1], fields[2], fields[3]);
    if !lower_hex(version, 2) {
        return Err(format!(
            "its version \"{version}\" is not two lower-case hex digits"
        ));
    }
    if version == "ff" {
        return Err("its version is ff, which is invalid".into());
    }
    if version == "00" && fields.len() != 4 {
        return Err("version 00 has exactly four fields".into());
    }
    if !lower_hex(trace_id, 32) {
        return Err(format!(
            "its trace id \"{trace_id}\" is not 32 lower-case hex digits"
        ));
    }
    if trace_id.bytes().all(|b| b == b'0') {
        return Err("its trace id is all zeros, which is invalid".into());
    }
    if !lower_hex(parent_id, 16) {
        return Err(format!(
            "its parent id \"{parent_id}\" is not 16 lower-case hex digits"
        ));
    }
    if parent_id.bytes().all(|b| b == b'0') {
        return Err("its parent id is all zeros, which is invalid".into());
    }
    if !lower_hex(flags, 2) {
        return Err(format!(
            "its flags \"{flags}\" are not two lower-case hex digits"
        ));
    }
    Ok(TraceParent {
        version: version.into(),
        trace_id: trace_id.into(),
        parent_id: parent_id.into(),
        flags: flags.into(),
    })
}

/// The malformed `traceparent` of round `n` (each breaks one rule), and what it breaks.
fn malformed(n: usize, trace_id: &str, parent_id: &str) -> (String, &'static str) {
    match n % super::params::MALFORMED_FORMS {
        0 => (
            format!("00-{}-{parent_id}-01", trace_id.to_ascii_uppercase()),
            "upper-case hex",
        ),
        1 => (
            format!("00-{}-{parent_id}-01", "0".repeat(32)),
            "an all-zero trace id",
        ),
        2 => (format!("ff-{trace_id}-{parent_id}-01"), "version ff"),
        3 => (
            format!("00-{}-{parent_id}-01", &trace_id[..30]),
            "a 30-digit trace id",
        ),
        _ => (
            format!("00-{trace_id}-{}-01", "0".repeat(16)),
            "an all-zero parent id",
        ),
    }
}

/// What one request through the service produced at the upstream.
pub(crate) struct Passage {
    /// `GET /quotes`, for messages.
    pub summary: String,
    pub status: u16,
    /// The upstream route's calls that arrived while the request ran (the kept ones).
    pub calls: Vec<Call>,
}

impl Passage {
    /// The `traceparent` header of the first call, as received.
    pub fn traceparent(&self) -> Option<String> {
        self.calls.first().and_then(|call| {
            call.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
                .map(|(_, v)| v.clone())
        })
    }
}

/// Sends `request` (with `traceparent` when given) as step `step`, judges its response as the
/// request expects, and collects the calls the named upstream route got meanwhile.
pub(crate) async fn send_through(
    ctx: &mut CheckContext<'_>,
    request: &ProbeRequest,
    traceparent: Option<&str>,
    upstream: &Upstream,
    route: &str,
    step: &str,
) -> Result<Passage, Failure> {
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;
    let mut req = build_request(ctx, &request.spec)?;
    if let Some(value) = traceparent {
        req.headers.push(("traceparent".into(), value.to_string()));
    }
    let summary = format!("{} {}", req.method, req.url.path());
    let before = upstream.calls(route, None).count;
    let resp = ctx.send(step, req).await?;
    if let Some(info) = judge(ctx, request, &summary, &resp, &[], &identity)? {
        return Err(Failure::Fail(info));
    }
    let calls = upstream.calls(route, None);
    let new = calls.count.saturating_sub(before);
    let skip = calls.kept.len().saturating_sub(new);
    Ok(Passage {
        summary,
        status: resp.status,
        calls: calls.kept.into_iter().skip(skip).collect(),
    })
}

pub async fn run(p: &TraceContext, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let upstream = ctx
        .upstreams
        .get(&p.upstream)
        .map_err(Failure::Error)?
        .clone();
    let mut started_traces: BTreeSet<String> = BTreeSet::new();
    let mut measured = Vec::new();
    for round in 0..p.rounds {
        let (trace_id, parent_id) = new_trace(&mut ctx.rng);
        let (sent, what) = match p.mode {
            Mode::Propagate => (
                Some(format!("00-{trace_id}-{parent_id}-01")),
                "a valid traceparent",
            ),
            Mode::Start => (None, "no traceparent"),
            Mode::Invalid => {
                let (value, _) = malformed(round, &trace_id, &parent_id);
                (Some(value), "a malformed traceparent")
            }
        };
        let step = format!("{} (round {}, {what})", p.request.name, round + 1);
        let passage =
            send_through(ctx, &p.request, sent.as_deref(), &upstream, &p.route, &step).await?;
        let summary = &passage.summary;
        let sent_text = sent.clone().unwrap_or_else(|| "(none)".into());
        if passage.calls.is_empty() {
            return Err(fail(
                format!(
                    "{summary} (round {}) made no call to {} ({}), so there is no traceparent to judge",
                    round + 1,
                    p.upstream,
                    p.route
                ),
                "one call to the upstream per request, carrying a traceparent",
                "no call".into(),
                Vec::new(),
            ));
        }
        let received = passage.traceparent();
        let evidence = vec![
            format!("sent to your service: traceparent: {sent_text}"),
            format!(
                "{} received: traceparent: {}",
                p.upstream,
                received.as_deref().unwrap_or("(none)")
            ),
        ];
        let Some(received) = received else {
            let expected = match p.mode {
                Mode::Propagate => "a traceparent with the caller's trace id and a new parent id",
                Mode::Start => "a traceparent that starts a new trace",
                Mode::Invalid => {
                    "a traceparent that starts a new trace (the malformed one ignored)"
                }
            };
            return Err(fail(
                format!(
                    "your call to {} ({}) carried no traceparent (round {}, {what} sent)",
                    p.upstream,
                    p.route,
                    round + 1
                ),
                expected,
                "no traceparent header".into(),
                evidence,
            ));
        };
        let parsed = match parse_traceparent(&received) {
            Ok(parsed) => parsed,
            Err(why) => {
                let forwarded = sent.as_deref() == Some(received.as_str());
                return Err(fail(
                    format!(
                        "the traceparent your service sent to {} is invalid: {why}{}",
                        p.upstream,
                        if forwarded {
                            " (it is the malformed value the grader sent, forwarded: a malformed traceparent must be ignored)"
                        } else {
                            ""
                        }
                    ),
                    "00-<32 lower-case hex trace id>-<16 lower-case hex span id>-<2 hex flags>",
                    format!("traceparent: {received}"),
                    evidence,
                ));
            }
        };
        match p.mode {
            Mode::Propagate => {
                if parsed.trace_id != trace_id {
                    return Err(fail(
                        format!(
                            "your service started a new trace instead of joining the caller's: the caller's trace id was {trace_id}, your call to {} carried {}",
                            p.upstream, parsed.trace_id
                        ),
                        "the caller's trace id, with a new parent id",
                        format!("traceparent: {received}"),
                        evidence,
                    ));
                }
                if parsed.parent_id == parent_id {
                    return Err(fail(
                        format!(
                            "your service forwarded the caller's parent id {parent_id} to {}: the parent of that call is your own span, so your service is missing from the trace",
                            p.upstream
                        ),
                        "the caller's trace id, with your span's id as the parent id",
                        format!("traceparent: {received}"),
                        evidence,
                    ));
                }
                measured.push("the caller's trace, a new parent id".to_string());
            }
            Mode::Start | Mode::Invalid => {
                let malformed_trace = sent
                    .as_deref()
                    .and_then(|s| s.split('-').nth(1))
                    .map(str::to_ascii_lowercase);
                if sent.as_deref() == Some(received.as_str())
                    || malformed_trace.as_deref() == Some(parsed.trace_id.as_str())
                {
                    return Err(fail(
                        format!(
                            "your service kept the trace of a malformed traceparent ({}) instead of ignoring it",
                            malformed(round, &trace_id, &parent_id).1
                        ),
                        "a new trace: the malformed header ignored as if absent",
                        format!("traceparent: {received}"),
                        evidence,
                    ));
                }
                if !started_traces.insert(parsed.trace_id.clone()) {
                    return Err(fail(
                        format!(
                            "two requests got the same new trace id {}: a new trace per request",
                            parsed.trace_id
                        ),
                        "a new random trace id for every request",
                        format!("traceparent: {received}"),
                        evidence,
                    ));
                }
                measured.push(match p.mode {
                    Mode::Invalid => format!(
                        "{} ignored, a new trace",
                        malformed(round, &trace_id, &parent_id).1
                    ),
                    _ => "a new trace".to_string(),
                });
            }
        }
    }
    ctx.measured(format!(
        "{} request{}: {}",
        p.rounds,
        if p.rounds == 1 { "" } else { "s" },
        summarise(&measured)
    ));
    Ok(())
}

/// "a new trace, each time" for identical lines; the lines joined otherwise.
fn summarise(lines: &[String]) -> String {
    match lines.split_first() {
        Some((first, rest)) if rest.iter().all(|l| l == first) && !rest.is_empty() => {
            format!("{first}, each time")
        }
        _ => lines.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_traceparents() {
        let ok =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ok.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ok.parent_id, "00f067aa0ba902b7");
        // A later version may add fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_ok()
        );
        let (t, p) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        for n in 0..super::super::params::MALFORMED_FORMS {
            let (value, what) = malformed(n, t, p);
            assert!(parse_traceparent(&value).is_err(), "{what}: {value}");
        }
        for bad in [
            "",
            "00-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(parse_traceparent(bad).is_err(), "{bad}");
        }
    }
}
