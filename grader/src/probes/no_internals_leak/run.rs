//! `no_internals_leak`: awkward input must never surface a stack trace, a database error or a
//! source path, and must not take the service down.
//!
//! A 500 is allowed (the task says: log the details, answer a plain 500 problem); what is graded is
//! what the response *shows*. Signatures cover the common stacks (Python, Java, Go, Rust, Node,
//! Ruby, PHP, .NET) and PostgreSQL drivers.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::params::NoInternalsLeak;
use crate::engine::http::OutgoingRequest;
use crate::engine::{assert::shorten, CheckContext, FailInfo, Failure};
use crate::spec::template;

/// (what it reveals, pattern)
static SIGNATURES: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("a Python traceback", r#"Traceback \(most recent call last\)|File "[^"]+", line \d+"#),
        ("a Java stack trace", r"\bat [\w$.]+\([\w$]+\.java:\d+\)|Exception in thread|java\.lang\.\w+(Exception|Error)"),
        ("a Go panic", r"goroutine \d+ \[|panic: runtime error"),
        ("a Rust panic", r"panicked at|RUST_BACKTRACE"),
        ("a Node.js stack trace", r"\bat .+ \(.+\.(js|mjs|cjs|ts):\d+:\d+\)|node_modules/"),
        ("a Ruby backtrace", r"\.rb:\d+:in "),
        ("a PHP error", r"(Fatal|Parse) error:.+ on line \d+|Stack trace:\s*#0"),
        ("a .NET stack trace", r"   at System\.|\bat [\w.]+\(.*\) in .+:line \d+"),
        (
            "a database error",
            r"SQLSTATE|syntax error at or near|violates (unique|foreign key|not-null|check) constraint|invalid byte sequence for encoding|invalid input syntax for type|out of range for type|numeric field overflow|relation \x22[^\x22]+\x22 does not exist|\bdb error:|psycopg2?\.|sqlalchemy\.exc|PSQLException|SequelizeDatabaseError|\bpq: ",
        ),
        ("a source file path", r"(/home/|/usr/src/|/app/src/|/root/|[A-Z]:\\\\Users\\\\)[\w./-]+\.(py|java|go|rs|js|ts|rb|php|cs)\b|\bsrc/[\w/]+\.rs:\d+"),
    ]
    .into_iter()
    .map(|(what, re)| (what, Regex::new(re).expect("static regex")))
    .collect()
});

/// What `text` reveals of a service's insides (a stack trace, a database error, a source path),
/// with the words around it; `None` for an honest message.
pub fn reveals(text: &str) -> Option<(&'static str, String)> {
    SIGNATURES.iter().find_map(|(what, re)| {
        re.find(text).map(|m| {
            (
                *what,
                shorten(&context_around(text, m.start(), m.end()), 160),
            )
        })
    })
}

/// One awkward request.
struct Case {
    label: String,
    method: String,
    path: String,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
}

pub async fn run(p: &NoInternalsLeak, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let base = template::render_json(&p.body, &ctx.scope).map_err(Failure::Error)?;
    let path = template::render(&p.path, &ctx.scope).map_err(Failure::Error)?;
    // Sent with every request (authentication, say), rendered once for the whole probe.
    let extra: Vec<(String, String)> = p
        .headers
        .iter()
        .map(|(k, v)| Ok((k.clone(), template::render(v, &ctx.scope)?)))
        .collect::<Result<_, String>>()
        .map_err(Failure::Error)?;
    // A service that rejects everything would leak nothing; only judge an endpoint that works.
    let valid = OutgoingRequest {
        method: p.method.clone(),
        url: ctx.url(&path)?,
        headers: [("Content-Type".to_string(), "application/json".to_string())]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect(),
        body: Some(serde_json::to_vec(&base).map_err(|e| Failure::Error(e.to_string()))?),
    };
    let label = format!("{} {path} with a valid body", p.method);
    let resp = ctx.send(&label, valid).await?;
    if !(200..300).contains(&resp.status) {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "{label} answered {}, so awkward input cannot be judged yet",
                resp.status
            ),
            expected:
                "a 2xx for a valid request (awkward input is judged against a working endpoint)"
                    .into(),
            actual: format!("status {}", resp.status),
            ..Default::default()
        }));
    }
    ctx.exchanges.clear();

    // Each awkward request gets fresh data, so a unique field (a SKU) never turns the case into
    // a plain conflict.
    let bodies: Vec<Value> = (0..case_count(p))
        .map(|_| {
            let scope = ctx.fresh_scope();
            template::render_json(&p.body, &scope)
        })
        .collect::<Result<_, _>>()
        .map_err(Failure::Error)?;
    let cases = cases(p, &bodies, &path);
    let total = cases.len();

    let mut evidence = Vec::new();
    let mut first_offender = None;
    for case in cases {
        let url = ctx.url(&case.path)?;
        let mut headers = Vec::new();
        if let Some(ct) = case.content_type {
            headers.push(("Content-Type".to_string(), ct.to_string()));
        }
        headers.extend(extra.iter().cloned());
        let req = OutgoingRequest {
            method: case.method.clone(),
            url,
            headers,
            body: case.body,
        };
        let sent = ctx.http.send(&case.label, req).await;
        match &sent.response {
            Ok(resp) => {
                let text = resp.text();
                let headers_text: String = resp
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
                    .collect();
                if p.server_errors_are_problems {
                    if let Some(why) = not_a_problem_document(resp) {
                        evidence.push(format!(
                            "{} → {} is not a problem document: {why}",
                            case.label, resp.status
                        ));
                        first_offender.get_or_insert(sent.exchange.clone());
                        continue;
                    }
                }
                for (what, re) in SIGNATURES.iter() {
                    if let Some(m) = re.find(&text).or_else(|| re.find(&headers_text)) {
                        evidence.push(format!(
                            "{} → {} shows {what}: `{}`",
                            case.label,
                            resp.status,
                            shorten(&context_around(&text, m.start(), m.end()), 160)
                        ));
                        first_offender.get_or_insert(sent.exchange.clone());
                        break;
                    }
                }
            }
            Err(transport) => {
                if let crate::runtime::ServiceState::Exited { code, signal } =
                    ctx.service.state_after_transport_error().await
                {
                    ctx.exchanges.push(sent.exchange);
                    return Err(Failure::Fail(FailInfo {
                        message: format!(
                            "your service {} after this input: {}",
                            crate::engine::exit_words(code, signal),
                            case.label
                        ),
                        expected:
                            "the service to survive any input and answer 4xx (or a plain 500)"
                                .into(),
                        actual: format!("it crashed: {transport}"),
                        evidence,
                        log_tail: ctx.service.log_tail(30),
                    }));
                }
                evidence.push(format!("{} → no response: {transport}", case.label));
                first_offender.get_or_insert(sent.exchange.clone());
            }
        }
    }

    // The barrage must not have broken the service for everyone else.
    let health_url = ctx.url(&p.health_path)?;
    let health = ctx
        .http
        .send(
            "check health afterwards",
            OutgoingRequest {
                method: "GET".into(),
                url: health_url,
                headers: extra.clone(),
                body: None,
            },
        )
        .await;
    let healthy = matches!(&health.response, Ok(r) if (200..300).contains(&r.status));
    if !healthy {
        ctx.exchanges.push(health.exchange);
        evidence.push(format!(
            "{} stopped answering 2xx after the awkward input",
            p.health_path
        ));
    }

    if evidence.is_empty() {
        return Ok(());
    }
    if let Some(ex) = first_offender {
        ctx.exchanges.insert(0, ex);
    }
    // The message names the first offender; the evidence lists all of them only when there is
    // more than one, so a single leak is not repeated three times in the report.
    let more = match evidence.len() {
        1 => String::new(),
        n => format!(
            " ({} more of {total} awkward requests too, see evidence)",
            n - 1
        ),
    };
    let first = evidence[0].clone();
    let evidence = if evidence.len() > 1 {
        evidence
    } else {
        Vec::new()
    };
    Err(Failure::Fail(FailInfo {
        message: format!("{}{more}", first.split(": `").next().unwrap_or(&first)),
        expected:
            "4xx problem details (or a plain 500) that reveal nothing about the implementation"
                .into(),
        actual: first,
        evidence,
        log_tail: Vec::new(),
    }))
}

/// Why a 5xx response is not a problem document (RFC 9457): its media type, its body, or a
/// `status` member that is not the response's. `None` for anything else.
fn not_a_problem_document(resp: &crate::engine::http::Response) -> Option<String> {
    if resp.status < 500 {
        return None;
    }
    let media_type = resp.header("content-type").map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if media_type.as_deref() != Some("application/problem+json") {
        return Some(match media_type {
            Some(t) => format!("Content-Type {t}, not application/problem+json"),
            None => "no Content-Type (expected application/problem+json)".into(),
        });
    }
    let doc: Value = match serde_json::from_slice(&resp.body) {
        Ok(doc) => doc,
        Err(_) => return Some("its body is not JSON".into()),
    };
    match doc.get("status") {
        Some(status) if status.as_u64() == Some(u64::from(resp.status)) => None,
        Some(other) => Some(format!(
            "its \"status\" is {other}, not the response's {}",
            resp.status
        )),
        None => Some("it has no \"status\" member".into()),
    }
}

fn context_around(text: &str, start: usize, end: usize) -> String {
    let from = text[..start]
        .char_indices()
        .rev()
        .nth(40)
        .map(|(i, _)| i)
        .unwrap_or(0);
    let to = text[end..]
        .char_indices()
        .nth(60)
        .map(|(i, _)| end + i)
        .unwrap_or(text.len());
    text[from..to].replace('\n', " ")
}

/// The body with one field's JSON text replaced by `raw` (which need not be valid JSON).
fn with_field(base: &Value, field: &str, raw: &str) -> Vec<u8> {
    let mut parts = Vec::new();
    if let Value::Object(map) = base {
        for (k, v) in map {
            let key = serde_json::to_string(k).unwrap_or_default();
            if k == field {
                parts.push(format!("{key}:{raw}"));
            } else {
                parts.push(format!("{key}:{v}"));
            }
        }
    }
    format!("{{{}}}", parts.join(",")).into_bytes()
}

const STRING_CASES: usize = 8;
const NUMBER_CASES: usize = 7;

/// How many bodies [`cases`] needs.
fn case_count(p: &NoInternalsLeak) -> usize {
    p.string_fields.len() * STRING_CASES + p.number_fields.len() * NUMBER_CASES
}

fn cases(p: &NoInternalsLeak, bodies: &[Value], path: &str) -> Vec<Case> {
    let json = Some("application/json");
    let mut bodies = bodies.iter();
    let mut base = || bodies.next().cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    let mut body_case = |label: String, body: Vec<u8>| {
        out.push(Case {
            label,
            method: p.method.clone(),
            path: path.to_string(),
            body: Some(body),
            content_type: json,
        });
    };
    let long = "x".repeat(100_000);
    let strings: [(&str, String); STRING_CASES] = [
        ("a NUL character", "\"abc\\u0000def\"".into()),
        (
            "control characters",
            "\"bell\\u0007 \\u001b[31mred\"".into(),
        ),
        ("a right-to-left override", "\"\\u202egnp.exe\"".into()),
        ("100,000 characters", format!("\"{long}\"")),
        ("an SQL fragment", "\"x'); DROP TABLE products; --\"".into()),
        ("a number instead of text", "12345".into()),
        ("an object instead of text", "{\"$gt\": \"\"}".into()),
        ("a lone surrogate", "\"\\ud800\"".into()),
    ];
    for field in &p.string_fields {
        for (what, raw) in &strings {
            body_case(
                format!("{} {} with {what} in `{field}`", p.method, path),
                with_field(&base(), field, raw),
            );
        }
    }
    let numbers: [(&str, &str); NUMBER_CASES] = [
        ("1e400", "1e400"),
        ("1e30", "1e30"),
        ("a 30-digit integer", "123456789012345678901234567890"),
        ("-9223372036854775809", "-9223372036854775809"),
        ("a fraction", "12.5"),
        ("text instead of a number", "\"12 dollars\""),
        ("an array instead of a number", "[1, 2]"),
    ];
    for field in &p.number_fields {
        for (what, raw) in &numbers {
            body_case(
                format!("{} {} with {what} in `{field}`", p.method, path),
                with_field(&base(), field, raw),
            );
        }
    }
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let whole: [(&str, Vec<u8>); 5] = [
        ("a body nested 100,000 levels deep", nested.into_bytes()),
        ("a JSON array as the body", b"[]".to_vec()),
        ("null as the body", b"null".to_vec()),
        ("invalid UTF-8", b"{\"name\": \"\xff\xfe\xfd\"}".to_vec()),
        ("an empty body", Vec::new()),
    ];
    for (what, body) in whole {
        body_case(format!("{} {} with {what}", p.method, path), body);
    }
    if let Some(item) = &p.item_path {
        let ids = [
            ("an SQL fragment", "1'%20OR%20'1'='1"),
            ("a NUL byte", "abc%00def"),
            ("a 2,000-digit number", &"9".repeat(2000)),
            ("-1", "-1"),
            ("a path traversal", "..%2F..%2Fetc%2Fpasswd"),
            ("broken percent-encoding", "%E0%A4%A"),
        ];
        for (what, id) in ids {
            out.push(Case {
                label: format!("GET {item}{{id}} with {what} as the id"),
                method: "GET".into(),
                path: format!("{item}{id}"),
                body: None,
                content_type: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaks(text: &str) -> Option<&'static str> {
        SIGNATURES
            .iter()
            .find(|(_, re)| re.is_match(text))
            .map(|(w, _)| *w)
    }

    #[test]
    fn signatures_catch_common_leaks_and_spare_honest_errors() {
        assert_eq!(
            leaks("db error: ERROR: invalid byte sequence for encoding \"UTF8\": 0x00"),
            Some("a database error")
        );
        assert_eq!(
            leaks("Traceback (most recent call last):\n  File \"/app/x.py\", line 3"),
            Some("a Python traceback")
        );
        assert_eq!(
            leaks("thread 'main' panicked at src/main.rs:10:5"),
            Some("a Rust panic")
        );
        assert_eq!(leaks("goroutine 1 [running]:"), Some("a Go panic"));
        assert_eq!(
            leaks("    at Object.<anonymous> (/srv/app/index.js:12:9)"),
            Some("a Node.js stack trace")
        );
        assert_eq!(
            leaks(
                r#"{"type":"about:blank","title":"Unprocessable Content","status":422,"detail":"name must not contain control characters"}"#
            ),
            None
        );
        assert_eq!(
            leaks(
                r#"{"title":"Internal Server Error","status":500,"detail":"Something went wrong."}"#
            ),
            None
        );
    }

    #[test]
    fn server_errors_must_be_problem_documents() {
        let response = |status: u16, content_type: &str, body: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("content-type", content_type.parse().unwrap());
            crate::engine::http::Response {
                status,
                headers,
                body: body.as_bytes().to_vec(),
                truncated: false,
            }
        };
        let plain = response(500, "text/plain", "Internal Server Error");
        assert!(not_a_problem_document(&plain)
            .unwrap()
            .contains("text/plain"));
        let wrong_status = response(
            500,
            "application/problem+json",
            r#"{"title":"Internal Server Error","status":400}"#,
        );
        assert!(not_a_problem_document(&wrong_status)
            .unwrap()
            .contains("not the response's 500"));
        let good = response(
            503,
            "application/problem+json; charset=utf-8",
            r#"{"title":"Service Unavailable","status":503}"#,
        );
        assert_eq!(not_a_problem_document(&good), None);
        assert_eq!(
            not_a_problem_document(&response(422, "text/plain", "no")),
            None
        );
    }

    #[test]
    fn field_replacement_keeps_other_fields() {
        let base = serde_json::json!({"name": "a", "price_cents": 5});
        let body = String::from_utf8(with_field(&base, "price_cents", "1e400")).unwrap();
        assert_eq!(body, r#"{"name":"a","price_cents":1e400}"#);
    }
}
