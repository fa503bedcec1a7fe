//! CallerDesk "Call Report" and "Live Call" webhooks, by GET query, form POST or JSON POST.
//! Every value is text (`""` when absent); times are local to the account's time zone.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use super::{Fields, ParseContext, ParseError, letters_only, phone};
use crate::domain::{CallRecord, Direction, Leg, Outcome, Provider};

pub fn parse(f: &Fields, ctx: &ParseContext) -> Result<CallRecord, ParseError> {
    let call_id = f
        .text_of(&["CallSid", "Uniqueid", "UniqueId"])?
        .ok_or_else(|| {
            ParseError::missing(
                "CallSid",
                "CallerDesk identifies each call by `CallSid` (or `Uniqueid`)",
            )
        })?;
    let ended_at = local_time(f, "EndTime", ctx)?;
    let total = f.int("CallDuration")?;
    let is_live = match f.text("type")?.map(|t| letters_only(&t)).as_deref() {
        Some("livecall") => true,
        Some("callreport") => false,
        // Without `type`, only a finished call has an end time or a duration.
        _ => ended_at.is_none() && total.is_none(),
    };
    let status = f.text_of(&["Status", "callstatus"])?;
    let outcome = if is_live {
        Outcome::NotACallResult
    } else {
        status.as_deref().map_or(Outcome::Unknown, outcome_of)
    };
    let direction = match f.text("Direction")?.map(|d| letters_only(&d)).as_deref() {
        Some("ivr" | "inbound" | "incoming") => Direction::Inbound,
        Some("webobd" | "obd" | "outbound" | "outgoing" | "clicktocall") => Direction::Outbound,
        Some(_) => Direction::Unknown,
        // `campid` appears on outgoing call reports only.
        None if f.text("campid")?.is_some() => Direction::Outbound,
        None => Direction::Inbound,
    };

    let number = |key: &str| -> Result<_, ParseError> {
        Ok(f.text(key)?.and_then(|n| phone::normalize(&n, ctx.region)))
    };
    let agent_phone = number("DialWhomNumber")?;
    // `receiver_name` "0" is CallerDesk's way of saying nobody answered.
    let agent = match f.text("receiver_name")? {
        Some(name) if name != "0" => Some(name),
        _ => agent_phone.as_ref().map(|p| p.raw.clone()),
    };
    let talk_seconds = f.int("TalkDuration")?;
    let ring_seconds = match (total, talk_seconds) {
        (Some(total), Some(talk)) if talk > 0 => Some(total.saturating_sub(talk).max(0)),
        (Some(total), _) if outcome != Outcome::Answered => Some(total),
        _ => None,
    };
    let answered_at = local_time(f, "LegB_Picked_time", ctx)?;

    let mut extra = BTreeMap::new();
    for key in [
        "campid",
        "error_code",
        "coins",
        "LegA_Picked_time",
        "LegB_Start_time",
    ] {
        if let Some(v) = f.text(key)? {
            extra.insert(key.to_owned(), v);
        }
    }
    let kind = if is_live { "live_call" } else { "call_report" };

    Ok(CallRecord {
        provider: Provider::Callerdesk,
        conversation_id: call_id.clone(),
        dedup_key: format!("{call_id}:{kind}"),
        call_id,
        leg: Leg::Call,
        direction,
        outcome,
        provider_status: status,
        caller: number("SourceNumber")?,
        caller_name: f.text("caller_name")?,
        called: number("DestinationNumber")?,
        agent,
        agent_phone,
        group: f.text("call_group")?,
        started_at: local_time(f, "StartTime", ctx)?,
        answered_at,
        ended_at,
        ring_seconds,
        talk_seconds,
        hangup: None,
        recording: f.text("CallRecordingUrl")?,
        extra,
    })
}

/// The CallerDesk status table: trim, drop a trailing `(...)`, ignore case and non-letters.
pub fn outcome_of(status: &str) -> Outcome {
    let mut s = status.trim();
    if s.ends_with(')')
        && let Some(open) = s.rfind('(')
    {
        s = &s[..open];
    }
    match letters_only(s).as_str() {
        "answer" | "answered" => Outcome::Answered,
        "cancel" | "canceled" | "cancelled" | "cancelcustomer" => Outcome::Canceled,
        "noanswer" | "notanswered" | "notconnected" | "missed" => Outcome::Missed,
        "abandonedcall" | "abandoned" => Outcome::Abandoned,
        "busy" | "agentengaged" | "agentonring" => Outcome::Busy,
        "congestion" | "unavailable" | "chanunavail" => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// `yyyy-mm-dd hh:mm:ss` in the account's zone; `0000-00-00 00:00:00` means absent.
fn local_time(
    f: &Fields,
    key: &str,
    ctx: &ParseContext,
) -> Result<Option<DateTime<Utc>>, ParseError> {
    let Some(text) = f.text(key)? else {
        return Ok(None);
    };
    let squeezed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if squeezed.starts_with("0000-00-00") {
        return Ok(None);
    }
    let naive = NaiveDateTime::parse_from_str(&squeezed, "%Y-%m-%d %H:%M:%S").map_err(|_| {
        ParseError::invalid(
            key,
            format!("must be a local time like 2023-01-02 14:32:44, got {text:?}"),
        )
    })?;
    // In a repeated hour the earlier instant is taken; a time skipped by a DST jump is read as
    // the instant an hour later, which is what the wall clock showed.
    let local = ctx
        .timezone
        .from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            let later = naive.checked_add_signed(chrono::Duration::hours(1))?;
            ctx.timezone.from_local_datetime(&later).earliest()
        });
    Ok(local.map(|t| t.with_timezone(&Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;

    fn pairs(json: &str) -> Vec<(String, String)> {
        let map: BTreeMap<String, String> = serde_json::from_str(json).unwrap();
        map.into_iter().collect()
    }

    /// Seed 003's Call Report parameters, filled in with realistic values.
    pub fn call_report() -> Vec<(String, String)> {
        pairs(include_str!(
            "../../tests/fixtures/callerdesk_call_report.json"
        ))
    }

    fn parse_pairs(pairs: Vec<(String, String)>) -> Result<CallRecord, ParseError> {
        parse(&Fields::from_pairs(pairs), &ParseContext::default())
    }

    fn with(mut pairs: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
        pairs.retain(|(k, _)| k != key);
        pairs.push((key.to_owned(), value.to_owned()));
        pairs
    }

    fn ist(s: &str) -> DateTime<Utc> {
        chrono_tz::Asia::Kolkata
            .from_local_datetime(&NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap())
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn seed_call_report_every_field() {
        let r = parse_pairs(call_report()).unwrap();
        assert_eq!(r.provider, Provider::Callerdesk);
        assert_eq!(r.call_id, "1672649960.9601234");
        assert_eq!(r.conversation_id, r.call_id);
        assert_eq!(r.dedup_key, "1672649960.9601234:call_report");
        assert_eq!(r.leg, Leg::Call);
        assert_eq!(r.direction, Direction::Inbound);
        assert_eq!(r.outcome, Outcome::Answered);
        assert_eq!(r.provider_status.as_deref(), Some("ANSWER"));
        assert_eq!(
            r.caller,
            Some(PhoneNumber {
                raw: "9810000001".into(),
                e164: Some("+919810000001".into())
            })
        );
        assert_eq!(r.called.unwrap().e164.as_deref(), Some("+911204000000"));
        assert_eq!(r.agent.as_deref(), Some("Ashish"));
        assert_eq!(
            r.agent_phone.unwrap().e164.as_deref(),
            Some("+919280000002")
        );
        assert_eq!(r.group.as_deref(), Some("TestGroup"));
        assert_eq!(r.started_at, Some(ist("2023-01-02 14:32:40")));
        assert_eq!(
            r.started_at.unwrap().to_rfc3339(),
            "2023-01-02T09:02:40+00:00"
        );
        assert_eq!(r.answered_at, Some(ist("2023-01-02 14:32:54")));
        assert_eq!(r.ended_at, Some(ist("2023-01-02 14:33:38")));
        assert_eq!(r.talk_seconds, Some(40));
        assert_eq!(r.ring_seconds, Some(18));
        assert_eq!(
            r.recording.as_deref(),
            Some("https://callrecords.callerdesk.io/incoming/01_2023.mp3")
        );
        assert_eq!(r.extra["coins"], "1");
        assert_eq!(r.extra["LegA_Picked_time"], "2023-01-02 14:32:44");
        assert!(!r.extra.contains_key("campid"));
    }

    #[test]
    fn seed_live_call() {
        let live = pairs(include_str!(
            "../../tests/fixtures/callerdesk_live_call.json"
        ));
        let r = parse_pairs(live.clone()).unwrap();
        assert_eq!(r.outcome, Outcome::NotACallResult);
        assert_eq!(r.dedup_key, "1672649960.9601234:live_call");
        assert_eq!(r.direction, Direction::Inbound);
        let typed = parse_pairs(with(call_report(), "type", "live_call")).unwrap();
        assert_eq!(typed.outcome, Outcome::NotACallResult);
        let report = parse_pairs(with(live, "type", "call_report")).unwrap();
        assert_eq!(report.outcome, Outcome::Answered);
    }

    #[test]
    fn status_table() {
        for (status, outcome) in [
            ("ANSWER", Outcome::Answered),
            (" Answered ", Outcome::Answered),
            ("CANCEL", Outcome::Canceled),
            ("Cancel-Customer", Outcome::Canceled),
            ("NOANSWER", Outcome::Missed),
            ("NO ANSWER", Outcome::Missed),
            ("Not connected", Outcome::Missed),
            ("AbandonedCall", Outcome::Abandoned),
            ("BUSY", Outcome::Busy),
            ("AgentEngaged", Outcome::Busy),
            ("AgentonRing", Outcome::Busy),
            ("CONGESTION", Outcome::Failed),
            ("Unavailable", Outcome::Failed),
            ("CHANUNAVAIL", Outcome::Failed),
            ("NOANSWER(19)", Outcome::Missed),
            ("BUSY (17)", Outcome::Busy),
            ("Transferred", Outcome::Unknown),
        ] {
            assert_eq!(outcome_of(status), outcome, "{status:?}");
        }
    }

    #[test]
    fn empty_status_falls_back_to_callstatus() {
        let r = parse_pairs(with(
            with(call_report(), "Status", ""),
            "callstatus",
            "No Answer",
        ))
        .unwrap();
        assert_eq!(r.outcome, Outcome::Missed);
        assert_eq!(r.provider_status.as_deref(), Some("No Answer"));
    }

    #[test]
    fn nobody_answered() {
        let pairs = with(
            with(
                with(
                    with(call_report(), "Status", "NOANSWER"),
                    "receiver_name",
                    "0",
                ),
                "TalkDuration",
                "0",
            ),
            "DialWhomNumber",
            "",
        );
        let pairs = with(
            with(pairs, "LegB_Picked_time", "0000-00-00 00:00:00"),
            "CallDuration",
            " 25 ",
        );
        let r = parse_pairs(pairs).unwrap();
        assert_eq!(r.outcome, Outcome::Missed);
        assert_eq!(r.agent, None);
        assert_eq!(r.answered_at, None);
        assert_eq!(r.ring_seconds, Some(25));
    }

    #[test]
    fn directions() {
        let out = parse_pairs(with(call_report(), "Direction", "WEBOBD")).unwrap();
        assert_eq!(out.direction, Direction::Outbound);
        let by_campaign = parse_pairs(with(
            with(call_report(), "Direction", ""),
            "campid",
            "11387004",
        ))
        .unwrap();
        assert_eq!(by_campaign.direction, Direction::Outbound);
        assert_eq!(by_campaign.extra["campid"], "11387004");
    }

    #[test]
    fn absent_and_bad_values() {
        let r = parse_pairs(with(call_report(), "EndTime", "0000-00-00 00:00:00")).unwrap();
        assert_eq!(r.ended_at, None);
        let err = parse_pairs(with(call_report(), "StartTime", "02/01/2023")).unwrap_err();
        assert_eq!(err.field(), Some("StartTime"));
        let err = parse_pairs(with(call_report(), "CallSid", "  ")).unwrap_err();
        assert_eq!(err.field(), Some("CallSid"));
        let by_unique_id =
            parse_pairs(with(with(call_report(), "CallSid", ""), "Uniqueid", "u-1")).unwrap();
        assert_eq!(by_unique_id.call_id, "u-1");
        let err = parse_pairs(with(call_report(), "CallDuration", "long")).unwrap_err();
        assert_eq!(err.field(), Some("CallDuration"));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let pairs = with(
            with(call_report(), "CallDuration", &i64::MIN.to_string()),
            "TalkDuration",
            "1",
        );
        assert_eq!(parse_pairs(pairs).unwrap().ring_seconds, Some(0));
        let far = with(call_report(), "StartTime", "262143-12-31 23:59:59");
        let _ = parse_pairs(far);
    }

    #[test]
    fn account_time_zone_is_configurable() {
        let ctx = ParseContext {
            timezone: chrono_tz::Europe::Paris,
            ..ParseContext::default()
        };
        let r = parse(&Fields::from_pairs(call_report()), &ctx).unwrap();
        assert_eq!(
            r.started_at.unwrap().to_rfc3339(),
            "2023-01-02T13:32:40+00:00"
        );
        // 02:30 on 2024-03-31 does not exist in Paris; it is read as 03:30 local.
        let gap = with(call_report(), "StartTime", "2024-03-31 02:30:00");
        let r = parse(&Fields::from_pairs(gap), &ctx).unwrap();
        assert_eq!(
            r.started_at.unwrap().to_rfc3339(),
            "2024-03-31T01:30:00+00:00"
        );
    }
}
