//! callbot: place phone calls from chat.
//!
//! Layers, every import pointing down: `app` wires adapters (`chat`, `telephony`) onto the
//! engine (`calls`), which builds on the pure domain (`core`) and the typed `config`.

pub mod app;
pub mod body;
pub mod calls;
pub mod chat;
pub mod config;
pub mod core;
#[cfg(feature = "llm")]
pub mod llm;
pub mod retry;
#[cfg(feature = "redis")]
pub mod shared;
pub mod telemetry;
pub mod telephony;

pub use app::App;
pub use config::Settings;
