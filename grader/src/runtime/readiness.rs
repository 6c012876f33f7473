//! Is the service ready? One attempt at its readiness signal, the same for every runtime that
//! starts a service: `GET health_path` answering 2xx for an HTTP service, or the standard gRPC
//! health service's `Check` (service `""`, the whole server) answering `SERVING` for a gRPC one.

use std::time::Duration;

use crate::grpc;
use crate::grpc::health::Health;
use crate::manifest::{Protocol, ServicePlan};

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Ready,
    /// Something accepted the connection and answered, but not "ready": why, for the message.
    NotReady(String),
    /// Nothing accepted a connection (or the service did not answer): why.
    NoConnection(String),
}

/// How to ask one service whether it is ready.
pub struct Readiness {
    protocol: Protocol,
    /// `127.0.0.1:port`, from the service's base URL.
    address: String,
    health_url: String,
    health_path: String,
    client: reqwest::Client,
}

impl Readiness {
    pub fn new(plan: &ServicePlan, base_url: &url::Url) -> Result<Readiness, String> {
        Readiness::of(plan.protocol, &plan.health_path, base_url)
    }

    fn of(protocol: Protocol, health_path: &str, base_url: &url::Url) -> Result<Readiness, String> {
        let health_path = if health_path.starts_with('/') {
            health_path.to_string()
        } else {
            format!("/{health_path}")
        };
        let address = format!(
            "{}:{}",
            base_url.host_str().unwrap_or("127.0.0.1"),
            base_url.port_or_known_default().unwrap_or(80)
        );
        // The service is on loopback: a proxy from the environment must not get in the way, and
        // a redirect is not a healthy answer.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("could not build an HTTP client: {e}"))?;
        Ok(Readiness {
            protocol,
            health_url: format!("{}{health_path}", base_url.as_str().trim_end_matches('/')),
            health_path,
            address,
            client,
        })
    }

    /// What the grader waits for, for progress lines and messages: `2xx on /healthz`.
    pub fn awaited(&self) -> String {
        match self.protocol {
            Protocol::Http => format!("2xx on {}", self.health_path),
            Protocol::Grpc => "SERVING from grpc.health.v1.Health/Check".into(),
        }
    }

    /// Where the grader asks: `/healthz`, or the gRPC health service.
    pub fn target(&self) -> &str {
        match self.protocol {
            Protocol::Http => &self.health_path,
            Protocol::Grpc => "grpc.health.v1.Health/Check",
        }
    }

    /// One attempt, answered within `timeout`.
    pub async fn attempt(&self, timeout: Duration) -> Attempt {
        match self.protocol {
            Protocol::Http => {
                match self
                    .client
                    .get(&self.health_url)
                    .timeout(timeout)
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => Attempt::Ready,
                    Ok(response) => Attempt::NotReady(format!("status {}", response.status())),
                    Err(error) => Attempt::NoConnection(describe_request_error(&error, timeout)),
                }
            }
            Protocol::Grpc => {
                let channel = match grpc::connect(&self.address, timeout).await {
                    Ok(channel) => channel,
                    Err(why) => return Attempt::NoConnection(why),
                };
                match grpc::health::check(&channel, "", timeout).await {
                    Ok(Health::Serving) => Attempt::Ready,
                    Ok(other) => Attempt::NotReady(format!("Check(\"\") answered {other}")),
                    // Connected, but no gRPC answer: often an HTTP/1-only server on the port.
                    Err(why) => Attempt::NotReady(format!(
                        "{why} (is the port served over HTTP/2 without TLS, h2c?)"
                    )),
                }
            }
        }
    }
}

/// "connection refused", "no answer within 2.0 s", or the innermost cause.
pub fn describe_request_error(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        // Measured (what was left of the start-up timeout), so rounded for people.
        return format!("no answer within {}", super::seconds(timeout));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut innermost = error.to_string();
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".to_string(),
                std::io::ErrorKind::ConnectionReset => return "connection reset".to_string(),
                _ => {}
            }
        }
        innermost = current.to_string();
        source = current.source();
    }
    innermost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::test_server::{self, Reflection, SHOP_PROTO};

    fn url(address: std::net::SocketAddr) -> url::Url {
        url::Url::parse(&format!("http://{address}")).unwrap()
    }

    /// A gRPC service is ready when the health service says SERVING for the whole server, and
    /// not before; an HTTP/1-only port and a closed one say why not.
    #[tokio::test]
    async fn grpc_readiness_is_the_health_service_saying_serving() {
        let server = test_server::start(SHOP_PROTO, Reflection::None).await;
        let ready = Readiness::of(Protocol::Grpc, "/healthz", &url(server.address)).unwrap();
        let timeout = Duration::from_secs(2);
        assert_eq!(ready.attempt(timeout).await, Attempt::Ready);
        assert_eq!(ready.target(), "grpc.health.v1.Health/Check");

        server
            .health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        assert_eq!(
            ready.attempt(timeout).await,
            Attempt::NotReady("Check(\"\") answered NOT_SERVING".into())
        );

        // An HTTP/1 server on the port: connected, but no gRPC answer.
        let http1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = http1.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = http1.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let http1_ready = Readiness::of(Protocol::Grpc, "/", &url(address)).unwrap();
        match http1_ready.attempt(timeout).await {
            Attempt::NotReady(why) => assert!(why.contains("h2c"), "{why}"),
            other => panic!("{other:?}"),
        }

        // Nothing listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let closed_ready = Readiness::of(Protocol::Grpc, "/", &url(address)).unwrap();
        assert!(matches!(
            closed_ready.attempt(timeout).await,
            Attempt::NoConnection(_)
        ));
    }
}
