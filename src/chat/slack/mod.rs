//! Slack adapter (slack-morphism). Not implemented yet: see issue 4.

use axum::Router;

use super::AdapterContext;
use crate::config::SlackSettings;

/// Starts the adapter's background tasks and returns its routes.
pub async fn start(_settings: &SlackSettings, _ctx: AdapterContext) -> anyhow::Result<Router> {
    anyhow::bail!("the Slack adapter is not implemented yet")
}
