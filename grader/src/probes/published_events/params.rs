//! `published_events` parameters: how resources are placed and cancelled, what the service
//! publishes for them, and what is judged.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{
    de, duration_or, query, request, upstream, ProbeRequest, UpstreamParams,
};
use crate::spec::{JsonQuery, StatusSpec};

/// Variables the probe sets for its own requests: `{{n}}` (1, 2, ... per placed resource) and
/// `{{purchase_id}}` (the placed resource's id as text, for the cancel request).
pub const PROBE_VARS: &[&str] = &["n", "purchase_id"];

/// What the probe judges, chosen per check so that each check fails for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// Each placed resource has exactly one created event; each cancelled one exactly one
    /// cancelled event; no other resource of the check has a cancelled event.
    Once,
    /// A created event's body repeats the request's `fields`, its `type` is its routing key, its
    /// resource id is the API's, and it has an `event_id` and an RFC 3339 `occurred_at`.
    Fields,
    /// `message_id` equals the body's `event_id`; distinct facts have distinct ids;
    /// `content_type` is JSON; messages are persistent.
    Ids,
    /// Per resource, the created event arrives before the cancelled one.
    Order,
    /// The placed requests were refused: no created event names them, and the table's row count
    /// (`rows_sql`) did not change.
    Nothing,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub exchange: String,
    /// Binding keys of the grader's queue (`purchase.*`).
    pub listen: Vec<String>,
    pub created_key: String,
    pub cancelled_key: String,
    /// Places one resource; knows `{{n}}` and the exercise's variables (fresh for each).
    pub place: ProbeRequest,
    /// Where the new resource's id is in the place response (default `$.id`).
    pub id: JsonQuery,
    /// How many resources are placed (1 to 20).
    pub count: usize,
    /// Cancels one; knows `{{purchase_id}}`. Required when `cancel_count > 0`.
    pub cancel: Option<ProbeRequest>,
    /// How many of the placed resources are cancelled, the first ones (0 to `count`).
    pub cancel_count: usize,
    /// Sent once more for each cancelled resource after all cancels (knows `{{purchase_id}}`):
    /// a second cancel, which must be refused and publish nothing (`once` counts).
    pub repeat_cancel: Option<ProbeRequest>,
    /// Cut the service off the broker while placing and cancelling, then SIGKILL it, restore the
    /// broker and restart it.
    pub outage: bool,
    /// With `outage`: kill and restart the service (default); `false` restores the broker while
    /// the service runs, so it must reconnect by itself.
    pub restart: bool,
    /// With `outage`: resources placed before the cut, whose events are awaited first; after the
    /// restart or reconnection they must not be published again.
    pub before_outage: usize,
    /// With `outage`: each request must be answered within this (the README's promise).
    pub answer_within: Duration,
    pub judge: Vec<Judge>,
    /// Fields of the place request's JSON body that a created event must repeat.
    pub fields: Vec<String>,
    /// How long events may take (after the last request, or after the restart).
    pub wait: Duration,
    /// For `nothing`: a read-only query giving one count, e.g. `SELECT count(*) FROM purchases`.
    pub rows_sql: Option<String>,
    /// For `nothing`: the statuses that mean "refused".
    pub refused: Option<StatusSpec>,
    /// A mock upstream's behaviour for this check (the stock service refusing, say).
    pub upstream: Option<UpstreamParams>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PublishedEventsParams")]
pub struct Raw {
    exchange: String,
    listen: Vec<String>,
    created_key: String,
    cancelled_key: Option<String>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    place: toml::Value,
    id: Option<String>,
    count: usize,
    #[schemars(with = "Option<crate::probes::request::RawRequest>")]
    cancel: Option<toml::Value>,
    #[serde(default)]
    cancel_count: usize,
    #[schemars(with = "Option<crate::probes::request::RawRequest>")]
    repeat_cancel: Option<toml::Value>,
    #[serde(default)]
    outage: bool,
    restart: Option<bool>,
    #[serde(default)]
    before_outage: usize,
    answer_within: Option<String>,
    judge: Vec<String>,
    #[serde(default)]
    fields: Vec<String>,
    wait: Option<String>,
    rows_sql: Option<String>,
    #[schemars(with = "Option<crate::probes::request::RawUpstream>")]
    upstream: Option<toml::Value>,
}

pub fn parse(params: toml::Value) -> Result<Params, String> {
    let raw: Raw = de("params of `published_events`", params)?;
    if !(1..=20).contains(&raw.count) {
        return Err("`count` must be from 1 to 20".into());
    }
    if raw.cancel_count > raw.count {
        return Err("`cancel_count` cannot exceed `count`".into());
    }
    if raw.listen.is_empty() {
        return Err("`listen` needs at least one binding key, e.g. [\"purchase.*\"]".into());
    }
    let judge = raw
        .judge
        .iter()
        .map(|j| match j.as_str() {
            "once" => Ok(Judge::Once),
            "fields" => Ok(Judge::Fields),
            "ids" => Ok(Judge::Ids),
            "order" => Ok(Judge::Order),
            "nothing" => Ok(Judge::Nothing),
            other => Err(format!(
                "unknown judge `{other}`: use once, fields, ids, order or nothing"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if judge.is_empty() {
        return Err("`judge` names what to check: once, fields, ids, order or nothing".into());
    }
    let cancel = raw
        .cancel
        .map(|v| request("published_events", 1, v))
        .transpose()?;
    if raw.cancel_count > 0 && cancel.is_none() {
        return Err("`cancel_count` needs a `cancel` request".into());
    }
    let cancelled_key = raw.cancelled_key.unwrap_or_default();
    if (raw.cancel_count > 0 || judge.contains(&Judge::Order)) && cancelled_key.is_empty() {
        return Err("cancelling needs `cancelled_key`, the routing key of its event".into());
    }
    if judge.contains(&Judge::Order) && raw.cancel_count == 0 {
        return Err("`order` compares created and cancelled events: set `cancel_count`".into());
    }
    if judge.contains(&Judge::Fields) && raw.fields.is_empty() {
        return Err("`fields` judges the request's fields in the event: list them".into());
    }
    let place = request("published_events", 0, raw.place)?;
    let nothing = judge.contains(&Judge::Nothing);
    if nothing && judge.len() > 1 {
        return Err("`nothing` (refused requests) cannot be judged with other judges".into());
    }
    let refused = if nothing {
        let Some(status) = place.expect.status.clone() else {
            return Err(
                "`nothing` needs the refusal status on the place request (`expect.status`)".into(),
            );
        };
        if raw.rows_sql.is_none() {
            return Err("`nothing` needs `rows_sql`, a query counting the table's rows".into());
        }
        Some(status)
    } else {
        None
    };
    if let Some(sql) = &raw.rows_sql {
        if sql.contains('$') || sql.contains("{{") {
            return Err("`rows_sql` takes no parameters: a count of the whole table".into());
        }
    }
    if raw.restart.is_some() && !raw.outage {
        return Err("`restart` says what follows an `outage`: set `outage = true`".into());
    }
    if raw.before_outage > 0 && !raw.outage {
        return Err(
            "`before_outage` places resources before an `outage`: set `outage = true`".into(),
        );
    }
    if raw.before_outage > 5 {
        return Err("`before_outage` is at most 5".into());
    }
    if raw.outage && nothing {
        return Err(
            "`outage` places resources the service must accept; `nothing` refuses them".into(),
        );
    }
    let secs = Duration::from_secs;
    let wait = duration_or("wait", raw.wait.as_deref(), secs(5), secs(30))?;
    let answer_within = duration_or(
        "answer_within",
        raw.answer_within.as_deref(),
        secs(5),
        secs(10),
    )?;
    Ok(Params {
        exchange: raw.exchange,
        listen: raw.listen,
        created_key: raw.created_key,
        cancelled_key,
        place,
        id: query(raw.id.as_deref().unwrap_or("$.id"))?,
        count: raw.count,
        cancel,
        cancel_count: raw.cancel_count,
        repeat_cancel: raw
            .repeat_cancel
            .map(|v| request("published_events", 2, v))
            .transpose()?,
        outage: raw.outage,
        restart: raw.restart.unwrap_or(true),
        before_outage: raw.before_outage,
        answer_within,
        judge,
        fields: raw.fields,
        wait,
        rows_sql: raw.rows_sql,
        refused,
        upstream: raw.upstream.map(upstream).transpose()?,
    })
}

impl Params {
    pub fn template_strings(&self) -> Vec<String> {
        let mut requests = vec![self.place.clone()];
        requests.extend(self.cancel.iter().cloned());
        requests.extend(self.repeat_cancel.iter().cloned());
        let mut strings = crate::probes::request::template_strings_except(&requests, PROBE_VARS);
        strings.extend(self.upstream.iter().flat_map(|u| u.key.clone()));
        strings
    }

    /// It kills and restarts the service: its exercise is graded alone.
    pub fn restarts_service(&self) -> bool {
        self.outage
    }

    /// What the service went through, for messages.
    pub fn ordeal(&self) -> &'static str {
        match (self.outage, self.restart) {
            (false, _) => "",
            (true, true) => {
                "placed while the broker was unreachable, published after a SIGKILL and restart"
            }
            (true, false) => "placed while the broker was unreachable, published once it was back",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(extra: &str) -> Result<Params, String> {
        let text = format!(
            "exchange = \"shop.events\"\nlisten = [\"purchase.*\"]\ncreated_key = \"purchase.created\"\ncount = 3\n{extra}\n[place]\nmethod = \"POST\"\npath = \"/purchases\"\njson = {{ customer = \"x\" }}\nstatus = 201\n"
        );
        parse(toml::from_str(&text).unwrap())
    }

    #[test]
    fn judges_are_named_and_consistent() {
        assert!(parse_text("judge = [\"once\"]").is_ok());
        assert!(parse_text("judge = []").unwrap_err().contains("judge"));
        assert!(parse_text("judge = [\"twice\"]")
            .unwrap_err()
            .contains("unknown judge"));
        assert!(parse_text("judge = [\"fields\"]")
            .unwrap_err()
            .contains("fields"));
        assert!(parse_text("judge = [\"order\"]").is_err());
        assert!(parse_text("judge = [\"nothing\"]")
            .unwrap_err()
            .contains("rows_sql"));
        assert!(parse_text("judge = [\"nothing\", \"once\"]").is_err());
        assert!(parse_text("judge = [\"nothing\"]\nrows_sql = \"SELECT count(*) FROM p\"").is_ok());
        assert!(parse_text("judge = [\"once\"]\ncancel_count = 4").is_err());
        assert!(parse_text("judge = [\"once\"]\ncancel_count = 1")
            .unwrap_err()
            .contains("cancel"));
    }

    #[test]
    fn outage_restarts_the_service() {
        let p = parse_text("judge = [\"once\"]\noutage = true").unwrap();
        assert!(p.restarts_service());
        assert_eq!(p.answer_within, Duration::from_secs(5));
        assert!(!parse_text("judge = [\"once\"]").unwrap().restarts_service());
        assert!(parse_text("judge = [\"once\"]\nrestart = false").is_err());
        let reconnect = parse_text("judge = [\"once\"]\noutage = true\nrestart = false").unwrap();
        assert!(!reconnect.restart);
    }
}
