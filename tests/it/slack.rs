//! Slack adapter end to end (issue 4).
