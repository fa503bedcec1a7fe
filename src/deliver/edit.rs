//! Brings sent Telegram alerts up to date after a button press or an automatic resolution:
//! re-renders the message from its alerts as they stand, and replaces its text and buttons.

use chrono::{DateTime, Duration, Utc};

use super::{Deliverer, DeliveryError, TelegramOptions, backoff};
use crate::render::CallView;
use crate::store::{QueuedEdit, StoreError};

/// An edit that keeps failing for reasons other than limits is dropped after this many tries:
/// the alert itself was delivered, only its state line is out of date.
const MAX_EDIT_ATTEMPTS: i64 = 8;

impl Deliverer {
    /// Makes every queued edit that is due; returns how many it tried.
    pub(super) async fn edit_step(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let edits = self
            .store
            .claim_edits(now, now + Duration::seconds(60))
            .await?;
        for edit in &edits {
            self.edit(edit, now).await?;
        }
        Ok(edits.len())
    }

    async fn edit(&self, edit: &QueuedEdit, now: DateTime<Utc>) -> Result<(), StoreError> {
        let Some(telegram) = &self.telegram else {
            return self.store.edit_done(edit).await;
        };
        let alerts = self
            .store
            .message_alerts(edit.chat_id, edit.message_id)
            .await?;
        let Some(first) = alerts.first() else {
            return self.store.edit_done(edit).await;
        };
        let options: TelegramOptions = serde_json::from_str(&first.options).unwrap_or_default();
        let template = if options.template.is_empty() {
            crate::render::DEFAULT_TELEGRAM
        } else {
            &options.template
        };
        let (ids, calls): (Vec<i64>, Vec<CallView>) = alerts
            .iter()
            .filter_map(|a| {
                let call = serde_json::from_str::<CallView>(&a.context).ok()?;
                Some((a.outbox_id, call.with_handling(&a.handling)))
            })
            .unzip();
        let text = match self.templates.telegram_parts(template, &calls) {
            Ok(parts) if parts.len() == 1 => parts.into_iter().next().expect("one part"),
            Ok(_) => {
                tracing::warn!(
                    chat_id = edit.chat_id,
                    message_id = edit.message_id,
                    "an updated alert no longer fits one Telegram message; it is left as sent"
                );
                return self.store.edit_done(edit).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot render an alert update; fix the template");
                return self.store.edit_done(edit).await;
            }
        };
        let shown: Vec<(i64, &CallView)> = ids.into_iter().zip(&calls).collect();
        let keyboard = telegram.buttons().keyboard(edit.chat_id, &shown);
        if let Err(ready_at) = self
            .store
            .take_telegram_slot(edit.chat_id, now, telegram.limits())
            .await?
        {
            return self.store.edit_retry(edit, ready_at).await;
        }
        let Ok(message_id) = i32::try_from(edit.message_id) else {
            return self.store.edit_done(edit).await;
        };
        let mut result = telegram
            .edit(edit.chat_id, message_id, &text.text, text.html, &keyboard)
            .await;
        if let Err(DeliveryError::BadMarkup(_)) = result {
            let plain = crate::render::html_to_text(&text.text);
            result = telegram
                .edit(edit.chat_id, message_id, &plain, false, &keyboard)
                .await;
        }
        match result {
            Ok(()) => {
                tracing::info!(chat_id = edit.chat_id, message_id, "alert message updated");
                metrics::counter!("ringback_telegram_edits_total", "result" => "edited")
                    .increment(1);
                self.store.edit_done(edit).await
            }
            Err(DeliveryError::RetryAfter(wait)) => {
                let until = now + Duration::from_std(wait).unwrap_or(Duration::seconds(30));
                self.store.block_telegram_chat(edit.chat_id, until).await?;
                self.store.edit_retry(edit, until).await
            }
            Err(DeliveryError::Transient(reason)) if edit.attempts + 1 < MAX_EDIT_ATTEMPTS => {
                tracing::warn!(chat_id = edit.chat_id, message_id, %reason,
                    "cannot update an alert message; will retry");
                self.store
                    .edit_retry(edit, now + backoff(edit.attempts + 1))
                    .await
            }
            Err(e) => {
                tracing::warn!(chat_id = edit.chat_id, message_id, error = ?e,
                    "cannot update an alert message; it is left as it is");
                metrics::counter!("ringback_telegram_edits_total", "result" => "failed")
                    .increment(1);
                self.store.edit_done(edit).await
            }
        }
    }
}
