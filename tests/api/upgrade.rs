//! A database an earlier ringback left behind: the new one migrates it at start and loses nothing.

use ringback::domain::Provider;
use ringback::store::RawRequest;
use serde_json::json;

use crate::fixture;
use crate::helpers::{spawn_app_on_prepared, start_time};

/// Migrates the database at `url` with the migrations up to `version` only, as the ringback that
/// shipped them did.
async fn migrate_up_to(url: &str, version: i64) {
    let (backend, url) = match url.strip_prefix("sqlite:") {
        Some(_) => ("sqlite", format!("{url}?mode=rwc")),
        None => ("postgres", url.to_owned()),
    };
    let all = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
    let earlier = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let number: i64 = name[..4].parse().unwrap();
        if number <= version {
            std::fs::copy(&path, earlier.path().join(&name)).unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(earlier.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO call_records (provider, dedup_key, call_id, conversation_id, leg, \
         direction, outcome, caller, caller_e164, extra, received_at) VALUES \
         ('telecmi', 'before-1', 'before-1', 'before-1', 'a', 'inbound', 'missed', \
          '919810000001', '+919810000001', '{}', $1), \
         ('telecmi', 'before-2', 'before-2', 'before-2', 'a', 'inbound', 'missed', \
          '919810000002', '+919810000002', '{}', $1)",
    )
    .bind(start_time().timestamp_millis())
    .execute(&pool)
    .await
    .unwrap();
    // Only the first record's request was kept (the second one's, say, removed by hand).
    sqlx::query(
        "INSERT INTO raw_requests (call_record_id, method, path, query, headers, body, \
         remote_addr, received_at) SELECT id, 'POST', '/webhooks/telecmi', 'x=1', \
         '[[\"content-type\",\"application/json\"]]', $1, '10.0.0.7', received_at \
         FROM call_records WHERE dedup_key = 'before-1'",
    )
    .bind(fixture("telecmi_user_missed.json").to_string().into_bytes())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn requests_stored_before_the_upgrade_stay_with_their_records() {
    let app = spawn_app_on_prepared(|url| async move { migrate_up_to(&url, 7).await }).await;

    let first = app.record(Provider::Telecmi, "before-1").await;
    let second = app.record(Provider::Telecmi, "before-2").await;
    assert_eq!(
        first.record.caller.as_ref().unwrap().e164.as_deref(),
        Some("+919810000001")
    );
    assert_eq!(
        app.store.raw_request_of(first.id).await.unwrap(),
        Some(RawRequest {
            method: "POST".into(),
            path: "/webhooks/telecmi".into(),
            query: "x=1".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: fixture("telecmi_user_missed.json").to_string().into_bytes(),
            remote_addr: Some("10.0.0.7".into()),
            received_at: start_time(),
        })
    );
    assert_eq!(app.store.raw_request_of(second.id).await.unwrap(), None);

    // Webhooks after the upgrade are stored with their requests, under new ids.
    let sample = fixture("telecmi_user_missed.json");
    let answer = app.post_json(Provider::Telecmi, &sample).await;
    let id = answer.body["record_id"].as_i64().unwrap();
    assert_eq!(answer.body, json!({"status": "stored", "record_id": id}));
    assert!(id > second.id, "{id} after {}", second.id);
    let raw = app.store.raw_request_of(id).await.unwrap().unwrap();
    assert_eq!(raw.body, sample.to_string().into_bytes());
}
