//! Runs the alert pipeline's workers: dispatch (decide due calls) then deliver (drain the outbox),
//! woken by new records or by the next due time; tests run one pass to completion instead.

use chrono::{DateTime, Duration, Utc};

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
