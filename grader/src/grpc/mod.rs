//! A gRPC client for services the grader did not write and has no generated code for.
//!
//! The service says what it serves through server reflection ([`reflection`]): `v1`, falling back
//! to `v1alpha`. Its descriptors become a `prost-reflect` pool, so calls are built from JSON and
//! answered as JSON ([`call`]), through a codec that encodes dynamic messages ([`codec`]).
//! [`health`] asks the standard health service, and [`contract`] compares what reflection
//! describes with the exercise's own `.proto`, compiled by `protox` (no `protoc` needed).
//!
//! tonic is the client only, and it does not enforce a deadline itself: [`call`] sends
//! `grpc-timeout` and waits past it, so a late `OK` shows a server that ignored the deadline.
//!
//! A leaf: nothing here knows about exercises, checks or reports.

pub mod call;
pub mod codec;
pub mod contract;
pub mod health;
pub mod reflection;
pub mod transport;

use std::time::Duration;

pub use transport::H2Service;

/// The HTTP/2 stream window the grader's client advertises: HTTP/2's default, fixed (no adaptive
/// window), so that a server streaming faster than the grader reads is held back after 64 KiB,
/// as the gRPC exercise's README promises.
pub const STREAM_WINDOW: u32 = 65_535;

/// HTTP/2 without TLS (h2c with prior knowledge) to one service ([`transport`]).
///
/// Not tonic's `Channel`: that one enforces a request's `grpc-timeout` itself and cancels the
/// call at the deadline, which would hide what the grader is there to see, a server that answers
/// late because it ignored the deadline.
#[derive(Clone)]
pub struct Channel {
    service: H2Service,
    origin: http::Uri,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel({})", self.origin)
    }
}

impl Channel {
    /// A tonic client over this channel, for calls built by hand.
    pub fn grpc(&self) -> tonic::client::Grpc<H2Service> {
        tonic::client::Grpc::with_origin(self.service.clone(), self.origin.clone())
    }

    pub(crate) fn parts(&self) -> (H2Service, http::Uri) {
        (self.service.clone(), self.origin.clone())
    }
}

/// A channel to `address` (`127.0.0.1:port`), once an HTTP/2 connection to it has been made
/// within `connect_timeout` (a lost connection is made again when the next call needs it).
pub async fn connect(address: &str, connect_timeout: Duration) -> Result<Channel, String> {
    let origin: http::Uri = format!("http://{address}")
        .parse()
        .map_err(|e| format!("{address} is not an address: {e}"))?;
    let service = H2Service::new(address, STREAM_WINDOW, connect_timeout);
    service.prime().await?;
    Ok(Channel { service, origin })
}

/// An error and its sources on one line: tonic's transport errors say little at the top.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// A status code's canonical name (`NOT_FOUND`), as the gRPC documentation and the exercises'
/// READMEs write it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
pub(crate) mod test_server;

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;
    use tonic::Code;

    use super::call::{self, CallError, CallSpec, Details};
    use super::health::{self, Health};
    use super::reflection::{self, ReflectionError, ReflectionVersion};
    use super::test_server::{self, Reflection, SHOP_PROTO};
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    async fn served(reflection: Reflection) -> (test_server::TestServer, Channel) {
        let server = test_server::start(SHOP_PROTO, reflection).await;
        let channel = connect(&server.address.to_string(), WAIT).await.unwrap();
        (server, channel)
    }

    #[tokio::test]
    async fn reflection_v1_describes_the_exercise_proto() {
        let (_server, channel) = served(Reflection::V1).await;
        let reflected = reflection::reflect(&channel, "shop.v1.Shop", WAIT)
            .await
            .unwrap();
        assert_eq!(reflected.version, ReflectionVersion::V1);
        assert_eq!(
            reflected.services,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "shop.v1.Shop"
            ]
        );
        let expected = contract::compile("shop.proto", SHOP_PROTO).unwrap();
        let shop = expected.get_service_by_name("shop.v1.Shop").unwrap();
        assert_eq!(
            contract::differences(&shop, &reflected.pool),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn reflection_falls_back_to_v1alpha_and_says_when_neither_is_served() {
        let (_server, channel) = served(Reflection::V1AlphaOnly).await;
        let reflected = reflection::reflect(&channel, "shop.v1.Shop", WAIT)
            .await
            .unwrap();
        assert_eq!(reflected.version, ReflectionVersion::V1Alpha);
        assert!(reflected.pool.get_service_by_name("shop.v1.Shop").is_some());

        let (_server, channel) = served(Reflection::None).await;
        let error = reflection::reflect(&channel, "shop.v1.Shop", WAIT)
            .await
            .unwrap_err();
        assert_eq!(error, ReflectionError::NotServed);
    }

    #[tokio::test]
    async fn reflection_of_an_unknown_symbol_is_a_broken_answer() {
        let (_server, channel) = served(Reflection::V1).await;
        let error = reflection::reflect(&channel, "shop.v2.Shop", WAIT)
            .await
            .unwrap_err();
        let ReflectionError::Broken(why) = error else {
            panic!("{error:?}")
        };
        assert!(
            why.starts_with(
                "grpc.reflection.v1.ServerReflection file_containing_symbol(\"shop.v2.Shop\"): NOT_FOUND"
            ),
            "{why}"
        );
    }

    #[test]
    fn the_contract_names_every_departure_from_the_proto() {
        let departed = SHOP_PROTO
            .replace("string created_at = 5;", "int64 created_at = 5;")
            .replace("int64 total_cents = 4;", "int64 totalCents = 4;")
            .replace("returns (stream Order)", "returns (Order)")
            .replace(
                "rpc GetCustomer(GetCustomerRequest) returns (Customer);",
                "",
            )
            .replace("  string loyalty_tier = 4;\n", "")
            .replace(
                "int64 customer_id = 1;\n  int64 total_cents = 2;",
                "int64 customer_id = 1;\n  repeated int64 total_cents = 2;",
            );
        let served = contract::compile("shop.proto", &departed).unwrap();
        let expected = contract::compile("shop.proto", SHOP_PROTO).unwrap();
        let shop = expected.get_service_by_name("shop.v1.Shop").unwrap();
        insta::assert_debug_snapshot!(contract::differences(&shop, &served), @r#"
        [
            "the method shop.v1.Shop/GetCustomer is missing",
            "shop.v1.Shop/ListOrders: the server sends one message, the .proto says a stream",
            "shop.v1.Order.total_cents (field 4) is named totalCents",
            "shop.v1.Order.created_at (field 5) has the type int64, the .proto says string",
            "shop.v1.PlaceOrderRequest.total_cents (field 2) is repeated, the .proto says singular",
            "shop.v1.Customer.loyalty_tier (field 4) is missing",
        ]
        "#);
        let other =
            contract::compile("other.proto", "syntax = \"proto3\"; package other;").unwrap();
        assert_eq!(
            contract::differences(&shop, &other),
            ["the service shop.v1.Shop is not in the files reflection gave"]
        );
    }

    #[test]
    fn a_proto_that_does_not_compile_says_where() {
        let error = contract::compile("shop.proto", "syntax = \"proto3\";\nmessage {").unwrap_err();
        assert!(error.starts_with("shop.proto:"), "{error}");
    }

    fn method(name: &str) -> prost_reflect::MethodDescriptor {
        let pool = contract::compile("shop.proto", SHOP_PROTO).unwrap();
        let service = pool.get_service_by_name("shop.v1.Shop").unwrap();
        let found = service.methods().find(|m| m.name() == name).unwrap();
        found
    }

    #[tokio::test]
    async fn unary_calls_answer_json_statuses_and_bad_request_details() {
        let (_server, channel) = served(Reflection::V1).await;
        let get_order = method("GetOrder");
        let get = |request: serde_json::Value| {
            let (channel, get_order) = (&channel, &get_order);
            async move {
                let spec = CallSpec {
                    method: get_order,
                    request: &request,
                    metadata: &[],
                    deadline: None,
                };
                call::unary(channel, &spec, WAIT).await
            }
        };

        let found = get(json!({"id": "7"})).await.unwrap();
        assert_eq!(found.code, Code::Ok);
        assert_eq!(
            found.response.unwrap(),
            json!({"id": 7, "customer_id": 10000001, "status": "shipped", "total_cents": 1234,
                   "created_at": "2025-03-01T12:00:00.123456Z"})
        );

        let invalid = get(json!({"id": 0})).await.unwrap();
        assert_eq!(
            invalid.status_line(),
            "INVALID_ARGUMENT \"id must be at least 1\""
        );
        assert_eq!(
            invalid.details,
            Details::Status {
                code: Code::InvalidArgument as i32,
                message: "id must be at least 1".into(),
                type_urls: vec!["type.googleapis.com/google.rpc.BadRequest".into()],
                field_violations: Some(vec![("id".into(), "must be at least 1".into())]),
            }
        );

        let missing = get(json!({"id": 404})).await.unwrap();
        assert_eq!(missing.status_line(), "NOT_FOUND \"no order 404\"");
        assert_eq!(missing.details, Details::Absent);

        let error = get(json!({"id": "seven"})).await.unwrap_err();
        assert!(matches!(error, CallError::Request(_)), "{error:?}");
    }

    #[tokio::test]
    async fn the_deadline_is_the_servers_to_keep_not_the_clients() {
        let (_server, channel) = served(Reflection::V1).await;
        let get_customer = method("GetCustomer");
        let request = json!({"id": 7});
        let spec = CallSpec {
            method: &get_customer,
            request: &request,
            metadata: &[("authorization".into(), "Bearer t0k3n".into())],
            deadline: Some(Duration::from_millis(200)),
        };
        // The test server is tonic, which ends a call at its `grpc-timeout` with CANCELLED. That
        // the reply is its status, not a transport error of the client's own timer (what tonic's
        // Channel would give), shows the grader leaves the deadline to the server.
        let reply = call::unary(&channel, &spec, Duration::from_millis(1500))
            .await
            .unwrap();
        assert_eq!(reply.status_line(), "CANCELLED \"Timeout expired\"");
        assert!(
            (Duration::from_millis(200)..Duration::from_millis(1000)).contains(&reply.elapsed),
            "{:?}",
            reply.elapsed
        );
    }

    #[tokio::test]
    async fn health_answers_per_service() {
        let (server, channel) = served(Reflection::V1).await;
        let check = |service: &'static str| health::check(&channel, service, WAIT);
        assert_eq!(check("").await.unwrap(), Health::Serving);
        assert_eq!(check("shop.v1.Shop").await.unwrap(), Health::Serving);
        let unknown = check("shop.v1.Nope").await.unwrap();
        assert_eq!(
            unknown.to_string(),
            "the status NOT_FOUND \"service not registered\""
        );
        server
            .health
            .set_service_status("shop.v1.Shop", tonic_health::ServingStatus::NotServing)
            .await;
        assert_eq!(check("shop.v1.Shop").await.unwrap(), Health::NotServing);
    }

    #[tokio::test]
    async fn a_paced_stream_holds_the_server_back_and_cancels_it() {
        let (server, channel) = served(Reflection::V1).await;
        let list_orders = method("ListOrders");
        let request = json!({});
        let spec = CallSpec {
            method: &list_orders,
            request: &request,
            metadata: &[],
            deadline: None,
        };
        let paced = call::paced_server_stream(&channel, &spec, 5, Duration::from_millis(500), WAIT)
            .await
            .unwrap();
        assert_eq!(paced.received.len(), 5);
        assert_eq!(paced.received[4]["id"], json!(10_000_004));
        assert_eq!(paced.ended, None);
        let at_cancel = server.produced.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = server.produced.load(Ordering::SeqCst);
        // About 80 bytes a message: a 64 KiB window holds under a thousand, far from 100,000.
        assert!((5..3_000).contains(&at_cancel), "produced {at_cancel}");
        assert!(later - at_cancel < 100, "went on: {at_cancel} then {later}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connection_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = connect(&format!("127.0.0.1:{port}"), WAIT)
            .await
            .unwrap_err();
        assert!(error.contains("Connection refused"), "{error}");
    }
}
