//! The grader's own side of the run's RabbitMQ: what a check reads from and publishes to the
//! broker the service uses. It connects directly (never through the fault link the service gets),
//! so cutting the service off the broker never blinds the grader.
//!
//! Everything a service publishes is untrusted: deliveries are kept up to [`MAX_KEPT`] with bodies
//! capped at [`MAX_BODY`], and every broker operation has a timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::{CheckContext, Failure};

/// How long one broker operation (connect, declare, publish and its confirm, get) may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries kept per listener; a service that floods the exchange cannot grow the grader.
const MAX_KEPT: usize = 5_000;
/// Bytes of a message body kept.
const MAX_BODY: usize = 64 * 1024;

/// A message as it arrived, with the properties the exercises judge.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub body: Vec<u8>,
    /// The body was longer than [`MAX_BODY`] and was cut.
    pub truncated: bool,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub redelivered: bool,
    /// `x-death` reasons RabbitMQ adds when it dead-letters a message (`rejected`, `expired`, ...).
    pub death_reasons: Vec<String>,
    pub at: Instant,
}

impl Received {
    /// The body as JSON, when it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// One line for a report: routing key, id and the body (shortened).
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        format!(
            "{} message_id={} {}",
            self.routing_key,
            self.message_id.as_deref().unwrap_or("(none)"),
            super::assert::shorten(&body, 300)
        )
    }

    fn from_delivery(delivery: &lapin::message::Delivery) -> Self {
        let props = &delivery.properties;
        let truncated = delivery.data.len() > MAX_BODY;
        let body = delivery.data[..delivery.data.len().min(MAX_BODY)].to_vec();
        Received {
            routing_key: delivery.routing_key.as_str().to_string(),
            body,
            truncated,
            message_id: props.message_id().as_ref().map(|s| s.as_str().to_string()),
            content_type: props
                .content_type()
                .as_ref()
                .map(|s| s.as_str().to_string()),
            delivery_mode: *props.delivery_mode(),
            redelivered: delivery.redelivered,
            death_reasons: death_reasons(props),
            at: Instant::now(),
        }
    }
}

fn death_reasons(props: &BasicProperties) -> Vec<String> {
    let Some(headers) = props.headers() else {
        return Vec::new();
    };
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return Vec::new();
    };
    deaths
        .as_slice()
        .iter()
        .filter_map(|death| match death {
            AMQPValue::FieldTable(table) => match table.inner().get("reason") {
                Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// What the grader publishes: a body and the properties a producer sets.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub message_id: Option<String>,
}

impl Outgoing {
    /// As the report shows it.
    pub fn describe(&self, exchange: &str) -> String {
        format!(
            "publish to {exchange} with routing key {} (message_id={}, content_type=application/json, persistent, mandatory): {}",
            self.routing_key,
            self.message_id.as_deref().unwrap_or("(none)"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A connection of the grader's to the run's broker.
pub struct Broker {
    connection: Connection,
    channel: Channel,
}

/// Messages arriving on the grader's own queue, bound to an exchange, collected as they come.
pub struct Listener {
    received: Arc<Mutex<Vec<Received>>>,
    dropped: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
    /// The server-named queue, for messages.
    pub queue: String,
}

impl Listener {
    /// Everything received so far, in arrival order.
    pub fn snapshot(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    /// Messages beyond [`MAX_KEPT`] that were counted but not kept.
    pub fn dropped(&self) -> usize {
        *lock(&self.dropped)
    }

    /// Waits until `done` holds for what has arrived, or `timeout` passes; then returns what
    /// arrived. Polls: deliveries land from the consumer task.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.snapshot();
            if done(&now) || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", describe_error(&e))),
        Err(_) => Err(format!(
            "{what}: no answer from the broker within {}",
            humantime::format_duration(OPERATION_TIMEOUT)
        )),
    }
}

/// The broker's reply text ("NOT_FOUND - no exchange 'x' in vhost '/'") when there is one.
fn describe_error(e: &lapin::Error) -> String {
    let text = e.to_string();
    text.trim().to_string()
}

/// Whether a declare failed because the thing is not there (404), as opposed to the broker or
/// the connection failing.
fn is_not_found(message: &str) -> bool {
    message.contains("NOT_FOUND") || message.contains("404")
}

/// Connects to the run's broker as the grader. A run without one is the exercise's error: it
/// uses a broker probe but does not declare `[broker]`.
pub async fn connect(ctx: &CheckContext<'_>) -> Result<Broker, Failure> {
    let Some(info) = ctx.service.broker.as_ref() else {
        return Err(match ctx.service.kind {
            "external" => Failure::Skip(
                "the grader reads and writes the broker it runs itself; with --runtime external there is none".into(),
            ),
            _ => Failure::Error(
                "this check needs the run's RabbitMQ, but none was started: the exercise must declare `[broker]`".into(),
            ),
        });
    };
    let connection = timed(
        "connect to the run's RabbitMQ",
        Connection::connect(&info.grader_url, ConnectionProperties::default()),
    )
    .await
    .map_err(Failure::Error)?;
    let channel = open_channel(&connection).await.map_err(Failure::Error)?;
    Ok(Broker {
        connection,
        channel,
    })
}

async fn open_channel(connection: &Connection) -> Result<Channel, String> {
    let channel = timed("open a channel", connection.create_channel()).await?;
    timed(
        "turn on publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    Ok(channel)
}

impl Broker {
    /// Whether an exchange exists.
    pub async fn exchange_exists(&self, name: &str) -> Result<bool, Failure> {
        let found = self
            .passively("look up the exchange", |channel| async move {
                channel
                    .exchange_declare(
                        name.into(),
                        lapin::ExchangeKind::Topic,
                        ExchangeDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
            })
            .await?;
        Ok(found.is_some())
    }

    /// The number of ready messages in a queue, or `None` when it does not exist.
    pub async fn queue_depth(&self, name: &str) -> Result<Option<u32>, Failure> {
        let found = self
            .passively("look up the queue", |channel| async move {
                channel
                    .queue_declare(
                        name.into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
            })
            .await?;
        Ok(found.map(|queue| queue.message_count()))
    }

    /// Runs a passive declare on a channel of its own (a declare that fails closes its channel)
    /// and answers `None` for NOT_FOUND.
    async fn passively<T, F>(
        &self,
        what: &str,
        declare: impl FnOnce(Channel) -> F,
    ) -> Result<Option<T>, Failure>
    where
        F: std::future::Future<Output = lapin::Result<T>>,
    {
        let channel = open_channel(&self.connection)
            .await
            .map_err(Failure::Error)?;
        let declared = timed(what, declare(channel.clone())).await;
        let _ = channel.close(200, "done".into()).await;
        match declared {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(Failure::Error(e)),
        }
    }

    /// A queue of the grader's own (server-named, exclusive: gone when the grader disconnects)
    /// bound to `exchange` with each of `keys`, consumed from now on. An exchange that does not
    /// exist is the service's failure: the README asks it to declare it at start-up.
    pub async fn listen(&self, exchange: &str, keys: &[String]) -> Result<Listener, Failure> {
        if !self.exchange_exists(exchange).await? {
            return Err(no_exchange(exchange));
        }
        let channel = open_channel(&self.connection)
            .await
            .map_err(Failure::Error)?;
        let queue = timed(
            "declare the grader's queue",
            channel.queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .map_err(Failure::Error)?;
        let queue_name = queue.name().as_str().to_string();
        for key in keys {
            timed(
                "bind the grader's queue",
                channel.queue_bind(
                    queue_name.as_str().into(),
                    exchange.into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(Failure::Error)?;
        }
        let mut consumer = timed(
            "consume the grader's queue",
            channel.basic_consume(
                queue_name.as_str().into(),
                "grader".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .map_err(Failure::Error)?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(Mutex::new(0usize));
        let (sink, overflow) = (received.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            // The channel lives as long as the consumer task.
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let mut kept = lock(&sink);
                if kept.len() < MAX_KEPT {
                    kept.push(Received::from_delivery(&delivery));
                } else {
                    *lock(&overflow) += 1;
                }
            }
        });
        Ok(Listener {
            received,
            dropped,
            task,
            queue: queue_name,
        })
    }

    /// Publishes persistently, with `mandatory` and a publisher confirm. `Ok(false)` means the
    /// broker returned the message: no queue is bound for its routing key.
    pub async fn publish(&self, exchange: &str, message: &Outgoing) -> Result<bool, Failure> {
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if let Some(id) = &message.message_id {
            properties = properties.with_message_id(id.as_str().into());
        }
        let confirm = timed(
            "publish",
            self.channel.basic_publish(
                exchange.into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &message.body,
                properties,
            ),
        )
        .await
        .map_err(|e| publish_failed(exchange, e))?;
        let confirmation = timed("wait for the broker's confirm", confirm)
            .await
            .map_err(|e| publish_failed(exchange, e))?;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(true),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Ok(false),
            Confirmation::Nack(None) => Err(Failure::Error(format!(
                "the run's RabbitMQ refused a message published to {exchange} (nack)"
            ))),
        }
    }

    /// Takes the next message of a queue (acknowledged: the grader consumes it), or `None` when
    /// the queue is empty.
    pub async fn get(&self, queue: &str) -> Result<Option<Received>, Failure> {
        let got = timed(
            "read the queue",
            self.channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .map_err(Failure::Error)?;
        let Some(message) = got else { return Ok(None) };
        let received = Received::from_delivery(&message.delivery);
        timed(
            "acknowledge",
            message.delivery.ack(BasicAckOptions::default()),
        )
        .await
        .map_err(Failure::Error)?;
        Ok(Some(received))
    }

    /// Closes the connection (the grader's queues go with it). Bounded, and errors are moot.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            OPERATION_TIMEOUT,
            self.connection.close(200, "check done".into()),
        )
        .await;
    }
}

fn publish_failed(exchange: &str, e: String) -> Failure {
    if is_not_found(&e) {
        no_exchange(exchange)
    } else {
        Failure::Error(format!("the grader could not publish to {exchange}: {e}"))
    }
}

fn no_exchange(exchange: &str) -> Failure {
    Failure::Fail(super::FailInfo {
        message: format!(
            "the exchange {exchange} does not exist on the broker: your service must declare it at start-up, before it answers its health check"
        ),
        expected: format!("a durable topic exchange named {exchange}"),
        actual: "no such exchange (the broker answered NOT_FOUND)".into(),
        evidence: vec![format!(
            "exchange.declare {exchange} (passive): 404 NOT_FOUND"
        )],
        ..Default::default()
    })
}
