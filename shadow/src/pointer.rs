//! JSON Pointer patterns (RFC 6901) where `*` stands for any one segment,
//! as used by `compare.ignore_fields`, `compare.unordered_arrays` and
//! `compare.redact`; and the folding of array indices into `*` that makes
//! one summary line of one field across every element of a list.

/// One pattern segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Any,
    Key(String),
}

/// A compiled pointer pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segs: Vec<Seg>,
}

impl Pattern {
    /// Parses `/items/*/id`. The empty string is the whole document.
    pub fn parse(s: &str) -> Pattern {
        let segs = split(s)
            .into_iter()
            .map(|seg| if seg == "*" { Seg::Any } else { Seg::Key(seg) })
            .collect();
        Pattern { segs }
    }

    /// The pattern names exactly this path.
    pub fn matches<S: AsRef<str>>(&self, path: &[S]) -> bool {
        path.len() == self.segs.len() && self.covers(path)
    }

    /// The pattern names this path or one of its ancestors (ignoring
    /// `/meta` ignores everything under it).
    pub fn covers<S: AsRef<str>>(&self, path: &[S]) -> bool {
        path.len() >= self.segs.len()
            && self.segs.iter().zip(path).all(|(p, s)| match p {
                Seg::Any => true,
                Seg::Key(k) => k == s.as_ref(),
            })
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Whether this pattern could match `path` or something below it.
    pub fn may_match_below<S: AsRef<str>>(&self, path: &[S]) -> bool {
        self.segs.iter().zip(path).all(|(p, s)| match p {
            Seg::Any => true,
            Seg::Key(k) => k == s.as_ref(),
        })
    }
}

/// Splits a pointer into unescaped segments (`~1` is `/`, `~0` is `~`).
pub fn split(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.strip_prefix('/')
        .unwrap_or(s)
        .split('/')
        .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Joins unescaped segments into a pointer.
pub fn join<S: AsRef<str>>(segs: &[S]) -> String {
    let mut out = String::new();
    for s in segs {
        out.push('/');
        out.push_str(&s.as_ref().replace('~', "~0").replace('/', "~1"));
    }
    out
}

/// Joins segments, writing `*` for those that are array indices.
pub fn join_folded<S: AsRef<str>>(segs: &[S], is_index: &[bool]) -> String {
    let mut out = String::new();
    for (s, &idx) in segs.iter().zip(is_index) {
        out.push('/');
        if idx {
            out.push('*');
        } else {
            out.push_str(&s.as_ref().replace('~', "~0").replace('/', "~1"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::parse("/items/*/updated_at");
        assert!(p.matches(&["items", "3", "updated_at"]));
        assert!(!p.matches(&["items", "3", "id"]));
        assert!(p.covers(&["items", "3", "updated_at", "tz"]));
        assert!(!p.covers(&["items", "3"]));
        assert!(p.may_match_below(&["items", "3"]));
        assert!(!p.may_match_below(&["orders"]));
        let root = Pattern::parse("");
        assert!(root.covers(&["anything"]));
    }

    #[test]
    fn escaping_round_trips() {
        let segs = vec!["a/b".to_string(), "c~d".to_string()];
        let s = join(&segs);
        assert_eq!(s, "/a~1b/c~0d");
        assert_eq!(split(&s), segs);
        assert_eq!(
            join_folded(&["items", "7", "id"], &[false, true, false]),
            "/items/*/id"
        );
    }
}
