//! ringback: missed-call alerts from cloud telephony webhooks.
//!
//! The pipeline, in the order a call record travels it: [`ingest`] (webhook endpoints) →
//! [`normalize`] (provider payload → [`domain::CallRecord`]) → [`store`] (durable storage).

pub mod bot;
pub mod check;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod digest;
pub mod dispatch;
pub mod domain;
pub mod health;
pub mod ingest;
pub mod memory;
pub mod normalize;
pub mod pipeline;
pub mod reload;
pub mod render;
pub mod replay;
pub mod route;
pub mod startup;
pub mod store;
pub mod telemetry;
