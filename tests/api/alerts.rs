//! Which calls alert, once, to whom: TeleCMI's two records per call, resends, restarts, routing.

use ringback::clock::Clock;
use ringback::domain::Provider;
use serde_json::{Value, json};

use crate::fixture;
use crate::helpers::{
    TestApp, alerting, base_config, spawn_app_in_service, spawn_app_on, start_time,
};
use crate::support::smtp::FakeSmtp;
use crate::support::telegram::FakeTelegram;

pub const FRONT_DESK: i64 = -1001000000001;
pub const SALES: i64 = -1001000000002;
pub const NIGHT: i64 = -1001000000003;
pub const ALICE: i64 = 5550001;

pub struct World {
    pub app: TestApp,
    pub telegram: FakeTelegram,
    pub smtp: FakeSmtp,
}

/// ringback with Telegram and email wired to the fakes, and `routes` (receivers and routes).
pub async fn world(routes: &str) -> World {
    let clock = Clock::manual(start_time());
    let telegram = FakeTelegram::start(clock.clone()).await;
    let smtp = FakeSmtp::start().await;
    let config = alerting(&telegram.url, &smtp.url(), routes);
    let app = spawn_app_on(clock, |db| base_config(db, &config)).await;
    World {
        app,
        telegram,
        smtp,
    }
}

pub const ONE_ROUTE: &str = r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[[routes]]
name = "everything"
receiver = "front-desk"
"#;

/// Epoch milliseconds `seconds_ago` before the test start.
fn ms(seconds_ago: i64) -> i64 {
    (start_time() - chrono::Duration::seconds(seconds_ago)).timestamp_millis()
}

/// TeleCMI's "user missed" record: one agent's phone rang unanswered (seed 000).
pub fn ring(conversation: &str, user: &str) -> Value {
    let mut v = fixture("telecmi_user_missed.json");
    v["cmiuuid"] = json!(format!("{conversation}-{user}"));
    v["conversation_uuid"] = json!(conversation);
    v["user"] = json!(user);
    v["from"] = json!(919810000001u64);
    v["team"] = json!("Sales_2222223");
    v["time"] = json!(ms(90));
    v
}

/// TeleCMI's call-level record (seed 001's shape): `status` "missed" or "answered".
pub fn call(conversation: &str, status: &str, caller: u64) -> Value {
    let mut v = fixture("telecmi_answered.json");
    v["cmiuuid"] = json!(conversation);
    v["conversation_uuid"] = json!(conversation);
    v["status"] = json!(status);
    v["from"] = json!(caller);
    v["virtual_number"] = json!(918044440000u64);
    v["time"] = json!(ms(60));
    if status == "answered" {
        v["user"] = json!("304_carol");
    } else {
        let o = v.as_object_mut().unwrap();
        for key in ["user", "to", "answeredsec", "record", "filename"] {
            o.remove(key);
        }
    }
    v
}

#[tokio::test]
async fn a_call_a_teammate_answered_sends_nothing() {
    let w = world(ONE_ROUTE).await;
    // Two agents' phones ring unanswered; their records come first...
    w.app
        .post_json(Provider::Telecmi, &ring("conv-1", "302_alice"))
        .await;
    w.app
        .post_json(Provider::Telecmi, &ring("conv-1", "303_bob"))
        .await;
    w.app.advance(120).await;
    // ...and the call-level record says carol answered, minutes later.
    let answer = w
        .app
        .post_json(Provider::Telecmi, &call("conv-1", "answered", 919810000001))
        .await;
    assert_eq!(answer.status, 200);
    w.app.advance(10).await;

    assert_eq!(w.telegram.requests(), 0, "{:#?}", w.telegram.sent());
    let verdicts = w.app.store.verdicts().await.unwrap();
    assert!(
        verdicts.contains(&("conv-1".into(), "answered by 304_carol".into())),
        "{verdicts:?}"
    );
}

#[tokio::test]
async fn a_call_nobody_answered_sends_one_alert_naming_the_agents_it_rang() {
    let w = world(ONE_ROUTE).await;
    w.app
        .post_json(Provider::Telecmi, &ring("conv-2", "302_alice"))
        .await;
    w.app
        .post_json(Provider::Telecmi, &ring("conv-2", "303_bob"))
        .await;
    w.app
        .post_json(Provider::Telecmi, &call("conv-2", "missed", 919810000001))
        .await;

    w.app.run_pipeline().await;
    assert_eq!(
        w.telegram.requests(),
        0,
        "nothing before the settle window ends"
    );
    w.app.advance(3).await;

    let sent = w.telegram.sent();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let m = &sent[0];
    assert_eq!(m.chat_id, FRONT_DESK);
    assert_eq!(m.parse_mode.as_deref(), Some("HTML"));
    assert!(m.link_preview_disabled);
    assert!(!m.silent);
    assert_eq!(
        m.text,
        "📞 Missed call · Sales_2222223\n\
         From: +91 98100 00001\n\
         To: +91 80 4444 0000\n\
         When: 15:29 Mon 23 Nov\n\
         Rang: 302_alice, 303_bob"
    );
    let outbox = w.app.store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].state, "sent");
    assert_eq!(outbox[0].message_id, Some(m.message_id.to_string()));

    // TeleCMI resends the CDR after 5, 10 and 15 minutes: nothing more is sent.
    for _ in 0..3 {
        w.app.advance(300).await;
        let resend = w
            .app
            .post_json(Provider::Telecmi, &call("conv-2", "missed", 919810000001))
            .await;
        assert_eq!(resend.body["status"], "duplicate");
        w.app.advance(5).await;
    }
    assert_eq!(w.telegram.requests(), 1);
}

#[tokio::test]
async fn a_later_record_of_a_decided_call_never_alerts_again() {
    let w = world(ONE_ROUTE).await;
    w.app
        .post_json(Provider::Telecmi, &call("conv-3", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    assert_eq!(w.telegram.sent().len(), 1);
    // A second call-level record of the same call (another leg a id), after the decision.
    let mut late = call("conv-3", "missed", 919810000001);
    late["cmiuuid"] = json!("conv-3-again");
    w.app.post_json(Provider::Telecmi, &late).await;
    w.app.advance(10).await;
    assert_eq!(w.telegram.sent().len(), 1);
}

#[tokio::test]
async fn repeat_callers_are_counted() {
    let w = world(ONE_ROUTE).await;
    for conversation in ["r-1", "r-2", "r-3"] {
        w.app
            .post_json(
                Provider::Telecmi,
                &call(conversation, "missed", 919810000009),
            )
            .await;
        w.app.advance(60).await;
        if conversation == "r-2" {
            // A second call-level record of the same call: still one missed call, not two.
            let mut again = call(conversation, "missed", 919810000009);
            again["cmiuuid"] = json!("r-2-again");
            w.app.post_json(Provider::Telecmi, &again).await;
            w.app.advance(60).await;
        }
    }
    let texts: Vec<String> = w.telegram.sent().into_iter().map(|m| m.text).collect();
    assert_eq!(texts.len(), 3);
    assert!(!texts[0].contains("missed call from this number"));
    assert!(
        texts[1].ends_with("2nd missed call from this number in 2 h"),
        "{}",
        texts[1]
    );
    assert!(
        texts[2].ends_with("3rd missed call from this number in 2 h"),
        "{}",
        texts[2]
    );
    // Three hours later the earlier calls are outside the window ([alerts] repeat_window_minutes).
    w.app.advance(3 * 3600).await;
    w.app
        .post_json(Provider::Telecmi, &call("r-4", "missed", 919810000009))
        .await;
    w.app.advance(60).await;
    let last = w.telegram.sent().pop().unwrap().text;
    assert!(!last.contains("missed call from this number"), "{last}");
}

#[tokio::test]
async fn a_backlog_left_by_a_burst_is_decided_in_larger_steps_once_webhooks_stop() {
    let w = world(ONE_ROUTE).await;
    for i in 0..20 {
        let caller = 919810000100 + i;
        w.app
            .post_json(
                Provider::Telecmi,
                &call(&format!("burst-{i}"), "missed", caller),
            )
            .await;
    }
    // The settle window passes as one more call comes in: the burst is still under way.
    w.app.clock.advance(chrono::Duration::seconds(3));
    w.app
        .post_json(Provider::Telecmi, &call("burst-20", "missed", 919810000120))
        .await;
    let generation = w.app.live.current();
    let decided = || async { w.app.store.verdicts().await.unwrap().len() };
    generation.pipeline.decide_once().await.unwrap();
    assert_eq!(decided().await, 8, "a small step while webhooks arrive");
    // A quarter of a second without a webhook: the rest of the backlog in one step.
    w.app.clock.advance(chrono::Duration::milliseconds(250));
    generation.pipeline.decide_once().await.unwrap();
    assert_eq!(decided().await, 20);
    // Each call decided once, and each alerted once.
    w.app.advance(3).await;
    let verdicts = w.app.store.verdicts().await.unwrap();
    let calls: std::collections::BTreeSet<_> = verdicts.iter().map(|(call, _)| call).collect();
    assert_eq!((verdicts.len(), calls.len()), (21, 21), "{verdicts:?}");
    // A group chat takes 20 messages a minute, one a second at most, as Telegram allows.
    for _ in 0..25 {
        w.app.advance(1).await;
    }
    w.app.advance(60).await;
    let texts: Vec<String> = w.telegram.sent().into_iter().map(|m| m.text).collect();
    let callers: std::collections::BTreeSet<_> =
        texts.iter().filter_map(|t| t.lines().nth(1)).collect();
    assert_eq!((texts.len(), callers.len()), (21, 21), "{texts:#?}");
}

#[tokio::test]
async fn a_restart_inside_the_settle_window_neither_loses_nor_repeats_the_alert() {
    let w = world(ONE_ROUTE).await;
    w.app
        .post_json(Provider::Telecmi, &call("conv-4", "missed", 919810000001))
        .await;
    let app = w.app.restart().await;
    app.run_pipeline().await;
    assert_eq!(w.telegram.requests(), 0);
    app.advance(3).await;
    let app = app.restart().await;
    app.advance(60).await;
    assert_eq!(w.telegram.sent().len(), 1);
}

#[tokio::test]
async fn pending_alerts_survive_a_crash_and_are_sent_once() {
    let w = world(ONE_ROUTE).await;
    for conversation in ["k-1", "k-2", "k-3"] {
        w.app
            .post_json(
                Provider::Telecmi,
                &call(conversation, "missed", 919810000001),
            )
            .await;
    }
    w.app.clock.advance(chrono::Duration::seconds(3));

    // Killed with three decisions due and nothing decided yet.
    let app = w.app.crash_and_restart().await;
    app.run_pipeline().await;
    assert_eq!(
        w.telegram.sent().len(),
        1,
        "one message per second to a chat"
    );

    // A sender claims the next message and dies before recording what happened.
    app.clock.advance(chrono::Duration::seconds(1));
    let now = app.clock.now();
    let claimed = app
        .store
        .claim_outbox(now, now + chrono::Duration::seconds(120), 1)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let app = app.crash_and_restart().await;
    app.advance(1).await;
    assert_eq!(
        w.telegram.sent().len(),
        2,
        "the claimed message waits for its claim to lapse"
    );
    app.advance(120).await;

    let sent = w.telegram.sent();
    assert_eq!(sent.len(), 3, "{sent:#?}");
    let outbox = app.store.outbox().await.unwrap();
    assert!(outbox.iter().all(|m| m.state == "sent"), "{outbox:#?}");
    let mut alerts: Vec<i64> = outbox.iter().map(|m| m.alert_id).collect();
    alerts.dedup();
    assert_eq!(alerts.len(), 3, "each alert sent once");
    assert_eq!(w.telegram.limit_violations(), 0);
}

#[tokio::test]
async fn agent_ring_alerts_only_when_a_route_opts_in() {
    let w = world(
        r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[receivers.agents]
telegram = [5550001]

[[routes]]
name = "sales"
match = { group = "sales_*" }
receiver = "front-desk"
agent_rings = "agents"
"#,
    )
    .await;
    w.app
        .post_json(Provider::Telecmi, &ring("conv-5", "302_alice"))
        .await;
    w.app
        .post_json(Provider::Telecmi, &call("conv-5", "answered", 919810000001))
        .await;
    w.app.advance(3).await;

    let sent = w.telegram.sent();
    assert_eq!(sent.len(), 1, "only the ring alert: the call was answered");
    assert_eq!(sent[0].chat_id, ALICE);
    assert!(
        sent[0]
            .text
            .starts_with("🔔 You missed a ring · 302_alice\n"),
        "{}",
        sent[0].text
    );
}

#[tokio::test]
async fn telecmi_rings_without_call_records_are_reported_in_readyz() {
    let w = world(ONE_ROUTE).await;
    w.app
        .post_json(Provider::Telecmi, &ring("conv-6", "302_alice"))
        .await;
    let ready = w
        .app
        .send(w.app.client.get(format!("{}/readyz", w.app.address)))
        .await;
    assert!(ready.body.get("warnings").is_none(), "{}", ready.body);
    w.app.advance(31 * 60).await;
    let ready = w
        .app
        .send(w.app.client.get(format!("{}/readyz", w.app.address)))
        .await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["checks"]["telecmi_call_records"], "missing");
    assert!(
        ready.body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("enable the Incoming Missed CDR and Incoming Answered CDR webhooks"),
        "{}",
        ready.body
    );
    // Once a call-level record arrives, the warning goes.
    w.app
        .post_json(Provider::Telecmi, &call("conv-6", "missed", 919810000001))
        .await;
    let ready = w
        .app
        .send(w.app.client.get(format!("{}/readyz", w.app.address)))
        .await;
    assert!(ready.body.get("warnings").is_none(), "{}", ready.body);
}

#[tokio::test]
async fn in_service_the_background_workers_send_without_being_stepped() {
    let telegram = FakeTelegram::start(Clock::System).await;
    let smtp = FakeSmtp::start().await;
    let config = alerting(&telegram.url, &smtp.url(), ONE_ROUTE)
        .replace("settle_seconds = 3", "settle_seconds = 0");
    let app = spawn_app_in_service(|db| base_config(db, &config)).await;

    app.post_json(Provider::Telecmi, &call("bg-1", "missed", 919810000001))
        .await;

    // Waits for the condition, bounded; the workers are woken by the stored record.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while telegram.sent().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(telegram.sent().len(), 1);
    assert_eq!(telegram.sent()[0].chat_id, FRONT_DESK);
}

#[tokio::test]
async fn a_receiver_with_nowhere_to_send_is_warned_of_once_not_for_every_alert() {
    let (logs, _capturing) = crate::support::logs::Logs::capture();
    let app = crate::helpers::spawn_app_with(
        r#"
[receivers.nowhere]
telegram = []

[[routes]]
name = "all"
receiver = "nowhere"
"#,
    )
    .await;
    for (i, conversation) in ["nowhere-1", "nowhere-2", "nowhere-3"].iter().enumerate() {
        app.post_json(
            Provider::Telecmi,
            &call(conversation, "missed", 919810000001 + i as u64),
        )
        .await;
    }
    app.advance(3).await;

    let said = "receiver has no Telegram chat or email address";
    assert_eq!(logs.count("WARN", said), 1, "once, when the config loads");
    assert_eq!(
        logs.count("DEBUG", "the alert is recorded but sent nowhere"),
        3,
        "each of the three alerts, at debug level"
    );
}
