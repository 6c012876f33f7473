//! Publish settlements, then read the total through the API and the service's table. The grader
//! knows every amount it published, so the only right total is the sum of the distinct ones.

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use tokio_postgres::Client;

use super::params::{Params, Poison, Scenario};
use crate::engine::assert::{describe_json, shorten};
use crate::engine::broker::{self, Broker, Outgoing};
use crate::engine::lifecycle::{self, seconds};
use crate::engine::step::build_request;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::upstream_calls::run::{identity_of, judge};
use crate::spec::template::{render_json, text_of};

/// Interval between reads of the total while waiting for a payment.
const POLL: Duration = Duration::from_millis(100);
/// After the consumer was seen mid-message, how long before the kill.
const MID_MESSAGE_MARGIN: Duration = Duration::from_millis(300);
/// How long the crash scenario waits for the consumer to block on the grader's locks.
const BLOCK_WAIT: Duration = Duration::from_secs(5);
/// Messages taken from the dead-letter queue before the poison scenario starts, at most.
const MAX_DRAINED: usize = 1_000;
/// How long the poison scenario waits for dead letters.
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(10);

/// One settlement the probe published.
struct Payment {
    event_id: String,
    amount: i64,
}

/// The probe's record of what it did, for failure messages.
struct Run<'p> {
    p: &'p Params,
    purchase: Value,
    published: Vec<String>,
}

pub async fn run(p: &Params, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let broker = broker::connect(ctx).await?;
    if broker.queue_depth(&p.queue).await?.is_none() {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "there is no queue named {} on the broker: your service must declare it at start-up and consume it",
                p.queue
            ),
            expected: format!("a durable queue {} bound to {} with {}", p.queue, p.exchange, p.routing_key),
            actual: "no such queue (the broker answered NOT_FOUND)".into(),
            evidence: vec![format!(
                "queue.declare {} (passive): 404 NOT_FOUND",
                p.queue
            )],
            ..Default::default()
        }));
    }
    let purchase = place(p, ctx).await?;
    ctx.scope.insert("purchase_id".into(), purchase.clone());
    let mut run = Run {
        p,
        purchase,
        published: Vec::new(),
    };
    let outcome = match p.scenario {
        Scenario::Duplicates => duplicates(&mut run, ctx, &broker).await,
        Scenario::Crash => crash(&mut run, ctx, &broker).await,
        Scenario::Poison => poison(&mut run, ctx, &broker).await,
    };
    broker.close().await;
    outcome
}

async fn place(p: &Params, ctx: &mut CheckContext<'_>) -> Result<Value, Failure> {
    let req = build_request(ctx, &p.place.spec)?;
    let summary = format!("{} {}", req.method, req.url.path());
    let resp = ctx.send(&p.place.name, req).await?;
    if let Some(info) = judge(ctx, &p.place, &summary, &resp, &[], &p.id)? {
        return Err(Failure::Fail(info));
    }
    identity_of(&resp, &p.id)
        .filter(|v| v.is_string() || v.is_number())
        .ok_or_else(|| {
            Failure::Fail(FailInfo {
                message: format!(
                    "{} ({summary}): the response has no id at {}",
                    p.place.name, p.id.text
                ),
                expected: format!("the new resource's id at {}", p.id.text),
                actual: shorten(&resp.text(), 200),
                ..Default::default()
            })
        })
}

/// A UUID v4 from the check's stream, so `--seed` replays the event ids too.
fn event_id(ctx: &mut CheckContext<'_>) -> String {
    crate::spec::random::uuid_v4(&mut ctx.rng)
}

fn new_payments(run: &Run<'_>, ctx: &mut CheckContext<'_>) -> Vec<Payment> {
    (0..run.p.payments)
        .map(|_| Payment {
            event_id: event_id(ctx),
            amount: ctx.rng.gen_range(run.p.amount.0..=run.p.amount.1),
        })
        .collect()
}

impl Run<'_> {
    fn payment_message(&self, ctx: &CheckContext<'_>, pay: &Payment) -> Result<Outgoing, Failure> {
        let mut scope = ctx.scope.clone();
        scope.insert("event_id".into(), Value::String(pay.event_id.clone()));
        scope.insert("amount".into(), Value::from(pay.amount));
        let body = render_json(&self.p.message, &scope).map_err(Failure::Error)?;
        Ok(Outgoing {
            routing_key: self.p.routing_key.clone(),
            body: serde_json::to_vec(&body).map_err(|e| Failure::Error(e.to_string()))?,
            message_id: Some(pay.event_id.clone()),
        })
    }

    async fn publish(&mut self, broker: &Broker, message: &Outgoing) -> Result<(), Failure> {
        let line = message.describe(&self.p.exchange);
        self.published.push(line.clone());
        if broker.publish(&self.p.exchange, message).await? {
            return Ok(());
        }
        Err(Failure::Fail(FailInfo {
            message: format!(
                "a {} message published to {} reached no queue (the broker returned it): bind {} to {} with the routing key {}",
                self.p.routing_key, self.p.exchange, self.p.queue, self.p.exchange, self.p.routing_key
            ),
            expected: format!("{} bound to {} with {}", self.p.queue, self.p.exchange, self.p.routing_key),
            actual: "the message was unroutable".into(),
            evidence: vec![line],
            ..Default::default()
        }))
    }

    /// The total through the API. Each read is an exchange; only the latest is kept for the
    /// report, so a long wait does not flood it.
    async fn api_total(&self, ctx: &mut CheckContext<'_>) -> Result<i64, Failure> {
        let req = build_request(ctx, &self.p.read.spec)?;
        let summary = format!("{} {}", req.method, req.url.path());
        let resp = ctx.send(&self.p.read.name, req).await?;
        // Keep placing and the newest read only: how many reads a wait took depends on the
        // service's timing, and a report (and its snapshot) must not.
        if ctx.exchanges.len() > 2 {
            let newest = ctx.exchanges.pop();
            ctx.exchanges.truncate(1);
            ctx.exchanges.extend(newest);
        }
        if let Some(info) = judge(ctx, &self.p.read, &summary, &resp, &[], &self.p.paid)? {
            return Err(Failure::Fail(info));
        }
        let value = identity_of(&resp, &self.p.paid);
        value.as_ref().and_then(Value::as_i64).ok_or_else(|| {
            Failure::Fail(FailInfo {
                message: format!(
                    "{} ({summary}): {} is {}, not an integer",
                    self.p.read.name,
                    self.p.paid.text,
                    value.as_ref().map_or("missing".into(), describe_json)
                ),
                expected: format!("an integer at {}", self.p.paid.text),
                actual: shorten(&resp.text(), 200),
                ..Default::default()
            })
        })
    }

    async fn table_total(&self, ctx: &CheckContext<'_>) -> Result<Option<i64>, Failure> {
        let Some(sql) = &self.p.paid_sql else {
            return Ok(None);
        };
        let client = crate::engine::sql::connect_service_db(ctx, false).await?;
        let id = text_of(&self.purchase);
        let row = crate::engine::sql::query_row(
            &client,
            "read the applied total in your database",
            sql,
            std::slice::from_ref(&id),
        )
        .await?;
        let got = row.values().next().and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        got.map(Some).ok_or_else(|| {
            Failure::Error(format!(
                "`paid_sql` gave {} for {id}, not one integer",
                describe_json(&Value::Object(row))
            ))
        })
    }

    /// Polls the API until the total is `expected` or `wait` passes; a total above it fails at
    /// once (a payment applied twice). Returns the last total and how long it took.
    async fn wait_for_total(
        &self,
        ctx: &mut CheckContext<'_>,
        expected: i64,
        wait: Duration,
    ) -> Result<(i64, Duration), Failure> {
        let started = Instant::now();
        loop {
            let total = self.api_total(ctx).await?;
            if total > expected {
                return Err(self.wrong_total("your API", total, expected));
            }
            if total == expected || started.elapsed() >= wait {
                return Ok((total, started.elapsed()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// After the total reached `expected`: it stays there for `settle` (late duplicates), through
    /// the API and in the table.
    async fn stays(
        &self,
        ctx: &mut CheckContext<'_>,
        expected: i64,
    ) -> Result<&'static str, Failure> {
        tokio::time::sleep(self.p.settle).await;
        let total = self.api_total(ctx).await?;
        if total != expected {
            return Err(self.wrong_total("your API", total, expected));
        }
        match self.table_total(ctx).await? {
            Some(total) if total != expected => {
                Err(self.wrong_total("your database", total, expected))
            }
            Some(_) => Ok(" and in your database"),
            None => Ok(""),
        }
    }

    fn wrong_total(&self, place: &str, total: i64, expected: i64) -> Failure {
        let purchase = describe_json(&self.purchase);
        let message = if total > expected {
            format!(
                "{place} shows {total} cents paid for purchase {purchase}, more than the {expected} cents of the distinct payments the grader published: a duplicate or redelivered message was applied again"
            )
        } else {
            format!(
                "{place} shows {total} cents paid for purchase {purchase}, not the {expected} cents of the payments the grader published: a payment was lost"
            )
        };
        Failure::Fail(FailInfo {
            message,
            expected: format!("{expected} cents (each event id applied once)"),
            actual: format!("{total} cents"),
            evidence: self.published.clone(),
            ..Default::default()
        })
    }

    fn not_applied(&self, total: i64, expected: i64, after: String) -> Failure {
        Failure::Fail(FailInfo {
            message: format!(
                "purchase {} shows {total} cents paid {after}; the payments the grader published add up to {expected}",
                describe_json(&self.purchase)
            ),
            expected: format!("{expected} cents"),
            actual: format!("{total} cents"),
            evidence: self.published.clone(),
            ..Default::default()
        })
    }
}

/// Each payment published twice back to back, then the first one again once it was applied.
async fn duplicates(
    run: &mut Run<'_>,
    ctx: &mut CheckContext<'_>,
    broker: &Broker,
) -> Result<(), Failure> {
    let payments = new_payments(run, ctx);
    let expected: i64 = payments.iter().map(|p| p.amount).sum();
    for pay in &payments {
        let message = run.payment_message(ctx, pay)?;
        run.publish(broker, &message).await?;
        run.publish(broker, &message).await?;
    }
    let (total, took) = run.wait_for_total(ctx, expected, run.p.wait).await?;
    if total != expected {
        return Err(run.not_applied(
            total,
            expected,
            format!("{} after the grader published them", seconds(run.p.wait)),
        ));
    }
    // A duplicate that arrives after its original was applied and acknowledged.
    let late = run.payment_message(ctx, &payments[0])?;
    run.publish(broker, &late).await?;
    let place = run.stays(ctx, expected).await?;
    ctx.measured(format!(
        "{} payments published twice each, one a third time after it was applied: applied once each in {}, {expected} cents through your API{place}",
        payments.len(),
        seconds(took)
    ));
    Ok(())
}

/// The service's tables locked so its consumer waits mid-message; SIGKILL; locks released;
/// restart: every payment must still be applied, once.
async fn crash(
    run: &mut Run<'_>,
    ctx: &mut CheckContext<'_>,
    broker: &Broker,
) -> Result<(), Failure> {
    let payments = new_payments(run, ctx);
    let expected: i64 = payments.iter().map(|p| p.amount).sum();
    let holder = crate::engine::sql::connect_service_db(ctx, true).await?;
    let watcher = crate::engine::sql::connect_service_db(ctx, false).await?;
    let holder_pid = lock_tables(&holder).await?;

    let mut blocked_after = None;
    let publish_and_kill = async {
        for pay in &payments {
            let message = run.payment_message(ctx, pay)?;
            run.publish(broker, &message).await?;
        }
        // The consumer is mid-message once a payment has left the queue (delivered to it) and a
        // session of the service waits on the locks. The queue matters: a relay polling its
        // outbox with FOR UPDATE waits on the same locks before any payment was delivered. A
        // moment more lets a consumer that took the message reach its write.
        let published = payments.len() as u32;
        let started = Instant::now();
        while started.elapsed() < BLOCK_WAIT {
            let ready = broker.queue_depth(&run.p.queue).await?.unwrap_or(published);
            if ready < published && waiting_on_locks(&watcher, holder_pid).await? > 0 {
                blocked_after = Some(started.elapsed());
                tokio::time::sleep(MID_MESSAGE_MARGIN).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lifecycle::kill_service(ctx).await?;
        // A statement the dead process left waiting on a lock would otherwise run, and commit,
        // the moment the locks are released: end the service's sessions as its death would.
        end_service_sessions(&watcher, holder_pid).await?;
        Ok::<(), Failure>(())
    }
    .await;
    // Released on every path, so the rest of the run finds the tables unlocked.
    let _ = holder.batch_execute("ROLLBACK").await;
    drop(holder);
    if let Err(failure) = publish_and_kill {
        lifecycle::revive_if_dead(ctx).await;
        return Err(failure);
    }
    let Some(blocked_after) = blocked_after else {
        let _ = lifecycle::restart_service(ctx).await?;
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "your service did not try to write a payment within {} of its publication: the grader held locks on your tables, and no payment left the queue while a session of your service waited on them",
                seconds(BLOCK_WAIT)
            ),
            expected: "your consumer applies a payment (a write to your tables) within 5 s".into(),
            actual: "no write was attempted".into(),
            evidence: run.published.clone(),
            ..Default::default()
        }));
    };
    lifecycle::restart_service(ctx).await?;
    let (total, took) = run.wait_for_total(ctx, expected, run.p.wait).await?;
    if total != expected {
        return Err(run.not_applied(
            total,
            expected,
            format!(
                "{} after your service's restart (it was killed with SIGKILL while its consumer waited to write a payment): a message acknowledged before its payment was committed is gone from the broker",
                seconds(run.p.wait)
            ),
        ));
    }
    let place = run.stays(ctx, expected).await?;
    ctx.measured(format!(
        "your consumer waited on the grader's locks {} after the payments were published; after SIGKILL and a restart, all {} were applied once in {}: {expected} cents through your API{place}",
        seconds(blocked_after),
        payments.len(),
        seconds(took)
    ));
    Ok(())
}

/// Takes EXCLUSIVE locks on every table of the service's database (reads still work, writes
/// wait) in an open transaction; returns the session's pid.
async fn lock_tables(client: &Client) -> Result<i32, Failure> {
    let error = |e: tokio_postgres::Error| {
        Failure::Error(format!(
            "could not lock the service's tables: {}",
            crate::pg::db_error(&e)
        ))
    };
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(error)?
        .get(0);
    client
        .batch_execute("BEGIN; SET LOCAL lock_timeout = '5s'")
        .await
        .map_err(error)?;
    let tables: Vec<String> = client
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .await
        .map_err(error)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tables.is_empty() {
        return Err(Failure::Fail(FailInfo {
            message: "your service's database has no tables".into(),
            expected: "the purchases table, and the tables your consumer writes".into(),
            actual: "no table".into(),
            ..Default::default()
        }));
    }
    if let Err(e) = client
        .batch_execute(&format!(
            "LOCK TABLE {} IN EXCLUSIVE MODE",
            tables.join(", ")
        ))
        .await
    {
        if e.code() != Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            return Err(error(e));
        }
        // The service holds a lock on its own tables and does not let go: an open transaction
        // left idle. That is the service's defect, shown with the sessions holding it.
        let _ = client.batch_execute("ROLLBACK").await;
        let holders = idle_transactions(client).await;
        return Err(Failure::Fail(FailInfo {
            message: "a session of your service kept a transaction open on its tables for more than 5 s while idle, so nothing else could lock them: commit or roll back every transaction you begin".into(),
            expected: "no transaction of your service left open".into(),
            actual: if holders.is_empty() {
                "the lock was not granted within 5 s".into()
            } else {
                format!("{} session(s) idle in a transaction", holders.len())
            },
            evidence: holders,
            ..Default::default()
        }));
    }
    Ok(pid)
}

/// The service's sessions idle inside a transaction: age and last statement.
async fn idle_transactions(client: &Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT pid, state, extract(epoch FROM now() - xact_start)::int, left(query, 200) \
             FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| {
            let pid: i32 = r.get(0);
            let state: String = r.get(1);
            let age: Option<i32> = r.get(2);
            let query: String = r.get(3);
            format!(
                "session {pid}: {state} for {} s; its last statement: {query}",
                age.unwrap_or(0)
            )
        })
        .collect()
}

async fn waiting_on_locks(watcher: &Client, holder: i32) -> Result<i64, Failure> {
    watcher
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE NOT l.granted AND a.datname = current_database() \
             AND a.pid NOT IN (pg_backend_pid(), $1)",
            &[&holder],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| {
            Failure::Error(format!(
                "could not read pg_locks: {}",
                crate::pg::db_error(&e)
            ))
        })
}

async fn end_service_sessions(watcher: &Client, holder: i32) -> Result<(), Failure> {
    watcher
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_type = 'client backend' \
             AND pid NOT IN (pg_backend_pid(), $1)",
            &[&holder],
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            Failure::Error(format!(
                "could not end the killed service's sessions: {}",
                crate::pg::db_error(&e)
            ))
        })
}

/// An id of the same form as `id` that names nothing the grader placed: a number far above it, a
/// fresh UUID for a UUID, otherwise the text with a suffix. A consumer that checks the form alone
/// would let a well-formed unknown id through.
fn unknown_like(id: &Value, ctx: &mut CheckContext<'_>) -> Value {
    match id {
        Value::Number(n) => Value::from(n.as_i64().unwrap_or(0).saturating_add(1_000_000_000)),
        Value::String(s) if s.len() == 36 && s.matches('-').count() == 4 => {
            Value::String(event_id(ctx))
        }
        other => Value::String(format!("{}0", text_of(other))),
    }
}

/// Poison messages, then one valid payment: the valid one is applied, each poison message reaches
/// the dead-letter queue once.
async fn poison(
    run: &mut Run<'_>,
    ctx: &mut CheckContext<'_>,
    broker: &Broker,
) -> Result<(), Failure> {
    let dead_letters = run.p.dead_letter_queue.clone().unwrap_or_default();
    if broker.queue_depth(&dead_letters).await?.is_none() {
        return Err(Failure::Fail(FailInfo {
            message: format!("there is no queue named {dead_letters}: declare it at start-up, bound to your dead-letter exchange"),
            expected: format!("a durable queue {dead_letters}"),
            actual: "no such queue".into(),
            evidence: vec![format!(
                "queue.declare {dead_letters} (passive): 404 NOT_FOUND"
            )],
            ..Default::default()
        }));
    }
    // Whatever an earlier check left there is not this check's (bounded: a service could keep
    // filling it).
    for _ in 0..MAX_DRAINED {
        if broker.get(&dead_letters).await?.is_none() {
            break;
        }
    }

    let mut poison_ids = Vec::new();
    let unknown = unknown_like(&run.purchase, ctx);
    for (i, poison) in run.p.poison.iter().enumerate() {
        let id = event_id(ctx);
        let mut scope = ctx.scope.clone();
        scope.insert("unknown_purchase_id".into(), unknown.clone());
        scope.insert("event_id".into(), Value::String(id.clone()));
        scope.insert("amount".into(), Value::from(run.p.amount.0));
        let body = match poison {
            Poison::Raw(text) => text.clone().into_bytes(),
            Poison::Json(template) => {
                let rendered = render_json(template, &scope).map_err(Failure::Error)?;
                serde_json::to_vec(&rendered).map_err(|e| Failure::Error(e.to_string()))?
            }
        };
        let message = Outgoing {
            routing_key: run.p.routing_key.clone(),
            body,
            message_id: Some(id.clone()),
        };
        run.publish(broker, &message).await?;
        poison_ids.push((i + 1, id, message.describe(&run.p.exchange)));
    }
    let payments = new_payments(run, ctx);
    let expected: i64 = payments.iter().map(|p| p.amount).sum();
    for pay in &payments {
        let message = run.payment_message(ctx, pay)?;
        run.publish(broker, &message).await?;
    }
    let (total, took) = run.wait_for_total(ctx, expected, run.p.wait).await?;
    if total != expected {
        return Err(run.not_applied(
            total,
            expected,
            format!(
                "{} after the grader published it behind {} poison messages: a message your service cannot process must not hold up the ones after it",
                seconds(run.p.wait),
                poison_ids.len()
            ),
        ));
    }

    let started = Instant::now();
    let mut found = vec![0usize; poison_ids.len()];
    let mut foreign = 0usize;
    while started.elapsed() < DEAD_LETTER_WAIT && found.contains(&0) {
        match broker.get(&dead_letters).await? {
            Some(m) => match poison_ids
                .iter()
                .position(|(_, id, _)| m.message_id.as_deref() == Some(id))
            {
                Some(k) => found[k] += 1,
                None => foreign += 1,
            },
            None => tokio::time::sleep(POLL).await,
        }
    }
    if let Some(k) = found.iter().position(|&n| n == 0) {
        let (n, _, line) = &poison_ids[k];
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "poison message {n} did not reach {dead_letters} within {}: reject a message you can never process with requeue=false, so that RabbitMQ dead-letters it",
                seconds(DEAD_LETTER_WAIT)
            ),
            expected: format!("poison message {n} in {dead_letters}"),
            actual: format!(
                "{} of the {} poison messages there{}",
                found.iter().filter(|&&c| c > 0).count(),
                found.len(),
                if foreign > 0 { format!(", and {foreign} other messages") } else { String::new() }
            ),
            evidence: vec![line.clone()],
            ..Default::default()
        }));
    }
    let place = run.stays(ctx, expected).await?;
    ctx.measured(format!(
        "{} poison messages dead-lettered to {dead_letters} in {}; the payment published after them applied in {}, {expected} cents through your API{place}",
        poison_ids.len(),
        seconds(started.elapsed()),
        seconds(took)
    ));
    Ok(())
}
