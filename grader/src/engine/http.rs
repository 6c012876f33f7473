//! The grader's HTTP client: sends one request, reads a bounded response, and records the
//! exchange (with a runnable curl command) for the report.
//!
//! The service is untrusted: it may hang, close the connection, lie about Content-Length or send
//! 100 MB. Every request has a timeout, bodies are read up to a cap, and every transport problem
//! becomes a sentence the learner can act on, never a panic.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method};
use url::Url;

use crate::outcome::{DecodedToken, Exchange, RecordedRequest, RecordedResponse};

/// The most body bytes the grader reads; anything beyond is dropped (and said so).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The most body characters kept in a report.
pub const MAX_SHOWN_BODY_CHARS: usize = 4000;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct HttpClient {
    client: Client,
    timeout: Duration,
}

/// A request about to be sent.
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub method: String,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A response as read (bounded).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The service sent more than [`MAX_BODY_BYTES`].
    pub truncated: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<String> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// A response built in a unit test: `headers` as (name, value) pairs.
    #[cfg(test)]
    pub fn for_test(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
                HeaderValue::from_str(v).expect("a header value"),
            );
        }
        Response {
            status,
            headers: map,
            body: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The outcome of one send: always a recorded exchange, plus the response if one arrived.
pub struct Sent {
    pub exchange: Exchange,
    pub response: Result<Response, String>,
}

impl HttpClient {
    pub fn new() -> Result<HttpClient, String> {
        let client = Client::builder()
            // The service runs on loopback; a proxy from the environment would only get in the way.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            // A fresh connection for every request. A service may close a keep-alive connection
            // whenever it likes (RFC 9112 §9.3), and does after a 413 it answered without reading
            // the body: a pooled client then writes the next request into a closed socket and
            // reports "broken pipe" for a request the service never saw, a failure that is the
            // grader's, not the service's. Loopback handshakes cost microseconds; bursts that need
            // open connections hold their own (`wire::Held`).
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        Ok(HttpClient {
            client,
            timeout: REQUEST_TIMEOUT,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request and reads at most [`MAX_BODY_BYTES`] of the response, all within the
    /// request timeout. `step` names the exchange in the report.
    pub async fn send(&self, step: &str, req: OutgoingRequest) -> Sent {
        let recorded = record_request(&req);
        let curl = curl_command(&req);
        let response = match tokio::time::timeout(self.timeout, self.send_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no complete response within {}s (the service may be hanging, or streaming a body slowly)",
                self.timeout.as_secs()
            )),
        };
        let exchange = Exchange {
            step: step.to_string(),
            request: recorded,
            curl,
            response: response.as_ref().ok().map(record_response),
            transport_error: response.as_ref().err().cloned(),
        };
        Sent { exchange, response }
    }

    async fn send_inner(&self, req: OutgoingRequest) -> Result<Response, String> {
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| format!("\"{}\" is not a valid HTTP method", req.method))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name {k:?}"))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| format!("invalid value for header {k}"))?;
            headers.append(name, value);
        }
        let mut builder = self
            .client
            .request(method, req.url.clone())
            .headers(headers);
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let mut resp = builder
            .send()
            .await
            .map_err(|e| describe_error(&e, &req.url))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY_BYTES - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break; // dropping `resp` closes the connection
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(format!(
                        "the response body broke off after {} bytes: {} (a wrong Content-Length, or the service crashed mid-response)",
                        body.len(),
                        error_chain(&e)
                    ))
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
            truncated,
        })
    }
}

fn describe_error(e: &reqwest::Error, url: &Url) -> String {
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(0)
    );
    if e.is_connect() {
        format!("could not connect to {addr}: {}", error_chain(e))
    } else if e.is_timeout() {
        "no response within the request timeout".to_string()
    } else {
        format!("the request failed: {}", error_chain(e))
    }
}

/// reqwest's Display hides the cause ("error sending request"); the chain says what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The request as the report shows it.
pub(crate) fn record_request(req: &OutgoingRequest) -> RecordedRequest {
    RecordedRequest {
        method: req.method.clone(),
        url: req.url.to_string(),
        headers: req.headers.clone(),
        body: req
            .body
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        token: req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| decode_bearer(v)),
    }
}

/// `Bearer <compact JWS>` decoded: its JOSE header (a JSON object) and claims. `None` for any
/// other credential, or a token whose header is not base64url JSON.
pub fn decode_bearer(authorization: &str) -> Option<DecodedToken> {
    use base64::Engine as _;
    let value = authorization.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [header, claims, _signature] = parts.as_slice() else {
        return None;
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()
    };
    let header: serde_json::Value = serde_json::from_slice(&decode(header)?).ok()?;
    if !header.is_object() {
        return None;
    }
    let claims = decode(claims)?;
    let claims = serde_json::from_slice(&claims)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&claims).into()));
    Some(DecodedToken { header, claims })
}

pub fn record_response(r: &Response) -> RecordedResponse {
    let text = r.text();
    let shown: String = text.chars().take(MAX_SHOWN_BODY_CHARS).collect();
    let cut = shown.len() < text.len();
    RecordedResponse {
        status: r.status,
        headers: r
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: shown,
        body_bytes: r.body.len() as u64,
        body_truncated: r.truncated || cut,
    }
}

/// The request as a curl command a learner can paste into a shell.
pub fn curl_command(req: &OutgoingRequest) -> String {
    let q = |s: &str| {
        shlex::try_quote(s)
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| format!("'{}'", s.replace('\0', "\\0")))
    };
    let mut parts = vec!["curl".to_string(), "-i".to_string()];
    match req.method.as_str() {
        "HEAD" => parts[1] = "-I".to_string(),
        "GET" => {}
        m => {
            parts.push("-X".into());
            parts.push(m.to_string());
        }
    }
    parts.push(q(req.url.as_str()));
    for (k, v) in &req.headers {
        parts.push("-H".into());
        parts.push(q(&format!("{k}: {v}")));
    }
    if let Some(body) = &req.body {
        match std::str::from_utf8(body) {
            Ok(text) if !text.contains('\0') && text.len() <= 2000 => {
                parts.push("--data-raw".into());
                parts.push(q(text));
            }
            _ => {
                // Bodies that do not survive a shell argument (NUL, invalid UTF-8, huge) are
                // written with printf escapes so the command still reproduces them exactly.
                let escaped: String = body
                    .iter()
                    .take(4096)
                    .map(|b| format!("\\x{b:02x}"))
                    .collect();
                let note = if body.len() > 4096 {
                    " # body cut to 4096 bytes"
                } else {
                    ""
                };
                return format!(
                    "printf '{escaped}' | {} --data-binary @-{note}",
                    parts.join(" ")
                );
            }
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, body: Option<&[u8]>) -> OutgoingRequest {
        OutgoingRequest {
            method: method.into(),
            url: Url::parse("http://127.0.0.1:8080/products").unwrap(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.map(|b| b.to_vec()),
        }
    }

    #[test]
    fn curl_commands_are_runnable() {
        assert_eq!(
            curl_command(&req("POST", Some(br#"{"name": "it's"}"#))),
            r#"curl -i -X POST http://127.0.0.1:8080/products -H 'Content-Type: application/json' --data-raw "{\"name\": \"it's\"}""#
        );
        assert_eq!(
            curl_command(&req("HEAD", None)),
            "curl -I http://127.0.0.1:8080/products -H 'Content-Type: application/json'"
        );
        let nul = curl_command(&req("POST", Some(b"a\0b")));
        assert!(nul.starts_with("printf '\\x61\\x00\\x62' | curl"), "{nul}");
    }

    #[test]
    fn bearer_tokens_are_decoded_for_the_report() {
        // {"alg":"RS256","kid":"k1","typ":"JWT"} . {"sub":"amber","roles":["admin"]} . sig
        let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbWJlciIsInJvbGVzIjpbImFkbWluIl19.c2ln";
        let mut r = req("GET", None);
        r.headers
            .push(("Authorization".into(), format!("Bearer {token}")));
        let decoded = record_request(&r).token.unwrap();
        assert_eq!(decoded.header["kid"], "k1");
        assert_eq!(
            decoded.claims,
            serde_json::json!({"sub": "amber", "roles": ["admin"]})
        );
        // alg none: an empty signature still decodes.
        let none = decode_bearer("bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.").unwrap();
        assert_eq!(none.header["alg"], "none");
        assert!(record_request(&req("GET", None)).token.is_none());
        assert!(decode_bearer("Basic YTpi").is_none());
        assert!(decode_bearer("Bearer not-a-jwt").is_none());
        assert!(decode_bearer("Bearer a.b.c").is_none());
    }
}
