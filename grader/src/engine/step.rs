//! Declarative steps: render the request, send it, check expectations, capture values.

use serde_json::Value;

use super::assert::{self, Mismatch};
use super::http::{OutgoingRequest, Response};
use super::{CheckContext, FailInfo, Failure};
use crate::spec::template;
use crate::spec::{BodySpec, CaptureSpec, Expect, RequestSpec, Step, StepAction};

pub async fn run_steps(ctx: &mut CheckContext<'_>, steps: &[Step]) -> Result<(), Failure> {
    for step in steps {
        let first_exchange = ctx.exchanges.len();
        for round in 1..=step.repeat {
            let name = match step.repeat {
                1 => step.name.clone(),
                n => format!("{} ({round} of {n})", step.name),
            };
            let (request, expect) = match &step.action {
                StepAction::Http { request, expect } => (request, expect),
                StepAction::Sql(sql) => {
                    super::sql::run(ctx, &name, sql).await?;
                    continue;
                }
            };
            let outcome = run_once(ctx, request, expect, &name).await;
            // A repeated step keeps its first and latest exchanges: the report shows how it began
            // and where it stopped, not a hundred identical requests.
            if round > 2 {
                ctx.exchanges.remove(first_exchange + 1);
            }
            let resp = outcome?;
            if round == step.repeat {
                capture(ctx, step, &resp)?;
            }
        }
    }
    Ok(())
}

async fn run_once(
    ctx: &mut CheckContext<'_>,
    request: &RequestSpec,
    expect: &Expect,
    name: &str,
) -> Result<Response, Failure> {
    let req = build_request(ctx, request)?;
    let summary = format!("{} {}", req.method, req.url.path());
    let resp = if expect.no_body {
        let raw = ctx.send_raw(name, req).await?;
        if !raw.response.body.is_empty() {
            return Err(Failure::Fail(stray_body(name, &summary, &raw)));
        }
        raw.response
    } else {
        ctx.send(name, req).await?
    };
    let mismatches = assert::check_expect(expect, &resp, &ctx.scope).map_err(Failure::Error)?;
    if !mismatches.is_empty() {
        return Err(Failure::Fail(describe(name, &summary, &mismatches)));
    }
    Ok(resp)
}

/// A response that must have no body carried bytes after its head: name them as they were on
/// the wire, and what they do to the next response on the connection.
fn stray_body(step: &str, summary: &str, raw: &super::wire::RawResponse) -> FailInfo {
    let bytes = &raw.response.body;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
    let status = raw.response.status;
    FailInfo {
        message: format!(
            "{step}: the {status} response to {summary} carried {} byte{} after its headers",
            bytes.len(),
            if bytes.len() == 1 { "" } else { "s" }
        ),
        expected: format!("nothing after the head of a {status} response to {summary}"),
        actual: format!("{} bytes on the wire after the head: {shown:?}", bytes.len()),
        evidence: vec![
            format!("head as sent:\n{}", raw.head),
            "an HTTP client stops reading at the end of the head here, so these bytes are read as the start of the next response on the connection (\"invalid HTTP version\")".into(),
        ],
        ..Default::default()
    }
}

/// Renders a request spec into a concrete request. A template error here means the exercise is
/// broken (the loader checks variables statically), so it is the grader's error.
pub fn build_request(
    ctx: &CheckContext<'_>,
    spec: &RequestSpec,
) -> Result<OutgoingRequest, Failure> {
    let path = template::render(&spec.path, &ctx.scope).map_err(Failure::Error)?;
    let url = ctx.url(&path)?;
    let mut headers = Vec::new();
    for (k, v) in &spec.headers {
        headers.push((
            k.clone(),
            template::render(v, &ctx.scope).map_err(Failure::Error)?,
        ));
    }
    let has_content_type = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    let body = match &spec.body {
        None => None,
        Some(BodySpec::Json(v)) => {
            let rendered = template::render_json(v, &ctx.scope).map_err(Failure::Error)?;
            if !has_content_type {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Some(serde_json::to_vec(&rendered).map_err(|e| Failure::Error(e.to_string()))?)
        }
        Some(BodySpec::Raw(text)) => Some(
            template::render(text, &ctx.scope)
                .map_err(Failure::Error)?
                .into_bytes(),
        ),
    };
    Ok(OutgoingRequest {
        method: spec.method.clone(),
        url,
        headers,
        body,
    })
}

fn describe(step: &str, summary: &str, mismatches: &[Mismatch]) -> FailInfo {
    let first = &mismatches[0];
    let more = match mismatches.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let line = |m: &Mismatch, s: &str| format!("{}: {}", m.subject, s);
    FailInfo {
        message: format!(
            "{step} ({summary}): expected {} {}, got {}{more}",
            first.subject, first.expected, first.actual
        ),
        expected: mismatches
            .iter()
            .map(|m| line(m, &m.expected))
            .collect::<Vec<_>>()
            .join("\n"),
        actual: mismatches
            .iter()
            .map(|m| line(m, &m.actual))
            .collect::<Vec<_>>()
            .join("\n"),
        ..Default::default()
    }
}

fn capture(ctx: &mut CheckContext<'_>, step: &Step, resp: &Response) -> Result<(), Failure> {
    apply_captures(ctx, &step.name, &step.captures, resp)
}

/// Stores the values `captures` take from a response in the check's scope, for later templates
/// (steps, and probe requests with `capture`). A value the response lacks fails the check: the
/// requests after it need it.
pub fn apply_captures(
    ctx: &mut CheckContext<'_>,
    step: &str,
    captures: &[(String, CaptureSpec)],
    resp: &Response,
) -> Result<(), Failure> {
    for (name, spec) in captures {
        let value = match spec {
            CaptureSpec::Header(h) => resp.header(h).map(Value::String),
            CaptureSpec::Json(q) => serde_json::from_slice::<Value>(&resp.body)
                .ok()
                .and_then(|doc| q.path.query(&doc).at_most_one().ok().flatten().cloned()),
        };
        match value {
            Some(v) => {
                ctx.scope.insert(name.clone(), v);
            }
            None => {
                let source = match spec {
                    CaptureSpec::Header(h) => format!("a {h} header"),
                    CaptureSpec::Json(q) => format!("a value at {} in a JSON body", q.text),
                };
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "{step}: the response has no {}, which the next steps need",
                        source.trim_start_matches("a ")
                    ),
                    expected: source,
                    actual: "absent".into(),
                    ..Default::default()
                }));
            }
        }
    }
    Ok(())
}
