//! `grpc_shutdown` parameters.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::probes::request::{de, duration};
use crate::spec::predicate;

#[derive(Debug, Clone)]
pub struct GrpcShutdown {
    /// The service whose health is asked besides the whole server's (`""`), and whose
    /// reflection describes the methods.
    pub service: String,
    /// The call in flight when the signal comes: it waits on `upstream`'s `route`.
    pub in_flight: CallParams,
    pub upstream: String,
    pub route: String,
    /// The route's delay during the check.
    pub delay: Duration,
    /// A call sent on a new connection `new_call_at` after the signal: it must be answered `OK`.
    pub new_call: CallParams,
    pub new_call_at: Duration,
    /// Health must say `NOT_SERVING` this soon after the signal.
    pub not_serving_within: Duration,
    /// The server must keep answering this long after the signal.
    pub serves_for: Duration,
    /// The process must be gone, with status 0, this long after the signal.
    pub exits_within: Duration,
}

#[derive(Debug, Clone)]
pub struct CallParams {
    pub method: String,
    pub json: Value,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcShutdownCall")]
pub struct RawCall {
    method: String,
    #[schemars(with = "serde_json::Value")]
    json: toml::Value,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcShutdownParams")]
pub struct Raw {
    service: String,
    in_flight: RawCall,
    upstream: String,
    route: String,
    delay: String,
    new_call: RawCall,
    new_call_at: String,
    not_serving_within: String,
    serves_for: String,
    exits_within: String,
}

fn call(raw: RawCall) -> Result<CallParams, String> {
    Ok(CallParams {
        method: raw.method,
        json: predicate::to_json(&raw.json)?,
    })
}

pub fn parse(params: toml::Value) -> Result<GrpcShutdown, String> {
    let raw: Raw = de("params of `grpc_shutdown`", params)?;
    let p = GrpcShutdown {
        service: raw.service,
        in_flight: call(raw.in_flight)?,
        upstream: raw.upstream,
        route: raw.route,
        delay: duration("delay", &raw.delay)?,
        new_call: call(raw.new_call)?,
        new_call_at: duration("new_call_at", &raw.new_call_at)?,
        not_serving_within: duration("not_serving_within", &raw.not_serving_within)?,
        serves_for: duration("serves_for", &raw.serves_for)?,
        exits_within: duration("exits_within", &raw.exits_within)?,
    };
    if p.new_call_at >= p.serves_for {
        return Err("`new_call_at` falls within `serves_for`: the new call must come while the server still serves".into());
    }
    if p.not_serving_within >= p.serves_for {
        return Err("`not_serving_within` is shorter than `serves_for`".into());
    }
    if p.delay.is_zero() || p.delay >= p.exits_within {
        return Err("`delay` is above 0 and shorter than `exits_within`: the call in flight must be able to finish".into());
    }
    Ok(p)
}
