//! The `ringback` command line: `serve` runs the service, `digest preview|send` looks at or sends
//! an email digest.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

use crate::clock::Clock;
use crate::config;
use crate::digest::Closed;
use crate::startup::{Application, build_pipeline, shutdown_signal};
use crate::store::Store;
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
    /// Check a config file and everything it names (templates, routes, schedules): exit 0 when all is
    /// well, 1 with every problem found (file, line and key) otherwise.
    CheckConfig {
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Show what ringback would do with a provider's payload: the call record, whether it alerts
    /// and why, which routes match, and each receiver's message. Stores and sends nothing.
    RouteTest {
        /// telecmi, callr or callerdesk.
        #[arg(long)]
        provider: String,
        /// A file with the request body (JSON or form data), or - for standard input.
        file: Option<PathBuf>,
        /// The payload as a query string (`k=v&...`), as GET webhooks send it.
        #[arg(long)]
        query: Option<String>,
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Write the stored call records, with what was decided and where their alerts got to, for
    /// spreadsheets and BI tools.
    Export {
        /// Start: RFC 3339, or "YYYY-MM-DD [HH:MM]" in [alerts] timezone. Default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive), written the same way. Default: now.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Ingest a backlog of recorded provider requests (JSON Lines: method, path, query, headers,
    /// body), skipping what is already stored, then decide and send their alerts, grouped per chat
    /// and within Telegram's limits.
    Replay {
        /// The JSON Lines file.
        file: PathBuf,
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Look at or send an email digest.
    Digest {
        #[command(subcommand)]
        action: DigestAction,
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH, global = true)]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum DigestAction {
    /// Print a digest as it would be sent (its subject and text part), without sending or recording it.
    Preview {
        /// The digest's `name` in [[digests]].
        name: String,
        /// Start of the period: RFC 3339, or "YYYY-MM-DD [HH:MM]" in the digest's time zone.
        /// Default: where the last digest ended.
        #[arg(long)]
        from: Option<String>,
        /// End of the period, written the same way. Default: now.
        #[arg(long)]
        to: Option<String>,
        /// Also write the HTML part to this file.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Send the current period's digest now, and record it: the next one starts from now.
    Send {
        /// The digest's `name` in [[digests]].
        name: String,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve { config: path } => {
            let config = config::load(&path)?;
            let source = crate::reload::ConfigSource { path, env: None };
            let app = Application::build(config, Some(source)).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Digest { action, config } => digest(action, &config).await,
        Command::Replay { file, config } => replay(&file, &config).await,
        Command::Export {
            from,
            to,
            format,
            config,
        } => {
            let config = config::load(&config)?;
            let tz = config.alerts.timezone;
            let from = match from {
                Some(text) => parse_time(&text, tz)?,
                None => DateTime::<Utc>::UNIX_EPOCH,
            };
            let to = match to {
                Some(text) => parse_time(&text, tz)?,
                None => Utc::now(),
            };
            let store = Store::open(&config.storage.url).await?;
            let mut stdout = std::io::stdout().lock();
            let count =
                crate::check::export(&store, from, to, format == ExportFormat::Jsonl, &mut stdout)
                    .await?;
            drop(stdout);
            store.close().await;
            eprintln!("{count} records");
            Ok(())
        }
        Command::CheckConfig { config } => match crate::check::check_config(&config) {
            Ok(summary) => {
                print!("{summary}");
                Ok(())
            }
            Err(problems) => {
                eprintln!("{problems}");
                std::process::exit(1);
            }
        },
        Command::RouteTest {
            provider,
            file,
            query,
            config,
        } => {
            let config = config::load(&config)?;
            let provider: crate::domain::Provider = provider.parse().map_err(|_| {
                anyhow::anyhow!("--provider must be telecmi, callr or callerdesk, not `{provider}`")
            })?;
            let body = match file.as_deref() {
                None => Vec::new(),
                Some(p) if p == std::path::Path::new("-") => {
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)?;
                    body
                }
                Some(p) => std::fs::read(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
            };
            anyhow::ensure!(
                !body.is_empty() || query.is_some(),
                "give the payload as a FILE (or - for standard input), or with --query"
            );
            let payload = crate::check::Payload {
                body,
                query,
                content_type: None,
            };
            match crate::check::route_test(&config, provider, &payload) {
                Ok(report) => {
                    print!("{report}");
                    Ok(())
                }
                Err(refusal) => {
                    eprintln!("{refusal}");
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn digest(action: DigestAction, config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = Arc::new(config::load(config_path)?);
    let name = match &action {
        DigestAction::Preview { name, .. } | DigestAction::Send { name } => name.clone(),
    };
    let digest = config.digest(&name).cloned().ok_or_else(|| {
        let names: Vec<&str> = config.digests.iter().map(|d| d.name()).collect();
        anyhow::anyhow!(
            "no digest is named `{name}` in {}; the digests are: {}",
            config_path.display(),
            if names.is_empty() {
                "(none)".to_owned()
            } else {
                names.join(", ")
            }
        )
    })?;
    let store = Store::open(&config.storage.url).await?;
    let pipeline = build_pipeline(config.clone(), store.clone(), Clock::System)?;
    let now = Utc::now();
    let tz = digest.timezone.unwrap_or(config.alerts.timezone);
    match action {
        DigestAction::Preview { from, to, html, .. } => {
            let from = match from {
                Some(text) => parse_time(&text, tz)?,
                None => {
                    pipeline
                        .digester()
                        .current_period_start(&digest, now)
                        .await?
                }
            };
            let to = match to {
                Some(text) => parse_time(&text, tz)?,
                None => now,
            };
            anyhow::ensure!(from < to, "--from must come before --to");
            let report = pipeline.digester().report(&digest, from, to, 1).await?;
            let email = pipeline.digester().render(&report)?;
            println!("To: {}", config.digest_recipients(&digest).join(", "));
            println!("Subject: {}\n\n{}", email.subject, email.text);
            if let Some(path) = html {
                std::fs::write(&path, &email.html)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                println!("(HTML part written to {})", path.display());
            }
        }
        DigestAction::Send { .. } => {
            let from = pipeline
                .digester()
                .current_period_start(&digest, now)
                .await?;
            match pipeline
                .digester()
                .close(&digest, from, now, 1, now)
                .await?
            {
                Closed::Queued { recipients, .. } => {
                    pipeline.deliverer().step(now).await?;
                    println!(
                        "digest `{name}` for {from} to {now} queued for {recipients} recipient(s) and sent where the SMTP server accepted it; failures are retried by the service"
                    );
                }
                Closed::Empty => println!(
                    "digest `{name}`: nothing was missed since {from}, and send_empty is off: nothing sent"
                ),
                Closed::AlreadyClosed => println!(
                    "digest `{name}`: the period was just closed by a running ringback; nothing sent"
                ),
            }
        }
    }
    store.close().await;
    Ok(())
}

/// RFC 3339, or a local "YYYY-MM-DD HH:MM" or "YYYY-MM-DD" in `tz`.
fn parse_time(text: &str, tz: chrono_tz::Tz) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M")
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN))
        })
        .map_err(|_| {
            anyhow::anyhow!(
                "`{text}` is not a time: write 2026-11-23, \"2026-11-23 09:00\" or RFC 3339"
            )
        })?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| anyhow::anyhow!("`{text}` does not exist in {tz} (a daylight-saving gap)"))
}

async fn replay(file: &std::path::Path, config: &std::path::Path) -> anyhow::Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    let config = config::load(config)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let store = Store::open(&config.storage.url).await?;
    let (ingest, pipeline, config) =
        crate::replay::build(config, store.clone(), crate::clock::Clock::System)?;
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    let bar = ProgressBar::new(lines as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} requests, {per_sec}, {eta} left")
            .expect("a valid template"),
    );
    let summary = crate::replay::ingest(&ingest, &config, &text, &|| bar.inc(1)).await;
    bar.finish();
    println!(
        "{} stored, {} already stored, {} refused",
        summary.stored,
        summary.duplicates,
        summary.refused.len()
    );
    for (line, why) in summary.refused.iter().take(20) {
        println!("  line {line}: {why}");
    }
    let spinner = ProgressBar::new_spinner();
    loop {
        pipeline.run_until_idle().await?;
        let Some(next) = pipeline.next_due().await? else {
            break;
        };
        let (waiting, _) = store.outbox_backlog().await?;
        spinner.set_message(format!(
            "{waiting} alert messages waiting (grouped per chat, within Telegram's limits); \
             Ctrl-C leaves them to the service"
        ));
        spinner.tick();
        let wait = (next - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(std::time::Duration::from_secs(1));
        tokio::time::sleep(wait).await;
    }
    spinner.finish_with_message("every alert is decided and sent");
    store.close().await;
    Ok(())
}
