//! The grader's OpenTelemetry collector: a `kind = "otlp-collector"` upstream that takes OTLP
//! over HTTP at `/v1/traces` (binary protobuf or JSON, the two encodings the OTLP/HTTP spec
//! defines), decodes each export with the OpenTelemetry project's generated types, and keeps the
//! spans for the probes to read. `/v1/metrics` and `/v1/logs` are accepted and dropped, so an SDK
//! that exports all three signals to one endpoint gets no errors for the two the grader does not
//! read.
//!
//! Bounded like every mock: at most [`MAX_KEPT_SPANS`] spans (the oldest go first, counted), and
//! the last [`MAX_KEPT_REJECTIONS`] refused exports, whose reasons a failing check shows (a gzip
//! body, a gRPC client pointed at the HTTP port, JSON with hex ids in base64).

use std::collections::VecDeque;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// Spans kept for the probes.
pub const MAX_KEPT_SPANS: usize = 20_000;
/// Refused exports whose reasons are kept.
const MAX_KEPT_REJECTIONS: usize = 5;

/// The collector's fixed routes, as messages name them.
pub const TRACES_PATH: &str = "/v1/traces";
const IGNORED_PATHS: &[&str] = &["/v1/metrics", "/v1/logs"];

/// Span kinds as OTLP numbers them.
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;

/// An attribute value as exported.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Arrays, maps and bytes, shown as debug text.
    Other(String),
}

impl std::fmt::Display for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attribute::Str(s) => write!(f, "\"{s}\""),
            Attribute::Int(i) => write!(f, "{i}"),
            Attribute::Double(d) => write!(f, "{d} (a double)"),
            Attribute::Bool(b) => write!(f, "{b}"),
            Attribute::Other(o) => f.write_str(o),
        }
    }
}

/// One span as received, ids in lower-case hex (empty when absent).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: i32,
    pub attributes: Vec<(String, Attribute)>,
    /// `service.name` of the resource it came with.
    pub service_name: Option<String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "INTERNAL",
            KIND_SERVER => "SERVER",
            KIND_CLIENT => "CLIENT",
            4 => "PRODUCER",
            5 => "CONSUMER",
            _ => "UNSPECIFIED",
        }
    }

    /// One line for evidence: kind, name, ids and attributes.
    pub fn describe(&self) -> String {
        let attributes: Vec<String> = self
            .attributes
            .iter()
            .filter(|(k, _)| k.starts_with("http.") || k == "url.full")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{} span \"{}\" id {} parent {} [{}]",
            self.kind_name(),
            self.name,
            self.span_id,
            if self.parent_span_id.is_empty() {
                "(none)"
            } else {
                &self.parent_span_id
            },
            attributes.join(", ")
        )
    }
}

/// What the collector has received so far.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Export requests to `/v1/traces` that were decoded.
    pub exports: u64,
    /// Spans in them, kept or not.
    pub spans: u64,
    /// Why the last refused exports were refused.
    pub rejections: Vec<String>,
}

#[derive(Default)]
struct State {
    spans: VecDeque<ReceivedSpan>,
    received: Received,
}

#[derive(Default)]
pub struct Collector {
    state: Mutex<State>,
}

/// The collector's answer: status, content type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Collector {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one OTLP/HTTP request.
    pub fn export(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let media = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = media == "application/json";
        let refuse = |this: &Self, status: u16, why: String| {
            let mut state = this.lock();
            if state.received.rejections.len() == MAX_KEPT_REJECTIONS {
                state.received.rejections.remove(0);
            }
            state.received.rejections.push(why.clone());
            plain(status, why)
        };
        if method != "POST" {
            return refuse(
                self,
                405,
                format!("{method} {path}: OTLP/HTTP exports are POSTs"),
            );
        }
        if IGNORED_PATHS.contains(&path) {
            return ok(json);
        }
        if path != TRACES_PATH {
            return refuse(
                self,
                404,
                format!("POST {path}: the collector takes spans at {TRACES_PATH} (the SDK appends it to OTEL_EXPORTER_OTLP_ENDPOINT)"),
            );
        }
        if let Some(encoding) = content_encoding.filter(|e| !e.eq_ignore_ascii_case("identity")) {
            return refuse(
                self,
                415,
                format!("POST {path} with Content-Encoding: {encoding}: the grader's collector takes uncompressed bodies (OTEL_EXPORTER_OTLP_COMPRESSION=none)"),
            );
        }
        let decoded = match media.as_str() {
            "application/x-protobuf" => {
                ExportTraceServiceRequest::decode(body).map_err(|e| format!("{e}"))
            }
            "application/json" => {
                serde_json::from_slice::<ExportTraceServiceRequest>(body).map_err(|e| format!("{e}"))
            }
            "application/grpc" | "application/grpc+proto" => {
                return refuse(
                    self,
                    415,
                    format!("POST {path} as gRPC: the collector speaks OTLP over HTTP (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)"),
                )
            }
            other => {
                return refuse(
                    self,
                    415,
                    format!("POST {path} with Content-Type \"{other}\": OTLP/HTTP is application/x-protobuf or application/json"),
                )
            }
        };
        let request = match decoded {
            Ok(request) => request,
            Err(e) => {
                return refuse(
                    self,
                    400,
                    format!(
                        "POST {path}: the {} body is not an ExportTraceServiceRequest: {e}",
                        if json { "JSON" } else { "protobuf" }
                    ),
                )
            }
        };
        let spans = spans_of(request);
        let mut state = self.lock();
        state.received.exports += 1;
        state.received.spans += spans.len() as u64;
        for span in spans {
            if state.spans.len() == MAX_KEPT_SPANS {
                state.spans.pop_front();
            }
            state.spans.push_back(span);
        }
        drop(state);
        ok(json)
    }

    /// The kept spans of one trace (its id in lower-case hex), oldest first.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.lock()
            .spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    pub fn received(&self) -> Received {
        self.lock().received.clone()
    }
}

fn ok(json: bool) -> Answer {
    if json {
        Answer {
            status: 200,
            content_type: "application/json",
            body: b"{}".to_vec(),
        }
    } else {
        Answer {
            status: 200,
            content_type: "application/x-protobuf",
            body: ExportTraceServiceResponse::default().encode_to_vec(),
        }
    }
}

fn plain(status: u16, text: String) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: text.into_bytes(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(value: Option<&AnyValue>) -> Attribute {
    match value {
        Some(AnyValue::StringValue(s)) => Attribute::Str(s.clone()),
        Some(AnyValue::IntValue(i)) => Attribute::Int(*i),
        Some(AnyValue::DoubleValue(d)) => Attribute::Double(*d),
        Some(AnyValue::BoolValue(b)) => Attribute::Bool(*b),
        Some(other) => Attribute::Other(format!("{other:?}")),
        None => Attribute::Other("(empty)".into()),
    }
}

fn attributes(list: &[KeyValue]) -> Vec<(String, Attribute)> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                attribute(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans.resource.as_ref().and_then(|r| {
            attributes(&r.attributes)
                .into_iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| match v {
                    Attribute::Str(s) => s,
                    other => other.to_string(),
                })
        });
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                out.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue as AnyValueMessage;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValueMessage { value: Some(value) }),
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", AnyValue::StringValue("shipping".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        parent_span_id: vec![0x02; 8],
                        name: "GET /quotes".into(),
                        kind: KIND_SERVER,
                        attributes: vec![
                            kv("http.route", AnyValue::StringValue("/quotes".into())),
                            kv("http.response.status_code", AnyValue::IntValue(200)),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn protobuf_and_json_exports_are_decoded_alike() {
        let collector = Collector::default();
        let answer = collector.export(
            "POST",
            TRACES_PATH,
            Some("application/x-protobuf"),
            None,
            &request().encode_to_vec(),
        );
        assert_eq!(answer.status, 200);
        let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shipping"}}]},"scopeSpans":[{"spans":[{"traceId":"abababababababababababababababab","spanId":"0303030303030303","parentSpanId":"0101010101010101","name":"POST","kind":3,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000000000001,"attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}]}]}]}]}"#;
        let answer = collector.export(
            "POST",
            TRACES_PATH,
            Some("application/json"),
            None,
            json.as_bytes(),
        );
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.body, b"{}");
        let trace = collector.trace(&"ab".repeat(16));
        assert_eq!(trace.len(), 2);
        assert_eq!(trace[0].kind_name(), "SERVER");
        assert_eq!(trace[0].parent_span_id, "0202020202020202");
        assert_eq!(trace[0].service_name.as_deref(), Some("shipping"));
        assert_eq!(
            trace[0].attribute("http.response.status_code"),
            Some(&Attribute::Int(200))
        );
        assert_eq!(trace[1].kind_name(), "CLIENT");
        assert_eq!(trace[1].parent_span_id, "0101010101010101");
        assert_eq!(
            trace[1].attribute("http.response.status_code"),
            Some(&Attribute::Int(200))
        );
        assert_eq!(collector.received().exports, 2);
    }

    #[test]
    fn what_it_refuses_it_says_why() {
        let collector = Collector::default();
        let status = |ct: Option<&str>, enc: Option<&str>, path: &str, body: &[u8]| {
            collector.export("POST", path, ct, enc, body).status
        };
        assert_eq!(
            collector.export("GET", TRACES_PATH, None, None, b"").status,
            405
        );
        assert_eq!(
            status(
                Some("application/x-protobuf"),
                Some("gzip"),
                TRACES_PATH,
                b""
            ),
            415
        );
        assert_eq!(
            status(Some("application/grpc"), None, TRACES_PATH, b""),
            415
        );
        assert_eq!(status(Some("text/plain"), None, TRACES_PATH, b""), 415);
        assert_eq!(
            status(Some("application/json"), None, TRACES_PATH, b"[1]"),
            400
        );
        assert_eq!(
            status(Some("application/x-protobuf"), None, "/traces", b""),
            404
        );
        assert_eq!(
            status(Some("application/x-protobuf"), None, "/v1/metrics", b"junk"),
            200
        );
        let rejections = collector.received().rejections;
        assert_eq!(rejections.len(), MAX_KEPT_REJECTIONS);
        // Six refusals, five kept: the oldest (the GET) is gone.
        assert!(rejections[0].contains("gzip"), "{rejections:?}");
        assert!(rejections.last().unwrap().contains("/v1/traces"));
        assert_eq!(collector.received().exports, 0);
    }
}
