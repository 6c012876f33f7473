//! Types that exist only to describe, in the JSON Schemas of `exercise.toml` (`docs/`), values the
//! parsers read dynamically from a `toml::Value` (a variable's generator, a status, a capture).
//! They derive `JsonSchema` and mirror what `exercise::parse`, `spec::token` and
//! [`super::StatusSpec::parse`] accept; the schema test (`tests/schemas.rs`) validates every
//! shipped exercise against them, so a drift in the accepting direction is caught there.

#![allow(dead_code)]

use schemars::JsonSchema;

/// A JSON Schema as the files in `docs/` hold it: pretty-printed, ending with a newline.
pub fn pretty(schema: &impl serde::Serialize) -> String {
    let mut json =
        serde_json::to_string_pretty(schema).expect("a JSON Schema always serialises to JSON");
    json.push('\n');
    json
}

/// For each schema's test: the file committed at `docs/<file>` must be what the code generates
/// (`UPDATE_SCHEMA=1` writes it instead). `fix` says where the types live and what to review.
#[cfg(test)]
pub(crate) fn assert_committed(file: &str, generated: &str, fix: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file);
    if std::env::var_os("UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::write(&path, generated)
            .unwrap_or_else(|e| panic!("could not write {}: {e}", path.display()));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with {fix}",
        path.display()
    );
}

/// A variable: a random value generated once per run, named in templates as `{{name}}`.
#[derive(JsonSchema)]
#[serde(tag = "gen", rename_all = "lowercase", deny_unknown_fields)]
#[schemars(rename = "Var")]
pub enum VarGenSchema {
    /// A product code like `SKU-4F2A9C`.
    Sku,
    /// A UUID (v4).
    Uuid,
    /// An email address at example.com.
    Email,
    /// A lower-case slug.
    Slug,
    /// Random words.
    Words {
        /// How many words, 1 to 20 (default 2).
        #[schemars(range(min = 1, max = 20))]
        count: Option<u32>,
    },
    /// An integer from `min` to `max`, inclusive.
    Int { min: i64, max: i64 },
    /// One of `values`.
    Pick {
        #[schemars(length(min = 1))]
        values: Vec<String>,
    },
    /// `text` repeated `count` times (1 to 1000000).
    Repeat {
        text: String,
        #[schemars(range(min = 1, max = 1_000_000))]
        count: u32,
    },
    /// A token signed by the exercise's `oidc-issuer` upstream (see "Tokens from the mock
    /// OpenID issuer" in exercises/AUTHORING.md). String fields are templates.
    Jwt(Box<JwtSchema>),
}

/// The fields of `{ gen = "jwt", ... }` (`spec::token::parse`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Jwt")]
pub struct JwtSchema {
    /// The `oidc-issuer` upstream that signs it (default: the only one).
    issuer: Option<String>,
    /// `sub` claim; none when absent.
    sub: Option<String>,
    /// `roles` claim (default `[]`).
    roles: Option<Vec<String>>,
    /// `scope` claim.
    scope: Option<String>,
    /// Signing algorithm: "RS256" (default) or "ES256"; forged algorithms are `attack`s.
    alg: Option<JwtAlgSchema>,
    /// `exp` = now + this duration ("5m"; "-1m" for an expired token). Default 5 minutes.
    expires_in: Option<String>,
    /// `nbf` = now + this duration.
    not_before: Option<String>,
    /// `aud` override: a string or an array of strings (default: the issuer's `audience`).
    aud: Option<StringOrList>,
    /// `iss` override (default: the issuer's URL).
    iss: Option<String>,
    /// Extra claims laid over the standard ones.
    claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// Rotate the issuer's keys before signing (once per check that uses the variable).
    rotate: Option<bool>,
    /// A forged token: "none", "hs256-public-key", "tampered-signature", "unknown-kid",
    /// "unlisted-kid" or "tampered-claims".
    attack: Option<super::token::JwtAttack>,
}

#[derive(JsonSchema)]
#[schemars(rename = "JwtAlg")]
pub enum JwtAlgSchema {
    RS256,
    ES256,
}

#[derive(JsonSchema)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// A status code (`201`), a class (`"4xx"`), or a non-empty list of them (any one passes).
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Status")]
pub enum StatusSchema {
    One(StatusItem),
    Any(#[schemars(length(min = 1))] Vec<StatusItem>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
pub enum StatusItem {
    Code(#[schemars(range(min = 100, max = 599))] u16),
    Class(#[schemars(regex(pattern = "^[1-5]xx$"))] String),
}

/// Where a captured value comes from: exactly one of `header` (a response header's value) or
/// `json` (a JSONPath into the response body).
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
#[schemars(rename = "Capture")]
pub enum CaptureSchema {
    /// A response header's name, e.g. "Location".
    Header(String),
    /// A JSONPath into the body, e.g. "$.id".
    Json(String),
}
