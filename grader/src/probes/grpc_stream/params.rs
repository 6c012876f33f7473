//! `grpc_stream` parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::probes::db_params::{parse_answers, parse_sample, Answer};
use crate::probes::request::{de, duration};
use crate::spec::predicate;

#[derive(Debug, Clone)]
pub struct GrpcStream {
    pub service: String,
    /// `package.Service/Method`, server streaming.
    pub method: String,
    /// The request message as JSON (no templates).
    pub json: Value,
    pub sample: Vec<(String, String)>,
    pub order: Option<Order>,
    pub pace: Option<Pace>,
}

/// Read `read` messages, compare them with `answer` (its `items` select from the array of
/// messages read).
#[derive(Debug, Clone)]
pub struct Order {
    pub read: usize,
    pub answer: Answer,
}

#[derive(Debug, Clone)]
pub struct Pace {
    /// Messages read before the pause.
    pub read: usize,
    /// Nothing read for this long, then the call is cancelled.
    pub pause: Duration,
    /// Waited after the cancellation before the rows are counted: the service has this long to
    /// stop.
    pub after_cancel: Duration,
    /// Statements naming one of these tables count (cursor `FETCH`es always do).
    pub tables: Vec<String>,
    /// At most this many rows returned.
    pub max_rows: i64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcStreamParams")]
pub struct Raw {
    service: String,
    method: String,
    #[schemars(with = "serde_json::Value")]
    json: toml::Value,
    #[serde(default)]
    sample: BTreeMap<String, String>,
    order: Option<RawOrder>,
    pace: Option<RawPace>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcStreamOrder")]
pub struct RawOrder {
    read: usize,
    #[schemars(with = "crate::probes::db_params::RawAnswer")]
    answer: toml::Value,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcStreamPace")]
pub struct RawPace {
    read: usize,
    pause: String,
    after_cancel: String,
    tables: Vec<String>,
    max_rows: i64,
}

pub fn parse(params: toml::Value) -> Result<GrpcStream, String> {
    let raw: Raw = de("params of `grpc_stream`", params)?;
    let sample = parse_sample(raw.sample)?;
    let order = match raw.order {
        None => None,
        Some(o) => {
            if o.read == 0 {
                return Err("`order.read` is at least 1".into());
            }
            let mut answers = parse_answers(vec![o.answer], "request", |n| n == 1, &sample)?;
            Some(Order {
                read: o.read,
                answer: answers.remove(0),
            })
        }
    };
    let pace = match raw.pace {
        None => None,
        Some(p) => {
            if p.tables.is_empty() || p.max_rows < 1 || p.read == 0 {
                return Err("`pace` names the tables whose rows count, a `max_rows` of at least 1 and a `read` of at least 1".into());
            }
            Some(Pace {
                read: p.read,
                pause: duration("pace.pause", &p.pause)?,
                after_cancel: duration("pace.after_cancel", &p.after_cancel)?,
                tables: p.tables,
                max_rows: p.max_rows,
            })
        }
    };
    if order.is_none() && pace.is_none() {
        return Err(
            "`grpc_stream` judges the `order` of the messages, the `pace` of the reads, or both"
                .into(),
        );
    }
    Ok(GrpcStream {
        service: raw.service,
        method: raw.method,
        json: predicate::to_json(&raw.json)?,
        sample,
        order,
        pace,
    })
}
