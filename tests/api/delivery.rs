//! Delivery: Telegram's errors and limits, email over real SMTP, bursts.

use mail_parser::MessageParser;
use ringback::domain::Provider;
use serde_json::json;

use crate::alerts::{FRONT_DESK, ONE_ROUTE, call, world};
use crate::fixture;
use crate::support::telegram::Failure;

#[tokio::test]
async fn telegram_429_is_honored_then_delivered_once() {
    let w = world(ONE_ROUTE).await;
    w.telegram
        .fail_next(Some(FRONT_DESK), Failure::RetryAfter(7));
    w.app
        .post_json(Provider::Telecmi, &call("c-429", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    assert_eq!((w.telegram.requests(), w.telegram.sent().len()), (1, 0));
    let row = &w.app.store.outbox().await.unwrap()[0];
    assert_eq!((row.state.as_str(), row.attempts), ("pending", 1));
    assert_eq!(row.last_error.as_deref(), Some("429: retry after 7 s"));

    w.app.advance(6).await;
    assert_eq!(
        w.telegram.requests(),
        1,
        "nothing before retry_after has passed"
    );
    w.app.advance(1).await;
    assert_eq!(w.telegram.sent().len(), 1);
    assert_eq!(w.telegram.requests(), 2);
    w.app.advance(3600).await;
    assert_eq!(w.telegram.requests(), 2);
}

#[tokio::test]
async fn telegram_502_is_retried() {
    let w = world(ONE_ROUTE).await;
    w.telegram.fail_next(None, Failure::Status(502));
    w.app
        .post_json(Provider::Telecmi, &call("c-502", "missed", 919810000001))
        .await;
    // teloxide waits 10 s (real time) before it returns a 5xx; the clock it cannot skip.
    w.app.advance(3).await;
    let row = &w.app.store.outbox().await.unwrap()[0];
    assert_eq!(row.state, "pending");
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("other than Bot API JSON"),
        "{row:?}"
    );
    // The first retry comes 4 to 6 seconds later (5 s with jitter).
    w.app.advance(6).await;
    assert_eq!(w.telegram.sent().len(), 1);
    assert_eq!(w.app.store.outbox().await.unwrap()[0].state, "sent");
}

#[tokio::test]
async fn telegram_403_fails_at_once_and_is_not_retried() {
    let w = world(ONE_ROUTE).await;
    w.telegram.fail_next(None, Failure::Blocked);
    w.app
        .post_json(Provider::Telecmi, &call("c-403", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    w.app.advance(24 * 3600).await;
    assert_eq!(w.telegram.requests(), 1);
    let row = &w.app.store.outbox().await.unwrap()[0];
    assert_eq!(row.state, "failed");
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("bot was blocked by the user"),
        "{row:?}"
    );
}

#[tokio::test]
async fn chat_not_found_fails_at_once() {
    let w = world(ONE_ROUTE).await;
    w.telegram.fail_next(None, Failure::ChatNotFound);
    w.app
        .post_json(Provider::Telecmi, &call("c-404", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    w.app.advance(3600).await;
    assert_eq!(w.telegram.requests(), 1);
    assert_eq!(w.app.store.outbox().await.unwrap()[0].state, "failed");
}

#[tokio::test]
async fn a_migrated_group_gets_this_and_later_alerts_at_its_new_id() {
    let w = world(ONE_ROUTE).await;
    let new_chat = -1009999999999;
    w.telegram
        .fail_next(Some(FRONT_DESK), Failure::Migrate(new_chat));
    w.app
        .post_json(Provider::Telecmi, &call("c-mig", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    w.app
        .post_json(Provider::Telecmi, &call("c-mig-2", "missed", 919810000002))
        .await;
    w.app.advance(3).await;

    let sent = w.telegram.sent();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert!(sent.iter().all(|m| m.chat_id == new_chat));
    assert!(w.telegram.sent_to(FRONT_DESK).is_empty());
}

#[tokio::test]
async fn hostile_names_render_and_parse() {
    let w = world(ONE_ROUTE).await;
    let mut cdr = fixture("callr_cdr.json");
    cdr["callerName"] = json!("<b>Bob & \"Co\"</i> &amp;");
    cdr["scenarioName"] = json!("Sales <EU> & </b>");
    w.app.post_json(Provider::Callr, &cdr).await;
    w.app.advance(3).await;

    let sent = w.telegram.sent();
    assert_eq!(sent.len(), 1, "Telegram parsed the message: {sent:#?}");
    assert!(
        sent[0].text.contains("(<b>Bob & \"Co\"</i> &amp;)"),
        "{}",
        sent[0].text
    );
    assert!(
        sent[0]
            .source
            .contains("(&lt;b&gt;Bob &amp; &quot;Co&quot;&lt;&#x2f;i&gt; &amp;amp;)"),
        "{}",
        sent[0].source
    );
    assert!(
        sent[0].text.contains("Sales <EU> & </b>"),
        "{}",
        sent[0].text
    );
    // Callr calls canceled while ringing say so.
    assert!(
        sent[0]
            .text
            .starts_with("📞 Missed call (canceled by the caller) · Sales"),
        "{}",
        sent[0].text
    );
}

const EMAIL_ROUTE: &str = r#"
[receivers.managers]
email = ["Sales Lead <lead@example.com>"]

[[routes]]
name = "everything"
receiver = "managers"
"#;

#[tokio::test]
async fn email_has_text_and_html_parts() {
    let w = world(EMAIL_ROUTE).await;
    let mut cdr = fixture("callr_cdr.json");
    cdr["callerName"] = json!("Eve <script>alert(1)</script> & Co");
    w.app.post_json(Provider::Callr, &cdr).await;
    w.app.advance(3).await;

    let mails = w.smtp.accepted();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["lead@example.com"]);
    assert!(mails[0].from.contains("alerts@ringback.test"));
    let message = MessageParser::default()
        .parse(mails[0].data.as_bytes())
        .unwrap();
    assert_eq!(
        message.subject(),
        Some("Missed call from +33 6 12 34 56 78 (Sales FR)")
    );
    let text = message.body_text(0).unwrap();
    let html = message.body_html(0).unwrap();
    assert!(
        text.contains("From:    +33 6 12 34 56 78 (Eve <script>alert(1)</script> & Co)"),
        "{text}"
    );
    assert!(text.contains("Call back: tel:+33612345678"), "{text}");
    assert!(text.contains("Waited:  23 s"), "{text}");
    assert!(
        html.contains(r#"<a href="tel:+33612345678">+33 6 12 34 56 78</a>"#),
        "{html}"
    );
    assert!(
        html.contains("Eve &lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; Co"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    let row = &w.app.store.outbox().await.unwrap()[0];
    assert_eq!(row.state, "sent");
    assert!(
        row.message_id.as_deref().unwrap().starts_with("250"),
        "{row:?}"
    );
}

#[tokio::test]
async fn smtp_451_is_retried_and_delivered_once() {
    let w = world(EMAIL_ROUTE).await;
    w.smtp.reply_next("451 4.3.0 Mailbox busy, try again later");
    w.app
        .post_json(Provider::Callr, &fixture("callr_cdr.json"))
        .await;
    w.app.advance(3).await;
    assert_eq!((w.smtp.attempts(), w.smtp.accepted().len()), (1, 0));
    let row = &w.app.store.outbox().await.unwrap()[0];
    assert_eq!(row.state, "pending");
    assert!(
        row.last_error.as_deref().unwrap().contains("Mailbox busy"),
        "{row:?}"
    );
    w.app.advance(6).await;
    w.app.advance(3600).await;
    assert_eq!((w.smtp.attempts(), w.smtp.accepted().len()), (2, 1));
}

#[tokio::test]
async fn smtp_550_fails_at_once() {
    let w = world(EMAIL_ROUTE).await;
    w.smtp.reply_next("550 5.1.1 No such user here");
    w.app
        .post_json(Provider::Callr, &fixture("callr_cdr.json"))
        .await;
    w.app.advance(3).await;
    w.app.advance(3600).await;
    assert_eq!((w.smtp.attempts(), w.smtp.accepted().len()), (1, 0));
    let row = &w.app.store.outbox().await.unwrap()[0];
    assert_eq!(row.state, "failed");
    assert!(
        row.last_error.as_deref().unwrap().contains("No such user"),
        "{row:?}"
    );
}

/// Posts `n` missed calls from different numbers to the one-route world, in the same instant
/// or `gap` seconds apart.
async fn post_missed(w: &crate::alerts::World, prefix: &str, n: u64, gap: i64) {
    for i in 0..n {
        w.app
            .post_json(
                Provider::Telecmi,
                &call(&format!("{prefix}-{i}"), "missed", 919810000100 + i),
            )
            .await;
        if gap > 0 {
            w.app.advance(gap).await;
        }
    }
}

async fn at_once(w: &crate::alerts::World, prefix: &str, n: u64) {
    post_missed(w, prefix, n, 0).await;
}

/// A second apart.
async fn burst(w: &crate::alerts::World, n: u64) {
    post_missed(w, "burst", n, 1).await;
}

#[tokio::test]
async fn a_burst_of_50_to_one_group_is_all_delivered_within_telegram_limits() {
    let w = world(ONE_ROUTE).await;
    burst(&w, 50).await;
    // Twenty per minute to a group: the rest follow as the limit allows.
    for _ in 0..200 {
        w.app.advance(1).await;
    }
    let sent = w.telegram.sent_to(FRONT_DESK);
    assert_eq!(sent.len(), 50);
    assert_eq!(w.telegram.limit_violations(), 0);
    assert_eq!(w.telegram.requests(), 50, "no request was refused");
    for pair in sent.windows(2) {
        assert!(pair[1].at - pair[0].at >= chrono::Duration::seconds(1));
    }
    for window in sent.windows(21) {
        assert!(
            window[20].at - window[0].at >= chrono::Duration::minutes(1),
            "20 a minute at most"
        );
    }
    let mut callers: Vec<&str> = sent
        .iter()
        .map(|m| m.text.lines().nth(1).unwrap())
        .collect();
    callers.sort();
    callers.dedup();
    assert_eq!(callers.len(), 50, "each call once");
}

#[tokio::test]
async fn configured_limits_replace_telegrams_own() {
    // A Bot API-compatible server without Telegram's limits, and a config that says so.
    let w = world(&format!(
        "{ONE_ROUTE}\n[telegram.limits]\nchat_interval_ms = 0\ngroup_per_minute = 0\nper_second = 0\n"
    ))
    .await;
    w.telegram.without_limits();
    at_once(&w, "nolimit", 30).await;
    // The settle window (3 s) passes once: every alert goes out in that same second.
    w.app.advance(3).await;
    let sent = w.telegram.sent_to(FRONT_DESK);
    assert_eq!(sent.len(), 30, "one message per call, none held back");
    assert!(sent.iter().all(|m| m.at == sent[0].at), "all at once");
    assert_eq!(w.telegram.requests(), 30);
    // Sent together, each row still records its own Telegram message.
    let rows = w.app.store.outbox().await.unwrap();
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    let mut ids: Vec<_> = rows.iter().map(|r| r.message_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "{ids:?}");

    // The same burst within Telegram's default limits: one message in that second.
    let w = world(ONE_ROUTE).await;
    at_once(&w, "limit", 30).await;
    w.app.advance(3).await;
    assert_eq!(w.telegram.sent_to(FRONT_DESK).len(), 1);
    assert_eq!(w.telegram.limit_violations(), 0);
}

#[tokio::test]
async fn a_burst_is_grouped_when_the_route_asks() {
    let w = world(
        r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[[routes]]
name = "everything"
receiver = "front-desk"
group_wait_seconds = 60
"#,
    )
    .await;
    burst(&w, 50).await;
    for _ in 0..20 {
        w.app.advance(5).await;
    }
    let sent = w.telegram.sent_to(FRONT_DESK);
    assert_eq!(w.telegram.limit_violations(), 0);
    let listed: usize = sent
        .iter()
        .map(|m| m.text.matches("📞 Missed call").count())
        .sum();
    assert_eq!(listed, 50, "every call listed once");
    assert!(
        sent.len() <= 4,
        "grouped into a few messages, got {}",
        sent.len()
    );
    for m in &sent {
        let calls = m.text.matches("📞 Missed call").count();
        assert!(
            m.text.starts_with(&format!("{calls} missed calls\n\n")),
            "{}",
            m.text
        );
        assert!(m.text.encode_utf16().count() <= 4096);
    }
}
