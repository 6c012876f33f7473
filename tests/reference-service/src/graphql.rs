//! A shop's customers and orders over GraphQL: exercise `graphql` (task statement:
//! `exercises/graphql/README.md`).
//!
//! async-graphql holds the schema, validates and executes; everything between it and HTTP is
//! written here, because the library's defaults differ from the task on several points:
//!
//! - the transport follows GraphQL over HTTP [gql-2.1..2.6]: the media type is negotiated on
//!   `Accept`; a request error (syntax, validation, a limit) has no `data` entry at all, where
//!   `async_graphql::Response` always serializes one (`"data": null`); its status is 400 with
//!   `application/graphql-response+json` and 200 with `application/json`. Whether the request
//!   failed before execution is known for certain: [`ExecutionStarted`] marks the requests whose
//!   execution began, which is the one thing a `Response` cannot tell.
//! - the limits are the README's own [gql-5.2] [gql-5.3], computed by [`cost`] on the parsed
//!   document before anything runs: async-graphql's `limit_depth` counts selection sets, fragments
//!   included, and `limit_complexity` counts differently again.
//! - a field that fails is `null` with an error at its exact path [gql-3.2]: resolvers of nullable
//!   fields report their errors ([`field_error`]) instead of returning them. (async-graphql 7.0
//!   makes an error returned by a resolver travel up to the nearest nullable *parent*, which is
//!   right for non-null fields and wrong for nullable ones.)
//!
//! Data: the grader's `shop_customers` and `shop_orders` tables, through the service's pool; orders newest
//! first with keyset cursors [gql-6.1..6.5]; each page's customers loaded by one DataLoader query
//! [gql-4.1]. `Customer.loyaltyTier` asks `GET {LOYALTY_URL}/tiers/{id}` (2 s) [gql-3.1..3.3].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{
    Context, EmptySubscription, Object, PathSegment, Schema, ServerError, SimpleObject, Variables,
    ID,
};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::bugs::{self, Bug};
use crate::http::allow;
use crate::AppState;

/// The deepest field a query may select [gql-5.2].
const MAX_DEPTH: usize = 8;
/// The most field selections a query may make, fragments expanded [gql-5.3].
const MAX_FIELDS: usize = 100;
/// Fragments spread inside fragments beyond this are refused before they are walked: no real
/// query comes near it, and a chain of thousands would otherwise recurse that deep (here and in
/// the library's validation).
const MAX_FRAGMENT_NESTING: usize = 64;
/// The most selections a query may expand to, introspection and fragment spreads included. The
/// two limits leave introspection out, so without this `__typename` in a fragment spread twice in
/// a fragment spread twice... forty times over would cost the library 2^40 steps (in its own
/// checks, then in execution). GraphiQL's introspection query expands to a few hundred.
const MAX_SELECTIONS: usize = 10_000;

/// Page size when `first` is absent, and its maximum [gql-6.2].
const DEFAULT_FIRST: i32 = 10;
const MAX_FIRST: i32 = 100;

/// How long the loyalty service has to answer [gql-3.2].
const LOYALTY_TIMEOUT: Duration = Duration::from_secs(2);
/// The only words about a loyalty failure a client sees [gql-3.3].
const LOYALTY_UNAVAILABLE: &str = "loyalty tier unavailable";
/// The message of a database failure; the cause goes to the log.
const INTERNAL: &str = "internal error";

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/graphql",
        allow(get(over_get).post(over_post), "GET, HEAD, POST"),
    )
}

// ---------------------------------------------------------------------------------------------
// Transport.

/// The media type of the answer [gql-2.2].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    /// `application/graphql-response+json` when `Accept` lists it (alone or with others),
    /// `application/json` when it lists that and not the former, and the former again for `*/*`,
    /// `application/*`, no `Accept` at all, or only types neither of them is (the draft lets a
    /// server answer those with its default rather than 406).
    fn negotiate(headers: &HeaderMap) -> Self {
        let mut json = false;
        for value in headers.get_all(header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for range in value.split(',') {
                let mut parts = range.split(';');
                let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                // `q=0` means "not acceptable".
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                });
                if refused {
                    continue;
                }
                match essence.as_str() {
                    GRAPHQL_RESPONSE_JSON => return Self::GraphqlResponseJson,
                    JSON => json = true,
                    _ => {}
                }
            }
        }
        if json {
            Self::Json
        } else {
            Self::GraphqlResponseJson
        }
    }

    fn header_value(self) -> HeaderValue {
        // Planted bug gql-json-only: "JSON is JSON", whatever the client asked for.
        if bugs::is(Bug::GqlJsonOnly) {
            return HeaderValue::from_static(JSON);
        }
        HeaderValue::from_static(match self {
            Self::GraphqlResponseJson => GRAPHQL_RESPONSE_JSON,
            Self::Json => JSON,
        })
    }
}

/// How a request ended, before it is written for its media type.
enum Outcome {
    /// It was executed: `200`, with `data` (and `errors` for the fields that failed) [gql-2.5].
    Executed(async_graphql::Response),
    /// A request error: nothing was executed [gql-2.3].
    RequestError(Vec<ServerError>),
    /// Not a GraphQL request at all (not JSON, no `query` string): `400` [gql-2.4].
    Malformed(String),
    /// A mutation sent with `GET`: refused, nothing executed [gql-2.6].
    MutationOverGet,
}

impl Outcome {
    fn respond(self, media_type: MediaType) -> Response {
        // Serialized straight to text, not through `serde_json::Value`, whose maps are sorted:
        // `data` keeps the order of the query's fields, as the specification asks.
        let (status, body, allow) = match self {
            Self::Executed(response) => (StatusCode::OK, serde_json::to_string(&response), None),
            Self::RequestError(errors) => {
                // Planted bug gql-data-null-on-request-error: the library's own body
                // (`async_graphql::Response` always has `data`) and the status it goes with.
                if bugs::is(Bug::GqlDataNullOnRequestError) {
                    let body = async_graphql::Response::from_errors(errors);
                    (StatusCode::OK, serde_json::to_string(&body), None)
                } else {
                    // The draft's rule: a response without `data` is a 4xx in
                    // graphql-response+json; application/json keeps 200 for older clients.
                    let status = match media_type {
                        // Planted bug gql-request-error-200: "GraphQL always answers 200".
                        MediaType::GraphqlResponseJson if !bugs::is(Bug::GqlRequestError200) => {
                            StatusCode::BAD_REQUEST
                        }
                        _ => StatusCode::OK,
                    };
                    (status, serde_json::to_string(&ErrorsOnly { errors }), None)
                }
            }
            Self::Malformed(message) => (
                StatusCode::BAD_REQUEST,
                serde_json::to_string(&ErrorsOnly::message(message)),
                None,
            ),
            Self::MutationOverGet => (
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::to_string(&ErrorsOnly::message(
                    "Mutations are only accepted over POST.".into(),
                )),
                // Planted bug gql-405-without-allow: the status is right, the header forgotten.
                (!bugs::is(Bug::Gql405WithoutAllow)).then_some(HeaderValue::from_static("POST")),
            ),
        };
        let body = body.unwrap_or_else(|e| {
            eprintln!("error: cannot serialize a GraphQL response: {e}");
            format!(r#"{{"errors":[{{"message":"{INTERNAL}"}}]}}"#)
        });
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, media_type.header_value());
        if let Some(allow) = allow {
            headers.insert(header::ALLOW, allow);
        }
        response
    }
}

/// The body of a response without `data` [gql-2.3].
#[derive(Serialize)]
struct ErrorsOnly {
    errors: Vec<ServerError>,
}

impl ErrorsOnly {
    fn message(message: String) -> Self {
        Self {
            errors: vec![ServerError::new(message, None)],
        }
    }
}

/// `POST /graphql`: a JSON object with `query`, and optionally `variables` and `operationName`
/// [gql-2.1]. The `Content-Type` is not checked: a body that parses as such an object is served
/// whatever it was declared as, anything else is a 400.
async fn over_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let media_type = MediaType::negotiate(&headers);
    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(body) => GraphqlRequest::from_json(body),
        Err(e) => Err(format!("The request body is not JSON: {e}.")),
    };
    match request {
        Ok(request) => run(&state, request, false).await,
        Err(message) => Outcome::Malformed(message),
    }
    .respond(media_type)
}

/// `GET /graphql?query=...&variables=...&operationName=...`: queries only [gql-2.6].
async fn over_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let media_type = MediaType::negotiate(&headers);
    let request = match params {
        Ok(Query(params)) => GraphqlRequest::from_query_string(params),
        Err(rejection) => Err(format!("The query string is invalid: {rejection}.")),
    };
    match request {
        Ok(request) => run(&state, request, true).await,
        Err(message) => Outcome::Malformed(message),
    }
    .respond(media_type)
}

/// The three members of a GraphQL request, checked for their types.
struct GraphqlRequest {
    query: String,
    variables: Option<serde_json::Map<String, Value>>,
    operation_name: Option<String>,
}

impl GraphqlRequest {
    fn from_json(body: Value) -> Result<Self, String> {
        let Value::Object(mut body) = body else {
            return Err("The request body must be a JSON object.".into());
        };
        let Some(Value::String(query)) = body.remove("query") else {
            return Err("The request body has no \"query\" string.".into());
        };
        let variables = match body.remove("variables") {
            None | Some(Value::Null) => None,
            Some(Value::Object(variables)) => Some(variables),
            Some(_) => return Err("\"variables\" must be a JSON object.".into()),
        };
        let operation_name = match body.remove("operationName") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(_) => return Err("\"operationName\" must be a string.".into()),
        };
        Ok(Self {
            query,
            variables,
            operation_name,
        })
    }

    fn from_query_string(mut params: HashMap<String, String>) -> Result<Self, String> {
        let Some(query) = params.remove("query") else {
            return Err(
                "Send a GraphQL request as POST /graphql, or GET /graphql?query=...".into(),
            );
        };
        let variables = match params.remove("variables") {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Null) => None,
                Ok(Value::Object(variables)) => Some(variables),
                _ => return Err("\"variables\" must be a JSON object.".into()),
            },
        };
        Ok(Self {
            query,
            variables,
            operation_name: params.remove("operationName").filter(|n| !n.is_empty()),
        })
    }
}

/// Parses, checks the limits, and executes: in this order, so that a refused request costs no
/// resolver and no SQL statement [gql-5.1].
async fn run(state: &AppState, request: GraphqlRequest, over_get: bool) -> Outcome {
    let document = match async_graphql::parser::parse_query(&request.query) {
        Ok(document) => document,
        Err(e) => return Outcome::RequestError(vec![e.into()]),
    };
    let operation = operation(&document, request.operation_name.as_deref());
    // Planted bug gql-mutation-over-get: "GET and POST run the same code".
    if over_get
        && operation.is_some_and(|op| op.ty == OperationType::Mutation)
        && !bugs::is(Bug::GqlMutationOverGet)
    {
        return Outcome::MutationOverGet;
    }
    // Planted bug gql-limits-after-execution: the limits applied to the finished response (an
    // extension's "after" hook), when every resolver has run.
    let limits_after = bugs::is(Bug::GqlLimitsAfterExecution);
    let limits = operation.map(|op| check_limits(&document, op));
    if !limits_after {
        if let Some(Err(error)) = limits {
            return Outcome::RequestError(vec![error]);
        }
    }

    let started = Arc::new(AtomicBool::new(false));
    let mut executable = async_graphql::Request::new(request.query)
        .variables(Variables::from_json(Value::Object(
            request.variables.unwrap_or_default(),
        )))
        .data(ExecutionFlag(started.clone()))
        .data(state.pool.clone())
        .data(DataLoader::new(
            CustomerLoader {
                pool: state.pool.clone(),
            },
            tokio::spawn,
        ));
    if let Some(name) = request.operation_name {
        executable = executable.operation_name(name);
    }
    executable.set_parsed_query(document);
    let response = schema().execute(executable).await;

    if limits_after {
        if let Some(Err(error)) = limits {
            return Outcome::RequestError(vec![error]);
        }
    }
    if started.load(Ordering::SeqCst) {
        Outcome::Executed(response)
    } else {
        // Refused by the library's validation (or its choice of operation): no `data` at all.
        Outcome::RequestError(response.errors)
    }
}

/// The operation the request runs: the one named `operationName`, or the document's only one.
/// `None` when that is ambiguous or names nothing (the library then answers the request error).
fn operation<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Marks a request whose execution began: after parsing, validation and the choice of the
/// operation, which are the request errors.
struct ExecutionStarted;

#[derive(Clone)]
struct ExecutionFlag(Arc<AtomicBool>);

impl ExtensionFactory for ExecutionStarted {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ExecutionStarted)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ExecutionStarted {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        if let Some(ExecutionFlag(started)) = ctx.data_opt::<ExecutionFlag>() {
            started.store(true, Ordering::SeqCst);
        }
        next.run(ctx, operation_name).await
    }
}

type ShopSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

fn schema() -> &'static ShopSchema {
    static SCHEMA: OnceLock<ShopSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::build(QueryRoot, MutationRoot, EmptySubscription)
            .extension(ExecutionStarted)
            // Our limits answer first; the library's own nesting check (32 selection sets by
            // default, inline fragments and fragment spreads included) would refuse queries the
            // README lets run, such as a depth of 8 through many inline fragments. The parser
            // itself stops at 64.
            .limit_recursive_depth(64)
            .finish()
    })
}

// ---------------------------------------------------------------------------------------------
// Limits.

/// What a selection costs: the depth of its deepest field, its field selections (both without
/// introspection), and its size.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    depth: usize,
    fields: usize,
    /// Every selection, expanded: what the library will walk [`MAX_SELECTIONS`].
    size: usize,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.depth = self.depth.max(other.depth);
        self.fields = self.fields.saturating_add(other.fields);
        self.size = self.size.saturating_add(other.size);
    }
}

/// A request error when the operation breaks a limit [gql-5.2] [gql-5.3].
fn check_limits(
    document: &ExecutableDocument,
    op: &OperationDefinition,
) -> Result<(), ServerError> {
    let cost = cost(document, &op.selection_set.node)
        .map_err(|message| ServerError::new(message, Some(op.selection_set.pos)))?;
    // Planted bug gql-no-depth-limit: "the field limit covers it".
    let refusal = if cost.depth > MAX_DEPTH && !bugs::is(Bug::GqlNoDepthLimit) {
        format!(
            "The query is {} fields deep; at most {MAX_DEPTH} are allowed.",
            cost.depth
        )
    } else if cost.fields > MAX_FIELDS {
        format!(
            "The query selects {} fields; at most {MAX_FIELDS} are allowed.",
            cost.fields
        )
    } else if cost.size > MAX_SELECTIONS {
        format!(
            "The query expands to more than {MAX_SELECTIONS} selections once its fragments are \
             spread."
        )
    } else {
        return Ok(());
    };
    Err(ServerError::new(refusal, Some(op.selection_set.pos)))
}

/// The cost of an operation's selection set, by the README's rules: every field selection counts
/// one and one level, aliases each on their own; fragments and inline fragments count where they
/// are used, adding no level of their own; introspection fields (`__schema`, `__type`,
/// `__typename`) and what they select are left out [gql-5.4]. Each fragment is measured once (its
/// cost does not depend on where it is spread), so a fragment spread twice in a fragment spread
/// twice... costs a lookup, not an exponential walk. `Err` for fragments nested absurdly deep.
fn cost(document: &ExecutableDocument, selection_set: &SelectionSet) -> Result<Cost, String> {
    let mut walk = Walk {
        document,
        fragments: HashMap::new(),
        spreading: Vec::new(),
    };
    walk.selection_set(selection_set)
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    /// Fragments already measured.
    fragments: HashMap<&'a str, Cost>,
    /// The fragments being measured, outermost first (a cycle is the validation's to refuse).
    spreading: Vec<&'a str>,
}

impl<'a> Walk<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet) -> Result<Cost, String> {
        let mut cost = Cost::default();
        // Planted bug gql-aliases-not-counted: the fields of a selection set counted by name, as
        // a set ("customer" is one field however many aliases ask for it).
        let mut names = HashSet::new();
        for selection in &set.items {
            cost.add(match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let below = self.selection_set(&field.node.selection_set.node)?;
                    if name.starts_with("__") {
                        cost.size = cost.size.saturating_add(below.size).saturating_add(1);
                        continue;
                    }
                    let counted = if bugs::is(Bug::GqlAliasesNotCounted) {
                        usize::from(names.insert(name))
                    } else {
                        1
                    };
                    Cost {
                        depth: below.depth + 1,
                        fields: below.fields.saturating_add(counted),
                        size: below.size.saturating_add(1),
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let mut fragment = self.fragment(name)?;
                    fragment.size = fragment.size.saturating_add(1);
                    // Planted bug gql-depth-skips-dunder-fragments: "names starting with __ are
                    // introspection", applied to fragment names too (their fields still count).
                    if name.starts_with("__") && bugs::is(Bug::GqlDepthSkipsDunderFragments) {
                        Cost {
                            depth: 0,
                            ..fragment
                        }
                    } else {
                        fragment
                    }
                }
                Selection::InlineFragment(inline) => {
                    let mut inline = self.selection_set(&inline.node.selection_set.node)?;
                    inline.size = inline.size.saturating_add(1);
                    inline
                }
            });
        }
        Ok(cost)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Cost, String> {
        if let Some(cost) = self.fragments.get(name) {
            return Ok(*cost);
        }
        // An unknown fragment, or a cycle: the validation refuses both; they cost nothing here.
        let Some(fragment) = self.document.fragments.get(name) else {
            return Ok(Cost::default());
        };
        if self.spreading.contains(&name) {
            return Ok(Cost::default());
        }
        if self.spreading.len() >= MAX_FRAGMENT_NESTING {
            return Err(format!(
                "Fragments are spread more than {MAX_FRAGMENT_NESTING} deep inside each other."
            ));
        }
        self.spreading.push(name);
        let cost = self.selection_set(&fragment.node.selection_set.node);
        self.spreading.pop();
        let cost = cost?;
        self.fragments.insert(name, cost);
        Ok(cost)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors of fields.

/// Reports a failed nullable field: `null` in `data`, and this error with the field's exact path
/// (response names and list indexes) [gql-3.2].
fn field_error(ctx: &Context<'_>, message: impl Into<String>) {
    let mut error = ctx.set_error_path(ServerError::new(message, Some(ctx.item.pos)));
    // Planted bug gql-error-path-without-index: the path written from the field names on the way
    // down, without the positions in the lists between them.
    if bugs::is(Bug::GqlErrorPathWithoutIndex) {
        error
            .path
            .retain(|segment| !matches!(segment, PathSegment::Index(_)));
    }
    ctx.add_error(error);
}

/// A database failure as a client sees it; the cause goes to the log.
fn internal(what: &str, error: impl std::fmt::Display) -> String {
    eprintln!("error: graphql: {what}: {error}");
    INTERNAL.to_string()
}

fn pool<'a>(ctx: &Context<'a>) -> &'a Pool {
    ctx.data_unchecked::<Pool>()
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, String> {
    pool.get()
        .await
        .map_err(|e| internal("no database connection", e))
}

// ---------------------------------------------------------------------------------------------
// The schema [gql-0.4].

struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// The customer with this id, or `null` when there is none [gql-0.7].
    async fn customer(&self, ctx: &Context<'_>, id: ID) -> Option<Customer> {
        // Not a number: no customer has that id.
        let id = id.parse::<i64>().ok()?;
        // Through the request's loader too: fifty aliases of `customer` are one query, not fifty
        // connections opened at once (which, on a loaded machine, took longer than a client waits).
        let loaded = ctx
            .data_unchecked::<DataLoader<CustomerLoader>>()
            .load_one(id)
            .await;
        match loaded {
            Ok(customer) => customer,
            Err(message) => {
                field_error(ctx, message.to_string());
                None
            }
        }
    }

    /// Every order (or those of `status`), newest first [gql-1.1].
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<String>,
    ) -> Option<OrderConnection> {
        match orders_page(pool(ctx), None, first, after, status).await {
            Ok(page) => Some(page),
            Err(message) => {
                field_error(ctx, message);
                None
            }
        }
    }
}

struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Inserts a customer; its id comes from the column's identity [gql-0.2] [gql-0.8].
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        email: String,
        name: String,
    ) -> Option<Customer> {
        // Planted bug gql-mutation-not-stored: "the resolver returns the new customer", from a
        // map in memory that no query reads.
        if bugs::is(Bug::GqlMutationNotStored) {
            return Some(memory().create_customer(email, name));
        }
        let result = async {
            let db = client(pool(ctx)).await?;
            let row = db
                .query_one(
                    "INSERT INTO shop_customers (email, name) VALUES ($1, $2)
                     RETURNING id, email, name, created_at",
                    &[&email, &name],
                )
                .await
                .map_err(|e| internal("createCustomer", e))?;
            Ok::<_, String>(Customer::from_row(&row))
        }
        .await;
        match result {
            Ok(customer) => Some(customer),
            Err(message) => {
                field_error(ctx, message);
                None
            }
        }
    }

    /// Inserts a `pending` order of that customer, created now; `null` and an error at
    /// `["placeOrder"]` for an unknown customer [gql-0.8].
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        total_cents: i32,
    ) -> Option<Order> {
        let unknown = || format!("There is no customer {}.", customer_id.as_str());
        let Ok(customer) = customer_id.parse::<i64>() else {
            field_error(ctx, unknown());
            return None;
        };
        let result = if bugs::is(Bug::GqlMutationNotStored) {
            place_order_in_memory(pool(ctx), customer, total_cents).await
        } else {
            place_order(pool(ctx), customer, total_cents).await
        };
        match result {
            Ok(Some(order)) => Some(order),
            Ok(None) => {
                field_error(ctx, unknown());
                None
            }
            Err(message) => {
                field_error(ctx, message);
                None
            }
        }
    }
}

/// One statement: the order is inserted only if its customer exists.
async fn place_order(
    pool: &Pool,
    customer: i64,
    total_cents: i32,
) -> Result<Option<Order>, String> {
    let db = client(pool).await?;
    let row = db
        .query_opt(
            "INSERT INTO shop_orders (customer_id, status, created_at, total_cents)
             SELECT id, 'pending', now(), $2 FROM shop_customers WHERE id = $1
             RETURNING id, customer_id, status, created_at, total_cents",
            &[&customer, &i64::from(total_cents)],
        )
        .await
        .map_err(|e| internal("placeOrder", e))?;
    Ok(row.map(|row| Order::from_row(&row)))
}

#[derive(Clone)]
struct Customer {
    id: i64,
    email: String,
    name: String,
    created_at: DateTime<Utc>,
}

impl Customer {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            email: row.get("email"),
            name: row.get("name"),
            created_at: row.get("created_at"),
        }
    }
}

const CUSTOMER_COLUMNS: &str = "id, email, name, created_at";

async fn customer_by_id(pool: &Pool, id: i64) -> Result<Option<Customer>, String> {
    let db = client(pool).await?;
    let row = db
        .query_opt(
            &format!("SELECT {CUSTOMER_COLUMNS} FROM shop_customers WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(|e| internal("customer", e))?;
    Ok(row.as_ref().map(Customer::from_row))
}

#[Object]
impl Customer {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    async fn email(&self) -> &str {
        &self.email
    }

    async fn name(&self) -> &str {
        &self.name
    }

    async fn created_at(&self) -> String {
        rfc3339(self.created_at)
    }

    /// From the loyalty service; `null` with an error when it fails, which costs this field
    /// only [gql-3.1] [gql-3.2].
    async fn loyalty_tier(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        match loyalty_tier(self.id).await {
            Ok(tier) => Ok(Some(tier)),
            // Planted bug gql-upstream-fails-query: the failure returned as the resolver's error,
            // which the library carries up to the customer (the nearest nullable parent).
            Err(message) if bugs::is(Bug::GqlUpstreamFailsQuery) => {
                Err(async_graphql::Error::new(message))
            }
            Err(message) => {
                field_error(ctx, message);
                Ok(None)
            }
        }
    }

    /// The customer's orders (or those of `status`), newest first. Non-null: when `first` is out
    /// of range the error makes the customer `null` [gql-6.2].
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<String>,
    ) -> async_graphql::Result<OrderConnection> {
        // Planted bug gql-customer-orders-ignore-status: "the customer's orders are few anyway".
        let status = status.filter(|_| !bugs::is(Bug::GqlCustomerOrdersIgnoreStatus));
        orders_page(pool(ctx), Some(self.id), first, after, status)
            .await
            .map_err(async_graphql::Error::new)
    }
}

#[derive(Clone)]
struct Order {
    id: i64,
    customer_id: i64,
    status: String,
    created_at: DateTime<Utc>,
    total_cents: i64,
    /// Only for the planted bug gql-mutation-not-stored, whose customers the database does not
    /// have: the order's customer, known already.
    customer: Option<Customer>,
}

const ORDER_COLUMNS: &str = "id, customer_id, status, created_at, total_cents";

impl Order {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            customer_id: row.get("customer_id"),
            status: row.get("status"),
            created_at: row.get("created_at"),
            total_cents: row.get("total_cents"),
            customer: None,
        }
    }
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    async fn status(&self) -> &str {
        &self.status
    }

    async fn total_cents(&self) -> async_graphql::Result<i32> {
        i32::try_from(self.total_cents).map_err(|_| {
            async_graphql::Error::new(internal(
                "totalCents",
                format!(
                    "order {} has total_cents {}, beyond Int",
                    self.id, self.total_cents
                ),
            ))
        })
    }

    async fn created_at(&self) -> String {
        rfc3339(self.created_at)
    }

    /// Through the request's DataLoader: the customers of a page are one query [gql-4.1].
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Customer> {
        if let Some(customer) = &self.customer {
            return Ok(customer.clone());
        }
        // Planted bug gql-n-plus-one: "each order fetches its customer".
        let customer = if bugs::is(Bug::GqlNPlusOne) {
            customer_by_id(pool(ctx), self.customer_id).await
        } else {
            ctx.data_unchecked::<DataLoader<CustomerLoader>>()
                .load_one(self.customer_id)
                .await
                .map_err(|e| e.to_string())
        }
        .map_err(async_graphql::Error::new)?;
        customer.ok_or_else(|| {
            async_graphql::Error::new(internal(
                "Order.customer",
                format!("order {} has no customer {}", self.id, self.customer_id),
            ))
        })
    }
}

#[derive(SimpleObject)]
struct OrderConnection {
    edges: Vec<OrderEdge>,
    page_info: PageInfo,
}

#[derive(SimpleObject)]
struct OrderEdge {
    cursor: String,
    node: Order,
}

#[derive(SimpleObject)]
struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------------------------
// Customers, loaded together.

/// Loads the customers of the orders a page resolves in one `WHERE id = ANY($1)` [gql-4.1]: one
/// loader per request, so its batches never mix requests.
struct CustomerLoader {
    pool: Pool,
}

impl Loader<i64> for CustomerLoader {
    type Value = Customer;
    type Error = Arc<String>;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Customer>, Self::Error> {
        let db = client(&self.pool).await?;
        let rows = db
            .query(
                &format!("SELECT {CUSTOMER_COLUMNS} FROM shop_customers WHERE id = ANY($1)"),
                &[&ids],
            )
            .await
            .map_err(|e| internal("customers of a page", e))?;
        Ok(rows
            .iter()
            .map(|row| (row.get("id"), Customer::from_row(row)))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Pages of orders.

/// Where a page starts: after the order with this sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Orders older than (created_at, id): a keyset cursor, which orders placed since do not
    /// move [gql-6.5].
    Key(DateTime<Utc>, i64),
    /// Planted bug gql-offset-cursor: the number of orders already listed.
    Offset(i64),
}

impl After {
    /// Opaque to the client [gql-6.3]: base64url of `micros:id` (or `offset:n`).
    fn encode(self) -> String {
        let text = match self {
            Self::Key(at, id) => format!("{}:{id}", at.timestamp_micros()),
            Self::Offset(n) => format!("offset:{n}"),
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    fn decode(cursor: &str) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
        let (left, right) = text.split_once(':')?;
        if left == "offset" {
            return right.parse().ok().filter(|n| *n >= 0).map(Self::Offset);
        }
        Some(Self::Key(
            DateTime::from_timestamp_micros(left.parse().ok()?)?,
            right.parse().ok()?,
        ))
    }
}

/// A page of orders, newest first, of one customer or all, of one status or all [gql-1.1]
/// [gql-6.1..6.4]. `Err` is the client's message for the connection's field error.
async fn orders_page(
    pool: &Pool,
    customer: Option<i64>,
    first: Option<i32>,
    after: Option<String>,
    status: Option<String>,
) -> Result<OrderConnection, String> {
    let first = i64::from(first.unwrap_or(DEFAULT_FIRST));
    // Planted bug gql-first-unbounded: only negative sizes are refused.
    let too_many = first > i64::from(MAX_FIRST) && !bugs::is(Bug::GqlFirstUnbounded);
    if first < 0 || too_many {
        return Err(format!(
            "first must be from 0 to {MAX_FIRST}; it was {first}."
        ));
    }
    let after = match after.as_deref().map(After::decode) {
        None => None,
        Some(Some(after)) => Some(after),
        Some(None) => return Err("after is not a cursor of this connection.".into()),
    };
    // Planted bug gql-offset-cursor: "page n is OFFSET n × first".
    let offsets = bugs::is(Bug::GqlOffsetCursor);

    let mut conditions = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut param = |value: Box<dyn ToSql + Sync + Send>| {
        params.push(value);
        format!("${}", params.len())
    };
    if let Some(customer) = customer {
        conditions.push(format!("customer_id = {}", param(Box::new(customer))));
    }
    if let Some(status) = status {
        conditions.push(format!("status = {}", param(Box::new(status))));
    }
    let mut offset = 0;
    match after {
        Some(After::Key(at, id)) if !offsets => {
            let at = param(Box::new(at));
            let id = param(Box::new(id));
            conditions.push(format!("(created_at, id) < ({at}, {id})"));
        }
        Some(After::Offset(n)) if offsets => offset = n,
        None => {}
        Some(_) => return Err("after is not a cursor of this connection.".into()),
    }
    // One more than the page: whether it exists is hasNextPage [gql-6.4]. Planted bug
    // gql-has-next-page-full: "a full page means there is more".
    let lookahead = i64::from(!bugs::is(Bug::GqlHasNextPageFull));
    let limit = param(Box::new(first + lookahead));
    let offset_clause = if offsets {
        format!(" OFFSET {}", param(Box::new(offset)))
    } else {
        String::new()
    };
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM shop_orders {filter}
         ORDER BY created_at DESC, id DESC LIMIT {limit}{offset_clause}"
    );
    let db = client(pool).await?;
    let params: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let mut rows = db
        .query(&sql, &params)
        .await
        .map_err(|e| internal("orders", e))?;

    let has_next_page = if lookahead == 1 {
        rows.len() as i64 > first
    } else {
        rows.len() as i64 == first && first > 0
    };
    rows.truncate(first as usize);
    let edges: Vec<OrderEdge> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let node = Order::from_row(row);
            let cursor = if offsets {
                After::Offset(offset + i as i64 + 1)
            } else {
                After::Key(node.created_at, node.id)
            };
            OrderEdge {
                cursor: cursor.encode(),
                node,
            }
        })
        .collect();
    let end_cursor = edges.last().map(|edge| edge.cursor.clone());
    Ok(OrderConnection {
        edges,
        page_info: PageInfo {
            has_next_page,
            end_cursor,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// The loyalty service.

/// `LOYALTY_URL`, read on first use (other exercises run without it), and a client with a 2 s
/// timeout for the whole exchange.
fn loyalty_service() -> Result<&'static (reqwest::Client, String), String> {
    static LOYALTY: OnceLock<Result<(reqwest::Client, String), String>> = OnceLock::new();
    LOYALTY
        .get_or_init(|| {
            let url = std::env::var("LOYALTY_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| "LOYALTY_URL is not set".to_string())?;
            // Planted bug gql-no-loyalty-timeout: the client's default, which never gives up.
            let builder = reqwest::Client::builder().no_proxy();
            let builder = if bugs::is(Bug::GqlNoLoyaltyTimeout) {
                builder
            } else {
                builder.timeout(LOYALTY_TIMEOUT)
            };
            let client = builder
                .build()
                .map_err(|e| format!("cannot build the loyalty service client: {e}"))?;
            Ok((client, url.trim().trim_end_matches('/').to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `GET {LOYALTY_URL}/tiers/{id}`: a 2xx `{"tier": "..."}` is the tier; anything else (another
/// status, another body, no connection, no answer in 2 s) is logged and answered with words a
/// client may see [gql-3.3].
async fn loyalty_tier(customer: i64) -> Result<String, String> {
    let (client, base) = match loyalty_service() {
        Ok(service) => service,
        Err(reason) => {
            eprintln!("error: loyalty tier of customer {customer}: {reason}");
            return Err(LOYALTY_UNAVAILABLE.into());
        }
    };
    let url = format!("{base}/tiers/{customer}");
    let failed = |detail: String| {
        eprintln!("error: loyalty tier of customer {customer}: GET {url}: {detail}");
        // Planted bug gql-upstream-leak: "a helpful message", with everything the upstream said.
        if bugs::is(Bug::GqlUpstreamLeak) {
            return format!("{LOYALTY_UNAVAILABLE}: GET {url}: {detail}");
        }
        LOYALTY_UNAVAILABLE.to_string()
    };
    let response = client.get(&url).send().await.map_err(|e| {
        // Planted bug gql-transport-error-leaks: statuses were thought through, but an error
        // with no response is passed on as the library wrote it (reqwest's names the URL).
        if bugs::is(Bug::GqlTransportErrorLeaks) {
            eprintln!("error: loyalty tier of customer {customer}: GET {url}: no answer: {e}");
            return format!("{LOYALTY_UNAVAILABLE}: {e}");
        }
        failed(format!("no answer: {e}"))
    })?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| failed(format!("status {status}, body unread: {e}")))?;
    if !status.is_success() {
        return Err(failed(format!("status {status}, body {body}")));
    }
    match serde_json::from_str::<Value>(&body) {
        Ok(Value::Object(mut fields)) => match fields.remove("tier") {
            Some(Value::String(tier)) => Ok(tier),
            _ => Err(failed(format!(
                "status {status}, no \"tier\" string in {body}"
            ))),
        },
        _ => Err(failed(format!(
            "status {status}, not a JSON object: {body}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Planted bug gql-mutation-not-stored.

/// Rows the mutations made, in memory only: no query sees them.
#[derive(Default)]
struct Memory {
    customers: Mutex<HashMap<i64, Customer>>,
    next_id: AtomicI64,
}

fn memory() -> &'static Memory {
    static MEMORY: OnceLock<Memory> = OnceLock::new();
    MEMORY.get_or_init(|| Memory {
        next_id: AtomicI64::new(90_000_000),
        ..Memory::default()
    })
}

impl Memory {
    fn id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    fn create_customer(&self, email: String, name: String) -> Customer {
        let customer = Customer {
            id: self.id(),
            email,
            name,
            created_at: Utc::now(),
        };
        self.customers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(customer.id, customer.clone());
        customer
    }
}

/// The order of a customer of the database or of [`Memory`], returned and forgotten.
async fn place_order_in_memory(
    pool: &Pool,
    customer: i64,
    total_cents: i32,
) -> Result<Option<Order>, String> {
    let known = memory()
        .customers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&customer)
        .cloned();
    let customer = match known {
        Some(customer) => customer,
        None => match customer_by_id(pool, customer).await? {
            Some(customer) => customer,
            None => return Ok(None),
        },
    };
    Ok(Some(Order {
        id: memory().id(),
        customer_id: customer.id,
        status: "pending".into(),
        created_at: Utc::now(),
        total_cents: i64::from(total_cents),
        customer: Some(customer),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (depth, fields, expanded size) of the document's only operation.
    fn cost_of(query: &str) -> (usize, usize, usize) {
        let document = async_graphql::parser::parse_query(query).unwrap();
        let op = operation(&document, None).unwrap();
        let c = cost(&document, &op.selection_set.node).unwrap();
        (c.depth, c.fields, c.size)
    }

    #[test]
    fn depth_and_fields_follow_the_readme() {
        let c = cost_of(r#"{ customer(id: "1") { orders { pageInfo { hasNextPage } } } }"#);
        assert_eq!((c.0, c.1), (4, 4));
        let c = cost_of(r#"{ a: customer(id: "1") { id } b: customer(id: "1") { id } }"#);
        assert_eq!(c.1, 4);
    }

    #[test]
    fn fragments_count_where_used_and_add_no_depth() {
        let c = cost_of(
            r#"query { customer(id: "1") { ...F ...F ... on Customer { ...F } } }
               fragment F on Customer { id name }"#,
        );
        assert_eq!((c.0, c.1), (2, 7));
        // A fragment named like introspection is still counted.
        let c = cost_of(
            r#"{ customer(id: "1") { ...__schema } }
               fragment __schema on Customer { orders { edges { node { id } } } }"#,
        );
        assert_eq!((c.0, c.1), (5, 5));
        // Introspection is left out of both limits, not of the expanded size.
        assert_eq!(
            cost_of("{ __typename __schema { types { name } } }"),
            (0, 0, 4)
        );
    }

    #[test]
    fn fragments_spread_exponentially_are_measured_once() {
        let mut query = String::from("{ ...F0 }\n");
        for i in 0..40 {
            query.push_str(&format!(
                "fragment F{i} on Query {{ ...F{} ...F{} }}\n",
                i + 1,
                i + 1
            ));
        }
        query.push_str("fragment F40 on Query { __typename }");
        let (depth, fields, size) = cost_of(&query);
        assert_eq!((depth, fields), (0, 0));
        assert!(size > MAX_SELECTIONS);
    }

    #[test]
    fn graphiql_introspection_fits() {
        let (depth, fields, size) = cost_of(INTROSPECTION);
        assert_eq!((depth, fields), (0, 0));
        assert!(size < MAX_SELECTIONS / 10, "{size}");
    }

    /// GraphiQL's introspection query (graphql-js `getIntrospectionQuery()`).
    const INTROSPECTION: &str = r#"
        query IntrospectionQuery {
          __schema {
            queryType { name } mutationType { name } subscriptionType { name }
            types { ...FullType }
            directives { name description locations args { ...InputValue } }
          }
        }
        fragment FullType on __Type {
          kind name description
          fields(includeDeprecated: true) {
            name description args { ...InputValue } type { ...TypeRef }
            isDeprecated deprecationReason
          }
          inputFields { ...InputValue }
          interfaces { ...TypeRef }
          enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
          possibleTypes { ...TypeRef }
        }
        fragment InputValue on __InputValue {
          name description type { ...TypeRef } defaultValue
        }
        fragment TypeRef on __Type {
          kind name
          ofType { kind name ofType { kind name ofType { kind name ofType { kind name
            ofType { kind name ofType { kind name ofType { kind name } } } } } } }
        }
    "#;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let at = DateTime::from_timestamp_micros(1_740_830_400_123_456).unwrap();
        let cursor = After::Key(at, 10_000_007).encode();
        assert_eq!(After::decode(&cursor), Some(After::Key(at, 10_000_007)));
        assert_eq!(After::decode("nonsense"), None);
        assert_eq!(After::decode(""), None);
    }

    #[test]
    fn accept_negotiation() {
        let negotiate = |accept: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(accept) = accept {
                headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            }
            MediaType::negotiate(&headers)
        };
        assert_eq!(negotiate(None), MediaType::GraphqlResponseJson);
        assert_eq!(negotiate(Some("*/*")), MediaType::GraphqlResponseJson);
        assert_eq!(negotiate(Some("application/json")), MediaType::Json);
        assert_eq!(
            negotiate(Some("application/graphql-response+json")),
            MediaType::GraphqlResponseJson
        );
        assert_eq!(
            negotiate(Some(
                "application/json, application/graphql-response+json;q=0.9"
            )),
            MediaType::GraphqlResponseJson
        );
        assert_eq!(
            negotiate(Some(
                "application/graphql-response+json;q=0, application/json"
            )),
            MediaType::Json
        );
    }
}
