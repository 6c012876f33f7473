//! Metrics, traces and logs an operator can read: exercise `observability` (task statement:
//! `exercises/observability/README.md`).
//!
//! The business half is small on purpose: shipments kept in memory (`POST /shipments`,
//! `GET /shipments/{id}`; only the card's last four digits are kept) and quotes asked of the
//! carrier (`GET /quotes` calls `POST {CARRIER_URL}/rates`, 3 s timeout; any failure answers
//! 502). The other half is [`observe`], a middleware around every route of the service (every
//! exercise's), which for each request:
//!
//! - joins the caller's trace when its `traceparent` is valid (W3C Trace Context, parsed
//!   strictly: anything else starts a new trace) and gives the request its own server span;
//!   `/quotes` passes the trace on to the carrier with its client span as the parent;
//! - takes the caller's `X-Request-Id` when it is valid, makes one up otherwise, and echoes it;
//! - counts and times the request, labelled with the route *template* from axum's
//!   [`MatchedPath`] (`unmatched` for the router's fallback: never the raw path, whose ids would
//!   make a time series per shipment), for `GET /metrics` in the Prometheus text format 0.0.4.
//!   Written by hand: two metric families do not need a library;
//! - when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: queues the server span (the quote handler queues
//!   its client span) and writes the request's one JSON log line. A background task sends the
//!   queue every `OTEL_BSP_SCHEDULE_DELAY` ms (default 200) as OTLP/HTTP binary protobuf; a
//!   failed export is logged once and its spans dropped, so a collector that is down or slow never
//!   holds up a request.
//!
//! Without `OTEL_EXPORTER_OTLP_ENDPOINT` (every other exercise's run) nothing is exported and
//! `http::log_request` writes its usual plain line: the other exercises' tests know that one.
//!
//! Nothing here logs a request body or the `Authorization` header [obs-6.1].

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{SecondsFormat, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand_core::{OsRng, RngCore};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody};
use crate::problem::{FieldError, Problem};
use crate::transactions::object;
use crate::AppState;

pub fn router() -> Router<AppState> {
    let router = Router::new()
        .route("/shipments", allow(post(create_shipment), "POST"))
        .route("/shipments/{id}", allow(get(read_shipment), "GET, HEAD"))
        .route("/quotes", allow(get(quote), "GET, HEAD"))
        .route("/metrics", allow(get(metrics), "GET, HEAD"));
    // Planted bug obs-no-readyz: only liveness was wired up.
    if bugs::is(Bug::ObsNoReadyz) {
        return router;
    }
    // Ready when the database answers (integration-resilience's task 7 owns the handler): here
    // the database is always up, so it answers as soon as the service listens [obs-1.5].
    router.route("/readyz", allow(get(crate::bookings::readyz), "GET, HEAD"))
}

// ---------------------------------------------------------------------------------------------
// Shipments and quotes.

const MAX_WEIGHT_GRAMS: i64 = 30_000;
const DESTINATION_RULE: &str = "must be two upper-case letters, such as FR";
const WEIGHT_RULE: &str = "must be an integer from 1 to 30000 (grams)";
const CARD_RULE: &str = "must be a string of 12 to 19 digits";
/// The carrier answers in milliseconds; after 3 s it is down as far as a quote is concerned.
const CARRIER_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq)]
struct Shipment {
    id: String,
    destination: String,
    weight_grams: i64,
    /// The card number itself is never kept, nor logged [obs-6.1].
    card_last4: String,
}

impl Shipment {
    /// A new shipment from a `POST /shipments` body, every invalid field named (422).
    fn validate(body: &Value) -> Result<Self, Problem> {
        let fields = object(body)?;
        let mut errors = Vec::new();
        let destination = field(fields, "destination", DESTINATION_RULE, &mut errors, |v| {
            v.as_str().filter(|d| is_destination(d)).map(str::to_string)
        });
        // JSON integers only: `1200.0` is refused, as the table says "an integer".
        let weight_grams = field(fields, "weight_grams", WEIGHT_RULE, &mut errors, |value| {
            value.as_i64().filter(|&w| is_weight(w))
        });
        // The card number goes no further than this: its last four digits are all that is kept.
        let card_last4 = field(fields, "card_number", CARD_RULE, &mut errors, |value| {
            let card = value.as_str().filter(|c| is_card_number(c))?;
            Some(card[card.len() - 4..].to_string())
        });
        match (destination, weight_grams, card_last4) {
            (Some(destination), Some(weight_grams), Some(card_last4)) => Ok(Self {
                id: Uuid::new_v4().to_string(),
                destination,
                weight_grams,
                card_last4,
            }),
            _ => Err(Problem::invalid(errors)),
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "destination": self.destination,
            "weight_grams": self.weight_grams,
            "card_last4": self.card_last4,
        })
    }
}

/// The member `name` as `valid` reads it; `None` when it is missing or invalid, the reason
/// added to `errors`.
fn field<T>(
    fields: &Map<String, Value>,
    name: &str,
    rule: &str,
    errors: &mut Vec<FieldError>,
    valid: impl Fn(&Value) -> Option<T>,
) -> Option<T> {
    let error = match fields.get(name).filter(|value| !value.is_null()).map(valid) {
        Some(Some(value)) => return Some(value),
        Some(None) => rule,
        None => "is required",
    };
    errors.push(FieldError::new(format!("/{name}"), error));
    None
}

fn is_destination(text: &str) -> bool {
    text.len() == 2 && text.bytes().all(|b| b.is_ascii_uppercase())
}

fn is_weight(grams: i64) -> bool {
    (1..=MAX_WEIGHT_GRAMS).contains(&grams)
}

fn is_card_number(text: &str) -> bool {
    (12..=19).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// The shipments, in memory: the task allows it, and a restart forgetting them is fine here.
fn shipments() -> MutexGuard<'static, HashMap<String, Shipment>> {
    static SHIPMENTS: OnceLock<Mutex<HashMap<String, Shipment>>> = OnceLock::new();
    lock(SHIPMENTS.get_or_init(Mutex::default))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `POST /shipments` [obs-1.1].
async fn create_shipment(body: Result<JsonBody, Problem>) -> Result<Response, Problem> {
    // The task allows 400 or 422 for anything but a shipment: a body that is not declared JSON
    // gets a 400 here, not the 415 the other resources answer.
    let JsonBody(body) = body.map_err(|problem| {
        if problem.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            return Problem::new(StatusCode::BAD_REQUEST, problem.detail());
        }
        problem
    })?;
    let shipment = Shipment::validate(&body)?;
    shipments().insert(shipment.id.clone(), shipment.clone());
    let mut response = (StatusCode::CREATED, Json(shipment.json())).into_response();
    // Planted bug obs-create-no-location.
    if !bugs::is(Bug::ObsCreateNoLocation) {
        let location =
            HeaderValue::from_str(&format!("/shipments/{}", shipment.id)).expect("ASCII");
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /shipments/{id}` [obs-1.2]. Any id that names no shipment (a path segment that is not
/// UTF-8 included) answers 404.
async fn read_shipment(id: Result<Path<String>, PathRejection>) -> Result<Json<Value>, Problem> {
    let found = id.ok().and_then(|Path(id)| shipments().get(&id).cloned());
    match found {
        Some(shipment) => Ok(Json(shipment.json())),
        None => Err(Problem::not_found("There is no shipment with this id.")),
    }
}

/// `GET /quotes?destination=FR&weight_grams=1200` [obs-1.3] [obs-1.4].
async fn quote(
    Extension(trace): Extension<Arc<RequestTrace>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(params) = query.map_err(|rejection| {
        let detail = format!(
            "The query string cannot be read: {}.",
            rejection.body_text()
        );
        Problem::new(StatusCode::BAD_REQUEST, detail)
    })?;
    let (destination, weight_grams) = quote_params(&params)?;
    let price_cents = carrier_rate(&trace, &headers, &destination, weight_grams).await?;
    Ok(Json(json!({
        "destination": destination,
        "weight_grams": weight_grams,
        "price_cents": price_cents,
    })))
}

/// `destination` and `weight_grams`, each given once and valid as in a shipment, or a 400 that
/// names every bad one. `weight_grams` is decimal digits only (no sign, point or exponent).
fn quote_params(params: &[(String, String)]) -> Result<(String, i64), Problem> {
    let single = |name: &str| {
        let mut values = params.iter().filter(|(key, _)| key == name);
        match (values.next(), values.next()) {
            (None, _) => Err("is required"),
            (Some(_), Some(_)) => Err("must be given once"),
            (Some((_, value)), None) => Ok(value.as_str()),
        }
    };
    let destination = single("destination").and_then(|d| {
        is_destination(d)
            .then(|| d.to_string())
            .ok_or(DESTINATION_RULE)
    });
    let weight_grams = single("weight_grams").and_then(|w| {
        let digits = !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
        let grams = w.parse::<i64>().ok().filter(|&g| digits && is_weight(g));
        grams.ok_or(WEIGHT_RULE)
    });
    match (destination, weight_grams) {
        (Ok(destination), Ok(weight_grams)) => Ok((destination, weight_grams)),
        (destination, weight_grams) => {
            let errors: Vec<String> = [
                ("destination", destination.err()),
                ("weight_grams", weight_grams.err()),
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

/// The carrier: `{CARRIER_URL}/rates`, read once, and a client with a 3 s timeout.
fn carrier() -> Result<&'static (reqwest::Client, reqwest::Url), String> {
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
                .timeout(CARRIER_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the carrier client: {e}"))?;
            Ok((client, rates))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Asks the carrier for a price, in a client span of its own that the carrier's `traceparent`
/// names as the parent [obs-3.1] [obs-4.3]. No answer in time, a status other than 2xx, or an
/// answer without an integer `price_cents` is a 502 [obs-1.4].
async fn carrier_rate(
    trace: &RequestTrace,
    incoming: &HeaderMap,
    destination: &str,
    weight_grams: i64,
) -> Result<i64, Problem> {
    let (client, url) = carrier().map_err(|reason| {
        eprintln!("error: cannot quote: {reason}");
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Quotes are not available.")
    })?;
    let bad_gateway = |reason: String| {
        // Planted bug obs-carrier-failure-500: the carrier's failure passed off as an error of
        // this service.
        if bugs::is(Bug::ObsCarrierFailure500) {
            return Problem::internal(format_args!("carrier: {reason}"));
        }
        eprintln!("error: carrier: {reason}");
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "The carrier could not quote this shipment. Retry later.",
        )
    };
    // Planted bug obs-quote-weight-in-kg: "the carrier's API works in kilograms".
    let weight_sent = if bugs::is(Bug::ObsQuoteWeightInKg) {
        weight_grams / 1000
    } else {
        weight_grams
    };
    let span_id = SpanId::random();
    let mut request = client
        .post(url.clone())
        .json(&json!({ "destination": destination, "weight_grams": weight_sent }));
    if let Some(traceparent) = outgoing_traceparent(trace, incoming, span_id) {
        request = request.header(TRACEPARENT, traceparent);
        if let Some(tracestate) = &trace.tracestate {
            request = request.header(TRACESTATE, tracestate);
        }
    }

    let start = SystemTime::now();
    let (status, body) = match request.send().await {
        Ok(response) => (Some(response.status()), response.bytes().await),
        Err(error) => (None, Err(error)),
    };
    let error_type = match (&status, &body) {
        (_, Err(error)) if error.is_timeout() => Some("timeout".to_string()),
        (_, Err(_)) => Some("_OTHER".to_string()),
        (Some(status), Ok(_)) if status.as_u16() >= 400 => Some(status.as_str().to_string()),
        _ => None,
    };
    record_span(|| client_span(trace, span_id, url, start, status, error_type.as_deref()));

    let body = body.map_err(|e| match e.is_timeout() {
        true => bad_gateway(format!("no answer from {url} within {CARRIER_TIMEOUT:?}")),
        false => bad_gateway(format!("no answer from {url}: {e}")),
    })?;
    let status = status.unwrap_or(StatusCode::BAD_GATEWAY);
    if !status.is_success() {
        return Err(bad_gateway(format!("{url} answered {status}")));
    }
    let answer: Value = serde_json::from_slice(&body)
        .map_err(|e| bad_gateway(format!("{url} answered something that is not JSON: {e}")))?;
    answer
        .get("price_cents")
        .and_then(Value::as_i64)
        .filter(|price| *price >= 0)
        .ok_or_else(|| bad_gateway(format!("{url} answered no integer price_cents: {answer}")))
}

/// The `traceparent` for the carrier: this request's trace, with the client span as the parent.
fn outgoing_traceparent(
    trace: &RequestTrace,
    incoming: &HeaderMap,
    client_span: SpanId,
) -> Option<HeaderValue> {
    // Planted bug obs-traceparent-forwarded: propagation as "pass the header along".
    if bugs::is(Bug::ObsTraceparentForwarded) {
        if let Some(value) = incoming.get(TRACEPARENT) {
            return Some(value.clone());
        }
    }
    // Planted bug obs-no-trace-without-parent: only a trace the caller started is passed on.
    if bugs::is(Bug::ObsNoTraceWithoutParent) && trace.caller.is_none() {
        return None;
    }
    let value = format!("00-{}-{client_span}-01", trace.trace_id);
    Some(HeaderValue::from_str(&value).expect("hex digits and dashes"))
}

// ---------------------------------------------------------------------------------------------
// The middleware: ids, metrics, spans and the log line of every request.

/// The route label of requests the router has no route for: a fixed value, never the path.
const UNMATCHED: &str = "unmatched";
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Observes every request of the service: see the module documentation. Outermost, so that it
/// sees the final status (panics and the router's fallback included).
pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let start = SystemTime::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_string());
    // Planted bug obs-raw-path-labels: the path as requested, ids and all.
    let metric_route = if bugs::is(Bug::ObsRawPathLabels) {
        req.uri().path().to_string()
    } else {
        route.clone().unwrap_or_else(|| UNMATCHED.to_string())
    };
    let trace = Arc::new(RequestTrace::start(req.headers()));
    let request_id = RequestId::of(req.headers());
    // Planted bug obs-token-in-logs: "the auth header helps debugging 401s".
    let authorization = bugs::is(Bug::ObsTokenInLogs)
        .then(|| {
            req.headers()
                .get(header::AUTHORIZATION)?
                .to_str()
                .ok()
                .map(str::to_string)
        })
        .flatten();
    req.extensions_mut().insert(Arc::clone(&trace));

    let mut response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();

    if request_id.echoed() {
        let value = HeaderValue::from_str(request_id.as_str()).expect("validated or generated");
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    lock(&METRICS).observe(method.as_str(), &metric_route, status, elapsed);
    record_span(|| server_span(&trace, &method, route.as_deref(), status, start));
    if json_logs() {
        let line = LogLine {
            method: method.as_str(),
            route: route.as_deref().unwrap_or(UNMATCHED),
            status,
            elapsed,
            trace: &trace,
            request_id: request_id.as_str(),
            authorization,
        };
        println!("{line}");
    }
    response
}

/// One request's log line, written when it is done [obs-5.1] [obs-5.2].
struct LogLine<'a> {
    method: &'a str,
    route: &'a str,
    status: u16,
    elapsed: Duration,
    trace: &'a RequestTrace,
    request_id: &'a str,
    authorization: Option<String>,
}

impl fmt::Display for LogLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duration_ms = (self.elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        // Planted bug obs-unstructured-logs: the line a human would write, ids appended.
        if bugs::is(Bug::ObsUnstructuredLogs) {
            let (method, route, status) = (self.method, self.route, self.status);
            let (trace_id, request_id) = (self.trace.trace_id, self.request_id);
            return write!(
                f,
                "{method} {route} {status} {duration_ms:.0}ms trace={trace_id} request={request_id}"
            );
        }
        let mut line = json!({
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "level": "info",
            "method": self.method,
            "route": self.route,
            "status": self.status,
            "duration_ms": duration_ms,
            "trace_id": self.trace.trace_id.to_string(),
            "span_id": self.trace.span_id.to_string(),
            "request_id": self.request_id,
        });
        if let Some(authorization) = &self.authorization {
            line["authorization"] = json!(authorization);
        }
        write!(f, "{line}")
    }
}

/// Whether requests are logged as JSON lines here (instead of `http::log_request`'s plain line):
/// when an OTLP endpoint is configured, the sign that the observability exercise is running.
pub fn json_logs() -> bool {
    exporter().is_some()
}

/// A request's `X-Request-Id`: the caller's when valid, made up otherwise [obs-5.3].
enum RequestId {
    Sent(String),
    Made(String),
}

impl RequestId {
    fn of(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(X_REQUEST_ID).iter();
        if let (Some(value), None) = (values.next(), values.next()) {
            if let Some(id) = value.to_str().ok().filter(|id| Self::is_valid(id)) {
                return Self::Sent(id.to_string());
            }
        }
        // Planted bug obs-request-id-constant: a placeholder instead of an id.
        if bugs::is(Bug::ObsRequestIdConstant) {
            return Self::Made("unknown".to_string());
        }
        Self::Made(Uuid::new_v4().to_string())
    }

    /// 1 to 200 letters, digits, `-`, `_` and `.`.
    fn is_valid(id: &str) -> bool {
        (1..=200).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Sent(id) | Self::Made(id) => id,
        }
    }

    fn echoed(&self) -> bool {
        // Planted bug obs-request-id-not-echoed: only "our" ids go back to the client.
        !(matches!(self, Self::Sent(_)) && bugs::is(Bug::ObsRequestIdNotEchoed))
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics: the Prometheus text format 0.0.4 [obs-2.1].

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Upper bounds, in seconds, of the latency buckets (`+Inf` is implicit).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static METRICS: Mutex<Metrics> = Mutex::new(Metrics {
    requests: BTreeMap::new(),
    durations: BTreeMap::new(),
});

struct Metrics {
    /// `http_requests_total` by (method, route, status).
    requests: BTreeMap<(String, String, u16), u64>,
    /// `http_request_duration_seconds` by (method, route).
    durations: BTreeMap<(String, String), Histogram>,
}

#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative: [`Metrics::render`] adds them up); the last
    /// slot is `+Inf` alone.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Metrics {
    fn observe(&mut self, method: &str, route: &str, status: u16, elapsed: Duration) {
        // Planted bug obs-counter-skips-errors: "errors are counted elsewhere".
        if !(bugs::is(Bug::ObsCounterSkipsErrors) && status >= 400) {
            let key = (method.to_string(), route.to_string(), status);
            *self.requests.entry(key).or_default() += 1;
        }
        // Planted bug obs-histogram-milliseconds: the unit everybody reads latencies in.
        let value = if bugs::is(Bug::ObsHistogramMilliseconds) {
            elapsed.as_secs_f64() * 1000.0
        } else {
            elapsed.as_secs_f64()
        };
        let key = (method.to_string(), route.to_string());
        let histogram = self.durations.entry(key).or_default();
        let bucket = BUCKETS
            .iter()
            .position(|le| value <= *le)
            .unwrap_or(BUCKETS.len());
        histogram.counts[bucket] += 1;
        histogram.sum += value;
        histogram.count += 1;
    }

    fn render(&self) -> String {
        let mut text = String::new();
        text.push_str(
            "# HELP http_requests_total HTTP requests answered, by method, route template and status.\n\
             # TYPE http_requests_total counter\n",
        );
        for ((method, route, status), count) in &self.requests {
            let status = status.to_string();
            let labels = labels(&[
                ("method", method.as_str()),
                ("route", route.as_str()),
                ("status", status.as_str()),
            ]);
            let _ = writeln!(text, "http_requests_total{labels} {count}");
        }
        text.push_str(
            "# HELP http_request_duration_seconds Time to answer HTTP requests, by method and route template.\n\
             # TYPE http_request_duration_seconds histogram\n",
        );
        for ((method, route), histogram) in &self.durations {
            let mut cumulative = 0;
            let bounds = BUCKETS
                .iter()
                .map(f64::to_string)
                .chain(["+Inf".to_string()]);
            for (le, count) in bounds.zip(histogram.counts) {
                cumulative += count;
                let labels = labels(&[
                    ("method", method.as_str()),
                    ("route", route.as_str()),
                    ("le", le.as_str()),
                ]);
                let _ = writeln!(
                    text,
                    "http_request_duration_seconds_bucket{labels} {cumulative}"
                );
            }
            let labels = labels(&[("method", method.as_str()), ("route", route.as_str())]);
            let _ = writeln!(
                text,
                "http_request_duration_seconds_sum{labels} {}",
                histogram.sum
            );
            let _ = writeln!(
                text,
                "http_request_duration_seconds_count{labels} {}",
                histogram.count
            );
        }
        text
    }
}

/// `{name="value",...}`, values escaped as the text format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut text = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        // Planted bug obs-metrics-unquoted-labels: values written like names.
        if bugs::is(Bug::ObsMetricsUnquotedLabels) {
            let _ = write!(text, "{name}={value}");
            continue;
        }
        let _ = write!(text, "{name}=\"");
        for c in value.chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text.push('}');
    text
}

/// `GET /metrics` [obs-2.1]..[obs-2.6].
async fn metrics() -> Response {
    let text = lock(&METRICS).render();
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

// ---------------------------------------------------------------------------------------------
// W3C Trace Context [obs-3.1]..[obs-3.3].

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TraceId([u8; 16]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpanId([u8; 8]);

impl TraceId {
    fn random() -> Self {
        Self(random_nonzero())
    }
}

impl SpanId {
    fn random() -> Self {
        Self(random_nonzero())
    }
}

/// Random bytes, not all zero (an all-zero id is invalid).
fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut bytes = [0; N];
        OsRng.fill_bytes(&mut bytes);
        if bytes != [0; N] {
            return bytes;
        }
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// Exactly `2 * N` lower-case hex digits.
fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(bytes)
}

/// A valid `traceparent` (W3C Trace Context §3.2).
#[derive(Debug, PartialEq)]
struct TraceParent {
    trace_id: TraceId,
    parent_id: SpanId,
}

impl TraceParent {
    /// The request's `traceparent`, if it has exactly one and it is valid.
    fn of(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return None;
        };
        Self::parse(value.to_str().ok()?)
    }

    /// Version `00` is exactly 55 characters; a later version is read by its first 55, which
    /// must end the value or be followed by `-`; version `ff` is invalid. Lower-case hex only,
    /// and neither id may be all zeros.
    fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        if !value.is_ascii() || bytes.len() < 55 {
            return None;
        }
        let [version] = lower_hex::<1>(&value[..2])?;
        if version == 0xff
            || (version == 0 && bytes.len() != 55)
            || (bytes.len() > 55 && bytes[55] != b'-')
        {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = lower_hex::<16>(&value[3..35]).filter(|id| *id != [0; 16])?;
        let parent_id = lower_hex::<8>(&value[36..52]).filter(|id| *id != [0; 8])?;
        lower_hex::<1>(&value[53..55])?;
        Some(Self {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
        })
    }
}

/// The trace of one request, in its extensions for the handlers: set by [`observe`].
#[derive(Debug)]
pub struct RequestTrace {
    trace_id: TraceId,
    /// This request's server span.
    span_id: SpanId,
    /// The caller's span, when it sent a valid `traceparent`.
    caller: Option<SpanId>,
    /// The caller's `tracestate`, passed on with its trace.
    tracestate: Option<HeaderValue>,
}

impl RequestTrace {
    /// The caller's trace when its `traceparent` is valid, a new one otherwise.
    fn start(headers: &HeaderMap) -> Self {
        // Planted bug obs-traceparent-dropped: every request is the root of a trace of its own.
        let parent = if bugs::is(Bug::ObsTraceparentDropped) {
            None
        } else {
            TraceParent::of(headers)
        };
        match parent {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id: SpanId::random(),
                caller: Some(parent.parent_id),
                tracestate: tracestate(headers),
            },
            None => Self {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                caller: None,
                tracestate: None,
            },
        }
    }
}

/// The caller's `tracestate` headers as one list, when they fit the 512 characters every
/// vendor must pass on; dropped otherwise (as the specification allows).
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let parts: Vec<&str> = headers
        .get_all(TRACESTATE)
        .iter()
        .map(HeaderValue::to_str)
        .collect::<Result<_, _>>()
        .ok()?;
    let list = parts.join(",");
    if list.trim().is_empty() || list.len() > 512 {
        return None;
    }
    HeaderValue::from_str(&list).ok()
}

// ---------------------------------------------------------------------------------------------
// Spans, exported over OTLP/HTTP [obs-4.1]..[obs-4.3].

/// Batches of at most this many spans, and at most this many waiting (later ones are dropped):
/// the OpenTelemetry SDK's batch span processor defaults.
const MAX_EXPORT_BATCH: usize = 512;
const MAX_QUEUE: usize = 2048;
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(200);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// `Span.flags`: the W3C flags (sampled), and whether the parent is remote (bits 8 and 9).
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// The span exporter, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
struct Exporter {
    /// `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces`.
    url: String,
    resource: Resource,
    schedule_delay: Duration,
    client: reqwest::Client,
    queue: Mutex<Vec<Span>>,
    /// A failed export was reported, and none has succeeded since: an unreachable collector is
    /// one line in the log, not one every 200 ms.
    failing: AtomicBool,
}

fn exporter() -> Option<&'static Exporter> {
    static EXPORTER: OnceLock<Option<Exporter>> = OnceLock::new();
    EXPORTER.get_or_init(Exporter::from_env).as_ref()
}

/// Starts the exporter's batch task, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Call once, in
/// the runtime, before serving.
pub fn start() {
    if let Some(exporter) = exporter() {
        println!(
            "exporting spans to {} every {} ms",
            exporter.url,
            exporter.schedule_delay.as_millis()
        );
        tokio::spawn(exporter.run());
    }
}

/// Exports the spans still queued: at shutdown, so that the last requests' spans are not lost.
pub async fn flush() {
    if let Some(exporter) = exporter() {
        exporter.export_queued().await;
    }
}

/// Hands a finished span to the exporter; `span` is only built when there is one.
fn record_span(span: impl FnOnce() -> Span) {
    if let Some(exporter) = exporter() {
        exporter.record(span());
    }
}

impl Exporter {
    fn from_env() -> Option<Self> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let schedule_delay = match env("OTEL_BSP_SCHEDULE_DELAY") {
            None => DEFAULT_SCHEDULE_DELAY,
            Some(ms) => {
                match ms.trim().parse() {
                    Ok(ms) => Duration::from_millis(ms),
                    Err(_) => {
                        eprintln!("OTEL_BSP_SCHEDULE_DELAY={ms:?} is not a number of milliseconds; using 200");
                        DEFAULT_SCHEDULE_DELAY
                    }
                }
            }
        };
        let service_name = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "shipping".to_string());
        let client = match reqwest::Client::builder()
            .no_proxy()
            .timeout(EXPORT_TIMEOUT)
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                eprintln!("error: cannot build the span exporter's client ({error}); no export");
                return None;
            }
        };
        Some(Self {
            url: format!("{}/v1/traces", endpoint.trim().trim_end_matches('/')),
            resource: Resource {
                attributes: vec![attribute("service.name", service_name)],
                ..Resource::default()
            },
            schedule_delay,
            client,
            queue: Mutex::default(),
            failing: AtomicBool::new(false),
        })
    }

    fn record(&self, span: Span) {
        // Planted bug obs-no-otlp-export: spans end and go nowhere (no exporter was installed).
        if bugs::is(Bug::ObsNoOtlpExport) {
            return;
        }
        let mut queue = lock(&self.queue);
        if queue.len() < MAX_QUEUE {
            queue.push(span);
        }
    }

    async fn run(&'static self) {
        loop {
            tokio::time::sleep(self.schedule_delay).await;
            self.export_queued().await;
        }
    }

    async fn export_queued(&self) {
        let mut spans = std::mem::take(&mut *lock(&self.queue));
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(MAX_EXPORT_BATCH));
            self.export(spans).await;
            spans = rest;
        }
    }

    async fn export(&self, spans: Vec<Span>) {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: env!("CARGO_PKG_NAME").to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let sent = self
            .client
            .post(&self.url)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await;
        let failure = match sent {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("the collector answered {}", response.status())),
            Err(error) => Some(error.to_string()),
        };
        match failure {
            None => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    eprintln!("span export to {} works again", self.url);
                }
            }
            Some(reason) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "error: cannot export spans to {} ({reason}); they are dropped, and this \
                         is not logged again until an export succeeds",
                        self.url
                    );
                }
            }
        }
    }
}

fn attribute(key: &str, value: impl Into<AttributeValue>) -> KeyValue {
    let value = match value.into() {
        AttributeValue::String(text) => any_value::Value::StringValue(text),
        AttributeValue::Int(number) => any_value::Value::IntValue(number),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

enum AttributeValue {
    String(String),
    Int(i64),
}

impl From<String> for AttributeValue {
    fn from(text: String) -> Self {
        Self::String(text)
    }
}

impl From<&str> for AttributeValue {
    fn from(text: &str) -> Self {
        Self::String(text.to_string())
    }
}

impl From<u16> for AttributeValue {
    fn from(number: u16) -> Self {
        Self::Int(number.into())
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// The request's server span, with the stable HTTP semantic conventions' attributes [obs-4.2].
fn server_span(
    trace: &RequestTrace,
    method: &Method,
    route: Option<&str>,
    status: u16,
    start: SystemTime,
) -> Span {
    let mut attributes = vec![
        attribute("http.request.method", method.as_str()),
        attribute("http.response.status_code", status),
    ];
    if let Some(route) = route {
        attributes.push(attribute("http.route", route));
    }
    let failed = status >= 500;
    if failed {
        attributes.push(attribute("error.type", status.to_string()));
    }
    let remote = if trace.caller.is_some() {
        FLAG_IS_REMOTE
    } else {
        0
    };
    Span {
        trace_id: trace.trace_id.0.to_vec(),
        span_id: trace.span_id.0.to_vec(),
        trace_state: trace
            .tracestate
            .as_ref()
            .and_then(|state| state.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        parent_span_id: trace.caller.map(|id| id.0.to_vec()).unwrap_or_default(),
        flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | remote,
        // `{method} {route}`, or the method alone when no route matched.
        name: route.map_or_else(|| method.to_string(), |route| format!("{method} {route}")),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: unix_nanos(start),
        end_time_unix_nano: unix_nanos(SystemTime::now()),
        attributes,
        status: Some(span_status(failed)),
        ..Span::default()
    }
}

/// The span of the carrier call, a child of the server span [obs-4.3]. `status` is `None` when
/// no response came; `error_type` is set when the call failed.
fn client_span(
    trace: &RequestTrace,
    span_id: SpanId,
    url: &reqwest::Url,
    start: SystemTime,
    status: Option<StatusCode>,
    error_type: Option<&str>,
) -> Span {
    // Planted bug obs-client-span-orphan: the parent taken from the incoming context instead of
    // the span that is current.
    let parent = if bugs::is(Bug::ObsClientSpanOrphan) {
        trace.caller
    } else {
        Some(trace.span_id)
    };
    // Credentials in the URL never reach an attribute.
    let mut shown = url.clone();
    if !shown.username().is_empty() || shown.password().is_some() {
        let _ = shown.set_username("REDACTED");
        let _ = shown.set_password(Some("REDACTED"));
    }
    let mut attributes = vec![
        attribute("http.request.method", "POST"),
        attribute("server.address", url.host_str().unwrap_or_default()),
        attribute("url.full", shown.as_str()),
    ];
    if let Some(port) = url.port_or_known_default() {
        attributes.push(attribute("server.port", port));
    }
    if let Some(status) = status {
        attributes.push(attribute("http.response.status_code", status.as_u16()));
    }
    if let Some(error_type) = error_type {
        attributes.push(attribute("error.type", error_type));
    }
    Span {
        trace_id: trace.trace_id.0.to_vec(),
        span_id: span_id.0.to_vec(),
        trace_state: String::new(),
        parent_span_id: parent.map(|id| id.0.to_vec()).unwrap_or_default(),
        flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
        name: "POST".to_string(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: unix_nanos(start),
        end_time_unix_nano: unix_nanos(SystemTime::now()),
        attributes,
        status: Some(span_status(error_type.is_some())),
        ..Span::default()
    }
}

fn span_status(failed: bool) -> Status {
    let code = if failed {
        SpanStatus::Error
    } else {
        SpanStatus::Unset
    };
    Status {
        code: code as i32,
        message: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_is_parsed_strictly() {
        let parsed = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parsed.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.parent_id.to_string(), "00f067aa0ba902b7");
        // A later version may carry more fields after a dash.
        assert!(TraceParent::parse(&VALID.replacen("00", "01", 1)).is_some());
        assert!(TraceParent::parse(&format!("{}-extra", VALID.replacen("00", "01", 1))).is_some());
        for invalid in [
            VALID.to_uppercase(),
            VALID.replacen("00", "ff", 1),
            format!("{VALID}-extra"),
            format!("{}x", VALID.replacen("00", "01", 1)),
            VALID[..54].to_string(),
            VALID.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            VALID.replace("00f067aa0ba902b7", &"0".repeat(16)),
            VALID.replace("-01", "-1g"),
            VALID.replacen('-', "_", 1),
            String::new(),
        ] {
            assert_eq!(TraceParent::parse(&invalid), None, "{invalid}");
        }
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(RequestId::is_valid("abc-DEF_1.2"));
        assert!(RequestId::is_valid(&"a".repeat(200)));
        for invalid in ["", "a b", "a/b", "é", &"a".repeat(201)] {
            assert!(!RequestId::is_valid(invalid), "{invalid}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("route", "a\\b\"c\nd"), ("status", "200")]),
            r#"{route="a\\b\"c\nd",status="200"}"#
        );
    }

    #[test]
    fn histograms_are_cumulative() {
        let mut metrics = Metrics {
            requests: BTreeMap::new(),
            durations: BTreeMap::new(),
        };
        metrics.observe("GET", "/quotes", 200, Duration::from_millis(3));
        metrics.observe("GET", "/quotes", 502, Duration::from_secs(20));
        let text = metrics.render();
        for line in [
            r#"http_requests_total{method="GET",route="/quotes",status="200"} 1"#,
            r#"http_requests_total{method="GET",route="/quotes",status="502"} 1"#,
            r#"http_request_duration_seconds_bucket{method="GET",route="/quotes",le="0.005"} 1"#,
            r#"http_request_duration_seconds_bucket{method="GET",route="/quotes",le="10"} 1"#,
            r#"http_request_duration_seconds_bucket{method="GET",route="/quotes",le="+Inf"} 2"#,
            r#"http_request_duration_seconds_count{method="GET",route="/quotes"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn shipments_are_validated() {
        let body = |d: Value, w: Value, c: Value| json!({ "destination": d, "weight_grams": w, "card_number": c });
        let shipment =
            Shipment::validate(&body(json!("FR"), json!(1200), json!("4111111111111111"))).unwrap();
        assert_eq!(shipment.card_last4, "1111");
        let ok = |b: Value| Shipment::validate(&b).is_ok();
        assert!(ok(body(json!("DE"), json!(30000), json!("123456789012"))));
        assert!(ok(body(
            json!("DE"),
            json!(1),
            json!("1234567890123456789")
        )));
        for invalid in [
            body(json!("fr"), json!(1), json!("123456789012")),
            body(json!("FRA"), json!(1), json!("123456789012")),
            body(json!("FR"), json!(0), json!("123456789012")),
            body(json!("FR"), json!(30001), json!("123456789012")),
            body(json!("FR"), json!(2.0), json!("123456789012")),
            body(json!("FR"), json!("12"), json!("123456789012")),
            body(json!("FR"), json!(1), json!("12345678901")),
            body(json!("FR"), json!(1), json!("12345678901234567890")),
            body(json!("FR"), json!(1), json!("1234 5678 9012")),
            body(json!("FR"), json!(1), json!(123456789012_u64)),
            json!({ "destination": "FR", "weight_grams": 1 }),
            json!([]),
        ] {
            assert!(!ok(invalid.clone()), "{invalid}");
        }
        let problem = Shipment::validate(&json!({})).unwrap_err();
        assert_eq!(
            problem.pointers(),
            ["/destination", "/weight_grams", "/card_number"]
        );
    }

    #[test]
    fn quote_parameters_are_validated() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            quote_params(&params(&[("destination", "FR"), ("weight_grams", "1200")])).unwrap(),
            ("FR".to_string(), 1200)
        );
        for invalid in [
            params(&[("destination", "FR")]),
            params(&[("destination", "fr"), ("weight_grams", "1200")]),
            params(&[("destination", "FR"), ("weight_grams", "1200.0")]),
            params(&[("destination", "FR"), ("weight_grams", "+12")]),
            params(&[("destination", "FR"), ("weight_grams", "30001")]),
            params(&[
                ("destination", "FR"),
                ("weight_grams", "99999999999999999999"),
            ]),
            params(&[
                ("destination", "FR"),
                ("destination", "DE"),
                ("weight_grams", "1"),
            ]),
        ] {
            let problem = quote_params(&invalid).unwrap_err();
            assert_eq!(problem.status(), StatusCode::BAD_REQUEST, "{invalid:?}");
        }
    }
}
