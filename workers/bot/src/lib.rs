//! `oleg-bot`: OLEG's Telegram bot frontend. It shows each person one post at a time with 👍 / 👎
//! buttons, publishes their votes, asks the ranker for the next post, and sends digests at set
//! times. It speaks to the Telegram Bot API through teloxide and to the rest of OLEG only through
//! the queues and messages of `schemas/`; its own state is the `bot_chats` collection.

pub mod app;
pub mod callback;
pub mod chats;
pub mod command;
pub mod dispatch;
pub mod flood;
pub mod inbox;
pub mod metrics;
pub mod render;
pub mod serve;
pub mod settings;
pub mod stopwatch;
pub mod telegram;

pub use app::{BotApp, DigestSummary};
pub use settings::BotConfig;

use anyhow::Context;
use chats::Chats;
use inbox::Inbox;
use metrics::BotMetrics;
use oleg_bus::Bus;
use oleg_runtime::{Connections, Worker, WorkerContext};
use oleg_store::Store;
use oleg_telemetry::Component;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `oleg-bot`, built and ready to run. A stop ends the taking of updates; the connections live
/// on until those in flight are done (`bot.shutdown_grace_s`).
pub struct App {
    ctx: WorkerContext,
    app: Arc<BotApp>,
    bus: Bus,
    store: Store,
    stop_taking: CancellationToken,
    lifetime: CancellationToken,
}

impl Worker for App {
    type Config = BotConfig;
    const NAME: &'static str = "oleg-bot";
    const SECTION: &'static str = "bot";
    const LIST_KEYS: &'static [&'static str] = &["bot.admin_ids", "bot.digest_times"];

    async fn build(config: BotConfig, stop_taking: CancellationToken) -> anyhow::Result<Self> {
        let lifetime = CancellationToken::new();
        let ctx = WorkerContext::start(
            Self::NAME,
            &config.log,
            &config.bot.metrics_addr,
            &[Component::Broker, Component::Store, Component::ReplyPath],
            lifetime.clone(),
        )
        .await?;
        let metrics = BotMetrics::register(&ctx.registry)?;
        // Waiting for the services ends at a stop too.
        let connected = async {
            let store = ctx
                .connect_store(&config.mongo, Duration::from_secs(2))
                .await?;
            let bus = ctx.connect_bus(&config.amqp).await?;
            anyhow::Ok((store, bus))
        };
        let (store, bus) = tokio::select! {
            _ = stop_taking.cancelled() => {
                lifetime.cancel();
                anyhow::bail!("stopped before the services answered");
            }
            connected = connected => connected?,
        };
        // Long polls hold a request open for poll_timeout_s: the client waits longer than that.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(config.bot.poll_timeout_s + 20))
            .build()
            .context("the Bot API client")?;
        let api_url = reqwest::Url::parse(&config.bot.api_url).context("bot.api_url")?;
        let bot = teloxide_core::Bot::with_client(config.bot.token.expose_secret(), client)
            .set_api_url(api_url);
        let chats = Chats::new(store.database());
        let app = Arc::new(BotApp::new(bot, bus.clone(), chats, config.bot, metrics).await?);
        Ok(Self {
            ctx,
            app,
            bus,
            store,
            stop_taking,
            lifetime,
        })
    }

    fn metrics_addr(&self) -> std::net::SocketAddr {
        self.ctx.metrics_addr()
    }

    fn connections(&self) -> Connections {
        Connections {
            bus: self.bus.clone(),
            store: self.store.clone(),
        }
    }

    async fn run_until_stopped(self) -> anyhow::Result<()> {
        let stop = self.stop_taking.clone();
        let digests = tokio::spawn(serve::send_digests(self.app.clone(), stop.clone()));
        let inbox = Inbox::new(self.store.database());
        let received = serve::receive_updates(self.app, inbox, stop.clone()).await;
        stop.cancel();
        let digests = digests.await.context("the digest task panicked")?;
        self.lifetime.cancel();
        received.context("receiving updates")?;
        digests.context("sending digests")
    }
}
