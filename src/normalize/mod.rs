//! Turns each provider's webhook payload (JSON, form or query string) into a [`CallRecord`].
//! One file per provider; this file holds what they share: lenient field access, phones, times.

pub mod callerdesk;
pub mod callr;
pub mod phone;
pub mod telecmi;

use chrono::{DateTime, TimeZone, Utc};
use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::domain::{CallRecord, Provider};

pub use phone::Region;

/// What a provider's request looks like to a parser: transport details already stripped of secrets.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub is_get: bool,
    pub content_type: Option<&'a str>,
    /// Query-string pairs, without ringback's own `token`.
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Per-provider settings the parsers need from config.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// Region used to read numbers written without a country code.
    pub region: Region,
    /// Time zone of local timestamps that carry no offset (CallerDesk).
    pub timezone: chrono_tz::Tz,
}

impl Default for ParseContext {
    fn default() -> Self {
        ParseContext {
            region: Region::default(),
            timezone: chrono_tz::Asia::Kolkata,
        }
    }
}

/// Why a payload could not become a call record. Every message names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body could not be read at all (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    /// The body was read, but a field is missing or holds something unusable (HTTP 422).
    #[error("field `{field}` {problem}")]
    Invalid { field: String, problem: String },
}

impl ParseError {
    pub fn invalid(field: &str, problem: impl Into<String>) -> Self {
        ParseError::Invalid {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    pub fn missing(field: &str, why: &str) -> Self {
        Self::invalid(field, format!("is missing: {why}"))
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ParseError::Malformed(_) => None,
            ParseError::Invalid { field, .. } => Some(field),
        }
    }
}

/// Parses one request from `provider` into a call record.
pub fn parse(
    provider: Provider,
    inbound: &Inbound<'_>,
    ctx: &ParseContext,
) -> Result<CallRecord, ParseError> {
    match provider {
        Provider::Telecmi => telecmi::parse(&Fields::from_inbound(inbound)?, ctx),
        Provider::Callr => callr::parse(Fields::from_json(inbound.body)?, ctx),
        Provider::Callerdesk => callerdesk::parse(&Fields::from_inbound(inbound)?, ctx),
    }
}

/// A flat object of provider fields with the coercions real providers need: numbers sent as
/// strings, `"true"` for booleans, stray spaces, `""` for absent.
// The fields borrow from the request: a JSON value is kept as the text that was sent and read
// only if a parser asks for it, since most of a payload's fields are never looked at, and a
// tree of owned values cost about a tenth of a webhook's instructions (see BENCHMARKS.md).
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    // A payload has a few dozen fields at most: a list searched from its end (the last of a
    // repeated key wins, as in a JSON object read into a map) beats hashing each name.
    entries: Vec<(Cow<'a, str>, Field<'a>)>,
    /// Prefix for field names in errors, so a nested field reads `data.callid`.
    path: String,
}

#[derive(Debug, Clone)]
enum Field<'a> {
    /// A JSON value as sent.
    Json(&'a RawValue),
    /// A query-string or form value, which is always text.
    Text(Cow<'a, str>),
}

/// A field's value, read.
enum Val<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Text(Cow<'a, str>),
    Array(&'a RawValue),
    Object(&'a RawValue),
}

impl Val<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "a boolean",
            Val::Number(_) => "a number",
            Val::Text(_) => "text",
            Val::Array(_) => "an array",
            Val::Object(_) => "an object",
        }
    }
}

impl<'a> Field<'a> {
    fn read(&self) -> Val<'a> {
        let raw = match self {
            Field::Text(t) => return Val::Text(t.clone()),
            Field::Json(raw) => *raw,
        };
        let text: &'a str = raw.get();
        // serde_json has checked the value's syntax already: its first byte tells its kind, and
        // a string read again cannot fail.
        match text.as_bytes().first() {
            Some(b'n') => Val::Null,
            Some(b't') => Val::Bool(true),
            Some(b'f') => Val::Bool(false),
            Some(b'[') => Val::Array(raw),
            Some(b'{') => Val::Object(raw),
            // Without escapes the text between the quotes is the string itself.
            Some(b'"') if !text.contains('\\') => {
                Val::Text(Cow::Borrowed(&text[1..text.len() - 1]))
            }
            Some(b'"') => Val::Text(Cow::Owned(
                serde_json::from_str::<String>(text).unwrap_or_default(),
            )),
            // Whole numbers, the usual kind, without a JSON reader's set-up.
            _ => match text.parse::<i64>() {
                Ok(n) => Val::Number(n.into()),
                // A number out of a float's range (`1e400`) stays as written, so that a parser
                // asking for it names the field rather than reading it as absent.
                Err(_) => {
                    serde_json::from_str(text).map_or(Val::Text(Cow::Borrowed(text)), Val::Number)
                }
            },
        }
    }
}

/// A JSON object's members, each value kept as sent.
struct Members<'a>(Vec<(Cow<'a, str>, Field<'a>)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push((key, Field::Json(value)));
                }
                Ok(Members(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A member's name, borrowed unless it holds escapes (serde's own `Cow` always copies).
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> Fields<'a> {
    /// Reads the query string (GET) or the body as JSON or form data, whichever was sent.
    pub fn from_inbound(inbound: &Inbound<'a>) -> Result<Self, ParseError> {
        let body_is_blank = inbound.body.iter().all(u8::is_ascii_whitespace);
        if inbound.is_get || body_is_blank {
            if inbound.query.is_empty() {
                return Err(ParseError::Malformed(
                    "the request carries no payload: expected a JSON or form body, or the CDR \
                     fields in the query string"
                        .into(),
                ));
            }
            return Ok(Self::from_pairs(
                inbound.query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ));
        }
        let content_type = inbound.content_type.unwrap_or("").to_ascii_lowercase();
        let looks_like_json = inbound
            .body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
        // Providers mislabel bodies (JSON sent as form data, or with no type), and a form body
        // never starts with `{`, so the body's own shape wins over its Content-Type.
        if looks_like_json || content_type.contains("json") {
            Self::from_json(inbound.body)
        } else {
            let text = std::str::from_utf8(inbound.body).map_err(|_| {
                ParseError::Malformed("the form body is not valid UTF-8 text".into())
            })?;
            if !text.contains('=') {
                return Err(ParseError::Malformed(
                    "the body is neither JSON nor form data (`key=value&...`)".into(),
                ));
            }
            Ok(Self::from_pairs(form_urlencoded::parse(text.as_bytes())))
        }
    }

    pub fn from_json(body: &'a [u8]) -> Result<Self, ParseError> {
        let malformed = |e: &dyn std::fmt::Display| {
            ParseError::Malformed(format!("the body is not valid JSON: {e}"))
        };
        let text = std::str::from_utf8(body).map_err(|e| malformed(&e))?;
        if text.trim_start().starts_with('{') {
            let Members(entries) = serde_json::from_str(text).map_err(|e| malformed(&e))?;
            return Ok(Fields {
                entries,
                path: String::new(),
            });
        }
        // Not an object: read whole, so that a syntax error is told as one, and valid JSON of
        // another kind by its kind.
        let value: &RawValue = serde_json::from_str(text).map_err(|e| malformed(&e))?;
        Err(ParseError::invalid(
            "(body)",
            format!(
                "must be a JSON object, got {}",
                Field::Json(value).read().kind()
            ),
        ))
    }

    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<Cow<'a, str>>,
        V: Into<Cow<'a, str>>,
    {
        Fields {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), Field::Text(v.into())))
                .collect(),
            path: String::new(),
        }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn value(&self, key: &str) -> Option<Val<'a>> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.read())
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// A text value, trimmed; numbers and booleans are written out; `""` and `null` are absent.
    pub fn text(&self, key: &str) -> Result<Option<String>, ParseError> {
        match self.value(key) {
            None | Some(Val::Null) => Ok(None),
            Some(Val::Text(s)) => {
                let t = s.trim();
                Ok((!t.is_empty()).then(|| t.to_owned()))
            }
            Some(Val::Number(n)) => Ok(Some(n.to_string())),
            Some(Val::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(ParseError::invalid(
                &self.name(key),
                format!("must be text or a number, got {}", other.kind()),
            )),
        }
    }

    /// The first of `keys` that holds text.
    pub fn text_of(&self, keys: &[&str]) -> Result<Option<String>, ParseError> {
        for key in keys {
            if let Some(v) = self.text(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Text kept exactly as sent, for fields that carry encoded data of their own (TeleCMI `custom`
    /// holds JSON that is not always valid); an object or array is written back as JSON.
    pub fn verbatim(&self, key: &str) -> Option<String> {
        match self.value(key)? {
            Val::Null => None,
            Val::Text(s) if s.is_empty() => None,
            Val::Text(s) => Some(s.into_owned()),
            Val::Number(n) => Some(n.to_string()),
            Val::Bool(b) => Some(b.to_string()),
            // Written compactly, whatever spacing the provider sent.
            Val::Array(raw) | Val::Object(raw) => {
                serde_json::from_str::<serde_json::Value>(raw.get())
                    .ok()
                    .map(|v| v.to_string())
            }
        }
    }

    /// A whole number; numeric strings and integral floats are accepted.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ParseError> {
        let bad = |shown: String| {
            ParseError::invalid(
                &self.name(key),
                format!("must be a whole number, got {shown}"),
            )
        };
        match self.value(key) {
            None | Some(Val::Null) => Ok(None),
            Some(Val::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().and_then(float_to_int))
                .map(Some)
                .ok_or_else(|| bad(n.to_string())),
            Some(Val::Text(s)) => {
                let t = s.trim();
                if t.is_empty() {
                    return Ok(None);
                }
                t.parse::<i64>()
                    .ok()
                    .or_else(|| t.parse::<f64>().ok().and_then(float_to_int))
                    .map(Some)
                    .ok_or_else(|| bad(format!("{t:?}")))
            }
            Some(other) => Err(bad(other.kind().to_owned())),
        }
    }

    /// A boolean; `"true"`/`"false"`, `"1"`/`"0"`, `"yes"`/`"no"` and 0/1 are accepted.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ParseError> {
        let bad = |shown: String| {
            ParseError::invalid(
                &self.name(key),
                format!("must be true or false, got {shown}"),
            )
        };
        match self.value(key) {
            None | Some(Val::Null) => Ok(None),
            Some(Val::Bool(b)) => Ok(Some(b)),
            Some(Val::Number(n)) => match n.as_i64() {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(bad(n.to_string())),
            },
            Some(Val::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "" => Ok(None),
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(bad(format!("{s:?}"))),
            },
            Some(other) => Err(bad(other.kind().to_owned())),
        }
    }

    /// The nested object `key` holds, if any, taken out of these fields rather than copied.
    pub fn take_object(&mut self, key: &str) -> Result<Option<Fields<'a>>, ParseError> {
        let taken = self.value(key);
        self.entries.retain(|(k, _)| k != key);
        match taken {
            None | Some(Val::Null) => Ok(None),
            Some(Val::Object(raw)) => {
                let Members(entries) = serde_json::from_str(raw.get()).map_err(|e| {
                    ParseError::invalid(&self.name(key), format!("cannot be read: {e}"))
                })?;
                Ok(Some(Fields {
                    entries,
                    path: self.name(key),
                }))
            }
            Some(other) => Err(ParseError::invalid(
                &self.name(key),
                format!("must be an object, got {}", other.kind()),
            )),
        }
    }

    /// An instant given as epoch milliseconds (or seconds: see [`epoch_to_utc`]).
    pub fn epoch(&self, key: &str) -> Result<Option<DateTime<Utc>>, ParseError> {
        match self.int(key)? {
            None | Some(0) => Ok(None),
            Some(n) => epoch_to_utc(n)
                .map(Some)
                .ok_or_else(|| ParseError::invalid(&self.name(key), format!("{n} is not a time"))),
        }
    }
}

fn float_to_int(f: f64) -> Option<i64> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// Epoch timestamps: TeleCMI sends milliseconds, its PIOPIY API seconds. Values below 10^11 are
/// read as seconds, because 10^11 ms is in 1973 while 10^11 s is past the year 5000.
pub fn epoch_to_utc(n: i64) -> Option<DateTime<Utc>> {
    if n <= 0 {
        return None;
    }
    if n < 100_000_000_000 {
        Utc.timestamp_opt(n, 0).single()
    } else {
        Utc.timestamp_millis_opt(n).single()
    }
}

/// Seconds between two instants, if both are known and in order.
pub fn seconds_between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<i64> {
    let secs = (to? - from?).num_seconds();
    (secs >= 0).then_some(secs)
}

/// Lower-cases and keeps only letters, so `No Answer`, `NO_ANSWER` and `noanswer` compare equal.
pub fn letters_only(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn fields(v: Value) -> Fields<'static> {
        // Fields borrow from their payload, which a test keeps for its whole run.
        Fields::from_json(v.to_string().leak().as_bytes()).unwrap()
    }

    #[test]
    fn coerces_what_providers_send() {
        let f = fields(json!({
            "num": 919999999999u64, "numstr": " 42 ", "float": 11.0, "t": "true", "one": 1,
            "empty": "", "null": null, "obj": {"a": 1}, "word": "abc"
        }));
        assert_eq!(f.text("num").unwrap().as_deref(), Some("919999999999"));
        assert_eq!(f.int("numstr").unwrap(), Some(42));
        assert_eq!(f.int("float").unwrap(), Some(11));
        assert_eq!(f.bool("t").unwrap(), Some(true));
        assert_eq!(f.bool("one").unwrap(), Some(true));
        assert_eq!(f.text("empty").unwrap(), None);
        assert_eq!(f.int("empty").unwrap(), None);
        assert_eq!(f.text("null").unwrap(), None);
        assert_eq!(f.text("absent").unwrap(), None);
        let err = f.int("word").unwrap_err();
        assert_eq!(err.field(), Some("word"));
        assert!(err.to_string().contains("whole number"), "{err}");
        assert!(f.text("obj").is_err());
        assert!(f.bool("word").is_err());
        let mut f = f;
        let nested = f.take_object("obj").unwrap().unwrap();
        assert_eq!(nested.int("a").unwrap(), Some(1));
        assert_eq!(nested.text("a").unwrap().as_deref(), Some("1"));
        assert!(!f.has("obj"), "taken out, not copied");
    }

    #[test]
    fn values_read_from_the_payload_as_sent_match_what_a_json_tree_reads() {
        let body = br#"{ "say\u0020hi" : "caf\u00e9 \"x\"", "n": 1.5e3, "big": 918044440000,
            "dup": "first", "dup": "last", "custom": { "a" : [1, 2] }, "t": true, "z": null }"#;
        let f = Fields::from_json(body).unwrap();
        assert_eq!(f.text("say hi").unwrap().as_deref(), Some("café \"x\""));
        assert_eq!(f.text("n").unwrap().as_deref(), Some("1500.0"));
        assert_eq!(f.int("n").unwrap(), Some(1500));
        assert_eq!(f.text("big").unwrap().as_deref(), Some("918044440000"));
        assert_eq!(f.text("dup").unwrap().as_deref(), Some("last"));
        assert_eq!(f.verbatim("custom").as_deref(), Some(r#"{"a":[1,2]}"#));
        assert_eq!(f.verbatim("t").as_deref(), Some("true"));
        assert_eq!(f.verbatim("z"), None);
        let huge = Fields::from_json(br#"{"time": 1e400}"#).unwrap();
        let err = huge.int("time").unwrap_err();
        assert_eq!(err.field(), Some("time"));
        assert!(err.to_string().contains("1e400"), "{err}");
        let err = f.text("custom").unwrap_err().to_string();
        assert!(err.contains("got an object"), "{err}");
        for (body, kind) in [
            (&b"[1]"[..], "an array"),
            (b" 7 ", "a number"),
            (b"\"x\"", "text"),
        ] {
            let err = Fields::from_json(body).unwrap_err();
            assert!(matches!(err, ParseError::Invalid { .. }), "{err}");
            assert!(err.to_string().contains(kind), "{err}");
        }
        for body in [&b"{\"a\": }"[..], b"{\"a\": 1} x", b"\xff{}"] {
            let err = Fields::from_json(body).unwrap_err();
            assert!(matches!(err, ParseError::Malformed(_)), "{err}");
            assert!(
                err.to_string().starts_with("the body is not valid JSON"),
                "{err}"
            );
        }
    }

    #[test]
    fn nested_field_errors_name_the_path() {
        let mut f = fields(json!({"data": {"callid": [1]}}));
        let err = f
            .take_object("data")
            .unwrap()
            .unwrap()
            .text("callid")
            .unwrap_err();
        assert_eq!(err.field(), Some("data.callid"));
    }

    #[test]
    fn reads_json_form_and_query() {
        let q = vec![("a".to_owned(), "1".to_owned())];
        let get = Inbound {
            is_get: true,
            content_type: None,
            query: &q,
            body: b"",
        };
        assert_eq!(
            Fields::from_inbound(&get).unwrap().int("a").unwrap(),
            Some(1)
        );
        let form = Inbound {
            is_get: false,
            content_type: Some("application/x-www-form-urlencoded"),
            query: &[],
            body: b"a=2&b=x+y",
        };
        let f = Fields::from_inbound(&form).unwrap();
        assert_eq!(f.int("a").unwrap(), Some(2));
        assert_eq!(f.text("b").unwrap().as_deref(), Some("x y"));
        let json = Inbound {
            is_get: false,
            content_type: None,
            query: &[],
            body: br#" {"a": 3}"#,
        };
        assert_eq!(
            Fields::from_inbound(&json).unwrap().int("a").unwrap(),
            Some(3)
        );
        let mislabelled = Inbound {
            content_type: Some("application/x-www-form-urlencoded"),
            ..json
        };
        assert_eq!(
            Fields::from_inbound(&mislabelled)
                .unwrap()
                .int("a")
                .unwrap(),
            Some(3)
        );
        let bad = Inbound {
            is_get: false,
            content_type: Some("application/json"),
            query: &[],
            body: b"{not json",
        };
        assert!(matches!(
            Fields::from_inbound(&bad),
            Err(ParseError::Malformed(_))
        ));
        let array = Inbound {
            body: b"[1,2]",
            ..bad
        };
        assert!(matches!(
            Fields::from_inbound(&array),
            Err(ParseError::Invalid { .. })
        ));
    }

    #[test]
    fn epoch_accepts_seconds_and_milliseconds() {
        let ms = epoch_to_utc(1_650_625_417_426).unwrap();
        let s = epoch_to_utc(1_650_625_417).unwrap();
        assert_eq!(ms.timestamp(), s.timestamp());
        assert_eq!(ms.timestamp_subsec_millis(), 426);
        assert_eq!(epoch_to_utc(0), None);
        assert_eq!(epoch_to_utc(-5), None);
    }
}
