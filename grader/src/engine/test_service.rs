//! A service in a test: a loopback HTTP server whose every request is answered by a closure, so a
//! probe's test can stand up a right and a wrong implementation in a few lines.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// What the closure answers: a status, the response's headers and a JSON body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub json: Value,
}

impl Reply {
    pub fn json(status: u16, json: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            json,
        }
    }
}

/// Serves on 127.0.0.1 (a free port) until the test's runtime ends. The closure gets the method,
/// the path and the body as JSON (`null` when it is not JSON); `/healthz` answers 200 without it.
pub async fn serve<F, Fut>(answer: F) -> url::Url
where
    F: Fn(String, String, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let answer = answer.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let reply = if path == "/healthz" {
                                Reply::json(200, Value::Null)
                            } else {
                                let doc = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                answer(method, path, doc).await
                            };
                            let mut response = hyper::Response::builder().status(reply.status);
                            if !reply.headers.iter().any(|(n, _)| *n == "content-type") {
                                response = response.header("content-type", "application/json");
                            }
                            for (name, value) in reply.headers {
                                response = response.header(name, value);
                            }
                            Ok::<_, Infallible>(
                                response
                                    .body(Full::new(Bytes::from(reply.json.to_string())))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap()
}

/// A probe's test run: the grader's HTTP client and the test service at `base`.
pub struct Harness {
    http: crate::engine::http::HttpClient,
    service: crate::runtime::RunningService,
}

impl Harness {
    pub fn new(base: url::Url) -> Harness {
        Harness {
            http: crate::engine::http::HttpClient::new().unwrap(),
            service: crate::runtime::RunningService::external(base, "/healthz"),
        }
    }

    /// A check's context on the test service, with a fixed RNG and no variables or tokens.
    pub fn context<'a>(
        &'a self,
        scope: crate::spec::template::Scope,
        upstreams: &'a crate::upstream::Upstreams,
    ) -> crate::engine::CheckContext<'a> {
        use rand::SeedableRng;
        crate::engine::CheckContext {
            http: &self.http,
            service: &self.service,
            scope,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(1),
            exchanges: Vec::new(),
            vars: &[],
            tokens: crate::engine::tokens::CheckTokens {
                vars: &[],
                used: &[],
            },
            upstreams,
            measurements: Vec::new(),
        }
    }
}
