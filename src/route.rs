//! Routing rules from the config: which routes a call matches (team, call group, number, provider,
//! direction, outcome, time of day), in order, first match wins unless `continue`, as Alertmanager.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_spanned::Spanned;

use crate::domain::{CallRecord, Direction, Outcome, Provider};

/// Deserializes `T` or `[T, ...]` into a list.
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{I64Deserializer, MapAccessDeserializer, StrDeserializer};
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(OneOrMany(out))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(StrDeserializer::<E>::new(v)).map(|v| OneOrMany(vec![v]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(I64Deserializer::<E>::new(v)).map(|v| OneOrMany(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                let v = i64::try_from(v).map_err(|_| E::custom("number too large"))?;
                self.visit_i64(v)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|v| OneOrMany(vec![v]))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// A glob (`Sales*`, case-insensitive) or, after `~`, a regular expression (`~^(sales|presales)_`).
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, String> {
        let regex = if let Some(re) = source.strip_prefix('~') {
            regex::Regex::new(re).map_err(|e| format!("`{source}` is not a valid regex: {e}"))?
        } else {
            let mut re = String::from("(?i)^");
            for c in source.chars() {
                match c {
                    '*' => re.push_str(".*"),
                    '?' => re.push('.'),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            regex::Regex::new(&re).map_err(|e| format!("`{source}` is not a valid glob: {e}"))?
        };
        Ok(Pattern {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn matches(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::parse(&s).map_err(de::Error::custom)
    }
}

/// Days of the week and hours of the day, in a route's time zone: `"mon-fri 09:00-18:00"`,
/// `"sat,sun"`, `"22:00-06:00"` (an overnight window belongs to the day it starts on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    source: String,
    /// Bit `n` set: weekday `n` (Monday = 0) is in the window.
    days: u8,
    start: NaiveTime,
    /// `None` is midnight at the end of the day.
    end: Option<NaiveTime>,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl TimeWindow {
    pub fn parse(source: &str) -> Result<TimeWindow, String> {
        let bad = |why: &str| {
            format!(
                "`{source}` is not a time window ({why}); write days and/or hours, like \
                 \"mon-fri 09:00-18:00\", \"sat,sun\" or \"22:00-06:00\""
            )
        };
        let mut days = None;
        let mut hours = None;
        for token in source.split_whitespace() {
            if token.contains(':') {
                if hours.is_some() {
                    return Err(bad("two hour ranges"));
                }
                let (a, b) = token
                    .split_once('-')
                    .ok_or_else(|| bad("hours need a start and an end"))?;
                let start =
                    NaiveTime::parse_from_str(a, "%H:%M").map_err(|_| bad("bad start time"))?;
                let end = if b == "24:00" {
                    None
                } else {
                    Some(NaiveTime::parse_from_str(b, "%H:%M").map_err(|_| bad("bad end time"))?)
                };
                if end == Some(start) {
                    return Err(bad("the window is empty"));
                }
                hours = Some((start, end));
            } else {
                if days.is_some() {
                    return Err(bad("two day lists"));
                }
                let mut mask = 0u8;
                for item in token.split(',') {
                    let day = |name: &str| {
                        DAY_NAMES
                            .iter()
                            .position(|d| name.eq_ignore_ascii_case(d))
                            .ok_or_else(|| bad(&format!("unknown day `{name}`")))
                    };
                    match item.split_once('-') {
                        Some((a, b)) => {
                            let (a, b) = (day(a)?, day(b)?);
                            let mut d = a;
                            loop {
                                mask |= 1 << d;
                                if d == b {
                                    break;
                                }
                                d = (d + 1) % 7;
                            }
                        }
                        None => mask |= 1 << day(item)?,
                    }
                }
                days = Some(mask);
            }
        }
        if days.is_none() && hours.is_none() {
            return Err(bad("it is empty"));
        }
        let (start, end) = hours.unwrap_or((NaiveTime::MIN, None));
        Ok(TimeWindow {
            source: source.to_owned(),
            days: days.unwrap_or(0x7f),
            start,
            end,
        })
    }

    pub fn contains(&self, at: DateTime<Utc>, tz: chrono_tz::Tz) -> bool {
        let local = at.with_timezone(&tz);
        let time = local.time();
        let day = local.weekday().num_days_from_monday();
        let day_on = |d: u32| self.days & (1 << d) != 0;
        match self.end {
            Some(end) if end < self.start => {
                // Overnight: the evening part is on the listed day, the morning part on the next.
                (time >= self.start && day_on(day)) || (time < end && day_on((day + 6) % 7))
            }
            Some(end) => time >= self.start && time < end && day_on(day),
            None => time >= self.start && day_on(day),
        }
    }
}

impl<'de> Deserialize<'de> for TimeWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TimeWindow::parse(&s).map_err(de::Error::custom)
    }
}

/// What a route's `match = { ... }` asks of a call; every matcher given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// TeleCMI team, CallerDesk call group, Callr scenario.
    #[serde(default)]
    pub group: OneOrMany<Pattern>,
    #[serde(default)]
    pub agent: OneOrMany<Pattern>,
    /// The dialled virtual numbers, compared in E.164 where both sides can be read.
    #[serde(default)]
    pub called: OneOrMany<String>,
    #[serde(default)]
    pub caller_prefix: OneOrMany<String>,
    #[serde(default)]
    pub provider: OneOrMany<Provider>,
    #[serde(default)]
    pub outcome: OneOrMany<Outcome>,
    #[serde(default)]
    pub direction: OneOrMany<Direction>,
    /// The call happened inside one of these windows.
    #[serde(default)]
    pub when: OneOrMany<TimeWindow>,
    /// The call happened outside all of these windows.
    #[serde(default)]
    pub not_when: OneOrMany<TimeWindow>,
}

/// Why a matcher held, for `route-test` style explanations and logs.
pub type Reason = String;

impl Matcher {
    /// `Some(reasons)` when every matcher given holds for `record` at `at`.
    pub fn check(
        &self,
        record: &CallRecord,
        at: DateTime<Utc>,
        tz: chrono_tz::Tz,
        region: crate::normalize::Region,
    ) -> Option<Vec<Reason>> {
        let mut reasons = Vec::new();
        let text_match = |patterns: &[Pattern],
                          value: &Option<String>,
                          what: &str,
                          reasons: &mut Vec<Reason>| {
            if patterns.is_empty() {
                return true;
            }
            let Some(value) = value else { return false };
            match patterns.iter().find(|p| p.matches(value)) {
                Some(p) => {
                    reasons.push(format!("{what} `{value}` matches `{p}`"));
                    true
                }
                None => false,
            }
        };
        if !text_match(&self.group.0, &record.group, "group", &mut reasons)
            || !text_match(&self.agent.0, &record.agent, "agent", &mut reasons)
        {
            return None;
        }
        if !self.called.0.is_empty() {
            let called = record.called.as_ref()?;
            let hit = self
                .called
                .0
                .iter()
                .find(|n| same_number(n, called, region))?;
            reasons.push(format!("called number {} is {hit}", called.raw));
        }
        if !self.caller_prefix.0.is_empty() {
            let caller = record.caller.as_ref()?;
            let number = caller.e164.as_deref().unwrap_or(&caller.raw);
            let hit = self
                .caller_prefix
                .0
                .iter()
                .find(|p| number.starts_with(p.as_str()))?;
            reasons.push(format!("caller {number} starts with {hit}"));
        }
        if !listed(
            &self.provider.0,
            record.provider,
            "provider",
            record.provider.as_str(),
            &mut reasons,
        ) || !listed(
            &self.outcome.0,
            record.outcome,
            "outcome",
            record.outcome.as_str(),
            &mut reasons,
        ) || !listed(
            &self.direction.0,
            record.direction,
            "direction",
            record.direction.as_str(),
            &mut reasons,
        ) {
            return None;
        }
        if !self.when.0.is_empty() {
            let w = self.when.0.iter().find(|w| w.contains(at, tz))?;
            reasons.push(format!("time is within `{}`", w.source));
        }
        if self.not_when.0.iter().any(|w| w.contains(at, tz)) {
            return None;
        }
        if !self.not_when.0.is_empty() {
            reasons.push("time is outside the `not_when` windows".to_owned());
        }
        Some(reasons)
    }

    pub fn is_empty(&self) -> bool {
        self.group.0.is_empty()
            && self.agent.0.is_empty()
            && self.called.0.is_empty()
            && self.caller_prefix.0.is_empty()
            && self.provider.0.is_empty()
            && self.outcome.0.is_empty()
            && self.direction.0.is_empty()
            && self.when.0.is_empty()
            && self.not_when.0.is_empty()
    }
}

/// An empty list admits every value.
fn listed<T: PartialEq>(
    list: &[T],
    value: T,
    what: &str,
    shown: &str,
    reasons: &mut Vec<Reason>,
) -> bool {
    if list.is_empty() {
        return true;
    }
    let hit = list.contains(&value);
    if hit {
        reasons.push(format!("{what} is {shown}"));
    }
    hit
}

fn same_number(
    configured: &str,
    number: &crate::domain::PhoneNumber,
    region: crate::normalize::Region,
) -> bool {
    let configured_e164 =
        crate::normalize::phone::normalize(configured, region).and_then(|p| p.e164);
    match (configured_e164, &number.e164) {
        (Some(a), Some(b)) => a == *b,
        _ => {
            let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
            digits(configured) == digits(&number.raw)
        }
    }
}

/// Template file names a route may use instead of the defaults in `templates/`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TemplateNames {
    pub telegram: Option<String>,
    pub email_subject: Option<String>,
    pub email_text: Option<String>,
    pub email_html: Option<String>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Spanned<String>,
    #[serde(default, rename = "match")]
    pub matcher: Option<Matcher>,
    pub receiver: Spanned<String>,
    /// Keep matching later routes after this one.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Calls for the same receiver inside this many seconds go out as one message.
    #[serde(default)]
    pub group_wait_seconds: u64,
    /// Outcomes that alert on this route; `[alerts] on` when absent.
    pub on: Option<Spanned<Vec<Outcome>>>,
    /// Time zone of `when` windows and of times shown; `[alerts] timezone` when absent.
    pub timezone: Option<chrono_tz::Tz>,
    /// Send this route's Telegram messages without a notification sound.
    #[serde(default)]
    pub silent: bool,
    #[serde(default)]
    pub templates: TemplateNames,
    /// A receiver for per-agent "you missed a ring" alerts (TeleCMI leg-b records); off when absent.
    pub agent_rings: Option<Spanned<String>>,
    /// Also alert another receiver when one number has been missed this often.
    pub escalate: Option<Escalation>,
}

/// A repeat caller goes further: from the `after`-th missed call from one number inside the
/// window, each missed call from it also alerts `receiver`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub receiver: Spanned<String>,
    pub after: u32,
    /// `[alerts] repeat_window_minutes` when absent.
    pub within_minutes: Option<u64>,
}

impl Escalation {
    /// The window it counts missed calls in; `default` (the repeat-caller window) when unset.
    pub fn window(&self, default: chrono::Duration) -> chrono::Duration {
        self.within_minutes
            .map_or(default, crate::config::window_minutes)
    }
}

impl Route {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// A route with no matchers is the default: it takes the calls no other route matched.
    pub fn is_default(&self) -> bool {
        self.matcher.as_ref().is_none_or(Matcher::is_empty)
    }
}

/// A route a call matched, and why.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    pub route: &'a Route,
    pub reasons: Vec<Reason>,
}

/// Walks `routes` in order: the first match wins unless it says `continue`; when nothing
/// matched, the default route (if any) takes the call.
pub fn matching<'a>(
    routes: &'a [Route],
    record: &CallRecord,
    at: DateTime<Utc>,
    default_tz: chrono_tz::Tz,
    region: crate::normalize::Region,
) -> Vec<Matched<'a>> {
    let mut matched = Vec::new();
    for route in routes.iter().filter(|r| !r.is_default()) {
        let tz = route.timezone.unwrap_or(default_tz);
        let matcher = route
            .matcher
            .as_ref()
            .expect("non-default routes have a matcher");
        if let Some(reasons) = matcher.check(record, at, tz, region) {
            matched.push(Matched { route, reasons });
            if !route.continue_matching {
                return matched;
            }
        }
    }
    if matched.is_empty()
        && let Some(route) = routes.iter().find(|r| r.is_default())
    {
        matched.push(Matched {
            route,
            reasons: vec!["no other route matched: this is the default route".to_owned()],
        });
    }
    matched
}

/// `hh:mm` of a time, for messages.
pub fn clock_time(at: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    let local = at.with_timezone(&tz);
    format!("{:02}:{:02}", local.hour(), local.minute())
}

/// Where a route's alerts go: Telegram chats and email addresses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    #[serde(default)]
    pub telegram: OneOrMany<TelegramTarget>,
    #[serde(default)]
    pub email: OneOrMany<EmailAddress>,
}

/// A Telegram chat (groups are `-100...`), optionally a forum topic in it, optionally silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TelegramTarget {
    pub chat_id: i64,
    pub message_thread_id: Option<i32>,
    pub disable_notification: bool,
}

impl<'de> Deserialize<'de> for TelegramTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            chat_id: ChatId,
            message_thread_id: Option<i32>,
            #[serde(default)]
            disable_notification: bool,
        }
        struct ChatId(i64);
        impl<'de> Deserialize<'de> for ChatId {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = ChatId;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a Telegram chat id such as -1001234567890")
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ChatId, E> {
                        Ok(ChatId(v))
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ChatId, E> {
                        i64::try_from(v)
                            .map(ChatId)
                            .map_err(|_| E::custom("chat id too large"))
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<ChatId, E> {
                        v.trim().parse().map(ChatId).map_err(|_| {
                            E::custom(format!(
                                "`{v}` is not a Telegram chat id: chat ids are numbers such as \
                                 -1001234567890 (send /chatid to the bot in the chat to get it)"
                            ))
                        })
                    }
                }
                d.deserialize_any(V)
            }
        }
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TelegramTarget;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat id, or { chat_id = ..., message_thread_id = ..., disable_notification = ... }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TelegramTarget, E> {
                Ok(TelegramTarget::chat(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TelegramTarget, E> {
                ChatId::deserialize(de::value::U64Deserializer::<E>::new(v))
                    .map(|c| TelegramTarget::chat(c.0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TelegramTarget, E> {
                ChatId::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(|c| TelegramTarget::chat(c.0))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TelegramTarget, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TelegramTarget {
                    chat_id: t.chat_id.0,
                    message_thread_id: t.message_thread_id,
                    disable_notification: t.disable_notification,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl TelegramTarget {
    pub fn chat(chat_id: i64) -> Self {
        TelegramTarget {
            chat_id,
            message_thread_id: None,
            disable_notification: false,
        }
    }
}

/// An email address (`Name <user@example.com>` or `user@example.com`), checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(pub lettre::message::Mailbox);

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(EmailAddress)
            .map_err(|e| de::Error::custom(format!("`{s}` is not an email address: {e}")))
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[derive(Deserialize)]
    struct Routes {
        routes: Vec<Route>,
    }

    fn routes(toml: &str) -> Vec<Route> {
        toml_edit::de::from_str::<Routes>(toml).unwrap().routes
    }

    fn record(group: &str, called: &str, caller: &str) -> CallRecord {
        let phone = |n: &str| crate::normalize::phone::normalize(n, Region::default());
        CallRecord {
            caller: phone(caller),
            called: phone(called),
            agent: Some("302_alice".into()),
            group: Some(group.into()),
            ..crate::domain::test_record()
        }
    }

    use crate::normalize::Region;

    /// Monday 2026-11-23 at `hh:mm` in Asia/Kolkata.
    fn monday(hh: u32, mm: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Kolkata
            .with_ymd_and_hms(2026, 11, 23, hh, mm, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn names(matched: &[Matched<'_>]) -> Vec<String> {
        matched.iter().map(|m| m.route.name().to_owned()).collect()
    }

    const TREE: &str = r#"
        [[routes]]
        name = "night"
        match = { not_when = "mon-fri 09:00-18:00" }
        receiver = "night-desk"
        continue = true

        [[routes]]
        name = "sales"
        match = { group = ["Sales*", "~^presales_[0-9]+$"] }
        receiver = "sales"

        [[routes]]
        name = "support-line"
        match = { called = "+91 80 4444 0000" }
        receiver = "support"

        [[routes]]
        name = "default"
        receiver = "front"
    "#;

    fn matched(r: &CallRecord, at: DateTime<Utc>) -> Vec<String> {
        let routes = routes(TREE);
        names(&matching(
            &routes,
            r,
            at,
            chrono_tz::Asia::Kolkata,
            Region::default(),
        ))
    }

    #[test]
    fn first_match_wins_continue_goes_on_default_catches_the_rest() {
        let day = monday(11, 0);
        let night = monday(20, 0);
        assert_eq!(matched(&record("Sales_22", "", ""), day), ["sales"]);
        assert_eq!(
            matched(&record("sales_22", "", ""), day),
            ["sales"],
            "globs ignore case"
        );
        assert_eq!(matched(&record("presales_7", "", ""), day), ["sales"]);
        assert_eq!(matched(&record("presales_x", "", ""), day), ["default"]);
        assert_eq!(
            matched(&record("Support", "918044440000", ""), day),
            ["support-line"],
            "numbers compare in E.164"
        );
        assert_eq!(
            matched(&record("Sales_22", "", ""), night),
            ["night", "sales"]
        );
        assert_eq!(matched(&record("Other", "", ""), night), ["night"]);
        assert_eq!(matched(&record("Other", "", ""), day), ["default"]);
    }

    #[test]
    fn other_matchers() {
        let r = record("Support", "918044440000", "919810000001");
        let check = |m: &str| -> bool {
            let routes = routes(&format!(
                "[[routes]]\nname = \"x\"\nmatch = {m}\nreceiver = \"r\"\n"
            ));
            !matching(
                &routes,
                &r,
                monday(11, 0),
                chrono_tz::Asia::Kolkata,
                Region::default(),
            )
            .is_empty()
        };
        assert!(check(r#"{ caller_prefix = "+9198" }"#));
        assert!(!check(r#"{ caller_prefix = ["+44"] }"#));
        assert!(check(r#"{ agent = "302_*" }"#));
        assert!(check(
            r#"{ provider = "telecmi", outcome = ["missed", "canceled"] }"#
        ));
        assert!(!check(r#"{ provider = "callr" }"#));
        assert!(!check(r#"{ direction = "outbound" }"#));
        assert!(check(r#"{ when = "mon 11:00-11:01" }"#));
        assert!(
            !check(r#"{ group = "Support", when = "sat,sun" }"#),
            "all matchers must hold"
        );
        let unrouted =
            routes("[[routes]]\nname = \"x\"\nmatch = { group = \"Sales\" }\nreceiver = \"r\"\n");
        assert!(
            matching(
                &unrouted,
                &r,
                monday(11, 0),
                chrono_tz::Asia::Kolkata,
                Region::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn time_windows() {
        let tz = chrono_tz::Asia::Kolkata;
        let w = TimeWindow::parse("mon-fri 09:00-18:00").unwrap();
        assert!(w.contains(monday(9, 0), tz));
        assert!(w.contains(monday(17, 59), tz));
        assert!(!w.contains(monday(18, 0), tz));
        assert!(!w.contains(monday(8, 59), tz));
        let overnight = TimeWindow::parse("fri 22:00-06:00").unwrap();
        let saturday_3am = monday(3, 0) + chrono::Duration::days(5);
        assert!(
            overnight.contains(saturday_3am, tz),
            "the morning part belongs to friday's window"
        );
        assert!(!overnight.contains(monday(3, 0), tz));
        let weekend = TimeWindow::parse("sat,sun").unwrap();
        assert!(weekend.contains(monday(12, 0) + chrono::Duration::days(6), tz));
        assert!(!weekend.contains(monday(12, 0), tz));
        let wrap = TimeWindow::parse("fri-mon").unwrap();
        assert!(wrap.contains(monday(12, 0), tz));
        assert!(!wrap.contains(monday(12, 0) + chrono::Duration::days(1), tz));
        let late = TimeWindow::parse("18:00-24:00").unwrap();
        assert!(late.contains(monday(23, 59), tz));
        for bad in [
            "",
            "funday",
            "9-17",
            "09:00-09:00",
            "mon 25:00-26:00",
            "mon tue",
        ] {
            assert!(TimeWindow::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patterns() {
        assert!(Pattern::parse("Sales*").unwrap().matches("SALES_2222223"));
        assert!(!Pattern::parse("Sales").unwrap().matches("Sales_1"));
        assert!(Pattern::parse("a.b?").unwrap().matches("a.bc"));
        assert!(
            !Pattern::parse("a.b").unwrap().matches("axb"),
            "dots are literal in globs"
        );
        assert!(Pattern::parse("~^S").unwrap().matches("Sx"));
        assert!(
            !Pattern::parse("~^S").unwrap().matches("sx"),
            "regexes keep their case"
        );
        assert!(Pattern::parse("~(").is_err());
    }

    #[test]
    fn telegram_targets() {
        #[derive(Deserialize)]
        struct R {
            receivers: std::collections::BTreeMap<String, Receiver>,
        }
        let r: R = toml_edit::de::from_str(
            r#"
            [receivers.a]
            telegram = ["-1001234567890", 42, { chat_id = "-100777", message_thread_id = 9, disable_notification = true }]
            email = "x@example.com"
            "#,
        )
        .unwrap();
        let a = &r.receivers["a"];
        assert_eq!(a.telegram.0[0], TelegramTarget::chat(-1001234567890));
        assert_eq!(a.telegram.0[1], TelegramTarget::chat(42));
        assert_eq!(
            a.telegram.0[2],
            TelegramTarget {
                chat_id: -100777,
                message_thread_id: Some(9),
                disable_notification: true
            }
        );
        assert_eq!(a.email.0.len(), 1);
        let bad = toml_edit::de::from_str::<R>("[receivers.a]\ntelegram = [\"@mygroup\"]\n");
        assert!(bad.err().unwrap().to_string().contains("/chatid"));
        let bad = toml_edit::de::from_str::<R>("[receivers.a]\nemail = [\"not an address\"]\n");
        assert!(bad.is_err());
    }
}
