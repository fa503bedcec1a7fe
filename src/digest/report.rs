//! What a digest says about a period: totals against the period before, the callers still
//! waiting (repeat callers first), and callbacks: who was reached afterwards, and how fast.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{CallRecord, Direction, Leg, Outcome, PhoneNumber};
use crate::normalize::phone;
use crate::render::duration_text;
use crate::store::StoredRecord;

/// One call, as its records add up: answered if any call-level record says so.
#[derive(Debug, Clone)]
pub struct CallSummary {
    pub record: CallRecord,
    /// When the call happened, for people and for ordering callbacks.
    pub at: DateTime<Utc>,
    /// When ringback stored it: this decides the period a call belongs to, so a record arriving
    /// late is counted in the next digest rather than lost from one already sent.
    pub received: DateTime<Utc>,
}

/// Folds the call-level records of a span into one summary per call.
pub fn calls(records: &[StoredRecord]) -> Vec<CallSummary> {
    let mut by_call: HashMap<(String, String), &StoredRecord> = HashMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for r in records {
        if r.record.leg != Leg::Call || r.record.outcome == Outcome::NotACallResult {
            continue;
        }
        let key = (
            r.record.provider.to_string(),
            r.record.conversation_id.clone(),
        );
        match by_call.get(&key) {
            None => {
                order.push(key.clone());
                by_call.insert(key, r);
            }
            Some(existing) => {
                let better = r.record.outcome == Outcome::Answered
                    || (existing.record.outcome != Outcome::Answered && r.id > existing.id);
                if better {
                    by_call.insert(key, r);
                }
            }
        }
    }
    order
        .into_iter()
        .map(|key| {
            let r = by_call[&key];
            CallSummary {
                at: r.record.occurred_at().unwrap_or(r.received_at),
                received: r.received_at,
                record: r.record.clone(),
            }
        })
        .collect()
}

fn number_key(p: &Option<PhoneNumber>) -> Option<String> {
    p.as_ref()
        .map(|p| p.e164.clone().unwrap_or_else(|| p.raw.clone()))
}

fn display(p: &PhoneNumber) -> String {
    p.e164
        .as_deref()
        .and_then(phone::international)
        .unwrap_or_else(|| p.raw.clone())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutcomeCount {
    pub outcome: String,
    pub count: usize,
    pub previous: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupCount {
    pub group: String,
    pub calls: usize,
    pub missed: usize,
    pub previous_missed: usize,
}

/// A caller who was missed in the period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Caller {
    pub number: String,
    pub tel: String,
    pub name: Option<String>,
    pub line: Option<String>,
    pub group: Option<String>,
    pub attempts: usize,
    /// Local times of each missed attempt, oldest first.
    pub times: Vec<String>,
    /// How long after their last missed call they were reached, if they were.
    pub reached_after: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Callbacks {
    pub missed_calls: usize,
    pub reached: usize,
    pub rate_percent: Option<u32>,
    pub median: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub name: String,
    pub timezone: String,
    pub period_start: String,
    pub period_end: String,
    /// Scheduled periods covered: more than one after ringback was down.
    pub periods: usize,
    pub total_calls: usize,
    pub previous_total_calls: usize,
    pub missed: usize,
    pub previous_missed: usize,
    pub outcomes: Vec<OutcomeCount>,
    pub groups: Vec<GroupCount>,
    /// Missed callers not reached since, repeat callers first; at most `max_callers`.
    pub waiting: Vec<Caller>,
    pub waiting_total: usize,
    pub waiting_more: usize,
    /// Missed callers reached since.
    pub reached: Vec<Caller>,
    pub callbacks: Callbacks,
}

impl Report {
    /// Nothing the digest counts as missed happened in the period.
    pub fn is_empty(&self) -> bool {
        self.missed == 0
    }
}

pub struct Inputs<'a> {
    pub name: &'a str,
    pub timezone: chrono_tz::Tz,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub periods: usize,
    /// Calls from the period before `start` (as long as this one) up to `end`.
    pub calls: &'a [CallSummary],
    pub missed_outcomes: &'a [Outcome],
    pub max_callers: usize,
    /// Numbers someone marked "Called back ✓" in Telegram, and when: a callback made from a
    /// phone no provider sees counts like one that a provider recorded.
    pub marked_called_back: &'a [(String, DateTime<Utc>)],
}

/// Builds the report for `[start, end)`.
pub fn build(input: Inputs<'_>) -> Report {
    let tz = input.timezone;
    let previous_start = input.start - (input.end - input.start);
    let in_period = |c: &&CallSummary| c.received >= input.start && c.received < input.end;
    let in_previous = |c: &&CallSummary| c.received >= previous_start && c.received < input.start;
    let is_missed = |c: &CallSummary| {
        c.record.direction != Direction::Outbound
            && input.missed_outcomes.contains(&c.record.outcome)
    };
    let current: Vec<&CallSummary> = input.calls.iter().filter(in_period).collect();
    let previous: Vec<&CallSummary> = input.calls.iter().filter(in_previous).collect();

    let count_by = |calls: &[&CallSummary]| {
        let mut m: BTreeMap<Outcome, usize> = BTreeMap::new();
        for c in calls {
            *m.entry(c.record.outcome).or_default() += 1;
        }
        m
    };
    let (now_counts, before_counts) = (count_by(&current), count_by(&previous));
    let outcomes = Outcome::ALL
        .into_iter()
        .filter(|o| now_counts.contains_key(o) || before_counts.contains_key(o))
        .map(|o| OutcomeCount {
            outcome: o.to_string(),
            count: now_counts.get(&o).copied().unwrap_or(0),
            previous: before_counts.get(&o).copied().unwrap_or(0),
        })
        .collect();

    let mut groups: BTreeMap<String, GroupCount> = BTreeMap::new();
    for (calls, is_current) in [(&current, true), (&previous, false)] {
        for c in calls.iter() {
            let name = c
                .record
                .group
                .clone()
                .unwrap_or_else(|| "(no group)".into());
            let g = groups.entry(name.clone()).or_insert(GroupCount {
                group: name,
                calls: 0,
                missed: 0,
                previous_missed: 0,
            });
            match (is_current, is_missed(c)) {
                (true, missed) => {
                    g.calls += 1;
                    g.missed += usize::from(missed);
                }
                (false, true) => g.previous_missed += 1,
                (false, false) => {}
            }
        }
    }
    let groups: Vec<GroupCount> = groups.into_values().filter(|g| g.calls > 0).collect();

    // Contacts that reach a caller: an answered inbound call from them, or an answered outbound
    // call to them (any provider), after they were missed.
    let mut answered_at: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for c in input
        .calls
        .iter()
        .filter(|c| c.record.outcome == Outcome::Answered && c.received < input.end)
    {
        let numbers = match c.record.direction {
            Direction::Outbound => vec![number_key(&c.record.called), number_key(&c.record.caller)],
            _ => vec![number_key(&c.record.caller)],
        };
        for n in numbers.into_iter().flatten() {
            answered_at.entry(n).or_default().push(c.at);
        }
    }
    for (number, at) in input.marked_called_back {
        if *at < input.end {
            answered_at.entry(number.clone()).or_default().push(*at);
        }
    }
    let reached_after = |number: &str, at: DateTime<Utc>| {
        answered_at
            .get(number)
            .and_then(|times| times.iter().filter(|t| **t > at).min().copied())
            .map(|t| t - at)
    };

    let mut callers: Vec<(Caller, DateTime<Utc>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut missed_calls = 0;
    let mut delays: Vec<i64> = Vec::new();
    for c in current.iter().filter(|c| is_missed(c)) {
        let Some(number) = number_key(&c.record.caller) else {
            continue;
        };
        missed_calls += 1;
        if let Some(delay) = reached_after(&number, c.at) {
            delays.push(delay.num_seconds());
        }
        let local =
            c.at.with_timezone(&tz)
                .format("%a %-d %b %H:%M")
                .to_string();
        match index.get(&number) {
            Some(&i) => {
                let (caller, last) = &mut callers[i];
                caller.attempts += 1;
                caller.times.push(local);
                *last = (*last).max(c.at);
                if caller.name.is_none() {
                    caller.name = c.record.caller_name.clone();
                }
            }
            None => {
                let phone = c.record.caller.as_ref().expect("a caller with a number");
                index.insert(number.clone(), callers.len());
                callers.push((
                    Caller {
                        tel: format!("tel:{number}"),
                        number: display(phone),
                        name: c.record.caller_name.clone(),
                        line: c.record.called.as_ref().map(display),
                        group: c.record.group.clone(),
                        attempts: 1,
                        times: vec![local],
                        reached_after: None,
                    },
                    c.at,
                ));
            }
        }
    }
    let mut waiting = Vec::new();
    let mut reached = Vec::new();
    for (mut caller, last) in callers {
        let key = caller.tel.trim_start_matches("tel:").to_owned();
        match reached_after(&key, last) {
            Some(delay) => {
                caller.reached_after = Some(duration_text(delay.num_seconds()));
                reached.push((caller, last));
            }
            None => waiting.push((caller, last)),
        }
    }
    // Repeat callers first, then whoever waited longest.
    waiting
        .sort_by(|(a, a_last), (b, b_last)| b.attempts.cmp(&a.attempts).then(a_last.cmp(b_last)));
    let waiting_total = waiting.len();
    let waiting: Vec<Caller> = waiting
        .into_iter()
        .take(input.max_callers)
        .map(|(c, _)| c)
        .collect();
    delays.sort_unstable();
    let median = match delays.len() {
        0 => None,
        n if n % 2 == 1 => Some(delays[n / 2]),
        n => Some((delays[n / 2 - 1] + delays[n / 2]) / 2),
    };
    let fmt = |t: DateTime<Utc>| {
        t.with_timezone(&tz)
            .format("%a %-d %b %Y %H:%M")
            .to_string()
    };
    Report {
        name: input.name.to_owned(),
        timezone: tz.name().to_owned(),
        period_start: fmt(input.start),
        period_end: fmt(input.end),
        periods: input.periods,
        total_calls: current.len(),
        previous_total_calls: previous.len(),
        missed: current.iter().filter(|c| is_missed(c)).count(),
        previous_missed: previous.iter().filter(|c| is_missed(c)).count(),
        outcomes,
        groups,
        waiting_more: waiting_total - waiting.len(),
        waiting_total,
        waiting,
        reached: reached.into_iter().map(|(c, _)| c).collect(),
        callbacks: Callbacks {
            missed_calls,
            reached: delays.len(),
            rate_percent: (missed_calls > 0).then(|| (delays.len() * 100 / missed_calls) as u32),
            median: median.map(duration_text),
        },
    }
}

/// A report with a little of everything, for checking digest templates at start.
pub fn sample() -> Report {
    Report {
        name: "sample".into(),
        timezone: "Asia/Kolkata".into(),
        period_start: "Mon 23 Nov 2026 09:00".into(),
        period_end: "Tue 24 Nov 2026 09:00".into(),
        periods: 2,
        total_calls: 3,
        previous_total_calls: 1,
        missed: 2,
        previous_missed: 0,
        outcomes: vec![OutcomeCount {
            outcome: "missed".into(),
            count: 2,
            previous: 0,
        }],
        groups: vec![GroupCount {
            group: "Sales <EU>".into(),
            calls: 3,
            missed: 2,
            previous_missed: 0,
        }],
        waiting: vec![Caller {
            number: "+91 98100 00001".into(),
            tel: "tel:+919810000001".into(),
            name: Some("A & B".into()),
            line: None,
            group: Some("Sales".into()),
            attempts: 2,
            times: vec!["Mon 23 Nov 10:00".into(), "Mon 23 Nov 11:00".into()],
            reached_after: None,
        }],
        waiting_total: 1,
        waiting_more: 0,
        reached: Vec::new(),
        callbacks: Callbacks {
            missed_calls: 2,
            reached: 0,
            rate_percent: Some(0),
            median: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 3, 30, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn call(caller: &str, outcome: Outcome, direction: Direction, minutes: i64) -> CallSummary {
        let phone = PhoneNumber {
            raw: caller.into(),
            e164: Some(caller.into()),
        };
        let (caller, called) = match direction {
            Direction::Outbound => (None, Some(phone)),
            _ => (Some(phone), None),
        };
        CallSummary {
            record: CallRecord {
                outcome,
                direction,
                caller,
                called,
                ..crate::domain::test_record()
            },
            at: t(minutes),
            received: t(minutes),
        }
    }

    fn report(calls: &[CallSummary], max_callers: usize) -> Report {
        build(Inputs {
            max_callers,
            ..inputs(calls)
        })
    }

    #[test]
    fn a_callback_marked_in_telegram_counts_as_reached() {
        let calls = vec![call(
            "+919810000001",
            Outcome::Missed,
            Direction::Inbound,
            10,
        )];
        let marked = vec![
            ("+919810000001".to_owned(), t(5)), // before the call: not a callback
            ("+919810000001".to_owned(), t(25)),
        ];
        let r = build(Inputs {
            marked_called_back: &marked,
            ..inputs(&calls)
        });
        assert_eq!(r.callbacks.reached, 1);
        assert_eq!(r.callbacks.median.as_deref(), Some("15 min"));
        assert!(r.waiting.is_empty());
    }

    fn inputs(calls: &[CallSummary]) -> Inputs<'_> {
        Inputs {
            name: "d",
            timezone: chrono_tz::Asia::Kolkata,
            start: t(0),
            end: t(24 * 60),
            periods: 1,
            calls,
            missed_outcomes: &[Outcome::Missed],
            max_callers: 10,
            marked_called_back: &[],
        }
    }

    #[test]
    fn the_list_is_capped_and_the_rest_counted() {
        let calls: Vec<CallSummary> = (0..5)
            .map(|i| {
                call(
                    &format!("+9198100000{i:02}"),
                    Outcome::Missed,
                    Direction::Inbound,
                    i,
                )
            })
            .collect();
        let r = report(&calls, 2);
        assert_eq!(r.waiting.len(), 2);
        assert_eq!((r.waiting_total, r.waiting_more), (5, 3));
        assert_eq!(
            r.waiting[0].number, "+91 98100 00000",
            "who waited longest comes first"
        );
    }

    #[test]
    fn callbacks_count_only_contacts_after_the_missed_call() {
        let calls = vec![
            call("+919810000001", Outcome::Answered, Direction::Inbound, 1), // before: not a callback
            call("+919810000001", Outcome::Missed, Direction::Inbound, 10),
            call("+919810000002", Outcome::Missed, Direction::Inbound, 10),
            call("+919810000002", Outcome::Answered, Direction::Outbound, 40),
            call("+919810000003", Outcome::Missed, Direction::Inbound, 10),
            call("+919810000003", Outcome::Answered, Direction::Inbound, 20),
            // Outbound calls that were not answered reach nobody, and are not missed calls.
            call("+919810000001", Outcome::Missed, Direction::Outbound, 50),
        ];
        let r = report(&calls, 10);
        assert_eq!(r.missed, 3);
        assert_eq!(r.callbacks.missed_calls, 3);
        assert_eq!(r.callbacks.reached, 2);
        assert_eq!(r.callbacks.rate_percent, Some(66));
        assert_eq!(r.callbacks.median.as_deref(), Some("20 min"));
        assert_eq!(r.waiting.len(), 1);
        assert_eq!(r.waiting[0].number, "+91 98100 00001");
        assert_eq!(r.reached.len(), 2);
    }

    #[test]
    fn the_period_before_is_as_long_and_counted_apart() {
        let calls = vec![
            call("+919810000001", Outcome::Missed, Direction::Inbound, -60),
            call(
                "+919810000001",
                Outcome::Missed,
                Direction::Inbound,
                -25 * 60,
            ), // before that
            call("+919810000002", Outcome::Missed, Direction::Inbound, 60),
        ];
        let r = report(&calls, 10);
        assert_eq!((r.missed, r.previous_missed), (1, 1));
        assert!(!r.is_empty());
        assert!(report(&calls[..1], 10).is_empty());
    }
}
