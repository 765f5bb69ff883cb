//! The simulated bot frontend: people sign up, ask the ranker for a post each round and vote on
//! it, through the same queues and messages a real bot uses. It keeps score of how likely each
//! person was to like what they got, against picking at random, against the best pick, and
//! against an informed learner trained on the same votes (`informed`), and against the same
//! learner left to pick on its own and learn from the votes on its own picks.

use crate::frontend::{Frontend, Shown};
use crate::informed::InformedLearner;
use crate::taste::{population, Person, PostTraits, TasteSpread};
use crate::world::World;
use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::doc;
use oleg_bus::{consume, Bus, Outcome, Source};
use oleg_messages::{ModelPublished, ModelVersion, PostRef, Reaction, UserId, Vote};
use oleg_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct SimulationSettings {
    pub people: u32,
    pub rounds: u32,
    /// Ids are `first_user..first_user + people`.
    pub first_user: i64,
    pub seed: u64,
    /// Requests (and votes) in flight at once.
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub spread: TasteSpread,
}

impl Default for SimulationSettings {
    fn default() -> Self {
        Self {
            people: 300,
            rounds: 15,
            first_user: 1_000_000,
            seed: 42,
            concurrency: 32,
            request_timeout: Duration::from_secs(10),
            spread: TasteSpread::default(),
        }
    }
}

/// What one round produced. Probabilities are the people's hidden ones, summed over votes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundReport {
    pub round: u32,
    pub votes: u32,
    pub likes: u32,
    /// Requests answered with no post (the person has seen everything).
    pub empty_replies: u32,
    /// Requests that failed (error reply or timeout).
    pub failures: u32,
    pub cold_starts: u32,
    /// Newest model version that answered in the round.
    pub model_version: Option<ModelVersion>,
    /// Σ P(like) of the recommended posts.
    pub recommended: f64,
    /// Σ of the mean P(like) over each person's unseen posts (a random pick's expectation).
    pub random: f64,
    /// Σ of its variance, for the significance test.
    pub random_variance: f64,
    /// Σ of the best P(like) among each person's unseen posts.
    pub best: f64,
    /// Σ P(like) of the informed learner's picks among the same unseen posts.
    pub informed: f64,
    /// The informed learner on its own: a second one that each person's votes on its own picks teach
    /// (drawn from the same hidden probabilities), so that it pays for its own exploration as
    /// OLEG does; the first learns from OLEG's picks, exploration it gets for free. Σ P(like) of
    /// its picks, and the random and best baselines over the posts it has not shown the person.
    pub informed_alone: f64,
    pub random_alone: f64,
    pub best_alone: f64,
    /// Recommended posts that nobody had been sent before the round (so no vote on them
    /// reached OLEG before it), and Σ P(like) of them.
    pub fresh: u32,
    pub fresh_recommended: f64,
    /// In the generated world, Σ the hidden quality (a logit every person shares) of the
    /// recommended posts and of the informed learner's picks: how much of the gap between the
    /// two is the posts' quality rather than the person's taste.
    pub quality_recommended: f64,
    pub quality_informed: f64,
}

impl RoundReport {
    fn rate(&self, sum: f64) -> f64 {
        if self.votes == 0 {
            0.0
        } else {
            sum / f64::from(self.votes)
        }
    }
    pub fn like_rate(&self) -> f64 {
        self.rate(f64::from(self.likes))
    }
    pub fn recommended_rate(&self) -> f64 {
        self.rate(self.recommended)
    }
    pub fn random_rate(&self) -> f64 {
        self.rate(self.random)
    }
    pub fn best_rate(&self) -> f64 {
        self.rate(self.best)
    }
    pub fn informed_rate(&self) -> f64 {
        self.rate(self.informed)
    }
    pub fn informed_alone_rate(&self) -> f64 {
        self.rate(self.informed_alone)
    }
    /// How far the informed learner on its own got from random order toward the best pick, each
    /// over the posts it had not shown the person.
    pub fn informed_alone_share(&self) -> f64 {
        share_between(
            self.informed_alone_rate(),
            self.rate(self.random_alone),
            self.rate(self.best_alone),
        )
    }
    /// The share of recommended posts that were fresh.
    pub fn fresh_share(&self) -> f64 {
        self.rate(f64::from(self.fresh))
    }
    /// The like rate of the fresh ones; `None` without any.
    pub fn fresh_rate(&self) -> Option<f64> {
        (self.fresh > 0).then(|| self.fresh_recommended / f64::from(self.fresh))
    }
    /// The mean hidden quality of the recommended posts and of the informed learner's picks.
    pub fn mean_quality(&self) -> (f64, f64) {
        (
            self.rate(self.quality_recommended),
            self.rate(self.quality_informed),
        )
    }

    /// How far `rate` lies from random order toward the best possible pick (0: random, 1: best).
    pub fn share_of_the_way(&self, rate: f64) -> f64 {
        share_between(rate, self.random_rate(), self.best_rate())
    }

    /// Rounds added together (for "the last N rounds").
    pub fn combined(reports: &[RoundReport]) -> RoundReport {
        reports.iter().fold(RoundReport::default(), |mut total, r| {
            total.round = r.round;
            total.votes += r.votes;
            total.likes += r.likes;
            total.empty_replies += r.empty_replies;
            total.failures += r.failures;
            total.cold_starts += r.cold_starts;
            total.model_version = total.model_version.max(r.model_version);
            total.recommended += r.recommended;
            total.random += r.random;
            total.random_variance += r.random_variance;
            total.best += r.best;
            total.informed += r.informed;
            total.informed_alone += r.informed_alone;
            total.random_alone += r.random_alone;
            total.best_alone += r.best_alone;
            total.fresh += r.fresh;
            total.fresh_recommended += r.fresh_recommended;
            total.quality_recommended += r.quality_recommended;
            total.quality_informed += r.quality_informed;
            total
        })
    }

    /// How many standard deviations the observed likes lie above what random picks would give.
    pub fn z_over_random(&self) -> f64 {
        if self.random_variance <= 0.0 {
            return 0.0;
        }
        (f64::from(self.likes) - self.random) / self.random_variance.sqrt()
    }
}

pub struct Simulator {
    frontend: Frontend,
    store: Store,
    settings: SimulationSettings,
    people: Vec<Person>,
    posts: HashMap<PostRef, PostTraits>,
    /// The generated world, whose posts' topic and quality only the people know.
    world: Option<Arc<World>>,
    /// What each person has been sent so far.
    received: Vec<HashSet<PostRef>>,
    /// What anyone was sent before this round.
    sent_before: HashSet<PostRef>,
    informed: InformedLearner,
    /// The informed learner on its own, what it has shown each person, and its people's votes.
    informed_alone: InformedLearner,
    received_alone: Vec<HashSet<PostRef>>,
    rng_alone: StdRng,
    rng: StdRng,
    newest_model: watch::Receiver<Option<ModelVersion>>,
    votes_sent: u64,
    /// Posts sent to a person a second time, as `(person, post)` (the ranker promises none).
    pub repeated: Vec<(UserId, PostRef)>,
}

impl Simulator {
    /// Reads the stored posts (people need to see a post to judge it) and draws the people's
    /// tastes over the channels those posts come from. They reach OLEG through `frontend`.
    pub async fn new(
        bus: Bus,
        store: Store,
        settings: SimulationSettings,
        frontend: Frontend,
        world: Option<Arc<World>>,
    ) -> anyhow::Result<Self> {
        let posts = load_posts(&store, world.as_deref()).await?;
        anyhow::ensure!(
            !posts.is_empty(),
            "no posts in the store: the scraper has not stored any yet"
        );
        let mut channels: Vec<_> = posts.keys().map(|p| p.channel.clone()).collect();
        channels.sort();
        channels.dedup();
        let people = population(
            settings.people,
            settings.first_user,
            &channels,
            settings.spread,
            settings.seed,
        );
        let newest_model = follow_models(bus);
        Ok(Self {
            received: vec![HashSet::new(); people.len()],
            sent_before: HashSet::new(),
            informed: InformedLearner::new(people.len(), &channels, settings.spread),
            informed_alone: InformedLearner::new(people.len(), &channels, settings.spread),
            received_alone: vec![HashSet::new(); people.len()],
            // Its own stream, so that OLEG's votes are the same with or without it.
            rng_alone: StdRng::seed_from_u64(settings.seed ^ 0xa10e),
            rng: StdRng::seed_from_u64(settings.seed ^ 0x5eed),
            frontend,
            store,
            settings,
            people,
            posts,
            world,
            newest_model,
            votes_sent: 0,
            repeated: Vec::new(),
        })
    }

    pub fn posts(&self) -> usize {
        self.posts.len()
    }

    pub fn votes_sent(&self) -> u64 {
        self.votes_sent
    }

    /// Posts shown on a person's own `/send_new` (bot frontend), beyond one per vote.
    pub fn sent_new(&self) -> u64 {
        self.frontend.sent_new()
    }

    fn ids(&self) -> Vec<UserId> {
        self.people.iter().map(|p| p.user_id).collect()
    }

    /// The newest model version announced on the bus since the simulator started.
    pub fn newest_model(&self) -> Option<ModelVersion> {
        *self.newest_model.borrow()
    }

    /// Waits until a model newer than `than` is announced; returns it, or `None` after `within`.
    pub async fn wait_for_model_newer(
        &mut self,
        than: Option<ModelVersion>,
        within: Duration,
    ) -> Option<ModelVersion> {
        let newer = self.newest_model.wait_for(|version| *version > than);
        tokio::time::timeout(within, newer)
            .await
            .ok()
            .and_then(|v| v.ok().and_then(|v| *v))
    }

    /// Every person starts the bot.
    pub async fn sign_up(&mut self) -> anyhow::Result<()> {
        let ids = self.ids();
        let (concurrency, timeout) = (self.settings.concurrency, self.settings.request_timeout);
        self.frontend.sign_up(&ids, concurrency, timeout).await
    }

    /// Every person judges one post and votes on it. `on_answer` is called per post (for a
    /// progress display).
    pub async fn play_round(
        &mut self,
        round: u32,
        on_answer: &(dyn Fn() + Sync),
    ) -> anyhow::Result<RoundReport> {
        let ids = self.ids();
        let (concurrency, timeout) = (self.settings.concurrency, self.settings.request_timeout);
        // Posts published since the last round are candidates for the baselines too.
        self.posts = load_posts(&self.store, self.world.as_deref()).await?;
        let shown = self
            .frontend
            .shown(&ids, concurrency, timeout, on_answer)
            .await;
        let mut report = RoundReport {
            round,
            model_version: self.newest_model(),
            ..Default::default()
        };
        let mut votes = Vec::new();
        for (index, shown) in shown.into_iter().enumerate() {
            let post = match shown {
                Shown::Post {
                    post,
                    model_version,
                    cold_start,
                } => {
                    report.model_version = report.model_version.max(model_version);
                    report.cold_starts += u32::from(cold_start);
                    post
                }
                Shown::Nothing => {
                    report.empty_replies += 1;
                    continue;
                }
                Shown::Failed(problem) => {
                    tracing::warn!(%problem, "a person got no post");
                    report.failures += 1;
                    continue;
                }
            };
            if !self.posts.contains_key(&post) {
                // Scraped after the simulator read the posts.
                self.posts = load_posts(&self.store, self.world.as_deref()).await?;
            }
            let Some(traits) = self.posts.get(&post) else {
                anyhow::bail!("the ranker recommended {post}, which is not in the store");
            };
            let person = &self.people[index];
            let (random, variance, best) = baselines(person, &self.posts, &self.received[index]);
            let informed_pick = self
                .informed
                .pick(index, unseen(&self.posts, &self.received[index]));
            let informed = informed_pick.map_or(0.0, |pick| person.like_probability(pick));
            let quality = |post: &PostTraits| post.hidden.map_or(0.0, |h| h.quality);
            report.quality_informed += informed_pick.map_or(0.0, quality);
            report.quality_recommended += quality(traits);
            let probability = person.like_probability(traits);
            if !self.sent_before.contains(&post) {
                report.fresh += 1;
                report.fresh_recommended += probability;
            }
            let liked = self.rng.random_bool(probability);
            self.informed.observe(index, traits, liked);
            report.informed += informed;
            let (random_alone, _, best_alone) =
                baselines(person, &self.posts, &self.received_alone[index]);
            let alone_pick = self
                .informed_alone
                .pick(index, unseen(&self.posts, &self.received_alone[index]));
            if let Some(pick) = alone_pick {
                let probability = person.like_probability(pick);
                let liked = self.rng_alone.random_bool(probability);
                self.informed_alone.observe(index, pick, liked);
                self.received_alone[index].insert(pick.post.clone());
                report.informed_alone += probability;
                report.random_alone += random_alone;
                report.best_alone += best_alone;
            }
            report.votes += 1;
            report.likes += u32::from(liked);
            report.recommended += probability;
            report.random += random;
            report.random_variance += variance;
            report.best += best;
            if !self.received[index].insert(post.clone()) {
                self.repeated.push((person.user_id, post.clone()));
            }
            let reaction = if liked {
                Reaction::Like
            } else {
                Reaction::Dislike
            };
            votes.push(Vote::new(person.user_id, post, reaction, Utc::now()));
        }
        self.sent_before.extend(votes.iter().map(Vote::post));
        self.votes_sent += votes.len() as u64;
        self.frontend
            .vote(votes, concurrency, timeout, on_answer)
            .await?;
        Ok(report)
    }

    /// The votes pressed that the store lacks, as `(person, post)`: a person votes on every post
    /// they are sent, so these are the posts sent that have no stored vote.
    pub async fn votes_not_stored(&self) -> anyhow::Result<Vec<(UserId, PostRef)>> {
        let mut stored: HashSet<(i64, String, i64)> = HashSet::new();
        let mut votes = self
            .store
            .collections()
            .votes
            .find(doc! {"user_id": {"$gte": self.settings.first_user}})
            .await?;
        while let Some(vote) = votes.try_next().await? {
            stored.insert((vote.user_id, vote.channel, vote.post_id));
        }
        let mut missing = Vec::new();
        for (person, received) in self.people.iter().zip(&self.received) {
            for post in received {
                let key = (
                    person.user_id.get(),
                    post.channel.to_string(),
                    post.post_id.get(),
                );
                if !stored.contains(&key) {
                    missing.push((person.user_id, post.clone()));
                }
            }
        }
        Ok(missing)
    }

    /// Waits until the store holds every vote sent (ingest stores each exactly once).
    pub async fn wait_until_stored(&self, within: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let stored = self
                .store
                .collections()
                .votes
                .count_documents(doc! {"user_id": {"$gte": self.settings.first_user}})
                .await?;
            if stored >= self.votes_sent || tokio::time::Instant::now() >= deadline {
                return Ok(stored);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How far `rate` lies from `random` toward `best` (0 where there is no gap between them).
fn share_between(rate: f64, random: f64, best: f64) -> f64 {
    let gap = best - random;
    if gap <= 0.0 {
        0.0
    } else {
        (rate - random) / gap
    }
}

/// The posts a person has not been sent.
fn unseen<'a, 'b>(
    posts: &'a HashMap<PostRef, PostTraits>,
    received: &'b HashSet<PostRef>,
) -> impl Iterator<Item = &'a PostTraits> + use<'a, 'b> {
    posts.values().filter(|p| !received.contains(&p.post))
}

/// For a person and the posts they have not been sent: the mean P(like) (what a random pick
/// expects), the variance of a random pick's vote, and the best P(like).
fn baselines(
    person: &Person,
    posts: &HashMap<PostRef, PostTraits>,
    received: &HashSet<PostRef>,
) -> (f64, f64, f64) {
    let probabilities: Vec<f64> = unseen(posts, received)
        .map(|traits| person.like_probability(traits))
        .collect();
    if probabilities.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mean = probabilities.iter().sum::<f64>() / probabilities.len() as f64;
    let best = probabilities.iter().copied().fold(0.0, f64::max);
    (mean, mean * (1.0 - mean), best)
}

/// The stored posts as the people see them (with the hidden topic and quality of a generated
/// world's posts).
pub async fn load_posts(
    store: &Store,
    world: Option<&World>,
) -> anyhow::Result<HashMap<PostRef, PostTraits>> {
    let documents: Vec<_> = store
        .collections()
        .posts
        .clone_with_type::<mongodb::bson::Document>()
        .find(doc! {})
        .await?
        .try_collect()
        .await?;
    Ok(documents
        .iter()
        .filter_map(PostTraits::from_document)
        .map(|mut p| {
            p.hidden = world.and_then(|w| w.hidden(&p.post));
            (p.post.clone(), p)
        })
        .collect())
}

/// Follows model-published notices into a watch (the newest version seen).
fn follow_models(bus: Bus) -> watch::Receiver<Option<ModelVersion>> {
    let (sender, receiver) = watch::channel(None);
    tokio::spawn(async move {
        let max_bytes = bus.settings().max_message_bytes;
        let source = Source::PerReplica(vec!["model.published"]);
        consume(bus, source, max_bytes, |notice: ModelPublished| {
            sender.send_modify(|newest| *newest = (*newest).max(Some(notice.version)));
            std::future::ready(Outcome::Done)
        })
        .await;
    });
    receiver
}

/// The summary table: per round, the like rate of what was recommended against random order
/// and the best possible pick.
pub fn table(reports: &[RoundReport]) -> String {
    let mut out = String::from(
        "| round | model | cold start | votes | 👍 rate (votes) | P(👍) recommended | P(👍) random order | P(👍) best possible | P(👍) informed learner | P(👍) informed learner on its own | fresh picks | P(👍) fresh picks |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} % | {} |\n",
            r.round,
            r.model_version.map_or("–".into(), |v| v.to_string()),
            r.cold_starts,
            r.votes,
            r.like_rate(),
            r.recommended_rate(),
            r.random_rate(),
            r.best_rate(),
            r.informed_rate(),
            r.informed_alone_rate(),
            100.0 * r.fresh_share(),
            r.fresh_rate()
                .map_or("–".into(), |rate| format!("{rate:.3}")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_rounds_add_up_and_z_measures_lift_over_random() {
        let round = |likes, random| RoundReport {
            votes: 100,
            likes,
            random,
            random_variance: random * (1.0 - random / 100.0),
            ..Default::default()
        };
        let total = RoundReport::combined(&[round(60, 40.0), round(70, 40.0)]);
        assert_eq!(total.votes, 200);
        assert_eq!(total.likes, 130);
        assert!((total.like_rate() - 0.65).abs() < 1e-12);
        assert!((total.random_rate() - 0.4).abs() < 1e-12);
        // 130 likes where 80 were expected, with variance 2 · 40 · 0.6 = 48.
        assert!((total.z_over_random() - 50.0 / 48f64.sqrt()).abs() < 1e-9);
        assert_eq!(round(40, 40.0).z_over_random(), 0.0);
    }

    #[test]
    fn the_informed_learner_on_its_own_is_measured_against_its_own_baselines() {
        let round = |informed_alone, random_alone, best_alone| RoundReport {
            votes: 10,
            // OLEG's baselines, which its share must not use.
            random: 1.0,
            best: 9.0,
            informed_alone,
            random_alone,
            best_alone,
            ..Default::default()
        };
        let total = RoundReport::combined(&[round(6.0, 4.0, 8.0), round(7.0, 5.0, 9.0)]);
        assert!((total.informed_alone_rate() - 0.65).abs() < 1e-12);
        // (0.65 − 0.45) / (0.85 − 0.45)
        assert!((total.informed_alone_share() - 0.5).abs() < 1e-12);
        assert_eq!(round(3.0, 4.0, 4.0).informed_alone_share(), 0.0);
    }

    #[test]
    fn fresh_picks_and_quality_add_up_over_rounds() {
        let round = |fresh, fresh_recommended, quality_recommended| RoundReport {
            votes: 10,
            fresh,
            fresh_recommended,
            quality_recommended,
            quality_informed: 5.0,
            ..Default::default()
        };
        let total = RoundReport::combined(&[round(4, 2.0, 1.0), round(0, 0.0, 3.0)]);
        assert!((total.fresh_share() - 0.2).abs() < 1e-12);
        assert_eq!(total.fresh_rate(), Some(0.5));
        assert_eq!(total.mean_quality(), (0.2, 0.5));
        assert_eq!(round(0, 0.0, 0.0).fresh_rate(), None);
    }
}
