//! The `ringback` binary's commands, run as a user runs them.

// Shared with tests/api, which uses all of it; this binary uses part.
#[allow(dead_code)]
#[path = "support/smtp.rs"]
mod smtp;

use std::path::Path;
use std::process::Command;

use chrono::{Duration, Utc};
use ringback::domain::{CallRecord, Direction, Leg, Outcome, PhoneNumber, Provider};
use ringback::store::{RawRequest, Store};

fn missed_call(id: &str, caller: &str, at: chrono::DateTime<Utc>) -> CallRecord {
    CallRecord {
        provider: Provider::Telecmi,
        call_id: id.into(),
        conversation_id: id.into(),
        leg: Leg::Call,
        dedup_key: format!("cdr:{id}:a"),
        direction: Direction::Inbound,
        outcome: Outcome::Missed,
        provider_status: Some("missed".into()),
        caller: Some(PhoneNumber {
            raw: caller.trim_start_matches('+').into(),
            e164: Some(caller.into()),
        }),
        caller_name: None,
        called: None,
        agent: None,
        agent_phone: None,
        group: Some("Sales".into()),
        started_at: None,
        answered_at: None,
        ended_at: Some(at - Duration::minutes(2)),
        ring_seconds: Some(30),
        talk_seconds: None,
        hangup: None,
        recording: None,
        extra: Default::default(),
    }
}

async fn store_call(db: &Path, record: &CallRecord, received_at: chrono::DateTime<Utc>) {
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let raw = RawRequest {
        method: "POST".into(),
        path: "/webhooks/telecmi".into(),
        query: String::new(),
        headers: Vec::new(),
        body: b"{}".to_vec(),
        remote_addr: None,
        received_at,
    };
    store.ingest(record, &raw, None).await.unwrap();
    store.close().await;
}

fn write_config(dir: &Path, smtp_url: &str) -> std::path::PathBuf {
    let config = format!(
        r#"
[storage]
url = "sqlite://{db}"

[templates]
dir = "{templates}"

[email]
smtp_url = "{smtp_url}"
from = "ringback <alerts@ringback.test>"

[receivers.desk]

[[routes]]
name = "everything"
receiver = "desk"

[[digests]]
name = "daily-ops"
to = ["manager@example.com"]
schedule = "0 9 * * *"
timezone = "Asia/Kolkata"
"#,
        db = dir.join("ringback.db").display(),
        templates = concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
    );
    let path = dir.join("ringback.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn ringback(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringback"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn digest_preview_prints_the_digest_and_writes_its_html() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "smtp://127.0.0.1:9?tls=none");
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .to_utc();
    store_call(
        &dir.path().join("ringback.db"),
        &missed_call("p-1", "+919810000001", at),
        at,
    )
    .await;
    let html = dir.path().join("digest.html");

    let (ok, stdout, stderr) = ringback(&[
        "digest",
        "preview",
        "daily-ops",
        "--config",
        config.to_str().unwrap(),
        "--from",
        "2026-11-23 09:00",
        "--to",
        "2026-11-24 09:00",
        "--html",
        html.to_str().unwrap(),
    ]);

    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(
            "To: manager@example.com\nSubject: daily-ops: 1 missed call, 1 still waiting\n\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("+91 98100 00001 tel:+919810000001: 1 missed call at Mon 23 Nov 15:28"),
        "{stdout}"
    );
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains(r#"<a href="tel:+919810000001">"#)
    );

    let (ok, _, stderr) = ringback(&[
        "digest",
        "preview",
        "nope",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("no digest is named `nope`"), "{stderr}");
    assert!(stderr.contains("daily-ops"), "{stderr}");
}

#[tokio::test]
async fn digest_send_sends_the_current_period_once() {
    let smtp = smtp::FakeSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &smtp.url());
    store_call(
        &dir.path().join("ringback.db"),
        &missed_call("s-1", "+919810000002", Utc::now()),
        Utc::now() - Duration::seconds(30),
    )
    .await;
    let config = config.to_str().unwrap().to_owned();

    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        ringback(&["digest", "send", "daily-ops", "--config", &config])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("queued for 1 recipient(s)"), "{stdout}");
    let mails = smtp.accepted();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .data
            .contains("daily-ops: 1 missed call, 1 still waiting")
    );

    // The period was recorded: sending again right away has nothing new.
    let config = dir
        .path()
        .join("ringback.toml")
        .to_str()
        .unwrap()
        .to_owned();
    let (ok, stdout, _) = tokio::task::spawn_blocking(move || {
        ringback(&["digest", "send", "daily-ops", "--config", &config])
    })
    .await
    .unwrap();
    assert!(ok);
    assert!(stdout.contains("nothing was missed since"), "{stdout}");
    assert_eq!(smtp.accepted().len(), 1);
}
