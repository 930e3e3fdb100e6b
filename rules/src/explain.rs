//! `explain`: which route and upstream a request gets, and why: each
//! aggregate and route tried in order with the reason it was passed over,
//! the matchers that decided, the split, the sticky bucket, the upstream.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::matcher::{RequestView, SimpleRequest};
use crate::split::{BUCKETS, fmt_bp};
use crate::table::{Choice, RouteTable, Target};

/// The answer, printable as text or serialisable as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    /// Every aggregate and route tried, in order, up to the one that matched.
    pub tried: Vec<Attempt>,
    /// `None`: no route matched, the default upstream serves it.
    pub matched: Option<Matched>,
    /// The live split of the matched route, in bucket order.
    pub split: Vec<Share>,
    pub sticky: Option<Sticky>,
    /// The upstream chosen, when the choice is not random.
    pub upstream: Option<String>,
    /// For a random choice: each upstream with its probability.
    pub probabilities: Vec<Share>,
    /// The default upstream, for requests that match no route.
    pub default_upstream: String,
    /// The matched route's shadow, described (e.g. `orders, 100% of GET, HEAD`).
    pub shadow: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// "aggregate" or "route".
    pub kind: String,
    pub name: String,
    pub matched: bool,
    /// Why it was passed over (empty when it matched).
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matched {
    pub kind: String,
    pub name: String,
    /// Position in the file's list, from 0.
    pub index: usize,
    /// The matchers that decided, described.
    pub matchers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    pub upstream: String,
    pub percent: f64,
    /// Bucket range `[start, end)` of 0..10000.
    pub buckets: (u16, u16),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sticky {
    /// e.g. `header:x-user-id`
    pub key: String,
    pub salt: String,
    /// The key's value in the request; `None`: absent, random choice.
    pub value: Option<String>,
    pub bucket: Option<u16>,
}

/// Explains how `table` routes `req`.
pub fn explain<R: RequestView + ?Sized>(table: &RouteTable, req: &R) -> Explanation {
    let config = table.config();
    let name_of = |id: crate::UpstreamId| config.upstream(id).name.clone();
    let mut tried = Vec::new();
    let mut matched = None;
    let mut target = Target::Default;

    for (i, a) in config.aggregates.iter().enumerate() {
        match a.matcher.check(req) {
            Ok(()) => {
                tried.push(Attempt {
                    kind: "aggregate".into(),
                    name: a.name.clone(),
                    matched: true,
                    reason: String::new(),
                });
                matched = Some(Matched {
                    kind: "aggregate".into(),
                    name: a.name.clone(),
                    index: i,
                    matchers: a.matcher.describe(),
                });
                target = Target::Aggregate(i);
                break;
            }
            Err(rej) => tried.push(Attempt {
                kind: "aggregate".into(),
                name: a.name.clone(),
                matched: false,
                reason: a.matcher.explain_rejection(req, rej),
            }),
        }
    }
    if matched.is_none() {
        for (i, r) in config.routes.iter().enumerate() {
            match r.matcher.check(req) {
                Ok(()) => {
                    tried.push(Attempt {
                        kind: "route".into(),
                        name: r.name.clone(),
                        matched: true,
                        reason: String::new(),
                    });
                    let mut matchers = r.matcher.describe();
                    if matchers.is_empty() {
                        matchers.push("no matchers: every request".to_string());
                    }
                    matched = Some(Matched {
                        kind: "route".into(),
                        name: r.name.clone(),
                        index: i,
                        matchers,
                    });
                    target = Target::Route(i);
                    break;
                }
                Err(rej) => tried.push(Attempt {
                    kind: "route".into(),
                    name: r.name.clone(),
                    matched: false,
                    reason: r.matcher.explain_rejection(req, rej),
                }),
            }
        }
    }
    debug_assert_eq!(target, table.find(req), "index and linear lookup disagree");

    let mut out = Explanation {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query().map(str::to_string),
        host: req.host().map(str::to_string),
        tried,
        matched,
        split: Vec::new(),
        sticky: None,
        upstream: None,
        probabilities: Vec::new(),
        default_upstream: name_of(config.default_upstream),
        shadow: None,
    };
    match target {
        Target::Default => out.upstream = Some(out.default_upstream.clone()),
        Target::Aggregate(_) => {}
        Target::Route(i) => {
            let route = &config.routes[i];
            let split = table.split(i);
            let mut start = 0;
            for (id, w) in split.weights() {
                let end = (start + w).min(BUCKETS);
                out.split.push(Share {
                    upstream: name_of(id),
                    percent: f64::from(w) / 100.0,
                    buckets: (start, end),
                });
                start = end;
            }
            if let Some(key) = &route.sticky {
                let value = key.value(req).map(str::to_string);
                out.sticky = Some(Sticky {
                    key: key.to_string(),
                    salt: route.sticky_salt.clone(),
                    bucket: value
                        .as_deref()
                        .map(|v| crate::split::bucket(route.sticky_seed, v)),
                    value,
                });
            }
            let (upstream, choice) = table.choose(i, req, || 0);
            out.shadow = route.shadow.as_ref().map(|s| {
                let target = name_of(s.upstream);
                if !s.methods.iter().any(|m| m == req.method()) {
                    format!("not shadowed: {} is not in [{}]", req.method(), s.methods.join(", "))
                } else if !matches!(choice, Choice::Random { .. }) && upstream == s.upstream {
                    format!("not shadowed: the split already sends it to {target} (counted skipped_same_upstream)")
                } else {
                    format!(
                        "{target}, {}% of {} (sampled on its own hash, independent of the split)",
                        fmt_bp(s.percent_bp),
                        s.methods.join(", ")
                    )
                }
            });
            match choice {
                Choice::Fixed | Choice::Sticky { .. } => out.upstream = Some(name_of(upstream)),
                Choice::Random { .. } => {
                    out.probabilities = out
                        .split
                        .iter()
                        .filter(|s| s.percent > 0.0)
                        .cloned()
                        .collect();
                }
            }
        }
    }
    out
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let query = self
            .query
            .as_ref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let host = self.host.as_deref().unwrap_or("(no host)");
        writeln!(
            f,
            "request:  {} {}{} host {}",
            self.method, self.path, query, host
        )?;
        if !self.tried.is_empty() {
            writeln!(f, "tried in order:")?;
            let width = self.tried.iter().map(|a| a.name.len()).max().unwrap_or(0);
            for (n, a) in self.tried.iter().enumerate() {
                let verdict = if a.matched {
                    "matched".to_string()
                } else {
                    format!("skipped: {}", a.reason)
                };
                writeln!(
                    f,
                    "  {:>2}. {:<9} {:<width$}  {}",
                    n + 1,
                    a.kind,
                    a.name,
                    verdict
                )?;
            }
        }
        match &self.matched {
            None => {
                writeln!(f, "route:    none matched; the default upstream serves it")?;
            }
            Some(m) => {
                writeln!(
                    f,
                    "{:<9} {} (#{} in the file)",
                    format!("{}:", m.kind),
                    m.name,
                    m.index + 1
                )?;
                writeln!(f, "matched:  {}", m.matchers.join(", "))?;
            }
        }
        if matches!(&self.matched, Some(m) if m.kind == "aggregate") {
            writeln!(f, "upstream: each part is routed on its own")?;
            return Ok(());
        }
        if !self.split.is_empty() {
            let parts: Vec<String> = self
                .split
                .iter()
                .map(|s| {
                    let pct = fmt_bp((s.percent * 100.0).round() as u16);
                    if s.buckets.1 > s.buckets.0 {
                        format!(
                            "{} {pct}% (buckets {}-{})",
                            s.upstream,
                            s.buckets.0,
                            s.buckets.1 - 1
                        )
                    } else {
                        format!("{} {pct}% (no buckets)", s.upstream)
                    }
                })
                .collect();
            writeln!(f, "split:    {}", parts.join(", "))?;
        }
        if let Some(s) = &self.sticky {
            match (&s.value, s.bucket) {
                (Some(v), Some(b)) => writeln!(
                    f,
                    "sticky:   {} = \"{}\" -> bucket {} of 0-9999 (salt \"{}\")",
                    s.key, v, b, s.salt
                )?,
                _ => writeln!(f, "sticky:   {} absent -> random choice", s.key)?,
            }
        }
        if let Some(s) = &self.shadow {
            writeln!(f, "shadow:   {s}")?;
        }
        match &self.upstream {
            Some(u) => writeln!(f, "upstream: {u}")?,
            None => {
                let parts: Vec<String> = self
                    .probabilities
                    .iter()
                    .map(|s| {
                        format!(
                            "{} with probability {}%",
                            s.upstream,
                            fmt_bp((s.percent * 100.0).round() as u16)
                        )
                    })
                    .collect();
                writeln!(f, "upstream: random: {}", parts.join(", "))?;
            }
        }
        Ok(())
    }
}
/// Builds the request `explain` routes: the URL's authority is the Host
/// unless a `Host` header is given, as curl does.
pub fn build_request(method: &str, url: &str, headers: &[String]) -> Result<SimpleRequest, String> {
    // Like curl: the fragment is never sent.
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    let (authority, target) = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(format!(
                    "invalid url \"{url}\": scheme must be http or https"
                ));
            }
            match rest.find(['/', '?']) {
                Some(i) => (Some(&rest[..i]), rest[i..].to_string()),
                None => (Some(rest), "/".to_string()),
            }
        }
        None if url.starts_with('/') => (None, url.to_string()),
        None => {
            return Err(format!(
                "invalid url \"{url}\": give http://host/path or /path"
            ));
        }
    };
    let target = if target.starts_with('?') {
        format!("/{target}")
    } else {
        target
    };
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("invalid method \"{method}\""));
    }
    let mut req = SimpleRequest::new(method, &target);
    // Credentials (user:pw@) are not part of the Host.
    let authority = authority.map(|a| a.rsplit_once('@').map_or(a, |(_, h)| h));
    if let Some(a) = authority.filter(|a| !a.is_empty()) {
        req = req.host(a);
    }
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("invalid header \"{h}\": write -H 'name: value'"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("invalid header \"{h}\": empty name"));
        }
        if name.eq_ignore_ascii_case("host") {
            req.host = Some(value.trim().to_string());
        }
        req = req.header(name, value.trim());
    }
    Ok(req)
}
