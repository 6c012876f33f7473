//! Calls built from JSON: a unary call, and a server stream read at the grader's pace.
//!
//! Requests are the canonical proto3 JSON of the method's input (int64 as a number or a string).
//! Responses are shown as proto3 JSON with the `.proto`'s own field names, default values
//! included and 64-bit integers as numbers, so that an exercise compares them with what its SQL
//! reads (a `bigint` id) without caring how the service's language renders an empty string.

use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::{DynamicMessage, MethodDescriptor, SerializeOptions};
use serde_json::Value;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::Code;

use super::codec::DynamicCodec;
use super::{code_name, error_chain, Channel};

/// What the service answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: Code,
    pub message: String,
    /// The response message, when the code is `OK`.
    pub response: Option<Value>,
    pub details: Details,
    /// From sending the request to the status.
    pub elapsed: Duration,
}

impl Reply {
    /// `NOT_FOUND "no order 42"`, the status as the exercises' READMEs write it.
    pub fn status_line(&self) -> String {
        if self.message.is_empty() {
            code_name(self.code).to_string()
        } else {
            format!("{} {:?}", code_name(self.code), self.message)
        }
    }
}

/// The `grpc-status-details-bin` trailer: a `google.rpc.Status` (AIP-193).
#[derive(Debug, Clone, PartialEq)]
pub enum Details {
    Absent,
    Status {
        code: i32,
        message: String,
        /// Each detail's type URL, in order (`type.googleapis.com/google.rpc.BadRequest`).
        type_urls: Vec<String>,
        /// The first `google.rpc.BadRequest` detail's violations, as (field, description).
        field_violations: Option<Vec<(String, String)>>,
    },
    /// Present, but not a `google.rpc.Status`.
    Undecodable(String),
}

/// Why a call has no reply to judge.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The exercise's request does not fit the method: an author's mistake, not the service's.
    Request(String),
    /// The service sent nothing back within the wait (it hung, or ignored the deadline and is
    /// still working).
    NoAnswer(Duration),
    /// The connection failed: tonic's transport, not a status the service sent.
    Transport(String),
    /// `OK` with bytes that are not a valid message of the method's output type.
    BadResponse(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Request(why) => write!(f, "the grader could not build the request: {why}"),
            CallError::NoAnswer(wait) => {
                write!(f, "no answer within {}", humantime::format_duration(*wait))
            }
            CallError::Transport(why) => write!(f, "the connection failed: {why}"),
            CallError::BadResponse(why) => f.write_str(why),
        }
    }
}

/// A call's request: the method, its input as JSON, metadata and an optional deadline.
#[derive(Debug, Clone)]
pub struct CallSpec<'a> {
    pub method: &'a MethodDescriptor,
    pub request: &'a Value,
    /// ASCII metadata (`authorization: Bearer ...`); keys are lowercase.
    pub metadata: &'a [(String, String)],
    /// Sent as `grpc-timeout`; tonic does not enforce it, so the server's answer is judged.
    pub deadline: Option<Duration>,
}

impl CallSpec<'_> {
    fn build(&self) -> Result<(tonic::Request<DynamicMessage>, PathAndQuery), CallError> {
        let message = DynamicMessage::deserialize(self.method.input(), self.request.clone())
            .map_err(|e| {
                CallError::Request(format!(
                    "{} is not a {}: {e}",
                    self.request,
                    self.method.input().full_name()
                ))
            })?;
        let mut request = tonic::Request::new(message);
        for (key, value) in self.metadata {
            let name = MetadataKey::from_str(key)
                .map_err(|e| CallError::Request(format!("metadata key {key:?}: {e}")))?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|e| CallError::Request(format!("metadata {key}: {e}")))?;
            request.metadata_mut().insert(name, value);
        }
        if let Some(deadline) = self.deadline {
            request.set_timeout(deadline);
        }
        Ok((request, path(self.method)?))
    }
}

/// `/package.Service/Method`.
fn path(method: &MethodDescriptor) -> Result<PathAndQuery, CallError> {
    let text = format!("/{}/{}", method.parent_service().full_name(), method.name());
    PathAndQuery::from_str(&text).map_err(|e| CallError::Request(format!("{text}: {e}")))
}

/// Makes a unary call and waits at most `wait` for its status.
pub async fn unary(
    channel: &Channel,
    spec: &CallSpec<'_>,
    wait: Duration,
) -> Result<Reply, CallError> {
    let (request, path) = spec.build()?;
    let mut grpc = channel.grpc();
    let started = Instant::now();
    let exchange = async {
        grpc.ready()
            .await
            .map_err(|e| CallError::Transport(error_chain(&*e)))?;
        Ok::<_, CallError>(grpc.unary(request, path, DynamicCodec).await)
    };
    let result = match tokio::time::timeout(wait, exchange).await {
        Err(_) => return Err(CallError::NoAnswer(wait)),
        Ok(result) => result?,
    };
    let elapsed = started.elapsed();
    match result {
        Ok(response) => {
            let bytes = response.into_inner();
            Ok(Reply {
                code: Code::Ok,
                message: String::new(),
                response: Some(decode_json(spec.method, bytes)?),
                details: Details::Absent,
                elapsed,
            })
        }
        Err(status) => from_status(status, elapsed),
    }
}

/// A status the service sent, or a transport failure tonic reports as a status (it carries the
/// transport error as its source).
fn from_status(status: tonic::Status, elapsed: Duration) -> Result<Reply, CallError> {
    if let Some(source) = std::error::Error::source(&status) {
        return Err(CallError::Transport(format!(
            "{}: {}",
            status.message(),
            error_chain(source)
        )));
    }
    Ok(Reply {
        code: status.code(),
        message: status.message().to_string(),
        response: None,
        details: details(&status),
        elapsed,
    })
}

fn details(status: &tonic::Status) -> Details {
    use tonic_types::StatusExt;
    let raw = status.details();
    if raw.is_empty() {
        return Details::Absent;
    }
    match tonic_types::pb::Status::decode(raw) {
        Err(e) => Details::Undecodable(format!(
            "grpc-status-details-bin is not a google.rpc.Status: {e}"
        )),
        Ok(decoded) => Details::Status {
            code: decoded.code,
            message: decoded.message.clone(),
            type_urls: decoded.details.iter().map(|a| a.type_url.clone()).collect(),
            field_violations: status.get_details_bad_request().map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|v| (v.field, v.description))
                    .collect()
            }),
        },
    }
}

fn decode_json(method: &MethodDescriptor, bytes: Bytes) -> Result<Value, CallError> {
    let message = DynamicMessage::decode(method.output(), bytes).map_err(|e| {
        CallError::BadResponse(format!(
            "the response is not a valid {}: {e}",
            method.output().full_name()
        ))
    })?;
    to_json(&message)
}

/// A message as the exercises compare it: see the module doc.
pub fn to_json(message: &DynamicMessage) -> Result<Value, CallError> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| CallError::BadResponse(format!("the response has no JSON form: {e}")))
}

/// How a paced stream went.
#[derive(Debug, Clone, PartialEq)]
pub struct PacedStream {
    /// The messages read, in order.
    pub received: Vec<Value>,
    /// The status, when the stream ended before the grader cancelled it.
    pub ended: Option<Reply>,
    /// From the request to the cancellation (or the end).
    pub elapsed: Duration,
}

/// Opens a server stream, reads up to `read` messages, then reads nothing for `pause` (the
/// client's HTTP/2 window fills and the server's writes must wait), then cancels the call by
/// dropping it (tonic sends `RST_STREAM` with `CANCEL`). Each message must come within `wait`.
pub async fn paced_server_stream(
    channel: &Channel,
    spec: &CallSpec<'_>,
    read: usize,
    pause: Duration,
    wait: Duration,
) -> Result<PacedStream, CallError> {
    let (request, path) = spec.build()?;
    let mut grpc = channel.grpc();
    let started = Instant::now();
    let opened = async {
        grpc.ready()
            .await
            .map_err(|e| CallError::Transport(error_chain(&*e)))?;
        Ok::<_, CallError>(grpc.server_streaming(request, path, DynamicCodec).await)
    };
    let mut stream = match tokio::time::timeout(wait, opened).await {
        Err(_) => return Err(CallError::NoAnswer(wait)),
        Ok(opened) => match opened? {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return Ok(PacedStream {
                    received: Vec::new(),
                    ended: Some(from_status(status, started.elapsed())?),
                    elapsed: started.elapsed(),
                })
            }
        },
    };
    let mut received = Vec::new();
    while received.len() < read {
        match tokio::time::timeout(wait, stream.message()).await {
            Err(_) => return Err(CallError::NoAnswer(wait)),
            Ok(Ok(Some(bytes))) => received.push(decode_json(spec.method, bytes)?),
            Ok(Ok(None)) => {
                let elapsed = started.elapsed();
                let ended = Reply {
                    code: Code::Ok,
                    message: String::new(),
                    response: None,
                    details: Details::Absent,
                    elapsed,
                };
                return Ok(PacedStream {
                    received,
                    ended: Some(ended),
                    elapsed,
                });
            }
            Ok(Err(status)) => {
                let elapsed = started.elapsed();
                return Ok(PacedStream {
                    received,
                    ended: Some(from_status(status, elapsed)?),
                    elapsed,
                });
            }
        }
    }
    tokio::time::sleep(pause).await;
    let elapsed = started.elapsed();
    drop(stream);
    Ok(PacedStream {
        received,
        ended: None,
        elapsed,
    })
}
