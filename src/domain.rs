//! The call record every provider's CDR is normalized into, and the small vocabulary around it.
//! Everything past `normalize` speaks these types; no module downstream sees a provider's payload.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A telephony provider ringback accepts webhooks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    Telecmi,
    Callr,
    Callerdesk,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Telecmi, Provider::Callr, Provider::Callerdesk];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Telecmi => "telecmi",
            Provider::Callr => "callr",
            Provider::Callerdesk => "callerdesk",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// A name read back from storage or config that matches no variant.
#[derive(Debug, thiserror::Error)]
#[error("unknown name `{0}`")]
pub struct UnknownName(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
    Unknown,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Unknown => "unknown",
        }
    }
}

impl FromStr for Direction {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            "unknown" => Ok(Direction::Unknown),
            other => Err(UnknownName(other.to_owned())),
        }
    }
}

/// How a call ended, as far as the caller is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Answered,
    Missed,
    Canceled,
    Abandoned,
    Busy,
    Failed,
    /// The provider reported an end state ringback does not recognise; kept, logged, never alerts.
    Unknown,
    /// A live-call or call-started event: it says nothing about how the call ended.
    NotACallResult,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Answered,
        Outcome::Missed,
        Outcome::Canceled,
        Outcome::Abandoned,
        Outcome::Busy,
        Outcome::Failed,
        Outcome::Unknown,
        Outcome::NotACallResult,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Missed => "missed",
            Outcome::Canceled => "canceled",
            Outcome::Abandoned => "abandoned",
            Outcome::Busy => "busy",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
            Outcome::NotACallResult => "not_a_call_result",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// Which part of a call a record describes.
///
/// TeleCMI reports a call once for the caller's side (leg a) and once per agent whose phone rang
/// (leg b); only the call-level record says whether the caller was helped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    Call,
    Agent,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Call => "a",
            Leg::Agent => "b",
        }
    }
}

impl FromStr for Leg {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" => Ok(Leg::Call),
            "b" => Ok(Leg::Agent),
            other => Err(UnknownName(other.to_owned())),
        }
    }
}

/// A phone number as the provider sent it, and in E.164 when its country could be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    pub raw: String,
    pub e164: Option<String>,
}

/// One provider record about one call (or one leg of it), normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub provider: Provider,
    /// The provider's id for this record's call: TeleCMI `cmiuuid`, Callr `callid`, CallerDesk `CallSid`.
    pub call_id: String,
    /// The id shared by every leg of one conversation (TeleCMI `conversation_uuid`); the call id otherwise.
    pub conversation_id: String,
    pub leg: Leg,
    /// What makes a resend recognisable; unique per provider in storage.
    pub dedup_key: String,
    pub direction: Direction,
    pub outcome: Outcome,
    /// The provider's own status words, for logs and for users reading an `unknown` outcome.
    pub provider_status: Option<String>,
    pub caller: Option<PhoneNumber>,
    pub caller_name: Option<String>,
    /// The virtual number / DID that was dialled.
    pub called: Option<PhoneNumber>,
    /// Who took or missed the call: TeleCMI user, CallerDesk receiver name, Callr callee.
    pub agent: Option<String>,
    pub agent_phone: Option<PhoneNumber>,
    /// TeleCMI team, CallerDesk call group, Callr scenario name.
    pub group: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// How long the caller rang or waited before being answered or giving up.
    pub ring_seconds: Option<i64>,
    pub talk_seconds: Option<i64>,
    pub hangup: Option<String>,
    pub recording: Option<String>,
    /// Provider fields with no place above (TeleCMI `custom`, `ivr_name`; CallerDesk `campid`, ...).
    pub extra: BTreeMap<String, String>,
}

impl CallRecord {
    /// The moment to show a person for this call: when it started, else when it was answered or ended.
    pub fn occurred_at(&self) -> Option<DateTime<Utc>> {
        self.started_at.or(self.answered_at).or(self.ended_at)
    }
}

/// A plain inbound missed call, for tests to vary with struct update syntax.
#[cfg(test)]
pub(crate) fn test_record() -> CallRecord {
    CallRecord {
        provider: Provider::Telecmi,
        call_id: "c".into(),
        conversation_id: "c".into(),
        leg: Leg::Call,
        dedup_key: "c".into(),
        direction: Direction::Inbound,
        outcome: Outcome::Missed,
        provider_status: None,
        caller: None,
        caller_name: None,
        called: None,
        agent: None,
        agent_phone: None,
        group: None,
        started_at: None,
        answered_at: None,
        ended_at: None,
        ring_seconds: None,
        talk_seconds: None,
        hangup: None,
        recording: None,
        extra: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
        }
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        }
        for d in [Direction::Inbound, Direction::Outbound, Direction::Unknown] {
            assert_eq!(d.as_str().parse::<Direction>().unwrap(), d);
        }
        for l in [Leg::Call, Leg::Agent] {
            assert_eq!(l.as_str().parse::<Leg>().unwrap(), l);
        }
        assert!("nope".parse::<Outcome>().is_err());
    }
}

/// Config files name providers, outcomes and directions by their stored names.
macro_rules! deserialize_from_str {
    ($($t:ty: $expected:literal),*) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|_| {
                    serde::de::Error::custom(format!("`{s}` is not one of {}", $expected))
                })
            }
        }
    )*};
}

deserialize_from_str!(
    Provider: "telecmi, callr, callerdesk",
    Outcome: "answered, missed, canceled, abandoned, busy, failed, unknown",
    Direction: "inbound, outbound"
);
