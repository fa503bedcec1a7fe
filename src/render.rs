//! Renders alerts from the user-editable minijinja templates in `templates/`, escaped for each
//! channel (Telegram HTML, email HTML, plain text), and splits Telegram messages between calls.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{CallRecord, Outcome};
use crate::normalize::phone;
use crate::route::TemplateNames;

/// Telegram's limit on a message's text, counted after entity parsing, in UTF-16 code units.
pub const TELEGRAM_MAX_CHARS: usize = 4096;

pub const DEFAULT_TELEGRAM: &str = "telegram.html";
pub const DEFAULT_EMAIL_SUBJECT: &str = "email_subject.txt";
pub const DEFAULT_EMAIL_TEXT: &str = "email.txt";
pub const DEFAULT_EMAIL_HTML: &str = "email.html";
pub const DIGEST_SUBJECT: &str = "digest_subject.txt";
pub const DIGEST_TEXT: &str = "digest.txt";
pub const DIGEST_HTML: &str = "digest.html";

/// One call as the templates see it; fixed when the alert is decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallView {
    /// `missed_call`, or `agent_ring` for a per-agent "you missed a ring" alert.
    pub kind: String,
    pub provider: String,
    pub call_id: String,
    pub outcome: String,
    /// "missed", "canceled by the caller", ...: the outcome in words.
    pub outcome_text: String,
    pub direction: String,
    pub caller: Option<String>,
    pub caller_e164: Option<String>,
    /// `+91 98100 00001`: international format, which Telegram makes tappable; the raw number otherwise.
    pub caller_display: Option<String>,
    pub caller_name: Option<String>,
    /// `tel:+919810000001`, for email links (Telegram refuses `tel:` links).
    pub caller_tel: Option<String>,
    pub called: Option<String>,
    pub called_display: Option<String>,
    pub agent: Option<String>,
    /// Agents whose phones rang without being answered.
    pub agents_rang: Vec<String>,
    pub group: Option<String>,
    pub route: String,
    pub receiver: String,
    /// When the call happened, UTC (RFC 3339).
    pub at: String,
    /// `14:32` in the route's time zone.
    pub time_local: String,
    /// `Mon 23 Nov` in the route's time zone.
    pub date_local: String,
    pub timezone: String,
    pub ring_seconds: Option<i64>,
    /// `45 s`, `2 min 5 s`: how long the caller waited.
    pub wait_text: Option<String>,
    pub talk_seconds: Option<i64>,
    pub hangup: Option<String>,
    pub recording: Option<String>,
    /// Missed calls from this number within `missed_window`, this one included.
    #[serde(alias = "missed_24h")]
    pub missed_recent: i64,
    /// `2 h`: the repeat-caller window (`[alerts] repeat_window_minutes`).
    #[serde(default = "day")]
    pub missed_window: String,
    /// `3rd`, when `missed_recent` is 2 or more.
    pub missed_ordinal: Option<String>,
    /// Sent to a route's escalation receiver: the number reached the route's repeat threshold.
    #[serde(default)]
    pub escalated: bool,
    /// `open`, `claimed`, `called_back` or `reached`: where the alert stands when shown.
    #[serde(default = "open")]
    pub status: String,
    /// Who pressed "I'll call back", and when (`14:32`, the route's time zone).
    #[serde(default)]
    pub claimed_by: Option<String>,
    #[serde(default)]
    pub claimed_at: Option<String>,
    /// Who pressed "Called back ✓", and when.
    #[serde(default)]
    pub handled_by: Option<String>,
    #[serde(default)]
    pub handled_at: Option<String>,
    /// The agent of a later answered call with this number, and when it happened.
    #[serde(default)]
    pub reached_by: Option<String>,
    #[serde(default)]
    pub reached_at: Option<String>,
}

fn day() -> String {
    "24 h".into()
}

fn open() -> String {
    "open".into()
}

pub struct ViewInput<'a> {
    pub kind: &'a str,
    pub record: &'a CallRecord,
    pub at: DateTime<Utc>,
    pub agents_rang: Vec<String>,
    pub route: &'a str,
    pub receiver: &'a str,
    pub timezone: chrono_tz::Tz,
    pub missed_recent: i64,
    pub missed_window: chrono::Duration,
    pub escalated: bool,
}

impl CallView {
    pub fn new(input: ViewInput<'_>) -> CallView {
        let r = input.record;
        let display = |p: &crate::domain::PhoneNumber| {
            p.e164
                .as_deref()
                .and_then(phone::international)
                .unwrap_or_else(|| p.raw.clone())
        };
        let local = input.at.with_timezone(&input.timezone);
        CallView {
            kind: input.kind.to_owned(),
            provider: r.provider.to_string(),
            call_id: r.call_id.clone(),
            outcome: r.outcome.to_string(),
            outcome_text: outcome_text(r.outcome).to_owned(),
            direction: r.direction.as_str().to_owned(),
            caller: r.caller.as_ref().map(|p| p.raw.clone()),
            caller_e164: r.caller.as_ref().and_then(|p| p.e164.clone()),
            caller_display: r.caller.as_ref().map(display),
            caller_name: r.caller_name.clone(),
            caller_tel: r.caller.as_ref().map(|p| {
                let number = p.e164.clone().unwrap_or_else(|| {
                    p.raw
                        .chars()
                        .filter(|c| c.is_ascii_digit() || *c == '+')
                        .collect()
                });
                format!("tel:{number}")
            }),
            called: r.called.as_ref().map(|p| p.raw.clone()),
            called_display: r.called.as_ref().map(display),
            agent: r.agent.clone(),
            agents_rang: input.agents_rang,
            group: r.group.clone(),
            route: input.route.to_owned(),
            receiver: input.receiver.to_owned(),
            at: input.at.to_rfc3339(),
            time_local: local.format("%H:%M").to_string(),
            date_local: local.format("%a %-d %b").to_string(),
            timezone: input.timezone.name().to_owned(),
            ring_seconds: r.ring_seconds,
            wait_text: r.ring_seconds.map(duration_text),
            talk_seconds: r.talk_seconds,
            hangup: r.hangup.clone(),
            recording: r.recording.clone(),
            missed_recent: input.missed_recent,
            missed_window: window_text(input.missed_window),
            missed_ordinal: (input.missed_recent >= 2).then(|| ordinal(input.missed_recent)),
            escalated: input.escalated,
            status: open(),
            claimed_by: None,
            claimed_at: None,
            handled_by: None,
            handled_at: None,
            reached_by: None,
            reached_at: None,
        }
    }

    /// The view as it stands now: who claimed or called back, and whether the caller was reached.
    pub fn with_handling(mut self, handling: &crate::store::Handling) -> CallView {
        let tz: chrono_tz::Tz = self.timezone.parse().unwrap_or(chrono_tz::UTC);
        let local =
            |t: &Option<DateTime<Utc>>| t.map(|t| t.with_timezone(&tz).format("%H:%M").to_string());
        self.claimed_by = handling.claimed_by.clone();
        self.claimed_at = local(&handling.claimed_at);
        self.handled_by = handling.handled_by.clone();
        self.handled_at = local(&handling.handled_at);
        self.reached_by = handling.reached_by.clone();
        self.reached_at = local(&handling.reached_at);
        self.status = if handling.reached_at.is_some() {
            "reached"
        } else if handling.handled_at.is_some() {
            "called_back"
        } else if handling.claimed_at.is_some() {
            "claimed"
        } else {
            "open"
        }
        .to_owned();
        self
    }
}

/// `2 h`, `90 min`, `1 day`: a window's length in words.
pub fn window_text(window: chrono::Duration) -> String {
    let minutes = window.num_minutes();
    match minutes {
        m if m % 1440 == 0 && m >= 1440 => {
            let days = m / 1440;
            if days == 1 {
                "24 h".into()
            } else {
                format!("{days} days")
            }
        }
        m if m % 60 == 0 && m >= 60 => format!("{} h", m / 60),
        m => format!("{m} min"),
    }
}

fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Answered => "answered",
        Outcome::Missed => "missed",
        Outcome::Canceled => "canceled by the caller",
        Outcome::Abandoned => "abandoned in the queue",
        Outcome::Busy => "line busy",
        Outcome::Failed => "failed",
        Outcome::Unknown => "ended with an unknown status",
        Outcome::NotACallResult => "in progress",
    }
}

pub fn duration_text(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{} min {} s", s / 60, s % 60),
    }
}

pub fn ordinal(n: i64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {name}: {detail}; fix the template in the templates folder")]
    Template { name: String, detail: String },
}

fn template_error(name: &str, e: minijinja::Error) -> RenderError {
    let mut detail = e.to_string();
    if let Some(line) = e.line() {
        detail = format!("line {line}: {detail}");
    }
    RenderError::Template {
        name: name.to_owned(),
        detail,
    }
}

/// One Telegram message of a batch, and which of the batch's calls it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramPart {
    pub text: String,
    /// `false` for the plain-text fallback of a call too long for one message.
    pub html: bool,
    pub calls: std::ops::Range<usize>,
}

/// An email, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The templates of one folder; `.html` templates are HTML-escaped, `.txt` ones are not.
pub struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    pub fn load(dir: &Path) -> Result<Templates, RenderError> {
        let mut env = minijinja::Environment::new();
        env.set_loader(minijinja::path_loader(dir));
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        let templates = Templates { env };
        // Every default template must exist and render, so a broken edit is caught at start.
        let sample = [sample_call()];
        templates.telegram(DEFAULT_TELEGRAM, &sample)?;
        templates.email(&TemplateNames::default(), &sample)?;
        Ok(templates)
    }

    fn render(&self, name: &str, calls: &[CallView]) -> Result<String, RenderError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| template_error(name, e))?;
        template
            .render(minijinja::context! { calls => calls, count => calls.len() })
            .map_err(|e| template_error(name, e))
    }

    /// Checks that the templates a route names exist and render.
    pub fn check_route(&self, names: &TemplateNames) -> Result<(), RenderError> {
        let sample = [sample_call()];
        self.telegram(
            names.telegram.as_deref().unwrap_or(DEFAULT_TELEGRAM),
            &sample,
        )?;
        self.email(names, &sample).map(|_| ())
    }

    /// A digest email from its report.
    pub fn digest(&self, report: &impl Serialize) -> Result<Email, RenderError> {
        let render = |name: &str| -> Result<String, RenderError> {
            let template = self
                .env
                .get_template(name)
                .map_err(|e| template_error(name, e))?;
            template
                .render(minijinja::context! { digest => report })
                .map_err(|e| template_error(name, e))
        };
        Ok(Email {
            subject: render(DIGEST_SUBJECT)?
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            text: render(DIGEST_TEXT)?,
            html: render(DIGEST_HTML)?,
        })
    }

    /// The Telegram message (HTML parse mode) for `calls`.
    pub fn telegram(&self, name: &str, calls: &[CallView]) -> Result<String, RenderError> {
        Ok(self.render(name, calls)?.trim().to_owned())
    }

    /// Telegram messages for `calls`: as few as fit, each under Telegram's limit, split between
    /// calls (never inside one, so never inside a tag). Each part lists the calls it covers.
    pub fn telegram_parts(
        &self,
        name: &str,
        calls: &[CallView],
    ) -> Result<Vec<TelegramPart>, RenderError> {
        let mut parts = Vec::new();
        let mut start = 0;
        while start < calls.len() {
            let mut end = start + 1;
            let mut text = self.telegram(name, &calls[start..end])?;
            let mut html = true;
            if telegram_length(&text) > TELEGRAM_MAX_CHARS {
                // One call alone is too long: send it as plain text, cut, rather than lose it.
                text = truncate_plain(&html_to_text(&text), TELEGRAM_MAX_CHARS);
                html = false;
            } else {
                while end < calls.len() {
                    let longer = self.telegram(name, &calls[start..end + 1])?;
                    if telegram_length(&longer) > TELEGRAM_MAX_CHARS {
                        break;
                    }
                    text = longer;
                    end += 1;
                }
            }
            parts.push(TelegramPart {
                text,
                html,
                calls: start..end,
            });
            start = end;
        }
        Ok(parts)
    }

    pub fn email(&self, names: &TemplateNames, calls: &[CallView]) -> Result<Email, RenderError> {
        let subject = self.render(
            names
                .email_subject
                .as_deref()
                .unwrap_or(DEFAULT_EMAIL_SUBJECT),
            calls,
        )?;
        Ok(Email {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: self.render(
                names.email_text.as_deref().unwrap_or(DEFAULT_EMAIL_TEXT),
                calls,
            )?,
            html: self.render(
                names.email_html.as_deref().unwrap_or(DEFAULT_EMAIL_HTML),
                calls,
            )?,
        })
    }
}

/// The length Telegram counts: the text left after its HTML entities are parsed, in UTF-16 units.
pub fn telegram_length(html: &str) -> usize {
    html_to_text(html).encode_utf16().count()
}

/// Drops tags and decodes entities, as Telegram's HTML parse mode does.
/// Escapes text for Telegram's HTML parse mode (and HTML email bodies).
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => match rest.find('>') {
                Some(end) => rest = &rest[end + 1..],
                None => {
                    out.push_str(rest);
                    break;
                }
            },
            '&' => {
                let entity_end = rest.find(';').filter(|&i| i <= 10);
                let decoded = entity_end.and_then(|end| decode_entity(&rest[1..end]));
                match (entity_end, decoded) {
                    (Some(end), Some(ch)) => {
                        out.push(ch);
                        rest = &rest[end + 1..];
                    }
                    _ => {
                        out.push('&');
                        rest = &rest[1..];
                    }
                }
            }
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        _ => {
            let code =
                if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    name.strip_prefix('#')?.parse().ok()?
                };
            char::from_u32(code)
        }
    }
}

fn truncate_plain(text: &str, max_utf16: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + c.len_utf16() > max_utf16 - 1 {
            out.push('…');
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out
}

/// A call for checking templates at start and in `check-config`.
pub fn sample_call() -> CallView {
    use crate::domain::{Direction, Leg, PhoneNumber, Provider};
    let record = CallRecord {
        provider: Provider::Telecmi,
        call_id: "sample".into(),
        conversation_id: "sample".into(),
        leg: Leg::Call,
        dedup_key: "sample".into(),
        direction: Direction::Inbound,
        outcome: Outcome::Missed,
        provider_status: Some("missed".into()),
        caller: Some(PhoneNumber {
            raw: "919810000001".into(),
            e164: Some("+919810000001".into()),
        }),
        caller_name: Some("A <sample> & caller".into()),
        called: Some(PhoneNumber {
            raw: "914400000000".into(),
            e164: None,
        }),
        agent: None,
        agent_phone: None,
        group: Some("Sales".into()),
        started_at: None,
        answered_at: None,
        ended_at: None,
        ring_seconds: Some(42),
        talk_seconds: None,
        hangup: None,
        recording: None,
        extra: Default::default(),
    };
    CallView::new(ViewInput {
        kind: "missed_call",
        record: &record,
        at: DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time"),
        agents_rang: vec!["alice".into()],
        route: "sample",
        receiver: "sample",
        timezone: chrono_tz::Asia::Kolkata,
        missed_recent: 3,
        missed_window: chrono::Duration::hours(2),
        escalated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Templates {
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    #[test]
    fn words_for_people() {
        assert_eq!(duration_text(42), "42 s");
        assert_eq!(duration_text(120), "2 min");
        assert_eq!(duration_text(125), "2 min 5 s");
        assert_eq!(
            [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 111].map(ordinal),
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "111th"
            ]
        );
    }

    #[test]
    fn telegram_counts_text_after_entities() {
        // 📞 is outside the BMP: two UTF-16 units, as Telegram counts.
        assert_eq!(telegram_length("<b>a&lt;b</b> &amp; &#128222;"), 8);
        assert_eq!(html_to_text("<a href=\"x\">A &amp; B</a>"), "A & B");
        assert_eq!(html_to_text("5 & 6"), "5 & 6");
    }

    #[test]
    fn shipped_telegram_message() {
        let text = shipped()
            .telegram(DEFAULT_TELEGRAM, &[sample_call()])
            .unwrap();
        assert_eq!(
            text,
            "📞 <b>Missed call</b> · Sales\n\
             From: <b>+91 98100 00001</b> (A &lt;sample&gt; &amp; caller)\n\
             To: 914400000000\n\
             When: 03:43 Wed 15 Nov · waited 42 s\n\
             Rang: alice\n\
             3rd missed call from this number in 2 h"
        );
    }

    #[test]
    fn the_message_says_where_the_call_stands() {
        use crate::store::Handling;
        let at = |hm: &str| {
            // 09:30 UTC is 15:00 in Asia/Kolkata, the sample call's time zone.
            Some(
                DateTime::parse_from_rfc3339(&format!("2026-11-23T{hm}:00Z"))
                    .unwrap()
                    .to_utc(),
            )
        };
        let t = shipped();
        let last_line = |h: Handling| {
            let text = t
                .telegram(DEFAULT_TELEGRAM, &[sample_call().with_handling(&h)])
                .unwrap();
            text.lines().last().unwrap().to_owned()
        };
        let claimed = Handling {
            claimed_by: Some("Asha <R>".into()),
            claimed_at: at("09:30"),
            ..Default::default()
        };
        assert_eq!(
            last_line(claimed.clone()),
            "☎️ Asha &lt;R&gt; is calling back (since 15:00)"
        );
        let called_back = Handling {
            handled_by: Some("Ravi".into()),
            handled_at: at("09:45"),
            ..claimed.clone()
        };
        assert_eq!(last_line(called_back), "✅ Called back by Ravi at 15:15");
        let reached = Handling {
            reached_by: Some("302_agent".into()),
            reached_at: at("10:02"),
            ..claimed
        };
        assert_eq!(last_line(reached), "✅ Reached at 15:32 by 302_agent");
        assert_eq!(
            last_line(Handling::default()),
            "3rd missed call from this number in 2 h"
        );
    }

    #[test]
    fn windows_in_words() {
        use chrono::Duration;
        assert_eq!(window_text(Duration::hours(2)), "2 h");
        assert_eq!(window_text(Duration::minutes(90)), "90 min");
        assert_eq!(window_text(Duration::days(1)), "24 h");
        assert_eq!(window_text(Duration::days(7)), "7 days");
    }

    #[test]
    fn hostile_names_are_escaped_for_each_channel() {
        let mut call = sample_call();
        call.caller_name = Some("<script>&".into());
        call.group = Some("</b><i>".into());
        let t = shipped();
        let tg = t.telegram(DEFAULT_TELEGRAM, &[call.clone()]).unwrap();
        assert!(tg.contains("&lt;script&gt;&amp;"), "{tg}");
        assert!(tg.contains("&lt;&#x2f;b&gt;&lt;i&gt;"), "{tg}");
        let email = t.email(&TemplateNames::default(), &[call]).unwrap();
        assert!(email.html.contains("&lt;script&gt;&amp;"), "{}", email.html);
        assert!(
            email.text.contains("<script>&"),
            "plain text is not escaped: {}",
            email.text
        );
        assert!(!email.subject.contains('\n'));
    }

    #[test]
    fn long_batches_split_between_calls() {
        let t = shipped();
        let mut call = sample_call();
        call.caller_name = Some("N".repeat(300));
        let calls = vec![call; 40];
        let parts = t.telegram_parts(DEFAULT_TELEGRAM, &calls).unwrap();
        assert!(parts.len() > 1);
        let mut covered = 0;
        for part in &parts {
            let text = &part.text;
            assert!(part.html);
            assert!(telegram_length(text) <= TELEGRAM_MAX_CHARS);
            assert_eq!(part.calls.start, covered);
            covered = part.calls.end;
            // Every part is whole HTML: as many opening as closing bold tags.
            assert_eq!(text.matches("<b>").count(), text.matches("</b>").count());
        }
        assert_eq!(covered, 40);
    }

    #[test]
    fn a_call_too_long_alone_is_sent_as_cut_plain_text() {
        let t = shipped();
        let mut call = sample_call();
        call.caller_name = Some("<&>".repeat(3000));
        let parts = t.telegram_parts(DEFAULT_TELEGRAM, &[call]).unwrap();
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].html);
        assert!(parts[0].text.encode_utf16().count() <= TELEGRAM_MAX_CHARS);
        assert!(!parts[0].text.contains("<b>"));
    }

    #[test]
    fn a_missing_template_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Templates::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("telegram.html"), "{err}");
    }
}
