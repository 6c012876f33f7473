//! A small gRPC server for this module's tests, serving the gRPC exercise's own `shop.proto`
//! through dynamic messages: reflection (`v1`, or `v1alpha` only), health, and a `Shop` whose
//! answers exercise every path of the client (a row, `NOT_FOUND`, `INVALID_ARGUMENT` with
//! `BadRequest`, a slow call, a stream that counts what it produced).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::server::{NamedService, ServerStreamingService, UnaryService};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::codec::DynamicCodec;

pub const SHOP_PROTO: &str = include_str!("../../../exercises/grpc/shop.proto");

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

#[derive(Clone)]
struct Shop {
    pool: DescriptorPool,
    /// `ListOrders` messages produced so far, across calls.
    produced: Arc<AtomicUsize>,
}

impl NamedService for Shop {
    const NAME: &'static str = "shop.v1.Shop";
}

impl Shop {
    fn message(&self, name: &str) -> MessageDescriptor {
        self.pool.get_message_by_name(name).unwrap()
    }

    fn order(&self, id: i64) -> DynamicMessage {
        let json = serde_json::json!({
            "id": id, "customer_id": 10000001, "status": "shipped",
            "total_cents": 1234, "created_at": "2025-03-01T12:00:00.123456Z"
        });
        DynamicMessage::deserialize(self.message("shop.v1.Order"), json).unwrap()
    }

    fn id_of(&self, request: &Bytes, input: &str) -> i64 {
        let message = DynamicMessage::decode(self.message(input), request.clone()).unwrap();
        message.get_field_by_name("id").unwrap().as_i64().unwrap()
    }
}

struct Unary(Shop, &'static str);

impl UnaryService<Bytes> for Unary {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<tonic::Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shop = self.0.clone();
        let method = self.1;
        Box::pin(async move {
            match method {
                "GetOrder" => match shop.id_of(request.get_ref(), "shop.v1.GetOrderRequest") {
                    id if id < 1 => Err(Status::with_error_details(
                        Code::InvalidArgument,
                        "id must be at least 1",
                        ErrorDetails::with_bad_request_violation("id", "must be at least 1"),
                    )),
                    404 => Err(Status::not_found("no order 404")),
                    id => Ok(tonic::Response::new(shop.order(id))),
                },
                // Slow, and deaf to deadlines: the client's wait is what ends it.
                "GetCustomer" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Err(Status::internal("unreachable"))
                }
                _ => Err(Status::unimplemented(method)),
            }
        })
    }
}

struct Orders(Shop);

impl ServerStreamingService<Bytes> for Orders {
    type Response = DynamicMessage;
    type ResponseStream = Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send>>;
    type Future = BoxFuture<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, _request: tonic::Request<Bytes>) -> Self::Future {
        let shop = self.0.clone();
        Box::pin(async move {
            // Lazily, one message at a time: the stream is polled only when the HTTP/2 window
            // has room, so what it produced shows how far the client let it run.
            let stream = futures_util::stream::unfold(0i64, move |n| {
                let shop = shop.clone();
                async move {
                    (n < 100_000).then(|| {
                        shop.produced.fetch_add(1, Ordering::SeqCst);
                        (Ok(shop.order(10_000_000 + n)), n + 1)
                    })
                }
            });
            Ok(tonic::Response::new(
                Box::pin(stream) as Self::ResponseStream
            ))
        })
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Shop {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shop = self.clone();
        Box::pin(async move {
            let method = request.uri().path().rsplit('/').next().unwrap_or("");
            let mut grpc = tonic::server::Grpc::new(DynamicCodec);
            Ok(match method {
                "GetOrder" => grpc.unary(Unary(shop, "GetOrder"), request).await,
                "GetCustomer" => grpc.unary(Unary(shop, "GetCustomer"), request).await,
                "ListOrders" => grpc.server_streaming(Orders(shop), request).await,
                other => Status::unimplemented(other.to_string()).into_http(),
            })
        })
    }
}

/// A running test server; it stops when dropped.
pub struct TestServer {
    pub address: SocketAddr,
    pub produced: Arc<AtomicUsize>,
    pub health: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reflection {
    V1,
    V1AlphaOnly,
    None,
}

/// Serves `proto` (the text of `shop.proto`, or a departure from it) on a free port.
pub async fn start(proto: &str, reflection: Reflection) -> TestServer {
    let pool = super::contract::compile("shop.proto", proto).unwrap();
    let set = prost_types::FileDescriptorSet {
        file: pool.file_descriptor_protos().cloned().collect(),
    };
    let encoded = prost::Message::encode_to_vec(&set);
    let produced = Arc::new(AtomicUsize::new(0));
    let shop = Shop {
        pool,
        produced: produced.clone(),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<Shop>().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&encoded)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut router = tonic::transport::Server::builder()
        .add_service(shop)
        .add_service(health_service);
    match reflection {
        Reflection::V1 => router = router.add_service(builder.build_v1().unwrap()),
        Reflection::V1AlphaOnly => router = router.add_service(builder.build_v1alpha().unwrap()),
        Reflection::None => {}
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        router.serve_with_incoming(incoming).await.unwrap();
    });
    TestServer {
        address,
        produced,
        health,
        task,
    }
}
