//! Phone numbers as providers write them (`919999999999`, `09810000001`, `+33 6 12 34 56 78`)
//! read into E.164 with the `phonenumber` crate, using a per-provider default region.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use phonenumber::{Mode, country};
use serde::{Deserialize, Deserializer};

use crate::domain::PhoneNumber;

/// An ISO 3166 region code such as `IN` or `FR`, used for numbers that carry no country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(pub country::Id);

impl Default for Region {
    fn default() -> Self {
        Region(country::Id::IN)
    }
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .to_ascii_uppercase()
            .parse::<country::Id>()
            .map(Region)
            .map_err(|_| {
                format!(
                    "`{s}` is not an ISO 3166 region code; use one such as \"IN\", \"FR\" or \"US\""
                )
            })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Reads `raw` as a phone number; `None` when it holds no digits at all.
pub fn normalize(raw: &str, region: Region) -> Option<PhoneNumber> {
    let raw = raw.trim();
    if !raw.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(PhoneNumber {
        raw: raw.to_owned(),
        e164: to_e164(raw, region),
    })
}

/// Reading a number against the numbering plans costs tens of microseconds, and the same numbers
/// come back all day (a line's own number in every record, repeat callers): answers are kept,
/// up to a bound, after which the cache starts again.
struct Memo {
    // Keyed by region first, so a hit is looked up by `&str` without building a key.
    answers: std::sync::Mutex<HashMap<Option<Region>, Answers>>,
}

/// A reading (or formatting) of each text seen: `None` when it is no valid number.
type Answers = HashMap<String, Option<String>>;

impl Memo {
    const ENTRIES: usize = 10_000;

    fn new() -> Memo {
        Memo {
            answers: std::sync::Mutex::default(),
        }
    }

    fn get(
        &self,
        region: Option<Region>,
        text: &str,
        read: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        if let Some(known) = self
            .answers
            .lock()
            .expect("not poisoned")
            .get(&region)
            .and_then(|answers| answers.get(text))
        {
            return known.clone();
        }
        let answer = read();
        let mut answers = self.answers.lock().expect("not poisoned");
        let answers = answers.entry(region).or_default();
        if answers.len() >= Self::ENTRIES {
            answers.clear();
        }
        answers.insert(text.to_owned(), answer.clone());
        answer
    }
}

fn to_e164(raw: &str, region: Region) -> Option<String> {
    static READ: LazyLock<Memo> = LazyLock::new(Memo::new);
    READ.get(Some(region), raw, || read_e164(raw, region))
}

fn read_e164(raw: &str, region: Region) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let candidates: Vec<(Option<country::Id>, String)> = if raw.starts_with('+') {
        vec![(None, format!("+{digits}"))]
    } else if let Some(rest) = digits.strip_prefix("00") {
        vec![(None, format!("+{rest}")), (Some(region.0), digits.clone())]
    } else {
        // Providers often drop the `+` but keep the country code (TeleCMI sends 919999999999):
        // the national reading is tried first, then the international one.
        vec![
            (Some(region.0), digits.clone()),
            (None, format!("+{digits}")),
        ]
    };
    candidates.into_iter().find_map(|(region, text)| {
        let number = phonenumber::parse(region, &text).ok()?;
        // What the crate's E.164 formatter writes, without the search for a national layout
        // it makes first and then does not use (a fifth of a new number's reading).
        phonenumber::is_valid(&number)
            .then(|| format!("+{}{}", number.country().code(), number.national()))
    })
}

/// `+91 98100 00001`: the international format a person reads, and Telegram makes tappable.
/// Every alert shows its caller's number this way: kept like the readings above.
pub fn international(e164: &str) -> Option<String> {
    static FORMATTED: LazyLock<Memo> = LazyLock::new(Memo::new);
    FORMATTED.get(None, e164, || {
        let number = phonenumber::parse(None, e164).ok()?;
        Some(number.format().mode(Mode::International).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(raw: &str, region: &str) -> Option<String> {
        normalize(raw, region.parse().unwrap()).and_then(|p| p.e164)
    }

    #[test]
    fn reads_numbers_in_the_forms_providers_send() {
        assert_eq!(e164("919810000001", "IN").as_deref(), Some("+919810000001"));
        assert_eq!(e164("9810000001", "IN").as_deref(), Some("+919810000001"));
        assert_eq!(e164("09810000001", "IN").as_deref(), Some("+919810000001"));
        assert_eq!(
            e164("+33 6 12 34 56 78", "IN").as_deref(),
            Some("+33612345678")
        );
        assert_eq!(e164("0612345678", "FR").as_deref(), Some("+33612345678"));
        assert_eq!(e164("0033612345678", "IN").as_deref(), Some("+33612345678"));
        // A number valid nowhere is kept as received, without an E.164 form.
        let kept = normalize("440000000000", "IN".parse().unwrap()).unwrap();
        assert_eq!(kept.raw, "440000000000");
        assert_eq!(kept.e164, None);
        assert_eq!(normalize("anonymous", Region::default()), None);
        assert_eq!(normalize("", Region::default()), None);
    }

    #[test]
    fn writes_e164_as_the_crates_own_formatter_does() {
        // Italian fixed lines keep their leading zero after the country code; the others do not
        // have one to keep.
        for (raw, region) in [
            ("+39 06 6982 1234", "IT"),
            ("0669821234", "IT"),
            ("+44 20 7946 0958", "GB"),
            ("+1 212 555 0123", "US"),
            ("919810000001", "IN"),
            ("0612345678", "FR"),
            ("+971 2 234 5678", "IN"),
        ] {
            let region: Region = region.parse().unwrap();
            let ours = read_e164(raw, region).unwrap_or_else(|| panic!("{raw} reads"));
            let number = phonenumber::parse(Some(region.0), raw).unwrap();
            assert_eq!(ours, number.format().mode(Mode::E164).to_string(), "{raw}");
        }
        assert_eq!(
            read_e164("+39 06 6982 1234", Region::default()).as_deref(),
            Some("+390669821234")
        );
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(
            international("+919810000001").as_deref(),
            Some("+91 98100 00001")
        );
    }

    #[test]
    fn rejects_unknown_regions() {
        assert!("ZZ".parse::<Region>().is_err());
        assert_eq!("fr".parse::<Region>().unwrap().to_string(), "FR");
    }
}
