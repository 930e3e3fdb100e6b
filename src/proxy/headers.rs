//! The request as the proxy reads it: the head the rule engine sees, the
//! Host it is for, paths refused as ambiguous, which methods are safe to
//! retry, and percent-encoding for template values. Hop-by-hop and
//! forwarding headers are `http1::headers`.

use http::{Version, header, request::Parts};
use strangler_rules::RequestView;

/// The request as the rule engine sees it.
pub struct RequestHead<'a> {
    pub parts: &'a Parts,
    pub host: Option<&'a str>,
}

impl RequestView for RequestHead<'_> {
    #[inline]
    fn method(&self) -> &str {
        self.parts.method.as_str()
    }
    #[inline]
    fn path(&self) -> &str {
        self.parts.uri.path()
    }
    #[inline]
    fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }
    #[inline]
    fn host(&self) -> Option<&str> {
        self.host
    }
    #[inline]
    fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn any_header_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(pred)
    }
}

/// The request's host: the Host header (exactly one for HTTP/1), or the
/// URI's authority (HTTP/2's :authority).
pub fn request_host(parts: &Parts) -> Result<Option<&str>, crate::proxy::error::ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(crate::proxy::error::ProxyError::DuplicateHost);
    }
    let header_host = match first {
        Some(v) => Some(v.to_str().map_err(|_| {
            crate::proxy::error::ProxyError::BadRequest("Host is not valid text".into())
        })?),
        None => None,
    };
    match parts.version {
        Version::HTTP_2 | Version::HTTP_3 => {
            Ok(parts.uri.authority().map(|a| a.as_str()).or(header_host))
        }
        // An absolute-form target's host wins over Host (RFC 9112 3.2.2).
        Version::HTTP_11 => match (parts.uri.authority(), header_host) {
            (Some(a), _) => Ok(Some(a.as_str())),
            (None, Some(h)) => Ok(Some(h)),
            (None, None) => Err(crate::proxy::error::ProxyError::MissingHost),
        },
        _ => Ok(parts.uri.authority().map(|a| a.as_str()).or(header_host)),
    }
}

/// Whether `host` is a valid Host (RFC 9110 7.2: `uri-host [ ":" port ]`)
/// with RFC 3986 3.2.2's host: an IP literal (`[` IPv6 `]`) or a reg-name
/// (which IPv4 addresses are also written as): unreserved characters,
/// sub-delims and percent-encodings only, so no space, `@` (userinfo),
/// `/`, `?` or `#`. The port is digits (RFC 3986 3.2.3).
pub fn valid_host(host: &str) -> bool {
    let (name_ok, port) = if let Some(literal) = host.strip_prefix('[') {
        let Some((inner, rest)) = literal.split_once(']') else {
            return false;
        };
        let port = match rest.strip_prefix(':') {
            Some(p) => p,
            None if rest.is_empty() => "",
            None => return false,
        };
        (inner.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
        (valid_reg_name(name.as_bytes()), port)
    };
    name_ok && port.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 3986 3.2.2's reg-name: `*( unreserved / pct-encoded / sub-delims )`.
fn valid_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = name.get(i) {
        if b == b'%' {
            match name.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
            continue;
        }
        let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let sub_delim = b"!$&'()*+,;=".contains(&b);
        if !(unreserved || sub_delim) {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether a request path is one that servers behind the proxy could read
/// differently from the router: a `.` or `..` segment (also percent-encoded,
/// with `;params`, or split by an encoded or back slash), or an empty
/// segment (`//`). Such paths are refused (400) rather than routed, so no
/// route's auth or rate limit can be stepped around by a path the monolith
/// would normalise to a protected one.
pub fn ambiguous_path(path: &str) -> bool {
    // Every request passes here: most paths have nothing to look at, which
    // one pass over the bytes tells (no substring search set up per call).
    let mut prev = 0u8;
    let suspicious = path.bytes().any(|b| {
        let hit = matches!(b, b'.' | b'%' | b'\\') || (b == b'/' && prev == b'/');
        prev = b;
        hit
    });
    if !suspicious {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    let unified = lower
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    let body = unified.strip_prefix('/').unwrap_or(&unified);
    if body.is_empty() {
        return false;
    }
    let segs: Vec<&str> = body.split('/').collect();
    segs.iter().enumerate().any(|(i, seg)| {
        let seg = seg.split(';').next().unwrap_or("");
        let decoded = seg.replace("%2e", ".");
        let last = i + 1 == segs.len();
        decoded == "." || decoded == ".." || (seg.is_empty() && !last)
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a
/// path segment or a query value).
pub fn percent_encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod host_tests {
    use super::valid_host;

    #[test]
    fn hosts_per_rfc_3986() {
        for h in [
            "a",
            "example.com",
            "example.com:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]",
            "xn--bcher-kva.example",
            "a_b~c!$&'()*+,;=",
            "caf%C3%A9.example",
            "",
            "a:",
        ] {
            assert!(valid_host(h), "{h}");
        }
        for h in [
            "x y", "x@y", "u:p@host", "x/y", "x?y", "x#y", "a:b:c", "a:8o", "[::1", "[::1]x",
            "[not-v6]", "[::1]:8o", "a%2", "a%zz", "a\\b", "a\"b",
        ] {
            assert!(!valid_host(h), "{h}");
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::ambiguous_path;

    #[test]
    fn dot_and_empty_segments_are_ambiguous() {
        for p in [
            "/open/../secure/a",
            "/open/%2e%2e/secure/a",
            "/open/%2E%2E/secure",
            "/open/..;/secure/a",
            "//secure/a",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/open/..%2fsecure",
            "/open\\..\\secure",
        ] {
            assert!(ambiguous_path(p), "{p}");
        }
        for p in [
            "/",
            "/api/orders/7",
            "/api/orders/",
            "/a/b.c/..d/e..",
            "/files/%2e%2e.txt",
            "/x;y=1/z",
        ] {
            assert!(!ambiguous_path(p), "{p}");
        }
    }
}
