//! What the two binaries share: the simulated people's options and logging.

use crate::simulation::SimulationSettings;

/// Who is simulated and for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct PeopleArgs {
    #[arg(long, default_value_t = 300)]
    pub people: u32,
    #[arg(long, default_value_t = 15)]
    pub rounds: u32,
    /// Fixes the people's tastes and votes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl PeopleArgs {
    pub fn settings(&self) -> SimulationSettings {
        SimulationSettings {
            people: self.people,
            rounds: self.rounds,
            seed: self.seed,
            ..Default::default()
        }
    }
}

/// Warnings and errors only (`RUST_LOG` overrides): the binaries print their own progress. The
/// bus reports lost connections itself, so lapin's own lines are left out.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lapin=off".into()),
        )
        .init();
}

/// What the people's channels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorldKind {
    /// The saved pages only: 75 posts, all there from the start.
    Saved,
    /// The saved pages and 24 generated channels whose posts arrive before every round.
    Generated,
}
