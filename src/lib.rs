//! ringback: missed-call alerts from cloud telephony webhooks.
//!
//! The pipeline, in the order a call record travels it: [`ingest`] (webhook endpoints) →
//! [`normalize`] (provider payload → [`domain::CallRecord`]) → [`store`] (durable storage).

pub mod cli;
pub mod config;
pub mod domain;
pub mod health;
pub mod ingest;
pub mod normalize;
pub mod startup;
pub mod store;
pub mod telemetry;
