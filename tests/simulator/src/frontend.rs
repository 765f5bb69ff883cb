//! How the simulated people reach OLEG. Through `oleg-bot` (the default): they talk to the bot
//! over a fake Telegram Bot API — `/start`, a post arrives with its 👍/👎 buttons, a press brings
//! the next post, now and then a `/send_new`. Or straight through the queues (`--frontend
//! queues`, a load generator for ingest and the ranker): they publish `user.started` and votes and
//! ask the ranker over RPC, as a bot would.

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use oleg_bus::{Bus, QueueName, RpcClient};
use oleg_messages::{
    decode, ChannelName, ModelVersion, PostId, PostRef, Reaction, RecommendReply, RecommendRequest,
    UserId, UserStarted, Vote,
};
use oleg_testkit::telegram::{Call, FakeTelegram};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Duration;

/// Which frontend the people use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FrontendKind {
    /// Through `oleg-bot` and a fake Telegram Bot API.
    Bot,
    /// Straight through the queues and the recommendation RPC.
    Queues,
}

/// What a person was shown to judge this round.
#[derive(Debug, Clone)]
pub enum Shown {
    Post {
        post: PostRef,
        /// The model that picked it, where the frontend learns it (the RPC reply).
        model_version: Option<ModelVersion>,
        cold_start: bool,
    },
    /// "Nothing new for you right now".
    Nothing,
    Failed(String),
}

pub enum Frontend {
    Queues { bus: Bus, rpc: RpcClient },
    Bot(Box<BotPeople>),
}

/// What the people using the bot have in hand.
pub struct BotPeople {
    telegram: FakeTelegram,
    /// Per person: the post waiting for their vote, and how many messages they have read.
    waiting: HashMap<i64, Call>,
    read: HashMap<i64, usize>,
    /// The share of people who ask for a post with `/send_new` in a round.
    send_new_share: f64,
    rng: StdRng,
    /// Posts asked for with `/send_new` and shown.
    sent_new: u64,
}

impl Frontend {
    pub async fn queues(bus: Bus) -> anyhow::Result<Self> {
        let rpc = RpcClient::new(&bus).await?;
        Ok(Self::Queues { bus, rpc })
    }

    pub fn bot(telegram: FakeTelegram, seed: u64) -> Self {
        Self::Bot(Box::new(BotPeople {
            telegram,
            waiting: HashMap::new(),
            read: HashMap::new(),
            send_new_share: 0.05,
            rng: StdRng::seed_from_u64(seed ^ 0xb07),
            sent_new: 0,
        }))
    }

    /// Posts shown because people asked with `/send_new`, on top of one per vote and the first.
    pub fn sent_new(&self) -> u64 {
        match self {
            Self::Bot(bot) => bot.sent_new,
            Self::Queues { .. } => 0,
        }
    }

    /// Every person starts; through the bot each then waits for their first post.
    pub async fn sign_up(
        &mut self,
        people: &[UserId],
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match self {
            Self::Queues { bus, .. } => {
                let now = Utc::now();
                let starts: Vec<UserStarted> =
                    people.iter().map(|p| UserStarted::new(*p, now)).collect();
                futures::stream::iter(&starts)
                    .map(|start| bus.publish(start))
                    .buffer_unordered(concurrency)
                    .try_collect::<Vec<_>>()
                    .await?;
            }
            Self::Bot(bot) => {
                let BotPeople {
                    telegram,
                    waiting,
                    read,
                    ..
                } = &mut **bot;
                for person in people {
                    telegram.send_text(person.get(), "/start");
                }
                // Onboarding first, then the post.
                let arrived = read_next(telegram, people, read, 2, concurrency, timeout).await;
                for (person, message) in people.iter().zip(arrived) {
                    wait_on(waiting, *person, message);
                }
            }
        }
        Ok(())
    }

    /// What each person judges this round: the ranker's pick (queues), or the post the bot
    /// sent them last — a few ask for a new one first with `/send_new`.
    pub async fn shown(
        &mut self,
        people: &[UserId],
        concurrency: usize,
        timeout: Duration,
        on_answer: &(dyn Fn() + Sync),
    ) -> Vec<Shown> {
        match self {
            Self::Queues { rpc, .. } => {
                let rpc = &*rpc;
                let mut answers: Vec<(usize, Shown)> =
                    futures::stream::iter(people.iter().enumerate())
                        .map(|(index, person)| async move {
                            let shown = recommend(rpc, *person, timeout).await;
                            on_answer();
                            (index, shown)
                        })
                        .buffer_unordered(concurrency)
                        .collect()
                        .await;
                answers.sort_by_key(|(index, _)| *index);
                answers.into_iter().map(|(_, shown)| shown).collect()
            }
            Self::Bot(bot) => {
                let BotPeople {
                    telegram,
                    waiting,
                    read,
                    send_new_share,
                    rng,
                    sent_new,
                } = &mut **bot;
                // People without a post (the last press brought none) ask again; some others too.
                let asking: Vec<UserId> = people
                    .iter()
                    .filter(|p| !waiting.contains_key(&p.get()) || rng.random_bool(*send_new_share))
                    .copied()
                    .collect();
                for person in &asking {
                    telegram.send_text(person.get(), "/send_new");
                }
                let arrived = read_next(telegram, &asking, read, 1, concurrency, timeout).await;
                for (person, message) in asking.iter().zip(arrived) {
                    if message.as_ref().is_some_and(|m| m.post_link().is_some()) {
                        *sent_new += 1;
                        wait_on(waiting, *person, message);
                    }
                }
                people
                    .iter()
                    .map(|person| match waiting.get(&person.get()) {
                        Some(message) => match post_of(message) {
                            Some(post) => Shown::Post {
                                post,
                                model_version: None,
                                cold_start: false,
                            },
                            None => Shown::Failed(format!("not a post link: {message:?}")),
                        },
                        None => Shown::Failed("no post arrived".into()),
                    })
                    .collect()
            }
        }
    }

    /// The people vote on what they were shown; through the bot each waits for what the press
    /// brings (their next post).
    pub async fn vote(
        &mut self,
        votes: Vec<Vote>,
        concurrency: usize,
        timeout: Duration,
        on_answer: &(dyn Fn() + Sync),
    ) -> anyhow::Result<()> {
        match self {
            Self::Queues { bus, .. } => {
                futures::stream::iter(&votes)
                    .map(|vote| bus.publish(vote))
                    .buffer_unordered(concurrency)
                    .try_collect::<Vec<_>>()
                    .await?;
            }
            Self::Bot(bot) => {
                let BotPeople {
                    telegram,
                    waiting,
                    read,
                    ..
                } = &mut **bot;
                let voters: Vec<UserId> = votes.iter().map(|v| v.user_id).collect();
                for vote in &votes {
                    let post = waiting
                        .remove(&vote.user_id.get())
                        .expect("a vote on a shown post");
                    let button = match vote.reaction {
                        Reaction::Like => 0,
                        Reaction::Dislike => 1,
                    };
                    telegram.press(vote.user_id.get(), &post, button);
                }
                let arrived = read_next(telegram, &voters, read, 1, concurrency, timeout).await;
                for (person, message) in voters.iter().zip(arrived) {
                    on_answer();
                    wait_on(waiting, *person, message);
                }
            }
        }
        Ok(())
    }
}

/// Asks the ranker for one post for `person`, as a bot does.
pub async fn recommend(rpc: &RpcClient, person: UserId, timeout: Duration) -> Shown {
    let request = RecommendRequest::new(person, 1);
    match rpc.call(QueueName::Recommend, &request, timeout).await {
        Ok(body) => match decode::<RecommendReply>(&body, 1 << 20) {
            Ok(reply) => from_reply(reply),
            Err(rejection) => Shown::Failed(rejection.detail),
        },
        Err(error) => Shown::Failed(error.to_string()),
    }
}

fn from_reply(reply: RecommendReply) -> Shown {
    match reply {
        RecommendReply::Ok {
            posts,
            model_version,
            cold_start,
            ..
        } => match posts.first() {
            Some(first) => Shown::Post {
                post: first.post(),
                model_version,
                cold_start,
            },
            None => Shown::Nothing,
        },
        RecommendReply::Error { error, .. } => Shown::Failed(format!("{error:?}")),
    }
}

/// The person's next post to vote on is `message`, if it is a post.
fn wait_on(waiting: &mut HashMap<i64, Call>, person: UserId, message: Option<Call>) {
    match message.filter(|m| m.post_link().is_some()) {
        Some(post) => waiting.insert(person.get(), post),
        None => waiting.remove(&person.get()),
    };
}

/// `https://t.me/<channel>/<id>` → the post.
fn post_of(message: &Call) -> Option<PostRef> {
    let link = message.post_link()?.strip_prefix("https://t.me/")?;
    let (channel, id) = link.split_once('/')?;
    Some(PostRef {
        channel: ChannelName::parse(channel).ok()?,
        post_id: PostId::new(id.parse().ok()?).ok()?,
    })
}

/// Waits for the `count`-th next message to each of `people` (their last one, `None` if it did
/// not come in time), moving their read marks past what arrived.
async fn read_next(
    telegram: &FakeTelegram,
    people: &[UserId],
    read: &mut HashMap<i64, usize>,
    count: usize,
    concurrency: usize,
    timeout: Duration,
) -> Vec<Option<Call>> {
    let marks: Vec<usize> = people
        .iter()
        .map(|p| read.get(&p.get()).copied().unwrap_or(0))
        .collect();
    let arrived: Vec<Option<Call>> = futures::stream::iter(people.iter().zip(marks))
        .map(|(person, mark)| async move {
            telegram
                .next_sent(person.get(), mark + count - 1, timeout)
                .await
        })
        .buffered(concurrency)
        .collect()
        .await;
    for person in people {
        let mark = read.entry(person.get()).or_default();
        *mark = telegram.sent_to(person.get()).len().max(*mark);
    }
    arrived
}
