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
    oleg_runtime::main_of::<oleg_scraper::App>().await
}
