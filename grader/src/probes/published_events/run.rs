//! Place, cancel, (cut, kill, restore, restart), then count what arrived on the grader's queue.
//! The seed replays the data; it cannot replay when the service's relay runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::params::{Judge, Params};
use crate::engine::assert::{describe_json, shorten};
use crate::engine::broker::{self, Received};
use crate::engine::lifecycle::{self, seconds};
use crate::engine::step::build_request;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::upstream_calls::run::{identity_of, judge};
use crate::spec::template::text_of;

/// After every expected event has arrived, how long the grader goes on listening for duplicates.
const QUIET: Duration = Duration::from_secs(1);
/// Messages listed in a failure.
const SHOWN: usize = 12;

/// A resource the probe placed: its id as the API showed it, and the JSON body it sent.
struct Placed {
    id: Value,
    sent: Value,
    cancelled: bool,
}

pub async fn run(p: &Params, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let broker = broker::connect(ctx).await?;
    if let Some(u) = &p.upstream {
        crate::probes::upstream_calls::run::apply_behaviour(ctx, u)?;
    }
    let listener = broker.listen(&p.exchange, &p.listen).await?;
    let rows_before = match &p.rows_sql {
        Some(sql) => Some(count_rows(ctx, sql).await?),
        None => None,
    };

    // Published before the outage, seen, and given a quiet second to be recorded as published:
    // its event must not come again after the restart or the reconnection.
    let mut before = Vec::new();
    if p.outage && p.before_outage > 0 {
        before = place_n(p, ctx, p.before_outage, "").await?;
        listener
            .wait_for(p.wait, |got| all_arrived(p, &before, got))
            .await;
        tokio::time::sleep(QUIET).await;
    }
    let cut = if p.outage {
        Some(lifecycle::cut_broker(ctx)?)
    } else {
        None
    };
    let during = if p.outage {
        " while the broker was unreachable for your service"
    } else {
        ""
    };
    // Arrival times are measured from the first request, or from the restart after an outage.
    let mut started_waiting = Instant::now();
    let mut placed = match place_all(p, ctx, during).await {
        Ok(placed) => placed,
        Err(failure) => {
            // The broker back, and a service that died of the outage started again, so that
            // the checks after this one still grade it.
            drop(cut);
            lifecycle::revive_if_dead(ctx).await;
            return Err(failure);
        }
    };
    placed.splice(0..0, before);
    if let Some(cut) = cut {
        if p.restart {
            lifecycle::kill_service(ctx).await?;
            cut.restore();
            lifecycle::restart_service(ctx).await?;
        } else {
            cut.restore();
        }
        started_waiting = Instant::now();
    }

    let got = if p.judge.contains(&Judge::Nothing) {
        tokio::time::sleep(p.wait).await;
        listener.snapshot()
    } else {
        let complete = |got: &[Received]| all_arrived(p, &placed, got);
        let got = listener.wait_for(p.wait, complete).await;
        if all_arrived(p, &placed, &got) {
            tokio::time::sleep(QUIET).await;
        }
        listener.snapshot()
    };
    let waited = started_waiting.elapsed();
    let dropped = listener.dropped();
    drop(listener);
    broker.close().await;
    if dropped > 0 {
        ctx.measured(format!(
            "{dropped} more messages arrived than the grader keeps; they were counted, not read"
        ));
    }

    let events = Events::sort(p, &placed, &got);
    for judge in &p.judge {
        match judge {
            Judge::Once => events.once(p, &placed, waited, during)?,
            Judge::Fields => events.fields(p, &placed)?,
            Judge::Ids => events.ids()?,
            Judge::Order => events.order(p, &placed)?,
            Judge::Nothing => {
                let sql = p.rows_sql.as_deref().unwrap_or_default();
                let after = count_rows(ctx, sql).await?;
                events.nothing(p, &placed, rows_before.unwrap_or(after), after, sql)?;
            }
        }
    }
    ctx.measured(events.summary(p, &placed, started_waiting));
    Ok(())
}

/// Places `count` resources (each with fresh variables) and cancels the first `cancel_count`.
/// With an outage each answer must come within `answer_within`.
async fn place_all(
    p: &Params,
    ctx: &mut CheckContext<'_>,
    during: &str,
) -> Result<Vec<Placed>, Failure> {
    let mut placed = place_n(p, ctx, p.count, during).await?;
    cancel_some(p, ctx, &mut placed, during).await?;
    Ok(placed)
}

/// Places `count` resources, each with fresh variables. With `during` (an outage) each answer
/// must come within `answer_within`.
async fn place_n(
    p: &Params,
    ctx: &mut CheckContext<'_>,
    count: usize,
    during: &str,
) -> Result<Vec<Placed>, Failure> {
    let mut placed = Vec::with_capacity(count);
    for n in 1..=count {
        let mut scope = ctx.fresh_scope();
        scope.insert("n".into(), Value::from(n));
        ctx.scope.extend(scope);
        let req = build_request(ctx, &p.place.spec)?;
        let sent: Value = req
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let summary = format!("{} {}", req.method, req.url.path());
        let started = Instant::now();
        let resp = ctx
            .send(&p.place.name, req)
            .await
            .map_err(|f| amend(f, during))?;
        let took = started.elapsed();
        if let Some(info) = judge(ctx, &p.place, &summary, &resp, &[], &p.id)? {
            return Err(Failure::Fail(amend_info(info, during)));
        }
        if !during.is_empty() {
            answered_in_time(p, &p.place.name, &summary, took)?;
        }
        if p.refused.is_some() {
            placed.push(Placed {
                id: Value::Null,
                sent,
                cancelled: false,
            });
            continue;
        }
        let Some(id) = identity_of(&resp, &p.id).filter(|v| v.is_string() || v.is_number()) else {
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{} ({summary}): the response has no id at {}",
                    p.place.name, p.id.text
                ),
                expected: format!(
                    "the new resource's id (a string or a number) at {}",
                    p.id.text
                ),
                actual: shorten(&resp.text(), 200),
                ..Default::default()
            }));
        };
        placed.push(Placed {
            id,
            sent,
            cancelled: false,
        });
    }
    Ok(placed)
}

/// Cancels the first `cancel_count` of `placed`, then sends `repeat_cancel` for each.
async fn cancel_some(
    p: &Params,
    ctx: &mut CheckContext<'_>,
    placed: &mut [Placed],
    during: &str,
) -> Result<(), Failure> {
    if let Some(cancel) = &p.cancel {
        for item in placed.iter_mut().take(p.cancel_count) {
            ctx.scope
                .insert("purchase_id".into(), Value::String(text_of(&item.id)));
            let req = build_request(ctx, &cancel.spec)?;
            let summary = format!("{} {}", req.method, req.url.path());
            let started = Instant::now();
            let resp = ctx
                .send(&cancel.name, req)
                .await
                .map_err(|f| amend(f, during))?;
            let took = started.elapsed();
            if let Some(info) = judge(ctx, cancel, &summary, &resp, &[], &p.id)? {
                return Err(Failure::Fail(amend_info(info, during)));
            }
            if !during.is_empty() {
                answered_in_time(p, &cancel.name, &summary, took)?;
            }
            item.cancelled = true;
        }
    }
    if let Some(again) = &p.repeat_cancel {
        for item in placed.iter().filter(|i| i.cancelled) {
            ctx.scope
                .insert("purchase_id".into(), Value::String(text_of(&item.id)));
            let req = build_request(ctx, &again.spec)?;
            let summary = format!("{} {}", req.method, req.url.path());
            let resp = ctx
                .send(&again.name, req)
                .await
                .map_err(|f| amend(f, during))?;
            if let Some(info) = judge(ctx, again, &summary, &resp, &[], &p.id)? {
                return Err(Failure::Fail(amend_info(info, during)));
            }
        }
    }
    Ok(())
}

fn answered_in_time(p: &Params, name: &str, summary: &str, took: Duration) -> Result<(), Failure> {
    if took <= p.answer_within {
        return Ok(());
    }
    Err(Failure::Fail(FailInfo {
        message: format!(
            "{name} ({summary}) took {} while the broker was unreachable for your service: a request must not wait for the broker",
            seconds(took)
        ),
        expected: format!("an answer within {}", seconds(p.answer_within)),
        actual: format!("an answer after {}", seconds(took)),
        ..Default::default()
    }))
}

fn amend(f: Failure, during: &str) -> Failure {
    match f {
        Failure::Fail(info) => Failure::Fail(amend_info(info, during)),
        other => other,
    }
}

fn amend_info(mut info: FailInfo, during: &str) -> FailInfo {
    if !during.is_empty() {
        info.message = format!("{}{during}", info.message);
    }
    info
}

async fn count_rows(ctx: &CheckContext<'_>, sql: &str) -> Result<i64, Failure> {
    let client = crate::engine::sql::connect_service_db(ctx, false).await?;
    let row =
        crate::engine::sql::query_row(&client, "count the rows of your table", sql, &[]).await?;
    row.values()
        .next()
        .and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| {
            Failure::Error(format!(
                "`rows_sql` gave {}, not one count",
                describe_json(&Value::Object(row))
            ))
        })
}

/// Whether every event the probe expects has arrived at least once.
fn all_arrived(p: &Params, placed: &[Placed], got: &[Received]) -> bool {
    placed.iter().all(|item| {
        let created = got
            .iter()
            .any(|m| m.routing_key == p.created_key && names(m, &item.id));
        let cancelled = !item.cancelled
            || got
                .iter()
                .any(|m| m.routing_key == p.cancelled_key && names(m, &item.id));
        created && cancelled
    })
}

/// Whether a message's `purchase_id` names this resource (compared as text: a number sent as a
/// string still counts here; `fields` judges the JSON type).
fn names(m: &Received, id: &Value) -> bool {
    m.json()
        .and_then(|v| v.get("purchase_id").cloned())
        .is_some_and(|v| (v.is_string() || v.is_number()) && text_of(&v) == text_of(id))
}

/// The messages of one check, in arrival order, matched to the resources the probe placed.
struct Events<'a> {
    all: &'a [Received],
    /// Per placed resource: indexes into `all` of its created and cancelled events.
    created: Vec<Vec<usize>>,
    cancelled: Vec<Vec<usize>>,
}

impl<'a> Events<'a> {
    fn sort(p: &Params, placed: &[Placed], all: &'a [Received]) -> Self {
        let mut created = vec![Vec::new(); placed.len()];
        let mut cancelled = vec![Vec::new(); placed.len()];
        for (i, m) in all.iter().enumerate() {
            for (k, item) in placed.iter().enumerate() {
                if item.id.is_null() || !names(m, &item.id) {
                    continue;
                }
                if m.routing_key == p.created_key {
                    created[k].push(i);
                } else if !p.cancelled_key.is_empty() && m.routing_key == p.cancelled_key {
                    cancelled[k].push(i);
                }
            }
        }
        Events {
            all,
            created,
            cancelled,
        }
    }

    fn ours(&self) -> impl Iterator<Item = &'a Received> + '_ {
        let mut idx: Vec<usize> = self
            .created
            .iter()
            .chain(&self.cancelled)
            .flatten()
            .copied()
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| &self.all[i])
    }

    fn evidence(&self, indexes: &[usize]) -> Vec<String> {
        let mut lines: Vec<String> = indexes
            .iter()
            .take(SHOWN)
            .map(|&i| format!("message {}: {}", i + 1, self.all[i].describe()))
            .collect();
        if indexes.is_empty() {
            lines = self
                .all
                .iter()
                .take(SHOWN)
                .enumerate()
                .map(|(i, m)| format!("message {}: {}", i + 1, m.describe()))
                .collect();
            if lines.is_empty() {
                lines.push("no message at all arrived on the grader's queue".into());
            } else {
                lines.insert(0, "none of these messages names it:".into());
            }
        }
        lines
    }

    fn once(
        &self,
        p: &Params,
        placed: &[Placed],
        waited: Duration,
        during: &str,
    ) -> Result<(), Failure> {
        let after = if p.outage && p.restart {
            format!(
                " within {} of your service's restart (it had placed them{during}, then was killed with SIGKILL)",
                seconds(p.wait)
            )
        } else if p.outage {
            format!(
                " within {} of the broker becoming reachable again (your service placed it{during} and kept running: it must reconnect by itself)",
                seconds(p.wait)
            )
        } else {
            format!(" within {}", seconds(p.wait))
        };
        for (k, item) in placed.iter().enumerate() {
            let id = describe_json(&item.id);
            let checks = [
                (&self.created[k], &p.created_key, true, "placed"),
                (
                    &self.cancelled[k],
                    &p.cancelled_key,
                    item.cancelled,
                    "cancelled",
                ),
            ];
            for (found, key, expected, what) in checks {
                let wanted = usize::from(expected);
                if found.len() == wanted {
                    continue;
                }
                let message = if expected && found.is_empty() {
                    format!(
                        "the grader {what} purchase {id}, and no {key} event for it arrived{after}"
                    )
                } else if expected {
                    format!(
                        "{} {key} events arrived for purchase {id}: each fact must be published exactly once",
                        found.len()
                    )
                } else {
                    format!("a {key} event arrived for purchase {id}, which was never {what}")
                };
                return Err(Failure::Fail(FailInfo {
                    message,
                    expected: format!("exactly {wanted} {key} event for purchase {id}"),
                    actual: format!(
                        "{} (after listening for {})",
                        match found.len() {
                            0 => "none".to_string(),
                            n => format!("{n}"),
                        },
                        seconds(waited)
                    ),
                    evidence: self.evidence(found),
                    ..Default::default()
                }));
            }
        }
        Ok(())
    }

    fn fields(&self, p: &Params, placed: &[Placed]) -> Result<(), Failure> {
        let rfc3339 = regex::Regex::new(
            r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
        )
        .map_err(|e| Failure::Error(e.to_string()))?;
        for (k, item) in placed.iter().enumerate() {
            let events = self.created[k]
                .iter()
                .map(|&i| (i, &p.created_key, true))
                .chain(
                    self.cancelled[k]
                        .iter()
                        .map(|&i| (i, &p.cancelled_key, false)),
                );
            for (i, key, is_created) in events {
                let m = &self.all[i];
                let fail = |what: String, expected: String, actual: String| {
                    Failure::Fail(FailInfo {
                        message: format!(
                            "the {key} event for purchase {}: {what}",
                            describe_json(&item.id)
                        ),
                        expected,
                        actual,
                        evidence: vec![format!("message {}: {}", i + 1, m.describe())],
                        ..Default::default()
                    })
                };
                let Some(Value::Object(body)) = m.json() else {
                    return Err(fail(
                        "its body is not a JSON object".into(),
                        "a JSON object".into(),
                        shorten(&String::from_utf8_lossy(&m.body), 200),
                    ));
                };
                let get = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
                if get("type") != Value::String(key.clone()) {
                    return Err(fail(
                        "`type` is not its routing key".into(),
                        format!("\"type\": \"{key}\""),
                        format!("\"type\": {}", describe_json(&get("type"))),
                    ));
                }
                if get("purchase_id") != item.id {
                    return Err(fail(
                        "`purchase_id` is not the id exactly as your API shows it (the same JSON string or number)".into(),
                        format!("\"purchase_id\": {}", describe_json(&item.id)),
                        format!("\"purchase_id\": {}", describe_json(&get("purchase_id"))),
                    ));
                }
                match get("event_id") {
                    Value::String(s) if !s.is_empty() => {}
                    other => {
                        return Err(fail(
                            "it has no `event_id` string".into(),
                            "\"event_id\": a non-empty string".into(),
                            format!("\"event_id\": {}", describe_json(&other)),
                        ))
                    }
                }
                match get("occurred_at") {
                    Value::String(s) if rfc3339.is_match(&s) => {}
                    other => {
                        return Err(fail(
                            "`occurred_at` is not an RFC 3339 timestamp".into(),
                            "\"occurred_at\": \"2026-11-30T21:14:03Z\" (RFC 3339)".into(),
                            format!("\"occurred_at\": {}", describe_json(&other)),
                        ))
                    }
                }
                if !is_created {
                    continue;
                }
                for field in &p.fields {
                    let sent = item.sent.get(field).cloned().unwrap_or(Value::Null);
                    if get(field) != sent {
                        return Err(fail(
                            format!("`{field}` is not what the purchase was placed with"),
                            format!("\"{field}\": {}", describe_json(&sent)),
                            format!("\"{field}\": {}", describe_json(&get(field))),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn ids(&self) -> Result<(), Failure> {
        // event id → the facts (routing key, resource) that carried it.
        let mut facts: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        let mut first_with: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let ours: BTreeSet<usize> = self
            .created
            .iter()
            .chain(&self.cancelled)
            .flatten()
            .copied()
            .collect();
        for i in ours {
            let m = &self.all[i];
            let body = m.json().unwrap_or(Value::Null);
            let event_id = body.get("event_id").cloned().unwrap_or(Value::Null);
            let show = format!("message {}: {}", i + 1, m.describe());
            let fail = |message: String, expected: &str, actual: String| {
                Failure::Fail(FailInfo {
                    message,
                    expected: expected.into(),
                    actual,
                    evidence: vec![show.clone()],
                    ..Default::default()
                })
            };
            let Value::String(event_id) = event_id else {
                return Err(fail(
                    format!("a {} event has no `event_id` string", m.routing_key),
                    "\"event_id\": a string unique to the event",
                    format!("\"event_id\": {}", describe_json(&event_id)),
                ));
            };
            if m.message_id.as_deref() != Some(event_id.as_str()) {
                return Err(fail(
                    format!(
                        "a {} event's `message_id` property is not its `event_id`",
                        m.routing_key
                    ),
                    "message_id = the body's event_id",
                    format!(
                        "message_id = {}, event_id = {event_id}",
                        m.message_id.as_deref().unwrap_or("(not set)")
                    ),
                ));
            }
            let json = m
                .content_type
                .as_deref()
                .and_then(|c| c.split(';').next())
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Err(fail(
                    format!(
                        "a {} event's `content_type` property is not application/json",
                        m.routing_key
                    ),
                    "content_type = application/json",
                    format!(
                        "content_type = {}",
                        m.content_type.as_deref().unwrap_or("(not set)")
                    ),
                ));
            }
            if m.delivery_mode != Some(2) {
                return Err(fail(
                    format!("a {} event is not persistent", m.routing_key),
                    "delivery_mode = 2 (persistent)",
                    format!(
                        "delivery_mode = {}",
                        m.delivery_mode
                            .map_or("(not set)".into(), |d| d.to_string())
                    ),
                ));
            }
            let purchase = body.get("purchase_id").map(text_of).unwrap_or_default();
            facts
                .entry(event_id.clone())
                .or_default()
                .insert((m.routing_key.clone(), purchase));
            first_with.entry(event_id).or_default().push(i);
        }
        if let Some((id, shared)) = facts.iter().find(|(_, f)| f.len() > 1) {
            let listed: Vec<String> = shared
                .iter()
                .map(|(key, purchase)| format!("{key} of purchase {purchase}"))
                .collect();
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{} different events share the event id {id}: a consumer that drops duplicates by id would drop all but one",
                    shared.len()
                ),
                expected: "a different event_id for every event".into(),
                actual: listed.join("; "),
                evidence: self.evidence(&first_with[id]),
                ..Default::default()
            }));
        }
        Ok(())
    }

    fn order(&self, p: &Params, placed: &[Placed]) -> Result<(), Failure> {
        for (k, item) in placed.iter().enumerate() {
            if !item.cancelled {
                continue;
            }
            let id = describe_json(&item.id);
            let (Some(&created), Some(&cancelled)) =
                (self.created[k].first(), self.cancelled[k].first())
            else {
                let missing = if self.created[k].is_empty() {
                    &p.created_key
                } else {
                    &p.cancelled_key
                };
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "purchase {id} was placed and cancelled, and no {missing} event for it arrived within {} ({})",
                        seconds(p.wait),
                        p.ordeal()
                    ),
                    expected: format!("{} then {}", p.created_key, p.cancelled_key),
                    actual: format!("no {missing}"),
                    evidence: self.evidence(&[self.created[k].clone(), self.cancelled[k].clone()].concat()),
                    ..Default::default()
                }));
            };
            if cancelled < created {
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "purchase {id}'s {} event arrived before its {} event: a consumer would see a cancellation of a purchase it does not know",
                        p.cancelled_key, p.created_key
                    ),
                    expected: format!("{} before {}", p.created_key, p.cancelled_key),
                    actual: format!(
                        "{} as message {}, {} as message {}",
                        p.cancelled_key,
                        cancelled + 1,
                        p.created_key,
                        created + 1
                    ),
                    evidence: self.evidence(&[cancelled, created]),
                    ..Default::default()
                }));
            }
        }
        Ok(())
    }

    fn nothing(
        &self,
        p: &Params,
        placed: &[Placed],
        rows_before: i64,
        rows_after: i64,
        sql: &str,
    ) -> Result<(), Failure> {
        for item in placed {
            let matching: Vec<usize> = self
                .all
                .iter()
                .enumerate()
                .filter(|(_, m)| m.routing_key == p.created_key)
                .filter(|(_, m)| {
                    let body = m.json().unwrap_or(Value::Null);
                    p.fields
                        .iter()
                        .all(|f| item.sent.get(f).is_some() && body.get(f) == item.sent.get(f))
                })
                .map(|(i, _)| i)
                .collect();
            if !matching.is_empty() {
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "your service refused the purchase ({}), yet published {} for it: an event for something that never happened",
                        describe_json(&item.sent),
                        p.created_key
                    ),
                    expected: format!("no {} event for a refused purchase", p.created_key),
                    actual: format!("{} such events", matching.len()),
                    evidence: self.evidence(&matching),
                    ..Default::default()
                }));
            }
        }
        if rows_after != rows_before {
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "your service refused {} purchases, yet your table's row count went from {rows_before} to {rows_after}: a refused purchase must leave no row",
                    placed.len()
                ),
                expected: format!("{rows_before} rows ({sql})"),
                actual: format!("{rows_after} rows"),
                ..Default::default()
            }));
        }
        Ok(())
    }

    fn summary(&self, p: &Params, placed: &[Placed], started_waiting: Instant) -> String {
        if p.refused.is_some() {
            // The configured wait, not the measured one: the report stays the same run to run.
            return format!(
                "{} refused purchases: no {} event for them in {} and no new row",
                placed.len(),
                p.created_key,
                seconds(p.wait)
            );
        }
        let cancelled = placed.iter().filter(|i| i.cancelled).count();
        let last = self.ours().map(|m| m.at).max();
        let since = match (p.outage, p.restart) {
            (true, true) => "the restart",
            (true, false) => "the broker came back",
            (false, _) => "the first request",
        };
        let arrival = last.map_or(String::new(), |at| {
            format!(
                ", the last {} after {since}",
                seconds(at.saturating_duration_since(started_waiting))
            )
        });
        let outage = if p.outage {
            format!(" ({})", p.ordeal())
        } else {
            String::new()
        };
        let outage = if p.before_outage > 0 {
            format!(
                "{outage}; {} placed and published before the outage, not published again",
                p.before_outage
            )
        } else {
            outage
        };
        format!(
            "{} purchases placed and {cancelled} cancelled{outage}: {} events of theirs read from {}{arrival}",
            placed.len(),
            self.ours().count(),
            p.exchange
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(judge: &str) -> Params {
        let text = format!(
            "exchange = \"shop.events\"\nlisten = [\"purchase.*\"]\ncreated_key = \"purchase.created\"\ncancelled_key = \"purchase.cancelled\"\ncount = 2\ncancel_count = 1\njudge = [{judge}]\nfields = [\"customer\"]\nrows_sql = \"SELECT count(*) FROM purchases\"\n[place]\nmethod = \"POST\"\npath = \"/purchases\"\nstatus = 201\n[cancel]\nmethod = \"POST\"\npath = \"/purchases/{{{{purchase_id}}}}/cancel\"\n"
        );
        super::super::params::parse(toml::from_str(&text).unwrap()).unwrap()
    }

    fn placed() -> Vec<Placed> {
        vec![
            Placed {
                id: json!("a1"),
                sent: json!({"customer": "Amber Otter"}),
                cancelled: true,
            },
            Placed {
                id: json!(7),
                sent: json!({"customer": "Birch Heron"}),
                cancelled: false,
            },
        ]
    }

    fn msg(key: &str, body: Value, id: Option<&str>, mode: u8) -> Received {
        Received {
            routing_key: key.into(),
            body: serde_json::to_vec(&body).unwrap(),
            truncated: false,
            message_id: id.map(String::from),
            content_type: Some("application/json".into()),
            delivery_mode: Some(mode),
            redelivered: false,
            death_reasons: vec![],
            at: Instant::now(),
        }
    }

    fn created(pid: Value, eid: &str, customer: &str) -> Received {
        msg(
            "purchase.created",
            json!({"event_id": eid, "type": "purchase.created", "purchase_id": pid, "customer": customer, "occurred_at": "2026-11-30T21:14:03Z"}),
            Some(eid),
            2,
        )
    }

    fn cancelled(pid: Value, eid: &str) -> Received {
        msg(
            "purchase.cancelled",
            json!({"event_id": eid, "type": "purchase.cancelled", "purchase_id": pid, "occurred_at": "2026-11-30T21:14:04Z"}),
            Some(eid),
            2,
        )
    }

    fn good() -> Vec<Received> {
        vec![
            created(json!("a1"), "e1", "Amber Otter"),
            created(json!(7), "e2", "Birch Heron"),
            cancelled(json!("a1"), "e3"),
        ]
    }

    fn message_of(r: Result<(), Failure>) -> String {
        match r {
            Err(Failure::Fail(info)) => info.message,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_correct_stream_passes_every_judge() {
        let p = params("\"once\", \"fields\", \"ids\", \"order\"");
        let all = good();
        let events = Events::sort(&p, &placed(), &all);
        events
            .once(&p, &placed(), Duration::from_secs(1), "")
            .unwrap();
        events.fields(&p, &placed()).unwrap();
        events.ids().unwrap();
        events.order(&p, &placed()).unwrap();
    }

    #[test]
    fn once_counts_missing_duplicate_and_unexpected_events() {
        let p = params("\"once\"");
        let mut all = good();
        all.remove(1);
        let m =
            message_of(Events::sort(&p, &placed(), &all).once(&p, &placed(), Duration::ZERO, ""));
        assert!(
            m.contains("no purchase.created event for it arrived"),
            "{m}"
        );

        let mut all = good();
        all.push(created(json!("a1"), "e1", "Amber Otter"));
        let m =
            message_of(Events::sort(&p, &placed(), &all).once(&p, &placed(), Duration::ZERO, ""));
        assert!(
            m.contains("2 purchase.created events arrived for purchase \"a1\""),
            "{m}"
        );

        let mut all = good();
        all.push(cancelled(json!(7), "e4"));
        let m =
            message_of(Events::sort(&p, &placed(), &all).once(&p, &placed(), Duration::ZERO, ""));
        assert!(m.contains("which was never cancelled"), "{m}");
    }

    #[test]
    fn order_fails_a_cancellation_before_its_purchase() {
        let p = params("\"order\"");
        let all = vec![
            cancelled(json!("a1"), "e3"),
            created(json!("a1"), "e1", "Amber Otter"),
            created(json!(7), "e2", "Birch Heron"),
        ];
        let m = message_of(Events::sort(&p, &placed(), &all).order(&p, &placed()));
        assert!(m.contains("arrived before its purchase.created"), "{m}");
    }

    #[test]
    fn ids_fail_shared_ids_a_missing_message_id_and_transient_messages() {
        let p = params("\"ids\"");
        let mut all = good();
        all[2] = cancelled(json!("a1"), "e1");
        let m = message_of(Events::sort(&p, &placed(), &all).ids());
        assert!(m.contains("share the event id e1"), "{m}");

        let mut all = good();
        all[0].message_id = None;
        let m = message_of(Events::sort(&p, &placed(), &all).ids());
        assert!(
            m.contains("`message_id` property is not its `event_id`"),
            "{m}"
        );

        let mut all = good();
        all[1].delivery_mode = Some(1);
        let m = message_of(Events::sort(&p, &placed(), &all).ids());
        assert!(m.contains("not persistent"), "{m}");

        // The same event delivered twice is `once`'s business, not a shared id.
        let mut all = good();
        all.push(created(json!("a1"), "e1", "Amber Otter"));
        Events::sort(&p, &placed(), &all).ids().unwrap();
    }

    #[test]
    fn fields_want_the_api_id_with_its_json_type() {
        let p = params("\"fields\"");
        let mut all = good();
        all[1] = created(json!("7"), "e2", "Birch Heron");
        let m = message_of(Events::sort(&p, &placed(), &all).fields(&p, &placed()));
        assert!(
            m.contains("`purchase_id` is not the id exactly as your API shows it"),
            "{m}"
        );

        let mut all = good();
        all[0] = created(json!("a1"), "e1", "Someone Else");
        let m = message_of(Events::sort(&p, &placed(), &all).fields(&p, &placed()));
        assert!(
            m.contains("`customer` is not what the purchase was placed with"),
            "{m}"
        );
    }

    #[test]
    fn nothing_fails_an_event_or_a_row_for_a_refused_purchase() {
        let text = "exchange = \"x\"\nlisten = [\"p.*\"]\ncreated_key = \"purchase.created\"\ncount = 1\njudge = [\"nothing\"]\nfields = [\"customer\"]\nrows_sql = \"SELECT count(*) FROM purchases\"\n[place]\nmethod = \"POST\"\npath = \"/p\"\nstatus = 409\n";
        let p = super::super::params::parse(toml::from_str(text).unwrap()).unwrap();
        let refused = vec![Placed {
            id: Value::Null,
            sent: json!({"customer": "Amber Otter"}),
            cancelled: false,
        }];
        let all = vec![created(json!("z9"), "e9", "Amber Otter")];
        let m = message_of(Events::sort(&p, &refused, &all).nothing(&p, &refused, 3, 3, "q"));
        assert!(m.contains("yet published purchase.created for it"), "{m}");
        let m = message_of(Events::sort(&p, &refused, &[]).nothing(&p, &refused, 3, 4, "q"));
        assert!(m.contains("row count went from 3 to 4"), "{m}");
        Events::sort(&p, &refused, &[])
            .nothing(&p, &refused, 3, 3, "q")
            .unwrap();
    }
}
