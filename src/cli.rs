//! The `ringback` command line: `serve` runs the service; more subcommands join as they are built.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config;
use crate::startup::{Application, shutdown_signal};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "ringback",
    version,
    about = "Missed-call alerts from cloud telephony webhooks"
)]
pub struct Cli {
    /// Log as human-readable text or as JSON lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook service.
    Serve {
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve { config } => {
            let config = config::load(&config)?;
            let app = Application::build(config).await?;
            app.run_until(shutdown_signal()).await
        }
    }
}
