//! strangler: a reverse proxy for strangler-fig migrations. The rule engine
//! lives in `strangler-rules`, comparison and the diff store in
//! `strangler-shadow`, the admin API's wire types and client in
//! `strangler-api`. This crate is the binary, one folder per plane:
//!
//! - data plane: `server` (accept, TLS, drain) serves connections with the
//!   `http1` codec, whose service is `proxy` (the request path in named
//!   phases), which applies `policy` (JWT auth, rate limits, cache), sends
//!   through `upstream` (pools, health, the lean client or hyper's) and
//!   copies to shadows through `mirror`;
//! - control plane: `control` (the admin API, ramps, notifications);
//! - shared by both: `state` (the live snapshot, the runtime layer and its
//!   version store, stats) and `timer`;
//! - `cli` parses the command line and starts everything.
//!
//! The README's "Layout" section has the import rules; `tests/floor_plan.rs`
//! checks them.

pub mod cli;
pub mod control;
pub mod http1;
pub mod mirror;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod state;
pub mod timer;
pub mod upstream;
