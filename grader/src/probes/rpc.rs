//! What the gRPC probes share: a channel to the service, what its server reflection says (the
//! grader has no generated code: every method is found there), calls recorded as exchanges with
//! a `grpcurl` command a learner can paste, and the failures of calls that got no status.
//!
//! An exchange of a call is recorded in the report's one model of an exchange, as gRPC puts it on
//! the wire: a `POST` of the method's path; the response is the HTTP/2 `200` whose
//! `grpc-status` and `grpc-message` trailers are shown as headers, its message (or its decoded
//! `grpc-status-details-bin`) as JSON in the body.

use std::time::Duration;

use prost_reflect::MethodDescriptor;
use serde_json::{json, Value};

use crate::engine::{CheckContext, FailInfo, Failure};
use crate::grpc::call::{CallError, Details, Reply};
use crate::grpc::reflection::{self, Reflected};
use crate::grpc::{self, code_name, Channel};
use crate::outcome::{Exchange, RecordedRequest, RecordedResponse};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each reflection question's bound.
pub const REFLECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call without a deadline may take before the grader calls it hung.
pub const CALL_WAIT: Duration = Duration::from_secs(10);

/// The standard health service (gRPC's "GRPC Health Checking Protocol").
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// `127.0.0.1:port` of the service.
pub fn address(ctx: &CheckContext<'_>) -> String {
    let url = &ctx.service.base_url;
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(80)
    )
}

/// A channel to the service; no connection is the service's failure.
pub async fn connect(ctx: &CheckContext<'_>) -> Result<Channel, Failure> {
    let address = address(ctx);
    match grpc::connect(&address, CONNECT_TIMEOUT).await {
        Ok(channel) => Ok(channel),
        Err(why) => Err(ctx
            .transport_failure("connecting", &format!("a gRPC call to {address}"), why)
            .await),
    }
}

/// What reflection says about `service` (a full name). The grader finds every method there, so a
/// service without reflection cannot be called: that is its failure (task 1), said as such.
pub async fn reflect(channel: &Channel, service: &str) -> Result<Reflected, Failure> {
    reflection::reflect(channel, service, REFLECTION_TIMEOUT)
        .await
        .map_err(|e| {
            Failure::Fail(FailInfo {
                message: format!(
                    "the grader asks your service what it serves through server reflection before it calls it, and {e}"
                ),
                expected: format!(
                    "grpc.reflection.v1.ServerReflection (or v1alpha) describing {service}"
                ),
                actual: e.to_string(),
                evidence: vec![format!(
                    "asked grpc.reflection.v1.ServerReflection (then v1alpha, if v1 answered UNIMPLEMENTED) for the services and for the files of {service}, each question within {}",
                    crate::runtime::seconds(REFLECTION_TIMEOUT)
                )],
                ..Default::default()
            })
        })
}

/// The method `package.Service/Method` as reflection describes it (the standard health
/// service's come from [`health_method`]: the exercises ask reflection to list it, not to
/// describe it).
pub fn method(reflected: &Reflected, full: &str) -> Result<MethodDescriptor, Failure> {
    let (service, name) = full
        .rsplit_once('/')
        .ok_or_else(|| Failure::Error(format!("{full:?} is not package.Service/Method")))?;
    let found = reflected
        .pool
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == name));
    found.ok_or_else(|| {
        Failure::Fail(FailInfo {
            message: format!("server reflection describes no method {full}"),
            expected: format!("{full}, as the exercise's .proto defines it"),
            actual: match reflected.pool.get_service_by_name(service) {
                Some(s) => format!(
                    "{service} has the methods {}",
                    s.methods()
                        .map(|m| m.name().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!("no service {service} in the files reflection sent"),
            },
            evidence: vec![format!(
                "reflection sent the files {}, defining the services {}",
                reflected
                    .pool
                    .files()
                    .map(|f| f.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                reflected
                    .pool
                    .services()
                    .map(|s| s.full_name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
            ..Default::default()
        })
    })
}

/// A method of the standard health service (`grpc.health.v1.Health/Check`), from the grader's
/// own copy of `health.proto`.
pub fn health_method(full: &str) -> Result<MethodDescriptor, Failure> {
    let name = full.rsplit_once('/').map_or(full, |(_, n)| n);
    let pool = prost_reflect::DescriptorPool::decode(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .map_err(|e| Failure::Error(format!("the grader's health.proto: {e}")))?;
    pool.get_service_by_name(HEALTH_SERVICE)
        .and_then(|s| s.methods().find(|m| m.name() == name))
        .ok_or_else(|| Failure::Error(format!("{full}: no such method in health.proto")))
}

/// The call as a `grpcurl` command (the tool most gRPC tutorials use); `-max-time` sends the
/// same `grpc-timeout`.
pub fn grpcurl(
    address: &str,
    method: &str,
    request: &Value,
    metadata: &[(String, String)],
    deadline: Option<Duration>,
) -> String {
    let q = |s: &str| {
        shlex::try_quote(s)
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| format!("{s:?}"))
    };
    let mut parts = vec!["grpcurl -plaintext".to_string()];
    for (key, value) in metadata {
        parts.push(format!("-H {}", q(&format!("{key}: {value}"))));
    }
    if let Some(deadline) = deadline {
        parts.push(format!("-max-time {:.3}", deadline.as_secs_f64()));
    }
    parts.push(format!("-d {}", q(&request.to_string())));
    parts.push(address.to_string());
    parts.push(method.to_string());
    parts.join(" ")
}

/// One call to record: what was sent.
pub struct Sent<'a> {
    pub step: &'a str,
    pub method: &'a str,
    pub request: &'a Value,
    pub metadata: &'a [(String, String)],
    pub deadline: Option<Duration>,
}

/// Records a unary call (or a stream's first message and status) as an exchange.
pub fn record(
    ctx: &mut CheckContext<'_>,
    sent: &Sent<'_>,
    result: &Result<Reply, CallError>,
) -> usize {
    let address = address(ctx);
    let mut headers: Vec<(String, String)> = vec![
        ("content-type".into(), "application/grpc".into()),
        ("te".into(), "trailers".into()),
    ];
    headers.extend(sent.metadata.iter().cloned());
    if let Some(deadline) = sent.deadline {
        headers.push(("grpc-timeout".into(), format!("{}m", deadline.as_millis())));
    }
    let request = RecordedRequest {
        method: "POST".into(),
        url: format!("http://{address}/{}", sent.method),
        headers,
        body: Some(sent.request.to_string()),
        token: None,
    };
    let (response, transport_error) = match result {
        Ok(reply) => (Some(recorded_reply(reply)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    ctx.exchanges.push(Exchange {
        step: sent.step.to_string(),
        request,
        curl: grpcurl(
            &address,
            sent.method,
            sent.request,
            sent.metadata,
            sent.deadline,
        ),
        response,
        transport_error,
    });
    ctx.exchanges.len() - 1
}

/// The reply as a recorded response: status and message as the trailers carry them, and the
/// message or the decoded details as the body.
pub fn recorded_reply(reply: &Reply) -> RecordedResponse {
    let mut headers = vec![(
        "grpc-status".to_string(),
        format!("{} ({})", reply.code as i32, code_name(reply.code)),
    )];
    if !reply.message.is_empty() {
        headers.push(("grpc-message".into(), reply.message.clone()));
    }
    let body = match (&reply.response, &reply.details) {
        (Some(message), _) => serde_json::to_string_pretty(message).unwrap_or_default(),
        (None, Details::Absent) => String::new(),
        (None, details) => {
            headers.push((
                "grpc-status-details-bin".into(),
                "(decoded below)".to_string(),
            ));
            serde_json::to_string_pretty(&details_json(details)).unwrap_or_default()
        }
    };
    // A stream's messages can be many: shown as far as any response body is.
    let shown: String = body
        .chars()
        .take(crate::engine::http::MAX_SHOWN_BODY_CHARS)
        .collect();
    RecordedResponse {
        status: 200,
        headers,
        body_bytes: body.len() as u64,
        body_truncated: shown.len() < body.len(),
        body: shown,
    }
}

/// The details trailer as JSON, for the report and for messages.
pub fn details_json(details: &Details) -> Value {
    match details {
        Details::Absent => Value::Null,
        Details::Undecodable(why) => json!({ "undecodable": why }),
        Details::Status {
            code,
            message,
            type_urls,
            field_violations,
        } => json!({
            "code": code,
            "message": message,
            "details": type_urls,
            "field_violations": field_violations.as_ref().map(|v| v
                .iter()
                .map(|(field, description)| json!({ "field": field, "description": description }))
                .collect::<Vec<_>>()),
        }),
    }
}

/// The failure of a call that got no status: no answer or a broken connection (the service's,
/// with its log tail, and its exit when it died), a response that is not the method's message
/// (the service's), or a request the grader could not build (the exercise's error).
pub async fn call_failure(
    ctx: &CheckContext<'_>,
    step: &str,
    method: &str,
    e: CallError,
) -> Failure {
    match e {
        CallError::Request(why) => Failure::Error(format!("{step}: {why}")),
        CallError::BadResponse(why) => Failure::Fail(FailInfo {
            message: format!("{step}: {why}"),
            expected: format!("a valid response message of {method}"),
            actual: why,
            ..Default::default()
        }),
        e @ (CallError::NoAnswer(_) | CallError::Transport(_)) => {
            ctx.transport_failure(step, method, e.to_string()).await
        }
    }
}
