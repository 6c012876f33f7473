//! Quotes from a carrier that fails, and a service that does not: exercise
//! `integration-resilience` (task statement: `exercises/integration-resilience/README.md`).
//!
//! `GET /estimates?weight_grams=1200&postcode=75011` asks `POST {CARRIER_URL}/rates` for a price,
//! and around that one call stacks, from the outside in:
//!
//! - **validation** first: a bad parameter is a `400` and never reaches the carrier [res-1.2];
//! - a **bulkhead**: at most 10 quotes calling the carrier at once; the 11th is refused with a
//!   `503` at once (`try_acquire`, never a queue), so a slow carrier ties up 10 requests and no
//!   more, and `/healthz` and `/breaker`, which never touch it, always answer [res-5.1];
//! - a **circuit breaker** counting consecutive failed quotes: 5 open it for 3 s, then one trial
//!   of a single attempt decides whether it closes or opens again [res-4.1] [res-4.2] [res-4.3];
//! - **retries**: up to 3 attempts of 1 s each, with jittered exponential backoff or the carrier's
//!   `Retry-After`, within a 4 s deadline for the whole quote [res-2.1] [res-2.2] [res-3.1..5];
//! - a **stale fallback**: the last successful price for the same weight and postcode, if under
//!   5 minutes old, answered with `"stale": true` when the carrier cannot be had [res-6.1].
//!
//! Quotes are kept in memory (task 7's bookings, in the database, are `bookings.rs`); the
//! breaker's state is process-wide, as the grader expects it to carry over from one check to the
//! next.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{sleep, timeout, timeout_at, Instant};

use crate::bugs::{self, Bug};
use crate::http::allow;
use crate::problem::Problem;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/estimates", allow(get(estimate), "GET, HEAD"))
        .route("/breaker", allow(get(breaker_state), "GET, HEAD"))
}

// ---------------------------------------------------------------------------------------------
// The numbers of the task statement.

const MAX_WEIGHT_GRAMS: i64 = 30_000;
const MAX_POSTCODE_LEN: usize = 10;
const WEIGHT_RULE: &str = "must be an integer from 1 to 30000 (grams)";
const POSTCODE_RULE: &str = "must be 1 to 10 letters and digits";

/// An answer that has not arrived this long after the call started is a failed attempt [res-2.1].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// The whole quote's budget for calling the carrier: the client is promised an answer within
/// 4 s [res-2.2]; the rest is the margin for the way in and out (and the backstop below).
const DEADLINE: Duration = Duration::from_millis(3_800);
/// Past the deadline, a quote still running is cut short with a `504`: never reached when the
/// attempts are planned within [`DEADLINE`], it bounds the answer whatever happens inside.
const BACKSTOP: Duration = Duration::from_millis(100);
/// The first attempt and 2 retries [res-3.1].
const MAX_ATTEMPTS: u32 = 3;
/// Retry n waits between half and all of `BACKOFF_BASE × 2ⁿ⁻¹` [res-3.2].
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// A `Retry-After` asking for longer is not waited for: the quote fails at once [res-3.4].
const MAX_RETRY_AFTER_SECONDS: u64 = 2;
/// Consecutive failed quotes that open the breaker, and how long it stays open [res-4.1].
const FAILURES_TO_OPEN: u32 = 5;
const OPEN_FOR: Duration = Duration::from_secs(3);
/// Carrier calls in flight at most [res-5.1].
const MAX_CARRIER_CALLS: usize = 10;
/// How long a successful price may stand in for one the carrier cannot give [res-6.1].
const STALE_FOR: Duration = Duration::from_secs(5 * 60);
/// Above this many remembered prices, the expired ones are dropped before adding another.
const PRUNE_ABOVE: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// The routes.

/// What the client asked for: already valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Estimate {
    weight_grams: i64,
    postcode: String,
}

impl Estimate {
    fn json(&self, price_cents: i64, stale: bool) -> Json<Value> {
        Json(json!({
            "weight_grams": self.weight_grams,
            "postcode": self.postcode,
            "price_cents": price_cents,
            "stale": stale,
        }))
    }
}

/// `GET /estimates?weight_grams=1200&postcode=75011` [res-1.1].
async fn estimate(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(params) = query.map_err(|rejection| {
        let detail = format!(
            "The query string cannot be read: {}.",
            rejection.body_text()
        );
        Problem::new(StatusCode::BAD_REQUEST, detail)
    })?;
    let estimate = estimate_params(&params)?;
    // Planted bug res-caches-quotes: a recent price answers without asking the carrier.
    if bugs::is(Bug::ResCachesQuotes) {
        if let Some(price_cents) = stale_price(&estimate) {
            return Ok(estimate.json(price_cents, false));
        }
    }
    let limits = Limits::from_now();
    let quote = quote(&estimate, limits);
    let outcome = match limits {
        Some(limits) => timeout_at(limits.deadline + BACKSTOP, quote)
            .await
            .unwrap_or(Err(QuoteError::Deadline)),
        None => quote.await,
    };
    match outcome {
        Ok(price_cents) => Ok(estimate.json(price_cents, false)),
        Err(error) => match error.may_answer_stale().then(|| stale_price(&estimate)) {
            // Planted bug res-stale-unmarked: the fallback passed off as a fresh price.
            Some(Some(price_cents)) => {
                Ok(estimate.json(price_cents, !bugs::is(Bug::ResStaleUnmarked)))
            }
            _ => Err(error.problem()),
        },
    }
}

/// `weight_grams` and `postcode`, each given once and valid, or a 400 that names every bad one.
/// `weight_grams` is decimal digits only (no sign, point or exponent).
fn estimate_params(params: &[(String, String)]) -> Result<Estimate, Problem> {
    let single = |name: &str| {
        let mut values = params.iter().filter(|(key, _)| key == name);
        match (values.next(), values.next()) {
            (None, _) => Err("is required"),
            (Some(_), Some(_)) => Err("must be given once"),
            (Some((_, value)), None) => Ok(value.as_str()),
        }
    };
    let weight_grams = single("weight_grams").and_then(|w| {
        let digits = !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
        let grams = w.parse::<i64>().ok().filter(|&g| digits && is_weight(g));
        grams.ok_or(WEIGHT_RULE)
    });
    let postcode = single("postcode").and_then(|p| {
        // Planted bug res-validation-calls-carrier: "the carrier validates postcodes anyway".
        let valid = bugs::is(Bug::ResValidationCallsCarrier) || is_postcode(p);
        valid.then(|| p.to_string()).ok_or(POSTCODE_RULE)
    });
    match (weight_grams, postcode) {
        (Ok(weight_grams), Ok(postcode)) => Ok(Estimate {
            weight_grams,
            postcode,
        }),
        (weight_grams, postcode) => {
            let errors: Vec<String> = [
                ("weight_grams", weight_grams.err()),
                ("postcode", postcode.err()),
            ]
            .into_iter()
            .filter_map(|(name, error)| Some(format!("{name} {}", error?)))
            .collect();
            Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("The query is invalid: {}.", errors.join("; ")),
            ))
        }
    }
}

fn is_weight(grams: i64) -> bool {
    (1..=MAX_WEIGHT_GRAMS).contains(&grams)
}

/// 1 to 10 ASCII letters and digits.
pub(crate) fn is_postcode(text: &str) -> bool {
    (1..=MAX_POSTCODE_LEN).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `GET /breaker` [res-1.3]: the breaker's state, without calling the carrier or waiting for it.
async fn breaker_state() -> Json<Value> {
    let breaker = breaker();
    let state = match breaker.state {
        State::Closed => "closed",
        State::Open { until } if Instant::now() < until => "open",
        // Open long enough: the next quote is the trial.
        State::Open { .. } | State::Trial => "half_open",
    };
    // Planted bug res-breaker-state-capitals: the states in another spelling than the README's.
    let state = if bugs::is(Bug::ResBreakerStateCapitals) {
        state.to_uppercase()
    } else {
        state.to_string()
    };
    Json(json!({
        "state": state,
        "consecutive_failures": breaker.consecutive_failures,
    }))
}

/// Planted bug res-shared-pool: a middleware around every route of the service (it does nothing
/// otherwise) that lets 10 requests in at a time, as a pool of 10 worker threads would. "The
/// carrier is slow, so let's limit the concurrency": the health check queues behind the carrier
/// like everything else, and the 11th quote waits instead of being refused.
pub async fn worker_pool(req: Request, next: Next) -> Response {
    static WORKERS: Semaphore = Semaphore::const_new(MAX_CARRIER_CALLS);
    if !bugs::is(Bug::ResSharedPool) {
        return next.run(req).await;
    }
    let _worker = WORKERS.acquire().await.expect("the pool is never closed");
    next.run(req).await
}

// ---------------------------------------------------------------------------------------------
// One quote: bulkhead, breaker, attempts.

/// Why a quote has no fresh price.
#[derive(Debug)]
enum QuoteError {
    /// `CARRIER_URL` is not set or not a URL.
    NotConfigured,
    /// 10 quotes already call the carrier [res-5.1].
    Bulkhead,
    /// The breaker is open, or its trial is in flight [res-4.1] [res-4.2].
    BreakerOpen,
    /// A `4xx` other than `429`: the request was wrong, asking again changes nothing [res-3.3].
    Refused(StatusCode),
    /// Every attempt made failed, or the last failure was not worth retrying; `status` is what
    /// the client gets (`503`, `504` after a timeout, `502` for an answer that makes no sense).
    Failed { status: StatusCode, reason: String },
    /// The backstop cut the quote short.
    Deadline,
}

impl QuoteError {
    /// Whether the carrier could not be had, so a recent price may stand in [res-6.1]. A refusal
    /// by the bulkhead is this service's own limit, and a 4xx is an answer: neither falls back.
    fn may_answer_stale(&self) -> bool {
        // Planted bug res-no-stale: no fallback, every failure is an error page.
        if bugs::is(Bug::ResNoStale) {
            return false;
        }
        matches!(
            self,
            Self::BreakerOpen | Self::Failed { .. } | Self::Deadline
        )
    }

    fn problem(self) -> Problem {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        match self {
            Self::NotConfigured => Problem::new(unavailable, "Quotes are not available."),
            Self::Bulkhead => Problem::new(
                unavailable,
                "Too many quotes are waiting for the carrier. Retry shortly.",
            ),
            Self::BreakerOpen => Problem::new(
                unavailable,
                "The carrier is failing: quotes are suspended for a few seconds. Retry shortly.",
            ),
            Self::Refused(status) => Problem::new(
                StatusCode::BAD_GATEWAY,
                format!("The carrier refused to quote this shipment (it answered {status})."),
            ),
            Self::Failed { status, reason } => {
                eprintln!("error: carrier: no quote: {reason}");
                Problem::new(
                    status,
                    "The carrier could not quote this shipment. Retry later.",
                )
            }
            Self::Deadline => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "The carrier did not answer in time. Retry later.",
            ),
        }
    }
}

/// The time limits of one quote [res-2.1] [res-2.2].
#[derive(Debug, Clone, Copy)]
struct Limits {
    attempt: Duration,
    deadline: Instant,
}

impl Limits {
    /// The limits of a quote starting now; `None` for no limit at all.
    fn from_now() -> Option<Self> {
        // Planted bug res-no-timeout: "the carrier always answers, eventually".
        if bugs::is(Bug::ResNoTimeout) {
            return None;
        }
        // Planted bug res-timeout-short: "the carrier answers in 50 ms, 300 is plenty".
        let attempt = if bugs::is(Bug::ResTimeoutShort) {
            Duration::from_millis(300)
        } else {
            ATTEMPT_TIMEOUT
        };
        Some(Self {
            attempt,
            deadline: Instant::now() + DEADLINE,
        })
    }

    /// Whether an attempt started after `wait` could still finish within the deadline [res-3.5].
    fn leave_time_for(&self, wait: Duration) -> bool {
        Instant::now() + wait + self.attempt <= self.deadline
    }
}

/// A fresh price for `estimate`, or why there is none.
async fn quote(estimate: &Estimate, limits: Option<Limits>) -> Result<i64, QuoteError> {
    let (client, url) = carrier().map_err(|reason| {
        eprintln!("error: cannot quote: {reason}");
        QuoteError::NotConfigured
    })?;
    // Bulkhead first: a quote it turns away never touches the breaker (nor its trial).
    let _call = bulkhead()?;
    let ticket = admit()?;
    // The trial is one attempt, without retries [res-4.2].
    // Planted bug res-trial-retries: the trial goes through the usual retry policy.
    let max_attempts = if ticket.trial && !bugs::is(Bug::ResTrialRetries) {
        1
    } else {
        attempts_per_quote()
    };
    let carrier = Carrier { client, url };
    let outcome = attempts(&carrier, estimate, limits, max_attempts).await;
    ticket.settle(match &outcome {
        // The carrier answered: it is up, whatever it thought of the request [res-3.3].
        Ok(_) | Err(QuoteError::Refused(_)) => true,
        Err(_) => false,
    });
    if let Ok(price_cents) = outcome {
        remember(estimate, price_cents);
    }
    outcome
}

/// Up to `max_attempts` calls, waiting between them, within `limits` [res-3.1].
async fn attempts(
    carrier: &Carrier,
    estimate: &Estimate,
    limits: Option<Limits>,
    max_attempts: u32,
) -> Result<i64, QuoteError> {
    let mut attempt = 1;
    loop {
        let call = carrier.rate(estimate);
        let result = match limits {
            Some(limits) => timeout(limits.attempt, call)
                .await
                .unwrap_or(Err(AttemptError::TimedOut)),
            None => call.await,
        };
        let error = match result {
            Ok(price_cents) => return Ok(price_cents),
            Err(error) => error,
        };
        let failed = |why: &str| QuoteError::Failed {
            status: error.status(),
            reason: format!("attempt {attempt} of {max_attempts}: {error}; {why}"),
        };
        let wait = match &error {
            AttemptError::Refused(status) => return Err(QuoteError::Refused(*status)),
            AttemptError::Invalid(_) => return Err(failed("not retried")),
            // Planted bug res-reset-not-retried: "a dropped connection means the carrier is down".
            AttemptError::Connection(_) if bugs::is(Bug::ResResetNotRetried) => {
                return Err(failed("not retried"))
            }
            AttemptError::Unavailable {
                retry_after: Some(seconds),
                ..
            } if *seconds > MAX_RETRY_AFTER_SECONDS => {
                return Err(failed("the carrier asks for more than 2 s"))
            }
            AttemptError::Unavailable {
                retry_after: Some(seconds),
                ..
            } => Duration::from_secs(*seconds),
            _ => backoff(attempt),
        };
        if attempt >= max_attempts {
            return Err(failed("no attempt left"));
        }
        if limits.is_some_and(|limits| !limits.leave_time_for(wait)) {
            return Err(failed("no time left for another attempt"));
        }
        sleep(wait).await;
        attempt += 1;
    }
}

/// How many attempts a quote makes, at most [res-3.1].
fn attempts_per_quote() -> u32 {
    // Planted bug res-retry-unbounded: "retry until it works" (only the deadline stops it).
    if bugs::is(Bug::ResRetryUnbounded) {
        return u32::MAX;
    }
    MAX_ATTEMPTS
}

/// The wait before retry `retry` (1 for the second attempt): a random time between half and all
/// of `200 ms × 2^(retry-1)`, drawn afresh every time ("equal jitter") [res-3.2].
fn backoff(retry: u32) -> Duration {
    let ceiling = BACKOFF_BASE * 2u32.pow(retry.saturating_sub(1).min(16));
    // Planted bug res-retry-immediate: "the carrier is fast, why wait".
    if bugs::is(Bug::ResRetryImmediate) {
        return Duration::ZERO;
    }
    // Planted bug res-no-jitter: the middle of the range, every time, for every client.
    if bugs::is(Bug::ResNoJitter) {
        return ceiling.mul_f64(0.75);
    }
    ceiling.mul_f64(0.5 + 0.5 * random_unit())
}

/// A uniformly random number in [0, 1).
fn random_unit() -> f64 {
    (OsRng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

// ---------------------------------------------------------------------------------------------
// The carrier.

/// Why one attempt has no price.
#[derive(Debug)]
enum AttemptError {
    /// `429`, `502`, `503` or `504`: worth another attempt, after `retry_after` seconds when the
    /// carrier said (`429` and `503` only).
    Unavailable {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    /// Reset, closed without an answer, refused: worth another attempt.
    Connection(reqwest::Error),
    /// No answer within the attempt's timeout: worth another attempt.
    TimedOut,
    /// Any other `4xx`: not retried, and not a failure of the carrier.
    Refused(StatusCode),
    /// Anything else (a `500`, a redirect, a `2xx` without a price): not retried.
    Invalid(String),
}

impl AttemptError {
    /// What the client gets when this is the last attempt's failure.
    fn status(&self) -> StatusCode {
        match self {
            Self::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Self::Invalid(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable {
                status,
                retry_after: Some(seconds),
            } => write!(f, "the carrier answered {status}, Retry-After: {seconds}"),
            Self::Unavailable { status, .. } | Self::Refused(status) => {
                write!(f, "the carrier answered {status}")
            }
            Self::Connection(error) => write!(f, "no answer: {error}"),
            Self::TimedOut => write!(f, "no answer within {ATTEMPT_TIMEOUT:?}"),
            Self::Invalid(reason) => write!(f, "{reason}"),
        }
    }
}

struct Carrier {
    client: &'static reqwest::Client,
    url: &'static reqwest::Url,
}

impl Carrier {
    /// One attempt: `POST /rates`, and the price it answered. No timeout of its own: the caller
    /// puts one around it, covering the body as well as the headers.
    async fn rate(&self, estimate: &Estimate) -> Result<i64, AttemptError> {
        let response = self
            .client
            .post(self.url.clone())
            .json(&json!({
                "weight_grams": estimate.weight_grams,
                "postcode": estimate.postcode,
            }))
            .send()
            .await
            .map_err(AttemptError::Connection)?;
        let status = response.status();
        match status.as_u16() {
            200..=299 => {}
            429 | 502..=504 => {
                let retry_after = match status.as_u16() {
                    429 | 503 => retry_after(response.headers()),
                    _ => None,
                };
                return Err(AttemptError::Unavailable {
                    status,
                    retry_after,
                });
            }
            // Planted bug res-retry-4xx: "any error may be temporary".
            400..=499 if bugs::is(Bug::ResRetry4xx) => {
                return Err(AttemptError::Unavailable {
                    status,
                    retry_after: None,
                })
            }
            400..=499 => return Err(AttemptError::Refused(status)),
            _ => {
                let reason = format!("the carrier answered {status}");
                return Err(AttemptError::Invalid(reason));
            }
        }
        let body = response.bytes().await.map_err(AttemptError::Connection)?;
        let answer: Value = serde_json::from_slice(&body).map_err(|error| {
            AttemptError::Invalid(format!("the carrier answered something not JSON: {error}"))
        })?;
        answer
            .get("price_cents")
            .and_then(Value::as_i64)
            .filter(|price| *price >= 0)
            .ok_or_else(|| {
                AttemptError::Invalid(format!("the carrier answered no price_cents: {answer}"))
            })
    }
}

/// `Retry-After` in seconds (RFC 9110 §10.2.3 `delay-seconds`); an HTTP date, or anything else,
/// is not read, and the usual backoff applies.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    // Planted bug res-ignore-retry-after: the header is never looked at.
    if bugs::is(Bug::ResIgnoreRetryAfter) {
        return None;
    }
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    // More digits than a u64 holds is still "more than 2 seconds".
    digits.then(|| value.parse().unwrap_or(u64::MAX))
}

/// The carrier: `{CARRIER_URL}/rates`, read once, and a client without a timeout of its own
/// (each attempt gets one) that follows no redirect.
fn carrier() -> Result<(&'static reqwest::Client, &'static reqwest::Url), String> {
    static CARRIER: OnceLock<Result<(reqwest::Client, reqwest::Url), String>> = OnceLock::new();
    CARRIER
        .get_or_init(|| {
            let base = std::env::var("CARRIER_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| "CARRIER_URL is not set".to_string())?;
            let rates = format!("{}/rates", base.trim().trim_end_matches('/'));
            let rates = reqwest::Url::parse(&rates)
                .map_err(|e| format!("CARRIER_URL={base:?} is not a URL: {e}"))?;
            let client = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("cannot build the carrier client: {e}"))?;
            Ok((client, rates))
        })
        .as_ref()
        .map(|(client, url)| (client, url))
        .map_err(Clone::clone)
}

// ---------------------------------------------------------------------------------------------
// The bulkhead.

/// A place among the 10 quotes allowed to call the carrier, or a refusal, at once [res-5.1].
/// `None`: no limit.
fn bulkhead() -> Result<Option<SemaphorePermit<'static>>, QuoteError> {
    static CARRIER_CALLS: Semaphore = Semaphore::const_new(MAX_CARRIER_CALLS);
    // Planted bug res-no-bulkhead: every request may call the carrier. (Under res-shared-pool the
    // service-wide pool of `worker_pool` stands in for the bulkhead.)
    if bugs::is(Bug::ResNoBulkhead) || bugs::is(Bug::ResSharedPool) {
        return Ok(None);
    }
    match CARRIER_CALLS.try_acquire() {
        Ok(permit) => Ok(Some(permit)),
        Err(_) => Err(QuoteError::Bulkhead),
    }
}

// ---------------------------------------------------------------------------------------------
// The circuit breaker.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Refusing quotes until `until`; the first quote after it is the trial.
    Open {
        until: Instant,
    },
    /// The trial is in flight: every other quote is refused.
    Trial,
}

#[derive(Debug)]
struct Breaker {
    state: State,
    consecutive_failures: u32,
}

fn breaker() -> MutexGuard<'static, Breaker> {
    static BREAKER: Mutex<Breaker> = Mutex::new(Breaker {
        state: State::Closed,
        consecutive_failures: 0,
    });
    lock(&BREAKER)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A quote the breaker let through, to report its outcome with [`Ticket::settle`].
struct Ticket {
    /// The half-open trial: admitted to one quote only, under the same lock that moved the state.
    trial: bool,
    settled: bool,
}

/// Lets a quote call the carrier, or refuses it while the breaker is open or its trial runs.
fn admit() -> Result<Ticket, QuoteError> {
    let mut breaker = breaker();
    let trial = match breaker.state {
        State::Closed => false,
        State::Open { until } if Instant::now() < until => return Err(QuoteError::BreakerOpen),
        State::Open { .. } => {
            breaker.state = State::Trial;
            eprintln!("breaker: half-open, one trial quote");
            true
        }
        State::Trial => return Err(QuoteError::BreakerOpen),
    };
    Ok(Ticket {
        trial,
        settled: false,
    })
}

impl Ticket {
    /// Reports the quote's outcome: `carrier_up` when the carrier answered a price or a 4xx
    /// other than 429, `false` when the quote failed.
    fn settle(mut self, carrier_up: bool) {
        self.settled = true;
        let mut breaker = breaker();
        let now = Instant::now();
        if self.trial {
            // Planted bug res-breaker-never-closes: the trial's outcome is not looked at.
            if carrier_up && !bugs::is(Bug::ResBreakerNeverCloses) {
                breaker.state = State::Closed;
                breaker.consecutive_failures = 0;
                eprintln!("breaker: closed, the trial succeeded");
            } else {
                if !carrier_up {
                    breaker.consecutive_failures += 1;
                }
                breaker.state = State::Open {
                    until: now + OPEN_FOR,
                };
                eprintln!("breaker: open again for {OPEN_FOR:?}, the trial failed");
            }
            return;
        }
        // A quote let in while closed that ends after the breaker opened changes nothing: only
        // the trial decides, and the 3 s are not extended [res-4.1].
        if breaker.state != State::Closed {
            return;
        }
        if carrier_up {
            breaker.consecutive_failures = 0;
            return;
        }
        breaker.consecutive_failures += 1;
        // Planted bug res-no-breaker: failures are counted, and nothing is done with the count.
        if breaker.consecutive_failures >= FAILURES_TO_OPEN && !bugs::is(Bug::ResNoBreaker) {
            breaker.state = State::Open {
                until: now + OPEN_FOR,
            };
            eprintln!(
                "breaker: open for {OPEN_FOR:?} after {} consecutive failed quotes",
                breaker.consecutive_failures
            );
        }
    }
}

impl Drop for Ticket {
    /// A trial that never reported (its client went away and axum dropped the handler) must not
    /// leave the breaker half-open for ever: the next quote becomes the trial.
    fn drop(&mut self) {
        if self.trial && !self.settled {
            let mut breaker = breaker();
            if breaker.state == State::Trial {
                breaker.state = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The stale fallback.

struct Remembered {
    price_cents: i64,
    at: Instant,
}

fn remembered() -> MutexGuard<'static, HashMap<Estimate, Remembered>> {
    static PRICES: OnceLock<Mutex<HashMap<Estimate, Remembered>>> = OnceLock::new();
    lock(PRICES.get_or_init(Mutex::default))
}

/// Keeps a successful price, only as a fallback: every quote still asks the carrier [res-1.5].
fn remember(estimate: &Estimate, price_cents: i64) {
    let mut prices = remembered();
    if prices.len() >= PRUNE_ABOVE {
        prices.retain(|_, price| price.at.elapsed() <= STALE_FOR);
    }
    let at = Instant::now();
    prices.insert(estimate.clone(), Remembered { price_cents, at });
}

/// The price of the last successful quote for the same weight and postcode, if under 5 minutes
/// old [res-6.1].
fn stale_price(estimate: &Estimate) -> Option<i64> {
    remembered()
        .get(estimate)
        .filter(|price| price.at.elapsed() <= STALE_FOR)
        .map(|price| price.price_cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn valid_estimates() {
        let estimate =
            estimate_params(&params(&[("weight_grams", "1200"), ("postcode", "75011")])).unwrap();
        assert_eq!(estimate.weight_grams, 1200);
        assert_eq!(estimate.postcode, "75011");
        for (weight, postcode) in [("1", "A"), ("30000", "SW1A1AA"), ("42", "0123456789")] {
            let pairs = params(&[("weight_grams", weight), ("postcode", postcode)]);
            assert!(estimate_params(&pairs).is_ok(), "{weight} {postcode}");
        }
    }

    #[test]
    fn invalid_estimates() {
        for (weight, postcode) in [
            ("0", "75011"),
            ("30001", "75011"),
            ("-1", "75011"),
            ("+5", "75011"),
            ("1.5", "75011"),
            ("", "75011"),
            ("1200", ""),
            ("1200", "75 011"),
            ("1200", "75011-1"),
            ("1200", "01234567890"),
            ("1200", "é"),
        ] {
            let pairs = params(&[("weight_grams", weight), ("postcode", postcode)]);
            let problem = estimate_params(&pairs).unwrap_err();
            assert_eq!(
                problem.status(),
                StatusCode::BAD_REQUEST,
                "{weight} {postcode}"
            );
        }
        assert!(estimate_params(&params(&[("weight_grams", "1200")])).is_err());
        let twice = params(&[
            ("weight_grams", "1"),
            ("weight_grams", "2"),
            ("postcode", "A"),
        ]);
        assert!(estimate_params(&twice).is_err());
    }

    #[test]
    fn backoff_grows_with_jitter() {
        for _ in 0..1000 {
            let first = backoff(1);
            assert!((Duration::from_millis(100)..=Duration::from_millis(200)).contains(&first));
            let second = backoff(2);
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&second));
        }
        let draws: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(1)).collect();
        assert!(draws.len() > 40, "the waits are not random");
    }

    #[test]
    fn retry_after_in_seconds_only() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, value.parse().unwrap());
            retry_after(&headers)
        };
        assert_eq!(with("1"), Some(1));
        assert_eq!(with(" 2 "), Some(2));
        assert_eq!(with("99999999999999999999999"), Some(u64::MAX));
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(with("-1"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
