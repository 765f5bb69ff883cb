//! The trainer worker: counts announced votes, and when enough arrived (and long enough passed)
//! takes the training lease and runs an incremental or full cycle.
//!
//! Fencing: a cycle allocates its version by a unique insert, writes only that version's files
//! and document, and makes it live with one write that matches only while it still holds the
//! lease by the store's clock ([`Store::commit_live_model`]); a trainer that lost its lease
//! (paused past the lease's time, say) publishes nothing. Training stops between batches when
//! the lease is lost or a stop is asked for.

use crate::artifact::{self, model_document};
use crate::cycle::{self, CycleFigures, CycleKind};
use crate::dataset::{Columns, Vocabularies};
use crate::lease::LeaseRenewal;
use crate::metrics::TrainerMetrics;
use crate::{TrainerConfig, TrainerSettings};
use anyhow::Context;
use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use oleg_bus::{
    current_trace, in_trace, new_trace, traced, Bus, Outcome, QueueName, Source, Subscription,
};
use oleg_messages::{
    HoldoutMetrics, ModelPublished, ModelStatus, ModelVersion, Reaction, VotesIngested,
    SCHEMA_VERSION,
};
use oleg_model::{Evaluation, Network};
use oleg_runtime::{Connections, Worker, WorkerContext};
use oleg_store::{as_i64, LeaseClaim, PostKey, Store, StoreError, VoteRecord, TRAINING_LEASE};
use oleg_telemetry::Component;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// `oleg-trainer serve`, built and ready to run.
pub struct App {
    ctx: WorkerContext,
    trainer: Trainer,
}

impl Worker for App {
    type Config = TrainerConfig;
    const NAME: &'static str = "oleg-trainer";
    const SECTION: &'static str = "trainer";

    async fn build(config: TrainerConfig, stop: CancellationToken) -> anyhow::Result<Self> {
        tch::set_num_threads(config.trainer.threads);
        let ctx = WorkerContext::start(
            Self::NAME,
            &config.log,
            &config.trainer.metrics_addr,
            &[Component::Broker, Component::Store],
            stop.clone(),
        )
        .await?;
        let metrics = TrainerMetrics::register(&ctx.registry)?;
        let store = ctx
            .connect_store(&config.mongo, Duration::from_secs(2))
            .await?;
        let bus = ctx.connect_bus(&config.amqp).await?;
        let trainer = Trainer::start(store, bus, config.trainer, metrics, stop).await?;
        Ok(Self { ctx, trainer })
    }

    fn metrics_addr(&self) -> std::net::SocketAddr {
        self.ctx.metrics_addr()
    }

    fn connections(&self) -> Connections {
        Connections {
            bus: self.trainer.bus.clone(),
            store: self.trainer.store.clone(),
        }
    }

    /// Counts the votes announced and trains when a cycle is due, until stopped.
    async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut trainer = self.trainer;
        let bus = trainer.bus.clone();
        let max_bytes = bus.settings().max_message_bytes;
        let mut notices = Subscription::new(bus.clone(), Source::Shared(QueueName::Trainer));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                incoming = notices.next() => {
                    let Some(incoming) = incoming else { break };
                    let span = incoming.span();
                    let outcome = match incoming.decode::<VotesIngested>(max_bytes) {
                        Ok(notice) => {
                            span.in_scope(|| tracing::info!(new_votes = notice.new_votes, changed_votes = notice.changed_votes, "votes announced"));
                            trainer.note(&notice, incoming.trace_id());
                            Outcome::Done
                        }
                        Err(rejection) => Outcome::Refused(rejection),
                    };
                    incoming.settle(outcome).instrument(span).await;
                }
                _ = tick.tick() => {
                    if let Some(kind) = trainer.due() {
                        trainer.cycle_and_report(kind).await;
                    }
                }
            }
        }
        Ok(())
    }
}

impl App {
    /// `oleg-trainer retrain`: one full cycle, then stop.
    pub async fn retrain(mut self) -> anyhow::Result<()> {
        let connections = self.connections();
        let result = self.trainer.cycle(CycleKind::Full).await;
        connections.close().await;
        result
    }
}

/// The live model as this trainer holds it.
struct Live {
    network: Network,
    vocab: Vocabularies,
    version: ModelVersion,
    /// The newest ingestion time among the votes it was trained on. The next cycle reads from
    /// `watermark_overlap_s` before it (a batch committed late can carry an earlier time) and
    /// skips the votes marked as trained.
    trained_through_ms: i64,
}

/// Vote key → (revision, ingested at).
type Recent = HashMap<String, (i64, i64)>;

impl Live {
    /// Where the next incremental cycle starts reading.
    fn read_from(&self, overlap_ms: i64) -> i64 {
        self.trained_through_ms.saturating_sub(overlap_ms)
    }
}

pub struct Trainer {
    store: Store,
    bus: Bus,
    settings: TrainerSettings,
    metrics: TrainerMetrics,
    shutdown: CancellationToken,
    holder: String,
    device: tch::Device,
    live: Option<Live>,
    pending_votes: u64,
    /// Traces of the notices announcing the votes the next cycle trains on.
    announced: Vec<String>,
    last_cycle: Option<Instant>,
    incrementals_since_full: u64,
}

impl Trainer {
    async fn start(
        store: Store,
        bus: Bus,
        settings: TrainerSettings,
        metrics: TrainerMetrics,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let device = settings.device().context("trainer.device")?;
        let mut trainer = Self {
            store,
            bus,
            settings,
            metrics,
            shutdown,
            holder: format!("{}-{}", hostname(), uuid::Uuid::new_v4()),
            device,
            live: None,
            pending_votes: 0,
            announced: Vec::new(),
            last_cycle: None,
            incrementals_since_full: 0,
        };
        trainer.reload_live().await?;
        // Votes stored since the live model (or at all, without one) are work to do.
        if trainer.has_new_votes().await? {
            trainer.pending_votes = trainer.settings.min_new_votes;
        }
        trainer
            .metrics
            .pending_votes
            .set(trainer.pending_votes as i64);
        Ok(trainer)
    }

    async fn reload_live(&mut self) -> anyhow::Result<()> {
        self.live = None;
        let Some(record) = self.store.live_model().await? else {
            tracing::info!("no published model yet");
            return Ok(());
        };
        let version = record.version;
        let (network, mut vocab) =
            artifact::load(&self.store, version, &self.settings.model, self.device)
                .await
                .with_context(|| format!("loading model {version}"))?;
        read_post_features(&self.store, &mut vocab)
            .await
            .context("reading the content of the live model's posts")?;
        let trained_through_ms = record
            .figures
            .as_ref()
            .and_then(|f| as_i64(f.get("trained_through_ms")))
            .unwrap_or(0);
        tracing::info!(%version, "loaded the live model");
        self.metrics.model_version.set(version.as_i64());
        self.live = Some(Live {
            network,
            vocab,
            version,
            trained_through_ms,
        });
        Ok(())
    }

    /// Counts announced votes, remembering (a few of) their notices' traces for the cycle that
    /// trains on them.
    fn note(&mut self, notice: &VotesIngested, trace: String) {
        self.pending_votes += notice.new_votes + notice.changed_votes;
        self.metrics.pending_votes.set(self.pending_votes as i64);
        if self.announced.len() < 64 {
            self.announced.push(trace);
        }
    }

    fn due(&self) -> Option<CycleKind> {
        let standing = cycle::Standing {
            pending_votes: self.pending_votes,
            since_last_cycle: self.last_cycle.map(|t| t.elapsed()),
            has_live: self.live.is_some(),
            incrementals_since_full: self.incrementals_since_full,
        };
        cycle::due(&self.settings, standing)
    }

    /// Runs a cycle; a failure is logged and counted (a cycle cut short by a stop is not one).
    async fn cycle_and_report(&mut self, kind: CycleKind) {
        if let Err(error) = self.cycle(kind).await {
            let error = format!("{error:#}");
            if self.shutdown.is_cancelled() {
                tracing::info!(%error, kind = kind.as_str(), "training cycle stopped for shutdown");
                self.metrics
                    .cycles
                    .with_label_values(&[kind.as_str(), "stopped"])
                    .inc();
            } else {
                tracing::error!(%error, kind = kind.as_str(), "training cycle failed");
                self.metrics
                    .cycles
                    .with_label_values(&[kind.as_str(), "failed"])
                    .inc();
            }
        }
    }

    /// Runs one cycle under the lease, in a span of its own whose start lists the traces of the
    /// notices it answers.
    pub async fn cycle(&mut self, kind: CycleKind) -> anyhow::Result<()> {
        let trace = new_trace();
        let span = tracing::info_span!("cycle", trace = %trace, kind = kind.as_str());
        traced(trace, self.cycle_in_span(kind).instrument(span)).await
    }

    async fn cycle_in_span(&mut self, kind: CycleKind) -> anyhow::Result<()> {
        let ttl_ms = (self.settings.lease_ttl_s * 1000) as i64;
        let now = self.store.store_time_ms().await?;
        let Some(claim) = self
            .store
            .acquire_lease(TRAINING_LEASE, &self.holder, now, ttl_ms)
            .await?
        else {
            tracing::info!("another trainer holds the lease; not training");
            self.metrics.lease_lost.with_label_values(&["before"]).inc();
            self.last_cycle = Some(Instant::now());
            return Ok(());
        };
        tracing::info!(
            pending_votes = self.pending_votes,
            token = claim.token,
            notices = ?std::mem::take(&mut self.announced),
            "training cycle started"
        );
        // Set when the lease is lost or a stop is asked for: training stops between batches.
        let abandon = Arc::new(AtomicBool::new(false));
        let renewal = LeaseRenewal::start(
            self.store.clone(),
            claim.clone(),
            self.settings.lease_ttl_s,
            self.shutdown.clone(),
            abandon.clone(),
        );
        let started = Instant::now();
        let outcome = match self.catch_up().await {
            // Another trainer may have published while this one waited for the lease.
            Ok(true) => self.train_and_publish(kind, &claim, &abandon).await,
            Ok(false) => Ok("nothing_new"),
            Err(error) => Err(error),
        };
        renewal.end().await;
        let _ = self.store.release_lease(&claim).await;
        self.last_cycle = Some(Instant::now());
        let outcome = outcome?;
        tracing::info!(kind = kind.as_str(), outcome, "training cycle finished");
        self.metrics
            .cycle_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .cycles
            .with_label_values(&[kind.as_str(), outcome])
            .inc();
        match kind {
            CycleKind::Full => self.incrementals_since_full = 0,
            CycleKind::Incremental => self.incrementals_since_full += 1,
        }
        Ok(())
    }

    /// Loads the live model if it is not the one held; returns whether any vote came since.
    async fn catch_up(&mut self) -> anyhow::Result<bool> {
        let live = self.store.live_version().await?;
        if live != self.live.as_ref().map(|l| l.version) {
            self.reload_live().await?;
        }
        let new = self.has_new_votes().await?;
        if !new {
            self.pending_votes = 0;
            self.metrics.pending_votes.set(0);
        }
        Ok(new)
    }

    /// Whether any vote was stored (or changed) that the live model was not trained on.
    async fn has_new_votes(&self) -> anyhow::Result<bool> {
        let Some(live) = &self.live else {
            return Ok(self.store.has_votes().await?);
        };
        let overlap_ms = (self.settings.watermark_overlap_s * 1000) as i64;
        let mut votes = self
            .store
            .votes_ingested_after(live.read_from(overlap_ms), self.settings.read_batch)
            .await?;
        while let Some(vote) = votes.try_next().await? {
            if !vote.trained() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn train_and_publish(
        &mut self,
        kind: CycleKind,
        claim: &LeaseClaim,
        abandon: &Arc<AtomicBool>,
    ) -> anyhow::Result<&'static str> {
        let now = self.store.store_time_ms().await?;
        let version = self.store.allocate_model_version(claim, now).await?;
        match self.train_version(kind, claim, abandon, version).await {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                // What it had written stays, marked so that nobody takes it for a model.
                let why = doc! {"error": format!("{error:#}")};
                let abandoned = ModelStatus::Abandoned;
                if let Err(mark) = self
                    .store
                    .finish_model(claim, version, abandoned, why)
                    .await
                {
                    tracing::warn!(error = %mark, %version, "could not mark an abandoned version");
                }
                if self.live.is_none() || kind == CycleKind::Incremental {
                    // Training in place may have changed the held network: reload it.
                    self.reload_live().await?;
                }
                Err(error)
            }
        }
    }

    /// Trains the cycle's candidate as `version` (allocated by `claim`) and publishes or
    /// rejects it.
    async fn train_version(
        &mut self,
        kind: CycleKind,
        claim: &LeaseClaim,
        abandon: &Arc<AtomicBool>,
        version: ModelVersion,
    ) -> anyhow::Result<&'static str> {
        let mut vocab = self
            .live
            .as_ref()
            .map(|l| l.vocab.clone())
            .unwrap_or_default();
        // The cycle builds on the live model it holds, and commits only if the pointer still
        // names it (an operator's rollback meanwhile wins). A store from before the pointer has
        // none to compare.
        let base = match self.store.live_pointer().await? {
            Some(_) => self.live.as_ref().map(|l| l.version),
            None => None,
        };
        let read = self.read_votes(&mut vocab, kind).await?;
        read_post_features(&self.store, &mut vocab).await?;
        if read.new_rows == 0 {
            self.pending_votes = 0;
            self.store
                .finish_model(claim, version, ModelStatus::NothingNew, doc! {})
                .await?;
            return Ok("nothing_new");
        }
        let new_range = read.new_range();
        let (trained_through_ms, near_watermark) = read.watermark();
        let new_votes = read.new_rows;
        let data = cycle::hold_out_recent(
            read.columns,
            &read.voted_at_ms,
            new_range,
            self.settings.holdout_share,
            self.settings.holdout_max,
            self.device,
        );
        let epochs = match kind {
            CycleKind::Full => self.settings.model.epochs,
            CycleKind::Incremental => self.settings.incremental_epochs,
        };
        let (config, device) = (self.settings.model.clone(), self.device);
        let live = self.live.take();
        let stop = abandon.clone();
        let (trace, span) = (current_trace(), tracing::Span::current());
        // Training is CPU-bound: off the async threads, taking the live network along.
        let (trained, live) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let job = Job {
                kind,
                vocab,
                config,
                device,
                data,
                epochs,
            };
            in_trace(trace, span, || train_candidate(job, live, &stop))
        })
        .await
        .context("the training task panicked")??;
        self.live = live;
        let Ok((candidate, figures)) = trained else {
            anyhow::bail!("training stopped: the lease was lost or a stop was asked for");
        };
        self.report(&figures);
        let accepted = cycle::accept(&figures, self.settings.max_auc_drop);
        let (network, vocab) = candidate;
        let mut summary = figures_document(&figures, kind, trained_through_ms);
        summary.insert("new_votes", new_votes as i64);
        self.pending_votes = 0;
        self.metrics.pending_votes.set(0);
        if !accepted {
            tracing::warn!(
                %version,
                candidate_auc = figures.candidate.auc,
                live_auc = figures.live.map(|l| l.auc),
                allowed_drop = cycle::allowed_auc_drop(&figures, self.settings.max_auc_drop),
                holdout_votes = figures.candidate.count,
                "model rejected: holdout AUC below the live model's by more than trainer.max_auc_drop and the holdout's noise"
            );
            self.store
                .finish_model(
                    claim,
                    version,
                    ModelStatus::Rejected,
                    model_document(&self.settings.model, summary),
                )
                .await?;
            if kind == CycleKind::Incremental {
                // It was trained in place: go back to the published weights.
                self.reload_live().await?;
            }
            return Ok("rejected");
        }
        if abandon.load(Ordering::SeqCst) || !self.store.holds_lease(claim).await? {
            self.metrics.lease_lost.with_label_values(&["during"]).inc();
            anyhow::bail!("lost the training lease during the cycle; discarding its model");
        }
        let files = artifact::store_files(&self.store, version, &network, &vocab).await?;
        let mut document = model_document(&self.settings.model, summary);
        document.insert("files", mongodb::bson::to_bson(&files)?);
        document.insert("trained_on_votes", figures.train_votes as i64);
        self.store
            .finish_model(claim, version, ModelStatus::Published, document)
            .await?;
        if !self.store.commit_live_model(claim, version, base).await? {
            self.metrics.lease_lost.with_label_values(&["during"]).inc();
            anyhow::bail!(
                "lost the training lease, or an operator moved the live model, before making model {version} live; discarding it"
            );
        }
        if let Err(error) = self.store.mark_votes_trained(&near_watermark).await {
            // Unmarked, they are trained once more by the next cycle: no harm.
            tracing::warn!(%error, "could not mark the votes near the watermark as trained");
        }
        let notice = ModelPublished {
            schema_version: SCHEMA_VERSION,
            version,
            variant: self.settings.model.variant.as_str().to_owned(),
            trained_on_votes: figures.train_votes as u64,
            holdout: holdout_metrics(&figures.candidate),
            published_at: Utc::now(),
        };
        self.live = Some(Live {
            network,
            vocab,
            version,
            trained_through_ms,
        });
        self.metrics.model_version.set(version.as_i64());
        self.metrics
            .model_published_at
            .set(Utc::now().timestamp() as f64);
        tracing::info!(
            %version,
            kind = kind.as_str(),
            auc = figures.candidate.auc,
            mse = figures.candidate.mse,
            "model published"
        );
        if let Err(error) = self.bus.publish(&notice).await {
            tracing::warn!(%error, %version, "could not announce the model; rankers see it on their next check");
        }
        Ok("published")
    }

    fn report(&self, figures: &CycleFigures) {
        self.metrics.epoch_loss.set(figures.last_epoch_loss);
        self.metrics.holdout_auc.set(figures.candidate.auc);
        self.metrics.holdout_mse.set(figures.candidate.mse);
        self.metrics
            .holdout_log_loss
            .set(figures.candidate.log_loss);
        self.metrics.votes_per_second.set(figures.votes_per_second);
    }

    /// The cycle's votes, the ones the live model has not trained on last (the range the
    /// holdout comes from, so that candidate and live model are compared on votes neither
    /// trained on). A full cycle reads every vote; an incremental one the new votes and a
    /// sample of older ones (from `watermark_overlap_s` before the live model's mark, so a batch
    /// committed late is not missed).
    async fn read_votes(
        &self,
        vocab: &mut Vocabularies,
        kind: CycleKind,
    ) -> anyhow::Result<ReadVotes> {
        let overlap_ms = (self.settings.watermark_overlap_s * 1000) as i64;
        let live = self.live.as_ref();
        let since = live.map_or(i64::MIN, |l| l.read_from(overlap_ms));
        let mut new = ReadVotes::new(overlap_ms);
        let mut older = ReadVotes::new(overlap_ms);
        // Votes older than the active window are not trained on, in either kind of cycle.
        let active_from = match self.settings.active_days {
            0 => i64::MIN,
            days => Utc::now().timestamp_millis() - i64::from(days) * 86_400_000,
        };
        let read_from = match kind {
            CycleKind::Full => active_from,
            CycleKind::Incremental => since.max(active_from),
        };
        let mut votes = self
            .store
            .votes_ingested_after(read_from, self.settings.read_batch)
            .await?;
        while let Some(vote) = votes.try_next().await? {
            let trained_by_live =
                live.is_some() && (vote.ingested_at_ms <= since || vote.trained());
            match (trained_by_live, kind) {
                (false, _) => new.push(vocab, &vote),
                (true, CycleKind::Full) => older.push(vocab, &vote),
                (true, CycleKind::Incremental) => {}
            }
            if self.shutdown.is_cancelled() {
                anyhow::bail!("shutting down");
            }
        }
        new.new_rows = new.columns.len();
        let Some(live) = live else {
            return Ok(new);
        };
        if kind == CycleKind::Incremental {
            let batch = live.network.config().batch_size as u64;
            let wanted = (new.new_rows as u64 * self.settings.older_sample_factor)
                .max(batch * self.settings.min_batches)
                .saturating_sub(new.new_rows as u64);
            let mut sample = self
                .store
                .sample_votes_between(active_from, since, wanted, self.settings.read_batch)
                .await?;
            while let Some(vote) = sample.try_next().await? {
                older.push(vocab, &vote);
            }
        }
        older.append_new(new, live);
        Ok(older)
    }
}

#[derive(Default)]
struct ReadVotes {
    columns: Columns,
    voted_at_ms: Vec<i64>,
    /// The last `new_rows` rows are the cycle's new votes.
    new_rows: usize,
    /// The watermark so far: the newest ingestion time read, and the votes within the overlap
    /// of it.
    through_ms: i64,
    recent: Recent,
    overlap_ms: i64,
}

impl ReadVotes {
    fn new(overlap_ms: i64) -> Self {
        Self {
            through_ms: i64::MIN,
            overlap_ms,
            ..Default::default()
        }
    }

    fn push(&mut self, vocab: &mut Vocabularies, vote: &VoteRecord) {
        let label = match vote.reaction {
            Reaction::Like => 1.0,
            Reaction::Dislike => 0.0,
        };
        self.columns
            .push(vocab, vote.user_id, &vote.channel, vote.post_id, label);
        self.voted_at_ms.push(vote.voted_at_ms);
        self.note(&vote.key, vote.revision, vote.ingested_at_ms);
    }

    /// Adds a trained vote to the watermark, keeping only the window's (votes arrive in no
    /// order, so the window is pruned whenever it has doubled).
    fn note(&mut self, key: &str, revision: i64, at_ms: i64) {
        self.through_ms = self.through_ms.max(at_ms);
        let from = self.through_ms.saturating_sub(self.overlap_ms);
        if at_ms >= from {
            self.recent.insert(key.to_owned(), (revision, at_ms));
            if self.recent.len() >= 1024 && self.recent.len().is_power_of_two() {
                self.recent.retain(|_, (_, at)| *at >= from);
            }
        }
    }

    /// Puts `new` (the votes `live` has not trained on) after these older ones; the watermark
    /// goes on from `live`'s.
    fn append_new(&mut self, new: ReadVotes, live: &Live) {
        self.columns.extend(&new.columns);
        self.voted_at_ms.extend_from_slice(&new.voted_at_ms);
        self.new_rows = new.new_rows;
        self.through_ms = live.trained_through_ms.max(new.through_ms);
        self.recent = new.recent;
    }

    fn new_range(&self) -> std::ops::Range<usize> {
        self.columns.len() - self.new_rows..self.columns.len()
    }

    /// The newest ingestion time trained on, and the votes (key, revision) within the overlap
    /// of it, to be marked trained once the model is live.
    fn watermark(&self) -> (i64, Vec<(String, i64)>) {
        let from = self.through_ms.saturating_sub(self.overlap_ms);
        let recent = self
            .recent
            .iter()
            .filter(|(_, (_, at))| *at >= from)
            .map(|(key, (revision, _))| (key.clone(), *revision))
            .collect();
        (self.through_ms, recent)
    }
}

/// Reads the content of the vocabulary's post rows that have no features yet. A post the store
/// no longer holds (or never held) is content-free.
async fn read_post_features(store: &Store, vocab: &mut Vocabularies) -> Result<(), StoreError> {
    let missing: Vec<PostKey> = vocab
        .posts_without_features()
        .into_iter()
        .map(|(channel, post)| PostKey::new(channel, post))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let contents = store.post_contents(&missing).await?;
    vocab.complete_features(|channel, post| contents.get(&PostKey::new(channel, post)));
    Ok(())
}

fn holdout_metrics(e: &Evaluation) -> HoldoutMetrics {
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    HoldoutMetrics {
        auc: finite(e.auc).clamp(0.0, 1.0),
        mse: finite(e.mse).max(0.0),
        log_loss: finite(e.log_loss).max(0.0),
        votes: e.count as u64,
    }
}

fn figures_document(figures: &CycleFigures, kind: CycleKind, trained_through_ms: i64) -> Document {
    let evaluation = |e: &Evaluation| doc! {"auc": figure(e.auc), "mse": figure(e.mse), "log_loss": figure(e.log_loss), "votes": e.count as i64};
    let mut document = doc! {
        "kind": kind.as_str(),
        "epochs": figures.epochs as i64,
        "last_epoch_loss": figure(figures.last_epoch_loss),
        "holdout": evaluation(&figures.candidate),
        "votes_per_second": figure(figures.votes_per_second),
        "train_votes": figures.train_votes as i64,
        "trained_through_ms": trained_through_ms,
    };
    if let Some(live) = &figures.live {
        document.insert("live_holdout", evaluation(live));
    }
    document
}

/// A figure as stored: NaN (a holdout without both likes and dislikes) and infinities as null,
/// which every store and JSON tool reads; the stand-in refused a cycle's whole record over a NaN.
fn figure(value: f64) -> Bson {
    if value.is_finite() {
        Bson::Double(value)
    } else {
        Bson::Null
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "trainer".into())
}

/// What training a cycle's candidate gave: the candidate and its figures (unless stopped), and
/// the live model back (the incremental candidate is the live network, trained in place).
type Trained = (
    Result<((Network, Vocabularies), CycleFigures), cycle::Stopped>,
    Option<Live>,
);

/// What a cycle trains: its kind, vocabularies, network configuration and data.
struct Job {
    kind: CycleKind,
    vocab: Vocabularies,
    config: oleg_model::ModelConfig,
    device: tch::Device,
    data: cycle::CycleData,
    epochs: usize,
}

/// Trains the cycle's candidate: the live network fitted to the vocabularies and evaluated on
/// the holdout, then (incremental) trained further or (full) replaced by a fresh one.
fn train_candidate(job: Job, mut live: Option<Live>, stop: &AtomicBool) -> anyhow::Result<Trained> {
    let Job {
        kind,
        vocab,
        config,
        device,
        data,
        epochs,
    } = job;
    let live_evaluation = match live.as_mut() {
        Some(live) => {
            cycle::fit_to(&mut live.network, &vocab)?;
            Some(cycle::evaluate(&live.network, &data.holdout))
        }
        None => None,
    };
    let mut candidate = match (kind, live.take()) {
        (CycleKind::Incremental, Some(live)) => live.network,
        (_, live_taken) => {
            live = live_taken;
            cycle::fresh_network(&config, &vocab, device)
        }
    };
    cycle::fit_to(&mut candidate, &vocab)?;
    let figures = cycle::train(&mut candidate, &data, epochs, live_evaluation, stop);
    Ok((figures.map(|f| ((candidate, vocab), f)), live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_that_could_not_be_measured_are_stored_as_null() {
        let unmeasured = Evaluation {
            mse: f64::NAN,
            log_loss: f64::INFINITY,
            auc: f64::NAN,
            count: 0,
            positives: 0,
        };
        let figures = CycleFigures {
            epochs: 1,
            last_epoch_loss: 0.4,
            candidate: unmeasured,
            live: Some(unmeasured),
            votes_per_second: f64::INFINITY,
            train_votes: 3,
        };
        let document = figures_document(&figures, CycleKind::Incremental, 0);
        let holdout = document.get_document("holdout").unwrap();
        assert_eq!(holdout.get("auc"), Some(&Bson::Null));
        assert_eq!(holdout.get("log_loss"), Some(&Bson::Null));
        assert_eq!(document.get("votes_per_second"), Some(&Bson::Null));
        assert_eq!(document.get("last_epoch_loss"), Some(&Bson::Double(0.4)));
        // Nothing non-finite is left for a store to refuse.
        assert!(!format!("{document}").contains("NaN") && !format!("{document}").contains("inf"));
    }
}
