//! Operating ringback: metrics, shutdown, retention.

use ringback::domain::Provider;

use crate::alerts::{ONE_ROUTE, call, world};
use crate::helpers::TestApp;

/// The sum of a metric's samples whose labels include every one of `labels`.
async fn metric(app: &TestApp, name: &str, labels: &[&str]) -> f64 {
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
