//! Chat adapters: each takes commands in and follows CallEvents to post progress back.

pub mod web;
