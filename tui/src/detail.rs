//! One diff record side by side: status, headers and pretty-printed bodies
//! of the primary and the shadow, aligned line by line on what each line
//! shows, with the lines of every difference marked (for highlighting and
//! for `n` / `N`). `strangler diffs show` prints the same rows.

use std::collections::BTreeSet;

use serde_json::Value;

/// One row of the side-by-side view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub left: Option<String>,
    pub right: Option<String>,
    pub marked: bool,
}

struct Line {
    text: String,
    key: String,
    marked: bool,
}

/// The rows for a record.
pub fn rows(d: &Value) -> Vec<Row> {
    let empty = Vec::new();
    let diffs = d["differences"].as_array().unwrap_or(&empty);
    let set = |kind: &str| -> BTreeSet<String> {
        diffs
            .iter()
            .filter(|x| x["kind"] == kind)
            .filter_map(|x| x["path"].as_str().map(str::to_string))
            .collect()
    };
    let (bodies, headers) = (set("body"), set("header"));
    let status_differs = diffs.iter().any(|x| x["kind"] == "status");
    let left = side(&d["primary"], &bodies, &headers, status_differs);
    let right = side(&d["shadow"], &bodies, &headers, status_differs);
    align(left, right)
}

fn side(
    s: &Value,
    bodies: &BTreeSet<String>,
    headers: &BTreeSet<String>,
    status: bool,
) -> Vec<Line> {
    let line = |text: String, key: &str, marked: bool| Line {
        text,
        key: key.to_string(),
        marked,
    };
    let mut out = vec![line(
        format!(
            "{} ({})",
            s["upstream"].as_str().unwrap_or(""),
            s["latency_ms"]
                .as_f64()
                .map_or("no answer".to_string(), |ms| format!("{ms:.1} ms"))
        ),
        "#title",
        false,
    )];
    out.push(line(
        s["status"]
            .as_u64()
            .map_or("status: -".into(), |c| format!("status: {c}")),
        "#status",
        status,
    ));
    if let Some(note) = s["note"].as_str() {
        out.push(line(format!("note: {note}"), "#note", false));
    }
    if let Some(h) = s["headers"].as_object() {
        for (k, v) in h {
            out.push(line(
                format!("{k}: {}", v.as_str().unwrap_or("")),
                &format!("#h:{k}"),
                headers.contains(k),
            ));
        }
    }
    out.push(line(String::new(), "#blank", false));
    match &s["body"] {
        Value::Null => {
            let hash: String = s["body_hash"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(16)
                .collect();
            out.push(line(
                format!(
                    "(body: {} bytes, hash {hash})",
                    s["body_bytes"].as_u64().unwrap_or(0)
                ),
                "#body",
                bodies.contains(""),
            ))
        }
        Value::String(text) => {
            for (i, l) in text.lines().enumerate() {
                let key = format!("#L{}", i + 1);
                let marked = bodies.contains(&key);
                out.push(line(l.to_string(), &key, marked));
            }
        }
        v => {
            let mut pretty = Vec::new();
            pretty_json(v, &mut Vec::new(), 0, None, false, &mut pretty);
            for (text, ptr) in pretty {
                let marked = bodies.iter().any(|p| {
                    p.starts_with('/') && (ptr == *p || ptr.starts_with(&format!("{p}/")))
                });
                out.push(line(text, &format!("json:{ptr}"), marked));
            }
        }
    }
    if s["body_truncated"].as_bool() == Some(true) {
        out.push(line("(body truncated)".into(), "#trunc", false));
    }
    out
}

/// Pairs lines showing the same thing; a line only one side has gets a
/// row of its own.
fn align(left: Vec<Line>, right: Vec<Line>) -> Vec<Row> {
    let lkeys: BTreeSet<String> = left.iter().map(|l| l.key.clone()).collect();
    let rkeys: BTreeSet<String> = right.iter().map(|l| l.key.clone()).collect();
    let (mut i, mut j) = (0, 0);
    let mut rows = Vec::new();
    let row = |l: Option<&Line>, r: Option<&Line>| Row {
        left: l.map(|l| l.text.clone()),
        right: r.map(|r| r.text.clone()),
        marked: l.is_some_and(|l| l.marked) || r.is_some_and(|r| r.marked),
    };
    while i < left.len() || j < right.len() {
        match (left.get(i), right.get(j)) {
            (Some(l), Some(r)) if l.key == r.key => {
                rows.push(row(Some(l), Some(r)));
                i += 1;
                j += 1;
            }
            (Some(l), _) if !rkeys.contains(&l.key) => {
                rows.push(row(Some(l), None));
                i += 1;
            }
            (_, Some(r)) if !lkeys.contains(&r.key) => {
                rows.push(row(None, Some(r)));
                j += 1;
            }
            (l, r) => {
                rows.push(row(l, r));
                i += usize::from(l.is_some());
                j += usize::from(r.is_some());
            }
        }
    }
    rows
}

/// Pretty JSON, one value per line, each line with the JSON Pointer of
/// what it shows.
fn pretty_json(
    v: &Value,
    path: &mut Vec<String>,
    indent: usize,
    key: Option<&str>,
    comma: bool,
    out: &mut Vec<(String, String)>,
) {
    let pad = "  ".repeat(indent);
    let label = key
        .map(|k| format!("{}: ", Value::String(k.to_string())))
        .unwrap_or_default();
    let end = if comma { "," } else { "" };
    let ptr: String = path
        .iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect();
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push((format!("{pad}{label}{{"), ptr.clone()));
            for (i, (k, x)) in m.iter().enumerate() {
                path.push(k.clone());
                pretty_json(x, path, indent + 1, Some(k), i + 1 < m.len(), out);
                path.pop();
            }
            out.push((format!("{pad}}}{end}"), ptr));
        }
        Value::Array(items) if !items.is_empty() => {
            out.push((format!("{pad}{label}["), ptr.clone()));
            for (i, x) in items.iter().enumerate() {
                path.push(i.to_string());
                pretty_json(x, path, indent + 1, None, i + 1 < items.len(), out);
                path.pop();
            }
            out.push((format!("{pad}]{end}"), ptr));
        }
        other => out.push((format!("{pad}{label}{other}{end}"), ptr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn marks_the_differing_lines_on_both_sides() {
        let d = json!({
            "differences": [{"kind": "body", "path": "/total"}, {"kind": "header", "path": "x-v"}],
            "primary": {"upstream": "monolith", "status": 200, "latency_ms": 1.0, "headers": {"x-v": "1"}, "body": {"id": 1, "total": 10}},
            "shadow": {"upstream": "orders", "status": 200, "latency_ms": 2.0, "headers": {"x-v": "2"}, "body": {"id": 1, "total": "10"}}
        });
        let rows = rows(&d);
        let marked: Vec<&Row> = rows.iter().filter(|r| r.marked).collect();
        assert_eq!(marked.len(), 2);
        assert_eq!(marked[1].left.as_deref(), Some("  \"total\": 10"));
        assert_eq!(marked[1].right.as_deref(), Some("  \"total\": \"10\""));
    }
}
