//! Every refusal is a JSON 4xx naming the problem, and the refused request is kept with its reason.

use ringback::domain::Provider;
use serde_json::json;

use crate::fixture;
use crate::helpers::{TELECMI_TOKEN, TestApp, spawn_app, spawn_app_from, spawn_app_with};

/// The one rejected request kept so far.
async fn only_rejection(app: &TestApp) -> ringback::store::Rejection {
    let mut rejected = app.rejections().await;
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    rejected.remove(0)
}

#[tokio::test]
async fn missing_token_is_401_and_kept() {
    let app = spawn_app().await;
    let body = fixture("telecmi_user_missed.json").to_string();

    let answer = app
        .send(app.client.post(app.url("telecmi", "")).body(body.clone()))
        .await;

    assert_eq!(answer.status, 401);
    assert_eq!(answer.body["error"], "unauthorized");
    assert!(
        answer.body["detail"].as_str().unwrap().contains("?token="),
        "{}",
        answer.body
    );
    let kept = only_rejection(&app).await;
    assert_eq!((kept.status, kept.provider.as_str()), (401, "telecmi"));
    assert_eq!(kept.request.body, body.as_bytes());
    assert_eq!(app.store.count_records().await.unwrap(), 0);
}

#[tokio::test]
async fn wrong_token_is_401_and_the_token_is_not_kept() {
    let app = spawn_app().await;

    let answer = app
        .send(
            app.client
                .get(app.url("telecmi", "token=guess-one&cmiuuid=x&status=missed")),
        )
        .await;

    assert_eq!(answer.status, 401);
    assert!(answer.body["detail"].as_str().unwrap().contains("wrong"));
    let kept = only_rejection(&app).await;
    assert_eq!(kept.request.query, "cmiuuid=x&status=missed");
    assert!(!answer.body.to_string().contains(TELECMI_TOKEN));
}

#[tokio::test]
async fn token_in_header_is_accepted_and_not_stored() {
    let app = spawn_app().await;
    let answer = app
        .send(
            app.client
                .post(app.url("telecmi", ""))
                .header("X-Ringback-Token", TELECMI_TOKEN)
                .json(&fixture("telecmi_user_missed.json")),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let id = answer.body["record_id"].as_i64().unwrap();
    let raw = app.store.raw_request_of(id).await.unwrap().unwrap();
    assert!(
        raw.headers
            .iter()
            .all(|(k, v)| k != "x-ringback-token" && v != TELECMI_TOKEN),
        "{:?}",
        raw.headers
    );
}

#[tokio::test]
async fn unparseable_body_is_400_and_kept() {
    let app = spawn_app().await;
    let body = br#"{"cmiuuid": "x", "status": "#.to_vec();

    let answer = app
        .post_raw(Provider::Telecmi, "application/json", body.clone())
        .await;

    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "malformed_payload");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("the body is not valid JSON"),
        "{}",
        answer.body
    );
    let kept = only_rejection(&app).await;
    assert_eq!(
        (kept.status, kept.error.as_str()),
        (400, "malformed_payload")
    );
    assert_eq!(kept.request.body, body);
}

#[tokio::test]
async fn unusable_payload_is_422_naming_the_field() {
    let app = spawn_app().await;
    let mut no_id = fixture("telecmi_user_missed.json");
    no_id.as_object_mut().unwrap().remove("cmiuuid");
    let mut bad_time = fixture("callerdesk_call_report.json");
    bad_time["StartTime"] = json!("yesterday");

    let missing = app.post_json(Provider::Telecmi, &no_id).await;
    let uncoercible = app.post_json(Provider::Callerdesk, &bad_time).await;
    let callr = app
        .post_json(
            Provider::Callr,
            &json!({"type": "v2.call.inbound.ended", "data": {"status": "busy"}}),
        )
        .await;

    assert_eq!(missing.status, 422);
    assert_eq!(missing.body["error"], "unusable_payload");
    assert_eq!(missing.body["field"], "cmiuuid");
    assert!(
        missing.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("field `cmiuuid` is missing")
    );
    assert_eq!(uncoercible.status, 422);
    assert_eq!(uncoercible.body["field"], "StartTime");
    assert_eq!(
        (callr.status, callr.body["field"].as_str()),
        (422, Some("data.callid"))
    );
    let kept = app.rejections().await;
    assert_eq!(kept.len(), 3);
    assert!(kept.iter().all(|r| r.status == 422));
    assert!(kept.iter().any(|r| r.detail.contains("StartTime")));
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_kept() {
    let app = spawn_app().await;
    let mut big = fixture("telecmi_user_missed.json");
    big["custom"] = json!("x".repeat(5000));

    let answer = app.post_json(Provider::Telecmi, &big).await;

    assert_eq!(answer.status, 413);
    assert_eq!(answer.body["error"], "payload_too_large");
    assert!(answer.body["detail"].as_str().unwrap().contains("4096"));
    let kept = only_rejection(&app).await;
    assert_eq!(kept.status, 413);
    assert_eq!(app.store.count_records().await.unwrap(), 0);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    // No Content-Length: the limit must hold while the body streams in.
    let head = format!(
        "POST /webhooks/telecmi?token={TELECMI_TOKEN} HTTP/1.1\r\nHost: {host}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("3e8\r\n{}\r\n", " ".repeat(1000));
    for _ in 0..10 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may answer and close before the whole body is sent
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
}

#[tokio::test]
async fn unknown_provider_is_404_and_kept() {
    let app = spawn_app().await;
    let answer = app
        .send(app.client.post(app.url("twilio", "token=x")).body("{}"))
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["error"], "unknown_provider");
    let kept = only_rejection(&app).await;
    assert_eq!((kept.provider.as_str(), kept.status), ("twilio", 404));
}

#[tokio::test]
async fn provider_without_token_is_404() {
    let app = spawn_app_from(|db| {
        format!(
            "[storage]\nurl = \"sqlite://{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [providers.telecmi]\ntoken = \"\"\n",
            db.display()
        )
    })
    .await;
    let answer = app
        .post_json(Provider::Telecmi, &fixture("telecmi_user_missed.json"))
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["error"], "provider_disabled");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("providers.telecmi.token")
    );
}

#[tokio::test]
async fn wrong_method_is_405() {
    let app = spawn_app().await;
    let answer = app
        .send(
            app.client
                .get(app.url("callr", "token=callr-test-token&callid=1")),
        )
        .await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.body["error"], "method_not_allowed");
    assert_eq!(only_rejection(&app).await.status, 405);
}

#[tokio::test]
async fn sources_outside_the_allow_list_are_403() {
    let app = spawn_app_with("allow_from = [\"203.0.113.0/24\"]").await;
    let answer = app
        .post_json(Provider::Callr, &fixture("callr_cdr.json"))
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body["error"], "source_not_allowed");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );

    let open = spawn_app_with("allow_from = [\"127.0.0.0/8\"]").await;
    let answer = open
        .post_json(Provider::Callr, &fixture("callr_cdr.json"))
        .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn unknown_paths_are_json_404() {
    let app = spawn_app().await;
    let answer = app
        .send(app.client.get(format!("{}/nope", app.address)))
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["error"], "not_found");
}

#[tokio::test]
async fn a_source_over_the_rate_limit_is_429_and_not_stored() {
    let app = spawn_app_from(|db| {
        crate::helpers::base_config(db, "").replace(
            "body_limit_bytes = 4096",
            "body_limit_bytes = 4096\nrate_limit_per_second = 1\nrate_limit_burst = 2",
        )
    })
    .await;
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..3 {
        let mut cdr = fixture("telecmi_user_missed.json");
        cdr["cmiuuid"] = json!(format!("rl-{i}"));
        let response = app
            .client
            .post(app.url("telecmi", &format!("token={TELECMI_TOKEN}")))
            .json(&cdr)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let last = last.unwrap();
    assert!(last.headers().contains_key("retry-after"));
    let body: serde_json::Value = last.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(app.rejections().await.is_empty());
    assert_eq!(app.store.count_records().await.unwrap(), 2);
}
