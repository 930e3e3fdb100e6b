//! Gateway policies a route can carry: JWT auth, rate limits, the response
//! cache, and the registry that keeps a policy's state per route across
//! reloads.

pub mod auth;
pub mod cache;
pub mod ratelimit;
pub mod registry;
