//! The lean HTTP/1.1 codec: the server side for client connections
//! (`server`, generic over the service it serves), the client side for
//! plain-http upstreams (`client`), what both share (`common`), and the
//! hop-by-hop and forwarding headers both and the proxy use (`headers`).
//! It knows nothing of the proxy.

pub mod client;
pub mod common;
pub mod headers;
pub mod server;
