use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use oleg_settings::Sources;
use oleg_trainer::dataset::{read_votes_csv, split};
use oleg_trainer::eval::{evaluate_variant, plot_svg, table, Split};
use oleg_trainer::TrainerConfig;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "oleg-trainer",
    about = "Trains OLEG's network on stored votes and publishes model versions"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the trainer worker (the default).
    Serve,
    /// Train once from scratch on every stored vote, publish if good enough, and exit.
    Retrain,
    /// Train and evaluate offline on a user,post,channel,vote file with a seeded 80/20 split.
    Eval {
        /// The votes file (header user,post,channel,vote; vote 1 = like, 0 = dislike).
        #[arg(long)]
        votes: PathBuf,
        /// `table` (Markdown) or `json` (one object per variant).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// libtorch threads.
        #[arg(long, default_value_t = 1)]
        threads: i32,
        /// Draw the loss curves to this SVG file.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Only these variants (names under [trainer.variants]); default: all.
        #[arg(long, value_delimiter = ',')]
        variants: Vec<String>,
        /// Overrides every variant's epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Seed of the split and of the initial weights.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: TrainerConfig =
        oleg_settings::load(&Sources::from_process()).context("oleg-trainer configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => oleg_trainer::serve::main(config, false),
        Command::Retrain => oleg_trainer::serve::main(config, true),
        Command::Eval {
            votes,
            format,
            threads,
            plot,
            variants,
            epochs,
            seed,
        } => {
            if threads < 1 {
                bail!("--threads must be at least 1");
            }
            tch::set_num_threads(threads);
            let device = config.trainer.device().context("trainer.device")?;
            for wanted in &variants {
                if !config.trainer.variants.contains_key(wanted) {
                    bail!(
                        "no variant {wanted:?} under [trainer.variants]; there are {:?}",
                        config.trainer.variants.keys()
                    );
                }
            }
            let (vocab, columns) = read_votes_csv(&votes)?;
            let (train, holdout) = split(&columns, 0.2, seed);
            let data = Split {
                vocab,
                train,
                holdout,
            };
            let mut chosen: Vec<(String, oleg_model::ModelConfig)> = config
                .trainer
                .variants
                .iter()
                .filter(|(name, _)| variants.is_empty() || variants.contains(name))
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect();
            if chosen.is_empty() {
                bail!("no variants configured under [trainer.variants]");
            }
            let mut reports = Vec::new();
            for (name, model) in chosen.iter_mut() {
                if let Some(epochs) = epochs {
                    model.epochs = epochs;
                }
                let batches_per_epoch = (data.train.len() as u64).div_ceil(model.batch_size as u64);
                let bar = if std::io::stderr().is_terminal() {
                    let bar = ProgressBar::new(
                        batches_per_epoch * model.epochs as u64 * model.batch_size as u64,
                    );
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg:>12} {bar:40} {percent:>3}% {per_sec} eta {eta}",
                        )
                        .expect("template"),
                    );
                    bar.set_message(name.clone());
                    bar
                } else {
                    ProgressBar::hidden()
                };
                let report =
                    evaluate_variant(name, model, &data, device, seed, |n| bar.inc(n as u64));
                bar.finish_and_clear();
                if let Format::Json = format {
                    println!("{}", serde_json::to_string(&report)?);
                }
                reports.push(report);
            }
            if let Format::Table = format {
                println!(
                    "{} votes: {} train, {} holdout (seed {seed}), {threads} thread(s)\n",
                    votes.display(),
                    data.train.len(),
                    data.holdout.len()
                );
                print!("{}", table(&reports));
            }
            if let Some(path) = plot {
                std::fs::write(&path, plot_svg(&reports))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}
