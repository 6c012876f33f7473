//! `consumed_payments` parameters: how the resource is placed and read, what a settlement message
//! looks like, and the scenario.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::probes::request::{de, duration_or, query, request, ProbeRequest};
use crate::spec::JsonQuery;

/// Variables of the probe's own: `{{purchase_id}}` (the placed resource's id, with its JSON
/// type), and in a message `{{event_id}}` and `{{amount}}`; in a poison message also
/// `{{unknown_purchase_id}}` (an id of the same form that names nothing).
pub const PROBE_VARS: &[&str] = &["purchase_id", "event_id", "amount", "unknown_purchase_id"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Duplicates,
    Crash,
    Poison,
}

/// A message that can never be processed: a raw body, or a JSON template.
#[derive(Debug, Clone)]
pub enum Poison {
    Raw(String),
    Json(Value),
}

#[derive(Debug, Clone)]
pub struct Params {
    pub exchange: String,
    pub routing_key: String,
    /// The service's queue, which must exist.
    pub queue: String,
    /// Where rejected messages must end up (`poison`).
    pub dead_letter_queue: Option<String>,
    pub place: ProbeRequest,
    pub id: JsonQuery,
    /// Reads the resource; knows `{{purchase_id}}`.
    pub read: ProbeRequest,
    /// The applied total in the read response, e.g. `$.paid_cents`.
    pub paid: JsonQuery,
    /// A white-box read of the applied total (`$1` is the id as text).
    pub paid_sql: Option<String>,
    /// The settlement message's JSON body, a template knowing `{{event_id}}`,
    /// `{{purchase_id}}` and `{{amount}}`.
    pub message: Value,
    pub scenario: Scenario,
    /// Distinct payments published (1 to 10).
    pub payments: usize,
    pub amount: (i64, i64),
    pub poison: Vec<Poison>,
    /// How long a payment may take to be applied (after its publication, or the restart).
    pub wait: Duration,
    /// How long the total must then stay put (late duplicates).
    pub settle: Duration,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConsumedPaymentsParams")]
pub struct Raw {
    exchange: String,
    routing_key: String,
    queue: String,
    dead_letter_queue: Option<String>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    place: toml::Value,
    id: Option<String>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    read: toml::Value,
    paid: String,
    paid_sql: Option<String>,
    #[schemars(with = "serde_json::Value")]
    message: toml::Value,
    scenario: String,
    payments: Option<usize>,
    amount: [i64; 2],
    #[serde(default)]
    poison: Vec<RawPoison>,
    wait: Option<String>,
    settle: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConsumedPaymentsPoison")]
pub struct RawPoison {
    body: Option<String>,
    #[schemars(with = "Option<serde_json::Value>")]
    json: Option<toml::Value>,
}

pub fn parse(params: toml::Value) -> Result<Params, String> {
    let raw: Raw = de("params of `consumed_payments`", params)?;
    let scenario = match raw.scenario.as_str() {
        "duplicates" => Scenario::Duplicates,
        "crash" => Scenario::Crash,
        "poison" => Scenario::Poison,
        other => {
            return Err(format!(
                "unknown scenario `{other}`: use duplicates, crash or poison"
            ))
        }
    };
    let payments = raw.payments.unwrap_or(match scenario {
        Scenario::Duplicates => 3,
        Scenario::Crash => 2,
        Scenario::Poison => 1,
    });
    if !(1..=10).contains(&payments) {
        return Err("`payments` must be from 1 to 10".into());
    }
    let [lo, hi] = raw.amount;
    if lo < 1 || hi < lo {
        return Err("`amount` is [low, high] with 1 <= low <= high".into());
    }
    let message = serde_json::to_value(&raw.message).map_err(|e| e.to_string())?;
    if !message.is_object() {
        return Err("`message` is the settlement message's JSON body, a table".into());
    }
    let vars = crate::spec::template::variables_in_json(&message)?;
    for needed in ["event_id", "purchase_id", "amount"] {
        if !vars.iter().any(|v| v == needed) {
            return Err(format!("`message` must use {{{{{needed}}}}}"));
        }
    }
    let poison = raw
        .poison
        .into_iter()
        .map(|p| match (p.body, p.json) {
            (Some(body), None) => Ok(Poison::Raw(body)),
            (None, Some(json)) => serde_json::to_value(&json)
                .map(Poison::Json)
                .map_err(|e| e.to_string()),
            _ => Err("each `poison` message has either `body` (raw text) or `json`".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if scenario == Scenario::Poison && (poison.is_empty() || raw.dead_letter_queue.is_none()) {
        return Err("the `poison` scenario needs `poison` messages and `dead_letter_queue`".into());
    }
    if scenario != Scenario::Poison && !poison.is_empty() {
        return Err("`poison` messages belong to the `poison` scenario".into());
    }
    if let Some(sql) = &raw.paid_sql {
        if !sql.contains("$1") || sql.contains("$2") || sql.contains("{{") {
            return Err("`paid_sql` takes the id as $1 (text) and nothing else, e.g. SELECT paid_cents FROM purchases WHERE id::text = $1".into());
        }
    }
    let secs = Duration::from_secs;
    let wait = duration_or("wait", raw.wait.as_deref(), secs(5), secs(30))?;
    let settle = duration_or("settle", raw.settle.as_deref(), secs(1), secs(10))?;
    Ok(Params {
        exchange: raw.exchange,
        routing_key: raw.routing_key,
        queue: raw.queue,
        dead_letter_queue: raw.dead_letter_queue,
        place: request("consumed_payments", 0, raw.place)?,
        id: query(raw.id.as_deref().unwrap_or("$.id"))?,
        read: request("consumed_payments", 1, raw.read)?,
        paid: query(&raw.paid)?,
        paid_sql: raw.paid_sql,
        message,
        scenario,
        payments,
        amount: (lo, hi),
        poison,
        wait,
        settle,
    })
}

impl Params {
    pub fn template_strings(&self) -> Vec<String> {
        let requests = vec![self.place.clone(), self.read.clone()];
        crate::probes::request::template_strings_except(&requests, PROBE_VARS)
    }

    /// The crash scenario kills and restarts the service: its exercise is graded alone.
    pub fn restarts_service(&self) -> bool {
        self.scenario == Scenario::Crash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(extra: &str) -> Result<Params, String> {
        let text = format!(
            "exchange = \"shop.events\"\nrouting_key = \"payment.settled\"\nqueue = \"q\"\npaid = \"$.paid_cents\"\namount = [1, 10]\n{extra}\nmessage = {{ event_id = \"{{{{event_id}}}}\", purchase_id = \"{{{{purchase_id}}}}\", amount_cents = \"{{{{amount}}}}\" }}\n[place]\nmethod = \"POST\"\npath = \"/p\"\n[read]\nmethod = \"GET\"\npath = \"/p/{{{{purchase_id}}}}\"\n"
        );
        parse(toml::from_str(&text).unwrap())
    }

    #[test]
    fn scenarios_and_their_needs() {
        assert!(parse_text("scenario = \"duplicates\"").is_ok());
        assert!(parse_text("scenario = \"crash\"")
            .unwrap()
            .restarts_service());
        assert!(parse_text("scenario = \"twice\"")
            .unwrap_err()
            .contains("unknown scenario"));
        assert!(parse_text("scenario = \"poison\"")
            .unwrap_err()
            .contains("dead_letter_queue"));
        assert!(parse_text(
            "scenario = \"poison\"\ndead_letter_queue = \"d\"\npoison = [{ body = \"x\" }]"
        )
        .is_ok());
        assert!(parse_text("scenario = \"duplicates\"\npoison = [{ body = \"x\" }]").is_err());
        assert!(parse_text("scenario = \"duplicates\"\npaid_sql = \"SELECT 1\"").is_err());
    }
}
