//! A fake Telegram Bot API: the real JSON protocol (`{"ok":true,"result":...}`), real `Message`
//! objects, Telegram's HTML parsing and sending limits, and on demand the real errors.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Duration, Utc};
use ringback::clock::Clock;
use serde_json::{Value, json};

/// An error the next `sendMessage` (to a given chat, or any) answers with.
#[derive(Debug, Clone)]
pub enum Failure {
    /// 429 with `parameters.retry_after`.
    RetryAfter(u32),
    /// An HTTP status with a non-JSON page, as a proxy in front of Telegram sends.
    Status(u16),
    /// 403 "Forbidden: bot was blocked by the user".
    Blocked,
    /// 400 "Bad Request: chat not found".
    ChatNotFound,
    /// 400 with `parameters.migrate_to_chat_id`.
    Migrate(i64),
}

/// A message Telegram accepted.
#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub message_id: i64,
    /// The text as sent (HTML source when parse_mode is HTML).
    pub source: String,
    /// The text a user sees, after entity parsing.
    pub text: String,
    pub parse_mode: Option<String>,
    pub thread: Option<i64>,
    pub silent: bool,
    pub link_preview_disabled: bool,
    pub at: DateTime<Utc>,
}

#[derive(Default)]
struct State_ {
    sent: Vec<Sent>,
    requests: usize,
    failures: VecDeque<(Option<i64>, Failure)>,
    next_message_id: HashMap<i64, i64>,
    last_at: HashMap<i64, DateTime<Utc>>,
    minute: HashMap<i64, VecDeque<DateTime<Utc>>>,
    limit_violations: usize,
}

#[derive(Clone)]
pub struct FakeTelegram {
    pub url: String,
    state: Arc<Mutex<State_>>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State_>>,
    clock: Clock,
}

impl FakeTelegram {
    /// Starts the server; `clock` is the time it judges sending limits by.
    pub async fn start(clock: Clock) -> FakeTelegram {
        let state = Arc::new(Mutex::new(State_::default()));
        let app = axum::Router::new()
            .route("/{bot}/{method}", post(handle))
            .with_state(Shared {
                state: state.clone(),
                clock,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeTelegram { url, state }
    }

    /// The next send (to `chat`, or to any chat when `None`) fails with `failure`.
    pub fn fail_next(&self, chat: Option<i64>, failure: Failure) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push_back((chat, failure));
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.state.lock().unwrap().sent.clone()
    }

    pub fn sent_to(&self, chat: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|m| m.chat_id == chat)
            .collect()
    }

    /// Every sendMessage request, accepted or not.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// Messages that broke Telegram's limits (and were answered 429).
    pub fn limit_violations(&self) -> usize {
        self.state.lock().unwrap().limit_violations
    }
}

fn error(status: StatusCode, description: &str, parameters: Option<Value>) -> Response {
    let mut body =
        json!({ "ok": false, "error_code": status.as_u16(), "description": description });
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    (status, Json(body)).into_response()
}

async fn handle(
    State(shared): State<Shared>,
    Path((bot, method)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if !bot.starts_with("bot") {
        return error(StatusCode::NOT_FOUND, "Not Found", None);
    }
    // The Bot API matches method names case-insensitively; teloxide sends `SendMessage`.
    if !method.eq_ignore_ascii_case("sendMessage") {
        return error(StatusCode::NOT_FOUND, "Not Found: method not found", None);
    }
    let now = shared.clock.now();
    let mut state = shared.state.lock().unwrap();
    state.requests += 1;
    let chat_id = match &body["chat_id"] {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad Request: chat_id is empty",
                None,
            );
        }
    };
    if let Some(i) = state
        .failures
        .iter()
        .position(|(chat, _)| chat.is_none_or(|c| c == chat_id))
    {
        let (_, failure) = state.failures.remove(i).unwrap();
        return match failure {
            Failure::RetryAfter(s) => error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too Many Requests: retry after {s}"),
                Some(json!({ "retry_after": s })),
            ),
            Failure::Status(code) => (
                StatusCode::from_u16(code).unwrap(),
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
            Failure::Blocked => error(
                StatusCode::FORBIDDEN,
                "Forbidden: bot was blocked by the user",
                None,
            ),
            Failure::ChatNotFound => {
                error(StatusCode::BAD_REQUEST, "Bad Request: chat not found", None)
            }
            Failure::Migrate(to) => error(
                StatusCode::BAD_REQUEST,
                "Bad Request: group chat was upgraded to a supergroup chat",
                Some(json!({ "migrate_to_chat_id": to })),
            ),
        };
    }
    // Telegram's limits, judged by the test's clock.
    let too_soon = state
        .last_at
        .get(&chat_id)
        .is_some_and(|t| now - *t < Duration::seconds(1));
    let minute = state.minute.entry(chat_id).or_default();
    while minute
        .front()
        .is_some_and(|t| now - *t >= Duration::minutes(1))
    {
        minute.pop_front();
    }
    let group_full = chat_id < 0 && minute.len() >= 20;
    if too_soon || group_full {
        state.limit_violations += 1;
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests: retry after 1",
            Some(json!({ "retry_after": 1 })),
        );
    }
    let source = body["text"].as_str().unwrap_or_default().to_owned();
    let parse_mode = body["parse_mode"].as_str().map(str::to_owned);
    let text = if parse_mode.as_deref() == Some("HTML") {
        match parse_html(&source) {
            Ok(text) => text,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Bad Request: can't parse entities: {e}"),
                    None,
                );
            }
        }
    } else {
        source.clone()
    };
    if text.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty",
            None,
        );
    }
    if text.encode_utf16().count() > 4096 {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request: message is too long",
            None,
        );
    }
    state.last_at.insert(chat_id, now);
    state.minute.entry(chat_id).or_default().push_back(now);
    let next = state.next_message_id.entry(chat_id).or_insert(0);
    *next += 1;
    let message_id = *next;
    let thread = body["message_thread_id"].as_i64();
    state.sent.push(Sent {
        chat_id,
        message_id,
        source,
        text: text.clone(),
        parse_mode,
        thread,
        silent: body["disable_notification"].as_bool().unwrap_or(false),
        link_preview_disabled: body["link_preview_options"]["is_disabled"]
            .as_bool()
            .unwrap_or(false),
        at: now,
    });
    let chat = if chat_id < 0 {
        json!({ "id": chat_id, "type": "supergroup", "title": "Support team" })
    } else {
        json!({ "id": chat_id, "type": "private", "first_name": "Agent" })
    };
    let mut message = json!({
        "message_id": message_id,
        "date": now.timestamp(),
        "chat": chat,
        "from": { "id": 4242, "is_bot": true, "first_name": "ringback", "username": "ringback_bot" },
        "text": text,
    });
    if let Some(thread) = thread {
        message["message_thread_id"] = json!(thread);
        message["is_topic_message"] = json!(true);
    }
    Json(json!({ "ok": true, "result": message })).into_response()
}

const TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
];

/// Telegram's HTML parse mode: the listed tags only, properly nested; `&lt; &gt; &amp; &quot;` and
/// numeric entities; a bare `<` or an unknown entity is an error. Returns the visible text.
pub fn parse_html(html: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut i = 0;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                let end = html[i..]
                    .find('>')
                    .map(|e| i + e)
                    .ok_or_else(|| format!("Can't find end of the tag at byte offset {i}"))?;
                let inner = &html[i + 1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim();
                    match open.pop() {
                        Some(top) if top == name => {}
                        _ => {
                            return Err(format!(
                                "Unmatched end tag at byte offset {i}, expected \"</{}>\", found \"</{name}>\"",
                                open.last().cloned().unwrap_or_default()
                            ));
                        }
                    }
                } else {
                    let name = inner.split_whitespace().next().unwrap_or("");
                    if !TAGS.contains(&name) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {i}"
                        ));
                    }
                    open.push(name.to_owned());
                }
                i = end + 1;
            }
            b'&' => {
                let end = html[i..]
                    .find(';')
                    .map(|e| i + e)
                    .filter(|e| e - i <= 10)
                    .ok_or_else(|| {
                        format!("Can't find end of the entity starting at byte offset {i}")
                    })?;
                let name = &html[i + 1..end];
                let ch = match name {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    _ => {
                        let code = if let Some(hex) =
                            name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                        {
                            u32::from_str_radix(hex, 16).ok()
                        } else {
                            name.strip_prefix('#').and_then(|d| d.parse().ok())
                        };
                        code.and_then(char::from_u32).ok_or_else(|| {
                            format!("Unsupported HTML entity \"&{name};\" at byte offset {i}")
                        })?
                    }
                };
                out.push(ch);
                i = end + 1;
            }
            _ => {
                let ch = html[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    if let Some(tag) = open.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{tag}\""
        ));
    }
    Ok(out)
}
