//! The pure domain: no network, no clocks of its own, no I/O.
//!
//! - [`command`]: the chat grammar ("Call to +91 9876543210 and say …").
//! - [`countries`]: English names of regions, for refusals (generated from iso-codes).
//! - [`phone`]: [`phone::PhoneNumber`], an E.164 number validated with libphonenumber's data.
//! - [`call`]: the [`call::Call`] record, its [`call::CallStatus`] state machine and [`call::Origin`].
//! - [`policy`]: who may call what — identities, destinations, limits (pure, clock injected).
//! - [`replies`]: every text a user can read, built by pure functions.
//! - [`speech`]: how the message is spoken — languages, their voices, repeats, text limits.
//! - [`question`]: a question asked after the message and the callee's answer.

pub mod call;
pub mod command;
pub mod countries;
pub mod phone;
pub mod policy;
pub mod question;
pub mod replies;
pub mod speech;
