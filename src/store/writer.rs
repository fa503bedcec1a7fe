//! Group commit for webhooks: one writer stores the records that arrived together in one
//! transaction, so they share one fsync, and answers each request once that commit is done.
//! On SQLite the writer is a thread of its own (`sqlite.rs`); on PostgreSQL, a task on the pool.

mod sqlite;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use std::collections::HashMap;

use sqlx::Row;

use super::{Backend, Ingested, RawRequest, StoreError, WriteGate, bind_request};
use crate::classify::DecisionRequest;
use crate::domain::{CallRecord, PhoneNumber};

/// Records per transaction at most: enough to absorb a burst, small enough that no request waits
/// long behind a transaction.
pub(super) const MAX_BATCH: usize = 256;

/// A record waiting to be written.
pub(super) struct Pending {
    pub record: CallRecord,
    pub raw: RawRequest,
    pub decision: Option<(DecisionRequest, DateTime<Utc>)>,
    /// `record.extra` and `raw.headers` as stored, made by the request's own task: the writer
    /// is the one part of ingest that cannot run in parallel, so it does nothing it need not.
    pub extra_json: String,
    pub headers_json: String,
}

impl Pending {
    pub fn new(
        record: CallRecord,
        raw: RawRequest,
        decision: Option<(DecisionRequest, DateTime<Utc>)>,
    ) -> Pending {
        Pending {
            extra_json: serde_json::to_string(&record.extra).expect("a string map serializes"),
            headers_json: super::headers_json(&raw.headers),
            record,
            raw,
            decision,
        }
    }
}

/// What the writer is asked: a record to write, other work for its next transaction (SQLite
/// only), or to finish and close its connection.
// Nearly every job is a write, so boxing it would cost an allocation per webhook and save nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Job {
    Write(Pending, Reply),
    Work(Box<dyn Work>),
    Close(oneshot::Sender<()>),
}

/// A write of the alert pipeline (a decision, an outbox claim or mark) that the SQLite writer
/// runs in the transaction of its next batch, in a savepoint of its own: it shares the batch's
/// fsync, and failing, fails alone.
pub(super) trait Work: Send {
    /// Runs the work on the writer's connection and keeps its result to answer with; whether
    /// it succeeded. It may be run again, alone, if the batch's transaction fails.
    fn run(&mut self, connection: &rusqlite::Connection) -> bool;

    /// Answers once the transaction it ran in has committed, or could not.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

/// `Work` from a closure, answered through a channel.
pub(super) struct Task<T, F> {
    work: F,
    output: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Work for Task<T, F>
where
    T: Send,
    F: FnMut(super::db::SqliteDb) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, connection: &rusqlite::Connection) -> bool {
        let output = (self.work)(super::db::SqliteDb(connection));
        let succeeded = output.is_ok();
        self.output = Some(output);
        succeeded
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match (committed, self.output) {
            (Ok(()), Some(output)) => output,
            (Ok(()), None) => Err(StoreError::Corrupt("the writer skipped a write".into())),
            (Err(e), _) => Err(e),
        };
        let _ = self.reply.send(result);
    }
}

/// The answer goes back with what was written, so that freeing it is the request's work too.
pub(super) type Reply = oneshot::Sender<(Pending, Result<Ingested, StoreError>)>;

/// The handle requests write through; the task ends when the last handle is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    pub fn start(pool: AnyPool, backend: Backend, gate: WriteGate) -> Writer {
        let (queue, received) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(pool, backend, gate, received));
        Writer { queue }
    }

    /// The writer of a SQLite file: a thread owning its own connection, so that a batch costs no
    /// hop between threads per statement (sqlx's SQLite driver makes one per statement and row).
    pub fn start_sqlite(path: &std::path::Path, gate: WriteGate) -> Result<Writer, StoreError> {
        let (queue, received) = mpsc::channel(4 * MAX_BATCH);
        sqlite::start(path, gate, received)?;
        Ok(Writer { queue })
    }

    /// Writes `pending` and returns once it is committed (or could not be), with `pending` given
    /// back: `None` only if the writer stopped while holding it.
    pub async fn write(&self, pending: Pending) -> (Option<Pending>, Result<Ingested, StoreError>) {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Corrupt("the storage writer has stopped".into());
        if let Err(mpsc::error::SendError(job)) = self.queue.send(Job::Write(pending, reply)).await
        {
            let pending = match job {
                Job::Write(pending, _) => Some(pending),
                Job::Work(_) | Job::Close(_) => None,
            };
            return (pending, Err(stopped()));
        }
        match answer.await {
            Ok((written, result)) => (Some(written), result),
            Err(_) => (None, Err(stopped())),
        }
    }

    /// Runs `work` in the SQLite writer's next transaction and returns its result once that has
    /// committed. Only a SQLite file's writer runs work (see `Store::on_writer`).
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(super::db::SqliteDb) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Corrupt("the storage writer has stopped".into());
        let task = Task {
            work,
            output: None,
            reply,
        };
        self.queue
            .send(Job::Work(Box::new(task)))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Writes what is queued, then closes the writer's connection: the last connection to a
    /// SQLite file to close checkpoints the WAL into the database, so the next start does not
    /// have to read it back. Writes after this are refused.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// A phone number's columns: as received, and in E.164 when it has one.
pub(super) fn phone(p: &Option<PhoneNumber>) -> Option<&str> {
    p.as_ref().map(|p| p.raw.as_str())
}

pub(super) fn e164(p: &Option<PhoneNumber>) -> Option<&str> {
    p.as_ref().and_then(|p| p.e164.as_deref())
}

/// Answers each request of a committed batch, and counts the batch.
pub(super) fn answer(
    batch: &mut Vec<(Pending, Reply)>,
    results: Vec<Ingested>,
    started: std::time::Instant,
) {
    metrics::histogram!("ringback_ingest_batch_size").record(batch.len() as f64);
    metrics::histogram!("ringback_ingest_batch_seconds").record(started.elapsed().as_secs_f64());
    for ((pending, reply), result) in batch.drain(..).zip(results) {
        let _ = reply.send((pending, Ok(result)));
    }
}

/// Moves the writes among `jobs` into `batch` and the other work into `work`; returns a close
/// request, if one came.
pub(super) fn sort_jobs(
    jobs: impl IntoIterator<Item = Job>,
    batch: &mut Vec<(Pending, Reply)>,
    work: &mut Vec<Box<dyn Work>>,
) -> Option<oneshot::Sender<()>> {
    let mut close = None;
    for job in jobs {
        match job {
            Job::Write(pending, reply) => batch.push((pending, reply)),
            Job::Work(w) => work.push(w),
            Job::Close(done) => close = Some(done),
        }
    }
    close
}

async fn run(pool: AnyPool, backend: Backend, gate: WriteGate, mut received: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // One connection while batches follow each other: SQLite's page cache belongs to a
    // connection and is dropped when another connection has written since, so a writer moving
    // between pooled connections would re-read its index pages on every transaction.
    let mut connection: Option<PoolConnection<Any>> = None;
    // Whatever arrived while the last transaction was being committed forms the next one: under
    // load batches grow by themselves, and a lone request is written at once.
    while received.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut work = Vec::new();
        let close = sort_jobs(jobs.drain(..), &mut batch, &mut work);
        for w in work {
            w.answer(Err(StoreError::Corrupt(
                "only a SQLite file's writer runs pipeline work".into(),
            )));
        }
        write_batch(&pool, backend, &gate, &mut connection, &mut batch).await;
        if let Some(done) = close {
            drop(connection);
            let _ = done.send(());
            return;
        }
        // Idle, the connection goes back to the pool, which can then close.
        if received.is_empty() {
            connection = None;
        }
    }
}

/// Writes `batch` in one transaction and answers each of its requests.
async fn write_batch(
    pool: &AnyPool,
    backend: Backend,
    gate: &WriteGate,
    connection: &mut Option<PoolConnection<Any>>,
    batch: &mut Vec<(Pending, Reply)>,
) {
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let turn = gate.enter().await;
    let written = write(pool, backend, connection, batch).await;
    drop(turn);
    match written {
        Ok(results) => answer(batch, results, started),
        Err(_) => {
            // One bad record must not fail the others: each is tried alone, and only the one
            // that cannot be written is refused (and so sent again by its provider).
            for (pending, reply) in batch.drain(..) {
                let _turn = gate.enter().await;
                let alone = [(pending, ())];
                let result = write(pool, backend, connection, &alone)
                    .await
                    .map(|mut r| r.remove(0));
                let [(pending, ())] = alone;
                let _ = reply.send((pending, result));
            }
        }
    }
}

async fn write<R>(
    pool: &AnyPool,
    backend: Backend,
    connection: &mut Option<PoolConnection<Any>>,
    batch: &[(Pending, R)],
) -> Result<Vec<Ingested>, StoreError> {
    let conn = match connection {
        Some(conn) => conn,
        None => connection.insert(pool.acquire().await?),
    };
    let result = async {
        let mut tx = conn.begin().await?;
        let results = insert_batch(&mut tx, backend, batch).await?;
        tx.commit().await?;
        Ok(results)
    }
    .await;
    if result.is_err() {
        // A connection that failed may be broken: the next batch takes a fresh one.
        *connection = None;
    }
    result
}

const RECORD_COLUMNS: usize = 32;

/// Writes a batch with two statements whatever its size (records with their requests, then
/// decisions), and one more per resend within the batch: each statement is a round trip to the
/// database, and they, not the rows, are what costs. The statements are not kept prepared: each
/// batch size is another statement, and a cache of large ones would hold tens of megabytes.
async fn insert_batch<R>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    batch: &[(Pending, R)],
) -> Result<Vec<Ingested>, StoreError> {
    // A record sent twice within one batch is stored by its first send; the others are resends.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut firsts = Vec::new();
    let mut repeats = Vec::new();
    for (i, (p, _)) in batch.iter().enumerate() {
        let key = (p.record.provider.as_str(), p.record.dedup_key.as_str());
        match first_of.get(&key) {
            Some(&first) => repeats.push((i, first)),
            None => {
                first_of.insert(key, i);
                firsts.push(i);
            }
        }
    }
    let sql = format!(
        "INSERT INTO call_records (provider, dedup_key, call_id, conversation_id, leg, direction, \
         outcome, provider_status, caller, caller_e164, caller_name, called, called_e164, agent, \
         agent_phone, agent_phone_e164, call_group, started_at, answered_at, ended_at, \
         ring_seconds, talk_seconds, hangup, recording, extra, request_method, request_path, \
         request_query, request_headers, request_body, request_remote_addr, received_at) VALUES {} \
         ON CONFLICT (provider, dedup_key) DO UPDATE \
         SET resends = call_records.resends + 1, last_resent_at = excluded.received_at \
         RETURNING id, resends, provider, dedup_key",
        placeholders(backend, firsts.len(), RECORD_COLUMNS)
    );
    let mut query = sqlx::query(&sql).persistent(false);
    for &i in &firsts {
        let (p, _) = &batch[i];
        let record = &p.record;
        query = query
            .bind(record.provider.as_str())
            .bind(&record.dedup_key)
            .bind(&record.call_id)
            .bind(&record.conversation_id)
            .bind(record.leg.as_str())
            .bind(record.direction.as_str())
            .bind(record.outcome.as_str())
            .bind(&record.provider_status)
            .bind(phone(&record.caller))
            .bind(e164(&record.caller))
            .bind(&record.caller_name)
            .bind(phone(&record.called))
            .bind(e164(&record.called))
            .bind(&record.agent)
            .bind(phone(&record.agent_phone))
            .bind(e164(&record.agent_phone))
            .bind(&record.group)
            .bind(record.started_at.map(|t| t.timestamp_millis()))
            .bind(record.answered_at.map(|t| t.timestamp_millis()))
            .bind(record.ended_at.map(|t| t.timestamp_millis()))
            .bind(record.ring_seconds)
            .bind(record.talk_seconds)
            .bind(&record.hangup)
            .bind(&record.recording)
            .bind(&p.extra_json);
        query = bind_request(query, &p.raw, &p.headers_json);
    }
    // RETURNING gives rows in no promised order: they are matched back by their key.
    let mut written: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for row in query.fetch_all(&mut **tx).await? {
        written.insert(
            (row.try_get("provider")?, row.try_get("dedup_key")?),
            (row.try_get("id")?, row.try_get("resends")?),
        );
    }
    let mut results = vec![Ingested::Duplicate { id: 0 }; batch.len()];
    let mut new = Vec::new();
    for &i in &firsts {
        let record = &batch[i].0.record;
        let key = (
            record.provider.as_str().to_owned(),
            record.dedup_key.clone(),
        );
        let &(id, resends) = written
            .get(&key)
            .ok_or_else(|| StoreError::Corrupt(format!("no row came back for {key:?}")))?;
        results[i] = if resends > 0 {
            Ingested::Duplicate { id }
        } else {
            new.push((i, id));
            Ingested::Stored { id }
        };
    }
    for &(i, first) in &repeats {
        let id = match results[first] {
            Ingested::Stored { id } | Ingested::Duplicate { id } => id,
        };
        results[i] = Ingested::Duplicate { id };
        sqlx::query(
            "UPDATE call_records SET resends = resends + 1, last_resent_at = $1 WHERE id = $2",
        )
        .bind(batch[i].0.raw.received_at.timestamp_millis())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    let deciding: Vec<(usize, i64)> = new
        .iter()
        .copied()
        .filter(|(i, _)| batch[*i].0.decision.is_some())
        .collect();
    if deciding.is_empty() {
        return Ok(results);
    }
    // The first deciding record of a call opens its settle window; records arriving later join
    // that window, and after it closes they never alert again.
    let sql = format!(
        "INSERT INTO decisions (provider, subject, kind, record_id, decide_at) VALUES {} \
         ON CONFLICT (provider, subject) DO NOTHING",
        placeholders(backend, deciding.len(), 5)
    );
    let mut query = sqlx::query(&sql).persistent(false);
    for &(i, id) in &deciding {
        let p = &batch[i].0;
        let (request, decide_at) = p.decision.as_ref().expect("filtered on decisions");
        query = query
            .bind(p.record.provider.as_str())
            .bind(&request.subject)
            .bind(request.kind.as_str())
            .bind(id)
            .bind(decide_at.timestamp_millis());
    }
    query.execute(&mut **tx).await?;
    Ok(results)
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values on PostgreSQL; `(?, ?), (?, ?)` on
/// SQLite, where binding numbered parameters looks each name up in a list, which takes time in
/// the square of a batch's size.
fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let values: Vec<String> = (1..=columns)
                .map(|c| match backend {
                    Backend::Postgres => format!("${}", r * columns + c),
                    Backend::Sqlite => "?".to_owned(),
                })
                .collect();
            format!("({})", values.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{Ingested, RawRequest, Store};
    use crate::domain::{CallRecord, test_record};

    /// A webhook request as tests store it.
    pub(crate) fn raw() -> RawRequest {
        RawRequest {
            method: "POST".into(),
            path: "/webhooks/telecmi".into(),
            query: String::new(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
            remote_addr: None,
            received_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn placeholders_number_every_value() {
        use super::{Backend, placeholders};
        assert_eq!(
            placeholders(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(placeholders(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_leaves_no_wal_for_the_next_start_to_read() {
        let (_dir, path, store) = crate::store::tests::sqlite_store().await;
        store.ingest(test_record(), raw(), None).await.unwrap();
        let wal = path.with_extension("db-wal");
        assert!(
            wal.exists(),
            "a written record is in the WAL until a checkpoint"
        );
        store.close().await;
        assert!(
            !wal.exists(),
            "the last connection to close checkpoints and removes the WAL"
        );
        // A write after closing is refused, not lost silently, and its request comes back to
        // be kept among the refused ones.
        let request = raw();
        let refused = store
            .ingest(test_record(), request.clone(), None)
            .await
            .unwrap_err();
        assert_eq!(refused.request, Some(request));
        let reopened = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert_eq!(reopened.count_records().await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_written_together_are_each_stored_once() {
        let (_dir, _, store) = crate::store::tests::sqlite_store().await;
        // 40 different records and 40 sends of one record, all at once.
        let record = |key: String| CallRecord {
            dedup_key: key.clone(),
            call_id: key,
            ..test_record()
        };
        let writes = (0..80).map(|i| {
            let store = store.clone();
            let r = if i % 2 == 0 {
                record(format!("unique-{i}"))
            } else {
                record("resent".into())
            };
            tokio::spawn(async move { store.ingest(r, raw(), None).await.unwrap() })
        });
        let mut stored = 0;
        let mut duplicates = 0;
        let mut resent_ids = std::collections::BTreeSet::new();
        for (i, w) in writes.collect::<Vec<_>>().into_iter().enumerate() {
            let result = w.await.unwrap();
            match result {
                Ingested::Stored { .. } => stored += 1,
                Ingested::Duplicate { .. } => duplicates += 1,
            }
            if i % 2 == 1 {
                let (Ingested::Stored { id } | Ingested::Duplicate { id }) = result;
                resent_ids.insert(id);
            }
        }
        assert_eq!((stored, duplicates), (41, 39));
        assert_eq!(store.count_records().await.unwrap(), 41);
        // Every send of the resent record is answered with the one stored record, which counts
        // the 39 resends.
        assert_eq!(resent_ids.len(), 1, "{resent_ids:?}");
        let resent = store
            .records_of_call(test_record().provider, "resent")
            .await
            .unwrap();
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].id, *resent_ids.first().unwrap());
        assert_eq!(resent[0].resends, 39);
    }
}
