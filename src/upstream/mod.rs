//! Upstreams: the pool of one upstream's instances and the picking among
//! them (pool.rs), their passive and active health (health.rs), sending a
//! request to one of them over a keep-alive connection, through the lean
//! HTTP/1.1 exchange or hyper's client (send.rs), and the bodies that
//! travel both ways (body.rs).

pub mod body;
mod health;
mod pool;
mod send;

pub use crate::upstream::pool::{Instance, PickError, UpstreamPool};
pub use crate::upstream::send::{Pipeline, SendError, SendWith};
