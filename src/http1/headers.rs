//! Header semantics the codec and the proxy share: hop-by-hop headers
//! (also those named in `Connection`), the forwarding headers
//! (X-Forwarded-For/-Proto/-Host, Via) and the client address found with
//! `trusted_hops`, and a header's values joined.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers, including every header named in Connection.
/// One pass over the names first: most messages have none, or only a
/// `Connection: keep-alive` whose token is itself a fixed hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Bit i set: the i-th fixed hop-by-hop name (see `hop_by_hop`) is present.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name.as_str().as_bytes()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names listed in Connection that are not fixed hop-by-hop names (those
    // go below anyway): rare, so collected only when there are any.
    if present & 1 != 0 {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            // The usual case, `Connection: keep-alive`, without splitting.
            if hop_by_hop_ignore_case(value.as_bytes()).is_some() {
                continue;
            }
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if hop_by_hop_ignore_case(token).is_some() {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    let fixed: [&HeaderName; 9] = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ];
    for (i, name) in fixed.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// A response's transfer codings other than a final `chunked` (which the
/// framing undoes), joined as one value: the codings still applied to the
/// decoded body, which must travel on with it (RFC 9112 section 6.1).
/// `None` when `chunked` was the only one.
pub fn codings_besides_chunked<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<HeaderValue> {
    let mut tokens: Vec<&[u8]> = values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    if tokens
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
    {
        tokens.pop();
    }
    if tokens.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&tokens.join(&b", "[..])).ok()
}

/// Whether a header value lists `token` (comma-separated, any case).
pub fn lists_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether `name` is one of the fixed hop-by-hop headers (not counting
/// those a Connection header names).
#[inline]
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop(name.as_str().as_bytes()).is_some()
}

/// Which fixed hop-by-hop name a (lowercase) header name is, if any; the
/// index is the name's place in `strip_hop_by_hop`'s list. A match on the
/// bytes is far cheaper than comparing `HeaderName`s one by one.
#[inline]
fn hop_by_hop(name: &[u8]) -> Option<u32> {
    Some(match name {
        b"connection" => 0,
        b"keep-alive" => 1,
        b"proxy-connection" => 2,
        b"proxy-authenticate" => 3,
        b"proxy-authorization" => 4,
        b"te" => 5,
        b"trailer" => 6,
        b"transfer-encoding" => 7,
        b"upgrade" => 8,
        _ => return None,
    })
}

/// `hop_by_hop` for a Connection token or a raw header name, whose case
/// is not normalised: 0 is Connection, 7 Transfer-Encoding.
pub(crate) fn hop_by_hop_ignore_case(token: &[u8]) -> Option<u32> {
    let mut buf = [0u8; 20];
    let lower = buf.get_mut(..token.len())?;
    lower.copy_from_slice(token);
    lower.make_ascii_lowercase();
    hop_by_hop(lower)
}

/// Appends `VERSION strangler` to Via.
pub fn append_via(headers: &mut HeaderMap, version: Version) {
    append_value(headers, &header::VIA, &via_value(version));
}

/// Our Via entry for a message of `version`.
fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 strangler",
        Version::HTTP_2 => "2 strangler",
        _ => "1.1 strangler",
    })
}

/// Appends `value` to a comma-separated list header, joining earlier
/// values into one; without earlier values it is just inserted.
fn append_value(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut entry = match headers.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(value.clone());
            return;
        }
        header::Entry::Occupied(o) => o,
    };
    let mut joined = String::new();
    for v in entry.iter().chain(std::iter::once(value)) {
        if let Ok(s) = v.to_str() {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(s);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&joined) {
        entry.insert(v);
    }
}

/// The client's address: the peer, or with `trusted_hops` proxies in front,
/// the X-Forwarded-For entry that many hops back.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_hops: u32) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    // The chain is the XFF entries followed by the peer; go back trusted_hops.
    let hops = trusted_hops as usize;
    if entries.is_empty() {
        return peer;
    }
    let idx = entries.len().saturating_sub(hops);
    entries[idx.min(entries.len() - 1)]
        .parse()
        .or_else(|_| {
            entries[idx.min(entries.len() - 1)]
                .trim_matches(['[', ']'])
                .parse()
        })
        .unwrap_or(peer)
}

/// The forwarding headers of a request going upstream, when it brought none
/// of its own (the usual case): written straight into its encoded head (or
/// put in the map for hyper's client) instead of being inserted into the
/// request's map first, which costs four map insertions per request. The
/// headers are those `set_forwarded` would set.
#[derive(Debug, Clone)]
pub struct Forwarding {
    peer: HeaderValue,
    tls: bool,
    host: Option<HeaderValue>,
    version: Version,
}

impl Forwarding {
    /// `None` when the request has X-Forwarded-For, -Proto, -Host or Via of
    /// its own: `set_forwarded` then merges ours into the map.
    pub fn new(
        headers: &HeaderMap,
        peer: &HeaderValue,
        tls: bool,
        host: Option<&HeaderValue>,
        version: Version,
    ) -> Option<Self> {
        let brought = headers.keys().any(|n| {
            *n == header::VIA
                || *n == X_FORWARDED_FOR
                || *n == X_FORWARDED_PROTO
                || *n == X_FORWARDED_HOST
        });
        (!brought).then(|| Forwarding {
            peer: peer.clone(),
            tls,
            host: host.cloned(),
            version,
        })
    }

    fn lines(&self) -> [Option<(&HeaderName, HeaderValue)>; 4] {
        [
            Some((&X_FORWARDED_FOR, self.peer.clone())),
            Some((
                &X_FORWARDED_PROTO,
                HeaderValue::from_static(if self.tls { "https" } else { "http" }),
            )),
            self.host.clone().map(|h| (&X_FORWARDED_HOST, h)),
            Some((&header::VIA, via_value(self.version))),
        ]
    }

    /// Appends the header lines to an encoded head.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        for (name, value) in self.lines().into_iter().flatten() {
            dst.extend_from_slice(name.as_str().as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
    }

    /// Puts the headers in a map (for hyper's client).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.lines().into_iter().flatten() {
            headers.insert(name.clone(), value);
        }
    }

    /// Takes them out again (a request given back unsent).
    pub fn remove_from(&self, headers: &mut HeaderMap) {
        for (name, _) in self.lines().into_iter().flatten() {
            headers.remove(name);
        }
    }
}

/// Sets the forwarding headers on a request going upstream.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    tls: bool,
    host: Option<&HeaderValue>,
    trusted_hops: u32,
    version: Version,
) {
    // Room for the four headers below at once, rather than the map growing
    // (and rehashing) once or twice on the way.
    headers.reserve(4);
    append_value(headers, &X_FORWARDED_FOR, peer);
    let trust = trusted_hops > 0;
    if !(trust && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
    }
    if !(trust && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    append_via(headers, version);
}

/// Whether a method is idempotent (RFC 9110 9.2.2).
/// Every value of a header as one: cookies joined with `; ` (as HTTP/1.1
/// wants them, RFC 9113 section 8.2.3), others with `, `. None when absent.
pub fn joined_values(headers: &HeaderMap, name: &http::header::HeaderName) -> Option<HeaderValue> {
    let values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
    match values.as_slice() {
        [] => None,
        [one] => HeaderValue::from_bytes(one).ok(),
        many => {
            let sep: &[u8] = if name == http::header::COOKIE {
                b"; "
            } else {
                b", "
            };
            HeaderValue::from_bytes(&many.join(sep)).ok()
        }
    }
}

pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_listed_and_fixed_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_tokens_match_in_any_case_and_plain_keep_alive_is_cheap() {
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("Keep-Alive"));
        h.append("connection", HeaderValue::from_static(" X-Secret ,Upgrade"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn client_ip_walks_back_trusted_hops() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
        );
        assert_eq!(client_ip(&h, peer, 0), peer);
        assert_eq!(client_ip(&h, peer, 1), "2.2.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&h, peer, 2), "1.1.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&h, peer, 5), "1.1.1.1".parse::<IpAddr>().unwrap());
    }
}
