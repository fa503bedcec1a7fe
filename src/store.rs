//! Durable storage through sqlx: SQLite by default, PostgreSQL by URL, one code path for both.
//! Times are stored as epoch milliseconds so the same queries run on either database.

use std::time::Duration;

/// The columns `record_from_row` reads, named so that reading records does not copy the
/// request each one came from, which is kept in the same row.
macro_rules! record_columns {
    () => {
        "id, provider, dedup_key, call_id, conversation_id, leg, direction, outcome, \
         provider_status, caller, caller_e164, caller_name, called, called_e164, agent, \
         agent_phone, agent_phone_e164, call_group, started_at, answered_at, ended_at, \
         ring_seconds, talk_seconds, hangup, recording, extra, received_at, resends"
    };
}

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

mod bot;
mod db;
mod group;
mod writer;

use db::{Columns, Db, Param, PoolDb, Readers, run_ready};

pub use bot::{Change, ChatProblem, Handling, MessageAlert, PressedAlert, QueuedEdit, Resolution};

use crate::classify::{DecisionKind, DecisionRequest};
use crate::deliver::limits::Limits;
use crate::domain::{CallRecord, Outcome, PhoneNumber, Provider};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "storage.url must start with sqlite:// or postgres://, got `{0}`; see config/ringback.toml"
    )]
    UnsupportedUrl(String),
    #[error("cannot create the database folder {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}; check storage.url and that the database is reachable")]
    Connect(#[source] sqlx::Error),
    #[error("cannot bring the database schema up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored row holds an unexpected value: {0}")]
    Corrupt(String),
    /// A write committed together with others failed; the text is the group's error.
    #[error("{0}")]
    Grouped(String),
}

/// The request a record came from, as received, with ringback's own secrets removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub remote_addr: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A webhook's record that could not be stored. Its request comes back to be kept among the
/// refused ones, unless the writer stopped while holding it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct NotStored {
    pub error: StoreError,
    pub request: Option<RawRequest>,
}

/// A request refused with a 4xx, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The provider as named in the URL, known or not.
    pub provider: String,
    pub request: RawRequest,
    pub status: u16,
    pub error: String,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored {
        id: i64,
    },
    /// A resend of a record already stored under the same dedup key.
    Duplicate {
        id: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub id: i64,
    pub record: CallRecord,
    pub received_at: DateTime<Utc>,
    pub resends: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    writer: writer::Writer,
    gate: WriteGate,
    /// On a SQLite file, the connections the pipeline's reads run on in-line (see `db.rs`).
    readers: Option<std::sync::Arc<Readers>>,
    marks: std::sync::Arc<group::GroupCommit<(Vec<i64>, Mark), ()>>,
    slots: std::sync::Arc<group::GroupCommit<SlotRequest, Result<(), DateTime<Utc>>>>,
    /// When the latest webhook handed to the writer was received (Unix milliseconds, clock
    /// time), so that the decider can tell a burst under way from a backlog it left.
    last_webhook_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// Outbox rows one mark statement names at most, well within both databases' bound parameters.
const MARKS_PER_STATEMENT: usize = 300;

/// What becomes of claimed outbox messages after an attempt.
#[derive(Debug)]
enum Mark {
    Sent { at: i64, message_id: String },
    Unsent(Unsent),
}

/// An attempt that did not send: tried again later, put back untried, or given up.
#[derive(Debug)]
enum Unsent {
    Retry { at: i64, error: String },
    Release { at: i64 },
    Failed { error: String },
}

impl Unsent {
    /// One statement for `count` ids, for `bind`.
    fn sql(&self, count: usize) -> String {
        let (set, first) = match self {
            Unsent::Retry { .. } => (
                "state = 'pending', not_before = $1, last_error = $2, attempts = attempts + 1, \
                 lease_until = NULL",
                3,
            ),
            Unsent::Release { .. } => ("state = 'pending', not_before = $1, lease_until = NULL", 2),
            Unsent::Failed { .. } => (
                "state = 'failed', last_error = $1, attempts = attempts + 1, lease_until = NULL",
                2,
            ),
        };
        let placeholders: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
        format!(
            "UPDATE outbox SET {set} WHERE id IN ({})",
            placeholders.join(", ")
        )
    }

    /// The values `sql` binds, for `ids`.
    fn params<'a>(&'a self, ids: &[i64]) -> Vec<Param<'a>> {
        let mut params = match self {
            Unsent::Retry { at, error } => vec![Param::from(*at), error.into()],
            Unsent::Release { at } => vec![Param::from(*at)],
            Unsent::Failed { error } => vec![error.into()],
        };
        params.extend(ids.iter().map(|id| Param::from(*id)));
        params
    }
}

/// Sent marks of `count` messages in one statement, each with its own time and message id
/// (bound as id, time, message id): at a thousand alerts a second, a statement each is where
/// the time goes.
fn sent_marks_sql(count: usize) -> String {
    let rows: Vec<String> = (0..count)
        .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    // VALUES names its columns column1, column2, ... on SQLite and PostgreSQL alike.
    format!(
        "UPDATE outbox SET state = 'sent', sent_at = v.column2, message_id = v.column3, \
         attempts = attempts + 1, lease_until = NULL FROM (VALUES {}) AS v \
         WHERE outbox.id = v.column1",
        rows.join(", ")
    )
}

/// Runs the claim statement `sql` (epoch milliseconds, as stored): the ids it claimed.
async fn claim_ids(
    db: &mut impl Db,
    sql: &str,
    lease_until: i64,
    now: i64,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    db.fetch(
        sql,
        &[lease_until.into(), now.into(), limit.into()],
        |row| row.get("id"),
    )
    .await
}

/// Writes a group of marks: every sent mark in one statement, the others one per kind.
async fn write_marks(db: &mut impl Db, group: &[(Vec<i64>, Mark)]) -> Result<(), StoreError> {
    let mut sent: Vec<(i64, i64, &str)> = Vec::new();
    let mut unsent = Vec::new();
    for (ids, mark) in group {
        match mark {
            Mark::Sent { at, message_id } => {
                sent.extend(ids.iter().map(|id| (*id, *at, message_id.as_str())));
            }
            Mark::Unsent(how) => unsent.push((ids, how)),
        }
    }
    for chunk in sent.chunks(MARKS_PER_STATEMENT) {
        let params: Vec<Param> = chunk
            .iter()
            .flat_map(|(id, at, message_id)| {
                [Param::from(*id), Param::from(*at), Param::from(*message_id)]
            })
            .collect();
        db.execute(&sent_marks_sql(chunk.len()), &params).await?;
    }
    for (ids, how) in unsent {
        for chunk in ids.chunks(MARKS_PER_STATEMENT) {
            db.execute(&how.sql(chunk.len()), &how.params(chunk))
                .await?;
        }
    }
    Ok(())
}

/// A send to Telegram that wants a slot within the limits.
#[derive(Debug)]
struct SlotRequest {
    chat_id: i64,
    now: DateTime<Utc>,
    limits: Limits,
}

/// SQLite lets one transaction write at a time, and a writer that finds the lock taken sleeps
/// in steps of up to 100 ms before it tries again. Every write of this process (webhooks,
/// decisions, the outbox, Telegram's send slots, the bot) queues here instead, in order, and
/// takes the lock the moment it is free. PostgreSQL locks rows, so there is no gate there.
#[derive(Clone)]
pub(crate) struct WriteGate(Option<std::sync::Arc<tokio::sync::Mutex<()>>>);

impl WriteGate {
    fn for_backend(backend: Backend) -> WriteGate {
        WriteGate((backend == Backend::Sqlite).then(Default::default))
    }

    /// `enter` for a thread outside the async runtime (the SQLite webhook writer).
    pub(crate) fn enter_blocking(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.0.as_ref().map(|gate| gate.blocking_lock())
    }

    pub(crate) async fn enter(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.0 {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }
}

impl Store {
    /// Opens (creating a SQLite file and its folder if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, prepare_sqlite_url(url)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let pool = AnyPoolOptions::new()
            // Room for the decider's reads, the sender's batches and the group commits at once:
            // with 8, under 1,000 alerts a second a commit that held the write turn queued for a
            // connection behind readers, and everything behind it queued too. Connections open
            // as needed and close when idle.
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL with synchronous=FULL: a commit is on disk (fsync'd) when it returns,
                        // which is what lets a webhook be acknowledged right after it. A 512 KiB
                        // page cache per connection (not SQLite's 2 MiB) keeps eight connections
                        // under load within the memory goal; the OS caches the file anyway.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA cache_size = -512",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(StoreError::Connect)?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        let gate = WriteGate::for_backend(backend);
        let file = sqlite_file(&url);
        let writer = match &file {
            Some(path) => writer::Writer::start_sqlite(path, gate.clone())?,
            None => writer::Writer::start(pool.clone(), backend, gate.clone()),
        };
        Ok(Store {
            writer,
            pool,
            backend,
            gate,
            readers: file.map(|path| std::sync::Arc::new(Readers::new(&path))),
            marks: Default::default(),
            slots: Default::default(),
            last_webhook_at: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
        })
    }

    /// A write transaction, begun once this process's write turn is taken (see `WriteGate`);
    /// the turn is held until both are dropped, the transaction first.
    async fn begin_write(
        &self,
    ) -> Result<
        (
            Option<tokio::sync::MutexGuard<'_, ()>>,
            sqlx::Transaction<'static, sqlx::Any>,
        ),
        StoreError,
    > {
        let turn = self.gate.enter().await;
        Ok((turn, self.pool.begin().await?))
    }

    /// Runs a query outside any transaction and maps its rows: in-line on a SQLite file, through
    /// the pool otherwise.
    async fn read<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnMut(&Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        match &self.readers {
            Some(readers) => readers.read(|mut db| run_ready(db.fetch(sql, params, map))),
            None => PoolDb(&self.pool).fetch(sql, params, map).await,
        }
    }

    /// The one time column of a one-row query (`MIN(...) AS at`).
    async fn read_time(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let times = self.read(sql, params, |row| row.millis("at")).await?;
        Ok(times.into_iter().next().flatten())
    }

    /// Whether the pipeline's writes run on the SQLite writer's thread, in its next batch's
    /// transaction (a SQLite file), rather than in transactions of their own on the pool.
    fn on_writer(&self) -> bool {
        self.readers.is_some()
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Finishes the writes under way and closes every connection.
    pub async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close();
        }
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Stops the webhook writer alone, as a writer that failed would be stopped.
    #[cfg(test)]
    pub(crate) async fn close_writer(&self) {
        self.writer.close().await;
    }

    /// Stores `record` and the request it came from, durably, before returning; a resend of a
    /// stored record only counts the resend. Concurrent calls share one transaction and one
    /// fsync (group commit, see `writer.rs`).
    pub async fn ingest(
        &self,
        record: CallRecord,
        raw: RawRequest,
        decision: Option<(DecisionRequest, DateTime<Utc>)>,
    ) -> Result<Ingested, NotStored> {
        self.last_webhook_at.fetch_max(
            raw.received_at.timestamp_millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
        match self
            .writer
            .write(writer::Pending::new(record, raw, decision))
            .await
        {
            (_, Ok(ingested)) => Ok(ingested),
            (pending, Err(error)) => Err(NotStored {
                error,
                request: pending.map(|p| p.raw),
            }),
        }
    }

    /// When the latest webhook this process stored, or tried to, was received.
    pub fn last_webhook_at(&self) -> Option<DateTime<Utc>> {
        // Before the first webhook, i64::MIN: outside chrono's range, so `None`.
        DateTime::from_timestamp_millis(
            self.last_webhook_at
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub async fn reject(&self, rejection: &Rejection) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        let query = sqlx::query(
            "INSERT INTO rejected_requests (provider, method, path, query, headers, body, \
             remote_addr, received_at, status, error, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&rejection.provider);
        let headers = headers_json(&rejection.request.headers);
        bind_request(query, &rejection.request, &headers)
            .bind(i64::from(rejection.status))
            .bind(&rejection.error)
            .bind(&rejection.detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every stored record of one provider call (all its legs and events), oldest first.
    pub async fn records_of_call(
        &self,
        provider: Provider,
        call_id: &str,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        // Two indexed halves (see migration 0006); no row is in both, as the second half only
        // holds records whose call id differs from their conversation.
        self.read(
            RECORDS_OF_CALL,
            &[provider.as_str().into(), call_id.into()],
            record_from_row,
        )
        .await
    }

    /// The request a record came from: kept in the record's row, or for a record stored before
    /// migration 0008 (or by an instance of an earlier version), in `raw_requests`.
    pub async fn raw_request_of(&self, record_id: i64) -> Result<Option<RawRequest>, StoreError> {
        let in_row = sqlx::query(
            "SELECT request_method AS method, request_path AS path, request_query AS query, \
             request_headers AS headers, request_body AS body, request_remote_addr AS remote_addr, \
             received_at FROM call_records WHERE id = $1 AND request_method IS NOT NULL",
        )
        .bind(record_id)
        .fetch_optional(&self.pool)
        .await?;
        let row = match in_row {
            Some(row) => Some(row),
            None => {
                sqlx::query("SELECT * FROM raw_requests WHERE call_record_id = $1")
                    .bind(record_id)
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.as_ref().map(raw_from_row).transpose()
    }

    /// The most recent rejected requests, newest first.
    pub async fn rejections(&self, limit: i64) -> Result<Vec<Rejection>, StoreError> {
        let rows = sqlx::query("SELECT * FROM rejected_requests ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Rejection {
                    provider: row.try_get("provider")?,
                    request: raw_from_row(row)?,
                    status: u16::try_from(row.try_get::<i64, _>("status")?)
                        .map_err(|_| StoreError::Corrupt("rejected_requests.status".into()))?,
                    error: row.try_get("error")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

    pub async fn count_records(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM call_records")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}

/// A decision whose settle window has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDecision {
    pub id: i64,
    pub provider: Provider,
    pub subject: String,
    pub kind: DecisionKind,
    pub record_id: i64,
}

/// An alert to write with its decision, and the messages it sends.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub record_id: i64,
    pub route: String,
    pub receiver: String,
    pub kind: String,
    pub context: String,
    /// The caller's number (E.164 when known), for repeat callers and automatic resolution.
    pub number: Option<String>,
    pub messages: Vec<NewMessage>,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub channel: String,
    pub destination: String,
    pub options: String,
    /// Pending messages with the same key go out together.
    pub batch_key: String,
    /// How long the first message of a batch waits for others to join it.
    pub group_wait: chrono::Duration,
    pub deadline: DateTime<Utc>,
}

/// A message claimed for sending, with what its templates need.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub channel: String,
    pub destination: String,
    pub options: String,
    pub batch_key: String,
    pub attempts: i64,
    pub deadline: DateTime<Utc>,
    /// The alert's template context; empty for a digest.
    pub context: String,
    pub route: String,
    pub receiver: String,
    /// A digest's email, rendered when its period closed.
    pub digest: Option<RenderedEmail>,
    /// When the call record behind an alert was stored, for the delivery latency.
    pub record_received_at: Option<DateTime<Utc>>,
    /// `missed_call` or `agent_ring`; empty for a digest.
    pub kind: String,
    pub handling: Handling,
}

/// An email rendered ahead of sending (digests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A digest email to write with the period it closes.
#[derive(Debug, Clone)]
pub struct NewDigestRun {
    pub periods: i64,
    pub email: RenderedEmail,
    pub recipients: Vec<String>,
    pub deadline: DateTime<Utc>,
}

/// A digest email as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRun {
    pub id: i64,
    pub name: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub periods: i64,
    pub subject: String,
}

/// An outbox row as it stands, for tests and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub alert_id: i64,
    pub channel: String,
    pub destination: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub message_id: Option<String>,
    pub not_before: DateTime<Utc>,
}

impl Store {
    pub async fn due_decisions(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueDecision>, StoreError> {
        self.read(
            "SELECT id, provider, subject, kind, record_id FROM decisions \
             WHERE decided_at IS NULL AND decide_at <= $1 ORDER BY decide_at, id LIMIT $2",
            &[now.timestamp_millis().into(), limit.into()],
            |row| {
                Ok(DueDecision {
                    id: row.get("id")?,
                    provider: row.parsed("provider")?,
                    subject: row.get("subject")?,
                    kind: row.parsed("kind")?,
                    record_id: row.get("record_id")?,
                })
            },
        )
        .await
    }

    /// When the next undecided decision comes due.
    pub async fn next_decision_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read_time(
            "SELECT MIN(decide_at) AS at FROM decisions WHERE decided_at IS NULL",
            &[],
        )
        .await
    }

    pub async fn record(&self, id: i64) -> Result<Option<StoredRecord>, StoreError> {
        let records = self
            .read(
                concat!(
                    "SELECT ",
                    record_columns!(),
                    " FROM call_records WHERE id = $1"
                ),
                &[id.into()],
                record_from_row,
            )
            .await?;
        Ok(records.into_iter().next())
    }

    /// Records each verdict and writes its alerts and messages (and resolves the alerts an
    /// answered call settles), all in one transaction: decisions taken together share one commit.
    /// For each, `None` when it had already been taken (then nothing is written for it);
    /// otherwise how many open alerts it resolved.
    pub async fn commit_decisions(
        &self,
        now: DateTime<Utc>,
        decisions: &[DecisionCommit<'_>],
    ) -> Result<Vec<Option<usize>>, StoreError> {
        // Every pass of the workers comes here, mostly with nothing to commit.
        if decisions.is_empty() {
            return Ok(Vec::new());
        }
        if self.on_writer() {
            let owned: Vec<OwnedDecision> = decisions.iter().map(OwnedDecision::from).collect();
            return self
                .writer
                .run(move |mut db| {
                    owned
                        .iter()
                        .map(|d| run_ready(commit_decision(&mut db, now, &d.as_commit())))
                        .collect()
                })
                .await;
        }
        let (_turn, mut tx) = self.begin_write().await?;
        let mut results = Vec::with_capacity(decisions.len());
        for decision in decisions {
            results.push(commit_decision(&mut tx, now, decision).await?);
        }
        tx.commit().await?;
        Ok(results)
    }

    /// Call-level records from `caller` with one of `outcomes`, received since `since`.
    pub async fn count_calls_from(
        &self,
        caller: &PhoneNumber,
        outcomes: &[Outcome],
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let placeholders: Vec<String> =
            (0..outcomes.len()).map(|i| format!("${}", i + 3)).collect();
        // One column per case, so each reads its index (caller_e164 or caller, received_at)
        // rather than scanning every record.
        let (column, key) = match &caller.e164 {
            Some(e164) => ("caller_e164", e164),
            None => ("caller_e164 IS NULL AND caller", &caller.raw),
        };
        // The conversations are told apart here rather than by `COUNT(DISTINCT ...)`, for which
        // SQLite opens and closes a temporary B-tree on every query: a fifth of this query's
        // cost, and it runs for every missed call.
        let sql = format!(
            "SELECT conversation_id FROM call_records \
             WHERE {column} = $1 AND received_at >= $2 AND leg = 'a' AND outcome IN ({})",
            placeholders.join(", ")
        );
        let mut params: Vec<Param> = vec![key.into(), since.timestamp_millis().into()];
        params.extend(outcomes.iter().map(|o| Param::from(o.as_str())));
        let mut conversations = self
            .read(&sql, &params, |row| row.get::<String>("conversation_id"))
            .await?;
        conversations.sort_unstable();
        conversations.dedup();
        Ok(conversations.len() as i64)
    }

    /// Claims due messages (and messages whose claim lapsed) until `lease_until`.
    pub async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        // Every pass of the workers looks here, thousands of times a second under a burst of
        // webhooks: a read, which needs no write turn, settles the usual nothing-due case.
        let due = "SELECT 1 AS one FROM outbox WHERE (state = 'pending' AND not_before <= $1) \
             OR (state = 'sending' AND lease_until <= $1) LIMIT 1";
        if !self.finds_due(due, now).await? {
            return Ok(Vec::new());
        }
        // On PostgreSQL instances claim side by side: SKIP LOCKED gives each its own rows. SQLite
        // runs one write at a time, so its claim is atomic as it stands.
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET state = 'sending', lease_until = $1 WHERE id IN (\
             SELECT id FROM outbox WHERE (state = 'pending' AND not_before <= $2) \
             OR (state = 'sending' AND lease_until <= $2) ORDER BY id LIMIT $3{lock}) RETURNING id"
        );
        let (lease_until, now) = (lease_until.timestamp_millis(), now.timestamp_millis());
        let ids = if self.on_writer() {
            self.writer
                .run(move |mut db| run_ready(claim_ids(&mut db, &sql, lease_until, now, limit)))
                .await?
        } else {
            let _turn = self.gate.enter().await;
            claim_ids(&mut PoolDb(&self.pool), &sql, lease_until, now, limit).await?
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT o.id, o.digest_run_id, o.channel, o.destination, o.options, o.batch_key, \
             o.attempts, o.deadline, a.context, a.route, a.receiver, a.kind, a.claimed_by, a.claimed_at, \
             a.handled_by, a.handled_at, a.reached_by, a.reached_at, d.name AS digest_name, d.subject, \
             d.text_body, d.html_body, r.received_at AS record_received_at FROM outbox o \
             LEFT JOIN alerts a ON a.id = o.alert_id LEFT JOIN call_records r ON r.id = a.record_id \
             LEFT JOIN digest_runs d ON d.id = o.digest_run_id WHERE o.id IN ({}) ORDER BY o.id",
            placeholders.join(", ")
        );
        let params: Vec<Param> = ids.iter().map(|id| Param::from(*id)).collect();
        self.read(&sql, &params, |row| {
            let digest_name: Option<String> = row.get("digest_name")?;
            let digest = match &digest_name {
                Some(_) => Some(RenderedEmail {
                    subject: row.get("subject")?,
                    text: row.get("text_body")?,
                    html: row.get("html_body")?,
                }),
                None => None,
            };
            let route: Option<String> = row.get("route")?;
            let receiver: Option<String> = row.get("receiver")?;
            Ok(OutboxItem {
                id: row.get("id")?,
                channel: row.get("channel")?,
                destination: row.get("destination")?,
                options: row.get("options")?,
                batch_key: row.get("batch_key")?,
                attempts: row.get("attempts")?,
                deadline: row
                    .millis("deadline")?
                    .ok_or_else(|| StoreError::Corrupt("outbox.deadline".into()))?,
                context: row.get::<Option<String>>("context")?.unwrap_or_default(),
                route: route
                    .or_else(|| digest_name.as_ref().map(|n| format!("digest {n}")))
                    .unwrap_or_default(),
                receiver: receiver.unwrap_or_default(),
                digest,
                record_received_at: row.millis("record_received_at")?,
                kind: row.get::<Option<String>>("kind")?.unwrap_or_default(),
                handling: Handling::from_row(row)?,
            })
        })
        .await
    }

    /// Whether `sql`, a query of one row with `$1` for `now`, finds one: a read, which takes
    /// no write turn.
    async fn finds_due(&self, sql: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let found = self
            .read(sql, &[now.timestamp_millis().into()], |_| Ok(()))
            .await?;
        Ok(!found.is_empty())
    }

    pub async fn mark_sent(
        &self,
        ids: &[i64],
        now: DateTime<Utc>,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let mark = Mark::Sent {
            at: now.timestamp_millis(),
            message_id: message_id.to_owned(),
        };
        self.mark(ids, mark).await
    }

    /// A failed attempt that will be tried again at `retry_at`.
    pub async fn mark_retry(
        &self,
        ids: &[i64],
        retry_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let mark = Mark::Unsent(Unsent::Retry {
            at: retry_at.timestamp_millis(),
            error: error.to_owned(),
        });
        self.mark(ids, mark).await
    }

    /// Puts claimed messages back, unattempted, to be sent at `at` (rate limits, batch splits).
    pub async fn release(&self, ids: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
        let mark = Mark::Unsent(Unsent::Release {
            at: at.timestamp_millis(),
        });
        self.mark(ids, mark).await
    }

    pub async fn mark_failed(&self, ids: &[i64], error: &str) -> Result<(), StoreError> {
        let mark = Mark::Unsent(Unsent::Failed {
            error: error.to_owned(),
        });
        self.mark(ids, mark).await
    }

    /// Records an attempt's result, committed with the results other deliveries record meanwhile:
    /// at a thousand alerts a second, one transaction (and fsync) each would be the bottleneck.
    async fn mark(&self, ids: &[i64], mark: Mark) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.on_writer() {
            let group = [(ids.to_vec(), mark)];
            return self
                .writer
                .run(move |mut db| run_ready(write_marks(&mut db, &group)))
                .await;
        }
        self.marks
            .submit((ids.to_vec(), mark), |group| async move {
                let (_turn, mut tx) = self.begin_write().await?;
                write_marks(&mut tx, &group).await?;
                tx.commit().await?;
                Ok(vec![(); group.len()])
            })
            .await
    }

    /// Sends everything still waiting for `old` to `new` from now on.
    pub async fn migrate_chat(
        &self,
        old: i64,
        new: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO chat_migrations (old_chat_id, new_chat_id, migrated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (old_chat_id) DO UPDATE SET new_chat_id = excluded.new_chat_id",
        )
        .bind(old)
        .bind(new)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE outbox SET destination = $1, batch_key = REPLACE(batch_key, $2, $3) \
             WHERE channel = 'telegram' AND destination = $4 AND state IN ('pending', 'sending')",
        )
        .bind(new.to_string())
        .bind(format!("|{old}|"))
        .bind(format!("|{new}|"))
        .bind(old.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Where a Telegram chat lives now, after any supergroup migrations.
    pub async fn current_chat(&self, chat_id: i64) -> Result<i64, StoreError> {
        let mut chat = chat_id;
        // Bounded: a chat migrates at most once, but a bad row must not loop forever.
        for _ in 0..4 {
            let moved = self
                .read(
                    "SELECT new_chat_id FROM chat_migrations WHERE old_chat_id = $1",
                    &[chat.into()],
                    |row| row.get::<i64>("new_chat_id"),
                )
                .await?;
            match moved.first() {
                Some(new) => chat = *new,
                None => break,
            }
        }
        Ok(chat)
    }

    pub async fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    id: row.try_get("id")?,
                    alert_id: row.try_get::<Option<i64>, _>("alert_id")?.unwrap_or(0),
                    channel: row.try_get("channel")?,
                    destination: row.try_get("destination")?,
                    state: row.try_get("state")?,
                    attempts: row.try_get("attempts")?,
                    last_error: row.try_get("last_error")?,
                    message_id: row.try_get("message_id")?,
                    not_before: millis(row, "not_before")?
                        .ok_or_else(|| StoreError::Corrupt("outbox.not_before".into()))?,
                })
            })
            .collect()
    }

    /// Messages waiting to be sent, and the creation time of the oldest of them.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE state IN ('pending', 'sending')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, millis(&row, "oldest")?))
    }

    /// When the next pending message may go.
    pub async fn next_message_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read_time(
            "SELECT MIN(CASE WHEN state = 'pending' THEN not_before ELSE lease_until END) AS at \
             FROM outbox WHERE state IN ('pending', 'sending')",
            &[],
        )
        .await
    }

    /// The end of the last period `digest` covered, if it has started.
    pub async fn digest_state(&self, digest: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query("SELECT period_end FROM digest_state WHERE name = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => millis(&row, "period_end"),
            None => Ok(None),
        }
    }

    /// Starts `digest` at `at`: its first period begins there.
    pub async fn start_digest(&self, digest: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        sqlx::query(
            "INSERT INTO digest_state (name, period_end) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(digest)
        .bind(at.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Closes the period `[from, to)` of `digest`, writing its email (if any) to the outbox, in one
    /// transaction; `false` when someone else closed it first (then nothing is written).
    pub async fn close_digest_period(
        &self,
        digest: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        run: Option<&NewDigestRun>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE digest_state SET period_end = $1 WHERE name = $2 AND period_end = $3",
        )
        .bind(to.timestamp_millis())
        .bind(digest)
        .bind(from.timestamp_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(run) = run {
            let run_id: i64 = sqlx::query(
                "INSERT INTO digest_runs (name, period_start, period_end, periods, subject, text_body, \
                 html_body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(digest)
            .bind(from.timestamp_millis())
            .bind(to.timestamp_millis())
            .bind(run.periods)
            .bind(&run.email.subject)
            .bind(&run.email.text)
            .bind(&run.email.html)
            .bind(now.timestamp_millis())
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            for to_address in &run.recipients {
                sqlx::query(
                    "INSERT INTO outbox (digest_run_id, channel, destination, options, batch_key, state, \
                     not_before, deadline, created_at) VALUES ($1, 'email', $2, '{}', $3, 'pending', $4, $5, $4)",
                )
                .bind(run_id)
                .bind(to_address)
                .bind(format!("digest|{digest}|{to_address}|{run_id}"))
                .bind(now.timestamp_millis())
                .bind(run.deadline.timestamp_millis())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn digest_runs(&self, digest: &str) -> Result<Vec<DigestRun>, StoreError> {
        let rows = sqlx::query("SELECT * FROM digest_runs WHERE name = $1 ORDER BY id")
            .bind(digest)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DigestRun {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    period_start: millis(row, "period_start")?
                        .ok_or_else(|| StoreError::Corrupt("digest_runs.period_start".into()))?,
                    period_end: millis(row, "period_end")?
                        .ok_or_else(|| StoreError::Corrupt("digest_runs.period_end".into()))?,
                    periods: row.try_get("periods")?,
                    subject: row.try_get("subject")?,
                })
            })
            .collect()
    }

    /// Call-level records (any outcome but live events) received in `[from, to)`.
    pub async fn call_records_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM call_records WHERE received_at >= $1 AND received_at < $2 AND leg = 'a' \
                 AND outcome <> 'not_a_call_result' ORDER BY id"
        ))
        .bind(from.timestamp_millis())
        .bind(to.timestamp_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_any).collect()
    }

    /// Deletes what is older than `cutoff` and no longer needed: delivered or failed messages,
    /// their alerts and decisions, records and raw requests, refused requests, digest emails.
    /// Anything a pending message still needs is kept, however old.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let at = cutoff.timestamp_millis();
        // Raw requests are kept in their records' rows and go with them; those of records
        // stored before migration 0008 go with them too (ON DELETE CASCADE).
        let statements = [
            "DELETE FROM outbox WHERE state IN ('sent', 'failed') AND created_at < $1",
            "DELETE FROM alerts WHERE created_at < $1 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.alert_id = alerts.id)",
            "DELETE FROM digest_runs WHERE created_at < $1 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.digest_run_id = digest_runs.id)",
            "DELETE FROM decisions WHERE decided_at IS NOT NULL AND decided_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.decision_id = decisions.id)",
            "DELETE FROM call_records WHERE received_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.record_id = call_records.id) \
             AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.record_id = call_records.id)",
            "DELETE FROM rejected_requests WHERE received_at < $1",
        ];
        let mut deleted = 0;
        let (_turn, mut tx) = self.begin_write().await?;
        for sql in statements {
            deleted += sqlx::query(sql)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Records received in `[from, to)` with the decision taken on their call and where its alerts
    /// got to (`sent`, `pending`, `failed`, or none), oldest first.
    pub async fn export(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(StoredRecord, Option<String>, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            // The record's columns, unqualified, are r's: the only table of the outer query.
            concat!(
                "SELECT ",
                record_columns!(),
                ", \
             (SELECT d.verdict FROM decisions d WHERE d.provider = r.provider AND d.decided_at IS NOT NULL \
              AND ((r.leg = 'a' AND d.subject = r.conversation_id) OR d.record_id = r.id) \
              ORDER BY d.id LIMIT 1) AS verdict, \
             (SELECT CASE WHEN SUM(CASE WHEN o.state = 'sent' THEN 1 ELSE 0 END) > 0 THEN 'sent' \
                          WHEN SUM(CASE WHEN o.state IN ('pending', 'sending') THEN 1 ELSE 0 END) > 0 THEN 'pending' \
                          WHEN COUNT(o.id) > 0 THEN 'failed' END \
              FROM outbox o JOIN alerts a ON a.id = o.alert_id JOIN decisions d ON d.id = a.decision_id \
              WHERE d.provider = r.provider \
              AND ((r.leg = 'a' AND d.subject = r.conversation_id) OR d.record_id = r.id)) AS alert_state \
             FROM call_records r WHERE r.received_at >= $1 AND r.received_at < $2 ORDER BY r.id"
            ),
        )
        .bind(from.timestamp_millis())
        .bind(to.timestamp_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    record_from_any(row)?,
                    row.try_get("verdict")?,
                    row.try_get("alert_state")?,
                ))
            })
            .collect()
    }

    /// Takes a slot to send to Telegram `chat_id` at `now`, or says when one will be free. Slots
    /// are taken one at a time across every instance (the lock row), so the limits hold for the
    /// bot, not per process.
    pub async fn take_telegram_slot(
        &self,
        chat_id: i64,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<Result<(), DateTime<Utc>>, StoreError> {
        let request = SlotRequest {
            chat_id,
            now,
            limits: *limits,
        };
        self.slots
            .submit(request, |group| self.take_telegram_slots(group))
            .await
    }

    /// Takes slots for a group of sends at once, in the order asked, as if one after another.
    async fn take_telegram_slots(
        &self,
        group: Vec<SlotRequest>,
    ) -> Result<Vec<Result<(), DateTime<Utc>>>, StoreError> {
        let Some(earliest) = group.iter().map(|r| r.now).min() else {
            return Ok(Vec::new());
        };
        if group.iter().all(|r| r.limits.is_off()) {
            // Nothing to count, so nothing to write: only a chat's 429 can hold a send back,
            // and reading it takes neither a write turn nor an fsync.
            let ids: Vec<i64> = group.iter().map(|r| r.chat_id).collect();
            let (sql, params) = blocked_until_query(&ids);
            let blocked: std::collections::HashMap<i64, DateTime<Utc>> = self
                .read(&sql, &params, blocked_row)
                .await?
                .into_iter()
                .flatten()
                .collect();
            return Ok(group
                .iter()
                .map(|r| {
                    let recent = crate::deliver::limits::Recent {
                        blocked_until: blocked.get(&r.chat_id).copied(),
                        ..Default::default()
                    };
                    let ready =
                        crate::deliver::limits::ready_at(r.chat_id, &recent, r.now, &r.limits);
                    if ready > r.now { Err(ready) } else { Ok(()) }
                })
                .collect());
        }
        let latest = group.iter().map(|r| r.now).max().unwrap_or(earliest);
        let earliest = earliest.timestamp_millis();
        let per_second = group.iter().map(|r| r.limits.per_second).max().unwrap_or(0);
        let (_turn, mut tx) = self.begin_write().await?;
        sqlx::query("UPDATE telegram_slot_lock SET taken_at = $1 WHERE id = 1")
            .bind(latest.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM telegram_sends WHERE sent_at <= $1")
            .bind(earliest - 60_000)
            .execute(&mut *tx)
            .await?;
        let times = |rows: Vec<AnyRow>| -> Result<Vec<DateTime<Utc>>, StoreError> {
            // Newest first from the database; the limits want them oldest first.
            rows.iter()
                .rev()
                .map(|r| {
                    millis(r, "sent_at")?
                        .ok_or_else(|| StoreError::Corrupt("telegram_sends.sent_at".into()))
                })
                .collect()
        };
        let mut all = if per_second > 0 {
            times(
                sqlx::query(
                    "SELECT sent_at FROM telegram_sends WHERE sent_at > $1 \
                     ORDER BY sent_at DESC LIMIT $2",
                )
                .bind(earliest - 1_000)
                .bind(i64::from(per_second))
                .fetch_all(&mut *tx)
                .await?,
            )?
        } else {
            Vec::new()
        };
        // Each chat's sends as far back as a limit looks, and chats told to wait: one query
        // each for the whole group.
        let mut chats: std::collections::HashMap<i64, crate::deliver::limits::Recent> = group
            .iter()
            .map(|r| (r.chat_id, crate::deliver::limits::Recent::default()))
            .collect();
        let ids: Vec<i64> = chats.keys().copied().collect();
        let list = |first: usize| {
            (first..first + ids.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lookback = group
            .iter()
            .map(|r| r.limits.lookback_ms())
            .max()
            .unwrap_or(0);
        if lookback > 0 {
            let sql = format!(
                "SELECT chat_id, sent_at FROM telegram_sends WHERE sent_at > $1 AND chat_id IN ({}) \
                 ORDER BY sent_at",
                list(2)
            );
            let mut query = sqlx::query(&sql).bind(earliest - lookback);
            for id in &ids {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let chat_id: i64 = row.try_get("chat_id")?;
                let at = millis(&row, "sent_at")?
                    .ok_or_else(|| StoreError::Corrupt("telegram_sends.sent_at".into()))?;
                if let Some(recent) = chats.get_mut(&chat_id) {
                    recent.chat.push(at);
                }
            }
        }
        let (sql, params) = blocked_until_query(&ids);
        for (chat_id, until) in tx
            .fetch(&sql, &params, blocked_row)
            .await?
            .into_iter()
            .flatten()
        {
            if let Some(recent) = chats.get_mut(&chat_id) {
                recent.blocked_until = Some(until);
            }
        }
        let mut answers = Vec::with_capacity(group.len());
        let mut taken = Vec::new();
        for request in &group {
            let recent = chats.get_mut(&request.chat_id).ok_or_else(|| {
                StoreError::Corrupt(format!("no send history read for {}", request.chat_id))
            })?;
            recent.all.clone_from(&all);
            let ready = crate::deliver::limits::ready_at(
                request.chat_id,
                recent,
                request.now,
                &request.limits,
            );
            if ready > request.now {
                answers.push(Err(ready));
                continue;
            }
            taken.push((request.chat_id, request.now.timestamp_millis()));
            recent.chat.push(request.now);
            all.push(request.now);
            answers.push(Ok(()));
        }
        if !taken.is_empty() {
            let rows: Vec<String> = (0..taken.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "INSERT INTO telegram_sends (chat_id, sent_at) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (chat_id, at) in &taken {
                query = query.bind(*chat_id).bind(*at);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(answers)
    }

    /// Telegram said to wait: no instance sends to `chat_id` before `until`.
    pub async fn block_telegram_chat(
        &self,
        chat_id: i64,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        sqlx::query(
            "INSERT INTO telegram_chats (chat_id, blocked_until) VALUES ($1, $2) \
             ON CONFLICT (chat_id) DO UPDATE SET blocked_until = excluded.blocked_until",
        )
        .bind(chat_id)
        .bind(until.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Verdicts taken so far, by verdict text, for tests and the unrouted count.
    pub async fn verdicts(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT subject, verdict FROM decisions WHERE decided_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("subject")?, r.try_get("verdict")?)))
            .collect()
    }

    /// The oldest TeleCMI agent-ring record (of the last day) whose call has no call-level
    /// record: its age says whether the call-level CDR webhooks are set up.
    pub async fn oldest_ring_without_call_record(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(&oldest_ring_sql(self.backend))
            .bind(since.timestamp_millis())
            .fetch_one(&self.pool)
            .await?;
        millis(&row, "at")
    }
}

/// `Store::records_of_call`'s query, which the alert pipeline runs for every call it decides.
const RECORDS_OF_CALL: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM call_records WHERE provider = $1 AND conversation_id = $2 UNION ALL SELECT ",
    record_columns!(),
    " FROM call_records WHERE provider = $1 AND call_id = $2 AND call_id <> conversation_id \
     ORDER BY id"
);

/// `Store::oldest_ring_without_call_record`'s query: the rings after the newest call-level
/// record of the day, that record found walking back from now, the rings through their own
/// small index.
fn oldest_ring_sql(backend: Backend) -> String {
    // SQLite is told which indexes to use: without statistics its planner takes the (provider,
    // conversation) index for `provider = 'telecmi'` and reads every TeleCMI record, on every
    // `/readyz`. PostgreSQL's planner has its statistics.
    let (rings, by_time) = match backend {
        Backend::Sqlite => (
            "INDEXED BY call_records_rings",
            "INDEXED BY call_records_by_received",
        ),
        Backend::Postgres => ("", ""),
    };
    format!(
        "SELECT MIN(b.received_at) AS at FROM call_records b {rings} \
         WHERE b.provider = 'telecmi' AND b.leg = 'b' AND b.received_at >= $1 \
         AND b.received_at > COALESCE((SELECT a.received_at FROM call_records a {by_time} \
         WHERE a.received_at >= $1 AND a.provider = 'telecmi' AND a.leg = 'a' \
         AND a.outcome <> 'not_a_call_result' ORDER BY a.received_at DESC LIMIT 1), -1)"
    )
}

/// A `DecisionCommit` that owns what it names, to be written on the SQLite writer's thread.
struct OwnedDecision {
    id: i64,
    verdict: String,
    alerts: Vec<NewAlert>,
    resolution: Option<Resolution>,
}

impl From<&DecisionCommit<'_>> for OwnedDecision {
    fn from(d: &DecisionCommit<'_>) -> Self {
        OwnedDecision {
            id: d.id,
            verdict: d.verdict.to_owned(),
            alerts: d.alerts.to_vec(),
            resolution: d.resolution.cloned(),
        }
    }
}

impl OwnedDecision {
    fn as_commit(&self) -> DecisionCommit<'_> {
        DecisionCommit {
            id: self.id,
            verdict: &self.verdict,
            alerts: &self.alerts,
            resolution: self.resolution.as_ref(),
        }
    }
}

/// A decision ready to be committed: its verdict, alerts and the resolution it brings.
pub struct DecisionCommit<'a> {
    pub id: i64,
    pub verdict: &'a str,
    pub alerts: &'a [NewAlert],
    pub resolution: Option<&'a Resolution>,
}

async fn commit_decision(
    tx: &mut impl Db,
    now: DateTime<Utc>,
    decision: &DecisionCommit<'_>,
) -> Result<Option<usize>, StoreError> {
    let taken = tx
        .execute(
            "UPDATE decisions SET decided_at = $1, verdict = $2 WHERE id = $3 AND decided_at IS NULL",
            &[
                now.timestamp_millis().into(),
                decision.verdict.into(),
                decision.id.into(),
            ],
        )
        .await?;
    if taken != 1 {
        return Ok(None);
    }
    let resolved = match decision.resolution {
        Some(resolution) => bot::resolve(tx, resolution, now).await?,
        None => 0,
    };
    for alert in decision.alerts {
        let alert_id = tx
            .fetch(
                "INSERT INTO alerts (decision_id, record_id, route, receiver, kind, context, created_at, number) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    decision.id.into(),
                    alert.record_id.into(),
                    (&alert.route).into(),
                    (&alert.receiver).into(),
                    (&alert.kind).into(),
                    (&alert.context).into(),
                    now.timestamp_millis().into(),
                    alert.number.as_deref().into(),
                ],
                |row| row.get::<i64>("id"),
            )
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt("an inserted alert returned no id".into()))?;
        for message in &alert.messages {
            // A message joins the batch already waiting for its destination, if any; without a
            // grouping window each message is its own batch, so there is none to look for.
            let waiting = if message.group_wait > chrono::Duration::zero() {
                tx.fetch(
                    "SELECT MIN(not_before) AS at FROM outbox WHERE batch_key = $1 AND state = 'pending'",
                    &[(&message.batch_key).into()],
                    |row| row.millis("at"),
                )
                .await?
                .into_iter()
                .next()
                .flatten()
            } else {
                None
            };
            let not_before = waiting.unwrap_or(now + message.group_wait);
            tx.execute(
                "INSERT INTO outbox (alert_id, channel, destination, options, batch_key, state, \
                 not_before, deadline, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8)",
                &[
                    alert_id.into(),
                    (&message.channel).into(),
                    (&message.destination).into(),
                    (&message.options).into(),
                    (&message.batch_key).into(),
                    not_before.timestamp_millis().into(),
                    message.deadline.timestamp_millis().into(),
                    now.timestamp_millis().into(),
                ],
            )
            .await?;
        }
    }
    Ok(Some(resolved))
}

/// The query for the chats among `ids` that Telegram told to wait (429 `retry_after`); each
/// of its rows is read by `blocked_row`.
fn blocked_until_query(ids: &[i64]) -> (String, Vec<Param<'static>>) {
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT chat_id, blocked_until FROM telegram_chats WHERE chat_id IN ({}) \
         AND blocked_until IS NOT NULL",
        placeholders.join(", ")
    );
    (sql, ids.iter().map(|id| Param::from(*id)).collect())
}

/// A chat told to wait, and until when.
fn blocked_row(row: &Columns) -> Result<Option<(i64, DateTime<Utc>)>, StoreError> {
    let chat_id: i64 = row.get("chat_id")?;
    Ok(row.millis("blocked_until")?.map(|until| (chat_id, until)))
}

/// Makes sure a SQLite URL creates its file, and that the file's folder exists.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path.contains(":memory:") {
        return Ok(url.to_owned());
    }
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    if query.split('&').any(|kv| kv.starts_with("mode=")) {
        Ok(url.to_owned())
    } else if query.is_empty() {
        Ok(format!("sqlite://{path}?mode=rwc"))
    } else {
        Ok(format!("sqlite://{path}?{query}&mode=rwc"))
    }
}

/// The file of a SQLite URL as `prepare_sqlite_url` leaves it; `None` for PostgreSQL and for an
/// in-memory database, which only the pool's own connections can reach.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// A database URL fit for an error message: any password is masked.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds a request's method, path, query, headers (as `headers_json` writes them), body, source
/// and time, in that order.
fn bind_request<'q>(query: AnyQuery<'q>, raw: &'q RawRequest, headers: &'q str) -> AnyQuery<'q> {
    query
        .bind(&raw.method)
        .bind(&raw.path)
        .bind(&raw.query)
        .bind(headers)
        .bind(raw.body.clone())
        .bind(&raw.remote_addr)
        .bind(raw.received_at.timestamp_millis())
}

fn headers_json(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).expect("string pairs serialize")
}

fn millis(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    Columns::Any(row).millis(column)
}

fn record_from_any(row: &AnyRow) -> Result<StoredRecord, StoreError> {
    record_from_row(&Columns::Any(row))
}

fn record_from_row(row: &Columns) -> Result<StoredRecord, StoreError> {
    let phone = |raw: &str, e164: &str| -> Result<Option<PhoneNumber>, StoreError> {
        let raw: Option<String> = row.get(raw)?;
        let e164: Option<String> = row.get(e164)?;
        Ok(raw.map(|raw| PhoneNumber { raw, e164 }))
    };
    let extra: String = row.get("extra")?;
    let record = CallRecord {
        provider: row.parsed("provider")?,
        call_id: row.get("call_id")?,
        conversation_id: row.get("conversation_id")?,
        leg: row.parsed("leg")?,
        dedup_key: row.get("dedup_key")?,
        direction: row.parsed("direction")?,
        outcome: row.parsed("outcome")?,
        provider_status: row.get("provider_status")?,
        caller: phone("caller", "caller_e164")?,
        caller_name: row.get("caller_name")?,
        called: phone("called", "called_e164")?,
        agent: row.get("agent")?,
        agent_phone: phone("agent_phone", "agent_phone_e164")?,
        group: row.get("call_group")?,
        started_at: row.millis("started_at")?,
        answered_at: row.millis("answered_at")?,
        ended_at: row.millis("ended_at")?,
        ring_seconds: row.get("ring_seconds")?,
        talk_seconds: row.get("talk_seconds")?,
        hangup: row.get("hangup")?,
        recording: row.get("recording")?,
        extra: serde_json::from_str(&extra)
            .map_err(|_| StoreError::Corrupt(format!("call_records.extra = {extra:?}")))?,
    };
    Ok(StoredRecord {
        id: row.get("id")?,
        received_at: row
            .millis("received_at")?
            .ok_or_else(|| StoreError::Corrupt("call_records.received_at".into()))?,
        resends: row.get("resends")?,
        record,
    })
}

fn raw_from_row(row: &AnyRow) -> Result<RawRequest, StoreError> {
    let headers: String = row.try_get("headers")?;
    Ok(RawRequest {
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        query: row.try_get("query")?,
        headers: serde_json::from_str(&headers)
            .map_err(|_| StoreError::Corrupt(format!("headers = {headers:?}")))?,
        body: row.try_get("body")?,
        remote_addr: row.try_get("remote_addr")?,
        received_at: millis(row, "received_at")?
            .ok_or_else(|| StoreError::Corrupt("received_at".into()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a new SQLite file (returned with it) in a folder of its own, which goes when
    /// the `TempDir` is dropped.
    pub(super) async fn sqlite_store() -> (tempfile::TempDir, std::path::PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        (dir, path, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_latest_webhook_received_is_remembered() {
        let (_dir, _, store) = sqlite_store().await;
        assert_eq!(store.last_webhook_at(), None, "none yet");
        let mut request = writer::tests::raw();
        let at = DateTime::from_timestamp_millis(request.received_at.timestamp_millis()).unwrap();
        store
            .ingest(crate::domain::test_record(), request.clone(), None)
            .await
            .unwrap();
        assert_eq!(store.last_webhook_at(), Some(at));
        // A request received earlier (a slower task finishing later) does not move it back.
        request.received_at = at - chrono::Duration::seconds(1);
        store
            .ingest(crate::domain::test_record(), request, None)
            .await
            .unwrap();
        assert_eq!(store.last_webhook_at(), Some(at));
        store.close().await;
    }

    #[test]
    fn sqlite_urls_create_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/r.db");
        let url = prepare_sqlite_url(&format!("sqlite://{}", db.display())).unwrap();
        assert_eq!(url, format!("sqlite://{}?mode=rwc", db.display()));
        assert!(db.parent().unwrap().is_dir());
        assert_eq!(
            prepare_sqlite_url("sqlite://x.db?mode=ro").unwrap(),
            "sqlite://x.db?mode=ro"
        );
    }

    #[tokio::test]
    async fn a_call_gathers_its_records_by_conversation_and_by_its_own_call_id() {
        use crate::domain::{CallRecord, test_record};
        let (_dir, _, store) = sqlite_store().await;
        let record = |key: &str, call: &str, conversation: &str| CallRecord {
            dedup_key: key.into(),
            call_id: call.into(),
            conversation_id: conversation.into(),
            ..test_record()
        };
        let raw = writer::tests::raw();
        // A leg of conversation "c1", the call-level record whose own id is "c1" (filed under
        // another conversation), and a record of another call.
        for r in [
            record("leg", "leg-1", "c1"),
            record("call", "c1", "elsewhere"),
            record("other", "c2", "c2"),
        ] {
            store.ingest(r, raw.clone(), None).await.unwrap();
        }
        let provider = test_record().provider;
        let keys: Vec<String> = store
            .records_of_call(provider, "c1")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.record.dedup_key)
            .collect();
        assert_eq!(keys, ["leg", "call"]);
    }

    #[tokio::test]
    async fn with_the_limits_off_sends_are_not_counted_but_a_429_still_holds_its_chat() {
        use chrono::TimeZone;
        let (_dir, _, store) = sqlite_store().await;
        let off = Limits {
            chat_interval_ms: 0,
            group_per_minute: 0,
            per_second: 0,
        };
        let now = Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
        for _ in 0..3 {
            assert_eq!(
                store.take_telegram_slot(7, now, &off).await.unwrap(),
                Ok(())
            );
        }
        let counted: i64 = sqlx::query("SELECT COUNT(*) AS n FROM telegram_sends")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(counted, 0);

        let until = now + chrono::Duration::seconds(7);
        store.block_telegram_chat(7, until).await.unwrap();
        assert_eq!(
            store.take_telegram_slot(7, now, &off).await.unwrap(),
            Err(until)
        );
        assert_eq!(
            store.take_telegram_slot(8, now, &off).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            store.take_telegram_slot(7, until, &off).await.unwrap(),
            Ok(())
        );

        // Telegram's own limits count every send, so the next one to the chat waits its second.
        let kept = Limits::default();
        assert_eq!(
            store.take_telegram_slot(9, now, &kept).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            store.take_telegram_slot(9, now, &kept).await.unwrap(),
            Err(now + chrono::Duration::seconds(1))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ring_counts_as_without_call_record_until_a_call_level_record_follows_it() {
        use crate::domain::{CallRecord, Leg, Outcome, test_record};
        let (_dir, _, store) = sqlite_store().await;
        let since = DateTime::from_timestamp_millis(1_795_428_000_000).unwrap();
        let at = |minutes: i64| since + chrono::Duration::minutes(minutes);
        let add = |key: &'static str, leg: Leg, outcome: Outcome, minutes: i64| {
            let record = CallRecord {
                dedup_key: key.into(),
                leg,
                outcome,
                ..test_record()
            };
            let request = RawRequest {
                received_at: at(minutes),
                ..writer::tests::raw()
            };
            let store = store.clone();
            async move { store.ingest(record, request, None).await.unwrap() }
        };
        let oldest = || async { store.oldest_ring_without_call_record(since).await.unwrap() };

        add("before the day", Leg::Agent, Outcome::Missed, -1).await;
        assert_eq!(
            oldest().await,
            None,
            "a ring before `since` is not looked at"
        );
        add("ring 1", Leg::Agent, Outcome::Missed, 1).await;
        add("ring 2", Leg::Agent, Outcome::Missed, 2).await;
        assert_eq!(oldest().await, Some(at(1)));
        add("live event", Leg::Call, Outcome::NotACallResult, 3).await;
        assert_eq!(
            oldest().await,
            Some(at(1)),
            "a live event is no call-level record"
        );
        add("call", Leg::Call, Outcome::Answered, 2).await;
        assert_eq!(
            oldest().await,
            None,
            "a record at the ring's time covers it"
        );
        add("ring 3", Leg::Agent, Outcome::Missed, 4).await;
        add("ring 4", Leg::Agent, Outcome::Missed, 5).await;
        assert_eq!(oldest().await, Some(at(4)));

        // Each side is read through its index, never every TeleCMI record.
        let plan: Vec<String> = sqlx::query(&format!(
            "EXPLAIN QUERY PLAN {}",
            oldest_ring_sql(Backend::Sqlite)
        ))
        .bind(since.timestamp_millis())
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String, _>("detail").unwrap())
        .collect();
        let searches: Vec<&String> = plan.iter().filter(|d| d.starts_with("SEARCH")).collect();
        assert_eq!(
            searches,
            [
                "SEARCH b USING INDEX call_records_rings (received_at>?)",
                "SEARCH a USING INDEX call_records_by_received (received_at>?)"
            ],
            "{plan:?}"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_pipeline_s_call_query_is_not_prepared_again_for_each_call() {
        // SQLite prepares a statement again whenever a value is bound to a parameter that its
        // plan compared with a partial index's condition (`provider = $1` against an index
        // `WHERE provider = 'telecmi'`, say): for a query run on every decision, that doubled
        // the decider's work.
        let (_dir, path, store) = sqlite_store().await;
        let connection = rusqlite::Connection::open(&path).unwrap();
        let mut statement = connection
            .prepare(&db::sqlite_sql(RECORDS_OF_CALL))
            .unwrap();
        for (provider, call) in [("telecmi", "c1"), ("callr", "c2"), ("telecmi", "c3")] {
            let mut rows = statement.query([provider, call]).unwrap();
            assert!(rows.next().unwrap().is_none());
        }
        assert_eq!(
            statement.get_status(rusqlite::StatementStatus::RePrepare),
            0
        );
        drop(statement);
        drop(connection);
        store.close().await;
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(redact_url("mysql://u:secret@h/db"), "mysql://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
