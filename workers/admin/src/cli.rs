//! The command line.

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "oleg-admin",
    about = "Operate OLEG: dead letters, channels, models, people, status",
    after_help = "Configuration as for the workers: config/default.toml, config/$OLEG_ENV.toml, \
                  OLEG__SECTION__KEY variables (OLEG_CONFIG_DIR names the folder).\n\
                  Exit codes: 0 done, 1 services or configuration failed, 2 bad input, \
                  3 not found, 4 done only in part."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue depths and consumers, dead letters by reason, the live model, the last scrape,
    /// the newest stored vote.
    Status,
    /// The dead-letter queue: refused messages and why.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// The channels the scraper follows.
    Channels {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Model versions.
    Models {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// What is stored about a person.
    Users {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Removes what can no longer matter (the ages in `[retention]`).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Old deliveries, old posts nobody voted on, files of old model versions.
    Run {
        /// Count what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// A table: id, reason, queue, attempts, replays, age, size and a preview of the body.
    List {
        #[command(flatten)]
        filter: LetterFilter,
    },
    /// One dead letter in full, with its original body.
    Show { id: String },
    /// Publishes each matching letter's original body again where it first went (confirmed),
    /// then removes the letter. One that fails again comes back with its replay count.
    Replay {
        #[command(flatten)]
        filter: LetterFilter,
        /// Say what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Letters already replayed this many times are left alone.
        #[arg(long, default_value_t = 3)]
        max_replays: u32,
    },
    /// Removes the matching letters for good.
    Purge {
        #[command(flatten)]
        filter: LetterFilter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Which dead letters a command applies to; every one when no filter is given.
#[derive(Debug, Clone, Default, Args)]
pub struct LetterFilter {
    /// A reason, e.g. `malformed`, `store_refused`, `poison` (the broker's delivery limit).
    #[arg(long)]
    pub reason: Option<String>,
    /// The queue it was refused from, by full name or its last part (`ingest`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Only letters refused within this long, e.g. `30m`, `6h`, `2d`.
    #[arg(long, value_parser = parse_age)]
    pub since: Option<Duration>,
    /// One letter, by id.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// A table: state, last fetch, next poll, posts, failures.
    List,
    /// Follow a public channel (polled at once).
    Follow { name: String },
    /// Stop following a channel; its posts stay stored but are no longer recommended.
    Unfollow { name: String },
    /// Stop polling a channel until it is resumed.
    Pause { name: String },
    /// Poll a paused channel again, at once.
    Resume { name: String },
    /// Poll a missing channel at once instead of in a day, or every missing one (`--missing`):
    /// after a fix for pages the scraper could not read, which made channels look missing.
    Retry {
        #[arg(required_unless_present = "missing", conflicts_with = "missing")]
        name: Option<String>,
        #[arg(long)]
        missing: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// The newest versions: status, whether live, age, votes, holdout AUC, size.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One version's record in full.
    Show { version: String },
    /// Makes a published version live again: the live pointer moves, and a notice tells every
    /// ranker replica (they follow the pointer, older or newer); the trainer builds on it next.
    Rollback { version: String },
    /// Takes a published version out of service; if it is live, the newest published version
    /// before it becomes live.
    Withdraw { version: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Everything stored about the person, as JSON.
    Export { id: String },
    /// Deletes the person's votes, deliveries, chat record and the person.
    Forget {
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// `90s`, `30m`, `6h`, `2d` (a bare number is seconds).
pub fn parse_age(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not an age like 90s, 30m, 6h or 2d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} in {raw:?} (s, m, h or d)")),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_units_and_refuse_nonsense() {
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_age("3w").is_err());
        assert!(parse_age("h").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        Cli::try_parse_from([
            "oleg-admin",
            "dead-letters",
            "replay",
            "--reason",
            "malformed",
            "--dry-run",
        ])
        .unwrap();
        Cli::try_parse_from(["oleg-admin", "users", "forget", "42", "--yes"]).unwrap();
        assert!(
            Cli::try_parse_from(["oleg-admin", "dead-letters", "list", "--since", "soon"]).is_err()
        );
    }
}
