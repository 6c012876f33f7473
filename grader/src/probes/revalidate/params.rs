//! Typed parameters of the `revalidate` probe (its code is in `engine/probes/revalidate.rs`):
//! read a resource, judge its validators, then revalidate it with conditional requests and judge
//! each 304 against the 200 it stands for.
//!
//! Steps cannot say "Last-Modified is not later than Date" or "the 304 repeats the 200's Vary,
//! whether or not it had one": both compare two headers, or two responses, with each other.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::probes::request::{request, template_strings, ProbeRequest};
use crate::spec::RequestSpec;

/// A validator the 200 must carry (RFC 9110 §8.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// An `ETag`, strong or weak.
    Etag,
    /// A strong `ETag` (no `W/`): the only kind `If-Match` can match (§13.1.1).
    StrongEtag,
    /// A `Last-Modified` HTTP-date, not later than the response's `Date` (§8.8.2.1).
    LastModified,
}

/// A conditional GET the probe sends after the first read; each must answer 304.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `If-None-Match` with the ETag as the 200 sent it.
    IfNoneMatch,
    /// `If-None-Match` with the weak form of that ETag (`W/"..."`): If-None-Match compares weakly.
    IfNoneMatchWeak,
    /// `If-Modified-Since` with the 200's `Last-Modified`.
    IfModifiedSince,
}

impl Condition {
    /// How messages name the conditional request.
    pub fn describe(self) -> &'static str {
        match self {
            Condition::IfNoneMatch => "If-None-Match with the current ETag",
            Condition::IfNoneMatchWeak => {
                "If-None-Match with the weak form (W/) of the current ETag"
            }
            Condition::IfModifiedSince => "If-Modified-Since with the current Last-Modified",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Revalidate {
    /// Requests sent first, in order, each judged like an `upstream_calls` request (create the
    /// resource, change it).
    pub setup: Vec<ProbeRequest>,
    /// The GET of the resource (path and headers; templates allowed). It must answer 200.
    pub read: RequestSpec,
    pub validators: Vec<Validator>,
    pub conditions: Vec<Condition>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevalidate {
    #[serde(default)]
    setup: Vec<toml::Value>,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    validators: Vec<String>,
    #[serde(default)]
    conditions: Vec<String>,
}

const VALIDATORS: &str = "\"etag\", \"strong-etag\", \"last-modified\"";
const CONDITIONS: &str = "\"if-none-match\", \"if-none-match-weak\", \"if-modified-since\"";

pub fn parse(params: toml::Value) -> Result<Revalidate, String> {
    let raw: RawRevalidate = params
        .try_into()
        .map_err(|e: toml::de::Error| format!("params of `revalidate`: {}", e.message()))?;
    if !raw.path.starts_with('/') {
        return Err(format!("params.path \"{}\" must start with /", raw.path));
    }
    let validators = raw
        .validators
        .iter()
        .map(|v| match v.as_str() {
            "etag" => Ok(Validator::Etag),
            "strong-etag" => Ok(Validator::StrongEtag),
            "last-modified" => Ok(Validator::LastModified),
            other => Err(format!("unknown validator \"{other}\"; use {VALIDATORS}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = raw
        .conditions
        .iter()
        .map(|c| match c.as_str() {
            "if-none-match" => Ok(Condition::IfNoneMatch),
            "if-none-match-weak" => Ok(Condition::IfNoneMatchWeak),
            "if-modified-since" => Ok(Condition::IfModifiedSince),
            other => Err(format!("unknown condition \"{other}\"; use {CONDITIONS}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if validators.is_empty() && conditions.is_empty() {
        return Err(format!(
            "`revalidate` needs `validators` ({VALIDATORS}) or `conditions` ({CONDITIONS}), or both"
        ));
    }
    let setup = raw
        .setup
        .into_iter()
        .enumerate()
        .map(|(i, v)| request("revalidate", i, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Revalidate {
        setup,
        read: RequestSpec {
            method: "GET".into(),
            path: raw.path,
            headers: raw.headers.into_iter().collect(),
            body: None,
        },
        validators,
        conditions,
    })
}

impl Revalidate {
    /// Template strings the probe renders, for the static variable check.
    pub fn template_strings(&self) -> Vec<String> {
        let mut out = template_strings(&self.setup, None);
        out.push(self.read.path.clone());
        out.extend(self.read.headers.iter().map(|(_, v)| v.clone()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_toml(text: &str) -> Result<Revalidate, String> {
        parse(toml::from_str::<toml::Value>(text).unwrap())
    }

    #[test]
    fn parses_validators_conditions_and_setup() {
        let p = parse_toml(
            r#"
            path = "/pages/{{page}}"
            validators = ["strong-etag", "last-modified"]
            conditions = ["if-none-match", "if-none-match-weak"]
            [[setup]]
            method = "PUT"
            path = "/pages/{{page}}"
            json = { title = "t" }
            status = 201
            "#,
        )
        .unwrap();
        assert_eq!(
            p.validators,
            [Validator::StrongEtag, Validator::LastModified]
        );
        assert_eq!(p.conditions.len(), 2);
        assert_eq!(p.setup.len(), 1);
        assert!(p
            .template_strings()
            .contains(&"/pages/{{page}}".to_string()));
    }

    #[test]
    fn refuses_unknown_names_and_empty_params() {
        assert!(parse_toml("path = \"/x\"\nvalidators = [\"etags\"]")
            .unwrap_err()
            .contains("unknown validator"));
        assert!(parse_toml("path = \"/x\"")
            .unwrap_err()
            .contains("needs `validators`"));
        assert!(parse_toml("path = \"x\"\nconditions = [\"if-none-match\"]")
            .unwrap_err()
            .contains("must start with /"));
    }
}
