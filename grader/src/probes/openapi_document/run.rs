//! `openapi_document`: read the document (the shared reader judges status, media type, version
//! and validity), then what the reader leaves to the exercise: operation ids, the named
//! operations, the version.

use std::collections::BTreeMap;

use super::params::OpenapiDocument;
use crate::engine::{fail, CheckContext, Failure};
use crate::probes::openapi;

pub async fn run(p: &OpenapiDocument, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let doc = openapi::fetch(ctx, &p.path).await?;
    judge(p, &doc)?;
    ctx.measured(format!(
        "{}: OpenAPI {}, valid against the 3.1 schema (2022-10-07); {} operations, each with its own operationId",
        p.path,
        doc.value["openapi"].as_str().unwrap_or_default(),
        doc.operations.len()
    ));
    Ok(())
}

fn judge(p: &OpenapiDocument, doc: &openapi::Document) -> Result<(), Failure> {
    let carried_over = openapi::dialect_30_keywords(&doc.value);
    if let Some(first) = carried_over.first() {
        return Err(fail(
            format!(
                "{}: a schema uses OpenAPI 3.0's dialect, which 3.1 reads differently: {first}{}",
                p.path,
                match carried_over.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            ),
            "3.1 schemas in JSON Schema 2020-12: `\"type\": [\"string\", \"null\"]` instead of `nullable: true`, a number for `exclusiveMinimum`/`exclusiveMaximum`",
            format!("{} 3.0 keyword(s)", carried_over.len()),
            carried_over
                .iter()
                .map(|at| format!("{at}: 2020-12 ignores `nullable` (null stays invalid) and wants a number for an exclusive bound"))
                .take(5)
                .collect(),
        ));
    }
    let missing_ids: Vec<String> = doc
        .operations
        .iter()
        .filter(|op| op.operation_id.as_deref().is_none_or(str::is_empty))
        .map(|op| op.shown())
        .collect();
    if !missing_ids.is_empty() {
        return Err(fail(
            format!(
                "{}: {} operation(s) have no operationId, the first {}",
                p.path,
                missing_ids.len(),
                missing_ids[0]
            ),
            "an operationId on every operation (generated clients name their methods after it)",
            format!("without one: {}", missing_ids.join(", ")),
            Vec::new(),
        ));
    }
    let mut by_id: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for op in &doc.operations {
        if let Some(id) = op.operation_id.as_deref() {
            by_id.entry(id).or_default().push(op.shown());
        }
    }
    let shared: Vec<String> = by_id
        .iter()
        .filter(|(_, ops)| ops.len() > 1)
        .map(|(id, ops)| format!("\"{id}\": {}", ops.join(", ")))
        .collect();
    if !shared.is_empty() {
        return Err(fail(
            format!(
                "{}: operationIds must be unique, and {} is shared",
                p.path, shared[0]
            ),
            "each operationId used once (OpenAPI 3.1 §4.8.10: \"The id MUST be unique among all operations\")",
            shared.join("; "),
            Vec::new(),
        ));
    }
    if let Some(version) = &p.version {
        doc.require_version(version)?;
    }
    let missing: Vec<&String> = p
        .operations
        .iter()
        .filter(|key| doc.operation_by_key(key).is_none())
        .collect();
    if !missing.is_empty() {
        let documented: Vec<String> = doc.operations.iter().map(|op| op.shown()).collect();
        return Err(fail(
            format!(
                "{} does not document {} (of the {} operations the README lists)",
                p.path,
                missing
                    .iter()
                    .map(|k| k.replace("{}", "{…}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.operations.len()
            ),
            format!(
                "the operations {}",
                p.operations
                    .iter()
                    .map(|k| k.replace("{}", "{…}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("documented: {}", documented.join(", ")),
            Vec::new(),
        ));
    }
    Ok(())
}
