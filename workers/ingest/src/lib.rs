//! `oleg-ingest`: turns the bot's stream of votes and user starts into the store the trainer
//! learns from. Each batch is written with one bulk upsert and acked only after the store
//! acknowledged it; refused messages go to the dead-letter queue with their reason. While the
//! store is unavailable (a transient error) nothing is acked and the worker reports not-ready
//! until it returns; a message the store refuses (a permanent error) is tried again up to
//! `amqp.max_attempts` times and then dead-lettered as `store_refused`, and holds up nothing.

mod metrics;
mod settings;

pub use metrics::IngestMetrics;
pub use settings::{IngestConfig, IngestSettings};

/// `oleg-ingest`, built and ready to run.
pub struct App {
    ctx: WorkerContext,
    ingest: Ingest,
}

impl Worker for App {
    type Config = IngestConfig;
    const NAME: &'static str = "oleg-ingest";
    const SECTION: &'static str = "ingest";

    async fn build(config: IngestConfig, stop: CancellationToken) -> anyhow::Result<Self> {
        let ctx = WorkerContext::start(
            Self::NAME,
            &config.log,
            &config.ingest.metrics_addr,
            &[Component::Broker, Component::Store],
            stop.clone(),
        )
        .await?;
        let metrics = IngestMetrics::register(&ctx.registry)?;
        let probe = Duration::from_millis(config.ingest.store_probe_ms);
        let store = ctx.connect_store(&config.mongo, probe).await?;
        let bus = ctx.connect_bus(&config.amqp).await?;
        tracing::info!(batch_size = config.ingest.batch_size, "ingesting votes");
        let readiness = ctx.readiness.clone();
        let ingest = Ingest::new(bus, store, config.ingest, metrics, readiness, stop);
        Ok(Self { ctx, ingest })
    }

    fn metrics_addr(&self) -> std::net::SocketAddr {
        self.ctx.metrics_addr()
    }

    fn connections(&self) -> Connections {
        Connections {
            bus: self.ingest.bus.clone(),
            store: self.ingest.store.clone(),
        }
    }

    async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.ingest.run().await;
        Ok(())
    }
}

use chrono::Utc;
use futures::future::join_all;
use oleg_bus::{
    current_trace, new_trace, traced, Backoff, Bus, Incoming, Outcome, QueueName, Source,
    Subscription,
};
use oleg_messages::{
    DeadLetterReason, MessageKind, Rejection, UserId, UserStarted, Vote, VotesIngested,
    SCHEMA_VERSION,
};
use oleg_runtime::{Connections, Worker, WorkerContext};
use oleg_store::{PostKey, Store, StoreError, UserSighting, VoteWrite, VoteWriteSummary};
use oleg_telemetry::{Component, Readiness};
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A batch's valid messages, decoded.
#[derive(Default)]
struct Batch {
    votes: Vec<(Incoming, Vote)>,
    starts: Vec<(Incoming, UserStarted)>,
}

pub struct Ingest {
    bus: Bus,
    store: Store,
    settings: IngestSettings,
    metrics: IngestMetrics,
    readiness: Readiness,
    shutdown: CancellationToken,
    known_posts: HashSet<PostKey>,
    known_users: HashSet<UserId>,
    /// The previous batch's acks and notice, sent while the next batch is written.
    settling: Option<tokio::task::JoinHandle<()>>,
}

impl Ingest {
    pub fn new(
        bus: Bus,
        store: Store,
        settings: IngestSettings,
        metrics: IngestMetrics,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            bus,
            store,
            settings,
            metrics,
            readiness,
            shutdown,
            known_posts: HashSet::new(),
            known_users: HashSet::new(),
            settling: None,
        }
    }

    /// Consumes until shutdown; the batch in hand is finished (or left unacked if the store is
    /// down) before returning. The next batch is collected while one is written, so the broker's
    /// deliveries and the store's write overlap (with `amqp.prefetch` ≥ 2 × `ingest.batch_size`;
    /// with less, the next batch fills as the previous one is acked).
    pub async fn run(mut self) {
        let subscription = Subscription::new(self.bus.clone(), Source::Shared(QueueName::Ingest));
        let (collected, mut batches) = tokio::sync::mpsc::channel(1);
        let collector = tokio::spawn(collect_batches(
            subscription,
            self.settings.batch_size,
            Duration::from_millis(self.settings.batch_max_wait_ms),
            collected,
        ));
        while let Some(deliveries) = batches.recv().await {
            // A batch is a trace of its own; its line lists the traces of its messages, so a
            // vote can be followed from the bot through ingest to the notice it was part of.
            let batch = new_trace();
            let traces: Vec<String> = deliveries.iter().map(Incoming::trace_id).collect();
            let span = tracing::info_span!("batch", trace = %batch, messages = deliveries.len());
            span.in_scope(|| tracing::debug!(traces = ?traces, "took a batch"));
            let flow = traced(batch, self.process(deliveries).instrument(span)).await;
            if flow.is_break() {
                // Shut down while the store was away: what was collected meanwhile stays
                // unacked, and the broker delivers it again.
                break;
            }
        }
        self.settled().await;
        drop(batches);
        if let Err(error) = collector.await {
            tracing::error!(%error, "the batch collector failed");
        }
    }

    /// Stores a batch and settles its messages; breaks when shutdown came while the store was away.
    async fn process(&mut self, deliveries: Vec<Incoming>) -> ControlFlow<()> {
        let mut batch = Batch::default();
        let mut refused = Vec::new();
        for incoming in deliveries {
            match self.decode(&incoming) {
                Ok(Decoded::Vote(vote)) => batch.votes.push((incoming, vote)),
                Ok(Decoded::Start(start)) => batch.starts.push((incoming, start)),
                Err(rejection) => refused.push((incoming, rejection)),
            }
        }
        // Refusals need no store: they leave now, whatever happens to the valid messages.
        self.dead_letter(refused).await;

        let mut backoff = self.store_backoff();
        let unknown = loop {
            match self.find_unknown_posts(&batch.votes).await {
                Ok(unknown) => break unknown,
                Err(error) => match self.after_store_error(&error, &mut backoff).await {
                    StoreVerdict::TryAgain => {}
                    StoreVerdict::Refused => {
                        self.refuse_batch(batch, &error).await;
                        return ControlFlow::Continue(());
                    }
                    StoreVerdict::ShuttingDown => return ControlFlow::Break(()),
                },
            }
        };
        if !unknown.is_empty() {
            let (kept, refused): (Vec<_>, Vec<_>) = batch
                .votes
                .into_iter()
                .partition(|(_, vote)| !unknown.contains(&PostKey::of(&vote.post())));
            batch.votes = kept;
            self.dead_letter(
                refused
                    .into_iter()
                    .map(|(incoming, vote)| {
                        let detail = format!("post {} is not stored", vote.post());
                        (
                            incoming,
                            Rejection::new(DeadLetterReason::UnknownPost, detail),
                        )
                    })
                    .collect(),
            )
            .await;
        }
        if batch.votes.is_empty() && batch.starts.is_empty() {
            return ControlFlow::Continue(());
        }

        let (written, ingested_at) = loop {
            // Stamped at each attempt: a batch that waited out an outage is stamped when it
            // lands, so the trainer's watermark (with its overlap) cannot pass it by.
            let ingested_at = Utc::now();
            match self.write(&batch, ingested_at.timestamp_millis()).await {
                Ok(written) => break (written, ingested_at),
                Err(error) => match self.after_store_error(&error, &mut backoff).await {
                    StoreVerdict::TryAgain => {}
                    StoreVerdict::Refused => {
                        self.refuse_batch(batch, &error).await;
                        return ControlFlow::Continue(());
                    }
                    StoreVerdict::ShuttingDown => return ControlFlow::Break(()),
                },
            }
        };
        self.readiness.set(Component::Store, true);
        self.record(&batch, &written.votes);
        let summary = VoteWriteSummary::of(&written.votes);
        let has_votes = !batch.votes.is_empty();
        let refused_starts: HashMap<usize, String> = written.starts_refused.into_iter().collect();
        let outcomes = batch
            .votes
            .into_iter()
            .map(|(incoming, _)| incoming)
            .zip(written.votes.into_iter().map(|write| match write {
                VoteWrite::Refused(message) => Some(message),
                _ => None,
            }))
            .chain(
                batch
                    .starts
                    .into_iter()
                    .enumerate()
                    .map(|(index, (incoming, _))| (incoming, refused_starts.get(&index).cloned())),
            );
        let outcomes = outcomes
            .map(|(incoming, refusal)| {
                let outcome = match refusal {
                    None => Outcome::Done,
                    Some(message) => {
                        self.metrics.store_refusals.inc();
                        tracing::warn!(%message, "the store refused a message; it will be tried again");
                        Outcome::failed(message, false)
                    }
                };
                (incoming, outcome)
            })
            .collect();
        let notice = has_votes.then_some(VotesIngested {
            schema_version: SCHEMA_VERSION,
            new_votes: summary.new,
            changed_votes: summary.changed,
            duplicate_votes: summary.unchanged,
            ingested_through: ingested_at,
        });
        self.settle_behind(outcomes, notice).await;
        ControlFlow::Continue(())
    }

    /// Settles a stored batch's messages and announces it in the background, so that the next
    /// batch's write overlaps it; one batch at a time, in order, so a notice never overtakes an
    /// earlier one. The messages are settled together: one ack after another would wait on the
    /// connection 500 times. A lost notice is harmless (the next one covers everything up to its
    /// `ingested_through`), so a failure is only logged.
    async fn settle_behind(
        &mut self,
        outcomes: Vec<(Incoming, Outcome)>,
        notice: Option<VotesIngested>,
    ) {
        self.settled().await;
        let bus = self.bus.clone();
        let work = async move {
            join_all(
                outcomes
                    .into_iter()
                    .map(|(incoming, outcome)| incoming.settle(outcome)),
            )
            .await;
            if let Some(notice) = notice {
                if let Err(error) = bus.publish(&notice).await {
                    tracing::warn!(%error, "could not announce ingested votes");
                }
            }
        };
        let trace = current_trace().unwrap_or_else(new_trace);
        let span = tracing::Span::current();
        self.settling = Some(tokio::spawn(traced(trace, work.instrument(span))));
    }

    /// Waits for the previous batch's settling.
    async fn settled(&mut self) {
        if let Some(settling) = self.settling.take() {
            if let Err(error) = settling.await {
                tracing::error!(%error, "settling a batch failed; the broker delivers it again");
            }
        }
    }

    /// A whole batch the store refused (not an outage): each message is tried again, and
    /// dead-lettered as `store_refused` once its attempts are used up.
    async fn refuse_batch(&self, batch: Batch, error: &StoreError) {
        self.readiness.set(Component::Store, true);
        for incoming in batch
            .votes
            .into_iter()
            .map(|(i, _)| i)
            .chain(batch.starts.into_iter().map(|(i, _)| i))
        {
            self.metrics.store_refusals.inc();
            incoming.settle(Outcome::failed(error, false)).await;
        }
    }

    fn decode(&self, incoming: &Incoming) -> Result<Decoded, Rejection> {
        let max = self.settings.max_message_bytes;
        let vote_key = MessageKind::Vote.routing_key();
        let start_key = MessageKind::UserStarted.routing_key();
        let routing_key = Some(incoming.routing_key.as_str());
        if routing_key == vote_key {
            self.metrics.received.with_label_values(&["vote"]).inc();
            let vote = incoming.decode::<Vote>(max)?;
            self.not_ahead(vote.voted_at)?;
            Ok(Decoded::Vote(vote))
        } else if routing_key == start_key {
            self.metrics
                .received
                .with_label_values(&["user_started"])
                .inc();
            let start = incoming.decode::<UserStarted>(max)?;
            self.not_ahead(start.started_at)?;
            Ok(Decoded::Start(start))
        } else {
            self.metrics.received.with_label_values(&["unknown"]).inc();
            Err(Rejection::new(
                DeadLetterReason::Malformed,
                format!(
                    "routing key {:?} is neither a vote nor a user start",
                    incoming.routing_key
                ),
            ))
        }
    }

    /// Refuses a time further ahead of this worker's clock than `ingest.max_clock_skew_ms`.
    fn not_ahead(&self, at: chrono::DateTime<Utc>) -> Result<(), Rejection> {
        let ahead = at - Utc::now();
        let skew = chrono::Duration::milliseconds(self.settings.max_clock_skew_ms as i64);
        if ahead > skew {
            return Err(Rejection::new(
                DeadLetterReason::FromTheFuture,
                format!(
                    "dated {at}, {} s ahead of this worker's clock (ingest.max_clock_skew_ms allows {} ms)",
                    ahead.num_seconds(),
                    self.settings.max_clock_skew_ms
                ),
            ));
        }
        Ok(())
    }

    async fn dead_letter(&self, refused: Vec<(Incoming, Rejection)>) {
        for (incoming, rejection) in refused {
            incoming.settle(Outcome::Refused(rejection)).await;
        }
    }

    /// Post keys among the votes that the store does not hold.
    async fn find_unknown_posts(
        &mut self,
        votes: &[(Incoming, Vote)],
    ) -> Result<HashSet<PostKey>, StoreError> {
        let wanted: Vec<PostKey> = votes
            .iter()
            .map(|(_, vote)| PostKey::of(&vote.post()))
            .filter(|key| !self.known_posts.contains(key))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let found = self.store.known_post_keys(&wanted).await?;
        let capacity = self.settings.known_posts_cache;
        remember(&mut self.known_posts, found.iter().cloned(), capacity);
        Ok(wanted
            .into_iter()
            .filter(|key| !found.contains(key))
            .collect())
    }

    async fn write(&mut self, batch: &Batch, ingested_at_ms: i64) -> Result<Written, StoreError> {
        // One sighting per person per batch (their earliest vote), and none for people already
        // stored; a start always goes through, since it records when and in which language.
        let mut voters: HashMap<UserId, i64> = HashMap::new();
        for (_, vote) in &batch.votes {
            if !self.known_users.contains(&vote.user_id) {
                let at = voters.entry(vote.user_id).or_insert(i64::MAX);
                *at = (*at).min(vote.voted_at.timestamp_millis());
            }
        }
        let sightings: Vec<UserSighting> = batch
            .starts
            .iter()
            .map(|(_, start)| UserSighting {
                user_id: start.user_id,
                at_ms: start.started_at.timestamp_millis(),
                started: true,
                language_code: start.language_code.clone(),
            })
            .chain(voters.into_iter().map(|(user_id, at_ms)| UserSighting {
                user_id,
                at_ms,
                started: false,
                language_code: None,
            }))
            .collect();
        let started = Instant::now();
        let users = self.store.upsert_users(&sightings).await?;
        let votes: Vec<Vote> = batch.votes.iter().map(|(_, vote)| vote.clone()).collect();
        let votes = self.store.upsert_votes(&votes, ingested_at_ms).await?;
        self.metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.users_created.inc_by(users.created);
        // The first sightings are the starts, in order.
        let starts_refused: Vec<(usize, String)> = users
            .refused
            .into_iter()
            .filter(|(index, _)| *index < batch.starts.len())
            .collect();
        let capacity = self.settings.known_users_cache;
        remember(
            &mut self.known_users,
            sightings.iter().map(|s| s.user_id),
            capacity,
        );
        Ok(Written {
            votes,
            starts_refused,
        })
    }

    fn store_backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.settings.store_retry_min_ms),
            Duration::from_millis(self.settings.store_retry_max_ms),
        )
    }

    /// After a failed store step: a refusal is the batch's own doing; an outage reports the
    /// store down and waits before the next attempt. Shutting down first, nothing of the batch
    /// is acked, so the broker redelivers it.
    async fn after_store_error(&self, error: &StoreError, backoff: &mut Backoff) -> StoreVerdict {
        if !error.is_transient() {
            tracing::warn!(%error, "the store refused the batch");
            return StoreVerdict::Refused;
        }
        self.readiness.set(Component::Store, false);
        self.metrics.store_failures.inc();
        let delay = backoff.next_delay();
        tracing::warn!(%error, ?delay, "store unavailable; holding the batch unacked and retrying");
        tokio::select! {
            _ = self.shutdown.cancelled() => StoreVerdict::ShuttingDown,
            _ = tokio::time::sleep(delay) => StoreVerdict::TryAgain,
        }
    }

    fn record(&self, batch: &Batch, writes: &[VoteWrite]) {
        self.metrics
            .batch_size
            .observe((batch.votes.len() + batch.starts.len()) as f64);
        let now = Utc::now();
        for ((_, vote), write) in batch.votes.iter().zip(writes) {
            let outcome = match write {
                VoteWrite::New => "new",
                VoteWrite::Changed => "changed",
                VoteWrite::Unchanged => "duplicate",
                VoteWrite::Refused(_) => "refused",
            };
            self.metrics
                .votes_stored
                .with_label_values(&[outcome])
                .inc();
            if matches!(write, VoteWrite::New | VoteWrite::Changed) {
                let lag = (now - vote.voted_at).to_std().unwrap_or_default();
                self.metrics.vote_lag_seconds.observe(lag.as_secs_f64());
            }
        }
    }
}

/// Collects batches of up to `size` deliveries, each waiting at most `max_wait` after its first,
/// until the subscription ends (shutdown) or the writer is gone.
async fn collect_batches(
    mut subscription: Subscription,
    size: usize,
    max_wait: Duration,
    batches: tokio::sync::mpsc::Sender<Vec<Incoming>>,
) {
    while let Some(first) = subscription.next().await {
        let mut deliveries = vec![first];
        let deadline = tokio::time::Instant::now() + max_wait;
        while deliveries.len() < size {
            match tokio::time::timeout_at(deadline, subscription.next()).await {
                Ok(Some(incoming)) => deliveries.push(incoming),
                Ok(None) | Err(_) => break,
            }
        }
        if batches.send(deliveries).await.is_err() {
            return;
        }
    }
}

/// Adds to a bounded memo of what the store already holds; when full it starts over, which costs
/// only repeated (idempotent) lookups or upserts.
fn remember<T: std::hash::Hash + Eq>(
    memo: &mut HashSet<T>,
    items: impl Iterator<Item = T>,
    capacity: usize,
) {
    for item in items {
        if memo.len() >= capacity {
            memo.clear();
        }
        if capacity > 0 {
            memo.insert(item);
        }
    }
}

enum Decoded {
    Vote(Vote),
    Start(UserStarted),
}

/// What a batch's write did: per vote, and the starts the store refused (by index).
struct Written {
    votes: Vec<VoteWrite>,
    starts_refused: Vec<(usize, String)>,
}

/// What to do after a store step failed.
enum StoreVerdict {
    /// An outage: the batch waits and tries again.
    TryAgain,
    /// The store refused the request itself.
    Refused,
    ShuttingDown,
}
