//! The Telegram bot: reads updates (long polling under a cluster-wide lease, or a webhook) and
//! answers commands, button presses on alerts, and being added to or removed from chats.

pub mod buttons;
mod commands;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQuery, ChatMemberUpdated, ParseMode, UpdateKind,
};

use crate::clock::Clock;
use crate::config::Config;
use crate::deliver::DeliveryError;
use crate::deliver::telegram::{Telegram, classify};
use crate::store::{Change, ChatProblem, Handling, Store, StoreError};
use buttons::{Action, ButtonError};

/// The lease that lets one instance at a time read the bot's updates (Telegram allows one
/// `getUpdates` consumer per bot).
pub const POLLING_LEASE: &str = "telegram_polling";
const OFFSET: &str = "telegram_update_offset";
/// A lease outlives one long poll with room to spare; a holder that died loses it after this.
pub const LEASE: Duration = Duration::seconds(60);

const COMMANDS: [(&str, &str); 5] = [
    ("missed", "Open missed calls for this chat"),
    ("stats", "Today's calls and callback rate"),
    ("chatid", "This chat's id, for ringback's config"),
    ("start", "Set-up help"),
    ("help", "What this bot does"),
];

/// How the bot receives updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Polling,
    /// Telegram posts to this URL with this secret.
    Webhook {
        url: url::Url,
        secret: String,
    },
}

/// What one poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// Another instance holds the polling lease.
    NotLeader,
    Handled(usize),
}

/// Handles the bot's updates for one config generation.
pub struct Handler {
    telegram: Telegram,
    store: Store,
    config: Arc<Config>,
    clock: Clock,
    wake: Arc<crate::pipeline::Wake>,
    mode: Mode,
    /// The bot's @username, set once set-up has succeeded (so it also says whether it has).
    username: std::sync::OnceLock<Option<String>>,
}

impl Handler {
    /// `None` when no bot token is configured.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        clock: Clock,
        wake: Arc<crate::pipeline::Wake>,
    ) -> Option<Handler> {
        let telegram = Telegram::from_config(&config.telegram)?;
        let mode = match &config.telegram.webhook_url {
            Some(url) => Mode::Webhook {
                url: url.clone(),
                secret: webhook_secret(&config.telegram),
            },
            None => Mode::Polling,
        };
        Some(Handler {
            telegram,
            store,
            config,
            clock,
            wake,
            mode,
            username: std::sync::OnceLock::new(),
        })
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Once per generation: learns the bot's name, points Telegram at the webhook (or clears a
    /// stale one, which would otherwise make `getUpdates` fail), and registers the commands.
    pub async fn set_up(&self) -> Result<(), DeliveryError> {
        if self.username.get().is_some() {
            return Ok(());
        }
        let bot = self.telegram.bot();
        let me = bot.get_me().await.map_err(classify)?;
        match &self.mode {
            Mode::Polling => {
                bot.delete_webhook().await.map_err(classify)?;
            }
            Mode::Webhook { url, secret } => {
                bot.set_webhook(url.clone())
                    .secret_token(secret.clone())
                    .allowed_updates(allowed_updates())
                    .await
                    .map_err(classify)?;
            }
        }
        bot.set_my_commands(COMMANDS.map(|(c, d)| BotCommand::new(c, d)))
            .await
            .map_err(classify)?;
        let _ = self.username.set(me.user.username.clone());
        tracing::info!(mode = ?self.mode_name(), "Telegram bot ready: commands registered");
        Ok(())
    }

    fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Polling => "long polling",
            Mode::Webhook { .. } => "webhook",
        }
    }

    /// One long poll (`timeout` seconds; 0 returns at once) by the lease holder: handles what
    /// arrived and stores where the next poll starts, so a new holder carries on from there.
    pub async fn poll(&self, holder: &str, timeout: u32) -> Result<Polled, PollError> {
        let now = self.clock.now();
        if !self
            .store
            .take_lease(POLLING_LEASE, holder, now, now + LEASE)
            .await?
        {
            return Ok(Polled::NotLeader);
        }
        metrics::gauge!("ringback_telegram_polling_leader").set(1.0);
        let offset = self.store.bot_value(OFFSET).await?.unwrap_or(0);
        let updates = self
            .telegram
            .bot()
            .get_updates()
            .offset(i32::try_from(offset).unwrap_or(0))
            .timeout(timeout)
            .allowed_updates(allowed_updates())
            .await
            .map_err(|e| PollError::Telegram(classify(e)))?;
        let count = updates.len();
        for update in updates {
            let next = i64::from(update.id.0) + 1;
            self.handle(update).await?;
            self.store.set_bot_value(OFFSET, next).await?;
        }
        Ok(Polled::Handled(count))
    }

    /// The webhook's secret: Telegram sends it in `X-Telegram-Bot-Api-Secret-Token`.
    pub fn webhook_secret(&self) -> Option<&str> {
        match &self.mode {
            Mode::Webhook { secret, .. } => Some(secret),
            Mode::Polling => None,
        }
    }

    /// Handles one update. Telegram's own errors are logged (a reply that cannot be sent is not
    /// worth a retry); database errors are returned, so the update is read again.
    pub async fn handle(&self, update: Update) -> Result<(), StoreError> {
        match update.kind {
            UpdateKind::Message(message) => self.on_message(&message).await,
            UpdateKind::CallbackQuery(query) => self.on_press(&query).await,
            UpdateKind::MyChatMember(change) => self.on_membership(&change).await,
            _ => Ok(()),
        }
    }

    async fn on_message(&self, message: &Message) -> Result<(), StoreError> {
        let chat = message.chat.id.0;
        if let Some(new) = message.migrate_to_chat_id() {
            return follow_migration(&self.store, chat, new.0, None, self.clock.now()).await;
        }
        let Some(text) = message.text() else {
            return Ok(());
        };
        let Some(command) = self.command(text) else {
            return Ok(());
        };
        let thread = message
            .is_topic_message
            .then_some(message.thread_id)
            .flatten();
        let reply = match command.as_str() {
            "start" | "chatid" => commands::chat_id(chat, thread.map(|t| t.0.0)),
            "help" => commands::help(&COMMANDS),
            "missed" => commands::missed(&self.store, chat).await?,
            "stats" => commands::stats(&self.store, &self.config, chat, self.clock.now()).await?,
            _ => return Ok(()),
        };
        let mut request = self
            .telegram
            .bot()
            .send_message(message.chat.id, reply)
            .parse_mode(ParseMode::Html);
        if let Some(thread) = thread {
            request = request.message_thread_id(thread);
        }
        match request.clone().await.map_err(classify) {
            Ok(_) => {}
            // Someone typed commands faster than Telegram lets a bot answer: answer once the
            // wait is over, without holding up the updates behind this one.
            Err(DeliveryError::RetryAfter(wait)) if wait <= std::time::Duration::from_secs(10) => {
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Err(e) = request.await {
                        tracing::warn!(chat_id = chat, error = %e, "cannot answer a bot command");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(chat_id = chat, %command, error = ?e, "cannot answer a bot command");
            }
        }
        Ok(())
    }

    /// `/missed@ringback_bot` → `missed`; a command addressed to another bot is not ours.
    fn command(&self, text: &str) -> Option<String> {
        let word = text.split_whitespace().next()?.strip_prefix('/')?;
        let (name, to) = match word.split_once('@') {
            Some((name, to)) => (name, Some(to)),
            None => (word, None),
        };
        if let (Some(to), Some(Some(me))) = (to, self.username.get())
            && !to.eq_ignore_ascii_case(me)
        {
            return None;
        }
        Some(name.to_ascii_lowercase())
    }

    async fn on_press(&self, query: &CallbackQuery) -> Result<(), StoreError> {
        let answer = self.press(query).await?;
        if let Err(e) = self
            .telegram
            .bot()
            .answer_callback_query(query.id.clone())
            .text(answer)
            .await
        {
            tracing::warn!(error = %e, "cannot answer a button press");
        }
        Ok(())
    }

    /// Applies a press if it is genuine and still makes sense; returns what the presser is told.
    async fn press(&self, query: &CallbackQuery) -> Result<String, StoreError> {
        let (Some(data), Some(message)) = (&query.data, &query.message) else {
            return Ok("This button no longer works.".into());
        };
        let (chat, message_id) = (message.chat().id.0, message.id().0);
        let press = match self.telegram.buttons().parse(data, chat) {
            Ok(press) => press,
            Err(e) => {
                tracing::warn!(chat_id = chat, user = query.from.id.0, error = %e,
                    "refused a button press with data ringback did not sign for this chat");
                return Ok(match e {
                    ButtonError::Unreadable => "This button is not one of ringback's.",
                    ButtonError::BadSignature => "This button does not belong to this chat.",
                }
                .into());
            }
        };
        let Some(alert) = self.store.pressed_alert(press.outbox_id).await? else {
            return Ok("This alert is no longer known to ringback (it may have expired).".into());
        };
        if alert.chat_id != chat.to_string()
            || alert.message_id.as_deref() != Some(&message_id.to_string())
            || alert.kind != "missed_call"
        {
            return Ok("This button does not belong to this message.".into());
        }
        let by = query.from.full_name();
        let now = self.clock.now();
        let change = match press.action {
            Action::Claim => Change::Claim,
            Action::CalledBack => Change::CalledBack,
            Action::Release => {
                if alert.handling.claimed_by.as_deref() != Some(by.as_str())
                    && alert.handling.is_open()
                {
                    return Ok(match &alert.handling.claimed_by {
                        Some(other) => format!("Only {other} can release this call."),
                        None => "Nobody has claimed this call.".into(),
                    });
                }
                Change::Release
            }
        };
        if self
            .store
            .change_alert(alert.alert_id, change, &by, now)
            .await?
        {
            self.wake.notify_one();
            metrics::counter!("ringback_button_presses_total", "action" => format!("{change:?}"))
                .increment(1);
            tracing::info!(chat_id = chat, alert = alert.alert_id, action = ?change, %by, "alert updated from Telegram");
            return Ok(match change {
                Change::Claim => "You're calling back. Press \"Called back ✓\" when done.",
                Change::CalledBack => "Marked as called back. Thank you!",
                Change::Release => "Released: the call is open again.",
            }
            .into());
        }
        // Someone else moved first: say where the alert stands now.
        let current = self
            .store
            .pressed_alert(press.outbox_id)
            .await?
            .map(|a| a.handling)
            .unwrap_or_default();
        Ok(self.standing(&current))
    }

    fn standing(&self, h: &Handling) -> String {
        let tz = self.config.alerts.timezone;
        let at = |t: &Option<DateTime<Utc>>| {
            t.map(|t| t.with_timezone(&tz).format("%H:%M").to_string())
                .unwrap_or_default()
        };
        if h.reached_at.is_some() {
            match &h.reached_by {
                Some(agent) => format!("Already reached at {} by {agent}.", at(&h.reached_at)),
                None => format!("Already reached at {}.", at(&h.reached_at)),
            }
        } else if let Some(by) = &h.handled_by {
            format!("Already called back by {by} at {}.", at(&h.handled_at))
        } else if let Some(by) = &h.claimed_by {
            format!("Already claimed by {by} at {}.", at(&h.claimed_at))
        } else {
            "Nothing changed: the call is open.".into()
        }
    }

    async fn on_membership(&self, change: &ChatMemberUpdated) -> Result<(), StoreError> {
        let chat = change.chat.id.0;
        let now = self.clock.now();
        let was_in = change.old_chat_member.is_present();
        let is_in = change.new_chat_member.is_present();
        if is_in && !was_in {
            if self.store.clear_chat_problem(chat).await? {
                tracing::info!(
                    chat_id = chat,
                    "the bot is back in a chat that had a problem"
                );
            }
            tracing::info!(chat_id = chat, title = ?change.chat.title(), "the bot was added to a chat");
            if !change.chat.is_private()
                && let Err(e) = self
                    .telegram
                    .bot()
                    .send_message(change.chat.id, commands::chat_id(chat, None))
                    .parse_mode(ParseMode::Html)
                    .await
            {
                tracing::warn!(chat_id = chat, error = %e, "cannot greet a chat the bot joined");
            }
        } else if was_in && !is_in {
            let (problem, fix) = if change.chat.is_private() {
                (
                    "the user blocked the bot".to_owned(),
                    "ask them to unblock the bot and send it /start, or remove this chat from its \
                     receiver"
                        .to_owned(),
                )
            } else {
                (
                    format!(
                        "the bot was removed from this chat by {}",
                        change.from.full_name()
                    ),
                    "add the bot to the chat again, or remove this chat from its receiver"
                        .to_owned(),
                )
            };
            chat_problem(&self.store, chat, &problem, &fix, now).await?;
        }
        Ok(())
    }
}

fn allowed_updates() -> Vec<AllowedUpdate> {
    vec![
        AllowedUpdate::Message,
        AllowedUpdate::CallbackQuery,
        AllowedUpdate::MyChatMember,
    ]
}

/// `telegram.webhook_secret`, or one derived from the bot token so no extra secret is needed.
fn webhook_secret(config: &crate::config::TelegramConfig) -> String {
    if let Some(secret) = config
        .webhook_secret
        .as_ref()
        .filter(|s| !s.expose().is_empty())
    {
        return secret.expose().to_owned();
    }
    use sha2::{Digest, Sha256};
    let token = config
        .token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .unwrap_or_default();
    let digest = Sha256::digest(format!("ringback webhook v1\0{token}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the bot's updates from Telegram: {0:?}")]
    Telegram(DeliveryError),
}

/// A group became a supergroup: later alerts go to its new id, and the config line to change is
/// recorded as the old chat's problem. `receiver` names the receiver when it is known.
pub async fn follow_migration(
    store: &Store,
    old: i64,
    new: i64,
    receiver: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    store.migrate_chat(old, new, now).await?;
    let place = receiver.map_or("its receiver".to_owned(), |r| {
        format!("[receivers.{r}] telegram")
    });
    chat_problem(
        store,
        old,
        &format!("the group became supergroup {new}; alerts go there now"),
        &format!("in the config, change {old} to {new} in {place}"),
        now,
    )
    .await
}

/// Records that a chat cannot receive alerts, and says in the log what fixes it.
pub async fn chat_problem(
    store: &Store,
    chat_id: i64,
    problem: &str,
    fix: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tracing::error!(chat_id, %problem, %fix, "a Telegram chat cannot receive alerts");
    metrics::counter!("ringback_telegram_chat_problems_total").increment(1);
    store
        .record_chat_problem(&ChatProblem {
            chat_id,
            problem: problem.to_owned(),
            fix: fix.to_owned(),
            at: now,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_webhook_secret_is_what_telegram_accepts() {
        let config = crate::config::TelegramConfig {
            token: Some(crate::config::Secret::new("123:abc")),
            ..Default::default()
        };
        let secret = webhook_secret(&config);
        // Telegram allows 1-256 characters of A-Z, a-z, 0-9, _ and -.
        assert!((1..=256).contains(&secret.len()));
        assert!(
            secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert!(!secret.contains("abc"));
    }
}
