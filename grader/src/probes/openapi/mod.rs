//! The learner's OpenAPI 3.1 document, shared by the contract probes (`openapi_document`,
//! `contract`, `contract_diff`): fetched from the service, validated against the OpenAPI
//! Initiative's published schema, indexed by operation, and used to judge responses
//! ([`conform`]) and to compare two revisions ([`diff`]).
//!
//! Two readings of one document, each for what it is good at: `oas3`'s typed model lists the
//! operations (method, path template, `operationId`, `deprecated`), and the raw JSON keeps the
//! JSON pointers that schema validation needs (a response's schema is validated in place, so its
//! `$ref`s into `components` resolve against the document itself).

pub mod conform;
pub mod diff;

use std::sync::LazyLock;

use serde_json::Value;

use crate::engine::http::{OutgoingRequest, Response};
use crate::engine::{fail, CheckContext, Failure};

/// The OpenAPI Initiative's schema for 3.1 documents (`https://spec.openapis.org/oas/3.1/schema/
/// 2022-10-07`, Apache-2.0, from github.com/OAI/OpenAPI-Specification `schemas/v3.1/schema.json`).
/// It checks the document's structure and leaves Schema Objects to the JSON Schema dialect.
const OAS_31_SCHEMA: &str = include_str!("oas-3.1-schema-2022-10-07.json");

/// Media types a document may be served as: JSON, and the two OpenAPI names for it.
pub const DOCUMENT_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/openapi+json",
    "application/vnd.oai.openapi+json",
];

/// How many schema errors a message quotes; the first few say what is wrong.
const ERRORS_SHOWN: usize = 5;

static OAS_31_VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(OAS_31_SCHEMA)
        .map_err(|e| format!("the embedded OpenAPI 3.1 schema is not JSON: {e}"))?;
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .map_err(|e| format!("the embedded OpenAPI 3.1 schema does not compile: {e}"))
});

/// One operation of a document.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Upper case, e.g. `GET`.
    pub method: String,
    /// The path template as the document writes it, e.g. `/listings/{listingId}`.
    pub path: String,
    /// JSON pointer to the operation object in the raw document (after a path item's `$ref`).
    pub pointer: String,
    pub operation_id: Option<String>,
    pub deprecated: bool,
}

impl Operation {
    /// `GET /listings/{}`: the method and the path with parameter names left out, so documents
    /// that name a parameter differently describe the same operation.
    pub fn key(&self) -> String {
        operation_key(&self.method, &self.path)
    }

    pub fn shown(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A fetched, valid OpenAPI 3.1 document.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where it was read, e.g. `/openapi.json`.
    pub path: String,
    pub value: Value,
    pub operations: Vec<Operation>,
}

impl Document {
    /// `info.version`, if the document has one.
    pub fn version(&self) -> Option<&str> {
        self.value.pointer("/info/version").and_then(Value::as_str)
    }

    /// The operation a request for `method` and `path` (no query) is routed to: the template
    /// whose segments match, literal segments preferred over parameters, as OpenAPI 3.1 §4.8.8
    /// says concrete paths are matched first.
    pub fn operation_for(&self, method: &str, path: &str) -> Option<&Operation> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        self.operations
            .iter()
            .filter(|op| op.method.eq_ignore_ascii_case(method))
            .filter_map(|op| {
                let template: Vec<&str> = op.path.trim_end_matches('/').split('/').collect();
                if template.len() != segments.len() {
                    return None;
                }
                let mut parameters = 0;
                for (t, s) in template.iter().zip(&segments) {
                    if is_parameter(t) {
                        if s.is_empty() {
                            return None;
                        }
                        parameters += 1;
                    } else if t != s {
                        return None;
                    }
                }
                Some((parameters, op))
            })
            .min_by_key(|(parameters, _)| *parameters)
            .map(|(_, op)| op)
    }

    /// Fails unless `info.version` is `version`: the revision the exercise reads here.
    pub fn require_version(&self, version: &str) -> Result<(), Failure> {
        if self.version() == Some(version) {
            return Ok(());
        }
        Err(fail(
            format!(
                "{}: info.version is {}, and this revision is {version}",
                self.path,
                self.version()
                    .map_or("absent".into(), |v| format!("\"{v}\""))
            ),
            format!("\"info\": {{\"version\": \"{version}\"}}"),
            format!("info.version {}", self.version().unwrap_or("absent")),
            Vec::new(),
        ))
    }

    /// The operation with this key (see [`operation_key`]).
    pub fn operation_by_key(&self, key: &str) -> Option<&Operation> {
        self.operations.iter().find(|op| op.key() == key)
    }
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// `METHOD /path` with every `{name}` written `{}`.
pub fn operation_key(method: &str, path: &str) -> String {
    let path: Vec<&str> = path
        .trim_end_matches('/')
        .split('/')
        .map(|s| if is_parameter(s) { "{}" } else { s })
        .collect();
    format!("{} {}", method.to_ascii_uppercase(), path.join("/"))
}

/// Escapes one JSON pointer token (RFC 6901 §3).
pub fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Follows a local `$ref` (`#/components/...`) from `pointer`, a few hops at most: the pointer of
/// the object that holds the content. A reference elsewhere (another file, a URL) is left as it
/// is: documents here are self-contained.
pub fn resolve_pointer(doc: &Value, pointer: &str) -> String {
    let mut at = pointer.to_string();
    for _ in 0..8 {
        match doc
            .pointer(&at)
            .and_then(|v| v.get("$ref"))
            .and_then(Value::as_str)
        {
            Some(r) if r.starts_with("#/") || r == "#" => at = r[1..].to_string(),
            _ => break,
        }
    }
    at
}

/// Reads a document from the service and checks it is an OpenAPI 3.1 document the grader can
/// hold the service to. Every way it can fall short is the service's failure.
pub async fn fetch(ctx: &mut CheckContext<'_>, path: &str) -> Result<Document, Failure> {
    let request = OutgoingRequest {
        method: "GET".into(),
        url: ctx.url(path)?,
        headers: vec![("Accept".into(), "application/json".into())],
        body: None,
    };
    let label = format!("read the OpenAPI document {path}");
    let resp = ctx.send(&label, request).await?;
    read(path, &resp)
}

/// [`fetch`]'s judgement of the response.
pub fn read(path: &str, resp: &Response) -> Result<Document, Failure> {
    if resp.status != 200 {
        return Err(fail(
            format!(
                "GET {path} answered {}, not the OpenAPI document",
                resp.status
            ),
            "status 200 with the document as JSON",
            format!("status {}", resp.status),
            Vec::new(),
        ));
    }
    let media = conform::media_type(resp.header("content-type").as_deref());
    if !DOCUMENT_MEDIA_TYPES.contains(&media.as_str()) {
        return Err(fail(
            format!(
                "GET {path} answered Content-Type {}, not JSON",
                if media.is_empty() { "(none)" } else { &media }
            ),
            format!("Content-Type: one of {}", DOCUMENT_MEDIA_TYPES.join(", ")),
            format!(
                "Content-Type: {}",
                resp.header("content-type").unwrap_or_default()
            ),
            Vec::new(),
        ));
    }
    let value: Value = serde_json::from_slice(&resp.body).map_err(|e| {
        fail(
            format!("GET {path}: the document is not JSON ({e})"),
            "an OpenAPI 3.1 document as JSON",
            crate::engine::assert::shorten(&resp.text(), 200),
            Vec::new(),
        )
    })?;
    let version = value.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !is_openapi_31(version) {
        return Err(fail(
            format!(
                "GET {path}: the document says \"openapi\": {}, not 3.1",
                value
                    .get("openapi")
                    .map_or("(missing)".to_string(), Value::to_string)
            ),
            "\"openapi\": \"3.1.0\" (or \"3.1.1\")",
            format!(
                "\"openapi\": {}",
                value.get("openapi").map_or("(missing)".into(), Value::to_string)
            ),
            vec![
                "3.0 is another format: `nullable`, a boolean `exclusiveMinimum` and a schema's `example` are 3.0; 3.1 schemas are JSON Schema 2020-12".into(),
            ],
        ));
    }
    let validator = OAS_31_VALIDATOR
        .as_ref()
        .map_err(|e| Failure::Error(e.clone()))?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            format!(
                "at {}: {}",
                json_path(&e.instance_path().to_string()),
                crate::engine::assert::shorten(&e.to_string(), 200)
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(fail(
            format!(
                "GET {path}: the document is not valid OpenAPI 3.1 ({} schema error{}; the first: {})",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                errors[0]
            ),
            "a document valid against https://spec.openapis.org/oas/3.1/schema/2022-10-07",
            format!("{} schema error(s)", errors.len()),
            errors.into_iter().take(ERRORS_SHOWN).collect(),
        ));
    }
    let operations = index(&value).map_err(|e| {
        // The published schema accepted it, so a model that cannot read it is the grader's
        // shortcoming, not the learner's.
        Failure::Error(format!(
            "GET {path}: the document is valid OpenAPI 3.1, but the grader's OpenAPI reader (oas3) could not read it: {e}"
        ))
    })?;
    Ok(Document {
        path: path.to_string(),
        value,
        operations,
    })
}

fn is_openapi_31(version: &str) -> bool {
    let mut parts = version.splitn(3, '.');
    parts.next() == Some("3")
        && parts.next() == Some("1")
        && parts
            .next()
            .and_then(|rest| rest.split('-').next())
            .is_some_and(|patch| !patch.is_empty() && patch.chars().all(|c| c.is_ascii_digit()))
}

/// The document's operations, listed by `oas3`, each with the pointer to its raw object. A path
/// item may be a `$ref` (to `components/pathItems`, OpenAPI 3.1 §4.8.9), which `oas3`'s model
/// keeps as a reference with no operations: it is followed here, and the item it names is read
/// by the same model.
fn index(value: &Value) -> Result<Vec<Operation>, String> {
    oas3::from_json(value.to_string()).map_err(|e| e.to_string())?;
    let mut operations = Vec::new();
    let Some(paths) = value.get("paths").and_then(Value::as_object) else {
        return Ok(operations);
    };
    for path in paths.keys() {
        let item_at = resolve_pointer(value, &format!("/paths/{}", pointer_token(path)));
        let Some(raw) = value.pointer(&item_at) else {
            continue;
        };
        let item: oas3::spec::PathItem =
            serde_json::from_value(raw.clone()).map_err(|e| format!("{path}: {e}"))?;
        for (method, op) in item.methods() {
            let method = method.as_str().to_ascii_uppercase();
            operations.push(Operation {
                pointer: format!("{item_at}/{}", method.to_ascii_lowercase()),
                method,
                path: path.clone(),
                operation_id: op.operation_id.clone(),
                deprecated: op.deprecated.unwrap_or(false),
            });
        }
    }
    operations.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    Ok(operations)
}

/// Where a Schema Object uses a keyword of OpenAPI 3.0's schema dialect that JSON Schema 2020-12
/// reads differently: `nullable` (an unknown word in 2020-12: it allows nothing, so `null` stays
/// invalid), and a boolean `exclusiveMinimum` or `exclusiveMaximum` (numbers in 2020-12). The
/// published 3.1 schema does not look inside Schema Objects, so a document carried over from 3.0
/// passes it. Each finding is the keyword's JSONPath.
pub fn dialect_30_keywords(doc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut schemas: Vec<(String, &Value)> = Vec::new();
    collect_schemas(doc, String::new(), &mut schemas, 0);
    if let Some(map) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, schema) in map {
            schemas.push((
                format!("/components/schemas/{}", pointer_token(name)),
                schema,
            ));
        }
    }
    for (at, schema) in schemas {
        scan_schema(schema, &at, &mut found, 0);
    }
    found.sort();
    found.dedup();
    found
}

/// Every value under a `schema` key outside Schema Objects (parameters, headers, media types).
fn collect_schemas<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>, depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{at}/{}", pointer_token(k));
                if k == "schema" && child.is_object() {
                    out.push((here, child));
                } else if !(at.is_empty() && k == "components") || child.get("schemas").is_none() {
                    collect_schemas(child, here, out, depth + 1);
                } else {
                    // components: its `schemas` are listed by the caller; the rest (responses,
                    // parameters, headers, request bodies) may hold `schema` keys.
                    if let Value::Object(parts) = child {
                        for (part, inner) in parts.iter().filter(|(p, _)| *p != "schemas") {
                            collect_schemas(
                                inner,
                                format!("{here}/{}", pointer_token(part)),
                                out,
                                depth + 2,
                            );
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_schemas(child, format!("{at}/{i}"), out, depth + 1);
            }
        }
        _ => {}
    }
}

/// The 3.0 keywords inside one Schema Object and its subschemas. Under `properties` (and the
/// other maps of subschemas) the keys are names, not keywords: a property called `nullable` is
/// a schema, never a boolean.
fn scan_schema(schema: &Value, at: &str, found: &mut Vec<String>, depth: usize) {
    if depth > 64 {
        return;
    }
    let Some(map) = schema.as_object() else {
        return;
    };
    for (k, v) in map {
        let here = format!("{at}/{}", pointer_token(k));
        match k.as_str() {
            "nullable" if v.is_boolean() => found.push(json_path(&here)),
            "exclusiveMinimum" | "exclusiveMaximum" if v.is_boolean() => {
                found.push(json_path(&here))
            }
            "properties" | "patternProperties" | "$defs" | "dependentSchemas" => {
                if let Some(children) = v.as_object() {
                    for (name, child) in children {
                        scan_schema(
                            child,
                            &format!("{here}/{}", pointer_token(name)),
                            found,
                            depth + 1,
                        );
                    }
                }
            }
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if let Some(children) = v.as_array() {
                    for (i, child) in children.iter().enumerate() {
                        scan_schema(child, &format!("{here}/{i}"), found, depth + 1);
                    }
                }
            }
            "items"
            | "not"
            | "additionalProperties"
            | "contains"
            | "if"
            | "then"
            | "else"
            | "propertyNames"
            | "unevaluatedItems"
            | "unevaluatedProperties" => scan_schema(v, &here, found, depth + 1),
            _ => {}
        }
    }
}

/// A JSON pointer (`/items/0/price_cents`) as the JSONPath learners read elsewhere in reports
/// (`$.items[0].price_cents`).
pub fn json_path(pointer: &str) -> String {
    let mut out = String::from("$");
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else if token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push('.');
            out.push_str(&token);
        } else {
            out.push_str(&format!("[{}]", Value::String(token)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(value: Value) -> Document {
        Document {
            path: "/openapi.json".into(),
            operations: index(&value).unwrap(),
            value,
        }
    }

    fn listings() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1.0.0"},
            "paths": {
                "/listings": {"get": {"operationId": "list", "responses": {"200": {"description": "ok"}}}},
                "/listings/{listingId}": {"get": {"operationId": "get", "responses": {"200": {"description": "ok"}}}},
                "/listings/special": {"get": {"operationId": "special", "deprecated": true, "responses": {"200": {"description": "ok"}}}}
            }
        })
    }

    #[test]
    fn the_published_schema_compiles_and_accepts_a_small_document() {
        let validator = OAS_31_VALIDATOR.as_ref().unwrap();
        assert!(validator.is_valid(&listings()));
        let mut broken = listings();
        broken["paths"]["/listings"]["get"]["responses"]["200"] = json!({"content": {}});
        assert!(
            !validator.is_valid(&broken),
            "a response needs a description"
        );
    }

    #[test]
    fn a_concrete_path_finds_its_operation_literal_segments_first() {
        let d = doc(listings());
        assert_eq!(
            d.operation_for("GET", "/listings/abc")
                .unwrap()
                .operation_id
                .as_deref(),
            Some("get")
        );
        assert_eq!(
            d.operation_for("get", "/listings/special")
                .unwrap()
                .operation_id
                .as_deref(),
            Some("special")
        );
        assert!(d.operation_for("DELETE", "/listings/abc").is_none());
        assert!(d.operation_for("GET", "/listings/a/b").is_none());
        assert!(
            d.operation_for("GET", "/listings/special")
                .unwrap()
                .deprecated
        );
    }

    #[test]
    fn a_path_item_behind_a_ref_is_followed() {
        let mut value = listings();
        value["paths"]["/items/{id}"] = json!({"$ref": "#/components/pathItems/Item"});
        value["components"] = json!({"pathItems": {"Item": {"delete": {"operationId": "drop", "responses": {"204": {"description": "gone"}}}}}});
        let d = doc(value);
        let op = d.operation_for("DELETE", "/items/7").unwrap();
        assert_eq!(op.operation_id.as_deref(), Some("drop"));
        assert_eq!(op.pointer, "/components/pathItems/Item/delete");
    }

    #[test]
    fn operation_keys_ignore_parameter_names() {
        assert_eq!(
            operation_key("get", "/listings/{id}/price"),
            "GET /listings/{}/price"
        );
        assert_eq!(
            doc(listings())
                .operation_by_key("GET /listings/{}")
                .unwrap()
                .path,
            "/listings/{listingId}"
        );
    }

    #[test]
    fn only_3_1_versions_are_3_1() {
        for ok in ["3.1.0", "3.1.1", "3.1.0-rc1"] {
            assert!(is_openapi_31(ok), "{ok}");
        }
        for not in ["3.0.3", "3.1", "3.2.0", "", "3.1.x"] {
            assert!(!is_openapi_31(not), "{not}");
        }
    }

    #[test]
    fn keywords_of_the_3_0_dialect_are_found_inside_schemas_only() {
        let doc = json!({
            "openapi": "3.1.0",
            "paths": {"/x": {"get": {"parameters": [{"name": "q", "in": "query", "schema": {"type": "integer", "exclusiveMinimum": true}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "nullable": {"type": "boolean"},
                    "detail": {"type": "string", "nullable": true}
                }}}}}}}}},
            "components": {"schemas": {"P": {"allOf": [{"type": "object", "properties": {"n": {"type": "number", "exclusiveMaximum": 5}}}, {"nullable": false}]}}}
        });
        assert_eq!(
            dialect_30_keywords(&doc),
            [
                "$.components.schemas.P.allOf[1].nullable",
                "$.paths[\"/x\"].get.parameters[0].schema.exclusiveMinimum",
                "$.paths[\"/x\"].get.responses[200].content[\"application/json\"].schema.properties.detail.nullable",
            ]
        );
        assert!(dialect_30_keywords(&listings()).is_empty());
    }

    #[test]
    fn pointers_read_as_json_paths() {
        assert_eq!(json_path(""), "$");
        assert_eq!(json_path("/items/0/price_cents"), "$.items[0].price_cents");
        assert_eq!(json_path("/a~1b"), "$[\"a/b\"]");
    }
}
