//! `strangler diffs` and `strangler diffs show ID`: the shadow comparison
//! results from a running proxy's admin API. The list shows each route's
//! summary (outcomes and differing fields) and the latest records; `show`
//! prints one record with the primary and shadow side by side, differing
//! lines marked (coloured on a terminal, a `*` gutter when piped or with
//! NO_COLOR).

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use crate::admin_client::AdminClient;

fn fail(e: crate::admin_client::CallError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(e.exit_code())
}

fn query_value(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Field rows shown per route; the API has them all.
const MAX_FIELD_ROWS: usize = 20;

/// `strangler diffs [--route R] [--limit N] [--json]`.
pub fn list(
    c: &AdminClient,
    route: Option<&str>,
    limit: usize,
    all: bool,
    as_json: bool,
) -> ExitCode {
    let mut path = format!("/api/v1/diffs?limit={limit}");
    if all {
        path.push_str("&all=true");
    }
    if let Some(r) = route {
        path.push_str(&format!("&route={}", query_value(r)));
    }
    let diffs = match c.call(Method::GET, &path, None) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&diffs).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let summary_path = match route {
        Some(r) => format!("/api/v1/diffs/summary?route={}", query_value(r)),
        None => "/api/v1/diffs/summary".to_string(),
    };
    let summary = match c.call(Method::GET, &summary_path, None) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let empty = Vec::new();
    let routes: Vec<&Value> = summary["routes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|r| route.is_none_or(|want| r["route"].as_str() == Some(want)))
        .collect();
    if routes.is_empty() {
        println!(
            "no shadowed routes{}",
            route.map(|r| format!(" named {r}")).unwrap_or_default()
        );
    }
    for r in &routes {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let noise_only = n("mismatched").saturating_sub(n("mismatched_real"));
        println!(
            "{}: {} compared, {} matched, {} mismatched{}, {} shadow errors, {} timeouts: {:.1}% really differ",
            r["route"].as_str().unwrap_or(""),
            n("compared"),
            n("matched"),
            n("mismatched"),
            if noise_only > 0 {
                format!(" ({noise_only} only in noise or ignored fields)")
            } else {
                String::new()
            },
            n("shadow_errors"),
            n("shadow_timeouts"),
            r["mismatch_rate"].as_f64().unwrap_or(0.0) * 100.0
        );
        if n("noise_checked") > 0 {
            println!(
                "  noise check: {} requests also sent twice to the primary",
                n("noise_checked")
            );
        }
        let skipped: Vec<String> = [
            ("skipped_same_upstream", "same upstream"),
            ("skipped_too_large", "too large"),
            ("dropped", "dropped (queue full)"),
            ("primary_errors", "primary failed"),
        ]
        .iter()
        .filter(|(k, _)| n(k) > 0)
        .map(|(k, label)| format!("{} {label}", n(k)))
        .collect();
        if !skipped.is_empty() {
            println!("  not compared: {}", skipped.join(", "));
        }
        let all_fields = r["fields"].as_array().unwrap_or(&empty);
        let fields = &all_fields[..all_fields.len().min(MAX_FIELD_ROWS)];
        if !fields.is_empty() {
            println!(
                "  {:<32} {:<7} {:>7} {:>7} {:>7}  {:<8} LAST SEEN",
                "FIELD", "KIND", "COUNT", "RAW", "NOISE", "VERDICT"
            );
            for f in fields {
                let path = f["path"].as_str().unwrap_or("");
                let verdict = match f["noise"].as_bool() {
                    Some(true) => "noise",
                    Some(false) => "real",
                    None => "unknown",
                };
                println!(
                    "  {:<32} {:<7} {:>7} {:>6.1}% {:>6.1}%  {:<8} {}",
                    if path.is_empty() { "(whole)" } else { path },
                    f["kind"].as_str().unwrap_or(""),
                    f["count"].as_u64().unwrap_or(0),
                    f["raw_rate"].as_f64().unwrap_or(0.0) * 100.0,
                    f["noise_rate"].as_f64().unwrap_or(0.0) * 100.0,
                    verdict,
                    f["last_seen"].as_str().unwrap_or("")
                );
            }
            let noise: Vec<&str> = all_fields
                .iter()
                .filter(|f| f["noise"].as_bool() == Some(true))
                .filter_map(|f| f["path"].as_str())
                .collect();
            if !noise.is_empty() {
                println!(
                    "  recognised as noise (the primary differs from itself there as often): {}",
                    noise.join(", ")
                );
            }
            if all_fields.iter().any(|f| f["noise"].is_null()) {
                println!(
                    "  unknown: not enough requests noise-checked yet to tell noise from real"
                );
            }
            if all_fields.len() > fields.len() {
                println!(
                    "  ... and {} more fields (strangler diffs --json, or GET /api/v1/diffs/summary)",
                    all_fields.len() - fields.len()
                );
            }
        }
    }
    let records = diffs["diffs"].as_array().unwrap_or(&empty);
    println!();
    if records.is_empty() {
        println!(
            "no diff records{}",
            if all {
                ""
            } else {
                " with real differences (--all shows noise too)"
            }
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<36}  {:<24}  {:<12}  {:<14}  {:<30}  FIRST DIFFERENCE",
        "ID", "TIME", "ROUTE", "OUTCOME", "REQUEST"
    );
    for d in records {
        let request = format!(
            "{} {}",
            d["method"].as_str().unwrap_or(""),
            d["path"].as_str().unwrap_or("")
        );
        println!(
            "{:<36}  {:<24}  {:<12}  {:<14}  {:<30}  {}",
            d["id"].as_str().unwrap_or(""),
            d["time"].as_str().unwrap_or(""),
            d["route"].as_str().unwrap_or(""),
            d["outcome"].as_str().unwrap_or(""),
            cut(&request, 30),
            first_difference(d)
        );
    }
    println!();
    println!("see one with: strangler diffs show ID");
    ExitCode::SUCCESS
}

fn first_difference(d: &Value) -> String {
    let Some(first) = d["differences"].as_array().and_then(|a| a.first()) else {
        return d["shadow"]["note"].as_str().unwrap_or("").to_string();
    };
    let total = d["differences_total"].as_u64().unwrap_or(1);
    let more = if total > 1 {
        format!(" (+{} more)", total - 1)
    } else {
        String::new()
    };
    format!("{}{more}", describe(first))
}

/// `kind path: primary -> shadow`.
fn describe(diff: &Value) -> String {
    let show = |v: Option<&Value>| match v {
        None => "(absent)".to_string(),
        // A whole body compared by hash: what it is, not the JSON of it.
        Some(Value::Object(m)) if m.contains_key("hash") && m.contains_key("bytes") => format!(
            "{} body of {} bytes",
            m.get("type").and_then(Value::as_str).unwrap_or(""),
            m.get("bytes").and_then(Value::as_u64).unwrap_or(0)
        ),
        Some(v) => cut(&v.to_string(), 40),
    };
    let path = diff["path"].as_str().unwrap_or("");
    let kind = diff["kind"].as_str().unwrap_or("");
    let place = if path.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} {path}")
    };
    format!(
        "{place}: {} -> {}",
        show(diff.get("primary")),
        show(diff.get("shadow"))
    )
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `strangler diffs show ID [--json]`.
pub fn show(c: &AdminClient, id: &str, as_json: bool) -> ExitCode {
    if !crate::admin::looks_like_id(id) {
        eprintln!(
            "invalid diff id \"{id}\": ids look like 01a218b9-7c93-73d3-9f6f-0803d437f98b (see strangler diffs)"
        );
        return ExitCode::from(1);
    }
    let d = match c.call(Method::GET, &format!("/api/v1/diffs/{id}"), None) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        // Piped output has no screen to fit: keep long values readable.
        .unwrap_or(if std::io::stdout().is_terminal() {
            120
        } else {
            200
        })
        .max(60);
    print!("{}", render(&d, width, colour));
    ExitCode::SUCCESS
}

/// The side-by-side view of one record.
pub fn render(d: &Value, width: usize, colour: bool) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    out.push_str(&format!("diff {}\n", s(&d["id"])));
    out.push_str(&format!(
        "{}  route {}  {} {}  outcome {}\n",
        s(&d["time"]),
        s(&d["route"]),
        s(&d["method"]),
        s(&d["path"]),
        s(&d["outcome"])
    ));
    let empty = Vec::new();
    let diffs = d["differences"].as_array().unwrap_or(&empty);
    let total = d["differences_total"]
        .as_u64()
        .unwrap_or(diffs.len() as u64);
    if diffs.is_empty() {
        // A shadow that never answered: say why instead of "0 differences".
        let why = d["shadow"]["note"].as_str().unwrap_or("no answer");
        out.push_str(&format!("\nthe shadow did not answer: {why}\n"));
    } else {
        let noun = if total == 1 {
            "difference"
        } else {
            "differences"
        };
        out.push_str(&format!("\n{total} {noun}:\n"));
    }
    for diff in diffs {
        out.push_str(&format!("  {}\n", describe(diff)));
    }
    let body_paths: BTreeSet<String> = diffs
        .iter()
        .filter(|x| x["kind"] == "body")
        .map(|x| s(&x["path"]))
        .collect();
    let header_names: BTreeSet<String> = diffs
        .iter()
        .filter(|x| x["kind"] == "header")
        .map(|x| s(&x["path"]))
        .collect();
    let status_differs = diffs.iter().any(|x| x["kind"] == "status");

    let col = (width.saturating_sub(3)) / 2;
    let side_lines = |side: &Value| -> Vec<Line> {
        let mut lines = Vec::new();
        let title = format!(
            "{} ({})",
            side["upstream"].as_str().unwrap_or(""),
            side["latency_ms"]
                .as_f64()
                .map_or("no answer".to_string(), |ms| format!("{ms:.1} ms"))
        );
        lines.push(Line::new(title, "#title", false));
        let status = side["status"]
            .as_u64()
            .map_or_else(|| "status: -".to_string(), |st| format!("status: {st}"));
        lines.push(Line::new(status, "#status", status_differs));
        if let Some(note) = side["note"].as_str() {
            lines.push(Line::new(format!("note: {note}"), "#note", false));
        }
        if let Some(h) = side["headers"].as_object() {
            for (k, v) in h {
                let text = format!("{k}: {}", v.as_str().unwrap_or(""));
                lines.push(Line::new(
                    text,
                    &format!("#h:{k}"),
                    header_names.contains(k),
                ));
            }
        }
        lines.push(Line::new(String::new(), "#blank", false));
        match &side["body"] {
            Value::Null => lines.push(Line::new(
                format!(
                    "(body: {} bytes, hash {})",
                    side["body_bytes"].as_u64().unwrap_or(0),
                    cut(side["body_hash"].as_str().unwrap_or(""), 16)
                ),
                "#body",
                body_paths.contains(""),
            )),
            Value::String(text) => {
                for (i, l) in text.lines().enumerate() {
                    let p = format!("#L{}", i + 1);
                    let marked = body_paths.contains(&p);
                    lines.push(Line::new(l.to_string(), &p, marked));
                }
            }
            v => {
                let mut pretty = Vec::new();
                pretty_json(v, &mut Vec::new(), 0, None, &mut pretty);
                for (text, ptr) in pretty {
                    let full = if ptr.is_empty() {
                        ptr
                    } else {
                        format!("/{ptr}")
                    };
                    let marked = body_paths.iter().any(|p| {
                        p.starts_with('/') && (full == *p || full.starts_with(&format!("{p}/")))
                    });
                    lines.push(Line::new(text, &format!("json:{full}"), marked));
                }
            }
        }
        if side["body_truncated"].as_bool() == Some(true) {
            lines.push(Line::new("(body truncated)".into(), "#trunc", false));
        }
        lines
    };
    let left = side_lines(&d["primary"]);
    let right = side_lines(&d["shadow"]);
    out.push('\n');
    out.push_str(&format!(
        "{:<col$} | {}\n",
        cut("PRIMARY", col),
        cut("SHADOW", col)
    ));
    out.push_str(&format!("{}-+-{}\n", "-".repeat(col), "-".repeat(col)));
    for (l, r) in align(&left, &right) {
        let cell = |line: Option<&Line>, red: bool| -> String {
            let Some(line) = line else {
                return " ".repeat(col);
            };
            let text = cut(&line.text, col.saturating_sub(2));
            let padded = format!(
                "{}{:<w$}",
                if line.marked { "* " } else { "  " },
                text,
                w = col - 2
            );
            if colour && line.marked {
                let code = if red { "31" } else { "32" };
                format!("\x1b[{code}m{padded}\x1b[0m")
            } else {
                padded
            }
        };
        out.push_str(format!("{} | {}", cell(l, true), cell(r, false)).trim_end());
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone)]
struct Line {
    text: String,
    /// What the line shows (a pointer for JSON), for alignment.
    key: String,
    marked: bool,
}

impl Line {
    fn new(text: String, key: &str, marked: bool) -> Line {
        Line {
            text,
            key: key.to_string(),
            marked,
        }
    }
}

/// Pairs lines showing the same thing; lines only one side has get a row
/// of their own.
fn align<'a>(left: &'a [Line], right: &'a [Line]) -> Vec<(Option<&'a Line>, Option<&'a Line>)> {
    let lkeys: BTreeSet<&str> = left.iter().map(|l| l.key.as_str()).collect();
    let rkeys: BTreeSet<&str> = right.iter().map(|l| l.key.as_str()).collect();
    let (mut i, mut j) = (0, 0);
    let mut rows = Vec::new();
    while i < left.len() || j < right.len() {
        match (left.get(i), right.get(j)) {
            (Some(l), Some(r)) if l.key == r.key => {
                rows.push((Some(l), Some(r)));
                i += 1;
                j += 1;
            }
            (Some(l), _) if !rkeys.contains(l.key.as_str()) => {
                rows.push((Some(l), None));
                i += 1;
            }
            (_, Some(r)) if !lkeys.contains(r.key.as_str()) => {
                rows.push((None, Some(r)));
                j += 1;
            }
            (l, r) => {
                rows.push((l, r));
                i += usize::from(l.is_some());
                j += usize::from(r.is_some());
            }
        }
    }
    rows
}

/// Pretty-prints JSON one value per line, each line with the pointer (no
/// leading slash) of what it shows.
fn pretty_json(
    v: &Value,
    path: &mut Vec<String>,
    indent: usize,
    key: Option<&str>,
    out: &mut Vec<(String, String)>,
) {
    pretty_value(v, path, indent, key, false, out);
}

/// One value; `comma` when more follow in its parent.
fn pretty_value(
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
    let ptr = pointer(path);
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push((format!("{pad}{label}{{"), ptr.clone()));
            for (i, (k, x)) in m.iter().enumerate() {
                path.push(k.clone());
                pretty_value(x, path, indent + 1, Some(k), i + 1 < m.len(), out);
                path.pop();
            }
            out.push((format!("{pad}}}{end}"), ptr));
        }
        Value::Array(items) if !items.is_empty() => {
            out.push((format!("{pad}{label}["), ptr.clone()));
            for (i, x) in items.iter().enumerate() {
                path.push(i.to_string());
                pretty_value(x, path, indent + 1, None, i + 1 < items.len(), out);
                path.pop();
            }
            out.push((format!("{pad}]{end}"), ptr));
        }
        other => out.push((format!("{pad}{label}{other}{end}"), ptr)),
    }
}

/// Segments as a JSON Pointer without its leading slash.
fn pointer(path: &[String]) -> String {
    path.iter()
        .map(|s| s.replace('~', "~0").replace('/', "~1"))
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn side_by_side_marks_the_differing_field() {
        let d = json!({
            "id": "x", "time": "t", "route": "orders", "method": "GET", "path": "/api/orders/1",
            "outcome": "mismatch", "differences_total": 1,
            "differences": [{"kind": "body", "path": "/total", "field": "/total", "primary": 10, "shadow": "10"}],
            "primary": {"upstream": "monolith", "status": 200, "latency_ms": 1.0, "headers": {}, "body": {"id": 1, "total": 10}},
            "shadow": {"upstream": "orders", "status": 200, "latency_ms": 2.0, "headers": {}, "body": {"id": 1, "total": "10"}}
        });
        let text = render(&d, 80, false);
        let marked: Vec<&str> = text.lines().filter(|l| l.starts_with("* ")).collect();
        assert_eq!(marked.len(), 1, "{text}");
        assert!(marked[0].contains("\"total\": 10") && marked[0].contains("\"total\": \"10\""));
    }
}
