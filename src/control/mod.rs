//! The control plane: the admin API, progressive ramps and their
//! notifications. It changes the live state through `state::Shared` and
//! never sits on a request's path.

pub mod api;
pub mod notify;
pub mod ramp;
