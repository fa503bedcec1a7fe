//! Telegram's sending limits, kept before Telegram has to enforce them: one message per second per
//! chat, twenty per minute per group, thirty per second overall, and a chat's 429 `retry_after`.
//! The sends they count are stored, so every instance of a cluster keeps the same limits.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

/// The limits to keep, `[telegram.limits]` in the config; 0 turns one off. Telegram's own are
/// the default. A bot allowed paid broadcasts may send up to 1,000 messages a second overall, and
/// a Bot API-compatible server of another messenger may have other limits or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Milliseconds from one message to the next in the same chat.
    pub chat_interval_ms: u32,
    /// Messages a minute to one group or channel (chat ids below 0).
    pub group_per_minute: u32,
    /// Messages a second to all chats together.
    pub per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            chat_interval_ms: 1_000,
            group_per_minute: 20,
            per_second: 30,
        }
    }
}

impl Limits {
    /// Whether every limit is turned off, so no send needs counting.
    pub fn is_off(&self) -> bool {
        self.chat_interval_ms == 0 && self.group_per_minute == 0 && self.per_second == 0
    }

    /// How far back (milliseconds) the limits look at a chat's sends.
    pub fn lookback_ms(&self) -> i64 {
        if self.group_per_minute > 0 {
            60_000
        } else {
            i64::from(self.chat_interval_ms)
        }
    }
}

/// What has been sent lately, as the limits need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recent {
    /// Sends to this chat in the last minute, oldest first.
    pub chat: Vec<DateTime<Utc>>,
    /// Sends to any chat in the last second, oldest first.
    pub all: Vec<DateTime<Utc>>,
    /// Telegram asked for no sends to this chat before then (429 `retry_after`).
    pub blocked_until: Option<DateTime<Utc>>,
}

/// The first moment a message may go to `chat_id`; `now` or earlier means at once.
pub fn ready_at(
    chat_id: i64,
    recent: &Recent,
    now: DateTime<Utc>,
    limits: &Limits,
) -> DateTime<Utc> {
    let minute: Vec<&DateTime<Utc>> = recent
        .chat
        .iter()
        .filter(|t| **t > now - Duration::minutes(1))
        .collect();
    let second: Vec<&DateTime<Utc>> = recent
        .all
        .iter()
        .filter(|t| **t > now - Duration::seconds(1))
        .collect();
    let mut ready = now;
    if let Some(until) = recent.blocked_until {
        ready = ready.max(until);
    }
    if let Some(last) = minute.last() {
        ready = ready.max(**last + Duration::milliseconds(limits.chat_interval_ms.into()));
    }
    // Negative ids are groups and channels, which have the per-minute limit too.
    let per_minute = limits.group_per_minute as usize;
    if chat_id < 0 && per_minute > 0 && minute.len() >= per_minute {
        ready = ready.max(*minute[minute.len() - per_minute] + Duration::minutes(1));
    }
    let per_second = limits.per_second as usize;
    if per_second > 0 && second.len() >= per_second {
        ready = ready.max(*second[second.len() - per_second] + Duration::seconds(1));
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_700_000_000_000 + ms).unwrap()
    }

    /// Sends `attempts` in order, to `chat`, keeping the sends as the store would.
    fn run(chat: i64, attempts: &[i64], recent: &mut Recent) -> Vec<Result<(), DateTime<Utc>>> {
        attempts
            .iter()
            .map(|&ms| {
                let now = t(ms);
                let ready = ready_at(chat, recent, now, &Limits::default());
                if ready > now {
                    return Err(ready);
                }
                recent.chat.push(now);
                recent.all.push(now);
                Ok(())
            })
            .collect()
    }

    #[test]
    fn one_per_second_per_chat() {
        let mut recent = Recent::default();
        assert_eq!(
            run(5, &[0, 500, 1000], &mut recent),
            [Ok(()), Err(t(1000)), Ok(())]
        );
        let other = Recent {
            all: recent.all.clone(),
            ..Recent::default()
        };
        assert_eq!(
            ready_at(6, &other, t(1200), &Limits::default()),
            t(1200),
            "other chats are not held up"
        );
    }

    #[test]
    fn twenty_per_minute_per_group() {
        let mut recent = Recent::default();
        let first: Vec<i64> = (0..20).map(|i| i * 1000).collect();
        assert!(run(-100, &first, &mut recent).iter().all(Result::is_ok));
        assert_eq!(
            ready_at(-100, &recent, t(20_000), &Limits::default()),
            t(60_000)
        );
        assert_eq!(
            ready_at(-100, &recent, t(60_000), &Limits::default()),
            t(60_000)
        );
        // A private chat has no per-minute limit.
        let mut private = Recent::default();
        let sends: Vec<i64> = (0..25).map(|i| i * 1000).collect();
        assert!(run(7, &sends, &mut private).iter().all(Result::is_ok));
    }

    #[test]
    fn thirty_per_second_overall() {
        let recent = Recent {
            all: vec![t(0); 30],
            ..Recent::default()
        };
        assert_eq!(ready_at(99, &recent, t(10), &Limits::default()), t(1000));
        assert_eq!(ready_at(99, &recent, t(1000), &Limits::default()), t(1000));
    }

    #[test]
    fn retry_after_blocks_the_chat() {
        let recent = Recent {
            blocked_until: Some(t(7000)),
            ..Recent::default()
        };
        assert_eq!(ready_at(5, &recent, t(0), &Limits::default()), t(7000));
        assert_eq!(ready_at(5, &recent, t(7000), &Limits::default()), t(7000));
    }

    #[test]
    fn configured_limits_replace_telegrams() {
        let off = Limits {
            chat_interval_ms: 0,
            group_per_minute: 0,
            per_second: 0,
        };
        let busy = Recent {
            chat: vec![t(0); 100],
            all: vec![t(0); 5_000],
            blocked_until: None,
        };
        assert_eq!(ready_at(-100, &busy, t(0), &off), t(0), "no limit holds it");
        let blocked = Recent {
            blocked_until: Some(t(3000)),
            ..busy.clone()
        };
        assert_eq!(
            ready_at(-100, &blocked, t(0), &off),
            t(3000),
            "a 429's retry_after still holds, whatever the limits"
        );
        let paid = Limits {
            per_second: 1_000,
            ..Limits::default()
        };
        let recent = Recent {
            all: vec![t(0); 999],
            ..Recent::default()
        };
        assert_eq!(ready_at(7, &recent, t(10), &paid), t(10));
        let recent = Recent {
            all: vec![t(0); 1_000],
            ..Recent::default()
        };
        assert_eq!(ready_at(7, &recent, t(10), &paid), t(1000));
    }
}
