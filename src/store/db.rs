//! One SQL text, two engines: the alert pipeline's queries run through sqlx (PostgreSQL, and
//! in-memory SQLite) or straight on rusqlite (a SQLite file), written once against `Db`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::StoreError;

/// A value bound to a `$n` placeholder. A text NULL keeps its type: PostgreSQL refuses an
/// integer NULL for a text column.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Int(i64),
    Text(Option<&'a str>),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::Text(v)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Int(v) => v.to_sql(),
            Param::Text(v) => v.to_sql(),
        }
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind<'q>(sql: &'q str, params: &[Param<'q>]) -> AnyQuery<'q> {
    params
        .iter()
        .fold(sqlx::query(sql), |query, param| match *param {
            Param::Int(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
        })
}

/// The `$n` placeholders sqlx takes on both databases, as SQLite numbers them for rusqlite.
pub(crate) fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// A row of either engine, read by column name.
pub(crate) enum Columns<'a> {
    Any(&'a AnyRow),
    Sqlite(&'a rusqlite::Row<'a>, &'a ColumnNames),
}

impl Columns<'_> {
    pub(crate) fn get<T>(&self, column: &str) -> Result<T, StoreError>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + rusqlite::types::FromSql,
    {
        match self {
            Columns::Any(row) => Ok(row.try_get(column)?),
            Columns::Sqlite(row, names) => match names.index(column) {
                Some(index) => Ok(row.get(index)?),
                None => Ok(row.get(column)?),
            },
        }
    }

    /// An epoch-milliseconds column as a time.
    pub(crate) fn millis(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let value: Option<i64> = self.get(column)?;
        Ok(value.and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
    }

    /// A text column parsed into a domain value (a provider, an outcome ...).
    pub(crate) fn parsed<T: std::str::FromStr>(&self, column: &str) -> Result<T, StoreError> {
        let text: String = self.get(column)?;
        text.parse()
            .map_err(|_| StoreError::Corrupt(format!("{column} = {text:?}")))
    }
}

/// A query's column names, read from SQLite once per query rather than once per value: rusqlite
/// finds a column by name by asking SQLite for every name before it, which for a call record's
/// 28 columns cost more than reading the values themselves.
pub(crate) struct ColumnNames {
    names: String,
    ends: Vec<usize>,
}

impl ColumnNames {
    fn of(statement: &rusqlite::Statement<'_>) -> ColumnNames {
        let mut names = String::new();
        let mut ends = Vec::with_capacity(statement.column_count());
        for name in statement.column_names() {
            names.push_str(name);
            ends.push(names.len());
        }
        ColumnNames { names, ends }
    }

    /// The index of `column`, matched as rusqlite matches it (ASCII case ignored).
    fn index(&self, column: &str) -> Option<usize> {
        let mut start = 0;
        self.ends.iter().position(|&end| {
            let name = &self.names[start..end];
            start = end;
            name.eq_ignore_ascii_case(column)
        })
    }
}

/// Somewhere statements run: a pool, a transaction, or a rusqlite connection.
pub(crate) trait Db {
    /// Runs one statement; how many rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;

    /// Runs one query and maps each of its rows.
    async fn fetch<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnMut(&Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError>;
}

/// Runs one statement on a sqlx executor; how many rows it changed.
async fn sqlx_execute<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    Ok(bind(sql, params).execute(executor).await?.rows_affected())
}

/// Runs one query on a sqlx executor and maps each of its rows.
async fn sqlx_fetch<'e, T>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    sql: &str,
    params: &[Param<'_>],
    mut map: impl FnMut(&Columns) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = bind(sql, params).fetch_all(executor).await?;
    rows.iter().map(|row| map(&Columns::Any(row))).collect()
}

/// The pool, for statements outside a transaction.
pub(crate) struct PoolDb<'a>(pub &'a sqlx::AnyPool);

impl Db for PoolDb<'_> {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        sqlx_execute(self.0, sql, params).await
    }

    async fn fetch<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnMut(&Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        sqlx_fetch(self.0, sql, params, map).await
    }
}

impl Db for sqlx::Transaction<'_, sqlx::Any> {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        sqlx_execute(&mut **self, sql, params).await
    }

    async fn fetch<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnMut(&Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        sqlx_fetch(&mut **self, sql, params, map).await
    }
}

/// A rusqlite connection (a transaction derefs to one). Its futures are ready when first
/// polled: the statements run on the calling thread, with no hop to a connection's own thread.
pub(crate) struct SqliteDb<'a>(pub &'a rusqlite::Connection);

impl Db for SqliteDb<'_> {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let mut statement = self.0.prepare_cached(&sqlite_sql(sql))?;
        Ok(statement.execute(rusqlite::params_from_iter(params))? as u64)
    }

    async fn fetch<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut map: impl FnMut(&Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut statement = self.0.prepare_cached(&sqlite_sql(sql))?;
        let names = ColumnNames::of(&statement);
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(map(&Columns::Sqlite(row, &names))?);
        }
        Ok(out)
    }
}

/// Runs a future that never waits, as `SqliteDb`'s are, to its end on this thread.
pub(crate) fn run_ready<T>(
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::Corrupt(
            "a SQLite statement waited for something; report this as a bug".into(),
        )),
    }
}

/// Read connections to a SQLite file, used on the calling thread. sqlx's SQLite driver runs each
/// connection on a thread of its own and hands every statement and row across: at a thousand
/// alerts a second those hand-offs, not SQLite, took most of the CPU. A read of the hot path
/// is an indexed lookup of a few microseconds, so it runs where it is asked.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

/// Idle read connections kept open; more open as needed, and close after use.
const IDLE_READERS: usize = 4;

impl Readers {
    pub(crate) fn new(path: &Path) -> Readers {
        Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        let connection = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // As small a page cache as the pool's connections (see `Store::open`); the OS caches
        // the file anyway.
        connection.pragma_update(None, "cache_size", -512)?;
        connection.busy_timeout(Duration::from_secs(10))?;
        Ok(connection)
    }

    /// Runs `read` on an idle connection, or a new one.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(SqliteDb) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.lock().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.open()?,
        };
        let result = read(SqliteDb(&connection));
        let mut idle = self.lock();
        if idle.len() < IDLE_READERS {
            idle.push(connection);
        }
        result
    }

    /// Closes the idle connections: the last connection to close checkpoints the WAL, and that
    /// should be the writer's (see `Store::close`).
    pub(crate) fn close(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<rusqlite::Connection>> {
        // The lock guards a push or a pop, which cannot panic halfway.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_keep_their_numbers_for_sqlite() {
        assert_eq!(
            sqlite_sql("SELECT 1 WHERE a = $2 AND b = $1 AND c = $2"),
            "SELECT 1 WHERE a = ?2 AND b = ?1 AND c = ?2"
        );
    }

    #[test]
    fn a_sqlite_read_binds_typed_nulls_and_reads_columns_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let setup = rusqlite::Connection::open(&path).unwrap();
        setup
            .execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, at INTEGER);
                 INSERT INTO t VALUES (1, 'one', 1700000000000), (2, NULL, NULL);",
            )
            .unwrap();
        let readers = Readers::new(&path);
        let rows = readers
            .read(|mut db| {
                run_ready(db.fetch(
                    "SELECT id, name, at FROM t WHERE id >= $1 OR name = $2 ORDER BY id",
                    &[Param::from(1), Param::Text(None)],
                    |row| {
                        Ok((
                            row.get::<i64>("id")?,
                            row.get::<Option<String>>("name")?,
                            row.millis("at")?,
                        ))
                    },
                ))
            })
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.as_deref(), Some("one"));
        assert_eq!(rows[0].2.unwrap().timestamp_millis(), 1_700_000_000_000);
        assert_eq!(rows[1], (2, None, None));
        // The read connection is kept for the next read, and cannot write.
        let refused = readers.read(|mut db| run_ready(db.execute("DELETE FROM t", &[])));
        assert!(refused.is_err(), "a read connection wrote");
        assert_eq!(readers.lock().len(), 1);
    }

    #[test]
    fn a_sqlite_row_finds_its_columns_by_name_as_rusqlite_does() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let sql = "SELECT 1 AS id, 'x' AS Name, 3 AS name_2, 4 AS n";
        let statement = connection.prepare(sql).unwrap();
        let names = ColumnNames::of(&statement);
        assert_eq!(names.index("id"), Some(0));
        // SQLite's own names ignore ASCII case, and rusqlite's lookup does too.
        assert_eq!(names.index("name"), Some(1));
        assert_eq!(names.index("NAME_2"), Some(2));
        assert_eq!(names.index("n"), Some(3));
        assert_eq!(names.index("nam"), None);

        let readers_dir = tempfile::tempdir().unwrap();
        let path = readers_dir.path().join("d.db");
        rusqlite::Connection::open(&path).unwrap();
        let read = Readers::new(&path).read(|mut db| {
            run_ready(db.fetch(sql, &[], |row| {
                Ok((
                    row.get::<i64>("ID")?,
                    row.get::<String>("name")?,
                    row.get::<i64>("n")?,
                ))
            }))
        });
        assert_eq!(read.unwrap(), vec![(1, "x".to_owned(), 4)]);
        // A column the query does not have is still rusqlite's error, naming it.
        let missing = Readers::new(&path)
            .read(|mut db| run_ready(db.fetch(sql, &[], |row| row.get::<i64>("missing"))));
        assert!(
            missing.unwrap_err().to_string().contains("missing"),
            "the error names the column"
        );
    }
}
