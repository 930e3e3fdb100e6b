//! strangler: a reverse proxy for strangler-fig migrations. This crate owns
//! the command line and (in later issues) the server loop, upstream pool,
//! admin API and control state; the rule engine lives in `strangler-rules`.

pub mod cli;
pub mod config_file;
pub mod explain_cmd;
