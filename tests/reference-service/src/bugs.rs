//! Planted bugs: known-bad variants of the service, for testing the grader itself.
//!
//! `REFSVC_BUG=<name>` turns on exactly one of them; unset (or empty) runs the correct service.
//! Each bug is a single `if bugs::is(Bug::X)` at the place a real service would get it wrong, so
//! a variant differs from the reference in that one behaviour and nothing else.
//!
//! The switch is process-global on purpose: it is read once at start-up and never changes, and
//! threading it through every handler's state would spread test-only plumbing over the real code.

use std::sync::OnceLock;

/// The environment variable that selects a planted bug.
pub const ENV_VAR: &str = "REFSVC_BUG";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// `POST /products` answers 200 and sends no `Location`.
    Create200NoLocation,
    /// Every error response is `text/plain` with a sentence body.
    PlainTextErrors,
    /// Problem documents carry `"status": "404"` (a string).
    ProblemStatusString,
    /// A body that is not JSON answers a generic 500 instead of 400.
    MalformedJson500,
    /// Validation failures answer 422 "invalid input" without naming the field.
    ValidationAnonymous,
    /// `POST`/`PUT`/`PATCH` parse any `Content-Type` as JSON instead of answering 415.
    IgnoreContentType,
    /// A duplicate SKU answers 500: the unique violation is not mapped to 409.
    Duplicate500,
    /// `PUT` keeps omitted fields, like `PATCH`.
    PutMerges,
    /// `PATCH` resets omitted fields, like `PUT`.
    PatchReplaces,
    /// `DELETE` answers 200 `{"deleted": true}` and the product stays readable.
    SoftDelete,
    /// A wrong method on a known path answers 404 instead of 405.
    No405,
    /// `HEAD /products/{id}` answers 405.
    HeadUnsupported,
    /// Unknown routes answer 404 with an HTML body.
    Html404,
    /// Control characters in `name` reach the database, and database errors are sent to the client.
    LeakDbErrors,
    /// Timestamps look like `2026-11-28 15:04:05`: no `T`, no zone.
    LocalTimestamps,
    /// Idempotency keys are looked up, then inserted, in a table without a unique constraint.
    IdemCheckThenInsert,
    /// Idempotency keys are not scoped per client: one client gets another's stored response.
    IdemKeyNotScoped,
    /// A reused key with a different body replays the first response instead of answering 422.
    IdemPayloadNotCompared,
    /// A payment without an `Idempotency-Key` is processed (with no protection).
    IdemKeyOptional,
    /// Keys of any length (empty, 300 characters) are accepted.
    IdemKeyUnvalidated,
    /// A completed key answers 409 "already used" instead of replaying the stored response.
    IdemReplayConflict,
    /// A provider failure (502) is stored under the key and replayed, so a retry never charges.
    IdemStoresFailure,
    /// The orders tables get no index but their primary keys.
    IdxNone,
    /// The customer-orders index leads with the range column: (created_at, customer_id, status, id).
    IdxWrongOrder,
    /// Email lookups compare lower(email), but the index is on email.
    IdxFunctionOnColumn,
    /// A customer's orders are paged with OFFSET instead of a keyset cursor.
    IdxOffsetDeepPages,
    /// The recent-orders list fetches each order's customer with its own query.
    IdxNPlusOne,
    /// An index on orders (customer_id) next to (customer_id, status, ...), and lower(email) twice.
    IdxRedundant,
    /// `GET /products` pages with OFFSET (the cursor holds a row count) instead of a keyset.
    PageOffset,
    /// The product keyset has no unique tiebreaker: `WHERE price_cents > $1 ORDER BY price_cents`.
    PageNoTiebreaker,
    /// Product cursors are trusted: one that does not decode answers 500.
    PageCursorUnvalidated,
    /// A product cursor is accepted with other filters than it was issued for.
    PageCursorUnbound,
    /// `limit` is parsed leniently: `-1` and `abc` become a default instead of 400.
    PageLimitUnchecked,
    /// An oversized `limit` is honoured: `limit=1000000` returns every product.
    PageLimitUnbounded,
    /// Without `limit`, `GET /products` returns every product.
    PageDefaultUnbounded,
    /// Product pages have no `Link: <...>; rel="next"` header.
    PageNoLink,
    /// Every non-empty product page has a next cursor, so a walk ends with an empty page.
    PageAlwaysNext,
    /// The price filters apply to the first product page only, not to pages after a cursor.
    PageFilterFirstPageOnly,
    /// Profiles are not cached: every read asks the profile service.
    CacheNone,
    /// Cached profiles never expire, and `PATCH /me` does not drop them.
    CacheNeverInvalidated,
    /// A page's ETag is computed once, at creation, and never changes.
    CacheEtagStale,
    /// `PUT /pages/{slug}` ignores `If-Match`: a stale save overwrites the newer page.
    CacheIfMatchIgnored,
    /// `GET /me` is cached under the route, the same key for every user.
    CacheKeyWithoutUser,
    /// Concurrent misses for one profile each ask the profile service (no single flight).
    CacheNoCoalescing,
    /// `PUT /pages/{slug}` ignores `If-None-Match`, so `*` does not stop it replacing a page.
    CacheCreateOverwrites,
    /// A GET answers 304 when `If-Modified-Since` holds even though `If-None-Match` does not match.
    CacheImsOverInm,
    /// Page 304s carry no ETag, Last-Modified or Cache-Control.
    Cache304DropsHeaders,
    /// Page `Last-Modified` is an hour in the future (local time labelled GMT).
    CacheLastModifiedFuture,
    /// `GET /me` answers `Cache-Control: public, max-age=60`.
    CacheAuthedPublic,
    /// Page `Cache-Control` quotes the max-age: `public, max-age="60"`.
    CacheMaxAgeQuoted,
    /// `PUT /pages/{slug}` creates with 201 but sends no `Location`.
    CacheCreateNoLocation,
    /// Page `updated_at` looks like `2026-11-28 15:04:05`: no `T`, no zone.
    CacheUpdatedAtNaive,
    /// `PUT /pages/{slug}` responses carry no `ETag` or `Last-Modified` (only `GET` does).
    CachePutNoValidators,
    /// Replacing a page answers `204 No Content`, without the page.
    CacheReplace204,
    /// Every `PUT /pages/{slug}` without `If-Match` or `If-None-Match` answers 428, creates included.
    CachePutRequiresPrecondition,
    /// A `PUT` with the page's current title and body still bumps `updated_at` (and Last-Modified).
    CacheNoopPutBumps,
    /// An unknown page answers a bare 404 with no problem document.
    CachePage404Empty,
    /// `GET` compares `If-None-Match` with the ETag as one string: lists and `*` never match.
    CacheInmExactString,
    /// `If-Modified-Since` also accepts RFC 3339 dates (`2099-01-01T00:00:00Z`), which are not HTTP-dates.
    CacheImsLenient,
    /// A page title's length is counted in bytes: 200 × `é` is refused.
    CacheTitleBytes,
    /// A page body of any length is accepted.
    CacheBodyUnbounded,
    /// `PATCH /me` sends any `display_name` (empty, 101 characters) to the profile service.
    CacheDisplayNameUnchecked,
    /// `/me` without `Authorization` serves the user `anonymous` instead of answering 401.
    CacheMeAnonymous,
    /// A failed profile lookup is cached for the TTL, so the next read answers 502 too.
    CacheStoresFailures,
    /// A create checks for the page, then upserts: concurrent `If-None-Match: *` creates all succeed.
    CacheCreateUpsert,
    /// `If-Match` is compared with a row read without a lock: concurrent writes with one ETag all succeed.
    CacheIfMatchUnlocked,
    /// A profile lookup that started before `PATCH /me` stores the old profile after the invalidation.
    CacheStoreAfterInvalidate,
    /// Page `Cache-Control` is `max-age=60`, without `public`.
    CachePagesNoPublic,
    /// A page's ETag is a hash of its title only: a change to the body keeps the tag.
    CacheEtagTitleOnly,
    /// `If-Match` compares weakly: `W/"<current tag>"` lets a write through.
    CacheIfMatchWeak,
    /// `If-Match` on a page that does not exist creates it instead of answering 412.
    CacheIfMatchCreates,
    /// `GET /me` asks the profile service every time (only `/profiles/{id}` is cached).
    CacheMeUncached,
    /// `GET /me` is cached under `me:{user}`, which `PATCH /me` does not drop.
    CacheMeSeparateKey,
    /// A 304 for `If-Modified-Since` carries no ETag or Cache-Control (the If-None-Match one does).
    CacheIms304Bare,
}

impl Bug {
    pub const ALL: [Bug; 74] = [
        Bug::Create200NoLocation,
        Bug::PlainTextErrors,
        Bug::ProblemStatusString,
        Bug::MalformedJson500,
        Bug::ValidationAnonymous,
        Bug::IgnoreContentType,
        Bug::Duplicate500,
        Bug::PutMerges,
        Bug::PatchReplaces,
        Bug::SoftDelete,
        Bug::No405,
        Bug::HeadUnsupported,
        Bug::Html404,
        Bug::LeakDbErrors,
        Bug::LocalTimestamps,
        Bug::IdemCheckThenInsert,
        Bug::IdemKeyNotScoped,
        Bug::IdemPayloadNotCompared,
        Bug::IdemKeyOptional,
        Bug::IdemKeyUnvalidated,
        Bug::IdemReplayConflict,
        Bug::IdemStoresFailure,
        Bug::IdxNone,
        Bug::IdxWrongOrder,
        Bug::IdxFunctionOnColumn,
        Bug::IdxOffsetDeepPages,
        Bug::IdxNPlusOne,
        Bug::IdxRedundant,
        Bug::PageOffset,
        Bug::PageNoTiebreaker,
        Bug::PageCursorUnvalidated,
        Bug::PageCursorUnbound,
        Bug::PageLimitUnchecked,
        Bug::PageLimitUnbounded,
        Bug::PageDefaultUnbounded,
        Bug::PageNoLink,
        Bug::PageAlwaysNext,
        Bug::PageFilterFirstPageOnly,
        Bug::CacheNone,
        Bug::CacheNeverInvalidated,
        Bug::CacheEtagStale,
        Bug::CacheIfMatchIgnored,
        Bug::CacheKeyWithoutUser,
        Bug::CacheNoCoalescing,
        Bug::CacheCreateOverwrites,
        Bug::CacheImsOverInm,
        Bug::Cache304DropsHeaders,
        Bug::CacheLastModifiedFuture,
        Bug::CacheAuthedPublic,
        Bug::CacheMaxAgeQuoted,
        Bug::CacheCreateNoLocation,
        Bug::CacheUpdatedAtNaive,
        Bug::CachePutNoValidators,
        Bug::CacheReplace204,
        Bug::CachePutRequiresPrecondition,
        Bug::CacheNoopPutBumps,
        Bug::CachePage404Empty,
        Bug::CacheInmExactString,
        Bug::CacheImsLenient,
        Bug::CacheTitleBytes,
        Bug::CacheBodyUnbounded,
        Bug::CacheDisplayNameUnchecked,
        Bug::CacheMeAnonymous,
        Bug::CacheStoresFailures,
        Bug::CacheCreateUpsert,
        Bug::CacheIfMatchUnlocked,
        Bug::CacheStoreAfterInvalidate,
        Bug::CachePagesNoPublic,
        Bug::CacheEtagTitleOnly,
        Bug::CacheIfMatchWeak,
        Bug::CacheIfMatchCreates,
        Bug::CacheMeUncached,
        Bug::CacheMeSeparateKey,
        Bug::CacheIms304Bare,
    ];

    /// The value of `REFSVC_BUG` that selects this bug.
    pub fn name(self) -> &'static str {
        match self {
            Bug::Create200NoLocation => "create-200-no-location",
            Bug::PlainTextErrors => "plain-text-errors",
            Bug::ProblemStatusString => "problem-status-string",
            Bug::MalformedJson500 => "malformed-json-500",
            Bug::ValidationAnonymous => "validation-anonymous",
            Bug::IgnoreContentType => "ignore-content-type",
            Bug::Duplicate500 => "duplicate-500",
            Bug::PutMerges => "put-merges",
            Bug::PatchReplaces => "patch-replaces",
            Bug::SoftDelete => "soft-delete",
            Bug::No405 => "no-405",
            Bug::HeadUnsupported => "head-unsupported",
            Bug::Html404 => "html-404",
            Bug::LeakDbErrors => "leak-db-errors",
            Bug::LocalTimestamps => "local-timestamps",
            Bug::IdemCheckThenInsert => "idem-check-then-insert",
            Bug::IdemKeyNotScoped => "idem-key-not-scoped",
            Bug::IdemPayloadNotCompared => "idem-payload-not-compared",
            Bug::IdemKeyOptional => "idem-key-optional",
            Bug::IdemKeyUnvalidated => "idem-key-unvalidated",
            Bug::IdemReplayConflict => "idem-replay-conflict",
            Bug::IdemStoresFailure => "idem-stores-failure",
            Bug::IdxNone => "idx-none",
            Bug::IdxWrongOrder => "idx-wrong-order",
            Bug::IdxFunctionOnColumn => "idx-function-on-column",
            Bug::IdxOffsetDeepPages => "idx-offset-deep-pages",
            Bug::IdxNPlusOne => "idx-n-plus-one",
            Bug::IdxRedundant => "idx-redundant",
            Bug::PageOffset => "page-offset",
            Bug::PageNoTiebreaker => "page-no-tiebreaker",
            Bug::PageCursorUnvalidated => "page-cursor-unvalidated",
            Bug::PageCursorUnbound => "page-cursor-unbound",
            Bug::PageLimitUnchecked => "page-limit-unchecked",
            Bug::PageLimitUnbounded => "page-limit-unbounded",
            Bug::PageDefaultUnbounded => "page-default-unbounded",
            Bug::PageNoLink => "page-no-link",
            Bug::PageAlwaysNext => "page-always-next",
            Bug::PageFilterFirstPageOnly => "page-filter-first-page-only",
            Bug::CacheNone => "cache-none",
            Bug::CacheNeverInvalidated => "cache-never-invalidated",
            Bug::CacheEtagStale => "cache-etag-stale",
            Bug::CacheIfMatchIgnored => "cache-if-match-ignored",
            Bug::CacheKeyWithoutUser => "cache-key-without-user",
            Bug::CacheNoCoalescing => "cache-no-coalescing",
            Bug::CacheCreateOverwrites => "cache-create-overwrites",
            Bug::CacheImsOverInm => "cache-ims-over-inm",
            Bug::Cache304DropsHeaders => "cache-304-drops-headers",
            Bug::CacheLastModifiedFuture => "cache-last-modified-future",
            Bug::CacheAuthedPublic => "cache-authed-public",
            Bug::CacheMaxAgeQuoted => "cache-max-age-quoted",
            Bug::CacheCreateNoLocation => "cache-create-no-location",
            Bug::CacheUpdatedAtNaive => "cache-updated-at-naive",
            Bug::CachePutNoValidators => "cache-put-no-validators",
            Bug::CacheReplace204 => "cache-replace-204",
            Bug::CachePutRequiresPrecondition => "cache-put-requires-precondition",
            Bug::CacheNoopPutBumps => "cache-noop-put-bumps",
            Bug::CachePage404Empty => "cache-page-404-empty",
            Bug::CacheInmExactString => "cache-inm-exact-string",
            Bug::CacheImsLenient => "cache-ims-lenient",
            Bug::CacheTitleBytes => "cache-title-bytes",
            Bug::CacheBodyUnbounded => "cache-body-unbounded",
            Bug::CacheDisplayNameUnchecked => "cache-display-name-unchecked",
            Bug::CacheMeAnonymous => "cache-me-anonymous",
            Bug::CacheStoresFailures => "cache-stores-failures",
            Bug::CacheCreateUpsert => "cache-create-upsert",
            Bug::CacheIfMatchUnlocked => "cache-if-match-unlocked",
            Bug::CacheStoreAfterInvalidate => "cache-store-after-invalidate",
            Bug::CachePagesNoPublic => "cache-pages-no-public",
            Bug::CacheEtagTitleOnly => "cache-etag-title-only",
            Bug::CacheIfMatchWeak => "cache-if-match-weak",
            Bug::CacheIfMatchCreates => "cache-if-match-creates",
            Bug::CacheMeUncached => "cache-me-uncached",
            Bug::CacheMeSeparateKey => "cache-me-separate-key",
            Bug::CacheIms304Bare => "cache-ims-304-bare",
        }
    }

    fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

static ACTIVE: OnceLock<Option<Bug>> = OnceLock::new();

/// Reads `REFSVC_BUG` and activates the bug it names. Call once, before serving.
///
/// Returns the active bug, or an error message listing the valid names.
pub fn init_from_env() -> Result<Option<Bug>, String> {
    let bug = match std::env::var(ENV_VAR) {
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(value)) => {
            return Err(format!("{ENV_VAR}={value:?} is not valid UTF-8"))
        }
        Ok(value) if value.trim().is_empty() => None,
        Ok(value) => Some(Bug::from_name(value.trim()).ok_or_else(|| {
            let names: Vec<_> = Bug::ALL.iter().map(|bug| bug.name()).collect();
            format!(
                "unknown {ENV_VAR}={value:?}; valid values are: {}",
                names.join(", ")
            )
        })?),
    };
    ACTIVE
        .set(bug)
        .map_err(|_| "planted bugs were initialised twice".to_string())?;
    Ok(bug)
}

/// Whether `bug` is the active planted bug.
pub fn is(bug: Bug) -> bool {
    ACTIVE.get().copied().flatten() == Some(bug)
}
