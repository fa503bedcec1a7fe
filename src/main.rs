use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ringback::cli::run(ringback::cli::Cli::parse()).await
}
