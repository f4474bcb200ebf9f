//! A fake Telegram Bot API (issue 3).
