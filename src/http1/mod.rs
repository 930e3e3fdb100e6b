//! The lean HTTP/1.1 codec: the server side for client connections and the
//! client side for plain-http upstreams.

pub mod client;
pub mod common;
pub mod headers;
pub mod server;
