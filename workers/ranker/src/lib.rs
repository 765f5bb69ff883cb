//! `oleg-ranker`: answers "what should this person see next?" over RabbitMQ RPC.
//!
//! Candidates are the posts of the last `candidate_days` minus what the person voted on or was
//! sent. A person the model knows is scored by the model (in plain Rust, see `oleg-scorer`);
//! anyone else by smoothed popularity (cold start). Gaussian noise and a share of posts from
//! untried channels explore. Every post sent is recorded in `deliveries` first (a unique key per
//! person and post), so no post goes to a person twice, across replicas and restarts.
//!
//! A request's one store round trip is that record: what a person has seen comes from the
//! replica's cache of people (`people`), read from the store only for someone it does not hold,
//! and the candidates and their popularity are kept current in place by the notices the replica
//! hears (posts scraped, votes cast), with a full reload every `refresh_s` to correct drift.

mod calibration;
mod metrics;
pub mod model;
mod people;
pub mod pool;
pub mod ranking;
mod settings;
pub mod subjects;
mod taste;

pub use metrics::RankerMetrics;
pub use settings::{RankerConfig, RankerSettings};

/// `oleg-ranker`, built and ready to run.
pub struct App {
    ctx: WorkerContext,
    ranker: Ranker,
}

impl Worker for App {
    type Config = RankerConfig;
    const NAME: &'static str = "oleg-ranker";
    const SECTION: &'static str = "ranker";

    async fn build(config: RankerConfig, stop: CancellationToken) -> anyhow::Result<Self> {
        let ctx = WorkerContext::start(
            Self::NAME,
            &config.log,
            &config.ranker.metrics_addr,
            &[Component::Broker, Component::Store],
            stop.clone(),
        )
        .await?;
        let metrics = RankerMetrics::register(&ctx.registry)?;
        let store = ctx
            .connect_store(&config.mongo, Duration::from_secs(2))
            .await?;
        let bus = ctx.connect_bus(&config.amqp).await?;
        let ranker = Ranker::new(bus, store, config.ranker, metrics, stop);
        Ok(Self { ctx, ranker })
    }

    fn metrics_addr(&self) -> std::net::SocketAddr {
        self.ctx.metrics_addr()
    }

    fn connections(&self) -> Connections {
        Connections {
            bus: self.ranker.inner.bus.clone(),
            store: self.ranker.inner.store.clone(),
        }
    }

    async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.ranker.run().await;
        Ok(())
    }
}

use chrono::Utc;
use model::{FailedLoad, ModelSlot};
use oleg_bus::{
    consume_from, traced, Bus, Inbound, Incoming, Outcome, QueueName, Routed, Source, Subscription,
};
use oleg_messages::{
    ChannelName, DeadLetterReason, MessageKind, ModelPublished, ModelVersion, PostId, PostRef,
    Reaction, RecommendErrorCode, RecommendReply, RecommendRequest, RecommendedPost, Rejection,
    ScrapedPost, UserId, Vote, SCHEMA_VERSION,
};
use oleg_runtime::{Connections, Worker, WorkerContext};
use oleg_store::{PersonHistory, PostKey, Store, StoreError, VoteChange};
use oleg_telemetry::Component;
use people::PeopleCache;
use pool::{CandidatePost, Expectation, HeardVote, Pool, Voter};
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use subjects::{TeachingTexts, TopicModel};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Clone)]
pub struct Ranker {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    store: Store,
    settings: RankerSettings,
    metrics: RankerMetrics,
    model: ModelSlot,
    /// Requests read it while they rank (a few milliseconds at most, never across an await);
    /// notices change it in place.
    pool: RwLock<Pool>,
    /// Whether the pool's subjects are being learned again (one learning at a time).
    learning_subjects: AtomicBool,
    people: PeopleCache,
    shutdown: CancellationToken,
}

/// Picks kept beyond the count asked for, for posts whose delivery record is refused (another
/// replica, or a concurrent request, sent them to the person meanwhile).
const SPARE_PICKS: usize = 16;

/// Posts whose votes heard are read again against a new model under one hold of the pool's
/// read lock: at most [`pool::HEARD_VOTES_PER_POST`] votes each, so at most 1,024 a hold (5–9 ms
/// at the demo's rate of reading), and votes heard meanwhile wait no longer than a request's
/// ranking can make them.
const REREAD_POSTS_AT_ONCE: usize = 4;

/// Votes are dated by the bot and deliveries by the ranker: a person's history is read from a
/// day before the candidate window, so no clock skew hides a post of the window.
const HISTORY_MARGIN_MS: i64 = 86_400_000;

/// A pick taken out of the pool, to be recorded and sent after the pool is released.
struct Chosen {
    key: PostKey,
    text: Arc<str>,
    score: f64,
    explored: bool,
}

impl Ranker {
    pub fn new(
        bus: Bus,
        store: Store,
        settings: RankerSettings,
        metrics: RankerMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        let people = PeopleCache::new(
            NonZeroUsize::new(settings.people_cache).unwrap_or(NonZeroUsize::MIN),
            Duration::from_secs(settings.people_ttl_s),
        );
        Self {
            inner: Arc::new(Inner {
                bus,
                store,
                settings,
                metrics,
                model: ModelSlot::default(),
                pool: RwLock::new(Pool::default()),
                learning_subjects: AtomicBool::new(false),
                people,
                shutdown,
            }),
        }
    }

    fn window_start_ms(&self) -> i64 {
        Utc::now().timestamp_millis() - i64::from(self.inner.settings.candidate_days) * 86_400_000
    }

    /// Reloads candidates and popularity from the store.
    pub async fn refresh_pool(&self) -> Result<(), StoreError> {
        let since = self.window_start_ms();
        let read_started = Instant::now();
        let posts = self.inner.store.recent_posts(since).await?;
        let counts = self.inner.store.vote_counts(since).await?;
        let (prior_strength, post_effect_sd) = (
            self.inner.settings.prior_strength,
            self.inner.settings.post_effect_sd,
        );
        let model = self.inner.model.current();
        // Off the async threads: the posts' features and subjects take seconds at 100,000.
        let built = tokio::task::spawn_blocking(move || {
            let mut pool =
                Pool::new(posts, counts, prior_strength).with_post_effect_sd(post_effect_sd);
            if let Some(model) = &model {
                pool.resolve(&model.scorer);
            }
            (pool, model)
        })
        .await;
        let (mut pool, model) = match built {
            Ok(built) => built,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: the runtime is shutting down, and nobody needs the pool.
            Err(_) => return Ok(()),
        };
        let scorer = model.as_deref().map(|m| &m.scorer);
        let mut slot = self.pool_mut();
        pool.keep_newer_posts_of(std::mem::take(&mut *slot), read_started, scorer);
        pool.expire(since);
        self.inner.metrics.pool_posts.set(pool.posts.len() as i64);
        self.set_subjects_metric(&pool);
        *slot = pool;
        Ok(())
    }

    fn set_subjects_metric(&self, pool: &Pool) {
        let learned_from = pool.subjects_learned_from().unwrap_or(0);
        self.inner
            .metrics
            .subjects_learned_from
            .set(learned_from as i64);
    }

    fn pool(&self) -> RwLockReadGuard<'_, Pool> {
        self.inner.pool.read().expect("not poisoned")
    }

    fn pool_mut(&self) -> RwLockWriteGuard<'_, Pool> {
        self.inner.pool.write().expect("not poisoned")
    }

    /// Takes a post's notice into the candidates; returns the texts to learn the subjects again
    /// from when the pool has outgrown them and no learning runs yet.
    fn add_post(&self, post: &ScrapedPost) -> Option<TeachingTexts> {
        let published = post.published_at.timestamp_millis();
        if published < self.window_start_ms() {
            return None;
        }
        let candidate = CandidatePost::new(
            post.channel.to_string(),
            post.post_id.get(),
            published,
            &post.into(),
        )
        .announced(Instant::now());
        let model = self.inner.model.current();
        let mut pool = self.pool_mut();
        if pool.insert(candidate, model.as_deref().map(|m| &m.scorer)) {
            self.inner.metrics.pool_posts.set(pool.posts.len() as i64);
            if pool.subjects_outgrown()
                && !self.inner.learning_subjects.swap(true, Ordering::AcqRel)
            {
                return Some(pool.teaching_texts());
            }
        }
        None
    }

    /// Learns the pool's subjects again from `texts` off the async threads and outside the
    /// pool's lock (a few hundred milliseconds at 5,000 texts); requests are held only while
    /// every post is placed among the new subjects. Learns again at once if notices outgrew the
    /// subjects meanwhile: no later notice need come to start it.
    async fn learn_subjects_again(self, mut texts: TeachingTexts) {
        loop {
            let started = Instant::now();
            let learned_from = texts.pool_posts;
            let learned = tokio::task::spawn_blocking(move || TopicModel::learn(&texts)).await;
            let mut pool = self.pool_mut();
            let outgrown = match learned {
                Ok(model) => {
                    let placing = Instant::now();
                    if pool.take_topic_model(model, learned_from) {
                        self.set_subjects_metric(&pool);
                        tracing::info!(
                            learned_from,
                            took_ms = started.elapsed().as_millis() as u64,
                            placing_ms = placing.elapsed().as_millis() as u64,
                            "subjects learned again as the candidates grew"
                        );
                    }
                    pool.subjects_outgrown()
                }
                // Cancelled: the runtime is shutting down, as in a model's load.
                Err(error) if error.is_cancelled() => false,
                Err(error) => {
                    tracing::error!(%error, "learning the subjects again failed; the pool keeps its subjects, and the next post's notice tries again");
                    false
                }
            };
            if !outgrown {
                // Under the pool's lock, which notices check the flag under: none is missed.
                self.inner.learning_subjects.store(false, Ordering::Release);
                return;
            }
            texts = pool.teaching_texts();
        }
    }

    /// Drops posts that left the window, and looks up the posts' rows in the serving model
    /// if a notice's post or a reload left them unknown (both cheap when nothing changed).
    fn maintain_pool(&self) {
        let model = self.inner.model.current();
        let mut pool = self.pool_mut();
        if let Some(model) = &model {
            // Requests wait meanwhile: the time is logged, as it grows with the candidates.
            let started = std::time::Instant::now();
            if pool.resolve(&model.scorer) {
                tracing::info!(
                    version = %model.version,
                    candidates = pool.posts.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "candidates worked out for the model"
                );
            }
        }
        if pool.expire(self.window_start_ms()) {
            self.inner.metrics.pool_posts.set(pool.posts.len() as i64);
        }
    }

    /// A vote cast: the person's history (if held), the post's popularity, and its surprise
    /// against what was expected of the voter (with their votes before this one).
    fn add_vote(&self, vote: &Vote) {
        let key = PostKey::of(&vote.post());
        let liked = vote.reaction == Reaction::Like;
        let at_ms = vote.voted_at.timestamp_millis();
        let channel = self
            .inner
            .people
            .get(vote.user_id)
            .and_then(|history| history.channel_votes.get(key.channel()).copied());
        let voter = Voter {
            user: vote.user_id,
            channel,
            expected: self.expected_like(vote.user_id, &key, channel),
        };
        let change = self
            .inner
            .people
            .update(vote.user_id, |history| {
                history.record_vote(key.clone(), liked, at_ms)
            })
            .unwrap_or(VoteChange::New);
        let label = match change {
            VoteChange::New => "new",
            VoteChange::Replaced { .. } => "replaced",
            VoteChange::Stale => "stale",
        };
        self.inner
            .metrics
            .votes_heard
            .with_label_values(&[label])
            .inc();
        let refit = self.pool_mut().record_vote(&key, liked, change, voter);
        if let Some(refit) = refit {
            // Off the pool's lock: requests go on with the last fits meanwhile (the next notice
            // waits, a few milliseconds every 100 votes).
            let fitted = refit.run();
            let mut pool = self.pool_mut();
            pool.install_calibration(fitted);
            self.inner.metrics.set_calibration(pool.calibration());
        }
    }

    /// What the ranker expects of `user` for the candidate `key` now, with `channel` their
    /// votes on its channel; `None` when the post is no candidate or the model does not know
    /// the person.
    fn expected_like(
        &self,
        user: UserId,
        key: &PostKey,
        channel: Option<(u32, u32)>,
    ) -> Option<Expectation> {
        let model = self.inner.model.current();
        let pool = self.pool();
        ranking::expected_like(
            &pool,
            pool.position(key)?,
            model.as_deref().map(|m| &m.scorer),
            user,
            channel,
            self.inner.settings.prior_votes,
        )
    }

    /// Reads the votes heard on the candidates again against the model now serving (see
    /// [`Pool::reread_surprises`]), off the async threads and a few posts at a time under the
    /// pool's lock: requests and notices go on meanwhile (with the posts' surprises forgotten),
    /// and it takes as long as the votes heard need (the time is logged).
    async fn reread_surprises(&self) {
        let Some(model) = self.inner.model.current() else {
            return;
        };
        let version = model.version;
        let started = Instant::now();
        let prior_votes = self.inner.settings.prior_votes;
        let (keys, mut reread) = {
            let pool = self.pool();
            (pool.candidate_keys(), pool.start_reread())
        };
        let ranker = self.clone();
        let reread = tokio::task::spawn_blocking(move || {
            let expected = |pool: &Pool, index, vote: &HeardVote| {
                let scorer = Some(&model.scorer);
                ranking::expected_like(pool, index, scorer, vote.user, vote.channel, prior_votes)
                    .map(|expectation| expectation.posterior)
            };
            for part in keys.chunks(REREAD_POSTS_AT_ONCE) {
                if !ranker.pool().reread_surprises(&mut reread, part, expected) {
                    return None;
                }
            }
            Some(reread)
        })
        .await;
        let reread = match reread {
            Ok(Some(reread)) => reread,
            // A newer model serves, whose own reading follows.
            Ok(None) => return,
            // Cancelled: the runtime is shutting down, and nobody needs the surprises.
            Err(error) if error.is_cancelled() => return,
            Err(error) => {
                tracing::error!(%version, %error, "reading the votes heard again failed; posts' surprises start afresh");
                return;
            }
        };
        let votes = reread.votes;
        if !self.pool_mut().take_reread(reread) {
            // A newer model serves, whose own reading follows.
            return;
        }
        tracing::info!(
            %version,
            votes,
            took_ms = started.elapsed().as_millis() as u64,
            "votes heard read again against the model"
        );
    }

    /// The person's history: the cache's, or read from the store (within the candidate window)
    /// and held.
    async fn person_history(&self, user: UserId) -> Result<Arc<PersonHistory>, StoreError> {
        let reads = &self.inner.metrics.history_reads;
        if let Some(history) = self.inner.people.get(user) {
            reads.with_label_values(&["cache"]).inc();
            return Ok(history);
        }
        reads.with_label_values(&["store"]).inc();
        let since = self.window_start_ms() - HISTORY_MARGIN_MS;
        let history = self.inner.store.person_history(user, since).await?;
        Ok(self.inner.people.insert(user, history))
    }

    /// Loads `version` and swaps it in; a model that fails to load is refused and the current
    /// one keeps serving.
    /// Serves the live version: the pointer a trainer moves when it publishes and an operator
    /// moves back in a rollback, so it may be older than the one serving.
    pub async fn follow_live(&self) {
        match self.inner.store.live_version().await {
            Ok(Some(version)) => self.load_model(version).await,
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not read the live model version"),
        }
    }

    async fn load_model(&self, version: ModelVersion) {
        if self
            .inner
            .model
            .current()
            .is_some_and(|m| m.version == version)
        {
            return;
        }
        match model::load(&self.inner.store, version).await {
            Ok(loaded) => {
                // The pointer may have moved while this version loaded (another notice, a
                // rollback): serve it only if it is still the live one.
                if !matches!(self.inner.store.live_version().await, Ok(Some(live)) if live == version)
                {
                    return;
                }
                let published_at_ms = loaded.published_at_ms;
                if self.inner.model.offer(loaded) {
                    // The old model's surprises go at once; the new model's, read from the
                    // votes heard, follow. The posts' rows first: the reading scores with them.
                    self.pool_mut().forget_surprises();
                    self.maintain_pool();
                    self.reread_surprises().await;
                    tracing::info!(%version, "serving the live model");
                    self.inner.metrics.model_version.set(version.as_i64());
                    self.inner
                        .metrics
                        .model_age_seconds
                        .set((Utc::now().timestamp_millis() - published_at_ms) as f64 / 1e3);
                }
            }
            Err(error) => match error.says() {
                FailedLoad::Stopped => {
                    tracing::info!(%version, %error, "stopped before the live model loaded");
                }
                FailedLoad::Transient => {
                    self.inner.metrics.model_load_failures.inc();
                    // The periodic check of the live pointer tries again.
                    tracing::warn!(%version, %error, "could not read the live model from the store; the current one keeps serving until the next check");
                }
                FailedLoad::Refused => {
                    self.inner.metrics.model_load_failures.inc();
                    tracing::error!(%version, %error, "refused a model that failed to load; the current one keeps serving");
                }
            },
        }
    }

    /// Serves until shutdown: requests, notices, and the periodic refreshes.
    pub async fn run(self) {
        // Candidates are read once the notices that keep them current have a queue: read before,
        // a post scraped between the two would be missing until the next reload.
        let (caught_up, first_catch_up) = tokio::sync::oneshot::channel();
        let notices = tokio::spawn(self.clone().follow_notices(caught_up));
        tokio::select! {
            _ = first_catch_up => {}
            _ = self.inner.shutdown.cancelled() => {}
        }
        let refresher = tokio::spawn(self.clone().refresh_periodically());
        let mut requests =
            Subscription::new(self.inner.bus.clone(), Source::Shared(QueueName::Recommend));
        let slots = Arc::new(tokio::sync::Semaphore::new(self.inner.settings.concurrency));
        let mut in_flight = tokio::task::JoinSet::new();
        while let Some(incoming) = requests.next().await {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let ranker = self.clone();
            let (span, trace) = (incoming.span(), incoming.trace_id());
            in_flight.spawn(
                traced(trace, async move {
                    ranker.answer(incoming).await;
                    drop(permit);
                })
                .instrument(span),
            );
            while in_flight.try_join_next().is_some() {}
        }
        // Shutdown: finish what was taken, then stop. The notices end with the stop and the
        // refresher is cut short; both are awaited, so nothing reads the store once `run` has
        // returned and the runtime closes it.
        while in_flight.join_next().await.is_some() {}
        tracing::info!("requests in flight answered; stopping the notices");
        refresher.abort();
        let _ = tokio::join!(notices, refresher);
    }

    /// Follows the notices until shutdown; `caught_up` is told when the candidates were first
    /// read after their queue was bound.
    async fn follow_notices(self, caught_up: tokio::sync::oneshot::Sender<()>) {
        let bus = self.inner.bus.clone();
        let max_bytes = bus.settings().max_message_bytes;
        let keys = [
            MessageKind::ModelPublished,
            MessageKind::ScrapedPost,
            MessageKind::Vote,
        ]
        .map(|kind| kind.routing_key().expect("event kinds have routing keys"));
        let subscription = Subscription::new(bus, Source::PerReplica(keys.to_vec()));
        // The catch-up, the models' loads and the subjects' learning run beside the notices
        // and end with them.
        let mut background = tokio::task::JoinSet::new();
        background.spawn(
            self.clone()
                .catch_up_at_each_start(subscription.starts(), caught_up),
        );
        consume_from(subscription, max_bytes, |notice| {
            match notice {
                Notice::Model => {
                    let ranker = self.clone();
                    // Load in the background: requests keep being served by the current
                    // model. The notice only says the pointer moved; the store says where.
                    background.spawn(async move { ranker.follow_live().await });
                }
                Notice::Post(post) => {
                    if let Some(texts) = self.add_post(&post) {
                        background.spawn(self.clone().learn_subjects_again(texts));
                    }
                }
                Notice::Vote(vote) => self.add_vote(&vote),
            }
            while background.try_join_next().is_some() {}
            std::future::ready(Outcome::Done)
        })
        .await;
        // Stopped: cut short and awaited, so none of them reads the store after the stop.
        background.shutdown().await;
    }

    /// Notices sent while this replica had no queue bound reached nobody: before its first start
    /// (posts scraped while the replica loaded its candidates) and while the broker was away. So
    /// each time the notices' subscription starts, the replica reads again what they keep
    /// current: the candidates and their votes, the live model, and (after the first start) the
    /// people it holds, who are read afresh at their next request.
    async fn catch_up_at_each_start(
        self,
        mut starts: tokio::sync::watch::Receiver<u64>,
        caught_up: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut caught_up = Some(caught_up);
        while starts.changed().await.is_ok() {
            let start = *starts.borrow_and_update();
            if start > 1 {
                self.inner.people.clear();
            }
            match self.refresh_pool().await {
                Ok(()) => {
                    tracing::info!(start, "the notices' queue is bound and the candidates read")
                }
                Err(error) => {
                    tracing::warn!(start, %error, "could not read the candidates after the notices' queue was bound; the periodic reload tries again")
                }
            }
            self.follow_live().await;
            if let Some(caught_up) = caught_up.take() {
                let _ = caught_up.send(());
            }
        }
    }

    async fn refresh_periodically(self) {
        let (mut pool_due, mut model_due) = (Instant::now(), Instant::now());
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Some(current) = self.inner.model.current() {
                let age = (Utc::now().timestamp_millis() - current.published_at_ms) as f64 / 1e3;
                self.inner.metrics.model_age_seconds.set(age);
            }
            self.inner
                .metrics
                .people_cached
                .set(self.inner.people.len() as i64);
            self.maintain_pool();
            if pool_due.elapsed() >= Duration::from_secs(self.inner.settings.refresh_s) {
                pool_due = Instant::now();
                if let Err(error) = self.refresh_pool().await {
                    tracing::warn!(%error, "could not refresh candidates");
                }
            }
            if model_due.elapsed() >= Duration::from_secs(self.inner.settings.model_check_s) {
                model_due = Instant::now();
                self.follow_live().await;
            }
        }
    }

    async fn answer(&self, incoming: Incoming) {
        let started = Instant::now();
        let metrics = &self.inner.metrics;
        if let Some(wait) = incoming.queue_wait() {
            metrics.queue_wait_seconds.observe(wait.as_secs_f64());
        }
        let (Some(reply_to), Some(request_id)) = (incoming.reply_to(), incoming.correlation_id())
        else {
            metrics.errors.with_label_values(&["no_reply_to"]).inc();
            let refusal = Rejection::new(
                DeadLetterReason::Malformed,
                "a request needs reply_to and correlation_id",
            );
            incoming.settle(Outcome::Refused(refusal)).await;
            return;
        };
        // The caller gave up on it: an answer now would use up posts nobody shows.
        if incoming.expired() {
            metrics.requests.with_label_values(&["expired"]).inc();
            incoming.settle(Outcome::Done).await;
            return;
        }
        // Whose posts this answer picked now: only those can be released if the reply reaches
        // nobody. Posts recorded for an earlier delivery of the request may have reached the
        // requester with an earlier reply (its ack was lost, not necessarily the reply).
        let (reply, picked_for) =
            match incoming.decode::<RecommendRequest>(self.inner.settings.max_message_bytes) {
                Ok(request) => {
                    let (reply, picked_now) = if incoming.redelivered {
                        self.answer_again(&request, &request_id).await
                    } else {
                        (self.recommend(&request, &request_id).await, true)
                    };
                    (reply, picked_now.then_some(request.user_id))
                }
                Err(rejection) => {
                    let code = if rejection.reason == DeadLetterReason::UnsupportedSchemaVersion {
                        RecommendErrorCode::UnsupportedSchemaVersion
                    } else {
                        RecommendErrorCode::Malformed
                    };
                    (RecommendReply::error(code, rejection.detail), None)
                }
            };
        let outcome = match &reply {
            RecommendReply::Ok { .. } => "ok",
            RecommendReply::Error { error, .. } => {
                let kind = serde_json::to_value(error.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                metrics.errors.with_label_values(&[&kind]).inc();
                "error"
            }
        };
        let sent = match self.inner.bus.reply(&reply_to, &request_id, &reply).await {
            // Said of every reply to a direct reply-to address, delivered or not: as far as
            // anyone can tell, it reached its caller.
            Ok(Routed::NoQueue) if oleg_bus::is_direct_reply_to(&reply_to) => Ok(Routed::Queued),
            sent => sent,
        };
        let settled = match sent {
            Ok(Routed::Queued) => {
                metrics.requests.with_label_values(&[outcome]).inc();
                Outcome::Done
            }
            Ok(Routed::NoQueue) => {
                // Nobody will show these posts: release them for a later request.
                if let (Some(user), RecommendReply::Ok { posts, .. }) = (picked_for, &reply) {
                    self.release(user, posts, &request_id).await;
                    tracing::info!("the requester's reply path is gone; its posts were released");
                } else {
                    tracing::info!("the requester's reply path is gone; its posts stay recorded, since an earlier answer may have reached it");
                }
                metrics.requests.with_label_values(&["unroutable"]).inc();
                Outcome::Done
            }
            Err(error) => {
                // The reply may have reached its requester all the same (a confirm lost or late),
                // so its posts stay recorded: the request, delivered again, is answered with them.
                tracing::warn!(%error, "could not send a reply; the request will be answered again with the same posts");
                metrics.requests.with_label_values(&["reply_failed"]).inc();
                Outcome::failed(&error, error.is_transient())
            }
        };
        incoming.settle(settled).await;
        metrics
            .handle_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Undoes the deliveries of a reply that reached nobody; a failure leaves them recorded
    /// (the posts stay unseen by the person, never shown twice) and is counted.
    async fn release(&self, user: UserId, posts: &[RecommendedPost], request_id: &str) {
        let refs: Vec<PostRef> = posts.iter().map(RecommendedPost::post).collect();
        self.inner.people.update(user, |history| {
            for post in &refs {
                history.release(&PostKey::of(post));
            }
        });
        match self
            .inner
            .store
            .release_deliveries(user, &refs, request_id)
            .await
        {
            Ok(released) => self.inner.metrics.released.inc_by(released),
            Err(error) => {
                self.inner.metrics.release_failures.inc();
                tracing::warn!(%error, "could not release the posts of an undelivered reply");
            }
        }
    }

    /// Notes posts recorded for `user` in the cache of people, after the request lets go of its
    /// `history`: changed while a request still held it, the history (every post the person has
    /// seen) would be copied, at each post sent.
    fn note_seen(&self, user: UserId, history: Arc<PersonHistory>, keys: Vec<PostKey>) {
        drop(history);
        if keys.is_empty() {
            return;
        }
        self.inner.people.update(user, |history| {
            for key in keys {
                history.record_sent(key);
            }
        });
    }

    /// A request delivered before (its ack was lost): the posts it recorded then, if any, so
    /// that the same request never uses up two sets of posts; and whether its posts were picked
    /// now (none were recorded).
    async fn answer_again(
        &self,
        request: &RecommendRequest,
        request_id: &str,
    ) -> (RecommendReply, bool) {
        let recorded = match self
            .inner
            .store
            .request_deliveries(request.user_id, request_id)
            .await
        {
            Ok(recorded) => recorded,
            Err(error) => return (unavailable(&error), false),
        };
        if recorded.is_empty() {
            return (self.recommend(request, request_id).await, true);
        }
        let model = self.inner.model.current();
        let pool = self.pool();
        let posts = recorded
            .iter()
            .filter_map(|d| {
                let post = PostRef {
                    channel: ChannelName::parse(&d.channel).ok()?,
                    post_id: PostId::new(d.post_id).ok()?,
                };
                let text = pool.text(&d.channel, d.post_id);
                Some(RecommendedPost {
                    channel: post.channel,
                    post_id: post.post_id,
                    score: 0.0,
                    explored: false,
                    text: text.map(|t| t.to_string()),
                })
            })
            .collect();
        drop(pool);
        let reply = RecommendReply::Ok {
            schema_version: SCHEMA_VERSION,
            user_id: request.user_id,
            posts,
            model_version: model.as_ref().map(|m| m.version),
            cold_start: false,
            exploration_noise: self.inner.settings.exploration_noise,
            exploration: self.inner.settings.exploration,
        };
        (reply, false)
    }

    /// Picks, records and returns the posts for one request. If recording fails halfway, what
    /// it recorded is released before the error is returned.
    pub async fn recommend(&self, request: &RecommendRequest, request_id: &str) -> RecommendReply {
        let settings = &self.inner.settings;
        let count = request.count.clamp(1, settings.max_count) as usize;
        let history = match self.person_history(request.user_id).await {
            Ok(history) => history,
            Err(error) => return unavailable(&error),
        };
        let excluded: HashSet<PostKey> = request.exclude.iter().map(PostKey::of).collect();
        let model = self.inner.model.current();
        let exploration = settings.exploration(&history, count);
        // Posts whose delivery record this request tried: refused ones were sent meanwhile (by
        // a concurrent request or another replica), and the next ranking leaves them out.
        let mut tried: HashSet<PostKey> = HashSet::new();
        // Posts recorded as sent to the person, noted in the cache when the request is done.
        let mut recorded_keys = Vec::new();
        let mut cold_start = None;
        let mut policy = settings.exploration;
        let now = Utc::now().timestamp_millis();
        let mut posts = Vec::with_capacity(count);
        while posts.len() < count {
            let chosen = {
                let pool = self.pool();
                let mask = pool.excluded(history.seen.iter().chain(&excluded).chain(&tried));
                let ranked = ranking::rank(
                    &pool,
                    &mask,
                    model.as_deref().map(|m| &m.scorer),
                    request.user_id,
                    &exploration,
                    count - posts.len() + SPARE_PICKS,
                    &mut rand::rng(),
                );
                if cold_start.is_none() {
                    self.inner
                        .metrics
                        .candidates
                        .observe(ranked.candidates as f64);
                    if ranked.cold_start {
                        self.inner.metrics.cold_start.inc();
                    }
                    cold_start = Some(ranked.cold_start);
                    policy = ranked.policy;
                }
                ranked
                    .picks
                    .iter()
                    .map(|pick| {
                        let post = &pool.posts[pick.index];
                        Chosen {
                            key: post.key.clone(),
                            text: post.text.clone(),
                            score: pick.score,
                            explored: pick.explored,
                        }
                    })
                    .collect::<Vec<_>>()
            };
            if chosen.is_empty() {
                break;
            }
            for pick in chosen {
                if posts.len() == count {
                    break;
                }
                tried.insert(pick.key.clone());
                let Some(reference) = pick.key.post_ref() else {
                    continue;
                };
                // A millisecond apart: a request answered again returns them in this order.
                let at_ms = now + posts.len() as i64;
                let recorded = self
                    .inner
                    .store
                    .record_delivery(request.user_id, &reference, at_ms, request_id)
                    .await;
                match recorded {
                    Ok(sent) => {
                        // Sent now, or already: seen either way.
                        recorded_keys.push(pick.key.clone());
                        if sent {
                            posts.push(RecommendedPost {
                                channel: reference.channel,
                                post_id: reference.post_id,
                                score: pick.score,
                                explored: pick.explored,
                                text: Some(pick.text.to_string()),
                            });
                        }
                    }
                    Err(error) => {
                        self.note_seen(request.user_id, history, recorded_keys);
                        self.release(request.user_id, &posts, request_id).await;
                        return unavailable(&error);
                    }
                }
            }
        }
        self.note_seen(request.user_id, history, recorded_keys);
        let cold_start = cold_start.unwrap_or(true);
        RecommendReply::Ok {
            schema_version: SCHEMA_VERSION,
            user_id: request.user_id,
            posts,
            model_version: model.as_ref().map(|m| m.version),
            cold_start,
            exploration_noise: settings.exploration_noise,
            exploration: policy,
        }
    }
}

fn unavailable(error: &oleg_store::StoreError) -> RecommendReply {
    RecommendReply::error(RecommendErrorCode::Unavailable, format!("store: {error}"))
}

/// What a ranker replica hears on its own queue.
enum Notice {
    /// A model was published: the live pointer moved.
    Model,
    Post(ScrapedPost),
    /// A vote cast (before ingest stores it): the person saw the post.
    Vote(Vote),
}

impl Inbound for Notice {
    fn from_delivery(routing_key: &str, body: &[u8], max_bytes: usize) -> Result<Self, Rejection> {
        if Some(routing_key) == MessageKind::ModelPublished.routing_key() {
            ModelPublished::from_delivery(routing_key, body, max_bytes).map(|_| Notice::Model)
        } else if Some(routing_key) == MessageKind::Vote.routing_key() {
            Vote::from_delivery(routing_key, body, max_bytes).map(Notice::Vote)
        } else {
            ScrapedPost::from_delivery(routing_key, body, max_bytes).map(Notice::Post)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oleg_testkit::{mongo_settings, scraped_post, TestServices};

    /// The runtime closes the store once `run` has returned: a task the ranker started that
    /// outlived it would read a closed store (seen as an error at a stop). Several threads, as in
    /// a worker, and several stops: what is merely aborted, not awaited, ends a moment later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_the_ranker_started_outlives_its_run() {
        let test = "ranker-nothing-outlives-its-run";
        let services = TestServices::start(test, mongo_settings(test)).await;
        let post = PostRef {
            channel: ChannelName::parse("channel_a").expect("a channel name"),
            post_id: PostId::new(1).expect("a post id"),
        };
        services
            .store
            .upsert_posts(&[scraped_post(&post)], 0)
            .await
            .expect("a post stored");
        for stop in 1..=10 {
            // The worker's stop: its bus stops consuming with it.
            let shutdown = CancellationToken::new();
            let registry = prometheus::Registry::new();
            let bus = Bus::connect(
                services.amqp.clone(),
                test,
                &registry,
                oleg_telemetry::Readiness::default(),
                shutdown.clone(),
            )
            .await
            .expect("the broker");
            let metrics = RankerMetrics::register(&registry).expect("metrics");
            let ranker = Ranker::new(
                bus.clone(),
                services.store.clone(),
                settings::tests::shipped(),
                metrics,
                shutdown.clone(),
            );
            let running = tokio::spawn(ranker.clone().run());
            // The candidates are read once the notices' queue is bound: everything has started.
            let started = Instant::now();
            while ranker.inner.metrics.pool_posts.get() == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the candidates were never read"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            shutdown.cancel();
            running.await.expect("run ends without a panic");
            assert_eq!(
                Arc::strong_count(&ranker.inner),
                1,
                "stop {stop}: a task the ranker started is still running after its run returned"
            );
            bus.close().await;
        }
        services.finish().await;
    }
}
