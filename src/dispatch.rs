//! Takes each decision whose settle window has passed: classifies the call, routes it, and writes
//! its alerts and outbox messages in the same transaction that records the verdict.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::classify::{self, DecisionKind, Verdict};
use crate::config::Config;
use crate::deliver::{EMAIL, EmailOptions, TELEGRAM, TelegramOptions};
use crate::domain::{CallRecord, Direction, Outcome};
use crate::normalize::Region;
use crate::render::{self, CallView, ViewInput};
use crate::route::{self, Route};
use crate::store::{
    DecisionCommit, DueDecision, NewAlert, NewMessage, Resolution, Store, StoreError, StoredRecord,
};

/// Why a route that matched a call does not alert for it, if it does not.
pub fn why_route_does_not_alert(
    config: &Config,
    route: &Route,
    record: &CallRecord,
) -> Option<String> {
    let on = route
        .on
        .as_ref()
        .map_or(config.alerts.on.get_ref(), |on| on.get_ref());
    if !on.contains(&record.outcome) {
        return Some(format!(
            "outcome {} is not in its `on` list",
            record.outcome
        ));
    }
    let asks_for_outbound = route
        .matcher
        .as_ref()
        .is_some_and(|m| m.direction.0.contains(&Direction::Outbound));
    if record.direction == Direction::Outbound && !asks_for_outbound {
        return Some(
            "outbound calls alert only on routes that match direction = \"outbound\"".into(),
        );
    }
    None
}

pub struct Dispatcher {
    store: Store,
    config: Arc<Config>,
}

/// What was decided for one call, and the alerts it raises.
struct Decision {
    verdict: String,
    alerts: Vec<NewAlert>,
    /// An answered call settles the open alerts of the number it reached.
    resolution: Option<Resolution>,
}

impl Decision {
    fn quiet(verdict: String) -> Decision {
        Decision {
            verdict,
            alerts: Vec::new(),
            resolution: None,
        }
    }
}

/// How many due decisions one step takes. Decisions due together are committed together: one
/// transaction and one fsync for a burst, not one each.
///
/// While webhooks are arriving, a step takes 8: small steps keep the first alert of a burst from
/// waiting long, and the webhooks that queue behind a commit at the write gate, or behind the
/// step's reads on a tokio worker, too (p99 in `cargo bench --bench service`: about 8.6 ms with
/// 8, 10 to 12 ms with 32, 13 ms with 64). Once none has come for a quarter of a second, a step
/// takes 64: a burst's backlog then drains about twice as fast, on half the CPU per decision,
/// as each step's fixed cost (its commit, the pass's other queries) is shared by more.
fn step_size(now: DateTime<Utc>, last_webhook_at: Option<DateTime<Utc>>) -> i64 {
    let quiet = last_webhook_at.is_none_or(|at| now - at >= chrono::Duration::milliseconds(250));
    if quiet { 64 } else { 8 }
}

impl Dispatcher {
    pub fn new(store: Store, config: Arc<Config>) -> Dispatcher {
        Dispatcher { store, config }
    }

    /// Decides decisions due at `now`, as many as `step_size` allows; returns how many it took.
    pub async fn step(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let due = self
            .store
            .due_decisions(now, step_size(now, self.store.last_webhook_at()))
            .await?;
        // Each decision only reads until the commit: deciding them side by side spreads their
        // queries over the pool's connections instead of waiting for each in turn.
        let decided =
            futures_util::future::try_join_all(due.iter().map(|d| self.decide(d, now))).await?;
        let commits: Vec<DecisionCommit> = due
            .iter()
            .zip(&decided)
            .map(|(d, decision)| DecisionCommit {
                id: d.id,
                verdict: &decision.verdict,
                alerts: &decision.alerts,
                resolution: decision.resolution.as_ref(),
            })
            .collect();
        let results = match self.store.commit_decisions(now, &commits).await {
            Ok(results) => results,
            // One decision that cannot be written must not hold back the others.
            Err(e) if commits.len() > 1 => {
                tracing::warn!(error = %e, "decisions could not be committed together; committing each alone");
                let mut results = Vec::with_capacity(commits.len());
                for commit in &commits {
                    results.push(
                        self.store
                            .commit_decisions(now, std::slice::from_ref(commit))
                            .await?
                            .remove(0),
                    );
                }
                results
            }
            Err(e) => return Err(e),
        };
        let mut taken = 0;
        for ((d, decision), result) in due.iter().zip(&decided).zip(results) {
            let Some(resolved) = result else { continue };
            taken += 1;
            if resolved > 0 {
                metrics::counter!("ringback_alerts_resolved_total").increment(resolved as u64);
                tracing::info!(provider = %d.provider, call = %d.subject, resolved,
                    "an answered call reached a caller with open missed-call alerts");
            }
            let kind = if !decision.alerts.is_empty() {
                "alert"
            } else if decision.verdict.ends_with("unrouted") {
                "unrouted"
            } else {
                "no_alert"
            };
            metrics::counter!("ringback_decisions_total", "kind" => d.kind.as_str(), "result" => kind)
                .increment(1);
            metrics::counter!("ringback_alerts_total").increment(decision.alerts.len() as u64);
            tracing::info!(
                provider = %d.provider,
                call = %d.subject,
                verdict = %decision.verdict,
                alerts = decision.alerts.len(),
                "call decided"
            );
        }
        Ok(taken)
    }

    async fn decide(&self, d: &DueDecision, now: DateTime<Utc>) -> Result<Decision, StoreError> {
        match d.kind {
            DecisionKind::Call => {
                let records = self.store.records_of_call(d.provider, &d.subject).await?;
                match classify::classify_call(&records) {
                    Verdict::NotAnswered { record, rang } => {
                        self.alerts_for_call(d, &record, rang, now).await
                    }
                    answered @ Verdict::Answered { .. } => {
                        let mut decision = Decision::quiet(answered.describe());
                        decision.resolution = records
                            .iter()
                            .find(|r| {
                                r.record.leg == crate::domain::Leg::Call
                                    && r.record.outcome == Outcome::Answered
                            })
                            .map(|r| Resolution {
                                numbers: classify::reached_numbers(&r.record),
                                agent: r.record.agent.clone(),
                                at: r.record.occurred_at().unwrap_or(r.received_at),
                                record_received_at: r.received_at,
                            })
                            .filter(|r| !r.numbers.is_empty());
                        Ok(decision)
                    }
                    other => Ok(Decision::quiet(other.describe())),
                }
            }
            DecisionKind::AgentRing => match self.store.record(d.record_id).await? {
                Some(record) => self.alerts_for_ring(d, &record, now).await,
                None => Ok(Decision::quiet("the ring's record is gone".into())),
            },
        }
    }

    fn region(&self, record: &CallRecord) -> Region {
        self.config.parse_context(record.provider).region
    }

    async fn alerts_for_call(
        &self,
        d: &DueDecision,
        stored: &StoredRecord,
        rang: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Decision, StoreError> {
        let record = &stored.record;
        let at = record.occurred_at().unwrap_or(stored.received_at);
        let tz = self.config.alerts.timezone;
        let matched = route::matching(&self.config.routes, record, at, tz, self.region(record));
        if matched.is_empty() {
            tracing::warn!(provider = %d.provider, call = %d.subject, group = ?record.group,
                called = ?record.called.as_ref().map(|c| &c.raw),
                "a missed call matched no route and there is no default route: nobody is alerted");
            return Ok(Decision::quiet(format!("{}: unrouted", record.outcome)));
        }
        let window = self.config.alerts.repeat_window();
        let missed_recent = self.missed_from_caller(record, now - window).await?;
        let mut alerts = Vec::new();
        let mut notes = Vec::new();
        for m in matched {
            let route = m.route;
            if let Some(why_not) = why_route_does_not_alert(&self.config, route, record) {
                notes.push(format!("{}: {why_not}", route.name()));
                continue;
            }
            notes.push(format!("{}: alert", route.name()));
            let view = |receiver: &str, missed_recent: i64, window: Duration, escalated: bool| {
                CallView::new(ViewInput {
                    kind: "missed_call",
                    record,
                    at,
                    agents_rang: rang.clone(),
                    route: route.name(),
                    receiver,
                    timezone: route.timezone.unwrap_or(tz),
                    missed_recent,
                    missed_window: window,
                    escalated,
                })
            };
            let receiver = route.receiver.get_ref();
            let first = view(receiver, missed_recent, window, false);
            alerts.push(
                self.alert(d, stored.id, route, receiver, "missed_call", &first, now)
                    .await?,
            );
            if let Some(escalate) = &route.escalate
                && escalate.receiver.get_ref() != receiver
            {
                let within = escalate.window(window);
                let count = if within == window {
                    missed_recent
                } else {
                    self.missed_from_caller(record, now - within).await?
                };
                if count >= i64::from(escalate.after) {
                    notes.push(format!(
                        "{}: escalated to {} ({count} missed calls)",
                        route.name(),
                        escalate.receiver.get_ref()
                    ));
                    let receiver = escalate.receiver.get_ref();
                    let view = view(receiver, count, within, true);
                    alerts.push(
                        self.alert(d, stored.id, route, receiver, "missed_call", &view, now)
                            .await?,
                    );
                }
            }
        }
        Ok(Decision {
            verdict: format!("{} ({})", record.outcome, notes.join("; ")),
            alerts,
            resolution: None,
        })
    }

    async fn alerts_for_ring(
        &self,
        d: &DueDecision,
        stored: &StoredRecord,
        now: DateTime<Utc>,
    ) -> Result<Decision, StoreError> {
        let record = &stored.record;
        let at = record.occurred_at().unwrap_or(stored.received_at);
        let tz = self.config.alerts.timezone;
        let mut alerts = Vec::new();
        for m in route::matching(&self.config.routes, record, at, tz, self.region(record)) {
            let Some(receiver) = &m.route.agent_rings else {
                continue;
            };
            let view = CallView::new(ViewInput {
                kind: "agent_ring",
                record,
                at,
                agents_rang: record.agent.iter().cloned().collect(),
                route: m.route.name(),
                receiver: receiver.get_ref(),
                timezone: m.route.timezone.unwrap_or(tz),
                missed_recent: 0,
                missed_window: self.config.alerts.repeat_window(),
                escalated: false,
            });
            alerts.push(
                self.alert(
                    d,
                    stored.id,
                    m.route,
                    receiver.get_ref(),
                    "agent_ring",
                    &view,
                    now,
                )
                .await?,
            );
        }
        Ok(Decision {
            verdict: if alerts.is_empty() {
                "agent ring: no route asks for agent_rings".into()
            } else {
                "agent ring: alert".into()
            },
            alerts,
            resolution: None,
        })
    }

    /// Missed calls from the record's caller stored since `since`, this one included.
    async fn missed_from_caller(
        &self,
        record: &CallRecord,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let Some(caller) = &record.caller else {
            return Ok(0);
        };
        let alerting: Vec<Outcome> = Outcome::ALL
            .into_iter()
            .filter(|o| !matches!(o, Outcome::Answered | Outcome::NotACallResult))
            .collect();
        self.store.count_calls_from(caller, &alerting, since).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn alert(
        &self,
        d: &DueDecision,
        record_id: i64,
        route: &Route,
        receiver_name: &str,
        kind: &str,
        view: &CallView,
        now: DateTime<Utc>,
    ) -> Result<NewAlert, StoreError> {
        let deadline = now
            + Duration::hours(i64::try_from(self.config.alerts.retry_deadline_hours).unwrap_or(24));
        let group_wait = Duration::seconds(i64::try_from(route.group_wait_seconds).unwrap_or(0));
        // Without a grouping window each call is its own batch.
        let batch = |destination: &str, channel: &str| {
            if route.group_wait_seconds > 0 {
                format!("{}|{receiver_name}|{channel}|{destination}|", route.name())
            } else {
                format!(
                    "{}|{receiver_name}|{channel}|{destination}|{}",
                    route.name(),
                    d.id
                )
            }
        };
        let mut messages = Vec::new();
        if let Some(receiver) = self.config.receivers.get(receiver_name) {
            for target in &receiver.telegram.0 {
                let chat = self.store.current_chat(target.chat_id).await?.to_string();
                let options = TelegramOptions {
                    thread: target.message_thread_id,
                    silent: target.disable_notification || route.silent,
                    template: route
                        .templates
                        .telegram
                        .clone()
                        .unwrap_or_else(|| render::DEFAULT_TELEGRAM.to_owned()),
                };
                messages.push(NewMessage {
                    channel: TELEGRAM.into(),
                    batch_key: batch(&chat, TELEGRAM),
                    destination: chat,
                    options: serde_json::to_string(&options).expect("options serialize"),
                    group_wait,
                    deadline,
                });
            }
            for address in &receiver.email.0 {
                let to = address.to_string();
                let options = EmailOptions {
                    templates: route.templates.clone(),
                };
                messages.push(NewMessage {
                    channel: EMAIL.into(),
                    batch_key: batch(&to, EMAIL),
                    destination: to,
                    options: serde_json::to_string(&options).expect("options serialize"),
                    group_wait,
                    deadline,
                });
            }
        }
        if messages.is_empty() {
            // The config's loading already warned of this receiver, once; a line for every alert
            // would bury the log (and, in a burst, cost more than the alert).
            tracing::debug!(
                receiver = receiver_name,
                route = route.name(),
                "receiver has no Telegram chat or email address: the alert is recorded but sent nowhere"
            );
        }
        Ok(NewAlert {
            record_id,
            route: route.name().to_owned(),
            receiver: receiver_name.to_owned(),
            kind: kind.to_owned(),
            context: serde_json::to_string(view).expect("a call view serializes"),
            number: view.caller_e164.clone().or_else(|| view.caller.clone()),
            messages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::step_size;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn steps_are_small_while_webhooks_arrive_and_large_once_they_stop() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        assert_eq!(step_size(now, Some(now)), 8);
        assert_eq!(step_size(now, Some(now - Duration::milliseconds(249))), 8);
        assert_eq!(step_size(now, Some(now - Duration::milliseconds(250))), 64);
        assert_eq!(step_size(now, None), 64, "no webhook since start-up");
        // A webhook received after `now` (a pass that read the clock before it) is a burst too.
        assert_eq!(step_size(now, Some(now + Duration::seconds(1))), 8);
    }
}
