//! Does a response keep the document's promise? The rules of OpenAPI 3.1 for reading a
//! document, applied to one response:
//!
//! - §4.8.16 (Responses Object): the status is looked up as the exact code, then its range
//!   (`4XX`, any case), then `default`; an undocumented status breaks the contract.
//! - §4.8.17 (Response Object): `content` maps media types to what the body is; no `content`
//!   means no body. A media type range (`application/*`) matches less specifically than an exact
//!   one (§4.8.14). A header the response marks `required: true` must be sent; a `Content-Type`
//!   header in `headers` is ignored, as the specification says.
//! - §4.8.24 (Schema Object): the schema is JSON Schema 2020-12. It is validated where it stands
//!   in the document (the document is the root resource), so `$ref`s into `components` resolve as
//!   the author wrote them. `format` is an annotation in 2020-12: a value that does not match its
//!   format is a note, never a failure.

use serde_json::{Map, Value};

use super::{json_path, pointer_token, resolve_pointer, Document};
use crate::engine::assert::shorten;
use crate::engine::http::Response;

/// How many schema errors are quoted per response.
const ERRORS_SHOWN: usize = 3;

/// What one response showed against the document.
#[derive(Debug, Default, PartialEq)]
pub struct Judgement {
    /// Broken promises, each a sentence.
    pub violations: Vec<String>,
    /// What is worth knowing and is not a failure (a `format` the value does not match).
    pub notes: Vec<String>,
}

/// The media type of a `Content-Type` value: lower case, without parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

/// Judges `resp`, the answer to `method` `path` (no query), against `doc`.
pub fn judge(doc: &Document, method: &str, path: &str, resp: &Response) -> Judgement {
    let mut out = Judgement::default();
    let Some(op) = doc.operation_for(method, path) else {
        out.violations.push(format!(
            "{} documents no operation for {method} {path}",
            doc.path
        ));
        return out;
    };
    let responses = format!("{}/responses", op.pointer);
    let keys: Vec<String> = doc
        .value
        .pointer(&responses)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let status = resp.status.to_string();
    let range = format!("{}XX", &status[..1]);
    let Some(key) = keys
        .iter()
        .find(|k| **k == status)
        .or_else(|| keys.iter().find(|k| k.eq_ignore_ascii_case(&range)))
        .or_else(|| keys.iter().find(|k| *k == "default"))
    else {
        out.violations.push(format!(
            "status {status} is not documented for {} (documented: {}; no {range} or default)",
            op.shown(),
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        ));
        return out;
    };
    let at = resolve_pointer(&doc.value, &format!("{responses}/{}", pointer_token(key)));
    let documented = format!("the document's {key} response of {}", op.shown());
    required_headers(doc, &at, resp, &documented, &mut out);

    let content = doc
        .value
        .pointer(&format!("{at}/content"))
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty());
    let has_body = !resp.body.is_empty();
    let Some(content) = content else {
        if has_body {
            out.violations.push(format!(
                "{documented} has no content (no body), but {} bytes came ({})",
                resp.body.len(),
                resp.header("content-type")
                    .unwrap_or_else(|| "no Content-Type".into())
            ));
        }
        return out;
    };
    let listed: Vec<&String> = content.keys().collect();
    if !has_body {
        if method.eq_ignore_ascii_case("HEAD") {
            return out;
        }
        out.violations.push(format!(
            "{documented} promises a body ({}), but none came",
            join(&listed)
        ));
        return out;
    }
    let media = media_type(resp.header("content-type").as_deref());
    let Some(media_key) = match_media(content, &media) else {
        out.violations.push(format!(
            "Content-Type {} is not documented for {documented} (documented: {})",
            if media.is_empty() { "(none)" } else { &media },
            join(&listed)
        ));
        return out;
    };
    let schema_at = format!("{at}/content/{}/schema", pointer_token(&media_key));
    if doc.value.pointer(&schema_at).is_none() || !is_json(&media) {
        return out;
    }
    let body: Value = match serde_json::from_slice(&resp.body) {
        Ok(v) => v,
        Err(e) => {
            out.violations.push(format!(
                "the body is not JSON ({e}), but {documented} says {media_key}"
            ));
            return out;
        }
    };
    let (errors, format_notes) = validate(&doc.value, &schema_at, &body);
    match errors {
        Ok(errors) if errors.is_empty() => {}
        Ok(errors) => out.violations.push(format!(
            "the body does not match the schema of {documented} ({media_key}): {}",
            errors
                .iter()
                .take(ERRORS_SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
                + &if errors.len() > ERRORS_SHOWN {
                    format!(" (and {} more)", errors.len() - ERRORS_SHOWN)
                } else {
                    String::new()
                }
        )),
        Err(e) => out.violations.push(format!(
            "the schema of {documented} ({media_key}) is not a JSON Schema 2020-12 schema the document can resolve: {e}"
        )),
    }
    out.notes.extend(format_notes.into_iter().map(|n| {
        format!(
            "{} {path} → {}: {n} (`format` is an annotation in OpenAPI 3.1, not graded)",
            method, resp.status
        )
    }));
    out
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `content` key for `media`: exact first, then `type/*`, then `*/*`; keys may carry
/// parameters (`application/json; charset=utf-8`), which do not take part.
fn match_media(content: &Map<String, Value>, media: &str) -> Option<String> {
    let bare = |k: &str| media_type(Some(k));
    let kind = media.split('/').next().unwrap_or("");
    content
        .keys()
        .find(|k| bare(k) == media)
        .or_else(|| content.keys().find(|k| bare(k) == format!("{kind}/*")))
        .or_else(|| content.keys().find(|k| bare(k) == "*/*"))
        .cloned()
}

fn required_headers(
    doc: &Document,
    response_at: &str,
    resp: &Response,
    documented: &str,
    out: &mut Judgement,
) {
    let Some(headers) = doc
        .value
        .pointer(&format!("{response_at}/headers"))
        .and_then(Value::as_object)
    else {
        return;
    };
    for name in headers.keys() {
        if name.eq_ignore_ascii_case("content-type") {
            continue;
        }
        let at = resolve_pointer(
            &doc.value,
            &format!("{response_at}/headers/{}", pointer_token(name)),
        );
        let required = doc
            .value
            .pointer(&format!("{at}/required"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if required && resp.header(name).is_none() {
            out.violations.push(format!(
                "{documented} marks the header {name} required, and it is missing"
            ));
        }
    }
}

/// A JSON pointer as a URI fragment (RFC 6901 §6): characters a fragment may not hold, such as
/// the braces of a path template (`/listings/{id}`), percent-encoded.
fn fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for byte in pointer.bytes() {
        let c = byte as char;
        if c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?".contains(c) {
            out.push(c);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Validates `instance` against the schema at `schema_at` inside `doc`: the document is the root
/// resource with a `$ref` to that pointer, so every reference resolves as written. Returns the
/// errors without formats, and separately the format mismatches (notes).
fn validate(
    doc: &Value,
    schema_at: &str,
    instance: &Value,
) -> (Result<Vec<String>, String>, Vec<String>) {
    let mut root = doc.clone();
    let Some(object) = root.as_object_mut() else {
        return (Err("the document is not an object".into()), Vec::new());
    };
    // The document's own top-level keys are not JSON Schema keywords and are ignored as unknown
    // keywords; `$id` or `$schema` at the top of an OpenAPI document would change how references
    // resolve, and are not OpenAPI fields.
    object.remove("$id");
    object.remove("$schema");
    object.insert(
        "$ref".into(),
        Value::String(format!("#{}", fragment(schema_at))),
    );
    let describe = |e: jsonschema::ValidationError<'_>| {
        format!(
            "at {}: {}",
            json_path(&e.instance_path().to_string()),
            shorten(&e.to_string(), 160)
        )
    };
    let plain = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(false)
        .build(&root);
    let errors = match plain {
        Ok(v) => Ok(v.iter_errors(instance).map(describe).collect::<Vec<_>>()),
        Err(e) => return (Err(shorten(&e.to_string(), 200)), Vec::new()),
    };
    let notes = match (
        &errors,
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root),
    ) {
        (Ok(plain_errors), Ok(v)) => v
            .iter_errors(instance)
            .map(describe)
            .filter(|e| !plain_errors.contains(e))
            .collect(),
        _ => Vec::new(),
    };
    (errors, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document() -> Document {
        let value = json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1.1.0"},
            "paths": {
                "/listings": {
                    "post": {
                        "operationId": "create",
                        "responses": {
                            "201": {
                                "description": "created",
                                "headers": {"Location": {"$ref": "#/components/headers/Location"}},
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Listing"}}}
                            },
                            "4XX": {"$ref": "#/components/responses/Problem"}
                        }
                    }
                },
                "/listings/{id}": {
                    "delete": {"operationId": "delete", "responses": {
                        "204": {"description": "gone"},
                        "410": {"description": "inline, under a templated path", "content": {"application/problem+json": {"schema": {"type": "object", "properties": {"status": {"type": "integer"}}}}}},
                        "default": {"$ref": "#/components/responses/Problem"}
                    }}
                }
            },
            "components": {
                "headers": {"Location": {"required": true, "schema": {"type": "string"}}},
                "responses": {"Problem": {"description": "problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}},
                "schemas": {
                    "Listing": {
                        "type": "object",
                        "required": ["id", "price_cents", "created_at"],
                        "properties": {
                            "id": {"type": "string"},
                            "price_cents": {"type": "integer", "minimum": 0},
                            "created_at": {"type": "string", "format": "date-time"}
                        }
                    },
                    "Problem": {"type": "object", "required": ["status"], "properties": {"status": {"type": "integer"}}}
                }
            }
        });
        Document {
            path: "/openapi.json".into(),
            operations: super::super::index(&value).unwrap(),
            value,
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response::for_test(status, headers, body)
    }

    const LISTING: &str = r#"{"id":"a","price_cents":5,"created_at":"2026-11-28T15:04:05Z"}"#;

    #[test]
    fn a_response_as_documented_passes() {
        let j = judge(
            &document(),
            "POST",
            "/listings",
            &response(
                201,
                &[
                    ("content-type", "application/json; charset=utf-8"),
                    ("location", "/listings/a"),
                ],
                LISTING,
            ),
        );
        assert_eq!(j, Judgement::default());
        let gone = judge(
            &document(),
            "DELETE",
            "/listings/a",
            &response(204, &[], ""),
        );
        assert_eq!(gone, Judgement::default());
    }

    #[test]
    fn a_body_outside_its_schema_names_the_field() {
        let body = r#"{"id":"a","price_cents":"5","created_at":"2026-11-28T15:04:05Z"}"#;
        let j = judge(
            &document(),
            "POST",
            "/listings",
            &response(
                201,
                &[("content-type", "application/json"), ("location", "/x")],
                body,
            ),
        );
        assert_eq!(j.violations.len(), 1, "{j:?}");
        assert!(j.violations[0].contains("$.price_cents"), "{j:?}");
    }

    #[test]
    fn a_required_header_missing_is_a_violation() {
        let j = judge(
            &document(),
            "POST",
            "/listings",
            &response(201, &[("content-type", "application/json")], LISTING),
        );
        assert!(j.violations[0].contains("Location required"), "{j:?}");
    }

    #[test]
    fn ranges_and_default_cover_statuses_and_media_types_must_match() {
        let problem = r#"{"status":422}"#;
        let ok = judge(
            &document(),
            "POST",
            "/listings",
            &response(
                422,
                &[("content-type", "application/problem+json")],
                problem,
            ),
        );
        assert_eq!(ok, Judgement::default());
        let wrong_media = judge(
            &document(),
            "POST",
            "/listings",
            &response(422, &[("content-type", "application/json")], problem),
        );
        assert!(
            wrong_media.violations[0].contains("Content-Type application/json is not documented"),
            "{wrong_media:?}"
        );
        let server = judge(
            &document(),
            "POST",
            "/listings",
            &response(
                500,
                &[("content-type", "application/problem+json")],
                problem,
            ),
        );
        assert!(
            server.violations[0].contains("status 500 is not documented"),
            "{server:?}"
        );
        let by_default = judge(
            &document(),
            "DELETE",
            "/listings/x",
            &response(
                404,
                &[("content-type", "application/problem+json")],
                r#"{"status":404}"#,
            ),
        );
        assert_eq!(by_default, Judgement::default());
    }

    #[test]
    fn a_body_where_none_is_documented_and_none_where_one_is() {
        let extra = judge(
            &document(),
            "DELETE",
            "/listings/a",
            &response(204, &[("content-type", "text/plain")], "ok"),
        );
        assert!(extra.violations[0].contains("no content"), "{extra:?}");
        let missing = judge(
            &document(),
            "POST",
            "/listings",
            &response(201, &[("location", "/x")], ""),
        );
        assert!(missing.violations[0].contains("none came"), "{missing:?}");
    }

    #[test]
    fn a_format_mismatch_is_a_note_not_a_violation() {
        let body = r#"{"id":"a","price_cents":5,"created_at":"yesterday"}"#;
        let j = judge(
            &document(),
            "POST",
            "/listings",
            &response(
                201,
                &[("content-type", "application/json"), ("location", "/x")],
                body,
            ),
        );
        assert!(j.violations.is_empty(), "{j:?}");
        assert_eq!(j.notes.len(), 1, "{j:?}");
        assert!(j.notes[0].contains("$.created_at"), "{j:?}");
    }

    #[test]
    fn a_schema_under_a_templated_path_is_found() {
        let j = judge(
            &document(),
            "DELETE",
            "/listings/a",
            &response(
                410,
                &[("content-type", "application/problem+json")],
                r#"{"status":"x"}"#,
            ),
        );
        assert!(j.violations[0].contains("$.status"), "{j:?}");
        assert_eq!(
            fragment("/paths/~1l~1{id}/get/é"),
            "/paths/~1l~1%7Bid%7D/get/%C3%A9"
        );
    }

    #[test]
    fn an_undocumented_operation_is_a_violation() {
        let j = judge(&document(), "GET", "/nothing", &response(200, &[], ""));
        assert!(j.violations[0].contains("documents no operation for GET /nothing"));
    }
}
