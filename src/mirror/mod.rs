//! Shadow dispatch on the proxy side: deciding per request whether a copy
//! goes to the route's shadow upstream, and launching it (launch.rs); the
//! copy's request head (request.rs); the bounded queue, the workers that
//! run shadow calls, pipelined or alone, and the call itself (workers.rs);
//! teeing the request and primary response bodies while they stream
//! (tee.rs). The client's answer is never held up: the primary streams as
//! usual, and everything here either runs beside it or is skipped and
//! counted. Comparison and storage happen on the diff pipeline's thread
//! (crate `strangler-shadow`).

mod launch;
mod request;
mod tee;
mod workers;

pub use crate::mirror::launch::{Dispatch, NOISE_METHODS, Pending, ShadowPlan, launch};
pub use crate::mirror::request::{SHADOW_HEADER, ShadowRequest};
pub use crate::mirror::tee::TeeBody;
pub use crate::mirror::workers::{Launch, ShadowRuntime};
