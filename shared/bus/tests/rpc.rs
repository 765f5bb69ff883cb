//! The RPC client against the real RabbitMQ: replies reach a live reply path; a reply to a path
//! that is gone comes back to the server as unroutable (not so with direct reply-to); calls go on after the
//! broker closes every connection, with the reply path's readiness following it; a request
//! nobody took before its caller's timeout is expired, not answered.

use oleg_bus::{
    Bus, Outcome, QueueName, ReplyMode, Routed, RpcClient, RpcError, Source, Subscription,
};
use oleg_messages::*;
use oleg_settings::AmqpSettings;
use oleg_telemetry::{Component, Readiness};
use oleg_testkit::{
    amqp_settings, close_connections_named, close_deployment_connections, delete_topology,
    wait_until,
};
use prometheus::Registry;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A client bus and a server bus (separate connections, so each can be closed alone).
struct Pair {
    settings: AmqpSettings,
    client: Bus,
    client_name: String,
    client_readiness: Readiness,
    server: Bus,
    shutdown: CancellationToken,
}

impl Pair {
    async fn new(test: &str) -> Self {
        let settings = amqp_settings(test);
        let shutdown = CancellationToken::new();
        let connect = |name: String, readiness: Readiness| {
            let (settings, shutdown) = (settings.clone(), shutdown.clone());
            async move {
                Bus::connect(settings, &name, &Registry::new(), readiness, shutdown)
                    .await
                    .expect("broker reachable (deploy/dev/setup.sh starts it)")
            }
        };
        let client_name = "rpc-client".to_owned();
        let client_readiness = Readiness::new(&[Component::Broker, Component::ReplyPath]);
        Self {
            client: connect(client_name.clone(), client_readiness.clone()).await,
            server: connect("rpc-server".to_owned(), Readiness::default()).await,
            settings,
            client_name,
            client_readiness,
            shutdown,
        }
    }

    /// Answers every request with an empty reply for its user, after `delay`, and reports where
    /// each reply went.
    fn serve(&self, delay: Duration) -> mpsc::UnboundedReceiver<Routed> {
        let (report, routed) = mpsc::unbounded_channel();
        let bus = self.server.clone();
        tokio::spawn(async move {
            let mut requests = Subscription::new(bus.clone(), Source::Shared(QueueName::Recommend));
            while let Some(incoming) = requests.next().await {
                if incoming.expired() {
                    incoming.ack().await.unwrap();
                    continue;
                }
                let request: RecommendRequest = decode(&incoming.body, 1 << 16).unwrap();
                tokio::time::sleep(delay).await;
                let reply = RecommendReply::Ok {
                    schema_version: SCHEMA_VERSION,
                    user_id: request.user_id,
                    posts: vec![],
                    model_version: None,
                    cold_start: true,
                    exploration_noise: 0.0,
                    exploration: oleg_messages::ExplorationPolicy::Noise,
                };
                let (to, id) = (
                    incoming.reply_to().unwrap(),
                    incoming.correlation_id().unwrap(),
                );
                match bus.reply(&to, &id, &reply).await {
                    Ok(outcome) => {
                        let _ = report.send(outcome);
                        let _ = incoming.ack().await;
                    }
                    Err(error) => {
                        incoming
                            .settle(Outcome::failed(&error, error.is_transient()))
                            .await;
                    }
                }
            }
        });
        routed
    }

    async fn finish(self) {
        self.shutdown.cancel();
        self.client.close().await;
        self.server.close().await;
        delete_topology(&self.settings).await;
    }
}

async fn ask(rpc: &RpcClient, user: i64, timeout: Duration) -> Result<RecommendReply, RpcError> {
    let request = RecommendRequest::new(UserId::new(user).unwrap(), 1);
    let body = rpc.call(QueueName::Recommend, &request, timeout).await?;
    Ok(decode(&body, 1 << 20).unwrap())
}

#[tokio::test]
async fn a_reply_to_a_lost_path_comes_back_unroutable() {
    let pair = Pair::new("rpc-lost").await;
    let mut routed = pair.serve(Duration::from_millis(1500));
    let rpc = RpcClient::with_mode(&pair.client, ReplyMode::Queue)
        .await
        .unwrap();

    // A live path: the reply is routed to it.
    let answered = ask(&rpc, 1, Duration::from_secs(10)).await.unwrap();
    assert!(matches!(answered, RecommendReply::Ok { .. }));
    assert_eq!(routed.recv().await, Some(Routed::Queued));

    // The client's connection dies while the server works on a request: the reply finds no
    // path and the server learns so; the call itself was sent again on the new path.
    let call = tokio::spawn({
        let rpc = rpc.clone();
        async move { ask(&rpc, 2, Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        close_connections_named(&pair.client_name, &pair.settings.prefix),
        1
    );
    let outcomes = [routed.recv().await, routed.recv().await];
    assert!(
        outcomes.contains(&Some(Routed::NoQueue)) && outcomes.contains(&Some(Routed::Queued)),
        "one reply went to the lost path, one to the new: {outcomes:?}"
    );
    assert!(call.await.unwrap().is_ok(), "the call was not sent again");
    pair.finish().await;
}

/// Why `queue` is the default: RabbitMQ treats a direct reply-to address as "not a queue", so a
/// `mandatory` reply comes back as unroutable even when it reached its caller, and the server
/// cannot tell a lost reply from a delivered one.
#[tokio::test]
async fn a_direct_reply_is_reported_unroutable_even_when_it_arrives() {
    let pair = Pair::new("rpc-direct").await;
    let mut routed = pair.serve(Duration::ZERO);
    let rpc = RpcClient::with_mode(&pair.client, ReplyMode::Direct)
        .await
        .unwrap();
    assert!(ask(&rpc, 1, Duration::from_secs(10)).await.is_ok());
    assert_eq!(routed.recv().await, Some(Routed::NoQueue));
    pair.finish().await;
}

#[tokio::test]
async fn calls_go_on_after_the_broker_closes_every_connection() {
    let pair = Pair::new("rpc-close-all").await;
    let _routed = pair.serve(Duration::from_millis(20));
    let rpc = RpcClient::new(&pair.client).await.unwrap();
    assert!(pair.client_readiness.is_ready());

    // Callers keep asking while both sides lose their connections.
    let stop = CancellationToken::new();
    let mut callers = Vec::new();
    for user in 1..=8 {
        let (rpc, stop) = (rpc.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.is_cancelled() {
                match ask(&rpc, user, Duration::from_secs(5)).await {
                    Ok(_) => ok += 1,
                    Err(error) => failed.push(error.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(close_deployment_connections(&pair.settings.prefix), 2);
    // The reply path is reported down, then up again within a few seconds.
    wait_until(
        Duration::from_secs(10),
        async || rpc.is_connected() && pair.client_readiness.is_ready(),
        || "the reply path did not come back".to_owned(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    for caller in callers {
        let (ok, failed) = caller.await.unwrap();
        assert!(ok >= 3, "a caller got only {ok} replies");
        assert!(failed.is_empty(), "calls failed: {failed:?}");
    }
    pair.finish().await;
}

#[tokio::test]
async fn a_request_nobody_took_in_time_expires_unanswered() {
    let pair = Pair::new("rpc-expired").await;
    let rpc = RpcClient::new(&pair.client).await.unwrap();
    let timeout = Duration::from_millis(300);
    assert!(matches!(
        ask(&rpc, 1, timeout).await,
        Err(RpcError::Timeout(t)) if t == timeout
    ));
    // The server starts late: the stale request is not answered.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut routed = pair.serve(Duration::ZERO);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), routed.recv())
            .await
            .is_err(),
        "an expired request was answered"
    );
    assert!(ask(&rpc, 2, Duration::from_secs(5)).await.is_ok());
    assert_eq!(routed.recv().await, Some(Routed::Queued));
    pair.finish().await;
}
