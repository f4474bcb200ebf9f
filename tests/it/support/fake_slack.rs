//! A fake Slack Web API (issue 4).
