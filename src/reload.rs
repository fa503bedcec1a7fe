//! Hot reload: a changed config file or template, SIGHUP, or `POST /-/reload` loads and checks the
//! new config, builds everything it needs, and swaps it in at once; a bad one changes nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use arc_swap::ArcSwap;
use chrono::Duration;

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::ingest::IngestState;
use crate::pipeline::{Pipeline, Wake};
use crate::store::Store;

/// Where a reload reads its config from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// `None`: the process environment at reload time; tests give their own.
    pub env: Option<Vec<(String, String)>>,
}

/// Everything built from one config. Alerts already decided keep what was decided with them
/// (routes, receivers, options); new records are handled by the newest generation.
pub struct Generation {
    pub config: Arc<Config>,
    pub ingest: Arc<IngestState>,
    pub pipeline: Arc<Pipeline>,
    /// The Telegram bot's update handler; `None` without a bot token.
    pub bot: Option<Arc<crate::bot::Handler>>,
}

/// The running service's current generation, and what is shared by all of them.
pub struct Live {
    source: Option<ConfigSource>,
    pub store: Store,
    clock: Clock,
    /// Wakes the workers: shared by all generations, so a reload never loses a wake-up.
    wake: Arc<Wake>,
    current: ArcSwap<Generation>,
    reloading: tokio::sync::Mutex<()>,
    /// This process among the instances sharing the database, for leases.
    instance: String,
}

impl Live {
    pub fn new(
        config: Config,
        source: Option<ConfigSource>,
        store: Store,
        clock: Clock,
    ) -> anyhow::Result<Live> {
        let wake = Arc::new(Wake::new());
        let first = build(config, &store, &clock, &wake)?;
        Ok(Live {
            source,
            store,
            clock,
            wake,
            current: ArcSwap::from_pointee(first),
            reloading: tokio::sync::Mutex::new(()),
            instance: format!(
                "{}-{}-{:08x}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "ringback".into()),
                std::process::id(),
                fastrand::u32(..)
            ),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// One round of the bot's update consumer: set-up if needed, then one poll (`timeout`
    /// seconds of long polling) if this instance holds the polling lease. Tests call it with 0.
    pub async fn poll_bot(&self, timeout: u32) -> Result<crate::bot::Polled, String> {
        let Some(bot) = self.current().bot.clone() else {
            return Err("telegram.token is not set: there is no bot".into());
        };
        bot.set_up()
            .await
            .map_err(|e| format!("cannot set the bot up: {e:?}"))?;
        if *bot.mode() != crate::bot::Mode::Polling {
            return Ok(crate::bot::Polled::Handled(0));
        }
        let polled = bot
            .poll(&self.instance, timeout)
            .await
            .map_err(|e| e.to_string())?;
        if polled != crate::bot::Polled::NotLeader {
            self.wake.notify_one();
        }
        Ok(polled)
    }

    /// Reads the bot's updates until `stop` turns true; gives the polling lease up on the way out
    /// so another instance takes over at once.
    pub async fn run_bot(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        const LONG_POLL_SECONDS: u32 = 25;
        const PAUSE: StdDuration = StdDuration::from_secs(5);
        loop {
            if *stop.borrow() {
                break;
            }
            let bot = self.current().bot.clone();
            let polling = bot
                .as_ref()
                .is_some_and(|b| *b.mode() == crate::bot::Mode::Polling);
            // Without a token there is nothing to read, and nothing wrong: a reload may add one.
            let pause = if bot.is_none() {
                Some(PAUSE)
            } else {
                tokio::select! {
                result = self.poll_bot(LONG_POLL_SECONDS) => match result {
                    Ok(crate::bot::Polled::Handled(n)) if polling && n > 0 => None,
                    // Telegram holds an empty long poll open, so this pause costs nothing; it
                    // keeps a server that answers at once (a proxy, a test double) from spinning.
                    Ok(crate::bot::Polled::Handled(_)) if polling => Some(StdDuration::from_secs(1)),
                    Ok(_) => Some(PAUSE),
                    Err(problem) => {
                        tracing::warn!(%problem, "the Telegram bot cannot read its updates; retrying");
                        Some(PAUSE)
                    }
                },
                _ = stop.changed() => None,
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {},
                    _ = stop.changed() => {},
                }
            }
        }
        if let Err(e) = self
            .store
            .release_lease(crate::bot::POLLING_LEASE, &self.instance)
            .await
        {
            tracing::warn!(error = %e, "cannot give up the Telegram polling lease; it runs out by itself");
        }
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Loads, checks and swaps in the config file; on any problem the running config stays.
    pub async fn reload(&self, trigger: &str) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload();
        let now = chrono::Utc::now().timestamp() as f64;
        metrics::gauge!("ringback_config_reload_timestamp_seconds").set(now);
        match &result {
            Ok(()) => {
                metrics::gauge!("ringback_config_reload_success").set(1.0);
                metrics::counter!("ringback_config_reloads_total", "result" => "success")
                    .increment(1);
                tracing::info!(trigger, "config reloaded");
            }
            Err(problem) => {
                metrics::gauge!("ringback_config_reload_success").set(0.0);
                metrics::counter!("ringback_config_reloads_total", "result" => "failure")
                    .increment(1);
                tracing::error!(trigger, %problem, "config reload rejected; the running config stays");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), String> {
        let source = self
            .source
            .as_ref()
            .ok_or("ringback was started without a config file to reload")?;
        let config = match &source.env {
            Some(env) => config::load_with_env(&source.path, env.clone()),
            None => config::load(&source.path),
        }
        .map_err(|e| e.to_string())?;
        let running = self.current();
        if config.storage.url != running.config.storage.url {
            return Err("storage.url changed: restart ringback to use another database".into());
        }
        if config.server.listen != running.config.server.listen {
            return Err("server.listen changed: restart ringback to listen elsewhere".into());
        }
        let next =
            build(config, &self.store, &self.clock, &self.wake).map_err(|e| format!("{e:#}"))?;
        self.current.store(Arc::new(next));
        self.wake.notify_one();
        Ok(())
    }

    /// Runs the workers of the current generation until `stop` turns true: deciding and sending
    /// side by side, so a burst's first alerts go out while the rest are still being decided. A
    /// pass under way is finished first, so no send is cut off between Telegram accepting it and
    /// ringback recording it.
    pub async fn run_workers(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let send = Wake::new();
        let deciding = self.work(Worker::Deciding { then: &send }, &self.wake, stop.clone());
        let sending = self.work(Worker::Sending, &send, stop);
        tokio::join!(deciding, sending);
    }

    /// One worker's loop: passes until idle, then waits for `wake`, its next due time or `stop`.
    async fn work(
        &self,
        worker: Worker<'_>,
        wake: &Wake,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        const MAX_IDLE: StdDuration = StdDuration::from_secs(5);
        let mut last_upkeep = self.clock.now() - Duration::hours(1);
        'passes: loop {
            if *stop.borrow() {
                return;
            }
            let pipeline = self.current().pipeline.clone();
            loop {
                let pass = match worker {
                    Worker::Deciding { .. } => pipeline.decide_once().await,
                    Worker::Sending => pipeline.deliver_once().await,
                };
                match pass {
                    Ok(true) => worker.hand_on(),
                    Ok(false) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "the alert pipeline cannot reach the database; retrying");
                        tokio::time::sleep(StdDuration::from_secs(1)).await;
                        continue 'passes;
                    }
                }
            }
            // A wake-up may have been for the sender too (a button press queues an edit).
            worker.hand_on();
            let now = self.clock.now();
            if let Worker::Deciding { .. } = worker
                && now - last_upkeep >= Duration::minutes(10)
            {
                last_upkeep = now;
                if let Ok(Some(warning)) = pipeline.missing_call_records().await {
                    tracing::warn!("{warning}");
                }
                if let Err(e) = pipeline.prune().await {
                    tracing::error!(error = %e, "cannot prune old data; will try again");
                }
            }
            let next = match worker {
                Worker::Deciding { .. } => pipeline.next_decision_at().await,
                Worker::Sending => pipeline.next_delivery_at().await,
            };
            let wait = match next {
                Ok(Some(at)) => (at - now)
                    .to_std()
                    .unwrap_or(StdDuration::ZERO)
                    .min(MAX_IDLE),
                _ => MAX_IDLE,
            };
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            if wait >= StdDuration::from_secs(1) && matches!(worker, Worker::Deciding { .. }) {
                crate::memory::release_freed();
            }
            wake.sleeping_until(now + Duration::from_std(wait).unwrap_or(Duration::zero()));
            tokio::select! {
                () = wake.notified() => {},
                () = tokio::time::sleep(wait) => {},
                _ = stop.changed() => {},
            }
            wake.awake();
        }
    }

    /// Reloads when the config file or a template changes, until the returned watcher is dropped.
    pub fn watch_files(self: &Arc<Self>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let source = self.source.as_ref()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
        let config_name = source.path.file_name().map(ToOwned::to_owned);
        let templates = self.current().config.templates.dir.clone();
        let watched_templates = templates.clone();
        // Only the config file and the templates count: a database or log written in the same
        // folder must not reload the config at every write.
        let relevant = move |path: &std::path::Path| {
            path.file_name()
                .is_some_and(|n| Some(n) == config_name.as_deref())
                || path.starts_with(&watched_templates)
        };
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && (event.kind.is_modify() || event.kind.is_create() || event.kind.is_remove())
                && event.paths.iter().any(|p| relevant(p))
            {
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the config for changes; use SIGHUP or POST /-/reload"))
        .ok()?;
        let config_dir = source
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_owned();
        for dir in [config_dir, templates] {
            if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a folder for changes");
            }
        }
        let live = Arc::clone(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Editors write a file in several steps: wait for the writes to settle.
                tokio::time::sleep(StdDuration::from_millis(300)).await;
                while rx.try_recv().is_ok() {}
                let _ = live.reload("file change").await;
            }
        });
        Some(watcher)
    }
}

/// The two halves of the alert pipeline's work.
#[derive(Clone, Copy)]
enum Worker<'a> {
    /// Decides due calls and closes digest periods, then wakes `then`, the sender.
    Deciding { then: &'a Wake },
    /// Sends due messages and edits.
    Sending,
}

impl Worker<'_> {
    /// Tells the sender there may be work, when this is the decider.
    fn hand_on(&self) {
        if let Worker::Deciding { then } = self {
            then.notify_one();
        }
    }
}

fn build(
    config: Config,
    store: &Store,
    clock: &Clock,
    wake: &Arc<Wake>,
) -> anyhow::Result<Generation> {
    let config = Arc::new(config);
    let pipeline = Arc::new(crate::startup::build_pipeline(
        config.clone(),
        store.clone(),
        clock.clone(),
    )?);
    let ingest = Arc::new(IngestState::new(
        &config,
        store.clone(),
        clock.clone(),
        wake.clone(),
    ));
    let bot = crate::bot::Handler::new(config.clone(), store.clone(), clock.clone(), wake.clone())
        .map(Arc::new);
    Ok(Generation {
        config,
        ingest,
        pipeline,
        bot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_decider_wakes_the_sender_and_the_sender_wakes_nobody() {
        let send = Wake::new();
        Worker::Sending.hand_on();
        Worker::Deciding { then: &send }.hand_on();
        // The permit is kept until the sender waits, so a wake-up between its passes is not lost.
        tokio::select! {
            biased;
            () = send.notified() => {},
            () = std::future::ready(()) => panic!("the sender was not woken"),
        }
        tokio::select! {
            biased;
            () = send.notified() => panic!("one wake-up, one permit"),
            () = std::future::ready(()) => {},
        }
    }
}
