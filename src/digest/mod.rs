//! Email digests: on each digest's schedule, in its time zone, one email per period summarizing
//! missed calls, who is still waiting, and how fast the team called back; never sent twice.

pub mod schedule;

pub mod report;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::domain::Outcome;
use crate::route::{EmailAddress, OneOrMany};
use schedule::Schedule;

/// One `[[digests]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub name: Spanned<String>,
    /// The routes whose calls it covers; every call when absent.
    pub routes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub to: OneOrMany<EmailAddress>,
    /// A receiver whose email addresses get the digest too.
    pub receiver: Option<Spanned<String>>,
    pub schedule: Schedule,
    /// The digest's time zone; `[alerts] timezone` when absent.
    pub timezone: Option<chrono_tz::Tz>,
    /// Outcomes counted as missed calls.
    #[serde(default = "default_outcomes")]
    pub outcomes: Vec<Outcome>,
    /// Send a digest for a period without missed calls too.
    #[serde(default)]
    pub send_empty: bool,
    /// Callers listed by name; the rest are counted.
    #[serde(default = "default_max_callers")]
    pub max_callers: usize,
}

fn default_outcomes() -> Vec<Outcome> {
    vec![Outcome::Missed, Outcome::Canceled, Outcome::Abandoned]
}

fn default_max_callers() -> usize {
    50
}

impl Digest {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::config::Config;
use crate::render::Templates;
use crate::route;
use crate::store::{NewDigestRun, RenderedEmail, Store, StoreError};

/// Closes due digest periods and queues their emails.
pub struct Digester {
    store: Store,
    config: Arc<Config>,
    templates: Arc<Templates>,
}

/// What closing a period did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The email was queued for these recipients.
    Queued { periods: usize, recipients: usize },
    /// Nothing was missed and `send_empty` is off: the period is recorded, no email.
    Empty,
    /// Another worker closed it first.
    AlreadyClosed,
}

impl Digester {
    pub fn new(store: Store, config: Arc<Config>, templates: Arc<Templates>) -> Digester {
        Digester {
            store,
            config,
            templates,
        }
    }

    fn timezone(&self, digest: &Digest) -> chrono_tz::Tz {
        digest.timezone.unwrap_or(self.config.alerts.timezone)
    }

    /// Closes every period due at `now`; returns how many it closed.
    pub async fn step(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut closed = 0;
        for digest in &self.config.digests {
            let tz = self.timezone(digest);
            let Some(from) = self.store.digest_state(digest.name()).await? else {
                // A new digest's first period starts at its latest scheduled time, so the first
                // email covers one period, not everything ever stored.
                let start = digest.schedule.latest_at_or_before(now, tz).unwrap_or(now);
                self.store.start_digest(digest.name(), start).await?;
                tracing::info!(digest = digest.name(), next = ?digest.schedule.next_after(start, tz),
                    "digest scheduled");
                continue;
            };
            let Some(mut to) = digest.schedule.next_after(from, tz) else {
                continue;
            };
            if to > now {
                continue;
            }
            // After downtime, every period missed goes out as one email that says so.
            let mut periods = 1;
            while let Some(next) = digest.schedule.next_after(to, tz) {
                if next > now || periods >= 100_000 {
                    break;
                }
                to = next;
                periods += 1;
            }
            if self.close(digest, from, to, periods, now).await? != Closed::AlreadyClosed {
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Closes `[from, to)` for `digest`: renders and queues its email unless it is empty.
    pub async fn close(
        &self,
        digest: &Digest,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        periods: usize,
        now: DateTime<Utc>,
    ) -> Result<Closed, StoreError> {
        let report = self.report(digest, from, to, periods).await?;
        let recipients = self.config.digest_recipients(digest);
        let run = if report.is_empty() && !digest.send_empty {
            None
        } else {
            match self.templates.digest(&report) {
                Ok(email) => Some(NewDigestRun {
                    periods: periods as i64,
                    email: RenderedEmail {
                        subject: email.subject,
                        text: email.text,
                        html: email.html,
                    },
                    recipients: recipients.clone(),
                    deadline: now
                        + Duration::hours(
                            i64::try_from(self.config.alerts.retry_deadline_hours).unwrap_or(24),
                        ),
                }),
                Err(e) => {
                    // The period stays open, so the digest goes out once the template is fixed.
                    tracing::error!(digest = digest.name(), error = %e, "cannot render the digest");
                    return Ok(Closed::AlreadyClosed);
                }
            }
        };
        let queued = run.is_some();
        if !self
            .store
            .close_digest_period(digest.name(), from, to, run.as_ref(), now)
            .await?
        {
            return Ok(Closed::AlreadyClosed);
        }
        tracing::info!(digest = digest.name(), %from, %to, periods, missed = report.missed, queued,
            "digest period closed");
        metrics::counter!("ringback_digest_runs_total", "digest" => digest.name().to_owned(),
            "result" => if queued { "queued" } else { "empty" })
        .increment(1);
        Ok(if queued {
            Closed::Queued {
                periods,
                recipients: recipients.len(),
            }
        } else {
            Closed::Empty
        })
    }

    /// The report for `[from, to)`, over the calls of the digest's routes.
    pub async fn report(
        &self,
        digest: &Digest,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        periods: usize,
    ) -> Result<report::Report, StoreError> {
        let previous_start = from - (to - from);
        let records = self.store.call_records_between(previous_start, to).await?;
        let marked = self.store.marked_called_back(previous_start, to).await?;
        let calls: Vec<report::CallSummary> = report::calls(&records)
            .into_iter()
            .filter(|c| self.covers(digest, c))
            .collect();
        Ok(report::build(report::Inputs {
            name: digest.name(),
            timezone: self.timezone(digest),
            start: from,
            end: to,
            periods,
            calls: &calls,
            missed_outcomes: &digest.outcomes,
            max_callers: digest.max_callers,
            marked_called_back: &marked,
        }))
    }

    /// The email for a report, from the digest templates.
    pub fn render(
        &self,
        report: &report::Report,
    ) -> Result<crate::render::Email, crate::render::RenderError> {
        self.templates.digest(report)
    }

    fn covers(&self, digest: &Digest, call: &report::CallSummary) -> bool {
        let Some(names) = &digest.routes else {
            return true;
        };
        let names: Vec<&str> = names.iter().map(|n| n.get_ref().as_str()).collect();
        on_routes(&self.config, call, &names)
    }

    /// The current period of `name`: from where the last one ended (or its latest scheduled time).
    pub async fn current_period_start(
        &self,
        digest: &Digest,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        Ok(match self.store.digest_state(digest.name()).await? {
            Some(from) => from,
            None => {
                let start = digest
                    .schedule
                    .latest_at_or_before(now, self.timezone(digest))
                    .unwrap_or(now);
                self.store.start_digest(digest.name(), start).await?;
                start
            }
        })
    }
}

/// Whether `call` is routed by one of the routes named `names`.
pub fn on_routes(config: &Config, call: &report::CallSummary, names: &[&str]) -> bool {
    let region = config.parse_context(call.record.provider).region;
    route::matching(
        &config.routes,
        &call.record,
        call.at,
        config.alerts.timezone,
        region,
    )
    .iter()
    .any(|m| names.contains(&m.route.name()))
}
