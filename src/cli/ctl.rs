//! The control commands of the CLI: `status`, `shift`, `rollback`, `reset`,
//! `shadow`, `history`, `revert`, `reload`, `explain --live`. Each is one
//! admin API call; errors are one line on stderr, exit 1 when refused or
//! invalid, 2 when the proxy cannot be reached. The helpers that print an
//! answer or its error are shared with `ramp`.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use strangler_api::{AdminClient, CallError};

/// A percentage from the command line: `25`, `25%`, `12.5`.
pub(super) fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("invalid percent \"{s}\": give a number between 0 and 100"))?;
    match strangler_rules::config::percent_to_bp(v) {
        Some(_) => Ok(v),
        None => Err(format!(
            "invalid percent \"{s}\": give a number between 0 and 100 with at most two decimals"
        )),
    }
}

pub(super) fn done(result: Result<Value, CallError>, print: impl FnOnce(&Value)) -> ExitCode {
    match result {
        Ok(v) => {
            print(&v);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

pub(super) fn print_version(v: &Value) {
    if v["unchanged"].as_bool() == Some(true) {
        println!("unchanged (version {}): nothing to change", v["version"]);
        return;
    }
    println!(
        "version {}: {}{}",
        v["version"],
        v["reason"].as_str().unwrap_or(""),
        v["route"]
            .as_str()
            .map(|r| format!(" (route {r})"))
            .unwrap_or_default()
    );
}

fn with_reason(mut body: Value, reason: Option<&str>) -> Value {
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    body
}

pub fn shift(
    c: &AdminClient,
    route: &str,
    percent: &str,
    to: Option<&str>,
    reason: Option<&str>,
) -> ExitCode {
    let p = match parse_percent(percent) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let body = with_reason(json!({"percent": p, "to": to}), reason);
    done(
        c.call(
            Method::POST,
            &format!("/api/v1/routes/{route}/shift"),
            Some(body),
        ),
        print_version,
    )
}

pub fn rollback(c: &AdminClient, route: Option<&str>, all: bool, reason: Option<&str>) -> ExitCode {
    let path = match (route, all) {
        (Some(r), false) => format!("/api/v1/routes/{r}/rollback"),
        (None, true) => "/api/v1/rollback".to_string(),
        (Some(_), true) => {
            eprintln!("give a ROUTE or --all, not both");
            return ExitCode::from(1);
        }
        (None, false) => {
            eprintln!("give a ROUTE to roll back, or --all for every route");
            return ExitCode::from(1);
        }
    };
    done(
        c.call(Method::POST, &path, Some(with_reason(json!({}), reason))),
        print_version,
    )
}

pub fn reset(c: &AdminClient, route: &str, reason: Option<&str>) -> ExitCode {
    done(
        c.call(
            Method::POST,
            &format!("/api/v1/routes/{route}/reset"),
            Some(with_reason(json!({}), reason)),
        ),
        print_version,
    )
}

pub fn shadow(c: &AdminClient, route: &str, state: &str, percent: Option<&str>) -> ExitCode {
    let enabled = match state {
        "on" => true,
        "off" => false,
        other => {
            eprintln!("invalid shadow state \"{other}\": give on or off");
            return ExitCode::from(1);
        }
    };
    let percent = match percent.map(parse_percent).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let body = json!({"enabled": enabled, "percent": percent});
    done(
        c.call(
            Method::PUT,
            &format!("/api/v1/routes/{route}/shadow"),
            Some(body),
        ),
        print_version,
    )
}

pub fn revert(c: &AdminClient, version: u64) -> ExitCode {
    done(
        c.call(
            Method::POST,
            &format!("/api/v1/revert/{version}"),
            Some(json!({})),
        ),
        print_version,
    )
}

pub fn reload(c: &AdminClient) -> ExitCode {
    done(
        c.call(Method::POST, "/api/v1/reload", Some(json!({}))),
        |v| {
            println!("reloaded: version {}", v["version"]);
        },
    )
}

/// Control characters (a newline in a reason) would break the table.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn history(c: &AdminClient, route: Option<&str>, as_json: bool) -> ExitCode {
    let path = match route {
        Some(r) => format!("/api/v1/history?route={r}"),
        None => "/api/v1/history".to_string(),
    };
    done(c.call(Method::GET, &path, None), |v| {
        if as_json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            return;
        }
        let empty = Vec::new();
        let versions = v["versions"].as_array().unwrap_or(&empty);
        println!(
            "{:>7}  {:<20}  {:<24}  {:<14}  REASON",
            "VERSION", "TIME", "ACTOR", "ROUTE"
        );
        for r in versions {
            println!(
                "{:>7}  {:<20}  {:<24}  {:<14}  {}",
                r["version"].as_u64().unwrap_or(0),
                r["time"].as_str().unwrap_or(""),
                r["actor"].as_str().unwrap_or(""),
                r["route"].as_str().unwrap_or("*"),
                one_line(r["reason"].as_str().unwrap_or(""))
            );
        }
    })
}

fn fmt_split(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            let mut parts: Vec<(String, f64)> = m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                .collect();
            parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            parts
                .iter()
                .map(|(k, p)| format!("{k} {p}%"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub fn status(c: &AdminClient, as_json: bool) -> ExitCode {
    done(c.call(Method::GET, "/api/v1/status", None), |v| {
        if as_json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            return;
        }
        println!(
            "version {}   default upstream {}",
            v["version"],
            v["default_upstream"].as_str().unwrap_or("")
        );
        let empty = Vec::new();
        for r in v["routes"].as_array().unwrap_or(&empty) {
            let over = r["override"].as_bool().unwrap_or(false);
            println!();
            println!(
                "{}  [{}]{}",
                r["name"].as_str().unwrap_or(""),
                r["match"].as_str().unwrap_or(""),
                r["sticky"]
                    .as_str()
                    .map(|s| format!("  sticky {s}"))
                    .unwrap_or_default()
            );
            println!(
                "  split   {}{}",
                fmt_split(&r["split"]),
                if r["rolled_back"].as_bool().unwrap_or(false) {
                    format!("   (ROLLED BACK; file: {})", fmt_split(&r["file_split"]))
                } else if over {
                    format!("   (override; file: {})", fmt_split(&r["file_split"]))
                } else {
                    String::new()
                }
            );
            if let Some(s) = r["shadow"].as_object() {
                let file = &s.get("file").cloned().unwrap_or_default();
                println!(
                    "  shadow  {} to {} ({}%){}   mismatch {:.1}% of {} compared",
                    if s.get("enabled").and_then(Value::as_bool).unwrap_or(false) {
                        "on"
                    } else {
                        "off"
                    },
                    s.get("upstream").and_then(Value::as_str).unwrap_or(""),
                    s.get("percent").and_then(Value::as_f64).unwrap_or(0.0),
                    if s.get("override").and_then(Value::as_bool) == Some(true) {
                        format!(
                            "   (override; file: on, {}%)",
                            file["percent"].as_f64().unwrap_or(0.0)
                        )
                    } else {
                        String::new()
                    },
                    r["mismatch_rate"].as_f64().unwrap_or(0.0) * 100.0,
                    r["shadow_compared"].as_u64().unwrap_or(0)
                );
            }
            if let Some(ramp) = r["ramp"].as_object() {
                println!(
                    "  ramp    {} to {}, step {}/{} ({}%){}",
                    ramp.get("state").and_then(Value::as_str).unwrap_or(""),
                    ramp.get("to").and_then(Value::as_str).unwrap_or(""),
                    ramp.get("step").cloned().unwrap_or_default(),
                    ramp.get("steps").cloned().unwrap_or_default(),
                    ramp.get("share").cloned().unwrap_or_default(),
                    ramp.get("note")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .map(|n| format!("; {n}"))
                        .unwrap_or_default()
                );
            }
            if let Some(ups) = r["upstreams"].as_object() {
                for (name, u) in ups {
                    println!(
                        "  {:<14} {:>8.1} rps  {:>6.2}% errors  p99 {:>8.1} ms  {} requests",
                        name,
                        u["rps"].as_f64().unwrap_or(0.0),
                        u["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                        u["p99_ms"].as_f64().unwrap_or(0.0),
                        u["requests"]
                    );
                }
            }
        }
    })
}

pub fn explain_live(
    c: &AdminClient,
    method: &str,
    url: &str,
    headers: &[String],
    as_json: bool,
) -> ExitCode {
    let mut map = serde_json::Map::new();
    for h in headers {
        match h.split_once(':') {
            Some((k, v)) => {
                map.insert(k.trim().to_string(), json!(v.trim()));
            }
            None => {
                eprintln!("invalid header \"{h}\": write -H 'name: value'");
                return ExitCode::from(1);
            }
        }
    }
    let body = json!({"method": method, "url": url, "headers": map});
    done(c.call(Method::POST, "/api/v1/explain", Some(body)), |v| {
        if as_json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            return;
        }
        match serde_json::from_value::<strangler_rules::Explanation>(v.clone()) {
            Ok(e) => print!("{e}"),
            Err(_) => println!("{v}"),
        }
    })
}
