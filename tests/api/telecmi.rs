use ringback::domain::{Direction, Leg, Outcome, Provider};
use serde_json::json;

use crate::fixture;
use crate::helpers::{TELECMI_TOKEN, pairs_of, spawn_app};

#[tokio::test]
async fn post_json_user_missed_cdr_is_stored_with_its_request() {
    let app = spawn_app().await;
    let sample = fixture("telecmi_user_missed.json");

    let answer = app.post_json(Provider::Telecmi, &sample).await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, "application/json");
    let stored = app
        .record(Provider::Telecmi, "e3e26d27-7b42-4679-a8a0-96b7d5e21dc7")
        .await;
    assert_eq!(
        answer.body,
        json!({"status": "stored", "record_id": stored.id})
    );
    let r = &stored.record;
    assert_eq!(r.leg, Leg::Agent);
    assert_eq!(r.outcome, Outcome::Missed);
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.agent.as_deref(), Some("302_2223343"));
    assert_eq!(r.group.as_deref(), Some("support_2223343"));
    assert_eq!(r.caller.as_ref().unwrap().raw, "440000000000");
    assert_eq!(
        r.agent_phone.as_ref().unwrap().e164.as_deref(),
        Some("+919999999999")
    );
    assert_eq!(r.ended_at.unwrap().timestamp_millis(), 1650625417426);
    assert_eq!(r.extra["custom"], r#"{"crm":"true"}"#);

    let raw = app.store.raw_request_of(stored.id).await.unwrap().unwrap();
    assert_eq!(raw.method, "POST");
    assert_eq!(raw.path, "/webhooks/telecmi");
    assert_eq!(raw.body, sample.to_string().into_bytes());
    assert_eq!(raw.query, "", "ringback's token is not kept");
    assert!(
        raw.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/json")
    );
}

#[tokio::test]
async fn get_query_answered_cdr_reads_like_json() {
    let app = spawn_app().await;
    let sample = fixture("telecmi_answered.json");

    let answer = app.get_query(Provider::Telecmi, &pairs_of(&sample)).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let stored = app
        .record(Provider::Telecmi, "16132200-57fa-47b5-888d-4ab5b7e631ee")
        .await;
    let r = &stored.record;
    assert_eq!(r.leg, Leg::Call);
    assert_eq!(r.outcome, Outcome::Answered);
    assert_eq!(r.agent.as_deref(), Some("204_2222223"));
    assert_eq!(r.called.as_ref().unwrap().raw, "440000000000");
    assert_eq!(r.talk_seconds, Some(11));
    assert_eq!(
        r.recording.as_deref(),
        Some("1634720915260737218351_2222223.mp3")
    );
    assert_eq!(r.extra["ivr_name"], "salesivr");
    let raw = app.store.raw_request_of(stored.id).await.unwrap().unwrap();
    assert_eq!(raw.method, "GET");
    assert!(raw.query.contains("cmiuuid=16132200"), "{}", raw.query);
    assert!(
        !raw.query.contains(TELECMI_TOKEN),
        "the token is not kept: {}",
        raw.query
    );
}

#[tokio::test]
async fn resends_are_stored_once_and_answered_200() {
    let app = spawn_app().await;
    let sample = fixture("telecmi_user_missed.json");

    let first = app.post_json(Provider::Telecmi, &sample).await;
    // TeleCMI resends after 5, 10 and 15 minutes, sometimes with numbers written as strings.
    let mut resent = sample.clone();
    resent["from"] = json!("440000000000");
    let second = app.post_json(Provider::Telecmi, &resent).await;
    let third = app.get_query(Provider::Telecmi, &pairs_of(&sample)).await;

    assert_eq!(first.body["status"], "stored");
    for answer in [&second, &third] {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["status"], "duplicate");
        assert_eq!(answer.body["record_id"], first.body["record_id"]);
    }
    let stored = app
        .record(Provider::Telecmi, "e3e26d27-7b42-4679-a8a0-96b7d5e21dc7")
        .await;
    assert_eq!(stored.resends, 2);
    assert_eq!(app.store.count_records().await.unwrap(), 1);
}

#[tokio::test]
async fn leg_b_and_call_level_records_of_one_call_are_both_kept() {
    let app = spawn_app().await;
    let mut leg_b = fixture("telecmi_user_missed.json");
    leg_b["cmiuuid"] = json!("leg-b-1");
    leg_b["conversation_uuid"] = json!("call-1");
    let call = json!({
        "type": "cdr", "direction": "inbound", "cmiuuid": "call-1", "conversation_uuid": "call-1",
        "status": "missed", "from": "919810000001", "to": "914400000000", "time": 1650625420000u64,
        "team": "support_2223343"
    });

    assert_eq!(app.post_json(Provider::Telecmi, &leg_b).await.status, 200);
    assert_eq!(app.post_json(Provider::Telecmi, &call).await.status, 200);

    let records = app.records(Provider::Telecmi, "call-1").await;
    let legs: Vec<Leg> = records.iter().map(|r| r.record.leg).collect();
    assert_eq!(legs, vec![Leg::Agent, Leg::Call]);
    assert!(records.iter().all(|r| r.record.conversation_id == "call-1"));
}

#[tokio::test]
async fn live_events_are_accepted_and_stored_as_no_call_result() {
    let app = spawn_app().await;
    let event = json!({"type": "event", "cmiuuid": "ev-1", "status": "started",
                       "direction": "inbound", "from": 919810000001u64, "time": 1650625417426u64});

    let answer = app.post_json(Provider::Telecmi, &event).await;

    assert_eq!(answer.status, 200);
    let stored = app.record(Provider::Telecmi, "ev-1").await;
    assert_eq!(stored.record.outcome, Outcome::NotACallResult);
}

#[tokio::test]
async fn form_post_is_accepted_too() {
    let app = spawn_app().await;
    let answer = app
        .post_form(
            Provider::Telecmi,
            &pairs_of(&fixture("telecmi_user_missed.json")),
        )
        .await;
    assert_eq!(answer.status, 200);
    let stored = app
        .record(Provider::Telecmi, "e3e26d27-7b42-4679-a8a0-96b7d5e21dc7")
        .await;
    assert_eq!(stored.record.outcome, Outcome::Missed);
}

#[tokio::test]
async fn acknowledged_records_survive_a_restart_and_resends_stay_duplicates() {
    let app = spawn_app().await;
    let sample = fixture("telecmi_user_missed.json");
    let first = app.post_json(Provider::Telecmi, &sample).await;
    assert_eq!(first.body["status"], "stored");

    let app = app.restart().await;

    let resend = app.post_json(Provider::Telecmi, &sample).await;
    assert_eq!(resend.body["status"], "duplicate");
    assert_eq!(resend.body["record_id"], first.body["record_id"]);
    let stored = app
        .record(Provider::Telecmi, "e3e26d27-7b42-4679-a8a0-96b7d5e21dc7")
        .await;
    assert_eq!(stored.record.outcome, Outcome::Missed);
}
