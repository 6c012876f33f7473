//! Bookings kept in PostgreSQL, and a database that goes away: task 7 of exercise
//! `integration-resilience` (task statement: `exercises/integration-resilience/README.md`).
//!
//! `POST /bookings` and `GET /bookings/{id}` [res-7.1..3] use a pool of their own, apart from the
//! one the other exercises share, because its limits are the point of the task: every database
//! operation (taking a connection, opening one, the query) shares one budget of
//! [`DATABASE_BUDGET`], and a request that runs out of it answers `503` at once [res-7.6]. A
//! connection whose query was given up on is taken out of the pool and closed, never handed to
//! the next request with an answer still owed on it, and never lost: the pool opens a fresh one
//! on demand, so the service serves again as soon as the database does [res-7.8]. Connections a
//! dropped database closed are recycled away by the pool's check (`is_closed`).
//!
//! `GET /readyz` runs `SELECT 1` under the same budget [res-7.4]; `GET /healthz` (in `main.rs`)
//! and the quotes never touch the database [res-7.5] [res-7.7].

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde_json::{json, Value};
use tokio::time::{timeout_at, Instant};
use tokio_postgres::NoTls;

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody};
use crate::problem::Problem;
use crate::AppState;

/// Everything one request does with the database, from taking a connection to the last row:
/// well inside the 2 s the README allows for the answer [res-7.6].
const DATABASE_BUDGET: Duration = Duration::from_millis(1_500);
/// Connections for bookings and readiness; a hang ties each up for one budget at most.
const POOL_SIZE: usize = 8;
const MAX_PRICE_CENTS: i64 = 10_000_000;

pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bookings (
    id BIGSERIAL PRIMARY KEY,
    weight_grams INTEGER NOT NULL,
    postcode TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// The bookings' own way to the database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Planted bug res-db-connect-once: the one connection opened at start-up.
    once: Option<std::sync::Arc<tokio_postgres::Client>>,
}

impl Store {
    /// A pool with short limits on every wait; under res-db-no-timeout, the drivers' defaults
    /// (wait for ever), and under res-db-connect-once one connection made now.
    pub async fn connect(mut config: tokio_postgres::Config) -> Result<Store, String> {
        let unbounded = bugs::is(Bug::ResDbNoTimeout);
        if !unbounded {
            config.connect_timeout(DATABASE_BUDGET);
        }
        let once = if bugs::is(Bug::ResDbConnectOnce) {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|error| format!("cannot connect for bookings: {error}"))?;
            tokio::spawn(connection);
            Some(std::sync::Arc::new(client))
        } else {
            None
        };
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let mut builder = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1);
        if !unbounded {
            builder = builder
                .wait_timeout(Some(DATABASE_BUDGET))
                .create_timeout(Some(DATABASE_BUDGET))
                .recycle_timeout(Some(DATABASE_BUDGET));
        }
        let pool = builder
            .build()
            .map_err(|error| format!("cannot create the bookings pool: {error}"))?;
        Ok(Store { pool, once })
    }

    /// Runs one statement with the request's budget and returns its rows.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, Problem> {
        // Planted bug res-db-no-timeout: no budget at all (an hour stands in for "for ever").
        let budget = if bugs::is(Bug::ResDbNoTimeout) {
            Duration::from_secs(3_600)
        } else {
            DATABASE_BUDGET
        };
        let deadline = Instant::now() + budget;
        if let Some(client) = &self.once {
            return match timeout_at(deadline, client.query(sql, params)).await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(error)) => Err(unavailable(&error.to_string())),
                Err(_) => Err(unavailable("no answer within the budget")),
            };
        }
        let connection = match timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(unavailable(&error.to_string())),
            Err(_) => return Err(unavailable("no connection within the budget")),
        };
        match timeout_at(deadline, connection.query(sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(error)) => {
                // A connection the database closed or broke is not put back.
                if error.is_closed() || connection.is_closed() {
                    discard(connection);
                }
                Err(unavailable(&error.to_string()))
            }
            Err(_) => {
                give_up(connection);
                Err(unavailable("no answer within the budget"))
            }
        }
    }
}

/// A connection whose query was given up on: an answer is still owed on it, so it is taken out
/// of the pool and closed (its slot is free for a fresh connection).
fn give_up(connection: Object) {
    // Planted bug res-db-leak-on-timeout: the connection is forgotten, and its pool slot with it.
    if bugs::is(Bug::ResDbLeakOnTimeout) {
        std::mem::forget(connection);
        return;
    }
    discard(connection);
}

fn discard(connection: Object) {
    drop(Object::take(connection));
}

/// The database did not answer: `503`, whatever the driver said (logged, never sent).
fn unavailable(cause: &str) -> Problem {
    eprintln!("bookings: database unavailable: {cause}");
    // Planted bug res-db-errors-500: a database outage looks like a bug in the service.
    if bugs::is(Bug::ResDbErrors500) {
        return Problem::internal(cause);
    }
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database is not answering; try again in a few seconds.",
    )
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/bookings", allow(post(create_booking), "POST"))
        .route("/bookings/{id}", allow(get(read_booking), "GET, HEAD"))
}

/// `POST /bookings` [res-7.1] [res-7.2].
async fn create_booking(
    State(state): State<AppState>,
    body: Result<JsonBody, Problem>,
) -> Result<Response, Problem> {
    let JsonBody(body) = body?;
    let (weight_grams, postcode, price_cents) = validate(&body)?;
    let rows = state
        .bookings
        .query(
            "INSERT INTO bookings (weight_grams, postcode, price_cents) VALUES ($1, $2, $3)
             RETURNING id",
            &[&(weight_grams as i32), &postcode, &price_cents],
        )
        .await?;
    let id: i64 = rows
        .first()
        .map(|row| row.get(0))
        .ok_or_else(|| Problem::internal("INSERT ... RETURNING gave no row"))?;
    let booking = json!({
        "id": id.to_string(),
        "weight_grams": weight_grams,
        "postcode": postcode,
        "price_cents": price_cents,
    });
    let location = HeaderValue::from_str(&format!("/bookings/{id}")).expect("ASCII");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(booking),
    )
        .into_response())
}

/// `GET /bookings/{id}` [res-7.3]: any id that names no booking answers 404.
async fn read_booking(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Problem> {
    let not_found = || Problem::not_found("There is no booking with this id.");
    let id = id
        .ok()
        .and_then(|Path(id)| id.parse::<i64>().ok())
        .ok_or_else(not_found)?;
    let rows = state
        .bookings
        .query(
            "SELECT weight_grams, postcode, price_cents FROM bookings WHERE id = $1",
            &[&id],
        )
        .await?;
    let row = rows.first().ok_or_else(not_found)?;
    let weight_grams: i32 = row.get(0);
    let postcode: String = row.get(1);
    let price_cents: i64 = row.get(2);
    Ok(Json(json!({
        "id": id.to_string(),
        "weight_grams": weight_grams,
        "postcode": postcode,
        "price_cents": price_cents,
    })))
}

/// The booking's members, or a `422` naming each one that breaks the rules.
fn validate(body: &Value) -> Result<(i64, String, i64), Problem> {
    use crate::problem::FieldError;
    let mut errors = Vec::new();
    let weight_grams = body["weight_grams"]
        .as_i64()
        .filter(|&g| (1..=30_000).contains(&g));
    if weight_grams.is_none() {
        errors.push(FieldError::new(
            "/weight_grams",
            "must be an integer from 1 to 30000 (grams)",
        ));
    }
    let postcode = body["postcode"]
        .as_str()
        .filter(|p| crate::resilience::is_postcode(p));
    if postcode.is_none() {
        errors.push(FieldError::new(
            "/postcode",
            "must be 1 to 10 letters and digits",
        ));
    }
    // Planted bug res-booking-price-unchecked: any integer price is stored.
    let price_limit = if bugs::is(Bug::ResBookingPriceUnchecked) {
        i64::MAX
    } else {
        MAX_PRICE_CENTS
    };
    let price_cents = body["price_cents"]
        .as_i64()
        .filter(|&p| (0..=price_limit).contains(&p));
    if price_cents.is_none() {
        errors.push(FieldError::new(
            "/price_cents",
            "must be an integer from 0 to 10000000",
        ));
    }
    match (weight_grams, postcode, price_cents) {
        (Some(w), Some(p), Some(c)) if errors.is_empty() => Ok((w, p.to_string(), c)),
        _ => Err(Problem::invalid(errors)),
    }
}

/// `GET /readyz` [res-7.4]: `SELECT 1` within the budget. (The observability exercise routes
/// the same path: ready means the database answers, which holds there too.)
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    // Planted bug res-readyz-static: ready as soon as it listens, whatever the database does.
    if bugs::is(Bug::ResReadyzStatic) {
        return Ok(Json(json!({ "status": "ready" })));
    }
    state.bookings.query("SELECT 1", &[]).await.map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the database is not answering.",
        )
    })?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /healthz` under the planted bug res-healthz-checks-db: liveness asks the database too.
pub async fn liveness_asks_the_database(state: &AppState) -> Result<(), Problem> {
    state.bookings.query("SELECT 1", &[]).await.map(|_| ())
}

/// Does nothing but under the planted bug res-db-gates-everything: every route but the health
/// checks answers 503 unless the database answers `SELECT 1` first.
pub async fn database_gate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let exempt = matches!(request.uri().path(), "/healthz" | "/readyz");
    if bugs::is(Bug::ResDbGatesEverything) && !exempt {
        if let Err(problem) = state.bookings.query("SELECT 1", &[]).await {
            return problem.into_response();
        }
    }
    next.run(request).await
}
