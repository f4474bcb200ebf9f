//! Twilio Voice: the REST client, request signatures, TwiML and the webhook routes.

pub mod client;
pub mod quiet_log;
pub mod signature;
pub mod twiml;
pub mod webhook;

pub use client::TwilioClient;
pub use signature::SignatureVerifier;
