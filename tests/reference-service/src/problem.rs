//! Error responses as RFC 9457 problem details (`application/problem+json`).
//!
//! Every 4xx and 5xx the service sends is a [`Problem`], including the ones axum would otherwise
//! produce itself as `text/plain` (body rejections, unknown routes, wrong methods): see `http.rs`.

use std::error::Error;
use std::fmt::Display;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::bugs::{self, Bug};

/// The detail of every 500: the real cause goes to the log, never to the client.
const INTERNAL_DETAIL: &str = "An unexpected error occurred. It has been logged.";

/// One invalid field of a request body.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) into the request body; `""` is the body itself.
    pub pointer: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }

    /// The field as a reader would name it: `price_cents`, or `the request body`.
    fn subject(&self) -> &str {
        match self.pointer.strip_prefix('/') {
            Some(field) => field,
            None => "the request body",
        }
    }
}

/// An error response. `type` is always `about:blank`, so `title` is the status's reason phrase.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
    errors: Vec<FieldError>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 422 for a request body that is JSON but breaks the rules; `errors` must not be empty.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        if bugs::is(Bug::ValidationAnonymous) {
            return Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid input");
        }
        let summary: Vec<String> = errors
            .iter()
            .map(|error| format!("{} {}", error.subject(), error.detail))
            .collect();
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("The request body is invalid: {}.", summary.join("; ")),
            )
        }
    }

    /// 405 with the `Allow` header the client needs to recover.
    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported on {path}; use one of: {allow}."),
        )
        .with_header(header::ALLOW, HeaderValue::from_static(allow))
    }

    /// A generic 500. Logs `error`, which the client never sees.
    pub fn internal(error: impl Display) -> Self {
        eprintln!("error: {error}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_DETAIL)
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    #[cfg(test)]
    pub fn pointers(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|error| error.pointer.clone())
            .collect()
    }
}

impl From<tokio_postgres::Error> for Problem {
    fn from(error: tokio_postgres::Error) -> Self {
        let message = with_sources(&error);
        let problem = Self::internal(format_args!("database: {message}"));
        if bugs::is(Bug::LeakDbErrors) {
            // The classic leak: the driver's message, server error text and all, sent to the client.
            return Self::new(problem.status, message);
        }
        problem
    }
}

impl From<deadpool_postgres::PoolError> for Problem {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::internal(format_args!("database pool: {}", with_sources(&error)))
    }
}

/// `error` followed by its sources, e.g. `db error: ERROR: invalid byte sequence ...`:
/// tokio-postgres's own `Display` is just `db error`, the server's message is in the source.
fn with_sources(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some wrappers (deadpool's) already show their direct cause.
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    message
}

/// The reason phrase, as RFC 9110 names it (the `http` crate still has some pre-9110 names).
fn title(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "Content Too Large",
        StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable Content",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // Planted bug plain-500: a server error is the framework's bare text page.
        let plain_500 = bugs::is(Bug::Plain500) && self.status.is_server_error();
        let mut response = if plain_500 {
            let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
            (self.status, content_type, "Internal Server Error").into_response()
        } else if bugs::is(Bug::PlainTextErrors) {
            let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
            (self.status, content_type, self.detail).into_response()
        } else {
            let status = if bugs::is(Bug::ProblemStatusString) {
                json!(self.status.as_str())
            } else {
                json!(self.status.as_u16())
            };
            let mut body = json!({
                "type": "about:blank",
                "title": title(self.status),
                "status": status,
                "detail": self.detail,
            });
            if !self.errors.is_empty() {
                body["errors"] = json!(self.errors);
            }
            if bugs::is(Bug::ProblemNoDetail) {
                // Only the members RFC 9457 requires of every problem, nothing to act on.
                body.as_object_mut().map(|members| members.remove("detail"));
            }
            let content_type = [(header::CONTENT_TYPE, "application/problem+json")];
            (self.status, content_type, body.to_string()).into_response()
        };
        response.headers_mut().extend(self.headers);
        response
    }
}
