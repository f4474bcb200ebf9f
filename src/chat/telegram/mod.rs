//! Telegram adapter (teloxide). Not implemented yet: see issue 3.

use axum::Router;

use super::AdapterContext;
use crate::config::TelegramSettings;

/// Starts the adapter's background tasks and returns its routes.
pub async fn start(_settings: &TelegramSettings, _ctx: AdapterContext) -> anyhow::Result<Router> {
    anyhow::bail!("the Telegram adapter is not implemented yet")
}
