use clap::{Parser, Subcommand};
use oleg_runtime::{load_config, shutdown_on_signals, Worker};
use oleg_settings::Sources;
use oleg_trainer::eval::EvalArgs;
use oleg_trainer::serve::App;

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
    Eval(EvalArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Retrain => retrain(),
        Command::Eval(args) => {
            oleg_trainer::eval::run(&load_config::<App>(Sources::from_process())?, args)
        }
    }
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    oleg_runtime::main_of::<App>().await
}

#[tokio::main]
async fn retrain() -> anyhow::Result<()> {
    let config = load_config::<App>(Sources::from_process())?;
    App::build(config, shutdown_on_signals()?)
        .await?
        .retrain()
        .await
}
