//! The JSON Schema (draft 7) of `exercise.toml`, derived from the types the parser reads
//! ([`super::parse`]'s raw structs, each probe's raw params struct, and `spec::schema` for the
//! values read dynamically). Published as `docs/exercise.schema.json` for editors (taplo / Even
//! Better TOML) and printed by `grader schema exercise`.
//!
//! Derivation alone cannot say that `params` depends on `probe`, so the `Check` definition gets
//! a `oneOf`: one branch per probe (`probe` is that name, `params` is its struct, no `step`) and
//! one for checks with steps (no `probe`, no `params`).

use schemars::gen::SchemaSettings;
use schemars::schema::{
    InstanceType, ObjectValidation, RootSchema, Schema, SchemaObject, SubschemaValidation,
};
use serde_json::json;

use super::parse::RawExercise;
use crate::probes;

/// The schema as a value.
pub fn root_schema() -> RootSchema {
    let mut gen = settings().into_generator();
    let params = probes::params_schemas(&mut gen);
    let names: Vec<serde_json::Value> = params.iter().map(|(n, _)| json!(n)).collect();
    let mut root = gen.into_root_schema_for::<RawExercise>();
    let mut branches: Vec<Schema> = Vec::new();
    for (name, schema) in params {
        let needs_params = has_required_fields(&root, &schema);
        let mut branch = ObjectValidation::default();
        branch.properties.insert(
            "probe".into(),
            Schema::Object(SchemaObject {
                const_value: Some(json!(name)),
                ..Default::default()
            }),
        );
        branch.properties.insert("params".into(), schema);
        // A probe check has no steps, and takes its upstream in `params.upstream`.
        branch.properties.insert("step".into(), Schema::Bool(false));
        branch
            .properties
            .insert("upstream".into(), Schema::Bool(false));
        branch.required.insert("probe".into());
        if needs_params {
            branch.required.insert("params".into());
        }
        branches.push(branch_schema(format!("probe = \"{name}\""), branch));
    }
    let mut steps = ObjectValidation::default();
    steps.properties.insert("probe".into(), Schema::Bool(false));
    steps
        .properties
        .insert("params".into(), Schema::Bool(false));
    steps.required.insert("step".into());
    branches.push(branch_schema("steps".into(), steps));
    let check = root
        .definitions
        .get_mut("Check")
        .expect("RawCheck is named Check in the schema");
    let Schema::Object(check) = check else {
        unreachable!("a struct's schema is an object")
    };
    if let Some(Schema::Object(probe)) = check.object().properties.get_mut("probe") {
        probe.enum_values = Some(names);
    }
    check.subschemas = Some(Box::new(SubschemaValidation {
        one_of: Some(branches),
        ..Default::default()
    }));
    root
}

/// Draft 7, without `null` in the types of optional fields: TOML has no null, a key is absent.
pub fn settings() -> SchemaSettings {
    let mut settings = SchemaSettings::draft07();
    settings.option_add_null_type = false;
    settings
}

/// Whether a params table must be written: its struct has fields without a default.
fn has_required_fields(root: &RootSchema, schema: &Schema) -> bool {
    let Schema::Object(o) = schema else {
        return false;
    };
    let definition = o
        .reference
        .as_deref()
        .and_then(|r| r.strip_prefix("#/definitions/"))
        .and_then(|d| root.definitions.get(d));
    matches!(definition, Some(Schema::Object(d)) if d.object.as_ref().is_some_and(|o| !o.required.is_empty()))
}

fn branch_schema(title: String, object: ObjectValidation) -> Schema {
    let mut o = SchemaObject {
        instance_type: Some(InstanceType::Object.into()),
        object: Some(Box::new(object)),
        ..Default::default()
    };
    o.metadata().title = Some(title);
    Schema::Object(o)
}

/// The schema, pretty-printed, ending with a newline: the content of
/// `docs/exercise.schema.json`.
pub fn schema() -> String {
    crate::spec::schema::pretty(&root_schema())
}

#[cfg(test)]
mod tests {
    /// The committed schema must be the one the code generates.
    #[test]
    fn committed_schema_is_up_to_date() {
        crate::spec::schema::assert_committed(
            "exercise.schema.json",
            &super::schema(),
            "the types exercise.toml is parsed into (exercise/parse.rs, probes/*/params.rs, \
             spec/schema.rs).\n\
             Regenerate it with:  UPDATE_SCHEMA=1 cargo test -p grader schema\n\
             and review the diff.",
        );
    }
}
