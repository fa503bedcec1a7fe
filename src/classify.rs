//! Decides whether a call is a missed call worth an alert, from all the records of that call:
//! the call-level record decides, agents' unanswered rings only say whose phones rang.

use crate::domain::{CallRecord, Leg, Outcome};
use crate::store::StoredRecord;

/// What a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// A whole call: did the caller get an answer?
    Call,
    /// One agent's unanswered ring (TeleCMI leg b), for routes that opt in to per-agent alerts.
    AgentRing,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Call => "call",
            DecisionKind::AgentRing => "agent_ring",
        }
    }
}

impl std::str::FromStr for DecisionKind {
    type Err = crate::domain::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "call" => Ok(DecisionKind::Call),
            "agent_ring" => Ok(DecisionKind::AgentRing),
            other => Err(crate::domain::UnknownName(other.to_owned())),
        }
    }
}

/// The decision a newly stored record asks for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRequest {
    pub kind: DecisionKind,
    /// Unique per provider: the conversation for a call, the record for an agent's ring.
    pub subject: String,
}

/// Live events and start events never ask for a decision; a leg-b ring asks only for its own.
pub fn decision_for(record: &CallRecord) -> Option<DecisionRequest> {
    if record.outcome == Outcome::NotACallResult {
        return None;
    }
    match record.leg {
        Leg::Call => Some(DecisionRequest {
            kind: DecisionKind::Call,
            subject: record.conversation_id.clone(),
        }),
        Leg::Agent if record.outcome != Outcome::Answered => Some(DecisionRequest {
            kind: DecisionKind::AgentRing,
            subject: format!("ring:{}", record.dedup_key),
        }),
        Leg::Agent => None,
    }
}

/// How a call ended, seen from every record of it that has arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Someone answered: nobody is alerted, whatever the agents' rings said.
    Answered { agent: Option<String> },
    /// The caller was not helped; `record` is the call-level record that says so.
    NotAnswered {
        record: Box<StoredRecord>,
        /// Agents whose phones rang without being answered, in the order their records came.
        rang: Vec<String>,
    },
    /// No call-level record with an outcome: nothing to decide yet.
    Undecided,
}

impl Verdict {
    pub fn describe(&self) -> String {
        match self {
            Verdict::Answered { agent: Some(a) } => format!("answered by {a}"),
            Verdict::Answered { agent: None } => "answered".into(),
            Verdict::NotAnswered { record, .. } => record.record.outcome.to_string(),
            Verdict::Undecided => "undecided: no call-level record".into(),
        }
    }
}

/// The customer numbers an answered call reached: the caller of an inbound call, the number
/// dialled by an outbound one. Their open missed-call alerts are resolved by it.
pub fn reached_numbers(record: &CallRecord) -> Vec<String> {
    let number = match record.direction {
        crate::domain::Direction::Outbound => &record.called,
        _ => &record.caller,
    };
    number
        .iter()
        .map(|p| p.e164.clone().unwrap_or_else(|| p.raw.clone()))
        .collect()
}

/// Reads a call's records (any order, resends already merged) into one verdict.
pub fn classify_call(records: &[StoredRecord]) -> Verdict {
    let call_level = || {
        records
            .iter()
            .filter(|r| r.record.leg == Leg::Call && r.record.outcome != Outcome::NotACallResult)
    };
    if let Some(answered) = call_level().find(|r| r.record.outcome == Outcome::Answered) {
        return Verdict::Answered {
            agent: answered.record.agent.clone(),
        };
    }
    let Some(deciding) = call_level().max_by_key(|r| r.id) else {
        return Verdict::Undecided;
    };
    let mut rang: Vec<String> = Vec::new();
    for r in records.iter().filter(|r| r.record.leg == Leg::Agent) {
        if let Some(agent) = &r.record.agent
            && !rang.contains(agent)
        {
            rang.push(agent.clone());
        }
    }
    Verdict::NotAnswered {
        record: Box::new(deciding.clone()),
        rang,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn record(id: i64, leg: Leg, outcome: Outcome, agent: Option<&str>) -> StoredRecord {
        StoredRecord {
            id,
            received_at: Utc::now(),
            resends: 0,
            record: CallRecord {
                call_id: format!("c{id}"),
                conversation_id: "conv".into(),
                leg,
                dedup_key: format!("k{id}"),
                outcome,
                agent: agent.map(str::to_owned),
                ..crate::domain::test_record()
            },
        }
    }

    #[test]
    fn a_teammate_answering_outweighs_missed_rings() {
        let records = [
            record(1, Leg::Agent, Outcome::Missed, Some("alice")),
            record(2, Leg::Agent, Outcome::Missed, Some("bob")),
            record(3, Leg::Call, Outcome::Answered, Some("carol")),
        ];
        assert_eq!(
            classify_call(&records),
            Verdict::Answered {
                agent: Some("carol".into())
            }
        );
    }

    #[test]
    fn nobody_answered_names_the_agents_it_rang() {
        let records = [
            record(1, Leg::Agent, Outcome::Missed, Some("alice")),
            record(2, Leg::Agent, Outcome::Missed, Some("bob")),
            record(3, Leg::Agent, Outcome::Missed, Some("alice")),
            record(4, Leg::Call, Outcome::Missed, None),
        ];
        match classify_call(&records) {
            Verdict::NotAnswered { record, rang } => {
                assert_eq!(record.id, 4);
                assert_eq!(rang, vec!["alice", "bob"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rings_alone_decide_nothing() {
        let records = [record(1, Leg::Agent, Outcome::Missed, Some("alice"))];
        assert_eq!(classify_call(&records), Verdict::Undecided);
    }

    #[test]
    fn which_records_ask_for_a_decision() {
        let call = record(1, Leg::Call, Outcome::Missed, None).record;
        assert_eq!(
            decision_for(&call),
            Some(DecisionRequest {
                kind: DecisionKind::Call,
                subject: "conv".into()
            })
        );
        let ring = record(2, Leg::Agent, Outcome::Missed, Some("a")).record;
        assert_eq!(decision_for(&ring).unwrap().kind, DecisionKind::AgentRing);
        let live = record(3, Leg::Call, Outcome::NotACallResult, None).record;
        assert_eq!(decision_for(&live), None);
        let picked_up = record(4, Leg::Agent, Outcome::Answered, Some("a")).record;
        assert_eq!(decision_for(&picked_up), None);
    }
}
