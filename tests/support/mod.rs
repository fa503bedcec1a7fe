//! Test doubles that speak the real protocols: a Telegram Bot API server and an SMTP server.

pub mod logs;
pub mod smtp;
pub mod telegram;
