//! The control commands of the CLI: `status`, `shift`, `rollback`, `reset`,
//! `shadow`, `history`, `revert`, `reload`, `explain --live`. Each is one
//! admin API call; errors are one line on stderr, exit 1 when refused or
//! invalid, 2 when the proxy cannot be reached.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use strangler_api::{AdminClient, CallError};

/// A percentage from the command line: `25`, `25%`, `12.5`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
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

fn done(result: Result<Value, CallError>, print: impl FnOnce(&Value)) -> ExitCode {
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

fn print_version(v: &Value) {
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

/// The flags of `strangler ramp ROUTE ...`.
#[derive(Debug, Default)]
pub struct RampArgs {
    pub to: Option<String>,
    pub steps: Option<Vec<f64>>,
    pub every: Option<String>,
    pub max_error_rate: Option<String>,
    pub max_error_ratio: Option<f64>,
    pub max_p99_ratio: Option<f64>,
    pub max_mismatch_rate: Option<String>,
    pub min_requests: Option<u64>,
    pub on_fail: Option<String>,
    pub reason: Option<String>,
}

/// `strangler ramp ...`.
pub fn ramp(c: &AdminClient, args: &[String], a: RampArgs, as_json: bool) -> ExitCode {
    let verb = args.first().map(String::as_str).unwrap_or("");
    match (verb, args.get(1)) {
        ("status", route) => done(c.call(Method::GET, "/api/v1/ramps", None), |v| {
            let empty = Vec::new();
            let list: Vec<&Value> = v["ramps"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter(|r| route.is_none_or(|want| r["route"].as_str() == Some(want.as_str())))
                .collect();
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"ramps": list})).unwrap_or_default()
                );
                return;
            }
            if list.is_empty() {
                println!("no ramps");
            }
            for r in list {
                if let Some(g) = r["gates_now"].as_object() {
                    let f = |k: &str, v: &str| {
                        g.get(k).and_then(|x| x.get(v)).cloned().unwrap_or_default()
                    };
                    println!(
                        "{}: next decision in {}s; requests {} (min {}), errors {} (limit {}), p99 ratio {} (limit {}), mismatch {} (limit {})",
                        r["route"].as_str().unwrap_or(""),
                        g.get("next_decision_in_s").cloned().unwrap_or_default(),
                        f("requests", "value"),
                        f("requests", "min"),
                        f("error_rate", "value"),
                        f("error_rate", "limit"),
                        f("p99_ratio", "value"),
                        f("p99_ratio", "limit"),
                        f("mismatch_rate", "value"),
                        f("mismatch_rate", "limit"),
                    );
                }
                println!(
                    "{}: {} to {}, step {}/{} ({}%), since {}; {}",
                    r["route"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    r["to"].as_str().unwrap_or(""),
                    r["step"],
                    r["steps"].as_array().map_or(0, Vec::len),
                    r["share"],
                    r["step_started"].as_str().unwrap_or(""),
                    r["note"].as_str().unwrap_or("")
                );
            }
        }),
        ("pause" | "resume" | "abort", Some(route)) => done(
            c.call(
                Method::POST,
                &format!("/api/v1/routes/{route}/ramp/{verb}"),
                Some(json!({})),
            ),
            print_version,
        ),
        ("pause" | "resume" | "abort", None) => {
            eprintln!("ramp {verb} needs a route: strangler ramp {verb} ROUTE");
            ExitCode::from(1)
        }
        (route, None) => {
            let rate = |v: &Option<String>, what: &str| -> Result<Option<f64>, String> {
                v.as_deref()
                    .map(|s| parse_percent(s).map(|p| p / 100.0))
                    .transpose()
                    .map_err(|e| format!("{what}: {e}"))
            };
            let (err, mism) = match (
                rate(&a.max_error_rate, "--max-error-rate"),
                rate(&a.max_mismatch_rate, "--max-mismatch-rate"),
            ) {
                (Ok(e), Ok(m)) => (e, m),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            let mut gates = serde_json::Map::new();
            for (k, v) in [
                ("max_error_rate", err.map(|v| json!(v))),
                ("max_error_ratio", a.max_error_ratio.map(|v| json!(v))),
                ("max_p99_ratio", a.max_p99_ratio.map(|v| json!(v))),
                ("max_mismatch_rate", mism.map(|v| json!(v))),
                ("min_requests", a.min_requests.map(|v| json!(v))),
            ] {
                if let Some(v) = v {
                    gates.insert(k.to_string(), v);
                }
            }
            let mut body = json!({"gates": gates});
            for (k, v) in [
                ("to", a.to.map(|v| json!(v))),
                ("steps", a.steps.map(|v| json!(v))),
                ("every", a.every.map(|v| json!(v))),
                ("on_fail", a.on_fail.map(|v| json!(v))),
                ("reason", a.reason.map(|v| json!(v))),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            done(
                c.call(
                    Method::POST,
                    &format!("/api/v1/routes/{route}/ramp"),
                    Some(body),
                ),
                print_version,
            )
        }
        (_, Some(_)) => {
            eprintln!(
                "usage: strangler ramp ROUTE --steps ... --every ..., or ramp status|pause|resume|abort ROUTE"
            );
            ExitCode::from(1)
        }
    }
}
