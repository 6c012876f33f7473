//! Typed parameters of the `revalidate` probe (its code is in `engine/probes/revalidate.rs`):
//! read a resource, judge its validators, then revalidate it with conditional requests and judge
//! each 304 against the 200 it stands for.
//!
//! Steps cannot say "Last-Modified is not later than Date" or "the 304 repeats the 200's Vary,
//! whether or not it had one": both compare two headers, or two responses, with each other.
//! Nor can they wait between two writes (`rewrite`: the same content saved again later keeps its
//! validators) or fire writes together that all carry the ETag just read (`race`).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{
    de, duration, query, request, template_strings, template_strings_except, ProbeRequest,
};
use crate::spec::{BodySpec, JsonQuery, RequestSpec};

/// Variables the probe itself provides to `rewrite` and `race` requests: the read's ETag as the
/// service sent it, and the 1-based number of a racing writer.
pub const PROBE_VARS: &[&str] = &["etag", "writer"];

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
    /// Judge `validators` on every 2xx setup response to `path` too (the PUT that wrote the
    /// resource carries its validators), and require the last one's ETag to be the read's.
    pub setup_validators: bool,
    pub rewrite: Option<Rewrite>,
    pub race: Option<Race>,
}

/// The same content written again after a pause: a write that changes nothing must leave the
/// validators (ETag, Last-Modified) and the `keep` fields as they were.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// How long to wait after the read (longer than a second, so a bumped Last-Modified shows).
    pub after: Duration,
    pub request: ProbeRequest,
    /// JSONPaths of fields a read after the rewrite must show unchanged (`$.updated_at`).
    pub keep: Vec<JsonQuery>,
}

/// Conditional writes sent together, all based on the ETag just read: exactly one may win, the
/// others must answer 412, and a read afterwards shows the winner's write.
#[derive(Debug, Clone)]
pub struct Race {
    pub requests: Vec<ProbeRequest>,
    /// JSONPath of a field that tells the writers apart, in their request bodies and in the read.
    pub identity: JsonQuery,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RevalidateParams")]
pub struct RawRevalidate {
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    setup: Vec<toml::Value>,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    validators: Vec<String>,
    #[serde(default)]
    conditions: Vec<String>,
    #[serde(default)]
    setup_validators: bool,
    #[schemars(with = "Option<RawRewrite>")]
    rewrite: Option<toml::Value>,
    #[schemars(with = "Option<RawRace>")]
    race: Option<toml::Value>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RevalidateRewrite")]
pub struct RawRewrite {
    after: String,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    #[serde(default)]
    keep: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RevalidateRace")]
pub struct RawRace {
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    count: usize,
    identity: String,
}

/// Racing writers: enough to make a check-then-write race show, few enough for any service.
const RACE_WRITERS: std::ops::RangeInclusive<usize> = 2..=50;

const VALIDATORS: &str = "\"etag\", \"strong-etag\", \"last-modified\"";
const CONDITIONS: &str = "\"if-none-match\", \"if-none-match-weak\", \"if-modified-since\"";

pub fn parse(params: toml::Value) -> Result<Revalidate, String> {
    let raw: RawRevalidate = params
        .try_into()
        .map_err(|e: toml::de::Error| format!("params of `revalidate`: {}", e.message()))?;
    if !(raw.path.starts_with('/') || raw.path.starts_with("{{")) {
        return Err(format!(
            "params.path \"{}\" must start with / (or be a URL a set-up request captures, like \"{{{{account}}}}\")",
            raw.path
        ));
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
    if validators.is_empty() && conditions.is_empty() && raw.rewrite.is_none() && raw.race.is_none()
    {
        return Err(format!(
            "`revalidate` needs `validators` ({VALIDATORS}), `conditions` ({CONDITIONS}), `rewrite` or `race`"
        ));
    }
    if raw.setup_validators && validators.is_empty() {
        return Err("`setup_validators` judges the `validators` on the setup responses too, so it needs `validators`".into());
    }
    let rewrite = raw
        .rewrite
        .map(|v| -> Result<Rewrite, String> {
            let r: RawRewrite = de("params.rewrite", v)?;
            Ok(Rewrite {
                after: duration("params.rewrite.after", &r.after)?,
                request: request("revalidate", 0, r.request)?,
                keep: r.keep.iter().map(|k| query(k)).collect::<Result<_, _>>()?,
            })
        })
        .transpose()?;
    let race = raw
        .race
        .map(|v| -> Result<Race, String> {
            let r: RawRace = de("params.race", v)?;
            if !RACE_WRITERS.contains(&r.count) {
                return Err(format!(
                    "params.race.count must be from {} to {}",
                    RACE_WRITERS.start(),
                    RACE_WRITERS.end()
                ));
            }
            let one = request("revalidate", 0, r.request)?;
            if !matches!(one.spec.body, Some(BodySpec::Json(_))) {
                return Err("params.race.request needs a `json` body: the read after the race is compared with the winner's".into());
            }
            Ok(Race {
                requests: (1..=r.count)
                    .map(|n| ProbeRequest {
                        name: format!("{} (writer {n})", one.name.replace("request 1", "write")),
                        ..one.clone()
                    })
                    .collect(),
                identity: query(&r.identity)?,
            })
        })
        .transpose()?;
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
        setup_validators: raw.setup_validators,
        rewrite,
        race,
    })
}

impl Revalidate {
    /// Template strings the probe renders, for the static variable check.
    pub fn template_strings(&self) -> Vec<String> {
        let mut out = template_strings(&self.setup, None);
        out.push(self.read.path.clone());
        out.extend(self.read.headers.iter().map(|(_, v)| v.clone()));
        // `rewrite` and `race` requests also know the probe's own variables (PROBE_VARS).
        let mut later: Vec<ProbeRequest> = Vec::new();
        later.extend(self.rewrite.iter().map(|r| r.request.clone()));
        later.extend(self.race.iter().flat_map(|r| r.requests.first().cloned()));
        out.extend(template_strings_except(&later, PROBE_VARS));
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
        assert!(parse_toml(
            "path = \"/x\"\nconditions = [\"if-none-match\"]\nsetup_validators = true"
        )
        .unwrap_err()
        .contains("needs `validators`"));
        assert!(parse_toml("path = \"x\"\nconditions = [\"if-none-match\"]")
            .unwrap_err()
            .contains("must start with /"));
    }

    #[test]
    fn rewrite_and_race_parse_and_know_the_probe_variables() {
        let p = parse_toml(
            r#"
            path = "/pages/{{page}}"
            [rewrite]
            after = "1500ms"
            keep = ["$.updated_at"]
            request = { method = "PUT", path = "/pages/{{page}}", json = { title = "{{title}}" }, status = 200 }
            [race]
            count = 3
            identity = "$.title"
            request = { method = "PUT", path = "/pages/{{page}}", headers = { "If-Match" = "{{etag}}" }, json = { title = "{{new_title}} {{writer}}" }, status = [200, 412] }
            "#,
        )
        .unwrap();
        let rewrite = p.rewrite.as_ref().unwrap();
        assert_eq!(rewrite.after, Duration::from_millis(1500));
        assert_eq!(rewrite.keep[0].text, "$.updated_at");
        let race = p.race.as_ref().unwrap();
        assert_eq!(race.requests.len(), 3);
        assert_eq!(race.requests[2].name, "write (writer 3)");
        let strings = p.template_strings();
        // The probe's own variables are not the exercise's to define; the others are.
        assert!(strings
            .iter()
            .all(|s| !s.contains("{{etag}}") && !s.contains("{{writer}}")));
        assert!(strings.contains(&"{{new_title}}".to_string()));
        assert!(strings.contains(&"{{title}}".to_string()));

        let bad = |text: &str| parse_toml(text).unwrap_err();
        assert!(bad("path = \"/x\"\n[race]\ncount = 1\nidentity = \"$.t\"\nrequest = { method = \"PUT\", path = \"/x\", json = {} }")
            .contains("from 2 to 50"));
        assert!(bad("path = \"/x\"\n[race]\ncount = 2\nidentity = \"$.t\"\nrequest = { method = \"PUT\", path = \"/x\" }")
            .contains("needs a `json` body"));
        assert!(bad("path = \"/x\"\n[rewrite]\nafter = \"soon\"\nrequest = { method = \"PUT\", path = \"/x\" }")
            .contains("not a duration"));
    }
}
