//! Operating ringback: metrics, shutdown, retention.

use ringback::domain::Provider;

use crate::alerts::{FRONT_DESK, ONE_ROUTE, SALES, call, world};
use crate::helpers::TestApp;

/// The sum of a metric's samples whose labels include every one of `labels`.
pub async fn metric(app: &TestApp, name: &str, labels: &[&str]) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_are_present_and_move_with_traffic() {
    let w = world(ONE_ROUTE).await;
    let stored = |app| {
        metric(
            app,
            "ringback_webhooks_total",
            &["provider=\"telecmi\"", "result=\"stored\""],
        )
    };
    let sent = |app| {
        metric(
            app,
            "ringback_deliveries_total",
            &["channel=\"telegram\"", "result=\"sent\""],
        )
    };
    let latency = |app| {
        metric(
            app,
            "ringback_delivery_latency_seconds_count",
            &["channel=\"telegram\""],
        )
    };
    let before = (
        stored(&w.app).await,
        sent(&w.app).await,
        latency(&w.app).await,
    );

    w.app
        .post_json(Provider::Telecmi, &call("m-1", "missed", 919810000001))
        .await;
    assert_eq!(metric(&w.app, "ringback_outbox_depth", &[]).await, 0.0);
    w.app.clock.advance(chrono::Duration::seconds(3));
    let unauthorized = w
        .app
        .send(
            w.app
                .client
                .post(w.app.url("telecmi", "token=wrong"))
                .body("{}"),
        )
        .await;
    assert_eq!(unauthorized.status, 401);
    w.app.run_pipeline().await;

    let after = (
        stored(&w.app).await,
        sent(&w.app).await,
        latency(&w.app).await,
    );
    assert!(after.0 >= before.0 + 1.0, "{before:?} {after:?}");
    assert!(after.1 >= before.1 + 1.0, "{before:?} {after:?}");
    assert!(after.2 >= before.2 + 1.0, "{before:?} {after:?}");
    assert!(
        metric(
            &w.app,
            "ringback_webhooks_total",
            &["result=\"unauthorized\""]
        )
        .await
            >= 1.0
    );
    assert!(metric(&w.app, "ringback_decisions_total", &["result=\"alert\""]).await >= 1.0);
    let page = w
        .app
        .client
        .get(format!("{}/metrics", w.app.address))
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = page.text().await.unwrap();
    assert!(
        text.contains("ringback_outbox_oldest_pending_seconds"),
        "{text}"
    );
    assert!(
        text.contains("ringback_records_total{provider=\"telecmi\",outcome=\"missed\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn pruning_keeps_what_pending_alerts_need() {
    use crate::support::telegram::Failure;
    let w = world(ONE_ROUTE).await;
    w.app
        .post_json(Provider::Telecmi, &call("old-sent", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    w.telegram.fail_next(None, Failure::RetryAfter(600));
    w.app
        .post_json(
            Provider::Telecmi,
            &call("old-pending", "missed", 919810000002),
        )
        .await;
    w.app.advance(3).await;
    let refused = w
        .app
        .send(
            w.app
                .client
                .post(w.app.url("telecmi", "token=wrong"))
                .body("{}"),
        )
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(w.app.store.outbox().await.unwrap().len(), 2);

    let deleted = w
        .app
        .store
        .prune(w.app.clock.now() + chrono::Duration::days(100))
        .await
        .unwrap();

    // The sent call's message, alert, decision and record (its raw request goes with it), and
    // the refused request.
    assert_eq!(deleted, 5);
    let outbox = w.app.store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].state, "pending");
    assert!(
        w.app
            .records(Provider::Telecmi, "old-sent")
            .await
            .is_empty()
    );
    let kept = w.app.record(Provider::Telecmi, "old-pending").await;
    assert!(w.app.store.raw_request_of(kept.id).await.unwrap().is_some());
    assert!(w.app.rejections().await.is_empty());
    // The pending alert is still delivered.
    w.app.advance(600).await;
    assert_eq!(w.telegram.sent().len(), 2);
}

#[tokio::test]
async fn an_invalid_config_is_rejected_and_the_old_routes_still_deliver() {
    let w = world(ONE_ROUTE).await;
    let good = w.app.config_text();
    w.app.write_config(&format!("{good}\n[[routes]]\nname = \"typo\"\nreceiver = \"front-desk\"\nmatch = {{ grup = \"x\" }}\n"));
    // The metrics recorder is shared by the tests running alongside: compare counts, not gauges.
    let failures = || {
        metric(
            &w.app,
            "ringback_config_reloads_total",
            &["result=\"failure\""],
        )
    };
    let before = failures().await;

    let answer = w.app.reload().await;

    assert_eq!(answer.status, 422);
    assert_eq!(answer.body["error"], "invalid_config");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `grup`"),
        "{}",
        answer.body
    );
    assert!(failures().await >= before + 1.0);
    w.app
        .post_json(Provider::Telecmi, &call("r-1", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    assert_eq!(
        w.telegram.sent_to(FRONT_DESK).len(),
        1,
        "the old routes still deliver"
    );
}

#[tokio::test]
async fn a_valid_config_takes_effect_without_a_restart() {
    let w = world(ONE_ROUTE).await;
    let config = w.app.config_text().replace(
        "telegram = [\"-1001000000001\"]",
        "telegram = [\"-1001000000002\"]",
    );
    w.app.write_config(&config);
    let successes = || {
        metric(
            &w.app,
            "ringback_config_reloads_total",
            &["result=\"success\""],
        )
    };
    let before = successes().await;

    let answer = w.app.reload().await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(successes().await >= before + 1.0);
    assert!(metric(&w.app, "ringback_config_reload_timestamp_seconds", &[]).await > 0.0);
    w.app
        .post_json(Provider::Telecmi, &call("r-2", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    assert_eq!(w.telegram.sent_to(SALES).len(), 1);
    assert!(w.telegram.sent_to(FRONT_DESK).is_empty());
}

#[tokio::test]
async fn reloading_over_http_needs_the_token_and_cannot_move_the_database() {
    let w = world(ONE_ROUTE).await;
    let no_token = w
        .app
        .send(w.app.client.post(format!("{}/-/reload", w.app.address)))
        .await;
    assert_eq!(no_token.status, 401);
    let config: String = w
        .app
        .config_text()
        .lines()
        .map(|l| {
            if l.starts_with("url = ") {
                "url = \"sqlite://elsewhere.db\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    w.app.write_config(&config);
    let answer = w.app.reload().await;
    assert_eq!(answer.status, 422);
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("storage.url changed"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn editing_the_config_file_reloads_it() {
    use crate::helpers::{alerting, base_config, spawn_app_in_service};
    use crate::support::smtp::FakeSmtp;
    use crate::support::telegram::FakeTelegram;
    let telegram = FakeTelegram::start(ringback::clock::Clock::System).await;
    let smtp = FakeSmtp::start().await;
    let config = alerting(&telegram.url, &smtp.url(), ONE_ROUTE)
        .replace("settle_seconds = 3", "settle_seconds = 0");
    let app = spawn_app_in_service(|db| base_config(db, &config)).await;
    let edited = app.config_text().replace(
        "telegram = [\"-1001000000001\"]",
        "telegram = [\"-1001000000002\"]",
    );

    app.write_config(&edited);
    // Waits for the reload, bounded: the watch reloads a moment after the file settles.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reloads = metric(
            &app,
            "ringback_config_reloads_total",
            &["result=\"success\""],
        )
        .await;
        let current = app.live.current().config.receivers["front-desk"].telegram.0[0].chat_id;
        if current == SALES || std::time::Instant::now() > deadline {
            assert!(reloads >= 1.0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.post_json(Provider::Telecmi, &call("r-3", "missed", 919810000001))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while telegram.sent().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(telegram.sent_to(SALES).len(), 1);
}

#[tokio::test]
async fn export_writes_records_with_their_decision_and_alert_state() {
    let w = world(ONE_ROUTE).await;
    w.app
        .post_json(Provider::Telecmi, &call("x-missed", "missed", 919810000001))
        .await;
    w.app
        .post_json(
            Provider::Telecmi,
            &call("x-answered", "answered", 919810000002),
        )
        .await;
    w.app.advance(3).await;
    let from = w.app.clock.now() - chrono::Duration::hours(1);
    let to = w.app.clock.now() + chrono::Duration::hours(1);

    let mut csv = Vec::new();
    let count = ringback::check::export(&w.app.store, from, to, false, &mut csv)
        .await
        .unwrap();
    let mut jsonl = Vec::new();
    ringback::check::export(&w.app.store, from, to, true, &mut jsonl)
        .await
        .unwrap();

    assert_eq!(count, 2);
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("id,provider,call_id,conversation_id,leg,direction,outcome,")
    );
    assert!(
        csv.contains(",x-missed,x-missed,a,inbound,missed,missed,919810000001,+919810000001,"),
        "{csv}"
    );
    assert!(
        csv.trim_end()
            .lines()
            .nth(1)
            .unwrap()
            .ends_with(",missed (everything: alert),sent"),
        "{csv}"
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[1]["call_id"], "x-answered");
    assert_eq!(rows[1]["decision"], "answered by 304_carol");
    assert_eq!(rows[1]["alert_state"], serde_json::Value::Null);
    assert_eq!(rows[0]["alert_state"], "sent");
}
