//! The bot's answers to commands: `/chatid` (set-up), `/help`, `/missed` (open calls for this
//! chat) and `/stats` (today's calls by outcome and the callback rate), as Telegram HTML.

use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};

use crate::config::Config;
use crate::digest::{on_routes, report};
use crate::render::{CallView, escape_html};
use crate::store::{Store, StoreError};

/// How many open calls `/missed` lists.
const MISSED_LISTED: usize = 20;

/// The chat's id and the config line that sends alerts to it (to this topic, in a forum).
pub fn chat_id(chat: i64, thread: Option<i32>) -> String {
    let (what, line) = match thread {
        Some(thread) => (
            format!(
                "This chat's id is <code>{chat}</code> and this topic's id is <code>{thread}</code>."
            ),
            format!("telegram = [{{ chat_id = {chat}, message_thread_id = {thread} }}]"),
        ),
        None => (
            format!("This chat's id is <code>{chat}</code>."),
            format!("telegram = [{chat}]"),
        ),
    };
    format!(
        "{what}\n\nTo send missed-call alerts here, add it to a receiver in ringback's config:\n\
         <pre>[receivers.front-desk]\n{line}</pre>\n\
         then run <code>ringback check-config</code> and reload."
    )
}

pub fn help(commands: &[(&str, &str)]) -> String {
    let mut text = String::from(
        "I post missed calls from your phone line here. Under each alert, press \
         <b>I'll call back</b> so your team knows you have it, then <b>Called back ✓</b>. \
         When the caller gets through later, the alert says so by itself.\n",
    );
    for (command, description) in commands {
        text.push_str(&format!("\n/{command} — {description}"));
    }
    text
}

/// The open (unclaimed, unresolved) missed calls alerted to `chat`, newest first.
pub async fn missed(store: &Store, chat: i64) -> Result<String, StoreError> {
    let rows = store.open_alerts_in_chat(chat, 200).await?;
    let mut seen = HashSet::new();
    let calls: Vec<CallView> = rows
        .into_iter()
        .filter(|(record, _)| seen.insert(*record))
        .filter_map(|(_, context)| serde_json::from_str(&context).ok())
        .collect();
    if calls.is_empty() {
        return Ok("No open missed calls here. ✅".into());
    }
    let mut text = format!("<b>Open missed calls: {}</b>\n", calls.len());
    for call in calls.iter().take(MISSED_LISTED) {
        let caller = call.caller_display.as_deref().unwrap_or("a hidden number");
        text.push_str(&format!(
            "\n• {} {} · <b>{}</b>",
            call.time_local,
            call.date_local,
            escape_html(caller)
        ));
        if let Some(name) = &call.caller_name {
            text.push_str(&format!(" ({})", escape_html(name)));
        }
        if let Some(group) = &call.group {
            text.push_str(&format!(" · {}", escape_html(group)));
        }
    }
    if calls.len() > MISSED_LISTED {
        text.push_str(&format!(
            "\n\n…and {} older ones.",
            calls.len() - MISSED_LISTED
        ));
    }
    Ok(text)
}

/// The routes whose alerts reach `chat` (as a route's, an escalation's or agent-ring receiver).
fn routes_for_chat(config: &Config, chat: i64) -> Vec<&str> {
    let sends_here = |receiver: &str| {
        config
            .receivers
            .get(receiver)
            .is_some_and(|r| r.telegram.0.iter().any(|t| t.chat_id == chat))
    };
    config
        .routes
        .iter()
        .filter(|route| {
            sends_here(route.receiver.get_ref())
                || route
                    .escalate
                    .as_ref()
                    .is_some_and(|e| sends_here(e.receiver.get_ref()))
                || route
                    .agent_rings
                    .as_ref()
                    .is_some_and(|r| sends_here(r.get_ref()))
        })
        .map(|route| route.name())
        .collect()
}

/// Today's calls (in `[alerts] timezone`) of the routes that alert `chat`: counts by outcome
/// and how many missed callers were reached since.
pub async fn stats(
    store: &Store,
    config: &Config,
    chat: i64,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let routes = routes_for_chat(config, chat);
    if routes.is_empty() {
        return Ok(
            "This chat receives no alerts yet. Send /chatid to see how to add it to a receiver."
                .into(),
        );
    }
    let tz = config.alerts.timezone;
    let local = now.with_timezone(&tz);
    let midnight = local
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|t| tz.from_local_datetime(&t).earliest())
        .map_or(now - chrono::Duration::hours(24), |t| t.with_timezone(&Utc));
    let records = store
        .call_records_between(midnight, now + chrono::Duration::milliseconds(1))
        .await?;
    let marked = store
        .marked_called_back(midnight, now + chrono::Duration::milliseconds(1))
        .await?;
    let calls: Vec<report::CallSummary> = report::calls(&records)
        .into_iter()
        .filter(|c| on_routes(config, c, &routes))
        .collect();
    let r = report::build(report::Inputs {
        name: "today",
        timezone: tz,
        start: midnight,
        end: now + chrono::Duration::milliseconds(1),
        periods: 1,
        calls: &calls,
        missed_outcomes: config.alerts.on.get_ref(),
        max_callers: 0,
        marked_called_back: &marked,
    });
    let mut text = format!(
        "<b>Today</b> ({}, {})\nCalls: {}",
        local.format("%a %-d %b"),
        tz.name(),
        r.total_calls
    );
    let by_outcome: Vec<String> = r
        .outcomes
        .iter()
        .filter(|o| o.count > 0)
        .map(|o| format!("{} {}", o.outcome, o.count))
        .collect();
    if !by_outcome.is_empty() {
        text.push_str(&format!("\n{}", by_outcome.join(" · ")));
    }
    match r.callbacks.rate_percent {
        Some(rate) => text.push_str(&format!(
            "\nCallback rate: {rate}% ({} of {} missed calls reached)",
            r.callbacks.reached, r.callbacks.missed_calls
        )),
        None => text.push_str("\nNo missed calls today."),
    }
    if let Some(median) = &r.callbacks.median {
        text.push_str(&format!("\nMedian time to reach: {median}"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_id_names_the_config_line() {
        let text = chat_id(-1001234567890, None);
        assert!(text.starts_with("This chat's id is <code>-1001234567890</code>."));
        assert!(text.contains("<pre>[receivers.front-desk]\ntelegram = [-1001234567890]</pre>"));
        let topic = chat_id(-100, Some(42));
        assert!(topic.contains("telegram = [{ chat_id = -100, message_thread_id = 42 }]"));
    }
}
