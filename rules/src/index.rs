//! The candidate index over the path matchers of many routes: a segment trie
//! for exact paths, prefixes and templates, one `RegexSet` for path regexes,
//! and a short list of routes without a path matcher. It only narrows down;
//! the route table picks the lowest-ordered candidate whose other matchers
//! pass, so first-match-in-file-order holds whatever the index finds.
//!
//! matchit is not used here: it returns a single best match per path and
//! refuses overlapping templates, while first-match order needs every
//! template that matches.

use std::collections::HashMap;

use regex::{Regex, RegexSet, RegexSetBuilder};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::matcher::{MatchSpec, PathMatch, TemplateSegment, next_segment, segments};

#[derive(Debug, Default)]
struct Node {
    statics: HashMap<Box<str>, Node, Xxh3DefaultBuilder>,
    param: Option<Box<Node>>,
    /// Routes whose path ends exactly here.
    terminal: Vec<u32>,
    /// Prefix routes ending here: match here and anything below.
    prefix: Vec<u32>,
    /// Prefix routes written with a trailing slash: need at least one more segment.
    prefix_more: Vec<u32>,
    /// `{*rest}` templates: need a non-empty remainder.
    catch_all: Vec<u32>,
}

/// Finds the routes whose path matcher can match a path.
#[derive(Debug, Default)]
pub struct PathIndex {
    root: Node,
    regexes: Option<RegexSet>,
    /// The same regexes one by one, used when the set is too large to build.
    regex_list: Vec<Regex>,
    /// Route index of each regex in `regexes`, ascending.
    regex_routes: Vec<u32>,
    /// Routes without a path matcher, ascending.
    pathless: Vec<u32>,
}

impl PathIndex {
    /// Indexes the matchers, in order; candidate numbers are their positions.
    pub fn build<'a>(specs: impl IntoIterator<Item = &'a MatchSpec>) -> Self {
        let mut index = PathIndex::default();
        let mut patterns = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let i = i as u32;
            match &spec.path {
                None => index.pathless.push(i),
                Some(PathMatch::Regex(r)) => {
                    patterns.push(r.as_str().to_string());
                    index.regex_list.push(r.clone());
                    index.regex_routes.push(i);
                }
                Some(PathMatch::Exact(p)) => {
                    let node = index.root.descend_literal(p);
                    node.terminal.push(i);
                }
                Some(PathMatch::Prefix(p)) => {
                    if p == "/" {
                        index.root.prefix.push(i);
                    } else if p.ends_with('/') {
                        // "/a/b/" is segments a, b, "": match a, b and then
                        // require one more segment, whatever it is.
                        let mut segs = all_segments(p);
                        segs.pop();
                        index.root.descend(segs).prefix_more.push(i);
                    } else {
                        index.root.descend_literal(p).prefix.push(i);
                    }
                }
                Some(PathMatch::Template(t)) => {
                    let mut node = &mut index.root;
                    let mut catch_all = false;
                    for seg in &t.segments {
                        match seg {
                            TemplateSegment::Literal(l) => {
                                node = node.statics.entry(l.as_str().into()).or_default();
                            }
                            TemplateSegment::Param(_) => {
                                node = node.param.get_or_insert_with(Default::default);
                            }
                            TemplateSegment::CatchAll(_) => catch_all = true,
                        }
                    }
                    if catch_all {
                        node.catch_all.push(i);
                    } else {
                        node.terminal.push(i);
                    }
                }
            }
        }
        if !patterns.is_empty() {
            // The patterns compiled one by one during validation, so the set does too.
            // Generous limits: the set is built once, off the hot path. If it
            // still cannot be built, lookups check the regexes one by one.
            index.regexes = RegexSetBuilder::new(&patterns)
                .size_limit(256 << 20)
                .dfa_size_limit(64 << 20)
                .build()
                .ok();
        }
        index
    }

    /// The lowest candidate `i` for which `pass(i)` holds: path candidates
    /// from the trie and the regex set, merged in order with path-less routes.
    #[inline]
    pub fn first_match(&self, path: &str, mut pass: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut found = Candidates::default();
        if path.starts_with('/') {
            self.root.collect(segments(path), &mut found);
            found.as_mut_slice().sort_unstable();
        }
        let best = first_in_merged(found.as_slice(), &self.pathless, u32::MAX, &mut pass);
        let first_regex = self.regex_routes.first().copied().unwrap_or(u32::MAX);
        if best.is_some_and(|b| b < first_regex) {
            return best;
        }
        let limit = best.unwrap_or(u32::MAX);
        match &self.regexes {
            Some(set) => {
                for i in set.matches(path).iter() {
                    let route = self.regex_routes[i];
                    if route >= limit {
                        break;
                    }
                    if pass(route) {
                        return Some(route);
                    }
                }
            }
            None => {
                for (re, &route) in self.regex_list.iter().zip(&self.regex_routes) {
                    if route >= limit {
                        break;
                    }
                    if re.is_match(path) && pass(route) {
                        return Some(route);
                    }
                }
            }
        }
        best
    }
}

fn all_segments(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = segments(path);
    while let Some(r) = rest {
        let (seg, after) = next_segment(r);
        out.push(seg);
        rest = after;
    }
    out
}

/// Candidate route numbers: on the stack up to 16, which is every realistic
/// path, so a lookup does not allocate.
#[derive(Default)]
struct Candidates {
    inline: [u32; 16],
    len: usize,
    spill: Vec<u32>,
}

impl Candidates {
    #[inline]
    fn extend_from_slice(&mut self, items: &[u32]) {
        for &i in items {
            if self.len < self.inline.len() {
                self.inline[self.len] = i;
                self.len += 1;
            } else {
                if self.spill.is_empty() {
                    self.spill.extend_from_slice(&self.inline);
                }
                self.spill.push(i);
            }
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u32] {
        if self.spill.is_empty() {
            &mut self.inline[..self.len]
        } else {
            &mut self.spill
        }
    }

    fn as_slice(&self) -> &[u32] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

/// Walks two ascending lists in merged order, below `limit`.
#[inline]
fn first_in_merged(
    a: &[u32],
    b: &[u32],
    limit: u32,
    pass: &mut impl FnMut(u32) -> bool,
) -> Option<u32> {
    let (mut i, mut j) = (0, 0);
    loop {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x <= y => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => return None,
        };
        if next >= limit {
            return None;
        }
        if pass(next) {
            return Some(next);
        }
    }
}

impl Node {
    fn descend_literal(&mut self, path: &str) -> &mut Node {
        self.descend(all_segments(path))
    }

    fn descend(&mut self, segs: Vec<&str>) -> &mut Node {
        let mut node = self;
        for seg in segs {
            node = node.statics.entry(seg.into()).or_default();
        }
        node
    }

    /// Adds every route whose path matcher matches; `rest` is what is left
    /// of the path after this node (`None`: nothing, `Some("")`: a trailing
    /// empty segment).
    fn collect(&self, rest: Option<&str>, out: &mut Candidates) {
        out.extend_from_slice(&self.prefix);
        let Some(r) = rest else {
            out.extend_from_slice(&self.terminal);
            return;
        };
        out.extend_from_slice(&self.prefix_more);
        if !r.is_empty() {
            out.extend_from_slice(&self.catch_all);
        }
        let (seg, after) = next_segment(r);
        if let Some(child) = self.statics.get(seg) {
            child.collect(after, out);
        }
        if !seg.is_empty()
            && let Some(p) = &self.param
        {
            p.collect(after, out);
        }
    }
}
