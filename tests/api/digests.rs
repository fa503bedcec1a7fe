//! Email digests through the real server and a real SMTP server: content, schedule, exactly once.

use chrono::{DateTime, Duration, Utc};
use mail_parser::MessageParser;
use ringback::domain::Provider;
use serde_json::{Value, json};

use crate::alerts::{World, call, world};
use crate::fixture;

pub const DIGEST: &str = r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[[routes]]
name = "everything"
receiver = "front-desk"

[[digests]]
name = "daily-ops"
to = ["Manager <manager@example.com>"]
schedule = "0 9 * * *"
timezone = "Asia/Kolkata"
"#;

/// Tuesday 09:00 in Kolkata: the end of the first digest period after the tests' start.
fn tuesday_nine() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T03:30:00Z")
        .unwrap()
        .to_utc()
}

/// A TeleCMI call-level record at the clock's current time.
fn telecmi_call(w: &World, conversation: &str, status: &str, caller: u64) -> Value {
    let mut v = call(conversation, status, caller);
    v["time"] = json!(w.app.clock.now().timestamp_millis());
    v
}

/// Moves the clock to `at` (in steps, running what comes due), then runs the pipeline.
async fn run_until(w: &World, at: DateTime<Utc>) {
    while w.app.clock.now() < at {
        let step = (at - w.app.clock.now()).min(Duration::hours(1));
        w.app.advance(step.num_seconds().max(1)).await;
    }
}

fn parse(data: &str) -> (String, String, String) {
    let m = MessageParser::default().parse(data.as_bytes()).unwrap();
    // Email bodies travel with CRLF line ends.
    (
        m.subject().unwrap().to_owned(),
        m.body_text(0).unwrap().replace("\r\n", "\n"),
        m.body_html(0).unwrap().replace("\r\n", "\n"),
    )
}

/// The digest emails the SMTP server accepted (alerts go to Telegram in these tests).
fn digests(w: &World) -> Vec<(String, String, String)> {
    w.smtp.accepted().iter().map(|m| parse(&m.data)).collect()
}

#[tokio::test]
async fn the_daily_digest_counts_lists_repeat_callers_first_and_measures_callbacks() {
    let w = world(DIGEST).await;
    w.app.run_pipeline().await; // schedules the digest: its first period started at 09:00 today
    for i in 0..3 {
        let a = telecmi_call(&w, &format!("a-{i}"), "missed", 919810000011);
        w.app.post_json(Provider::Telecmi, &a).await;
        w.app.advance(600).await;
    }
    let b = telecmi_call(&w, "b-1", "missed", 919810000012);
    w.app.post_json(Provider::Telecmi, &b).await;
    let c = telecmi_call(&w, "c-1", "missed", 919810000013);
    w.app.post_json(Provider::Telecmi, &c).await;
    w.app.advance(20 * 60).await;
    // B calls again and is answered 20 minutes later.
    let b_again = telecmi_call(&w, "b-2", "answered", 919810000012);
    w.app.post_json(Provider::Telecmi, &b_again).await;
    w.app.advance(25 * 60).await;
    // An agent calls C back through Callr 45 minutes after C's missed call.
    let now = w.app.clock.now();
    let mut callback = fixture("callr_cdr.json");
    callback["callid"] = json!(777);
    callback["direction"] = json!("outbound");
    callback["status"] = json!("answered");
    callback["callee"] = json!("+919810000013");
    callback["callerNumber"] = json!("+918044440000");
    callback["started"] = json!(now.to_rfc3339());
    callback["answered"] = json!((now + Duration::seconds(5)).to_rfc3339());
    callback["ended"] = json!((now + Duration::seconds(65)).to_rfc3339());
    w.app.post_json(Provider::Callr, &callback).await;
    // An answered call, and a hostile name.
    let d = telecmi_call(&w, "d-1", "answered", 919810000014);
    w.app.post_json(Provider::Telecmi, &d).await;
    let mut e = fixture("callr_cdr.json");
    e["callerName"] = json!("<script>x</script> & Co");
    e["started"] = json!(now.to_rfc3339());
    w.app.post_json(Provider::Callr, &e).await;

    run_until(&w, tuesday_nine() - Duration::minutes(1)).await;
    assert!(digests(&w).is_empty(), "nothing before 09:00");
    run_until(&w, tuesday_nine()).await;

    let mails = w.smtp.accepted();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["manager@example.com"]);
    let (subject, text, html) = parse(&mails[0].data);
    assert_eq!(subject, "daily-ops: 6 missed calls, 2 still waiting");
    assert!(
        text.starts_with(
            "daily-ops: Mon 23 Nov 2026 09:00 to Tue 24 Nov 2026 09:00 (Asia/Kolkata)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("Calls: 9 (period before: 0)\nMissed: 6 (period before: 0)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  answered: 3 (before: 0)\n  missed: 5 (before: 0)\n  canceled: 1 (before: 0)\n"
        ),
        "{text}"
    );
    let waiting = text
        .split("Still waiting for a call back: 2\n")
        .nth(1)
        .unwrap();
    let lines: Vec<&str> = waiting.lines().take(2).collect();
    assert!(
        lines[0].starts_with("  +91 98100 00011 tel:+919810000011: 3 missed calls at Mon 23 Nov 15:30, Mon 23 Nov 15:40, Mon 23 Nov 15:50"),
        "repeat callers first: {waiting}"
    );
    assert!(
        lines[1].starts_with(
            "  +33 6 12 34 56 78 (<script>x</script> & Co) tel:+33612345678: 1 missed call"
        ),
        "{waiting}"
    );
    assert!(
        text.contains(
            "Called back: 2 of 6 missed calls (33%), median time to call back 32 min 30 s\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  +91 98100 00012: reached 20 min after their last missed call"),
        "{text}"
    );
    assert!(
        text.contains("  +91 98100 00013: reached 45 min after their last missed call"),
        "{text}"
    );
    assert!(
        html.contains(r#"<a href="tel:+919810000011">+91 98100 00011</a>"#),
        "{html}"
    );
    assert!(
        html.contains("(&lt;script&gt;x&lt;&#x2f;script&gt; &amp; Co)"),
        "{html}"
    );
    assert!(!html.contains("<script>"));
}

#[tokio::test]
async fn a_period_is_sent_once_even_across_restarts() {
    let w = world(DIGEST).await;
    w.app.run_pipeline().await;
    let a = telecmi_call(&w, "a-1", "missed", 919810000011);
    w.app.post_json(Provider::Telecmi, &a).await;
    run_until(&w, tuesday_nine()).await;
    assert_eq!(digests(&w).len(), 1);

    w.app.run_pipeline().await;
    let app = w.app.restart().await;
    app.run_pipeline().await;
    app.advance(60).await;
    let app = app.crash_and_restart().await;
    app.advance(60).await;
    assert_eq!(w.smtp.accepted().len(), 1);
    let runs = app.store.digest_runs("daily-ops").await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].period_end, tuesday_nine());
}

#[tokio::test]
async fn after_downtime_one_email_covers_the_periods_missed() {
    let w = world(DIGEST).await;
    w.app.run_pipeline().await;
    let a = telecmi_call(&w, "a-1", "missed", 919810000011);
    w.app.post_json(Provider::Telecmi, &a).await;
    // Down from before Tuesday's digest until Friday 10:00 in Kolkata.
    let app = w.app.crash_and_restart().await;
    app.clock
        .advance(tuesday_nine() + Duration::days(3) + Duration::hours(1) - app.clock.now());
    let app = app.crash_and_restart().await;
    app.run_pipeline().await;

    let mails = w.smtp.accepted();
    assert_eq!(mails.len(), 1, "one email for the whole gap");
    let (subject, text, _) = parse(&mails[0].data);
    assert_eq!(
        subject,
        "daily-ops: 1 missed call, 1 still waiting (4 periods)"
    );
    assert!(
        text.starts_with("daily-ops: Mon 23 Nov 2026 09:00 to Fri 27 Nov 2026 09:00 (Asia/Kolkata)\nringback was not running when earlier digests were due: this one covers 4 periods.\n"),
        "{text}"
    );
    // The next one is Saturday's, for one day.
    let mut b = call("b-1", "missed", 919810000012);
    b["time"] = json!(app.clock.now().timestamp_millis());
    app.post_json(Provider::Telecmi, &b).await;
    let saturday_nine = tuesday_nine() + Duration::days(4);
    while app.clock.now() < saturday_nine {
        app.advance(3600).await;
    }
    let mails = w.smtp.accepted();
    assert_eq!(mails.len(), 2);
    let (subject, text, _) = parse(&mails[1].data);
    assert_eq!(subject, "daily-ops: 1 missed call, 1 still waiting");
    assert!(
        text.starts_with(
            "daily-ops: Fri 27 Nov 2026 09:00 to Sat 28 Nov 2026 09:00 (Asia/Kolkata)\n\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn an_empty_period_sends_nothing_unless_asked() {
    let w = world(DIGEST).await;
    w.app.run_pipeline().await;
    let answered = telecmi_call(&w, "d-1", "answered", 919810000014);
    w.app.post_json(Provider::Telecmi, &answered).await;
    run_until(&w, tuesday_nine() + Duration::minutes(5)).await;
    assert!(w.smtp.accepted().is_empty());
    let runs = w.app.store.digest_runs("daily-ops").await.unwrap();
    assert!(runs.is_empty());
    assert_eq!(
        w.app.store.digest_state("daily-ops").await.unwrap(),
        Some(tuesday_nine()),
        "the empty period is closed all the same"
    );

    let w = world(&DIGEST.replace(
        "timezone = \"Asia/Kolkata\"",
        "timezone = \"Asia/Kolkata\"\nsend_empty = true",
    ))
    .await;
    w.app.run_pipeline().await;
    run_until(&w, tuesday_nine() + Duration::minutes(5)).await;
    let mails = digests(&w);
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].0, "daily-ops: 0 missed calls, 0 still waiting");
    assert!(
        mails[0].1.contains("Calls: 0 (period before: 0)"),
        "{}",
        mails[0].1
    );
}

#[tokio::test]
async fn digests_cover_only_their_routes() {
    let w = world(&DIGEST.replace(
        "[[digests]]",
        "[[routes]]\nname = \"billing\"\nmatch = { group = \"Billing\" }\nreceiver = \"front-desk\"\n\n[[digests]]\nroutes = [\"billing\"]",
    ))
    .await;
    w.app.run_pipeline().await;
    let sales = telecmi_call(&w, "s-1", "missed", 919810000011);
    w.app.post_json(Provider::Telecmi, &sales).await;
    let mut billing = telecmi_call(&w, "b-1", "missed", 919810000012);
    billing["team"] = json!("Billing");
    w.app.post_json(Provider::Telecmi, &billing).await;
    run_until(&w, tuesday_nine()).await;
    let mails = digests(&w);
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].0, "daily-ops: 1 missed call, 1 still waiting");
    assert!(mails[0].1.contains("+91 98100 00012"));
    assert!(!mails[0].1.contains("+91 98100 00011"));
}
