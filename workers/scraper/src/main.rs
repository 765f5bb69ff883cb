use anyhow::Context;
use clap::{Parser, Subcommand};
use oleg_scraper::parse::parse_page;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "oleg-scraper",
    about = "Reads public Telegram channels' web preview pages into posts"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scraper worker (the default).
    Serve,
    /// Print the channel header and every post of a saved page as JSON lines.
    Parse {
        /// A saved t.me/s/<channel> (or t.me/<channel>) page.
        page: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Parse { page } => {
            let bytes =
                std::fs::read(&page).with_context(|| format!("reading {}", page.display()))?;
            let parsed = parse_page(&String::from_utf8_lossy(&bytes));
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{}",
                serde_json::json!({"header": parsed.header, "before": parsed.before, "service_messages": parsed.service_messages})
            )?;
            for post in &parsed.posts {
                let kinds: Vec<_> = post.media.iter().map(|m| m.kind).collect();
                let mut line = serde_json::to_value(post)?;
                line["media_items"] = line["media"].take();
                line["media"] = serde_json::to_value(kinds)?;
                writeln!(out, "{line}")?;
            }
            for warning in &parsed.warnings {
                eprintln!(
                    "warning: {}: {}",
                    warning.post.as_deref().unwrap_or("?"),
                    warning.problem
                );
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    use oleg_runtime::{shutdown_on_signals, WorkerContext};
    use oleg_scraper::fetch::{Fetcher, RetryAfter};
    use oleg_scraper::worker::{Scraper, ScraperMetrics};
    use oleg_scraper::ScraperConfig;
    use oleg_telemetry::Component;
    use std::time::Duration;

    let mut sources = oleg_settings::Sources::from_process();
    sources.list_keys.push("scraper.channels");
    let config: ScraperConfig =
        oleg_settings::load(&sources).context("oleg-scraper configuration")?;
    let shutdown = shutdown_on_signals()?;
    let ctx = WorkerContext::start(
        "oleg-scraper",
        &config.log,
        &config.scraper.metrics_addr,
        &[Component::Broker, Component::Store],
        shutdown.clone(),
    )
    .await?;
    let metrics = ScraperMetrics::register(&ctx.registry)?;
    let store = ctx
        .connect_store(&config.mongo, Duration::from_secs(2))
        .await?;
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
    Scraper {
        bus: bus.clone(),
        store,
        settings: config.scraper.clone(),
        metrics,
        fetcher,
        shutdown,
    }
    .run()
    .await?;
    bus.close().await;
    tracing::info!("stopped");
    Ok(())
}
