//! Callr CDRs: the webhook envelope (`call.*` and `v2.call.*` events), `{"cdr": ...}` pushed from an
//! Actions scenario with `fetch@v2`, or a bare CDR object; plus the `X-CALLR-HmacSignature` check.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;

use super::{Fields, ParseContext, ParseError, letters_only, phone, seconds_between};
use crate::domain::{CallRecord, Direction, Leg, Outcome, Provider};

pub fn parse(mut body: Fields, ctx: &ParseContext) -> Result<CallRecord, ParseError> {
    let (event_type, event_id, cdr) = if let Some(mut data) = body.take_object("data")? {
        let event_type = body.text("type")?;
        // Some scenarios wrap the CDR once more inside the event data.
        let cdr = data.take_object("cdr")?.unwrap_or(data);
        (event_type, body.text("event_id")?, cdr)
    } else if let Some(cdr) = body.take_object("cdr")? {
        (None, None, cdr)
    } else if body.has("callid") {
        (None, None, body)
    } else {
        return Err(ParseError::missing(
            "callid",
            "expected a Callr webhook envelope with `data`, an object with `cdr`, or a CDR with `callid`",
        ));
    };

    let call_id = cdr.text("callid")?.ok_or_else(|| {
        ParseError::missing(&cdr.name("callid"), "Callr CDRs carry the call id there")
    })?;
    let kind = event_type.as_deref().map_or(EventKind::End, event_kind);
    let status = cdr.text("status")?;
    let answered_at = timestamp(&cdr, "answered")?;
    let outcome = match kind {
        EventKind::Progress => Outcome::NotACallResult,
        EventKind::End => match status.as_deref() {
            Some(s) => outcome_of(s),
            None if answered_at.is_some() => Outcome::Answered,
            None => Outcome::Unknown,
        },
    };
    let direction = match cdr.text("direction")?.map(|d| letters_only(&d)).as_deref() {
        Some("inbound") => Direction::Inbound,
        Some("outbound") => Direction::Outbound,
        _ => match event_type.as_deref() {
            Some(t) if t.contains("inbound") => Direction::Inbound,
            Some(t) if t.contains("outbound") => Direction::Outbound,
            _ => Direction::Unknown,
        },
    };

    let restricted = cdr.bool("callerRestricted")?.unwrap_or(false);
    let caller = if restricted {
        None
    } else {
        cdr.text("callerNumber")?
            .and_then(|n| phone::normalize(&n, ctx.region))
    };
    let started_at = timestamp(&cdr, "started")?;
    let ended_at = timestamp(&cdr, "ended")?;
    let total = cdr.int("durationTotal")?;
    let talk_seconds = cdr.int("durationAnswered")?;
    let ring_seconds = match answered_at {
        Some(_) => seconds_between(started_at, answered_at),
        None => total.or_else(|| seconds_between(started_at, ended_at)),
    };
    let hangup = match (cdr.text("hangupSource")?, cdr.int("hangupCause")?) {
        (Some(source), Some(cause)) => Some(format!("{source} (Q.850 cause {cause})")),
        (Some(source), None) => Some(source),
        (None, Some(cause)) => Some(format!("Q.850 cause {cause}")),
        (None, None) => None,
    };

    let mut extra = BTreeMap::new();
    if restricted {
        extra.insert("caller_restricted".to_owned(), "true".to_owned());
    }
    if let Some(t) = &event_type {
        extra.insert("event_type".to_owned(), t.clone());
    }
    for key in [
        "scenarioSid",
        "scenarioTypeName",
        "hangupTech",
        "durationBilled",
    ] {
        if let Some(v) = cdr.text(key)? {
            extra.insert(key.to_owned(), v);
        }
    }

    let dedup_key = match &event_id {
        Some(id) => format!("event:{id}"),
        None => format!("{call_id}:{}", event_type.as_deref().unwrap_or("cdr")),
    };
    Ok(CallRecord {
        provider: Provider::Callr,
        conversation_id: call_id.clone(),
        call_id,
        leg: Leg::Call,
        dedup_key,
        direction,
        outcome,
        provider_status: status,
        caller,
        caller_name: cdr.text("callerName")?,
        called: cdr
            .text("callee")?
            .and_then(|n| phone::normalize(&n, ctx.region)),
        agent: None,
        agent_phone: None,
        group: cdr.text("scenarioName")?,
        started_at,
        answered_at,
        ended_at,
        ring_seconds,
        talk_seconds,
        hangup,
        recording: None,
        extra,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    /// The call started or is in progress: nothing is known about how it ends.
    Progress,
    End,
}

fn event_kind(event_type: &str) -> EventKind {
    let t = event_type.to_ascii_lowercase();
    if t.contains("hangup") || t.ends_with(".ended") || t.ends_with("_end") {
        EventKind::End
    } else {
        EventKind::Progress
    }
}

fn outcome_of(status: &str) -> Outcome {
    match letters_only(status).as_str() {
        "answered" => Outcome::Answered,
        "canceled" | "cancelled" => Outcome::Canceled,
        "busy" => Outcome::Busy,
        "failed" | "unallocated" => Outcome::Failed,
        // A call that ended while still dialing or ringing was never picked up.
        "dialing" | "ringing" | "noanswer" | "missed" => Outcome::Missed,
        _ => Outcome::Unknown,
    }
}

/// ISO 8601 with an offset; without one, UTC is assumed (Callr's exports write UTC).
fn timestamp(f: &Fields, key: &str) -> Result<Option<DateTime<Utc>>, ParseError> {
    let Some(text) = f.text(key)? else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&text, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(ParseError::invalid(
        &f.name(key),
        format!("must be an ISO 8601 time such as 2024-05-01T10:00:00Z, got {text:?}"),
    ))
}

/// The digest Callr signs webhooks with (chosen in the Callr account, `sha256` unless changed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Md5,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the X-CALLR-HmacSignature header is missing; Callr signs every webhook when an HMAC secret is set"
    )]
    Missing,
    #[error("the X-CALLR-HmacSignature header is not base64")]
    NotBase64,
    #[error(
        "the X-CALLR-HmacSignature does not match the body; check providers.callr.hmac_secret and hmac_algorithm"
    )]
    Mismatch,
}

/// Checks Callr's base64 HMAC of the raw body bytes, in constant time.
pub fn verify_signature(
    secret: &[u8],
    algorithm: HmacAlgorithm,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .map_err(|_| SignatureError::NotBase64)?;
    let verified = match algorithm {
        HmacAlgorithm::Md5 => verify::<Hmac<md5::Md5>>(secret, body, &expected),
        HmacAlgorithm::Sha256 => verify::<Hmac<sha2::Sha256>>(secret, body, &expected),
        HmacAlgorithm::Sha512 => verify::<Hmac<sha2::Sha512>>(secret, body, &expected),
    };
    if verified {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn verify<M: Mac + hmac::digest::KeyInit>(secret: &[u8], body: &[u8], expected: &[u8]) -> bool {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

/// Signs `body` as Callr does; for tests and for `route-test` style tooling.
pub fn sign(secret: &[u8], algorithm: HmacAlgorithm, body: &[u8]) -> String {
    fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], body: &[u8]) -> Vec<u8> {
        let mut mac =
            <M as hmac::digest::KeyInit>::new_from_slice(secret).expect("HMAC takes any key size");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
    let bytes = match algorithm {
        HmacAlgorithm::Md5 => run::<Hmac<md5::Md5>>(secret, body),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(secret, body),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(secret, body),
    };
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::{Value, json};

    /// A CDR with every field seed 002 lists, for an inbound call nobody picked up.
    pub fn missed_cdr() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/callr_cdr.json")).unwrap()
    }

    fn parse_json(v: &Value) -> Result<CallRecord, ParseError> {
        let ctx = ParseContext {
            region: "FR".parse().unwrap(),
            ..ParseContext::default()
        };
        parse(Fields::from_json(v.to_string().as_bytes()).unwrap(), &ctx)
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn bare_cdr_every_field() {
        let r = parse_json(&missed_cdr()).unwrap();
        assert_eq!(r.provider, Provider::Callr);
        assert_eq!(r.call_id, "8877665544");
        assert_eq!(r.conversation_id, "8877665544");
        assert_eq!(r.leg, Leg::Call);
        assert_eq!(r.dedup_key, "8877665544:cdr");
        assert_eq!(r.direction, Direction::Inbound);
        assert_eq!(r.outcome, Outcome::Canceled);
        assert_eq!(r.provider_status.as_deref(), Some("canceled"));
        let caller = r.caller.unwrap();
        assert_eq!(caller.raw, "+33612345678");
        assert_eq!(caller.e164.as_deref(), Some("+33612345678"));
        assert_eq!(r.caller_name.as_deref(), Some("ACME <Support> & Co"));
        assert_eq!(r.called.unwrap().e164.as_deref(), Some("+33187200000"));
        assert_eq!(r.agent, None);
        assert_eq!(r.group.as_deref(), Some("Sales FR"));
        assert_eq!(r.started_at, Some(at("2025-03-10T09:15:00Z")));
        assert_eq!(r.answered_at, None);
        assert_eq!(r.ended_at, Some(at("2025-03-10T09:15:23Z")));
        assert_eq!(r.ring_seconds, Some(23));
        assert_eq!(r.talk_seconds, Some(0));
        assert_eq!(r.hangup.as_deref(), Some("caller (Q.850 cause 16)"));
        assert_eq!(r.recording, None);
        assert_eq!(r.extra["scenarioSid"], "abc123");
        assert_eq!(r.extra["hangupTech"], "NORMAL_CLEARING");
    }

    #[test]
    fn three_shapes_read_the_same_cdr() {
        let bare = parse_json(&missed_cdr()).unwrap();
        let pushed = parse_json(&json!({ "cdr": missed_cdr() })).unwrap();
        assert_eq!(pushed, bare);
        let envelope = json!({
            "event_at": "2025-03-10T09:15:24Z",
            "event_id": "evt-1",
            "hook_hash": "h",
            "try": 1,
            "type": "v2.call.inbound.ended",
            "data": missed_cdr()
        });
        let hooked = parse_json(&envelope).unwrap();
        assert_eq!(hooked.dedup_key, "event:evt-1");
        assert_eq!(hooked.outcome, Outcome::Canceled);
        assert_eq!(hooked.call_id, bare.call_id);
        assert_eq!(hooked.extra["event_type"], "v2.call.inbound.ended");
    }

    #[test]
    fn start_events_never_describe_an_outcome() {
        for t in [
            "call.inbound_start",
            "call.outbound_start",
            "v2.call.inbound.started",
            "v2.call.outbound.started",
        ] {
            let v = json!({"type": t, "data": {"callid": 5, "status": "ringing"}});
            let r = parse_json(&v).unwrap();
            assert_eq!(r.outcome, Outcome::NotACallResult, "{t}");
            assert_eq!(r.dedup_key, format!("5:{t}"));
        }
        for t in [
            "call.inbound_hangup",
            "call.outbound_hangup",
            "v2.call.outbound.ended",
        ] {
            let v = json!({"type": t, "data": {"callid": 5, "status": "busy"}});
            assert_eq!(parse_json(&v).unwrap().outcome, Outcome::Busy, "{t}");
        }
        let v = json!({"type": "call.outbound_hangup", "data": {"callid": 5}});
        assert_eq!(parse_json(&v).unwrap().direction, Direction::Outbound);
    }

    #[test]
    fn answered_and_restricted_calls() {
        let mut v = missed_cdr();
        v["status"] = json!("answered");
        v["answered"] = json!("2025-03-10T09:15:08Z");
        v["durationAnswered"] = json!(15);
        let r = parse_json(&v).unwrap();
        assert_eq!(r.outcome, Outcome::Answered);
        assert_eq!(r.ring_seconds, Some(8));
        assert_eq!(r.talk_seconds, Some(15));

        let mut v = missed_cdr();
        v["callerRestricted"] = json!(true);
        v["callerNumber"] = json!("");
        let r = parse_json(&v).unwrap();
        assert_eq!(r.caller, None);
        assert_eq!(r.extra["caller_restricted"], "true");

        let mut v = missed_cdr();
        v.as_object_mut().unwrap().remove("answered");
        v.as_object_mut().unwrap().remove("status");
        assert_eq!(parse_json(&v).unwrap().outcome, Outcome::Unknown);
    }

    #[test]
    fn statuses() {
        for (s, o) in [
            ("answered", Outcome::Answered),
            ("canceled", Outcome::Canceled),
            ("busy", Outcome::Busy),
            ("failed", Outcome::Failed),
            ("unallocated", Outcome::Failed),
            ("ringing", Outcome::Missed),
            ("dialing", Outcome::Missed),
            ("something", Outcome::Unknown),
        ] {
            assert_eq!(outcome_of(s), o, "{s}");
        }
    }

    #[test]
    fn unusable_payloads_name_the_field() {
        let err = parse_json(&json!({"hello": 1})).unwrap_err();
        assert_eq!(err.field(), Some("callid"));
        let err = parse_json(&json!({"type": "v2.call.inbound.ended", "data": {"status": "busy"}}))
            .unwrap_err();
        assert_eq!(err.field(), Some("data.callid"));
        let mut v = missed_cdr();
        v["started"] = json!("last tuesday");
        assert_eq!(parse_json(&v).unwrap_err().field(), Some("started"));
        let v = json!({"cdr": "not an object"});
        assert_eq!(parse_json(&v).unwrap_err().field(), Some("cdr"));
    }

    #[test]
    fn timestamps_without_offset_are_utc() {
        let mut v = missed_cdr();
        v["started"] = json!("2025-03-10 09:15:00");
        let r = parse_json(&v).unwrap();
        assert_eq!(
            r.started_at,
            Some(Utc.with_ymd_and_hms(2025, 3, 10, 9, 15, 0).unwrap())
        );
    }

    #[test]
    fn hmac_valid_wrong_and_missing() {
        let body = br#"{"callid":1}"#;
        for algorithm in [
            HmacAlgorithm::Md5,
            HmacAlgorithm::Sha256,
            HmacAlgorithm::Sha512,
        ] {
            let good = sign(b"s3cret", algorithm, body);
            assert_eq!(
                verify_signature(b"s3cret", algorithm, Some(&good), body),
                Ok(())
            );
            assert_eq!(
                verify_signature(b"other", algorithm, Some(&good), body),
                Err(SignatureError::Mismatch)
            );
            assert_eq!(
                verify_signature(b"s3cret", algorithm, Some(&good), b"{\"callid\":2}"),
                Err(SignatureError::Mismatch)
            );
        }
        // A SHA-256 signature does not pass as SHA-512.
        let sha256 = sign(b"k", HmacAlgorithm::Sha256, body);
        assert_eq!(
            verify_signature(b"k", HmacAlgorithm::Sha512, Some(&sha256), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"k", HmacAlgorithm::Sha256, None, body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(b"k", HmacAlgorithm::Sha256, Some("%%%"), body),
            Err(SignatureError::NotBase64)
        );
        // A known vector: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            sign(
                b"key",
                HmacAlgorithm::Sha256,
                b"The quick brown fox jumps over the lazy dog"
            ),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
    }
}
