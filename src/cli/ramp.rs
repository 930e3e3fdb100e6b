//! `strangler ramp`: start a progressive rollout on a route
//! (`ramp ROUTE --steps ... --every ...`), show ramps (`ramp status
//! [ROUTE]`), or pause, resume or abort one. Each is one admin API call.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use strangler_api::AdminClient;

use crate::cli::ctl::{done, parse_percent, print_version};

/// The flags of `strangler ramp ROUTE ...`, flattened into `Command::Ramp`.
#[derive(Debug, Default, clap::Args)]
pub struct RampArgs {
    /// The upstream to move traffic to (default: the route's one new upstream).
    #[arg(long)]
    pub to: Option<String>,
    /// Percent to the new upstream at each step, e.g. 1,5,25,50,100.
    #[arg(long, value_delimiter = ',')]
    pub steps: Option<Vec<f64>>,
    /// How long each step is held and measured, e.g. 10m.
    #[arg(long)]
    pub every: Option<String>,
    /// Largest error rate of the new upstream, e.g. 1%.
    #[arg(long)]
    pub max_error_rate: Option<String>,
    /// ...or at most this many times the default upstream's, when higher.
    #[arg(long)]
    pub max_error_ratio: Option<f64>,
    /// The new upstream's p99 at most this many times the default's.
    #[arg(long)]
    pub max_p99_ratio: Option<f64>,
    /// Largest real shadow mismatch rate, e.g. 0.5%.
    #[arg(long)]
    pub max_mismatch_rate: Option<String>,
    /// Requests the new upstream must see in a window.
    #[arg(long)]
    pub min_requests: Option<u64>,
    /// rollback (default) or pause.
    #[arg(long)]
    pub on_fail: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
}

/// `strangler ramp ...`.
pub fn run(c: &AdminClient, args: &[String], a: RampArgs, as_json: bool) -> ExitCode {
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
