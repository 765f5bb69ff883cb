//! A stand-in for the ranker's recommendation RPC, for tests and benchmarks of a frontend: person
//! p gets `campcode/101`, `/102`, … in turn, never one twice, each after a set delay (requests
//! are answered concurrently). Like the ranker, it takes back the post of a reply the broker
//! returns as unroutable (its requester's reply path was gone), and it counts what it handed out.
//! It can be told to refuse requests (`unavailable`, as a ranker whose store is away).

use oleg_bus::{Bus, QueueName, Routed, Source, Subscription};
use oleg_messages::{
    decode, ChannelName, PostId, RecommendErrorCode, RecommendReply, RecommendRequest,
    RecommendedPost, SCHEMA_VERSION,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct StandInRanker {
    /// Per person: the posts whose reply reached its requester.
    pub delivered: Arc<Mutex<HashMap<i64, Vec<i64>>>>,
    /// Posts taken back because their reply found no reply path.
    pub released: Arc<Mutex<Vec<(i64, i64)>>>,
    requests: Arc<Mutex<HashMap<i64, u32>>>,
    /// Per person: posts taken back, handed out again first.
    free: Arc<Mutex<HashMap<i64, Vec<i64>>>>,
    next: Arc<Mutex<HashMap<i64, i64>>>,
    /// How many of the next requests are refused.
    refusing: Arc<AtomicU32>,
}

impl StandInRanker {
    /// Answers the recommend queue of `bus`'s prefix until the bus shuts down.
    pub fn serve(bus: &Bus, delay: Duration) -> Self {
        let ranker = Self::default();
        let (bus, state) = (bus.clone(), ranker.clone());
        tokio::spawn(async move {
            let mut requests = Subscription::new(bus.clone(), Source::Shared(QueueName::Recommend));
            while let Some(incoming) = requests.next().await {
                let (bus, state) = (bus.clone(), state.clone());
                tokio::spawn(async move {
                    let request: RecommendRequest =
                        decode(&incoming.body, 1 << 16).expect("a valid request");
                    let person = request.user_id.get();
                    *state.requests.lock().unwrap().entry(person).or_default() += 1;
                    tokio::time::sleep(delay).await;
                    let (Some(to), Some(id)) = (incoming.reply_to(), incoming.correlation_id())
                    else {
                        let _ = incoming.ack().await;
                        return;
                    };
                    let refused = state
                        .refusing
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if refused {
                        let refusal = RecommendReply::error(
                            RecommendErrorCode::Unavailable,
                            "the stand-in ranker refuses",
                        );
                        let _ = bus.reply(&to, &id, &refusal).await;
                        let _ = incoming.ack().await;
                        return;
                    }
                    let post = state.take(person);
                    let reply = RecommendReply::Ok {
                        schema_version: SCHEMA_VERSION,
                        user_id: request.user_id,
                        posts: vec![RecommendedPost {
                            channel: ChannelName::parse("campcode").expect("a channel name"),
                            post_id: PostId::new(post).expect("a post id"),
                            score: 0.9,
                            explored: false,
                            text: Some(format!("Post {} with <tags> & ampersands", post - 100)),
                        }],
                        model_version: Some(
                            oleg_messages::ModelVersion::new(3).expect("a version"),
                        ),
                        cold_start: false,
                        exploration_noise: 0.05,
                        exploration: oleg_messages::ExplorationPolicy::Noise,
                    };
                    match bus.reply(&to, &id, &reply).await {
                        Ok(Routed::Queued) => {
                            let mut delivered = state.delivered.lock().unwrap();
                            delivered.entry(person).or_default().push(post);
                        }
                        Ok(Routed::NoQueue) | Err(_) => {
                            state.released.lock().unwrap().push((person, post));
                            let mut free = state.free.lock().unwrap();
                            free.entry(person).or_default().push(post);
                        }
                    }
                    let _ = incoming.ack().await;
                });
            }
        });
        ranker
    }

    /// Refuses the next `requests` requests.
    pub fn refuse_next(&self, requests: u32) {
        self.refusing.store(requests, Ordering::SeqCst);
    }

    /// How many requests came from `person`.
    pub fn requests_from(&self, person: i64) -> u32 {
        self.requests
            .lock()
            .unwrap()
            .get(&person)
            .copied()
            .unwrap_or(0)
    }

    fn take(&self, person: i64) -> i64 {
        if let Some(post) = self
            .free
            .lock()
            .unwrap()
            .get_mut(&person)
            .and_then(Vec::pop)
        {
            return post;
        }
        let mut next = self.next.lock().unwrap();
        let n = next.entry(person).or_insert(100);
        *n += 1;
        *n
    }
}
