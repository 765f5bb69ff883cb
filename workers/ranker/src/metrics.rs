use crate::calibration::{Calibration, WEIGHTS, WEIGHT_NAMES};
use prometheus::{
    exponential_buckets, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

#[derive(Clone)]
pub struct RankerMetrics {
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    pub handle_seconds: Histogram,
    pub queue_wait_seconds: Histogram,
    pub candidates: Histogram,
    pub cold_start: IntCounter,
    pub model_version: IntGauge,
    pub model_age_seconds: Gauge,
    pub model_load_failures: IntCounter,
    pub pool_posts: IntGauge,
    pub subjects_learned_from: IntGauge,
    pub people_cached: IntGauge,
    pub history_reads: IntCounterVec,
    pub votes_heard: IntCounterVec,
    pub released: IntCounter,
    pub release_failures: IntCounter,
    /// The calibration's weights by name, each gauge looked up once: they are set at every
    /// refit (every 100 votes heard).
    calibration: [Gauge; WEIGHTS],
    calibration_posts_sd: Gauge,
}

impl RankerMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let latency = |name: &str, help: &str| {
            Histogram::with_opts(
                HistogramOpts::new(name, help)
                    .buckets(exponential_buckets(0.0001, 2.0, 18).expect("buckets")),
            )
        };
        let calibration = GaugeVec::new(Opts::new("oleg_ranker_calibration_weight", "What the votes heard say the model's estimate is worth: a like's logit is intercept + estimate × the estimate's logit + views × the post's relative views (from the fit with each post's and each person-channel pair's own intercept; applied × ranker.post_effect_sd / oleg_ranker_calibration_posts_sd) + channel × the logit of the voter's like rate on the channel (fitted, not applied: the person's channel offset holds it) (1 for estimate, 0 for the others: taken as it comes)."), &["weight"])?;
        let metrics = Self {
            requests: IntCounterVec::new(Opts::new("oleg_ranker_requests_total", "Recommendation requests, by outcome (ok, error, unroutable: the requester was gone, expired: the requester had stopped waiting, reply_failed: the reply was not confirmed and the request is answered again)."), &["outcome"])?,
            errors: IntCounterVec::new(
                Opts::new("oleg_ranker_errors_total", "Failed requests by kind (malformed, unsupported_schema_version, unavailable, no_reply_to)."),
                &["kind"],
            )?,
            handle_seconds: latency("oleg_ranker_handle_seconds", "From taking a request off the queue to its reply being confirmed: scoring, store and reply.")?,
            queue_wait_seconds: latency("oleg_ranker_queue_wait_seconds", "Time a request waited in the queue (from its x-sent-at-ms header).")?,
            candidates: Histogram::with_opts(
                HistogramOpts::new("oleg_ranker_candidates", "Candidate posts scored per request.").buckets(exponential_buckets(1.0, 4.0, 10)?),
            )?,
            cold_start: IntCounter::new("oleg_ranker_cold_start_total", "Requests answered by popularity (person unknown to the model).")?,
            model_version: IntGauge::new("oleg_ranker_model_version", "The model version serving requests (0: none yet).")?,
            model_age_seconds: Gauge::new("oleg_ranker_model_age_seconds", "Seconds since the serving model was published.")?,
            model_load_failures: IntCounter::new("oleg_ranker_model_load_failures_total", "Published models that failed to load and were refused.")?,
            pool_posts: IntGauge::new("oleg_ranker_candidate_posts", "Posts in the candidate window.")?,
            subjects_learned_from: IntGauge::new("oleg_ranker_subjects_learned_from_posts", "Candidates the serving subjects were learned from (0: too few texts yet).")?,
            people_cached: IntGauge::new("oleg_ranker_people_cached", "People whose history this replica holds between requests.")?,
            votes_heard: IntCounterVec::new(Opts::new("oleg_ranker_votes_heard_total", "Votes cast that this replica heard of, by what they changed: new (a first vote, or by someone it does not hold), replaced (a person it holds changed their vote), stale (heard before)."), &["change"])?,
            history_reads: IntCounterVec::new(Opts::new("oleg_ranker_history_reads_total", "Where a request's person history came from: cache (held by this replica) or store (read, then held)."), &["source"])?,
            released: IntCounter::new("oleg_ranker_released_deliveries_total", "Deliveries undone because their reply reached nobody (unroutable: its requester was gone; or a request that failed halfway).")?,
            release_failures: IntCounter::new("oleg_ranker_release_failures_total", "Releases of undelivered posts that failed (those posts stay recorded as sent).")?,
            calibration: std::array::from_fn(|i| calibration.with_label_values(&[WEIGHT_NAMES[i]])),
            calibration_posts_sd: Gauge::new("oleg_ranker_calibration_posts_sd", "How far posts' own appeal differs, in logits, on the calibration's scale (its fit with each post's intercept; 0 before its first fit): views are applied × ranker.post_effect_sd / this.")?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.handle_seconds.clone()))?;
        registry.register(Box::new(metrics.queue_wait_seconds.clone()))?;
        registry.register(Box::new(metrics.candidates.clone()))?;
        registry.register(Box::new(metrics.cold_start.clone()))?;
        registry.register(Box::new(metrics.model_version.clone()))?;
        registry.register(Box::new(metrics.model_age_seconds.clone()))?;
        registry.register(Box::new(metrics.model_load_failures.clone()))?;
        registry.register(Box::new(metrics.pool_posts.clone()))?;
        registry.register(Box::new(metrics.subjects_learned_from.clone()))?;
        registry.register(Box::new(metrics.people_cached.clone()))?;
        registry.register(Box::new(metrics.history_reads.clone()))?;
        registry.register(Box::new(metrics.votes_heard.clone()))?;
        registry.register(Box::new(metrics.released.clone()))?;
        registry.register(Box::new(metrics.release_failures.clone()))?;
        registry.register(Box::new(calibration))?;
        registry.register(Box::new(metrics.calibration_posts_sd.clone()))?;
        metrics.set_calibration(&Calibration::default());
        Ok(metrics)
    }

    /// The calibration's weights and posts' spread.
    pub fn set_calibration(&self, calibration: &Calibration) {
        for (gauge, weight) in self.calibration.iter().zip(calibration.weights()) {
            gauge.set(weight);
        }
        self.calibration_posts_sd
            .set(calibration.posts_sd().unwrap_or(0.0));
    }
}
