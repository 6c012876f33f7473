//! `openapi_document` parameters.
//!
//! ```toml
//! probe = "openapi_document"
//! [check.params]
//! path = "/openapi.json"                              # where the document is served
//! version = "1.1.0"                                   # its info.version, when the README fixes one
//! operations = ["POST /listings", "GET /listings/{id}"]  # must be documented (names of
//!                                                        # path parameters do not matter)
//! ```

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::openapi::operation_key;
use crate::probes::request::de;

#[derive(Debug, Clone)]
pub struct OpenapiDocument {
    pub path: String,
    pub version: Option<String>,
    /// Operation keys (`GET /listings/{}`), see `openapi::operation_key`.
    pub operations: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OpenapiDocumentParams")]
pub struct Raw {
    /// Where the service serves the document; `/openapi.json` when absent.
    path: Option<String>,
    /// The `info.version` the document must carry.
    version: Option<String>,
    /// Operations the document must describe, `METHOD /path/{param}`.
    #[serde(default)]
    operations: Vec<String>,
}

pub fn parse(params: toml::Value) -> Result<OpenapiDocument, String> {
    let raw: Raw = de("params of `openapi_document`", params)?;
    let path = raw.path.unwrap_or_else(|| "/openapi.json".into());
    if !path.starts_with('/') {
        return Err(format!("params.path \"{path}\" must start with /"));
    }
    Ok(OpenapiDocument {
        path,
        version: raw.version,
        operations: operations("openapi_document", &raw.operations)?,
    })
}

/// Parses `METHOD /path` entries into operation keys, with a located message for a malformed one.
pub fn operations(probe: &str, entries: &[String]) -> Result<Vec<String>, String> {
    const METHODS: &[&str] = &[
        "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
    ];
    entries
        .iter()
        .map(|entry| match entry.split_once(' ') {
            Some((method, path))
                if METHODS.contains(&method.to_ascii_uppercase().as_str())
                    && path.starts_with('/') =>
            {
                Ok(operation_key(method, path))
            }
            _ => Err(format!(
                "params of `{probe}`: \"{entry}\" is not an operation; write `METHOD /path`, e.g. \"GET /listings/{{id}}\""
            )),
        })
        .collect()
}

impl OpenapiDocument {
    pub fn template_strings(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_keys_and_a_malformed_one_is_named() {
        let p = parse(toml::from_str("operations = [\"get /listings/{id}\"]").unwrap()).unwrap();
        assert_eq!(p.path, "/openapi.json");
        assert_eq!(p.operations, ["GET /listings/{}"]);
        let err = parse(toml::from_str("operations = [\"/listings\"]").unwrap()).unwrap_err();
        assert!(err.contains("\"/listings\" is not an operation"), "{err}");
    }
}
