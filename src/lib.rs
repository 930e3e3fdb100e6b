//! strangler: a reverse proxy for strangler-fig migrations. This crate owns
//! the command line, the server loop, the upstream pools and the live
//! routing state; the rule engine lives in `strangler-rules`, comparison and the diff store
//! in `strangler-shadow`.

pub mod admin;
pub mod admin_client;
pub mod aggregate;
pub mod auth;
pub mod body;
pub mod cache;
pub mod cli;
pub mod config_file;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod diffs_cmd;
pub mod drain;
pub mod error;
pub mod explain_cmd;
pub mod h1;
pub mod h1_server;
pub mod headers;
pub mod notify;
pub mod per_route;
pub mod proxy;
pub mod ramp;
pub mod ratelimit;
pub mod send_timeout;
pub mod serve;
pub mod server;
pub mod shadow;
pub mod state;
pub mod stats;
pub mod timer;
pub mod tunnel;
pub mod upstream;
