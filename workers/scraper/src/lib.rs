//! `oleg-scraper`: reads public channels' web preview pages (`<base>/s/<channel>`) into posts,
//! incrementally and politely, stores them, and announces the new ones.

pub mod crawl;
pub mod fetch;
pub mod parse;
mod settings;
pub mod worker;

pub use settings::{ScraperConfig, ScraperSettings};

use anyhow::Context;
use fetch::{Fetcher, RetryAfter};
use oleg_runtime::{Connections, Worker, WorkerContext};
use oleg_telemetry::Component;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use worker::{Scraper, ScraperMetrics};

/// `oleg-scraper`, built and ready to run.
pub struct App {
    ctx: WorkerContext,
    scraper: Scraper,
}

impl Worker for App {
    type Config = ScraperConfig;
    const NAME: &'static str = "oleg-scraper";
    const SECTION: &'static str = "scraper";
    const LIST_KEYS: &'static [&'static str] = &["scraper.channels"];

    async fn build(config: ScraperConfig, stop: CancellationToken) -> anyhow::Result<Self> {
        let ctx = WorkerContext::start(
            Self::NAME,
            &config.log,
            &config.scraper.metrics_addr,
            &[Component::Broker, Component::Store],
            stop,
        )
        .await?;
        let metrics = ScraperMetrics::register(&ctx.registry)?;
        let store = ctx
            .connect_store(&config.mongo, Duration::from_secs(2))
            .await?;
        // Before the broker connects, so that the channels are stored by the time the scraper
        // reports ready.
        worker::add_configured_channels(&store, &config.scraper)
            .await
            .context("storing the configured channels")?;
        let bus = ctx.connect_bus(&config.amqp).await?;
        let s = &config.scraper;
        let fetcher = Fetcher::new(
            &s.base_url,
            Duration::from_millis(s.request_interval_ms),
            Duration::from_millis(s.request_timeout_ms),
            s.max_body_bytes,
            RetryAfter {
                default: Duration::from_secs(s.retry_after_default_s),
                max: Duration::from_secs(s.retry_after_max_s),
            },
        )?;
        tracing::info!(base_url = %s.base_url, "scraping");
        let scraper = Scraper {
            bus,
            store,
            settings: config.scraper,
            metrics,
            fetcher,
        };
        Ok(Self { ctx, scraper })
    }

    fn metrics_addr(&self) -> std::net::SocketAddr {
        self.ctx.metrics_addr()
    }

    fn connections(&self) -> Connections {
        Connections {
            bus: self.scraper.bus.clone(),
            store: self.scraper.store.clone(),
        }
    }

    async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.scraper.run().await;
        Ok(())
    }
}
