//! Marketplace listings and their published contract: exercise `api-contracts` (task statement:
//! `exercises/api-contracts/README.md`).
//!
//! Listings live in memory, in this router's own state [con-0.2]. Every answer is the one the
//! OpenAPI document promises, and the document is built by [`document`] for both revisions the
//! service publishes [con-4.1] [con-4.2]: `GET /openapi.json` (1.1, the current one) and
//! `GET /openapi/1.0.json` (1.0, as first published). 1.1 adds the optional `tags` and deprecates
//! `GET /listings/{id}/price`, which keeps answering with `Deprecation`, `Sunset` and a `Link` to
//! its successor [con-4.6].
//!
//! Status codes: a request body that is not JSON (or not declared as JSON) is `400`; JSON that
//! breaks the rules (not an object, a field missing, of the wrong type or out of range) is `422`
//! naming every bad field [con-0.11]; so is a `status` query parameter other than `draft` or
//! `active` [con-0.16]. Every error is a problem document (`problem.rs`) [con-0.12].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody};
use crate::problem::{FieldError, Problem};
use crate::products::check;
use crate::AppState;

const MAX_TITLE_CHARS: usize = 120;
const MAX_PRICE_CENTS: i64 = 10_000_000;
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const STATUSES: [&str; 2] = ["draft", "active"];
const DEFAULT_STATUS: &str = "draft";
const MAX_TAGS: usize = 10;
const MAX_TAG_CHARS: usize = 30;

/// When the price operation was deprecated, 2026-06-01T00:00:00Z, as an RFC 9745 date.
const DEPRECATION: &str = "@1780272000";
/// When the price operation will stop answering (RFC 8594): years after the deprecation, so the
/// reference keeps announcing a sunset that lies in the future.
const SUNSET: &str = "Tue, 31 Dec 2030 23:59:59 GMT";
/// [`SUNSET`]'s day, as the document's `x-sunset` gives it (oasdiff reads it).
const SUNSET_DATE: &str = "2030-12-31";
/// Planted bug con-sunset-before-deprecation: one second before [`DEPRECATION`].
const SUNSET_BEFORE_DEPRECATION: &str = "Sun, 31 May 2026 23:59:59 GMT";

const JSON: &str = "application/json";
const PROBLEM_JSON: &str = "application/problem+json";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/listings",
            allow(get(list).post(create), "GET, HEAD, POST"),
        )
        .route(
            "/listings/{id}",
            allow(get(read).delete(remove), "GET, HEAD, DELETE"),
        )
        .route("/listings/{id}/price", allow(get(price), "GET, HEAD"))
        .route("/openapi.json", allow(get(current_document), "GET, HEAD"))
        .route("/openapi/1.0.json", allow(get(first_document), "GET, HEAD"))
        .layer(middleware::map_response(error_media_type))
        .with_state(Listings::default())
}

// ---------------------------------------------------------------------------------------------
// Listings.

/// Every listing, by id: in memory, as the task allows; a restart forgets them.
#[derive(Clone, Default)]
struct Listings(Arc<Mutex<BTreeMap<String, Listing>>>);

impl Listings {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Listing>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Clone)]
struct Listing {
    id: String,
    title: String,
    price_cents: i64,
    currency: &'static str,
    status: &'static str,
    tags: Vec<String>,
    created_at: String,
}

impl Listing {
    /// The listing as every response shows it [con-0.3].
    fn json(&self) -> Value {
        let mut listing = json!({
            "id": self.id,
            "title": self.title,
            "price_cents": self.price_cents,
            "currency": self.currency,
            "status": self.status,
            "tags": self.tags,
            "created_at": self.created_at,
        });
        // Planted bug con-price-as-string: a serializer that writes 64-bit integers as strings.
        if bugs::is(Bug::ConPriceAsString) {
            listing["price_cents"] = json!(self.price_cents.to_string());
        }
        // Planted bug con-v2-drops-currency: "the price operation has the currency, listings do
        // not need it twice".
        if bugs::is(Bug::ConV2DropsCurrency) {
            listing
                .as_object_mut()
                .map(|fields| fields.remove("currency"));
        }
        listing
    }
}

/// The client-writable fields of a listing, validated.
#[derive(Debug, PartialEq)]
struct NewListing {
    title: String,
    price_cents: i64,
    currency: &'static str,
    status: &'static str,
    tags: Vec<String>,
}

impl NewListing {
    /// A create's body, or a `422` naming every field that breaks the rules. Fields the service
    /// does not know (`id` and `created_at` included) are ignored.
    fn validate(body: &Value) -> Result<Self, Problem> {
        let Some(fields) = body.as_object() else {
            return Err(Problem::invalid(vec![FieldError::new(
                "",
                "must be a JSON object",
            )]));
        };
        let mut errors = Vec::new();
        let title = check(&mut errors, "title", title(fields));
        let price_cents = check(&mut errors, "price_cents", price_cents(fields));
        let currency = check(&mut errors, "currency", currency(fields));
        let status = check(&mut errors, "status", status(fields));
        let tags = tags(fields, &mut errors);
        match (title, price_cents, currency, status, tags) {
            (Some(title), Some(price_cents), Some(currency), Some(status), Some(tags))
                if errors.is_empty() =>
            {
                Ok(Self {
                    title,
                    price_cents,
                    currency,
                    status,
                    tags,
                })
            }
            _ => Err(Problem::invalid(errors)),
        }
    }
}

/// A required field; `null` counts as missing.
fn required<'a>(fields: &'a Map<String, Value>, field: &str) -> Result<&'a Value, String> {
    match fields.get(field) {
        None | Some(Value::Null) => Err("is required".into()),
        Some(value) => Ok(value),
    }
}

/// 1 to 120 characters, counted in Unicode code points [con-0.5].
fn title(fields: &Map<String, Value>) -> Result<String, String> {
    let rule = || format!("must be a string of 1 to {MAX_TITLE_CHARS} characters");
    let title = required(fields, "title")?.as_str().ok_or_else(rule)?;
    let length = title.chars().count();
    if !(1..=MAX_TITLE_CHARS).contains(&length) {
        return Err(rule());
    }
    Ok(title.to_string())
}

/// A JSON integer (not `12.0`, not `"12"`) from 0 to 10000000 [con-0.6].
fn price_cents(fields: &Map<String, Value>) -> Result<i64, String> {
    let value = required(fields, "price_cents")?;
    // `as_i64` is `None` for a number written with a fraction or an exponent (`12.0`, `1e3`).
    value
        .as_i64()
        .filter(|price| (0..=MAX_PRICE_CENTS).contains(price))
        .ok_or_else(|| format!("must be an integer from 0 to {MAX_PRICE_CENTS}"))
}

/// `EUR`, `USD` or `GBP`, exactly [con-0.7].
fn currency(fields: &Map<String, Value>) -> Result<&'static str, String> {
    let value = required(fields, "currency")?;
    let accepted = accepted_currencies();
    value
        .as_str()
        .and_then(|currency| accepted.iter().copied().find(|&c| c == currency))
        .ok_or_else(|| format!("must be one of {}", quoted(&accepted)))
}

/// The currencies a create accepts (and revision 1.1 documents).
fn accepted_currencies() -> Vec<&'static str> {
    // Planted bug con-currency-enum-narrowed: "we stopped selling in pounds".
    if bugs::is(Bug::ConCurrencyEnumNarrowed) {
        return CURRENCIES.into_iter().filter(|&c| c != "GBP").collect();
    }
    CURRENCIES.to_vec()
}

/// Optional, `draft` by default [con-0.8]. `null` is not a status.
fn status(fields: &Map<String, Value>) -> Result<&'static str, String> {
    let Some(value) = fields.get("status") else {
        return Ok(DEFAULT_STATUS);
    };
    value
        .as_str()
        .and_then(|status| STATUSES.into_iter().find(|&s| s == status))
        .ok_or_else(|| format!("must be one of {}", quoted(&STATUSES)))
}

/// Optional, `[]` by default: at most 10 strings of 1 to 30 characters each, kept in the order
/// sent [con-0.9] [con-4.5]. Each bad tag is named by its own pointer (`/tags/3`).
fn tags(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Vec<String>> {
    // Planted bug con-eleven-tags: `<=` where `<` was meant, on a count that starts at 0.
    let max_tags = if bugs::is(Bug::ConElevenTags) {
        MAX_TAGS + 1
    } else {
        MAX_TAGS
    };
    let rule = format!("must be an array of at most {MAX_TAGS} strings");
    let tags = match fields.get("tags") {
        // Planted bug con-tags-required: the new field made mandatory, old clients refused.
        None if bugs::is(Bug::ConTagsRequired) => {
            errors.push(FieldError::new("/tags", "is required"));
            return None;
        }
        None => return Some(Vec::new()),
        Some(Value::Array(tags)) if tags.len() <= max_tags => tags,
        Some(_) => {
            errors.push(FieldError::new("/tags", rule));
            return None;
        }
    };
    let before = errors.len();
    let mut valid = Vec::with_capacity(tags.len());
    for (index, tag) in tags.iter().enumerate() {
        match tag
            .as_str()
            .filter(|tag| (1..=MAX_TAG_CHARS).contains(&tag.chars().count()))
        {
            Some(tag) => valid.push(tag.to_string()),
            None => errors.push(FieldError::new(
                format!("/tags/{index}"),
                format!("must be a string of 1 to {MAX_TAG_CHARS} characters"),
            )),
        }
    }
    (errors.len() == before).then_some(valid)
}

fn quoted(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|value| format!("\"{value}\"")).collect();
    quoted.join(", ")
}

fn not_found() -> Problem {
    Problem::not_found("There is no listing with this id.")
}

/// `POST /listings` [con-0.13].
async fn create(
    State(listings): State<Listings>,
    body: Result<JsonBody, Problem>,
) -> Result<Response, Problem> {
    // The task allows 400 or 422 for a body that is not a listing: one not declared as JSON gets
    // a 400 here, not the 415 the other resources answer.
    let JsonBody(body) = body.map_err(|problem| {
        if problem.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            return Problem::new(StatusCode::BAD_REQUEST, problem.detail());
        }
        problem
    })?;
    let input = NewListing::validate(&body)?;
    let listing = Listing {
        id: Uuid::new_v4().to_string(),
        title: input.title,
        price_cents: input.price_cents,
        currency: input.currency,
        status: input.status,
        tags: input.tags,
        created_at: DateTime::<Utc>::from(SystemTime::now())
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    listings.lock().insert(listing.id.clone(), listing.clone());
    let mut response = (StatusCode::CREATED, Json(listing.json())).into_response();
    // Planted bug con-no-location.
    if !bugs::is(Bug::ConNoLocation) {
        let location = HeaderValue::from_str(&format!("/listings/{}", listing.id)).expect("ASCII");
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /listings/{id}` [con-0.14]. Any id that names no listing (a path segment that is not
/// UTF-8 included) answers 404.
async fn read(
    State(listings): State<Listings>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Problem> {
    let Ok(Path(id)) = id else {
        return Err(not_found());
    };
    let listings = listings.lock();
    let listing = listings.get(&id).ok_or_else(not_found)?;
    Ok(Json(listing.json()))
}

/// `GET /listings`, optionally `?status=draft` or `?status=active` [con-0.15] [con-0.16].
async fn list(
    State(listings): State<Listings>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let wanted = status_filter(query)?;
    let items: Vec<Value> = listings
        .lock()
        .values()
        .filter(|listing| match wanted {
            // Planted bug con-status-filter-ignored: the parameter is validated, then forgotten.
            Some(_) if bugs::is(Bug::ConStatusFilterIgnored) => true,
            Some(status) => listing.status == status,
            None => true,
        })
        .map(Listing::json)
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// The `status` the list is filtered by: none, or `draft` or `active` given once; anything else
/// is a `422`. Other parameters are ignored.
fn status_filter(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Option<&'static str>, Problem> {
    let invalid = |detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail);
    let Query(params) = query.map_err(|rejection| {
        invalid(format!(
            "The query string cannot be read: {}.",
            rejection.body_text()
        ))
    })?;
    let mut values = params.iter().filter(|(name, _)| name == "status");
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some((_, value)), None) => STATUSES
            .into_iter()
            .find(|&status| status == value)
            .map(Some)
            .ok_or_else(|| {
                invalid(format!(
                    "The query parameter status must be one of {}.",
                    quoted(&STATUSES)
                ))
            }),
        (Some(_), Some(_)) => Err(invalid(
            "The query parameter status must be given at most once.".into(),
        )),
    }
}

/// `DELETE /listings/{id}` [con-0.17]: `204` with no body.
async fn remove(
    State(listings): State<Listings>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let Ok(Path(id)) = id else {
        return Err(not_found());
    };
    let mut listings = listings.lock();
    // Planted bug con-delete-keeps-listing: a "soft delete" whose flag nothing ever reads.
    let found = if bugs::is(Bug::ConDeleteKeepsListing) {
        listings.contains_key(&id)
    } else {
        listings.remove(&id).is_some()
    };
    if !found {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /listings/{id}/price` [con-0.18], deprecated in 1.1: every answer, the 404 included,
/// announces the retirement [con-4.6].
async fn price(
    State(listings): State<Listings>,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let found = id
        .ok()
        .and_then(|Path(id)| listings.lock().get(&id).cloned());
    let mut response = match found {
        Some(listing) => Json(json!({
            "price_cents": listing.price_cents,
            "currency": listing.currency,
        }))
        .into_response(),
        None => not_found().into_response(),
    };
    announce_retirement(response.headers_mut(), &uri);
    response
}

/// `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and the successor's `Link` (RFC 8288).
fn announce_retirement(headers: &mut HeaderMap, uri: &Uri) {
    // Planted bug con-deprecation-true: the 2019 draft's boolean form.
    let deprecation = if bugs::is(Bug::ConDeprecationTrue) {
        "true"
    } else {
        DEPRECATION
    };
    headers.insert(
        HeaderName::from_static("deprecation"),
        HeaderValue::from_static(deprecation),
    );
    // Planted bug con-no-sunset: deprecated, with no date to plan for.
    if !bugs::is(Bug::ConNoSunset) {
        // Planted bug con-sunset-before-deprecation.
        let sunset = if bugs::is(Bug::ConSunsetBeforeDeprecation) {
            SUNSET_BEFORE_DEPRECATION
        } else {
            SUNSET
        };
        headers.insert(
            HeaderName::from_static("sunset"),
            HeaderValue::from_static(sunset),
        );
    }
    // The path as it was sent (still percent-encoded), without its last segment.
    if let Some(listing) = uri.path().strip_suffix("/price") {
        let link = format!("<{listing}>; rel=\"successor-version\"");
        if let Ok(link) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, link);
        }
    }
}

/// Does nothing but under the planted bug con-errors-plain-json: the problem documents of these
/// routes go out as `application/json`, as a framework's JSON helper would send them.
async fn error_media_type(mut response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value == PROBLEM_JSON);
    if is_problem && bugs::is(Bug::ConErrorsPlainJson) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI documents.

/// A published revision of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revision {
    /// As first published: no `tags`, the price operation in good standing.
    V1_0,
    /// The current one: `tags`, and the price operation deprecated.
    V1_1,
}

/// `GET /openapi.json`: revision 1.1 [con-1.1] [con-4.2].
async fn current_document() -> Json<Value> {
    Json(document(Revision::V1_1))
}

/// `GET /openapi/1.0.json`: revision 1.0 as first published [con-4.1].
async fn first_document() -> Json<Value> {
    // Planted bug con-same-revision-twice: both URLs serve the file the build produced last.
    if bugs::is(Bug::ConSameRevisionTwice) {
        return Json(document(Revision::V1_1));
    }
    Json(document(Revision::V1_0))
}

/// The OpenAPI 3.1 document of `revision` [con-1.2] [con-1.3]: the five operations
/// [con-1.5], each with its own `operationId` [con-1.4] and every status it can answer, with
/// its media type and schema [con-1.6]. 1.1 changes nothing 1.0 clients rely on [con-4.3]: it
/// adds an optional request property, a response property and response headers, and marks an
/// operation deprecated [con-4.7].
fn document(revision: Revision) -> Value {
    let current = revision == Revision::V1_1;
    // The planted bugs of the documents are in the current one; 1.0 stays as first published.
    let bug = |bug: Bug| current && bugs::is(bug);

    let title = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TITLE_CHARS,
        "description": "Counted in Unicode code points.",
    });
    let price_cents = json!({
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_PRICE_CENTS,
        "description": "A JSON integer: `12500`, not `12500.0` or `\"12500\"`.",
    });
    let status = json!({ "type": "string", "enum": STATUSES });
    let tags = json!({
        "type": "array",
        "maxItems": MAX_TAGS,
        "items": { "type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS },
        "description": "Kept in the order sent.",
    });

    let mut new_listing = json!({
        "type": "object",
        "description": "A listing to create. Members the service does not know are ignored.",
        "required": ["title", "price_cents", "currency"],
        "properties": {
            "title": title,
            "price_cents": price_cents,
            "currency": { "type": "string", "enum": CURRENCIES },
            "status": {
                "type": "string",
                "enum": STATUSES,
                "default": DEFAULT_STATUS,
            },
        },
    });
    if current {
        let mut tags = tags.clone();
        tags["default"] = json!([]);
        new_listing["properties"]["tags"] = tags;
    }
    // Planted bug con-tags-required.
    if bug(Bug::ConTagsRequired) {
        push(&mut new_listing["required"], "tags");
    }
    // Planted bug con-currency-enum-narrowed.
    if bug(Bug::ConCurrencyEnumNarrowed) {
        new_listing["properties"]["currency"]["enum"] = json!(accepted_currencies());
    }

    let mut listing = json!({
        "type": "object",
        "required": ["id", "title", "price_cents", "currency", "status", "created_at"],
        "properties": {
            "id": { "type": "string", "format": "uuid" },
            "title": title,
            "price_cents": price_cents,
            "currency": { "type": "string", "enum": CURRENCIES },
            "status": status,
            "created_at": { "type": "string", "format": "date-time" },
        },
    });
    if current {
        listing["properties"]["tags"] = tags;
        push(&mut listing["required"], "tags");
    }
    // Planted bug con-v2-drops-currency.
    if bug(Bug::ConV2DropsCurrency) {
        if let Some(properties) = listing["properties"].as_object_mut() {
            properties.remove("currency");
        }
        if let Some(required) = listing["required"].as_array_mut() {
            required.retain(|name| name != "currency");
        }
    }

    let mut problem = json!({
        "type": "object",
        "description": "A problem document (RFC 9457).",
        "required": ["type", "title", "status"],
        "properties": {
            "type": { "type": "string", "format": "uri-reference" },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string" },
            "errors": {
                "type": "array",
                "description": "The invalid members of a request body.",
                "items": {
                    "type": "object",
                    "required": ["pointer", "detail"],
                    "properties": {
                        "pointer": {
                            "type": "string",
                            "description": "A JSON Pointer (RFC 6901) into the request body.",
                        },
                        "detail": { "type": "string" },
                    },
                },
            },
        },
    });
    // Planted bug con-openapi-30: the document of a generator that still writes 3.0.
    let openapi = if bug(Bug::ConOpenapi30) {
        problem["properties"]["detail"]["nullable"] = json!(true);
        "3.0.3"
    } else {
        "3.1.0"
    };

    // Validation failures: 422, or under the planted bug con-undocumented-422 the 400 the
    // framework's generator assumed.
    let invalid = if bug(Bug::ConUndocumented422) {
        "400"
    } else {
        "422"
    };
    let id_parameter = json!([{
        "name": "id",
        "in": "path",
        "required": true,
        "description": "The listing's id.",
        "schema": { "type": "string" },
    }]);

    let mut create_responses = Map::new();
    create_responses.insert(
        "201".into(),
        json!({
            "description": "Created.",
            "headers": {
                "Location": {
                    "description": "The new listing's URL, `/listings/{id}`.",
                    "required": true,
                    "schema": { "type": "string", "format": "uri-reference" },
                },
            },
            "content": { JSON: { "schema": schema("Listing") } },
        }),
    );
    create_responses.insert(
        "400".into(),
        problem_response("The body is not JSON, or not sent as `application/json`."),
    );
    create_responses.insert(
        "413".into(),
        problem_response("The body is larger than 2 MiB."),
    );
    create_responses.insert(
        invalid.into(),
        problem_response("The body is not a valid listing; `errors` names each bad member."),
    );
    create_responses.insert("500".into(), internal_error());

    let mut item = json!({
        "parameters": id_parameter,
        "get": {
            "operationId": "getListing",
            "summary": "Read a listing",
            "responses": {
                "200": json_response("The listing.", "Listing"),
                "404": problem_response("There is no listing with this id."),
                "500": internal_error(),
            },
        },
    });
    // Planted bug con-missing-operation: the route was added, the document not updated.
    if !bug(Bug::ConMissingOperation) {
        item["delete"] = json!({
            "operationId": "deleteListing",
            "summary": "Delete a listing",
            "responses": {
                "204": { "description": "Deleted." },
                "404": problem_response("There is no listing with this id."),
                "500": internal_error(),
            },
        });
    }

    let mut price_ok = json_response("The listing's price.", "Price");
    let mut price_not_found = problem_response("There is no listing with this id.");
    let mut price = json!({
        "operationId": "getListingPrice",
        "summary": "Read a listing's price",
        "responses": {},
    });
    // Planted bug con-duplicate-operation-id: copied from the read operation, never renamed.
    if bug(Bug::ConDuplicateOperationId) {
        price["operationId"] = json!("getListing");
    }
    if current {
        price["description"] = json!(format!(
            "Deprecated: read the listing instead (`GET /listings/{{id}}`, its `price_cents` and \
             `currency`). This operation stops answering at its sunset, {SUNSET}."
        ));
        // The sunset as oasdiff reads it (`x-sunset`, a date).
        price["x-sunset"] = json!(SUNSET_DATE);
        // Planted bug con-not-marked-deprecated: announced in the headers, not in the document.
        if !bug(Bug::ConNotMarkedDeprecated) {
            price["deprecated"] = json!(true);
        }
        price_ok["headers"] = retirement_headers();
        price_not_found["headers"] = retirement_headers();
    }
    price["responses"] = json!({
        "200": price_ok,
        "404": price_not_found,
        "500": internal_error(),
    });

    json!({
        "openapi": openapi,
        "info": {
            "title": "Marketplace listings",
            "version": if current { "1.1.0" } else { "1.0.0" },
            "description": "The listings service of a small marketplace.",
        },
        "paths": {
            "/listings": {
                "get": {
                    "operationId": "listListings",
                    "summary": "List listings",
                    "parameters": [{
                        "name": "status",
                        "in": "query",
                        "required": false,
                        "description": "Only the listings with this status.",
                        "schema": { "type": "string", "enum": STATUSES },
                    }],
                    "responses": {
                        "200": json_response("Every listing (with that status), in no particular order.", "ListingList"),
                        invalid: problem_response("`status` is neither `draft` nor `active`."),
                        "500": internal_error(),
                    },
                },
                "post": {
                    "operationId": "createListing",
                    "summary": "Create a listing",
                    "requestBody": {
                        "required": true,
                        "content": { JSON: { "schema": schema("NewListing") } },
                    },
                    "responses": create_responses,
                },
            },
            "/listings/{id}": item,
            "/listings/{id}/price": {
                "parameters": id_parameter,
                "get": price,
            },
        },
        "components": {
            "schemas": {
                "NewListing": new_listing,
                "Listing": listing,
                "ListingList": {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": { "type": "array", "items": schema("Listing") },
                    },
                },
                "Price": {
                    "type": "object",
                    "required": ["price_cents", "currency"],
                    "properties": {
                        "price_cents": price_cents,
                        "currency": { "type": "string", "enum": CURRENCIES },
                    },
                },
                "Problem": problem,
            },
        },
    })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_response(description: &str, name: &str) -> Value {
    json!({ "description": description, "content": { JSON: { "schema": schema(name) } } })
}

fn problem_response(description: &str) -> Value {
    json!({ "description": description, "content": { PROBLEM_JSON: { "schema": schema("Problem") } } })
}

fn internal_error() -> Value {
    problem_response("An unexpected error; the details are in the service's log.")
}

/// The headers every answer of the deprecated price operation carries (1.1).
fn retirement_headers() -> Value {
    json!({
        "Deprecation": {
            "description": "When the operation was deprecated (RFC 9745): `@` and Unix seconds.",
            "required": true,
            "schema": { "type": "string", "pattern": "^@-?[0-9]+$" },
            "example": DEPRECATION,
        },
        "Sunset": {
            "description": "When the operation stops answering (RFC 8594), an HTTP-date.",
            "required": true,
            "schema": { "type": "string" },
            "example": SUNSET,
        },
        "Link": {
            "description": "The listing itself, `rel=\"successor-version\"` (RFC 8288).",
            "required": true,
            "schema": { "type": "string" },
        },
    })
}

fn push(array: &mut Value, name: &str) {
    if let Some(array) = array.as_array_mut() {
        array.push(json!(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Value {
        json!({ "title": "Oak writing desk, 1960s", "price_cents": 12500, "currency": "EUR" })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut body = valid();
        body[field] = value;
        body
    }

    fn accepts(body: Value) -> bool {
        NewListing::validate(&body).is_ok()
    }

    #[test]
    fn defaults_for_what_was_not_sent() {
        let listing = NewListing::validate(&with("id", json!("mine"))).unwrap();
        assert_eq!(listing.status, "draft");
        assert_eq!(listing.tags, Vec::<String>::new());
    }

    #[test]
    fn titles_count_code_points() {
        assert!(accepts(with("title", json!("é".repeat(120)))));
        assert!(!accepts(with("title", json!("é".repeat(121)))));
        assert!(!accepts(with("title", json!(""))));
        assert!(!accepts(with("title", json!(12))));
    }

    #[test]
    fn prices_are_json_integers_in_range() {
        for price in [json!(0), json!(10_000_000)] {
            assert!(accepts(with("price_cents", price)));
        }
        for price in [
            json!(-1),
            json!(10_000_001),
            json!(12.0),
            json!("12"),
            json!(null),
        ] {
            assert!(!accepts(with("price_cents", price.clone())), "{price}");
        }
    }

    #[test]
    fn currency_and_status_are_enums() {
        assert!(accepts(with("currency", json!("GBP"))));
        assert!(!accepts(with("currency", json!("eur"))));
        assert!(accepts(with("status", json!("active"))));
        assert!(!accepts(with("status", json!("sold"))));
        assert!(!accepts(with("status", json!(null))));
    }

    #[test]
    fn tags_are_at_most_10_of_1_to_30_characters_in_order() {
        let ten: Vec<String> = (0..10).map(|i| format!("{i}").repeat(30)).collect();
        let listing = NewListing::validate(&with("tags", json!(ten))).unwrap();
        assert_eq!(listing.tags, ten);
        let mut eleven = ten.clone();
        eleven.push("x".into());
        assert!(!accepts(with("tags", json!(eleven))));
        assert!(!accepts(with("tags", json!(["a".repeat(31)]))));
        assert!(!accepts(with("tags", json!([""]))));
        assert!(!accepts(with("tags", json!("a"))));
        let problem = NewListing::validate(&with("tags", json!(["a", 1, "b", ""]))).unwrap_err();
        assert_eq!(problem.pointers(), ["/tags/1", "/tags/3"]);
    }

    #[test]
    fn names_every_bad_field_and_refuses_non_objects() {
        let problem = NewListing::validate(&json!({ "tags": [""] })).unwrap_err();
        assert_eq!(
            problem.pointers(),
            ["/title", "/price_cents", "/currency", "/tags/0"]
        );
        for body in [json!([]), json!(null), json!(42), json!("x")] {
            let problem = NewListing::validate(&body).unwrap_err();
            assert_eq!(problem.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(problem.pointers(), [""]);
        }
    }

    #[test]
    fn the_revisions_differ_only_in_tags_and_the_deprecation() {
        let (first, current) = (document(Revision::V1_0), document(Revision::V1_1));
        assert_eq!(first["info"]["version"], "1.0.0");
        assert_eq!(current["info"]["version"], "1.1.0");
        for document in [&first, &current] {
            assert_eq!(document["openapi"], "3.1.0");
        }
        let schemas =
            |document: &Value, name: &str| document["components"]["schemas"][name].clone();
        assert!(schemas(&first, "NewListing")["properties"]["tags"].is_null());
        assert!(schemas(&first, "Listing")["properties"]["tags"].is_null());
        assert_eq!(
            schemas(&current, "NewListing")["properties"]["tags"]["maxItems"],
            10
        );
        assert!(!schemas(&current, "NewListing")["required"]
            .as_array()
            .unwrap()
            .contains(&json!("tags")));
        assert!(schemas(&current, "Listing")["required"]
            .as_array()
            .unwrap()
            .contains(&json!("tags")));
        let price = |document: &Value| document["paths"]["/listings/{id}/price"]["get"].clone();
        assert!(price(&first)["deprecated"].is_null());
        assert_eq!(price(&current)["deprecated"], true);
        assert_eq!(
            price(&current)["responses"]["200"]["headers"]["Sunset"]["required"],
            true
        );
    }

    #[test]
    fn every_operation_has_its_own_operation_id() {
        for revision in [Revision::V1_0, Revision::V1_1] {
            let document = document(revision);
            let mut ids = Vec::new();
            for item in document["paths"].as_object().unwrap().values() {
                for (method, operation) in item.as_object().unwrap() {
                    if method != "parameters" {
                        ids.push(operation["operationId"].as_str().unwrap().to_string());
                    }
                }
            }
            ids.sort();
            assert_eq!(
                ids,
                [
                    "createListing",
                    "deleteListing",
                    "getListing",
                    "getListingPrice",
                    "listListings"
                ]
            );
        }
    }

    #[test]
    fn the_sunset_follows_the_deprecation() {
        let deprecated: i64 = DEPRECATION[1..].parse().unwrap();
        let sunset = DateTime::parse_from_rfc2822(SUNSET).unwrap().timestamp();
        assert!(DateTime::parse_from_rfc2822(SUNSET)
            .unwrap()
            .to_rfc3339()
            .starts_with(SUNSET_DATE));
        assert!(sunset > deprecated);
        let early = DateTime::parse_from_rfc2822(SUNSET_BEFORE_DEPRECATION).unwrap();
        assert!(early.timestamp() < deprecated);
        assert_eq!(
            DateTime::from_timestamp(deprecated, 0)
                .unwrap()
                .to_rfc3339(),
            "2026-06-01T00:00:00+00:00"
        );
    }
}
