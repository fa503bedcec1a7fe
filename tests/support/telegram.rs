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
    /// Inline buttons, row by row: (label, callback_data). Edits replace them.
    pub buttons: Vec<Vec<(String, String)>>,
    /// How many times the message was edited.
    pub edits: usize,
}

/// An `answerCallbackQuery` the bot made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub callback_query_id: String,
    pub text: Option<String>,
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
    /// Telegram's limits are not enforced (a Bot API-compatible server without them).
    no_limits: bool,
    /// Updates waiting for `getUpdates`, and the id the next one gets.
    updates: Vec<Value>,
    next_update_id: i64,
    answers: Vec<Answer>,
    /// Every Bot API method called, in order (`getMe`, `deleteWebhook`, ...), as named by Telegram.
    methods: Vec<String>,
    commands: Vec<(String, String)>,
    webhook: Option<(String, String)>,
    next_query_id: u64,
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

    /// From now on, answers like a Bot API-compatible server without Telegram's sending limits.
    pub fn without_limits(&self) {
        self.state.lock().unwrap().no_limits = true;
    }

    /// Messages that broke Telegram's limits (and were answered 429).
    pub fn limit_violations(&self) -> usize {
        self.state.lock().unwrap().limit_violations
    }

    fn push_update(&self, kind: &str, payload: Value) {
        let mut state = self.state.lock().unwrap();
        state.next_update_id += 1;
        let id = 700_000 + state.next_update_id;
        state
            .updates
            .push(json!({ "update_id": id, kind: payload }));
    }

    /// A user writes `text` in `chat` (a group when negative, their private chat otherwise).
    pub fn user_writes(&self, chat: i64, user: &User, text: &str) {
        let message = json!({
            "message_id": 90_000 + self.state.lock().unwrap().next_update_id,
            "date": start_of_tests(),
            "chat": chat_json(chat),
            "from": user.json(),
            "text": text,
            "entities": if text.starts_with('/') {
                json!([{ "type": "bot_command", "offset": 0, "length": text.split_whitespace().next().unwrap().encode_utf16().count() }])
            } else {
                json!([])
            },
        });
        self.push_update("message", message);
    }

    /// A user presses a button whose `callback_data` is `data`, under message `message_id` of
    /// `chat`; returns the callback query's id.
    pub fn press(&self, chat: i64, message_id: i64, user: &User, data: &str) -> String {
        let id = {
            let mut state = self.state.lock().unwrap();
            state.next_query_id += 1;
            format!("cq{}", state.next_query_id)
        };
        let text = self
            .sent()
            .into_iter()
            .find(|m| m.chat_id == chat && m.message_id == message_id)
            .map(|m| m.text)
            .unwrap_or_default();
        self.push_update(
            "callback_query",
            json!({
                "id": id,
                "from": user.json(),
                "chat_instance": format!("ci{chat}"),
                "data": data,
                "message": {
                    "message_id": message_id,
                    "date": start_of_tests(),
                    "chat": chat_json(chat),
                    "from": bot_json(),
                    "text": text,
                },
            }),
        );
        id
    }

    /// The bot's membership of `chat` changes from `old` to `new` ("left", "member",
    /// "administrator", "kicked"), by `by`.
    pub fn membership(&self, chat: i64, by: &User, old: &str, new: &str) {
        let member = |status: &str| {
            let mut m = json!({ "user": bot_json(), "status": status });
            if status == "kicked" {
                m["until_date"] = json!(0);
            }
            if status == "administrator" {
                for right in [
                    "can_be_edited",
                    "is_anonymous",
                    "can_manage_chat",
                    "can_delete_messages",
                    "can_manage_video_chats",
                    "can_restrict_members",
                    "can_promote_members",
                    "can_change_info",
                    "can_invite_users",
                    "can_post_stories",
                    "can_edit_stories",
                    "can_delete_stories",
                ] {
                    m[right] = json!(false);
                }
            }
            m
        };
        self.push_update(
            "my_chat_member",
            json!({
                "chat": chat_json(chat),
                "from": by.json(),
                "date": start_of_tests(),
                "old_chat_member": member(old),
                "new_chat_member": member(new),
            }),
        );
    }

    /// A group's service message saying it became supergroup `to`.
    pub fn group_migrates(&self, chat: i64, to: i64) {
        self.push_update(
            "message",
            json!({
                "message_id": 1,
                "date": start_of_tests(),
                "chat": { "id": chat, "type": "group", "title": "Support team" },
                "from": bot_json(),
                "migrate_to_chat_id": to,
            }),
        );
    }

    /// Updates not yet confirmed by a `getUpdates` offset.
    pub fn pending_updates(&self) -> usize {
        self.state.lock().unwrap().updates.len()
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.state.lock().unwrap().answers.clone()
    }

    pub fn answer_to(&self, query_id: &str) -> Option<String> {
        self.answers()
            .into_iter()
            .find(|a| a.callback_query_id == query_id)
            .and_then(|a| a.text)
    }

    pub fn methods(&self) -> Vec<String> {
        self.state.lock().unwrap().methods.clone()
    }

    /// The commands registered with `setMyCommands`: (command, description).
    pub fn commands(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().commands.clone()
    }

    /// The webhook set with `setWebhook`: (url, secret_token).
    pub fn webhook(&self) -> Option<(String, String)> {
        self.state.lock().unwrap().webhook.clone()
    }

    /// The message as it reads now, after any edits.
    pub fn message(&self, chat: i64, message_id: i64) -> Sent {
        self.sent()
            .into_iter()
            .find(|m| m.chat_id == chat && m.message_id == message_id)
            .expect("a message the bot sent")
    }
}

/// Someone in a chat.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub first_name: String,
    pub last_name: Option<String>,
}

impl User {
    pub fn new(id: i64, first_name: &str, last_name: Option<&str>) -> User {
        User {
            id,
            first_name: first_name.into(),
            last_name: last_name.map(str::to_owned),
        }
    }

    fn json(&self) -> Value {
        let mut u = json!({ "id": self.id, "is_bot": false, "first_name": self.first_name });
        if let Some(last) = &self.last_name {
            u["last_name"] = json!(last);
        }
        u
    }
}

fn start_of_tests() -> i64 {
    1_795_428_000
}

fn bot_json() -> Value {
    json!({ "id": 4242, "is_bot": true, "first_name": "ringback", "username": "ringback_bot" })
}

fn chat_json(chat_id: i64) -> Value {
    if chat_id < 0 {
        json!({ "id": chat_id, "type": "supergroup", "title": "Support team" })
    } else {
        json!({ "id": chat_id, "type": "private", "first_name": "Agent" })
    }
}

fn ok(result: Value) -> Response {
    Json(json!({ "ok": true, "result": result })).into_response()
}

fn buttons_of(markup: &Value) -> Vec<Vec<(String, String)>> {
    markup["inline_keyboard"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|b| {
                            (
                                b["text"].as_str().unwrap().to_owned(),
                                b["callback_data"].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The Bot API methods other than `sendMessage`.
fn other_method(state: &mut State_, method: &str, body: &Value) -> Response {
    match method {
        "getme" => ok(bot_json()
            .as_object()
            .cloned()
            .map(|mut o| {
                o.insert("can_join_groups".into(), json!(true));
                o.insert("can_read_all_group_messages".into(), json!(false));
                o.insert("supports_inline_queries".into(), json!(false));
                o.insert("can_connect_to_business".into(), json!(false));
                o.insert("has_main_web_app".into(), json!(false));
                Value::Object(o)
            })
            .unwrap()),
        "deletewebhook" => {
            state.webhook = None;
            ok(json!(true))
        }
        "setwebhook" => {
            state.webhook = Some((
                body["url"].as_str().unwrap_or_default().to_owned(),
                body["secret_token"].as_str().unwrap_or_default().to_owned(),
            ));
            ok(json!(true))
        }
        "setmycommands" => {
            state.commands = body["commands"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["command"].as_str().unwrap().to_owned(),
                        c["description"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            ok(json!(true))
        }
        "getupdates" => {
            if state.webhook.is_some() {
                return error(
                    StatusCode::CONFLICT,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                    None,
                );
            }
            let offset = body["offset"].as_i64().unwrap_or(0);
            // An offset confirms every update before it: Telegram forgets them.
            state
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap() >= offset);
            ok(Value::Array(state.updates.clone()))
        }
        "answercallbackquery" => {
            state.answers.push(Answer {
                callback_query_id: body["callback_query_id"].as_str().unwrap().to_owned(),
                text: body["text"].as_str().map(str::to_owned),
            });
            ok(json!(true))
        }
        "editmessagetext" => {
            let chat_id = body["chat_id"].as_i64().unwrap();
            let message_id = body["message_id"].as_i64().unwrap();
            let (source, parse_mode, text) = match visible_text(body) {
                Ok(parsed) => parsed,
                Err(refused) => return refused,
            };
            let buttons = buttons_of(&body["reply_markup"]);
            let Some(message) = state
                .sent
                .iter_mut()
                .find(|m| m.chat_id == chat_id && m.message_id == message_id)
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message to edit not found",
                    None,
                );
            };
            if message.text == text && message.buttons == buttons {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                    None,
                );
            }
            message.source = source;
            message.text = text.clone();
            message.parse_mode = parse_mode;
            message.buttons = buttons;
            message.edits += 1;
            let mut result = json!({
                "message_id": message_id,
                "date": message.at.timestamp(),
                "edit_date": message.at.timestamp() + 1,
                "chat": chat_json(chat_id),
                "from": bot_json(),
                "text": text,
            });
            if !body["reply_markup"].is_null() {
                result["reply_markup"] = body["reply_markup"].clone();
            }
            ok(result)
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found: method not found", None),
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

/// A request's parameters: a JSON body, or `multipart/form-data` (teloxide sends `setWebhook`
/// so) with each field's text as a JSON string.
fn parameters(headers: &axum::http::HeaderMap, body: &[u8]) -> Result<Value, String> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = content_type
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split("boundary=").nth(1))
    else {
        return serde_json::from_slice(body).map_err(|e| e.to_string());
    };
    let body = String::from_utf8_lossy(body);
    let mut fields = serde_json::Map::new();
    for part in body.split(&format!("--{}", boundary.trim_matches('"'))) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name.to_owned(), json!(value));
    }
    Ok(Value::Object(fields))
}

async fn handle(
    State(shared): State<Shared>,
    Path((bot, method)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !bot.starts_with("bot") {
        return error(StatusCode::NOT_FOUND, "Not Found", None);
    }
    let body = match parameters(&headers, &body) {
        Ok(body) => body,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("Bad Request: {e}"), None);
        }
    };
    let now = shared.clock.now();
    let mut state = shared.state.lock().unwrap();
    // The Bot API matches method names case-insensitively; teloxide sends `SendMessage`.
    let method = method.to_ascii_lowercase();
    state.methods.push(method.clone());
    if method != "sendmessage" {
        return other_method(&mut state, &method, &body);
    }
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
    if (too_soon || group_full) && !state.no_limits {
        state.limit_violations += 1;
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests: retry after 1",
            Some(json!({ "retry_after": 1 })),
        );
    }
    let (source, parse_mode, text) = match visible_text(&body) {
        Ok(parsed) => parsed,
        Err(refused) => return refused,
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
        buttons: buttons_of(&body["reply_markup"]),
        edits: 0,
    });
    let mut message = json!({
        "message_id": message_id,
        "date": now.timestamp(),
        "chat": chat_json(chat_id),
        "from": bot_json(),
        "text": text,
    });
    if !body["reply_markup"].is_null() {
        message["reply_markup"] = body["reply_markup"].clone();
    }
    if let Some(thread) = thread {
        message["message_thread_id"] = json!(thread);
        message["is_topic_message"] = json!(true);
    }
    Json(json!({ "ok": true, "result": message })).into_response()
}

/// A message's text as sent, its parse mode, and the text a user sees; Telegram's 400 for HTML
/// it cannot parse.
#[allow(clippy::result_large_err)]
fn visible_text(body: &Value) -> Result<(String, Option<String>, String), Response> {
    let source = body["text"].as_str().unwrap_or_default().to_owned();
    let parse_mode = body["parse_mode"].as_str().map(str::to_owned);
    let text = if parse_mode.as_deref() == Some("HTML") {
        parse_html(&source).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("Bad Request: can't parse entities: {e}"),
                None,
            )
        })?
    } else {
        source.clone()
    };
    Ok((source, parse_mode, text))
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
