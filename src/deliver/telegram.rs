//! Sends alert messages through the Telegram Bot API with teloxide, at the configured `api_url`,
//! and sorts its errors into retry-later, give-up and chat-migrated.

use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::{LinkPreviewOptions, MessageId, ParseMode, ThreadId};
use teloxide::{ApiError, RequestError};

use super::DeliveryError;
use crate::config::TelegramConfig;

#[derive(Clone)]
pub struct Telegram {
    bot: Bot,
}

/// Where and how one message goes.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub chat_id: i64,
    pub thread: Option<i32>,
    pub silent: bool,
}

impl Telegram {
    /// `None` when no bot token is configured.
    pub fn from_config(config: &TelegramConfig) -> Option<Telegram> {
        let token = config.token.as_ref().filter(|t| !t.expose().is_empty())?;
        let client = teloxide::net::default_reqwest_settings()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .build()
            .ok()?;
        let bot = Bot::with_client(token.expose(), client).set_api_url(config.api_url.clone());
        Some(Telegram { bot })
    }

    /// Sends one message; returns its Telegram message id.
    pub async fn send(&self, target: Target, text: &str, html: bool) -> Result<i32, DeliveryError> {
        let mut request = self
            .bot
            .send_message(ChatId(target.chat_id), text)
            .link_preview_options(LinkPreviewOptions {
                is_disabled: true,
                url: None,
                prefer_small_media: false,
                prefer_large_media: false,
                show_above_text: false,
            })
            .disable_notification(target.silent);
        if html {
            request = request.parse_mode(ParseMode::Html);
        }
        if let Some(thread) = target.thread {
            request = request.message_thread_id(ThreadId(MessageId(thread)));
        }
        match request.await {
            Ok(message) => Ok(message.id.0),
            Err(e) => Err(classify(e)),
        }
    }
}

fn classify(e: RequestError) -> DeliveryError {
    match e {
        RequestError::RetryAfter(seconds) => DeliveryError::RetryAfter(seconds.duration()),
        RequestError::MigrateToChatId(chat) => DeliveryError::ChatMigrated(chat.0),
        RequestError::Api(ApiError::CantParseEntities(detail)) => DeliveryError::BadMarkup(detail),
        RequestError::Api(api) => {
            let text = api.to_string();
            let permanent = matches!(
                api,
                ApiError::BotBlocked
                    | ApiError::BotKicked
                    | ApiError::BotKickedFromSupergroup
                    | ApiError::ChatNotFound
                    | ApiError::UserDeactivated
                    | ApiError::CantInitiateConversation
                    | ApiError::CantTalkWithBots
                    | ApiError::MessageIsTooLong
                    | ApiError::MessageTextIsEmpty
                    | ApiError::NotEnoughRightsToPostMessages
                    | ApiError::InvalidToken
            ) || text.starts_with("Bad Request")
                || text.starts_with("Forbidden")
                || text.starts_with("Unauthorized");
            if permanent {
                DeliveryError::Permanent(format!("Telegram refused the message: {text}"))
            } else {
                DeliveryError::Transient(format!("Telegram answered: {text}"))
            }
        }
        // Timeouts, refused connections, and 5xx pages that are not Bot API JSON.
        RequestError::Network(e) => DeliveryError::Transient(format!("network error: {e}")),
        RequestError::InvalidJson { source, .. } => DeliveryError::Transient(format!(
            "Telegram answered something other than Bot API JSON: {source}"
        )),
        RequestError::Io(e) => DeliveryError::Transient(format!("I/O error: {e}")),
    }
}
