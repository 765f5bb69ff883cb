//! A client for request/reply over the broker (what the bot frontend does to ask the ranker).
//!
//! Replies come back on a *reply path* of the client's own: an exclusive, server-named queue (the
//! default, `amqp.rpc_reply = "queue"`) or RabbitMQ's direct reply-to pseudo-queue
//! (`amq.rabbitmq.reply-to`, `"direct"`). Direct reply-to saves declaring a queue, but the broker
//! reports every `mandatory` reply to it as unroutable, delivered or not, so a server cannot tell a
//! reply that reached nobody (see `tests/rpc.rs`); hence the default. Either path lives only as
//! long as the connection it was made on, so a task keeps one open: when the connection is lost it opens a new one (with the bus's backoff),
//! and every call waiting on the old one fails at once and is sent again, once, on the new path.
//! While there is no path the broker's readiness component [`Component::ReplyPath`] is down, so
//! `/readyz` says so.
//!
//! Requests carry an `expiration` equal to the caller's timeout: a request nobody took in time is
//! dropped by the broker (and skipped by a server that sees it late) instead of being answered
//! after the caller gave up. The server publishes its reply `mandatory`, so a reply to a path that
//! is gone comes back to it as unroutable ([`crate::Routed::NoQueue`]) and it can undo its work.
//! With an exclusive reply queue, requests are published confirmed, like every other message
//! (with direct reply-to they must go on the consuming channel, unconfirmed).

use crate::{Bus, BusError, QueueName, Routed};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};
use oleg_messages::{encode, Message};
pub use oleg_settings::ReplyMode;
use oleg_telemetry::Component;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// The pseudo-queue of RabbitMQ's direct reply-to.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Whether `reply_to` is a direct reply-to address (the broker hands the server
/// `amq.rabbitmq.reply-to.<token>`): a `mandatory` reply to it is reported unroutable whether it
/// reached its caller or not, so that report says nothing.
pub fn is_direct_reply_to(reply_to: &str) -> bool {
    reply_to.starts_with(DIRECT_REPLY_TO)
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the reply path was lost twice during the call")]
    Disconnected,
}

/// A live reply path: the channel requests are published on and replies arrive on.
struct ReplyPath {
    channel: Channel,
    mode: ReplyMode,
    /// What requests name as `reply_to`.
    address: String,
    generation: u64,
}

/// A call waiting for its reply, and the path it was sent on.
struct Waiter {
    generation: u64,
    reply: oneshot::Sender<Vec<u8>>,
}

type Waiters = Arc<Mutex<HashMap<String, Waiter>>>;

/// Cheap to clone: clones share the reply path.
#[derive(Clone)]
pub struct RpcClient {
    bus: Bus,
    path: watch::Receiver<Option<Arc<ReplyPath>>>,
    waiters: Waiters,
}

impl RpcClient {
    /// Opens the reply path (waiting for the broker, until shutdown) with the configured mode and
    /// keeps it open until the bus shuts down.
    pub async fn new(bus: &Bus) -> Result<Self, BusError> {
        Self::with_mode(bus, bus.settings().rpc_reply).await
    }

    pub async fn with_mode(bus: &Bus, mode: ReplyMode) -> Result<Self, BusError> {
        let (publish, path) = watch::channel(None);
        let waiters: Waiters = Arc::default();
        tokio::spawn(keep_reply_path(bus.clone(), mode, publish, waiters.clone()));
        let mut ready = path.clone();
        tokio::select! {
            _ = bus.shutdown_token().cancelled() => return Err(BusError::ShuttingDown),
            opened = ready.wait_for(Option::is_some) => { opened.map_err(|_| BusError::ShuttingDown)?; }
        }
        Ok(Self {
            bus: bus.clone(),
            path,
            waiters,
        })
    }

    /// Whether replies can arrive now.
    pub fn is_connected(&self) -> bool {
        self.path.borrow().is_some()
    }

    /// Sends `request` to a shared queue and waits for its reply body.
    pub async fn call<M: Message>(
        &self,
        queue: QueueName,
        request: &M,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_raw(queue, &encode(request), timeout).await
    }

    /// Sends raw bytes (tests of malformed requests). A call whose reply path is lost is sent
    /// once more on the next path, within the same `timeout`.
    pub async fn call_raw(
        &self,
        queue: QueueName,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let deadline = Instant::now() + timeout;
        let metrics = &self.bus.metrics().rpc_calls;
        let outcome = match self.attempt(queue, body, deadline, 0).await {
            Err(Attempt::Lost(generation)) => {
                tracing::info!("the reply path was lost during a call; sending it again");
                metrics.with_label_values(&["resent"]).inc();
                self.attempt(queue, body, deadline, generation).await
            }
            other => other,
        };
        let (label, result) = match outcome {
            Ok(reply) => ("ok", Ok(reply)),
            Err(Attempt::Lost(_)) => ("lost", Err(RpcError::Disconnected)),
            Err(Attempt::TimedOut) => ("timeout", Err(RpcError::Timeout(timeout))),
            Err(Attempt::Failed(error)) => ("failed", Err(RpcError::Bus(error))),
        };
        metrics.with_label_values(&[label]).inc();
        result
    }

    /// Sends once on a path newer than generation `after` and waits for the reply.
    async fn attempt(
        &self,
        queue: QueueName,
        body: &[u8],
        deadline: Instant,
        after: u64,
    ) -> Result<Vec<u8>, Attempt> {
        let mut current = self.path.clone();
        let newer =
            |path: &Option<Arc<ReplyPath>>| path.as_ref().is_some_and(|p| p.generation > after);
        let path = tokio::select! {
            _ = self.bus.shutdown_token().cancelled() => return Err(Attempt::Failed(BusError::ShuttingDown)),
            _ = tokio::time::sleep_until(deadline) => return Err(Attempt::TimedOut),
            path = current.wait_for(newer) => path
                .map_err(|_| Attempt::Failed(BusError::ShuttingDown))?
                .clone()
                .expect("waited for a path"),
        };
        let id = uuid::Uuid::new_v4().to_string();
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().expect("not poisoned").insert(
            id.clone(),
            Waiter {
                generation: path.generation,
                reply: sender,
            },
        );
        let forget = || self.waiters.lock().expect("not poisoned").remove(&id);
        let left = deadline.saturating_duration_since(Instant::now());
        let properties = BasicProperties::default()
            .with_reply_to(path.address.clone().into())
            .with_correlation_id(id.clone().into())
            .with_expiration(left.as_millis().max(1).to_string().into());
        let request_queue = self.bus.topology().queue(queue);
        match path.mode {
            // Confirmed, like every other publish: a request the broker cannot take is nacked
            // and sent again on a fresh channel. Unconfirmed requests were lost without a word
            // for as long as a cluster node was down (the drill), when the channel had been
            // opened while the request queue was electing a new leader.
            ReplyMode::Queue => {
                match self
                    .bus
                    .publish_bytes("", &request_queue, body, properties)
                    .await
                {
                    Ok(Routed::Queued) => {}
                    Ok(Routed::NoQueue) => {
                        forget();
                        return Err(Attempt::Failed(BusError::NoQueue(request_queue)));
                    }
                    Err(error) => {
                        forget();
                        return Err(Attempt::Failed(error));
                    }
                }
            }
            // Direct reply-to needs the request published on the consuming channel; the reply
            // is its confirmation, and a request lost with its connection shows as a lost path
            // (sent again) or, at worst, as a timeout.
            ReplyMode::Direct => {
                let properties = crate::connection::stamped(properties)
                    .with_content_type("application/json".into());
                let sent = path
                    .channel
                    .basic_publish(
                        "".into(),
                        request_queue.into(),
                        BasicPublishOptions::default(),
                        body,
                        properties,
                    )
                    .await;
                if let Err(error) = sent {
                    forget();
                    tracing::debug!(%error, "publishing a request on a lost reply path");
                    return Err(Attempt::Lost(path.generation));
                }
            }
        }
        match tokio::time::timeout(left, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            // The path's task dropped the waiter: the path was lost.
            Ok(Err(_)) => Err(Attempt::Lost(path.generation)),
            Err(_) => {
                forget();
                Err(Attempt::TimedOut)
            }
        }
    }
}

enum Attempt {
    /// The path of this generation was lost before the reply came.
    Lost(u64),
    TimedOut,
    Failed(BusError),
}

/// Opens a reply path, hands it out, delivers its replies, and opens the next one when it is
/// lost, until shutdown.
async fn keep_reply_path(
    bus: Bus,
    mode: ReplyMode,
    publish: watch::Sender<Option<Arc<ReplyPath>>>,
    waiters: Waiters,
) {
    let mut backoff = bus.backoff();
    let mut generation = 0;
    loop {
        let opened = match bus.open_channel(None).await {
            Ok((channel, _)) => open_path(&bus, channel, mode).await,
            Err(error) => Err(error),
        };
        let (channel, address, mut consumer) = match opened {
            Ok(opened) => opened,
            Err(BusError::ShuttingDown) => break,
            Err(error) => {
                tracing::warn!(%error, "could not open the reply path; retrying");
                tokio::select! {
                    _ = bus.shutdown_token().cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        backoff.reset();
        generation += 1;
        tracing::info!(%address, generation, "reply path open");
        publish.send_replace(Some(Arc::new(ReplyPath {
            channel: channel.clone(),
            mode,
            address,
            generation,
        })));
        bus.set_component(Component::ReplyPath, true);
        bus.metrics().rpc_reply_path_up.set(1);
        loop {
            let delivery = tokio::select! {
                _ = bus.shutdown_token().cancelled() => None,
                delivery = consumer.next() => delivery,
            };
            let Some(Ok(delivery)) = delivery else { break };
            let waiter = delivery
                .properties
                .correlation_id()
                .as_ref()
                .and_then(|id| waiters.lock().expect("not poisoned").remove(id.as_str()));
            match waiter {
                Some(waiter) => {
                    let _ = waiter.reply.send(delivery.data);
                }
                // The caller timed out, or this answers a request sent again.
                None => bus.metrics().rpc_unmatched_replies.inc(),
            }
        }
        publish.send_replace(None);
        bus.set_component(Component::ReplyPath, false);
        bus.metrics().rpc_reply_path_up.set(0);
        // Calls sent on the lost path will get no reply: dropping their senders wakes them.
        waiters
            .lock()
            .expect("not poisoned")
            .retain(|_, waiter| waiter.generation != generation);
        if bus.shutdown_token().is_cancelled() {
            break;
        }
        tracing::warn!(generation, "reply path lost; opening a new one");
        let _ = channel.close(200, "reply path lost".into()).await;
    }
}

async fn open_path(
    bus: &Bus,
    channel: Channel,
    mode: ReplyMode,
) -> Result<(Channel, String, Consumer), BusError> {
    let queue = match mode {
        ReplyMode::Direct => DIRECT_REPLY_TO.to_owned(),
        ReplyMode::Queue => bus.topology().declare_replica_queue(&channel, &[]).await?,
    };
    let consumer = channel
        .basic_consume(
            queue.clone().into(),
            "".into(),
            // Direct reply-to requires no-ack; an exclusive queue loses nothing by it either,
            // since an unanswered call is sent again.
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((channel, queue, consumer))
}
