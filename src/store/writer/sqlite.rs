//! The SQLite webhook writer: a thread that owns one connection and keeps its three statements
//! prepared, writing each batch of webhooks in one transaction and one fsync.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::mpsc;

use super::{Job, MAX_BATCH, Pending, Reply, Work, answer, e164, phone, sort_jobs};
use crate::store::{Ingested, StoreError, WriteGate};

const INSERT_RECORD: &str = "INSERT INTO call_records (provider, dedup_key, call_id, \
    conversation_id, leg, direction, outcome, provider_status, caller, caller_e164, caller_name, \
    called, called_e164, agent, agent_phone, agent_phone_e164, call_group, started_at, \
    answered_at, ended_at, ring_seconds, talk_seconds, hangup, recording, extra, request_method, \
    request_path, request_query, request_headers, request_body, request_remote_addr, received_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32) \
    ON CONFLICT (provider, dedup_key) DO NOTHING";

// Kept apart from the insert: an INSERT with RETURNING (or an upsert) makes SQLite copy every page
// it touches into a statement journal first (see BENCHMARKS.md). Resends are rare and take this
// second statement.
const COUNT_RESEND: &str = "UPDATE call_records SET resends = resends + 1, last_resent_at = ?3 \
    WHERE provider = ?1 AND dedup_key = ?2 RETURNING id";

// The first deciding record of a call opens its settle window; records arriving later join that
// window, and after it closes they never alert again.
const INSERT_DECISION: &str = "INSERT INTO decisions (provider, subject, kind, record_id, \
    decide_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (provider, subject) DO NOTHING";

/// Opens the connection here, so that a database that cannot be opened stops start-up with the
/// reason, then leaves the writing to a thread that ends when the store is closed or the last
/// sender is dropped.
pub(super) fn start(
    path: &Path,
    gate: WriteGate,
    received: mpsc::Receiver<Job>,
) -> Result<(), StoreError> {
    let connection = open(path)?;
    std::thread::Builder::new()
        .name("ringback-writer".into())
        .spawn(move || run(connection, gate, received))
        .map_err(|e| StoreError::Corrupt(format!("cannot start the storage writer: {e}")))?;
    Ok(())
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let connection = Connection::open(path)?;
    // The same guarantees as the pool's connections (see `Store::open`): WAL with
    // synchronous=FULL, so a commit is on disk when it returns and the webhook may be answered.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "cache_size", -512)?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    // Pipeline work runs in savepoints, whose journal would otherwise be a temporary file; it
    // only ever holds one savepoint's pages.
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // Writers other than webhooks and decisions (the outbox, the bot) still meet this one in
    // SQLite's own lock.
    connection.busy_timeout(Duration::from_secs(10))?;
    Ok(connection)
}

fn run(mut connection: Connection, gate: WriteGate, mut received: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut work = Vec::new();
    // Whatever arrived while the last transaction was being committed forms the next one: under
    // load batches grow by themselves, and a lone request is written at once.
    while let Some(first) = received.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match received.try_recv() {
                Ok(next) => jobs.push(next),
                Err(_) => break,
            }
        }
        let close = sort_jobs(jobs, &mut batch, &mut work);
        write_batch(&mut connection, &gate, &mut batch, &mut work);
        if let Some(done) = close {
            // Closing the last connection to the file checkpoints the WAL into the database.
            drop(connection);
            let _ = done.send(());
            return;
        }
    }
}

/// Writes `batch` and runs `work` in one transaction, and answers each of their requests.
fn write_batch(
    connection: &mut Connection,
    gate: &WriteGate,
    batch: &mut Vec<(Pending, Reply)>,
    work: &mut Vec<Box<dyn Work>>,
) {
    if batch.is_empty() && work.is_empty() {
        return;
    }
    let started = Instant::now();
    let turn = gate.enter_blocking();
    let written = write(connection, batch, work);
    drop(turn);
    match written {
        Ok(results) => {
            if !batch.is_empty() {
                answer(batch, results, started);
            }
            for w in work.drain(..) {
                w.answer(Ok(()));
            }
        }
        Err(_) => {
            // One bad record must not fail the others: each is tried alone, and only the one
            // that cannot be written is refused (and so sent again by its provider).
            for (pending, reply) in batch.drain(..) {
                let _turn = gate.enter_blocking();
                let alone = [(pending, ())];
                let result = write(connection, &alone, &mut [])
                    .map(|mut r| r.remove(0))
                    .map_err(StoreError::from);
                let [(pending, ())] = alone;
                let _ = reply.send((pending, result));
            }
            for mut w in work.drain(..) {
                let _turn = gate.enter_blocking();
                let alone = run_alone(connection, &mut *w);
                w.answer(alone);
            }
        }
    }
}

/// Runs one piece of work in a transaction of its own.
fn run_alone(connection: &mut Connection, work: &mut dyn Work) -> Result<(), StoreError> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Work that fails keeps its error to answer with; its transaction is rolled back.
    if work.run(&tx) {
        tx.commit()?;
    }
    Ok(())
}

/// Writes a batch in one immediate transaction (taking the write lock at once, so it never has to
/// upgrade a read lock under a competing writer). A record sent twice, in this batch or before,
/// only counts the resend.
fn write<R>(
    connection: &mut Connection,
    batch: &[(Pending, R)],
    work: &mut [Box<dyn Work>],
) -> Result<Vec<Ingested>, rusqlite::Error> {
    let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut records = tx.prepare_cached(INSERT_RECORD)?;
        let mut resends = tx.prepare_cached(COUNT_RESEND)?;
        let mut decisions = tx.prepare_cached(INSERT_DECISION)?;
        let millis = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_millis());
        for (p, _) in batch {
            let (record, raw) = (&p.record, &p.raw);
            let received_at = raw.received_at.timestamp_millis();
            let inserted = records.execute(params![
                record.provider.as_str(),
                record.dedup_key,
                record.call_id,
                record.conversation_id,
                record.leg.as_str(),
                record.direction.as_str(),
                record.outcome.as_str(),
                record.provider_status,
                phone(&record.caller),
                e164(&record.caller),
                record.caller_name,
                phone(&record.called),
                e164(&record.called),
                record.agent,
                phone(&record.agent_phone),
                e164(&record.agent_phone),
                record.group,
                millis(record.started_at),
                millis(record.answered_at),
                millis(record.ended_at),
                record.ring_seconds,
                record.talk_seconds,
                record.hangup,
                record.recording,
                p.extra_json,
                raw.method,
                raw.path,
                raw.query,
                p.headers_json,
                raw.body,
                raw.remote_addr,
                received_at,
            ])?;
            if inserted == 0 {
                let id = resends.query_row(
                    params![record.provider.as_str(), record.dedup_key, received_at],
                    |row| row.get(0),
                )?;
                results.push(Ingested::Duplicate { id });
                continue;
            }
            let id = tx.last_insert_rowid();
            if let Some((request, decide_at)) = &p.decision {
                decisions.execute(params![
                    record.provider.as_str(),
                    request.subject,
                    request.kind.as_str(),
                    id,
                    decide_at.timestamp_millis(),
                ])?;
            }
            results.push(Ingested::Stored { id });
        }
    }
    for w in work.iter_mut() {
        let savepoint = tx.savepoint()?;
        // Work that fails keeps its error to answer with; the savepoint rolls back when dropped.
        if w.run(&savepoint) {
            savepoint.commit()?;
        }
    }
    tx.commit()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use crate::domain::{CallRecord, test_record};
    use crate::store::writer::{Pending, tests::raw};
    use crate::store::{Backend, Ingested, Store, WriteGate};

    /// A migrated database's folder, the store that migrated it (each test closes it), and a
    /// writer connection to it.
    type Fixture = (
        tempfile::TempDir,
        tokio::runtime::Runtime,
        Store,
        rusqlite::Connection,
    );

    /// A fresh `Fixture`.
    fn writer_connection() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = runtime
            .block_on(Store::open(&format!("sqlite://{}", path.display())))
            .unwrap();
        let connection = super::open(&path).unwrap();
        (dir, runtime, store, connection)
    }

    /// `writer_connection`, where inserting a record with the dedup key `poison` fails inside
    /// the transaction, as a full disk or a corrupt page would.
    fn poisoned_writer() -> Fixture {
        let (dir, runtime, store, connection) = writer_connection();
        connection
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON call_records \
                 WHEN NEW.dedup_key = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
            .unwrap();
        (dir, runtime, store, connection)
    }

    #[test]
    fn a_record_that_cannot_be_written_fails_alone_not_its_batch() {
        let (_dir, runtime, store, mut connection) = poisoned_writer();
        let record = |key: &str| CallRecord {
            dedup_key: key.into(),
            call_id: key.into(),
            ..test_record()
        };
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for key in ["before", "poison", "after"] {
            let (reply, answer) = tokio::sync::oneshot::channel();
            batch.push((Pending::new(record(key), raw(), None), reply));
            answers.push(answer);
        }
        let gate = WriteGate::for_backend(Backend::Sqlite);
        super::write_batch(&mut connection, &gate, &mut batch, &mut Vec::new());
        let results: Vec<_> = answers
            .into_iter()
            .map(|a| a.blocking_recv().unwrap().1)
            .collect();
        assert!(matches!(results[0], Ok(Ingested::Stored { .. })));
        let refused = results[1].as_ref().unwrap_err().to_string();
        assert!(refused.contains("poisoned"), "{refused}");
        assert!(matches!(results[2], Ok(Ingested::Stored { .. })));
        // Each written record carries the request it came from.
        let stored: Vec<(String, String, Vec<u8>)> = connection
            .prepare("SELECT dedup_key, request_path, request_body FROM call_records ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let request = |key: &str| {
            (
                key.to_owned(),
                "/webhooks/telecmi".to_owned(),
                b"{}".to_vec(),
            )
        };
        assert_eq!(stored, [request("before"), request("after")]);
        runtime.block_on(store.close());
    }

    /// Work that writes `chat_id` into telegram_chats, then fails if asked to.
    fn chat_work(
        chat_id: i64,
        fail: bool,
    ) -> (
        Box<dyn crate::store::writer::Work>,
        tokio::sync::oneshot::Receiver<Result<i64, crate::store::StoreError>>,
    ) {
        use crate::store::db::{Db, Param, run_ready};
        let (reply, answer) = tokio::sync::oneshot::channel();
        let work = move |mut db: crate::store::db::SqliteDb| {
            run_ready(db.execute(
                "INSERT INTO telegram_chats (chat_id, blocked_until) VALUES ($1, $2)",
                &[Param::from(chat_id), Param::from(1)],
            ))?;
            if fail {
                return Err(crate::store::StoreError::Corrupt("refused".into()));
            }
            Ok(chat_id)
        };
        let task = crate::store::writer::Task {
            work,
            output: None,
            reply,
        };
        (Box::new(task), answer)
    }

    #[test]
    fn work_shares_the_batch_transaction_and_a_failing_one_is_undone_alone() {
        let (_dir, runtime, store, mut connection) = writer_connection();
        let (reply, stored) = tokio::sync::oneshot::channel();
        let mut batch = vec![(Pending::new(test_record(), raw(), None), reply)];
        let (kept, kept_answer) = chat_work(1, false);
        let (undone, undone_answer) = chat_work(2, true);
        let mut work = vec![kept, undone];
        let gate = WriteGate::for_backend(Backend::Sqlite);
        super::write_batch(&mut connection, &gate, &mut batch, &mut work);
        assert!(matches!(
            stored.blocking_recv().unwrap().1,
            Ok(Ingested::Stored { .. })
        ));
        assert_eq!(kept_answer.blocking_recv().unwrap().unwrap(), 1);
        let refused = undone_answer.blocking_recv().unwrap().unwrap_err();
        assert!(refused.to_string().contains("refused"), "{refused}");
        let chats: Vec<i64> = connection
            .prepare("SELECT chat_id FROM telegram_chats ORDER BY chat_id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            chats,
            [1],
            "the failed work's insert was rolled back, the other kept"
        );
        runtime.block_on(store.close());
    }

    #[test]
    fn work_in_a_batch_that_fails_is_run_again_alone() {
        // A webhook that fails inside the batch's transaction rolls the whole batch back.
        let (_dir, runtime, store, mut connection) = poisoned_writer();
        let poisoned = CallRecord {
            dedup_key: "poison".into(),
            ..test_record()
        };
        let (reply, refused) = tokio::sync::oneshot::channel();
        let mut batch = vec![(Pending::new(poisoned, raw(), None), reply)];
        let (work, answer) = chat_work(7, false);
        let gate = WriteGate::for_backend(Backend::Sqlite);
        super::write_batch(&mut connection, &gate, &mut batch, &mut vec![work]);
        assert!(refused.blocking_recv().unwrap().1.is_err());
        assert_eq!(answer.blocking_recv().unwrap().unwrap(), 7);
        let chats: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM telegram_chats WHERE chat_id = 7",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(chats, 1, "the work was committed on its own");
        runtime.block_on(store.close());
    }

    #[test]
    fn the_writer_commits_to_disk_before_answering() {
        let dir = tempfile::tempdir().unwrap();
        let connection = super::open(&dir.path().join("w.db")).unwrap();
        let pragma = |name: &str| -> String {
            connection
                .query_row(&format!("PRAGMA {name}"), [], |row| {
                    row.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| match v {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        // WAL with synchronous=FULL (2): each commit is fsync'd, so an answered webhook is on disk.
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("temp_store"), "2");
    }
}
