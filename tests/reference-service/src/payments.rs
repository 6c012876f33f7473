//! Payments charged exactly once: exercise `idempotency` (task statement:
//! `exercises/idempotency/README.md`).
//!
//! The design follows brandur.org/idempotency-keys, in three atomic phases:
//!
//! 1. **Claim** the key: `INSERT ... ON CONFLICT (client_id, key) DO NOTHING`, committed at once.
//!    The `UNIQUE (client_id, key)` primary key makes the database pick exactly one winner among
//!    concurrent requests; a loser reads the row and answers 422 (another body), 409 (still in
//!    flight) or the stored response (a replay).
//! 2. **Charge** at the provider, outside any transaction (never hold a transaction, or a row
//!    lock, across a network call).
//! 3. **Complete** in one transaction: insert the payment and store the response under the key.
//!    If the provider failed, nothing was charged: the claim is deleted (the key is released) and
//!    the client may retry with the same key.
//!
//! Keeping the claim in the same transaction as phase 3 would make concurrent retries block on
//! the unique index until the first commits, instead of answering 409 while it is in flight.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody};
use crate::problem::{FieldError, Problem};
use crate::AppState;

pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS payments (
        id           uuid        PRIMARY KEY,
        client_id    text        NOT NULL,
        order_id     text        NOT NULL,
        amount_cents bigint      NOT NULL,
        currency     text        NOT NULL,
        status       text        NOT NULL,
        charge_id    text        NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        client_id         text        NOT NULL,
        key               text        NOT NULL,
        fingerprint       text        NOT NULL,
        response_status   integer,
        response_body     text,
        response_location text,
        created_at        timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT idempotency_keys_pkey PRIMARY KEY (client_id, key)
    );
    -- Used only by the planted bug idem-check-then-insert: the same table, no constraint.
    CREATE TABLE IF NOT EXISTS idempotency_keys_unconstrained (
        client_id         text        NOT NULL,
        key               text        NOT NULL,
        fingerprint       text        NOT NULL,
        response_status   integer,
        response_body     text,
        response_location text,
        created_at        timestamptz NOT NULL DEFAULT now()
    );
";

const CLIENT_HEADER: &str = "x-client-id";
const KEY_HEADER: &str = "idempotency-key";
const MAX_KEY_CHARS: usize = 255;
const MAX_AMOUNT_CENTS: i64 = 100_000_000;
/// How long the provider may take before the charge counts as failed.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/payments", allow(post(create), "POST"))
        .route("/payments/{id}", allow(get(read), "GET, HEAD"))
}

/// A validated `POST /payments` body.
struct PaymentInput {
    order_id: String,
    amount_cents: i64,
    currency: String,
}

impl PaymentInput {
    fn validate(body: &Value) -> Result<Self, Problem> {
        let mut errors = Vec::new();
        let Some(object) = body.as_object() else {
            return Err(Problem::invalid(vec![FieldError::new(
                "",
                "must be a JSON object",
            )]));
        };
        let order_id = match object.get("order_id").and_then(Value::as_str) {
            Some(s)
                if !s.is_empty()
                    && (s.chars().count() <= 100 || bugs::is(Bug::IdemOrderIdUnbounded)) =>
            {
                s.to_string()
            }
            _ => {
                errors.push(FieldError::new(
                    "/order_id",
                    "must be a string of 1 to 100 characters",
                ));
                String::new()
            }
        };
        let amount_cents = match object.get("amount_cents").and_then(Value::as_i64) {
            Some(n) if (1..=MAX_AMOUNT_CENTS).contains(&n) => n,
            // Planted bug idem-amount-zero-accepted: `>= 0` where `>= 1` was meant.
            Some(0) if bugs::is(Bug::IdemAmountZeroAccepted) => 0,
            _ => {
                errors.push(FieldError::new(
                    "/amount_cents",
                    format!("must be an integer from 1 to {MAX_AMOUNT_CENTS}"),
                ));
                0
            }
        };
        let currency = match object.get("currency").and_then(Value::as_str) {
            Some(s)
                if s.len() == 3
                    && (s.chars().all(|c| c.is_ascii_uppercase())
                        || bugs::is(Bug::IdemCurrencyAnyCase)) =>
            {
                s.to_string()
            }
            _ => {
                errors.push(FieldError::new(
                    "/currency",
                    "must be three upper-case letters, like EUR",
                ));
                String::new()
            }
        };
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        Ok(Self {
            order_id,
            amount_cents,
            currency,
        })
    }
}

/// The body as canonical JSON (object keys sorted at every level): the same request always has
/// the same fingerprint, whatever order the client wrote its fields in.
fn fingerprint(body: &Value) -> String {
    // Planted bug idem-fingerprint-partial: only the fields thought to identify a payment.
    if bugs::is(Bug::IdemFingerprintPartial) {
        return format!("{}|{}", body["order_id"], body["amount_cents"]);
    }
    canonical_json(body)
}

/// The value as canonical JSON text (object keys sorted at every level), shared by the
/// exercises that fingerprint a request body for an idempotency key.
pub(crate) fn canonical_json(body: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let sorted: std::collections::BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, canonical(v))).collect();
                json!(sorted)
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    canonical(body).to_string()
}

fn client_id(headers: &HeaderMap) -> Result<String, Problem> {
    match headers.get(CLIENT_HEADER).and_then(|v| v.to_str().ok()) {
        Some(c) if !c.trim().is_empty() => Ok(c.trim().to_string()),
        _ if bugs::is(Bug::IdemClientOptional) => Ok("anonymous".to_string()),
        _ => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "Send X-Client-Id: it names the client the payment belongs to.",
        )),
    }
}

/// The key, or `None` when it is missing and the planted bug makes keys optional.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(raw) = headers.get(KEY_HEADER) else {
        if bugs::is(Bug::IdemKeyOptional) || bugs::is(Bug::IdemKeyCheckedAfterCharge) {
            return Ok(None);
        }
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "POST /payments requires an Idempotency-Key header: a unique value per payment attempt, sent again with every retry.",
        ));
    };
    let text = raw.to_str().unwrap_or_default();
    // RFC 8941 sf-string form: "abc" means the key abc.
    let key = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|_| !bugs::is(Bug::IdemQuotedKeyDistinct))
        .unwrap_or(text);
    if bugs::is(Bug::IdemKeyUnvalidated) {
        return Ok(Some(key.to_string()));
    }
    // Planted bug idem-key-max-254: `<` where `<=` was meant.
    let longest = if bugs::is(Bug::IdemKeyMax254) {
        MAX_KEY_CHARS - 1
    } else {
        MAX_KEY_CHARS
    };
    let valid = (1..=longest).contains(&key.len())
        && (key.bytes().all(|b| (0x21..=0x7e).contains(&b)) || bugs::is(Bug::IdemKeyAnyChars));
    if !valid {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters."),
        ));
    }
    Ok(Some(key.to_string()))
}

/// `POST /payments`.
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let client = client_id(&headers)?;
    let key = idempotency_key(&headers)?;
    // Invalid bodies are rejected before the key is claimed, so they are never stored.
    let input = match PaymentInput::validate(&body) {
        Ok(input) => input,
        Err(problem) => {
            if let (Some(key), true) = (&key, bugs::is(Bug::IdemInvalidRemembered)) {
                remember_invalid(&state, &client, key, &fingerprint(&body)).await?;
            }
            return Err(problem);
        }
    };
    let Some(key) = key else {
        if bugs::is(Bug::IdemKeyCheckedAfterCharge) {
            // Planted bug: charges, then fails to store the payment under a missing key.
            let _ = charge(&input).await;
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "POST /payments requires an Idempotency-Key header.",
            ));
        }
        // Planted bug idem-key-optional: no key, no protection.
        return execute(&state, &client, &input).await;
    };
    let print = fingerprint(&body);
    // Planted bug idem-key-not-scoped: every client shares one key space.
    let scope = if bugs::is(Bug::IdemKeyNotScoped) {
        String::new()
    } else {
        client.clone()
    };
    if bugs::is(Bug::IdemCheckThenInsert) {
        return check_then_insert(&state, &client, &scope, &key, &print, &input).await;
    }

    let db = state.pool.get().await?;
    // A claim that disappears between our INSERT and SELECT was released by a failed attempt;
    // try to claim it again a couple of times before telling the client to retry.
    for _ in 0..3 {
        let claimed = db
            .execute(
                "INSERT INTO idempotency_keys (client_id, key, fingerprint)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (client_id, key) DO NOTHING",
                &[&scope, &key, &print],
            )
            .await?;
        if claimed == 1 {
            drop(db);
            return run_claimed(&state, &client, &scope, &key, &input).await;
        }
        let row = db
            .query_opt(
                "SELECT fingerprint, response_status, response_body, response_location
                 FROM idempotency_keys WHERE client_id = $1 AND key = $2",
                &[&scope, &key],
            )
            .await?;
        if let Some(row) = row {
            return Ok(existing(
                &print,
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
            ));
        }
    }
    Err(in_flight())
}

/// Planted bug idem-invalid-remembered: the key is claimed for an invalid body and its 422 kept,
/// so the corrected retry (another body under the same key) is refused as a mismatch.
async fn remember_invalid(
    state: &AppState,
    client: &str,
    key: &str,
    print: &str,
) -> Result<(), Problem> {
    let body = json!({
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "The payment is invalid.",
    })
    .to_string();
    state
        .pool
        .get()
        .await?
        .execute(
            "INSERT INTO idempotency_keys (client_id, key, fingerprint, response_status, response_body)
             VALUES ($1, $2, $3, 422, $4)
             ON CONFLICT (client_id, key) DO NOTHING",
            &[&client, &key, &print, &body],
        )
        .await?;
    Ok(())
}

/// Charges and completes a claimed key; on a provider failure, releases it.
async fn run_claimed(
    state: &AppState,
    client: &str,
    scope: &str,
    key: &str,
    input: &PaymentInput,
) -> Result<Response, Problem> {
    let charge = match charge(input).await {
        Ok(c) => c,
        Err(reason) => {
            let problem = provider_failed(&reason);
            let db = state.pool.get().await?;
            if bugs::is(Bug::IdemStoresFailure) {
                db.execute(
                    "UPDATE idempotency_keys SET response_status = 502, response_body = $3
                     WHERE client_id = $1 AND key = $2",
                    &[&scope, &key, &provider_failed_body()],
                )
                .await?;
            } else {
                db.execute(
                    "DELETE FROM idempotency_keys WHERE client_id = $1 AND key = $2",
                    &[&scope, &key],
                )
                .await?;
            }
            return Err(problem);
        }
    };
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let (body, location) = insert_payment(&tx, client, input, &charge).await?;
    tx.execute(
        "UPDATE idempotency_keys
         SET response_status = 201, response_body = $3, response_location = $4
         WHERE client_id = $1 AND key = $2",
        &[&scope, &key, &body.to_string(), &location],
    )
    .await?;
    tx.commit().await?;
    Ok(created(body, location))
}

/// What a request that found its key already claimed gets.
fn existing(
    print: &str,
    stored_print: String,
    status: Option<i32>,
    body: Option<String>,
    location: Option<String>,
) -> Response {
    if stored_print != print && !bugs::is(Bug::IdemPayloadNotCompared) {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This Idempotency-Key was already used with a different request body; use a new key for a new payment.",
        )
        .into_response();
    }
    let Some(status) = status else {
        return in_flight().into_response();
    };
    if bugs::is(Bug::IdemReplayConflict) {
        return Problem::new(
            StatusCode::CONFLICT,
            "This Idempotency-Key was already used.",
        )
        .into_response();
    }
    replay(status, body.unwrap_or_default(), location)
}

fn in_flight() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "A request with this Idempotency-Key is still being processed; retry later to get its result.",
    )
}

fn provider_failed_body() -> String {
    json!({
        "type": "about:blank",
        "title": "Bad Gateway",
        "status": 502,
        "detail": "The payment provider failed; nothing was charged. Retry with the same Idempotency-Key.",
    })
    .to_string()
}

fn provider_failed(reason: &str) -> Problem {
    eprintln!("payment provider failed: {reason}");
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "The payment provider failed; nothing was charged. Retry with the same Idempotency-Key.",
    )
}

/// The stored response, sent again.
fn replay(status: i32, body: String, location: Option<String>) -> Response {
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

fn created(body: Value, location: String) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response()
}

/// Charges and records a payment with no idempotency at all (planted bug idem-key-optional).
async fn execute(
    state: &AppState,
    client: &str,
    input: &PaymentInput,
) -> Result<Response, Problem> {
    let charge = charge(input).await.map_err(|e| provider_failed(&e))?;
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let (body, location) = insert_payment(&tx, client, input, &charge).await?;
    tx.commit().await?;
    Ok(created(body, location))
}

/// Planted bug idem-check-then-insert: look the key up, and if it is not there, do the work and
/// insert it, in a table without a unique constraint. Concurrent requests all find nothing.
async fn check_then_insert(
    state: &AppState,
    client: &str,
    scope: &str,
    key: &str,
    print: &str,
    input: &PaymentInput,
) -> Result<Response, Problem> {
    let row = state
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT fingerprint, response_status, response_body, response_location
             FROM idempotency_keys_unconstrained WHERE client_id = $1 AND key = $2 LIMIT 1",
            &[&scope, &key],
        )
        .await?;
    if let Some(row) = row {
        return Ok(existing(
            print,
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
        ));
    }
    let charge = charge(input).await.map_err(|e| provider_failed(&e))?;
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let (body, location) = insert_payment(&tx, client, input, &charge).await?;
    tx.execute(
        "INSERT INTO idempotency_keys_unconstrained
             (client_id, key, fingerprint, response_status, response_body, response_location)
         VALUES ($1, $2, $3, 201, $4, $5)",
        &[&scope, &key, &print, &body.to_string(), &location],
    )
    .await?;
    tx.commit().await?;
    Ok(created(body, location))
}

async fn insert_payment(
    tx: &deadpool_postgres::Transaction<'_>,
    client: &str,
    input: &PaymentInput,
    charge_id: &str,
) -> Result<(Value, String), Problem> {
    let id = Uuid::new_v4();
    let row = tx
        .query_one(
            "INSERT INTO payments (id, client_id, order_id, amount_cents, currency, status, charge_id)
             VALUES ($1, $2, $3, $4, $5, 'succeeded', $6)
             RETURNING created_at",
            &[
                &id,
                &client,
                &input.order_id,
                &input.amount_cents,
                &input.currency,
                &charge_id,
            ],
        )
        .await?;
    let created_at: DateTime<Utc> = row.get(0);
    let body = payment_json(
        id,
        &input.order_id,
        input.amount_cents,
        &input.currency,
        charge_id,
        created_at,
    );
    Ok((body, format!("/payments/{id}")))
}

fn payment_json(
    id: Uuid,
    order_id: &str,
    amount_cents: i64,
    currency: &str,
    charge_id: &str,
    created_at: DateTime<Utc>,
) -> Value {
    json!({
        "id": id,
        "order_id": order_id,
        "amount_cents": amount_cents,
        "currency": currency,
        "status": "succeeded",
        "charge_id": charge_id,
        "created_at": created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    })
}

/// `GET /payments/{id}`: only the client that made the payment sees it.
async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let client = client_id(&headers)?;
    let not_found = || Problem::not_found(format!("There is no payment {id}."));
    let Ok(uuid) = Uuid::parse_str(&id) else {
        return Err(not_found());
    };
    let db = state.pool.get().await?;
    // Planted bug idem-read-any-client: the payment is looked up by id alone.
    let owner = if bugs::is(Bug::IdemReadAnyClient) {
        None
    } else {
        Some(client)
    };
    let row = db
        .query_opt(
            "SELECT order_id, amount_cents, currency, charge_id, created_at
             FROM payments WHERE id = $1 AND ($2::text IS NULL OR client_id = $2)",
            &[&uuid, &owner],
        )
        .await?
        .ok_or_else(not_found)?;
    let body = payment_json(
        uuid,
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
    );
    Ok(axum::Json(body).into_response())
}

/// The payment provider: `PAYMENTS_URL`, read once.
fn provider() -> Result<&'static (reqwest::Client, String), String> {
    static PROVIDER: OnceLock<Option<(reqwest::Client, String)>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let url = std::env::var("PAYMENTS_URL").ok()?;
            // Planted bug idem-no-provider-timeout: reqwest's default, no timeout at all.
            let timeout = if bugs::is(Bug::IdemNoProviderTimeout) {
                Duration::from_secs(24 * 3600)
            } else {
                PROVIDER_TIMEOUT
            };
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()
                .ok()?;
            Some((client, url.trim_end_matches('/').to_string()))
        })
        .as_ref()
        .ok_or_else(|| "PAYMENTS_URL is not set".to_string())
}

/// Charges at the provider; returns the charge id, or why it failed (nothing was charged).
async fn charge(input: &PaymentInput) -> Result<String, String> {
    let (client, url) = provider()?;
    let response = client
        .post(format!("{url}/charges"))
        .json(&json!({
            "order_id": input.order_id,
            "amount_cents": input.amount_cents,
            "currency": input.currency,
        }))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("unreadable answer: {e}"))?;
    body.get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "the answer has no charge id".to_string())
}
