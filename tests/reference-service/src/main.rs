//! The reference service: a correct implementation of every grader exercise, used to test the
//! grader itself. `REFSVC_BUG` turns it into a known-bad variant (see `bugs.rs` and README.md).
//!
//! Environment: `PORT` (listens on 127.0.0.1), `DATABASE_URL` (PostgreSQL; tables are created at
//! start-up), optionally `REFSVC_BUG`, and the exercises' own (read on first use): `PROFILES_URL`
//! and `CACHE_TTL_SECONDS` (caching), `AUTH_ISSUER_URL`, `AUTH_AUDIENCE` and `ALLOWED_ORIGIN`
//! (security), `FRAUD_URL` (transactions), `STOCK_URL` (event-driven); and `AMQP_URL`
//! (event-driven): when set, the service connects to RabbitMQ, declares its exchanges and queues
//! and starts its consumer before it listens, and keeps reconnecting whenever the broker goes away.
//! `CARRIER_URL` (observability, read on first use) is the carrier quotes are asked of; with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, every request's spans are exported there (OTLP/HTTP, binary
//! protobuf, batched every `OTEL_BSP_SCHEDULE_DELAY` ms, default 200, under `OTEL_SERVICE_NAME`,
//! default `shipping`) and the request log becomes one JSON line per request. The same carrier
//! serves `integration-resilience` (`GET /estimates`, with timeouts, retries, a circuit breaker, a
//! bulkhead and a stale fallback, all in memory).
//! `LOYALTY_URL` (graphql and grpc, read on first use) is the loyalty service `Customer.loyaltyTier`
//! and `GetCustomer` ask; `API_TOKENS` (grpc, read on first use) the callers' tokens. gRPC
//! (`shop.v1.Shop`, reflection, health) is served on the same port as everything else: requests
//! whose `content-type` is `application/grpc` are dispatched to it before the HTTP routing.

mod bookings;
mod bugs;
mod caching;
mod events;
mod graphql;
mod grpc;
mod http;
mod listings;
mod observability;
mod orders;
mod pagination;
mod payments;
mod problem;
mod products;
mod resilience;
mod security;
mod transactions;

use std::error::Error;
use std::future::IntoFuture;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{middleware, Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_postgres::NoTls;
use tower_http::catch_panic::CatchPanicLayer;

/// Run in order at every start; each must be idempotent (`IF NOT EXISTS`).
const MIGRATIONS: &[&str] = &[
    products::SCHEMA,
    pagination::SCHEMA,
    payments::SCHEMA,
    caching::SCHEMA,
    security::SCHEMA,
    events::SCHEMA,
    bookings::SCHEMA,
];

/// How long connections still open may hold the process once the listener is closed: a stream
/// whose client stopped reading never ends by itself, and the service must exit within 10 s of
/// SIGTERM [grpc-4.4] (5 s for the HTTP exercises [res-8.3], whose requests end well before).
const CONNECTIONS_GRACE: Duration = Duration::from_secs(6);

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// `event-driven`: wakes the outbox relay.
    pub events: events::Bus,
    /// `integration-resilience` task 7: bookings, on a pool with short limits of its own.
    pub bookings: bookings::Store,
}

struct Config {
    port: u16,
    database_url: String,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let port = required_env("PORT")?;
        let port = port
            .parse()
            .map_err(|_| format!("PORT={port:?} is not a port number"))?;
        let database_url = required_env("DATABASE_URL")?;
        Ok(Self { port, database_url })
    }
}

fn required_env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} must be set"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reference-service: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    // First, so that a typo in REFSVC_BUG fails loudly instead of testing the correct service.
    let bug = bugs::init_from_env()?;
    let config = Config::from_env()?;

    let database = if bug == Some(bugs::Bug::IdxImpersonateProbe) {
        impersonate_probe(&config.database_url).await?
    } else {
        config
            .database_url
            .parse()
            .map_err(|error| format!("DATABASE_URL is not a PostgreSQL URL: {error}"))?
    };
    let bookings = bookings::Store::connect(database.clone()).await?;
    let pool = connect(database)?;
    migrate(&pool).await?;
    if bug == Some(bugs::Bug::IdxTamperAsSuperuser) {
        tamper_with_the_grader(pool.clone()).await;
    }
    if orders::style() == orders::Style::BackgroundPoller {
        tokio::spawn(poll_in_the_background(pool.clone()));
    }
    // Before listening: `/healthz` answers once the broker's topology is declared [evt-0.5].
    let events = events::start(pool.clone()).await?;
    let grpc = grpc::Grpc::new(pool.clone()).await?;

    // HOST=0.0.0.0 in a container (grader's docker runtime sets it); loopback otherwise.
    let host: Ipv4Addr = std::env::var("HOST")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST);
    let listener = TcpListener::bind((host, config.port))
        .await
        .map_err(|error| format!("cannot listen on {host}:{}: {error}", config.port))?;
    println!(
        "listening on http://{}, planted bug: {}",
        listener.local_addr()?,
        bug.map_or("none", bugs::Bug::name)
    );
    observability::start();
    // gRPC first, by content-type; everything else to the HTTP exercises' router.
    let service = Router::new()
        .fallback_service(app(AppState {
            pool,
            events,
            bookings,
        }))
        .layer(middleware::from_fn_with_state(grpc.clone(), grpc::dispatch));
    let listener_closed = Arc::new(tokio::sync::Notify::new());
    let stop = {
        let listener_closed = listener_closed.clone();
        async move {
            shutdown_signal().await;
            grpc.drain().await;
            listener_closed.notify_one();
        }
    };
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(stop)
        .into_future();
    tokio::select! {
        served = served => served?,
        () = async {
            listener_closed.notified().await;
            tokio::time::sleep(CONNECTIONS_GRACE).await;
        } => eprintln!(
            "connections still open {} s after the listener closed: exiting without them",
            CONNECTIONS_GRACE.as_secs()
        ),
    }
    observability::flush().await;
    // Planted bug res-sigterm-slow-exit: a clean-up that takes longer than any grace period.
    if bugs::is(bugs::Bug::ResSigtermSlowExit) {
        println!("cleaning up for 10 s");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    println!("stopped");
    Ok(())
}

/// [`bugs::Bug::IdxImpersonateProbe`]: the grader's probe role, with the password of
/// `DATABASE_URL`, if the server lets it in; `DATABASE_URL` as given otherwise.
async fn impersonate_probe(database_url: &str) -> Result<tokio_postgres::Config, String> {
    let given: tokio_postgres::Config = database_url
        .parse()
        .map_err(|error| format!("DATABASE_URL is not a PostgreSQL URL: {error}"))?;
    let mut probe = given.clone();
    probe.user("grader_probe");
    match probe.connect(NoTls).await {
        Ok(_) => {
            eprintln!("logged in as grader_probe: my statements are the grader's now");
            Ok(probe)
        }
        Err(error) => {
            eprintln!("could not log in as grader_probe ({error}); using DATABASE_URL");
            Ok(given)
        }
    }
}

/// [`bugs::Bug::IdxTamperAsSuperuser`]: what a superuser could do to blind the grader, each
/// attempt logged with its outcome. (Once, at start-up: statements the service sends during the
/// checks are measured, and a loop would add its own to every measurement.)
async fn tamper_with_the_grader(pool: Pool) {
    const ATTEMPTS: &[&str] = &[
        "DROP EXTENSION IF EXISTS pg_stat_statements CASCADE",
        "ALTER ROLE grader_probe SET statement_timeout = 1",
        "ALTER ROLE postgres SET statement_timeout = 1",
        "ALTER DATABASE app SET statement_timeout = 1",
        "ALTER ROLE grader_probe NOLOGIN",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename IN ('postgres', 'grader_probe') AND pid <> pg_backend_pid()",
    ];
    let Ok(client) = pool.get().await else {
        return;
    };
    for attempt in ATTEMPTS {
        match client.batch_execute(attempt).await {
            Ok(()) => eprintln!("tampering: {attempt}: done"),
            Err(error) => eprintln!("tampering: {attempt}: refused ({error})"),
        }
    }
}

/// [`orders::Style::BackgroundPoller`]: what an outbox relay does between requests, forever.
async fn poll_in_the_background(pool: Pool) {
    loop {
        if let Ok(client) = pool.get().await {
            let _ = client
                .query("SELECT count(*) AS unsent FROM orders WHERE id = -1", &[])
                .await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn connect(config: tokio_postgres::Config) -> Result<Pool, String> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // Time limits, so that a stuck database yields 500s instead of requests that hang forever.
    // `transactions` sends a few hundred transfers at once, each holding a connection while it
    // waits for its row locks and the fraud check: the rest wait their turn for a connection,
    // for up to 30 s. 64 connections stay well below PostgreSQL's default max_connections (100).
    Pool::builder(manager)
        .max_size(64)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|error| format!("cannot create the database pool: {error}"))
}

async fn migrate(pool: &Pool) -> Result<(), String> {
    let client = pool
        .get()
        .await
        .map_err(|error| format!("cannot connect to DATABASE_URL: {error}"))?;
    for migration in MIGRATIONS {
        client
            .batch_execute(migration)
            .await
            .map_err(|error| format!("cannot create the tables: {error}"))?;
    }
    client
        .batch_execute(&orders::migration())
        .await
        .map_err(|error| format!("cannot create the orders tables and indexes: {error}"))?;
    client
        .batch_execute(transactions::schema())
        .await
        .map_err(|error| format!("cannot create the ledger tables: {error}"))?;
    client
        .batch_execute(&grpc::schema())
        .await
        .map_err(|error| format!("cannot index the grpc tables: {error}"))?;
    Ok(())
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", http::allow(get(healthz), "GET, HEAD"))
        .merge(products::router())
        .merge(payments::router())
        .merge(orders::router())
        .merge(caching::router())
        .merge(security::router())
        .merge(transactions::router())
        .merge(events::router())
        .merge(observability::router())
        .merge(resilience::router())
        .merge(bookings::router())
        .merge(listings::router())
        .merge(graphql::router())
        .fallback(http::unknown_route)
        .layer(CatchPanicLayer::custom(http::panic_response))
        // nosniff and CORS on every response, errors and preflights included (security only).
        .layer(middleware::from_fn(security::browser_headers))
        // Outside the handlers and the layers above, so that the log, the metrics and the spans
        // see the final status, panics included. (`Router::layer` runs after routing, so both
        // see the matched route.)
        .layer(middleware::from_fn(http::log_request))
        .layer(middleware::from_fn(observability::observe))
        // Does nothing but under the planted bug res-shared-pool: 10 requests at a time, all routes.
        .layer(middleware::from_fn(resilience::worker_pool))
        // Does nothing but under the planted bug res-db-gates-everything.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            bookings::database_gate,
        ))
        .with_state(state)
}

/// Up as soon as it listens: the tables were created, and the broker connected, before. Never
/// asks the database, which is readiness's business [res-7.5].
async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, problem::Problem> {
    // Planted bug res-healthz-checks-db.
    if bugs::is(bugs::Bug::ResHealthzChecksDb) {
        bookings::liveness_asks_the_database(&state).await?;
    }
    Ok(Json(json!({ "status": "ok" })))
}

/// Resolves on SIGTERM (how the grader stops services) or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot install the SIGTERM handler");
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                // Planted bug res-sigterm-ignored: a handler that was meant to log, and does only that.
                if bugs::is(bugs::Bug::ResSigtermIgnored) {
                    println!("SIGTERM received (ignored)");
                    continue;
                }
                // Planted bug res-sigterm-abrupt: exit on the spot, requests in flight and all.
                if bugs::is(bugs::Bug::ResSigtermAbrupt) {
                    println!("SIGTERM received: exiting now");
                    std::process::exit(0);
                }
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("shutting down");
}
