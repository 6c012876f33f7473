//! `grpc_deadline` parameters.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::probes::request::{de, duration};
use crate::spec::predicate;

#[derive(Debug, Clone)]
pub struct GrpcDeadline {
    /// The service whose reflection describes the method.
    pub service: String,
    /// `package.Service/Method`.
    pub method: String,
    /// The request message as JSON (no templates: a fixed row of the data set).
    pub json: Value,
    /// One call per deadline, in order.
    pub deadlines: Vec<Duration>,
    /// `[upstreams.NAME]` and the route the service's work waits on.
    pub upstream: String,
    pub route: String,
    /// The route's delay during the check: longer than every deadline plus the slack.
    pub delay: Duration,
    /// How long past the deadline the call may end and the upstream request may stay open.
    pub slack: Duration,
    /// `OK` before the deadline is allowed (the README lets a service give up early).
    pub ok_before_deadline: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcDeadlineParams")]
pub struct Raw {
    service: String,
    method: String,
    #[schemars(with = "serde_json::Value")]
    json: toml::Value,
    deadlines: Vec<String>,
    upstream: String,
    route: String,
    delay: String,
    slack: String,
    #[serde(default)]
    ok_before_deadline: bool,
}

pub fn parse(params: toml::Value) -> Result<GrpcDeadline, String> {
    let raw: Raw = de("params of `grpc_deadline`", params)?;
    let deadlines = raw
        .deadlines
        .iter()
        .map(|d| duration("deadlines", d))
        .collect::<Result<Vec<_>, _>>()?;
    if deadlines.is_empty() || deadlines.iter().any(|d| d.is_zero()) {
        return Err("`deadlines` lists at least one deadline above 0".into());
    }
    let delay = duration("delay", &raw.delay)?;
    let slack = duration("slack", &raw.slack)?;
    let longest = deadlines.iter().max().copied().unwrap_or_default();
    if delay <= longest + slack {
        return Err(
            "`delay` must be longer than every deadline plus the slack: the upstream must still be waiting when the service should have given up"
                .into(),
        );
    }
    Ok(GrpcDeadline {
        service: raw.service,
        method: raw.method,
        json: predicate::to_json(&raw.json)?,
        deadlines,
        upstream: raw.upstream,
        route: raw.route,
        delay,
        slack,
        ok_before_deadline: raw.ok_before_deadline,
    })
}
