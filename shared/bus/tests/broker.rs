//! The bus against the real RabbitMQ: confirmed round trip, dead-lettering after N failures with
//! the reason, and surviving a connection closed by the broker without losing a confirmed message.

use chrono::Utc;
use oleg_bus::{
    traced, Bus, Incoming, Outcome, QueueName, Routed, Source, Subscription, REASON_HEADER,
};
use oleg_messages::*;
use oleg_settings::AmqpSettings;
use oleg_telemetry::{Component, Readiness};
use oleg_testkit::stalling_proxy::StallingProxy;
use oleg_testkit::{
    amqp_address, amqp_settings, close_connections_named, delete_topology, queue_depth,
};
use prometheus::Registry;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Harness {
    settings: AmqpSettings,
    bus: Bus,
    registry: Registry,
    readiness: Readiness,
    shutdown: CancellationToken,
    name: String,
}

impl Harness {
    async fn new(test: &str) -> Self {
        Self::with_settings(amqp_settings(test)).await
    }

    async fn with_settings(settings: AmqpSettings) -> Self {
        let registry = Registry::new();
        let readiness = Readiness::new(&[Component::Broker]);
        let shutdown = CancellationToken::new();
        let name = settings.prefix.clone();
        let bus = Bus::connect(
            settings.clone(),
            &name,
            &registry,
            readiness.clone(),
            shutdown.clone(),
        )
        .await
        .expect("broker reachable (deploy/dev/setup.sh starts it)");
        Self {
            settings,
            bus,
            registry,
            readiness,
            shutdown,
            name,
        }
    }

    fn counter(&self, name: &str) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().value())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    async fn finish(self) {
        self.shutdown.cancel();
        self.bus.close().await;
        delete_topology(&self.settings).await;
    }
}

fn vote(user: i64, post: i64) -> Vote {
    Vote::new(
        UserId::new(user).unwrap(),
        PostRef {
            channel: ChannelName::parse("codecamp").unwrap(),
            post_id: PostId::new(post).unwrap(),
        },
        Reaction::Like,
        Utc::now(),
    )
}

/// The next envelope on the dead-letter queue.
async fn next_letter(dead: &mut Subscription) -> DeadLetter {
    decode(
        &next_within(dead, Duration::from_secs(10)).await.body,
        1 << 20,
    )
    .unwrap()
}

async fn next_within(subscription: &mut Subscription, limit: Duration) -> Incoming {
    tokio::time::timeout(limit, subscription.next())
        .await
        .expect("a delivery in time")
        .expect("not shut down")
}

#[tokio::test]
async fn publish_confirm_consume_ack_round_trip() {
    let h = Harness::new("bus-roundtrip").await;
    assert!(h.readiness.is_ready());
    let sent = vote(7, 2371);
    assert_eq!(h.bus.publish(&sent).await.unwrap(), Routed::Queued);

    let mut votes = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Ingest));
    let incoming = next_within(&mut votes, Duration::from_secs(10)).await;
    assert_eq!(incoming.routing_key, "vote.cast");
    assert_eq!(incoming.attempt(), 1);
    assert_eq!(incoming.properties.delivery_mode(), &Some(2), "persistent");
    let received: Vote = decode(&incoming.body, 16 * 1024).unwrap();
    assert_eq!(received, sent);
    incoming.ack().await.unwrap();

    // Acked: nothing is left or redelivered, even after the consumer's channel goes.
    drop(votes);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        queue_depth(&h.settings, &h.bus.topology().queue(QueueName::Ingest)).await,
        0
    );
    assert_eq!(h.counter("oleg_amqp_published_total"), 1.0);

    // A notice nobody is bound to is confirmed but reported as unrouted.
    let notice = ModelPublished {
        schema_version: SCHEMA_VERSION,
        version: ModelVersion::new(1).unwrap(),
        variant: "dot".into(),
        trained_on_votes: 1,
        holdout: HoldoutMetrics {
            auc: 0.5,
            mse: 0.25,
            log_loss: 0.69,
            votes: 1,
        },
        published_at: Utc::now(),
    };
    assert_eq!(h.bus.publish(&notice).await.unwrap(), Routed::NoQueue);
    h.finish().await;
}

#[tokio::test]
async fn a_message_failing_n_times_is_dead_lettered_with_its_reason() {
    let h = Harness::new("bus-deadletter").await;
    let sent = vote(8, 2372);
    h.bus.publish(&sent).await.unwrap();

    let mut votes = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Ingest));
    let max_attempts = h.settings.max_attempts;
    for attempt in 1..=max_attempts {
        let incoming = next_within(&mut votes, Duration::from_secs(10)).await;
        assert_eq!(incoming.attempt(), attempt);
        incoming
            .settle(Outcome::failed("store timed out", true))
            .await;
    }

    let mut dead = Subscription::new(h.bus.clone(), Source::Shared(QueueName::DeadLetters));
    let letter_delivery = next_within(&mut dead, Duration::from_secs(10)).await;
    let header = letter_delivery
        .properties
        .headers()
        .as_ref()
        .unwrap()
        .inner()[REASON_HEADER]
        .clone();
    assert_eq!(
        header.as_long_string().unwrap().to_string(),
        "retries_exhausted"
    );
    let letter: DeadLetter = decode(&letter_delivery.body, 1 << 20).unwrap();
    assert_eq!(letter.reason, DeadLetterReason::RetriesExhausted);
    assert_eq!(letter.attempts, max_attempts);
    assert!(
        letter.detail.contains("store timed out"),
        "{}",
        letter.detail
    );
    assert_eq!(letter.queue, h.bus.topology().queue(QueueName::Ingest));
    assert_eq!(
        decode::<Vote>(&letter.payload.to_bytes().unwrap(), 1 << 20).unwrap(),
        sent
    );
    letter_delivery.ack().await.unwrap();

    // Nothing loops: the original is gone from its queue.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), votes.next())
            .await
            .is_err()
    );

    // A refusal dead-letters at once with the refusal's own reason.
    h.bus.publish(&vote(9, 1)).await.unwrap();
    let refused = next_within(&mut votes, Duration::from_secs(10)).await;
    refused
        .settle(Outcome::Refused(Rejection::new(
            DeadLetterReason::UnknownPost,
            "codecamp/1 is not stored",
        )))
        .await;
    let letter = next_letter(&mut dead).await;
    assert_eq!(
        (letter.reason, letter.attempts),
        (DeadLetterReason::UnknownPost, 1)
    );

    // A permanent failure (the input is at fault) is tried again too, then dead-lettered as
    // store_refused.
    h.bus.publish(&vote(10, 2)).await.unwrap();
    for _ in 1..=max_attempts {
        let incoming = next_within(&mut votes, Duration::from_secs(10)).await;
        incoming
            .settle(Outcome::failed("type mismatch", false))
            .await;
    }
    let letter = next_letter(&mut dead).await;
    assert_eq!(
        (letter.reason, letter.attempts),
        (DeadLetterReason::StoreRefused, max_attempts)
    );
    assert_eq!(h.counter("oleg_amqp_dead_lettered_total"), 3.0);
    h.finish().await;
}

#[tokio::test]
async fn survives_the_broker_closing_its_connection_without_losing_confirmed_messages() {
    let h = Harness::new("bus-reconnect").await;
    const TOTAL: i64 = 300;
    let publisher = {
        let bus = h.bus.clone();
        tokio::spawn(async move {
            for post in 1..=TOTAL {
                bus.publish(&vote(1, post))
                    .await
                    .expect("confirmed despite the lost connection");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut votes = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Ingest));
    let mut seen = BTreeSet::new();
    let mut closed = false;
    while seen.len() < TOTAL as usize {
        let incoming = next_within(&mut votes, Duration::from_secs(30)).await;
        let received: Vote = decode(&incoming.body, 16 * 1024).unwrap();
        // Acks on a channel that the broker closed fail; the message comes back and is seen again.
        let _ = incoming.ack().await;
        seen.insert(received.post_id.get());
        if !closed && seen.len() == 100 {
            assert!(
                close_connections_named(&h.name, &h.settings.prefix) >= 1,
                "the bus's connection was found on the broker"
            );
            closed = true;
        }
    }
    publisher.await.unwrap();
    assert_eq!(seen, (1..=TOTAL).collect::<BTreeSet<_>>());
    assert!(h.counter("oleg_amqp_reconnects_total") >= 1.0);
    assert!(h.readiness.is_ready(), "ready again after reconnecting");
    h.finish().await;
}

#[tokio::test]
async fn shutdown_ends_the_subscription() {
    let h = Harness::new("bus-shutdown").await;
    let mut votes = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Ingest));
    let stopper = h.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopper.cancel();
    });
    assert!(tokio::time::timeout(Duration::from_secs(5), votes.next())
        .await
        .unwrap()
        .is_none());
    h.finish().await;
}

/// A caller may give up waiting (a timeout, a `select!` whose other branch won) while the
/// subscription is still starting; whatever it had set up must not keep messages from the next
/// call. The trainer's loop does this every second while it starts consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_on_a_subscription_that_is_starting_loses_no_message() {
    let h = Harness::new("bus-cancel").await;
    let mut votes = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Ingest));
    // Cut short after a few polls with a pause between them, so that the cuts fall at every
    // step of opening a channel, setting prefetch and asking to consume.
    for polls in 1..=4 {
        for pause_us in [0, 50, 100, 200, 400, 800, 1_600] {
            let mut next = std::pin::pin!(votes.next());
            for _ in 0..polls {
                let poll = futures::poll!(next.as_mut());
                assert!(poll.is_pending(), "nothing was published yet");
                let pause = Duration::from_micros(pause_us);
                tokio::task::spawn_blocking(move || std::thread::sleep(pause))
                    .await
                    .unwrap();
            }
        }
    }
    let sent = vote(7, 2372);
    assert_eq!(h.bus.publish(&sent).await.unwrap(), Routed::Queued);
    let incoming = next_within(&mut votes, Duration::from_secs(5)).await;
    assert_eq!(decode::<Vote>(&incoming.body, 16 * 1024).unwrap(), sent);
    incoming.ack().await.unwrap();
    h.finish().await;
}

/// A trace id travels with every message: set by the work that publishes it, kept by what the
/// consumer of it publishes in turn, new where no work is traced.
#[tokio::test]
async fn a_trace_follows_a_message_to_what_its_handling_publishes() {
    let h = Harness::new("bus-trace").await;
    let mut votes = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Ingest));
    let mut notices = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Trainer));
    traced("a-person-pressed".into(), h.bus.publish(&vote(1, 1)))
        .await
        .unwrap();
    let incoming = next_within(&mut votes, Duration::from_secs(10)).await;
    assert_eq!(incoming.trace_id(), "a-person-pressed");
    let notice = VotesIngested {
        schema_version: SCHEMA_VERSION,
        new_votes: 1,
        changed_votes: 0,
        duplicate_votes: 0,
        ingested_through: Utc::now(),
    };
    traced(incoming.trace_id(), h.bus.publish(&notice))
        .await
        .unwrap();
    incoming.ack().await.unwrap();
    let announced = next_within(&mut notices, Duration::from_secs(10)).await;
    assert_eq!(announced.trace_id(), "a-person-pressed");
    assert!(announced.properties.message_id().is_some());
    announced.ack().await.unwrap();
    // Untraced work gets a trace of its own.
    h.bus.publish(&vote(2, 1)).await.unwrap();
    let fresh = next_within(&mut votes, Duration::from_secs(10)).await;
    assert_eq!(fresh.trace_id().len(), 32);
    fresh.ack().await.unwrap();
    h.finish().await;
}

/// `amqp.uri` listing a cluster's nodes: a node that does not answer is passed over at once.
#[tokio::test]
async fn a_node_that_does_not_answer_is_passed_over() {
    let mut settings = amqp_settings("bus-nodes");
    let dead = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        oleg_testkit::free_port()
    );
    let live = oleg_testkit::amqp_uri();
    settings.uri = format!("{dead}, {live}").into();
    assert_eq!(settings.node_uris(), [dead.as_str(), live.as_str()]);
    assert!(!settings.redacted_uri().contains("guest:guest"));
    let h = tokio::time::timeout(Duration::from_secs(10), Harness::with_settings(settings))
        .await
        .expect("connected without waiting on the dead node");
    assert_eq!(h.bus.publish(&vote(1, 1)).await.unwrap(), Routed::Queued);
    h.finish().await;
}

/// A bus connected through a proxy that can make the broker fall silent, waiting at most half a
/// second for the broker's answers.
async fn behind_a_stalling_proxy(test: &str) -> (StallingProxy, Harness) {
    let proxy = StallingProxy::start(amqp_address()).await;
    let mut settings = amqp_settings(test);
    settings.uri = proxy.amqp_uri().into();
    settings.confirm_timeout_ms = 500;
    (proxy, Harness::with_settings(settings).await)
}

/// A publish that must open its channel (the first one, or the first after a lost channel) on a
/// broker that has fallen silent gives up within `amqp.confirm_timeout_ms`, as one on an open
/// channel does; once the broker answers again, publishing goes on.
#[tokio::test]
async fn a_publish_to_a_silent_broker_gives_up_within_the_confirm_timeout() {
    let (proxy, h) = behind_a_stalling_proxy("bus-silent-publish").await;
    proxy.stall();
    let published = tokio::time::timeout(Duration::from_secs(10), h.bus.publish(&vote(1, 1)))
        .await
        .expect("the publish waited on the silent broker past its confirm timeout");
    assert!(
        matches!(published, Err(oleg_bus::BusError::ConfirmTimeout(_))),
        "{published:?}"
    );
    proxy.resume();
    assert_eq!(h.bus.publish(&vote(1, 2)).await.unwrap(), Routed::Queued);
    h.finish().await;
}

/// A subscription still starting when the worker stops, on a broker that has fallen silent (its
/// channel asked for, never answered), does not keep the worker from stopping either.
#[tokio::test]
async fn a_subscription_starting_on_a_silent_broker_does_not_keep_a_worker_from_stopping() {
    let (proxy, h) = behind_a_stalling_proxy("bus-silent-start").await;
    proxy.stall();
    let mut votes = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Ingest));
    let consuming = tokio::spawn(async move { votes.next().await.is_none() });
    // Long enough for its start to be waiting on the broker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_while_silent(proxy, h, async { consuming.await.unwrap() }).await;
}

/// A broker that falls silent while a worker stops (a node hanging, a network path dropped)
/// does not keep the worker from stopping: each call made while stopping (cancelling the
/// consumer, closing channels and the connection) waits at most `amqp.confirm_timeout_ms`.
#[tokio::test]
async fn a_broker_that_falls_silent_does_not_keep_a_worker_from_stopping() {
    let (proxy, h) = behind_a_stalling_proxy("bus-silent").await;
    let mut votes = Subscription::new(h.bus.clone(), Source::Shared(QueueName::Ingest));
    h.bus.publish(&vote(1, 1)).await.unwrap();
    let incoming = next_within(&mut votes, Duration::from_secs(10)).await;
    incoming.ack().await.unwrap();
    proxy.stall();
    stop_while_silent(proxy, h, async { votes.next().await.is_none() }).await;
}

/// Stops the worker `h` stands for while its broker is silent: its subscription comes to its end
/// (`ended`, which says whether it ended with no delivery), then the bus closes, within ten
/// seconds; then the broker answers again.
async fn stop_while_silent(
    proxy: StallingProxy,
    h: Harness,
    ended: impl std::future::Future<Output = bool>,
) {
    h.shutdown.cancel();
    let stopping = async {
        assert!(ended.await, "a delivery from a silent broker");
        h.bus.close().await;
    };
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stopped though the broker no longer answers");
    proxy.resume();
    delete_topology(&h.settings).await;
}
