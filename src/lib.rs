//! ringback: missed-call alerts from cloud telephony webhooks.

pub mod domain;
pub mod normalize;
pub mod config;
