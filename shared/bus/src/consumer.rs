use crate::{Bus, BusError, Routed};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::Acker;
use lapin::{BasicProperties, Channel, Consumer};
use oleg_messages::{DeadLetter, DeadLetterReason, Rejection};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a subscription consumes.
#[derive(Debug, Clone)]
pub enum Source {
    /// A durable shared queue: replicas compete for its messages.
    Shared(crate::QueueName),
    /// A queue of this replica's own, bound to these routing keys: every replica sees every
    /// message (notices such as model-published). Messages sent while the replica is down are
    /// not kept for it.
    PerReplica(Vec<&'static str>),
}

/// A consumer that survives broker restarts: [`Subscription::next`] reconnects, redeclares and
/// resumes on its own, and returns `None` only at shutdown.
///
/// `next` is cancel-safe: a caller that stops waiting (a timeout, the other branch of a
/// `select!`) loses no delivery. Starting runs as a task of its own, which the next call picks
/// up: cut short half-way, a start would leave a consumer on an open channel taking messages
/// nobody reads, and a start merely paused would hold the bus's connection while the caller
/// publishes.
pub struct Subscription {
    bus: Bus,
    source: Source,
    starting: Option<JoinHandle<Result<Active, BusError>>>,
    active: Option<Active>,
    /// How many times it has started consuming.
    starts: watch::Sender<u64>,
}

struct Active {
    channel: Channel,
    consumer: Consumer,
    queue: String,
}

impl Subscription {
    pub fn new(bus: Bus, source: Source) -> Self {
        Self {
            bus,
            source,
            starting: None,
            active: None,
            starts: watch::Sender::new(0),
        }
    }

    /// How many times the subscription has started consuming, as it changes. For a
    /// [`Source::PerReplica`] each start is a new queue, and what was sent before it reached
    /// nobody: a replica that keeps state from notices reads the state again at each start.
    pub fn starts(&self) -> watch::Receiver<u64> {
        self.starts.subscribe()
    }

    /// The next delivery; `None` once shutdown was requested (consuming stops; unacked messages
    /// return to the queue when the bus closes).
    pub async fn next(&mut self) -> Option<Incoming> {
        let shutdown = self.bus.shutdown_token().clone();
        loop {
            if shutdown.is_cancelled() {
                self.stop().await;
                return None;
            }
            if self.active.is_none() {
                let (bus, source) = (&self.bus, &self.source);
                let starting = self
                    .starting
                    .get_or_insert_with(|| tokio::spawn(start(bus.clone(), source.clone())));
                // A start waiting on a silent broker (its channel asked for, never answered)
                // would otherwise hold the stop until the broker answers again.
                let started = tokio::select! {
                    _ = shutdown.cancelled() => continue,
                    started = starting => started.expect("starting a subscription does not panic"),
                };
                self.starting = None;
                match started {
                    Ok(active) => {
                        self.active = Some(active);
                        self.starts.send_modify(|starts| *starts += 1);
                    }
                    Err(BusError::ShuttingDown) => return None,
                    Err(error) => {
                        tracing::warn!(%error, "could not start consuming; retrying");
                        continue;
                    }
                }
            }
            let active = self.active.as_mut().expect("started above");
            let item = tokio::select! {
                _ = shutdown.cancelled() => continue,
                item = active.consumer.next() => item,
            };
            match item {
                Some(Ok(delivery)) => {
                    let queue = active.queue.clone();
                    self.bus
                        .metrics()
                        .consumed
                        .with_label_values(&[&queue])
                        .inc();
                    return Some(Incoming::new(delivery, queue, self.bus.clone()));
                }
                Some(Err(error)) => {
                    self.bus.report_broker_lost(&error);
                    self.active = None;
                }
                None => {
                    tracing::warn!(queue = %active.queue, "the broker cancelled the consumer; resubscribing");
                    self.active = None;
                }
            }
        }
    }

    /// Stops consuming; deliveries already handed out can still be acked until the bus closes.
    async fn stop(&mut self) {
        // A start under way ends at shutdown, or is given up after `amqp.confirm_timeout_ms` as
        // any call made while stopping (its channel goes with the connection); one that got as
        // far as consuming is cancelled too.
        if let Some(mut starting) = self.starting.take() {
            let mut started = None;
            let start = async {
                if let Ok(Ok(active)) = (&mut starting).await {
                    started = Some(active);
                }
                Ok(())
            };
            self.bus.while_stopping("starting to consume", start).await;
            // Given up on (a no-op once it has ended).
            starting.abort();
            self.active = started;
        }
        if let Some(active) = self.active.take() {
            let tag = active.consumer.tag();
            self.bus
                .while_stopping(
                    "cancelling the consumer",
                    active
                        .channel
                        .basic_cancel(tag, BasicCancelOptions::default()),
                )
                .await;
            tracing::info!(queue = %active.queue, "stopped consuming");
        }
    }
}

impl Drop for Subscription {
    /// A start still under way is left to finish and its channel closed, so that its consumer
    /// holds no message back from the queue's other consumers.
    fn drop(&mut self) {
        let Some(starting) = self.starting.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(active)) = starting.await {
                    let _ = active
                        .channel
                        .close(200, "subscription dropped".into())
                        .await;
                }
            });
        }
    }
}

/// Opens a channel and starts consuming `source` on it, retrying with backoff until the broker
/// answers or shutdown.
async fn start(bus: Bus, source: Source) -> Result<Active, BusError> {
    let mut backoff = bus.backoff();
    loop {
        let (channel, _) = bus.open_channel(None).await?;
        match subscribe(&bus, &source, &channel).await {
            Ok((consumer, queue)) => {
                tracing::info!(%queue, prefetch = bus.settings().prefetch, "consuming");
                return Ok(Active {
                    channel,
                    consumer,
                    queue,
                });
            }
            Err(error) => {
                bus.report_broker_lost(&error);
                tokio::select! {
                    _ = bus.shutdown_token().cancelled() => return Err(BusError::ShuttingDown),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

async fn subscribe(
    bus: &Bus,
    source: &Source,
    channel: &Channel,
) -> Result<(Consumer, String), lapin::Error> {
    channel
        .basic_qos(bus.settings().prefetch, BasicQosOptions::default())
        .await?;
    let queue = match source {
        Source::Shared(name) => bus.topology().queue(*name),
        Source::PerReplica(keys) => bus.topology().declare_replica_queue(channel, keys).await?,
    };
    let consumer = channel
        .basic_consume(
            queue.clone().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((consumer, queue))
}

/// One delivery. [`settle`](Self::settle) (or a plain [`ack`](Self::ack)) should end it; if
/// nothing does (a crash), the broker redelivers it.
pub struct Incoming {
    pub body: Vec<u8>,
    pub routing_key: String,
    pub properties: BasicProperties,
    /// The queue it came from.
    pub queue: String,
    /// The broker delivered it before (to a consumer that did not ack it).
    pub redelivered: bool,
    acker: Acker,
    bus: Bus,
}

impl Incoming {
    fn new(delivery: Delivery, queue: String, bus: Bus) -> Self {
        Self {
            body: delivery.data,
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties,
            queue,
            redelivered: delivery.redelivered,
            acker: delivery.acker,
            bus,
        }
    }

    /// Which delivery this is, from 1. Quorum queues count earlier deliveries in `x-delivery-count`.
    pub fn attempt(&self) -> u32 {
        let earlier = self.header("x-delivery-count").unwrap_or(0);
        u32::try_from(earlier).unwrap_or(0).saturating_add(1)
    }

    /// How many times an operator replayed it from the dead letters.
    pub fn replays(&self) -> u32 {
        self.header(crate::REPLAYS_HEADER)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    }

    fn header(&self, key: &str) -> Option<i64> {
        crate::dead_letters::header_int(self.properties.headers().as_ref()?, key)
    }

    /// How long the message waited since it was published (from its `x-sent-at-ms` header).
    pub fn queue_wait(&self) -> Option<Duration> {
        let sent = self.header(crate::SENT_AT_HEADER)?;
        u64::try_from(crate::connection::now_ms() - sent)
            .ok()
            .map(Duration::from_millis)
    }

    /// Whether the message's `expiration` (milliseconds after its `x-sent-at-ms`) has passed: its
    /// sender stopped waiting for an answer.
    pub fn expired(&self) -> bool {
        let ttl = self
            .properties
            .expiration()
            .as_ref()
            .and_then(|ms| ms.as_str().parse::<u64>().ok());
        match (ttl, self.queue_wait()) {
            (Some(ttl), Some(waited)) => waited > Duration::from_millis(ttl),
            _ => false,
        }
    }

    pub fn reply_to(&self) -> Option<String> {
        self.properties.reply_to().as_ref().map(|s| s.to_string())
    }

    pub fn correlation_id(&self) -> Option<String> {
        self.properties
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string())
    }

    /// The work is durable: remove the message from its queue.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Refuses the message for good: the envelope (reason, detail, original body) is confirmed on
    /// the dead-letter queue before the original is acked, so nothing is lost in between.
    pub(crate) async fn dead_letter(self, rejection: Rejection) -> Result<(), BusError> {
        let letter = DeadLetter::new(
            rejection.reason,
            rejection.detail,
            &self.queue,
            &self.routing_key,
            self.attempt(),
            &self.body,
        )
        .replayed(self.replays());
        tracing::warn!(queue = %self.queue, reason = letter.reason.as_str(), detail = %letter.detail, "dead-lettering a message");
        if self.bus.publish_dead_letter(&letter).await? == Routed::NoQueue {
            // Someone deleted it: declare the topology again, and keep the message, coming back
            // after a growing delay rather than at once (a hot loop otherwise).
            self.bus
                .metrics()
                .dead_letter_queue_missing
                .with_label_values(&[&self.queue])
                .inc();
            let delay = self.backoff_delay();
            tracing::error!(queue = %self.queue, ?delay, "the dead-letter queue is missing; declaring it again and keeping the message");
            if let Err(error) = self.bus.redeclare_topology().await {
                tracing::warn!(%error, "could not declare the topology again");
            }
            return self.requeue_after(delay).await;
        }
        self.ack().await
    }

    /// `amqp.reconnect_min_ms` doubled per earlier attempt, capped at `amqp.reconnect_max_ms`.
    fn backoff_delay(&self) -> Duration {
        let settings = self.bus.settings();
        let doubled = settings
            .reconnect_min_ms
            .saturating_mul(1 << self.attempt().saturating_sub(1).min(20));
        Duration::from_millis(doubled.min(settings.reconnect_max_ms))
    }

    /// The work failed: hand the message back for another attempt after a short delay, or
    /// dead-letter it with `reason` once `amqp.max_attempts` deliveries have failed.
    pub(crate) async fn retry_or_dead_letter(
        self,
        reason: DeadLetterReason,
        error: &str,
    ) -> Result<(), BusError> {
        let attempt = self.attempt();
        let max_attempts = self.bus.settings().max_attempts;
        if attempt >= max_attempts {
            return self
                .dead_letter(Rejection::new(
                    reason,
                    format!("failed {attempt} of {max_attempts} attempts; last error: {error}"),
                ))
                .await;
        }
        self.bus
            .metrics()
            .retried
            .with_label_values(&[&self.queue])
            .inc();
        let delay = Duration::from_millis(
            self.bus
                .settings()
                .reconnect_min_ms
                .saturating_mul(u64::from(attempt)),
        );
        tracing::info!(queue = %self.queue, attempt, max_attempts, %error, ?delay, "will retry a message");
        self.requeue_after(delay).await
    }

    /// Requeues after `delay` without holding up the caller: the delivery stays unacked (and
    /// counts against the prefetch) until then, which also slows a consumer that keeps failing.
    async fn requeue_after(self, delay: Duration) -> Result<(), BusError> {
        let acker = self.acker;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            if let Err(error) = acker.nack(requeue).await {
                // The channel is gone, which returns the message to its queue all the same.
                tracing::debug!(%error, "requeue after a lost channel");
            }
        });
        Ok(())
    }
}
