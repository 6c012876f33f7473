//! `contract` parameters.
//!
//! ```toml
//! probe = "contract"
//! [check.params]
//! document = "/openapi.json"                # the document every response is held to
//! deprecated = ["GET /listings/{id}/price"] # operations that must announce their retirement
//! [[check.params.request]]                  # sent in order; see probes/request.rs
//! method = "POST"
//! path = "/listings"
//! json = { title = "{{title}}" }
//! status = 201
//! capture = { listing = { header = "Location" } }
//! ```

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::openapi_document::params::operations;
use crate::probes::request::{self, de, ProbeRequest};

#[derive(Debug, Clone)]
pub struct Contract {
    pub document: String,
    /// Operation keys (`GET /listings/{}/price`).
    pub deprecated: Vec<String>,
    pub requests: Vec<ProbeRequest>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ContractParams")]
pub struct Raw {
    /// Where the service serves the document every response is held to; `/openapi.json` when
    /// absent.
    document: Option<String>,
    /// Operations (`METHOD /path/{param}`) that must be marked `deprecated: true` in the document
    /// and send `Deprecation` and `Sunset` on every response.
    #[serde(default)]
    deprecated: Vec<String>,
    /// The requests, sent in order.
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    request: Vec<toml::Value>,
}

pub fn parse(params: toml::Value) -> Result<Contract, String> {
    let raw: Raw = de("params of `contract`", params)?;
    let document = raw.document.unwrap_or_else(|| "/openapi.json".into());
    if !document.starts_with('/') {
        return Err(format!("params.document \"{document}\" must start with /"));
    }
    if raw.request.is_empty() {
        return Err("params of `contract`: at least one [[check.params.request]]; a check that sends nothing measures nothing".into());
    }
    let requests = raw
        .request
        .into_iter()
        .enumerate()
        .map(|(i, v)| request::request("contract", i, v))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(r) = requests
        .iter()
        .find(|r| r.same_as.is_some() || !r.at.is_zero())
    {
        return Err(format!(
            "params of `contract`, {}: `same_as` and `at` go with other probes; contract requests are sent one after another",
            r.name
        ));
    }
    Ok(Contract {
        document,
        deprecated: operations("contract", &raw.deprecated)?,
        requests,
    })
}

impl Contract {
    pub fn template_strings(&self) -> Vec<String> {
        request::template_strings(&self.requests, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_refuses_none() {
        let p = parse(
            toml::from_str(
                "deprecated = [\"GET /l/{id}/price\"]\n[[request]]\nmethod = \"GET\"\npath = \"/l\"\nstatus = 200",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p.document, "/openapi.json");
        assert_eq!(p.deprecated, ["GET /l/{}/price"]);
        assert_eq!(p.requests.len(), 1);
        let err = parse(toml::from_str("request = []").unwrap()).unwrap_err();
        assert!(err.contains("measures nothing"), "{err}");
    }
}
