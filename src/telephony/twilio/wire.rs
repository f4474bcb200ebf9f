//! Twilio's wire names for call statuses (`CallStatus` in callbacks, `status` in the REST
//! API's Call resource): kept here, in the adapter, so the engine's states do not depend on
//! one provider's spelling.

use crate::core::call::CallStatus;

/// Twilio's names, one per status.
const NAMES: [(CallStatus, &str); 9] = [
    (CallStatus::Queued, "queued"),
    (CallStatus::Initiated, "initiated"),
    (CallStatus::Ringing, "ringing"),
    (CallStatus::InProgress, "in-progress"),
    (CallStatus::Completed, "completed"),
    (CallStatus::Busy, "busy"),
    (CallStatus::NoAnswer, "no-answer"),
    (CallStatus::Failed, "failed"),
    (CallStatus::Canceled, "canceled"),
];

/// The status Twilio calls `name`, if any.
pub fn status(name: &str) -> Option<CallStatus> {
    NAMES.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
}

/// How Twilio spells `status`.
pub fn status_name(status: CallStatus) -> &'static str {
    NAMES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("failed", |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_twilio_spelling() {
        for s in CallStatus::ALL {
            assert_eq!(status(status_name(s)), Some(s), "{s:?}");
        }
        assert_eq!(status("in-progress"), Some(CallStatus::InProgress));
        assert_eq!(status("no-answer"), Some(CallStatus::NoAnswer));
        assert_eq!(status("In-Progress"), None);
        assert_eq!(status("answered"), None);
    }
}
