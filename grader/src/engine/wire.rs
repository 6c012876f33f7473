//! The wire as it is, for what the pooled client ([`super::http`]) cannot see:
//!
//! - [`exchange_raw`]: one request on a fresh socket, every byte the service sends back read as
//!   it came. An HTTP client drops a body that follows a HEAD, 204 or 304 response (the framing
//!   rules say there is none), so a service that sends one looks correct to it, and the stray
//!   bytes poison the next response on the connection. Framing checks (`expect.no_body`) read the
//!   socket instead and name what was on it.
//! - [`Held`]: a connection opened (and warmed with one request) before a burst, so that a
//!   concurrency probe releases every request at once on an open connection instead of racing
//!   TCP handshakes and thread start-up; that is when check-then-insert races show.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use super::http::{curl_command, OutgoingRequest, Response, Sent, MAX_BODY_BYTES};
use crate::outcome::Exchange;

/// How long the socket may stay quiet after a complete head before the grader stops reading: a
/// service that keeps the connection open (ignoring `Connection: close`) still gets its stray
/// bytes seen if it sends them promptly.
const QUIET_AFTER_HEAD: Duration = Duration::from_millis(400);
/// The most bytes read from one raw exchange.
const MAX_RAW_BYTES: usize = 64 * 1024;

/// A response read off the socket: its head parsed, and every byte that followed the head.
pub struct RawResponse {
    /// Status and headers; `body` holds the bytes after the head, whatever the framing says.
    pub response: Response,
    /// The head as sent, for the report.
    pub head: String,
}

/// Sends `req` on a new connection (with `Connection: close`) and reads until the service closes
/// it, goes quiet after the head, or `timeout` passes.
pub async fn exchange_raw(req: &OutgoingRequest, timeout: Duration) -> Result<RawResponse, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = tcp_connect(&req.url, timeout).await?;
    stream
        .write_all(&request_bytes(req))
        .await
        .map_err(|e| format!("could not send the request: {e}"))?;

    let mut data: Vec<u8> = Vec::new();
    let mut head_end: Option<usize> = None;
    let mut buf = [0u8; 8192];
    loop {
        let now = Instant::now();
        if now >= deadline {
            if head_end.is_some() {
                break;
            }
            return Err(format!(
                "no complete response head within {}s",
                timeout.as_secs()
            ));
        }
        let wait = match head_end {
            Some(_) => QUIET_AFTER_HEAD.min(deadline - now),
            None => deadline - now,
        };
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Err(_) if head_end.is_some() => break, // quiet after the head: done
            Err(_) => continue,                    // the deadline check above decides
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                data.extend_from_slice(&buf[..n]);
                if head_end.is_none() {
                    head_end = find_head_end(&data);
                }
                if data.len() >= MAX_RAW_BYTES {
                    break;
                }
            }
            Ok(Err(e)) if head_end.is_some() => {
                // A reset after the head still leaves what was sent readable above.
                let _ = e;
                break;
            }
            Ok(Err(e)) => return Err(format!("the connection broke before a response: {e}")),
        }
    }
    let Some(end) = head_end else {
        return Err(if data.is_empty() {
            "the service closed the connection without a response".into()
        } else {
            format!(
                "the service sent {} bytes that are not an HTTP response head: {:?}",
                data.len(),
                String::from_utf8_lossy(&data[..data.len().min(80)])
            )
        });
    };
    parse_head(&data[..end], data[end..].to_vec())
}

/// The request as bytes: the target as the client would send it, `Host`, the step's headers, a
/// `Content-Length` for a body, and `Connection: close`.
fn request_bytes(req: &OutgoingRequest) -> Vec<u8> {
    let mut target = req.url.path().to_string();
    if let Some(q) = req.url.query() {
        target.push('?');
        target.push_str(q);
    }
    let host = match req.url.port() {
        Some(p) => format!("{}:{p}", req.url.host_str().unwrap_or("127.0.0.1")),
        None => req.url.host_str().unwrap_or("127.0.0.1").to_string(),
    };
    let mut out = format!("{} {target} HTTP/1.1\r\nHost: {host}\r\n", req.method);
    for (k, v) in &req.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = &req.body {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    if let Some(body) = &req.body {
        bytes.extend_from_slice(body);
    }
    bytes
}

fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn parse_head(head: &[u8], after: Vec<u8>) -> Result<RawResponse, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("the response head is incomplete".into()),
        Err(e) => {
            return Err(format!(
                "the response head is not valid HTTP ({e}): {:?}",
                String::from_utf8_lossy(&head[..head.len().min(120)])
            ))
        }
    }
    let status = parsed.code.ok_or("the response has no status code")?;
    let mut map = reqwest::header::HeaderMap::new();
    for h in parsed.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(h.name.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    Ok(RawResponse {
        response: Response {
            status,
            headers: map,
            body: after,
            truncated: false,
        },
        head: String::from_utf8_lossy(head).trim_end().to_string(),
    })
}

/// A connection to the service opened ahead of time, for one request of a burst.
pub struct Held {
    sender: SendRequest<Full<Bytes>>,
    /// Whether a warm-up request went through on this very connection.
    pub warm: bool,
}

impl Held {
    /// Opens a connection to `base` and sends `GET warm_path` on it, so that the service has
    /// accepted it and is ready on it. When the service closes the connection after the warm-up
    /// (HTTP/1.0 style), a fresh connection is opened instead, still ahead of the burst.
    pub async fn open(base: &Url, warm_path: &str, timeout: Duration) -> Result<Held, String> {
        let mut held = Held {
            sender: connect(base, timeout).await?,
            warm: false,
        };
        let mut warm_url = base.clone();
        warm_url.set_path(warm_path);
        let warm = OutgoingRequest {
            method: "GET".into(),
            url: warm_url,
            headers: Vec::new(),
            body: None,
        };
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, held.send_inner(warm)).await {
            if held.sender.ready().await.is_ok() && !held.sender.is_closed() {
                held.warm = true;
                return Ok(held);
            }
        }
        held.sender = connect(base, timeout).await?;
        Ok(held)
    }

    /// Sends the request on this connection and records the exchange like [`super::http`] does.
    pub async fn send(mut self, step: &str, req: OutgoingRequest, timeout: Duration) -> Sent {
        self.send_on(step, req, timeout).await
    }

    /// Like [`Held::send`], keeping the connection for the next request (a sequence sent back to
    /// back on one warm connection, e.g. attempts against a rate limit).
    pub async fn send_on(&mut self, step: &str, req: OutgoingRequest, timeout: Duration) -> Sent {
        let recorded = super::http::record_request(&req);
        let curl = curl_command(&req);
        let response = match tokio::time::timeout(timeout, self.send_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no complete response within {}s (the service may be hanging, or streaming a body slowly)",
                timeout.as_secs()
            )),
        };
        let exchange = Exchange {
            step: step.to_string(),
            request: recorded,
            curl,
            response: response.as_ref().ok().map(super::http::record_response),
            transport_error: response.as_ref().err().cloned(),
        };
        Sent { exchange, response }
    }

    /// Whether the service closed this connection (after `Connection: close`, or idle).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    async fn send_inner(&mut self, req: OutgoingRequest) -> Result<Response, String> {
        let mut target = req.url.path().to_string();
        if let Some(q) = req.url.query() {
            target.push('?');
            target.push_str(q);
        }
        let mut builder = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(target)
            .header(
                "host",
                format!(
                    "{}:{}",
                    req.url.host_str().unwrap_or("127.0.0.1"),
                    req.url.port_or_known_default().unwrap_or(80)
                ),
            );
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body.unwrap_or_default())))
            .map_err(|e| format!("the request could not be built: {e}"))?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("the connection closed before the request: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("the request failed: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body_stream = response.into_body();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(frame) = body_stream.frame().await {
            let frame = frame.map_err(|e| {
                format!(
                    "the response body broke off after {} bytes: {e} (a wrong Content-Length, or the service crashed mid-response)",
                    body.len()
                )
            })?;
            if let Some(chunk) = frame.data_ref() {
                let room = MAX_BODY_BYTES - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(chunk);
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

/// A TCP connection to the URL's host and port, bounded by `timeout`.
async fn tcp_connect(url: &Url, timeout: Duration) -> Result<TcpStream, String> {
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| {
            format!(
                "could not connect to {host}:{port} within {}s",
                timeout.as_secs()
            )
        })?
        .map_err(|e| format!("could not connect to {host}:{port}: {e}"))
}

async fn connect(base: &Url, timeout: Duration) -> Result<SendRequest<Full<Bytes>>, String> {
    let host = base.host_str().unwrap_or("127.0.0.1").to_string();
    let port = base.port_or_known_default().unwrap_or(80);
    let stream = tcp_connect(base, timeout).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("could not open HTTP/1.1 on {host}:{port}: {e}"))?;
    // The connection task ends when the sender is dropped or the service closes the socket.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-shot server that answers with exactly these bytes and closes.
    async fn serve_bytes(reply: &'static [u8]) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
        });
        Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap()
    }

    fn head_request(url: Url) -> OutgoingRequest {
        OutgoingRequest {
            method: "HEAD".into(),
            url,
            headers: vec![],
            body: None,
        }
    }

    #[tokio::test]
    async fn bytes_after_a_head_response_are_seen() {
        let url = serve_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}").await;
        let raw = exchange_raw(&head_request(url), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(raw.response.status, 200);
        assert_eq!(raw.response.body, b"{\"a\":1}");
        assert_eq!(raw.response.header("content-length").as_deref(), Some("7"));
    }

    #[tokio::test]
    async fn a_correct_head_response_has_nothing_after_it() {
        let url = serve_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n").await;
        let raw = exchange_raw(&head_request(url), Duration::from_secs(2))
            .await
            .unwrap();
        assert!(raw.response.body.is_empty());
        assert!(raw.head.starts_with("HTTP/1.1 200 OK"));
    }

    #[tokio::test]
    async fn garbage_is_named_not_parsed() {
        let url = serve_bytes(b"hello there\r\n\r\n").await;
        let err = exchange_raw(&head_request(url), Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert!(err.contains("not valid HTTP"), "{err}");
    }

    #[test]
    fn the_request_is_framed_with_its_body_length_and_close() {
        let req = OutgoingRequest {
            method: "PUT".into(),
            url: Url::parse("http://127.0.0.1:9/p?q=1").unwrap(),
            headers: vec![("X-A".into(), "b".into())],
            body: Some(b"{}".to_vec()),
        };
        let text = String::from_utf8(request_bytes(&req)).unwrap();
        assert_eq!(
            text,
            "PUT /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-A: b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }
}
