//! Caching: exercise `caching` (task statement: `exercises/caching/README.md`).
//!
//! Two halves:
//!
//! - **Pages** (`/pages/{slug}`, stored in PostgreSQL) with HTTP validators and conditional
//!   requests: a strong ETag (a hash of the content) and Last-Modified on every response; 304 for
//!   If-None-Match (weak comparison) and If-Modified-Since, in RFC 9110 §13.2.2's order; 412 for a
//!   PUT whose If-Match (strong comparison) or If-None-Match fails. The preconditions are checked
//!   on the row locked `FOR UPDATE`, in the transaction that writes, so two saves arriving
//!   together cannot both pass the check.
//! - **Profiles** from the slow profile service (`PROFILES_URL`), behind an in-process cache-aside
//!   [`ProfileCache`]: entries expire after `CACHE_TTL_SECONDS`, a `PATCH /me` drops the user's
//!   entry, misses for one key are coalesced (one lookup, the others wait for it), and entries
//!   are keyed by the user, `/me` included.
//!
//! In-process is enough for one instance; with several, the cache (and its invalidations) would
//! move to Redis, as the task statement discusses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody};
use crate::problem::{FieldError, Problem};
use crate::AppState;

pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS pages (
        slug       text        PRIMARY KEY,
        title      text        NOT NULL,
        body       text        NOT NULL,
        etag       text        NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/pages/{slug}",
            allow(get(read_page).put(put_page), "GET, HEAD, PUT"),
        )
        .route("/profiles/{user}", allow(get(read_profile), "GET, HEAD"))
        .route(
            "/me",
            allow(get(read_me).patch(patch_me), "GET, HEAD, PATCH"),
        )
}

// ---------------------------------------------------------------------------------------------
// Pages: validators and conditional requests.

const MAX_TITLE_CHARS: usize = 200;
const MAX_BODY_CHARS: usize = 100_000;
/// Pages may be reused by any cache for a minute; after that, a revalidation costs a 304.
const PAGE_CACHE_CONTROL: &str = "public, max-age=60";
/// Planted race bugs pause this long between their check and their write: a busy server does
/// the same now and then; the pause makes it happen on every test run.
const RACE_WINDOW: Duration = Duration::from_millis(300);

struct Page {
    slug: String,
    title: String,
    body: String,
    /// The entity-tag's opaque part, without quotes.
    etag: String,
    updated_at: DateTime<Utc>,
}

impl Page {
    fn quoted_etag(&self) -> String {
        format!("\"{}\"", self.etag)
    }

    /// Last-Modified has one-second resolution: the update time, truncated.
    fn last_modified(&self) -> DateTime<Utc> {
        let seconds =
            DateTime::from_timestamp(self.updated_at.timestamp(), 0).unwrap_or(self.updated_at);
        if bugs::is(Bug::CacheLastModifiedFuture) {
            // The classic mix-up: local time (an hour ahead of UTC) labelled GMT.
            return seconds + TimeDelta::hours(1);
        }
        seconds
    }

    fn json(&self) -> Value {
        // Planted bug cache-updated-at-naive: a database timestamp printed as is, without zone.
        let updated_at = if bugs::is(Bug::CacheUpdatedAtNaive) {
            self.updated_at.format("%Y-%m-%d %H:%M:%S").to_string()
        } else {
            self.updated_at.to_rfc3339_opts(SecondsFormat::Micros, true)
        };
        json!({
            "slug": self.slug,
            "title": self.title,
            "body": self.body,
            "updated_at": updated_at,
        })
    }
}

/// An IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(time: DateTime<Utc>) -> String {
    time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The strong validator of a page's content: FNV-1a (64 bits) of title and body. A hash rather
/// than a counter, so saving identical content twice keeps the tag (no spurious 412 on a retry).
/// FNV is plenty for a worked example; a real service would use SHA-256.
fn content_etag(title: &str, body: &str) -> String {
    // Planted bug cache-etag-title-only: the tag is derived from the field that "identifies" the
    // page, not from the whole representation.
    let body = if bugs::is(Bug::CacheEtagTitleOnly) {
        ""
    } else {
        body
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in title.bytes().chain([0]).chain(body.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The entity-tags of an If-Match or If-None-Match list, as (weak, opaque); `None` for `*`.
fn entity_tags(list: &str) -> Option<Vec<(bool, String)>> {
    if list.trim() == "*" {
        return None;
    }
    let mut tags = Vec::new();
    let mut rest = list;
    while let Some(start) = rest.find('"') {
        let weak = rest[..start].trim_end().ends_with("W/");
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        tags.push((weak, after[..end].to_string()));
        rest = &after[end + 1..];
    }
    Some(tags)
}

/// If-Match: strong comparison, so weak tags never match (RFC 9110 §13.1.1).
fn if_match_holds(list: &str, current: &Page) -> bool {
    // Planted bug cache-if-match-weak: the weak comparison of If-None-Match used for If-Match.
    let weak_allowed = bugs::is(Bug::CacheIfMatchWeak);
    match entity_tags(list) {
        None => true,
        Some(tags) => tags
            .iter()
            .any(|(weak, opaque)| (weak_allowed || !weak) && *opaque == current.etag),
    }
}

/// If-None-Match: weak comparison (RFC 9110 §13.1.2); true when some tag matches.
fn if_none_match_matches(list: &str, current: &Page) -> bool {
    match entity_tags(list) {
        None => true,
        Some(tags) => tags.iter().any(|(_, opaque)| *opaque == current.etag),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Whether a GET may answer 304, in RFC 9110 §13.2.2's order: If-None-Match when present, else
/// If-Modified-Since (an invalid date is ignored).
fn not_modified(headers: &HeaderMap, page: &Page) -> bool {
    let modified_since = || {
        let since = header_text(headers, header::IF_MODIFIED_SINCE)?;
        // Planted bug cache-ims-lenient: "be liberal in what you accept" taken too far.
        let since = if bugs::is(Bug::CacheImsLenient) {
            DateTime::parse_from_rfc2822(&since)
                .or_else(|_| DateTime::parse_from_rfc3339(&since))
                .ok()?
        } else {
            DateTime::parse_from_rfc2822(&since).ok()?
        };
        Some(page.updated_at.timestamp() <= since.timestamp())
    };
    match header_text(headers, header::IF_NONE_MATCH) {
        Some(list) if bugs::is(Bug::CacheImsOverInm) => {
            if_none_match_matches(&list, page) || modified_since() == Some(true)
        }
        // Planted bug cache-inm-exact-string: the header is taken as one tag (W/ stripped).
        Some(list) if bugs::is(Bug::CacheInmExactString) => {
            list.trim().trim_start_matches("W/") == page.quoted_etag()
        }
        Some(list) => if_none_match_matches(&list, page),
        None => modified_since() == Some(true),
    }
}

fn page_cache_control() -> HeaderValue {
    if bugs::is(Bug::CacheMaxAgeQuoted) {
        return HeaderValue::from_static("public, max-age=\"60\"");
    }
    if bugs::is(Bug::CachePagesNoPublic) {
        return HeaderValue::from_static("max-age=60");
    }
    HeaderValue::from_static(PAGE_CACHE_CONTROL)
}

/// Validators and caching headers, on every page response.
fn page_headers(page: &Page) -> Vec<(header::HeaderName, HeaderValue)> {
    let mut headers = vec![(header::CACHE_CONTROL, page_cache_control())];
    if let Ok(etag) = HeaderValue::from_str(&page.quoted_etag()) {
        headers.push((header::ETAG, etag));
    }
    if let Ok(date) = HeaderValue::from_str(&http_date(page.last_modified())) {
        headers.push((header::LAST_MODIFIED, date));
    }
    headers
}

fn page_response(status: StatusCode, page: &Page) -> Response {
    let mut response = (status, axum::Json(page.json())).into_response();
    response.headers_mut().extend(page_headers(page));
    response
}

/// The answer to a `PUT` that wrote (or kept) the page: the page, with its validators, so the
/// writer can make its next conditional request without reading the page first.
fn write_response(status: StatusCode, page: &Page) -> Response {
    let mut response = page_response(status, page);
    if bugs::is(Bug::CachePutNoValidators) {
        response.headers_mut().remove(header::ETAG);
        response.headers_mut().remove(header::LAST_MODIFIED);
    }
    response
}

/// A 304 stands for the 200 it saves: no body, and the same validators and Cache-Control.
fn not_modified_response(page: &Page) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    if !bugs::is(Bug::Cache304DropsHeaders) {
        response.headers_mut().extend(page_headers(page));
    }
    response
}

fn valid_slug(slug: &str) -> bool {
    (1..=200).contains(&slug.chars().count())
}

async fn load_page(
    db: &impl deadpool_postgres::GenericClient,
    slug: &str,
    lock: bool,
) -> Result<Option<Page>, Problem> {
    let sql = if lock {
        "SELECT title, body, etag, updated_at FROM pages WHERE slug = $1 FOR UPDATE"
    } else {
        "SELECT title, body, etag, updated_at FROM pages WHERE slug = $1"
    };
    Ok(db.query_opt(sql, &[&slug]).await?.map(|row| Page {
        slug: slug.to_string(),
        title: row.get(0),
        body: row.get(1),
        etag: row.get(2),
        updated_at: row.get(3),
    }))
}

/// `GET /pages/{slug}` (and HEAD).
async fn read_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let not_found = || Problem::not_found(format!("There is no page {slug}."));
    if !valid_slug(&slug) {
        return Err(not_found());
    }
    let db = state.pool.get().await?;
    let Some(page) = load_page(&db, &slug, false).await? else {
        // Planted bug cache-page-404-empty: the status alone, no problem document.
        if bugs::is(Bug::CachePage404Empty) {
            return Ok(StatusCode::NOT_FOUND.into_response());
        }
        return Err(not_found());
    };
    if not_modified(&headers, &page) {
        // Planted bug cache-ims-304-bare: the date branch answers a bare 304 of its own.
        if bugs::is(Bug::CacheIms304Bare) && !headers.contains_key(header::IF_NONE_MATCH) {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        return Ok(not_modified_response(&page));
    }
    Ok(page_response(StatusCode::OK, &page))
}

/// A validated `PUT /pages/{slug}` body.
struct PageInput {
    title: String,
    body: String,
}

impl PageInput {
    fn validate(body: &Value) -> Result<Self, Problem> {
        let Some(object) = body.as_object() else {
            return Err(Problem::invalid(vec![FieldError::new(
                "",
                "must be a JSON object",
            )]));
        };
        let mut errors = Vec::new();
        // Planted bug cache-title-bytes: `len()` is bytes, not characters.
        let length = |t: &str| {
            if bugs::is(Bug::CacheTitleBytes) {
                t.len()
            } else {
                t.chars().count()
            }
        };
        let title = match object.get("title").and_then(Value::as_str) {
            Some(t) if (1..=MAX_TITLE_CHARS).contains(&length(t)) => t.to_string(),
            _ => {
                errors.push(FieldError::new(
                    "/title",
                    format!("must be a string of 1 to {MAX_TITLE_CHARS} characters"),
                ));
                String::new()
            }
        };
        let body = match object.get("body").and_then(Value::as_str) {
            Some(b)
                if (b.chars().count() <= MAX_BODY_CHARS || bugs::is(Bug::CacheBodyUnbounded))
                    && !b.contains('\0') =>
            {
                b.to_string()
            }
            _ => {
                errors.push(FieldError::new(
                    "/body",
                    format!("must be a string of at most {MAX_BODY_CHARS} characters"),
                ));
                String::new()
            }
        };
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        Ok(Self { title, body })
    }
}

fn precondition_failed(detail: &str) -> Problem {
    Problem::new(StatusCode::PRECONDITION_FAILED, detail)
}

/// `PUT /pages/{slug}`: creates (201) or replaces (200) the page, if its preconditions hold.
async fn put_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    if !valid_slug(&slug) {
        return Err(Problem::not_found(format!("There is no page {slug}.")));
    }
    let input = PageInput::validate(&body)?;
    let if_match =
        header_text(&headers, header::IF_MATCH).filter(|_| !bugs::is(Bug::CacheIfMatchIgnored));
    let if_none_match = header_text(&headers, header::IF_NONE_MATCH)
        .filter(|_| !bugs::is(Bug::CacheCreateOverwrites));
    // Planted bug cache-put-requires-precondition: 428 for every unconditional PUT, even a create
    // (the task statement allows it for replacing only).
    if bugs::is(Bug::CachePutRequiresPrecondition) && if_match.is_none() && if_none_match.is_none()
    {
        return Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "Send If-Match (or If-None-Match: *) with every PUT.",
        ));
    }
    let mut db = state.pool.get().await?;
    // A create that loses a race with another create finds the row on the second pass.
    for _ in 0..2 {
        let tx = db.transaction().await?;
        // Planted bug cache-if-match-unlocked: the row is read without FOR UPDATE, so two writes
        // based on the same ETag both pass the comparison before either writes.
        let unlocked = bugs::is(Bug::CacheIfMatchUnlocked);
        let current = load_page(&tx, &slug, !unlocked).await?;
        // RFC 9110 §13.2.2: If-Match first, then If-None-Match.
        if let Some(list) = &if_match {
            // Planted bug cache-if-match-creates: with no page there is "nothing to compare".
            let nothing_to_compare = current.is_none() && bugs::is(Bug::CacheIfMatchCreates);
            if !nothing_to_compare
                && !current
                    .as_ref()
                    .is_some_and(|page| if_match_holds(list, page))
            {
                return Err(precondition_failed(
                    "The page has changed since you read it (If-Match does not match its current ETag); read it again and reapply your change.",
                ));
            }
        }
        if let (Some(list), Some(page)) = (&if_none_match, &current) {
            if if_none_match_matches(list, page) {
                return Err(precondition_failed(
                    "The page already exists (If-None-Match: * asks to create it only if it does not).",
                ));
            }
        }
        let etag = content_etag(&input.title, &input.body);
        let Some(page) = current else {
            // Planted bug cache-create-upsert: "it did not exist a moment ago" is taken as still
            // true, and the insert overwrites a page created meanwhile. The pause stands for
            // whatever a busy server does between the check and the write; it makes the race show
            // on every run.
            let sql = if bugs::is(Bug::CacheCreateUpsert) {
                tokio::time::sleep(RACE_WINDOW).await;
                "INSERT INTO pages (slug, title, body, etag) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (slug) DO UPDATE SET title = $2, body = $3, etag = $4,
                 updated_at = now() RETURNING updated_at"
            } else {
                "INSERT INTO pages (slug, title, body, etag) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (slug) DO NOTHING RETURNING updated_at"
            };
            let created = tx
                .query_opt(sql, &[&slug, &input.title, &input.body, &etag])
                .await?;
            let Some(row) = created else { continue };
            tx.commit().await?;
            let page = Page {
                slug: slug.clone(),
                title: input.title,
                body: input.body,
                etag,
                updated_at: row.get(0),
            };
            let mut response = write_response(StatusCode::CREATED, &page);
            match HeaderValue::from_str(&format!("/pages/{slug}")) {
                Ok(_) if bugs::is(Bug::CacheCreateNoLocation) => {}
                Ok(location) => {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                Err(_) => {}
            }
            return Ok(response);
        };
        if page.title == input.title && page.body == input.body {
            // Planted bug cache-noop-put-bumps: every save counts as a change.
            if bugs::is(Bug::CacheNoopPutBumps) {
                let row = tx
                    .query_one(
                        "UPDATE pages SET updated_at = now() WHERE slug = $1 RETURNING updated_at",
                        &[&slug],
                    )
                    .await?;
                tx.commit().await?;
                let page = Page {
                    updated_at: row.get(0),
                    ..page
                };
                return Ok(write_response(StatusCode::OK, &page));
            }
            // Nothing changed: keep the validators, so caches keep their copies.
            return Ok(write_response(StatusCode::OK, &page));
        }
        if unlocked {
            tokio::time::sleep(RACE_WINDOW).await;
        }
        // Planted bug cache-etag-stale: the tag is computed once, at creation, and kept.
        let etag = if bugs::is(Bug::CacheEtagStale) {
            page.etag
        } else {
            etag
        };
        let row = tx
            .query_one(
                "UPDATE pages SET title = $2, body = $3, etag = $4, updated_at = now()
                 WHERE slug = $1 RETURNING updated_at",
                &[&slug, &input.title, &input.body, &etag],
            )
            .await?;
        tx.commit().await?;
        let page = Page {
            slug: slug.clone(),
            title: input.title,
            body: input.body,
            etag,
            updated_at: row.get(0),
        };
        // Planted bug cache-replace-204: a replace answers without the page.
        if bugs::is(Bug::CacheReplace204) {
            let mut response = StatusCode::NO_CONTENT.into_response();
            response.headers_mut().extend(page_headers(&page));
            return Ok(response);
        }
        return Ok(write_response(StatusCode::OK, &page));
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "The page was created by another request at the same moment; retry.",
    ))
}

// ---------------------------------------------------------------------------------------------
// Profiles: cache-aside in front of the slow profile service.

/// How long the profile service may take before a lookup counts as failed.
const PROFILES_TIMEOUT: Duration = Duration::from_secs(5);
/// TTL when `CACHE_TTL_SECONDS` is not set.
const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Above this many keys, expired entries are swept on the next store.
const SWEEP_ABOVE: usize = 10_000;

/// One key of the cache.
#[derive(Default)]
struct Slot {
    /// The cached profile and when it was fetched.
    entry: Option<(Arc<Value>, Instant)>,
    /// Bumped by every invalidation: a lookup that started before it must not store its result.
    generation: u64,
    /// Held by the one request fetching this key; the others wait on it (single flight).
    fill: Arc<tokio::sync::Mutex<()>>,
}

/// An in-process cache-aside of profiles, keyed by `profile:{user_id}`.
struct ProfileCache {
    ttl: Duration,
    slots: Mutex<HashMap<String, Slot>>,
    client: reqwest::Client,
    /// The profile service's base URL, or why there is none.
    base_url: Result<reqwest::Url, String>,
}

impl ProfileCache {
    fn from_env() -> Self {
        let ttl = std::env::var("CACHE_TTL_SECONDS")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_TTL, Duration::from_secs_f64);
        let base_url = std::env::var("PROFILES_URL")
            .map_err(|_| "PROFILES_URL is not set".to_string())
            .and_then(|u| {
                reqwest::Url::parse(&u).map_err(|e| format!("PROFILES_URL is not a URL: {e}"))
            });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(PROFILES_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            ttl,
            slots: Mutex::new(HashMap::new()),
            client,
            base_url,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh entry for `key`, if there is one. Planted bug cache-never-invalidated: entries
    /// never expire.
    fn fresh(&self, slots: &HashMap<String, Slot>, key: &str) -> Option<Arc<Value>> {
        let (profile, fetched) = slots.get(key)?.entry.as_ref()?;
        let never_expires = bugs::is(Bug::CacheNeverInvalidated);
        (never_expires || fetched.elapsed() < self.ttl).then(|| profile.clone())
    }

    /// The profile of `user`, cached under `key`: from the cache when fresh, otherwise fetched
    /// by exactly one request while the others for the same key wait for it.
    async fn get(&self, key: &str, user: &str) -> Result<Arc<Value>, Problem> {
        if bugs::is(Bug::CacheNone) {
            return self.fetch(user).await.map(Arc::new);
        }
        let fill = {
            let mut slots = self.lock();
            if let Some(profile) = self.fresh(&slots, key) {
                return answer(profile);
            }
            // Planted bug cache-serves-stale: an expired entry is answered once more, at once,
            // and dropped, so the read after it fetches (a lazy stale-while-revalidate, which the
            // README forbids). No background fetch: it would reach the profile service during
            // the next check.
            if bugs::is(Bug::CacheServesStale) {
                if let Some(slot) = slots.get_mut(key) {
                    if let Some((stale, _)) = slot.entry.take() {
                        return answer(stale);
                    }
                }
            }
            slots.entry(key.to_string()).or_default().fill.clone()
        };
        // Planted bug cache-no-coalescing: every miss fetches, however many arrive together.
        let _filling = if bugs::is(Bug::CacheNoCoalescing) {
            None
        } else {
            Some(fill.lock().await)
        };
        // Whoever held the fill lock before us may have stored the entry meanwhile.
        let generation = {
            let slots = self.lock();
            if let Some(profile) = self.fresh(&slots, key) {
                return answer(profile);
            }
            slots.get(key).map_or(0, |slot| slot.generation)
        };
        // Planted bug cache-stores-failures: the failure is kept like an answer, for the TTL.
        let profile = match self.fetch(user).await {
            Ok(profile) => Arc::new(profile),
            Err(problem) if bugs::is(Bug::CacheStoresFailures) => {
                let mut slots = self.lock();
                let slot = slots.entry(key.to_string()).or_default();
                slot.entry = Some((Arc::new(Value::Null), Instant::now()));
                return Err(problem);
            }
            Err(problem) => return Err(problem),
        };
        let mut slots = self.lock();
        if slots.len() > SWEEP_ABOVE {
            let ttl = self.ttl;
            // Keep slots in use (someone holds their fill lock) and fresh entries.
            slots.retain(|_, slot| {
                Arc::strong_count(&slot.fill) > 1
                    || slot
                        .entry
                        .as_ref()
                        .is_some_and(|(_, at)| at.elapsed() < ttl)
            });
        }
        let slot = slots.entry(key.to_string()).or_default();
        // Planted bug cache-store-after-invalidate: no generation check, so a lookup that started
        // before a write stores the old profile after the write's invalidation.
        if slot.generation == generation || bugs::is(Bug::CacheStoreAfterInvalidate) {
            slot.entry = Some((profile.clone(), Instant::now()));
        }
        Ok(profile)
    }

    /// Drops the entry of `key`: the next read fetches it again.
    fn invalidate(&self, key: &str) {
        if bugs::is(Bug::CacheNeverInvalidated) {
            return;
        }
        let mut slots = self.lock();
        let slot = slots.entry(key.to_string()).or_default();
        slot.entry = None;
        slot.generation += 1;
    }

    fn profile_url(&self, user: &str) -> Result<reqwest::Url, Problem> {
        let mut url = self.base_url.clone().map_err(|e| profiles_failed(&e))?;
        url.path_segments_mut()
            .map_err(|_| profiles_failed("PROFILES_URL cannot take a path"))?
            .pop_if_empty()
            .extend(["profiles", user]);
        Ok(url)
    }

    async fn fetch(&self, user: &str) -> Result<Value, Problem> {
        let response = self.client.get(self.profile_url(user)?).send().await;
        profile_from(response).await
    }

    /// Changes the profile at the profile service; returns the updated profile.
    async fn update(&self, user: &str, changes: &Value) -> Result<Value, Problem> {
        let response = self
            .client
            .patch(self.profile_url(user)?)
            .json(changes)
            .send()
            .await;
        profile_from(response).await
    }
}

/// A cached entry as an answer: `null` is a failure kept by the planted bug cache-stores-failures.
fn answer(profile: Arc<Value>) -> Result<Arc<Value>, Problem> {
    if profile.is_null() {
        return Err(profiles_failed("a cached failure"));
    }
    Ok(profile)
}

async fn profile_from(response: reqwest::Result<reqwest::Response>) -> Result<Value, Problem> {
    let response = response.map_err(|e| profiles_failed(&format!("no answer: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(profiles_failed(&format!("status {status}")));
    }
    let profile: Value = response
        .json()
        .await
        .map_err(|e| profiles_failed(&format!("unreadable answer: {e}")))?;
    if !profile.is_object() {
        return Err(profiles_failed("the answer is not a JSON object"));
    }
    Ok(profile)
}

fn profiles_failed(reason: &str) -> Problem {
    eprintln!("profile service failed: {reason}");
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "The profile service did not answer; try again.",
    )
}

fn profiles() -> &'static ProfileCache {
    static CACHE: OnceLock<ProfileCache> = OnceLock::new();
    CACHE.get_or_init(ProfileCache::from_env)
}

fn cache_key(user: &str) -> String {
    format!("profile:{user}")
}

/// The signed-in user: in this exercise the bearer token is the user id itself.
fn bearer_user(headers: &HeaderMap) -> Result<String, Problem> {
    // Planted bug cache-me-anonymous: no credentials means a guest, not a 401.
    if bugs::is(Bug::CacheMeAnonymous) && !headers.contains_key(header::AUTHORIZATION) {
        return Ok("anonymous".to_string());
    }
    header_text(headers, header::AUTHORIZATION)
        .and_then(|h| {
            let (scheme, token) = h.split_once(' ')?;
            let token = token.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(','))
                .then(|| token.to_string())
        })
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "Send Authorization: Bearer <token> to read or change your profile.",
            )
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        })
}

fn with_cache_control(mut response: Response, value: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    response
}

/// A user's own profile: only their browser may keep it, and must revalidate first.
fn private_profile(profile: &Value) -> Response {
    let response = axum::Json(profile).into_response();
    if bugs::is(Bug::CacheAuthedPublic) {
        return with_cache_control(response, "public, max-age=60");
    }
    with_cache_control(response, "private, no-cache")
}

/// `GET /profiles/{user}`: anyone's public profile.
async fn read_profile(Path(user): Path<String>) -> Result<Response, Problem> {
    let profile = profiles().get(&cache_key(&user), &user).await?;
    let public = json!({
        "user_id": profile.get("user_id").cloned().unwrap_or(Value::String(user)),
        "display_name": profile.get("display_name").cloned().unwrap_or(Value::Null),
    });
    // Our own cache already bounds staleness; clients come back every time, so a rename shows
    // as soon as we know of it.
    Ok(with_cache_control(
        axum::Json(public).into_response(),
        "no-cache",
    ))
}

/// `GET /me`: the signed-in user's own profile.
async fn read_me(headers: HeaderMap) -> Result<Response, Problem> {
    let user = bearer_user(&headers)?;
    // Planted bug cache-key-without-user: the entry is keyed by the route, the same for everyone.
    // Planted bug cache-me-separate-key: keyed by the user, but apart from the profile's entry,
    // so the invalidation of PATCH /me misses it.
    let key = if bugs::is(Bug::CacheKeyWithoutUser) {
        "GET /me".to_string()
    } else if bugs::is(Bug::CacheMeSeparateKey) {
        format!("me:{user}")
    } else {
        cache_key(&user)
    };
    // Planted bug cache-me-uncached: /me goes to the profile service every time.
    if bugs::is(Bug::CacheMeUncached) {
        let profile = profiles().fetch(&user).await?;
        return Ok(private_profile(&profile));
    }
    let profile = profiles().get(&key, &user).await?;
    Ok(private_profile(&profile))
}

/// `PATCH /me` with `{"display_name": "..."}`: changes it at the profile service, then drops the
/// cached copy so the next read shows the change.
async fn patch_me(headers: HeaderMap, JsonBody(body): JsonBody) -> Result<Response, Problem> {
    let user = bearer_user(&headers)?;
    let name = body
        .get("display_name")
        .and_then(Value::as_str)
        .filter(|n| {
            // Planted bug cache-display-name-unchecked: any string goes to the profile service.
            bugs::is(Bug::CacheDisplayNameUnchecked)
                || ((1..=100).contains(&n.chars().count()) && !n.contains('\0'))
        })
        .ok_or_else(|| {
            Problem::invalid(vec![FieldError::new(
                "/display_name",
                "must be a string of 1 to 100 characters",
            )])
        })?;
    let cache = profiles();
    let updated = cache
        .update(&user, &json!({ "display_name": name }))
        .await?;
    cache.invalidate(&cache_key(&user));
    Ok(private_profile(&updated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(etag: &str) -> Page {
        Page {
            slug: "about".into(),
            title: "About".into(),
            body: "".into(),
            etag: etag.into(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn if_match_is_strong_and_if_none_match_weak() {
        let p = page("abc");
        assert!(if_match_holds("\"abc\"", &p));
        assert!(if_match_holds("\"x\", \"abc\"", &p));
        assert!(if_match_holds("*", &p));
        assert!(!if_match_holds("W/\"abc\"", &p));
        assert!(!if_match_holds("\"abd\"", &p));
        assert!(if_none_match_matches("W/\"abc\"", &p));
        assert!(if_none_match_matches("\"abc\"", &p));
        assert!(if_none_match_matches("*", &p));
        assert!(!if_none_match_matches("\"nope\"", &p));
    }

    #[test]
    fn if_none_match_lists_and_star() {
        let p = page("abc");
        assert!(if_none_match_matches("\"grader-other-copy\", \"abc\"", &p));
        assert!(if_none_match_matches("\"x\",W/\"abc\"", &p));
        assert!(!if_none_match_matches(
            "\"grader-copy-a\", W/\"grader-copy-b\"",
            &p
        ));
    }

    #[test]
    fn only_a_null_entry_answers_as_a_failure() {
        assert!(answer(Arc::new(Value::Null)).is_err());
        assert!(answer(Arc::new(json!({"user_id": "a"}))).is_ok());
    }

    #[test]
    fn etags_follow_content_and_dates_are_imf_fixdates() {
        assert_eq!(content_etag("a", "b"), content_etag("a", "b"));
        assert_ne!(content_etag("a", "b"), content_etag("ab", ""));
        let t = DateTime::from_timestamp(784_111_777, 0).unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let parsed = DateTime::parse_from_rfc2822(&http_date(t)).unwrap();
        assert_eq!(parsed.timestamp(), 784_111_777);
    }
}
