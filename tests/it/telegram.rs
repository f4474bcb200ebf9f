//! Telegram adapter end to end (issue 3).
