//! Request matchers of one route: path (exact, prefix, template, regex),
//! methods, host, headers, query and cookies, checked against any request
//! type that implements [`RequestView`]. The direct checks here are the
//! reference semantics; `crate::index` only narrows down candidates.

use std::borrow::Cow;

use regex::Regex;

/// What the rule engine needs to see of a request. The proxy implements it
/// for hyper's request head; [`SimpleRequest`] serves tests and `explain`.
pub trait RequestView {
    /// The method as sent, e.g. `GET`.
    fn method(&self) -> &str;
    /// The path, without the query, byte for byte as received.
    fn path(&self) -> &str;
    /// The raw query string without the `?`.
    fn query(&self) -> Option<&str>;
    /// The Host header (or :authority), possibly with a port.
    fn host(&self) -> Option<&str>;
    /// The first value of header `name` (given in lowercase).
    fn header(&self, name: &str) -> Option<&str>;
    /// Whether `pred` holds for any value of header `name` (lowercase).
    fn any_header_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool;
    /// A verified JWT claim, once authentication has run.
    fn claim(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// A request built by hand: for tests, benchmarks and `explain`.
#[derive(Debug, Clone, Default)]
pub struct SimpleRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub claims: Vec<(String, String)>,
}

impl SimpleRequest {
    /// `target` is a path with an optional query, e.g. `/api/orders?v=2`.
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        SimpleRequest {
            method: method.to_string(),
            path,
            query,
            ..Default::default()
        }
    }

    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
}

impl RequestView for SimpleRequest {
    fn method(&self) -> &str {
        &self.method
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
    fn host(&self) -> Option<&str> {
        self.host.as_deref().or_else(|| {
            self.headers
                .iter()
                .find(|(n, _)| n == "host")
                .map(|(_, v)| v.as_str())
        })
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn any_header_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.headers.iter().any(|(n, v)| n == name && pred(v))
    }
    fn claim(&self, name: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a route matches the path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path, byte for byte.
    Exact(String),
    /// A prefix on segment boundaries: `/api/orders` matches `/api/orders`
    /// and `/api/orders/7`, not `/api/ordersX`. A trailing slash
    /// (`/api/orders/`) requires something after it, as in nginx.
    Prefix(String),
    /// `{name}` matches one non-empty segment, `{*name}` the non-empty rest.
    Template(PathTemplate),
    /// The regex must match the whole path (it is anchored).
    Regex(Regex),
}

impl PathMatch {
    /// The reference check: direct, without any index.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => prefix_matches(p, path),
            PathMatch::Template(t) => t.matches(path),
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// How the config wrote it, for `explain`.
    pub fn describe(&self) -> String {
        match self {
            PathMatch::Exact(p) => format!("path {p}"),
            PathMatch::Prefix(p) => format!("path prefix {p}"),
            PathMatch::Template(t) => format!("path template {}", t.source),
            PathMatch::Regex(r) => {
                let s = r.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                format!("path regex {inner}")
            }
        }
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Splits a path into segments: `/` has none, `/a/` has `a` and an empty one.
pub(crate) fn segments(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    if rest.is_empty() { None } else { Some(rest) }
}

/// Takes the next segment off `rest`.
#[inline]
pub(crate) fn next_segment(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((seg, after)) => (seg, Some(after)),
        None => (rest, None),
    }
}

/// A parsed path template such as `/api/users/{id}` or `/static/{*rest}`.
#[derive(Debug, Clone)]
pub struct PathTemplate {
    pub source: String,
    pub segments: Vec<TemplateSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    Literal(String),
    Param(String),
    CatchAll(String),
}

impl PathTemplate {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Self, String> {
        if !source.starts_with('/') {
            return Err(format!("path template \"{source}\" must start with /"));
        }
        let mut out = Vec::new();
        let mut rest = segments(source);
        while let Some(r) = rest {
            let (seg, after) = next_segment(r);
            rest = after;
            let parsed = if let Some(inner) =
                seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
            {
                let (catch_all, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "path template \"{source}\": parameter \"{seg}\" needs a name of letters, digits and _"
                    ));
                }
                if catch_all {
                    if rest.is_some() {
                        return Err(format!(
                            "path template \"{source}\": catch-all {seg} must be the last segment"
                        ));
                    }
                    TemplateSegment::CatchAll(name.to_string())
                } else {
                    TemplateSegment::Param(name.to_string())
                }
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "path template \"{source}\": parameters must be whole segments, found \"{seg}\""
                ));
            } else {
                TemplateSegment::Literal(seg.to_string())
            };
            if let TemplateSegment::Param(n) | TemplateSegment::CatchAll(n) = &parsed
                && out.iter().any(|s| matches!(s, TemplateSegment::Param(m) | TemplateSegment::CatchAll(m) if m == n)) {
                    return Err(format!("path template \"{source}\": parameter {{{n}}} appears twice"));
                }
            out.push(parsed);
        }
        Ok(PathTemplate {
            source: source.to_string(),
            segments: out,
        })
    }

    /// Names of the template's parameters.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            TemplateSegment::Param(n) | TemplateSegment::CatchAll(n) => Some(n.as_str()),
            TemplateSegment::Literal(_) => None,
        })
    }

    /// The reference check.
    pub fn matches(&self, path: &str) -> bool {
        self.captures(path).is_some()
    }

    /// The parameter values when `path` matches.
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        if !path.starts_with('/') {
            return None;
        }
        let mut caps = Vec::new();
        let mut rest = segments(path);
        for seg in &self.segments {
            match seg {
                TemplateSegment::CatchAll(name) => {
                    let r = rest.filter(|r| !r.is_empty())?;
                    caps.push((name.as_str(), r));
                    return Some(caps);
                }
                TemplateSegment::Literal(lit) => {
                    let (s, after) = next_segment(rest?);
                    if s != lit {
                        return None;
                    }
                    rest = after;
                }
                TemplateSegment::Param(name) => {
                    let (s, after) = next_segment(rest?);
                    if s.is_empty() {
                        return None;
                    }
                    caps.push((name.as_str(), s));
                    rest = after;
                }
            }
        }
        if rest.is_none() { Some(caps) } else { None }
    }
}

/// How a header, query parameter or cookie value is matched.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Equal, byte for byte.
    Exact(String),
    /// `~regex`: the regex must match the whole value.
    Regex(Regex),
    /// `*`: present, any value.
    Present,
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => value == v,
            ValueMatch::Regex(r) => r.is_match(value),
            ValueMatch::Present => true,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ValueMatch::Exact(v) => format!("= \"{v}\""),
            ValueMatch::Regex(r) => {
                let s = r.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                format!("~ /{inner}/")
            }
            ValueMatch::Present => "present".to_string(),
        }
    }
}

/// Host matching, case-insensitive, port ignored.
#[derive(Debug, Clone)]
pub enum HostMatch {
    /// `shop.example.com`
    Exact(String),
    /// `*.example.com`: any subdomain (stored as `.example.com`).
    Suffix(String),
}

impl HostMatch {
    pub fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Suffix(s) => format!("*{s}"),
        }
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Every matcher of one route or aggregate. All that are set must pass.
#[derive(Debug, Clone, Default)]
pub struct MatchSpec {
    pub path: Option<PathMatch>,
    /// Empty: any method.
    pub methods: Vec<String>,
    pub host: Option<HostMatch>,
    /// Header names in lowercase.
    pub headers: Vec<(String, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
    pub cookies: Vec<(String, ValueMatch)>,
}

/// The first matcher that failed, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Path,
    Method,
    Host,
    Header(usize),
    Query(usize),
    Cookie(usize),
}

impl MatchSpec {
    /// The reference check: every matcher, path included.
    pub fn check<R: RequestView + ?Sized>(&self, req: &R) -> Result<(), Rejection> {
        if let Some(p) = &self.path
            && !p.matches(req.path())
        {
            return Err(Rejection::Path);
        }
        self.check_rest(req)
    }

    /// Every matcher but the path (which the index already matched).
    #[inline]
    pub fn check_rest<R: RequestView + ?Sized>(&self, req: &R) -> Result<(), Rejection> {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method()) {
            return Err(Rejection::Method);
        }
        if let Some(h) = &self.host
            && !req.host().is_some_and(|host| h.matches(host))
        {
            return Err(Rejection::Host);
        }
        for (i, (name, vm)) in self.headers.iter().enumerate() {
            if !req.any_header_value(name, &mut |v| vm.matches(v)) {
                return Err(Rejection::Header(i));
            }
        }
        for (i, (name, vm)) in self.query.iter().enumerate() {
            if !query_has(req.query(), name, vm) {
                return Err(Rejection::Query(i));
            }
        }
        for (i, (name, vm)) in self.cookies.iter().enumerate() {
            if !req.any_header_value("cookie", &mut |v| any_cookie(v, name, |c| vm.matches(c))) {
                return Err(Rejection::Cookie(i));
            }
        }
        Ok(())
    }

    /// The matchers that are set, described, for `explain`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.path {
            out.push(p.describe());
        }
        if !self.methods.is_empty() {
            out.push(format!("method in [{}]", self.methods.join(", ")));
        }
        if let Some(h) = &self.host {
            out.push(format!("host {}", h.describe()));
        }
        for (n, v) in &self.headers {
            out.push(format!("header {n} {}", v.describe()));
        }
        for (n, v) in &self.query {
            out.push(format!("query {n} {}", v.describe()));
        }
        for (n, v) in &self.cookies {
            out.push(format!("cookie {n} {}", v.describe()));
        }
        out
    }

    /// Why `req` was rejected, in words.
    pub fn explain_rejection<R: RequestView + ?Sized>(
        &self,
        req: &R,
        rejection: Rejection,
    ) -> String {
        match rejection {
            Rejection::Path => match &self.path {
                Some(p) => format!("path {} does not match {}", req.path(), p.describe()),
                None => "path".to_string(),
            },
            Rejection::Method => format!(
                "method {} not in [{}]",
                req.method(),
                self.methods.join(", ")
            ),
            Rejection::Host => match (&self.host, req.host()) {
                (Some(h), Some(got)) => format!("host {got} is not {}", h.describe()),
                (Some(h), None) => format!("no host, want {}", h.describe()),
                _ => "host".to_string(),
            },
            Rejection::Header(i) => {
                let (n, vm) = &self.headers[i];
                match req.header(n) {
                    Some(v) => format!("header {n} is \"{v}\", want {}", vm.describe()),
                    None => format!("header {n} missing, want {}", vm.describe()),
                }
            }
            Rejection::Query(i) => {
                let (n, vm) = &self.query[i];
                format!("query parameter {n} does not match {}", vm.describe())
            }
            Rejection::Cookie(i) => {
                let (n, vm) = &self.cookies[i];
                format!("cookie {n} does not match {}", vm.describe())
            }
        }
    }
}

/// Whether the query string has parameter `name` with a value `vm` accepts.
/// Names and values are compared after form-urlencoded decoding.
pub fn query_has(query: Option<&str>, name: &str, vm: &ValueMatch) -> bool {
    let Some(q) = query else { return false };
    q.split('&').filter(|p| !p.is_empty()).any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        form_decode(k) == name && vm.matches(&form_decode(v))
    })
}

/// Whether `pred` holds for any value of cookie `name` in one Cookie header value.
pub fn any_cookie<'a>(header: &'a str, name: &str, mut pred: impl FnMut(&'a str) -> bool) -> bool {
    header
        .split(';')
        .any(|pair| match pair.trim().split_once('=') {
            Some((k, v)) if k.trim() == name => {
                let v = v.trim();
                pred(
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v),
                )
            }
            _ => false,
        })
}

/// The first value of cookie `name` in one Cookie header value.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    any_cookie(header, name, |v| {
        found = Some(v);
        true
    });
    found
}

/// Decodes `+` and `%XX` (application/x-www-form-urlencoded). Invalid
/// escapes stay as they are; invalid UTF-8 is replaced.
pub fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_respects_segment_boundaries() {
        let p = PathMatch::Prefix("/api/orders".into());
        assert!(p.matches("/api/orders"));
        assert!(p.matches("/api/orders/"));
        assert!(p.matches("/api/orders/7"));
        assert!(!p.matches("/api/ordersX"));
        assert!(!p.matches("/api"));
        let slash = PathMatch::Prefix("/api/orders/".into());
        assert!(!slash.matches("/api/orders"));
        assert!(slash.matches("/api/orders/7"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
    }

    #[test]
    fn templates_match_segments() {
        let t = PathTemplate::parse("/api/users/{id}").unwrap();
        assert!(t.matches("/api/users/7"));
        assert!(!t.matches("/api/users/"));
        assert!(!t.matches("/api/users/7/orders"));
        assert_eq!(t.captures("/api/users/42").unwrap(), vec![("id", "42")]);
        let c = PathTemplate::parse("/static/{*rest}").unwrap();
        assert!(c.matches("/static/a/b.css"));
        assert!(!c.matches("/static/"));
        assert!(!c.matches("/static"));
        assert!(PathTemplate::parse("/a/{*rest}/b").is_err());
        assert!(PathTemplate::parse("/a/x{id}").is_err());
        assert!(PathTemplate::parse("/a/{id}/{id}").is_err());
        assert!(PathTemplate::parse("a/{id}").is_err());
    }

    #[test]
    fn query_and_cookies_decode() {
        assert_eq!(form_decode("a%20b+c%zz%4"), "a b c%zz%4");
        let vm = ValueMatch::Exact("two words".into());
        assert!(query_has(Some("x=1&q=two+words"), "q", &vm));
        assert!(!query_has(Some("x=1"), "q", &vm));
        assert_eq!(cookie_value("a=1; beta=\"yes\"; c=3", "beta"), Some("yes"));
        assert_eq!(cookie_value("a=1", "beta"), None);
    }

    #[test]
    fn host_ignores_port_and_case() {
        let h = HostMatch::Exact("shop.example.com".into());
        assert!(h.matches("Shop.Example.com:8080"));
        assert!(!h.matches("example.com"));
        let s = HostMatch::Suffix(".example.com".into());
        assert!(s.matches("a.example.com"));
        assert!(!s.matches("example.com"));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
