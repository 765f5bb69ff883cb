use clap::Parser;
use oleg_admin::{Admin, Cli};
use std::io::Write;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = async {
        let admin = Admin::connect(oleg_settings::Sources::from_process()).await?;
        let stdin = std::io::stdin();
        let done = admin
            .run(&cli.command, &mut std::io::stdout(), &mut stdin.lock())
            .await;
        admin.close().await;
        done
    }
    .await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "oleg-admin: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
