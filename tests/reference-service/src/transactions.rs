//! A ledger that never loses a cent: exercise `transactions` (task statement:
//! `exercises/transactions/README.md`).
//!
//! - **Accounts** hold `balance_cents`, which the database itself keeps at 0 or more (`CHECK`),
//!   and the `opening_balance_cents` their statement starts from. Ids are random UUIDs.
//! - **A transfer is one transaction** at `READ COMMITTED`: claim the `Idempotency-Key` (if any),
//!   lock both wallets `FOR UPDATE` in a consistent order (the smaller id first, so opposite
//!   transfers cannot deadlock), check the funds (409), debit, credit, record the transfer, ask
//!   the fraud service, store the response under the key, commit. A declined (422) or failed
//!   (503) fraud check, an overdraft or an unknown account rolls everything back, the key claim
//!   included, so the client may retry with the same key.
//! - **Serialization failures and deadlocks** (SQLSTATE `40001`, `40P01`) retry the whole
//!   transaction, up to [`MAX_RETRIES`] times, before answering 503.
//! - **Idempotency keys** are claimed with `INSERT ... ON CONFLICT DO NOTHING` on a primary key,
//!   inside the transfer's transaction: a concurrent request with the same key waits on the unique
//!   index until the first commits (then replays its response, or answers 422 for another body) or
//!   rolls back (then claims the key itself).
//! - **The statement** reads the balance and the entries in one `REPEATABLE READ` snapshot.
//! - **Renames** are conditional writes: `UPDATE ... WHERE id = $1 AND version = ANY($2)`, one
//!   statement, so of several renames sent with the same `If-Match` exactly one wins. The ETag is
//!   the version (`"v3"`), bumped by every rename.
//!
//! Environment: `FRAUD_URL`, the fraud-check service (read on first use; unset, every transfer
//! answers 503).
//!

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody, MergePatchBody};
use crate::problem::{FieldError, Problem};
use crate::AppState;

/// The tables, with `$check` the balance's constraint (absent in two planted bugs).
macro_rules! ledger_schema {
    ($check:literal) => {
        concat!(
            "
    CREATE TABLE IF NOT EXISTS wallets (
        id                    uuid        PRIMARY KEY,
        owner                 text        NOT NULL,
        opening_balance_cents bigint      NOT NULL,
        balance_cents         bigint      NOT NULL",
            $check,
            ",
        -- The ETag: bumped by every rename.
        version               bigint      NOT NULL DEFAULT 1,
        created_at            timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS transfers (
        id              uuid        PRIMARY KEY,
        -- Insertion order: a statement lists entries newest first.
        seq             bigserial   NOT NULL,
        from_wallet_id uuid        NOT NULL REFERENCES wallets (id),
        to_wallet_id   uuid        NOT NULL REFERENCES wallets (id),
        amount_cents    bigint      NOT NULL CHECK (amount_cents > 0),
        created_at      timestamptz NOT NULL DEFAULT now(),
        CHECK (from_wallet_id <> to_wallet_id)
    );
    CREATE INDEX IF NOT EXISTS transfers_from_seq ON transfers (from_wallet_id, seq);
    CREATE INDEX IF NOT EXISTS transfers_to_seq ON transfers (to_wallet_id, seq);
    -- Idempotency keys of POST /transfers (payments.rs has its own, scoped per client).
    CREATE TABLE IF NOT EXISTS transfer_keys (
        key               text        PRIMARY KEY,
        fingerprint       text        NOT NULL,
        response_status   integer,
        response_body     text,
        response_location text,
        created_at        timestamptz NOT NULL DEFAULT now()
    );
    -- Used only by the planted bug txn-idem-check-then-insert: the same table, no constraint.
    CREATE TABLE IF NOT EXISTS transfer_keys_unconstrained (
        key               text        NOT NULL,
        fingerprint       text        NOT NULL,
        response_status   integer,
        response_body     text,
        response_location text,
        created_at        timestamptz NOT NULL DEFAULT now()
    );
"
        )
    };
}

/// The ledger's tables, the balance kept non-negative by the database itself [txn-5.1].
pub const SCHEMA: &str = ledger_schema!(
    "\n            CONSTRAINT accounts_balance_cents_check CHECK (balance_cents >= 0)"
);

/// The same tables without the constraint on the balance.
const SCHEMA_WITHOUT_CHECK: &str = ledger_schema!("");

/// The schema to create at start-up: [`SCHEMA`], unless a planted bug drops the constraint.
pub fn schema() -> &'static str {
    // Planted bugs txn-no-check-constraint and txn-check-then-debit: "the code checks the
    // balance, the database does not need to".
    if bugs::is(Bug::TxnNoCheckConstraint) || bugs::is(Bug::TxnCheckThenDebit) {
        SCHEMA_WITHOUT_CHECK
    } else {
        SCHEMA
    }
}

const MAX_OWNER_CHARS: usize = 100;
const MAX_OPENING_CENTS: i64 = 1_000_000_000;
const MAX_AMOUNT_CENTS: i64 = 100_000_000;
const KEY_HEADER: &str = "idempotency-key";
const MAX_KEY_CHARS: usize = 255;
/// How long the fraud service may take before it counts as unavailable [txn-6.4].
const FRAUD_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries of a transfer aborted by a deadlock or a serialization failure.
const MAX_RETRIES: u32 = 5;
/// The pause the planted races leave between a read and the write that depends on it.
const RACE_WINDOW: Duration = Duration::from_millis(20);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/wallets", allow(post(open_wallet), "POST"))
        .route(
            "/wallets/{id}",
            allow(get(read_account).patch(rename), "GET, HEAD, PATCH"),
        )
        .route(
            "/wallets/{id}/statement",
            allow(get(statement), "GET, HEAD"),
        )
        .route("/transfers", allow(post(create_transfer), "POST"))
        .route("/transfers/{id}", allow(get(read_transfer), "GET, HEAD"))
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// An account id as this service writes it: a UUID in canonical (lower-case, hyphenated) form.
/// Anything else names no account.
fn parse_id(text: &str) -> Option<Uuid> {
    let id = Uuid::parse_str(text).ok()?;
    (id.hyphenated().to_string() == text).then_some(id)
}

/// `owner`: a string of 1 to 100 characters (Unicode scalar values, not bytes) [txn-1.1].
fn owner(fields: &Map<String, Value>) -> Result<String, String> {
    let owner = match fields.get("owner") {
        None | Some(Value::Null) => return Err("is required".into()),
        Some(Value::String(owner)) => owner,
        Some(_) => return Err("must be a string".into()),
    };
    // Planted bug txn-owner-bytes: `len()` counts UTF-8 bytes.
    let length = if bugs::is(Bug::TxnOwnerBytes) {
        owner.len()
    } else {
        owner.chars().count()
    };
    if !(1..=MAX_OWNER_CHARS).contains(&length) {
        return Err(format!("must be 1 to {MAX_OWNER_CHARS} characters"));
    }
    // PostgreSQL text cannot hold U+0000: refused here rather than failing in the database.
    if owner.contains('\0') {
        return Err("must not contain the NUL character (U+0000)".into());
    }
    Ok(owner.clone())
}

/// An integer in `min..=max`. As in JSON Schema (and `products.rs`), `1e3` and `990.0` are
/// integers; `12.5`, a string or a boolean are not.
pub(crate) fn integer(
    fields: &Map<String, Value>,
    name: &str,
    min: i64,
    max: i64,
) -> Result<i64, String> {
    let number = match fields.get(name) {
        None | Some(Value::Null) => return Err("is required".into()),
        Some(Value::Number(number)) => number,
        Some(_) => return Err("must be an integer".into()),
    };
    let value = if let Some(value) = number.as_i64() {
        value
    } else if number.is_u64() {
        i64::MAX // above i64::MAX: out of range, whatever the exact value
    } else {
        let value = number.as_f64().unwrap_or(f64::NAN);
        if value.fract() != 0.0 {
            return Err("must be an integer".into());
        }
        // Saturates for huge values such as 1e30, which the range check below then rejects.
        value as i64
    };
    if !(min..=max).contains(&value) {
        return Err(format!("must be an integer from {min} to {max}"));
    }
    Ok(value)
}

pub(crate) fn object(body: &Value) -> Result<&Map<String, Value>, Problem> {
    body.as_object()
        .ok_or_else(|| Problem::invalid(vec![FieldError::new("", "must be a JSON object")]))
}

/// A validated `POST /wallets` body.
#[derive(Debug)]
struct AccountInput {
    owner: String,
    balance_cents: i64,
}

impl AccountInput {
    fn validate(body: &Value) -> Result<Self, Problem> {
        let fields = object(body)?;
        let mut errors = Vec::new();
        let owner = owner(fields).unwrap_or_else(|e| {
            errors.push(FieldError::new("/owner", e));
            String::new()
        });
        let balance_cents =
            integer(fields, "balance_cents", 0, MAX_OPENING_CENTS).unwrap_or_else(|e| {
                errors.push(FieldError::new("/balance_cents", e));
                0
            });
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        Ok(Self {
            owner,
            balance_cents,
        })
    }
}

/// A validated `POST /transfers` body.
#[derive(Debug)]
struct TransferInput {
    /// `None`: a string or a number that is no id of this service (so no account).
    from: Option<Uuid>,
    to: Option<Uuid>,
    amount_cents: i64,
    /// The three fields exactly as the client sent them, for the fraud service [txn-6.1].
    check: Value,
}

impl TransferInput {
    fn validate(body: &Value) -> Result<Self, Problem> {
        let fields = object(body)?;
        let mut errors = Vec::new();
        let mut account = |name: &str| match fields.get(name) {
            Some(Value::String(id)) => Some(parse_id(id)),
            // An integer is an id too, for services that count; none of this service's.
            Some(Value::Number(_)) => Some(None),
            None | Some(Value::Null) => {
                errors.push(FieldError::new(format!("/{name}"), "is required"));
                None
            }
            Some(_) => {
                errors.push(FieldError::new(
                    format!("/{name}"),
                    "must be an account id (a string)",
                ));
                None
            }
        };
        let from = account("from_wallet_id");
        let to = account("to_wallet_id");
        // Planted bug txn-amount-limit: `<= MAX + 1`, an off-by-one in the range.
        let max_amount = if bugs::is(Bug::TxnAmountLimit) {
            MAX_AMOUNT_CENTS + 1
        } else {
            MAX_AMOUNT_CENTS
        };
        let amount_cents = integer(fields, "amount_cents", 1, max_amount).unwrap_or_else(|e| {
            errors.push(FieldError::new("/amount_cents", e));
            0
        });
        if from.is_some() && fields.get("from_wallet_id") == fields.get("to_wallet_id") {
            errors.push(FieldError::new(
                "/to_wallet_id",
                "must differ from from_wallet_id",
            ));
        }
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        let (Some(from), Some(to)) = (from, to) else {
            unreachable!("a missing account id is an error above");
        };
        let check = json!({
            "from_wallet_id": fields["from_wallet_id"],
            "to_wallet_id": fields["to_wallet_id"],
            "amount_cents": fields["amount_cents"],
        });
        Ok(Self {
            from,
            to,
            amount_cents,
            check,
        })
    }

    /// Both ids, or 404 for one that cannot name an account.
    fn wallets(&self) -> Result<(Uuid, Uuid), Problem> {
        let unknown = |name: &str| unknown_account(&self.check[name].to_string());
        let from = self.from.ok_or_else(|| unknown("from_wallet_id"))?;
        let to = self.to.ok_or_else(|| unknown("to_wallet_id"))?;
        Ok((from, to))
    }
}

fn unknown_account(id: &str) -> Problem {
    Problem::not_found(format!("There is no account {id}."))
}

/// The body as canonical JSON (object keys sorted at every level): the same request always has
/// the same fingerprint, whatever order the client wrote its fields in.
fn fingerprint(body: &Value) -> String {
    crate::payments::canonical_json(body)
}

/// The `Idempotency-Key`, if sent: 1 to 255 visible ASCII characters, bare or as a structured
/// field string (`"abc"` is the key `abc`); anything else answers 400.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(raw) = headers.get(KEY_HEADER) else {
        return Ok(None);
    };
    let text = raw.to_str().unwrap_or_default();
    let key = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let valid =
        (1..=MAX_KEY_CHARS).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !valid {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters."),
        ));
    }
    Ok(Some(key.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Accounts.

fn account_json(id: Uuid, owner: &str, balance_cents: i64) -> Value {
    json!({ "id": id, "owner": owner, "balance_cents": balance_cents })
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"v{version}\"")).expect("an ETag is visible ASCII")
}

/// `POST /wallets`.
async fn open_wallet(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    create_account(&state, &body).await
}

async fn create_account(state: &AppState, body: &Value) -> Result<Response, Problem> {
    let input = AccountInput::validate(body)?;
    let id = Uuid::new_v4();
    let row = state
        .pool
        .get()
        .await?
        .query_one(
            "INSERT INTO wallets (id, owner, opening_balance_cents, balance_cents)
             VALUES ($1, $2, $3, $3)
             RETURNING version",
            &[&id, &input.owner, &input.balance_cents],
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                HeaderValue::from_str(&format!("/wallets/{id}")).unwrap(),
            ),
            (header::ETAG, etag(row.get(0))),
        ],
        Json(account_json(id, &input.owner, input.balance_cents)),
    )
        .into_response())
}

/// `GET /wallets/{id}`.
async fn read_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let account = parse_id(&id).ok_or_else(|| unknown_account(&id))?;
    let row = state
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT owner, balance_cents, version FROM wallets WHERE id = $1",
            &[&account],
        )
        .await?
        .ok_or_else(|| unknown_account(&id))?;
    let body = account_json(account, row.get(0), row.get(1));
    Ok(([(header::ETAG, etag(row.get(2)))], Json(body)).into_response())
}

/// The versions an `If-Match` list names, or `None` for `*` (any current representation).
/// Strong comparison (RFC 9110 §13.1.1): weak tags and tags this service never sent match nothing.
fn if_match_versions(list: &str) -> Option<Vec<i64>> {
    if list.trim() == "*" {
        return None;
    }
    let mut versions = Vec::new();
    let mut rest = list;
    while let Some(start) = rest.find('"') {
        let weak = rest[..start].trim_end().ends_with("W/");
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let version = after[..end]
            .strip_prefix('v')
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok());
        if let (false, Some(version)) = (weak, version) {
            versions.push(version);
        }
        rest = &after[end + 1..];
    }
    Some(versions)
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// A validated rename: only `owner` can change (balances move through transfers).
fn rename_input(body: &Value) -> Result<String, Problem> {
    let fields = object(body)?;
    let mut errors: Vec<FieldError> = fields
        .keys()
        .filter(|name| *name != "owner")
        .map(|name| {
            FieldError::new(
                format!("/{name}"),
                "cannot be changed: only owner can (balances change through transfers)",
            )
        })
        .collect();
    let owner = owner(fields).unwrap_or_else(|e| {
        errors.push(FieldError::new("/owner", e));
        String::new()
    });
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    Ok(owner)
}

fn precondition_failed() -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "The account has changed since you read it (If-Match is not its current ETag); read it again and reapply your change.",
    )
}

/// `PATCH /wallets/{id}`: a rename, conditional on `If-Match` [txn-7.1 … txn-7.5].
async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    MergePatchBody(body): MergePatchBody,
) -> Result<Response, Problem> {
    let account = parse_id(&id).ok_or_else(|| unknown_account(&id))?;
    let db = state.pool.get().await?;
    let exists = || async {
        db.query_opt("SELECT 1 FROM wallets WHERE id = $1", &[&account])
            .await
            .map(|row| row.is_some())
    };
    let if_match = header_text(&headers, header::IF_MATCH);
    // Planted bug txn-rename-no-precondition: a rename without If-Match is applied.
    if if_match.is_none() && !bugs::is(Bug::TxnRenameNoPrecondition) {
        if !exists().await? {
            return Err(unknown_account(&id));
        }
        return Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "Renaming an account requires If-Match with its current ETag (from GET /wallets/{id}), so that two edits cannot overwrite each other.",
        ));
    }
    let owner = rename_input(&body)?;
    // `None`: no condition (If-Match: *, or none at all with the planted bug above).
    let versions = if_match.as_deref().and_then(if_match_versions);
    // Planted bug txn-etag-unchanged: the version is not bumped, so the ETag never changes.
    let bump = if bugs::is(Bug::TxnEtagUnchanged) {
        "version"
    } else {
        "version + 1"
    };

    if bugs::is(Bug::TxnRenameLastWriteWins) {
        // Planted bug: compare in the code, then write without the condition.
        let current: i64 = db
            .query_opt("SELECT version FROM wallets WHERE id = $1", &[&account])
            .await?
            .ok_or_else(|| unknown_account(&id))?
            .get(0);
        if versions.as_ref().is_some_and(|v| !v.contains(&current)) {
            return Err(precondition_failed());
        }
        tokio::time::sleep(RACE_WINDOW).await; // "audits the change"
        let row = db
            .query_one(
                &format!(
                    "UPDATE wallets SET owner = $2, version = {bump} WHERE id = $1
                     RETURNING balance_cents, version"
                ),
                &[&account, &owner],
            )
            .await?;
        return Ok(renamed(account, &owner, row.get(0), row.get(1)));
    }

    // Compare and write in one statement: of concurrent renames with one ETag, one matches.
    let row = db
        .query_opt(
            &format!(
                "UPDATE wallets SET owner = $2, version = {bump}
                 WHERE id = $1 AND ($3::bigint[] IS NULL OR version = ANY($3))
                 RETURNING balance_cents, version"
            ),
            &[&account, &owner, &versions],
        )
        .await?;
    match row {
        Some(row) => Ok(renamed(account, &owner, row.get(0), row.get(1))),
        None if exists().await? => Err(precondition_failed()),
        None => Err(unknown_account(&id)),
    }
}

fn renamed(id: Uuid, owner: &str, balance_cents: i64, version: i64) -> Response {
    (
        [(header::ETAG, etag(version))],
        Json(account_json(id, owner, balance_cents)),
    )
        .into_response()
}

/// `GET /wallets/{id}/statement`: the balance and every entry, from one snapshot [txn-3.4].
async fn statement(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let account = parse_id(&id).ok_or_else(|| unknown_account(&id))?;
    let mut db = state.pool.get().await?;
    const BALANCES: &str = "SELECT opening_balance_cents, balance_cents FROM wallets WHERE id = $1";
    const ENTRIES: &str = "
        SELECT id,
               CASE WHEN from_wallet_id = $1 THEN -amount_cents ELSE amount_cents END,
               created_at
        FROM transfers
        WHERE from_wallet_id = $1 OR to_wallet_id = $1
        ORDER BY seq DESC";
    let (balances, entries) = if bugs::is(Bug::TxnStatementTwoSnapshots) {
        // Planted bug: two autocommit statements, each in its own snapshot.
        let balances = db.query_opt(BALANCES, &[&account]).await?;
        tokio::time::sleep(RACE_WINDOW).await; // "formats the header"
        let entries = db.query(ENTRIES, &[&account]).await?;
        (balances, entries)
    } else {
        let tx = db
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let balances = tx.query_opt(BALANCES, &[&account]).await?;
        let entries = tx.query(ENTRIES, &[&account]).await?;
        tx.commit().await?;
        (balances, entries)
    };
    let balances = balances.ok_or_else(|| unknown_account(&id))?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|row| {
            let amount: i64 = row.get(1);
            // Planted bug txn-statement-unsigned: the transfer's amount, whichever its direction.
            let amount = if bugs::is(Bug::TxnStatementUnsigned) {
                amount.abs()
            } else {
                amount
            };
            json!({
                "transfer_id": row.get::<_, Uuid>(0),
                "amount_cents": amount,
                "created_at": timestamp(row.get(2)),
            })
        })
        .collect();
    Ok(Json(json!({
        "wallet_id": account,
        "opening_balance_cents": balances.get::<_, i64>(0),
        "balance_cents": balances.get::<_, i64>(1),
        "entries": entries,
    }))
    .into_response())
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------------------------
// Transfers.

fn transfer_json(
    id: Uuid,
    from: Uuid,
    to: Uuid,
    amount_cents: i64,
    created_at: DateTime<Utc>,
) -> Value {
    json!({
        "id": id,
        "from_wallet_id": from,
        "to_wallet_id": to,
        "amount_cents": amount_cents,
        "created_at": timestamp(created_at),
    })
}

/// `GET /transfers/{id}`.
async fn read_transfer(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let not_found = || Problem::not_found(format!("There is no transfer {id}."));
    let transfer = parse_id(&id).ok_or_else(not_found)?;
    let row = state
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT from_wallet_id, to_wallet_id, amount_cents, created_at
             FROM transfers WHERE id = $1",
            &[&transfer],
        )
        .await?
        .ok_or_else(not_found)?;
    let body = transfer_json(transfer, row.get(0), row.get(1), row.get(2), row.get(3));
    Ok(Json(body).into_response())
}

/// An idempotency key to claim, with the fingerprint of the request's body.
struct Claim {
    key: String,
    print: String,
}

/// What a transfer attempt ends with, short of an error.
enum Outcome {
    /// A new transfer, committed.
    Created { body: Value, location: String },
    /// The key was already used: its stored response, a 422 or a 409.
    Existing(Response),
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::Created { body, location } => (
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(body),
            )
                .into_response(),
            Outcome::Existing(response) => response,
        }
    }
}

/// Why an attempt failed: an answer for the client, or a deadlock or serialization failure
/// that means "run the transaction again".
enum Failure {
    Retry(tokio_postgres::Error),
    Answer(Problem),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        let retryable = error.code().is_some_and(|code| {
            *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        });
        // Planted bug txn-lock-order: no retry, the deadlock reaches the client as a 500.
        if retryable && !bugs::is(Bug::TxnLockOrder) {
            Failure::Retry(error)
        } else {
            Failure::Answer(error.into())
        }
    }
}

impl From<Problem> for Failure {
    fn from(problem: Problem) -> Self {
        Failure::Answer(problem)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Failure::Answer(error.into())
    }
}

/// `POST /transfers`.
async fn create_transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    // Planted bug txn-idem-ignored: the header is never read.
    let key = if bugs::is(Bug::TxnIdemIgnored) {
        None
    } else {
        idempotency_key(&headers)?
    };
    // Invalid bodies are refused before the key is claimed, so they are never stored.
    let input = TransferInput::validate(&body)?;
    let (from, to) = input.wallets()?;
    let claim = key.map(|key| Claim {
        key,
        print: fingerprint(&body),
    });
    if let (Some(claim), true) = (&claim, bugs::is(Bug::TxnIdemCheckThenInsert)) {
        return check_then_insert(&state, &input, from, to, claim).await;
    }
    if bugs::is(Bug::TxnPartialTransfer) {
        return partial_transfer(&state, &input, from, to, claim.as_ref()).await;
    }
    Ok(with_retries(&state, &input, from, to, claim.as_ref())
        .await?
        .into_response())
}

/// Runs the transfer's transaction, again after a deadlock or a serialization failure.
async fn with_retries(
    state: &AppState,
    input: &TransferInput,
    from: Uuid,
    to: Uuid,
    claim: Option<&Claim>,
) -> Result<Outcome, Problem> {
    let mut retries = 0;
    loop {
        match transfer(state, input, from, to, claim).await {
            Ok(outcome) => return Ok(outcome),
            Err(Failure::Answer(problem)) => return Err(problem),
            Err(Failure::Retry(error)) if retries < MAX_RETRIES => {
                retries += 1;
                eprintln!("transfer: {error:?}; retry {retries} of {MAX_RETRIES}");
                // 10, 20, 40... ms, and a random share of it, so the retries do not meet again.
                let base = 10u64 << (retries - 1);
                let jitter = (Uuid::new_v4().as_u128() % u128::from(base)) as u64;
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            Err(Failure::Retry(error)) => {
                eprintln!("transfer: {error:?}; giving up after {MAX_RETRIES} retries");
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The ledger is too busy to take this transfer now; nothing was moved. Retry it.",
                ));
            }
        }
    }
}

/// One attempt at the whole transfer, in one transaction. Every early return drops the
/// transaction, which rolls it back: no money moves and the key is released.
async fn transfer(
    state: &AppState,
    input: &TransferInput,
    from: Uuid,
    to: Uuid,
    claim: Option<&Claim>,
) -> Result<Outcome, Failure> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    if let Some(claim) = claim {
        // A concurrent request holding the same key makes this wait until it commits (then the
        // row is there to replay) or rolls back (then the key is ours).
        let claimed = tx
            .execute(
                "INSERT INTO transfer_keys (key, fingerprint) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING",
                &[&claim.key, &claim.print],
            )
            .await?;
        if claimed == 0 {
            let row = tx
                .query_opt(
                    "SELECT fingerprint, response_status, response_body, response_location
                     FROM transfer_keys WHERE key = $1",
                    &[&claim.key],
                )
                .await?;
            return Ok(Outcome::Existing(match row {
                Some(row) => existing(&claim.print, &row),
                // Released between the two statements: the client may simply retry.
                None => in_flight().into_response(),
            }));
        }
    }

    if bugs::is(Bug::TxnReadModifyWrite) {
        // Planted bug: read both balances, compute the new ones here, write them back.
        let balance = |id: Uuid| {
            let tx = &tx;
            async move {
                tx.query_opt("SELECT balance_cents FROM wallets WHERE id = $1", &[&id])
                    .await
                    .map(|row| row.map(|row| row.get::<_, i64>(0)))
            }
        };
        let source = balance(from)
            .await?
            .ok_or_else(|| unknown_account(&from.to_string()))?;
        let target = balance(to)
            .await?
            .ok_or_else(|| unknown_account(&to.to_string()))?;
        check_funds(source, input.amount_cents)?;
        let mut writes = [
            (from, source - input.amount_cents),
            (to, target + input.amount_cents),
        ];
        // In id order: this mistake loses updates, it does not deadlock.
        writes.sort_by_key(|(id, _)| *id);
        for (id, balance) in writes {
            tx.execute(
                "UPDATE wallets SET balance_cents = $2 WHERE id = $1",
                &[&id, &balance],
            )
            .await?;
        }
    } else if bugs::is(Bug::TxnCheckThenDebit) {
        // Planted bug: a check without a lock, then a debit without a condition.
        let source: i64 = tx
            .query_opt("SELECT balance_cents FROM wallets WHERE id = $1", &[&from])
            .await?
            .ok_or_else(|| unknown_account(&from.to_string()))?
            .get(0);
        check_funds(source, input.amount_cents)?;
        // "Fetches the exchange rate": the planted race window, as wide as the others (a 5 ms
        // window let a whole burst through once on a loaded machine).
        tokio::time::sleep(RACE_WINDOW).await;
        let (first, second) = if from < to { (from, to) } else { (to, from) };
        for id in [first, second] {
            let delta = if id == from {
                -input.amount_cents
            } else {
                input.amount_cents
            };
            let updated = tx
                .execute(
                    "UPDATE wallets SET balance_cents = balance_cents + $2 WHERE id = $1",
                    &[&id, &delta],
                )
                .await?;
            if updated == 0 {
                return Err(unknown_account(&id.to_string()).into());
            }
        }
    } else {
        let source = lock_accounts(&tx, from, to).await?;
        check_funds(source, input.amount_cents)?;
        tx.execute(
            "UPDATE wallets SET balance_cents = balance_cents - $2 WHERE id = $1",
            &[&from, &input.amount_cents],
        )
        .await?;
        tx.execute(
            "UPDATE wallets SET balance_cents = balance_cents + $2 WHERE id = $1",
            &[&to, &input.amount_cents],
        )
        .await?;
    }
    let (body, location) = insert_transfer(&tx, from, to, input.amount_cents).await?;

    // Asked last, with the balances locked: a refusal rolls back everything above [txn-6.6].
    fraud_check(&input.check).await?;

    if let Some(claim) = claim {
        store_response(&tx, &claim.key, &body, &location).await?;
    }
    tx.commit().await?;
    Ok(Outcome::Created { body, location })
}

/// Locks both wallets `FOR UPDATE`, the smaller id first; returns the source's balance.
async fn lock_accounts(
    tx: &deadpool_postgres::Transaction<'_>,
    from: Uuid,
    to: Uuid,
) -> Result<i64, Failure> {
    // Planted bug txn-lock-order: the request's order, so A→B and B→A lock in opposite orders.
    let order = if from < to || bugs::is(Bug::TxnLockOrder) {
        [from, to]
    } else {
        [to, from]
    };
    let mut source = 0;
    for id in order {
        let row = tx
            .query_opt(
                "SELECT balance_cents FROM wallets WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .ok_or_else(|| unknown_account(&id.to_string()))?;
        if id == from {
            source = row.get(0);
        }
    }
    Ok(source)
}

/// 409 when the source holds less than the amount [txn-2.9]; exactly the balance is allowed.
fn check_funds(balance: i64, amount: i64) -> Result<(), Problem> {
    // Planted bug txn-overdraft-at-equal: `balance > amount` where `>=` is right.
    let enough = if bugs::is(Bug::TxnOverdraftAtEqual) {
        balance > amount
    } else {
        balance >= amount
    };
    if enough {
        return Ok(());
    }
    // Planted bug txn-overdraft-422: "the request cannot be processed".
    let status = if bugs::is(Bug::TxnOverdraft422) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::CONFLICT
    };
    Err(Problem::new(
        status,
        format!("The source account holds {balance} cents, less than the {amount} to transfer; nothing was moved."),
    ))
}

async fn insert_transfer(
    tx: &deadpool_postgres::Transaction<'_>,
    from: Uuid,
    to: Uuid,
    amount_cents: i64,
) -> Result<(Value, String), tokio_postgres::Error> {
    let id = Uuid::new_v4();
    let row = tx
        .query_one(
            "INSERT INTO transfers (id, from_wallet_id, to_wallet_id, amount_cents)
             VALUES ($1, $2, $3, $4)
             RETURNING created_at",
            &[&id, &from, &to, &amount_cents],
        )
        .await?;
    let body = transfer_json(id, from, to, amount_cents, row.get(0));
    Ok((body, format!("/transfers/{id}")))
}

async fn store_response(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &str,
    body: &Value,
    location: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE transfer_keys
         SET response_status = 201, response_body = $2, response_location = $3
         WHERE key = $1",
        &[&key, &body.to_string(), &location],
    )
    .await?;
    Ok(())
}

/// What a request whose key is already claimed gets: 422 for another body, else the stored
/// response (or 409 while the first request has none yet, which only the planted bugs allow).
fn existing(print: &str, row: &tokio_postgres::Row) -> Response {
    let stored_print: String = row.get(0);
    // Planted bug txn-idem-body-not-compared: the key alone identifies the request.
    if stored_print != print && !bugs::is(Bug::TxnIdemBodyNotCompared) {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This Idempotency-Key was already used with a different request body; nothing was moved. Use a new key for a new transfer.",
        )
        .into_response();
    }
    let (Some(status), Some(body)) = (
        row.get::<_, Option<i32>>(1),
        row.get::<_, Option<String>>(2),
    ) else {
        return in_flight().into_response();
    };
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::CREATED);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    let location: Option<String> = row.get(3);
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

fn in_flight() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "A transfer with this Idempotency-Key is still being processed; retry later to get its result.",
    )
}

/// Planted bug txn-idem-check-then-insert: the key is looked up, the transfer made, and the key
/// inserted afterwards, outside the transfer's transaction, in a table without a unique
/// constraint. Concurrent requests with one key all find nothing and all transfer.
async fn check_then_insert(
    state: &AppState,
    input: &TransferInput,
    from: Uuid,
    to: Uuid,
    claim: &Claim,
) -> Result<Response, Problem> {
    let row = state
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT fingerprint, response_status, response_body, response_location
             FROM transfer_keys_unconstrained WHERE key = $1 LIMIT 1",
            &[&claim.key],
        )
        .await?;
    if let Some(row) = row {
        return Ok(existing(&claim.print, &row));
    }
    tokio::time::sleep(RACE_WINDOW).await; // "loads the customer's limits"
    let outcome = with_retries(state, input, from, to, None).await?;
    if let Outcome::Created { body, location } = &outcome {
        state
            .pool
            .get()
            .await?
            .execute(
                "INSERT INTO transfer_keys_unconstrained
                     (key, fingerprint, response_status, response_body, response_location)
                 VALUES ($1, $2, 201, $3, $4)",
                &[&claim.key, &claim.print, &body.to_string(), location],
            )
            .await?;
    }
    Ok(outcome.into_response())
}

/// Planted bug txn-partial-transfer: the debit is committed on its own before the fraud call;
/// when the fraud service refuses or fails, the credit is skipped and the debit stays.
async fn partial_transfer(
    state: &AppState,
    input: &TransferInput,
    from: Uuid,
    to: Uuid,
    claim: Option<&Claim>,
) -> Result<Response, Problem> {
    let mut db = state.pool.get().await?;
    // Releases the claim of a failed transfer, so that the client may retry with its key.
    async fn release(db: &deadpool_postgres::Object, claim: Option<&Claim>) -> Result<(), Problem> {
        if let Some(claim) = claim {
            db.execute("DELETE FROM transfer_keys WHERE key = $1", &[&claim.key])
                .await?;
        }
        Ok(())
    }
    if let Some(claim) = claim {
        let claimed = db
            .execute(
                "INSERT INTO transfer_keys (key, fingerprint) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING",
                &[&claim.key, &claim.print],
            )
            .await?;
        if claimed == 0 {
            let row = db
                .query_opt(
                    "SELECT fingerprint, response_status, response_body, response_location
                     FROM transfer_keys WHERE key = $1",
                    &[&claim.key],
                )
                .await?;
            return Ok(match row {
                Some(row) => existing(&claim.print, &row),
                None => in_flight().into_response(),
            });
        }
    }
    let destination = db
        .query_opt("SELECT 1 FROM wallets WHERE id = $1", &[&to])
        .await?;
    if destination.is_none() {
        release(&db, claim).await?;
        return Err(unknown_account(&to.to_string()));
    }
    // The debit, committed at once (autocommit), conditional on the funds.
    let debited = db
        .execute(
            "UPDATE wallets SET balance_cents = balance_cents - $2
             WHERE id = $1 AND balance_cents >= $2",
            &[&from, &input.amount_cents],
        )
        .await?;
    if debited == 0 {
        release(&db, claim).await?;
        let source = db
            .query_opt("SELECT balance_cents FROM wallets WHERE id = $1", &[&from])
            .await?
            .ok_or_else(|| unknown_account(&from.to_string()))?;
        check_funds(source.get(0), input.amount_cents)?;
        return Err(Problem::internal(
            "the debit matched no row, yet funds suffice",
        ));
    }
    if let Err(failure) = fraud_check(&input.check).await {
        release(&db, claim).await?;
        return Err(match failure {
            Failure::Answer(problem) => problem,
            Failure::Retry(error) => error.into(),
        });
    }
    let tx = db.transaction().await?;
    let credited = tx
        .execute(
            "UPDATE wallets SET balance_cents = balance_cents + $2 WHERE id = $1",
            &[&to, &input.amount_cents],
        )
        .await?;
    if credited == 0 {
        return Err(unknown_account(&to.to_string()));
    }
    let (body, location) = insert_transfer(&tx, from, to, input.amount_cents).await?;
    if let Some(claim) = claim {
        store_response(&tx, &claim.key, &body, &location).await?;
    }
    tx.commit().await?;
    Ok(Outcome::Created { body, location }.into_response())
}

// ---------------------------------------------------------------------------------------------
// The fraud service.

/// The fraud service: `FRAUD_URL`, read once, and a client with a 2 s timeout.
fn fraud_service() -> Result<&'static (reqwest::Client, String), String> {
    static FRAUD: OnceLock<Result<(reqwest::Client, String), String>> = OnceLock::new();
    FRAUD
        .get_or_init(|| {
            let url = std::env::var("FRAUD_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| "FRAUD_URL is not set".to_string())?;
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(FRAUD_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the fraud service client: {e}"))?;
            Ok((client, url.trim().trim_end_matches('/').to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

enum Verdict {
    Approved,
    Declined(String),
    Unavailable(String),
}

/// `POST {FRAUD_URL}/checks` with the three fields as the client sent them [txn-6.1].
async fn ask_fraud_service(check: &Value) -> Verdict {
    let (client, url) = match fraud_service() {
        Ok(service) => service,
        Err(reason) => return Verdict::Unavailable(reason),
    };
    let response = match client
        .post(format!("{url}/checks"))
        .json(check)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return Verdict::Unavailable(format!("no answer: {error}")),
    };
    let status = response.status();
    if status.is_client_error() {
        return Verdict::Declined(format!("status {status}"));
    }
    if !status.is_success() {
        return Verdict::Unavailable(format!("status {status}"));
    }
    match response.json::<Value>().await {
        Ok(body) => match body.get("decision").and_then(Value::as_str) {
            Some("approve") => Verdict::Approved,
            Some(other) => Verdict::Declined(format!("decision {other:?}")),
            None => Verdict::Unavailable(format!("status {status} without a decision: {body}")),
        },
        Err(error) => Verdict::Unavailable(format!("unreadable answer: {error}")),
    }
}

/// Ok to commit, or the answer for the client: 422 declined [txn-6.2], 503 unavailable [txn-6.4].
async fn fraud_check(check: &Value) -> Result<(), Failure> {
    // Planted bug txn-fraud-not-called: every transfer is approved.
    if bugs::is(Bug::TxnFraudNotCalled) {
        return Ok(());
    }
    match ask_fraud_service(check).await {
        Verdict::Approved => Ok(()),
        Verdict::Declined(reason) => {
            eprintln!("fraud service declined a transfer: {reason}");
            Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The fraud check declined this transfer; nothing was moved.",
            )
            .into())
        }
        // Planted bug txn-fraud-5xx-500: the failure is not told apart from the service's own.
        Verdict::Unavailable(reason) if bugs::is(Bug::TxnFraud5xx500) => {
            Err(Problem::internal(format_args!("fraud service unavailable: {reason}")).into())
        }
        Verdict::Unavailable(reason) => {
            eprintln!("fraud service unavailable: {reason}");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The fraud check service is unavailable; nothing was moved. Retry later.",
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_count_characters() {
        let body = |owner: &str| json!({ "owner": owner, "balance_cents": 0 });
        assert!(AccountInput::validate(&body(&"é".repeat(100))).is_ok());
        assert!(AccountInput::validate(&body(&"a".repeat(101))).is_err());
        assert!(AccountInput::validate(&body("")).is_err());
        assert!(AccountInput::validate(&body("a\0b")).is_err());
    }

    #[test]
    fn amounts_are_integers_in_range() {
        let body = |amount: Value| json!({ "from_wallet_id": Uuid::nil(), "to_wallet_id": Uuid::max(), "amount_cents": amount });
        for valid in [json!(1), json!(100_000_000), json!(1e3), json!(990.0)] {
            assert!(
                TransferInput::validate(&body(valid.clone())).is_ok(),
                "{valid}"
            );
        }
        for invalid in [
            json!(0),
            json!(100_000_001),
            json!(12.5),
            json!("12"),
            json!(null),
            json!(u64::MAX),
        ] {
            assert!(
                TransferInput::validate(&body(invalid.clone())).is_err(),
                "{invalid}"
            );
        }
    }

    #[test]
    fn transfers_need_two_different_accounts() {
        let same = json!({ "from_wallet_id": "x", "to_wallet_id": "x", "amount_cents": 5 });
        assert_eq!(
            TransferInput::validate(&same).unwrap_err().pointers(),
            ["/to_wallet_id"]
        );
        let missing = json!({ "to_wallet_id": "x", "amount_cents": 5 });
        assert!(TransferInput::validate(&missing).is_err());
        // An integer id is an id (of no account here): 404, not 422.
        let number = json!({ "from_wallet_id": 7, "to_wallet_id": 8, "amount_cents": 5 });
        let input = TransferInput::validate(&number).unwrap();
        assert_eq!(input.wallets().unwrap_err().status(), StatusCode::NOT_FOUND);
        assert_eq!(input.check["from_wallet_id"], json!(7));
    }

    #[test]
    fn ids_are_canonical_uuids() {
        let id = Uuid::new_v4();
        assert_eq!(parse_id(&id.to_string()), Some(id));
        assert_eq!(parse_id(&id.to_string().to_uppercase()), None);
        assert_eq!(parse_id(&id.simple().to_string()), None);
    }

    #[test]
    fn if_match_is_strong() {
        assert_eq!(if_match_versions("*"), None);
        assert_eq!(if_match_versions("\"v3\""), Some(vec![3]));
        assert_eq!(if_match_versions("\"x\", \"v2\", W/\"v4\""), Some(vec![2]));
        assert_eq!(if_match_versions("\"v\""), Some(vec![]));
    }

    #[test]
    fn fingerprints_ignore_member_order() {
        let a = json!({ "a": 1, "b": [{ "c": 2, "d": 3 }] });
        let b: Value = serde_json::from_str(r#"{"b": [{"d": 3, "c": 2}], "a": 1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }
}
