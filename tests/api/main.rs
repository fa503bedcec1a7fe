//! Integration tests: the real server on 127.0.0.1:0, a temporary config and SQLite database.

mod alerts;
mod bot;
mod callerdesk;
mod callr;
mod cluster;
mod delivery;
mod digests;
mod health;
mod helpers;
mod operations;
mod refusals;
mod replay;
mod routing;
mod telecmi;
mod upgrade;

#[path = "../support/mod.rs"]
mod support;

/// A provider sample from `tests/fixtures/`.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}
