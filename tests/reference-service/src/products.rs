//! The product catalogue: exercise `api-design` (task statement: `exercises/api-design/README.md`).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody, MergePatchBody};
use crate::problem::{FieldError, Problem};
use crate::AppState;

pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS products (
        id          uuid        PRIMARY KEY,
        sku         text        NOT NULL,
        name        text        NOT NULL,
        description text,
        price_cents integer     NOT NULL CHECK (price_cents BETWEEN 0 AND 100000000),
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT products_sku_key UNIQUE (sku)
    );
";

/// Duplicate SKUs are caught by this constraint, not by a look-up before the insert, which two
/// concurrent requests could both pass.
const SKU_CONSTRAINT: &str = "products_sku_key";

pub(crate) const COLUMNS: &str =
    "id, sku, name, description, price_cents, category, created_at, updated_at";

const MAX_PRICE_CENTS: i64 = 100_000_000;

pub fn router() -> Router<AppState> {
    let mut item = get(read).put(replace).patch(update).delete(remove);
    let item_methods = if bugs::is(Bug::HeadUnsupported) {
        // As if the framework did not derive HEAD from GET and nobody added it by hand.
        let without_head = "GET, PUT, PATCH, DELETE";
        item = item.head(move |method: Method, uri: Uri| async move {
            Problem::method_not_allowed(method.as_str(), uri.path(), without_head)
        });
        without_head
    } else {
        "GET, HEAD, PUT, PATCH, DELETE"
    };
    if bugs::is(Bug::HeadAlways200) {
        // `app.head("/products/:id", (req, res) => res.type("json").sendStatus(200))`.
        item = item.head(|| async { ([(header::CONTENT_TYPE, "application/json")], "") });
    }
    Router::new()
        .route(
            "/products",
            allow(get(crate::pagination::list).post(create), "GET, HEAD, POST"),
        )
        .route("/products/{id}", allow(item, item_allow(item_methods)))
}

/// The `Allow` of a 405 on `/products/{id}`.
fn item_allow(item_methods: &'static str) -> &'static str {
    if bugs::is(Bug::ItemAllowWrong) {
        // One 405 handler for the whole API, written for the collection.
        return "GET, HEAD, POST";
    }
    item_methods
}

/// A product as every response shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Product {
    pub(crate) id: Uuid,
    sku: String,
    name: String,
    description: Option<String>,
    pub(crate) price_cents: i32,
    /// Optional; lists filter on it (exercise `pagination`).
    category: Option<String>,
    #[serde(serialize_with = "timestamp")]
    pub(crate) created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp")]
    updated_at: DateTime<Utc>,
}

impl Product {
    /// Reads a row selected with [`COLUMNS`].
    pub(crate) fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            sku: row.get("sku"),
            name: row.get("name"),
            description: row.get("description"),
            price_cents: row.get("price_cents"),
            category: row.get("category"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }

    /// The fields a client can write, as the JSON document a merge patch applies to.
    fn writable_fields(&self) -> Value {
        let mut fields = json!({
            "sku": self.sku,
            "name": self.name,
            "description": self.description,
            "price_cents": self.price_cents,
            "category": self.category,
        });
        // Planted bug page-patch-drops-category: a PATCH starts from a product without it.
        if bugs::is(Bug::PagePatchDropsCategory) {
            fields["category"] = Value::Null;
        }
        fields
    }
}

/// RFC 3339 in UTC with microseconds (PostgreSQL's precision), e.g. `2026-11-28T15:04:05.123456Z`.
fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    if bugs::is(Bug::LocalTimestamps) {
        return serializer.collect_str(&at.format("%Y-%m-%d %H:%M:%S"));
    }
    if bugs::is(Bug::TimestampsOffset) {
        // The server's local zone (Central European Summer Time) instead of UTC.
        let local = FixedOffset::east_opt(2 * 3600).expect("a valid offset");
        return serializer.collect_str(
            &at.with_timezone(&local)
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        );
    }
    serializer.collect_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// The client-writable fields of a product, validated.
#[derive(Debug)]
struct ProductInput {
    sku: String,
    name: String,
    description: Option<String>,
    price_cents: i32,
    category: Option<String>,
}

impl ProductInput {
    /// Validates a whole representation (a create or a replace), reporting every bad field.
    fn validate(body: &Value) -> Result<Self, Problem> {
        let Some(fields) = body.as_object() else {
            if bugs::is(Bug::NonObject500) {
                // As `body["sku"]` on a list or null throws in a dynamic language.
                return Err(Problem::internal("the request body is not an object"));
            }
            return Err(Problem::invalid(vec![FieldError::new(
                "",
                "must be a JSON object",
            )]));
        };
        let mut errors = Vec::new();
        let sku = check(&mut errors, "sku", sku(fields));
        let name = check(&mut errors, "name", name(fields));
        let description = check(&mut errors, "description", description(fields));
        let price_cents = check(&mut errors, "price_cents", price_cents(fields));
        let category = check(&mut errors, "category", category(fields));
        match (sku, name, description, price_cents, category) {
            (Some(sku), Some(name), Some(description), Some(price_cents), Some(category)) => {
                Ok(Self {
                    sku,
                    name,
                    description,
                    price_cents,
                    category,
                })
            }
            _ => Err(Problem::invalid(errors)),
        }
    }
}

/// Records a failed field check under the field's JSON Pointer (shared with `listings`).
pub(crate) fn check<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    result: Result<T, String>,
) -> Option<T> {
    result
        .map_err(|detail| errors.push(FieldError::new(format!("/{field}"), detail)))
        .ok()
}

/// A required string field; `null` counts as missing.
fn required_string<'a>(fields: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    match fields.get(field) {
        None | Some(Value::Null) => Err("is required".into()),
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err("must be a string".into()),
    }
}

fn sku(fields: &Map<String, Value>) -> Result<String, String> {
    let sku = required_string(fields, "sku")?;
    // Python's `re.match(r"^[A-Z0-9-]{3,64}$", sku)` also matches before a final newline.
    let checked = if bugs::is(Bug::SkuTrailingNewline) {
        sku.strip_suffix('\n').unwrap_or(sku)
    } else {
        sku
    };
    if !bugs::is(Bug::SkuNoLength) && !(3..=64).contains(&checked.chars().count()) {
        return Err("must be 3 to 64 characters long".into());
    }
    if !checked
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may contain only A-Z, 0-9 and -".into());
    }
    Ok(sku.to_owned())
}

fn name(fields: &Map<String, Value>) -> Result<String, String> {
    let name = required_string(fields, "name")?;
    let length = if bugs::is(Bug::NameLengthBytes) {
        name.len()
    } else {
        name.chars().count()
    };
    if !(1..=200).contains(&length) {
        return Err("must be 1 to 200 characters long".into());
    }
    let control = if bugs::is(Bug::NameControlBelowSpace) {
        name.chars().any(|c| c < ' ')
    } else {
        name.chars().any(char::is_control)
    };
    // Besides being against the rules, U+0000 cannot be stored in a PostgreSQL text column.
    let unchecked = bugs::is(Bug::LeakDbErrors) || bugs::is(Bug::Plain500);
    if !unchecked && control {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

fn description(fields: &Map<String, Value>) -> Result<Option<String>, String> {
    match fields.get("description") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(description)) => {
            let length = description.chars().count();
            let too_long = if bugs::is(Bug::DescriptionLimitOffByOne) {
                length >= 2000
            } else {
                length > 2000
            };
            if too_long {
                return Err("must be at most 2000 characters long".into());
            }
            // Descriptions may hold line breaks and tabs, but PostgreSQL cannot store U+0000.
            if description.contains('\0') {
                return Err("must not contain the NUL character (U+0000)".into());
            }
            Ok(Some(description.clone()))
        }
        // As a dynamic language stores `str(value)` of whatever arrived.
        Some(other) if bugs::is(Bug::DescriptionAnyJson) => Ok(Some(other.to_string())),
        Some(_) => Err("must be a string or null".into()),
    }
}

/// Optional: `null` or 1 to 64 characters of `a-z`, `0-9` and `-`.
fn category(fields: &Map<String, Value>) -> Result<Option<String>, String> {
    match fields.get("category") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(category)) => {
            let valid = bugs::is(Bug::PageCategoryUnchecked)
                || (1..=64).contains(&category.len())
                    && category
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err("must be 1 to 64 characters of a-z, 0-9 and -".into());
            }
            Ok(Some(category.clone()))
        }
        Some(_) => Err("must be a string or null".into()),
    }
}

/// An integer in range. A JSON number with an exponent or a zero fraction (`1e3`, `990.0`) is
/// still an integer, as in JSON Schema; `12.5` is not.
fn price_cents(fields: &Map<String, Value>) -> Result<i32, String> {
    let number = match fields.get("price_cents") {
        // As `#[serde(default)]` or `body.price_cents || 0` would.
        None if bugs::is(Bug::PriceDefaultsToZero) => return Ok(0),
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
    let min = if bugs::is(Bug::PriceZeroRefused) {
        1
    } else {
        0
    };
    if value < min {
        return Err(format!("must be at least {min}"));
    }
    if value > MAX_PRICE_CENTS {
        return Err(format!("must be at most {MAX_PRICE_CENTS}"));
    }
    Ok(i32::try_from(value).expect("range checked above"))
}

/// The `{id}` of `/products/{id}`. An id this service could not have issued answers 404, like one
/// that does not exist: ids are opaque to clients.
struct ProductId(Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ProductId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::not_found("There is no product with this id."))?;
        // Only the exact form handed out in `id` and `Location` names a product, so a product
        // has one URL (not also its upper-case or un-hyphenated spellings).
        match Uuid::try_parse(&raw) {
            Ok(id) if id.hyphenated().to_string() == raw => Ok(Self(id)),
            // What a typed path extractor (axum's `Path<Uuid>`) answers by itself.
            Err(_) if bugs::is(Bug::InvalidId400) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "The id is not a valid UUID.",
            )),
            _ => Err(not_found(&raw)),
        }
    }
}

fn not_found(id: impl std::fmt::Display) -> Problem {
    Problem::not_found(format!("There is no product with id {id}."))
}

/// Maps a unique violation on the SKU to 409; any other database error is a 500.
fn sku_taken(error: tokio_postgres::Error, sku: &str) -> Problem {
    let duplicate = error.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(SKU_CONSTRAINT)
    });
    if duplicate && !bugs::is(Bug::Duplicate500) {
        return Problem::new(
            StatusCode::CONFLICT,
            format!("A product with sku {sku} already exists."),
        );
    }
    error.into()
}

/// `POST /products`: 201 with `Location`.
async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let mut input = ProductInput::validate(&body)?;
    if bugs::is(Bug::DescriptionDefaultEmpty) {
        // As a `description text NOT NULL DEFAULT ''` column would store it.
        input.description.get_or_insert_with(String::new);
    }
    let client = state.pool.get().await?;
    let id = Uuid::new_v4();
    let product = if bugs::is(Bug::MassAssignment) {
        insert_as_sent(&client, &body, &input).await?
    } else if bugs::is(Bug::SkuUpsertThen409) {
        upsert_by_sku(&client, id, &input).await?
    } else if bugs::is(Bug::SkuCheckThenInsert) {
        check_then_insert(&client, id, &input).await?
    } else {
        insert(&client, id, &input).await?
    };
    if bugs::is(Bug::Create200NoLocation) {
        return Ok(Json(product).into_response());
    }
    let mut location_id = product.id;
    if bugs::is(Bug::LocationOtherId) {
        // The handler made up an id for the URL, and the database gave the row its own.
        location_id = Uuid::new_v4();
    }
    let location = format!("/products/{location_id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(product),
    )
        .into_response())
}

/// Inserts a product with the given id; a taken SKU is a 409.
async fn insert(
    client: &deadpool_postgres::Client,
    id: Uuid,
    input: &ProductInput,
) -> Result<Product, Problem> {
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO products (id, sku, name, description, price_cents, category)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_one(
            &statement,
            &[
                &id,
                &input.sku,
                &input.name,
                &input.description,
                &input.price_cents,
                &input.category,
            ],
        )
        .await
        .map_err(|error| sku_taken(error, &input.sku))?;
    Ok(Product::from_row(&row))
}

/// Planted bug `MassAssignment`: the row takes the `id`, `created_at` and `updated_at` of the
/// request body when it has them, as `Product(**body)` or `Object.assign(product, body)` would.
async fn insert_as_sent(
    client: &deadpool_postgres::Client,
    body: &Value,
    input: &ProductInput,
) -> Result<Product, Problem> {
    let sent = |field: &str| body.get(field).and_then(Value::as_str);
    let id = sent("id")
        .and_then(|id| Uuid::try_parse(id).ok())
        .unwrap_or_else(Uuid::new_v4);
    let at = |field: &str| {
        sent(field)
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map_or_else(Utc::now, |at| at.with_timezone(&Utc))
    };
    let row = client
        .query_one(
            &format!(
                "INSERT INTO products
                     (id, sku, name, description, price_cents, category, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &input.sku,
                &input.name,
                &input.description,
                &input.price_cents,
                &input.category,
                &at("created_at"),
                &at("updated_at"),
            ],
        )
        .await
        .map_err(|error| sku_taken(error, &input.sku))?;
    Ok(Product::from_row(&row))
}

/// Planted bug `SkuUpsertThen409`: `INSERT ... ON CONFLICT (sku) DO UPDATE`, then a 409 when the
/// row was not new. The conflict is reported, but the other product has been overwritten.
async fn upsert_by_sku(
    client: &deadpool_postgres::Client,
    id: Uuid,
    input: &ProductInput,
) -> Result<Product, Problem> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO products (id, sku, name, description, price_cents, category)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (sku) DO UPDATE
                 SET name = EXCLUDED.name, description = EXCLUDED.description,
                     price_cents = EXCLUDED.price_cents, category = EXCLUDED.category,
                     updated_at = now()
                 RETURNING {COLUMNS}, (xmax = 0) AS inserted"
            ),
            &[
                &id,
                &input.sku,
                &input.name,
                &input.description,
                &input.price_cents,
                &input.category,
            ],
        )
        .await?;
    if !row.get::<_, bool>("inserted") {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("A product with sku {} already exists.", input.sku),
        ));
    }
    Ok(Product::from_row(&row))
}

/// Planted bug `SkuCheckThenInsert`: a look-up, then the insert, in a table whose SKUs are not
/// constrained. Requests that arrive together all pass the look-up.
async fn check_then_insert(
    client: &deadpool_postgres::Client,
    id: Uuid,
    input: &ProductInput,
) -> Result<Product, Problem> {
    static UNCONSTRAINED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    UNCONSTRAINED
        .get_or_try_init(|| async {
            client
                .batch_execute(&format!(
                    "ALTER TABLE products DROP CONSTRAINT IF EXISTS {SKU_CONSTRAINT}"
                ))
                .await
        })
        .await?;
    let taken = client
        .query_opt("SELECT 1 FROM products WHERE sku = $1", &[&input.sku])
        .await?;
    if taken.is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("A product with sku {} already exists.", input.sku),
        ));
    }
    // The work a real handler does between its look-up and its insert (more validation, a
    // call to another service), long enough that requests sent together all see "not taken".
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    insert(client, id, input).await
}

/// `GET /products/{id}` (and, through axum, `HEAD`).
async fn read(
    State(state): State<AppState>,
    ProductId(id): ProductId,
) -> Result<Json<Product>, Problem> {
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
        .await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    row.map(|row| Json(Product::from_row(&row)))
        .ok_or_else(|| not_found(id))
}

/// `PUT /products/{id}`: a full replacement.
async fn replace(
    State(state): State<AppState>,
    ProductId(id): ProductId,
    JsonBody(body): JsonBody,
) -> Result<Json<Product>, Problem> {
    if bugs::is(Bug::PutMerges) {
        return merge(&state, id, &body).await;
    }
    overwrite(&state, id, &body).await
}

/// `PATCH /products/{id}`: a JSON merge patch.
async fn update(
    State(state): State<AppState>,
    ProductId(id): ProductId,
    MergePatchBody(patch): MergePatchBody,
) -> Result<Json<Product>, Problem> {
    if bugs::is(Bug::PatchReplaces) {
        return overwrite(&state, id, &patch).await;
    }
    merge(&state, id, &patch).await
}

/// Replaces every writable field with `body`'s.
async fn overwrite(state: &AppState, id: Uuid, body: &Value) -> Result<Json<Product>, Problem> {
    let input = ProductInput::validate(body)?;
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "UPDATE products
             SET sku = $2, name = $3, description = $4, price_cents = $5, category = $6,
                 updated_at = now()
             WHERE id = $1
             RETURNING {COLUMNS}"
        ))
        .await?;
    let row = client
        .query_opt(
            &statement,
            &[
                &id,
                &input.sku,
                &input.name,
                &input.description,
                &input.price_cents,
                &input.category,
            ],
        )
        .await
        .map_err(|error| sku_taken(error, &input.sku))?;
    match row {
        Some(row) => Ok(Json(Product::from_row(&row))),
        // PUT as "create or replace", against the task's "an unknown id answers 404".
        None if bugs::is(Bug::PutUpserts) => Ok(Json(insert(&client, id, &input).await?)),
        None => Err(not_found(id)),
    }
}

/// Applies `patch` to the stored product and validates the result as a whole.
async fn merge(state: &AppState, id: Uuid, patch: &Value) -> Result<Json<Product>, Problem> {
    let mut client = state.pool.get().await?;
    // Read, merge and write in one transaction, the row locked, so that two concurrent patches
    // to different fields cannot undo each other.
    let transaction = client.transaction().await?;
    let select = transaction
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM products WHERE id = $1 FOR UPDATE"
        ))
        .await?;
    let Some(row) = transaction.query_opt(&select, &[&id]).await? else {
        return Err(not_found(id));
    };
    let mut fields = Product::from_row(&row).writable_fields();
    merge_patch(&mut fields, patch);
    let input = ProductInput::validate(&fields)?;

    let update = transaction
        .prepare_cached(&format!(
            "UPDATE products
             SET sku = $2, name = $3, description = $4, price_cents = $5, category = $6,
                 updated_at = now()
             WHERE id = $1
             RETURNING {COLUMNS}"
        ))
        .await?;
    let row = transaction
        .query_one(
            &update,
            &[
                &id,
                &input.sku,
                &input.name,
                &input.description,
                &input.price_cents,
                &input.category,
            ],
        )
        .await
        .map_err(|error| sku_taken(error, &input.sku))?;
    transaction.commit().await?;
    Ok(Json(Product::from_row(&row)))
}

/// RFC 7396 §2: `null` removes a member, an object merges recursively, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("made an object above");
    };
    for (key, value) in patch {
        if value.is_null() {
            // Deserialising the patch into `Option` fields makes `null` and "absent" the same.
            if !bugs::is(Bug::PatchIgnoresNull) {
                target.remove(key);
            }
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// `DELETE /products/{id}`: 204, and the product is gone.
async fn remove(
    State(state): State<AppState>,
    ProductId(id): ProductId,
) -> Result<Response, Problem> {
    let client = state.pool.get().await?;
    if bugs::is(Bug::SoftDelete) {
        // A "soft delete" whose flag nothing ever reads: the product stays visible.
        let statement = client
            .prepare_cached("SELECT 1 FROM products WHERE id = $1")
            .await?;
        return match client.query_opt(&statement, &[&id]).await? {
            Some(_) => Ok(Json(json!({ "deleted": true })).into_response()),
            None => Err(not_found(id)),
        };
    }
    let statement = client
        .prepare_cached("DELETE FROM products WHERE id = $1")
        .await?;
    match client.execute(&statement, &[&id]).await? {
        0 => Err(not_found(id)),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Value {
        json!({"sku": "SKU-7F3A21", "name": "Blue enamel mug", "price_cents": 1250})
    }

    fn error_pointers(body: Value) -> Vec<String> {
        let problem = ProductInput::validate(&body).unwrap_err();
        assert_eq!(problem.status(), StatusCode::UNPROCESSABLE_ENTITY);
        problem.pointers()
    }

    #[test]
    fn accepts_a_valid_product() {
        let input = ProductInput::validate(&valid()).unwrap();
        assert_eq!(input.sku, "SKU-7F3A21");
        assert_eq!(input.description, None);
        assert_eq!(input.price_cents, 1250);
    }

    #[test]
    fn prices_must_be_integers_in_range() {
        for (price, ok) in [
            (json!(0), true),
            (json!(100_000_000), true),
            (json!(990.0), true),
            (json!(-1), false),
            (json!(100_000_001), false),
            (json!(12.5), false),
            (json!(1e30), false),
            (json!(u64::MAX), false),
            (json!("1250"), false),
        ] {
            let mut body = valid();
            body["price_cents"] = price.clone();
            assert_eq!(ProductInput::validate(&body).is_ok(), ok, "{price}");
        }
    }

    #[test]
    fn names_every_bad_field() {
        let body = json!({"sku": "lower", "name": "a\u{0}b", "description": 5});
        assert_eq!(
            error_pointers(body),
            ["/sku", "/name", "/description", "/price_cents"]
        );
        assert_eq!(error_pointers(json!([1, 2])), [""]);
    }

    /// Whether `body` with `field` set to `value` is valid.
    fn accepts(field: &str, value: Value) -> bool {
        let mut body = valid();
        body[field] = value;
        ProductInput::validate(&body).is_ok()
    }

    #[test]
    fn sku_is_3_to_64_characters_of_a_z_0_9_and_dash() {
        assert!(accepts("sku", json!("A1B")));
        assert!(accepts(
            "sku",
            json!(format!("SKU-7F3A21-{}", "A".repeat(53)))
        ));
        assert!(!accepts("sku", json!("AB")));
        assert!(!accepts(
            "sku",
            json!(format!("SKU-7F3A21-{}", "A".repeat(54)))
        ));
        assert!(!accepts("sku", json!("")));
        for bad in ["sku-1a2b3c", "SKU_1", "SKU 1", "SKU-Ä1", "SKU-7F3A21\n"] {
            assert!(!accepts("sku", json!(bad)), "{bad:?}");
        }
    }

    #[test]
    fn name_length_counts_characters_and_control_characters_are_refused() {
        assert!(accepts("name", json!("Q")));
        assert!(accepts("name", json!("é".repeat(200))));
        assert!(!accepts("name", json!("é".repeat(201))));
        assert!(!accepts("name", json!("")));
        assert!(accepts("name", json!("Crème brûlée & Co's mug (½ l)")));
        for control in ['\u{0}', '\u{1}', '\t', '\n', '\u{1f}', '\u{7f}'] {
            assert!(
                !accepts("name", json!(format!("mug{control}"))),
                "{control:?}"
            );
        }
    }

    #[test]
    fn description_is_at_most_2000_characters_line_breaks_allowed() {
        let line = format!("{}\n", "é".repeat(19));
        assert!(accepts("description", json!(line.repeat(100))));
        assert!(!accepts("description", json!(line.repeat(100) + "x")));
        assert!(accepts("description", Value::Null));
        assert!(!accepts("description", json!({ "text": "mug" })));
    }

    #[test]
    fn a_collection_allow_is_not_used_for_items() {
        assert_eq!(
            item_allow("GET, HEAD, PUT, PATCH, DELETE"),
            "GET, HEAD, PUT, PATCH, DELETE"
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut target, &json!(["x"]));
        assert_eq!(target, json!(["x"]));
    }
}
