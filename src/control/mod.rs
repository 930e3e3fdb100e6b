//! The control plane: the admin API, progressive ramps and their
//! notifications, config reloads. It changes the live state through `state::Shared` and
//! never sits on a request's path.
//!
//! - `api/`: the admin API. `mod.rs` is the server (token check, replies,
//!   routing); one file per concern holds the handlers: `changes` (split,
//!   shift, rollback, reset, shadow, noise marks, history, revert, reload),
//!   `ramp` (start, pause, resume, abort, list), `diffs`, `status` (with
//!   health and readiness), `metrics`, `explain`, and `body` (the JSON
//!   request body).
//! - `ramp.rs`: the ramp engine, which moves running ramps step by step
//!   and checks their gates.
//! - `notify.rs`: the `[notify] webhook` sender of ramp events.
//! - `reload.rs`: reloading the config file on SIGHUP.

pub mod api;
pub mod notify;
pub mod ramp;
pub mod reload;
