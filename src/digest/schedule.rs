//! When digests go out: a cron expression (or hourly, daily, weekly) read in the digest's own
//! time zone, so 09:00 stays 09:00 across daylight-saving changes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use serde::{Deserialize, Deserializer};

/// A digest schedule. In a daylight-saving gap a time that does not exist runs once, at the first
/// minute after the gap; in a repeated hour it runs once, the first time (as Vixie cron does).
#[derive(Clone)]
pub struct Schedule {
    source: String,
    cron: Cron,
}

impl Schedule {
    pub fn parse(source: &str) -> Result<Schedule, String> {
        let pattern = match source.trim() {
            "hourly" => "0 * * * *",
            "daily" => "0 0 * * *",
            // The week ends as Monday starts, so a weekly digest covers Monday to Sunday.
            "weekly" => "0 0 * * MON",
            other => other,
        };
        let cron = Cron::from_str(pattern).map_err(|e| {
            format!(
                "`{source}` is not a schedule ({e}); write a cron expression such as \"0 9 * * MON-FRI\", \
                 or hourly, daily, weekly"
            )
        })?;
        Ok(Schedule {
            source: source.to_owned(),
            cron,
        })
    }

    /// The first run strictly after `after`, in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last run at or before `at`, in `tz`.
    pub fn latest_at_or_before(
        &self,
        at: DateTime<Utc>,
        tz: chrono_tz::Tz,
    ) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Schedule::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Paris;

    fn local(tz: chrono_tz::Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn runs(schedule: &str, tz: chrono_tz::Tz, from: DateTime<Utc>, n: usize) -> Vec<String> {
        let s = Schedule::parse(schedule).unwrap();
        let mut at = from;
        (0..n)
            .map(|_| {
                at = s.next_after(at, tz).unwrap();
                at.with_timezone(&tz).format("%a %d %H:%M %Z").to_string()
            })
            .collect()
    }

    #[test]
    fn nine_stays_nine_across_dst_in_paris() {
        // Paris springs forward on Sunday 2026-03-29.
        let from = local(Paris, 2026, 3, 26, 12, 0);
        assert_eq!(
            runs("0 9 * * MON-FRI", Paris, from, 3),
            ["Fri 27 09:00 CET", "Mon 30 09:00 CEST", "Tue 31 09:00 CEST"]
        );
        let s = Schedule::parse("0 9 * * MON-FRI").unwrap();
        let friday = s.next_after(from, Paris).unwrap();
        let monday = s.next_after(friday, Paris).unwrap();
        assert_eq!(
            (monday - friday).num_hours(),
            71,
            "one hour fewer over the weekend"
        );
    }

    #[test]
    fn nine_stays_nine_across_dst_in_new_york() {
        // New York falls back on Sunday 2026-11-01.
        let from = local(New_York, 2026, 10, 30, 12, 0);
        assert_eq!(
            runs("0 9 * * *", New_York, from, 3),
            ["Sat 31 09:00 EDT", "Sun 01 09:00 EST", "Mon 02 09:00 EST"]
        );
    }

    #[test]
    fn a_time_skipped_by_the_spring_gap_runs_once_after_it() {
        let from = local(Paris, 2026, 3, 28, 12, 0);
        assert_eq!(
            runs("30 2 * * *", Paris, from, 3),
            [
                "Sun 29 03:00 CEST",
                "Mon 30 02:30 CEST",
                "Tue 31 02:30 CEST"
            ]
        );
        let from = local(New_York, 2026, 3, 7, 12, 0);
        assert_eq!(
            runs("30 2 * * *", New_York, from, 2),
            ["Sun 08 03:00 EDT", "Mon 09 02:30 EDT"]
        );
    }

    #[test]
    fn a_time_repeated_by_the_autumn_change_runs_once() {
        let from = local(Paris, 2026, 10, 24, 12, 0);
        assert_eq!(
            runs("30 2 * * *", Paris, from, 2),
            ["Sun 25 02:30 CEST", "Mon 26 02:30 CET"]
        );
        let from = local(New_York, 2026, 10, 31, 12, 0);
        assert_eq!(
            runs("30 1 * * *", New_York, from, 2),
            ["Sun 01 01:30 EDT", "Mon 02 01:30 EST"]
        );
    }

    #[test]
    fn aliases_and_errors() {
        let from = local(Paris, 2026, 11, 23, 10, 30);
        assert_eq!(runs("hourly", Paris, from, 1), ["Mon 23 11:00 CET"]);
        assert_eq!(runs("daily", Paris, from, 1), ["Tue 24 00:00 CET"]);
        assert_eq!(runs("weekly", Paris, from, 1), ["Mon 30 00:00 CET"]);
        let s = Schedule::parse("daily").unwrap();
        assert_eq!(
            s.latest_at_or_before(from, Paris).unwrap(),
            local(Paris, 2026, 11, 23, 0, 0)
        );
        assert!(
            Schedule::parse("every morning")
                .unwrap_err()
                .contains("cron expression")
        );
        assert!(Schedule::parse("61 * * * *").is_err());
    }
}
