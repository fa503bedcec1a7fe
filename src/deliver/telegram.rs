//! Sends alert messages through the Telegram Bot API with teloxide, at the configured `api_url`,
//! and sorts its errors into retry-later, give-up and chat-migrated.

use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardMarkup, LinkPreviewOptions, MessageId, ParseMode, ThreadId};
use teloxide::{ApiError, RequestError};

use super::DeliveryError;
use super::limits::Limits;
use crate::bot::buttons::Buttons;
use crate::config::TelegramConfig;

#[derive(Clone)]
pub struct Telegram {
    bot: Bot,
    buttons: Buttons,
    limits: Limits,
}

fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: true,
        url: None,
        prefer_small_media: false,
        prefer_large_media: false,
        show_above_text: false,
    }
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
        Some(Telegram {
            bot,
            buttons: Buttons::new(token.expose()),
            limits: config.limits,
        })
    }

    /// The teloxide bot, for the update handler's own requests.
    pub fn bot(&self) -> &Bot {
        &self.bot
    }

    pub fn buttons(&self) -> &Buttons {
        &self.buttons
    }

    /// The sending limits to keep for this bot.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Sends one message (with inline buttons when `keyboard` has any); returns its message id.
    pub async fn send(
        &self,
        target: Target,
        text: &str,
        html: bool,
        keyboard: &InlineKeyboardMarkup,
    ) -> Result<i32, DeliveryError> {
        let mut request = self
            .bot
            .send_message(ChatId(target.chat_id), text)
            .link_preview_options(no_preview())
            .disable_notification(target.silent);
        if html {
            request = request.parse_mode(ParseMode::Html);
        }
        if !keyboard.inline_keyboard.is_empty() {
            request = request.reply_markup(keyboard.clone());
        }
        if let Some(thread) = target.thread {
            request = request.message_thread_id(ThreadId(MessageId(thread)));
        }
        match request.await {
            Ok(message) => Ok(message.id.0),
            Err(e) => Err(classify(e)),
        }
    }

    /// Replaces a sent message's text and buttons (an empty keyboard removes them). A message
    /// that already reads so counts as edited.
    pub async fn edit(
        &self,
        chat_id: i64,
        message_id: i32,
        text: &str,
        html: bool,
        keyboard: &InlineKeyboardMarkup,
    ) -> Result<(), DeliveryError> {
        let mut request = self
            .bot
            .edit_message_text(ChatId(chat_id), MessageId(message_id), text)
            .link_preview_options(no_preview())
            .reply_markup(keyboard.clone());
        if html {
            request = request.parse_mode(ParseMode::Html);
        }
        match request.await {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// Sorts a Bot API error into what ringback does next.
pub fn classify(e: RequestError) -> DeliveryError {
    match e {
        RequestError::RetryAfter(seconds) => DeliveryError::RetryAfter(seconds.duration()),
        RequestError::MigrateToChatId(chat) => DeliveryError::ChatMigrated(chat.0),
        RequestError::Api(ApiError::CantParseEntities(detail)) => DeliveryError::BadMarkup(detail),
        RequestError::Api(
            api @ (ApiError::BotBlocked
            | ApiError::BotKicked
            | ApiError::BotKickedFromSupergroup
            | ApiError::ChatNotFound
            | ApiError::UserDeactivated
            | ApiError::CantInitiateConversation
            | ApiError::NotEnoughRightsToPostMessages),
        ) => DeliveryError::ChatUnreachable(api.to_string()),
        RequestError::Api(api) => {
            let text = api.to_string();
            let permanent = matches!(
                api,
                ApiError::CantTalkWithBots
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
