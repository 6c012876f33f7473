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
    /// Control characters reach the database, and the failure answers a bare `text/plain` 500.
    Plain500,
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
    /// The N+1 of [`Bug::IdxNPlusOne`], hidden (it hopes) by logging in as the grader's probe role,
    /// whose statements the grader leaves out; its own `DATABASE_URL` when that login is refused.
    IdxImpersonateProbe,
    /// The N+1 of [`Bug::IdxNPlusOne`], and at start-up, as if it were a superuser, an attempt to
    /// blind the grader: drop `pg_stat_statements`, give the grader's roles a 1 ms statement
    /// timeout, and keep ending the grader's sessions. Each refusal is logged and ignored.
    IdxTamperAsSuperuser,
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
    /// An expired profile is answered once more, at once, and dropped: the next read fetches it.
    CacheServesStale,
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
    /// The `Location` of a create names an id made up before the insert; the row got its own.
    LocationOtherId,
    /// Mass assignment: a create keeps the `id`, `created_at` and `updated_at` the client sent.
    MassAssignment,
    /// A product created without a `description` gets `""` instead of `null`.
    DescriptionDefaultEmpty,
    /// The SKU pattern checks the characters but not the length: `^[A-Z0-9-]*$`.
    SkuNoLength,
    /// The SKU is matched like Python's `re.match(r"^[A-Z0-9-]{3,64}$")`: a final newline passes.
    SkuTrailingNewline,
    /// The name's length is counted in UTF-8 bytes, so 200 `é` (400 bytes) are refused.
    NameLengthBytes,
    /// Control characters in a name are checked as `c < ' '`: DEL (U+007F) passes.
    NameControlBelowSpace,
    /// A description of exactly 2000 characters is refused (`>= 2000`).
    DescriptionLimitOffByOne,
    /// A price of 0 is refused: prices must be positive.
    PriceZeroRefused,
    /// A missing `price_cents` becomes 0 instead of an error.
    PriceDefaultsToZero,
    /// A `description` of any JSON type is stored as its JSON text.
    DescriptionAnyJson,
    /// A JSON body that is not an object (`[]`, `null`, `42`) answers 500.
    NonObject500,
    /// An id that is not a UUID answers 400, as a framework's typed path extractor does.
    InvalidId400,
    /// `PUT` to an unknown id creates the product instead of answering 404.
    PutUpserts,
    /// A merge patch's `null` is treated as absent, so `{"description": null}` changes nothing.
    PatchIgnoresNull,
    /// Problem documents have no `detail`.
    ProblemNoDetail,
    /// Timestamps are in the server's zone: `2026-11-28T17:04:05+02:00`.
    TimestampsOffset,
    /// `Content-Type` is compared as a whole string, so `application/json; charset=utf-8` answers 415.
    ContentTypeExact,
    /// A wrong method on `/products/{id}` answers 405 with the collection's `Allow: GET, HEAD, POST`.
    ItemAllowWrong,
    /// A create with a taken SKU overwrites that product (an upsert), then answers 409.
    SkuUpsertThen409,
    /// SKUs are checked with a SELECT before the INSERT, with no unique constraint: concurrent creates race.
    SkuCheckThenInsert,
    /// A hand-written `HEAD /products/{id}` answers 200 without looking the product up.
    HeadAlways200,
    /// `limit=0` answers 400 instead of the default page.
    PageLimitZeroRefused,
    /// `limit=100`, the maximum itself, answers 400 (`>=` where `>` was meant).
    PageLimitMaxRefused,
    /// `limit` is clamped only in the SQL (`LIMIT min(limit + 1, 101)`): `limit=101` answers 101 products.
    PageClampAfterLookahead,
    /// Without `sort`, products are listed oldest first (`ORDER BY created_at` without `DESC`).
    PageDefaultOldestFirst,
    /// `max_price_cents` is exclusive: `price_cents < max`.
    PageMaxPriceExclusive,
    /// `next_cursor` is the signed cursor's JSON itself, not hex: `{"s":…}` is not URL-safe.
    PageCursorRawJson,
    /// The cursor's checksum is not verified: a decoded, edited and re-encoded cursor is accepted.
    PageCursorUnsigned,
    /// The cursor is bound to the category and sort, not to the price filters.
    PageCursorIgnoresPrices,
    /// The cursor is bound to `limit` too: another limit with a cursor answers 400.
    PageCursorBoundToLimit,
    /// The `Link rel="next"` target leaves out `limit`.
    PageLinkDropsLimit,
    /// Any string is accepted as a product's `category` (no length or character check).
    PageCategoryUnchecked,
    /// `PATCH /products/{id}` resets `category` to null unless the patch names it.
    PagePatchDropsCategory,
    /// A payment without `X-Client-Id` is made for an anonymous client instead of answering 401.
    IdemClientOptional,
    /// `order_id` has no upper length limit.
    IdemOrderIdUnbounded,
    /// `amount_cents` of 0 is accepted (`>= 0`).
    IdemAmountZeroAccepted,
    /// `currency` is checked for length only: `eur` and `E1R` are accepted.
    IdemCurrencyAnyCase,
    /// The key is claimed before the body is validated, and the 422 is stored under it.
    IdemInvalidRemembered,
    /// `GET /payments/{id}` shows a payment to any client.
    IdemReadAnyClient,
    /// Without a key the card is charged first; storing the missing key then fails with 400.
    IdemKeyCheckedAfterCharge,
    /// The structured-field quotes are kept: `"k"` and `k` are different keys.
    IdemQuotedKeyDistinct,
    /// Keys must be shorter than 255 characters (`<` where `<=` was meant).
    IdemKeyMax254,
    /// Key characters are not checked: spaces and tabs are accepted.
    IdemKeyAnyChars,
    /// The body fingerprint covers `order_id` and `amount_cents` only, not `currency`.
    IdemFingerprintPartial,
    /// The provider client has no timeout: a provider that never answers hangs the payment.
    IdemNoProviderTimeout,
    /// The report's range is served by a BRIN index on `created_at` (128 pages per range).
    IdxBrinReport,
    /// A customer's orders are all fetched, then sorted and paged in the application.
    IdxSortInApp,
    /// The report counts `created_at BETWEEN from AND to`: the upper bound is included.
    IdxReportBetween,
    /// The next link carries the cursor as `after=`, which the handler never reads: page 1 again.
    IdxNextRepeatsPage,
    /// The email lookup compares `email ILIKE $1`, which no index serves.
    IdxIlikeEmail,
    /// A customer's orders compare `customer_id::text = $1`: the cast hides the column from its index.
    IdxCastCustomer,
    /// The migration lower-cases every stored email, so a plain index on `email` serves the lookup.
    IdxNormaliseEmails,
    /// A customer's orders come oldest first (`ORDER BY created_at, id`, cursors continue upwards).
    IdxOldestFirst,
    /// The email lookup compares `lower(email) = $1`: the parameter is not lower-cased.
    IdxEmailParamNotLowered,
    /// `GET /orders` ignores `status`: the newest orders of any status.
    IdxRecentIgnoresStatus,
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
    // security
    /// `exp` is not checked: an expired token is accepted.
    AcceptExpired,
    /// `nbf` is not checked: a token not yet valid is accepted.
    IgnoreNbf,
    /// `aud` is not checked: a token issued for another service is accepted.
    NoAudienceCheck,
    /// `iss` is not checked: a token from another issuer (signed by a published key) is accepted.
    NoIssuerCheck,
    /// A token with `"alg": "none"` is accepted without a signature.
    AlgNone,
    /// The algorithm comes from the token's header: HS256 is verified with the RSA key's SPKI PEM text as the HMAC secret.
    AlgConfusion,
    /// The claims are decoded without verifying the signature (the key must still exist).
    NoSignatureCheck,
    /// A `kid` not in the key set skips verification: a token signed by any key is accepted.
    UnknownKidFirstKey,
    /// The JWKS is fetched for every request, never cached.
    JwksPerRequest,
    /// The JWKS is cached forever: a token naming a new `kid` after a rotation is refused.
    NoRefetchOnRotation,
    /// 401s carry no `WWW-Authenticate` header.
    NoWwwAuthenticate,
    /// `GET /notes/{id}` does not check the owner: anyone's note is readable.
    BolaRead,
    /// `DELETE /notes/{id}` does not check the owner.
    BolaDelete,
    /// `PATCH /notes/{id}` does not check the owner.
    BolaPatch,
    /// `GET /notes` lists every user's notes.
    ListAllOwners,
    /// Note ids are integers from a sequence (1, 2, 3...), sent as JSON numbers.
    SequentialIds,
    /// `GET /admin/stats` answers any valid token, without checking `roles`.
    AdminNoRoleCheck,
    /// `POST`/`PATCH /notes` apply `owner_id` from the body.
    MassAssignOwner,
    /// `POST /accounts` answers the stored row, `password_hash` included.
    PasswordHashInResponse,
    /// A login for an unknown username answers 404, unlike a wrong password's 401.
    LoginEnumeration,
    /// Logins are not limited.
    NoRateLimit,
    /// One login counter for all usernames: guessing at one account locks out the others.
    GlobalRateLimit,
    /// The login 429 says `Retry-After: 1` but the block lasts until the window slides (up to 10 s).
    RetryAfterLies,
    /// `q` is pasted into the SQL (`title ILIKE '%{q}%'`): a quote answers 500, `' OR 1=1 --` lists other users' notes.
    SqlStringBuilt,
    /// Passwords are stored as they are.
    PlaintextPasswords,
    /// Passwords are stored as the hex SHA-256 of the password, without salt.
    UnsaltedSha256,
    /// Passwords are hashed with argon2id at m=4096, t=1 (below the OWASP minimum).
    WeakArgon2,
    /// The request log prints every request's headers, `Authorization` included.
    LogsAuthorization,
    /// Each login body, password included, is printed to the log.
    LogsPassword,
    /// No `X-Content-Type-Options: nosniff` header.
    NoNosniff,
    /// CORS echoes any `Origin`, with `Access-Control-Allow-Credentials: true`.
    CorsAnyOrigin,
    /// Request bodies of any size are read (no 413).
    NoBodyLimit,
    /// `limit` over 100 is honoured.
    NoPageCap,
    /// A malformed JSON body or an over-long field answers 500 with a panic message, file path and backtrace in the body.
    StackTraceErrors,
    /// A title of 201 characters and a password of 11 characters are accepted.
    ValidationOffByOne,
    /// `q` matches case-sensitively.
    IgnoreCaseSearchBroken,
    /// ES256 tokens are refused: the issuer's EC key is never loaded.
    Rs256Only,
    /// A `PATCH /notes/{id}` without `body` empties the body.
    PatchDropsBody,
    // transactions
    /// A transfer reads both balances without a lock and writes back values computed in the code: lost updates.
    TxnReadModifyWrite,
    /// Transfers lock the source, then the destination (request order), and never retry: opposite transfers deadlock into 500s.
    TxnLockOrder,
    /// Funds are checked with a plain SELECT, the debit has no condition, and `accounts` has no CHECK: concurrent overdrafts go negative.
    TxnCheckThenDebit,
    /// `accounts` is created without `CHECK (balance_cents >= 0)`.
    TxnNoCheckConstraint,
    /// The debit is committed before the fraud call; a declined or failed check skips the credit and keeps the debit.
    TxnPartialTransfer,
    /// The statement reads the balance and the entries in two autocommit queries, 20 ms apart.
    TxnStatementTwoSnapshots,
    /// A rename compares If-Match in the code, then updates without a version condition: concurrent renames all win.
    TxnRenameLastWriteWins,
    /// A rename without If-Match is applied instead of answering 428.
    TxnRenameNoPrecondition,
    /// `Idempotency-Key` on `POST /transfers` is ignored: every retry is a new transfer.
    TxnIdemIgnored,
    /// Transfer keys are looked up, then inserted after the transfer in a table without a unique constraint.
    TxnIdemCheckThenInsert,
    /// A transfer key reused with another body replays the first response instead of answering 422.
    TxnIdemBodyNotCompared,
    /// A transfer of exactly the balance is refused (`>` where `>=` is right).
    TxnOverdraftAtEqual,
    /// `amount_cents` of 100000001 is accepted (off by one).
    TxnAmountLimit,
    /// The fraud service is never asked: every transfer is approved.
    TxnFraudNotCalled,
    /// A failing or silent fraud service answers 500 instead of 503 (still rolled back).
    TxnFraud5xx500,
    /// An overdraft answers 422 instead of 409.
    TxnOverdraft422,
    /// Statement entries' `amount_cents` are always positive.
    TxnStatementUnsigned,
    /// An account owner's length is counted in UTF-8 bytes: 100 `é` are refused.
    TxnOwnerBytes,
    /// A rename keeps the account's ETag: the version is not bumped.
    TxnEtagUnchanged,
    // event-driven
    /// `POST /purchases` publishes `purchase.created` itself, before the reservation and the commit (no outbox for it).
    EvtPublishBeforeCommit,
    /// No outbox: handlers commit, then publish; a failed publish is logged and the request answered anyway.
    EvtCommitThenPublish,
    /// The outbox relay publishes pending events newest first.
    EvtRelayNewestFirst,
    /// The outbox relay publishes every event twice.
    EvtPublishTwice,
    /// `event_id` is the purchase's id, so its created and cancelled events share one.
    EvtSharedEventId,
    /// Events are published without the `message_id` property.
    EvtNoMessageId,
    /// The payments consumer acks each message on arrival, then processes it.
    EvtAckBeforeProcess,
    /// The payments consumer consumes with `no_ack` (automatic acknowledgement).
    EvtAutoAck,
    /// Payments are not deduplicated by event id: every delivery is applied.
    EvtNonIdempotentConsumer,
    /// Poison payment messages are nacked with `requeue=true`, forever.
    EvtRequeuePoison,
    /// Poison payment messages are acked and dropped instead of dead-lettered.
    EvtDropPoison,
    /// Cancelling a cancelled purchase answers 200 and publishes `purchase.cancelled` again.
    EvtCancelTwicePublishes,
    /// The process exits when the broker connection drops.
    EvtCrashOnBrokerLoss,
    /// The purchase row is committed before the reservation and stays when the stock service refuses.
    EvtRefusedKeepsRow,
    /// A `customer` of 101 code points is accepted (off by one).
    EvtCustomer101,
    /// `POST /purchases` answers 201 without `Location`.
    EvtNoLocation,
    /// `purchases.payments.dead` is never declared: dead letters reach no queue.
    EvtNoDeadLetterQueue,
    /// `purchase.created` names the amount `amount` (the column's old name), not `amount_cents`.
    EvtEventAmountRenamed,
    /// Once the broker connection is lost, the service never connects again (until restarted).
    EvtNoReconnect,
    // observability
    /// `GET /readyz` is not routed (answers 404).
    ObsNoReadyz,
    /// The carrier is sent `weight_grams / 1000` (integer division, "kilograms") as `weight_grams`.
    ObsQuoteWeightInKg,
    /// A carrier failure answers a generic 500 problem instead of 502.
    ObsCarrierFailure500,
    /// `POST /shipments` answers 201 without `Location`.
    ObsCreateNoLocation,
    /// `/metrics` writes label values without quotes: `method=GET`.
    ObsMetricsUnquotedLabels,
    /// `http_requests_total` is not incremented for statuses of 400 and above (the histogram still is).
    ObsCounterSkipsErrors,
    /// The latency histogram observes milliseconds (buckets unchanged).
    ObsHistogramMilliseconds,
    /// The metrics' `route` label is the raw request path (the logs keep the template).
    ObsRawPathLabels,
    /// The carrier call forwards the incoming `traceparent` unchanged, valid or not (spans unchanged).
    ObsTraceparentForwarded,
    /// The incoming `traceparent` is ignored: every request starts a new trace.
    ObsTraceparentDropped,
    /// The carrier call carries a `traceparent` only when the request came with a valid one.
    ObsNoTraceWithoutParent,
    /// Spans are never exported.
    ObsNoOtlpExport,
    /// The client span's parent is the caller's span, not the server span (the carrier's `traceparent` is unchanged).
    ObsClientSpanOrphan,
    /// The request log line is plain text (`GET /quotes 200 3ms trace=... request=...`), not JSON.
    ObsUnstructuredLogs,
    /// An incoming `X-Request-Id` is logged but not echoed (a generated one still is).
    ObsRequestIdNotEchoed,
    /// Without a valid incoming `X-Request-Id`, the request id is the constant `unknown`.
    ObsRequestIdConstant,
    /// The JSON log line has an `authorization` member: the `Authorization` header's value.
    ObsTokenInLogs,
    // integration-resilience
    /// No per-attempt timeout and no deadline: a quote waits for the carrier for ever.
    ResNoTimeout,
    /// The per-attempt timeout is 300 ms instead of 1 s.
    ResTimeoutShort,
    /// Retries are made at once, without a backoff wait (`Retry-After` is still honoured).
    ResRetryImmediate,
    /// The backoff waits are always 150 ms, then 300 ms: no jitter.
    ResNoJitter,
    /// Failed attempts are retried (with the usual backoff) until the deadline, not 3 at most.
    ResRetryUnbounded,
    /// A 4xx from the carrier is retried like a 503 (and counts as a failed quote).
    ResRetry4xx,
    /// `Retry-After` is ignored: the usual backoff, and a retry even when it asks for over 2 s.
    ResIgnoreRetryAfter,
    /// A reset or closed connection is not retried: the quote fails after one call.
    ResResetNotRetried,
    /// Failed quotes are counted but the breaker never opens.
    ResNoBreaker,
    /// Once open, the breaker never closes: every trial, failed or successful, opens it again.
    ResBreakerNeverCloses,
    /// The half-open trial makes the usual 3 attempts, with retries.
    ResTrialRetries,
    /// 10 requests at a time for the whole service (every route waits for a slot), no bulkhead.
    ResSharedPool,
    /// No limit on concurrent carrier calls.
    ResNoBulkhead,
    /// No stale fallback: a failed quote answers 503 even with a recent price.
    ResNoStale,
    /// The stale fallback answers `"stale": false`.
    ResStaleUnmarked,
    /// An invalid postcode is not refused: it is sent to the carrier, whose answer is relayed.
    ResValidationCallsCarrier,
    /// A price quoted in the last 5 minutes answers again without asking the carrier.
    ResCachesQuotes,
    /// `GET /breaker` names the states in capitals (`CLOSED`).
    ResBreakerStateCapitals,
    /// Bookings: any integer `price_cents` is stored, 10000001 included.
    ResBookingPriceUnchecked,
    /// Bookings: no connect, pool or query timeout; a hung database hangs the request.
    ResDbNoTimeout,
    /// `GET /readyz` answers 200 whatever the database does.
    ResReadyzStatic,
    /// `GET /healthz` runs `SELECT 1` (within the budget) and answers 503 when it fails.
    ResHealthzChecksDb,
    /// Bookings use one connection opened at start-up, never replaced.
    ResDbConnectOnce,
    /// A connection whose query timed out is forgotten with its pool slot: after a hang the pool
    /// has no connection left to give.
    ResDbLeakOnTimeout,
    /// Every route but the health checks asks the database first, and answers 503 without it.
    ResDbGatesEverything,
    /// A database that does not answer gives a 500, not a 503.
    ResDbErrors500,
    /// SIGTERM exits the process at once: the requests in flight get no answer.
    ResSigtermAbrupt,
    /// SIGTERM is logged and ignored: the service keeps serving and never exits.
    ResSigtermIgnored,
    /// After a graceful shutdown, 10 s of "clean-up" before the process exits.
    ResSigtermSlowExit,
    // api-contracts
    /// `/openapi.json` says `"openapi": "3.0.3"` and has a 3.0 `nullable: true` (invalid as 3.1).
    ConOpenapi30,
    /// `/openapi.json` gives the price operation the read's `operationId`, `getListing`.
    ConDuplicateOperationId,
    /// `/openapi.json` does not document `DELETE /listings/{id}` (the route still works).
    ConMissingOperation,
    /// Listings carry `price_cents` as a JSON string (`"12500"`); the document still says integer.
    ConPriceAsString,
    /// Validation failures answer 422, but `/openapi.json` documents them as `400` (no 4XX, no default).
    ConUndocumented422,
    /// The listings' problem documents are sent as `application/json`, not `application/problem+json`.
    ConErrorsPlainJson,
    /// `DELETE /listings/{id}` answers 204 and the listing stays readable and listed.
    ConDeleteKeepsListing,
    /// `GET /listings?status=...` returns every listing (the value is still validated).
    ConStatusFilterIgnored,
    /// Revision 1.1 makes `tags` required in requests, and a listing without `tags` answers 422.
    ConTagsRequired,
    /// Revision 1.1's `Listing` has no `currency`, and listings are sent without it (1.0 unchanged).
    ConV2DropsCurrency,
    /// Revision 1.1's request `currency` enum loses `GBP`, and GBP listings answer 422.
    ConCurrencyEnumNarrowed,
    /// Up to 11 tags are accepted (12 are refused).
    ConElevenTags,
    /// The price operation sends `Deprecation` but no `Sunset`.
    ConNoSunset,
    /// The price operation sends `Deprecation: true` (the old draft's form), not `@<seconds>`.
    ConDeprecationTrue,
    /// The price operation's `Sunset` is one second before its `Deprecation` date.
    ConSunsetBeforeDeprecation,
    /// Revision 1.1 does not mark the price operation `deprecated: true` (the headers are still sent).
    ConNotMarkedDeprecated,
    /// `POST /listings` answers 201 without `Location` (the document still marks it required).
    ConNoLocation,
    /// `/openapi/1.0.json` serves revision 1.1 (`info.version` `"1.1.0"`).
    ConSameRevisionTwice,
    // graphql
    /// `Order.customer` is queried one row at a time (`WHERE id = $1` per order), no DataLoader.
    GqlNPlusOne,
    /// No depth limit: a query 9 (or 30) fields deep runs (the field limit still holds).
    GqlNoDepthLimit,
    /// The depth walk takes a fragment named `__…` for introspection and does not descend into it (its fields still count).
    GqlDepthSkipsDunderFragments,
    /// The field limit counts a selection set's distinct field names, not its selections: aliases are free.
    GqlAliasesNotCounted,
    /// The limits are checked on the finished response: a refused query has run its resolvers and SQL.
    GqlLimitsAfterExecution,
    /// Request errors answer 200 with `"data": null` and the errors, whatever the media type.
    GqlDataNullOnRequestError,
    /// Request errors have no `data` but answer 200, `application/graphql-response+json` included.
    GqlRequestError200,
    /// Every GraphQL answer is `Content-Type: application/json`, whatever `Accept` asks for.
    GqlJsonOnly,
    /// `GET /graphql?query=mutation…` executes the mutation.
    GqlMutationOverGet,
    /// A mutation over GET is refused with 405 but without an `Allow` header.
    Gql405WithoutAllow,
    /// A loyalty failure is the resolver's error: the whole customer (its siblings too) becomes `null`.
    GqlUpstreamFailsQuery,
    /// The loyalty field error's message has the loyalty URL, the upstream's status and its body.
    GqlUpstreamLeak,
    /// A loyalty request with no response (a reset or closed connection): the client library's error text, URL included, becomes the field error's message; statuses are answered as the README says.
    GqlTransportErrorLeaks,
    /// Field errors' paths leave out the list indexes (`["orders", "edges", "node", …]`).
    GqlErrorPathWithoutIndex,
    /// Cursors are offsets: orders placed during a walk shift it (an order is listed twice).
    GqlOffsetCursor,
    /// `hasNextPage` is "the page is full": a full last page says `true`.
    GqlHasNextPageFull,
    /// No maximum on `first`: `first: 101` answers 101 orders.
    GqlFirstUnbounded,
    /// `createCustomer` and `placeOrder` keep their rows in memory: queries do not see them.
    GqlMutationNotStored,
    /// `Customer.orders` ignores its `status` argument (the root `orders` still filters).
    GqlCustomerOrdersIgnoreStatus,
    /// The loyalty call has no timeout of its own: a stalled loyalty service stalls the query.
    GqlNoLoyaltyTimeout,
    /// `GetOrder` and `GetCustomer` answer `UNKNOWN "no rows returned"` for an id no row has, instead of `NOT_FOUND`.
    GrpcUnknownForMissing,
    /// `GetCustomer` ignores the call's deadline: the loyalty request waits its full 2 s and the call answers `OK`, late.
    GrpcDeadlineIgnored,
    /// After SIGTERM the health service keeps answering `SERVING` (the drain is otherwise unchanged).
    GrpcServingDuringShutdown,
    /// `INVALID_ARGUMENT` is sent as a plain status: no `google.rpc.BadRequest` in `grpc-status-details-bin`.
    GrpcNoBadRequestDetails,
    /// Reflection describes a drifted contract: `Order.total_cents` is named `total` (same number).
    GrpcContractDrift,
    /// `ListOrders` reads every matching row with one query (no `LIMIT`) before it streams the first.
    GrpcStreamUnbounded,
    /// `ListOrders` streams oldest first (`created_at`, then `id`, ascending).
    GrpcStreamOldestFirst,
    /// `PlaceOrder` checks the token's customer before `total_cents`: both wrong answers `PERMISSION_DENIED`.
    GrpcPermissionBeforeArgument,
    /// `CreateCustomer` leaves duplicate emails to a unique index and answers its violation `INTERNAL`, with the database's words.
    GrpcInternalOnDuplicate,
    /// `CreateCustomer` compares emails case-sensitively: `X@Y.com` is new next to `x@y.com`.
    GrpcCaseSensitiveEmail,
    /// Only the exact scheme `Bearer` is accepted: `bearer <token>` answers `UNAUTHENTICATED`.
    GrpcBearerCaseSensitive,
    /// On SIGTERM, health turns `NOT_SERVING`, then the process exits 0.2 s later: no further serving, calls in flight dropped.
    GrpcDropsInflight,
    /// `GetCustomer` never asks the loyalty service: `loyalty_tier` is always empty.
    GrpcNoTier,
    /// The email's 254-character limit is counted in UTF-8 bytes.
    GrpcEmailBytes,
    /// A loyalty service answering 5xx fails `GetCustomer` with `UNAVAILABLE` (timeouts still give an empty tier).
    GrpcLoyalty5xxFailsCall,
    /// A loyalty request that fails in transport (a reset or closed connection, no response) fails `GetCustomer` with `UNAVAILABLE`; statuses and timeouts still give an empty tier.
    GrpcLoyaltyTransportFailsCall,
    /// Without a deadline the loyalty request has no 2 s cap: `GetCustomer` waits as long as the loyalty service takes.
    GrpcNoLoyaltyCap,
    /// Health `Check` answers `SERVING` for a service name it does not know, instead of `NOT_FOUND`.
    GrpcHealthUnknownServing,
}

impl Bug {
    pub const ALL: [Bug; 312] = [
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
        Bug::Plain500,
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
        Bug::IdxImpersonateProbe,
        Bug::IdxTamperAsSuperuser,
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
        Bug::CacheServesStale,
        Bug::CacheCreateOverwrites,
        Bug::CacheImsOverInm,
        Bug::Cache304DropsHeaders,
        Bug::CacheLastModifiedFuture,
        Bug::CacheAuthedPublic,
        Bug::CacheMaxAgeQuoted,
        Bug::LocationOtherId,
        Bug::MassAssignment,
        Bug::DescriptionDefaultEmpty,
        Bug::SkuNoLength,
        Bug::SkuTrailingNewline,
        Bug::NameLengthBytes,
        Bug::NameControlBelowSpace,
        Bug::DescriptionLimitOffByOne,
        Bug::PriceZeroRefused,
        Bug::PriceDefaultsToZero,
        Bug::DescriptionAnyJson,
        Bug::NonObject500,
        Bug::InvalidId400,
        Bug::PutUpserts,
        Bug::PatchIgnoresNull,
        Bug::ProblemNoDetail,
        Bug::TimestampsOffset,
        Bug::ContentTypeExact,
        Bug::ItemAllowWrong,
        Bug::SkuUpsertThen409,
        Bug::SkuCheckThenInsert,
        Bug::HeadAlways200,
        Bug::PageLimitZeroRefused,
        Bug::PageLimitMaxRefused,
        Bug::PageClampAfterLookahead,
        Bug::PageDefaultOldestFirst,
        Bug::PageMaxPriceExclusive,
        Bug::PageCursorRawJson,
        Bug::PageCursorUnsigned,
        Bug::PageCursorIgnoresPrices,
        Bug::PageCursorBoundToLimit,
        Bug::PageLinkDropsLimit,
        Bug::PageCategoryUnchecked,
        Bug::PagePatchDropsCategory,
        Bug::IdemClientOptional,
        Bug::IdemOrderIdUnbounded,
        Bug::IdemAmountZeroAccepted,
        Bug::IdemCurrencyAnyCase,
        Bug::IdemInvalidRemembered,
        Bug::IdemReadAnyClient,
        Bug::IdemKeyCheckedAfterCharge,
        Bug::IdemQuotedKeyDistinct,
        Bug::IdemKeyMax254,
        Bug::IdemKeyAnyChars,
        Bug::IdemFingerprintPartial,
        Bug::IdemNoProviderTimeout,
        Bug::IdxBrinReport,
        Bug::IdxSortInApp,
        Bug::IdxReportBetween,
        Bug::IdxNextRepeatsPage,
        Bug::IdxIlikeEmail,
        Bug::IdxCastCustomer,
        Bug::IdxNormaliseEmails,
        Bug::IdxOldestFirst,
        Bug::IdxEmailParamNotLowered,
        Bug::IdxRecentIgnoresStatus,
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
        Bug::AcceptExpired,
        Bug::IgnoreNbf,
        Bug::NoAudienceCheck,
        Bug::NoIssuerCheck,
        Bug::AlgNone,
        Bug::AlgConfusion,
        Bug::NoSignatureCheck,
        Bug::UnknownKidFirstKey,
        Bug::JwksPerRequest,
        Bug::NoRefetchOnRotation,
        Bug::NoWwwAuthenticate,
        Bug::BolaRead,
        Bug::BolaDelete,
        Bug::BolaPatch,
        Bug::ListAllOwners,
        Bug::SequentialIds,
        Bug::AdminNoRoleCheck,
        Bug::MassAssignOwner,
        Bug::PasswordHashInResponse,
        Bug::LoginEnumeration,
        Bug::NoRateLimit,
        Bug::GlobalRateLimit,
        Bug::RetryAfterLies,
        Bug::SqlStringBuilt,
        Bug::PlaintextPasswords,
        Bug::UnsaltedSha256,
        Bug::WeakArgon2,
        Bug::LogsAuthorization,
        Bug::LogsPassword,
        Bug::NoNosniff,
        Bug::CorsAnyOrigin,
        Bug::NoBodyLimit,
        Bug::NoPageCap,
        Bug::StackTraceErrors,
        Bug::ValidationOffByOne,
        Bug::IgnoreCaseSearchBroken,
        Bug::Rs256Only,
        Bug::PatchDropsBody,
        Bug::TxnReadModifyWrite,
        Bug::TxnLockOrder,
        Bug::TxnCheckThenDebit,
        Bug::TxnNoCheckConstraint,
        Bug::TxnPartialTransfer,
        Bug::TxnStatementTwoSnapshots,
        Bug::TxnRenameLastWriteWins,
        Bug::TxnRenameNoPrecondition,
        Bug::TxnIdemIgnored,
        Bug::TxnIdemCheckThenInsert,
        Bug::TxnIdemBodyNotCompared,
        Bug::TxnOverdraftAtEqual,
        Bug::TxnAmountLimit,
        Bug::TxnFraudNotCalled,
        Bug::TxnFraud5xx500,
        Bug::TxnOverdraft422,
        Bug::TxnStatementUnsigned,
        Bug::TxnOwnerBytes,
        Bug::TxnEtagUnchanged,
        Bug::EvtPublishBeforeCommit,
        Bug::EvtCommitThenPublish,
        Bug::EvtRelayNewestFirst,
        Bug::EvtPublishTwice,
        Bug::EvtSharedEventId,
        Bug::EvtNoMessageId,
        Bug::EvtAckBeforeProcess,
        Bug::EvtAutoAck,
        Bug::EvtNonIdempotentConsumer,
        Bug::EvtRequeuePoison,
        Bug::EvtDropPoison,
        Bug::EvtCancelTwicePublishes,
        Bug::EvtCrashOnBrokerLoss,
        Bug::EvtRefusedKeepsRow,
        Bug::EvtCustomer101,
        Bug::EvtNoLocation,
        Bug::EvtNoDeadLetterQueue,
        Bug::EvtEventAmountRenamed,
        Bug::EvtNoReconnect,
        Bug::ObsNoReadyz,
        Bug::ObsQuoteWeightInKg,
        Bug::ObsCarrierFailure500,
        Bug::ObsCreateNoLocation,
        Bug::ObsMetricsUnquotedLabels,
        Bug::ObsCounterSkipsErrors,
        Bug::ObsHistogramMilliseconds,
        Bug::ObsRawPathLabels,
        Bug::ObsTraceparentForwarded,
        Bug::ObsTraceparentDropped,
        Bug::ObsNoTraceWithoutParent,
        Bug::ObsNoOtlpExport,
        Bug::ObsClientSpanOrphan,
        Bug::ObsUnstructuredLogs,
        Bug::ObsRequestIdNotEchoed,
        Bug::ObsRequestIdConstant,
        Bug::ObsTokenInLogs,
        Bug::ResNoTimeout,
        Bug::ResTimeoutShort,
        Bug::ResRetryImmediate,
        Bug::ResNoJitter,
        Bug::ResRetryUnbounded,
        Bug::ResRetry4xx,
        Bug::ResIgnoreRetryAfter,
        Bug::ResResetNotRetried,
        Bug::ResNoBreaker,
        Bug::ResBreakerNeverCloses,
        Bug::ResTrialRetries,
        Bug::ResSharedPool,
        Bug::ResNoBulkhead,
        Bug::ResNoStale,
        Bug::ResStaleUnmarked,
        Bug::ResValidationCallsCarrier,
        Bug::ResCachesQuotes,
        Bug::ResBreakerStateCapitals,
        Bug::ResBookingPriceUnchecked,
        Bug::ResDbNoTimeout,
        Bug::ResReadyzStatic,
        Bug::ResHealthzChecksDb,
        Bug::ResDbConnectOnce,
        Bug::ResDbLeakOnTimeout,
        Bug::ResDbGatesEverything,
        Bug::ResDbErrors500,
        Bug::ResSigtermAbrupt,
        Bug::ResSigtermIgnored,
        Bug::ResSigtermSlowExit,
        Bug::ConOpenapi30,
        Bug::ConDuplicateOperationId,
        Bug::ConMissingOperation,
        Bug::ConPriceAsString,
        Bug::ConUndocumented422,
        Bug::ConErrorsPlainJson,
        Bug::ConDeleteKeepsListing,
        Bug::ConStatusFilterIgnored,
        Bug::ConTagsRequired,
        Bug::ConV2DropsCurrency,
        Bug::ConCurrencyEnumNarrowed,
        Bug::ConElevenTags,
        Bug::ConNoSunset,
        Bug::ConDeprecationTrue,
        Bug::ConSunsetBeforeDeprecation,
        Bug::ConNotMarkedDeprecated,
        Bug::ConNoLocation,
        Bug::ConSameRevisionTwice,
        Bug::GqlNPlusOne,
        Bug::GqlNoDepthLimit,
        Bug::GqlDepthSkipsDunderFragments,
        Bug::GqlAliasesNotCounted,
        Bug::GqlLimitsAfterExecution,
        Bug::GqlDataNullOnRequestError,
        Bug::GqlRequestError200,
        Bug::GqlJsonOnly,
        Bug::GqlMutationOverGet,
        Bug::Gql405WithoutAllow,
        Bug::GqlUpstreamFailsQuery,
        Bug::GqlUpstreamLeak,
        Bug::GqlTransportErrorLeaks,
        Bug::GqlErrorPathWithoutIndex,
        Bug::GqlOffsetCursor,
        Bug::GqlHasNextPageFull,
        Bug::GqlFirstUnbounded,
        Bug::GqlMutationNotStored,
        Bug::GqlCustomerOrdersIgnoreStatus,
        Bug::GqlNoLoyaltyTimeout,
        Bug::GrpcUnknownForMissing,
        Bug::GrpcDeadlineIgnored,
        Bug::GrpcServingDuringShutdown,
        Bug::GrpcNoBadRequestDetails,
        Bug::GrpcContractDrift,
        Bug::GrpcStreamUnbounded,
        Bug::GrpcStreamOldestFirst,
        Bug::GrpcPermissionBeforeArgument,
        Bug::GrpcInternalOnDuplicate,
        Bug::GrpcCaseSensitiveEmail,
        Bug::GrpcBearerCaseSensitive,
        Bug::GrpcDropsInflight,
        Bug::GrpcNoTier,
        Bug::GrpcEmailBytes,
        Bug::GrpcLoyalty5xxFailsCall,
        Bug::GrpcLoyaltyTransportFailsCall,
        Bug::GrpcNoLoyaltyCap,
        Bug::GrpcHealthUnknownServing,
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
            Bug::Plain500 => "plain-500",
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
            Bug::IdxImpersonateProbe => "idx-impersonate-probe",
            Bug::IdxTamperAsSuperuser => "idx-tamper-as-superuser",
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
            Bug::CacheServesStale => "cache-serves-stale",
            Bug::CacheCreateOverwrites => "cache-create-overwrites",
            Bug::CacheImsOverInm => "cache-ims-over-inm",
            Bug::Cache304DropsHeaders => "cache-304-drops-headers",
            Bug::CacheLastModifiedFuture => "cache-last-modified-future",
            Bug::CacheAuthedPublic => "cache-authed-public",
            Bug::CacheMaxAgeQuoted => "cache-max-age-quoted",
            Bug::LocationOtherId => "location-other-id",
            Bug::MassAssignment => "mass-assignment",
            Bug::DescriptionDefaultEmpty => "description-default-empty",
            Bug::SkuNoLength => "sku-no-length",
            Bug::SkuTrailingNewline => "sku-trailing-newline",
            Bug::NameLengthBytes => "name-length-bytes",
            Bug::NameControlBelowSpace => "name-control-below-space",
            Bug::DescriptionLimitOffByOne => "description-limit-off-by-one",
            Bug::PriceZeroRefused => "price-zero-refused",
            Bug::PriceDefaultsToZero => "price-defaults-to-zero",
            Bug::DescriptionAnyJson => "description-any-json",
            Bug::NonObject500 => "non-object-500",
            Bug::InvalidId400 => "invalid-id-400",
            Bug::PutUpserts => "put-upserts",
            Bug::PatchIgnoresNull => "patch-ignores-null",
            Bug::ProblemNoDetail => "problem-no-detail",
            Bug::TimestampsOffset => "timestamps-offset",
            Bug::ContentTypeExact => "content-type-exact",
            Bug::ItemAllowWrong => "item-allow-wrong",
            Bug::SkuUpsertThen409 => "sku-upsert-then-409",
            Bug::SkuCheckThenInsert => "sku-check-then-insert",
            Bug::HeadAlways200 => "head-always-200",
            Bug::PageLimitZeroRefused => "page-limit-zero-refused",
            Bug::PageLimitMaxRefused => "page-limit-max-refused",
            Bug::PageClampAfterLookahead => "page-clamp-after-lookahead",
            Bug::PageDefaultOldestFirst => "page-default-oldest-first",
            Bug::PageMaxPriceExclusive => "page-max-price-exclusive",
            Bug::PageCursorRawJson => "page-cursor-raw-json",
            Bug::PageCursorUnsigned => "page-cursor-unsigned",
            Bug::PageCursorIgnoresPrices => "page-cursor-ignores-prices",
            Bug::PageCursorBoundToLimit => "page-cursor-bound-to-limit",
            Bug::PageLinkDropsLimit => "page-link-drops-limit",
            Bug::PageCategoryUnchecked => "page-category-unchecked",
            Bug::PagePatchDropsCategory => "page-patch-drops-category",
            Bug::IdemClientOptional => "idem-client-optional",
            Bug::IdemOrderIdUnbounded => "idem-order-id-unbounded",
            Bug::IdemAmountZeroAccepted => "idem-amount-zero-accepted",
            Bug::IdemCurrencyAnyCase => "idem-currency-any-case",
            Bug::IdemInvalidRemembered => "idem-invalid-remembered",
            Bug::IdemReadAnyClient => "idem-read-any-client",
            Bug::IdemKeyCheckedAfterCharge => "idem-key-checked-after-charge",
            Bug::IdemQuotedKeyDistinct => "idem-quoted-key-distinct",
            Bug::IdemKeyMax254 => "idem-key-max-254",
            Bug::IdemKeyAnyChars => "idem-key-any-chars",
            Bug::IdemFingerprintPartial => "idem-fingerprint-partial",
            Bug::IdemNoProviderTimeout => "idem-no-provider-timeout",
            Bug::IdxBrinReport => "idx-brin-report",
            Bug::IdxSortInApp => "idx-sort-in-app",
            Bug::IdxReportBetween => "idx-report-between",
            Bug::IdxNextRepeatsPage => "idx-next-repeats-page",
            Bug::IdxIlikeEmail => "idx-ilike-email",
            Bug::IdxCastCustomer => "idx-cast-customer",
            Bug::IdxNormaliseEmails => "idx-normalise-emails",
            Bug::IdxOldestFirst => "idx-oldest-first",
            Bug::IdxEmailParamNotLowered => "idx-email-param-not-lowered",
            Bug::IdxRecentIgnoresStatus => "idx-recent-ignores-status",
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
            Bug::AcceptExpired => "accept-expired",
            Bug::IgnoreNbf => "ignore-nbf",
            Bug::NoAudienceCheck => "no-audience-check",
            Bug::NoIssuerCheck => "no-issuer-check",
            Bug::AlgNone => "alg-none",
            Bug::AlgConfusion => "alg-confusion",
            Bug::NoSignatureCheck => "no-signature-check",
            Bug::UnknownKidFirstKey => "unknown-kid-first-key",
            Bug::JwksPerRequest => "jwks-per-request",
            Bug::NoRefetchOnRotation => "no-refetch-on-rotation",
            Bug::NoWwwAuthenticate => "no-www-authenticate",
            Bug::BolaRead => "bola-read",
            Bug::BolaDelete => "bola-delete",
            Bug::BolaPatch => "bola-patch",
            Bug::ListAllOwners => "list-all-owners",
            Bug::SequentialIds => "sequential-ids",
            Bug::AdminNoRoleCheck => "admin-no-role-check",
            Bug::MassAssignOwner => "mass-assign-owner",
            Bug::PasswordHashInResponse => "password-hash-in-response",
            Bug::LoginEnumeration => "login-enumeration",
            Bug::NoRateLimit => "no-rate-limit",
            Bug::GlobalRateLimit => "global-rate-limit",
            Bug::RetryAfterLies => "retry-after-lies",
            Bug::SqlStringBuilt => "sql-string-built",
            Bug::PlaintextPasswords => "plaintext-passwords",
            Bug::UnsaltedSha256 => "unsalted-sha256",
            Bug::WeakArgon2 => "weak-argon2",
            Bug::LogsAuthorization => "logs-authorization",
            Bug::LogsPassword => "logs-password",
            Bug::NoNosniff => "no-nosniff",
            Bug::CorsAnyOrigin => "cors-any-origin",
            Bug::NoBodyLimit => "no-body-limit",
            Bug::NoPageCap => "no-page-cap",
            Bug::StackTraceErrors => "stack-trace-errors",
            Bug::ValidationOffByOne => "validation-off-by-one",
            Bug::IgnoreCaseSearchBroken => "ignore-case-search-broken",
            Bug::Rs256Only => "rs256-only",
            Bug::PatchDropsBody => "patch-drops-body",
            Bug::TxnReadModifyWrite => "txn-read-modify-write",
            Bug::TxnLockOrder => "txn-lock-order",
            Bug::TxnCheckThenDebit => "txn-check-then-debit",
            Bug::TxnNoCheckConstraint => "txn-no-check-constraint",
            Bug::TxnPartialTransfer => "txn-partial-transfer",
            Bug::TxnStatementTwoSnapshots => "txn-statement-two-snapshots",
            Bug::TxnRenameLastWriteWins => "txn-rename-last-write-wins",
            Bug::TxnRenameNoPrecondition => "txn-rename-no-precondition",
            Bug::TxnIdemIgnored => "txn-idem-ignored",
            Bug::TxnIdemCheckThenInsert => "txn-idem-check-then-insert",
            Bug::TxnIdemBodyNotCompared => "txn-idem-body-not-compared",
            Bug::TxnOverdraftAtEqual => "txn-overdraft-at-equal",
            Bug::TxnAmountLimit => "txn-amount-limit",
            Bug::TxnFraudNotCalled => "txn-fraud-not-called",
            Bug::TxnFraud5xx500 => "txn-fraud-5xx-500",
            Bug::TxnOverdraft422 => "txn-overdraft-422",
            Bug::TxnStatementUnsigned => "txn-statement-unsigned",
            Bug::TxnOwnerBytes => "txn-owner-bytes",
            Bug::TxnEtagUnchanged => "txn-etag-unchanged",
            Bug::EvtPublishBeforeCommit => "evt-publish-before-commit",
            Bug::EvtCommitThenPublish => "evt-commit-then-publish",
            Bug::EvtRelayNewestFirst => "evt-relay-newest-first",
            Bug::EvtPublishTwice => "evt-publish-twice",
            Bug::EvtSharedEventId => "evt-shared-event-id",
            Bug::EvtNoMessageId => "evt-no-message-id",
            Bug::EvtAckBeforeProcess => "evt-ack-before-process",
            Bug::EvtAutoAck => "evt-auto-ack",
            Bug::EvtNonIdempotentConsumer => "evt-non-idempotent-consumer",
            Bug::EvtRequeuePoison => "evt-requeue-poison",
            Bug::EvtDropPoison => "evt-drop-poison",
            Bug::EvtCancelTwicePublishes => "evt-cancel-twice-publishes",
            Bug::EvtCrashOnBrokerLoss => "evt-crash-on-broker-loss",
            Bug::EvtRefusedKeepsRow => "evt-refused-keeps-row",
            Bug::EvtCustomer101 => "evt-customer-101",
            Bug::EvtNoLocation => "evt-no-location",
            Bug::EvtNoDeadLetterQueue => "evt-no-dead-letter-queue",
            Bug::EvtEventAmountRenamed => "evt-event-amount-renamed",
            Bug::EvtNoReconnect => "evt-no-reconnect",
            Bug::ObsNoReadyz => "obs-no-readyz",
            Bug::ObsQuoteWeightInKg => "obs-quote-weight-in-kg",
            Bug::ObsCarrierFailure500 => "obs-carrier-failure-500",
            Bug::ObsCreateNoLocation => "obs-create-no-location",
            Bug::ObsMetricsUnquotedLabels => "obs-metrics-unquoted-labels",
            Bug::ObsCounterSkipsErrors => "obs-counter-skips-errors",
            Bug::ObsHistogramMilliseconds => "obs-histogram-milliseconds",
            Bug::ObsRawPathLabels => "obs-raw-path-labels",
            Bug::ObsTraceparentForwarded => "obs-traceparent-forwarded",
            Bug::ObsTraceparentDropped => "obs-traceparent-dropped",
            Bug::ObsNoTraceWithoutParent => "obs-no-trace-without-parent",
            Bug::ObsNoOtlpExport => "obs-no-otlp-export",
            Bug::ObsClientSpanOrphan => "obs-client-span-orphan",
            Bug::ObsUnstructuredLogs => "obs-unstructured-logs",
            Bug::ObsRequestIdNotEchoed => "obs-request-id-not-echoed",
            Bug::ObsRequestIdConstant => "obs-request-id-constant",
            Bug::ObsTokenInLogs => "obs-token-in-logs",
            Bug::ResNoTimeout => "res-no-timeout",
            Bug::ResTimeoutShort => "res-timeout-short",
            Bug::ResRetryImmediate => "res-retry-immediate",
            Bug::ResNoJitter => "res-no-jitter",
            Bug::ResRetryUnbounded => "res-retry-unbounded",
            Bug::ResRetry4xx => "res-retry-4xx",
            Bug::ResIgnoreRetryAfter => "res-ignore-retry-after",
            Bug::ResResetNotRetried => "res-reset-not-retried",
            Bug::ResNoBreaker => "res-no-breaker",
            Bug::ResBreakerNeverCloses => "res-breaker-never-closes",
            Bug::ResTrialRetries => "res-trial-retries",
            Bug::ResSharedPool => "res-shared-pool",
            Bug::ResNoBulkhead => "res-no-bulkhead",
            Bug::ResNoStale => "res-no-stale",
            Bug::ResStaleUnmarked => "res-stale-unmarked",
            Bug::ResValidationCallsCarrier => "res-validation-calls-carrier",
            Bug::ResCachesQuotes => "res-caches-quotes",
            Bug::ResBreakerStateCapitals => "res-breaker-state-capitals",
            Bug::ResBookingPriceUnchecked => "res-booking-price-unchecked",
            Bug::ResDbNoTimeout => "res-db-no-timeout",
            Bug::ResReadyzStatic => "res-readyz-static",
            Bug::ResHealthzChecksDb => "res-healthz-checks-db",
            Bug::ResDbConnectOnce => "res-db-connect-once",
            Bug::ResDbLeakOnTimeout => "res-db-leak-on-timeout",
            Bug::ResDbGatesEverything => "res-db-gates-everything",
            Bug::ResDbErrors500 => "res-db-errors-500",
            Bug::ResSigtermAbrupt => "res-sigterm-abrupt",
            Bug::ResSigtermIgnored => "res-sigterm-ignored",
            Bug::ResSigtermSlowExit => "res-sigterm-slow-exit",
            Bug::ConOpenapi30 => "con-openapi-30",
            Bug::ConDuplicateOperationId => "con-duplicate-operation-id",
            Bug::ConMissingOperation => "con-missing-operation",
            Bug::ConPriceAsString => "con-price-as-string",
            Bug::ConUndocumented422 => "con-undocumented-422",
            Bug::ConErrorsPlainJson => "con-errors-plain-json",
            Bug::ConDeleteKeepsListing => "con-delete-keeps-listing",
            Bug::ConStatusFilterIgnored => "con-status-filter-ignored",
            Bug::ConTagsRequired => "con-tags-required",
            Bug::ConV2DropsCurrency => "con-v2-drops-currency",
            Bug::ConCurrencyEnumNarrowed => "con-currency-enum-narrowed",
            Bug::ConElevenTags => "con-eleven-tags",
            Bug::ConNoSunset => "con-no-sunset",
            Bug::ConDeprecationTrue => "con-deprecation-true",
            Bug::ConSunsetBeforeDeprecation => "con-sunset-before-deprecation",
            Bug::ConNotMarkedDeprecated => "con-not-marked-deprecated",
            Bug::ConNoLocation => "con-no-location",
            Bug::ConSameRevisionTwice => "con-same-revision-twice",
            Bug::GqlNPlusOne => "gql-n-plus-one",
            Bug::GqlNoDepthLimit => "gql-no-depth-limit",
            Bug::GqlDepthSkipsDunderFragments => "gql-depth-skips-dunder-fragments",
            Bug::GqlAliasesNotCounted => "gql-aliases-not-counted",
            Bug::GqlLimitsAfterExecution => "gql-limits-after-execution",
            Bug::GqlDataNullOnRequestError => "gql-data-null-on-request-error",
            Bug::GqlRequestError200 => "gql-request-error-200",
            Bug::GqlJsonOnly => "gql-json-only",
            Bug::GqlMutationOverGet => "gql-mutation-over-get",
            Bug::Gql405WithoutAllow => "gql-405-without-allow",
            Bug::GqlUpstreamFailsQuery => "gql-upstream-fails-query",
            Bug::GqlUpstreamLeak => "gql-upstream-leak",
            Bug::GqlTransportErrorLeaks => "gql-transport-error-leaks",
            Bug::GqlErrorPathWithoutIndex => "gql-error-path-without-index",
            Bug::GqlOffsetCursor => "gql-offset-cursor",
            Bug::GqlHasNextPageFull => "gql-has-next-page-full",
            Bug::GqlFirstUnbounded => "gql-first-unbounded",
            Bug::GqlMutationNotStored => "gql-mutation-not-stored",
            Bug::GqlCustomerOrdersIgnoreStatus => "gql-customer-orders-ignore-status",
            Bug::GqlNoLoyaltyTimeout => "gql-no-loyalty-timeout",
            Bug::GrpcUnknownForMissing => "grpc-unknown-for-missing",
            Bug::GrpcDeadlineIgnored => "grpc-deadline-ignored",
            Bug::GrpcServingDuringShutdown => "grpc-serving-during-shutdown",
            Bug::GrpcNoBadRequestDetails => "grpc-no-bad-request-details",
            Bug::GrpcContractDrift => "grpc-contract-drift",
            Bug::GrpcStreamUnbounded => "grpc-stream-unbounded",
            Bug::GrpcStreamOldestFirst => "grpc-stream-oldest-first",
            Bug::GrpcPermissionBeforeArgument => "grpc-permission-before-argument",
            Bug::GrpcInternalOnDuplicate => "grpc-internal-on-duplicate",
            Bug::GrpcCaseSensitiveEmail => "grpc-case-sensitive-email",
            Bug::GrpcBearerCaseSensitive => "grpc-bearer-case-sensitive",
            Bug::GrpcDropsInflight => "grpc-drops-inflight",
            Bug::GrpcNoTier => "grpc-no-tier",
            Bug::GrpcEmailBytes => "grpc-email-bytes",
            Bug::GrpcLoyalty5xxFailsCall => "grpc-loyalty-5xx-fails-call",
            Bug::GrpcLoyaltyTransportFailsCall => "grpc-loyalty-transport-fails-call",
            Bug::GrpcNoLoyaltyCap => "grpc-no-loyalty-cap",
            Bug::GrpcHealthUnknownServing => "grpc-health-unknown-serving",
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
