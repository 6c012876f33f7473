//! `request_log`: send tagged traffic, then find each request's line in the service's output by
//! its request id, and compare its members with what the grader sent and saw.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::params::RequestLog;
use crate::engine::{fail, CheckContext, Failure};
use crate::probes::service_log::{read_tail, MAX_READ, NOT_CAPTURED};
use crate::probes::traffic::{self, route_matches, Sent, Tagging};
use crate::probes::upstream_calls::run::send_in_order;

const POLL: Duration = Duration::from_millis(100);
/// The service measures inside the grader's window; this absorbs coarse clocks and rounding.
const DURATION_SLACK_MS: f64 = 5.0;
/// Characters of a log line shown: a whole request line, as a rule.
const SHOWN_CHARS: usize = 1000;

pub async fn run(p: &RequestLog, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let Some(path) = ctx.service.service_log_path().map(Path::to_path_buf) else {
        return Err(Failure::Skip(NOT_CAPTURED.into()));
    };
    send_in_order(ctx, &p.setup).await?;
    let sent = traffic::send(ctx, &p.traffic, Tagging::RequestAndTraceIds).await?;
    let deadline = Instant::now() + p.wait;
    let text = loop {
        let path = path.clone();
        let (text, _) = tokio::task::spawn_blocking(move || read_tail(&path, MAX_READ))
            .await
            .map_err(|e| Failure::Error(format!("reading the service's output: {e}")))?
            .map_err(Failure::Error)?;
        let all_there = sent.iter().all(|s| {
            s.request_id
                .as_deref()
                .is_some_and(|rid| text.contains(rid))
        });
        if all_there || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(POLL).await;
    };
    let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
    for s in &sent {
        judge_one(s, &lines)?;
    }
    ctx.measured(format!(
        "{} requests, each found in exactly one JSON line with its method, route, status, duration and trace id",
        sent.len()
    ));
    Ok(())
}

fn shown(line: &str) -> String {
    let mut out: String = line.chars().take(SHOWN_CHARS).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

fn json_object(line: &str) -> Option<Map<String, Value>> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn judge_one(s: &Sent, lines: &[(usize, &str)]) -> Result<(), Failure> {
    let rid = s.request_id.as_deref().unwrap_or_default();
    let tid = s.trace_id.as_deref().unwrap_or_default();
    let request = format!("{} {} (X-Request-Id: {rid})", s.method, s.path);
    let matching: Vec<(usize, &str, Map<String, Value>)> = lines
        .iter()
        .filter_map(|(n, l)| {
            let object = json_object(l)?;
            (object.get("request_id").and_then(Value::as_str) == Some(rid))
                .then_some((*n, *l, object))
        })
        .collect();
    // Other lines may carry the request id too (an error logged while handling the request);
    // the request's own line is the one with its outcome. With none such, the first line with
    // the id is judged, and fails on what it lacks.
    let outcomes: Vec<&(usize, &str, Map<String, Value>)> = matching
        .iter()
        .filter(|(_, _, o)| o.contains_key("status") || o.contains_key("duration_ms"))
        .collect();
    let expected = "one JSON object per request on one line: method, route, status (an integer), duration_ms, trace_id, request_id";
    let judged: Vec<&(usize, &str, Map<String, Value>)> = if outcomes.is_empty() {
        matching.iter().take(1).collect()
    } else {
        outcomes
    };
    let (n, line, object) = match judged.as_slice() {
        [one] => *one,
        [] => {
            let mentions: Vec<String> = lines
                .iter()
                .filter(|(_, l)| l.contains(rid))
                .take(3)
                .map(|(n, l)| format!("output line {n}: {}", shown(l)))
                .collect();
            let message = match mentions.first() {
                Some(first) => format!(
                    "{request}: the line that mentions it is not a JSON object with \"request_id\": \"{rid}\" ({first})"
                ),
                None => format!(
                    "{request}: no line of your service's output has \"request_id\": \"{rid}\""
                ),
            };
            return Err(fail(message, expected, mentions.first().cloned().unwrap_or_else(|| "no such line".into()), mentions));
        }
        several => {
            return Err(fail(
                format!(
                    "{request}: {} JSON lines have its request id and a status or duration; one such line per request, written when it is done",
                    several.len()
                ),
                expected,
                format!("output lines {}", several.iter().map(|(n, ..)| n.to_string()).collect::<Vec<_>>().join(", ")),
                several.iter().map(|(n, l, _)| format!("output line {n}: {}", shown(l))).collect(),
            ))
        }
    };
    let evidence = vec![format!("output line {n}: {}", shown(line))];
    let wrong = |member: &str, got: String, want: String| {
        fail(
            format!("{request}: its log line's \"{member}\" is {got}, expected {want}"),
            expected,
            format!("output line {n}: {}", shown(line)),
            evidence.clone(),
        )
    };
    let text_of = |v: Option<&Value>| v.map_or("missing".to_string(), |v| v.to_string());
    match object.get("method").and_then(Value::as_str) {
        Some(m) if m.eq_ignore_ascii_case(&s.method) => {}
        _ => {
            return Err(wrong(
                "method",
                text_of(object.get("method")),
                format!("\"{}\"", s.method),
            ))
        }
    }
    match object.get("route").and_then(Value::as_str) {
        Some(r) if route_matches(r, &s.route) => {}
        _ => {
            return Err(wrong(
                "route",
                text_of(object.get("route")),
                format!("the route template \"{}\"", s.route),
            ))
        }
    }
    match object.get("status") {
        Some(Value::Number(code)) if code.as_u64() == Some(u64::from(s.status)) => {}
        Some(Value::String(code)) if code == &s.status.to_string() => {
            return Err(wrong(
                "status",
                format!("the string \"{code}\""),
                format!("the integer {}", s.status),
            ))
        }
        other => {
            return Err(wrong(
                "status",
                text_of(other),
                format!("{} (the status your service answered)", s.status),
            ))
        }
    }
    let elapsed_ms = s.elapsed.as_secs_f64() * 1000.0;
    match object.get("duration_ms").and_then(Value::as_f64) {
        Some(d) if (0.0..=elapsed_ms + DURATION_SLACK_MS).contains(&d) => {}
        Some(d) if d > elapsed_ms => {
            return Err(wrong(
                "duration_ms",
                format!("{d}"),
                format!(
                    "at most {elapsed_ms:.1}, what the grader's own clock measured from sending the request to reading its answer (microseconds?)"
                ),
            ))
        }
        _ => {
            return Err(wrong(
                "duration_ms",
                text_of(object.get("duration_ms")),
                "a number of milliseconds".into(),
            ))
        }
    }
    match object.get("trace_id").and_then(Value::as_str) {
        Some(t) if t == tid => {}
        _ => {
            return Err(wrong(
                "trace_id",
                text_of(object.get("trace_id")),
                format!("\"{tid}\", the trace id of the traceparent the grader sent"),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> Sent {
        Sent {
            method: "GET".into(),
            route: "/shipments/{id}".into(),
            path: "/shipments/abc".into(),
            ids: vec!["abc".into()],
            status: 404,
            elapsed: Duration::from_millis(20),
            request_id: Some("grader-1".into()),
            trace_id: Some("ab".repeat(16)),
        }
    }

    fn verdict(lines: &[&str]) -> Result<(), String> {
        let numbered: Vec<(usize, &str)> =
            lines.iter().enumerate().map(|(i, l)| (i + 1, *l)).collect();
        judge_one(&sent(), &numbered).map_err(|f| match f {
            Failure::Fail(info) => info.message,
            other => format!("{other:?}"),
        })
    }

    const GOOD: &str = r#"{"method":"GET","route":"/shipments/:id","status":404,"duration_ms":1.5,"trace_id":"abababababababababababababababab","request_id":"grader-1"}"#;

    #[test]
    fn a_correct_line_passes_among_others() {
        assert_eq!(
            verdict(&["starting", GOOD, r#"{"request_id":"other"}"#]),
            Ok(())
        );
    }

    #[test]
    fn each_wrong_member_is_named() {
        let with = |from: &str, to: &str| verdict(&[&GOOD.replace(from, to)]).unwrap_err();
        assert!(with("\"status\":404", "\"status\":\"404\"").contains("the string \"404\""));
        assert!(with("\"status\":404", "\"status\":200").contains("\"status\" is 200"));
        assert!(with("/shipments/:id", "/shipments/abc").contains("\"route\""));
        assert!(with("1.5", "20000").contains("microseconds?"));
        assert!(with("abababababababababababababababab", "cdcd").contains("\"trace_id\""));
        assert!(with("\"GET\"", "\"POST\"").contains("\"method\""));
        assert!(verdict(&["GET /shipments/abc 404 request=grader-1"])
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(verdict(&["nothing"]).unwrap_err().contains("no line"));
        assert!(verdict(&[GOOD, GOOD]).unwrap_err().contains("2 JSON lines"));
        // A line of the app's own with the request id, and no outcome, is not the request's line.
        let note = r#"{"level":"warn","message":"shipment not found","request_id":"grader-1"}"#;
        assert_eq!(verdict(&[note, GOOD]), Ok(()));
        assert!(verdict(&[note]).unwrap_err().contains("\"method\""));
    }
}
