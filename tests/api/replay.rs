//! `ringback replay`: a backlog of recorded requests is stored once, and its alerts go out
//! grouped per chat, within Telegram's limits.

use std::sync::atomic::{AtomicUsize, Ordering};

use ringback::domain::Provider;
use ringback::replay;
use serde_json::json;

use crate::alerts::{FRONT_DESK, ONE_ROUTE, call, world};

#[tokio::test]
async fn a_backlog_is_stored_once_and_its_alerts_go_out_grouped_within_telegrams_limits() {
    let w = world(ONE_ROUTE).await;
    // Two of the calls reached ringback before the outage, and were alerted.
    for i in 0..2u64 {
        w.app
            .post_json(
                Provider::Telecmi,
                &call(&format!("b-{i}"), "missed", 919810001000 + i),
            )
            .await;
    }
    w.app.advance(3).await;
    w.app.advance(1).await;
    let before = w.telegram.sent_to(FRONT_DESK).len();
    assert_eq!(before, 2);

    // The provider's backlog, as ringback stores requests: 60 calls, then two that are not.
    let mut lines: Vec<String> = (0..60u64)
        .map(|i| {
            json!({
                "method": "POST",
                "path": "/webhooks/telecmi",
                "query": "",
                "headers": [["content-type", "application/json"], ["content-length", "9999"]],
                "body": call(&format!("b-{i}"), "missed", 919810001000 + i).to_string(),
                "remote_addr": "203.0.113.7:4242",
            })
            .to_string()
        })
        .collect();
    lines.push("not a request".into());
    lines.push(json!({ "path": "/webhooks/telecmi", "body": "{}" }).to_string());
    let text = lines.join("\n");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), w.app.config_text()).unwrap();
    let config = ringback::config::load(file.path()).unwrap();
    let (ingest, pipeline, config) =
        replay::build(config, w.app.store.clone(), w.app.clock.clone()).unwrap();
    let progressed = AtomicUsize::new(0);
    let summary = replay::ingest(&ingest, &config, &text, &|| {
        progressed.fetch_add(1, Ordering::SeqCst);
    })
    .await;
    assert_eq!(progressed.load(Ordering::SeqCst), 62);
    assert_eq!((summary.stored, summary.duplicates), (58, 2));
    assert_eq!(summary.refused.len(), 2, "{:?}", summary.refused);
    assert_eq!(summary.refused[0].0, 61);
    assert!(summary.refused[0].1.starts_with("not a recorded request"));
    assert_eq!(summary.refused[1].0, 62);
    assert!(
        summary.refused[1].1.starts_with("422"),
        "{:?}",
        summary.refused[1]
    );

    // Five minutes of the test clock, a second at a time.
    for _ in 0..300 {
        w.app.clock.advance(chrono::Duration::seconds(1));
        pipeline.run_until_idle().await.unwrap();
    }
    let sent = w.telegram.sent_to(FRONT_DESK);
    let replayed = &sent[before..];
    let mut callers: Vec<&str> = replayed
        .iter()
        .flat_map(|m| m.text.lines())
        .filter(|l| l.starts_with("From: "))
        .collect();
    let listed = callers.len();
    callers.sort();
    callers.dedup();
    assert_eq!((listed, callers.len()), (58, 58), "each replayed call once");
    assert!(
        replayed.len() <= 4,
        "grouped into a few messages, not {}",
        replayed.len()
    );
    assert_eq!(w.telegram.limit_violations(), 0);
    assert_eq!(w.app.store.outbox_backlog().await.unwrap().0, 0);
}
