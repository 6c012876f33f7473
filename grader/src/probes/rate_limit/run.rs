//! `rate_limit`: sends the attempt `limit + 1` times back to back on one connection opened and
//! warmed beforehand (so the attempts land inside the window, with no handshakes between them),
//! then judges the sequence: attempts 1 to `limit` served (never 429), attempt `limit + 1`
//! refused with 429 and a `Retry-After` it can wait out (RFC 6585 §4, RFC 9110 §10.2.3), another
//! client served right after, and the same client served once the stated time has passed on the
//! grader's clock.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::params::RateLimit;
use super::retry_after::{self, Wait};
use crate::engine::assert;
use crate::engine::http::Response;
use crate::engine::step::build_request;
use crate::engine::wire::Held;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::request::{query, ProbeRequest};
use crate::probes::upstream_calls::run::{judge, send_in_order};
use crate::spec::template::Scope;
use crate::spec::Expect;

/// Waited on top of the `Retry-After` before the retry: the service's clock and the grader's tick
/// separately, and a limiter may free the slot a moment after the second it announced.
pub const RETRY_MARGIN: Duration = Duration::from_millis(300);

pub async fn run(p: &RateLimit, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    send_in_order(ctx, &p.setup).await?;
    let timeout = ctx.http.timeout();
    let base = ctx.service.base_url.clone();
    let health = ctx.service.health_path.clone();
    let mut held = Held::open(&base, &health, timeout).await.map_err(|e| {
        fail(
            format!("could not open a connection to the service: {e}"),
            String::new(),
        )
    })?;
    let tries = p.limit + 1;
    let started = Instant::now();
    let mut refused: Option<(Response, SystemTime, Instant)> = None;
    let mut summary = String::new();
    for attempt in 1..=tries {
        ctx.scope.insert("attempt".into(), Value::from(attempt));
        let spec = match &p.over_limit {
            Some(over) if attempt == tries => &over.spec,
            _ => &p.request.spec,
        };
        let req = build_request(ctx, spec)?;
        summary = format!("{} {}", req.method, req.url.path());
        let name = format!("{} {attempt} of {tries}", p.request.name);
        if held.is_closed() {
            // The service closed the connection (`Connection: close`): go on with a new one.
            held = Held::open(&base, &health, timeout).await.map_err(|e| {
                fail(
                    format!("{name}: could not open a connection: {e}"),
                    String::new(),
                )
            })?;
        }
        let sent_after = started.elapsed();
        let sent = held.send_on(&name, req, timeout).await;
        let arrived = (SystemTime::now(), Instant::now());
        // The report keeps attempt 1, the last attempt within the limit and the refused one.
        if attempt > 2 && attempt - 1 < p.limit {
            ctx.exchanges.pop();
        }
        ctx.exchanges.push(sent.exchange);
        let resp = match sent.response {
            Ok(r) => r,
            Err(t) => return Err(ctx.transport_failure(&name, &summary, t).await),
        };
        if attempt <= p.limit {
            if let Some(info) = judge_within(p, attempt, &summary, &resp, started.elapsed()) {
                return Err(Failure::Fail(info));
            }
        } else {
            if resp.status != 429 {
                if let Some(window) = p.window.filter(|w| sent_after > *w) {
                    return Err(Failure::Error(format!(
                        "attempt {tries} was sent {} ms after attempt 1, later than the {} ms the limit counts over: the service took about {} ms per attempt, so the first attempts had left the window and attempt {tries} being served proves nothing. The limit could not be measured; this happens when logins are very slow (a hash cost far above the minimum) or the machine is overloaded",
                        sent_after.as_millis(),
                        window.as_millis(),
                        sent_after.as_millis() / u128::from(p.limit),
                    )));
                }
            }
            refused = Some((resp, arrived.0, arrived.1));
        }
    }
    let (resp, wall, at) = refused.expect("the last attempt is the refused one");
    let wait = judge_refusal(p, &summary, &resp, wall, started.elapsed(), &ctx.scope).map_err(
        |e| match e {
            Judged::Fail(info) => Failure::Fail(info),
            Judged::Error(e) => Failure::Error(e),
        },
    )?;
    let burst_ms = at.duration_since(started).as_millis();

    if let Some(other) = &p.other_client {
        ctx.scope.insert("attempt".into(), Value::from(tries + 1));
        follow_up(ctx, other, |status| {
            format!(
                "right after the limit refused attempt {tries}, another client's request was refused too ({status}): the limit must count per client, so one client's attempts never lock out the others"
            )
        })
        .await?;
    }
    if let Some(retry) = &p.after_retry {
        ctx.scope.insert("attempt".into(), Value::from(tries + 2));
        let until = at + wait.delay + RETRY_MARGIN;
        tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
        let stated = wait.stated.clone();
        let header = resp.header("retry-after").unwrap_or_default();
        follow_up(ctx, retry, |status| {
            format!(
                "after waiting the {stated} the 429 stated (Retry-After: {header}) plus {} ms, the same client was still refused ({status})",
                RETRY_MARGIN.as_millis()
            )
        })
        .await?;
    }
    ctx.measured(format!(
        "attempts 1 to {} served and attempt {tries} refused with 429 within {burst_ms} ms; Retry-After: {}",
        p.limit,
        resp.header("retry-after").unwrap_or_default()
    ));
    Ok(())
}

fn fail(message: String, expected: String) -> Failure {
    Failure::Fail(FailInfo {
        actual: message.clone(),
        message,
        expected,
        ..Default::default()
    })
}

/// Attempt `attempt` (at most `limit`) must be served: not 429, one of `within_limit_status`.
pub(crate) fn judge_within(
    p: &RateLimit,
    attempt: u32,
    summary: &str,
    resp: &Response,
    elapsed: Duration,
) -> Option<FailInfo> {
    let expected = format!(
        "attempts 1 to {} answered {} (the limit is {}, so none of them is refused)",
        p.limit,
        p.within_limit_status.describe(),
        p.limit
    );
    if resp.status == 429 {
        return Some(FailInfo {
            message: format!(
                "the limit is {}, but attempt {attempt} ({summary}) was refused with 429 after {} ms of attempts",
                p.limit,
                elapsed.as_millis()
            ),
            expected,
            actual: format!(
                "attempt {attempt}: 429 Too Many Requests{}",
                resp.header("retry-after")
                    .map(|v| format!(", Retry-After: {v}"))
                    .unwrap_or_default()
            ),
            ..Default::default()
        });
    }
    if !p.within_limit_status.accepts(resp.status) {
        return Some(FailInfo {
            message: format!(
                "attempt {attempt} of the {} allowed ({summary}) answered {}, expected {}",
                p.limit,
                resp.status,
                p.within_limit_status.describe()
            ),
            expected,
            actual: format!(
                "attempt {attempt}: status {}: {}",
                resp.status,
                assert::shorten(&resp.text(), 200)
            ),
            ..Default::default()
        });
    }
    None
}

/// Why the refusal is wrong: the service's fault, or the exercise's (a broken template).
#[derive(Debug)]
pub(crate) enum Judged {
    Fail(FailInfo),
    Error(String),
}

/// Attempt `limit + 1` must answer 429 with a `Retry-After` the grader can wait out, and a body
/// matching `expect_json`. Returns how long to wait from its arrival.
pub(crate) fn judge_refusal(
    p: &RateLimit,
    summary: &str,
    resp: &Response,
    now: SystemTime,
    elapsed: Duration,
    scope: &Scope,
) -> Result<Wait, Judged> {
    let tries = p.limit + 1;
    if resp.status != 429 {
        return Err(Judged::Fail(FailInfo {
            message: format!(
                "{tries} attempts in {} ms: attempt {tries} ({summary}) answered {}, expected 429 Too Many Requests (the limit is {})",
                elapsed.as_millis(),
                resp.status,
                p.limit
            ),
            expected: format!(
                "attempt {tries} refused with 429 and a Retry-After (the limit is {})",
                p.limit
            ),
            actual: format!(
                "attempt {tries}: status {}: {}",
                resp.status,
                assert::shorten(&resp.text(), 200)
            ),
            ..Default::default()
        }));
    }
    let header = resp.header("retry-after");
    let wait = retry_after::judge(
        header.as_deref(),
        resp.header("date").as_deref(),
        now,
        p.max_retry_after,
    )
    .map_err(|why| {
        Judged::Fail(FailInfo {
            message: format!("attempt {tries} ({summary}) was refused with 429, but {why}"),
            expected: format!(
                "Retry-After: the seconds until an attempt is served again (an integer from 1 to {}), or an HTTP-date that far ahead",
                p.max_retry_after
            ),
            actual: match &header {
                Some(v) => format!("Retry-After: {v}"),
                None => "no Retry-After header".into(),
            },
            ..Default::default()
        })
    })?;
    let expect = Expect {
        json: p.expect_json.clone(),
        ..Default::default()
    };
    let mismatches = assert::check_expect(&expect, resp, scope).map_err(Judged::Error)?;
    if let Some(m) = mismatches.first() {
        return Err(Judged::Fail(FailInfo {
            message: format!(
                "the 429 to attempt {tries} ({summary}): expected {} {}, got {}",
                m.subject, m.expected, m.actual
            ),
            expected: assert::mismatch_lines(&mismatches, |m| &m.expected),
            actual: assert::mismatch_lines(&mismatches, |m| &m.actual),
            ..Default::default()
        }));
    }
    Ok(wait)
}

/// Sends a follow-up (another client, or the retry): it must not be refused, and must answer as
/// its own `status` and `expect_json` say.
async fn follow_up(
    ctx: &mut CheckContext<'_>,
    r: &ProbeRequest,
    refused: impl Fn(&str) -> String,
) -> Result<(), Failure> {
    let req = build_request(ctx, &r.spec)?;
    let summary = format!("{} {}", req.method, req.url.path());
    let resp = ctx.send(&r.name, req).await?;
    if resp.status == 429 {
        let status = format!(
            "429{}",
            resp.header("retry-after")
                .map(|v| format!(", Retry-After: {v}"))
                .unwrap_or_default()
        );
        return Err(Failure::Fail(FailInfo {
            message: format!("{} ({summary}): {}", r.name, refused(&status)),
            expected: format!(
                "{} ({summary}) served: {}",
                r.name,
                r.expect
                    .status
                    .as_ref()
                    .map_or("any status but 429".into(), |s| s.describe())
            ),
            actual: format!("status {status}"),
            ..Default::default()
        }));
    }
    let identity = query("$.id").map_err(Failure::Error)?;
    if let Some(info) = judge(ctx, r, &summary, &resp, &[], &identity)? {
        return Err(Failure::Fail(info));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn params() -> RateLimit {
        super::super::params::parse(
            toml::from_str(
                r#"
                limit = 3
                within_limit_status = [401]
                max_retry_after = 10
                expect_json = { "$.status" = 429 }
                request = { method = "POST", path = "/accounts/login", json = { username = "u" } }
                "#,
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn response(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        Response {
            status,
            headers: map,
            body: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    const SUMMARY: &str = "POST /accounts/login";

    #[test]
    fn attempts_within_the_limit_must_be_served_as_expected() {
        let p = params();
        let ms = Duration::from_millis(12);
        assert!(judge_within(&p, 2, SUMMARY, &response(401, &[], ""), ms).is_none());
        let early = judge_within(
            &p,
            2,
            SUMMARY,
            &response(429, &[("retry-after", "9")], ""),
            ms,
        )
        .unwrap();
        assert_eq!(
            early.message,
            "the limit is 3, but attempt 2 (POST /accounts/login) was refused with 429 after 12 ms of attempts"
        );
        assert!(early.actual.contains("Retry-After: 9"));
        let wrong = judge_within(&p, 1, SUMMARY, &response(500, &[], "boom"), ms).unwrap();
        assert!(
            wrong.message.contains("answered 500, expected 401"),
            "{}",
            wrong.message
        );
        assert!(wrong.actual.contains("boom"));
    }

    #[test]
    fn the_refusal_needs_429_a_retry_after_and_its_body() {
        let p = params();
        let scope = Scope::new();
        let now = SystemTime::now();
        let ms = Duration::from_millis(40);
        let problem = r#"{"status": 429, "title": "Too Many Requests"}"#;
        let ok = judge_refusal(
            &p,
            SUMMARY,
            &response(429, &[("retry-after", "7")], problem),
            now,
            ms,
            &scope,
        )
        .unwrap();
        assert_eq!(ok.delay, Duration::from_secs(7));

        let not_refused = |status| match judge_refusal(
            &p,
            SUMMARY,
            &response(status, &[], ""),
            now,
            ms,
            &scope,
        ) {
            Err(Judged::Fail(info)) => info.message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            not_refused(401),
            "4 attempts in 40 ms: attempt 4 (POST /accounts/login) answered 401, expected 429 Too Many Requests (the limit is 3)"
        );
        match judge_refusal(&p, SUMMARY, &response(429, &[], problem), now, ms, &scope) {
            Err(Judged::Fail(info)) => {
                assert!(info.message.contains("no Retry-After"), "{}", info.message);
                assert_eq!(info.actual, "no Retry-After header");
            }
            other => panic!("{other:?}"),
        }
        match judge_refusal(
            &p,
            SUMMARY,
            &response(429, &[("retry-after", "3600")], problem),
            now,
            ms,
            &scope,
        ) {
            Err(Judged::Fail(info)) => {
                assert!(info.message.contains("3600 seconds"), "{}", info.message)
            }
            other => panic!("{other:?}"),
        }
        match judge_refusal(
            &p,
            SUMMARY,
            &response(429, &[("retry-after", "5")], "slow down"),
            now,
            ms,
            &scope,
        ) {
            Err(Judged::Fail(info)) => {
                assert!(info.message.contains("a JSON document"), "{}", info.message)
            }
            other => panic!("{other:?}"),
        }
    }

    /// How the little service below limits `POST /login` (3 attempts per username per window).
    #[derive(Clone, Copy, PartialEq)]
    enum Limiter {
        Right,
        NoRetryAfter,
        /// One counter for everyone: another client is locked out too.
        Global,
        /// Says 1 s, but keeps refusing for 3 s.
        Lying,
    }

    async fn serve(mode: Limiter) -> url::Url {
        use crate::engine::test_service::{self, Reply};
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};

        let seen: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
        test_service::serve(move |_, _, doc| {
            let reply = |status: u16, retry: Option<u64>| {
                let mut headers = vec![("content-type", "application/problem+json".to_string())];
                if let Some(r) = retry {
                    headers.push(("retry-after", r.to_string()));
                }
                Reply {
                    status,
                    headers,
                    json: serde_json::json!({ "status": status }),
                }
            };
            let user = doc["username"].as_str().unwrap_or("").to_string();
            let key = if mode == Limiter::Global {
                "all".into()
            } else {
                user
            };
            let window = Duration::from_secs(if mode == Limiter::Lying { 3 } else { 1 });
            let now = Instant::now();
            let mut seen = seen.lock().unwrap();
            let times = seen.entry(key).or_default();
            times.retain(|t| now.duration_since(*t) < window);
            let answer = if times.len() >= 3 {
                let left = window - now.duration_since(times[0]);
                let secs = if mode == Limiter::Lying {
                    1
                } else {
                    left.as_secs_f64().ceil() as u64
                };
                reply(429, (mode != Limiter::NoRetryAfter).then_some(secs))
            } else {
                times.push(now);
                reply(401, None)
            };
            std::future::ready(answer)
        })
        .await
    }

    async fn run_against(mode: Limiter) -> (Result<(), Failure>, Vec<String>, usize) {
        let p = super::super::params::parse(
            toml::from_str(
                r#"
                limit = 3
                within_limit_status = [401]
                max_retry_after = 5
                expect_json = { "$.status" = 429 }
                request = { method = "POST", path = "/login", json = { username = "u", password = "p{{attempt}}" } }
                other_client = { method = "POST", path = "/login", json = { username = "other" }, status = 401 }
                after_retry = { method = "POST", path = "/login", json = { username = "u" }, status = 401 }
                "#,
            )
            .unwrap(),
        )
        .unwrap();
        let harness = crate::engine::test_service::Harness::new(serve(mode).await);
        let upstreams = crate::upstream::Upstreams::default();
        let mut ctx = harness.context(Scope::new(), &upstreams);
        let result = run(&p, &mut ctx).await;
        (result, ctx.measurements, ctx.exchanges.len())
    }

    fn message(r: Result<(), Failure>) -> String {
        match r {
            Err(Failure::Fail(info)) => info.message,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_per_client_limit_with_an_honest_retry_after_passes() {
        let (result, measured, exchanges) = run_against(Limiter::Right).await;
        assert!(result.is_ok(), "{result:?}");
        assert!(
            measured[0].starts_with("attempts 1 to 3 served and attempt 4 refused with 429 within"),
            "{measured:?}"
        );
        // Attempt 1, the last within the limit, the refusal, the other client, the retry.
        assert_eq!(exchanges, 5);
    }

    #[tokio::test]
    async fn broken_limiters_fail_naming_what_they_did() {
        let m = message(run_against(Limiter::NoRetryAfter).await.0);
        assert!(
            m.contains("attempt 4 (POST /login) was refused with 429, but it has no Retry-After"),
            "{m}"
        );
        let m = message(run_against(Limiter::Global).await.0);
        assert!(m.starts_with("other client (POST /login): right after the limit refused attempt 4, another client's request was refused too (429, Retry-After: 1)"), "{m}");
        let m = message(run_against(Limiter::Lying).await.0);
        assert!(m.starts_with("after retry (POST /login): after waiting the 1 second the 429 stated (Retry-After: 1) plus 300 ms, the same client was still refused"), "{m}");
    }
}
