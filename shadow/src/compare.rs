//! The comparison of a primary and a shadow answer (SPEC section 6):
//! status, content-type, the route's `compare.headers` minus
//! `compare.ignore_headers`, and the body after decoding its
//! Content-Encoding: JSON structurally (key order ignored, numbers by value,
//! `ignore_fields`, `unordered_arrays`), text by lines, anything else (and
//! bodies over the capture cap) by length and SHA-256.
//!
//! A [`Comparator`] is compiled once per route (and per runtime change of
//! its ignore rules) and used off the hot path by the diff pipeline.

use std::collections::BTreeSet;
use std::io::Read;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Number, Value, json};
use strangler_rules::config::{CompareSpec, Normalizer};

use crate::capture::Captured;
use crate::pointer::{self, Pattern};
use crate::redact::Redactor;

/// At most this many differences are kept per record (all are counted).
pub const MAX_DIFFERENCES: usize = 100;

/// Headers never compared: framing and hop-by-hop.
const NEVER_COMPARED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Status,
    Header,
    Body,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Header => "header",
            Kind::Body => "body",
        }
    }
}

/// One difference between the two answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub kind: Kind,
    /// Where: a JSON Pointer into the body, a header name, `#L<n>` for a
    /// line of a text body, or empty for the status or a whole body.
    pub path: String,
    /// `path` with array indices folded into `*`: the summary's field.
    pub field: String,
    /// The primary's value; absent when the primary has none there.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub primary: Option<Value>,
    /// The shadow's value; absent when the shadow has none there.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub shadow: Option<Value>,
}

/// A present field is `Some`, even when it is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A body ready to compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Empty,
    Json(Value),
    Text(String),
    /// Not text, or content-encoded in a way strangler cannot decode.
    Binary,
    /// Longer than the capture cap: only length and hash are known.
    Truncated,
}

/// One answer, decoded, classified and redacted.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub body_len: u64,
    /// Keyed hash of the whole body as sent (see [`crate::capture`]).
    pub body_hash: String,
    pub latency_ms: f64,
    /// Why the body could not be decoded or parsed, or was withheld.
    pub note: Option<String>,
    /// The body is not kept in records (it could not be redacted).
    pub withheld: bool,
}

/// A route's comparison rules, compiled.
#[derive(Debug, Clone)]
pub struct Comparator {
    headers: Vec<String>,
    /// The same names parsed once, for the quick path.
    header_names: Vec<http::HeaderName>,
    ignore: Vec<Pattern>,
    unordered: Vec<Pattern>,
    redact_headers: Vec<String>,
    redact_fields: Vec<Pattern>,
    normalize: Vec<Normalizer>,
}

impl Comparator {
    /// Compiles `spec`, plus ignore rules added at run time.
    pub fn new(spec: &CompareSpec, ignore_fields_add: &[String]) -> Self {
        let mut headers = vec!["content-type".to_string()];
        for h in &spec.headers {
            if !headers.contains(h) {
                headers.push(h.clone());
            }
        }
        headers
            .retain(|h| !spec.ignore_headers.contains(h) && !NEVER_COMPARED.contains(&h.as_str()));
        let (fields, names): (Vec<&String>, Vec<&String>) =
            spec.redact.iter().partition(|r| r.starts_with('/'));
        Comparator {
            header_names: headers
                .iter()
                .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            headers,
            ignore: spec
                .ignore_fields
                .iter()
                .chain(ignore_fields_add)
                .map(|p| Pattern::parse(p))
                .collect(),
            unordered: spec
                .unordered_arrays
                .iter()
                .map(|p| Pattern::parse(p))
                .collect(),
            redact_headers: names.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            redact_fields: fields.into_iter().map(|p| Pattern::parse(p)).collect(),
            normalize: spec.normalize.clone(),
        }
    }

    /// Decodes, classifies and redacts one captured answer. `decode_limit`
    /// bounds the decoded size of a compressed body.
    pub fn prepare(&self, c: Captured, redactor: &Redactor, decode_limit: usize) -> Prepared {
        let c = c.into_mapped();
        let mut headers = crate::capture::header_list(&c.headers);
        redactor.headers(&mut headers, &self.redact_headers);
        let mut note = None;
        let body_hash = match &c.long_body_hash {
            Some(h) => h.clone(),
            None => redactor.hash(&c.body),
        };
        let body = if c.long_body_hash.is_some() {
            Body::Truncated
        } else if c.body.is_empty() {
            Body::Empty
        } else {
            match decode(&headers, &c.body, decode_limit) {
                Ok(decoded) => {
                    let (body, why) = classify(&headers, decoded);
                    note = why;
                    body
                }
                Err(why) => {
                    note = Some(why);
                    Body::Binary
                }
            }
        };
        let mut withheld = false;
        let body = match body {
            Body::Json(mut v) => {
                redactor.json(&mut v, &self.redact_fields);
                Body::Json(v)
            }
            // Text cannot have JSON fields redacted: its lines are compared
            // by keyed hash, and the body is not kept.
            Body::Text(t) if !self.redact_fields.is_empty() => {
                withheld = true;
                let why = "body withheld: not JSON, so compare.redact cannot apply; lines compared by keyed hash";
                note = Some(match note {
                    Some(n) => format!("{n}; {why}"),
                    None => why.to_string(),
                });
                let hashed: Vec<String> = t.lines().map(|l| redactor.token(l.as_bytes())).collect();
                Body::Text(hashed.join("\n"))
            }
            other => other,
        };
        Prepared {
            status: c.status,
            headers,
            body,
            body_len: c.body_len,
            body_hash,
            latency_ms: c.latency_ms,
            note,
            withheld,
        }
    }

    /// Whether the two raw answers are equal in everything compared, so
    /// no decoding, parsing or redaction is needed: same status, the same
    /// values of every compared header, and byte-equal bodies with the same
    /// Content-Encoding. Anything these rules call equal, the full
    /// comparison would too (ignore rules, unordered arrays and redaction
    /// only ever make more things equal).
    pub fn quick_match(&self, p: &Captured, s: &Captured) -> bool {
        p.status == s.status
            && p.body_len == s.body_len
            && p.long_body_hash == s.long_body_hash
            && p.body == s.body
            && p.values(&http::header::CONTENT_ENCODING)
                .eq(s.values(&http::header::CONTENT_ENCODING))
            && self
                .header_names
                .iter()
                .all(|h| p.values(h).eq(s.values(h)))
    }

    /// Every difference between the two answers, the first
    /// [`MAX_DIFFERENCES`] of them kept, and how many there were.
    pub fn compare(&self, primary: &Prepared, shadow: &Prepared) -> (Vec<Difference>, usize) {
        let mut out = Diffs::default();
        if primary.status != shadow.status {
            out.push(Difference {
                kind: Kind::Status,
                path: String::new(),
                field: String::new(),
                primary: Some(json!(primary.status)),
                shadow: Some(json!(shadow.status)),
            });
        }
        for name in &self.headers {
            let p = header_value(&primary.headers, name);
            let s = header_value(&shadow.headers, name);
            let (p, s) = if name == "content-type" {
                (p.map(|v| media_type(&v)), s.map(|v| media_type(&v)))
            } else {
                (p, s)
            };
            let same_shape = match (&p, &s) {
                (Some(a), Some(b)) => self.same_shape(a, b),
                _ => false,
            };
            if p != s && !same_shape {
                out.push(Difference {
                    kind: Kind::Header,
                    path: name.clone(),
                    field: name.clone(),
                    primary: p.map(Value::String),
                    shadow: s.map(Value::String),
                });
            }
        }
        self.compare_bodies(primary, shadow, &mut out);
        (out.kept, out.total)
    }

    fn compare_bodies(&self, p: &Prepared, s: &Prepared, out: &mut Diffs) {
        match (&p.body, &s.body) {
            (Body::Empty, Body::Empty) => {}
            (Body::Json(a), Body::Json(b)) => {
                let mut walk = Walk {
                    cmp: self,
                    path: Vec::new(),
                    is_index: Vec::new(),
                    out,
                };
                walk.value(a, b);
            }
            (Body::Text(a), Body::Text(b)) => text_diff(a, b, out),
            _ => {
                if p.body_hash != s.body_hash || p.body != s.body {
                    out.push(Difference {
                        kind: Kind::Body,
                        path: String::new(),
                        field: String::new(),
                        primary: Some(body_digest(p)),
                        shadow: Some(body_digest(s)),
                    });
                }
            }
        }
    }

    /// Two strings of a shape the route normalises (both timestamps, or
    /// both UUIDs) are equal.
    fn same_shape(&self, a: &str, b: &str) -> bool {
        self.normalize.iter().any(|n| {
            let re = shape(*n);
            re.is_match(a) && re.is_match(b)
        })
    }

    /// The stand-in for a normalised value, for unordered comparison.
    fn shape_of(&self, v: &str) -> Option<&'static str> {
        self.normalize
            .iter()
            .find(|n| shape(**n).is_match(v))
            .map(|n| match n {
                Normalizer::Timestamps => "<timestamp>",
                Normalizer::Uuids => "<uuid>",
            })
    }

    fn ignored(&self, path: &[String]) -> bool {
        self.ignore.iter().any(|p| p.covers(path))
    }

    fn unordered(&self, path: &[String]) -> bool {
        self.unordered.iter().any(|p| p.matches(path))
    }
}

#[derive(Default)]
struct Diffs {
    kept: Vec<Difference>,
    total: usize,
}

impl Diffs {
    fn push(&mut self, d: Difference) {
        self.total += 1;
        if self.kept.len() < MAX_DIFFERENCES {
            self.kept.push(d);
        }
    }
}

/// A recursive structural comparison of two JSON documents.
struct Walk<'a> {
    cmp: &'a Comparator,
    path: Vec<String>,
    is_index: Vec<bool>,
    out: &'a mut Diffs,
}

impl Walk<'_> {
    fn differ(&mut self, p: Option<&Value>, s: Option<&Value>) {
        self.out.push(Difference {
            kind: Kind::Body,
            path: pointer::join(&self.path),
            field: pointer::join_folded(&self.path, &self.is_index),
            primary: p.cloned(),
            shadow: s.cloned(),
        });
    }

    fn enter(&mut self, seg: String, index: bool) {
        self.path.push(seg);
        self.is_index.push(index);
    }

    fn leave(&mut self) {
        self.path.pop();
        self.is_index.pop();
    }

    fn value(&mut self, p: &Value, s: &Value) {
        if self.cmp.ignored(&self.path) {
            return;
        }
        match (p, s) {
            (Value::Object(a), Value::Object(b)) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    self.enter(k.clone(), false);
                    match (a.get(k), b.get(k)) {
                        (Some(x), Some(y)) => self.value(x, y),
                        (x, y) => {
                            if !self.cmp.ignored(&self.path) {
                                self.differ(x, y);
                            }
                        }
                    }
                    self.leave();
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                if self.cmp.unordered(&self.path) {
                    self.unordered(a, b);
                } else {
                    self.ordered(a, b, (0..a.len()).collect(), (0..b.len()).collect());
                }
            }
            (Value::Number(a), Value::Number(b)) => {
                if !numbers_equal(a, b) {
                    self.differ(Some(p), Some(s));
                }
            }
            (Value::String(a), Value::String(b)) => {
                if a != b && !self.cmp.same_shape(a, b) {
                    self.differ(Some(p), Some(s));
                }
            }
            _ => {
                if p != s {
                    self.differ(Some(p), Some(s));
                }
            }
        }
    }

    /// Compares the elements `ia` of `a` with `ib` of `b` pairwise, by
    /// position; extra elements on either side are differences.
    fn ordered(&mut self, a: &[Value], b: &[Value], ia: Vec<usize>, ib: Vec<usize>) {
        for k in 0..ia.len().max(ib.len()) {
            let (x, y) = (ia.get(k).map(|&i| &a[i]), ib.get(k).map(|&i| &b[i]));
            let at = ia.get(k).or(ib.get(k)).copied().unwrap_or(k);
            self.enter(at.to_string(), true);
            match (x, y) {
                (Some(x), Some(y)) => self.value(x, y),
                (x, y) => {
                    if !self.cmp.ignored(&self.path) {
                        self.differ(x, y)
                    }
                }
            }
            self.leave();
        }
    }

    /// Order does not matter: equal elements pair up whatever their
    /// position; what is left is compared by position.
    fn unordered(&mut self, a: &[Value], b: &[Value]) {
        let key = |items: &[Value], walk: &Walk<'_>| -> Vec<String> {
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut path = walk.path.clone();
                    path.push(i.to_string());
                    canonical(v, walk.cmp, &mut path)
                })
                .collect()
        };
        let (ka, kb) = (key(a, self), key(b, self));
        let mut used = vec![false; b.len()];
        let mut left_a = Vec::new();
        for (i, k) in ka.iter().enumerate() {
            match (0..b.len()).find(|&j| !used[j] && kb[j] == *k) {
                Some(j) => used[j] = true,
                None => left_a.push(i),
            }
        }
        let left_b: Vec<usize> = (0..b.len()).filter(|&j| !used[j]).collect();
        self.ordered(a, b, left_a, left_b);
    }
}

/// A canonical string of `v` for unordered comparison: keys sorted, numbers
/// by value, ignored fields left out.
fn canonical(v: &Value, cmp: &Comparator, path: &mut Vec<String>) -> String {
    if cmp.ignored(path) {
        return String::from("~");
    }
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut s = String::from("{");
            for k in keys {
                path.push(k.clone());
                if !cmp.ignored(path) {
                    s.push_str(&Value::String(k.clone()).to_string());
                    s.push(':');
                    s.push_str(&canonical(&m[k], cmp, path));
                    s.push(',');
                }
                path.pop();
            }
            s.push('}');
            s
        }
        Value::Array(items) => {
            let mut s = String::from("[");
            for (i, x) in items.iter().enumerate() {
                path.push(i.to_string());
                s.push_str(&canonical(x, cmp, path));
                path.pop();
                s.push(',');
            }
            s.push(']');
            s
        }
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => format!("{}", i as f64),
            (_, Some(u), _) => format!("{}", u as f64),
            (_, _, Some(f)) => format!("{f}"),
            _ => n.to_string(),
        },
        Value::String(text) => match cmp.shape_of(text) {
            Some(placeholder) => placeholder.to_string(),
            None => v.to_string(),
        },
        other => other.to_string(),
    }
}

/// The shape a normaliser recognises.
fn shape(n: Normalizer) -> &'static regex::Regex {
    use std::sync::LazyLock;
    // RFC 3339 and its common relatives (space for T, no seconds, no zone,
    // fractions, +hhmm), and the HTTP date (RFC 9110 IMF-fixdate).
    static TIMESTAMP: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r"^(?:\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT)$",
        )
        .unwrap_or_else(|_| unreachable!("a fixed, tested pattern"))
    });
    // Any version, either case, with or without braces.
    static UUID: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$",
        )
        .unwrap_or_else(|_| unreachable!("a fixed, tested pattern"))
    });
    match n {
        Normalizer::Timestamps => &TIMESTAMP,
        Normalizer::Uuids => &UUID,
    }
}

/// Numbers compare by value: `10` equals `10.0`.
fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Text bodies, line by line, as a real diff (Myers): an inserted line is
/// one difference, not a shift of every line after it. Paths are `#L<n>`,
/// the primary's line number (for an insertion: the line it comes before).
fn text_diff(a: &str, b: &str, out: &mut Diffs) {
    use similar::{Algorithm, DiffOp, capture_diff_slices_deadline};
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(50);
    let line = |s: Option<&&str>| s.map(|s| Value::String(s.to_string()));
    let mut push = |at: usize, p: Option<&&str>, s: Option<&&str>| {
        let path = format!("#L{}", at + 1);
        out.push(Difference {
            kind: Kind::Body,
            field: path.clone(),
            path,
            primary: line(p),
            shadow: line(s),
        });
    };
    for op in capture_diff_slices_deadline(Algorithm::Myers, &la, &lb, Some(deadline)) {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                for k in 0..old_len {
                    push(old_index + k, la.get(old_index + k), None);
                }
            }
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => {
                for k in 0..new_len {
                    push(old_index, None, lb.get(new_index + k));
                }
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                for k in 0..old_len.max(new_len) {
                    let p = (k < old_len).then(|| la.get(old_index + k)).flatten();
                    let s = (k < new_len).then(|| lb.get(new_index + k)).flatten();
                    push(old_index + k.min(old_len), p, s);
                }
            }
        }
    }
}

/// What a body is, for a whole-body difference.
fn body_digest(p: &Prepared) -> Value {
    let mut m = Map::new();
    m.insert(
        "type".into(),
        json!(match &p.body {
            Body::Empty => "empty",
            Body::Json(_) => "json",
            Body::Text(_) => "text",
            Body::Binary => "binary",
            Body::Truncated => "truncated",
        }),
    );
    m.insert("bytes".into(), json!(p.body_len));
    m.insert("hash".into(), json!(p.body_hash));
    Value::Object(m)
}

/// The same values of header `name`, in the same order, on both sides.
/// All values of header `name`, joined by `, `.
fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// A content type with case and spacing normalised.
fn media_type(v: &str) -> String {
    v.split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Undoes the body's Content-Encoding (gzip, deflate; identity).
fn decode(headers: &[(String, String)], body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let encodings: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n == "content-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")
        .collect();
    let mut data = body.to_vec();
    for enc in encodings.iter().rev() {
        let mut out = Vec::new();
        let read = match enc.as_str() {
            "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(&data[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out),
            "deflate" => {
                let zlib = flate2::read::ZlibDecoder::new(&data[..])
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out);
                if zlib.is_err() {
                    out.clear();
                    flate2::read::DeflateDecoder::new(&data[..])
                        .take(limit as u64 + 1)
                        .read_to_end(&mut out)
                } else {
                    zlib
                }
            }
            other => return Err(format!("content-encoding {other} is compared undecoded")),
        };
        read.map_err(|e| format!("cannot decode {enc} body: {e}"))?;
        if out.len() > limit {
            return Err(format!("decoded body is over {limit} bytes"));
        }
        data = out;
    }
    Ok(data)
}

/// JSON by content type (or by looks when there is none), else text when it
/// is UTF-8, else binary.
fn classify(headers: &[(String, String)], body: Vec<u8>) -> (Body, Option<String>) {
    if body.is_empty() {
        return (Body::Empty, None);
    }
    let ct = header_value(headers, "content-type")
        .map(|v| media_type(&v))
        .unwrap_or_default();
    let mt = ct.split(';').next().unwrap_or("");
    let declared = mt.ends_with("/json") || mt.ends_with("+json");
    let jsonish = declared || mt.is_empty();
    let mut note = None;
    if jsonish {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => return (Body::Json(v), None),
            Err(e) if declared => note = Some(format!("not valid JSON ({e}): compared as text")),
            Err(_) => {}
        }
    }
    let texty = mt.is_empty()
        || mt.starts_with("text/")
        || jsonish
        || mt.ends_with("/xml")
        || mt.ends_with("+xml")
        || mt.ends_with("/javascript")
        || mt == "application/x-www-form-urlencoded";
    let body = match String::from_utf8(body) {
        Ok(s) if texty => Body::Text(s),
        _ => Body::Binary,
    };
    (body, note)
}

/// A body as kept in a diff record: JSON as JSON, text as a string, both
/// cut to `max` bytes (then as a string); nothing for binary bodies.
pub fn stored_body(p: &Prepared, max: usize) -> (Value, bool) {
    if p.withheld {
        return (Value::Null, false);
    }
    let text = match &p.body {
        Body::Empty => return (Value::Null, false),
        Body::Json(v) => {
            let s = v.to_string();
            if s.len() <= max {
                return (v.clone(), false);
            }
            s
        }
        Body::Text(s) => {
            if s.len() <= max {
                return (Value::String(s.clone()), false);
            }
            s.clone()
        }
        Body::Binary | Body::Truncated => return (Value::Null, !matches!(p.body, Body::Binary)),
    };
    let mut cut = max;
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    (Value::String(text[..cut].to_string()), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn spec(f: impl FnOnce(&mut CompareSpec)) -> CompareSpec {
        let mut s = CompareSpec::default();
        f(&mut s);
        s
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Captured {
        Captured {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        http::HeaderValue::from_str(v).unwrap(),
                    )
                })
                .collect(),
            raw: None,
            body: Bytes::copy_from_slice(body),
            body_len: body.len() as u64,
            long_body_hash: None,
            latency_ms: 1.0,
        }
    }

    /// `answer` with its headers kept raw, as a shadow's answer arrives.
    fn raw_answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Captured {
        let mut head = Vec::new();
        let mut at = Vec::new();
        for (n, v) in headers {
            let ns = head.len();
            head.extend_from_slice(n.as_bytes());
            let ne = head.len();
            head.extend_from_slice(b": ");
            let vs = head.len();
            head.extend_from_slice(v.as_bytes());
            at.push((ns..ne, vs..head.len()));
            head.extend_from_slice(b"\r\n");
        }
        let mut raw = crate::capture::RawHeaders::new(Bytes::from(head));
        for (n, v) in at {
            raw.push(n, v);
        }
        Captured {
            headers: http::HeaderMap::new(),
            raw: Some(Box::new(raw)),
            ..answer(status, &[], body)
        }
    }

    #[test]
    fn raw_headers_compare_as_their_map_would() {
        let cmp = Comparator::new(&spec(|s| s.headers = vec!["cache-control".into()]), &[]);
        let body = br#"{"a":1}"#;
        let mapped = answer(
            200,
            &[
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            body,
        );
        // Names in any case; headers not compared may differ.
        let raw = raw_answer(
            200,
            &[
                ("Content-Type", "application/json"),
                ("X-Other", "1"),
                ("Cache-Control", "no-store"),
            ],
            body,
        );
        assert!(cmp.quick_match(&mapped, &raw));
        let other = raw_answer(
            200,
            &[
                ("content-type", "application/json"),
                ("cache-control", "max-age=5"),
            ],
            body,
        );
        assert!(!cmp.quick_match(&mapped, &other));
        let two = raw_answer(
            200,
            &[
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
                ("cache-control", "private"),
            ],
            body,
        );
        assert!(!cmp.quick_match(&mapped, &two), "every value counts");
        // Past the inline places, headers are kept all the same.
        let mut many: Vec<(String, String)> = (0..30)
            .map(|i| (format!("x-h{i}"), i.to_string()))
            .collect();
        many.push(("content-type".into(), "application/json".into()));
        many.push(("cache-control".into(), "no-store".into()));
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let long = raw_answer(200, &many, body);
        assert!(cmp.quick_match(&mapped, &long));
        let mut mapped_long = long.clone();
        mapped_long.compact();
        assert_eq!(mapped_long.headers.len(), 32);
        // Put in a map (compact, or the full comparison) they are the same.
        let mut compacted = other.clone();
        compacted.compact();
        assert!(compacted.raw.is_none());
        assert_eq!(compacted.headers["cache-control"], "max-age=5");
        let d = diff(&cmp, mapped, other);
        assert_eq!(paths(&d), ["cache-control"]);
    }

    fn json_answer(v: Value) -> Captured {
        answer(
            200,
            &[("content-type", "application/json")],
            v.to_string().as_bytes(),
        )
    }

    fn diff(cmp: &Comparator, a: Captured, b: Captured) -> Vec<Difference> {
        let r = Redactor::new().unwrap();
        let (p, s) = (cmp.prepare(a, &r, 1 << 20), cmp.prepare(b, &r, 1 << 20));
        cmp.compare(&p, &s).0
    }

    fn paths(d: &[Difference]) -> Vec<&str> {
        d.iter().map(|d| d.path.as_str()).collect()
    }

    #[test]
    fn json_structurally() {
        let cmp = Comparator::new(&CompareSpec::default(), &[]);
        let a = json!({"id": 7, "total": 10, "items": [{"sku": "a"}], "b": 1.0});
        let b = json!({"b": 1, "items": [{"sku": "a"}], "total": "10", "id": 7});
        let d = diff(&cmp, json_answer(a), json_answer(b));
        assert_eq!(paths(&d), ["/total"]);
        assert_eq!(d[0].primary, Some(json!(10)));
        assert_eq!(d[0].shadow, Some(json!("10")));
    }

    #[test]
    fn missing_fields_and_folded_indices() {
        let cmp = Comparator::new(&CompareSpec::default(), &[]);
        let a = json!({"items": [{"total": 1}, {"total": 2}], "extra": null});
        let b = json!({"items": [{"total": "1"}, {"total": "2"}, {"total": 3}]});
        let d = diff(&cmp, json_answer(a), json_answer(b));
        assert_eq!(
            paths(&d),
            ["/extra", "/items/0/total", "/items/1/total", "/items/2"]
        );
        assert_eq!(d[0].primary, Some(Value::Null));
        assert_eq!(d[0].shadow, None);
        assert_eq!(d[1].field, "/items/*/total");
        assert_eq!(d[3].field, "/items/*");
        // A missing value round-trips as absent, a null as null.
        let back: Difference =
            serde_json::from_str(&serde_json::to_string(&d[0]).unwrap()).unwrap();
        assert_eq!(back, d[0]);
    }

    #[test]
    fn ignored_fields_and_headers() {
        let cmp = Comparator::new(
            &spec(|s| {
                s.headers = vec!["cache-control".into(), "date".into()];
                s.ignore_headers = vec!["date".into()];
                s.ignore_fields = vec!["/meta".into(), "/items/*/updated_at".into()];
            }),
            &["/request_id".into()],
        );
        let a = answer(
            200,
            &[
                ("content-type", "application/json"),
                ("date", "1"),
                ("cache-control", "no-store"),
            ],
            json!({"meta": {"t": 1}, "request_id": "a", "items": [{"updated_at": 1, "id": 1}]})
                .to_string()
                .as_bytes(),
        );
        let b = answer(
            200,
            &[
                ("content-type", "application/json; charset=UTF-8"),
                ("date", "2"),
                ("cache-control", "max-age=5"),
            ],
            json!({"meta": {"t": 2}, "request_id": "b", "items": [{"updated_at": 2, "id": 1}]})
                .to_string()
                .as_bytes(),
        );
        let d = diff(&cmp, a, b);
        assert_eq!(paths(&d), ["content-type", "cache-control"]);
        assert_eq!(d[0].kind, Kind::Header);
    }

    #[test]
    fn unordered_arrays() {
        let cmp = Comparator::new(
            &spec(|s| {
                s.unordered_arrays = vec!["/items".into()];
                s.ignore_fields = vec!["/items/*/at".into()];
            }),
            &[],
        );
        let a = json!({"items": [{"id": 1, "at": 1}, {"id": 2, "at": 1}, {"id": 3}], "tags": ["x", "y"]});
        let b = json!({"items": [{"id": 3}, {"id": 1, "at": 9}, {"id": 2.0, "at": 2}], "tags": ["y", "x"]});
        let d = diff(&cmp, json_answer(a), json_answer(b));
        // Only the ordered array differs.
        assert_eq!(paths(&d), ["/tags/0", "/tags/1"]);
        let a = json!({"items": [{"id": 1}, {"id": 2}]});
        let b = json!({"items": [{"id": 2}, {"id": 5}]});
        let d = diff(&cmp, json_answer(a), json_answer(b));
        assert_eq!(paths(&d), ["/items/0/id"]);
        assert_eq!(d[0].shadow, Some(json!(5)));
    }

    #[test]
    fn gzip_bodies_compare_decoded() {
        use std::io::Write;
        let cmp = Comparator::new(&CompareSpec::default(), &[]);
        let body = json!({"total": 10}).to_string();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let a = answer(
            200,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            &gz,
        );
        let b = answer(
            200,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        assert!(diff(&cmp, a.clone(), b).is_empty());
        let b = answer(
            200,
            &[("content-type", "application/json")],
            br#"{"total":"10"}"#,
        );
        assert_eq!(paths(&diff(&cmp, a, b)), ["/total"]);
    }

    #[test]
    fn text_by_lines_binary_by_hash_status() {
        let cmp = Comparator::new(&CompareSpec::default(), &[]);
        let a = answer(200, &[("content-type", "text/html")], b"<p>\nhello\n</p>");
        let b = answer(200, &[("content-type", "text/html")], b"<p>\nhullo\n</p>");
        let d = diff(&cmp, a, b);
        assert_eq!(paths(&d), ["#L2"]);
        let a = answer(200, &[("content-type", "image/png")], &[0, 159, 146, 150]);
        let b = answer(500, &[("content-type", "image/png")], &[0, 159, 146, 151]);
        let d = diff(&cmp, a, b);
        assert_eq!(d[0].kind, Kind::Status);
        assert_eq!(d[1].kind, Kind::Body);
        assert_eq!(d[1].path, "");
        assert_eq!(d[1].primary.as_ref().unwrap()["type"], "binary");
        assert!(!cmp.quick_match(&a_bin(), &a_bin_other()));
        assert!(cmp.quick_match(&a_bin(), &a_bin()));
    }

    fn a_bin() -> Captured {
        answer(200, &[("content-type", "image/png")], &[0, 1])
    }

    fn a_bin_other() -> Captured {
        answer(200, &[("content-type", "image/png")], &[0, 2])
    }

    #[test]
    fn an_inserted_line_is_one_difference() {
        let cmp = Comparator::new(&CompareSpec::default(), &[]);
        let lines: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
        let a = lines.join("\n");
        let b = format!("new first line\n{a}");
        let d = diff(
            &cmp,
            answer(200, &[("content-type", "text/plain")], a.as_bytes()),
            answer(200, &[("content-type", "text/plain")], b.as_bytes()),
        );
        assert_eq!(paths(&d), ["#L1"]);
        assert_eq!(d[0].primary, None);
        assert_eq!(d[0].shadow, Some(json!("new first line")));
    }

    #[test]
    fn invalid_json_is_compared_as_text_with_a_note() {
        let cmp = Comparator::new(&CompareSpec::default(), &[]);
        let r = Redactor::new().unwrap();
        let p = cmp.prepare(
            answer(200, &[("content-type", "application/json")], b"{\"a\":1"),
            &r,
            1 << 20,
        );
        assert!(matches!(p.body, Body::Text(_)));
        assert!(
            p.note
                .as_deref()
                .is_some_and(|n| n.contains("not valid JSON"))
        );
    }

    #[test]
    fn text_on_a_route_with_field_redaction_compares_by_hashed_lines() {
        let cmp = Comparator::new(&spec(|s| s.redact = vec!["/token".into()]), &[]);
        let d = diff(
            &cmp,
            answer(
                200,
                &[("content-type", "text/html")],
                b"<p>a</p>\n<p>secret-1</p>",
            ),
            answer(
                200,
                &[("content-type", "text/html")],
                b"<p>a</p>\n<p>secret-2</p>",
            ),
        );
        assert_eq!(paths(&d), ["#L2"]);
        let shown = serde_json::to_string(&d).unwrap();
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn normalisers_per_shape() {
        let both = Comparator::new(
            &spec(|s| s.normalize = vec![Normalizer::Timestamps, Normalizer::Uuids]),
            &[],
        );
        let none = Comparator::new(&CompareSpec::default(), &[]);
        let same = [
            ("2026-11-26T14:05:09Z", "2026-11-27T01:00:00.123456+02:00"),
            ("2026-11-26 14:05:09", "2025-01-01 00:00"),
            ("2026-11-26T14:05:09.5z", "2026-11-26t14:05:09-0700"),
            (
                "Thu, 26 Nov 2026 14:05:09 GMT",
                "Fri, 27 Nov 2026 01:00:00 GMT",
            ),
            (
                "01a218b9-7c93-73d3-9f6f-0803d437f98b",
                "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            ),
            (
                "{F47AC10B-58CC-4372-A567-0E02B2C3D479}",
                "00000000-0000-0000-0000-000000000000",
            ),
        ];
        for (a, b) in same {
            let d = diff(
                &both,
                json_answer(json!({"v": a})),
                json_answer(json!({"v": b})),
            );
            assert!(d.is_empty(), "{a} vs {b}: {d:?}");
            let d = diff(
                &none,
                json_answer(json!({"v": a})),
                json_answer(json!({"v": b})),
            );
            assert_eq!(paths(&d), ["/v"], "without normalisers {a} vs {b}");
        }
        // Different shapes, or not quite a shape, still differ.
        let differ = [
            (
                "2026-11-26T14:05:09Z",
                "01a218b9-7c93-73d3-9f6f-0803d437f98b",
            ),
            ("2026-11-26T14:05:09Z", "yesterday"),
            ("2026-11-26", "2026-11-27"),
            (
                "01a218b9-7c93-73d3-9f6f-0803d437f98",
                "01a218b9-7c93-73d3-9f6f-0803d437f98b",
            ),
        ];
        for (a, b) in differ {
            let d = diff(
                &both,
                json_answer(json!({"v": a})),
                json_answer(json!({"v": b})),
            );
            assert_eq!(paths(&d), ["/v"], "{a} vs {b}");
        }
        // Only the shapes a route asks for.
        let ts_only = Comparator::new(&spec(|s| s.normalize = vec![Normalizer::Timestamps]), &[]);
        let d = diff(
            &ts_only,
            json_answer(json!({"v": "01a218b9-7c93-73d3-9f6f-0803d437f98b"})),
            json_answer(json!({"v": "f47ac10b-58cc-4372-a567-0e02b2c3d479"})),
        );
        assert_eq!(paths(&d), ["/v"]);
        // In unordered arrays too.
        let unordered = Comparator::new(
            &spec(|s| {
                s.normalize = vec![Normalizer::Uuids];
                s.unordered_arrays = vec!["/ids".into()];
            }),
            &[],
        );
        let d = diff(
            &unordered,
            json_answer(
                json!({"ids": [{"id": "01a218b9-7c93-73d3-9f6f-0803d437f98b", "n": 1}, {"n": 2, "id": "x"}]}),
            ),
            json_answer(
                json!({"ids": [{"n": 2, "id": "x"}, {"id": "f47ac10b-58cc-4372-a567-0e02b2c3d479", "n": 1}]}),
            ),
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn the_number_of_differences_is_bounded() {
        let cmp = Comparator::new(&CompareSpec::default(), &[]);
        let a = Value::Array((0..500).map(|i| json!(i)).collect());
        let b = Value::Array((0..500).map(|i| json!(i + 1)).collect());
        let r = Redactor::new().unwrap();
        let (p, s) = (
            cmp.prepare(json_answer(a), &r, 1 << 20),
            cmp.prepare(json_answer(b), &r, 1 << 20),
        );
        let (kept, total) = cmp.compare(&p, &s);
        assert_eq!(kept.len(), MAX_DIFFERENCES);
        assert_eq!(total, 500);
    }

    #[test]
    fn redacted_fields_still_compare() {
        let cmp = Comparator::new(
            &spec(|s| s.redact = vec!["/email".into(), "x-api-key".into()]),
            &[],
        );
        let d = diff(
            &cmp,
            json_answer(json!({"email": "a@b.c", "n": 1})),
            json_answer(json!({"email": "a@b.c", "n": 1})),
        );
        assert!(d.is_empty());
        let d = diff(
            &cmp,
            json_answer(json!({"email": "a@b.c"})),
            json_answer(json!({"email": "x@y.z"})),
        );
        assert_eq!(paths(&d), ["/email"]);
        let shown = serde_json::to_string(&d).unwrap();
        assert!(!shown.contains("a@b.c") && !shown.contains("x@y.z"));
    }
}
