//! The floor plan of `src/`, checked against the code: which room may
//! import which (README, "Layout"), and no import circles between rooms
//! nor between the files of one room.
//!
//! An import is any `crate::ROOM::...` path in a file outside its
//! `#[cfg(test)]` module (tests may reach across rooms for scaffolding).
//! Top-level files of `src/` (timer.rs) are rooms of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rooms a room must never import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // The codec knows no proxy: it is generic over the service it serves.
    (
        "http1",
        &[
            "proxy", "state", "policy", "upstream", "mirror", "control", "cli", "server",
        ],
    ),
    // Upstreams and the mirror know no live state, no request loop, no admin.
    (
        "upstream",
        &[
            "state", "proxy", "mirror", "policy", "control", "cli", "server",
        ],
    ),
    (
        "mirror",
        &["state", "proxy", "policy", "control", "cli", "server"],
    ),
    // Policies know no live state and no request loop.
    (
        "policy",
        &["state", "proxy", "mirror", "control", "cli", "server"],
    ),
    // State knows no admin, server or CLI.
    ("state", &["control", "server", "cli", "proxy"]),
    // The request path knows no admin.
    ("proxy", &["control", "cli", "server"]),
    ("server", &["control", "cli"]),
    // Nothing but cli/ knows the CLI.
    ("control", &["cli", "server"]),
    ("timer", &["*"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/proxy/headers.rs` -> ["proxy", "headers"]; `src/proxy/mod.rs` -> ["proxy"].
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without its test modules (`#[cfg(test)] mod x { .. }`).
fn non_test_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let item = after["#[cfg(test)]".len()..].trim_start();
        if !item.starts_with("mod ") {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        }
        // Skip to the brace that closes the module.
        let Some(open) = after.find('{') else {
            return out;
        };
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The lowercase path segments at the start of `s` (`a::b::C` -> [a, b]),
/// and what follows them.
fn segments(s: &str) -> (Vec<String>, &str) {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let ident: String = rest.chars().take_while(|c| is_ident_char(*c)).collect();
        if ident.is_empty()
            || !ident
                .chars()
                .all(|c| c.is_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return (segs, rest);
        }
        rest = &rest[ident.len()..];
        segs.push(ident);
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => return (segs, rest),
        }
    }
}

/// Every module path a file names: `crate::a::b`, `super::x`, `self::x`,
/// and paths that start with one of the file's own child modules
/// (`changes::shift` in `control/api/mod.rs`); a group
/// (`crate::a::{b, c::d}`) names each of its members.
fn module_refs(code: &str, me: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut i = 0;
        while i < line.len() {
            let rest = &line[i..];
            let before = line[..i].chars().last();
            let starts_path = rest
                .chars()
                .next()
                .is_some_and(|c| c.is_lowercase() || c == '_')
                && !before.is_some_and(|c| is_ident_char(c) || c == ':');
            if !starts_path {
                i += rest.chars().next().map_or(1, char::len_utf8);
                continue;
            }
            let (segs, after) = segments(rest);
            let consumed = rest.len() - after.len();
            i += consumed.max(1);
            if segs.len() < 2 && !after.starts_with('{') {
                continue;
            }
            let base: Vec<String> = match segs.first().map(String::as_str) {
                Some("crate") => segs[1..].to_vec(),
                Some("super") => {
                    let supers = segs.iter().take_while(|s| *s == "super").count();
                    let mut p = me[..me.len().saturating_sub(supers)].to_vec();
                    p.extend(segs[supers..].iter().cloned());
                    p
                }
                Some("self") => me.iter().chain(&segs[1..]).cloned().collect(),
                Some(first) if modules.contains(&[me, &[first.to_string()]].concat()) => {
                    me.iter().chain(&segs).cloned().collect()
                }
                _ => continue,
            };
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for member in inner.split(',') {
                    let (more, _) = segments(member.trim());
                    let more = if more.first().is_some_and(|m| m == "self") {
                        vec![]
                    } else {
                        more
                    };
                    out.push(base.iter().chain(&more).cloned().collect());
                }
            } else if !base.is_empty() {
                out.push(base);
            }
        }
    }
    out
}

struct Plan {
    /// file module path -> the file module paths it imports
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn plan() -> Plan {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let me = module_path(file);
        let text = std::fs::read_to_string(file).expect("read source");
        let mut targets = BTreeSet::new();
        for segs in module_refs(&non_test_code(&text), &me, &modules) {
            // The longest prefix that is a file of src/.
            let target = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].to_vec())
                .find(|p| modules.contains(p));
            if let Some(t) = target
                && t != me
            {
                targets.insert(t);
            }
        }
        edges.insert(me, targets);
    }
    Plan { edges }
}

fn room(module: &[String]) -> &str {
    module.first().map(String::as_str).unwrap_or("lib")
}

#[test]
fn rooms_import_only_what_the_plan_allows() {
    let plan = plan();
    let mut wrong = Vec::new();
    for (from, targets) in &plan.edges {
        let Some((_, banned)) = FORBIDDEN.iter().find(|(r, _)| *r == room(from)) else {
            continue;
        };
        for to in targets {
            let to_room = room(to);
            if to_room != room(from) && (banned.contains(&to_room) || banned.contains(&"*")) {
                wrong.push(format!("{} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the floor plan:\n{}",
        wrong.join("\n")
    );
}

/// A cycle in `graph`, if there is one.
fn find_cycle<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        n: &N,
        graph: &BTreeMap<N, BTreeSet<N>>,
        state: &mut BTreeMap<N, u8>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[at..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_circles_between_rooms() {
    let plan = plan();
    let mut rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &plan.edges {
        let entry = rooms.entry(room(from).to_string()).or_default();
        for to in targets {
            if room(to) != room(from) {
                entry.insert(room(to).to_string());
            }
        }
    }
    assert_eq!(
        find_cycle(&rooms),
        None,
        "rooms import each other in a circle"
    );
}

#[test]
fn no_import_circles_between_files() {
    let plan = plan();
    let named = |m: &Vec<String>| m.join("::");
    let graph: BTreeMap<String, BTreeSet<String>> = plan
        .edges
        .iter()
        .map(|(k, v)| (named(k), v.iter().map(named).collect()))
        .collect();
    assert_eq!(
        find_cycle(&graph),
        None,
        "files import each other in a circle"
    );
}

#[test]
fn the_checker_sees_imports() {
    // A checker that parsed nothing would pass everything.
    let plan = plan();
    let proxy = plan
        .edges
        .get(&vec!["proxy".to_string()])
        .expect("src/proxy/mod.rs");
    assert!(proxy.contains(&vec!["state".to_string()]), "{proxy:?}");
    let s = |p: &[&str]| p.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let modules = BTreeSet::from([s(&["m"]), s(&["m", "kid"])]);
    assert_eq!(
        module_refs(
            "use crate::a::b::{C, d::e};\nlet x = crate::e::f(1);\nkid::g();\nsuper::h::i();\nstd::j::k();",
            &s(&["m"]),
            &modules
        ),
        vec![
            s(&["a", "b"]),
            s(&["a", "b", "d", "e"]),
            s(&["e", "f"]),
            s(&["m", "kid", "g"]),
            s(&["h", "i"]),
        ]
    );
    assert_eq!(
        non_test_code("a\n#[cfg(test)]\nmod t { fn x() { crate::y::z(); } }\nb"),
        "a\n\nb"
    );
    let mut cyclic = BTreeMap::new();
    cyclic.insert(1, BTreeSet::from([2]));
    cyclic.insert(2, BTreeSet::from([1]));
    assert!(find_cycle(&cyclic).is_some());
}

#[test]
fn libraries_know_no_server_and_clients_know_no_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = |krate: &str| {
        std::fs::read_to_string(root.join(krate).join("Cargo.toml")).expect("crate manifest")
    };
    for krate in ["rules", "shadow"] {
        let m = manifest(krate);
        for server in ["hyper", "tokio", "strangler-api", "strangler-tui"] {
            assert!(
                !m.contains(&format!("\n{server} ")),
                "{krate} depends on {server}"
            );
        }
    }
    for krate in ["tui", "api"] {
        let m = manifest(krate);
        for engine in ["strangler-rules", "strangler-shadow"] {
            assert!(!m.contains(engine), "{krate} depends on {engine}");
        }
    }
}
