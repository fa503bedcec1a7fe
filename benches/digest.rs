//! How long a digest takes to build and render for a large period: `cargo bench --bench digest`.
//! Prints timings; asserts nothing.

use std::path::Path;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use ringback::digest::report::{CallSummary, Inputs, build};
use ringback::domain::{CallRecord, Direction, Leg, Outcome, PhoneNumber, Provider};
use ringback::render::Templates;

fn main() {
    let start = Utc.with_ymd_and_hms(2026, 11, 23, 3, 30, 0).unwrap();
    let outcomes = [
        Outcome::Missed,
        Outcome::Canceled,
        Outcome::Answered,
        Outcome::Abandoned,
    ];
    let calls: Vec<CallSummary> = (0..13_000i64)
        .map(|i| {
            let number = format!("+9198{:08}", i % 4_000);
            let at = start + Duration::seconds(i * 6);
            CallSummary {
                record: CallRecord {
                    provider: Provider::Telecmi,
                    call_id: format!("c{i}"),
                    conversation_id: format!("c{i}"),
                    leg: Leg::Call,
                    dedup_key: format!("c{i}"),
                    direction: Direction::Inbound,
                    outcome: outcomes[(i % 4) as usize],
                    provider_status: None,
                    caller: Some(PhoneNumber {
                        raw: number.clone(),
                        e164: Some(number),
                    }),
                    caller_name: Some(format!("Caller <{i}> & co")),
                    called: None,
                    agent: None,
                    agent_phone: None,
                    group: Some(format!("Team {}", i % 12)),
                    started_at: Some(at),
                    answered_at: None,
                    ended_at: None,
                    ring_seconds: Some(20),
                    talk_seconds: None,
                    hangup: None,
                    recording: None,
                    extra: Default::default(),
                },
                at,
                received: at,
            }
        })
        .collect();
    let missed = calls
        .iter()
        .filter(|c| c.record.outcome != Outcome::Answered)
        .count();
    let templates =
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap();
    for round in 0..3 {
        let t0 = Instant::now();
        let report = build(Inputs {
            name: "bench",
            timezone: chrono_tz::Asia::Kolkata,
            start,
            end: start + Duration::days(1),
            periods: 1,
            calls: &calls,
            missed_outcomes: &[Outcome::Missed, Outcome::Canceled, Outcome::Abandoned],
            max_callers: 50,
            marked_called_back: &[],
        });
        let built = t0.elapsed();
        let email = templates.digest(&report).unwrap();
        let rendered = t0.elapsed() - built;
        println!(
            "round {round}: {} calls, {missed} missed, {} still waiting: report {built:?}, render {rendered:?} ({} bytes of HTML)",
            calls.len(),
            report.waiting_total,
            email.html.len()
        );
    }
}
