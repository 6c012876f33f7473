//! Starter service: it connects to PostgreSQL, answers GET /healthz, and implements nothing else.
//!
//! The grader sets PORT and DATABASE_URL. Every other request gets 501 Not Implemented as problem
//! details (RFC 9457) until you build the exercise: README.md says where its tasks are.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// What every handler can reach; add your own state here.
#[derive(Clone)]
struct AppState {
    #[allow(dead_code)] // until the first handler queries it
    db: Arc<tokio_postgres::Client>,
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        fail("DATABASE_URL is not set: this service needs PostgreSQL (grader check sets it)")
    });
    // One connection for now; a pool (deadpool-postgres, bb8) is the next step when requests
    // should not wait on each other.
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot connect to PostgreSQL at DATABASE_URL: {e}")));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            fail(&format!("the database connection failed: {e}"));
        }
    });
    if let Err(e) = db.simple_query("SELECT 1").await {
        fail(&format!("cannot query PostgreSQL at DATABASE_URL: {e}"));
    }
    let state = AppState { db: Arc::new(db) };

    let app = Router::new()
        .route("/healthz", get(healthz).fallback(not_implemented))
        .fallback(not_implemented)
        .layer(middleware::from_fn(log_request))
        .with_state(state);

    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let addr = format!("{host}:{port}");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
    println!("listening on {addr}");
    axum::serve(listener, app).await.unwrap();
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn not_implemented(request: Request) -> Response {
    let detail = format!(
        "{} {} is not implemented yet",
        request.method(),
        request.uri().path()
    );
    let body = json!({
        "type": "about:blank",
        "title": "Not Implemented",
        "status": 501,
        "detail": detail,
    });
    (
        StatusCode::NOT_IMPLEMENTED,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// Logs one line per request: method, path, status.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    println!("{method} {path} {}", response.status().as_u16());
    response
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(1)
}
