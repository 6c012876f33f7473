//! HTTP plumbing shared by every resource: JSON bodies, wrong methods, unknown routes, the
//! request log and panics.
//!
//! axum answers these cases itself with `text/plain` bodies; the task wants problem details for
//! every error, so each one is handled here explicitly instead.

use std::any::Any;
use std::future::ready;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::MethodRouter;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::bugs::{self, Bug};
use crate::problem::Problem;

const JSON: &str = "application/json";
const MERGE_PATCH_JSON: &str = "application/merge-patch+json";

/// A request body sent as `application/json`, parsed but not yet validated.
///
/// Parsing into a [`Value`] first (rather than straight into a struct) keeps "not JSON" (400)
/// apart from "JSON that breaks the rules" (422), and lets validation name every bad field.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        read_json(req, state, &[JSON]).await.map(Self)
    }
}

/// A JSON merge patch (RFC 7396) body: `application/merge-patch+json`, or plain `application/json`.
pub struct MergePatchBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for MergePatchBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        read_json(req, state, &[MERGE_PATCH_JSON, JSON])
            .await
            .map(Self)
            .map_err(|problem| {
                if problem.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
                    return problem;
                }
                // RFC 5789 §2.2: a 415 to a PATCH says which patch formats would work.
                let accepted =
                    HeaderValue::from_static("application/merge-patch+json, application/json");
                problem.with_header(HeaderName::from_static("accept-patch"), accepted)
            })
    }
}

/// Checks the `Content-Type` against `accepted` (parameters such as `charset` are ignored), then
/// reads and parses the body.
async fn read_json<S: Send + Sync>(
    req: Request,
    state: &S,
    accepted: &[&str],
) -> Result<Value, Problem> {
    if !bugs::is(Bug::IgnoreContentType) {
        let media_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                if bugs::is(Bug::ContentTypeExact) {
                    // `req.headers["content-type"] === "application/json"`: a parameter such as
                    // `charset` is not expected.
                    return Some(value);
                }
                value.split(';').next()
            })
            .map(|essence| essence.trim().to_ascii_lowercase());
        if !media_type.is_some_and(|media_type| accepted.contains(&media_type.as_str())) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Send the request body as JSON, with Content-Type: {}.",
                    accepted.join(" or ")
                ),
            ));
        }
    }

    // Body rejections (too large, connection cut) keep axum's status, in a problem document.
    let body = Bytes::from_request(req, state)
        .await
        .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))?;

    // serde_json refuses nesting deeper than 128 levels, so hostile input cannot overflow the stack.
    serde_json::from_slice(&body).map_err(|error| {
        if bugs::is(Bug::MalformedJson500) {
            return Problem::internal(format_args!("parsing request body: {error}"));
        }
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("The request body is not valid JSON: {error}."),
        )
    })
}

/// Makes `methods` answer 405 with `Allow: allow` for any method it does not route.
///
/// `allow` is spelled out rather than taken from axum, which writes `GET,HEAD` without spaces and
/// cannot be told that a planted bug removed a method.
pub fn allow<S>(methods: MethodRouter<S>, allow: &'static str) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    methods.fallback(move |method: Method, uri: Uri| {
        ready(if bugs::is(Bug::No405) {
            unknown_route_problem(&method, &uri)
        } else {
            Problem::method_not_allowed(method.as_str(), uri.path(), allow)
        })
    })
}

/// The router's fallback: no route has this path.
pub async fn unknown_route(method: Method, uri: Uri) -> Response {
    if bugs::is(Bug::Html404) {
        return (StatusCode::NOT_FOUND, Html("<h1>Not Found</h1>")).into_response();
    }
    unknown_route_problem(&method, &uri).into_response()
}

fn unknown_route_problem(method: &Method, uri: &Uri) -> Problem {
    Problem::not_found(format!("There is no route for {method} {}.", uri.path()))
}

/// Logs one line per request to stdout: time, method, target, status and duration; never a
/// header or a body, which may carry credentials. When an OTLP endpoint is configured, the
/// observability exercise's JSON line (`observability::observe`) replaces this one.
pub async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    if bugs::is(Bug::LogsAuthorization) {
        // Planted bug: "log everything while debugging", bearer tokens included.
        println!("{method} {uri} headers: {:?}", req.headers());
    }
    let response = next.run(req).await;
    if crate::observability::json_logs() {
        return response;
    }
    println!(
        "{} {method} {uri} {} {:.1}ms",
        DateTime::<Utc>::from(SystemTime::now()).to_rfc3339_opts(SecondsFormat::Millis, true),
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    response
}

/// Turns a panicking handler into a logged, generic 500 instead of a dropped connection.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    Problem::internal(format_args!("handler panicked: {message}")).into_response()
}
