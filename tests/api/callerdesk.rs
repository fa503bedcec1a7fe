use ringback::domain::{Direction, Outcome, Provider};
use serde_json::json;

use crate::fixture;
use crate::helpers::{pairs_of, spawn_app};

const SID: &str = "1672649960.9601234";

fn missed_report() -> serde_json::Value {
    let mut report = fixture("callerdesk_call_report.json");
    report["Status"] = json!(" NOANSWER ");
    report["receiver_name"] = json!("0");
    report["TalkDuration"] = json!("0");
    report["LegB_Picked_time"] = json!("0000-00-00 00:00:00");
    report
}

#[tokio::test]
async fn get_query_call_report_is_stored() {
    let app = spawn_app().await;

    let answer = app
        .get_query(
            Provider::Callerdesk,
            &pairs_of(&fixture("callerdesk_call_report.json")),
        )
        .await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let r = app.record(Provider::Callerdesk, SID).await.record;
    assert_eq!(r.outcome, Outcome::Answered);
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.agent.as_deref(), Some("Ashish"));
    assert_eq!(r.group.as_deref(), Some("TestGroup"));
    assert_eq!(
        r.caller.as_ref().unwrap().e164.as_deref(),
        Some("+919810000001")
    );
    // 14:32:40 in Asia/Kolkata.
    assert_eq!(
        r.started_at.unwrap().to_rfc3339(),
        "2023-01-02T09:02:40+00:00"
    );
}

#[tokio::test]
async fn form_post_missed_report_is_stored() {
    let app = spawn_app().await;

    let answer = app
        .post_form(Provider::Callerdesk, &pairs_of(&missed_report()))
        .await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let r = app.record(Provider::Callerdesk, SID).await.record;
    assert_eq!(r.outcome, Outcome::Missed);
    assert_eq!(r.agent.as_deref(), Some("9280000002"));
    assert_eq!(r.answered_at, None);
}

#[tokio::test]
async fn json_post_is_stored() {
    let app = spawn_app().await;
    let mut report = missed_report();
    report["Status"] = json!("");
    report["callstatus"] = json!("No Answer");

    let answer = app.post_json(Provider::Callerdesk, &report).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let r = app.record(Provider::Callerdesk, SID).await.record;
    assert_eq!(r.outcome, Outcome::Missed);
}

#[tokio::test]
async fn live_call_then_report_are_two_records_and_repeats_are_one() {
    let app = spawn_app().await;
    let live = pairs_of(&fixture("callerdesk_live_call.json"));
    let report = pairs_of(&fixture("callerdesk_call_report.json"));

    let answers = [
        app.get_query(Provider::Callerdesk, &live).await,
        app.get_query(Provider::Callerdesk, &report).await,
        app.get_query(Provider::Callerdesk, &report).await,
    ];

    let statuses: Vec<&str> = answers
        .iter()
        .map(|a| a.body["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["stored", "stored", "duplicate"]);
    let outcomes: Vec<Outcome> = app
        .records(Provider::Callerdesk, SID)
        .await
        .iter()
        .map(|r| r.record.outcome)
        .collect();
    assert_eq!(outcomes, vec![Outcome::NotACallResult, Outcome::Answered]);
}
