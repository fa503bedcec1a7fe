//! Drains the outbox: claims due messages with a lease, groups each destination's batch into as few
//! messages as its channel allows, sends, and records sent / retry (backoff, jitter) / failed.

mod edit;
pub mod email;
pub mod limits;
pub mod telegram;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::render::{CallView, Templates};
use crate::route::TemplateNames;
use crate::store::{OutboxItem, Store, StoreError};

/// How long a claimed message stays claimed; a worker that died mid-send loses its claim then.
const LEASE: Duration = Duration::seconds(120);
const BATCHES_IN_FLIGHT: usize = 16;

/// Why a send did not go through, and so what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Try again later (network, timeout, 5xx, SMTP 4xx).
    Transient(String),
    /// Telegram asked to wait this long (429).
    RetryAfter(StdDuration),
    /// Never going to work as it stands (a bad request, SMTP 5xx).
    Permanent(String),
    /// The bot cannot write to this chat (blocked, removed, chat not found) until someone acts.
    ChatUnreachable(String),
    /// The group became a supergroup with this id.
    ChatMigrated(i64),
    /// Telegram could not parse the message's HTML.
    BadMarkup(String),
}

pub const TELEGRAM: &str = "telegram";
pub const EMAIL: &str = "email";

/// A Telegram message's options, stored with it in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegramOptions {
    pub thread: Option<i32>,
    pub silent: bool,
    pub template: String,
}

/// An email's options, stored with it in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailOptions {
    pub templates: TemplateNames,
}

pub struct Deliverer {
    store: Store,
    templates: Arc<Templates>,
    telegram: Option<telegram::Telegram>,
    mailer: Option<email::Mailer>,
}

impl Deliverer {
    pub fn new(
        store: Store,
        templates: Arc<Templates>,
        telegram: Option<telegram::Telegram>,
        mailer: Option<email::Mailer>,
    ) -> Deliverer {
        Deliverer {
            store,
            templates,
            telegram,
            mailer,
        }
    }

    /// Sends every message due at `now` (as far as limits allow); returns how many batches it tried.
    pub async fn step(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let items = self.store.claim_outbox(now, now + LEASE, 500).await?;
        let mut batches: Vec<Vec<OutboxItem>> = Vec::new();
        for item in items {
            match batches
                .iter_mut()
                .find(|b| b[0].batch_key == item.batch_key)
            {
                Some(batch) => batch.push(item),
                None => batches.push(vec![item]),
            }
        }
        let count = batches.len() + self.edit_step(now).await?;
        // Read once a pass, not once a message: a chat that had a problem is cleared when a
        // message to it goes through again.
        let troubled: HashSet<i64> = if batches.is_empty() {
            HashSet::new()
        } else {
            self.store
                .chat_problems()
                .await?
                .into_iter()
                .map(|p| p.chat_id)
                .collect()
        };
        let troubled = &troubled;
        futures_util::stream::iter(batches)
            .for_each_concurrent(BATCHES_IN_FLIGHT, |batch| async move {
                if let Err(e) = self.send_batch(&batch, troubled, now).await {
                    tracing::error!(error = %e, "cannot record a delivery; it will be retried when its claim lapses");
                }
            })
            .await;
        Ok(count)
    }

    async fn send_batch(
        &self,
        batch: &[OutboxItem],
        troubled: &HashSet<i64>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(digest) = &batch[0].digest {
            let email = crate::render::Email {
                subject: digest.subject.clone(),
                text: digest.text.clone(),
                html: digest.html.clone(),
            };
            return self.send_rendered_email(batch, &email, 0, now).await;
        }
        let calls: Vec<CallView> = match batch
            .iter()
            .map(|i| {
                serde_json::from_str::<CallView>(&i.context).map(|c| c.with_handling(&i.handling))
            })
            .collect::<Result<_, _>>()
        {
            Ok(calls) => calls,
            Err(e) => {
                let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
                return self
                    .store
                    .mark_failed(&ids, &format!("unreadable alert context: {e}"))
                    .await;
            }
        };
        match batch[0].channel.as_str() {
            TELEGRAM => self.send_telegram(batch, &calls, troubled, now).await,
            EMAIL => self.send_email(batch, &calls, now).await,
            other => {
                let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
                self.store
                    .mark_failed(&ids, &format!("unknown channel {other}"))
                    .await
            }
        }
    }

    async fn send_telegram(
        &self,
        batch: &[OutboxItem],
        calls: &[CallView],
        troubled: &HashSet<i64>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let first = &batch[0];
        let options: TelegramOptions = serde_json::from_str(&first.options).unwrap_or_default();
        let template = if options.template.is_empty() {
            crate::render::DEFAULT_TELEGRAM
        } else {
            &options.template
        };
        let ids =
            |range: std::ops::Range<usize>| batch[range].iter().map(|i| i.id).collect::<Vec<_>>();
        let parts = match self.templates.telegram_parts(template, calls) {
            Ok(parts) => parts,
            Err(e) => {
                return self
                    .store
                    .mark_failed(&ids(0..batch.len()), &e.to_string())
                    .await;
            }
        };
        let Ok(chat_id) = first.destination.parse::<i64>() else {
            return self
                .store
                .mark_failed(&ids(0..batch.len()), "the destination is not a chat id")
                .await;
        };
        let Some(telegram) = &self.telegram else {
            for part in &parts {
                tracing::warn!(
                    chat_id,
                    route = %first.route,
                    text = %part.text,
                    "telegram.token is not set: this alert is logged instead of sent"
                );
                self.store
                    .mark_sent(&ids(part.calls.clone()), now, "logged")
                    .await?;
            }
            return Ok(());
        };
        let target = telegram::Target {
            chat_id,
            thread: options.thread,
            silent: options.silent,
        };
        for (index, part) in parts.iter().enumerate() {
            let rest = part.calls.start..batch.len();
            if let Err(ready_at) = self
                .store
                .take_telegram_slot(chat_id, now, telegram.limits())
                .await?
            {
                return self.store.release(&ids(rest), ready_at).await;
            }
            let shown: Vec<(i64, &CallView)> = batch[part.calls.clone()]
                .iter()
                .zip(&calls[part.calls.clone()])
                .map(|(item, call)| (item.id, call))
                .collect();
            let keyboard = telegram.buttons().keyboard(chat_id, &shown);
            let mut result = telegram
                .send(target, &part.text, part.html, &keyboard)
                .await;
            if let Err(DeliveryError::BadMarkup(detail)) = &result {
                // A template that Telegram cannot parse must not lose the alert: send it as text.
                tracing::error!(route = %first.route, %detail, "Telegram cannot parse this alert's HTML; sending it as plain text. Fix the template.");
                result = telegram
                    .send(
                        target,
                        &crate::render::html_to_text(&part.text),
                        false,
                        &keyboard,
                    )
                    .await;
            }
            match result {
                Ok(message_id) => {
                    self.store
                        .mark_sent(&ids(part.calls.clone()), now, &message_id.to_string())
                        .await?;
                    if troubled.contains(&chat_id) && self.store.clear_chat_problem(chat_id).await?
                    {
                        tracing::info!(chat_id, "Telegram accepts alerts for this chat again");
                    }
                    count(&batch[part.calls.clone()], "sent", now);
                    tracing::info!(
                        chat_id,
                        message_id,
                        calls = part.calls.len(),
                        part = index + 1,
                        "alert sent to Telegram"
                    );
                }
                Err(DeliveryError::RetryAfter(wait)) => {
                    let until = now + Duration::from_std(wait).unwrap_or(Duration::seconds(30));
                    self.store.block_telegram_chat(chat_id, until).await?;
                    tracing::warn!(
                        chat_id,
                        retry_after_seconds = wait.as_secs(),
                        "Telegram asked to slow down"
                    );
                    return self
                        .store
                        .mark_retry(
                            &ids(rest),
                            until,
                            &format!("429: retry after {} s", wait.as_secs()),
                        )
                        .await;
                }
                Err(DeliveryError::ChatMigrated(new_chat)) => {
                    tracing::warn!(
                        old_chat_id = chat_id,
                        new_chat_id = new_chat,
                        receiver = %first.receiver,
                        "Telegram group {chat_id} became supergroup {new_chat}: alerts now go there. \
                         In the config, change {chat_id} to {new_chat} in [receivers.{}] telegram",
                        first.receiver
                    );
                    crate::bot::follow_migration(
                        &self.store,
                        chat_id,
                        new_chat,
                        Some(&first.receiver),
                        now,
                    )
                    .await?;
                    return self
                        .store
                        .mark_retry(&ids(rest), now, &format!("chat migrated to {new_chat}"))
                        .await;
                }
                Err(DeliveryError::ChatUnreachable(reason)) => {
                    crate::bot::chat_problem(
                        &self.store,
                        chat_id,
                        &reason,
                        &format!(
                            "add the bot to the chat again (or unblock it and send it /start), or \
                             fix the chat id in [receivers.{}] telegram",
                            first.receiver
                        ),
                        now,
                    )
                    .await?;
                    return self
                        .after_failure(&batch[rest], DeliveryError::Permanent(reason), now)
                        .await;
                }
                Err(e) => return self.after_failure(&batch[rest], e, now).await,
            }
        }
        Ok(())
    }

    async fn send_email(
        &self,
        batch: &[OutboxItem],
        calls: &[CallView],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let first = &batch[0];
        let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
        let options: EmailOptions = serde_json::from_str(&first.options).unwrap_or_default();
        let email = match self.templates.email(&options.templates, calls) {
            Ok(email) => email,
            Err(e) => return self.store.mark_failed(&ids, &e.to_string()).await,
        };
        self.send_rendered_email(batch, &email, calls.len(), now)
            .await
    }

    /// Sends one email for a batch (`calls` is how many calls it lists, for the log).
    async fn send_rendered_email(
        &self,
        batch: &[OutboxItem],
        email: &crate::render::Email,
        calls: usize,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let first = &batch[0];
        let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
        let Some(mailer) = &self.mailer else {
            tracing::warn!(to = %first.destination, subject = %email.subject, text = %email.text,
                "email.smtp_url is not set: this alert is logged instead of sent");
            return self.store.mark_sent(&ids, now, "logged").await;
        };
        match mailer.send(&first.destination, email).await {
            Ok(reply) => {
                tracing::info!(to = %first.destination, route = %first.route, calls, %reply, "email sent");
                count(batch, "sent", now);
                self.store.mark_sent(&ids, now, &reply).await
            }
            Err(e) => self.after_failure(batch, e, now).await,
        }
    }

    /// Retries with exponential backoff and jitter until the deadline, or gives up for good.
    async fn after_failure(
        &self,
        items: &[OutboxItem],
        error: DeliveryError,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
        let first = &items[0];
        let reason = match error {
            DeliveryError::Permanent(reason)
            | DeliveryError::BadMarkup(reason)
            | DeliveryError::ChatUnreachable(reason) => {
                tracing::error!(channel = %first.channel, to = %first.destination, receiver = %first.receiver,
                    %reason, "alert delivery failed for good; it will not be retried");
                count(items, "failed", now);
                return self.store.mark_failed(&ids, &reason).await;
            }
            DeliveryError::Transient(reason) => reason,
            DeliveryError::RetryAfter(d) => format!("asked to retry after {} s", d.as_secs()),
            DeliveryError::ChatMigrated(c) => format!("chat migrated to {c}"),
        };
        let attempts = first.attempts + 1;
        let retry_at = now + backoff(attempts);
        if retry_at > first.deadline {
            tracing::error!(channel = %first.channel, to = %first.destination, attempts, %reason,
                "alert delivery gave up at its deadline (alerts.retry_deadline_hours)");
            count(items, "failed", now);
            return self
                .store
                .mark_failed(
                    &ids,
                    &format!("gave up after {attempts} attempts: {reason}"),
                )
                .await;
        }
        tracing::warn!(channel = %first.channel, to = %first.destination, attempts, %reason,
            retry_at = %retry_at, "alert delivery failed; will retry");
        count(items, "retry", now);
        self.store.mark_retry(&ids, retry_at, &reason).await
    }
}

/// Counts a delivery attempt's result, and for sent alerts the time since their record was stored.
fn count(items: &[OutboxItem], result: &'static str, now: DateTime<Utc>) {
    let Some(first) = items.first() else { return };
    let channel = if first.digest.is_some() {
        "digest"
    } else {
        first.channel.as_str()
    }
    .to_owned();
    metrics::counter!("ringback_deliveries_total", "channel" => channel.clone(), "result" => result)
        .increment(items.len() as u64);
    if result == "sent" {
        for item in items {
            if let Some(stored) = item.record_received_at {
                let seconds = (now - stored).num_milliseconds() as f64 / 1000.0;
                metrics::histogram!("ringback_delivery_latency_seconds", "channel" => channel.clone())
                    .record(seconds.max(0.0));
            }
        }
    }
}

/// 5 s, 10 s, 20 s ... up to 15 min, each within ±20 % so retries from a burst spread out.
pub fn backoff(attempts: i64) -> Duration {
    let exponent = attempts.clamp(1, 20) - 1;
    let base_ms = (5_000i64 << exponent).min(15 * 60 * 1000);
    let jitter = 0.8 + fastrand::f64() * 0.4;
    Duration::milliseconds((base_ms as f64 * jitter) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..50 {
            let first = backoff(1).num_milliseconds();
            assert!((4_000..=6_000).contains(&first), "{first}");
            let third = backoff(3).num_milliseconds();
            assert!((16_000..=24_000).contains(&third), "{third}");
            let late = backoff(40).num_milliseconds();
            assert!((720_000..=1_080_000).contains(&late), "{late}");
        }
    }
}
