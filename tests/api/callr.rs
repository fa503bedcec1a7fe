use ringback::domain::{Direction, Outcome, Provider};
use ringback::normalize::callr::{HmacAlgorithm, sign};
use serde_json::json;

use crate::fixture;
use crate::helpers::{spawn_app, spawn_app_with};

fn envelope(event_id: &str, event_type: &str) -> serde_json::Value {
    json!({
        "event_at": "2025-03-10T09:15:24Z",
        "event_id": event_id,
        "hook_hash": "9f2c",
        "try": 1,
        "type": event_type,
        "data": fixture("callr_cdr.json"),
    })
}

#[tokio::test]
async fn webhook_envelope_is_stored() {
    let app = spawn_app().await;

    let answer = app
        .post_json(Provider::Callr, &envelope("evt-1", "v2.call.inbound.ended"))
        .await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let r = app.record(Provider::Callr, "8877665544").await.record;
    assert_eq!(r.outcome, Outcome::Canceled);
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.dedup_key, "event:evt-1");
    assert_eq!(r.caller_name.as_deref(), Some("ACME <Support> & Co"));
    assert_eq!(
        r.caller.as_ref().unwrap().e164.as_deref(),
        Some("+33612345678")
    );
    assert_eq!(r.group.as_deref(), Some("Sales FR"));
    assert_eq!(r.ring_seconds, Some(23));
}

#[tokio::test]
async fn actions_push_and_bare_cdr_are_stored() {
    let app = spawn_app().await;
    let mut bare = fixture("callr_cdr.json");
    bare["callid"] = json!(1001);
    let mut pushed = fixture("callr_cdr.json");
    pushed["callid"] = json!("1002");

    let a = app.post_json(Provider::Callr, &bare).await;
    let b = app
        .post_json(Provider::Callr, &json!({ "cdr": pushed }))
        .await;

    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(
        app.record(Provider::Callr, "1001").await.record.outcome,
        Outcome::Canceled
    );
    assert_eq!(
        app.record(Provider::Callr, "1002").await.record.outcome,
        Outcome::Canceled
    );
}

#[tokio::test]
async fn retries_with_the_same_event_id_are_stored_once() {
    let app = spawn_app().await;
    let first = app
        .post_json(Provider::Callr, &envelope("evt-9", "call.inbound_hangup"))
        .await;
    let mut retry = envelope("evt-9", "call.inbound_hangup");
    retry["try"] = json!(2);
    let second = app.post_json(Provider::Callr, &retry).await;

    assert_eq!(first.body["status"], "stored");
    assert_eq!(second.status, 200);
    assert_eq!(second.body["status"], "duplicate");
    assert_eq!(app.record(Provider::Callr, "8877665544").await.resends, 1);
}

#[tokio::test]
async fn start_and_end_events_of_one_call_are_two_records() {
    let app = spawn_app().await;
    app.post_json(
        Provider::Callr,
        &envelope("e-start", "v2.call.inbound.started"),
    )
    .await;
    app.post_json(Provider::Callr, &envelope("e-end", "v2.call.inbound.ended"))
        .await;
    let outcomes: Vec<Outcome> = app
        .records(Provider::Callr, "8877665544")
        .await
        .iter()
        .map(|r| r.record.outcome)
        .collect();
    assert_eq!(outcomes, vec![Outcome::NotACallResult, Outcome::Canceled]);
}

#[tokio::test]
async fn hmac_signature_is_verified_when_configured() {
    let app = spawn_app_with("hmac_secret = \"callr-hmac\"\nhmac_algorithm = \"sha512\"").await;
    let body = envelope("evt-h", "v2.call.inbound.ended").to_string();
    let url = app.url("callr", "token=callr-test-token");
    let post = |signature: Option<String>| {
        let mut request = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(s) = signature {
            request = request.header("X-CALLR-HmacSignature", s);
        }
        request
    };

    let missing = app.send(post(None)).await;
    let wrong = app
        .send(post(Some(sign(
            b"other",
            HmacAlgorithm::Sha512,
            body.as_bytes(),
        ))))
        .await;
    let sha256_instead = app
        .send(post(Some(sign(
            b"callr-hmac",
            HmacAlgorithm::Sha256,
            body.as_bytes(),
        ))))
        .await;
    let valid = app
        .send(post(Some(sign(
            b"callr-hmac",
            HmacAlgorithm::Sha512,
            body.as_bytes(),
        ))))
        .await;

    for refused in [&missing, &wrong, &sha256_instead] {
        assert_eq!(refused.status, 401);
        assert_eq!(refused.body["error"], "bad_signature");
    }
    assert!(
        missing.body["detail"]
            .as_str()
            .unwrap()
            .contains("X-CALLR-HmacSignature header is missing")
    );
    assert_eq!(valid.status, 200, "{}", valid.body);
    assert_eq!(app.store.count_records().await.unwrap(), 1);
    let rejected = app.rejections().await;
    assert_eq!(rejected.len(), 3);
    assert!(rejected.iter().all(|r| r.error == "bad_signature"
        && r.status == 401
        && r.request.body == body.as_bytes()));
}
