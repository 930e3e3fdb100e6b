//! strangler-api: strangler's admin API as its clients see it (SPEC section
//! 5), shared by the CLI (`strangler status`, `shift`, `diffs`, ...) and the
//! TUI (`strangler tui`) so requests are built, and answers sorted, in one
//! place.
//!
//! - [`client`]: [`AdminClient`], the one blocking HTTP client: bearer token,
//!   `x-strangler-actor`, the check that the answer comes from a strangler
//!   admin API ([`ADMIN_MARKER`]), and [`CallError`], which sorts failures
//!   into "refused or invalid" (exit 1) and "cannot reach the proxy" (exit 2).
//! - [`wire`]: the JSON answers as typed values, every field defaulted so an
//!   older or newer proxy still parses.
//!
//! It knows nothing of the rule engine or the shadow store: only HTTP and
//! JSON.

pub mod client;
pub mod wire;

pub use client::{AdminClient, CallError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, default_actor};
/// The HTTP method type [`AdminClient::call`] takes, so callers need not
/// depend on reqwest themselves.
pub use reqwest::Method;

/// The header the admin API puts on every answer (value `1`). A client
/// checks for it so that another server on the `--admin` address (the proxy
/// port, say) is not taken for the admin API.
pub const ADMIN_MARKER: &str = "x-strangler-admin";
