//! Several instances on one database: webhooks on either, each alert sent once, work of a dead
//! instance taken over when its claims lapse, digests sent once.

use ringback::bot::Polled;
use ringback::domain::Provider;

use crate::alerts::{FRONT_DESK, SALES, call, world};
use crate::digests::DIGEST;
use crate::support::telegram::User;

#[tokio::test]
async fn two_instances_behave_like_one_that_never_restarts() {
    let w = world(DIGEST).await;
    let one = w.app;
    let two = one.sibling().await;
    one.run_pipeline().await;
    two.run_pipeline().await;

    // Webhooks land on either instance; a resend on the other is still a duplicate.
    for i in 0..10u64 {
        let app = if i % 2 == 0 { &one } else { &two };
        let answer = app
            .post_json(
                Provider::Telecmi,
                &call(&format!("ha-{i}"), "missed", 919810000100 + i),
            )
            .await;
        assert_eq!(answer.body["status"], "stored");
    }
    let resend = two
        .post_json(Provider::Telecmi, &call("ha-0", "missed", 919810000100))
        .await;
    assert_eq!(resend.body["status"], "duplicate");

    // Both decide at once (each call is decided once), and both send to the same chat at once for
    // a few seconds: Telegram's limits hold for the bot, not per instance.
    one.clock.advance(chrono::Duration::seconds(3));
    for _ in 0..3 {
        tokio::join!(one.run_pipeline(), two.run_pipeline());
        one.clock.advance(chrono::Duration::seconds(1));
    }
    assert_eq!(
        w.telegram.sent_to(FRONT_DESK).len(),
        3,
        "one message a second to the chat"
    );
    assert_eq!(w.telegram.limit_violations(), 0);
    // Instance one claims the next messages (as they come due) and dies before sending them.
    let soon = one.clock.now() + chrono::Duration::seconds(10);
    let claimed = one
        .store
        .claim_outbox(soon, soon + chrono::Duration::seconds(120), 5)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    // Instance one also reads the bot's updates: it holds the polling lease, so two does not.
    assert_eq!(one.poll_bot().await, Polled::Handled(0));
    assert_eq!(two.poll_bot().await, Polled::NotLeader);
    let _shared_database = one.die();
    let died_at = two.clock.now();
    w.telegram
        .user_writes(SALES, &User::new(7, "Asha", None), "/chatid");
    // The survivor sends the rest as Telegram's limits allow, and the dead one's after its claims
    // lapse; it polls every second, and takes the bot over once the dead one's lease runs out.
    let mut took_over_at = None;
    for _ in 0..150 {
        two.advance(1).await;
        if two.poll_bot().await != Polled::NotLeader && took_over_at.is_none() {
            took_over_at = Some(two.clock.now());
        }
    }
    let took_over_at = took_over_at.expect("the survivor resumed polling");
    println!(
        "polling resumed {} s after the leader died",
        (took_over_at - died_at).num_seconds()
    );
    assert!(took_over_at - died_at <= ringback::bot::LEASE + chrono::Duration::seconds(1));
    let replies = w.telegram.sent_to(SALES);
    assert_eq!(replies.len(), 1, "the update is handled once: {replies:#?}");
    assert!(
        replies[0]
            .text
            .starts_with("This chat's id is -1001000000002.")
    );

    let sent = w.telegram.sent_to(FRONT_DESK);
    let mut callers: Vec<String> = sent
        .iter()
        .map(|m| m.text.lines().nth(1).unwrap().to_owned())
        .collect();
    callers.sort();
    let before = callers.len();
    callers.dedup();
    let duplicates = before - callers.len();
    println!(
        "{} alerts sent, {duplicates} duplicates, {} claimed by the dead instance",
        sent.len(),
        claimed.len()
    );
    assert_eq!(duplicates, 0);
    assert_eq!(callers.len(), 10, "every alert delivered");
    assert_eq!(w.telegram.limit_violations(), 0);
    let verdicts = two.store.verdicts().await.unwrap();
    assert_eq!(verdicts.len(), 10, "each call decided once: {verdicts:?}");

    // The digest at 09:00 is sent once, though two instances were running when it came due.
    let three = two.sibling().await;
    let tuesday_nine = chrono::DateTime::parse_from_rfc3339("2026-11-24T03:30:00Z")
        .unwrap()
        .to_utc();
    two.clock.advance(tuesday_nine - two.clock.now());
    tokio::join!(two.run_pipeline(), three.run_pipeline());
    assert_eq!(w.smtp.accepted().len(), 1);
}

#[tokio::test]
async fn instances_share_telegrams_limits() {
    let w = world(DIGEST).await;
    let one = w.app;
    let two = one.sibling().await;
    one.post_json(Provider::Telecmi, &call("l-1", "missed", 919810000001))
        .await;
    one.clock.advance(chrono::Duration::milliseconds(500));
    two.post_json(Provider::Telecmi, &call("l-2", "missed", 919810000002))
        .await;

    // Instance one decides and sends the first call; half a second later instance two decides the
    // second for the same chat, and must wait for the chat's second to pass.
    one.clock.advance(chrono::Duration::milliseconds(2500));
    one.run_pipeline().await;
    one.clock.advance(chrono::Duration::milliseconds(500));
    two.run_pipeline().await;
    assert_eq!(w.telegram.sent_to(FRONT_DESK).len(), 1);
    one.clock.advance(chrono::Duration::milliseconds(500));
    two.run_pipeline().await;

    let sent = w.telegram.sent_to(FRONT_DESK);
    assert_eq!(sent.len(), 2);
    assert!(sent[1].at - sent[0].at >= chrono::Duration::seconds(1));
    assert_eq!(w.telegram.limit_violations(), 0);
}
