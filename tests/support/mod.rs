//! Test doubles that speak the real protocols, a Telegram Bot API server and an SMTP server, and
//! a capture of the service's log.

pub mod logs;
pub mod smtp;
pub mod telegram;
