//! `contract_diff` parameters.
//!
//! ```toml
//! probe = "contract_diff"
//! [check.params]
//! base = { path = "/openapi/1.0.json", version = "1.0.0" }  # what clients were built from
//! revision = { path = "/openapi.json", version = "1.1.0" }  # what the service says now
//! operations = ["POST /listings"]    # the base must describe these: an empty base breaks nothing
//! deprecated_in_revision = ["GET /listings/{id}/price"]  # deprecated by the revision: the base,
//!                                                        # published before, must not say so
//! ```

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::openapi_document::params::operations;
use crate::probes::request::de;

#[derive(Debug, Clone)]
pub struct Revision {
    pub path: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct ContractDiff {
    pub base: Revision,
    pub revision: Revision,
    /// Operation keys the base must document.
    pub operations: Vec<String>,
    /// Operation keys the revision deprecates: the base, published before, must not mark them.
    pub deprecated_in_revision: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ContractRevision")]
pub struct RawRevision {
    /// Where the service serves this revision.
    path: String,
    /// Its `info.version`.
    version: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ContractDiffParams")]
pub struct Raw {
    /// The revision clients were generated from.
    base: RawRevision,
    /// The current revision, which must not break them.
    revision: RawRevision,
    /// Operations (`METHOD /path/{param}`) the base must document.
    operations: Vec<String>,
    /// Operations the revision deprecates: the base, published before, must not mark them
    /// deprecated (a base regenerated from today's code does).
    #[serde(default)]
    deprecated_in_revision: Vec<String>,
}

pub fn parse(params: toml::Value) -> Result<ContractDiff, String> {
    let raw: Raw = de("params of `contract_diff`", params)?;
    let revision = |r: RawRevision, which: &str| {
        if r.path.starts_with('/') {
            Ok(Revision {
                path: r.path,
                version: r.version,
            })
        } else {
            Err(format!(
                "params.{which}.path \"{}\" must start with /",
                r.path
            ))
        }
    };
    let base = revision(raw.base, "base")?;
    let current = revision(raw.revision, "revision")?;
    if base.path == current.path {
        return Err("params of `contract_diff`: base and revision are read from the same path; a document compared with itself breaks nothing".into());
    }
    if raw.operations.is_empty() {
        return Err("params of `contract_diff`: `operations` names what the base must document (an empty base would break nothing)".into());
    }
    Ok(ContractDiff {
        base,
        revision: current,
        operations: operations("contract_diff", &raw.operations)?,
        deprecated_in_revision: operations("contract_diff", &raw.deprecated_in_revision)?,
    })
}

impl ContractDiff {
    pub fn template_strings(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
        base = { path = "/openapi/1.0.json", version = "1.0.0" }
        revision = { path = "/openapi.json", version = "1.1.0" }
        operations = ["POST /listings"]
    "#;

    #[test]
    fn parses_and_refuses_a_document_compared_with_itself() {
        assert_eq!(
            parse(toml::from_str(OK).unwrap()).unwrap().operations,
            ["POST /listings"]
        );
        let same = OK.replace("/openapi/1.0.json", "/openapi.json");
        assert!(parse(toml::from_str(&same).unwrap())
            .unwrap_err()
            .contains("same path"));
        let none = OK.replace("[\"POST /listings\"]", "[]");
        assert!(parse(toml::from_str(&none).unwrap())
            .unwrap_err()
            .contains("empty base"));
    }
}
