//! Integration tests: the real app on port 0, the real client libraries, fakes on loopback.

mod support;

mod binary;
mod browser;
#[cfg(feature = "telegram")]
mod callee;
mod cli;
#[cfg(all(feature = "telegram", feature = "slack"))]
mod dialogue;
mod faulted;
#[cfg(feature = "telegram")]
mod follow;
#[cfg(all(feature = "telegram", feature = "slack"))]
mod fuzz_replay;
#[cfg(all(feature = "telegram", feature = "slack", feature = "llm"))]
mod hostile;
#[cfg(feature = "redis")]
mod leases;
#[cfg(feature = "llm")]
mod llm;
mod policy;
mod polling;
#[cfg(all(feature = "telegram", feature = "slack"))]
mod questions;
#[cfg(all(feature = "redis", feature = "telegram", feature = "slack"))]
mod redis_chat;
#[cfg(all(feature = "redis", feature = "telegram"))]
mod redis_follow;
#[cfg(feature = "redis")]
mod redis_limits;
#[cfg(feature = "redis")]
mod redis_queue;
#[cfg(feature = "redis")]
mod redis_store;
mod shutdown;
mod simulator;
#[cfg(feature = "slack")]
mod slack;
#[cfg(feature = "telegram")]
mod soak;
#[cfg(all(feature = "telegram", feature = "slack"))]
mod speech;
#[cfg(feature = "telegram")]
mod telegram;
mod twilio;
mod web;
