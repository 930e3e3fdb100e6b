//! `strangler diffs` and `strangler diffs show ID`: the shadow comparison
//! results from a running proxy's admin API. The list shows each route's
//! summary (outcomes and differing fields) and the latest records; `show`
//! prints one record with the primary and shadow side by side, differing
//! lines marked (coloured on a terminal, a `*` gutter when piped or with
//! NO_COLOR); the rows are the TUI's (`strangler_tui::detail`).

use std::io::IsTerminal;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use strangler_api::AdminClient;

fn fail(e: strangler_api::CallError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(e.exit_code())
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
        path.push_str(&format!(
            "&route={}",
            crate::proxy::headers::percent_encode(r)
        ));
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
        Some(r) => format!(
            "/api/v1/diffs/summary?route={}",
            crate::proxy::headers::percent_encode(r)
        ),
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
            "{}: {} compared, {} matched, {} mismatched{}, {}, {}: {:.1}% {}",
            r["route"].as_str().unwrap_or(""),
            n("compared"),
            n("matched"),
            n("mismatched"),
            if noise_only > 0 {
                format!(" ({noise_only} only in noise or ignored fields)")
            } else {
                String::new()
            },
            crate::cli::words::count(n("shadow_errors") as usize, "shadow error"),
            crate::cli::words::count(n("shadow_timeouts") as usize, "timeout"),
            r["mismatch_rate"].as_f64().unwrap_or(0.0) * 100.0,
            // The rate counts the shadow's failures as differences.
            if n("shadow_errors") + n("shadow_timeouts") > 0 {
                "really differ or failed"
            } else {
                "really differ"
            }
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
    if !crate::control::api::looks_like_id(id) {
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
    let col = (width.saturating_sub(3)) / 2;
    out.push('\n');
    out.push_str(&format!(
        "{:<col$} | {}\n",
        cut("PRIMARY", col),
        cut("SHADOW", col)
    ));
    out.push_str(&format!("{}-+-{}\n", "-".repeat(col), "-".repeat(col)));
    for row in strangler_tui::detail::rows(d) {
        let cell = |text: &Option<String>, red: bool| -> String {
            let Some(text) = text else {
                return " ".repeat(col);
            };
            let text = cut(text, col.saturating_sub(2));
            let padded = format!(
                "{}{:<w$}",
                if row.marked { "* " } else { "  " },
                text,
                w = col - 2
            );
            if colour && row.marked {
                let code = if red { "31" } else { "32" };
                format!("\x1b[{code}m{padded}\x1b[0m")
            } else {
                padded
            }
        };
        out.push_str(format!("{} | {}", cell(&row.left, true), cell(&row.right, false)).trim_end());
        out.push('\n');
    }
    out
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
