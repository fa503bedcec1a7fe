//! Durable storage through sqlx: SQLite by default, PostgreSQL by URL, one code path for both.
//! Times are stored as epoch milliseconds so the same queries run on either database.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::domain::{CallRecord, PhoneNumber, Provider};

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
    #[error("a stored row holds an unexpected value: {0}")]
    Corrupt(String),
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
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL with synchronous=FULL: a commit is on disk (fsync'd) when it returns,
                        // which is what lets a webhook be acknowledged right after it.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 10000",
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
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores `record` and the request it came from in one transaction; a resend of a stored
    /// record only counts the resend.
    pub async fn ingest(
        &self,
        record: &CallRecord,
        raw: &RawRequest,
    ) -> Result<Ingested, StoreError> {
        let mut tx = self.pool.begin().await?;
        let phone = |p: &Option<PhoneNumber>| p.as_ref().map(|p| p.raw.clone());
        let e164 = |p: &Option<PhoneNumber>| p.as_ref().and_then(|p| p.e164.clone());
        let received_at = raw.received_at.timestamp_millis();
        let row = sqlx::query(
            "INSERT INTO call_records (provider, dedup_key, call_id, conversation_id, leg, direction, \
             outcome, provider_status, caller, caller_e164, caller_name, called, called_e164, agent, \
             agent_phone, agent_phone_e164, call_group, started_at, answered_at, ended_at, \
             ring_seconds, talk_seconds, hangup, recording, extra, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22, $23, $24, $25, $26) \
             ON CONFLICT (provider, dedup_key) DO UPDATE \
             SET resends = call_records.resends + 1, last_resent_at = excluded.received_at \
             RETURNING id, resends",
        )
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
        .bind(serde_json::to_string(&record.extra).expect("a string map serializes"))
        .bind(received_at)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        let resends: i64 = row.try_get("resends")?;
        if resends > 0 {
            tx.commit().await?;
            return Ok(Ingested::Duplicate { id });
        }
        sqlx::query(
            "INSERT INTO raw_requests (call_record_id, method, path, query, headers, body, \
             remote_addr, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&raw.method)
        .bind(&raw.path)
        .bind(&raw.query)
        .bind(headers_json(&raw.headers))
        .bind(raw.body.clone())
        .bind(&raw.remote_addr)
        .bind(received_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ingested::Stored { id })
    }

    pub async fn reject(&self, rejection: &Rejection) -> Result<(), StoreError> {
        let raw = &rejection.request;
        sqlx::query(
            "INSERT INTO rejected_requests (provider, method, path, query, headers, body, \
             remote_addr, received_at, status, error, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&rejection.provider)
        .bind(&raw.method)
        .bind(&raw.path)
        .bind(&raw.query)
        .bind(headers_json(&raw.headers))
        .bind(raw.body.clone())
        .bind(&raw.remote_addr)
        .bind(raw.received_at.timestamp_millis())
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
        let rows = sqlx::query(
            "SELECT * FROM call_records WHERE provider = $1 AND (call_id = $2 OR conversation_id = $2) \
             ORDER BY id",
        )
        .bind(provider.as_str())
        .bind(call_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    pub async fn raw_request_of(&self, record_id: i64) -> Result<Option<RawRequest>, StoreError> {
        let row = sqlx::query("SELECT * FROM raw_requests WHERE call_record_id = $1")
            .bind(record_id)
            .fetch_optional(&self.pool)
            .await?;
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

fn headers_json(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).expect("string pairs serialize")
}

fn millis(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let value: Option<i64> = row.try_get(column)?;
    Ok(value.and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
}

fn parsed<T: FromStr>(row: &AnyRow, column: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("call_records.{column} = {text:?}")))
}

fn record_from_row(row: &AnyRow) -> Result<StoredRecord, StoreError> {
    let phone = |raw: &str, e164: &str| -> Result<Option<PhoneNumber>, StoreError> {
        let raw: Option<String> = row.try_get(raw)?;
        let e164: Option<String> = row.try_get(e164)?;
        Ok(raw.map(|raw| PhoneNumber { raw, e164 }))
    };
    let extra: String = row.try_get("extra")?;
    let record = CallRecord {
        provider: parsed(row, "provider")?,
        call_id: row.try_get("call_id")?,
        conversation_id: row.try_get("conversation_id")?,
        leg: parsed(row, "leg")?,
        dedup_key: row.try_get("dedup_key")?,
        direction: parsed(row, "direction")?,
        outcome: parsed(row, "outcome")?,
        provider_status: row.try_get("provider_status")?,
        caller: phone("caller", "caller_e164")?,
        caller_name: row.try_get("caller_name")?,
        called: phone("called", "called_e164")?,
        agent: row.try_get("agent")?,
        agent_phone: phone("agent_phone", "agent_phone_e164")?,
        group: row.try_get("call_group")?,
        started_at: millis(row, "started_at")?,
        answered_at: millis(row, "answered_at")?,
        ended_at: millis(row, "ended_at")?,
        ring_seconds: row.try_get("ring_seconds")?,
        talk_seconds: row.try_get("talk_seconds")?,
        hangup: row.try_get("hangup")?,
        recording: row.try_get("recording")?,
        extra: serde_json::from_str(&extra)
            .map_err(|_| StoreError::Corrupt(format!("call_records.extra = {extra:?}")))?,
    };
    Ok(StoredRecord {
        id: row.try_get("id")?,
        received_at: millis(row, "received_at")?
            .ok_or_else(|| StoreError::Corrupt("call_records.received_at".into()))?,
        resends: row.try_get("resends")?,
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

    #[test]
    fn passwords_are_masked() {
        assert_eq!(redact_url("mysql://u:secret@h/db"), "mysql://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
