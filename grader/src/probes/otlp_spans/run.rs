//! `otlp_spans`: send one request in a known trace, wait for its spans at the collector, judge
//! the tree and the attributes (OpenTelemetry HTTP semantic conventions, stable names).

use std::time::{Duration, Instant};

use super::params::OtlpSpans;
use crate::engine::{fail, CheckContext, Failure};
use crate::probes::trace_context::{parse_traceparent, send_through};
use crate::probes::traffic::{new_trace, route_matches};
use crate::upstream::collector::{Attribute, ReceivedSpan, KIND_CLIENT, KIND_SERVER};

const POLL: Duration = Duration::from_millis(100);
/// Spans listed as evidence.
const MAX_EVIDENCE: usize = 10;

pub async fn run(p: &OtlpSpans, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let collector_upstream = ctx
        .upstreams
        .get(&p.collector)
        .map_err(Failure::Error)?
        .clone();
    let Some(collector) = collector_upstream.collector().cloned() else {
        return Err(Failure::Error(format!(
            "upstream `{}` is not a kind = \"otlp-collector\"",
            p.collector
        )));
    };
    let upstream = ctx
        .upstreams
        .get(&p.upstream)
        .map_err(Failure::Error)?
        .clone();
    let (trace_id, caller_span) = new_trace(&mut ctx.rng);
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let passage = send_through(
        ctx,
        &p.request,
        Some(&traceparent),
        &upstream,
        &p.route,
        &p.request.name,
    )
    .await?;
    let responded = Instant::now();
    let upstream_parent = passage
        .traceparent()
        .and_then(|v| parse_traceparent(&v).ok())
        .filter(|t| t.trace_id == trace_id)
        .map(|t| t.parent_id);
    let upstream_answered = passage
        .calls
        .first()
        .and_then(|c| c.answered.parse::<i64>().ok());

    // Wait until the tree is complete, or the time is up; judge what arrived.
    let deadline = responded + p.wait;
    let mut spans = collector.trace(&trace_id);
    while !complete(&spans, &caller_span, upstream_parent.as_deref()) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        spans = collector.trace(&trace_id);
    }
    let waited = responded.elapsed();
    let mut evidence: Vec<String> = vec![format!(
        "sent to your service: traceparent: 00-{trace_id}-{caller_span}-01"
    )];
    evidence.extend(
        spans
            .iter()
            .take(MAX_EVIDENCE)
            .map(|s| format!("received: {}", s.describe())),
    );
    let received = collector.received();
    if spans.is_empty() {
        let mut why = vec![format!(
            "the collector received {} export{} with {} span{} in all during this run",
            received.exports,
            if received.exports == 1 { "" } else { "s" },
            received.spans,
            if received.spans == 1 { "" } else { "s" },
        )];
        why.extend(received.rejections.iter().map(|r| format!("refused: {r}")));
        evidence.extend(why.clone());
        return Err(fail(
            format!(
                "no span of trace {trace_id} reached the collector within {} of the response ({})",
                humantime::format_duration(p.wait),
                why[0]
            ),
            "the request's spans exported to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces within 5 s",
            "no span in this trace".into(),
            evidence,
        ));
    }
    let server = spans
        .iter()
        .find(|s| s.kind == KIND_SERVER && s.parent_span_id == caller_span);
    let Some(server) = server else {
        let message = match spans.iter().find(|s| s.kind == KIND_SERVER) {
            Some(other) => format!(
                "your SERVER span's parent is {}, not the caller's span {caller_span} from the traceparent",
                if other.parent_span_id.is_empty() { "empty" } else { &other.parent_span_id }
            ),
            None => format!(
                "none of the {} spans of the trace is of kind SERVER",
                spans.len()
            ),
        };
        return Err(fail(
            message,
            "a SERVER span whose parent span id is the caller's span id",
            describe_all(&spans),
            evidence,
        ));
    };
    let status = i64::from(passage.status);
    let method = p.request.spec.method.to_ascii_uppercase();
    attribute_is(
        server,
        "http.request.method",
        &Attribute::Str(method),
        &evidence,
    )?;
    match server.attribute("http.route") {
        Some(Attribute::Str(route)) if route_matches(route, &p.server_route) => {}
        other => {
            return Err(fail(
                format!(
                    "your SERVER span's http.route is {}, not the route template {}",
                    other.map_or("missing".to_string(), ToString::to_string),
                    p.server_route
                ),
                "http.route: the route template, a string",
                server.describe(),
                evidence,
            ))
        }
    }
    attribute_is(
        server,
        "http.response.status_code",
        &Attribute::Int(status),
        &evidence,
    )?;
    let client = spans
        .iter()
        .find(|s| s.kind == KIND_CLIENT && s.parent_span_id == server.span_id);
    let Some(client) = client else {
        let message = match spans.iter().find(|s| s.kind == KIND_CLIENT) {
            Some(other) => format!(
                "your CLIENT span's parent is {}, not your SERVER span {}: the call to {} belongs under the request that made it",
                if other.parent_span_id.is_empty() { "empty" } else { &other.parent_span_id },
                server.span_id,
                p.upstream
            ),
            None => format!(
                "no span of kind CLIENT for the call to {} in the trace",
                p.upstream
            ),
        };
        return Err(fail(
            message,
            "a CLIENT span for the upstream call, a child of the SERVER span",
            describe_all(&spans),
            evidence,
        ));
    };
    attribute_is(
        client,
        "http.request.method",
        &Attribute::Str(p.client_method.clone()),
        &evidence,
    )?;
    match (
        client.attribute("http.response.status_code"),
        upstream_answered,
    ) {
        (Some(Attribute::Int(got)), Some(answered)) if *got != answered => {
            return Err(fail(
                format!(
                "your CLIENT span's http.response.status_code is {got}, but {} answered {answered}",
                p.upstream
            ),
                "the upstream's status code, an integer",
                client.describe(),
                evidence,
            ))
        }
        (Some(Attribute::Int(_)), _) => {}
        (other, _) => {
            return Err(fail(
                format!(
                    "your CLIENT span's http.response.status_code is {}",
                    describe_wrong(other)
                ),
                "the upstream's status code, an integer",
                client.describe(),
                evidence,
            ))
        }
    }
    match upstream_parent.as_deref() {
        Some(parent) if spans.iter().any(|s| s.span_id == parent) => {}
        Some(parent) => {
            return Err(fail(
                format!(
                    "the traceparent {} received names parent {parent}, which is none of your exported spans of this trace",
                    p.upstream
                ),
                "the parent id you send on is the id of your own span that made the call",
                format!("parent {parent}"),
                evidence,
            ))
        }
        None => {
            return Err(fail(
                format!(
                    "your call to {} carried no traceparent in trace {trace_id}, so it cannot be joined to your CLIENT span",
                    p.upstream
                ),
                "the caller's trace id with your span as the parent, on the upstream call",
                "no traceparent in this trace".into(),
                evidence,
            ))
        }
    }
    ctx.measured(format!(
        "a SERVER span and its CLIENT span in the caller's trace, at the collector {} ms after the response",
        waited.as_millis()
    ));
    Ok(())
}

/// Whether the spans already hold everything the check looks for (so it stops waiting).
fn complete(spans: &[ReceivedSpan], caller_span: &str, upstream_parent: Option<&str>) -> bool {
    let Some(server) = spans
        .iter()
        .find(|s| s.kind == KIND_SERVER && s.parent_span_id == caller_span)
    else {
        return false;
    };
    spans
        .iter()
        .any(|s| s.kind == KIND_CLIENT && s.parent_span_id == server.span_id)
        && upstream_parent.is_none_or(|p| spans.iter().any(|s| s.span_id == p))
}

fn describe_all(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(ReceivedSpan::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_wrong(value: Option<&Attribute>) -> String {
    match value {
        None => "missing".into(),
        Some(Attribute::Str(s)) => format!("the string \"{s}\", not an integer"),
        Some(other) => format!("{other}, not an integer"),
    }
}

fn attribute_is(
    span: &ReceivedSpan,
    key: &str,
    want: &Attribute,
    evidence: &[String],
) -> Result<(), Failure> {
    let got = span.attribute(key);
    if got == Some(want) {
        return Ok(());
    }
    let got_text = match (got, want) {
        (Some(Attribute::Str(s)), Attribute::Int(_)) => {
            format!("the string \"{s}\", not an integer")
        }
        (Some(other), _) => other.to_string(),
        (None, _) => "missing".into(),
    };
    Err(fail(
        format!(
            "your {} span's {key} is {got_text}; expected {want}",
            span.kind_name()
        ),
        format!("{key} = {want}"),
        span.describe(),
        evidence.to_vec(),
    ))
}
