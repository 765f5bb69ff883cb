use anyhow::Context;
use oleg_bot::chats::Chats;
use oleg_bot::metrics::BotMetrics;
use oleg_bot::{serve, BotApp, BotConfig};
use oleg_runtime::{shutdown_on_signals, WorkerContext};
use oleg_settings::Sources;
use oleg_telemetry::Component;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut sources = Sources::from_process();
    sources
        .list_keys
        .extend(["bot.admin_ids", "bot.digest_times"]);
    let config: BotConfig = oleg_settings::load(&sources).context("oleg-bot configuration")?;
    let shutdown = shutdown_on_signals()?;
    let ctx = WorkerContext::start(
        "oleg-bot",
        &config.log,
        &config.bot.metrics_addr,
        &[Component::Broker, Component::Store],
        shutdown.clone(),
    )
    .await?;
    let metrics = BotMetrics::register(&ctx.registry)?;
    let store = ctx
        .connect_store(&config.mongo, Duration::from_secs(2))
        .await?;
    let bus = ctx.connect_bus(&config.amqp).await?;
    // Long polls hold a request open for poll_timeout_s: the client waits longer than that.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(config.bot.poll_timeout_s + 20))
        .build()
        .context("the Bot API client")?;
    let api_url = reqwest::Url::parse(&config.bot.api_url).context("bot.api_url")?;
    let bot = teloxide_core::Bot::with_client(config.bot.token.expose_secret(), client)
        .set_api_url(api_url);
    let app = Arc::new(
        BotApp::new(
            bot,
            bus.clone(),
            Chats::new(store.database()),
            config.bot,
            metrics,
        )
        .await?,
    );
    let digests = tokio::spawn(serve::send_digests(app.clone(), shutdown.clone()));
    let received = serve::receive_updates(app, shutdown.clone()).await;
    shutdown.cancel();
    let digests = digests.await.context("the digest task panicked")?;
    bus.close().await;
    received.context("receiving updates")?;
    digests.context("sending digests")?;
    tracing::info!("stopped");
    Ok(())
}
