//! Integration tests: the real app on port 0, the real reqwest client, fakes on loopback.

mod support;

mod cli;
mod measure;
mod simulator;
mod twilio;
mod web;
