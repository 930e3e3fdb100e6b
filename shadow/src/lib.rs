//! strangler-shadow: what happens to a shadowed request once both answers
//! are in. The proxy captures the primary and shadow responses
//! ([`capture`]); a [`pipeline::DiffPipeline`] thread redacts secrets
//! ([`redact`]), decodes and compares them ([`compare`]), counts the outcome
//! ([`counters`]) and keeps mismatches in a [`store::DiffStore`] (sled).
//! Nothing here runs on the proxy's hot path.

pub mod capture;
pub mod compare;
pub mod counters;
pub mod pipeline;
pub mod pointer;
pub mod record;
pub mod redact;
pub mod store;
pub mod summary;
pub mod time;

pub use capture::{BodyCapture, Captured};
pub use compare::{Comparator, Difference, Kind};
pub use counters::{Counters, Outcome, RouteCounts};
pub use pipeline::{CompareJob, DiffPipeline, ShadowAnswer};
pub use record::DiffRecord;
pub use redact::Redactor;
pub use store::{DiffStore, SledDiffStore, StoreError};
