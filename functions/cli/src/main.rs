//! `replwatch`, the operator CLI.
//!
//! Runs from a laptop or a CI job with the default AWS credential chain (`--profile`,
//! `--region`; `--endpoint-url` for the local AWS), sharing the core and the AWS adapters with
//! the Lambda functions. Results go to standard output (`--output table|json|markdown`);
//! progress and logs go to standard error, and progress bars only appear on a terminal.
//!
//! Exit codes: 0 done (or in sync), 1 something to report (drift, failed images, conflicts),
//! 2 an error (bad arguments, an AWS call that failed, interrupted).

#[macro_use]
mod output;
mod args;
mod audit;
mod aws;
mod backfill;
mod doctor;
mod progress;
mod status;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.global.verbose);
    let result = match &cli.command {
        Command::Backfill(args) => backfill::run(&cli.global, args)
            .await
            .map_err(|e| e.to_string()),
        Command::Status(args) => status::run(&cli.global, args)
            .await
            .map_err(|e| e.to_string()),
        Command::Audit(args) => audit::run(&cli.global, args)
            .await
            .map_err(|e| e.to_string()),
        Command::Doctor(args) => doctor::run(&cli.global, args)
            .await
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            eprintln!("replwatch: {error}");
            ExitCode::from(2)
        }
    }
}

/// Logs on standard error, human-readable, warnings only unless `-v` or `RUST_LOG`.
fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::colours_enabled())
        .without_time()
        .with_target(false)
        .try_init();
}

/// What a command found, as the exit code tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report: in sync, or everything planned was done.
    Clean,
    /// Something a pipeline should stop on: drift, failed images, conflicts.
    Findings,
}

impl Outcome {
    fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Clean => ExitCode::SUCCESS,
            Outcome::Findings => ExitCode::from(1),
        }
    }
}
