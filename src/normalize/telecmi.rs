//! TeleCMI CDR and live-event webhooks (JSON POST, or the same keys in a GET query string).
//! A record with no `leg` describes the whole call; `leg: "b"` with `user` is one agent's ring.

use std::collections::BTreeMap;

use super::{Fields, ParseContext, ParseError, letters_only, phone, seconds_between};
use crate::domain::{CallRecord, Direction, Leg, Outcome, Provider};

pub fn parse(f: &Fields, ctx: &ParseContext) -> Result<CallRecord, ParseError> {
    let call_id = f.text("cmiuuid")?.ok_or_else(|| {
        ParseError::missing(
            "cmiuuid",
            "every TeleCMI CDR and event carries its call id there",
        )
    })?;
    let leg = match f.text("leg")?.map(|l| l.to_ascii_lowercase()).as_deref() {
        None | Some("a") => Leg::Call,
        Some("b") => Leg::Agent,
        Some(other) => {
            return Err(ParseError::invalid(
                "leg",
                format!("must be \"a\" or \"b\", got {other:?}"),
            ));
        }
    };
    let user = f.text("user")?;
    let status = f.text("status")?;
    // Only `type: "cdr"` describes how a call ended; live events and anything newer never alert.
    let is_cdr = match f.text("type")? {
        None => true,
        Some(t) => t.eq_ignore_ascii_case("cdr"),
    };
    let outcome = if is_cdr {
        status.as_deref().map_or(Outcome::Unknown, outcome_of)
    } else {
        Outcome::NotACallResult
    };

    let time = f.epoch("time")?;
    let talk_seconds = match f.int("answeredsec")? {
        Some(s) => Some(s),
        None => f.int("billedsec")?,
    };
    let mut started_at = f.epoch("start_time")?;
    let mut answered_at = f.epoch("answer_time")?;
    let mut ended_at = f.epoch("end_time")?;
    // The CDR webhooks give one `time`: when the call was answered, or when it was missed.
    if let Some(time) = time {
        if outcome == Outcome::Answered {
            answered_at.get_or_insert(time);
            let end = talk_seconds
                .and_then(chrono::Duration::try_seconds)
                .and_then(|talk| time.checked_add_signed(talk));
            if let Some(end) = end {
                ended_at.get_or_insert(end);
            }
        } else if outcome == Outcome::NotACallResult {
            started_at.get_or_insert(time);
        } else {
            ended_at.get_or_insert(time);
        }
    }
    let ring_seconds = if answered_at.is_some() {
        seconds_between(started_at, answered_at)
    } else {
        seconds_between(started_at, ended_at)
    };

    let number = |key: &str| -> Result<_, ParseError> {
        Ok(f.text(key)?
            .and_then(|raw| phone::normalize(&raw, ctx.region)))
    };
    let to = number("to")?;
    // `to` is the agent's phone when the record names a user, and the dialled number otherwise.
    let (called, agent_phone) = match (number("virtual_number")?, user.is_some()) {
        (Some(virtual_number), true) => (Some(virtual_number), to),
        (Some(virtual_number), false) => (Some(virtual_number), None),
        (None, true) => (None, to),
        (None, false) => (to, None),
    };

    let recording = match (f.bool("record")?, f.text("filename")?) {
        (Some(false), _) | (_, None) => None,
        (_, Some(file)) => Some(file),
    };
    let mut extra = BTreeMap::new();
    for key in ["custom", "extra_params"] {
        if let Some(v) = f.verbatim(key) {
            extra.insert(key.to_owned(), v);
        }
    }
    for (key, name) in [
        ("appid", "appid"),
        ("app_id", "appid"),
        ("ivr_name", "ivr_name"),
    ] {
        if let Some(v) = f.text(key)? {
            extra.entry(name.to_owned()).or_insert(v);
        }
    }

    let dedup_key = match (is_cdr, leg) {
        (true, Leg::Call) => format!("cdr:{call_id}:a"),
        (true, Leg::Agent) => format!("cdr:{call_id}:b:{}", user.as_deref().unwrap_or("")),
        // Live events repeat for one call as it progresses; each state is its own record.
        (false, _) => format!(
            "event:{call_id}:{}:{}:{}",
            leg.as_str(),
            status.as_deref().unwrap_or(""),
            time.map_or(0, |t| t.timestamp_millis())
        ),
    };

    Ok(CallRecord {
        provider: Provider::Telecmi,
        conversation_id: f
            .text("conversation_uuid")?
            .unwrap_or_else(|| call_id.clone()),
        call_id,
        leg,
        dedup_key,
        direction: direction_of(f.text("direction")?.as_deref()),
        outcome,
        provider_status: status,
        caller: number("from")?,
        caller_name: f.text("name")?,
        called,
        agent: user,
        agent_phone,
        group: f.text("team")?,
        started_at,
        answered_at,
        ended_at,
        ring_seconds,
        talk_seconds,
        hangup: f.text("hangup_reason")?,
        recording,
        extra,
    })
}

fn outcome_of(status: &str) -> Outcome {
    match letters_only(status).as_str() {
        "answered" | "answer" => Outcome::Answered,
        "missed" | "noanswer" | "notanswered" | "unanswered" => Outcome::Missed,
        "cancel" | "canceled" | "cancelled" => Outcome::Canceled,
        "abandoned" | "abandon" => Outcome::Abandoned,
        "busy" => Outcome::Busy,
        "failed" | "failure" | "congestion" | "unavailable" => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

fn direction_of(direction: Option<&str>) -> Direction {
    match direction.map(letters_only).as_deref() {
        Some("inbound" | "incoming") => Direction::Inbound,
        Some("outbound" | "outgoing") => Direction::Outbound,
        _ => Direction::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;
    use chrono::{TimeZone, Utc};
    use serde_json::{Value, json};

    /// Seed 000, TeleCMI "Incoming User Missed CDR", as the provider sends it (real JSON).
    pub fn user_missed_sample() -> Value {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/telecmi_user_missed.json"
        ))
        .unwrap()
    }

    /// Seed 001, TeleCMI "Incoming Answered CDR".
    pub fn answered_sample() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/telecmi_answered.json")).unwrap()
    }

    fn parse_json(v: &Value) -> Result<CallRecord, ParseError> {
        parse(
            &Fields::from_json(v.to_string().as_bytes()).unwrap(),
            &ParseContext::default(),
        )
    }

    fn raw(n: &str) -> Option<PhoneNumber> {
        Some(PhoneNumber {
            raw: n.to_owned(),
            e164: None,
        })
    }

    #[test]
    fn seed_user_missed_cdr() {
        let r = parse_json(&user_missed_sample()).unwrap();
        let at = Utc.timestamp_millis_opt(1650625417426).unwrap();
        assert_eq!(r.provider, Provider::Telecmi);
        assert_eq!(r.call_id, "e3e26d27-7b42-4679-a8a0-96b7d5e21dc7");
        assert_eq!(r.conversation_id, r.call_id);
        assert_eq!(r.leg, Leg::Agent);
        assert_eq!(
            r.dedup_key,
            "cdr:e3e26d27-7b42-4679-a8a0-96b7d5e21dc7:b:302_2223343"
        );
        assert_eq!(r.direction, Direction::Inbound);
        assert_eq!(r.outcome, Outcome::Missed);
        assert_eq!(r.provider_status.as_deref(), Some("missed"));
        assert_eq!(r.caller, raw("440000000000"));
        assert_eq!(r.caller_name, None);
        assert_eq!(r.called, None);
        assert_eq!(r.agent.as_deref(), Some("302_2223343"));
        assert_eq!(
            r.agent_phone,
            Some(PhoneNumber {
                raw: "919999999999".into(),
                e164: Some("+919999999999".into())
            })
        );
        assert_eq!(r.group.as_deref(), Some("support_2223343"));
        assert_eq!(r.started_at, None);
        assert_eq!(r.answered_at, None);
        assert_eq!(r.ended_at, Some(at));
        assert_eq!(r.ring_seconds, None);
        assert_eq!(r.talk_seconds, None);
        assert_eq!(r.hangup.as_deref(), Some("recv_cancel"));
        assert_eq!(r.recording, None);
        assert_eq!(r.extra["custom"], r#"{"crm":"true"}"#);
        assert_eq!(r.extra["appid"], "2222223");
        assert_eq!(r.extra.len(), 2);
    }

    #[test]
    fn seed_answered_cdr() {
        let r = parse_json(&answered_sample()).unwrap();
        let at = Utc.timestamp_millis_opt(1634720920615).unwrap();
        assert_eq!(r.call_id, "16132200-57fa-47b5-888d-4ab5b7e631ee");
        assert_eq!(r.conversation_id, "16132200-57fa-47b5-888d-4ab5b7e631ee");
        assert_eq!(r.leg, Leg::Call);
        assert_eq!(r.dedup_key, "cdr:16132200-57fa-47b5-888d-4ab5b7e631ee:a");
        assert_eq!(r.direction, Direction::Inbound);
        assert_eq!(r.outcome, Outcome::Answered);
        assert_eq!(r.caller, raw("440000000002"));
        assert_eq!(r.called, raw("440000000000"));
        assert_eq!(r.agent.as_deref(), Some("204_2222223"));
        assert_eq!(r.agent_phone, raw("440000000001"));
        assert_eq!(r.group.as_deref(), Some("Sales_2222223"));
        assert_eq!(r.started_at, None);
        assert_eq!(r.answered_at, Some(at));
        assert_eq!(r.ended_at, Some(at + chrono::Duration::seconds(11)));
        assert_eq!(r.talk_seconds, Some(11));
        assert_eq!(r.ring_seconds, None);
        assert_eq!(r.hangup.as_deref(), Some("recv_bye"));
        assert_eq!(
            r.recording.as_deref(),
            Some("1634720915260737218351_2222223.mp3")
        );
        assert_eq!(r.extra["custom"], r#"{"key":"value"}"#);
        assert_eq!(r.extra["ivr_name"], "salesivr");
        assert_eq!(r.extra["appid"], "2222223");
    }

    #[test]
    fn call_level_missed_record_has_the_dialled_number_in_to() {
        let mut v = json!({
            "type": "cdr", "direction": "inbound", "cmiuuid": "c1", "status": "missed",
            "from": "919810000001", "to": "914400000000", "time": 1650625417426u64
        });
        let r = parse_json(&v).unwrap();
        assert_eq!(r.leg, Leg::Call);
        assert_eq!(r.agent, None);
        assert_eq!(r.called.unwrap().raw, "914400000000");
        assert_eq!(r.caller.unwrap().e164.as_deref(), Some("+919810000001"));
        v["leg"] = json!("a");
        assert_eq!(parse_json(&v).unwrap().leg, Leg::Call);
    }

    #[test]
    fn numbers_as_strings_and_string_booleans() {
        let mut v = answered_sample();
        v["from"] = json!("440000000002");
        v["time"] = json!("1634720920615");
        v["answeredsec"] = json!("11");
        v["record"] = json!("true");
        let as_strings = parse_json(&v).unwrap();
        assert_eq!(as_strings, parse_json(&answered_sample()).unwrap());
        v["record"] = json!("false");
        assert_eq!(parse_json(&v).unwrap().recording, None);
    }

    #[test]
    fn invalid_custom_json_is_kept_as_text() {
        let mut v = answered_sample();
        v["custom"] = json!("{crm: true");
        v["extra_params"] = json!("not json either");
        let r = parse_json(&v).unwrap();
        assert_eq!(r.extra["custom"], "{crm: true");
        assert_eq!(r.extra["extra_params"], "not json either");
    }

    #[test]
    fn app_id_spelling_and_piopiy_epoch_seconds() {
        let v = json!({
            "cmiuuid": "p1", "app_id": 7, "status": "answered", "direction": "outbound",
            "from": 914400000000u64, "to": 919810000001u64,
            "start_time": 1700000000, "answer_time": 1700000007, "end_time": 1700000067
        });
        let r = parse_json(&v).unwrap();
        assert_eq!(r.extra["appid"], "7");
        assert_eq!(r.direction, Direction::Outbound);
        assert_eq!(r.started_at.unwrap().timestamp(), 1700000000);
        assert_eq!(r.answered_at.unwrap().timestamp(), 1700000007);
        assert_eq!(r.ended_at.unwrap().timestamp(), 1700000067);
        assert_eq!(r.ring_seconds, Some(7));
    }

    #[test]
    fn live_events_are_not_call_results() {
        let v = json!({"type": "event", "cmiuuid": "e1", "status": "started", "time": 1650625417426u64,
                       "direction": "inbound", "from": 919810000001u64});
        let r = parse_json(&v).unwrap();
        assert_eq!(r.outcome, Outcome::NotACallResult);
        assert_eq!(r.dedup_key, "event:e1:a:started:1650625417426");
        assert!(r.started_at.is_some());
    }

    #[test]
    fn statuses() {
        for (status, outcome) in [
            ("answered", Outcome::Answered),
            ("missed", Outcome::Missed),
            ("MISSED", Outcome::Missed),
            ("no_answer", Outcome::Missed),
            ("cancelled", Outcome::Canceled),
            ("busy", Outcome::Busy),
            ("failed", Outcome::Failed),
            ("abandoned", Outcome::Abandoned),
            ("transferred", Outcome::Unknown),
        ] {
            assert_eq!(outcome_of(status), outcome, "{status}");
        }
        let no_status = json!({"cmiuuid": "x", "type": "cdr"});
        assert_eq!(parse_json(&no_status).unwrap().outcome, Outcome::Unknown);
    }

    #[test]
    fn extreme_numbers_do_not_overflow() {
        let mut v = answered_sample();
        v["answeredsec"] = json!(i64::MAX);
        let r = parse_json(&v).unwrap();
        assert_eq!(r.ended_at, None);
        v["start_time"] = json!(i64::MIN);
        assert_eq!(parse_json(&v).unwrap_err().field(), Some("start_time"));
        v["start_time"] = json!(0);
        v["time"] = json!(i64::MAX);
        assert_eq!(parse_json(&v).unwrap_err().field(), Some("time"));
    }

    #[test]
    fn unusable_fields_are_named() {
        let mut v = user_missed_sample();
        v.as_object_mut().unwrap().remove("cmiuuid");
        assert_eq!(parse_json(&v).unwrap_err().field(), Some("cmiuuid"));
        let mut v = user_missed_sample();
        v["time"] = json!("yesterday");
        assert_eq!(parse_json(&v).unwrap_err().field(), Some("time"));
        let mut v = user_missed_sample();
        v["leg"] = json!("c");
        assert_eq!(parse_json(&v).unwrap_err().field(), Some("leg"));
        let mut v = user_missed_sample();
        v["team"] = json!({"name": "x"});
        assert_eq!(parse_json(&v).unwrap_err().field(), Some("team"));
    }

    #[test]
    fn query_string_form_matches_json() {
        let v = user_missed_sample();
        let pairs: Vec<(String, String)> = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect();
        let from_query = parse(&Fields::from_pairs(pairs), &ParseContext::default()).unwrap();
        assert_eq!(from_query, parse_json(&v).unwrap());
    }
}
