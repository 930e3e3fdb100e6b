//! The shadow copy's request head, made once per shadowed request before
//! the primary is sent: encoded whole for the lean exchange when it can
//! be, otherwise a header map to build a request from. The shadow header
//! marks it either way.

use http::HeaderMap;

use crate::upstream::UpstreamPool;

/// The header that marks a shadow request; clients' copies are stripped.
pub const SHADOW_HEADER: http::HeaderName = http::HeaderName::from_static("x-strangler-shadow");

/// The shadow request's head, as the shadow task will send it.
pub enum ShadowRequest {
    /// Encoded once, `x-strangler-shadow: 1` included: for body-less
    /// requests to plain-http upstreams (the lean exchange), with no header
    /// map to copy, build into a request and drop.
    Encoded(Vec<u8>),
    /// For everything else: a request is built from these headers.
    Headers(HeaderMap),
}

/// The shadow header as the last line of an encoded head.
const SHADOW_LINE: &[u8] = b"x-strangler-shadow: 1\r\n\r\n";

impl ShadowRequest {
    /// Bytes of the encoded head (0 for a header map).
    pub(super) fn encoded_len(&self) -> usize {
        match self {
            ShadowRequest::Encoded(head) => head.len(),
            ShadowRequest::Headers(_) => 0,
        }
    }

    /// The head for a copy of a request with these parts, sent to every
    /// pool in `to` (the shadow's, and the primary's for a noise check).
    /// When the primary's pool is plain http too, the primary's own head
    /// (`http1::client::encode_head`'s) comes with it: the copy is that head plus one
    /// line, and the primary's send reuses it instead of encoding it again.
    pub fn new<'a>(
        method: &http::Method,
        path_and_query: &http::uri::PathAndQuery,
        headers: &HeaderMap,
        forwarding: Option<&crate::http1::headers::Forwarding>,
        has_body: bool,
        primary: &UpstreamPool,
        mut to: impl Iterator<Item = &'a UpstreamPool>,
    ) -> (Self, Option<Vec<u8>>) {
        if has_body || !to.all(UpstreamPool::is_plain_http) {
            let mut headers = headers.clone();
            if let Some(f) = forwarding {
                f.insert_into(&mut headers);
            }
            return (ShadowRequest::Headers(headers), None);
        }
        let mut head = Vec::with_capacity(512);
        crate::http1::client::encode_head_parts(
            method,
            path_and_query.as_str(),
            headers,
            forwarding,
            &mut head,
        );
        // The blank line that ends the head becomes the shadow header's.
        let mut copy = Vec::with_capacity(head.len() + SHADOW_LINE.len());
        copy.extend_from_slice(&head[..head.len().saturating_sub(2)]);
        copy.extend_from_slice(SHADOW_LINE);
        let primary_head = primary.is_plain_http().then_some(head);
        (ShadowRequest::Encoded(copy), primary_head)
    }
}
