//! strangler: a reverse proxy for strangler-fig migrations. The rule engine
//! lives in `strangler-rules`, comparison and the diff store in
//! `strangler-shadow`; this crate is the binary's rooms, one folder per
//! plane.

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
