//! Adapters behind the [`crate::calls::Telephony`] port: the Twilio REST client with its
//! signature check, TwiML and webhook routes, and the built-in simulator that behaves like
//! Twilio from the outside (signed callbacks over HTTP).

pub mod simulator;
pub mod twilio;

use crate::core::call::CallId;

/// Where Twilio fetches the TwiML of a call.
pub fn twiml_url(public_url: &str, id: &CallId) -> String {
    format!("{public_url}/twiml/{id}")
}

/// Where Twilio posts a call's status. Our call id rides along, so a callback that arrives
/// before the create request has returned its sid still finds its call.
pub fn status_callback_url(public_url: &str, id: &CallId) -> String {
    format!("{public_url}/webhooks/status?call_id={id}")
}
