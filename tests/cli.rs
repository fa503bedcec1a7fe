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
    store.ingest(record.clone(), raw, None).await.unwrap();
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

const ROUTED: &str = r#"
[providers.telecmi]
token = "t"
[providers.callr]
token = "c"
[providers.callerdesk]
token = "d"

[receivers.sales]
telegram = ["-1001000000002"]
email = ["lead@example.com"]

[receivers.front]
telegram = [{ chat_id = -1001000000001, disable_notification = true }]

[receivers.agents]
telegram = [5550001]

[[routes]]
name = "sales"
match = { group = "Sales*" }
receiver = "sales"
agent_rings = "agents"

[[routes]]
name = "rest"
receiver = "front"
"#;

fn config_with(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("ringback.toml");
    std::fs::write(
        &path,
        format!(
            "[templates]\ndir = \"{}\"\n[storage]\nurl = \"sqlite://{}\"\n{extra}",
            concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
            dir.join("r.db").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let (ok, stdout, stderr) = ringback(&[
        "check-config",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/ringback.toml"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ringback.toml is valid."), "{stdout}");
    assert!(
        stdout.contains("route everything-else: default -> front-desk"),
        "{stdout}"
    );
}

#[test]
fn check_config_reports_every_problem_with_its_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with(
        dir.path(),
        "[receivers.front]\n\n[[routes]]\nname = \"a\"\nreceiver = \"nobody\"\n\n[[routes]]\nname = \"b\"\nreceiver = \"front\"\non = [\"answered\"]\n",
    );
    let (ok, stdout, stderr) = ringback(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(stdout, "");
    let file = path.display().to_string();
    // The file's first four lines are [templates] and [storage].
    assert!(
        stderr.contains(&format!(
            "{file}:9:12: key `routes.receiver`: receiver `nobody` is not defined"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:14:6: key `routes.on`: `answered` cannot alert"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:12:8: key `routes.name`: routes `a` and `b` both have no `match`"
        )),
        "{stderr}"
    );

    let path = config_with(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten_on = 2\n",
    );
    let (ok, _, stderr) = ringback(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(":7:1: key `server.listen_on`: unknown field `listen_on`"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("telegram.html"), "{% if %}").unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        format!("[templates]\ndir = \"{}\"\n", dir.path().display()),
    )
    .unwrap();
    let (ok, _, stderr) = ringback(&["check-config", "--config", broken.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("template telegram.html: line 1"),
        "{stderr}"
    );
}

#[test]
fn route_test_explains_a_telecmi_call_level_missed_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with(dir.path(), ROUTED);
    let body = dir.path().join("cdr.json");
    std::fs::write(
        &body,
        r#"{"type":"cdr","direction":"inbound","cmiuuid":"c-1","status":"missed","from":919810000001,"virtual_number":918044440000,"time":1700000000000,"team":"Sales_22"}"#,
    )
    .unwrap();
    let (ok, stdout, stderr) = ringback(&[
        "route-test",
        "--provider",
        "telecmi",
        body.to_str().unwrap(),
        "--config",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("  caller:        919810000001 (E.164 +919810000001)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Decision: missed call; decided 3 s after"),
        "{stdout}"
    );
    assert!(stdout.contains("route sales: matches because group `Sales_22` matches `Sales*`\n  alerts receiver sales\n"), "{stdout}");
    assert!(stdout.contains("  telegram -1001000000002:\n    | 📞 <b>Missed call</b> · Sales_22\n    | From: <b>+91 98100 00001</b>\n"), "{stdout}");
    assert!(
        stdout.contains(
            "  email lead@example.com:\n    Subject: Missed call from +91 98100 00001 (Sales_22)\n"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("route rest"), "first match wins: {stdout}");
    assert!(!dir.path().join("r.db").exists(), "nothing is stored");
}

#[test]
fn route_test_explains_a_leg_b_ring_a_callr_start_and_a_callerdesk_query() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with(dir.path(), ROUTED);
    let config = path.to_str().unwrap();

    let ring = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/telecmi_user_missed.json"
    );
    let (ok, stdout, _) = ringback(&[
        "route-test",
        "--provider",
        "telecmi",
        ring,
        "--config",
        config,
    ]);
    assert!(ok);
    assert!(
        stdout.contains("leg:           b (one agent's ring)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("route rest: matches, but has no `agent_rings`: nothing sent"),
        "{stdout}"
    );

    let start = dir.path().join("start.json");
    std::fs::write(&start, r#"{"type":"v2.call.inbound.started","event_id":"e","data":{"callid":5,"status":"ringing"}}"#).unwrap();
    let (ok, stdout, _) = ringback(&[
        "route-test",
        "--provider",
        "callr",
        start.to_str().unwrap(),
        "--config",
        config,
    ]);
    assert!(ok);
    assert!(
        stdout.contains("Decision: never alerts: a live or start event"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = ringback(&[
        "route-test",
        "--provider",
        "callerdesk",
        "--config",
        config,
        "--query",
        "CallSid=1.2&Status=NOANSWER&SourceNumber=9810000001&EndTime=2023-01-02%2014:33:38&Direction=IVR&call_group=Support",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("route rest: matches because no other route matched: this is the default route\n  alerts receiver front\n  telegram -1001000000001 (silent):"), "{stdout}");

    let (ok, _, stderr) = ringback(&[
        "route-test",
        "--provider",
        "callerdesk",
        "--config",
        config,
        "--query",
        "Status=NOANSWER",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("ringback would refuse this payload (422): field `CallSid` is missing"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_under_load_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = config_with(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[providers.telecmi]\ntoken = \"t\"\n[receivers.r]\n[[routes]]\nname = \"all\"\nreceiver = \"r\"\n"
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringback"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "ringback did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Sixteen senders, each sending one webhook after another until the server goes away.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..16)
        .map(|sender| {
            let client = client.clone();
            let acked = acked.clone();
            let url = format!("{base}/webhooks/telecmi?token=t");
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..1000 {
                    let id = format!("load-{sender}-{i}");
                    let body = serde_json::json!({"type": "cdr", "cmiuuid": id, "status": "missed",
                                                  "from": 919810000001u64, "time": 1700000000000u64});
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 200 => {
                            acknowledged.push(id);
                            acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(r) => panic!("{id}: unexpected {}", r.status()),
                        Err(_) => break, // shut down: not acknowledged
                    }
                }
                acknowledged
            })
        })
        .collect();
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 50 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no load got through"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "ringback exits cleanly on SIGTERM: {exit:?}"
    );

    let store = Store::open(&format!("sqlite://{}", dir.path().join("r.db").display()))
        .await
        .unwrap();
    println!(
        "{} webhooks acknowledged before shutdown",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 50);
    // A record stored whose answer was cut off by the shutdown is no loss: the provider resends it.
    assert!(store.count_records().await.unwrap() >= acknowledged.len() as i64);
    for id in &acknowledged {
        assert_eq!(
            store
                .records_of_call(Provider::Telecmi, id)
                .await
                .unwrap()
                .len(),
            1,
            "{id} was acknowledged, so it is stored"
        );
    }
}
