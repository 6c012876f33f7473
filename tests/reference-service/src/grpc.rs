//! A shop's customers and orders over gRPC: exercise `grpc` (task statement:
//! `exercises/grpc/README.md`; the contract: `exercises/grpc/shop.proto`, compiled by `build.rs`
//! with protox and tonic-prost-build, no `protoc`).
//!
//! - One port for everything: [`dispatch`] sends every request whose `content-type` is
//!   `application/grpc...` to the gRPC routes (tonic's, as an axum router) before the HTTP
//!   routing, layers and logs of the other exercises; `axum::serve` answers HTTP/1.1 and h2c with
//!   prior knowledge on the same listener [grpc-0.1].
//! - `shop.v1.Shop` [grpc-0.5..0.8] on the grader's `rpc_customers` and `rpc_orders`, server
//!   reflection v1 and v1alpha of the exercise's own descriptors [grpc-1.1] [grpc-1.2], and
//!   tonic's health service: `""` and `shop.v1.Shop` are registered, any other name is
//!   `NOT_FOUND` [grpc-4.1].
//! - Statuses [grpc-2.1..2.4]: each call checks its mistakes in the README's order
//!   (`UNAUTHENTICATED`, `INVALID_ARGUMENT`, `PERMISSION_DENIED`, `NOT_FOUND`, `ALREADY_EXISTS`),
//!   `INVALID_ARGUMENT` carries a `google.rpc.BadRequest` (tonic-types), and messages are written
//!   for the caller (causes go to stderr).
//! - Deadlines [grpc-3.2]: read from `grpc-timeout` here, because tonic enforces it only in its
//!   own `transport::Server` (with `CANCELLED`), which this service does not use. A unary call
//!   past its deadline answers `DEADLINE_EXCEEDED`, and its work (the loyalty request included)
//!   is dropped; the loyalty request gets `min(2 s, time left - 50 ms)`.
//! - `ListOrders` [grpc-5.1] [grpc-5.2]: keyset pages of [`PAGE`] rows, handed to the response
//!   through a channel of [`STREAM_BUFFER`] messages: when the client stops reading, HTTP/2 flow
//!   control stops the writes, the channel fills, and the next page is not read. A cancelled
//!   call drops the receiver, and the reader stops.
//! - Shutdown [grpc-4.2..4.4]: [`Grpc::drain`] runs between SIGTERM and the graceful shutdown of
//!   the listener (see `main.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::Pool;
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tonic::codegen::Service as _;
use tonic::{Code, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::bugs::{self, Bug};
use crate::problem::Problem;

mod pb {
    tonic::include_proto!("shop.v1");
}

use pb::shop_server::ShopServer;

/// The exercise's descriptors, encoded: what reflection describes [grpc-1.2].
const SHOP_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor.bin"));
/// The same contract with `Order.total_cents` named `total`: planted bug grpc-contract-drift.
const DRIFTED_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor_drifted.bin"));

/// How long the service keeps serving after SIGTERM, health saying `NOT_SERVING`, before it
/// closes its listener [grpc-4.2]: a load balancer polling health every second sees it, and
/// stops sending calls, before they would be refused.
const DRAIN: Duration = Duration::from_millis(1500);
/// The loyalty service's time to answer [grpc-3.1].
const LOYALTY_TIMEOUT: Duration = Duration::from_secs(2);
/// The loyalty budget without a deadline under the planted bug grpc-no-loyalty-cap.
const UNCAPPED_LOYALTY: Duration = Duration::from_secs(60);
/// The loyalty request is given up this long before the call's deadline, so that the answer
/// never races the deadline [grpc-3.2].
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);
/// Rows per `ListOrders` page (the README allows up to 1,000) [grpc-5.2].
const PAGE: i64 = 200;
/// Messages between the page reader and the response: small, so that the reader waits for the
/// client soon after the client stops reading [grpc-5.2].
const STREAM_BUFFER: usize = 16;

const MAX_EMAIL_CHARS: usize = 254;
const MAX_NAME_CHARS: usize = 100;
const MAX_TOTAL_CENTS: i64 = 1_000_000;

const EMAIL_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS rpc_customers_lower_email_idx ON rpc_customers (lower(email));";
const UNIQUE_EMAIL_INDEX: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS rpc_customers_lower_email_key ON rpc_customers (lower(email));";

const ORDER_COLUMNS: &str = "id, customer_id, status, total_cents, created_at";
const CUSTOMER_COLUMNS: &str = "id, email, name";

/// The index the email look-up uses, as the active planted bug has it. The tables are the
/// grader's, as graphql's are: its data set creates and fills them before the service starts.
/// The index is made only where they exist, so that the runs of other exercises see no table of
/// this one (their checks that read every table would list them).
pub fn schema() -> String {
    // Planted bug grpc-internal-on-duplicate: "the database keeps emails unique", so a unique
    // index stands in for the look-up (and its violation is not mapped, below).
    let index = if bugs::is(Bug::GrpcInternalOnDuplicate) {
        UNIQUE_EMAIL_INDEX
    } else {
        EMAIL_INDEX
    };
    format!(
        "DO $grpc$ BEGIN IF to_regclass('rpc_customers') IS NOT NULL THEN EXECUTE '{}'; END IF; END $grpc$;",
        index.trim_end_matches(';')
    )
}

// ---------------------------------------------------------------------------------------------
// The server: routes, dispatch, health and the drain.

/// The gRPC side of the service, shared by the dispatch and the shutdown.
#[derive(Clone)]
pub struct Grpc {
    /// Shop, health and reflection, as tonic routes them.
    routes: axum::Router,
    health: HealthReporter,
    /// Whether a gRPC call has come in since the start: SIGTERM drains only then (a service
    /// nobody has called over gRPC has no load balancer to tell, and the HTTP exercises, whose
    /// tests stop it thousands of times, stop at once as before).
    called: Arc<AtomicBool>,
    /// Between SIGTERM and the listener's closing: other requests than gRPC answer 503.
    draining: Arc<AtomicBool>,
}

impl Grpc {
    pub async fn new(pool: Pool) -> Result<Self, String> {
        let (health, health_service) = tonic_health::server::health_reporter();
        // `""` (the whole server) is registered SERVING by `health_reporter` itself.
        health.set_serving::<ShopServer<Shop>>().await;
        // Planted bug grpc-contract-drift: reflection describes a .proto that moved on.
        let descriptors = if bugs::is(Bug::GrpcContractDrift) {
            DRIFTED_DESCRIPTORS
        } else {
            SHOP_DESCRIPTORS
        };
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(descriptors)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let v1 = reflection()
            .build_v1()
            .map_err(|e| format!("cannot build server reflection v1: {e}"))?;
        let v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| format!("cannot build server reflection v1alpha: {e}"))?;
        let routes = tonic::service::Routes::new(ShopServer::new(Shop { pool }));
        // Planted bug grpc-health-unknown-serving: a health service of its own, lenient with
        // names it does not know.
        let routes = if bugs::is(Bug::GrpcHealthUnknownServing) {
            routes.add_service(HealthServer::new(LenientHealth(
                tonic_health::server::HealthService::from_health_reporter(health.clone()),
            )))
        } else {
            routes.add_service(health_service)
        };
        let routes = routes
            .add_service(v1)
            .add_service(v1alpha)
            .prepare()
            .into_axum_router();
        Ok(Self {
            routes,
            health,
            called: Arc::new(AtomicBool::new(false)),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// What SIGTERM does before the listener closes [grpc-4.2]: health turns `NOT_SERVING` at
    /// once, then gRPC calls are still served (health answering) for [`DRAIN`], while other
    /// requests answer 503 (the HTTP exercises' rule: no new work after SIGTERM [res-8.1]).
    /// Then the graceful shutdown finishes the calls in flight [grpc-4.3].
    pub async fn drain(&self) {
        // Planted bug grpc-serving-during-shutdown: the drain without telling the load balancer.
        if !bugs::is(Bug::GrpcServingDuringShutdown) {
            self.health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            self.health.set_not_serving::<ShopServer<Shop>>().await;
        }
        // Planted bug grpc-drops-inflight: "health said NOT_SERVING, so nobody is calling".
        if bugs::is(Bug::GrpcDropsInflight) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            println!("health is NOT_SERVING: exiting now");
            std::process::exit(0);
        }
        if self.called.load(Ordering::SeqCst) {
            self.draining.store(true, Ordering::SeqCst);
            println!(
                "draining for {} ms: health answers NOT_SERVING, gRPC calls are still served, \
                 other requests 503",
                DRAIN.as_millis()
            );
            tokio::time::sleep(DRAIN).await;
        }
    }
}

/// [`Bug::GrpcHealthUnknownServing`]: the standard health service, but `SERVING` where it would
/// answer `NOT_FOUND`.
struct LenientHealth(tonic_health::server::HealthService);

#[tonic::async_trait]
impl Health for LenientHealth {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        match self.0.check(request).await {
            Err(status) if status.code() == Code::NotFound => {
                Ok(tonic::Response::new(HealthCheckResponse {
                    status: ServingStatus::Serving as i32,
                }))
            }
            answer => answer,
        }
    }

    type WatchStream = <tonic_health::server::HealthService as Health>::WatchStream;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        self.0.watch(request).await
    }
}

/// Middleware in front of the HTTP routing: gRPC requests go to the gRPC routes; while draining,
/// every other request answers 503 and closes its connection.
pub async fn dispatch(State(grpc): State<Grpc>, request: Request, next: Next) -> Response {
    if is_grpc(&request) {
        grpc.called.store(true, Ordering::SeqCst);
        let mut routes = grpc.routes.clone();
        return match routes.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    if grpc.draining.load(Ordering::SeqCst) {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is shutting down.",
        )
        .with_header(header::CONNECTION, HeaderValue::from_static("close"))
        .into_response();
    }
    next.run(request).await
}

/// `application/grpc`, `application/grpc+proto`, ...
fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .get(..16)
                .is_some_and(|start| start.eq_ignore_ascii_case("application/grpc"))
        })
}

// ---------------------------------------------------------------------------------------------
// shop.v1.Shop.

struct Shop {
    pool: Pool,
}

type OrderStream = Pin<Box<dyn Stream<Item = Result<pb::Order, Status>> + Send>>;

#[tonic::async_trait]
impl pb::shop_server::Shop for Shop {
    async fn get_order(
        &self,
        request: tonic::Request<pb::GetOrderRequest>,
    ) -> Result<tonic::Response<pb::Order>, Status> {
        let deadline = deadline(&request);
        let id = request.into_inner().id;
        within(deadline, async {
            check_id(id)?;
            let db = client(&self.pool).await?;
            let row = db
                .query_opt(
                    &format!("SELECT {ORDER_COLUMNS} FROM rpc_orders WHERE id = $1"),
                    &[&id],
                )
                .await
                .map_err(|e| internal("GetOrder", e))?;
            let row = found(row, || format!("No order has the id {id}."))?;
            Ok(tonic::Response::new(order(&row)))
        })
        .await
    }

    async fn get_customer(
        &self,
        request: tonic::Request<pb::GetCustomerRequest>,
    ) -> Result<tonic::Response<pb::Customer>, Status> {
        // Planted bug grpc-deadline-ignored: the caller's deadline is never read, so nothing
        // ends with it, and the loyalty request has its 2 s whatever the time left.
        let deadline = if bugs::is(Bug::GrpcDeadlineIgnored) {
            None
        } else {
            deadline(&request)
        };
        let id = request.into_inner().id;
        within(deadline, async {
            check_id(id)?;
            let row = {
                // Given back before the loyalty request, which may take seconds.
                let db = client(&self.pool).await?;
                db.query_opt(
                    &format!("SELECT {CUSTOMER_COLUMNS} FROM rpc_customers WHERE id = $1"),
                    &[&id],
                )
                .await
                .map_err(|e| internal("GetCustomer", e))?
            };
            let row = found(row, || format!("No customer has the id {id}."))?;
            let mut customer = customer(&row);
            customer.loyalty_tier = loyalty_tier(id, deadline).await?;
            Ok(tonic::Response::new(customer))
        })
        .await
    }

    async fn create_customer(
        &self,
        request: tonic::Request<pb::CreateCustomerRequest>,
    ) -> Result<tonic::Response<pb::Customer>, Status> {
        let deadline = deadline(&request);
        let pb::CreateCustomerRequest { email, name } = request.into_inner();
        within(deadline, async {
            let mut violations = Vec::new();
            if let Some(wrong) = email_violation(&email) {
                violations.push(("email", wrong));
            }
            if name.is_empty() {
                violations.push(("name", "must not be empty"));
            } else if name.chars().count() > MAX_NAME_CHARS {
                violations.push(("name", "must be at most 100 characters long"));
            }
            invalid(&violations)?;

            let mut db = client(&self.pool).await?;
            let insert = format!(
                "INSERT INTO rpc_customers (email, name) VALUES ($1, $2) \
                 RETURNING {CUSTOMER_COLUMNS}"
            );
            // Planted bug grpc-internal-on-duplicate: no look-up, the unique index is the check,
            // and its violation goes back to the caller as the driver wrote it.
            if bugs::is(Bug::GrpcInternalOnDuplicate) {
                let row = db.query_one(&insert, &[&email, &name]).await.map_err(|e| {
                    Status::internal(match e.as_db_error() {
                        Some(db) => format!("db error: {db}"),
                        None => e.to_string(),
                    })
                })?;
                return Ok(tonic::Response::new(customer(&row)));
            }
            let failed = |e| internal("CreateCustomer", e);
            let tx = db.transaction().await.map_err(failed)?;
            // One creation per email at a time, so that two calls cannot both find it free.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext(lower($1)))",
                &[&email],
            )
            .await
            .map_err(failed)?;
            // Planted bug grpc-case-sensitive-email: "an email is a string".
            let taken = if bugs::is(Bug::GrpcCaseSensitiveEmail) {
                "SELECT 1 FROM rpc_customers WHERE email = $1 LIMIT 1"
            } else {
                "SELECT 1 FROM rpc_customers WHERE lower(email) = lower($1) LIMIT 1"
            };
            if tx
                .query_opt(taken, &[&email])
                .await
                .map_err(failed)?
                .is_some()
            {
                // The transaction rolls back as it is dropped: nothing changed.
                return Err(Status::already_exists(
                    "A customer with that email exists already.",
                ));
            }
            let row = tx
                .query_one(&insert, &[&email, &name])
                .await
                .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            Ok(tonic::Response::new(customer(&row)))
        })
        .await
    }

    async fn place_order(
        &self,
        request: tonic::Request<pb::PlaceOrderRequest>,
    ) -> Result<tonic::Response<pb::Order>, Status> {
        let deadline = deadline(&request);
        let caller = caller(&request);
        let pb::PlaceOrderRequest {
            customer_id,
            total_cents,
        } = request.into_inner();
        within(deadline, async {
            let caller = caller?;
            // Planted bug grpc-permission-before-argument: "who may do it, then what".
            if bugs::is(Bug::GrpcPermissionBeforeArgument) {
                check_owner(caller, customer_id)?;
            }
            if !(1..=MAX_TOTAL_CENTS).contains(&total_cents) {
                invalid(&[("total_cents", "must be from 1 to 1000000")])?;
            }
            check_owner(caller, customer_id)?;
            let db = client(&self.pool).await?;
            let row = db
                .query_opt(
                    &format!(
                        "INSERT INTO rpc_orders (customer_id, status, total_cents) \
                         SELECT id, 'pending', $2 FROM rpc_customers WHERE id = $1 \
                         RETURNING {ORDER_COLUMNS}"
                    ),
                    &[&customer_id, &total_cents],
                )
                .await
                .map_err(|e| internal("PlaceOrder", e))?;
            let row = found(row, || format!("No customer has the id {customer_id}."))?;
            Ok(tonic::Response::new(order(&row)))
        })
        .await
    }

    type ListOrdersStream = OrderStream;

    async fn list_orders(
        &self,
        request: tonic::Request<pb::ListOrdersRequest>,
    ) -> Result<tonic::Response<OrderStream>, Status> {
        let deadline = deadline(&request);
        let status = request.into_inner().status;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(read_orders(self.pool.clone(), status, deadline, sender));
        Ok(tonic::Response::new(order_stream(receiver, deadline)))
    }
}

// ---------------------------------------------------------------------------------------------
// ListOrders.

/// Reads the orders page by page into `sender`, newest first [grpc-5.1]. A page is read once the
/// previous one is in the channel; the channel empties only as fast as the response is written,
/// which HTTP/2 flow control holds to the client's reading [grpc-5.2]. Stops when the receiver
/// is gone (the call was cancelled, or ended) or at the deadline.
async fn read_orders(
    pool: Pool,
    status: String,
    deadline: Option<Instant>,
    sender: mpsc::Sender<Result<pb::Order, Status>>,
) {
    let deadline_passed = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline_passed);
    // Planted bug grpc-stream-oldest-first: the "natural" order.
    let oldest_first = bugs::is(Bug::GrpcStreamOldestFirst);
    // Planted bug grpc-stream-unbounded: "one query is faster than many", the whole result
    // read into memory before the first message goes out.
    let page = if bugs::is(Bug::GrpcStreamUnbounded) {
        None
    } else {
        Some(PAGE)
    };
    let mut after: Option<(DateTime<Utc>, i64)> = None;
    loop {
        if sender.is_closed() {
            return;
        }
        let rows = tokio::select! {
            rows = orders_page(&pool, &status, after, oldest_first, page) => rows,
            () = sender.closed() => return,
            () = &mut deadline_passed => return,
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return;
            }
        };
        let last = rows.len() as i64;
        for row in &rows {
            tokio::select! {
                sent = sender.send(Ok(order(row))) => if sent.is_err() {
                    return;
                },
                () = &mut deadline_passed => return,
            }
        }
        match (rows.last(), page) {
            (Some(row), Some(page)) if last == page => {
                after = Some((row.get("created_at"), row.get("id")));
            }
            _ => return,
        }
    }
}

/// One page of orders after the keyset `after`, in stream order.
async fn orders_page(
    pool: &Pool,
    status: &str,
    after: Option<(DateTime<Utc>, i64)>,
    oldest_first: bool,
    page: Option<i64>,
) -> Result<Vec<Row>, Status> {
    let (beyond, direction) = if oldest_first {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut conditions = Vec::new();
    if !status.is_empty() {
        params.push(&status);
        conditions.push(format!("status = ${}", params.len()));
    }
    if let Some((created_at, id)) = &after {
        params.push(created_at);
        params.push(id);
        conditions.push(format!(
            "(created_at, id) {beyond} (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let limit = page
        .map(|rows| format!(" LIMIT {rows}"))
        .unwrap_or_default();
    let db = client(pool).await?;
    db.query(
        &format!(
            "SELECT {ORDER_COLUMNS} FROM rpc_orders{filter} \
             ORDER BY created_at {direction}, id {direction}{limit}"
        ),
        &params,
    )
    .await
    .map_err(|e| internal("ListOrders", e))
}

/// The response: the channel's messages, then the end (OK), an error the reader sent, or
/// `DEADLINE_EXCEEDED` once the deadline has passed. Ending drops the receiver, which stops the
/// reader.
fn order_stream(
    receiver: mpsc::Receiver<Result<pb::Order, Status>>,
    deadline: Option<Instant>,
) -> OrderStream {
    let past_deadline = move || deadline.is_some_and(|deadline| Instant::now() >= deadline);
    Box::pin(futures_util::stream::unfold(
        Some(receiver),
        move |receiver| async move {
            let mut receiver = receiver?;
            if past_deadline() {
                return Some((Err(deadline_exceeded()), None));
            }
            let next = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, receiver.recv())
                    .await
                    .unwrap_or_else(|_| Some(Err(deadline_exceeded()))),
                None => receiver.recv().await,
            };
            match next {
                Some(Ok(order)) => Some((Ok(order), Some(receiver))),
                Some(Err(status)) => Some((Err(status), None)),
                // The reader stopped at the deadline, or read everything.
                None if past_deadline() => Some((Err(deadline_exceeded()), None)),
                None => None,
            }
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// The loyalty service [grpc-3.1] [grpc-3.2].

/// The tier of `customer`: empty when the loyalty service fails or takes more than 2 s, and
/// `DEADLINE_EXCEEDED` when the call's deadline comes first (the request is dropped with its
/// connection, 50 ms before the deadline).
async fn loyalty_tier(customer: i64, deadline: Option<Instant>) -> Result<String, Status> {
    // Planted bug grpc-no-tier: "the tier can be added later".
    if bugs::is(Bug::GrpcNoTier) {
        return Ok(String::new());
    }
    let left = deadline.map(|deadline| {
        deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(DEADLINE_MARGIN)
    });
    let (budget, cut_by_deadline) = match left {
        Some(left) if left < LOYALTY_TIMEOUT => (left, true),
        // Planted bug grpc-no-loyalty-cap: "the caller's deadline is the only limit".
        None if bugs::is(Bug::GrpcNoLoyaltyCap) => (UNCAPPED_LOYALTY, false),
        _ => (LOYALTY_TIMEOUT, false),
    };
    match tokio::time::timeout(budget, ask_loyalty(customer, budget)).await {
        Ok(Ok(tier)) => Ok(tier),
        // Planted bug grpc-loyalty-5xx-fails-call: "the loyalty service is down, so are we".
        Ok(Err(LoyaltyFailure::Answer(reason)))
            if bugs::is(Bug::GrpcLoyalty5xxFailsCall) && reason.contains("status 5") =>
        {
            eprintln!("error: loyalty tier of customer {customer}: {reason}");
            Err(Status::unavailable("the loyalty service is unavailable"))
        }
        // Planted bug grpc-loyalty-transport-fails-call: statuses are handled, but an error from
        // the request itself is passed up, as `resp, err := get(); if err != nil { return err }`
        // does.
        Ok(Err(LoyaltyFailure::Transport(reason)))
            if bugs::is(Bug::GrpcLoyaltyTransportFailsCall) =>
        {
            eprintln!("error: loyalty tier of customer {customer}: {reason}");
            Err(Status::unavailable("the loyalty service is unavailable"))
        }
        Ok(Err(failure)) => {
            eprintln!("error: loyalty tier of customer {customer}: {failure}");
            Ok(String::new())
        }
        Err(_) if cut_by_deadline => Err(deadline_exceeded()),
        Err(_) => {
            eprintln!(
                "error: loyalty tier of customer {customer}: no answer within {} ms",
                budget.as_millis()
            );
            Ok(String::new())
        }
    }
}

/// Why the loyalty service gave no tier.
enum LoyaltyFailure {
    /// No response: the connection was refused, reset or closed.
    Transport(String),
    /// A response without a tier: a status other than 2xx, or a body without `tier`.
    Answer(String),
}

impl std::fmt::Display for LoyaltyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoyaltyFailure::Transport(reason) | LoyaltyFailure::Answer(reason) => {
                f.write_str(reason)
            }
        }
    }
}

/// `GET {LOYALTY_URL}/tiers/{id}`: the `tier` of a 2xx JSON object; anything else is an error.
async fn ask_loyalty(customer: i64, budget: Duration) -> Result<String, LoyaltyFailure> {
    let (client, base) = loyalty_service().map_err(LoyaltyFailure::Transport)?;
    let url = format!("{base}/tiers/{customer}");
    let response = client
        .get(&url)
        // A backstop past the budget: the budget's own timeout (in `loyalty_tier`) must win, so
        // that a deadline that cuts the request answers DEADLINE_EXCEEDED, not an empty tier.
        .timeout(budget + Duration::from_millis(250))
        .send()
        .await
        .map_err(|e| LoyaltyFailure::Transport(format!("GET {url}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(LoyaltyFailure::Answer(format!(
            "GET {url}: status {status}"
        )));
    }
    let body: Value = response.json().await.map_err(|e| {
        LoyaltyFailure::Answer(format!("GET {url}: status {status}, body unreadable: {e}"))
    })?;
    match body.get("tier") {
        Some(Value::String(tier)) => Ok(tier.clone()),
        _ => Err(LoyaltyFailure::Answer(format!(
            "GET {url}: no \"tier\" string in {body}"
        ))),
    }
}

/// `LOYALTY_URL`, read on first use (other exercises run without it). The client's own timeout
/// is a backstop: [`loyalty_tier`] gives each request its budget.
fn loyalty_service() -> Result<&'static (reqwest::Client, String), String> {
    static LOYALTY: OnceLock<Result<(reqwest::Client, String), String>> = OnceLock::new();
    LOYALTY
        .get_or_init(|| {
            let url = std::env::var("LOYALTY_URL")
                .ok()
                .filter(|url| !url.trim().is_empty())
                .ok_or_else(|| "LOYALTY_URL is not set".to_string())?;
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(LOYALTY_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the loyalty service client: {e}"))?;
            Ok((client, url.trim().trim_end_matches('/').to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

// ---------------------------------------------------------------------------------------------
// Callers [grpc-0.4].

/// The customer the call's `authorization: Bearer <token>` belongs to, from `API_TOKENS`.
fn caller<T>(request: &tonic::Request<T>) -> Result<i64, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Err(Status::unauthenticated(
            "The call has no authorization metadata: send `authorization: Bearer <token>`.",
        ));
    };
    let not_bearer =
        || Status::unauthenticated("The authorization metadata is not `Bearer <token>`.");
    let value = value.to_str().map_err(|_| not_bearer())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(not_bearer)?;
    // Planted bug grpc-bearer-case-sensitive: the scheme compared as the docs spell it.
    let bearer = if bugs::is(Bug::GrpcBearerCaseSensitive) {
        scheme == "Bearer"
    } else {
        scheme.eq_ignore_ascii_case("bearer")
    };
    let token = token.trim();
    if !bearer || token.is_empty() {
        return Err(not_bearer());
    }
    tokens()
        .get(token)
        .copied()
        .ok_or_else(|| Status::unauthenticated("The token is not one this service knows."))
}

/// `API_TOKENS`: `token=customer_id` pairs, comma-separated; read on first use.
fn tokens() -> &'static HashMap<String, i64> {
    static TOKENS: OnceLock<HashMap<String, i64>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let mut tokens = HashMap::new();
        for pair in std::env::var("API_TOKENS").unwrap_or_default().split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            match pair
                .split_once('=')
                .and_then(|(token, id)| Some((token.trim(), id.trim().parse::<i64>().ok()?)))
            {
                Some((token, id)) if !token.is_empty() => {
                    tokens.insert(token.to_string(), id);
                }
                _ => eprintln!("warning: API_TOKENS: {pair:?} is not token=customer_id"),
            }
        }
        tokens
    })
}

fn check_owner(caller: i64, customer_id: i64) -> Result<(), Status> {
    if caller == customer_id {
        Ok(())
    } else {
        Err(Status::permission_denied(
            "Your token may place orders for its own customer only.",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments and statuses [grpc-2.1..2.4].

fn check_id(id: i64) -> Result<(), Status> {
    if id < 1 {
        invalid(&[("id", "must be at least 1")])?;
    }
    Ok(())
}

/// What is wrong with an email, if anything: one `@` with a character on each side, and at most
/// 254 characters.
fn email_violation(email: &str) -> Option<&'static str> {
    let well_formed = match email.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    };
    // Planted bug grpc-email-bytes: `len()` is the length, isn't it?
    let length = if bugs::is(Bug::GrpcEmailBytes) {
        email.len()
    } else {
        email.chars().count()
    };
    if !well_formed {
        Some("must be one @ with at least one character on each side")
    } else if length > MAX_EMAIL_CHARS {
        Some("must be at most 254 characters long")
    } else {
        None
    }
}

/// `INVALID_ARGUMENT` naming every wrong field, with a `google.rpc.BadRequest` holding one
/// violation per field (the `.proto`'s field name, and what is wrong) [grpc-2.3]; `Ok` when
/// nothing is.
fn invalid(violations: &[(&str, &str)]) -> Result<(), Status> {
    if violations.is_empty() {
        return Ok(());
    }
    let message = violations
        .iter()
        .map(|(field, wrong)| format!("{field} {wrong}"))
        .collect::<Vec<_>>()
        .join("; ");
    // Planted bug grpc-no-bad-request-details: a message is enough, isn't it?
    if bugs::is(Bug::GrpcNoBadRequestDetails) {
        return Err(Status::invalid_argument(message));
    }
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .map(|(field, wrong)| FieldViolation::new(*field, *wrong))
            .collect::<Vec<_>>(),
    );
    Err(Status::with_error_details(
        Code::InvalidArgument,
        message,
        details,
    ))
}

/// The row, or `NOT_FOUND` with `missing`'s words.
fn found(row: Option<Row>, missing: impl FnOnce() -> String) -> Result<Row, Status> {
    match row {
        Some(row) => Ok(row),
        // Planted bug grpc-unknown-for-missing: the driver's "no rows" passed on as it came, so
        // the library answers it UNKNOWN.
        None if bugs::is(Bug::GrpcUnknownForMissing) => Err(Status::unknown("no rows returned")),
        None => Err(Status::not_found(missing())),
    }
}

/// The call's deadline, from `grpc-timeout` (an integer of at most 8 digits and a unit: `H`, `M`,
/// `S`, `m`, `u` or `n`), counted from now; `None` without one (or with one that is malformed).
fn deadline<T>(request: &tonic::Request<T>) -> Option<Instant> {
    let now = Instant::now();
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    Some(now + parse_timeout(value)?)
}

fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match &value[digits.len()..] {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `work`, or `DEADLINE_EXCEEDED` once the deadline passes (and `work` is dropped, with whatever
/// it was waiting on).
async fn within<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded())),
        None => work.await,
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("The call's deadline passed before its answer was ready.")
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, Status> {
    pool.get().await.map_err(|e| {
        eprintln!("error: grpc: no database connection: {e}");
        Status::unavailable("The database is unavailable; try again later.")
    })
}

/// A database failure as the caller sees it; the cause goes to the log [grpc-2.4].
fn internal(method: &str, error: tokio_postgres::Error) -> Status {
    eprintln!("error: grpc {method}: {error}");
    Status::internal("internal error")
}

fn order(row: &Row) -> pb::Order {
    let created_at: DateTime<Utc> = row.get("created_at");
    pb::Order {
        id: row.get("id"),
        customer_id: row.get("customer_id"),
        status: row.get("status"),
        total_cents: row.get("total_cents"),
        created_at: created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    }
}

fn customer(row: &Row) -> pb::Customer {
    pb::Customer {
        id: row.get("id"),
        email: row.get("email"),
        name: row.get("name"),
        loyalty_tier: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_timeout("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("5M"), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout("7n"), Some(Duration::from_nanos(7)));
        for wrong in ["", "m", "100", "123456789m", "1.5S", "-1S", "10s", "10 S"] {
            assert_eq!(parse_timeout(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(email_violation("a@b"), None);
        assert_eq!(
            email_violation(&format!("{}@example.org", "é".repeat(200))),
            None
        );
        let long = format!("{}@example.org", "x".repeat(243));
        assert_eq!(long.chars().count(), 255);
        assert!(email_violation(&long).is_some());
        for wrong in ["", "@", "a@", "@b", "ab", "a@b@c"] {
            assert!(email_violation(wrong).is_some(), "{wrong:?}");
        }
    }

    #[test]
    fn grpc_content_types() {
        let request = |content_type: &str| {
            Request::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert!(is_grpc(&request("application/grpc")));
        assert!(is_grpc(&request("application/grpc+proto")));
        assert!(!is_grpc(&request("application/json")));
        assert!(!is_grpc(&request("application/grp")));
    }

    #[test]
    fn the_drifted_descriptors_rename_one_message_only() {
        let has = |bytes: &[u8], name: &str| {
            bytes
                .windows(name.len())
                .any(|window| window == name.as_bytes())
        };
        assert!(has(SHOP_DESCRIPTORS, "GetOrderRequest"));
        assert!(!has(SHOP_DESCRIPTORS, "OrderLookup"));
        // The message and the method's input type, both renamed; the fields stay.
        assert!(has(DRIFTED_DESCRIPTORS, "OrderLookup"));
        assert!(!has(DRIFTED_DESCRIPTORS, "GetOrderRequest"));
        assert!(has(DRIFTED_DESCRIPTORS, "total_cents"));
    }
}
