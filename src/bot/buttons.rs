//! The inline buttons under a missed-call alert: what they say, and their `callback_data`, signed
//! so that a press can only touch the alert it was sent with, in the chat it was sent to.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use crate::render::CallView;

/// Bytes of HMAC-SHA256 kept in `callback_data`: 96 bits cannot be guessed, and the whole
/// string stays far inside Telegram's 64 bytes.
const MAC_BYTES: usize = 12;

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Claim,
    CalledBack,
    Release,
}

impl Action {
    fn code(self) -> char {
        match self {
            Action::Claim => 'c',
            Action::CalledBack => 'd',
            Action::Release => 'r',
        }
    }

    fn from_code(code: &str) -> Option<Action> {
        match code {
            "c" => Some(Action::Claim),
            "d" => Some(Action::CalledBack),
            "r" => Some(Action::Release),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Action::Claim => "I'll call back",
            Action::CalledBack => "Called back ✓",
            Action::Release => "Release",
        }
    }
}

/// A press whose data ringback wrote itself, for this chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Press {
    pub action: Action,
    /// The outbox message (one alert, one chat) the button belongs to.
    pub outbox_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ButtonError {
    #[error("this button is not one of ringback's")]
    Unreadable,
    #[error("this button was not made for this chat, or the bot's token changed since")]
    BadSignature,
}

/// Signs and checks button data with a key derived from the bot token, which every instance of
/// one bot shares; a new token makes old buttons answer "stale" rather than act.
#[derive(Clone)]
pub struct Buttons {
    key: [u8; 32],
}

impl Buttons {
    pub fn new(token: &str) -> Buttons {
        let mut hasher = Sha256::new();
        hasher.update(b"ringback inline buttons v1\0");
        hasher.update(token.as_bytes());
        Buttons {
            key: hasher.finalize().into(),
        }
    }

    fn mac(&self, action: Action, outbox_id: i64, chat_id: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("{}:{outbox_id}:{chat_id}", action.code()).as_bytes());
        mac
    }

    /// `rb:c:123:<mac>`.
    pub fn data(&self, action: Action, outbox_id: i64, chat_id: i64) -> String {
        let tag = self.mac(action, outbox_id, chat_id).finalize().into_bytes();
        format!(
            "rb:{}:{outbox_id}:{}",
            action.code(),
            URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES])
        )
    }

    /// Reads a press in `chat_id`; data made for another chat or altered is refused.
    pub fn parse(&self, data: &str, chat_id: i64) -> Result<Press, ButtonError> {
        let mut parts = data.split(':');
        let (Some("rb"), Some(code), Some(id), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ButtonError::Unreadable);
        };
        let action = Action::from_code(code).ok_or(ButtonError::Unreadable)?;
        let outbox_id: i64 = id.parse().map_err(|_| ButtonError::Unreadable)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| ButtonError::Unreadable)?;
        if tag.len() != MAC_BYTES {
            return Err(ButtonError::Unreadable);
        }
        self.mac(action, outbox_id, chat_id)
            .verify_truncated_left(&tag)
            .map_err(|_| ButtonError::BadSignature)?;
        Ok(Press { action, outbox_id })
    }

    /// The buttons for the calls of one message (`(outbox id, call)`): "I'll call back" while a
    /// call is open, "Called back ✓" and "Release" once claimed, none once handled. With several
    /// calls in one message each button names its caller.
    pub fn keyboard(&self, chat_id: i64, calls: &[(i64, &CallView)]) -> InlineKeyboardMarkup {
        let several = calls.len() > 1;
        let mut rows = Vec::new();
        for (outbox_id, call) in calls {
            if call.kind != "missed_call" {
                continue;
            }
            let actions: &[Action] = match call.status.as_str() {
                "open" => &[Action::Claim],
                "claimed" => &[Action::CalledBack, Action::Release],
                _ => &[],
            };
            let row: Vec<InlineKeyboardButton> = actions
                .iter()
                .map(|action| {
                    let label = match (several, &call.caller_display) {
                        (true, Some(number)) => format!("{number}: {}", action.label()),
                        _ => action.label().to_owned(),
                    };
                    InlineKeyboardButton::callback(label, self.data(*action, *outbox_id, chat_id))
                })
                .collect();
            if !row.is_empty() {
                rows.push(row);
            }
        }
        InlineKeyboardMarkup::new(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_fits_telegram_and_round_trips() {
        let b = Buttons::new("123:abc");
        for action in [Action::Claim, Action::CalledBack, Action::Release] {
            let data = b.data(action, i64::MAX, -1_001_234_567_890);
            assert!(data.len() <= 64, "{data} is {} bytes", data.len());
            assert_eq!(
                b.parse(&data, -1_001_234_567_890),
                Ok(Press {
                    action,
                    outbox_id: i64::MAX
                })
            );
        }
    }

    #[test]
    fn forged_or_foreign_data_is_refused() {
        let b = Buttons::new("123:abc");
        let data = b.data(Action::Claim, 7, -100);
        // Another chat, another alert, another action, another token: all refused.
        assert_eq!(b.parse(&data, -200), Err(ButtonError::BadSignature));
        let other_alert = data.replacen(":7:", ":8:", 1);
        assert_eq!(b.parse(&other_alert, -100), Err(ButtonError::BadSignature));
        let other_action = data.replacen("rb:c:", "rb:d:", 1);
        assert_eq!(b.parse(&other_action, -100), Err(ButtonError::BadSignature));
        assert_eq!(
            Buttons::new("456:def").parse(&data, -100),
            Err(ButtonError::BadSignature)
        );
        for junk in [
            "",
            "rb",
            "rb:x:1:AAAA",
            "rb:c:one:AAAA",
            "rb:c:1:!!",
            "rb:c:1:AAAA:extra",
        ] {
            assert_eq!(b.parse(junk, -100), Err(ButtonError::Unreadable), "{junk}");
        }
    }

    #[test]
    fn buttons_follow_the_alert_state() {
        let b = Buttons::new("t");
        let mut call = crate::render::sample_call();
        let labels = |call: &CallView| -> Vec<Vec<String>> {
            b.keyboard(-100, &[(1, call)])
                .inline_keyboard
                .iter()
                .map(|row| row.iter().map(|button| button.text.clone()).collect())
                .collect()
        };
        assert_eq!(labels(&call), [["I'll call back"]]);
        call.status = "claimed".into();
        assert_eq!(labels(&call), [["Called back ✓", "Release"]]);
        call.status = "called_back".into();
        assert!(labels(&call).is_empty());
        call.status = "open".into();
        call.kind = "agent_ring".into();
        assert!(labels(&call).is_empty());
    }
}
