use anyhow::Context;
use oleg_bot::chats::Chats;
use oleg_bot::inbox::Inbox;
use oleg_bot::metrics::BotMetrics;
use oleg_bot::{serve, BotApp, BotConfig};
use oleg_runtime::{shutdown_on_signals, WorkerContext};
use oleg_settings::Sources;
use oleg_telemetry::Component;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut sources = Sources::from_process();
    sources
        .list_keys
        .extend(["bot.admin_ids", "bot.digest_times"]);
    let config: BotConfig = oleg_settings::load(&sources).context("oleg-bot configuration")?;
    // A signal stops taking updates; the connections live on until those in flight are done.
    let stop_taking = shutdown_on_signals()?;
    let lifetime = CancellationToken::new();
    let ctx = WorkerContext::start(
        "oleg-bot",
        &config.log,
        &config.bot.metrics_addr,
        &[Component::Broker, Component::Store, Component::ReplyPath],
        lifetime.clone(),
    )
    .await?;
    let metrics = BotMetrics::register(&ctx.registry)?;
    // Waiting for the services ends at a signal too.
    let connected = async {
        let store = ctx
            .connect_store(&config.mongo, Duration::from_secs(2))
            .await?;
        let bus = ctx.connect_bus(&config.amqp).await?;
        anyhow::Ok((store, bus))
    };
    let (store, bus) = tokio::select! {
        _ = stop_taking.cancelled() => return Ok(()),
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
    let digests = tokio::spawn(serve::send_digests(app.clone(), stop_taking.clone()));
    let inbox = Inbox::new(store.database());
    let received = serve::receive_updates(app, inbox, stop_taking.clone()).await;
    stop_taking.cancel();
    let digests = digests.await.context("the digest task panicked")?;
    lifetime.cancel();
    bus.close().await;
    received.context("receiving updates")?;
    digests.context("sending digests")?;
    tracing::info!("stopped");
    Ok(())
}
