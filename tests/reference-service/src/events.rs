//! Purchases that tell the rest of the company, and payments applied once: exercise
//! `event-driven` (task statement: `exercises/event-driven/README.md`).
//!
//! - **Placing a purchase** validates the body, reserves the items at the stock service
//!   (`STOCK_URL`, 2 s timeout; nothing is written before it answers `201`), then inserts the
//!   purchase and its `purchase.created` event into the outbox in one transaction. A cancellation
//!   likewise updates the purchase and inserts `purchase.cancelled` in one transaction, the row
//!   locked so that two cancels cannot both succeed.
//! - **The relay** (one task) publishes pending outbox rows in id order to `shop.events` on a
//!   channel in confirm mode, waits for the broker's confirms, and only then marks the rows
//!   published. Handlers wake it after every commit; it also polls, so a backlog left by a crash
//!   or an outage goes out as soon as the broker is back. A crash between the confirm and the mark
//!   publishes that event again after the restart, with the same `event_id`.
//! - **The consumer** takes `purchases.payments` with manual acknowledgements and a prefetch of
//!   [`PREFETCH`]. Each payment is one transaction: record its `event_id` in `processed_payments`
//!   (a primary key, so a duplicate inserts nothing and is acknowledged without effect), add the
//!   amount to `paid_cents`, commit, and only then ack. A message that can never be applied is
//!   rejected without requeueing, so RabbitMQ dead-letters it to `shop.dead-letters`; one that
//!   failed on the database is requeued, at most [`MAX_DELIVERIES`] times in all.
//! - **The broker connection** is supervised: the topology is declared and the consumer started
//!   before the service listens (so `/healthz` means ready); when the connection or a channel
//!   fails (detected by the client, or by heartbeats when the peer goes silent), the relay and the
//!   consumer stop, and the supervisor connects again with a short backoff, forever. HTTP keeps
//!   serving meanwhile: purchases wait in the outbox.
//!
//! Environment: `AMQP_URL` (unset, no broker is used: other exercises' runs have none, and the
//! outbox only fills), `STOCK_URL` (read on first use; unset, placing a purchase answers 503).

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use crate::bugs::{self, Bug};
use crate::http::{allow, JsonBody};
use crate::problem::{FieldError, Problem};
use crate::transactions::{integer, object};
use crate::AppState;

/// The purchases, the outbox and the applied payments. `purchases` and its `id` and `paid_cents`
/// columns are the contract: the grader reads them [evt-0.7].
pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS purchases (
        id           uuid        PRIMARY KEY,
        customer     text        NOT NULL,
        sku          text        NOT NULL,
        quantity     integer     NOT NULL,
        amount_cents bigint      NOT NULL,
        status       text        NOT NULL DEFAULT 'created'
                                 CHECK (status IN ('created', 'cancelled')),
        paid_cents   bigint      NOT NULL DEFAULT 0,
        created_at   timestamptz NOT NULL DEFAULT now()
    );
    -- Events to publish, in order: written in the transaction of the fact they tell [evt-5.4].
    CREATE TABLE IF NOT EXISTS purchase_outbox (
        id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id     text        NOT NULL,
        routing_key  text        NOT NULL,
        -- The message body exactly as published.
        body         text        NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz
    );
    CREATE INDEX IF NOT EXISTS purchase_outbox_pending
        ON purchase_outbox (id) WHERE published_at IS NULL;
    -- The payments applied, one row per event id [evt-7.2].
    CREATE TABLE IF NOT EXISTS processed_payments (
        event_id     text        PRIMARY KEY,
        purchase_id  uuid        NOT NULL,
        amount_cents bigint      NOT NULL,
        processed_at timestamptz NOT NULL DEFAULT now()
    );
";

pub const EVENTS_EXCHANGE: &str = "shop.events";
pub const DEAD_LETTER_EXCHANGE: &str = "shop.dead-letters";
pub const PAYMENTS_QUEUE: &str = "purchases.payments";
pub const DEAD_LETTER_QUEUE: &str = "purchases.payments.dead";
const PAYMENT_SETTLED: &str = "payment.settled";
const PURCHASE_CREATED: &str = "purchase.created";
const PURCHASE_CANCELLED: &str = "purchase.cancelled";

/// Unacknowledged payments the broker may send the consumer at once.
const PREFETCH: u16 = 10;
/// Deliveries of a message that fails on the database before it is dead-lettered [evt-8.4].
const MAX_DELIVERIES: u32 = 5;
/// The broker's heartbeat we ask for (seconds), unless `AMQP_URL` names one: a connection whose
/// peer went silent is declared dead after two intervals.
const HEARTBEAT_SECONDS: u16 = 5;
/// How long a TCP connect to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the AMQP handshake, and then the declarations and the consumer's start, may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection backoff: doubles from the first value to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(2));
/// A publish whose confirm takes longer counts as failed (the connection is rebuilt).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// The relay looks at the outbox this often even when no handler woke it.
const RELAY_POLL: Duration = Duration::from_secs(1);
/// Outbox rows published per round.
const RELAY_BATCH: i64 = 100;
/// Planted bugs that publish from the handler wait this long for the confirm.
const DIRECT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

const MAX_CUSTOMER_CHARS: usize = 100;
const MAX_SKU_CHARS: usize = 40;
const MAX_QUANTITY: i64 = 100;
const MAX_AMOUNT_CENTS: i64 = 100_000_000;
/// How long the stock service may take before it counts as unavailable [evt-2.3].
const STOCK_TIMEOUT: Duration = Duration::from_secs(2);

type BoxError = Box<dyn Error + Send + Sync>;

/// What handlers share with the relay: the wake-up, and (for two planted bugs only) the channel
/// to publish on directly.
#[derive(Clone, Default)]
pub struct Bus {
    wake: Arc<Notify>,
    channel: Arc<Mutex<Option<Channel>>>,
}

impl Bus {
    /// Tells the relay that the outbox has a new row. A permit is kept if it is busy, so no
    /// wake-up is lost.
    fn wake(&self) {
        self.wake.notify_one();
    }

    fn set_channel(&self, channel: Option<Channel>) {
        *self.channel.lock().unwrap_or_else(|e| e.into_inner()) = channel;
    }

    /// Planted bugs evt-publish-before-commit and evt-commit-then-publish: publish from the
    /// handler, without the outbox. A failure is logged, and the request goes on.
    async fn publish_now(&self, event: &Event) {
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let result = match channel {
            None => Err("not connected to the broker".into()),
            Some(channel) => tokio::time::timeout(DIRECT_PUBLISH_TIMEOUT, publish(&channel, event))
                .await
                .unwrap_or_else(|_| Err("no publisher confirm in time".into())),
        };
        if let Err(error) = result {
            eprintln!(
                "error: publishing {} {}: {error}",
                event.routing_key, event.event_id
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Start-up and the broker connection.

/// Starts the relay and the consumer when `AMQP_URL` is set, and returns once the topology is
/// declared and the consumer started (retrying the connection until then).
pub async fn start(pool: Pool) -> Result<Bus, String> {
    let bus = Bus::default();
    let Some(url) = std::env::var("AMQP_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
    else {
        return Ok(bus);
    };
    let uri = broker_uri(url.trim())?;
    let (ready, started) = oneshot::channel();
    tokio::spawn(supervise(pool, uri, bus.clone(), ready));
    started
        .await
        .map_err(|_| "the broker connection task ended before it was ready".to_string())?;
    Ok(bus)
}

/// `AMQP_URL` with a heartbeat and a connection timeout, unless it sets them itself.
fn broker_uri(url: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|error| format!("AMQP_URL is not an AMQP URL: {error}"))?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECONDS);
    uri.query
        .connection_timeout
        .get_or_insert(CONNECT_TIMEOUT.as_millis() as u64);
    Ok(uri)
}

/// Connects, runs the relay and the consumer until the connection fails, and connects again.
async fn supervise(pool: Pool, uri: AMQPUri, bus: Bus, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut backoff = BACKOFF.0;
    loop {
        let mut connected = false;
        let error = session(&pool, &uri, &bus, &mut ready, &mut connected).await;
        bus.set_channel(None);
        if connected {
            backoff = BACKOFF.0;
            // Planted bug evt-crash-on-broker-loss: the broker going away ends the process.
            if bugs::is(Bug::EvtCrashOnBrokerLoss) {
                eprintln!("reference-service: lost the broker: {error}");
                std::process::exit(1);
            }
            // Planted bug evt-no-reconnect: "the broker is always there"; a lost connection
            // stays lost until the process restarts (HTTP keeps serving, the outbox fills up).
            if bugs::is(Bug::EvtNoReconnect) {
                eprintln!("reference-service: lost the broker: {error}; not reconnecting");
                return;
            }
        }
        eprintln!("error: broker: {error}; connecting again in {backoff:?}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// One connection's life: declare, start consuming, then relay and consume until something
/// fails. Returns why it ended; `connected` tells whether it got as far as serving.
async fn session(
    pool: &Pool,
    uri: &AMQPUri,
    bus: &Bus,
    ready: &mut Option<oneshot::Sender<()>>,
    connected: &mut bool,
) -> BoxError {
    let properties =
        ConnectionProperties::default().with_connection_name("reference-service".into());
    // The TCP connect has its own timeout; the AMQP handshake after it does not.
    let connection = match tokio::time::timeout(
        SETUP_TIMEOUT,
        Connection::connect_uri(uri.clone(), properties),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => return error.into(),
        Err(_) => return "no AMQP handshake in time".into(),
    };
    // Errors of the connection itself (socket closed, missed heartbeats) arrive here.
    let mut events = connection.events_listener();
    let channels = async {
        let publisher = connection.create_channel().await?;
        declare(&publisher).await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consumer_channel = connection.create_channel().await?;
        consumer_channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let consumer = consumer_channel
            .basic_consume(
                PAYMENTS_QUEUE.into(),
                "reference-service".into(),
                BasicConsumeOptions {
                    // Planted bug evt-auto-ack: the broker forgets each message as it sends it.
                    no_ack: bugs::is(Bug::EvtAutoAck),
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((publisher, consumer))
    };
    let (publisher, consumer) = match tokio::time::timeout(SETUP_TIMEOUT, channels).await {
        Ok(Ok(channels)) => channels,
        failed => {
            close(&connection).await;
            return match failed {
                Ok(Err(error)) => error.into(),
                _ => "the broker did not answer the declarations in time".into(),
            };
        }
    };
    *connected = true;
    bus.set_channel(Some(publisher.clone()));
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    println!("connected to the broker; exchanges and queues declared, consuming {PAYMENTS_QUEUE}");

    let lost = async {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(error) = event {
                return BoxError::from(error);
            }
        }
        "the connection's event stream ended".into()
    };
    let error = tokio::select! {
        error = relay(pool, &publisher, bus) => error,
        error = consume(pool, consumer) => error,
        error = lost => error,
    };
    close(&connection).await;
    error
}

/// Closes a connection that may already be dead, without waiting long.
async fn close(connection: &Connection) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        connection.close(200, "reconnecting".into()),
    )
    .await;
}

/// The exchanges and queues of the contract, all durable [evt-3.1, evt-6.1]. Declaring what
/// exists with the same arguments is a no-op, so this runs on every (re)connection.
async fn declare(channel: &Channel) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    channel
        .queue_declare(PAYMENTS_QUEUE.into(), durable, arguments)
        .await?;
    channel
        .queue_bind(
            PAYMENTS_QUEUE.into(),
            EVENTS_EXCHANGE.into(),
            PAYMENT_SETTLED.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Planted bug evt-no-dead-letter-queue: the dead-letter exchange has no queue.
    if bugs::is(Bug::EvtNoDeadLetterQueue) {
        return Ok(());
    }
    channel
        .queue_declare(DEAD_LETTER_QUEUE.into(), durable, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            DEAD_LETTER_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Events and the relay.

/// An event as published: its routing key (also its `type`), its id and its body.
struct Event {
    routing_key: String,
    event_id: String,
    body: String,
}

impl Event {
    fn new(routing_key: &'static str, purchase_id: Uuid, fields: Map<String, Value>) -> Self {
        // Planted bug evt-shared-event-id: "the purchase id identifies the event well enough".
        let event_id = if bugs::is(Bug::EvtSharedEventId) {
            purchase_id.to_string()
        } else {
            Uuid::new_v4().to_string()
        };
        let mut body = json!({
            "event_id": event_id,
            "type": routing_key,
            // Exactly as the API shows it: the same JSON string [evt-3.3].
            "purchase_id": purchase_id.to_string(),
        });
        body.as_object_mut()
            .expect("an object")
            .extend(fields.into_iter().chain([(
                "occurred_at".to_string(),
                json!(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
            )]));
        Self {
            routing_key: routing_key.to_string(),
            event_id,
            body: body.to_string(),
        }
    }

    fn created(id: Uuid, input: &PurchaseInput) -> Self {
        let Value::Object(mut fields) = json!({
            "customer": input.customer,
            "sku": input.sku,
            "quantity": input.quantity,
            "amount_cents": input.amount_cents,
        }) else {
            unreachable!("an object literal")
        };
        // Planted bug evt-event-amount-renamed: the event keeps the column's old name.
        if bugs::is(Bug::EvtEventAmountRenamed) {
            if let Some(amount) = fields.remove("amount_cents") {
                fields.insert("amount".to_string(), amount);
            }
        }
        Self::new(PURCHASE_CREATED, id, fields)
    }

    fn cancelled(id: Uuid) -> Self {
        Self::new(PURCHASE_CANCELLED, id, Map::new())
    }

    /// Adds the event to the outbox, in the caller's transaction.
    async fn enqueue(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        tx.execute(
            "INSERT INTO purchase_outbox (event_id, routing_key, body) VALUES ($1, $2, $3)",
            &[&self.event_id, &self.routing_key, &self.body],
        )
        .await?;
        Ok(())
    }
}

/// Publishes one event and waits for the broker's confirm (an ack; a nack is an error).
async fn publish(channel: &Channel, event: &Event) -> Result<(), BoxError> {
    let confirmation = start_publish(channel, event).await?.await?;
    if confirmation.is_ack() {
        Ok(())
    } else {
        Err("the broker refused the message (nack)".into())
    }
}

/// Sends one event; the returned future resolves with the broker's confirm.
async fn start_publish(channel: &Channel, event: &Event) -> lapin::Result<lapin::PublisherConfirm> {
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_type(event.routing_key.as_str().into());
    // Planted bug evt-no-message-id: only the body carries the id.
    if !bugs::is(Bug::EvtNoMessageId) {
        properties = properties.with_message_id(event.event_id.as_str().into());
    }
    channel
        .basic_publish(
            EVENTS_EXCHANGE.into(),
            event.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            event.body.as_bytes(),
            properties,
        )
        .await
}

/// Why a relay round stopped.
enum RelayError {
    /// The broker connection is unusable: give up this session.
    Broker(BoxError),
    /// The database failed, or the broker refused a message: try again later.
    Retry(BoxError),
}

/// Publishes pending outbox rows until the broker connection fails, which it returns.
async fn relay(pool: &Pool, channel: &Channel, bus: &Bus) -> BoxError {
    loop {
        match relay_round(pool, channel).await {
            // A full batch: there may be more.
            Ok(sent) if sent == RELAY_BATCH as usize => continue,
            Ok(_) => {}
            Err(RelayError::Broker(error)) => return error,
            Err(RelayError::Retry(error)) => {
                eprintln!("error: outbox relay: {error}; trying again");
                tokio::time::sleep(RELAY_POLL).await;
                continue;
            }
        }
        tokio::select! {
            _ = bus.wake.notified() => {}
            _ = tokio::time::sleep(RELAY_POLL) => {}
        }
    }
}

/// One round: read a batch of pending rows in order, publish them all, wait for the confirms in
/// order, and mark the confirmed ones published. Only a prefix is marked: after a failure the
/// rest are published again, so nothing overtakes an event that must come first.
async fn relay_round(pool: &Pool, channel: &Channel) -> Result<usize, RelayError> {
    let retry = |error: BoxError| RelayError::Retry(error);
    let db = pool.get().await.map_err(|e| retry(e.into()))?;
    // Planted bug evt-relay-newest-first: the newest pending event goes out first.
    let order = if bugs::is(Bug::EvtRelayNewestFirst) {
        "DESC"
    } else {
        "ASC"
    };
    let rows = db
        .query(
            &format!(
                "SELECT id, routing_key, event_id, body FROM purchase_outbox
                 WHERE published_at IS NULL ORDER BY id {order} LIMIT $1"
            ),
            &[&RELAY_BATCH],
        )
        .await
        .map_err(|e| retry(e.into()))?;
    if rows.is_empty() {
        return Ok(0);
    }

    let copies = if bugs::is(Bug::EvtPublishTwice) { 2 } else { 1 };
    let mut sent = Vec::new();
    let mut failure = None;
    'send: for row in &rows {
        let event = Event {
            routing_key: row.get(1),
            event_id: row.get(2),
            body: row.get(3),
        };
        for _ in 0..copies {
            match start_publish(channel, &event).await {
                Ok(confirm) => sent.push((row.get::<_, i64>(0), confirm)),
                Err(error) => {
                    failure = Some(RelayError::Broker(error.into()));
                    break 'send;
                }
            }
        }
    }
    let mut published: Vec<i64> = Vec::new();
    for (id, confirm) in sent {
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(Ok(confirmation)) if confirmation.is_ack() => {
                if published.last() != Some(&id) {
                    published.push(id);
                }
            }
            Ok(Ok(_)) => {
                failure.get_or_insert(RelayError::Retry("the broker nacked an event".into()));
                break;
            }
            Ok(Err(error)) => {
                failure.get_or_insert(RelayError::Broker(error.into()));
                break;
            }
            Err(_) => {
                failure.get_or_insert(RelayError::Broker("no publisher confirm in time".into()));
                break;
            }
        }
    }
    if !published.is_empty() {
        db.execute(
            "UPDATE purchase_outbox SET published_at = now() WHERE id = ANY($1)",
            &[&published],
        )
        .await
        .map_err(|e| retry(e.into()))?;
    }
    match failure {
        Some(failure) => Err(failure),
        None => Ok(rows.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// Payments.

/// What became of one delivery.
enum Outcome {
    Applied,
    /// The event id was applied before: acknowledge, change nothing [evt-7.1].
    Duplicate,
    /// It can never be applied: dead-letter it [evt-8.2].
    Poison(String),
    /// The database failed: it may pass later.
    Failed {
        event_id: String,
        error: BoxError,
    },
}

/// A `payment.settled` message that may be applied.
#[derive(Debug)]
struct Payment {
    event_id: String,
    /// `None`: an id that names no purchase of this service (a number, another string).
    purchase_id: Option<Uuid>,
    amount_cents: i64,
}

impl Payment {
    /// The message body, or why it is poison [evt-8.2].
    fn parse(body: &[u8]) -> Result<Self, String> {
        let body: Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let fields = body.as_object().ok_or("body is not a JSON object")?;
        let event_id = match fields.get("event_id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => return Err("event_id is not a non-empty string".into()),
        };
        let amount_cents = integer(fields, "amount_cents", 1, MAX_AMOUNT_CENTS)
            .map_err(|e| format!("amount_cents {e}"))?;
        let purchase_id = match fields.get("purchase_id") {
            Some(Value::String(id)) => parse_id(id),
            _ => None,
        };
        Ok(Self {
            event_id,
            purchase_id,
            amount_cents,
        })
    }
}

/// Consumes payments until the channel fails (or the broker cancels the consumer).
async fn consume(pool: &Pool, mut consumer: Consumer) -> BoxError {
    // Deliveries of messages that failed on the database, by event id.
    let mut failures: HashMap<String, u32> = HashMap::new();
    while let Some(delivery) = consumer.next().await {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(error) => return error.into(),
        };
        // Planted bug evt-auto-ack: nothing to acknowledge.
        if bugs::is(Bug::EvtAutoAck) {
            match apply(pool, &delivery.data).await {
                Outcome::Poison(reason) => eprintln!("error: payment not applied: {reason}"),
                Outcome::Failed { error, .. } => eprintln!("error: payment not applied: {error}"),
                Outcome::Applied | Outcome::Duplicate => {}
            }
            continue;
        }
        // Planted bug evt-ack-before-process: "got it" before the payment is committed.
        if bugs::is(Bug::EvtAckBeforeProcess) {
            if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                return error.into();
            }
        }
        let settled = match apply(pool, &delivery.data).await {
            Outcome::Applied | Outcome::Duplicate => delivery.ack(BasicAckOptions::default()).await,
            Outcome::Poison(reason) => {
                eprintln!("error: dead-lettering a payment message: {reason}");
                let requeue = bugs::is(Bug::EvtRequeuePoison);
                if bugs::is(Bug::EvtDropPoison) {
                    delivery.ack(BasicAckOptions::default()).await
                } else {
                    delivery
                        .nack(BasicNackOptions {
                            requeue,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
            }
            Outcome::Failed { event_id, error } => {
                // Forgotten when the message is dead-lettered; a message that passes on a later
                // delivery leaves its count behind (one small entry per database failure).
                let count = *failures
                    .entry(event_id.clone())
                    .and_modify(|count| *count += 1)
                    .or_insert(1);
                let requeue = count < MAX_DELIVERIES;
                if !requeue {
                    failures.remove(&event_id);
                }
                eprintln!(
                    "error: applying a payment (delivery {count} of at most {MAX_DELIVERIES}): {error}"
                );
                // A pause, so that a database outage does not spin the message around.
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
        };
        if let Err(error) = settled {
            return error.into();
        }
    }
    "the broker cancelled the consumer".into()
}

/// Applies one payment message: poison, duplicate, applied, or failed.
async fn apply(pool: &Pool, body: &[u8]) -> Outcome {
    let payment = match Payment::parse(body) {
        Ok(payment) => payment,
        Err(reason) => return Outcome::Poison(reason),
    };
    match record(pool, &payment).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::Failed {
            event_id: payment.event_id,
            error,
        },
    }
}

/// One transaction: the event id recorded and the amount added, or nothing [evt-7.2].
async fn record(pool: &Pool, payment: &Payment) -> Result<Outcome, BoxError> {
    let Some(purchase_id) = payment.purchase_id else {
        return Ok(Outcome::Poison("purchase_id names no purchase".into()));
    };
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    // Planted bug evt-non-idempotent-consumer: no record of what was applied.
    if !bugs::is(Bug::EvtNonIdempotentConsumer) {
        let inserted = tx
            .execute(
                "INSERT INTO processed_payments (event_id, purchase_id, amount_cents)
                 VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING",
                &[&payment.event_id, &purchase_id, &payment.amount_cents],
            )
            .await?;
        if inserted == 0 {
            return Ok(Outcome::Duplicate); // dropping `tx` rolls back
        }
    }
    let updated = tx
        .execute(
            "UPDATE purchases SET paid_cents = paid_cents + $2 WHERE id = $1",
            &[&purchase_id, &payment.amount_cents],
        )
        .await?;
    if updated == 0 {
        return Ok(Outcome::Poison(format!("no purchase {purchase_id}")));
    }
    tx.commit().await?;
    Ok(Outcome::Applied)
}

// ---------------------------------------------------------------------------------------------
// HTTP.

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/purchases", allow(post(place), "POST"))
        .route("/purchases/{id}", allow(get(read), "GET, HEAD"))
        .route("/purchases/{id}/cancel", allow(post(cancel), "POST"))
}

/// A purchase id as this service writes it: a UUID in canonical (lower-case, hyphenated) form.
/// Anything else names no purchase.
fn parse_id(text: &str) -> Option<Uuid> {
    let id = Uuid::parse_str(text).ok()?;
    (id.hyphenated().to_string() == text).then_some(id)
}

fn unknown_purchase(id: &str) -> Problem {
    Problem::not_found(format!("There is no purchase {id}."))
}

/// A string of 1 to `max` characters (Unicode scalar values, not bytes), without U+0000, which
/// PostgreSQL text cannot hold.
fn text(fields: &Map<String, Value>, name: &str, max: usize) -> Result<String, String> {
    let value = match fields.get(name) {
        None | Some(Value::Null) => return Err("is required".into()),
        Some(Value::String(value)) => value,
        Some(_) => return Err("must be a string".into()),
    };
    if !(1..=max).contains(&value.chars().count()) {
        return Err(format!("must be 1 to {max} characters"));
    }
    if value.contains('\0') {
        return Err("must not contain the NUL character (U+0000)".into());
    }
    Ok(value.clone())
}

/// A validated `POST /purchases` body.
#[derive(Debug)]
struct PurchaseInput {
    customer: String,
    sku: String,
    quantity: i64,
    amount_cents: i64,
}

impl PurchaseInput {
    fn validate(body: &Value) -> Result<Self, Problem> {
        let fields = object(body)?;
        let mut errors = Vec::new();
        // Planted bug evt-customer-101: `<= 101`, an off-by-one in the limit.
        let max_customer = if bugs::is(Bug::EvtCustomer101) {
            MAX_CUSTOMER_CHARS + 1
        } else {
            MAX_CUSTOMER_CHARS
        };
        let customer = text(fields, "customer", max_customer).unwrap_or_else(|e| {
            errors.push(FieldError::new("/customer", e));
            String::new()
        });
        let sku = text(fields, "sku", MAX_SKU_CHARS).unwrap_or_else(|e| {
            errors.push(FieldError::new("/sku", e));
            String::new()
        });
        let quantity = integer(fields, "quantity", 1, MAX_QUANTITY).unwrap_or_else(|e| {
            errors.push(FieldError::new("/quantity", e));
            0
        });
        let amount_cents =
            integer(fields, "amount_cents", 1, MAX_AMOUNT_CENTS).unwrap_or_else(|e| {
                errors.push(FieldError::new("/amount_cents", e));
                0
            });
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        Ok(Self {
            customer,
            sku,
            quantity,
            amount_cents,
        })
    }
}

fn purchase_json(id: Uuid, input: &PurchaseInput, status: &str, paid_cents: i64) -> Value {
    json!({
        "id": id.to_string(),
        "customer": input.customer,
        "sku": input.sku,
        "quantity": input.quantity,
        "amount_cents": input.amount_cents,
        "status": status,
        "paid_cents": paid_cents,
    })
}

/// `POST /purchases`: reserve, then the purchase and its event in one transaction [evt-2.4].
async fn place(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let input = PurchaseInput::validate(&body)?;
    let id = Uuid::new_v4();
    let event = Event::created(id, &input);
    // Planted bug evt-publish-before-commit: the event goes out before anything is decided.
    if bugs::is(Bug::EvtPublishBeforeCommit) {
        state.events.publish_now(&event).await;
    }
    // Planted bug evt-refused-keeps-row: the row is committed first, "so the id exists".
    if bugs::is(Bug::EvtRefusedKeepsRow) {
        insert_purchase(&state.pool.get().await?, id, &input).await?;
    }
    reserve(&input).await?;

    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    if !bugs::is(Bug::EvtRefusedKeepsRow) {
        insert_purchase(&tx, id, &input).await?;
    }
    let direct = bugs::is(Bug::EvtPublishBeforeCommit) || bugs::is(Bug::EvtCommitThenPublish);
    if !direct {
        event.enqueue(&tx).await?;
    }
    tx.commit().await?;
    state.events.wake();
    // Planted bug evt-commit-then-publish: no outbox; published from memory after the commit.
    if bugs::is(Bug::EvtCommitThenPublish) {
        state.events.publish_now(&event).await;
    }

    let body = purchase_json(id, &input, "created", 0);
    let location = HeaderValue::from_str(&format!("/purchases/{id}")).expect("ASCII");
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    // Planted bug evt-no-location.
    if !bugs::is(Bug::EvtNoLocation) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn insert_purchase(
    db: &impl deadpool_postgres::GenericClient,
    id: Uuid,
    input: &PurchaseInput,
) -> Result<(), tokio_postgres::Error> {
    let quantity = i32::try_from(input.quantity).expect("at most 100");
    db.execute(
        "INSERT INTO purchases (id, customer, sku, quantity, amount_cents)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &id,
            &input.customer,
            &input.sku,
            &quantity,
            &input.amount_cents,
        ],
    )
    .await?;
    Ok(())
}

/// `GET /purchases/{id}`: the purchase as it is now [evt-1.9].
async fn read(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let uuid = parse_id(&id).ok_or_else(|| unknown_purchase(&id))?;
    let row = state
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT customer, sku, quantity, amount_cents, status, paid_cents
             FROM purchases WHERE id = $1",
            &[&uuid],
        )
        .await?
        .ok_or_else(|| unknown_purchase(&id))?;
    Ok(Json(from_row(uuid, &row, None)).into_response())
}

/// The purchase of a `SELECT customer, sku, quantity, amount_cents, status, paid_cents`.
fn from_row(id: Uuid, row: &tokio_postgres::Row, status: Option<&str>) -> Value {
    let input = PurchaseInput {
        customer: row.get(0),
        sku: row.get(1),
        quantity: row.get::<_, i32>(2).into(),
        amount_cents: row.get(3),
    };
    let stored: String = row.get(4);
    purchase_json(id, &input, status.unwrap_or(&stored), row.get(5))
}

/// `POST /purchases/{id}/cancel`: the new status and its event in one transaction, the row
/// locked so that of two concurrent cancels one answers 409 [evt-4.1, evt-4.2].
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let uuid = parse_id(&id).ok_or_else(|| unknown_purchase(&id))?;
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT customer, sku, quantity, amount_cents, status, paid_cents
             FROM purchases WHERE id = $1 FOR UPDATE",
            &[&uuid],
        )
        .await?
        .ok_or_else(|| unknown_purchase(&id))?;
    let status: String = row.get(4);
    // Planted bug evt-cancel-twice-publishes: the status is not looked at.
    if status == "cancelled" && !bugs::is(Bug::EvtCancelTwicePublishes) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("Purchase {id} is already cancelled; nothing was changed."),
        ));
    }
    tx.execute(
        "UPDATE purchases SET status = 'cancelled' WHERE id = $1",
        &[&uuid],
    )
    .await?;
    let event = Event::cancelled(uuid);
    if !bugs::is(Bug::EvtCommitThenPublish) {
        event.enqueue(&tx).await?;
    }
    tx.commit().await?;
    state.events.wake();
    if bugs::is(Bug::EvtCommitThenPublish) {
        state.events.publish_now(&event).await;
    }
    Ok(Json(from_row(uuid, &row, Some("cancelled"))).into_response())
}

// ---------------------------------------------------------------------------------------------
// The stock service.

/// The stock service: `STOCK_URL`, read once, and a client with a 2 s timeout.
fn stock_service() -> Result<&'static (reqwest::Client, String), String> {
    static STOCK: OnceLock<Result<(reqwest::Client, String), String>> = OnceLock::new();
    STOCK
        .get_or_init(|| {
            let url = std::env::var("STOCK_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| "STOCK_URL is not set".to_string())?;
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(STOCK_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the stock service client: {e}"))?;
            Ok((client, url.trim().trim_end_matches('/').to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `POST {STOCK_URL}/reservations`: `201` reserved, `409` out of stock (409), anything else
/// (another status, no complete answer in 2 s, no connection) unavailable (503) [evt-2.1..2.3].
async fn reserve(input: &PurchaseInput) -> Result<(), Problem> {
    let unavailable = |reason: String| {
        eprintln!("error: stock service unavailable: {reason}");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The stock service is unavailable; nothing was placed. Retry later.",
        )
    };
    let (client, url) = stock_service().map_err(unavailable)?;
    let response = client
        .post(format!("{url}/reservations"))
        .json(&json!({ "sku": input.sku, "quantity": input.quantity }))
        .send()
        .await
        .map_err(|e| unavailable(format!("no answer: {e}")))?;
    match response.status() {
        StatusCode::CREATED => Ok(()),
        StatusCode::CONFLICT => Err(Problem::new(
            StatusCode::CONFLICT,
            format!(
                "{} is out of stock for a quantity of {}; nothing was placed.",
                input.sku, input.quantity
            ),
        )),
        status => Err(unavailable(format!("status {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(customer: &str, sku: &str, quantity: Value, amount: Value) -> Value {
        json!({ "customer": customer, "sku": sku, "quantity": quantity, "amount_cents": amount })
    }

    #[test]
    fn purchases_are_validated_at_their_limits() {
        let ok = |b: Value| PurchaseInput::validate(&b).is_ok();
        assert!(ok(body(&"é".repeat(100), "S", json!(1), json!(1))));
        assert!(!ok(body(&"é".repeat(101), "S", json!(1), json!(1))));
        assert!(!ok(body("", "S", json!(1), json!(1))));
        assert!(ok(body(
            "c",
            &"K".repeat(40),
            json!(100),
            json!(100_000_000)
        )));
        assert!(!ok(body("c", &"K".repeat(41), json!(1), json!(1))));
        for quantity in [json!(0), json!(101), json!(2.5), json!("2"), json!(null)] {
            assert!(
                !ok(body("c", "S", quantity.clone(), json!(1))),
                "{quantity}"
            );
        }
        for amount in [json!(0), json!(100_000_001), json!(2.5), json!("2")] {
            assert!(!ok(body("c", "S", json!(1), amount.clone())), "{amount}");
        }
        assert!(!ok(json!([1])));
    }

    #[test]
    fn every_invalid_field_is_named() {
        let problem = PurchaseInput::validate(&json!({ "sku": 5, "quantity": 0 })).unwrap_err();
        assert_eq!(
            problem.pointers(),
            ["/customer", "/sku", "/quantity", "/amount_cents"]
        );
    }

    #[test]
    fn poison_payments_are_told_apart() {
        let id = Uuid::new_v4();
        let parse = |b: &str| Payment::parse(b.as_bytes());
        assert!(parse("not json").is_err());
        assert!(parse("[1]").is_err());
        assert!(parse(&format!(r#"{{"purchase_id": "{id}", "amount_cents": 5}}"#)).is_err());
        assert!(parse(&format!(
            r#"{{"event_id": "", "purchase_id": "{id}", "amount_cents": 5}}"#
        ))
        .is_err());
        assert!(parse(&format!(
            r#"{{"event_id": "e", "purchase_id": "{id}", "amount_cents": 0}}"#
        ))
        .is_err());
        let payment = parse(&format!(
            r#"{{"event_id": "e", "purchase_id": "{id}", "amount_cents": 5}}"#
        ))
        .unwrap();
        assert_eq!(payment.purchase_id, Some(id));
        // An id of no purchase of this service parses, and is poison once looked up.
        let payment = parse(r#"{"event_id": "e", "purchase_id": 7, "amount_cents": 5}"#).unwrap();
        assert_eq!(payment.purchase_id, None);
    }

    #[test]
    fn events_carry_their_fields() {
        let input = PurchaseInput {
            customer: "Amber Otter".into(),
            sku: "KB-1042".into(),
            quantity: 2,
            amount_cents: 4999,
        };
        let id = Uuid::new_v4();
        let event = Event::created(id, &input);
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["event_id"], json!(event.event_id));
        assert_eq!(body["type"], json!("purchase.created"));
        assert_eq!(body["purchase_id"], json!(id.to_string()));
        assert_eq!(body["quantity"], json!(2));
        let cancelled = Event::cancelled(id);
        assert_ne!(cancelled.event_id, event.event_id);
        let body: Value = serde_json::from_str(&cancelled.body).unwrap();
        assert_eq!(body["type"], json!("purchase.cancelled"));
        assert!(body["occurred_at"].as_str().unwrap().ends_with('Z'));
    }
}
