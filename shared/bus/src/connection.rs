use crate::metrics::BusMetrics;
use crate::{Backoff, BusError, Topology, REASON_HEADER, SENT_AT_HEADER};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use oleg_messages::{encode, DeadLetter, Message};
use oleg_settings::AmqpSettings;
use oleg_telemetry::{Component, Readiness};
use prometheus::Registry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where a confirmed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// At least one queue took it.
    Queued,
    /// No queue is bound for its routing key (e.g. a notice nobody listens to yet); the broker
    /// returned it.
    NoQueue,
}

/// A queue as the broker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    pub ready: u32,
    pub consumers: u32,
}

/// A handle on the broker shared by a worker's tasks: one connection, re-established on loss,
/// with one publishing channel in confirm mode and one channel per subscription.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AmqpSettings,
    topology: Topology,
    name: String,
    readiness: Readiness,
    metrics: BusMetrics,
    connection: Mutex<Link>,
    publisher: Mutex<Publisher>,
    /// Every channel opened and not known to be closed, so that a stop can close each one
    /// before the connection (a channel dropped as the connection closes makes lapin log a
    /// connection error).
    channels: std::sync::Mutex<Vec<Channel>>,
    /// The node (of `amqp.uri`'s list) connected to last, tried first next time.
    node: AtomicUsize,
    shutdown: CancellationToken,
}

/// The channel publishes go on, in confirm mode, and the opening of the next one.
#[derive(Default)]
struct Publisher {
    channel: Option<Channel>,
    /// Opens a channel in a task of its own, which a publish waits on until its deadline and
    /// the next publish takes over: on a silent broker, one opening however many publishes
    /// give up meanwhile, none of them cut short half-way (a channel asked for, its answer
    /// never read).
    opening: Option<JoinHandle<Result<Channel, BusError>>>,
}

/// The current connection and how many were made so far, so that a task that saw connection n
/// fail does not tear down connection n+1 another task already made.
#[derive(Default)]
struct Link {
    connection: Option<Connection>,
    generation: u64,
}

impl Bus {
    /// Connects, declaring the topology, retrying with backoff until the broker answers or
    /// `shutdown` fires. The broker lists the connection as `<name>@<prefix>`.
    pub async fn connect(
        settings: AmqpSettings,
        name: &str,
        registry: &Registry,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> Result<Self, BusError> {
        let bus = Self {
            inner: Arc::new(Inner {
                topology: Topology::new(settings.prefix.clone()),
                settings,
                name: name.to_owned(),
                readiness,
                metrics: BusMetrics::register(registry)?,
                connection: Mutex::new(Link::default()),
                publisher: Mutex::default(),
                channels: std::sync::Mutex::new(Vec::new()),
                node: AtomicUsize::new(0),
                shutdown,
            }),
        };
        bus.open_channel(None).await?;
        Ok(bus)
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    pub fn settings(&self) -> &AmqpSettings {
        &self.inner.settings
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn metrics(&self) -> &BusMetrics {
        &self.inner.metrics
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.inner.settings.reconnect_min_ms),
            Duration::from_millis(self.inner.settings.reconnect_max_ms),
        )
    }

    /// Reports one of the worker's broker-side dependencies (e.g. the RPC reply path) up or down.
    pub(crate) fn set_component(&self, component: Component, up: bool) {
        self.inner.readiness.set(component, up);
    }

    /// Marks the broker as lost (readiness, gauge) after a failure seen by any task.
    pub(crate) fn report_broker_lost(&self, error: &lapin::Error) {
        tracing::warn!(%error, "broker connection or channel lost");
        self.inner.readiness.set(Component::Broker, false);
        self.inner.metrics.connected.set(0);
    }

    /// A new channel on a live connection, reconnecting (with backoff, until `deadline` or
    /// shutdown) when the connection is gone. Returns the channel and its connection's generation.
    pub(crate) async fn open_channel(
        &self,
        deadline: Option<Instant>,
    ) -> Result<(Channel, u64), BusError> {
        let mut backoff = self.backoff();
        loop {
            match self.try_open_channel().await {
                Ok(opened) => return Ok(opened),
                Err(error) => {
                    self.report_broker_lost(&error);
                    let delay = backoff.next_delay();
                    if deadline.is_some_and(|d| Instant::now() + delay > d) {
                        return Err(BusError::Broker(error));
                    }
                    tracing::info!(?delay, uri = %self.inner.settings.redacted_uri(), "retrying the broker");
                    tokio::select! {
                        _ = self.inner.shutdown.cancelled() => return Err(BusError::ShuttingDown),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn try_open_channel(&self) -> Result<(Channel, u64), lapin::Error> {
        let (channel, generation) = self.open_on_connection().await?;
        let mut open = self.inner.channels.lock().expect("not poisoned");
        open.retain(|c| c.status().connected());
        open.push(channel.clone());
        Ok((channel, generation))
    }

    async fn open_on_connection(&self) -> Result<(Channel, u64), lapin::Error> {
        let mut link = self.inner.connection.lock().await;
        if let Some(connection) = link.connection.as_ref().filter(|c| c.status().connected()) {
            match connection.create_channel().await {
                Ok(channel) => return Ok((channel, link.generation)),
                Err(error) => tracing::warn!(%error, "could not open a channel; reconnecting"),
            }
        }
        if let Some(stale) = link.connection.take() {
            // Best effort: the old connection is usually dead already.
            let _ = stale.close(320, "reconnecting".into()).await;
        }
        // `oleg-bot@oleg`: which worker, in which deployment (several may share a broker).
        let connection_name = format!("{}@{}", self.inner.name, self.inner.settings.prefix);
        let properties =
            ConnectionProperties::default().with_connection_name(connection_name.into());
        let connection = self.connect_to_a_node(properties).await?;
        let channel = connection.create_channel().await?;
        self.inner.topology.declare(&channel).await?;
        link.generation += 1;
        if link.generation > 1 {
            self.inner.metrics.reconnects.inc();
        }
        tracing::info!(generation = link.generation, uri = %self.inner.settings.redacted_uri(), "connected to the broker");
        link.connection = Some(connection);
        self.inner.readiness.set(Component::Broker, true);
        self.inner.metrics.connected.set(1);
        Ok((channel, link.generation))
    }

    /// Connects to the first node that answers, starting from the one that answered last, so a
    /// lost node is passed over at once (the caller backs off only when none answers).
    async fn connect_to_a_node(
        &self,
        properties: ConnectionProperties,
    ) -> Result<Connection, lapin::Error> {
        let nodes = self.inner.settings.node_uris();
        let first = self.inner.node.load(Ordering::Relaxed);
        let mut failure = None;
        for step in 0..nodes.len() {
            let index = (first + step) % nodes.len();
            match Connection::connect(nodes[index], properties.clone()).await {
                Ok(connection) => {
                    self.inner.node.store(index, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(error) => {
                    if nodes.len() > 1 {
                        tracing::warn!(node = index, %error, "broker node unreachable; trying the next");
                    }
                    failure = Some(error);
                }
            }
        }
        Err(failure.expect("the settings hold at least one node"))
    }

    /// Publishes an event on the events exchange under its kind's routing key, returning once
    /// the broker confirmed it.
    pub async fn publish<M: Message>(&self, message: &M) -> Result<Routed, BusError> {
        let key = M::KIND
            .routing_key()
            .expect("only event kinds are published on the events exchange");
        self.publish_bytes(
            &self.inner.topology.events_exchange(),
            key,
            &encode(message),
            BasicProperties::default(),
        )
        .await
    }

    /// Sends an RPC reply straight to the requester's `reply_to` queue.
    pub async fn reply<M: Message>(
        &self,
        reply_to: &str,
        correlation_id: &str,
        message: &M,
    ) -> Result<Routed, BusError> {
        let properties = BasicProperties::default().with_correlation_id(correlation_id.into());
        self.publish_bytes("", reply_to, &encode(message), properties)
            .await
    }

    /// Stores a dead letter on the dead-letter exchange, with its reason also as a header.
    pub async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<Routed, BusError> {
        let reason = letter.reason.as_str();
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
        let properties = BasicProperties::default().with_headers(headers);
        let routed = self
            .publish_bytes(
                &self.inner.topology.dead_exchange(),
                &format!("dead.{reason}"),
                &encode(letter),
                properties,
            )
            .await?;
        self.inner
            .metrics
            .dead_lettered
            .with_label_values(&[&letter.queue, reason])
            .inc();
        Ok(routed)
    }

    /// Publishes persistent JSON and waits for the broker's confirm; a lost channel or a nack is
    /// retried until `amqp.confirm_timeout_ms` runs out. A retry after a lost confirm may deliver
    /// twice: consumers are idempotent. [`Routed::NoQueue`] means no attempt reached a queue; a
    /// retry returned unroutable after an attempt that may have reached one is
    /// [`BusError::ReturnedAfterLoss`].
    pub async fn publish_bytes(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Routed, BusError> {
        let timeout = Duration::from_millis(self.inner.settings.confirm_timeout_ms);
        let deadline = Instant::now() + timeout;
        let properties = stamped(properties)
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let mut backoff = self.backoff();
        // An attempt whose channel was lost after it went out may have been queued all the same.
        let mut may_have_landed = false;
        loop {
            let channel = self.publishing_channel(deadline).await?;
            // The error, and whether the message went out before it.
            let attempt = async {
                channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        body,
                        properties.clone(),
                    )
                    .await
                    .map_err(|error| (error, false))?
                    .await
                    .map_err(|error| (error, true))
            };
            let outcome =
                tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), attempt)
                    .await;
            let failure = match outcome {
                Err(_) => return Err(BusError::ConfirmTimeout(timeout)),
                Ok(Ok(Confirmation::Ack(returned))) => {
                    let routed = if returned.is_some() {
                        Routed::NoQueue
                    } else {
                        Routed::Queued
                    };
                    let label = if returned.is_some() {
                        "no_queue"
                    } else {
                        "queued"
                    };
                    self.inner
                        .metrics
                        .published
                        .with_label_values(&[routing_key, label])
                        .inc();
                    if routed == Routed::NoQueue && may_have_landed {
                        return Err(BusError::ReturnedAfterLoss(routing_key.to_owned()));
                    }
                    return Ok(routed);
                }
                Ok(Ok(Confirmation::Nack(_))) => {
                    // Retried on a fresh channel: in the drill, a channel opened while a quorum
                    // queue elected its new leader had every publish nacked for as long as the
                    // lost node was down.
                    // Taken in a statement of its own: held through the close, the lock would
                    // keep every other publish and the stop waiting on a broker that may never
                    // answer; the close itself waits no longer than this publish may.
                    let stale = self.inner.publisher.lock().await.channel.take();
                    if let Some(stale) = stale {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let closing = stale.close(200, "publish nacked".into());
                        let _ = tokio::time::timeout(left, closing).await;
                    }
                    "the broker nacked the publish".to_owned()
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    "the channel was not in confirm mode".to_owned()
                }
                Ok(Err((error, went_out))) => {
                    may_have_landed |= went_out;
                    self.report_broker_lost(&error);
                    self.inner.publisher.lock().await.channel = None;
                    error.to_string()
                }
            };
            self.inner.metrics.publish_retries.inc();
            let delay = backoff.next_delay();
            if Instant::now() + delay > deadline {
                return Err(BusError::ConfirmTimeout(timeout));
            }
            tracing::warn!(%failure, exchange, routing_key, ?delay, "publish not confirmed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// The publishing channel, opened (reconnecting if need be) when there is none; a
    /// [`BusError::ConfirmTimeout`] if that takes past `deadline`, as on a broker that has
    /// fallen silent.
    async fn publishing_channel(&self, deadline: Instant) -> Result<Channel, BusError> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let timed_out = || {
            BusError::ConfirmTimeout(Duration::from_millis(
                self.inner.settings.confirm_timeout_ms,
            ))
        };
        let mut publisher = tokio::time::timeout_at(deadline, self.inner.publisher.lock())
            .await
            .map_err(|_| timed_out())?;
        if let Some(channel) = publisher
            .channel
            .as_ref()
            .filter(|c| c.status().connected())
        {
            return Ok(channel.clone());
        }
        let bus = self.clone();
        let opening = publisher.opening.get_or_insert_with(|| {
            tokio::spawn(async move {
                let (channel, _) = bus.open_channel(None).await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok(channel)
            })
        });
        let opened = tokio::time::timeout_at(deadline, opening)
            .await
            .map_err(|_| timed_out())?
            .expect("opening a channel does not panic");
        publisher.opening = None;
        let channel = opened?;
        publisher.channel = Some(channel.clone());
        Ok(channel)
    }

    /// Declares every exchange and queue again (after one was deleted under the workers).
    pub(crate) async fn redeclare_topology(&self) -> Result<(), BusError> {
        let (channel, _) = self.open_channel(None).await?;
        let declared = self.inner.topology.declare(&channel).await;
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(declared?)
    }

    /// How many messages wait in a shared queue, ready for a consumer (for status displays).
    pub async fn queue_depth(&self, queue: crate::QueueName) -> Result<u32, BusError> {
        Ok(self.queue_state(queue).await?.ready)
    }

    /// A shared queue's ready messages and consumers, as the broker counts them now.
    pub async fn queue_state(&self, queue: crate::QueueName) -> Result<QueueState, BusError> {
        let (channel, _) = self.open_channel(None).await?;
        let declared = channel
            .queue_declare(
                self.topology().queue(queue).into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "queue state read".into()).await;
        let declared = declared?;
        Ok(QueueState {
            ready: declared.message_count(),
            consumers: declared.consumer_count(),
        })
    }

    /// Closes every channel, then the connection, after the worker finished its in-flight
    /// work; unacked deliveries return to their queues.
    pub async fn close(&self) {
        let publisher = std::mem::take(&mut *self.inner.publisher.lock().await);
        if let Some(opening) = publisher.opening {
            // It would connect again once the connection below is closed.
            opening.abort();
        }
        let channels = std::mem::take(&mut *self.inner.channels.lock().expect("not poisoned"));
        let closing = async {
            for channel in channels.iter().filter(|c| c.status().connected()) {
                if let Err(error) = channel.close(200, "worker stopping".into()).await {
                    tracing::debug!(%error, "closing a channel");
                }
            }
            match self.inner.connection.lock().await.connection.take() {
                Some(connection) => connection.close(200, "worker stopping".into()).await,
                None => Ok(()),
            }
        };
        self.while_stopping("closing the broker connection", closing)
            .await;
        // Dropped only now that the connection is closed, so no handle closes its channel late.
        drop(channels);
        self.inner.readiness.set(Component::Broker, false);
        self.inner.metrics.connected.set(0);
    }

    /// Waits for the broker's answers to `call`, made while stopping, at most
    /// `amqp.confirm_timeout_ms`: a node that falls silent mid-shutdown may never answer, and
    /// must not keep the worker from exiting (what was not acked returns to its queue when the
    /// connection goes).
    pub(crate) async fn while_stopping(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<(), lapin::Error>>,
    ) {
        let wait = Duration::from_millis(self.inner.settings.confirm_timeout_ms);
        match tokio::time::timeout(wait, call).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "{what}"),
            Err(_) => tracing::warn!(
                waited_ms = wait.as_millis() as u64,
                "{what}: the broker did not answer; going on without it"
            ),
        }
    }
}

/// Stamps what every message carries: when it was sent (so consumers can measure how long it
/// waited), its own id, and the trace of the work that sends it.
pub(crate) fn stamped(properties: BasicProperties) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(SENT_AT_HEADER.into(), AMQPValue::LongLongInt(now_ms()));
    let trace = crate::current_trace().unwrap_or_else(crate::new_trace);
    headers.insert(
        crate::TRACE_HEADER.into(),
        AMQPValue::LongString(trace.into()),
    );
    properties
        .with_headers(headers)
        .with_message_id(uuid::Uuid::new_v4().simple().to_string().into())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
