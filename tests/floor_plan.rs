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

/// The code of a file without its test module.
fn non_test_code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Every `crate::a::b::c` path a file names, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // strangler_api::crate:: etc.
            }
            let segs: Vec<String> = rest
                .split("::")
                .map(|s| {
                    s.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .take_while(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_lowercase() || c.is_ascii_digit() || c == '_')
                })
                .collect();
            if !segs.is_empty() {
                out.push(segs);
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
        for segs in crate_paths(non_test_code(&text)) {
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
    assert_eq!(
        crate_paths("use crate::a::b::{C, d};\nlet x = crate::e::f(1);"),
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["e".to_string(), "f".to_string()]
        ]
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
