//! Every provider parser returns a record or an error for any input, and never panics.

use proptest::prelude::*;
use ringback::domain::Provider;
use ringback::normalize::{Inbound, ParseContext, parse};
use serde_json::{Map, Value};

/// Field names each provider's parser reads, so generated objects reach past the first check.
const KEYS: &[&str] = &[
    // TeleCMI
    "type",
    "direction",
    "leg",
    "cmiuuid",
    "conversation_uuid",
    "user",
    "status",
    "to",
    "from",
    "time",
    "team",
    "hangup_reason",
    "virtual_number",
    "answeredsec",
    "billedsec",
    "record",
    "filename",
    "custom",
    "extra_params",
    "appid",
    "app_id",
    "ivr_name",
    "start_time",
    "answer_time",
    "end_time",
    "name",
    // Callr
    "event_id",
    "data",
    "cdr",
    "callid",
    "callerNumber",
    "callerName",
    "callerRestricted",
    "callee",
    "started",
    "answered",
    "ended",
    "durationTotal",
    "durationAnswered",
    "hangupCause",
    "hangupSource",
    "scenarioName",
    // CallerDesk
    "CallSid",
    "Uniqueid",
    "Status",
    "callstatus",
    "StartTime",
    "EndTime",
    "CallDuration",
    "TalkDuration",
    "SourceNumber",
    "DestinationNumber",
    "DialWhomNumber",
    "receiver_name",
    "call_group",
    "Direction",
    "campid",
    "LegB_Picked_time",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            Just(0),
            Just(-1),
            Just(100_000_000_000),
            Just(9_999_999_999_999),
        ]
        .prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
        "[0-9 +\\-:T.Z]{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("0000-00-00 00:00:00"),
            Just("2023-01-02 14:32:40"),
            Just("2025-03-10T09:15:00Z"),
            Just("true"),
            Just("b"),
            Just("missed"),
            Just("NOANSWER(19)"),
            Just("live_call"),
            Just("v2.call.inbound.ended"),
            Just("9999999999999999999"),
            Just("-1"),
            Just("1e308"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..8).prop_map(|m| {
                Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn provider_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(KEYS), json_value(), 0..20)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn run_all(is_get: bool, content_type: Option<&str>, query: &[(String, String)], body: &[u8]) {
    let ctx = ParseContext::default();
    for provider in Provider::ALL {
        let inbound = Inbound {
            is_get,
            content_type,
            query,
            body,
        };
        let _ = parse(provider, &inbound, &ctx);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512), get in any::<bool>()) {
        run_all(get, None, &[], &body);
        run_all(false, Some("application/json"), &[], &body);
        run_all(false, Some("application/x-www-form-urlencoded"), &[], &body);
    }

    #[test]
    fn arbitrary_json(value in json_value()) {
        run_all(false, Some("application/json"), &[], value.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_provider_objects(value in provider_object(), wrap in 0usize..3) {
        let value = match wrap {
            0 => value,
            1 => serde_json::json!({ "type": "v2.call.inbound.ended", "event_id": "e", "data": value }),
            _ => serde_json::json!({ "cdr": value }),
        };
        run_all(false, Some("application/json"), &[], value.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_query_strings(pairs in prop::collection::vec((prop::sample::select(KEYS), ".{0,24}"), 0..20)) {
        let pairs: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        run_all(true, None, &pairs, b"");
        let form = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        run_all(false, Some("application/x-www-form-urlencoded"), &[], form.as_bytes());
    }
}
