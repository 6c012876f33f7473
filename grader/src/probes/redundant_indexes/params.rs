//! `redundant_indexes` parameters: the tables whose indexes are compared.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::de;

/// `redundant_indexes`: no index on the tables duplicates another or is a leading prefix of
/// another (every write pays for each index).
#[derive(Debug, Clone)]
pub struct RedundantIndexes {
    pub tables: Vec<String>,
    /// Asked first (GET, must answer 2xx), so the catalog is read once the service's migrations
    /// have run; the report shows it.
    pub health_path: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RedundantIndexesParams")]
pub struct RawRedundant {
    tables: Vec<String>,
    health_path: Option<String>,
}

pub fn parse_redundant_indexes(params: toml::Value) -> Result<RedundantIndexes, String> {
    let raw: RawRedundant = de("params of `redundant_indexes`", params)?;
    if raw.tables.is_empty() {
        return Err("`redundant_indexes` needs `tables`".into());
    }
    let health_path = raw.health_path.unwrap_or_else(|| "/healthz".into());
    if !health_path.starts_with('/') {
        return Err("`health_path` must start with /".into());
    }
    Ok(RedundantIndexes {
        tables: raw.tables,
        health_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn redundant_indexes_needs_tables() {
        assert!(parse_redundant_indexes(v("tables = []")).is_err());
    }
}
