//! The reference service: a correct implementation of every grader exercise, used to test the
//! grader itself. `REFSVC_BUG` turns it into a known-bad variant (see `bugs.rs` and README.md).
//!
//! Environment: `PORT` (listens on 127.0.0.1), `DATABASE_URL` (PostgreSQL; tables are created at
//! start-up), optionally `REFSVC_BUG`, and the exercises' own (read on first use): `PROFILES_URL`
//! and `CACHE_TTL_SECONDS` (caching), `AUTH_ISSUER_URL`, `AUTH_AUDIENCE` and `ALLOWED_ORIGIN`
//! (security), `FRAUD_URL` (transactions).

mod bugs;
mod caching;
mod http;
mod orders;
mod pagination;
mod payments;
mod problem;
mod products;
mod security;
mod transactions;

use std::error::Error;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

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
];

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
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

    let pool = connect(&config.database_url)?;
    migrate(&pool).await?;

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
    axum::serve(listener, app(AppState { pool }))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    println!("stopped");
    Ok(())
}

fn connect(database_url: &str) -> Result<Pool, String> {
    let config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|error| format!("DATABASE_URL is not a PostgreSQL URL: {error}"))?;
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
        .fallback(http::unknown_route)
        .layer(CatchPanicLayer::custom(http::panic_response))
        // nosniff and CORS on every response, errors and preflights included (security only).
        .layer(middleware::from_fn(security::browser_headers))
        // Outermost, so that the log sees the final status, panics included.
        .layer(middleware::from_fn(http::log_request))
        .with_state(state)
}

/// Up as soon as it listens: the tables were created before.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Resolves on SIGTERM (how the grader stops services) or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot install the SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("shutting down");
}
