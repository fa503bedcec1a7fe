//! What the Telegram bot keeps: who claimed or called back each alert, when its caller was
//! reached, which messages need editing, chats with problems, and the update consumer's lease.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::db::Db;
use super::{Columns, Store, StoreError, millis};

/// Where an alert stands: open, claimed, called back (by a button), or reached (by a later call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handling {
    pub claimed_by: Option<String>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub handled_by: Option<String>,
    pub handled_at: Option<DateTime<Utc>>,
    pub reached_by: Option<String>,
    pub reached_at: Option<DateTime<Utc>>,
}

impl Handling {
    /// Neither called back nor reached: someone still has to act.
    pub fn is_open(&self) -> bool {
        self.handled_at.is_none() && self.reached_at.is_none()
    }

    pub(super) fn from_row(row: &Columns) -> Result<Handling, StoreError> {
        Ok(Handling {
            claimed_by: row.get("claimed_by")?,
            claimed_at: row.millis("claimed_at")?,
            handled_by: row.get("handled_by")?,
            handled_at: row.millis("handled_at")?,
            reached_by: row.get("reached_by")?,
            reached_at: row.millis("reached_at")?,
        })
    }
}

/// A later call that reached a caller: every open alert for these numbers is resolved by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub numbers: Vec<String>,
    pub agent: Option<String>,
    /// When the answered call happened.
    pub at: DateTime<Utc>,
    /// When its record was stored: only alerts for calls stored before it are resolved.
    pub record_received_at: DateTime<Utc>,
}

/// A button press's alert, as sent to one chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PressedAlert {
    pub alert_id: i64,
    pub kind: String,
    pub chat_id: String,
    pub message_id: Option<String>,
    pub handling: Handling,
}

/// One alert of a Telegram message, for re-rendering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAlert {
    pub outbox_id: i64,
    pub options: String,
    pub context: String,
    pub kind: String,
    pub handling: Handling,
}

/// A message edit waiting to be made; `version` tells whether a newer change queued it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedEdit {
    pub chat_id: i64,
    pub message_id: i64,
    pub attempts: i64,
    pub version: i64,
}

/// What a button press changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Claim,
    CalledBack,
    Release,
}

/// A chat the bot cannot deliver to, and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatProblem {
    pub chat_id: i64,
    pub problem: String,
    pub fix: String,
    pub at: DateTime<Utc>,
}

const HANDLING: &str =
    "a.claimed_by, a.claimed_at, a.handled_by, a.handled_at, a.reached_by, a.reached_at";

impl Store {
    /// The alert behind outbox message `outbox_id`, if it is a Telegram alert.
    pub async fn pressed_alert(&self, outbox_id: i64) -> Result<Option<PressedAlert>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT a.id AS alert_id, a.kind, o.destination, o.message_id, {HANDLING} FROM outbox o \
             JOIN alerts a ON a.id = o.alert_id WHERE o.id = $1 AND o.channel = 'telegram'"
        ))
        .bind(outbox_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(PressedAlert {
                alert_id: row.try_get("alert_id")?,
                kind: row.try_get("kind")?,
                chat_id: row.try_get("destination")?,
                message_id: row.try_get("message_id")?,
                handling: Handling::from_row(&Columns::Any(&row))?,
            })
        })
        .transpose()
    }

    /// Applies a press to an alert if it still can be (compare-and-set, so two people pressing at
    /// once cannot both claim), and queues the edit of every message showing it; `false` when the
    /// alert had moved on.
    pub async fn change_alert(
        &self,
        alert_id: i64,
        change: Change,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = match change {
            Change::Claim => {
                "UPDATE alerts SET claimed_by = $1, claimed_at = $2 WHERE id = $3 \
                 AND claimed_at IS NULL AND handled_at IS NULL AND reached_at IS NULL"
            }
            Change::CalledBack => {
                "UPDATE alerts SET handled_by = $1, handled_at = $2 WHERE id = $3 \
                 AND handled_at IS NULL AND reached_at IS NULL"
            }
            Change::Release => {
                "UPDATE alerts SET claimed_by = NULL, claimed_at = NULL WHERE claimed_by = $1 \
                 AND $2 >= 0 AND id = $3 AND handled_at IS NULL AND reached_at IS NULL"
            }
        };
        let (_turn, mut tx) = self.begin_write().await?;
        let changed = sqlx::query(sql)
            .bind(by)
            .bind(now.timestamp_millis())
            .bind(alert_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if changed {
            queue_edits(&mut tx, &[alert_id], now).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// The alerts of one sent Telegram message, in the order the message lists them.
    pub async fn message_alerts(
        &self,
        chat_id: i64,
        message_id: i64,
    ) -> Result<Vec<MessageAlert>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT o.id, o.options, a.context, a.kind, {HANDLING} FROM outbox o \
             JOIN alerts a ON a.id = o.alert_id WHERE o.channel = 'telegram' \
             AND o.destination = $1 AND o.message_id = $2 ORDER BY o.id"
        ))
        .bind(chat_id.to_string())
        .bind(message_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(MessageAlert {
                    outbox_id: row.try_get("id")?,
                    options: row.try_get("options")?,
                    context: row.try_get("context")?,
                    kind: row.try_get("kind")?,
                    handling: Handling::from_row(&Columns::Any(row))?,
                })
            })
            .collect()
    }

    /// Claims due message edits until `lease_until`.
    pub async fn claim_edits(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<QueuedEdit>, StoreError> {
        // As for the outbox: a read settles the usual nothing-due case without a write turn.
        let due = "SELECT 1 AS one FROM telegram_edits WHERE due_at <= $1 \
             AND (lease_until IS NULL OR lease_until <= $1) LIMIT 1";
        if !self.finds_due(due, now).await? {
            return Ok(Vec::new());
        }
        let _turn = self.gate.enter().await;
        let rows = sqlx::query(
            "UPDATE telegram_edits SET lease_until = $1 WHERE due_at <= $2 \
             AND (lease_until IS NULL OR lease_until <= $2) \
             RETURNING chat_id, message_id, attempts, version",
        )
        .bind(lease_until.timestamp_millis())
        .bind(now.timestamp_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueuedEdit {
                    chat_id: r.try_get("chat_id")?,
                    message_id: r.try_get("message_id")?,
                    attempts: r.try_get("attempts")?,
                    version: r.try_get("version")?,
                })
            })
            .collect()
    }

    /// The edit is made (or can never be): forget it, unless a newer change queued it again.
    pub async fn edit_done(&self, edit: &QueuedEdit) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        sqlx::query(
            "DELETE FROM telegram_edits WHERE chat_id = $1 AND message_id = $2 AND version = $3",
        )
        .bind(edit.chat_id)
        .bind(edit.message_id)
        .bind(edit.version)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE telegram_edits SET lease_until = NULL WHERE chat_id = $1 AND message_id = $2",
        )
        .bind(edit.chat_id)
        .bind(edit.message_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn edit_retry(&self, edit: &QueuedEdit, at: DateTime<Utc>) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        let (chat_id, message_id) = (edit.chat_id, edit.message_id);
        sqlx::query(
            "UPDATE telegram_edits SET due_at = $1, attempts = attempts + 1, lease_until = NULL \
             WHERE chat_id = $2 AND message_id = $3",
        )
        .bind(at.timestamp_millis())
        .bind(chat_id)
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When the next queued edit comes due.
    pub async fn next_edit_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read_time(
            "SELECT MIN(CASE WHEN lease_until IS NULL THEN due_at ELSE lease_until END) AS at \
             FROM telegram_edits",
            &[],
        )
        .await
    }

    /// Open (unclaimed, unresolved) missed-call alerts sent or bound for `chat_id`, newest first:
    /// `(record id, alert context)`.
    pub async fn open_alerts_in_chat(
        &self,
        chat_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.record_id, a.context FROM outbox o JOIN alerts a ON a.id = o.alert_id \
             WHERE o.channel = 'telegram' AND o.destination = $1 AND a.kind = 'missed_call' \
             AND a.claimed_at IS NULL AND a.handled_at IS NULL AND a.reached_at IS NULL \
             ORDER BY a.id DESC LIMIT $2",
        )
        .bind(chat_id.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("record_id")?, r.try_get("context")?)))
            .collect()
    }

    /// Numbers marked "Called back ✓" from `from` to `to`, and when.
    pub async fn marked_called_back(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT number, handled_at FROM alerts WHERE handled_at >= $1 AND handled_at < $2 \
             AND number IS NOT NULL",
        )
        .bind(from.timestamp_millis())
        .bind(to.timestamp_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("number")?,
                    millis(r, "handled_at")?
                        .ok_or_else(|| StoreError::Corrupt("alerts.handled_at".into()))?,
                ))
            })
            .collect()
    }

    pub async fn record_chat_problem(&self, problem: &ChatProblem) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        sqlx::query(
            "INSERT INTO telegram_chat_problems (chat_id, problem, fix, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (chat_id) DO UPDATE SET problem = excluded.problem, fix = excluded.fix, \
             at = excluded.at",
        )
        .bind(problem.chat_id)
        .bind(&problem.problem)
        .bind(&problem.fix)
        .bind(problem.at.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The chat works again; `true` when it had a problem on record.
    pub async fn clear_chat_problem(&self, chat_id: i64) -> Result<bool, StoreError> {
        // Called after every send: a read, which takes no write lock, settles the usual case.
        let known = sqlx::query("SELECT 1 AS one FROM telegram_chat_problems WHERE chat_id = $1")
            .bind(chat_id)
            .fetch_optional(&self.pool)
            .await?;
        if known.is_none() {
            return Ok(false);
        }
        let _turn = self.gate.enter().await;
        Ok(
            sqlx::query("DELETE FROM telegram_chat_problems WHERE chat_id = $1")
                .bind(chat_id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    pub async fn chat_problems(&self) -> Result<Vec<ChatProblem>, StoreError> {
        self.read(
            "SELECT * FROM telegram_chat_problems ORDER BY chat_id",
            &[],
            |r| {
                Ok(ChatProblem {
                    chat_id: r.get("chat_id")?,
                    problem: r.get("problem")?,
                    fix: r.get("fix")?,
                    at: r
                        .millis("at")?
                        .ok_or_else(|| StoreError::Corrupt("telegram_chat_problems.at".into()))?,
                })
            },
        )
        .await
    }

    /// Takes or renews lease `name` for `holder` until `until`; `false` while another holder's
    /// lease has not run out.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.enter().await;
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, until_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_at = excluded.until_at \
             WHERE leases.holder = excluded.holder OR leases.until_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until.timestamp_millis())
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Gives a lease up at once, so another instance need not wait for it to run out.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        sqlx::query("UPDATE leases SET until_at = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn lease_holder(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT holder FROM leases WHERE name = $1 AND until_at > $2")
            .bind(name)
            .bind(now.timestamp_millis())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("holder")).transpose()?)
    }

    pub async fn bot_value(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT value FROM bot_state WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    pub async fn set_bot_value(&self, name: &str, value: i64) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        sqlx::query(
            "INSERT INTO bot_state (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Resolves the open alerts a later answered call reached, inside the decision's transaction;
/// returns how many.
pub(super) async fn resolve(
    tx: &mut impl Db,
    resolution: &Resolution,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut resolved = Vec::new();
    for number in &resolution.numbers {
        let ids = tx
            .fetch(
                "UPDATE alerts SET reached_by = $1, reached_at = $2 WHERE number = $3 \
                 AND kind = 'missed_call' AND handled_at IS NULL AND reached_at IS NULL \
                 AND EXISTS (SELECT 1 FROM call_records r WHERE r.id = alerts.record_id \
                 AND r.received_at <= $4) RETURNING id",
                &[
                    resolution.agent.as_deref().into(),
                    resolution.at.timestamp_millis().into(),
                    number.into(),
                    resolution.record_received_at.timestamp_millis().into(),
                ],
                |row| row.get::<i64>("id"),
            )
            .await?;
        resolved.extend(ids);
    }
    queue_edits(tx, &resolved, now).await?;
    Ok(resolved.len())
}

/// Queues an edit of every sent Telegram message that shows one of `alert_ids`.
async fn queue_edits(
    tx: &mut impl Db,
    alert_ids: &[i64],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for alert_id in alert_ids {
        let messages = tx
            .fetch(
                "SELECT destination, message_id FROM outbox WHERE alert_id = $1 \
                 AND channel = 'telegram' AND state = 'sent'",
                &[(*alert_id).into()],
                |row| {
                    Ok((
                        row.get::<String>("destination")?,
                        row.get::<Option<String>>("message_id")?,
                    ))
                },
            )
            .await?;
        for (chat, message) in messages {
            // "logged" messages (no bot token) have no Telegram message to edit.
            let (Ok(chat), Some(Ok(message))) =
                (chat.parse::<i64>(), message.map(|m| m.parse::<i64>()))
            else {
                continue;
            };
            tx.execute(
                "INSERT INTO telegram_edits (chat_id, message_id, due_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (chat_id, message_id) DO UPDATE SET due_at = excluded.due_at, \
                 attempts = 0, version = telegram_edits.version + 1",
                &[chat.into(), message.into(), now.timestamp_millis().into()],
            )
            .await?;
        }
    }
    Ok(())
}
