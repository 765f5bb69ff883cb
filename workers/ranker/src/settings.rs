use crate::ranking::{Exploration, TasteSpread};
use oleg_messages::ExplorationPolicy;
use oleg_settings::{AmqpSettings, Check, LogSettings, MongoSettings, Validate};
use oleg_store::PersonHistory;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct RankerConfig {
    pub log: LogSettings,
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    pub ranker: RankerSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankerSettings {
    pub metrics_addr: String,
    /// Posts published in the last this many days are candidates.
    pub candidate_days: u32,
    /// Most posts one request may ask for.
    pub max_count: u32,
    /// How replies explore: `noise` (Gaussian noise of `exploration_noise` on every score),
    /// `thompson` (a draw per post from the person's posterior like rate) or `posterior_mean`
    /// (that posterior's mean).
    pub exploration: ExplorationPolicy,
    /// Standard deviation of the Gaussian noise added to every score (0: none), for `noise`.
    pub exploration_noise: f64,
    /// For `thompson` and `posterior_mean`: how many of a person's own votes on a channel
    /// everyone's like rate counts for while the model does not know them, and the model's
    /// estimate counts for in a voter's expectation (against which posts' effects are learned).
    pub prior_votes: f64,
    /// For `thompson` and `posterior_mean`, once the model knows a person: how far (a standard
    /// deviation in logits) their liking for a channel is expected to depart from the model's
    /// estimates. Their votes on the channel, each read against what the model expected of its
    /// post, fit the offset.
    pub channel_sd: f64,
    /// For `thompson` and `posterior_mean`: how far (a standard deviation in logits) posts' own
    /// appeal is expected to differ beyond what the model knows. Each post's logit is shifted by
    /// how its votes departed from what was expected of each voter, shrunk by this prior: a
    /// post's quality learned from the votes it got since the serving model was trained; its
    /// views are applied on the same scale (`Calibration::views_weight`). 0: off (views as the
    /// calibration reads them).
    pub post_effect_sd: f64,
    /// For `thompson` and `posterior_mean`: how far (a standard deviation in logits, per feature)
    /// a person's taste for posts' form (media, length, links, forwarding) is expected to differ
    /// beyond what is expected of them. Their votes on candidates, against what the ranker
    /// expects of each, shift posts of the same form. 0: off.
    pub taste_sd: f64,
    /// The same for what posts' texts say (their words, which share a norm of 1 a post): their
    /// votes shift posts with the same words. 0: off.
    pub taste_text_sd: f64,
    /// The same for posts' broad form (any media, text past a paragraph, any link, forwarded;
    /// each flag weighs 1): a vote on a photo post moves video posts too. 0: off.
    pub taste_broad_sd: f64,
    /// The same for what posts are about: their mix of subjects, from a topic model of the
    /// candidates' texts; a vote on a post moves posts on its subject whatever their words.
    /// 0: off.
    pub taste_subject_sd: f64,
    /// For `posterior_mean`: until a person has cast this many votes (in the candidate window),
    /// their replies are ordered by Thompson draws instead once the model knows them, so that
    /// their first votes teach the ranker more than the channels it already favours for them.
    /// 0: never.
    pub explore_votes: u32,
    /// Those draws come from the person's posterior with its counts multiplied by this: the same
    /// mean, a narrower spread (1: the posterior itself, as the `thompson` policy draws).
    pub explore_concentration: f64,
    /// Thompson draws (both policies') draw the person's taste over kinds of post too, once per
    /// reply for all its posts, so that posts of one kind rise or sink together; else each post
    /// is drawn around the taste's mean.
    pub explore_taste: bool,
    /// Share of each reply's posts taken from channels the person has not tried yet.
    pub fresh_share: f64,
    /// Candidates and popularity are reloaded from the store this often; in between, notices
    /// (posts scraped, votes cast) keep them current.
    pub refresh_s: u64,
    /// People whose history (posts seen, likes per channel) a replica holds between requests.
    pub people_cache: usize,
    /// A held history is read from the store again after this long (it misses what other
    /// replicas sent meanwhile).
    pub people_ttl_s: u64,
    /// How often the store is asked for a newer model, in case a notice was missed.
    pub model_check_s: u64,
    /// Weight of the prior in the smoothed like rates of the cold-start ranking.
    pub prior_strength: f64,
    pub max_message_bytes: usize,
    /// Requests handled at once by one replica.
    pub concurrency: usize,
}

impl RankerSettings {
    /// How a reply of `count` posts to a person with `history` explores, as these settings say.
    pub fn exploration<'a>(&self, history: &'a PersonHistory, count: usize) -> Exploration<'a> {
        Exploration {
            policy: self.exploration,
            noise: self.exploration_noise,
            prior_votes: self.prior_votes,
            channel_sd: self.channel_sd,
            post_effect_sd: self.post_effect_sd,
            taste: TasteSpread {
                form: self.taste_sd,
                text: self.taste_text_sd,
                broad: self.taste_broad_sd,
                subject: self.taste_subject_sd,
            },
            explore_votes: self.explore_votes as usize,
            explore_concentration: self.explore_concentration,
            explore_taste: self.explore_taste,
            fresh_slots: (count as f64 * self.fresh_share).round() as usize,
            history,
        }
    }
}

impl Validate for RankerConfig {
    fn validate(&self, _: &str, check: &mut Check) {
        self.log.validate("log", check);
        self.amqp.validate("amqp", check);
        self.mongo.validate("mongo", check);
        let s = &self.ranker;
        check.socket_addr("ranker.metrics_addr".into(), &s.metrics_addr);
        check.in_range("ranker.candidate_days".into(), s.candidate_days, 1, 3650);
        check.in_range("ranker.max_count".into(), s.max_count, 1, 1000);
        check.in_range(
            "ranker.exploration_noise".into(),
            s.exploration_noise,
            0.0,
            10.0,
        );
        check.in_range("ranker.prior_votes".into(), s.prior_votes, 0.1, 1000.0);
        check.in_range("ranker.channel_sd".into(), s.channel_sd, 0.05, 10.0);
        check.in_range("ranker.post_effect_sd".into(), s.post_effect_sd, 0.0, 5.0);
        check.in_range("ranker.taste_sd".into(), s.taste_sd, 0.0, 5.0);
        check.in_range("ranker.taste_text_sd".into(), s.taste_text_sd, 0.0, 5.0);
        check.in_range("ranker.taste_broad_sd".into(), s.taste_broad_sd, 0.0, 5.0);
        check.in_range(
            "ranker.taste_subject_sd".into(),
            s.taste_subject_sd,
            0.0,
            5.0,
        );
        check.in_range("ranker.explore_votes".into(), s.explore_votes, 0, 10_000);
        check.in_range(
            "ranker.explore_concentration".into(),
            s.explore_concentration,
            1.0,
            1000.0,
        );
        check.in_range("ranker.fresh_share".into(), s.fresh_share, 0.0, 1.0);
        check.in_range("ranker.refresh_s".into(), s.refresh_s, 1, 86_400);
        check.in_range("ranker.people_cache".into(), s.people_cache, 1, 100_000_000);
        check.in_range("ranker.people_ttl_s".into(), s.people_ttl_s, 1, 86_400);
        check.in_range("ranker.model_check_s".into(), s.model_check_s, 1, 86_400);
        check.in_range("ranker.prior_strength".into(), s.prior_strength, 0.0, 1e6);
        check.in_range(
            "ranker.max_message_bytes".into(),
            s.max_message_bytes,
            256,
            16 << 20,
        );
        check.in_range("ranker.concurrency".into(), s.concurrency, 1, 10_000);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use oleg_settings::Sources;

    pub(crate) fn shipped() -> RankerSettings {
        oleg_settings::load::<RankerConfig>(&Sources::repository())
            .expect("config/default.toml holds valid ranker settings")
            .ranker
    }

    #[test]
    fn a_replys_exploration_takes_each_setting_to_its_place() {
        let settings = RankerSettings {
            exploration_noise: 0.1,
            prior_votes: 3.0,
            channel_sd: 1.1,
            post_effect_sd: 0.6,
            taste_sd: 0.2,
            taste_text_sd: 0.3,
            taste_broad_sd: 0.4,
            taste_subject_sd: 0.7,
            explore_votes: 9,
            explore_concentration: 5.0,
            explore_taste: true,
            fresh_share: 0.25,
            ..shipped()
        };
        let history = PersonHistory::default();
        let exploration = settings.exploration(&history, 6);
        assert_eq!(exploration.policy, settings.exploration);
        assert_eq!(
            (
                exploration.noise,
                exploration.prior_votes,
                exploration.channel_sd,
                exploration.post_effect_sd
            ),
            (0.1, 3.0, 1.1, 0.6)
        );
        let taste = TasteSpread {
            form: 0.2,
            text: 0.3,
            broad: 0.4,
            subject: 0.7,
        };
        assert_eq!(exploration.taste, taste);
        assert_eq!(
            (
                exploration.explore_votes,
                exploration.explore_concentration,
                exploration.explore_taste
            ),
            (9, 5.0, true)
        );
        // A quarter of six posts: one and a half slots, rounded to two.
        assert_eq!(exploration.fresh_slots, 2);
        assert_eq!(settings.exploration(&history, 1).fresh_slots, 0);
    }
}
