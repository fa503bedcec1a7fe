//! Routing through the real server: team, call group, number, time window, `continue`, unrouted.

use ringback::domain::Provider;
use serde_json::json;

use crate::alerts::{FRONT_DESK, NIGHT, SALES, call, world};
use crate::fixture;
use crate::helpers::{pairs_of, start_time};

const ROUTES: &str = r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[receivers.sales]
telegram = ["-1001000000002"]

[receivers.night]
telegram = [{ chat_id = -1001000000003, message_thread_id = 7, disable_notification = true }]

[receivers.support]
email = ["support@example.com"]

[[routes]]
name = "after-hours"
match = { not_when = "mon-fri 09:00-18:00" }
receiver = "night"
continue = true

[[routes]]
name = "sales"
match = { group = "Sales*" }
receiver = "sales"

[[routes]]
name = "support"
match = { group = "Support*", provider = "callerdesk" }
receiver = "support"

[[routes]]
name = "main-line"
match = { called = "+91 80 4444 0000" }
receiver = "front-desk"
"#;

#[tokio::test]
async fn calls_go_to_the_receivers_their_routes_name() {
    let w = world(ROUTES).await;

    // A TeleCMI team, in business hours (15:29 in Kolkata).
    w.app
        .post_json(Provider::Telecmi, &call("sales-1", "missed", 919810000001))
        .await;
    // Another team, on the main line's number.
    let mut billing = call("billing-1", "missed", 919810000002);
    billing["team"] = json!("Billing");
    w.app.post_json(Provider::Telecmi, &billing).await;
    // A CallerDesk call group.
    let mut report = fixture("callerdesk_call_report.json");
    report["Status"] = json!("NOANSWER");
    report["call_group"] = json!("Support L1");
    report["receiver_name"] = json!("0");
    w.app
        .get_query(Provider::Callerdesk, &pairs_of(&report))
        .await;
    // An outbound CallerDesk call in the same group never alerts.
    let mut outbound = report.clone();
    outbound["CallSid"] = json!("outbound-1");
    outbound["Direction"] = json!("WEBOBD");
    w.app
        .get_query(Provider::Callerdesk, &pairs_of(&outbound))
        .await;
    // A Sales call at 20:00 in Kolkata: after hours, and sales too (`continue`).
    let mut evening = call("sales-2", "missed", 919810000003);
    evening["time"] = json!((start_time() + chrono::Duration::minutes(270)).timestamp_millis());
    w.app.post_json(Provider::Telecmi, &evening).await;
    // A Callr scenario no route names, and no default route.
    let mut partners = fixture("callr_cdr.json");
    partners["scenarioName"] = json!("Partners");
    w.app.post_json(Provider::Callr, &partners).await;

    w.app.advance(3).await;
    w.app.advance(2).await;

    let sales: Vec<String> = w
        .telegram
        .sent_to(SALES)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(sales.len(), 2, "{sales:#?}");
    assert!(sales.iter().any(|t| t.contains("+91 98100 00001")));
    assert!(sales.iter().any(|t| t.contains("+91 98100 00003")));
    let front = w.telegram.sent_to(FRONT_DESK);
    assert_eq!(front.len(), 1);
    assert!(
        front[0].text.starts_with("📞 Missed call · Billing\n"),
        "{}",
        front[0].text
    );
    let night = w.telegram.sent_to(NIGHT);
    assert_eq!(night.len(), 1);
    assert!(night[0].text.contains("+91 98100 00003"));
    assert!(
        night[0].text.contains("When: 20:00 Mon 23 Nov"),
        "{}",
        night[0].text
    );
    assert!(night[0].silent);
    assert_eq!(night[0].thread, Some(7));
    assert_eq!(w.telegram.sent().len(), 4);

    let mails = w.smtp.accepted();
    assert_eq!(mails.len(), 1, "only the inbound CallerDesk call");
    assert_eq!(mails[0].to, vec!["support@example.com"]);

    let verdicts = w.app.store.verdicts().await.unwrap();
    let verdict = |subject: &str| {
        verdicts
            .iter()
            .find(|(s, _)| s == subject)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(verdict("8877665544"), "canceled: unrouted");
    assert!(
        verdict("outbound-1").contains("outbound calls alert only on routes that match direction"),
        "{verdicts:?}"
    );
    assert_eq!(
        verdict("sales-2"),
        "missed (after-hours: alert; sales: alert)"
    );
}

#[tokio::test]
async fn outcomes_outside_the_alert_set_do_not_alert() {
    let w = world(
        r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[[routes]]
name = "busy-too"
match = { group = "Sales*" }
receiver = "front-desk"
on = ["missed", "busy"]

[[routes]]
name = "everything"
receiver = "front-desk"
"#,
    )
    .await;
    let mut busy = fixture("callr_cdr.json");
    busy["status"] = json!("busy");
    busy["scenarioName"] = json!("Sales FR");
    w.app.post_json(Provider::Callr, &busy).await;
    let mut other_busy = busy.clone();
    other_busy["callid"] = json!(2);
    other_busy["scenarioName"] = json!("Billing");
    w.app.post_json(Provider::Callr, &other_busy).await;
    w.app.advance(3).await;

    let sent = w.telegram.sent();
    assert_eq!(
        sent.len(),
        1,
        "busy alerts only where a route adds it: {sent:#?}"
    );
    assert!(
        sent[0]
            .text
            .starts_with("📞 Missed call (line busy) · Sales FR"),
        "{}",
        sent[0].text
    );
}
