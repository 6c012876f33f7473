//! Breaking changes between two revisions of an OpenAPI 3.1 document, each named by the rule id
//! oasdiff's breaking-change checker gives it (<https://github.com/oasdiff/oasdiff>,
//! `checker/rules.go`), so a learner can look a finding up in oasdiff's documentation and
//! reproduce it with `oasdiff breaking`. Only rules oasdiff rates ERR are reported: its WARN
//! rules (a response enum value added, a request property removed, ...) are judgement calls a
//! grader should not fail anyone for.
//!
//! The comparison is native, on `serde_json::Value`, and tolerant: documents come from learners'
//! services, so any lookup may miss. A piece that cannot be read (a `$ref` to another file, a
//! cycle, a value of the wrong JSON type) is left out of the comparison rather than reported, so
//! a malformed document yields fewer findings, never a panic and never a false alarm about what
//! could not be read. Every walk is bounded (`$ref` hops, schema depth, a budget of schema
//! comparisons), so no input loops forever or fans out without end.
//!
//! Where this module knowingly departs from oasdiff:
//! - A path or operation removed while the base marked it `deprecated: true` is reported as
//!   `api-path-removed-before-sunset` / `api-removed-before-sunset`, whatever its `x-sunset`:
//!   oasdiff rates a deprecated removal without a sunset INFO and one past its sunset not at all,
//!   but the published contract a learner is held to has no sunset to honour.
//! - A schema without `type` that has `properties` or `required` is read as an object, one with
//!   `items` as an array: documents often leave `type: object` implicit, and reading such a schema
//!   as "any value" would make adding the obvious `type` a breaking change.
//! - Nullability and the other types are judged apart: `["string", "null"]` becoming `"string"` is
//!   `...-became-not-nullable` only, and `type-changed` looks at the non-null types alone.
//! - Header parameters and response headers match case-insensitively, as HTTP header names do,
//!   and a response header named `Content-Type` is ignored, as OpenAPI 3.1 says it shall be;
//!   oasdiff compares response headers by their exact name.
//!
//! Not compared, because a flat reading of schemas cannot judge them soundly: the branches of
//! `oneOf`/`anyOf`/`not` (a node that has them is compared on its own keywords, and the presence
//! and requiredness of its properties are not judged, since a branch may hold them); parameter
//! and header schemas; response-side constraints (a maximum raised, ...); `format`, `const`,
//! `pattern`, `minItems`/`maxItems`, `additionalProperties`; security; `x-stability-level`.

use std::collections::{BTreeMap, BTreeSet};
use std::ptr;

use serde_json::{Map, Value};

/// One breaking change between two revisions of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakingChange {
    /// oasdiff's rule id, e.g. `response-required-property-removed`.
    pub rule: &'static str,
    /// The operation as `METHOD /path` with the base document's path template, e.g. `GET /listings/{id}`.
    pub operation: String,
    /// Plain words on what changed, naming where, e.g. "the 200 response (application/json): property `items[].currency` was required and is gone".
    pub detail: String,
}

const API_PATH_REMOVED_WITHOUT_DEPRECATION: &str = "api-path-removed-without-deprecation";
const API_PATH_REMOVED_BEFORE_SUNSET: &str = "api-path-removed-before-sunset";
const API_REMOVED_WITHOUT_DEPRECATION: &str = "api-removed-without-deprecation";
const API_REMOVED_BEFORE_SUNSET: &str = "api-removed-before-sunset";
const RESPONSE_SUCCESS_STATUS_REMOVED: &str = "response-success-status-removed";
const RESPONSE_MEDIA_TYPE_REMOVED: &str = "response-media-type-removed";
const REQUIRED_RESPONSE_HEADER_REMOVED: &str = "required-response-header-removed";
const RESPONSE_HEADER_BECAME_OPTIONAL: &str = "response-header-became-optional";
const REQUEST_BODY_ADDED_REQUIRED: &str = "request-body-added-required";
const REQUEST_BODY_BECAME_REQUIRED: &str = "request-body-became-required";
const REQUEST_BODY_MEDIA_TYPE_REMOVED: &str = "request-body-media-type-removed";
const NEW_REQUIRED_REQUEST_PARAMETER: &str = "new-required-request-parameter";
const NEW_REQUIRED_REQUEST_DEFAULT_PARAMETER_TO_EXISTING_PATH: &str =
    "new-required-request-default-parameter-to-existing-path";
const REQUEST_PARAMETER_BECAME_REQUIRED: &str = "request-parameter-became-required";
const NEW_REQUIRED_REQUEST_PROPERTY: &str = "new-required-request-property";
const NEW_REQUIRED_REQUEST_PROPERTY_WITH_DEFAULT: &str =
    "new-required-request-property-with-default";
const REQUEST_PROPERTY_BECAME_REQUIRED: &str = "request-property-became-required";
const REQUEST_PROPERTY_BECAME_REQUIRED_WITH_DEFAULT: &str =
    "request-property-became-required-with-default";
const RESPONSE_REQUIRED_PROPERTY_REMOVED: &str = "response-required-property-removed";
const RESPONSE_PROPERTY_BECAME_OPTIONAL: &str = "response-property-became-optional";

/// oasdiff names a schema change at the top of a body `...-body-...` and one inside it
/// `...-property-...`; the two ids of one rule travel together so no call site can mix them up.
#[derive(Clone, Copy)]
struct SchemaRule {
    body: &'static str,
    property: &'static str,
}

impl SchemaRule {
    fn at(self, path: &str) -> &'static str {
        if path.is_empty() {
            self.body
        } else {
            self.property
        }
    }
}

const REQUEST_TYPE_CHANGED: SchemaRule = SchemaRule {
    body: "request-body-type-changed",
    property: "request-property-type-changed",
};
const REQUEST_BECAME_NOT_NULLABLE: SchemaRule = SchemaRule {
    body: "request-body-became-not-nullable",
    property: "request-property-became-not-nullable",
};
const REQUEST_ENUM_VALUE_REMOVED: SchemaRule = SchemaRule {
    body: "request-body-enum-value-removed",
    property: "request-property-enum-value-removed",
};
const REQUEST_BECAME_ENUM: SchemaRule = SchemaRule {
    body: "request-body-became-enum",
    property: "request-property-became-enum",
};
const REQUEST_MAX_DECREASED: SchemaRule = SchemaRule {
    body: "request-body-max-decreased",
    property: "request-property-max-decreased",
};
const REQUEST_EXCLUSIVE_MAX_DECREASED: SchemaRule = SchemaRule {
    body: "request-body-exclusive-max-decreased",
    property: "request-property-exclusive-max-decreased",
};
const REQUEST_MIN_INCREASED: SchemaRule = SchemaRule {
    body: "request-body-min-increased",
    property: "request-property-min-increased",
};
const REQUEST_EXCLUSIVE_MIN_INCREASED: SchemaRule = SchemaRule {
    body: "request-body-exclusive-min-increased",
    property: "request-property-exclusive-min-increased",
};
const REQUEST_MAX_LENGTH_DECREASED: SchemaRule = SchemaRule {
    body: "request-body-max-length-decreased",
    property: "request-property-max-length-decreased",
};
const REQUEST_MIN_LENGTH_INCREASED: SchemaRule = SchemaRule {
    body: "request-body-min-length-increased",
    property: "request-property-min-length-increased",
};
const RESPONSE_TYPE_CHANGED: SchemaRule = SchemaRule {
    body: "response-body-type-changed",
    property: "response-property-type-changed",
};
/// oasdiff's name for a response type that grew a superset of the base's (integer to number):
/// as breaking as any other change, but a separate id.
const RESPONSE_TYPE_GENERALIZED: SchemaRule = SchemaRule {
    body: "response-body-type-generalized",
    property: "response-property-type-generalized",
};
const RESPONSE_BECAME_NULLABLE: SchemaRule = SchemaRule {
    body: "response-body-became-nullable",
    property: "response-property-became-nullable",
};

/// Every rule id this module can report, for documentation and tests.
pub const RULES: &[&str] = &[
    API_PATH_REMOVED_WITHOUT_DEPRECATION,
    API_PATH_REMOVED_BEFORE_SUNSET,
    API_REMOVED_WITHOUT_DEPRECATION,
    API_REMOVED_BEFORE_SUNSET,
    RESPONSE_SUCCESS_STATUS_REMOVED,
    RESPONSE_MEDIA_TYPE_REMOVED,
    REQUIRED_RESPONSE_HEADER_REMOVED,
    RESPONSE_HEADER_BECAME_OPTIONAL,
    REQUEST_BODY_ADDED_REQUIRED,
    REQUEST_BODY_BECAME_REQUIRED,
    REQUEST_BODY_MEDIA_TYPE_REMOVED,
    NEW_REQUIRED_REQUEST_PARAMETER,
    NEW_REQUIRED_REQUEST_DEFAULT_PARAMETER_TO_EXISTING_PATH,
    REQUEST_PARAMETER_BECAME_REQUIRED,
    NEW_REQUIRED_REQUEST_PROPERTY,
    NEW_REQUIRED_REQUEST_PROPERTY_WITH_DEFAULT,
    REQUEST_PROPERTY_BECAME_REQUIRED,
    REQUEST_PROPERTY_BECAME_REQUIRED_WITH_DEFAULT,
    REQUEST_TYPE_CHANGED.body,
    REQUEST_TYPE_CHANGED.property,
    REQUEST_BECAME_NOT_NULLABLE.body,
    REQUEST_BECAME_NOT_NULLABLE.property,
    REQUEST_ENUM_VALUE_REMOVED.body,
    REQUEST_ENUM_VALUE_REMOVED.property,
    REQUEST_BECAME_ENUM.body,
    REQUEST_BECAME_ENUM.property,
    REQUEST_MAX_DECREASED.body,
    REQUEST_MAX_DECREASED.property,
    REQUEST_EXCLUSIVE_MAX_DECREASED.body,
    REQUEST_EXCLUSIVE_MAX_DECREASED.property,
    REQUEST_MIN_INCREASED.body,
    REQUEST_MIN_INCREASED.property,
    REQUEST_EXCLUSIVE_MIN_INCREASED.body,
    REQUEST_EXCLUSIVE_MIN_INCREASED.property,
    REQUEST_MAX_LENGTH_DECREASED.body,
    REQUEST_MAX_LENGTH_DECREASED.property,
    REQUEST_MIN_LENGTH_INCREASED.body,
    REQUEST_MIN_LENGTH_INCREASED.property,
    RESPONSE_REQUIRED_PROPERTY_REMOVED,
    RESPONSE_PROPERTY_BECAME_OPTIONAL,
    RESPONSE_TYPE_CHANGED.body,
    RESPONSE_TYPE_CHANGED.property,
    RESPONSE_TYPE_GENERALIZED.body,
    RESPONSE_TYPE_GENERALIZED.property,
    RESPONSE_BECAME_NULLABLE.body,
    RESPONSE_BECAME_NULLABLE.property,
];

/// The operations a path item can hold (OpenAPI 3.1 §4.8.9), in a fixed order.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Enough for any sane chain of `$ref`s; a longer one is a loop.
const MAX_REF_HOPS: usize = 32;
/// How deep nested properties and items are followed; deeper is almost surely recursion.
const MAX_SCHEMA_DEPTH: usize = 24;
/// How deep `allOf` and `$ref` nest while one schema is read.
const MAX_MERGE_DEPTH: usize = 16;
/// How many schema objects one schema's reading may visit, so wide `allOf` fans stay cheap.
const MAX_MERGE_VISITS: usize = 128;
/// Schema pairs compared per call: shared `$ref`s can fan out exponentially without a cycle,
/// and a bound on the whole walk is the only guard that covers every shape.
const SCHEMA_BUDGET: usize = 10_000;

/// The breaking changes a client built from `base` would suffer against `revision`, in a stable order (operation, then rule, then detail).
pub fn breaking_changes(
    base: &serde_json::Value,
    revision: &serde_json::Value,
) -> Vec<BreakingChange> {
    let empty = Map::new();
    // Without readable `paths` on both sides there is nothing to compare: a garbage revision
    // must not read as "every path was removed".
    let (Some(base_paths), Some(revision_paths)) =
        (paths_of(base, &empty), paths_of(revision, &empty))
    else {
        return Vec::new();
    };
    let mut ctx = Ctx {
        base: Doc { root: base },
        rev: Doc { root: revision },
        budget: SCHEMA_BUDGET,
        stack: Vec::new(),
        out: Vec::new(),
    };

    let mut revision_index: BTreeMap<String, &Value> = BTreeMap::new();
    let mut templates: Vec<&String> = revision_paths.keys().collect();
    templates.sort();
    for template in templates {
        if let Some(item) = revision_paths.get(template) {
            revision_index.entry(path_key(template)).or_insert(item);
        }
    }

    for (template, item) in base_paths {
        let Some(base_item) = ctx.base.deref(item).and_then(Value::as_object) else {
            continue;
        };
        let Some(revision_item) = revision_index.get(&path_key(template)) else {
            ctx.path_removed(template, base_item);
            continue;
        };
        let Some(revision_item) = ctx.rev.deref(revision_item).and_then(Value::as_object) else {
            continue;
        };
        for method in METHODS {
            let Some(base_op) = base_item.get(method).and_then(Value::as_object) else {
                continue;
            };
            let operation = format!("{} {template}", method.to_ascii_uppercase());
            match revision_item.get(method) {
                None => {
                    let (rule, why) = if is_deprecated(base_op) {
                        (API_REMOVED_BEFORE_SUNSET, "it was marked deprecated")
                    } else {
                        (
                            API_REMOVED_WITHOUT_DEPRECATION,
                            "it was not deprecated first",
                        )
                    };
                    ctx.report(
                        rule,
                        &operation,
                        format!("the operation is gone from `{template}`; {why}"),
                    );
                }
                Some(Value::Object(revision_op)) => ctx.compare_operation(
                    &operation,
                    (base_item, base_op),
                    (revision_item, revision_op),
                ),
                Some(_) => {}
            }
        }
    }

    let mut out = ctx.out;
    out.sort_by(|a, b| (&a.operation, a.rule, &a.detail).cmp(&(&b.operation, b.rule, &b.detail)));
    out.dedup();
    out
}

/// A document's `paths`; an absent `paths` is an empty one, since OpenAPI 3.1 lets a document
/// describe only webhooks or components.
fn paths_of<'a>(doc: &'a Value, empty: &'a Map<String, Value>) -> Option<&'a Map<String, Value>> {
    match doc.as_object()?.get("paths") {
        None => Some(empty),
        Some(Value::Object(paths)) => Some(paths),
        Some(_) => None,
    }
}

/// A path template with every `{name}` written `{}` and no trailing `/`, so revisions that rename
/// a path parameter still describe the same path.
fn path_key(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template.trim_end_matches('/');
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str("{}");
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn is_deprecated(op: &Map<String, Value>) -> bool {
    op.get("deprecated") == Some(&Value::Bool(true))
}

fn is_true(object: &Map<String, Value>, key: &str) -> bool {
    object.get(key) == Some(&Value::Bool(true))
}

/// Only numeric 2xx codes: oasdiff's `response-success-status-removed` skips range keys
/// (`2XX`) and `default`, which do not name one status a client may rely on.
fn is_success_status(status: &str) -> bool {
    status.len() == 3 && status.starts_with('2') && status.bytes().all(|b| b.is_ascii_digit())
}

/// One document: `$ref`s resolve against the document they are written in, never the other.
#[derive(Clone, Copy)]
struct Doc<'a> {
    root: &'a Value,
}

impl<'a> Doc<'a> {
    /// What a local reference (`#/components/...`) points at. References to other resources,
    /// and `$anchor` names, are out of reach: documents here are meant to be self-contained.
    fn target(&self, reference: &str) -> Option<&'a Value> {
        let pointer = percent_decode(reference.strip_prefix('#')?)?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        if !pointer.starts_with('/') {
            return None;
        }
        // `Value::pointer` undoes the `~1` and `~0` escapes itself.
        self.root.pointer(&pointer)
    }

    /// Follows `$ref`s from a non-schema object (path item, parameter, request body, response,
    /// media type) to the object that holds the content.
    fn deref(&self, mut value: &'a Value) -> Option<&'a Value> {
        for _ in 0..MAX_REF_HOPS {
            match value.get("$ref") {
                None => return Some(value),
                Some(Value::String(reference)) => value = self.target(reference)?,
                Some(_) => return None,
            }
        }
        None
    }

    /// A schema read as one object: its own keywords, then what its `$ref` and `allOf` parts add.
    fn flatten(&self, schema: &'a Value) -> Flat<'a> {
        let mut flat = Flat::default();
        let mut stack = Vec::new();
        let mut visits = 0;
        self.merge(schema, 0, &mut stack, &mut visits, &mut flat);
        flat
    }

    fn merge(
        &self,
        schema: &'a Value,
        depth: usize,
        stack: &mut Vec<&'a Value>,
        visits: &mut usize,
        flat: &mut Flat<'a>,
    ) {
        *visits += 1;
        if depth > MAX_MERGE_DEPTH || *visits > MAX_MERGE_VISITS {
            flat.opaque = true;
            return;
        }
        let object = match schema {
            Value::Bool(true) => return,
            Value::Object(object) => object,
            // `false` accepts nothing, and anything else is not a schema: neither compares.
            _ => {
                flat.opaque = true;
                return;
            }
        };
        if stack.iter().any(|s| ptr::eq(*s, schema)) {
            flat.opaque = true;
            return;
        }
        stack.push(schema);
        for (key, value) in object {
            flat.read(key, value);
        }
        if let Some(reference) = object.get("$ref") {
            match reference.as_str().and_then(|r| self.target(r)) {
                Some(target) => self.merge(target, depth + 1, stack, visits, flat),
                None => flat.opaque = true,
            }
        }
        if let Some(parts) = object.get("allOf") {
            match parts.as_array() {
                Some(parts) => {
                    for part in parts {
                        self.merge(part, depth + 1, stack, visits, flat);
                    }
                }
                None => flat.opaque = true,
            }
        }
        stack.pop();
    }
}

/// A `$ref` is a URI fragment, so a component name with a space or `{` arrives as `%20` or
/// `%7B`; a broken escape or invalid UTF-8 makes the reference unreadable (`None`).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = char::from(*bytes.get(i + 1)?).to_digit(16)?;
            let low = char::from(*bytes.get(i + 2)?).to_digit(16)?;
            out.push(u8::try_from(high * 16 + low).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The keywords this module compares, merged over `$ref` and `allOf` (a simple merge: the first
/// `type`/`enum`/`items` met wins, `required` is the union, bounds keep the tightest).
#[derive(Default)]
struct Flat<'a> {
    types: Option<BTreeSet<&'a str>>,
    /// OpenAPI 3.0's `nullable: true`, read so 3.0-style documents are not misjudged.
    nullable: bool,
    properties: BTreeMap<&'a str, &'a Value>,
    required: BTreeSet<&'a str>,
    items: Option<&'a Value>,
    enumeration: Option<&'a [Value]>,
    maximum: Option<&'a Value>,
    exclusive_maximum: Option<&'a Value>,
    minimum: Option<&'a Value>,
    exclusive_minimum: Option<&'a Value>,
    max_length: Option<&'a Value>,
    min_length: Option<&'a Value>,
    read_only: bool,
    write_only: bool,
    has_default: bool,
    /// Has `oneOf`/`anyOf`/`not`, whose branches this module does not look into.
    composite: bool,
    /// Some part could not be read, so absence of a keyword proves nothing.
    opaque: bool,
    /// Has a keyword that restricts values (anything but annotations).
    constrained: bool,
}

/// What a schema says about the JSON types of its values.
enum Kinds<'a> {
    Known(BTreeSet<&'a str>),
    /// No constraint at all: every value is accepted.
    Any,
    /// Constrained in ways this module does not reduce to types (`enum` alone, `oneOf`, ...).
    Unknown,
}

impl<'a> Flat<'a> {
    fn read(&mut self, key: &'a str, value: &'a Value) {
        match key {
            "type" => {
                if self.types.is_none() {
                    self.types = type_names(value);
                }
                self.constrained = true;
            }
            "nullable" => self.nullable |= value == &Value::Bool(true),
            "properties" => {
                match value.as_object() {
                    Some(properties) => {
                        for (name, schema) in properties {
                            self.properties.entry(name.as_str()).or_insert(schema);
                        }
                    }
                    None => self.opaque = true,
                }
                self.constrained = true;
            }
            "required" => {
                if let Some(names) = value.as_array() {
                    self.required.extend(names.iter().filter_map(Value::as_str));
                }
                self.constrained = true;
            }
            "items" => {
                if self.items.is_none() && (value.is_object() || value.is_boolean()) {
                    self.items = Some(value);
                }
                self.constrained = true;
            }
            "enum" => {
                if self.enumeration.is_none() {
                    self.enumeration = value.as_array().map(Vec::as_slice);
                }
                self.constrained = true;
            }
            "maximum" => keep_lowest(&mut self.maximum, value, &mut self.constrained),
            "exclusiveMaximum" => {
                keep_lowest(&mut self.exclusive_maximum, value, &mut self.constrained)
            }
            "maxLength" => keep_lowest(&mut self.max_length, value, &mut self.constrained),
            "minimum" => keep_highest(&mut self.minimum, value, &mut self.constrained),
            "exclusiveMinimum" => {
                keep_highest(&mut self.exclusive_minimum, value, &mut self.constrained)
            }
            "minLength" => keep_highest(&mut self.min_length, value, &mut self.constrained),
            "readOnly" => self.read_only |= value == &Value::Bool(true),
            "writeOnly" => self.write_only |= value == &Value::Bool(true),
            "default" => self.has_default = true,
            "oneOf" | "anyOf" | "not" => {
                self.composite = true;
                self.constrained = true;
            }
            // Followed by `Doc::merge`.
            "$ref" | "allOf" => {}
            "$dynamicRef" | "$recursiveRef" => {
                self.opaque = true;
                self.constrained = true;
            }
            "title" | "description" | "example" | "examples" | "deprecated" | "$comment"
            | "externalDocs" | "xml" | "format" | "discriminator" | "$id" | "$schema"
            | "$anchor" | "$dynamicAnchor" | "$defs" | "definitions" | "contentMediaType"
            | "contentEncoding" => {}
            other if other.starts_with("x-") => {}
            _ => self.constrained = true,
        }
    }

    fn kinds(&self) -> Kinds<'a> {
        if let Some(types) = &self.types {
            let mut types = types.clone();
            if self.nullable {
                types.insert("null");
            }
            return Kinds::Known(types);
        }
        if self.opaque || self.composite || self.enumeration.is_some() {
            return Kinds::Unknown;
        }
        if !self.properties.is_empty() || !self.required.is_empty() {
            return Kinds::Known(BTreeSet::from(["object"]));
        }
        if self.items.is_some() {
            return Kinds::Known(BTreeSet::from(["array"]));
        }
        if self.constrained {
            Kinds::Unknown
        } else {
            Kinds::Any
        }
    }
}

fn type_names(value: &Value) -> Option<BTreeSet<&str>> {
    let names: BTreeSet<&str> = match value {
        Value::String(name) => BTreeSet::from([name.as_str()]),
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    (!names.is_empty()).then_some(names)
}

/// `allOf` parts must all hold, so the tighter upper bound is the one in force; a non-number
/// (3.0's boolean `exclusiveMaximum`) is no bound.
fn keep_lowest<'a>(slot: &mut Option<&'a Value>, value: &'a Value, constrained: &mut bool) {
    *constrained = true;
    let Some(new) = value.as_f64() else { return };
    if slot.and_then(Value::as_f64).is_none_or(|old| new < old) {
        *slot = Some(value);
    }
}

/// `allOf` parts must all hold, so the tighter lower bound is the one in force.
fn keep_highest<'a>(slot: &mut Option<&'a Value>, value: &'a Value, constrained: &mut bool) {
    *constrained = true;
    let Some(new) = value.as_f64() else { return };
    if slot.and_then(Value::as_f64).is_none_or(|old| new > old) {
        *slot = Some(value);
    }
}

/// Every integer is a number, so a set with `number` covers `integer`.
fn covered(kind: &str, by: &BTreeSet<&str>) -> bool {
    by.contains(kind) || (kind == "integer" && by.contains("number"))
}

fn shown_types(types: &BTreeSet<&str>) -> String {
    types.iter().copied().collect::<Vec<_>>().join(" or ")
}

fn without_null<'a>(types: &BTreeSet<&'a str>) -> BTreeSet<&'a str> {
    types.iter().copied().filter(|t| *t != "null").collect()
}

/// A bound only newly set is oasdiff's WARN-level `...-set`, not a decrease, so both must exist.
fn lowered<'a>(
    base: Option<&'a Value>,
    revision: Option<&'a Value>,
) -> Option<(&'a Value, &'a Value)> {
    let (b, r) = (base?, revision?);
    (r.as_f64()? < b.as_f64()?).then_some((b, r))
}

/// Like [`lowered`]: only a bound present on both sides can have been raised.
fn raised<'a>(
    base: Option<&'a Value>,
    revision: Option<&'a Value>,
) -> Option<(&'a Value, &'a Value)> {
    let (b, r) = (base?, revision?);
    (r.as_f64()? > b.as_f64()?).then_some((b, r))
}

/// Findings name nested properties the way a client author reads a payload: `address.city`,
/// `items[].currency` (`[]` for an array's items).
fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn subject(path: &str) -> String {
    if path.is_empty() {
        "the schema".to_string()
    } else {
        format!("property `{path}`")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// What the client sends: breaking is the revision accepting less.
    Request,
    /// What the client receives: breaking is the revision sending what the client did not expect.
    Response,
}

/// Where a schema sits: which way it flows and how a finding names its place.
struct Place<'p> {
    side: Side,
    operation: &'p str,
    /// e.g. "the request body (application/json)".
    location: &'p str,
}

/// A request parameter, keyed by where it goes and its name.
struct Param<'a> {
    name: &'a str,
    location: &'a str,
    required: bool,
    /// Declared on the path item, so it applies to every operation of the path.
    on_path_item: bool,
}

/// The headers one response declares under one name, however it is spelled.
struct Header<'a> {
    /// The spelling findings use: the first in sorted order.
    name: &'a str,
    /// Whether each spelling is required; `None` for one that cannot be read.
    spellings: Vec<Option<bool>>,
}

impl Header<'_> {
    /// Required under every spelling; `None` if a spelling cannot be read.
    fn required(&self) -> Option<bool> {
        let spellings: Option<Vec<bool>> = self.spellings.iter().copied().collect();
        Some(spellings?.into_iter().all(|required| required))
    }

    /// Required under some spelling; `None` if a spelling cannot be read.
    fn any_required(&self) -> Option<bool> {
        let spellings: Option<Vec<bool>> = self.spellings.iter().copied().collect();
        Some(spellings?.into_iter().any(|required| required))
    }
}

/// A response's headers by lower-cased name, as HTTP matches them, without `Content-Type`, which
/// OpenAPI 3.1 says is ignored in a response's `headers`. A response without `headers` sends
/// none; one whose `headers` is not an object is unreadable (`None`).
fn response_headers<'a>(
    doc: Doc<'a>,
    response: &'a Map<String, Value>,
) -> Option<BTreeMap<String, Header<'a>>> {
    let mut out: BTreeMap<String, Header<'a>> = BTreeMap::new();
    let headers = match response.get("headers") {
        None => return Some(out),
        Some(headers) => headers.as_object()?,
    };
    let mut names: Vec<&String> = headers.keys().collect();
    names.sort();
    for name in names {
        let key = name.to_ascii_lowercase();
        if key == "content-type" {
            continue;
        }
        let required = headers
            .get(name)
            .and_then(|header| doc.deref(header))
            .and_then(Value::as_object)
            .map(|header| is_true(header, "required"));
        out.entry(key)
            .or_insert_with(|| Header {
                name,
                spellings: Vec::new(),
            })
            .spellings
            .push(required);
    }
    Some(out)
}

struct Ctx<'a> {
    base: Doc<'a>,
    rev: Doc<'a>,
    budget: usize,
    /// Schema pairs being compared, outermost first, to stop at a recursive schema.
    stack: Vec<(&'a Value, &'a Value)>,
    out: Vec<BreakingChange>,
}

impl<'a> Ctx<'a> {
    fn report(&mut self, rule: &'static str, operation: &str, detail: String) {
        self.out.push(BreakingChange {
            rule,
            operation: operation.to_string(),
            detail,
        });
    }

    fn schema_finding(&mut self, place: &Place<'_>, rule: &'static str, path: &str, what: String) {
        let detail = format!("{}: {} {what}", place.location, subject(path));
        self.report(rule, place.operation, detail);
    }

    fn path_removed(&mut self, template: &str, item: &Map<String, Value>) {
        for method in METHODS {
            let Some(op) = item.get(method).and_then(Value::as_object) else {
                continue;
            };
            let (rule, why) = if is_deprecated(op) {
                (API_PATH_REMOVED_BEFORE_SUNSET, "it was marked deprecated")
            } else {
                (
                    API_PATH_REMOVED_WITHOUT_DEPRECATION,
                    "it was not deprecated first",
                )
            };
            self.report(
                rule,
                &format!("{} {template}", method.to_ascii_uppercase()),
                format!("the path `{template}` is gone, and this operation with it; {why}"),
            );
        }
    }

    /// `base` and `revision` are each (path item, operation).
    fn compare_operation(
        &mut self,
        operation: &str,
        base: (&'a Map<String, Value>, &'a Map<String, Value>),
        revision: (&'a Map<String, Value>, &'a Map<String, Value>),
    ) {
        self.compare_parameters(operation, base, revision);
        self.compare_request_body(operation, base.1, revision.1);
        self.compare_responses(operation, base.1, revision.1);
    }

    fn parameters(
        doc: Doc<'a>,
        item: &'a Map<String, Value>,
        op: &'a Map<String, Value>,
    ) -> BTreeMap<(String, String), Param<'a>> {
        let mut out = BTreeMap::new();
        // Operation-level parameters come second so they override the path item's, as the
        // specification says.
        for (list, on_path_item) in [
            (item.get("parameters"), true),
            (op.get("parameters"), false),
        ] {
            let Some(list) = list.and_then(Value::as_array) else {
                continue;
            };
            for param in list {
                let Some(param) = doc.deref(param).and_then(Value::as_object) else {
                    continue;
                };
                let (Some(name), Some(location)) = (
                    param.get("name").and_then(Value::as_str),
                    param.get("in").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let location_key = location.to_ascii_lowercase();
                let name_key = if location_key == "header" {
                    name.to_ascii_lowercase()
                } else {
                    name.to_string()
                };
                let required = location_key == "path" || is_true(param, "required");
                out.insert(
                    (location_key, name_key),
                    Param {
                        name,
                        location,
                        required,
                        on_path_item,
                    },
                );
            }
        }
        out
    }

    fn compare_parameters(
        &mut self,
        operation: &str,
        base: (&'a Map<String, Value>, &'a Map<String, Value>),
        revision: (&'a Map<String, Value>, &'a Map<String, Value>),
    ) {
        let base_params = Self::parameters(self.base, base.0, base.1);
        let revision_params = Self::parameters(self.rev, revision.0, revision.1);
        for (key, param) in &revision_params {
            // Path parameters are always required and fixed by the (matched) template: a
            // different name there is a rename, not a new demand on the client.
            if key.0 == "path" || !param.required {
                continue;
            }
            let (location, name) = (param.location, param.name);
            match base_params.get(key) {
                None if param.on_path_item => self.report(
                    NEW_REQUIRED_REQUEST_DEFAULT_PARAMETER_TO_EXISTING_PATH,
                    operation,
                    format!("new required {location} parameter `{name}`, declared on the path for all its operations"),
                ),
                None => self.report(
                    NEW_REQUIRED_REQUEST_PARAMETER,
                    operation,
                    format!("new required {location} parameter `{name}`"),
                ),
                Some(old) if !old.required => self.report(
                    REQUEST_PARAMETER_BECAME_REQUIRED,
                    operation,
                    format!("{location} parameter `{name}` was optional and is now required"),
                ),
                Some(_) => {}
            }
        }
    }

    fn compare_request_body(
        &mut self,
        operation: &str,
        base_op: &'a Map<String, Value>,
        revision_op: &'a Map<String, Value>,
    ) {
        let base_body = base_op.get("requestBody");
        let revision_body = revision_op
            .get("requestBody")
            .and_then(|b| self.rev.deref(b))
            .and_then(Value::as_object);
        let Some(revision_body) = revision_body else {
            return;
        };
        let Some(base_body) = base_body else {
            if is_true(revision_body, "required") {
                self.report(
                    REQUEST_BODY_ADDED_REQUIRED,
                    operation,
                    "a required request body was added where there was none".to_string(),
                );
            }
            return;
        };
        let Some(base_body) = self.base.deref(base_body).and_then(Value::as_object) else {
            return;
        };
        if !is_true(base_body, "required") && is_true(revision_body, "required") {
            self.report(
                REQUEST_BODY_BECAME_REQUIRED,
                operation,
                "the request body was optional and is now required".to_string(),
            );
        }
        // `content` is required in a Request Body Object: without it on either side there is
        // nothing sound to compare.
        let (Some(base_content), Some(revision_content)) = (
            base_body.get("content").and_then(Value::as_object),
            revision_body.get("content").and_then(Value::as_object),
        ) else {
            return;
        };
        for (media_type, base_media) in base_content {
            let Some(revision_media) = revision_content.get(media_type) else {
                self.report(
                    REQUEST_BODY_MEDIA_TYPE_REMOVED,
                    operation,
                    format!("the request body no longer accepts `{media_type}`"),
                );
                continue;
            };
            let location = format!("the request body ({media_type})");
            let place = Place {
                side: Side::Request,
                operation,
                location: &location,
            };
            self.compare_media(&place, base_media, revision_media);
        }
    }

    fn compare_responses(
        &mut self,
        operation: &str,
        base_op: &'a Map<String, Value>,
        revision_op: &'a Map<String, Value>,
    ) {
        let (Some(base_responses), Some(revision_responses)) = (
            base_op.get("responses").and_then(Value::as_object),
            revision_op.get("responses").and_then(Value::as_object),
        ) else {
            return;
        };
        for (status, base_response) in base_responses {
            let Some(revision_response) = revision_responses.get(status) else {
                if is_success_status(status) {
                    self.report(
                        RESPONSE_SUCCESS_STATUS_REMOVED,
                        operation,
                        format!("the {status} response is gone"),
                    );
                }
                continue;
            };
            let (Some(base_response), Some(revision_response)) = (
                self.base.deref(base_response).and_then(Value::as_object),
                self.rev.deref(revision_response).and_then(Value::as_object),
            ) else {
                continue;
            };
            self.compare_headers(operation, status, base_response, revision_response);
            // A response without `content` has no body: `Some(None)`. A `content` that is not
            // an object is unreadable: `None`.
            let content = |response: &'a Map<String, Value>| match response.get("content") {
                None => Some(None),
                Some(content) => content.as_object().map(Some),
            };
            let (Some(Some(base_content)), Some(revision_content)) =
                (content(base_response), content(revision_response))
            else {
                continue;
            };
            for (media_type, base_media) in base_content {
                let Some(revision_media) = revision_content.and_then(|c| c.get(media_type)) else {
                    self.report(
                        RESPONSE_MEDIA_TYPE_REMOVED,
                        operation,
                        format!("the {status} response no longer offers `{media_type}`"),
                    );
                    continue;
                };
                let location = format!("the {status} response ({media_type})");
                let place = Place {
                    side: Side::Response,
                    operation,
                    location: &location,
                };
                self.compare_media(&place, base_media, revision_media);
            }
        }
    }

    /// oasdiff's WARN-level `optional-response-header-removed` is not reported: a client cannot
    /// have counted on a header the base did not promise.
    fn compare_headers(
        &mut self,
        operation: &str,
        status: &str,
        base_response: &'a Map<String, Value>,
        revision_response: &'a Map<String, Value>,
    ) {
        let (Some(base_headers), Some(revision_headers)) = (
            response_headers(self.base, base_response),
            response_headers(self.rev, revision_response),
        ) else {
            return;
        };
        for (key, base_header) in &base_headers {
            // A name spelled several ways in one response is read so it never raises a false
            // alarm: required in the base only if every spelling is, in the revision if any is.
            if base_header.required() != Some(true) {
                continue;
            }
            let name = base_header.name;
            match revision_headers.get(key) {
                None => self.report(
                    REQUIRED_RESPONSE_HEADER_REMOVED,
                    operation,
                    format!("the {status} response: header `{name}` was required and is gone"),
                ),
                Some(revision_header) => {
                    if revision_header.any_required() == Some(false) {
                        self.report(
                            RESPONSE_HEADER_BECAME_OPTIONAL,
                            operation,
                            format!(
                                "the {status} response: header `{name}` was required and is now optional"
                            ),
                        );
                    }
                }
            }
        }
    }

    fn compare_media(&mut self, place: &Place<'_>, base: &'a Value, revision: &'a Value) {
        let base_schema = self.base.deref(base).and_then(|m| m.get("schema"));
        let revision_schema = self.rev.deref(revision).and_then(|m| m.get("schema"));
        if let (Some(base_schema), Some(revision_schema)) = (base_schema, revision_schema) {
            self.compare_schema(place, base_schema, revision_schema, "", 0, None);
        }
    }

    /// `path` is "" for the body itself, which oasdiff names with `...-body-...` ids. `required`
    /// is whether the parent required this property in (base, revision); it comes from the parent
    /// because requiredness belongs to it, and is `None` where the parent cannot be judged.
    fn compare_schema(
        &mut self,
        place: &Place<'_>,
        base: &'a Value,
        revision: &'a Value,
        path: &str,
        depth: usize,
        required: Option<(bool, bool)>,
    ) {
        if depth > MAX_SCHEMA_DEPTH || self.budget == 0 {
            return;
        }
        self.budget -= 1;
        if self
            .stack
            .iter()
            .any(|(b, r)| ptr::eq(*b, base) && ptr::eq(*r, revision))
        {
            return;
        }
        let b = self.base.flatten(base);
        let r = self.rev.flatten(revision);

        match place.side {
            Side::Request => {
                // The server ignores read-only properties in requests, so nothing about them
                // can break a client that sends one.
                if !path.is_empty() && r.read_only {
                    return;
                }
                if required == Some((false, true)) {
                    let (rule, note) = if r.has_default {
                        (
                            REQUEST_PROPERTY_BECAME_REQUIRED_WITH_DEFAULT,
                            " (its default does not make omitting it valid)",
                        )
                    } else {
                        (REQUEST_PROPERTY_BECAME_REQUIRED, "")
                    };
                    self.schema_finding(
                        place,
                        rule,
                        path,
                        format!("was optional and is now required{note}"),
                    );
                }
                self.request_types(place, path, &b, &r);
                self.request_values(place, path, &b, &r);
            }
            Side::Response => {
                if required == Some((true, false)) && !b.write_only && !r.write_only {
                    self.schema_finding(
                        place,
                        RESPONSE_PROPERTY_BECAME_OPTIONAL,
                        path,
                        "was required and is now optional".to_string(),
                    );
                }
                self.response_types(place, path, &b, &r);
            }
        }

        self.stack.push((base, revision));
        // With branches or unreadable parts on either side, a property missing from the flat
        // reading may still be there, so only shared properties are followed.
        let judged = !(b.composite || r.composite || b.opaque || r.opaque);
        for (name, base_property) in &b.properties {
            let child = child_path(path, name);
            match r.properties.get(name) {
                Some(revision_property) => {
                    let required =
                        judged.then(|| (b.required.contains(name), r.required.contains(name)));
                    self.compare_schema(
                        place,
                        base_property,
                        revision_property,
                        &child,
                        depth + 1,
                        required,
                    );
                }
                None => {
                    if judged
                        && place.side == Side::Response
                        && b.required.contains(name)
                        && !self.base.flatten(base_property).write_only
                    {
                        self.schema_finding(
                            place,
                            RESPONSE_REQUIRED_PROPERTY_REMOVED,
                            &child,
                            "was required and is gone".to_string(),
                        );
                    }
                }
            }
        }
        if judged && place.side == Side::Request {
            for (name, revision_property) in &r.properties {
                if b.properties.contains_key(name)
                    || !r.required.contains(name)
                    // Already required without being described: clients send it today.
                    || b.required.contains(name)
                {
                    continue;
                }
                let property = self.rev.flatten(revision_property);
                if property.read_only {
                    continue;
                }
                let (rule, note) = if property.has_default {
                    (
                        NEW_REQUIRED_REQUEST_PROPERTY_WITH_DEFAULT,
                        " (its default does not make omitting it valid)",
                    )
                } else {
                    (NEW_REQUIRED_REQUEST_PROPERTY, "")
                };
                self.schema_finding(
                    place,
                    rule,
                    &child_path(path, name),
                    format!("is new and required{note}"),
                );
            }
        }
        if let (Some(base_items), Some(revision_items)) = (b.items, r.items) {
            self.compare_schema(
                place,
                base_items,
                revision_items,
                &format!("{path}[]"),
                depth + 1,
                None,
            );
        }
        self.stack.pop();
    }

    fn request_types(&mut self, place: &Place<'_>, path: &str, b: &Flat<'a>, r: &Flat<'a>) {
        match (b.kinds(), r.kinds()) {
            (Kinds::Known(base), Kinds::Known(revision)) => {
                if base.contains("null") && !revision.contains("null") {
                    self.schema_finding(
                        place,
                        REQUEST_BECAME_NOT_NULLABLE.at(path),
                        path,
                        "accepted null and no longer does".to_string(),
                    );
                }
                let base = without_null(&base);
                let revision = without_null(&revision);
                let lost: BTreeSet<&str> = base
                    .iter()
                    .copied()
                    .filter(|t| !covered(t, &revision))
                    .collect();
                if !lost.is_empty() && !revision.is_empty() {
                    self.schema_finding(
                        place,
                        REQUEST_TYPE_CHANGED.at(path),
                        path,
                        format!(
                            "was of type {} and is now {}, so {} is no longer accepted",
                            shown_types(&base),
                            shown_types(&revision),
                            shown_types(&lost)
                        ),
                    );
                }
            }
            (Kinds::Any, Kinds::Known(revision)) => self.schema_finding(
                place,
                REQUEST_TYPE_CHANGED.at(path),
                path,
                format!(
                    "accepted a value of any type and now only {}",
                    shown_types(&revision)
                ),
            ),
            _ => {}
        }
    }

    fn request_values(&mut self, place: &Place<'_>, path: &str, b: &Flat<'a>, r: &Flat<'a>) {
        match (b.enumeration, r.enumeration) {
            (Some(base), Some(revision)) => {
                for value in base.iter().filter(|v| !revision.contains(v)) {
                    self.schema_finding(
                        place,
                        REQUEST_ENUM_VALUE_REMOVED.at(path),
                        path,
                        format!("no longer accepts the enum value {value}"),
                    );
                }
            }
            (None, Some(revision)) if !b.opaque && !b.composite => {
                let values: Vec<String> = revision.iter().map(Value::to_string).collect();
                self.schema_finding(
                    place,
                    REQUEST_BECAME_ENUM.at(path),
                    path,
                    format!("is now limited to the enum values {}", values.join(", ")),
                );
            }
            _ => {}
        }
        let bounds = [
            (
                REQUEST_MAX_DECREASED,
                "maximum",
                lowered(b.maximum, r.maximum),
                "down",
            ),
            (
                REQUEST_EXCLUSIVE_MAX_DECREASED,
                "exclusiveMaximum",
                lowered(b.exclusive_maximum, r.exclusive_maximum),
                "down",
            ),
            (
                REQUEST_MAX_LENGTH_DECREASED,
                "maxLength",
                lowered(b.max_length, r.max_length),
                "down",
            ),
            (
                REQUEST_MIN_INCREASED,
                "minimum",
                raised(b.minimum, r.minimum),
                "up",
            ),
            (
                REQUEST_EXCLUSIVE_MIN_INCREASED,
                "exclusiveMinimum",
                raised(b.exclusive_minimum, r.exclusive_minimum),
                "up",
            ),
            (
                REQUEST_MIN_LENGTH_INCREASED,
                "minLength",
                raised(b.min_length, r.min_length),
                "up",
            ),
        ];
        for (rule, keyword, change, direction) in bounds {
            if let Some((from, to)) = change {
                self.schema_finding(
                    place,
                    rule.at(path),
                    path,
                    format!("{keyword} went {direction} from {from} to {to}"),
                );
            }
        }
    }

    fn response_types(&mut self, place: &Place<'_>, path: &str, b: &Flat<'a>, r: &Flat<'a>) {
        match (b.kinds(), r.kinds()) {
            (Kinds::Known(base), Kinds::Known(revision)) => {
                if revision.contains("null") && !base.contains("null") {
                    self.schema_finding(
                        place,
                        RESPONSE_BECAME_NULLABLE.at(path),
                        path,
                        "may now be null".to_string(),
                    );
                }
                let base = without_null(&base);
                let revision = without_null(&revision);
                let extra: BTreeSet<&str> = revision
                    .iter()
                    .copied()
                    .filter(|t| !covered(t, &base))
                    .collect();
                if extra.is_empty() || base.is_empty() {
                    return;
                }
                let rule = if base.iter().all(|t| covered(t, &revision)) {
                    RESPONSE_TYPE_GENERALIZED
                } else {
                    RESPONSE_TYPE_CHANGED
                };
                self.schema_finding(
                    place,
                    rule.at(path),
                    path,
                    format!(
                        "was of type {} and is now {}, so clients may get {} they do not expect",
                        shown_types(&base),
                        shown_types(&revision),
                        shown_types(&extra)
                    ),
                );
            }
            (Kinds::Known(base), Kinds::Any) => self.schema_finding(
                place,
                RESPONSE_TYPE_CHANGED.at(path),
                path,
                format!(
                    "was of type {} and may now be of any type",
                    shown_types(&base)
                ),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(paths: Value) -> Value {
        json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1.0.0"}, "paths": paths})
    }

    fn with_schemas(mut document: Value, schemas: Value) -> Value {
        document["components"] = json!({ "schemas": schemas });
        document
    }

    /// `POST /items` whose JSON request body has `schema`.
    fn request(schema: Value) -> Value {
        doc(json!({"/items": {"post": {
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema}}},
            "responses": {"201": {"description": "created"}}
        }}}))
    }

    /// `GET /items` whose JSON 200 response has `schema`.
    fn response(schema: Value) -> Value {
        doc(json!({"/items": {"get": {
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": schema}}}}
        }}}))
    }

    fn object(properties: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": properties, "required": required})
    }

    fn rules(base: &Value, revision: &Value) -> Vec<&'static str> {
        breaking_changes(base, revision)
            .into_iter()
            .map(|c| c.rule)
            .collect()
    }

    /// Asserts exactly one change, with `rule`, and returns it.
    fn only(base: &Value, revision: &Value, rule: &str) -> BreakingChange {
        let changes = breaking_changes(base, revision);
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert_eq!(changes[0].rule, rule, "{changes:#?}");
        assert!(RULES.contains(&changes[0].rule));
        changes.into_iter().next().expect("one change")
    }

    fn nothing(base: &Value, revision: &Value) {
        let changes = breaking_changes(base, revision);
        assert!(changes.is_empty(), "{changes:#?}");
    }

    /// A request property `p` with `base` as its schema, then `revision`.
    fn request_property(base: Value, revision: Value) -> (Value, Value) {
        (
            request(object(json!({ "p": base }), &[])),
            request(object(json!({ "p": revision }), &[])),
        )
    }

    /// A required response property `p` with `base` as its schema, then `revision`.
    fn response_property(base: Value, revision: Value) -> (Value, Value) {
        (
            response(object(json!({ "p": base }), &["p"])),
            response(object(json!({ "p": revision }), &["p"])),
        )
    }

    /// `POST /items` whose 201 response has `headers`, and `components.headers`.
    fn with_headers(headers: Value, components: Value) -> Value {
        let mut document = doc(json!({"/items": {"post": {
            "responses": {"201": {"description": "created", "headers": headers}}
        }}}));
        document["components"] = json!({ "headers": components });
        document
    }

    fn listings() -> Value {
        with_schemas(
            doc(json!({
                "/listings": {
                    "get": {
                        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}],
                        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Listing"}}},
                            "required": ["items"]
                        }}}}}
                    },
                    "post": {
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewListing"}}}},
                        "responses": {"201": {"description": "created"}, "400": {"description": "bad"}}
                    }
                },
                "/listings/{id}": {
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "get": {"responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Listing"}}}}, "404": {"description": "missing"}}},
                    "delete": {"responses": {"204": {"description": "gone"}}}
                }
            })),
            json!({
                "Listing": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "price": {"type": "integer", "minimum": 0},
                    "currency": {"type": "string", "enum": ["EUR", "USD"]},
                    "address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
                }, "required": ["id", "price", "currency"]},
                "NewListing": {"type": "object", "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "price": {"type": "integer", "minimum": 0, "maximum": 1000000},
                    "currency": {"type": "string", "enum": ["EUR", "USD"]}
                }, "required": ["title", "price"]}
            }),
        )
    }

    #[test]
    fn rule_ids_are_unique_and_well_formed() {
        let unique: BTreeSet<&str> = RULES.iter().copied().collect();
        assert_eq!(unique.len(), RULES.len());
        for rule in RULES {
            assert!(
                rule.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{rule}"
            );
        }
    }

    #[test]
    fn identical_documents_give_nothing() {
        nothing(&listings(), &listings());
        nothing(&json!({}), &json!({}));
    }

    #[test]
    fn a_removed_path_reports_each_of_its_operations() {
        let mut revision = listings();
        revision["paths"]
            .as_object_mut()
            .unwrap()
            .remove("/listings/{id}");
        let changes = breaking_changes(&listings(), &revision);
        assert_eq!(
            changes,
            vec![
                BreakingChange {
                    rule: "api-path-removed-without-deprecation",
                    operation: "DELETE /listings/{id}".into(),
                    detail: "the path `/listings/{id}` is gone, and this operation with it; it was not deprecated first".into(),
                },
                BreakingChange {
                    rule: "api-path-removed-without-deprecation",
                    operation: "GET /listings/{id}".into(),
                    detail: "the path `/listings/{id}` is gone, and this operation with it; it was not deprecated first".into(),
                },
            ]
        );
    }

    #[test]
    fn a_removed_path_that_was_deprecated_is_removed_before_sunset() {
        let mut base = listings();
        base["paths"]["/listings/{id}"]["get"]["deprecated"] = json!(true);
        base["paths"]["/listings/{id}"]["delete"]["deprecated"] = json!(true);
        let mut revision = listings();
        revision["paths"]
            .as_object_mut()
            .unwrap()
            .remove("/listings/{id}");
        assert_eq!(
            rules(&base, &revision),
            vec![
                "api-path-removed-before-sunset",
                "api-path-removed-before-sunset"
            ]
        );
    }

    #[test]
    fn a_removed_operation_of_a_remaining_path() {
        let mut revision = listings();
        revision["paths"]["/listings/{id}"]
            .as_object_mut()
            .unwrap()
            .remove("delete");
        let change = only(&listings(), &revision, "api-removed-without-deprecation");
        assert_eq!(change.operation, "DELETE /listings/{id}");
    }

    #[test]
    fn a_removed_operation_that_was_deprecated_is_removed_before_sunset() {
        let mut base = listings();
        base["paths"]["/listings/{id}"]["delete"]["deprecated"] = json!(true);
        let mut revision = listings();
        revision["paths"]["/listings/{id}"]
            .as_object_mut()
            .unwrap()
            .remove("delete");
        only(&base, &revision, "api-removed-before-sunset");
    }

    #[test]
    fn a_removed_success_status() {
        let mut revision = listings();
        revision["paths"]["/listings/{id}"]["delete"]["responses"] =
            json!({"200": {"description": "ok"}});
        let change = only(&listings(), &revision, "response-success-status-removed");
        assert_eq!(change.operation, "DELETE /listings/{id}");
        assert_eq!(change.detail, "the 204 response is gone");
    }

    #[test]
    fn removed_error_range_and_default_statuses_are_not_success_statuses() {
        let base = doc(json!({"/a": {"get": {"responses": {
            "200": {"description": "ok"}, "404": {"description": "no"}, "2XX": {"description": "ok"}, "default": {"description": "?"}
        }}}}));
        let revision = doc(json!({"/a": {"get": {"responses": {"200": {"description": "ok"}}}}}));
        nothing(&base, &revision);
    }

    #[test]
    fn a_removed_response_media_type() {
        let base = doc(
            json!({"/a": {"get": {"responses": {"200": {"description": "ok", "content": {
                "application/json": {"schema": {"type": "string"}}, "text/csv": {}
            }}}}}}),
        );
        let revision = doc(
            json!({"/a": {"get": {"responses": {"200": {"description": "ok", "content": {
                "application/json": {"schema": {"type": "string"}}
            }}}}}}),
        );
        let change = only(&base, &revision, "response-media-type-removed");
        assert_eq!(
            change.detail,
            "the 200 response no longer offers `text/csv`"
        );
    }

    #[test]
    fn a_response_that_lost_its_body_lost_its_media_types() {
        let base = response(json!({"type": "string"}));
        let revision =
            doc(json!({"/items": {"get": {"responses": {"200": {"description": "ok"}}}}}));
        only(&base, &revision, "response-media-type-removed");
    }

    #[test]
    fn a_removed_required_response_header() {
        let base = with_headers(
            json!({"Location": {"required": true, "schema": {"type": "string"}}, "X-Trace": {}}),
            json!({}),
        );
        let revision = with_headers(json!({"X-Trace": {}}), json!({}));
        let change = only(&base, &revision, "required-response-header-removed");
        assert_eq!(change.operation, "POST /items");
        assert_eq!(
            change.detail,
            "the 201 response: header `Location` was required and is gone"
        );
        // A response that no longer declares any headers lost them all.
        let bare =
            doc(json!({"/items": {"post": {"responses": {"201": {"description": "created"}}}}}));
        only(&base, &bare, "required-response-header-removed");
    }

    #[test]
    fn a_response_header_that_became_optional_through_a_ref() {
        let components = json!({
            "Location": {"required": true, "schema": {"type": "string"}},
            "MaybeLocation": {"schema": {"type": "string"}}
        });
        let base = with_headers(
            json!({"Location": {"$ref": "#/components/headers/Location"}}),
            components.clone(),
        );
        let revision = with_headers(
            json!({"Location": {"$ref": "#/components/headers/MaybeLocation"}}),
            components,
        );
        let change = only(&base, &revision, "response-header-became-optional");
        assert_eq!(
            change.detail,
            "the 201 response: header `Location` was required and is now optional"
        );
        // The same when the shared component itself changes.
        let mut revision = base.clone();
        revision["components"]["headers"]["Location"]["required"] = json!(false);
        only(&base, &revision, "response-header-became-optional");
        // A header that became required, or stayed so, is fine.
        nothing(&revision, &base);
        nothing(&base, &base);
    }

    #[test]
    fn a_removed_optional_response_header_is_warn_level_and_not_reported() {
        let base = with_headers(
            json!({"X-Trace": {"schema": {"type": "string"}}, "X-Rate": {"required": false}}),
            json!({}),
        );
        nothing(&base, &with_headers(json!({}), json!({})));
    }

    #[test]
    fn a_response_header_renamed_only_in_case_is_the_same_header() {
        let base = with_headers(json!({"Location": {"required": true}}), json!({}));
        let revision = with_headers(json!({"location": {"required": true}}), json!({}));
        nothing(&base, &revision);
        // Findings name the base's spelling.
        let revision = with_headers(json!({"LOCATION": {}}), json!({}));
        let change = only(&base, &revision, "response-header-became-optional");
        assert_eq!(
            change.detail,
            "the 201 response: header `Location` was required and is now optional"
        );
        // A name spelled twice in the revision is still required if either spelling is.
        let revision = with_headers(
            json!({"location": {"required": true}, "Location": {}}),
            json!({}),
        );
        nothing(&base, &revision);
    }

    #[test]
    fn a_content_type_response_header_is_ignored() {
        let base = with_headers(
            json!({"Content-Type": {"required": true}, "content-type": {"required": true}}),
            json!({}),
        );
        nothing(&base, &with_headers(json!({}), json!({})));
        nothing(
            &base,
            &with_headers(json!({"CONTENT-TYPE": {"required": false}}), json!({})),
        );
    }

    #[test]
    fn response_headers_are_compared_for_every_status_in_both_documents() {
        let base = doc(json!({"/a": {"get": {"responses": {
            "200": {"description": "ok", "headers": {"ETag": {"required": true}}},
            "404": {"description": "no", "headers": {"X-Reason": {"$ref": "#/components/headers/Reason"}}},
            "default": {"description": "?", "headers": {"X-Trace": {"required": true}}},
            "500": {"description": "oops", "headers": {"X-Id": {"required": true}}}
        }}}}));
        let mut base = base;
        base["components"] = json!({"headers": {"Reason": {"required": true}}});
        let revision = doc(json!({"/a": {"get": {"responses": {
            "200": {"description": "ok", "headers": {"ETag": {}}},
            "404": {"description": "no"},
            "default": {"description": "?", "headers": {"X-Trace": {"required": true}}}
        }}}}));
        // The 500 response is gone as a whole, which is not a header change.
        assert_eq!(
            breaking_changes(&base, &revision)
                .iter()
                .map(|c| (c.rule, c.detail.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (
                    "required-response-header-removed",
                    "the 404 response: header `X-Reason` was required and is gone"
                ),
                (
                    "response-header-became-optional",
                    "the 200 response: header `ETag` was required and is now optional"
                ),
            ]
        );
    }

    #[test]
    fn unreadable_response_headers_are_left_out() {
        let base = with_headers(
            json!({"Location": {"required": true}, "X-Id": {"$ref": "#/components/headers/Id"}}),
            json!({"Id": {"required": true}}),
        );
        // A `headers` that is not an object, or a header whose `$ref` leads nowhere.
        nothing(&base, &with_headers(json!([1]), json!({})));
        nothing(
            &base,
            &with_headers(
                json!({"Location": {"$ref": "#/nowhere"}, "X-Id": {"$ref": "other.yaml#/Id"}}),
                json!({}),
            ),
        );
        nothing(
            &base,
            &with_headers(
                json!({"Location": 7, "x-id": {"$ref": "#/components/headers/Id"}}),
                json!({"Id": {"$ref": "#/components/headers/Id"}}),
            ),
        );
        // Nor is an unreadable base header judged.
        let broken = with_headers(
            json!({"Location": {"$ref": "#/nowhere"}, "X-Id": "x"}),
            json!({}),
        );
        nothing(&broken, &with_headers(json!({}), json!({})));
    }

    #[test]
    fn a_removed_request_body_media_type() {
        let base = doc(json!({"/a": {"post": {"requestBody": {"content": {
            "application/json": {"schema": {"type": "object"}}, "application/xml": {"schema": {"type": "object"}}
        }}, "responses": {"204": {"description": "ok"}}}}}));
        let revision = doc(json!({"/a": {"post": {"requestBody": {"content": {
            "application/json": {"schema": {"type": "object"}}
        }}, "responses": {"204": {"description": "ok"}}}}}));
        let change = only(&base, &revision, "request-body-media-type-removed");
        assert_eq!(
            change.detail,
            "the request body no longer accepts `application/xml`"
        );
    }

    #[test]
    fn a_request_body_that_became_required() {
        let mut base = request(json!({"type": "object"}));
        base["paths"]["/items"]["post"]["requestBody"]["required"] = json!(false);
        only(
            &base,
            &request(json!({"type": "object"})),
            "request-body-became-required",
        );
    }

    #[test]
    fn a_required_request_body_added() {
        let base =
            doc(json!({"/items": {"post": {"responses": {"201": {"description": "created"}}}}}));
        only(
            &base,
            &request(json!({"type": "object"})),
            "request-body-added-required",
        );
        let mut optional = request(json!({"type": "object"}));
        optional["paths"]["/items"]["post"]["requestBody"]["required"] = json!(false);
        nothing(&base, &optional);
    }

    #[test]
    fn a_new_required_query_parameter() {
        let mut revision = listings();
        revision["paths"]["/listings"]["get"]["parameters"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "region", "in": "query", "required": true}));
        let change = only(&listings(), &revision, "new-required-request-parameter");
        assert_eq!(change.operation, "GET /listings");
        assert_eq!(change.detail, "new required query parameter `region`");
    }

    #[test]
    fn a_new_optional_parameter_is_fine() {
        let mut revision = listings();
        revision["paths"]["/listings"]["get"]["parameters"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "region", "in": "query"}));
        nothing(&listings(), &revision);
    }

    #[test]
    fn a_new_required_parameter_on_the_path_item() {
        let mut revision = listings();
        revision["paths"]["/listings/{id}"]["parameters"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "X-Tenant", "in": "header", "required": true}));
        assert_eq!(
            rules(&listings(), &revision),
            vec![
                "new-required-request-default-parameter-to-existing-path",
                "new-required-request-default-parameter-to-existing-path"
            ]
        );
    }

    #[test]
    fn a_parameter_that_became_required_matches_headers_case_insensitively() {
        let base = doc(json!({"/a": {"get": {
            "parameters": [{"name": "X-Key", "in": "header"}],
            "responses": {"200": {"description": "ok"}}
        }}}));
        let revision = doc(json!({"/a": {"get": {
            "parameters": [{"$ref": "#/components/parameters/Key"}],
            "responses": {"200": {"description": "ok"}}
        }}}));
        let mut revision = revision;
        revision["components"] =
            json!({"parameters": {"Key": {"name": "x-key", "in": "header", "required": true}}});
        let change = only(&base, &revision, "request-parameter-became-required");
        assert_eq!(
            change.detail,
            "header parameter `x-key` was optional and is now required"
        );
    }

    #[test]
    fn a_new_required_request_property_nested() {
        let base = request(object(
            json!({"address": object(json!({"street": {"type": "string"}}), &[])}),
            &[],
        ));
        let revision = request(object(
            json!({"address": object(json!({"street": {"type": "string"}, "city": {"type": "string"}}), &["city"])}),
            &[],
        ));
        let change = only(&base, &revision, "new-required-request-property");
        assert_eq!(change.operation, "POST /items");
        assert_eq!(
            change.detail,
            "the request body (application/json): property `address.city` is new and required"
        );
    }

    #[test]
    fn a_new_required_request_property_with_a_default() {
        let base = request(object(json!({}), &[]));
        let revision = request(object(
            json!({"n": {"type": "integer", "default": 1}}),
            &["n"],
        ));
        only(
            &base,
            &revision,
            "new-required-request-property-with-default",
        );
    }

    #[test]
    fn an_added_optional_request_property_is_fine() {
        let base = request(object(json!({"a": {"type": "string"}}), &["a"]));
        let revision = request(object(
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &["a"],
        ));
        nothing(&base, &revision);
    }

    #[test]
    fn a_new_required_read_only_request_property_is_fine() {
        let base = request(object(json!({}), &[]));
        let revision = request(object(
            json!({"id": {"type": "string", "readOnly": true}}),
            &["id"],
        ));
        nothing(&base, &revision);
    }

    #[test]
    fn a_request_property_that_became_required() {
        let base = request(object(json!({"a": {"type": "string"}}), &[]));
        let revision = request(object(json!({"a": {"type": "string"}}), &["a"]));
        let change = only(&base, &revision, "request-property-became-required");
        assert_eq!(
            change.detail,
            "the request body (application/json): property `a` was optional and is now required"
        );
    }

    #[test]
    fn a_request_property_that_became_required_with_a_default() {
        let base = request(object(
            json!({"a": {"type": "string", "default": "x"}}),
            &[],
        ));
        let revision = request(object(
            json!({"a": {"type": "string", "default": "x"}}),
            &["a"],
        ));
        only(
            &base,
            &revision,
            "request-property-became-required-with-default",
        );
    }

    #[test]
    fn a_request_property_enum_value_removed() {
        let (base, revision) = request_property(
            json!({"type": "string", "enum": ["draft", "live"]}),
            json!({"type": "string", "enum": ["live", "archived"]}),
        );
        let change = only(&base, &revision, "request-property-enum-value-removed");
        assert_eq!(
            change.detail,
            "the request body (application/json): property `p` no longer accepts the enum value \"draft\""
        );
    }

    #[test]
    fn a_request_body_enum_value_removed() {
        let base = request(json!({"type": "string", "enum": ["a", "b"]}));
        let revision = request(json!({"type": "string", "enum": ["a"]}));
        only(&base, &revision, "request-body-enum-value-removed");
    }

    #[test]
    fn a_request_property_that_became_an_enum() {
        let (base, revision) = request_property(
            json!({"type": "string"}),
            json!({"type": "string", "enum": ["a"]}),
        );
        only(&base, &revision, "request-property-became-enum");
    }

    #[test]
    fn a_request_body_that_became_an_enum() {
        only(
            &request(json!({"type": "string"})),
            &request(json!({"type": "string", "enum": ["a"]})),
            "request-body-became-enum",
        );
    }

    #[test]
    fn a_request_property_type_narrowed_is_breaking_widened_is_not() {
        let (base, revision) =
            request_property(json!({"type": "number"}), json!({"type": "integer"}));
        let change = only(&base, &revision, "request-property-type-changed");
        assert_eq!(
            change.detail,
            "the request body (application/json): property `p` was of type number and is now integer, so number is no longer accepted"
        );
        let (base, revision) =
            request_property(json!({"type": "integer"}), json!({"type": "number"}));
        nothing(&base, &revision);
        let (base, revision) = request_property(
            json!({"type": "string"}),
            json!({"type": ["string", "integer"]}),
        );
        nothing(&base, &revision);
        let (base, revision) = request_property(
            json!({"type": ["string", "integer"]}),
            json!({"type": "string"}),
        );
        only(&base, &revision, "request-property-type-changed");
    }

    #[test]
    fn a_request_property_that_accepted_anything_now_typed() {
        let (base, revision) = request_property(
            json!({"description": "free form"}),
            json!({"type": "string"}),
        );
        only(&base, &revision, "request-property-type-changed");
    }

    #[test]
    fn a_request_body_type_changed() {
        only(
            &request(json!({"type": "object"})),
            &request(json!({"type": "array", "items": {"type": "object"}})),
            "request-body-type-changed",
        );
    }

    #[test]
    fn a_request_property_that_no_longer_accepts_null() {
        let (base, revision) = request_property(
            json!({"type": ["string", "null"]}),
            json!({"type": "string"}),
        );
        let change = only(&base, &revision, "request-property-became-not-nullable");
        assert_eq!(
            change.detail,
            "the request body (application/json): property `p` accepted null and no longer does"
        );
        let (base, revision) = request_property(
            json!({"type": "string"}),
            json!({"type": ["string", "null"]}),
        );
        nothing(&base, &revision);
    }

    #[test]
    fn a_request_body_that_no_longer_accepts_null() {
        only(
            &request(json!({"type": ["object", "null"]})),
            &request(json!({"type": "object"})),
            "request-body-became-not-nullable",
        );
    }

    #[test]
    fn request_bounds_tightened() {
        let cases = [
            (
                "maximum",
                json!(10),
                json!(5),
                "request-property-max-decreased",
            ),
            (
                "exclusiveMaximum",
                json!(10),
                json!(5),
                "request-property-exclusive-max-decreased",
            ),
            (
                "maxLength",
                json!(10),
                json!(5),
                "request-property-max-length-decreased",
            ),
            (
                "minimum",
                json!(1),
                json!(2),
                "request-property-min-increased",
            ),
            (
                "exclusiveMinimum",
                json!(1),
                json!(2.5),
                "request-property-exclusive-min-increased",
            ),
            (
                "minLength",
                json!(1),
                json!(2),
                "request-property-min-length-increased",
            ),
        ];
        for (keyword, from, to, rule) in cases {
            let (base, revision) =
                request_property(json!({ keyword: from }), json!({ keyword: to }));
            only(&base, &revision, rule);
            // Loosening the same bound is fine.
            nothing(&revision, &base);
            let base = request(json!({ keyword: from }));
            let revision = request(json!({ keyword: to }));
            only(&base, &revision, &rule.replace("-property-", "-body-"));
        }
    }

    #[test]
    fn a_request_property_max_decreased_says_by_how_much() {
        let (base, revision) = request_property(
            json!({"type": "integer", "maximum": 100}),
            json!({"type": "integer", "maximum": 50}),
        );
        let change = only(&base, &revision, "request-property-max-decreased");
        assert_eq!(
            change.detail,
            "the request body (application/json): property `p` maximum went down from 100 to 50"
        );
    }

    #[test]
    fn request_property_max_length_decreased() {
        let (base, revision) = request_property(
            json!({"type": "string", "maxLength": 200}),
            json!({"type": "string", "maxLength": 100}),
        );
        only(&base, &revision, "request-property-max-length-decreased");
    }

    #[test]
    fn request_property_min_increased() {
        let (base, revision) = request_property(
            json!({"type": "integer", "minimum": 0}),
            json!({"type": "integer", "minimum": 1}),
        );
        only(&base, &revision, "request-property-min-increased");
    }

    #[test]
    fn a_bound_newly_set_is_not_a_decrease() {
        let (base, revision) = request_property(
            json!({"type": "integer"}),
            json!({"type": "integer", "maximum": 5}),
        );
        nothing(&base, &revision);
    }

    #[test]
    fn read_only_request_properties_are_not_judged() {
        let (base, revision) = request_property(
            json!({"type": "string", "readOnly": true}),
            json!({"type": "integer", "readOnly": true}),
        );
        nothing(&base, &revision);
    }

    #[test]
    fn a_response_required_property_removed_from_array_items() {
        let mut revision = listings();
        revision["components"]["schemas"]["Listing"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("currency");
        let changes = breaking_changes(&listings(), &revision);
        assert_eq!(
            changes,
            vec![
                BreakingChange {
                    rule: "response-required-property-removed",
                    operation: "GET /listings".into(),
                    detail: "the 200 response (application/json): property `items[].currency` was required and is gone".into(),
                },
                BreakingChange {
                    rule: "response-required-property-removed",
                    operation: "GET /listings/{id}".into(),
                    detail: "the 200 response (application/json): property `currency` was required and is gone".into(),
                },
            ]
        );
    }

    #[test]
    fn a_removed_optional_or_write_only_response_property_is_not_an_error() {
        let base = response(object(
            json!({"a": {"type": "string"}, "b": {"type": "string", "writeOnly": true}}),
            &["b"],
        ));
        let revision = response(object(json!({}), &[]));
        nothing(&base, &revision);
    }

    #[test]
    fn a_response_property_that_became_optional() {
        let base = response(object(
            json!({"address": object(json!({"city": {"type": "string"}}), &["city"])}),
            &["address"],
        ));
        let revision = response(object(
            json!({"address": object(json!({"city": {"type": "string"}}), &[])}),
            &["address"],
        ));
        let change = only(&base, &revision, "response-property-became-optional");
        assert_eq!(
            change.detail,
            "the 200 response (application/json): property `address.city` was required and is now optional"
        );
    }

    #[test]
    fn a_response_property_type_changed() {
        let (base, revision) =
            response_property(json!({"type": "integer"}), json!({"type": "string"}));
        let change = only(&base, &revision, "response-property-type-changed");
        assert_eq!(
            change.detail,
            "the 200 response (application/json): property `p` was of type integer and is now string, so clients may get string they do not expect"
        );
        // Narrowing what is sent is fine.
        let (base, revision) =
            response_property(json!({"type": "number"}), json!({"type": "integer"}));
        nothing(&base, &revision);
        let (base, revision) = response_property(
            json!({"type": ["string", "integer"]}),
            json!({"type": "string"}),
        );
        nothing(&base, &revision);
    }

    #[test]
    fn a_response_property_type_widened_is_generalized() {
        let (base, revision) =
            response_property(json!({"type": "integer"}), json!({"type": "number"}));
        only(&base, &revision, "response-property-type-generalized");
        let (base, revision) = response_property(
            json!({"type": "string"}),
            json!({"type": ["string", "integer"]}),
        );
        only(&base, &revision, "response-property-type-generalized");
    }

    #[test]
    fn a_response_property_that_may_now_be_anything() {
        let (base, revision) = response_property(json!({"type": "string"}), json!({}));
        only(&base, &revision, "response-property-type-changed");
    }

    #[test]
    fn a_response_body_type_changed_or_generalized() {
        only(
            &response(json!({"type": "object"})),
            &response(json!({"type": "string"})),
            "response-body-type-changed",
        );
        only(
            &response(json!({"type": "integer"})),
            &response(json!({"type": "number"})),
            "response-body-type-generalized",
        );
    }

    #[test]
    fn a_response_property_that_became_nullable() {
        let (base, revision) = response_property(
            json!({"type": "string"}),
            json!({"type": ["string", "null"]}),
        );
        let change = only(&base, &revision, "response-property-became-nullable");
        assert_eq!(
            change.detail,
            "the 200 response (application/json): property `p` may now be null"
        );
        // OpenAPI 3.0's keyword says the same.
        let (base, revision) = response_property(
            json!({"type": "string"}),
            json!({"type": "string", "nullable": true}),
        );
        only(&base, &revision, "response-property-became-nullable");
    }

    #[test]
    fn a_response_body_that_became_nullable() {
        only(
            &response(json!({"type": "object"})),
            &response(json!({"type": ["object", "null"]})),
            "response-body-became-nullable",
        );
    }

    #[test]
    fn response_enum_values_added_are_warn_level_and_not_reported() {
        let (base, revision) = response_property(
            json!({"type": "string", "enum": ["a"]}),
            json!({"type": "string", "enum": ["a", "b"]}),
        );
        nothing(&base, &revision);
    }

    #[test]
    fn additions_a_client_never_sees_are_fine() {
        let mut revision = listings();
        // A new response property, a new status, a new operation, a new path.
        revision["components"]["schemas"]["Listing"]["properties"]["rating"] =
            json!({"type": "number"});
        revision["paths"]["/listings"]["post"]["responses"]["409"] =
            json!({"description": "conflict"});
        revision["paths"]["/listings/{id}"]["put"] =
            json!({"responses": {"200": {"description": "ok"}}});
        revision["paths"]["/reports"] =
            json!({"get": {"responses": {"200": {"description": "ok"}}}});
        nothing(&listings(), &revision);
        // A new required response property too: the client gets more than it asked for.
        let base = response(object(json!({"a": {"type": "string"}}), &["a"]));
        let revision = response(object(
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &["a", "b"],
        ));
        nothing(&base, &revision);
    }

    #[test]
    fn a_renamed_path_parameter_is_the_same_path() {
        let mut revision = listings();
        let paths = revision["paths"].as_object_mut().unwrap();
        let mut item = paths.remove("/listings/{id}").unwrap();
        item["parameters"][0]["name"] = json!("listingId");
        paths.insert("/listings/{listingId}/".into(), item);
        nothing(&listings(), &revision);
        // Findings name the base's template.
        revision["paths"]["/listings/{listingId}/"]
            .as_object_mut()
            .unwrap()
            .remove("delete");
        let change = only(&listings(), &revision, "api-removed-without-deprecation");
        assert_eq!(change.operation, "DELETE /listings/{id}");
    }

    #[test]
    fn media_types_only_the_revision_has_are_not_judged() {
        let base = request(object(json!({}), &[]));
        let mut revision = base.clone();
        revision["paths"]["/items"]["post"]["requestBody"]["content"]["application/xml"] =
            json!({"schema": object(json!({"a": {"type": "string"}}), &["a"])});
        nothing(&base, &revision);
    }

    #[test]
    fn all_of_parts_are_merged() {
        let base = with_schemas(
            response(
                json!({"allOf": [{"$ref": "#/components/schemas/Base"}, object(json!({"b": {"type": "string"}}), &["b"])]}),
            ),
            json!({"Base": object(json!({"a": {"type": "string"}}), &["a"])}),
        );
        let mut revision = base.clone();
        revision["components"]["schemas"]["Base"] = object(json!({"a": {"type": "string"}}), &[]);
        only(&base, &revision, "response-property-became-optional");
        // Moving a property between parts changes nothing.
        let moved = with_schemas(
            response(
                json!({"allOf": [{"$ref": "#/components/schemas/Base"}, object(json!({}), &[])]}),
            ),
            json!({"Base": object(json!({"a": {"type": "string"}, "b": {"type": "string"}}), &["a", "b"])}),
        );
        nothing(&base, &moved);
    }

    #[test]
    fn a_ref_with_sibling_keywords_reads_both() {
        let base = with_schemas(
            request(json!({"$ref": "#/components/schemas/N", "maximum": 10})),
            json!({"N": {"type": "integer"}}),
        );
        let revision = with_schemas(
            request(json!({"$ref": "#/components/schemas/N", "maximum": 5})),
            json!({"N": {"type": "integer"}}),
        );
        only(&base, &revision, "request-body-max-decreased");
    }

    #[test]
    fn one_of_branches_are_not_judged_for_presence() {
        let base = response(object(json!({"a": {"type": "string"}}), &["a"]));
        let revision = response(
            json!({"oneOf": [object(json!({"a": {"type": "string"}}), &["a"]), {"type": "string"}]}),
        );
        nothing(&base, &revision);
    }

    #[test]
    fn an_implicit_object_is_an_object() {
        let base = request(json!({"properties": {"a": {"type": "string"}}}));
        let revision = request(object(json!({"a": {"type": "string"}}), &[]));
        nothing(&base, &revision);
        nothing(&revision, &base);
    }

    #[test]
    fn escaped_and_encoded_references_resolve() {
        let schemas = json!({"a/b~c": object(json!({"x": {"type": "string"}}), &["x"])});
        let base = with_schemas(
            response(json!({"$ref": "#/components/schemas/a~1b~0c"})),
            schemas.clone(),
        );
        let mut revision = base.clone();
        revision["paths"]["/items"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"] = json!({"$ref": "#/components/schemas/a~1b%7Ec"});
        revision["components"]["schemas"]["a/b~c"] = object(json!({}), &[]);
        only(&base, &revision, "response-required-property-removed");
    }

    #[test]
    fn referenced_path_items_responses_and_bodies_resolve() {
        let base = json!({
            "openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "paths": {"/a": {"$ref": "#/components/pathItems/A"}},
            "components": {
                "pathItems": {"A": {"post": {
                    "requestBody": {"$ref": "#/components/requestBodies/B"},
                    "responses": {"200": {"$ref": "#/components/responses/R"}}
                }}},
                "requestBodies": {"B": {"content": {"application/json": {"schema": object(json!({"n": {"type": "integer"}}), &[])}}}},
                "responses": {"R": {"description": "ok", "content": {"application/json": {"schema": object(json!({"id": {"type": "string"}}), &["id"])}}}}
            }
        });
        let mut revision = base.clone();
        revision["components"]["requestBodies"]["B"]["content"]["application/json"]["schema"]
            ["required"] = json!(["n"]);
        revision["components"]["responses"]["R"]["content"]["application/json"]["schema"]
            ["required"] = json!([]);
        assert_eq!(
            rules(&base, &revision),
            vec![
                "request-property-became-required",
                "response-property-became-optional"
            ]
        );
    }

    #[test]
    fn a_ref_cycle_terminates_and_still_compares() {
        let node = |required: &[&str]| {
            json!({"Node": {"type": "object", "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                "parent": {"$ref": "#/components/schemas/Node"},
                "self": {"allOf": [{"$ref": "#/components/schemas/Node"}]}
            }, "required": required}})
        };
        let base = with_schemas(
            response(json!({"$ref": "#/components/schemas/Node"})),
            node(&["name"]),
        );
        let revision = with_schemas(
            response(json!({"$ref": "#/components/schemas/Node"})),
            node(&[]),
        );
        let changes = breaking_changes(&base, &revision);
        assert!(!changes.is_empty());
        assert!(changes
            .iter()
            .all(|c| c.rule == "response-property-became-optional"));
        assert!(changes.iter().any(|c| c.detail.contains("property `name`")));
        assert!(changes
            .iter()
            .any(|c| c.detail.contains("property `children[].name`")));
        // Self-referencing refs and allOf loops read as unknown, never hang.
        let looped = with_schemas(
            response(json!({"$ref": "#/components/schemas/A"})),
            json!({"A": {"$ref": "#/components/schemas/B"}, "B": {"allOf": [{"$ref": "#/components/schemas/A"}]}}),
        );
        nothing(&looped, &looped);
        nothing(&base, &looped);
        nothing(&looped, &base);
    }

    #[test]
    fn wide_shared_references_stay_bounded() {
        // Each level refers to the next three times: 3^30 paths without a budget.
        let mut schemas = Map::new();
        for level in 0..30 {
            let next = json!({"$ref": format!("#/components/schemas/L{}", level + 1)});
            schemas.insert(
                format!("L{level}"),
                object(json!({"a": next, "b": next, "c": next}), &[]),
            );
        }
        schemas.insert(
            "L30".into(),
            object(json!({"x": {"type": "string"}}), &["x"]),
        );
        let base = with_schemas(
            response(json!({"$ref": "#/components/schemas/L0"})),
            Value::Object(schemas),
        );
        let mut revision = base.clone();
        revision["components"]["schemas"]["L30"] = object(json!({}), &[]);
        let started = std::time::Instant::now();
        let _ = breaking_changes(&base, &revision);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn garbage_gives_nothing() {
        let garbage = [
            json!(42),
            json!(null),
            json!("openapi"),
            json!([1, 2]),
            json!({"paths": []}),
            json!({"paths": 7}),
            json!({"paths": {"/a": 1, "/b": {"get": 3}, "/c": {"get": {"responses": []}}}}),
            json!({"paths": {"/a": {"get": {"responses": {"200": {"headers": 3}, "201": 4}}}}}),
            json!({"paths": {"/a": {"$ref": "#/nowhere"}, "/b": {"$ref": 5}}}),
            json!({"paths": {"/a": {"get": {
                "parameters": [1, {"in": 2}, {"$ref": "other.yaml#/x"}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/%zz"}}}},
                "responses": {"200": {"headers": {"X": {"$ref": 5}, "Y": [], "Z": {"required": "yes"}}, "content": {"application/json": {"schema": {
                    "type": 5, "properties": [], "required": "a", "items": [], "enum": {}, "allOf": {}
                }}}}}
            }}}}),
        ];
        for base in &garbage {
            for revision in &garbage {
                let _ = breaking_changes(base, revision);
            }
            nothing(base, base);
            nothing(base, &json!(42));
            nothing(&json!(42), base);
            nothing(&listings(), &json!({"paths": []}));
            nothing(&json!({"paths": []}), &listings());
        }
        // Malformed pieces of an otherwise fine revision are left out, not reported.
        let mut revision = listings();
        revision["paths"]["/listings/{id}"] = json!(3);
        revision["paths"]["/listings"]["post"]["requestBody"] = json!({"$ref": "#/nowhere"});
        revision["paths"]["/listings"]["get"] = json!("broken");
        nothing(&listings(), &revision);
    }

    #[test]
    fn output_is_sorted_by_operation_rule_and_detail() {
        let mut revision = listings();
        revision["paths"]["/listings/{id}"]
            .as_object_mut()
            .unwrap()
            .remove("delete");
        let schemas = &mut revision["components"]["schemas"];
        schemas["Listing"]["properties"]["price"] = json!({"type": "string"});
        schemas["Listing"]["required"] = json!(["id"]);
        schemas["NewListing"]["properties"]["title"]["maxLength"] = json!(100);
        schemas["NewListing"]["properties"]["currency"]["enum"] = json!(["EUR"]);
        let changes = breaking_changes(&listings(), &revision);
        let keys: Vec<(String, &str, String)> = changes
            .iter()
            .map(|c| (c.operation.clone(), c.rule, c.detail.clone()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(
            changes
                .iter()
                .map(|c| format!("{} {}", c.operation, c.rule))
                .collect::<Vec<_>>(),
            vec![
                "DELETE /listings/{id} api-removed-without-deprecation",
                "GET /listings response-property-became-optional",
                "GET /listings response-property-became-optional",
                "GET /listings response-property-type-changed",
                "GET /listings/{id} response-property-became-optional",
                "GET /listings/{id} response-property-became-optional",
                "GET /listings/{id} response-property-type-changed",
                "POST /listings request-property-enum-value-removed",
                "POST /listings request-property-max-length-decreased",
            ]
        );
    }
}
