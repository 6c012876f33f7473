//! Notes for many users behind an OpenID Connect issuer, and local accounts: exercise `security`
//! (task statement: `exercises/security/README.md`).
//!
//! - **Access tokens** ([`Auth`]): the issuer's discovery document names its JWKS, which is
//!   cached and fetched again (at most once a second) when a token names an unknown `kid`. The
//!   algorithm comes from the key (RSA → RS256, EC P-256 → ES256), never from the token's header,
//!   and `jsonwebtoken` checks the signature, `iss`, `aud`, `exp` and `nbf` (60 s of leeway).
//! - **Notes** belong to the token's `sub`: every query on one note filters on the owner too, so
//!   another user's note is exactly as absent as an unknown id (404). Ids are random UUIDs.
//! - **Local accounts**: argon2id (OWASP minimum: 19 MiB, 2 iterations, a random salt), stored as
//!   the PHC string; logins are limited per username ([`LoginLimiter`]) and answer one 401 for
//!   an unknown user and a wrong password alike.
//! - **Browser headers** ([`browser_headers`]): `X-Content-Type-Options: nosniff` on every
//!   response and CORS for `ALLOWED_ORIGIN` only.
//!
//! Environment: `AUTH_ISSUER_URL` (without it the token-protected routes answer 503 and no
//! browser header is added, so the other exercises run unchanged), `AUTH_AUDIENCE`,
//! `ALLOWED_ORIGIN`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody, MergePatchBody};
use crate::problem::{FieldError, Problem};
use crate::AppState;

pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS notes (
        id         text        PRIMARY KEY,
        -- Insertion order: the tie-breaker of 'newest first' (and the planted bug sequential-ids).
        n          bigserial   NOT NULL,
        owner_id   text        NOT NULL,
        title      text        NOT NULL,
        body       text        NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX IF NOT EXISTS notes_owner_newest ON notes (owner_id, created_at DESC, n DESC);
    CREATE TABLE IF NOT EXISTS accounts (
        id            uuid        PRIMARY KEY,
        username      text        NOT NULL,
        password_hash text        NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT accounts_username_key UNIQUE (username)
    );
";

/// Larger request bodies answer 413; a body of exactly this size is read.
const MAX_BODY_BYTES: usize = 65_536;
const MAX_TITLE_CHARS: usize = 200;
const MAX_BODY_CHARS: usize = 10_000;
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=40;
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 12..=128;
const NOTE_COLUMNS: &str = "id, owner_id, title, body, created_at";
/// PostgreSQL text cannot hold U+0000: refused up front rather than failing in the database.
const NUL_DETAIL: &str = "must not contain the NUL character (U+0000)";

pub fn router() -> Router<AppState> {
    let body_limit = if bugs::is(Bug::NoBodyLimit) {
        DefaultBodyLimit::disable()
    } else {
        DefaultBodyLimit::max(MAX_BODY_BYTES)
    };
    Router::new()
        .route(
            "/notes",
            allow(get(list_notes).post(create_note), "GET, HEAD, POST"),
        )
        .route(
            "/notes/{id}",
            allow(
                get(read_note).patch(patch_note).delete(delete_note),
                "GET, HEAD, PATCH, DELETE",
            ),
        )
        .route("/admin/stats", allow(get(admin_stats), "GET, HEAD"))
        .route("/accounts", allow(post(create_account), "POST"))
        .route("/accounts/login", allow(post(login), "POST"))
        .layer(body_limit)
}

// ---------------------------------------------------------------------------------------------
// Configuration.

struct Config {
    /// `AUTH_ISSUER_URL` exactly as given: the only accepted `iss`.
    issuer: String,
    audience: String,
    allowed_origin: Option<String>,
}

/// The security settings, or `None` when `AUTH_ISSUER_URL` is not set.
fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let issuer = std::env::var("AUTH_ISSUER_URL")
                .ok()
                .filter(|s| !s.trim().is_empty())?;
            Some(Config {
                issuer,
                audience: std::env::var("AUTH_AUDIENCE").unwrap_or_default(),
                allowed_origin: std::env::var("ALLOWED_ORIGIN")
                    .ok()
                    .filter(|s| !s.is_empty()),
            })
        })
        .as_ref()
}

fn auth() -> Result<&'static Auth, Problem> {
    static AUTH: OnceLock<Option<Auth>> = OnceLock::new();
    AUTH.get_or_init(|| config().map(Auth::new))
        .as_ref()
        .ok_or_else(|| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "This service has no identity provider: AUTH_ISSUER_URL is not set.",
            )
        })
}

// ---------------------------------------------------------------------------------------------
// Access tokens.

/// How long the key set is trusted before it is fetched again anyway.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Unknown `kid`s fetch the key set at most this often, so junk tokens cannot hammer the issuer.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(1);
const ISSUER_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;

/// A verification key from the issuer's JWKS, with the one algorithm it may verify.
#[derive(Clone)]
struct Key {
    kid: String,
    alg: Algorithm,
    decoding: DecodingKey,
    /// SPKI PEM text of an RSA key: only the planted bug alg-confusion uses it, as an HMAC secret.
    pem: Option<String>,
}

impl Key {
    fn from_jwk(value: &Value) -> Option<Key> {
        let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
        let kid = jwk.common.key_id.clone()?;
        let (alg, pem) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => (Algorithm::RS256, rsa_pem(&rsa.n, &rsa.e)),
            // Planted bug rs256-only: the service was written for RSA keys only, and skips the
            // issuer's EC key, so ES256 tokens name a kid it never knows.
            AlgorithmParameters::EllipticCurve(_) if bugs::is(Bug::Rs256Only) => return None,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                (Algorithm::ES256, None)
            }
            _ => return None,
        };
        let decoding = DecodingKey::from_jwk(&jwk).ok()?;
        Some(Key {
            kid,
            alg,
            decoding,
            pem,
        })
    }
}

/// `-----BEGIN PUBLIC KEY-----` text of an RSA key given as base64url `n` and `e`.
fn rsa_pem(n: &str, e: &str) -> Option<String> {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let n = rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(n).ok()?);
    let e = rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(e).ok()?);
    rsa::RsaPublicKey::new(n, e)
        .ok()?
        .to_public_key_pem(LineEnding::LF)
        .ok()
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// The last fetch, successful or not.
    attempted: Option<Instant>,
}

/// The verified claims the handlers use.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Value,
}

/// Who is calling: the token's `sub`, and whether its `roles` hold `admin`.
pub struct Caller {
    sub: String,
    admin: bool,
}

impl Caller {
    fn from_claims(claims: Claims) -> Caller {
        let admin = claims
            .roles
            .as_array()
            .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some("admin")));
        Caller {
            sub: claims.sub,
            admin,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Problem> {
        auth()?.authenticate(&parts.headers).await
    }
}

/// Why a request is refused with 401. The reason goes to the log, never to the client.
enum Refusal {
    /// No `Authorization: Bearer` header.
    NoToken,
    Invalid(String),
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Problem {
        let (challenge, detail) = match refusal {
            Refusal::NoToken => (
                "Bearer",
                "Send an access token: Authorization: Bearer <token>.",
            ),
            Refusal::Invalid(reason) => {
                eprintln!("access token refused: {reason}");
                (
                    "Bearer error=\"invalid_token\"",
                    "The access token is not valid.",
                )
            }
        };
        let problem = Problem::new(StatusCode::UNAUTHORIZED, detail);
        if bugs::is(Bug::NoWwwAuthenticate) {
            return problem;
        }
        problem.with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )
    }
}

/// Verifies access tokens against the issuer's cached key set.
struct Auth {
    config: &'static Config,
    client: reqwest::Client,
    jwks_uri: tokio::sync::Mutex<Option<reqwest::Url>>,
    keys: RwLock<KeySet>,
    /// Held by the one request fetching the key set; the others wait and use its result.
    refresh: tokio::sync::Mutex<()>,
}

impl Auth {
    fn new(config: &'static Config) -> Auth {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(ISSUER_TIMEOUT)
            .build()
            .unwrap_or_default();
        Auth {
            config,
            client,
            jwks_uri: tokio::sync::Mutex::new(None),
            keys: RwLock::new(KeySet::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        let token = bearer_token(headers).ok_or(Refusal::NoToken)?;
        let claims = self.verify(token).await?;
        Ok(Caller::from_claims(claims))
    }

    /// The claims of a valid token; every failure is a 401 except an unreachable issuer (503).
    async fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let header = token_header(token).ok_or_else(|| invalid("malformed token"))?;
        let header_alg = header["alg"].as_str().unwrap_or_default();
        if header_alg == "none" && bugs::is(Bug::AlgNone) {
            // Planted bug: a library configured to accept unsigned tokens.
            return self.unverified_claims(token).map_err(Problem::from);
        }
        let Some(kid) = header["kid"].as_str() else {
            return Err(invalid("no kid in the token header").into());
        };
        let Some(key) = self.key(kid).await? else {
            if bugs::is(Bug::UnknownKidFirstKey) {
                // Planted bug: "no key to check it with" taken as "nothing to check".
                return self.unverified_claims(token).map_err(Problem::from);
            }
            return Err(invalid(format!("unknown kid {kid:?}")).into());
        };
        if bugs::is(Bug::NoSignatureCheck) {
            return self.unverified_claims(token).map_err(Problem::from);
        }
        let (alg, decoding) = if bugs::is(Bug::AlgConfusion) {
            // Planted bug: the algorithm the token names, with the key's text as HMAC secret.
            let alg = jsonwebtoken::decode_header(token)
                .map_err(|e| invalid(format!("header: {e}")))?
                .alg;
            if alg.family() == AlgorithmFamily::Hmac {
                let pem = key.pem.as_deref().unwrap_or_default();
                (alg, DecodingKey::from_secret(pem.as_bytes()))
            } else {
                (alg, key.decoding.clone())
            }
        } else {
            (key.alg, key.decoding.clone())
        };
        jsonwebtoken::decode::<Claims>(token, &decoding, &self.validation(alg))
            .map(|data| data.claims)
            .map_err(|e| invalid(format!("kid {:?}: {e}", key.kid)).into())
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = !bugs::is(Bug::AcceptExpired);
        validation.validate_nbf = !bugs::is(Bug::IgnoreNbf);
        let mut required = vec!["sub"];
        if validation.validate_exp {
            required.push("exp");
        }
        if bugs::is(Bug::NoAudienceCheck) {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&self.config.audience]);
            required.push("aud");
        }
        if !bugs::is(Bug::NoIssuerCheck) {
            validation.set_issuer(&[&self.config.issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// Only for planted bugs that skip the signature: the claims, checked as `validation` would.
    fn unverified_claims(&self, token: &str) -> Result<Claims, Refusal> {
        let payload = token.split('.').nth(1).unwrap_or_default();
        let claims: Value = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| invalid("malformed claims"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let exp_ok = claims["exp"]
            .as_u64()
            .is_some_and(|exp| exp + LEEWAY_SECONDS >= now);
        let nbf_ok = claims["nbf"]
            .as_u64()
            .is_none_or(|nbf| nbf <= now + LEEWAY_SECONDS);
        let iss_ok = claims["iss"].as_str() == Some(self.config.issuer.as_str());
        let audience = self.config.audience.as_str();
        let aud_ok = match &claims["aud"] {
            Value::String(aud) => aud == audience,
            Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !(exp_ok && nbf_ok && iss_ok && aud_ok) {
            return Err(invalid("claims"));
        }
        serde_json::from_value(claims).map_err(|e| invalid(format!("claims: {e}")))
    }

    /// The key named `kid`, from the cached key set, fetched again if `kid` is unknown.
    async fn key(&self, kid: &str) -> Result<Option<Key>, Problem> {
        if bugs::is(Bug::JwksPerRequest) {
            // Planted bug: the key set is downloaded for every request.
            let keys = self.fetch_keys().await.map_err(|e| unavailable(&e))?;
            return Ok(keys.into_iter().find(|k| k.kid == kid));
        }
        let stale = {
            let set = self.read_keys();
            match set.fetched {
                None => true,
                Some(_) if bugs::is(Bug::NoRefetchOnRotation) => false,
                Some(at) => at.elapsed() >= JWKS_MAX_AGE,
            }
        };
        if stale {
            self.refresh(Duration::ZERO).await;
            if self.read_keys().fetched.is_none() {
                return Err(unavailable("the key set was never fetched"));
            }
        }
        if let Some(key) = self.find(kid) {
            return Ok(Some(key));
        }
        if bugs::is(Bug::NoRefetchOnRotation) {
            return Ok(None);
        }
        // A rotation: the issuer may have published a new key since the last fetch.
        self.refresh(UNKNOWN_KID_REFETCH).await;
        Ok(self.find(kid))
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, kid: &str) -> Option<Key> {
        self.read_keys().keys.iter().find(|k| k.kid == kid).cloned()
    }

    /// Fetches the key set, unless one was fetched less than `min_interval` ago or while this
    /// request waited for another one's fetch.
    async fn refresh(&self, min_interval: Duration) {
        let asked = Instant::now();
        let _single_flight = self.refresh.lock().await;
        if let Some(attempted) = self.read_keys().attempted {
            if attempted >= asked || attempted.elapsed() < min_interval {
                return;
            }
        }
        let result = self.fetch_keys().await;
        let mut set = self.keys.write().unwrap_or_else(|p| p.into_inner());
        set.attempted = Some(Instant::now());
        match result {
            Ok(keys) => {
                set.keys = keys;
                set.fetched = set.attempted;
            }
            // The old keys stay in use.
            Err(error) => eprintln!("cannot fetch the issuer's keys: {error}"),
        }
    }

    async fn fetch_keys(&self) -> Result<Vec<Key>, String> {
        let jwks_uri = self.jwks_uri().await?;
        let jwks = self.get_json(jwks_uri.as_str()).await?;
        let keys: Vec<Key> = jwks["keys"]
            .as_array()
            .ok_or("the JWKS has no keys array")?
            .iter()
            .filter_map(Key::from_jwk)
            .collect();
        Ok(keys)
    }

    /// `jwks_uri` from the discovery document, read once.
    async fn jwks_uri(&self) -> Result<reqwest::Url, String> {
        let mut cached = self.jwks_uri.lock().await;
        if let Some(uri) = cached.as_ref() {
            return Ok(uri.clone());
        }
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery = self.get_json(&discovery_url).await?;
        let uri = discovery["jwks_uri"]
            .as_str()
            .ok_or("the discovery document has no jwks_uri")?;
        let uri = reqwest::Url::parse(uri).map_err(|e| format!("jwks_uri {uri:?}: {e}"))?;
        *cached = Some(uri.clone());
        Ok(uri)
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("GET {url}: {e}"))?;
        response.json().await.map_err(|e| format!("GET {url}: {e}"))
    }
}

fn invalid(reason: impl Into<String>) -> Refusal {
    Refusal::Invalid(reason.into())
}

fn unavailable(reason: &str) -> Problem {
    eprintln!("identity provider unavailable: {reason}");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The identity provider's keys cannot be read; try again.",
    )
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The JOSE header of a compact JWS, whatever its `alg`.
fn token_header(token: &str) -> Option<Value> {
    let (header, rest) = token.split_once('.')?;
    rest.contains('.').then_some(())?;
    let bytes = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

// ---------------------------------------------------------------------------------------------
// Notes.

/// The fields a client may set; anything else in the body (`owner_id`, `id`, `role`...) is
/// ignored.
struct NoteInput {
    title: Option<String>,
    body: Option<String>,
}

impl NoteInput {
    /// A `POST /notes` body (`partial = false`) or a merge patch (`partial = true`).
    fn validate(value: &Value, partial: bool) -> Result<NoteInput, Problem> {
        let Some(object) = value.as_object() else {
            return Err(Problem::invalid(vec![FieldError::new(
                "",
                "must be a JSON object",
            )]));
        };
        let mut errors = Vec::new();
        let max_title = if bugs::is(Bug::ValidationOffByOne) {
            MAX_TITLE_CHARS + 1
        } else {
            MAX_TITLE_CHARS
        };
        let title = match object.get("title") {
            None if partial => None,
            Some(Value::String(t)) if t.contains('\0') => {
                errors.push(FieldError::new("/title", NUL_DETAIL));
                None
            }
            Some(Value::String(t)) if (1..=max_title).contains(&t.chars().count()) => {
                Some(t.clone())
            }
            Some(Value::String(t)) if t.chars().count() > max_title => {
                if bugs::is(Bug::StackTraceErrors) {
                    return Err(stack_trace(VALUE_TOO_LONG));
                }
                errors.push(FieldError::new(
                    "/title",
                    format!("must be a string of 1 to {MAX_TITLE_CHARS} characters"),
                ));
                None
            }
            _ => {
                errors.push(FieldError::new(
                    "/title",
                    format!("must be a string of 1 to {MAX_TITLE_CHARS} characters"),
                ));
                None
            }
        };
        let body = match object.get("body") {
            // Planted bug patch-drops-body: a patch without `body` empties it, like a PUT.
            None if partial && bugs::is(Bug::PatchDropsBody) => Some(String::new()),
            None if partial => None,
            // Absent on create, or removed by a merge patch: the default.
            None | Some(Value::Null) => Some(String::new()),
            Some(Value::String(b)) if b.contains('\0') => {
                errors.push(FieldError::new("/body", NUL_DETAIL));
                None
            }
            Some(Value::String(b)) if b.chars().count() <= MAX_BODY_CHARS => Some(b.clone()),
            other => {
                if other.is_some_and(Value::is_string) && bugs::is(Bug::StackTraceErrors) {
                    return Err(stack_trace(VALUE_TOO_LONG));
                }
                errors.push(FieldError::new(
                    "/body",
                    format!("must be a string of at most {MAX_BODY_CHARS} characters"),
                ));
                None
            }
        };
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        Ok(NoteInput { title, body })
    }
}

/// Planted bug mass-assign-owner: the body's `owner_id`, applied as if the client may set it.
fn assigned_owner(body: &Value) -> Option<String> {
    bugs::is(Bug::MassAssignOwner)
        .then(|| body["owner_id"].as_str().map(str::to_string))
        .flatten()
}

fn note_json(row: &Row) -> Value {
    let id: String = row.get("id");
    // Planted bug sequential-ids: the id is the serial number, sent as a JSON number.
    let id = match id.parse::<i64>() {
        Ok(n) if bugs::is(Bug::SequentialIds) => json!(n),
        _ => json!(id),
    };
    let created_at: DateTime<Utc> = row.get("created_at");
    json!({
        "id": id,
        "owner_id": row.get::<_, String>("owner_id"),
        "title": row.get::<_, String>("title"),
        "body": row.get::<_, String>("body"),
        "created_at": created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    })
}

fn note_not_found() -> Problem {
    Problem::not_found("There is no note with this id.")
}

/// A JSON body, or the planted bug stack-trace-errors' 500 for one that is not JSON.
fn json_body(body: Result<Value, Problem>) -> Result<Value, Problem> {
    body.map_err(|problem| {
        if problem.status() == StatusCode::BAD_REQUEST && bugs::is(Bug::StackTraceErrors) {
            return stack_trace(format_args!("Error({:?})", problem.detail()));
        }
        problem
    })
}

/// `POST /notes`.
async fn create_note(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody, Problem>,
) -> Result<Response, Problem> {
    let body = json_body(body.map(|JsonBody(b)| b))?;
    let input = NoteInput::validate(&body, false)?;
    let owner = assigned_owner(&body).unwrap_or(caller.sub);
    let (title, text) = (
        input.title.unwrap_or_default(),
        input.body.unwrap_or_default(),
    );
    let db = state.pool.get().await?;
    let row = if bugs::is(Bug::SequentialIds) {
        db.query_one(
            &format!(
                "INSERT INTO notes (n, id, owner_id, title, body)
                 SELECT s.n, s.n::text, $1, $2, $3
                 FROM (SELECT nextval(pg_get_serial_sequence('notes', 'n')) AS n) AS s
                 RETURNING {NOTE_COLUMNS}"
            ),
            &[&owner, &title, &text],
        )
        .await?
    } else {
        db.query_one(
            &format!(
                "INSERT INTO notes (id, owner_id, title, body) VALUES ($1, $2, $3, $4)
                 RETURNING {NOTE_COLUMNS}"
            ),
            &[&Uuid::new_v4().to_string(), &owner, &title, &text],
        )
        .await?
    };
    let note = note_json(&row);
    let id = match &note["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let location = HeaderValue::try_from(format!("/notes/{id}"))
        .map_err(|e| Problem::internal(format_args!("Location: {e}")))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(note),
    )
        .into_response())
}

/// `GET /notes?q=&limit=`.
async fn list_notes(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let param = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let limit = match param("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => match text.trim().parse::<i64>() {
            Ok(n) if n >= 1 && (n <= MAX_LIMIT || bugs::is(Bug::NoPageCap)) => n,
            _ => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be an integer from 1 to {MAX_LIMIT}."),
                ))
            }
        },
    };
    let q = param("q").filter(|q| !q.is_empty());
    if q.as_ref().is_some_and(|q| q.contains('\0')) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "q must not contain the NUL character.",
        ));
    }

    let mut conditions: Vec<String> = Vec::new();
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if !bugs::is(Bug::ListAllOwners) {
        args.push(&caller.sub);
        conditions.push(format!("owner_id = ${}", args.len()));
    }
    if let Some(q) = &q {
        if bugs::is(Bug::SqlStringBuilt) {
            // Planted bug: the search text pasted into the SQL.
            conditions.push(format!("title ILIKE '%{q}%'"));
        } else {
            args.push(q);
            // strpos, not LIKE: `%` and `_` in `q` are plain characters.
            conditions.push(if bugs::is(Bug::IgnoreCaseSearchBroken) {
                format!("strpos(title, ${}) > 0", args.len())
            } else {
                format!("strpos(lower(title), lower(${})) > 0", args.len())
            });
        }
    }
    let limit_clause = if bugs::is(Bug::SqlStringBuilt) {
        format!("LIMIT {limit}")
    } else {
        args.push(&limit);
        format!("LIMIT ${}", args.len())
    };
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {NOTE_COLUMNS} FROM notes {filter} ORDER BY created_at DESC, n DESC {limit_clause}"
    );
    let rows = state.pool.get().await?.query(&sql, &args).await?;
    let items: Vec<Value> = rows.iter().map(note_json).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

/// A note id from the path; one no note can have (a NUL) is simply not found.
fn note_id(Path(id): Path<String>) -> Result<String, Problem> {
    if id.contains('\0') {
        return Err(note_not_found());
    }
    Ok(id)
}

/// `WHERE` for one note: its id and, unless `bug` is planted, its owner (`$1`, `$2`).
fn one_note(bug: Bug) -> &'static str {
    if bugs::is(bug) {
        "id = $1 AND $2::text IS NOT NULL"
    } else {
        "id = $1 AND owner_id = $2"
    }
}

/// `GET /notes/{id}`.
async fn read_note(
    State(state): State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Response, Problem> {
    let id = note_id(id)?;
    let sql = format!(
        "SELECT {NOTE_COLUMNS} FROM notes WHERE {}",
        one_note(Bug::BolaRead)
    );
    let row = state
        .pool
        .get()
        .await?
        .query_opt(&sql, &[&id, &caller.sub])
        .await?
        .ok_or_else(note_not_found)?;
    Ok(Json(note_json(&row)).into_response())
}

/// `PATCH /notes/{id}`: a JSON merge patch of `title` and `body`.
async fn patch_note(
    State(state): State<AppState>,
    caller: Caller,
    id: Path<String>,
    body: Result<MergePatchBody, Problem>,
) -> Result<Response, Problem> {
    let id = note_id(id)?;
    let body = json_body(body.map(|MergePatchBody(b)| b))?;
    let input = NoteInput::validate(&body, true)?;
    let owner = assigned_owner(&body);
    let sql = format!(
        "UPDATE notes SET title = COALESCE($3, title), body = COALESCE($4, body),
                          owner_id = COALESCE($5, owner_id)
         WHERE {} RETURNING {NOTE_COLUMNS}",
        one_note(Bug::BolaPatch)
    );
    let row = state
        .pool
        .get()
        .await?
        .query_opt(&sql, &[&id, &caller.sub, &input.title, &input.body, &owner])
        .await?
        .ok_or_else(note_not_found)?;
    Ok(Json(note_json(&row)).into_response())
}

/// `DELETE /notes/{id}`.
async fn delete_note(
    State(state): State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Response, Problem> {
    let id = note_id(id)?;
    let sql = format!("DELETE FROM notes WHERE {}", one_note(Bug::BolaDelete));
    let deleted = state
        .pool
        .get()
        .await?
        .execute(&sql, &[&id, &caller.sub])
        .await?;
    if deleted == 0 {
        return Err(note_not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/stats`: for tokens whose `roles` hold `admin`.
async fn admin_stats(State(state): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    if !caller.admin && !bugs::is(Bug::AdminNoRoleCheck) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "This route is for administrators.",
        ));
    }
    let row = state
        .pool
        .get()
        .await?
        .query_one(
            "SELECT (SELECT count(*) FROM notes), (SELECT count(*) FROM accounts)",
            &[],
        )
        .await?;
    Ok(
        Json(json!({ "notes": row.get::<_, i64>(0), "accounts": row.get::<_, i64>(1) }))
            .into_response(),
    )
}

// ---------------------------------------------------------------------------------------------
// Local accounts.

struct AccountInput {
    username: String,
    password: String,
}

impl AccountInput {
    fn validate(value: &Value) -> Result<AccountInput, Problem> {
        let Some(object) = value.as_object() else {
            return Err(Problem::invalid(vec![FieldError::new(
                "",
                "must be a JSON object",
            )]));
        };
        let mut errors = Vec::new();
        let username = match object.get("username").and_then(Value::as_str) {
            Some(u)
                if USERNAME_CHARS.contains(&u.chars().count())
                    && u.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    }) =>
            {
                u.to_string()
            }
            Some(u)
                if u.chars().count() > *USERNAME_CHARS.end() && bugs::is(Bug::StackTraceErrors) =>
            {
                return Err(stack_trace(VALUE_TOO_LONG));
            }
            _ => {
                errors.push(FieldError::new(
                    "/username",
                    "must be 3 to 40 characters of a-z, 0-9, _ and -",
                ));
                String::new()
            }
        };
        let min_password = if bugs::is(Bug::ValidationOffByOne) {
            PASSWORD_CHARS.start() - 1
        } else {
            *PASSWORD_CHARS.start()
        };
        // Characters are Unicode scalar values: "é" is one, whatever its UTF-8 length.
        let password = match object.get("password").and_then(Value::as_str) {
            Some(p) if (min_password..=*PASSWORD_CHARS.end()).contains(&p.chars().count()) => {
                p.to_string()
            }
            Some(p)
                if p.chars().count() > *PASSWORD_CHARS.end() && bugs::is(Bug::StackTraceErrors) =>
            {
                return Err(stack_trace(VALUE_TOO_LONG));
            }
            _ => {
                errors.push(FieldError::new(
                    "/password",
                    "must be a string of 12 to 128 characters",
                ));
                String::new()
            }
        };
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        Ok(AccountInput { username, password })
    }
}

/// argon2id with the OWASP Password Storage Cheat Sheet's minimum: 19 MiB, 2 iterations, 1 lane.
fn argon2id() -> Argon2<'static> {
    let (memory_kib, iterations) = if bugs::is(Bug::WeakArgon2) {
        (4096, 1)
    } else {
        (19_456, 2)
    };
    let params = argon2::Params::new(memory_kib, iterations, 1, None)
        .expect("the argon2 parameters are valid");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// The string stored for `password`: its PHC string (algorithm, cost, salt and hash).
fn hash_password(password: &str) -> Result<String, String> {
    if bugs::is(Bug::PlaintextPasswords) {
        return Ok(password.to_string());
    }
    if bugs::is(Bug::UnsaltedSha256) {
        return Ok(sha256_hex(password));
    }
    let salt = SaltString::generate(&mut OsRng);
    argon2id()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

fn verify_password(password: &str, stored: &str) -> bool {
    if bugs::is(Bug::PlaintextPasswords) {
        return password == stored;
    }
    if bugs::is(Bug::UnsaltedSha256) {
        return sha256_hex(password) == stored;
    }
    // The parameters and the salt come from the stored string.
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

fn sha256_hex(password: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A hash to verify against for unknown usernames, so they take as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&Uuid::new_v4().to_string()).unwrap_or_else(|_| {
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG".into()
        })
    })
}

/// Hashing is CPU-bound for tens of milliseconds: off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Problem::internal(format_args!("password hashing task: {e}")))
}

/// `POST /accounts`.
async fn create_account(
    State(state): State<AppState>,
    body: Result<JsonBody, Problem>,
) -> Result<Response, Problem> {
    let body = json_body(body.map(|JsonBody(b)| b))?;
    let input = AccountInput::validate(&body)?;
    let password = input.password;
    let hash = blocking(move || hash_password(&password))
        .await?
        .map_err(Problem::internal)?;
    let row = state
        .pool
        .get()
        .await?
        .query_opt(
            "INSERT INTO accounts (id, username, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (username) DO NOTHING
             RETURNING id, username, password_hash, created_at",
            &[&Uuid::new_v4(), &input.username, &hash],
        )
        .await?;
    let Some(row) = row else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "This username is taken.",
        ));
    };
    let account = if bugs::is(Bug::PasswordHashInResponse) {
        // Planted bug: the stored row, serialised as is.
        let created_at: DateTime<Utc> = row.get("created_at");
        json!({
            "id": row.get::<_, Uuid>("id"),
            "username": row.get::<_, String>("username"),
            "password_hash": row.get::<_, String>("password_hash"),
            "created_at": created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        })
    } else {
        json!({ "username": row.get::<_, String>("username") })
    };
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

/// `POST /accounts/login`.
async fn login(
    State(state): State<AppState>,
    body: Result<JsonBody, Problem>,
) -> Result<Response, Problem> {
    let body = json_body(body.map(|JsonBody(b)| b))?;
    if bugs::is(Bug::LogsPassword) {
        println!("login attempt: {body}");
    }
    let (Some(username), Some(password)) = (body["username"].as_str(), body["password"].as_str())
    else {
        return Err(Problem::invalid(vec![FieldError::new(
            "",
            "must be an object with the strings username and password",
        )]));
    };
    if let Err(wait) = limiter().attempt(username) {
        return Err(too_many_attempts(wait));
    }
    // No username holds a NUL (validation refuses it), and PostgreSQL could not compare one.
    let stored: Option<String> = if username.contains('\0') {
        None
    } else {
        state
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT password_hash FROM accounts WHERE username = $1",
                &[&username],
            )
            .await?
            .map(|row| row.get(0))
    };
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| dummy_hash().to_string());
    let password = password.to_string();
    let matches = blocking(move || verify_password(&password, &stored)).await?;
    if known && matches {
        return Ok(Json(json!({ "username": username })).into_response());
    }
    if !known && bugs::is(Bug::LoginEnumeration) {
        return Err(Problem::not_found(
            "There is no account with this username.",
        ));
    }
    Err(Problem::new(
        StatusCode::UNAUTHORIZED,
        "The username or the password is wrong.",
    ))
}

const MAX_ATTEMPTS: usize = 5;
const ATTEMPT_WINDOW: Duration = Duration::from_secs(5);

/// At most [`MAX_ATTEMPTS`] logins per username in any [`ATTEMPT_WINDOW`] (a sliding window).
/// Refused attempts are not counted, so `Retry-After` stays true.
struct LoginLimiter {
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// Counts an attempt, or says how long until one will be accepted.
    fn attempt(&self, username: &str) -> Result<(), Duration> {
        if bugs::is(Bug::NoRateLimit) {
            return Ok(());
        }
        // Planted bug global-rate-limit: one counter for every username.
        let key = if bugs::is(Bug::GlobalRateLimit) {
            ""
        } else {
            username
        };
        let now = Instant::now();
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if attempts.len() > 10_000 {
            attempts.retain(|_, times| times.back().is_some_and(|t| now - *t < ATTEMPT_WINDOW));
        }
        let times = attempts.entry(key.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= ATTEMPT_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= MAX_ATTEMPTS {
            return Err(ATTEMPT_WINDOW - now.duration_since(times[0]));
        }
        times.push_back(now);
        Ok(())
    }
}

fn limiter() -> &'static LoginLimiter {
    static LIMITER: OnceLock<LoginLimiter> = OnceLock::new();
    LIMITER.get_or_init(|| LoginLimiter {
        attempts: Mutex::new(HashMap::new()),
    })
}

fn too_many_attempts(wait: Duration) -> Problem {
    // Whole seconds, rounded up: an attempt after that many seconds is accepted.
    let seconds = if bugs::is(Bug::RetryAfterLies) {
        1
    } else {
        wait.as_secs_f64()
            .ceil()
            .clamp(1.0, ATTEMPT_WINDOW.as_secs_f64()) as u64
    };
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Too many login attempts for this username; try again in {seconds} s."),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
}

// ---------------------------------------------------------------------------------------------
// Browser headers.

/// Adds `X-Content-Type-Options: nosniff` to every response and answers CORS for
/// `ALLOWED_ORIGIN` (preflights included); does nothing when `AUTH_ISSUER_URL` is not set.
pub async fn browser_headers(req: Request, next: Next) -> Response {
    let Some(config) = config() else {
        return next.run(req).await;
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().is_some_and(|origin| {
        bugs::is(Bug::CorsAnyOrigin)
            || config
                .allowed_origin
                .as_ref()
                .is_some_and(|allowed| origin.as_bytes() == allowed.as_bytes())
    });
    let preflight = req.method() == Method::OPTIONS
        && origin.is_some()
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.append(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        if allowed {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, POST, PATCH, DELETE"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Content-Type"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        response
    } else {
        let mut response = next.run(req).await;
        if allowed {
            response.headers_mut().insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Location, Retry-After, WWW-Authenticate"),
            );
        }
        response
    };
    let headers = response.headers_mut();
    if !preflight {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let (true, Some(origin)) = (allowed, origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if bugs::is(Bug::CorsAnyOrigin) {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
    if !bugs::is(Bug::NoNosniff) {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Planted bug stack-trace-errors.

const VALUE_TOO_LONG: &str = r#"Error { kind: Db, cause: Some(DbError { severity: "ERROR", code: SqlState(E22001), message: "value too long for type character varying(200)", file: Some("varchar.c"), line: Some(638), routine: Some("varchar") }) }"#;

/// A 500 whose body shows what a debug build's panic handler prints: the error, a file path and
/// a backtrace.
fn stack_trace(error: impl Debug) -> Problem {
    let detail = format!(
        "thread 'tokio-runtime-worker' panicked at tests/reference-service/src/security.rs:412:18:\n\
         called `Result::unwrap()` on an `Err` value: {error:?}\n\
         stack backtrace:\n   \
         0: rust_begin_unwind\n             at /rustc/library/std/src/panicking.rs:665:5\n   \
         1: core::result::unwrap_failed\n             at /rustc/library/core/src/result.rs:1679:5\n   \
         2: reference_service::security::create_note::{{{{closure}}}}\n             at /home/app/tests/reference-service/src/security.rs:412:18\n\
         note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace."
    );
    eprintln!("error: {detail}");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_rules() {
        let title = |n: usize| json!({ "title": "t".repeat(n) });
        assert!(NoteInput::validate(&title(200), false).is_ok());
        assert!(NoteInput::validate(&title(201), false).is_err());
        assert!(NoteInput::validate(&title(0), false).is_err());
        assert!(NoteInput::validate(&json!({}), false).is_err());
        assert!(NoteInput::validate(&json!({}), true).is_ok());
        let note = NoteInput::validate(&json!({"title": "a", "owner_id": "x"}), false).unwrap();
        assert_eq!(note.body.as_deref(), Some(""));
        let long = json!({"title": "a", "body": "é".repeat(10_000)});
        assert!(NoteInput::validate(&long, false).is_ok());
    }

    #[test]
    fn account_rules_count_characters() {
        let ok = |u: &str, p: &str| {
            AccountInput::validate(&json!({"username": u, "password": p})).is_ok()
        };
        assert!(ok("abc", "123456789012"));
        assert!(!ok("ab", "123456789012"));
        assert!(!ok("Abc", "123456789012"));
        assert!(ok(&"a".repeat(40), "123456789012"));
        assert!(!ok(&"a".repeat(41), "123456789012"));
        assert!(!ok("abc", "12345678901"));
        assert!(ok("abc", &"é".repeat(128)));
        assert!(!ok("abc", &"é".repeat(129)));
    }

    #[test]
    fn passwords_are_salted_argon2id() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b);
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterY", &a));
    }

    #[test]
    fn logins_are_limited_per_username() {
        let limiter = LoginLimiter {
            attempts: Mutex::new(HashMap::new()),
        };
        for _ in 0..MAX_ATTEMPTS {
            assert!(limiter.attempt("amber").is_ok());
        }
        let wait = limiter.attempt("amber").unwrap_err();
        assert!(wait > Duration::from_secs(4) && wait <= ATTEMPT_WINDOW);
        assert!(limiter.attempt("otter").is_ok());
    }

    #[test]
    fn bearer_tokens_and_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer a.b.c"),
        );
        assert_eq!(bearer_token(&headers), Some("a.b.c"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_eq!(bearer_token(&headers), None);
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), "e30");
        assert_eq!(token_header(&none).unwrap()["alg"], "none");
        assert_eq!(token_header("abc"), None);
    }
}
