//! The time every worker reads: the system clock in service, a hand-moved clock in tests, so tests
//! step the pipeline through settle windows, retries and rate limits without sleeping.

use std::sync::Arc;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

#[derive(Clone)]
pub enum Clock {
    System,
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// A clock that stands still at `at` until moved.
    pub fn manual(at: DateTime<Utc>) -> Clock {
        Clock::Manual(Arc::new(Mutex::new(at)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(at) => *at.lock().expect("the clock lock is never poisoned"),
        }
    }

    /// Moves a manual clock forward; the system clock moves by itself.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(at) = self {
            *at.lock().expect("the clock lock is never poisoned") += by;
        }
    }
}
