//! The standard health service, `grpc.health.v1.Health/Check` (gRPC's "GRPC Health Checking
//! Protocol").

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{code_name, error_chain, Channel};

/// What `Check` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Serving,
    NotServing,
    /// `UNKNOWN` or `SERVICE_UNKNOWN` (the latter is for `Watch` only), or a value the enum does
    /// not have: the number as sent.
    Other(i32),
    /// The call failed with this status (`NOT_FOUND` for a service the server does not know).
    Status(tonic::Code, String),
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Serving => f.write_str("SERVING"),
            Health::NotServing => f.write_str("NOT_SERVING"),
            Health::Other(n) => match ServingStatus::try_from(*n) {
                Ok(status) => f.write_str(status.as_str_name()),
                Err(_) => write!(f, "status {n}, which the enum does not have"),
            },
            Health::Status(code, message) if message.is_empty() => {
                write!(f, "the status {}", code_name(*code))
            }
            Health::Status(code, message) => {
                write!(f, "the status {} {message:?}", code_name(*code))
            }
        }
    }
}

/// One `Check` for `service` (`""` is the whole server), answered within `timeout`. `Err` is a
/// call that got no status from the service: no connection, or no answer in time.
pub async fn check(channel: &Channel, service: &str, timeout: Duration) -> Result<Health, String> {
    let (inner, origin) = channel.parts();
    let mut client = HealthClient::with_origin(inner, origin);
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    match tokio::time::timeout(timeout, client.check(request)).await {
        Err(_) => Err(format!(
            "Health/Check({service:?}): no answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Ok(response)) => Ok(match response.into_inner().status {
            n if n == ServingStatus::Serving as i32 => Health::Serving,
            n if n == ServingStatus::NotServing as i32 => Health::NotServing,
            n => Health::Other(n),
        }),
        Ok(Err(status)) => match std::error::Error::source(&status) {
            Some(source) => Err(format!(
                "Health/Check({service:?}): {}: {}",
                status.message(),
                error_chain(source)
            )),
            None => Ok(Health::Status(status.code(), status.message().to_string())),
        },
    }
}
