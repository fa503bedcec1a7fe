//! Runs the alert pipeline's workers: dispatch (decide due calls) then deliver (drain the outbox),
//! woken by new records or by the next due time; tests run one pass to completion instead.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::clock::Clock;
use crate::deliver::Deliverer;
use crate::digest::Digester;
use crate::dispatch::Dispatcher;
use crate::store::{Store, StoreError};

pub struct Pipeline {
    store: Store,
    dispatcher: Dispatcher,
    digester: Digester,
    deliverer: Deliverer,
    clock: Clock,
    upkeep: Upkeep,
}

/// The pipeline's housekeeping settings.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// How long agent-ring records may go without a call-level record before a warning.
    pub call_records_missing_after: Duration,
    /// How long stored data is kept; `None` keeps everything.
    pub retention: Option<Duration>,
}

impl Pipeline {
    pub fn new(
        store: Store,
        dispatcher: Dispatcher,
        digester: Digester,
        deliverer: Deliverer,
        clock: Clock,
        upkeep: Upkeep,
    ) -> Pipeline {
        Pipeline {
            store,
            dispatcher,
            digester,
            deliverer,
            clock,
            upkeep,
        }
    }

    /// Deletes data older than the retention period (never what pending alerts need).
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let Some(keep) = self.upkeep.retention else {
            return Ok(0);
        };
        let deleted = self.store.prune(self.clock.now() - keep).await?;
        if deleted > 0 {
            tracing::info!(
                deleted,
                "pruned rows older than the retention period (retention.days)"
            );
        }
        Ok(deleted)
    }

    /// One pass: decides what is due, closes due digest periods, then sends what is due.
    /// Returns whether anything happened.
    pub async fn run_once(&self) -> Result<bool, StoreError> {
        let decided = self.decide_once().await?;
        let sent = self.deliver_once().await?;
        Ok(decided || sent)
    }

    /// The deciding half of a pass: decides what is due and closes due digest periods.
    pub async fn decide_once(&self) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let decided = self.dispatcher.step(now).await?;
        let digests = self.digester.step(now).await?;
        Ok(decided + digests > 0)
    }

    /// The sending half of a pass: sends the messages and edits that are due.
    pub async fn deliver_once(&self) -> Result<bool, StoreError> {
        Ok(self.deliverer.step(self.clock.now()).await? > 0)
    }

    pub fn digester(&self) -> &Digester {
        &self.digester
    }

    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Passes until nothing more is due at the current time.
    pub async fn run_until_idle(&self) -> Result<(), StoreError> {
        while self.run_once().await? {}
        Ok(())
    }

    /// When the next decision, message or message edit comes due.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let decision = self.next_decision_at().await?;
        let delivery = self.next_delivery_at().await?;
        Ok([decision, delivery].into_iter().flatten().min())
    }

    /// When the next decision comes due.
    pub async fn next_decision_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.store.next_decision_at().await
    }

    /// When the next message or message edit comes due.
    pub async fn next_delivery_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let message = self.store.next_message_at().await?;
        let edit = self.store.next_edit_at().await?;
        Ok([message, edit].into_iter().flatten().min())
    }

    /// A warning when TeleCMI sends agents' rings but no call-level records: without the
    /// call-level CDR webhooks ringback cannot tell a missed call from one a teammate answered.
    pub async fn missing_call_records(&self) -> Result<Option<String>, StoreError> {
        let now = self.clock.now();
        let oldest = self
            .store
            .oldest_ring_without_call_record(now - Duration::hours(24))
            .await?;
        Ok(oldest
            .filter(|at| now - *at >= self.upkeep.call_records_missing_after)
            .map(|at| {
                format!(
                    "TeleCMI has sent agent-ring (leg b) records since {} but no call-level CDR: enable the \
                     Incoming Missed CDR and Incoming Answered CDR webhooks in TeleCMI, or ringback cannot \
                     alert on missed calls",
                    at.format("%Y-%m-%d %H:%M UTC")
                )
            }))
    }
}

/// Wakes a pipeline worker. A new record asks for a decision at the end of its settle window,
/// later than the worker already means to wake up in a burst: such a record wakes nobody, so a
/// burst of webhooks does not make the decider query the database between every two of them.
pub struct Wake {
    notify: Notify,
    /// Unix milliseconds (clock time) when the sleeping worker will wake by itself; `AWAKE`
    /// while it is making a pass, as it may have read the due times before a new record came.
    asleep_until: AtomicI64,
}

const AWAKE: i64 = i64::MAX;

impl Default for Wake {
    fn default() -> Self {
        Wake {
            notify: Notify::new(),
            asleep_until: AtomicI64::new(AWAKE),
        }
    }
}

impl Wake {
    pub fn new() -> Wake {
        Wake::default()
    }

    /// Wakes the worker whatever it planned: something may be due now (a reload, a button).
    pub fn notify_one(&self) {
        self.notify.notify_one();
    }

    /// A record was stored that comes due at `at`: wakes the worker if it would sleep past it.
    pub fn due_at(&self, at: DateTime<Utc>) {
        if at.timestamp_millis() < self.asleep_until.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Resolves when woken. A wake-up that came while the worker was not waiting is kept (one
    /// permit), so none is lost between its passes.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Says the worker is about to sleep until `until` unless woken. Set before it waits: a
    /// record stored in between then still wakes it, through the kept permit.
    pub(crate) fn sleeping_until(&self, until: DateTime<Utc>) {
        self.asleep_until
            .store(until.timestamp_millis(), Ordering::SeqCst);
    }

    /// Says the worker is making a pass: every new record wakes it again afterwards.
    pub(crate) fn awake(&self) {
        self.asleep_until.store(AWAKE, Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Wake {
    /// Whether a wake-up is held, taking it.
    pub(crate) fn woken(&self) -> bool {
        use std::future::Future;
        let mut notified = std::pin::pin!(self.notified());
        notified
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            .is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::Wake;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_record_due_before_the_planned_wake_up_wakes_the_worker_and_a_later_one_does_not() {
        let wake = Wake::new();
        let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        wake.sleeping_until(at(10));
        wake.due_at(at(10));
        wake.due_at(at(13));
        assert!(!wake.woken(), "due when the worker wakes anyway, or later");
        wake.due_at(at(9));
        assert!(wake.woken(), "due before the worker would wake");
        assert!(!wake.woken(), "one wake-up, one permit");
    }

    #[test]
    fn while_the_worker_makes_a_pass_every_record_wakes_it_again() {
        let wake = Wake::new();
        let later = Utc.timestamp_opt(4_000_000_000, 0).unwrap();
        wake.due_at(later);
        assert!(wake.woken(), "a worker never yet asleep is awake");
        wake.sleeping_until(later);
        wake.awake();
        wake.due_at(later);
        assert!(
            wake.woken(),
            "it may have read the due times before this record came"
        );
    }

    #[test]
    fn a_wake_up_for_something_due_now_always_wakes() {
        let wake = Wake::new();
        wake.sleeping_until(Utc.timestamp_opt(1_800_000_000, 0).unwrap());
        wake.notify_one();
        assert!(wake.woken());
    }
}
