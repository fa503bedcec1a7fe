//! The Telegram bot, through updates the fake Bot API serves: set-up help, the claim and
//! called-back buttons, automatic resolution, escalation, /missed and /stats, and its failures.

use ringback::bot::Polled;
use ringback::bot::buttons::{Action, Buttons};
use ringback::domain::Provider;
use serde_json::json;

use crate::alerts::{ALICE, FRONT_DESK, ONE_ROUTE, SALES, World, call, world};
use crate::support::telegram::{Failure, Sent, User};

const TOKEN: &str = "123456:TEST-TOKEN";

fn asha() -> User {
    User::new(101, "Asha", Some("Rao"))
}

fn ravi() -> User {
    User::new(102, "Ravi", None)
}

fn labels(m: &Sent) -> Vec<Vec<String>> {
    m.buttons
        .iter()
        .map(|row| row.iter().map(|(label, _)| label.clone()).collect())
        .collect()
}

/// The callback data of the button labelled `label`.
fn button(m: &Sent, label: &str) -> String {
    m.buttons
        .iter()
        .flatten()
        .find(|(l, _)| l == label)
        .unwrap_or_else(|| panic!("no {label} button in {:?}", m.buttons))
        .1
        .clone()
}

/// A missed call from `caller`, decided and sent; returns the alert as `chat` got it.
async fn missed_call(w: &World, conversation: &str, caller: u64, chat: i64) -> Sent {
    w.app
        .post_json(Provider::Telecmi, &call(conversation, "missed", caller))
        .await;
    w.app.advance(3).await;
    w.telegram.sent_to(chat).pop().expect("an alert")
}

/// Presses `data` under `message` as `user`, lets the bot read it, and returns its answer. A
/// second passes, as between two people's taps, so Telegram's one-message-a-second limit lets
/// the edits through.
async fn press(w: &World, chat: i64, message_id: i64, user: &User, data: &str) -> String {
    let query = w.telegram.press(chat, message_id, user, data);
    assert_eq!(w.app.poll_bot().await, Polled::Handled(1));
    w.app.advance(1).await;
    w.telegram
        .answer_to(&query)
        .expect("every press is answered")
}

/// `user` sends `command` in `chat`; returns the bot's reply. A second passes, as between two
/// messages someone types.
async fn command(w: &World, chat: i64, user: &User, command: &str) -> String {
    let before = w.telegram.sent_to(chat).len();
    w.telegram.user_writes(chat, user, command);
    assert_eq!(w.app.poll_bot().await, Polled::Handled(1));
    w.app.advance(1).await;
    let sent = w.telegram.sent_to(chat);
    assert_eq!(sent.len(), before + 1, "one reply to {command}: {sent:#?}");
    sent[before].text.clone()
}

async fn readyz(w: &World) -> serde_json::Value {
    w.app
        .send(w.app.client.get(format!("{}/readyz", w.app.address)))
        .await
        .body
}

#[tokio::test]
async fn chatid_answers_with_the_line_to_paste_into_the_config() {
    let w = world(ONE_ROUTE).await;
    w.telegram
        .user_writes(SALES, &asha(), "/chatid@ringback_bot");
    w.telegram
        .user_writes(SALES, &asha(), "/chatid@another_bot");
    w.telegram.user_writes(ALICE, &asha(), "/start");
    assert_eq!(w.app.poll_bot().await, Polled::Handled(3));
    w.app.advance(1).await;
    let help = command(&w, ALICE, &asha(), "/help").await;
    assert!(
        help.contains("\n/missed — Open missed calls for this chat\n"),
        "{help}"
    );

    // Set-up: a stale webhook is cleared so polling works, and the commands are registered.
    assert_eq!(
        w.telegram.methods()[..3],
        ["getme", "deletewebhook", "setmycommands"]
    );
    let commands: Vec<String> = w.telegram.commands().into_iter().map(|c| c.0).collect();
    assert_eq!(commands, ["missed", "stats", "chatid", "start", "help"]);

    // A command for another bot in the same group is not answered.
    let group = w.telegram.sent_to(SALES);
    assert_eq!(group.len(), 1, "{group:#?}");
    assert_eq!(
        group[0].text,
        "This chat's id is -1001000000002.\n\n\
         To send missed-call alerts here, add it to a receiver in ringback's config:\n\
         [receivers.front-desk]\n\
         telegram = [-1001000000002]\n\
         then run ringback check-config and reload."
    );
    let private = w.telegram.sent_to(ALICE);
    assert_eq!(private.len(), 2);
    assert!(
        private[0].text.starts_with("This chat's id is 5550001.\n"),
        "{}",
        private[0].text
    );
    assert!(private[0].text.contains("telegram = [5550001]\n"));

    // The updates were confirmed: the next poll starts after them.
    assert_eq!(w.app.poll_bot().await, Polled::Handled(0));
    assert_eq!(w.telegram.pending_updates(), 0);
}

#[tokio::test]
async fn claim_then_called_back_edits_the_alert_in_place() {
    let w = world(ONE_ROUTE).await;
    let alert = missed_call(&w, "b-1", 919810000001, FRONT_DESK).await;
    assert_eq!(
        alert.text,
        "📞 Missed call · Sales_2222223\n\
         From: +91 98100 00001\n\
         To: +91 80 4444 0000\n\
         When: 15:29 Mon 23 Nov"
    );
    assert_eq!(labels(&alert), [["I'll call back"]]);
    let claim = button(&alert, "I'll call back");
    assert!(claim.len() <= 64, "{claim}");

    w.app.advance(60).await;
    let answer = press(&w, FRONT_DESK, alert.message_id, &asha(), &claim).await;
    assert_eq!(
        answer,
        "You're calling back. Press \"Called back ✓\" when done."
    );
    let claimed = w.telegram.message(FRONT_DESK, alert.message_id);
    assert_eq!(
        claimed.text,
        format!("{}\n☎️ Asha Rao is calling back (since 15:31)", alert.text)
    );
    assert_eq!(labels(&claimed), [["Called back ✓", "Release"]]);

    w.app.advance(600).await;
    let done = button(&claimed, "Called back ✓");
    let answer = press(&w, FRONT_DESK, alert.message_id, &asha(), &done).await;
    assert_eq!(answer, "Marked as called back. Thank you!");
    let handled = w.telegram.message(FRONT_DESK, alert.message_id);
    assert_eq!(
        handled.text,
        format!("{}\n✅ Called back by Asha Rao at 15:41", alert.text)
    );
    assert!(handled.buttons.is_empty(), "{:?}", handled.buttons);
    assert_eq!(handled.edits, 2);
    // One message in all: the alert was edited, never sent again.
    assert_eq!(w.telegram.requests(), 1);
    // A callback marked in Telegram counts in the callback rate, as in digests.
    let stats = command(&w, FRONT_DESK, &asha(), "/stats").await;
    assert!(
        stats.contains("\nCallback rate: 100% (1 of 1 missed calls reached)\n"),
        "{stats}"
    );
}

const TWO_CHATS: &str = r#"
[receivers.front-desk]
telegram = ["-1001000000001", "-1001000000002"]

[[routes]]
name = "everything"
receiver = "front-desk"
"#;

#[tokio::test]
async fn forged_foreign_and_stale_presses_change_nothing_and_are_answered() {
    let w = world(TWO_CHATS).await;
    let here = missed_call(&w, "f-1", 919810000001, FRONT_DESK).await;
    let there = w.telegram.sent_to(SALES).pop().unwrap();
    let claim = button(&here, "I'll call back");
    let original = here.text.clone();

    // This chat's button pressed in the other chat, as a modified client could send it.
    assert_eq!(
        press(&w, SALES, there.message_id, &ravi(), &claim).await,
        "This button does not belong to this chat."
    );
    // Data that ringback never wrote.
    assert_eq!(
        press(&w, FRONT_DESK, here.message_id, &ravi(), "claim").await,
        "This button is not one of ringback's."
    );
    // Genuine data under another message of the chat.
    assert_eq!(
        press(&w, FRONT_DESK, 999, &ravi(), &claim).await,
        "This button does not belong to this message."
    );
    // Signed for an alert ringback does not know (pruned, or another database).
    let unknown = Buttons::new(TOKEN).data(Action::Claim, 999_999, FRONT_DESK);
    assert_eq!(
        press(&w, FRONT_DESK, here.message_id, &ravi(), &unknown).await,
        "This alert is no longer known to ringback (it may have expired)."
    );
    assert_eq!(w.telegram.message(FRONT_DESK, here.message_id).edits, 0);
    assert_eq!(w.telegram.message(SALES, there.message_id).text, original);

    // Asha claims; the claim shows in both chats the alert went to.
    press(&w, FRONT_DESK, here.message_id, &asha(), &claim).await;
    let claimed_line = format!("{original}\n☎️ Asha Rao is calling back (since 15:30)");
    assert_eq!(
        w.telegram.message(SALES, there.message_id).text,
        claimed_line
    );
    // Ravi's screen still showed "I'll call back".
    assert_eq!(
        press(&w, FRONT_DESK, here.message_id, &ravi(), &claim).await,
        "Already claimed by Asha Rao at 15:30."
    );
    let release = button(&w.telegram.message(FRONT_DESK, here.message_id), "Release");
    assert_eq!(
        press(&w, FRONT_DESK, here.message_id, &ravi(), &release).await,
        "Only Asha Rao can release this call."
    );
    assert_eq!(
        w.telegram.message(FRONT_DESK, here.message_id).text,
        claimed_line
    );
    // Asha releases: the alert is open again, buttons and all.
    assert_eq!(
        press(&w, FRONT_DESK, here.message_id, &asha(), &release).await,
        "Released: the call is open again."
    );
    let reopened = w.telegram.message(FRONT_DESK, here.message_id);
    assert_eq!(reopened.text, original);
    assert_eq!(labels(&reopened), [["I'll call back"]]);

    // Called back by Ravi, straight from the reopened alert... then a stale claim.
    press(&w, FRONT_DESK, here.message_id, &ravi(), &claim).await;
    let done = button(
        &w.telegram.message(FRONT_DESK, here.message_id),
        "Called back ✓",
    );
    press(&w, FRONT_DESK, here.message_id, &ravi(), &done).await;
    assert_eq!(
        press(&w, FRONT_DESK, here.message_id, &asha(), &claim).await,
        "Already called back by Ravi at 15:30."
    );
    assert_eq!(
        press(&w, FRONT_DESK, here.message_id, &asha(), &done).await,
        "Already called back by Ravi at 15:30."
    );
    // Every press got an answer.
    assert_eq!(w.telegram.answers().len(), 12);
}

#[tokio::test]
async fn an_answered_call_with_the_number_resolves_its_open_alerts() {
    let w = world(ONE_ROUTE).await;
    let first = missed_call(&w, "r-1", 919810000001, FRONT_DESK).await;
    let second = missed_call(&w, "r-2", 919810000001, FRONT_DESK).await;
    let other = missed_call(&w, "r-3", 919810000002, FRONT_DESK).await;
    // Someone had claimed the second one: reaching the caller settles it too.
    press(
        &w,
        FRONT_DESK,
        second.message_id,
        &asha(),
        &button(&second, "I'll call back"),
    )
    .await;

    // Two minutes later the caller rings again and carol answers.
    w.app.advance(120).await;
    let mut answered = call("r-4", "answered", 919810000001);
    answered["time"] = json!(w.app.clock.now().timestamp_millis());
    w.app.post_json(Provider::Telecmi, &answered).await;
    w.app.advance(3).await;
    // The second edit to the chat waits out Telegram's second.
    w.app.advance(1).await;
    for alert in [&first, &second] {
        let now = w.telegram.message(FRONT_DESK, alert.message_id);
        assert_eq!(
            now.text,
            format!("{}\n✅ Reached at 15:32 by 304_carol", alert.text)
        );
        assert!(now.buttons.is_empty());
    }
    assert_eq!(w.telegram.message(FRONT_DESK, other.message_id).edits, 0);

    // An agent calls the other caller back through Callr.
    let now = w.app.clock.now();
    let mut callback = crate::fixture("callr_cdr.json");
    callback["callid"] = json!(4242);
    callback["direction"] = json!("outbound");
    callback["status"] = json!("answered");
    callback["callee"] = json!("+919810000002");
    callback["callerNumber"] = json!("+918044440000");
    callback["started"] = json!(now.to_rfc3339());
    callback["answered"] = json!((now + chrono::Duration::seconds(5)).to_rfc3339());
    callback["ended"] = json!((now + chrono::Duration::seconds(65)).to_rfc3339());
    w.app.post_json(Provider::Callr, &callback).await;
    w.app.advance(3).await;
    let reached = w.telegram.message(FRONT_DESK, other.message_id);
    assert!(
        reached
            .text
            .starts_with(&format!("{}\n✅ Reached at 15:32", other.text)),
        "{}",
        reached.text
    );

    // A call answered before a missed one does not resolve it.
    let later = missed_call(&w, "r-5", 919810000001, FRONT_DESK).await;
    assert_eq!(labels(&later), [["I'll call back"]]);
    w.app.advance(60).await;
    assert_eq!(w.telegram.message(FRONT_DESK, later.message_id).edits, 0);
    let listed = command(&w, FRONT_DESK, &asha(), "/missed").await;
    assert_eq!(
        listed,
        "Open missed calls: 1\n\n• 15:29 Mon 23 Nov · +91 98100 00001 · Sales_2222223"
    );
}

#[tokio::test]
async fn a_repeat_caller_escalates_at_the_threshold() {
    let w = world(
        r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[receivers.managers]
telegram = ["-1001000000002"]

[[routes]]
name = "everything"
receiver = "front-desk"
escalate = { receiver = "managers", after = 3 }
"#,
    )
    .await;
    for conversation in ["e-1", "e-2"] {
        missed_call(&w, conversation, 919810000007, FRONT_DESK).await;
        w.app.advance(60).await;
    }
    assert!(w.telegram.sent_to(SALES).is_empty());
    let third = missed_call(&w, "e-3", 919810000007, FRONT_DESK).await;
    assert!(
        third
            .text
            .ends_with("3rd missed call from this number in 2 h")
    );
    let escalated = w.telegram.sent_to(SALES);
    assert_eq!(escalated.len(), 1);
    assert_eq!(
        escalated[0].text,
        "⚠️ Escalated: 3rd missed call from this number in 2 h\n\
         📞 Missed call · Sales_2222223\n\
         From: +91 98100 00007\n\
         To: +91 80 4444 0000\n\
         When: 15:29 Mon 23 Nov"
    );
    assert_eq!(labels(&escalated[0]), [["I'll call back"]]);
    // Every further missed call from the number escalates too; other callers do not.
    missed_call(&w, "e-4", 919810000007, FRONT_DESK).await;
    missed_call(&w, "e-5", 919810000008, FRONT_DESK).await;
    assert_eq!(w.telegram.sent_to(SALES).len(), 2);
    assert_eq!(w.telegram.sent_to(FRONT_DESK).len(), 5);
}

const TWO_TEAMS: &str = r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[receivers.sales]
telegram = ["-1001000000002"]

[[routes]]
name = "vip"
match = { caller_prefix = "+91981000009" }
receiver = "sales"

[[routes]]
name = "everything-else"
receiver = "front-desk"
"#;

#[tokio::test]
async fn missed_and_stats_cover_only_the_chats_own_calls() {
    let w = world(TWO_TEAMS).await;
    missed_call(&w, "m-1", 919810000001, FRONT_DESK).await;
    let claimed = missed_call(&w, "m-2", 919810000002, FRONT_DESK).await;
    missed_call(&w, "m-3", 919810000003, FRONT_DESK).await;
    let mut named = call("m-4", "missed", 919810000004);
    named["time"] = json!(w.app.clock.now().timestamp_millis());
    w.app.post_json(Provider::Telecmi, &named).await;
    w.app.advance(3).await;
    missed_call(&w, "m-5", 919810000091, SALES).await;
    press(
        &w,
        FRONT_DESK,
        claimed.message_id,
        &asha(),
        &button(&claimed, "I'll call back"),
    )
    .await;
    let mut answered = call("m-6", "answered", 919810000003);
    answered["time"] = json!(w.app.clock.now().timestamp_millis());
    w.app.post_json(Provider::Telecmi, &answered).await;
    w.app.advance(3).await;

    let mut replies = std::collections::HashMap::new();
    for chat in [FRONT_DESK, SALES, ALICE] {
        let missed = command(&w, chat, &asha(), "/missed").await;
        let stats = command(&w, chat, &asha(), "/stats").await;
        replies.insert(chat, (missed, stats));
    }
    let replies = |chat: i64| replies[&chat].clone();

    // Newest first; the claimed and the reached calls are not open.
    let (missed, stats) = replies(FRONT_DESK);
    assert_eq!(
        missed,
        "Open missed calls: 2\n\n\
         • 15:30 Mon 23 Nov · +91 98100 00004 · Sales_2222223\n\
         • 15:29 Mon 23 Nov · +91 98100 00001 · Sales_2222223"
    );
    assert_eq!(
        stats,
        "Today (Mon 23 Nov, Asia/Kolkata)\n\
         Calls: 5\n\
         answered 1 · missed 4\n\
         Callback rate: 25% (1 of 4 missed calls reached)\n\
         Median time to reach: 1 min 16 s"
    );
    let (missed, stats) = replies(SALES);
    assert_eq!(
        missed,
        "Open missed calls: 1\n\n• 15:29 Mon 23 Nov · +91 98100 00091 · Sales_2222223"
    );
    assert!(stats.contains("Calls: 1\nmissed 1\n"), "{stats}");
    let (missed, stats) = replies(ALICE);
    assert_eq!(missed, "No open missed calls here. ✅");
    assert_eq!(
        stats,
        "This chat receives no alerts yet. Send /chatid to see how to add it to a receiver."
    );
}

#[tokio::test]
async fn being_added_removed_or_blocked_is_said_and_shown_in_readyz() {
    let w = world(ONE_ROUTE).await;
    w.telegram.membership(FRONT_DESK, &asha(), "left", "member");
    w.app.poll_bot().await;
    assert!(
        w.telegram.sent_to(FRONT_DESK)[0]
            .text
            .starts_with("This chat's id is -1001000000001.")
    );
    assert_eq!(readyz(&w).await["checks"]["telegram_chats"], "ok");

    w.telegram
        .membership(FRONT_DESK, &asha(), "member", "kicked");
    w.app.poll_bot().await;
    let ready = readyz(&w).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["telegram_chats"], "problems");
    assert_eq!(
        ready["warnings"],
        json!([
            "Telegram chat -1001000000001: the bot was removed from this chat by Asha Rao; to fix: \
             add the bot to the chat again, or remove this chat from its receiver"
        ])
    );
    // Added back: the problem is gone.
    w.telegram
        .membership(FRONT_DESK, &asha(), "left", "administrator");
    w.app.poll_bot().await;
    assert_eq!(readyz(&w).await["checks"]["telegram_chats"], "ok");

    // A user who blocked the bot: found when an alert cannot be sent, cleared by the next one
    // that can.
    w.telegram.fail_next(None, Failure::Blocked);
    w.app
        .post_json(Provider::Telecmi, &call("x-1", "missed", 919810000001))
        .await;
    w.app.advance(3).await;
    let ready = readyz(&w).await;
    assert_eq!(ready["checks"]["telegram_chats"], "problems");
    let warning = ready["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with(
            "Telegram chat -1001000000001: Forbidden: bot was blocked by the user; to fix: \
             add the bot to the chat again (or unblock it and send it /start)"
        ),
        "{warning}"
    );
    assert!(
        crate::operations::metric(&w.app, "ringback_telegram_chat_problems_total", &[]).await
            >= 2.0
    );
    missed_call(&w, "x-2", 919810000002, FRONT_DESK).await;
    assert_eq!(readyz(&w).await["checks"]["telegram_chats"], "ok");
}

#[tokio::test]
async fn a_group_that_becomes_a_supergroup_is_followed() {
    let w = world(ONE_ROUTE).await;
    let supergroup = -1009999999999;
    w.telegram.group_migrates(FRONT_DESK, supergroup);
    w.app.poll_bot().await;
    let alert = missed_call(&w, "g-1", 919810000001, supergroup).await;
    assert_eq!(alert.chat_id, supergroup);
    assert!(w.telegram.sent_to(FRONT_DESK).is_empty());
    let warning = readyz(&w).await["warnings"][0].as_str().unwrap().to_owned();
    assert!(
        warning.contains("became supergroup -1009999999999"),
        "{warning}"
    );
}

#[tokio::test]
async fn in_webhook_mode_updates_arrive_by_post_with_telegrams_secret() {
    let webhook = r#"
[receivers.front-desk]
telegram = ["-1001000000001"]

[[routes]]
name = "everything"
receiver = "front-desk"
"#;
    let w = world(webhook).await;
    let mut config = w.app.config_text();
    config = config.replace(
        "token = \"123456:TEST-TOKEN\"",
        "token = \"123456:TEST-TOKEN\"\nwebhook_url = \"https://ringback.example.com/telegram/updates\"\nwebhook_secret = \"s3cret-Token_1\"",
    );
    w.app.write_config(&config);
    assert_eq!(w.app.reload().await.status, 200);
    // Set-up points Telegram at the webhook; there is nothing to poll.
    assert_eq!(w.app.poll_bot().await, Polled::Handled(0));
    assert_eq!(
        w.telegram.webhook(),
        Some((
            "https://ringback.example.com/telegram/updates".into(),
            "s3cret-Token_1".into()
        ))
    );
    let update = json!({
        "update_id": 1,
        "message": {
            "message_id": 5, "date": 1_795_428_000,
            "chat": { "id": FRONT_DESK, "type": "supergroup", "title": "Support team" },
            "from": { "id": 101, "is_bot": false, "first_name": "Asha" },
            "text": "/chatid",
            "entities": [{ "type": "bot_command", "offset": 0, "length": 7 }]
        }
    });
    let url = format!("{}/telegram/updates", w.app.address);
    let forged = w
        .app
        .send(
            w.app
                .client
                .post(&url)
                .header("X-Telegram-Bot-Api-Secret-Token", "guess")
                .json(&update),
        )
        .await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.body["error"], "unauthorized");
    let junk = w
        .app
        .send(
            w.app
                .client
                .post(&url)
                .header("X-Telegram-Bot-Api-Secret-Token", "s3cret-Token_1")
                .body("{\"update_id\": \"x\"}"),
        )
        .await;
    assert_eq!(junk.status, 400);
    assert_eq!(junk.body["error"], "invalid_update");
    assert!(w.telegram.sent().is_empty());
    let genuine = w
        .app
        .send(
            w.app
                .client
                .post(&url)
                .header("X-Telegram-Bot-Api-Secret-Token", "s3cret-Token_1")
                .json(&update),
        )
        .await;
    assert_eq!(genuine.status, 200);
    assert!(
        w.telegram.sent_to(FRONT_DESK)[0]
            .text
            .starts_with("This chat's id is -1001000000001.")
    );
}
