//! Telegram's sending limits, kept before Telegram has to enforce them: one message per second per
//! chat, twenty per minute per group, thirty per second overall, and a chat's 429 `retry_after`.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};

const PER_CHAT_GAP: Duration = Duration::seconds(1);
const GROUP_PER_MINUTE: usize = 20;
const GLOBAL_PER_SECOND: usize = 30;

#[derive(Debug, Default)]
struct Chat {
    last: Option<DateTime<Utc>>,
    minute: VecDeque<DateTime<Utc>>,
    blocked_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct TelegramLimits {
    chats: HashMap<i64, Chat>,
    global: VecDeque<DateTime<Utc>>,
}

impl TelegramLimits {
    /// Takes a sending slot for `chat` at `now`, or says when one will be free.
    pub fn try_acquire(&mut self, chat_id: i64, now: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        while self
            .global
            .front()
            .is_some_and(|t| *t <= now - Duration::seconds(1))
        {
            self.global.pop_front();
        }
        let chat = self.chats.entry(chat_id).or_default();
        while chat
            .minute
            .front()
            .is_some_and(|t| *t <= now - Duration::minutes(1))
        {
            chat.minute.pop_front();
        }
        let mut ready = now;
        if let Some(until) = chat.blocked_until {
            ready = ready.max(until);
        }
        if let Some(last) = chat.last {
            ready = ready.max(last + PER_CHAT_GAP);
        }
        // Negative ids are groups and channels, which have the per-minute limit too.
        if chat_id < 0 && chat.minute.len() >= GROUP_PER_MINUTE {
            ready =
                ready.max(chat.minute[chat.minute.len() - GROUP_PER_MINUTE] + Duration::minutes(1));
        }
        if self.global.len() >= GLOBAL_PER_SECOND {
            ready = ready
                .max(self.global[self.global.len() - GLOBAL_PER_SECOND] + Duration::seconds(1));
        }
        if ready > now {
            return Err(ready);
        }
        chat.last = Some(now);
        chat.minute.push_back(now);
        self.global.push_back(now);
        Ok(())
    }

    /// Telegram said to wait: nothing goes to `chat` before `until`.
    pub fn block(&mut self, chat_id: i64, until: DateTime<Utc>) {
        let chat = self.chats.entry(chat_id).or_default();
        chat.blocked_until = Some(chat.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// Forgets chats idle for over a minute, so memory follows the active chats only.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.chats.retain(|_, c| {
            c.last.is_some_and(|t| t > now - Duration::minutes(1))
                || c.blocked_until.is_some_and(|t| t > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn one_per_second_per_chat() {
        let mut l = TelegramLimits::default();
        assert_eq!(l.try_acquire(5, t(0)), Ok(()));
        assert_eq!(l.try_acquire(5, t(500)), Err(t(1000)));
        assert_eq!(
            l.try_acquire(6, t(500)),
            Ok(()),
            "other chats are not held up"
        );
        assert_eq!(l.try_acquire(5, t(1000)), Ok(()));
    }

    #[test]
    fn twenty_per_minute_per_group() {
        let mut l = TelegramLimits::default();
        for i in 0..20 {
            assert_eq!(l.try_acquire(-100, t(i * 1000)), Ok(()), "{i}");
        }
        assert_eq!(l.try_acquire(-100, t(20_000)), Err(t(60_000)));
        assert_eq!(l.try_acquire(-100, t(60_000)), Ok(()));
        // A private chat has no per-minute limit.
        for i in 0..25 {
            assert_eq!(l.try_acquire(7, t(100_000 + i * 1000)), Ok(()));
        }
    }

    #[test]
    fn thirty_per_second_overall() {
        let mut l = TelegramLimits::default();
        for chat in 0..30 {
            assert_eq!(l.try_acquire(chat, t(0)), Ok(()));
        }
        assert_eq!(l.try_acquire(99, t(10)), Err(t(1000)));
    }

    #[test]
    fn retry_after_blocks_the_chat() {
        let mut l = TelegramLimits::default();
        l.block(5, t(7000));
        assert_eq!(l.try_acquire(5, t(0)), Err(t(7000)));
        assert_eq!(l.try_acquire(5, t(7000)), Ok(()));
        l.prune(t(200_000));
        assert!(l.chats.is_empty());
    }
}
