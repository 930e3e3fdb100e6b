//! strangler-rules: the config model and its validation, the compiled route
//! table, request matching, and weighted, sticky upstream choice.
//!
//! Pure: no I/O, no clocks, no randomness of its own (callers pass a random
//! bucket), so everything here is unit- and property-tested and benchmarked
//! in isolation. The proxy swaps whole [`RouteTable`]s at run time.

pub mod config;
pub mod error;
pub mod explain;
pub mod file;
mod index;
pub mod matcher;
mod spans;
pub mod split;
pub mod table;

pub use config::Config;
pub use error::{ConfigError, Problem, ProblemKind};
pub use explain::{Explanation, explain};
pub use matcher::{MatchSpec, RequestView, SimpleRequest};
pub use split::{Split, StickyKey, UpstreamId};
pub use table::{Choice, Decision, RouteTable, Target};
