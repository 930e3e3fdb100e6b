//! Progressive rollout (`strangler ramp`): a route's share to its new
//! upstream walks through steps, each held for a window, advancing only
//! while every gate holds on the route's own traffic: the new side's error
//! rate (absolute, or relative to the default side's), its p99 relative to
//! the default side's, and the real shadow mismatch rate. A failing gate
//! rolls the route back (or pauses). The plan and its progress live in the
//! runtime layer, so every step is a version (actor `ramp`) and a restart
//! resumes the current step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::state::Shared;
use crate::state::layer::{Ramp, RouteOverride};
use crate::state::stats::{Cumulative, Span};

/// How often the engine looks; also the fast check's period.
const TICK: Duration = Duration::from_millis(500);

/// Windows extended at most this many times for lack of requests.
pub const MAX_EXTENSIONS: u32 = 3;

/// Counts at the start of the current step (process-local: after a restart
/// the window keeps its start time and counts from the restart).
#[derive(Debug, Clone)]
struct Baseline {
    step: usize,
    started_ms: u64,
    new: Cumulative,
    default: Cumulative,
    /// Shadow comparisons and those not matching (real), when shadowed.
    shadow: Option<(u64, u64)>,
}

/// Runs every route's ramp until the process ends.
pub fn spawn(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut baselines: HashMap<String, Baseline> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let live = shared.live.load_full();
            let running: Vec<(String, Ramp)> = live
                .layer
                .routes
                .iter()
                .filter_map(|(name, o)| {
                    o.ramp
                        .as_ref()
                        .filter(|r| r.state == "running")
                        .map(|r| (name.clone(), r.clone()))
                })
                .collect();
            baselines.retain(|name, _| running.iter().any(|(n, _)| n == name));
            for (name, ramp) in running {
                let Some(i) = live.config().routes.iter().position(|r| r.name == name) else {
                    continue;
                };
                let config = live.config();
                let Some(to) = config.upstream_id(&ramp.to) else {
                    continue;
                };
                let default = config.default_upstream;
                let new_now = live.route(i).cells[to.index()].cumulative();
                let def_now = live.route(i).cells[default.index()].cumulative();
                let shadow_now = mismatch_counts(&shared, &name);
                let base = baselines.entry(name.clone()).or_insert_with(|| Baseline {
                    step: ramp.step,
                    started_ms: ramp.step_started_ms,
                    new: new_now.clone(),
                    default: def_now.clone(),
                    shadow: shadow_now,
                });
                if base.step != ramp.step || base.started_ms != ramp.step_started_ms {
                    *base = Baseline {
                        step: ramp.step,
                        started_ms: ramp.step_started_ms,
                        new: new_now.clone(),
                        default: def_now.clone(),
                        shadow: shadow_now,
                    };
                }
                let (Some(new), Some(def)) =
                    (new_now.since(&base.new), def_now.since(&base.default))
                else {
                    base.new = new_now;
                    base.default = def_now;
                    continue;
                };
                // The real mismatch rate over this step's window.
                let mismatch = match (shadow_now, base.shadow) {
                    (Some((c, b)), Some((c0, b0))) if c > c0 => {
                        Some(b.saturating_sub(b0) as f64 / (c - c0) as f64)
                    }
                    _ => None,
                };
                let now = now_ms();
                let figures = figures(&ramp, &new, &def, mismatch, now);
                shared
                    .ramp_figures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone(), figures);
                let verdict = judge(&ramp, &new, &def, mismatch, now);
                if let Some(step) = verdict {
                    apply(&shared, &name, &ramp, step).await;
                }
            }
        }
    });
}

/// What the engine decided for a ramp this tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// All gates hold at the window's end: the next share (or done).
    Advance(String),
    /// Too few requests at the window's end: a longer window.
    Extend(String),
    /// A gate failed (at the window's end, or clearly already).
    Fail(String),
    /// Still too few requests after every extension.
    Pause(String),
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// The gates on one window; `None` while the window runs and nothing is
/// clearly broken.
pub fn judge(
    ramp: &Ramp,
    new: &Span,
    def: &Span,
    mismatch: Option<f64>,
    now_ms: u64,
) -> Option<Step> {
    let g = &ramp.gates;
    let allowed = g.max_error_rate.max(g.max_error_ratio * def.error_rate());
    let err = new.error_rate();
    // Fast check: clearly broken with enough requests, no need to wait.
    if new.requests >= g.min_requests && err > 2.0 * allowed && new.errors >= 2 {
        return Some(Step::Fail(format!(
            "error rate {} of {} requests, over twice the {} allowed",
            pct(err),
            new.requests,
            pct(allowed)
        )));
    }
    let window_end = ramp.step_started_ms + ramp.every_ms * u64::from(ramp.extensions + 1);
    if now_ms < window_end {
        return None;
    }
    if new.requests < g.min_requests {
        let why = format!(
            "{} requests on {} in the window, {} needed",
            new.requests, ramp.to, g.min_requests
        );
        return Some(if ramp.extensions < MAX_EXTENSIONS {
            Step::Extend(why)
        } else {
            Step::Pause(format!("{why}, after {MAX_EXTENSIONS} extensions"))
        });
    }
    if err > allowed {
        return Some(Step::Fail(format!(
            "error rate {} over {} allowed ({} requests)",
            pct(err),
            pct(allowed),
            new.requests
        )));
    }
    let p99_ratio = if def.p99_ms > 0.0 {
        new.p99_ms / def.p99_ms
    } else {
        1.0
    };
    if def.requests > 0 && p99_ratio > g.max_p99_ratio {
        return Some(Step::Fail(format!(
            "p99 {:.1} ms is {:.2}x the default's {:.1} ms, over {}x",
            new.p99_ms, p99_ratio, def.p99_ms, g.max_p99_ratio
        )));
    }
    if let (Some(max), Some(m)) = (g.max_mismatch_rate, mismatch)
        && m > max
    {
        return Some(Step::Fail(format!(
            "shadow mismatch rate {} over {}",
            pct(m),
            pct(max)
        )));
    }
    Some(Step::Advance(format!(
        "errors {} (allowed {}), p99 {:.2}x (allowed {}x){}, {} requests",
        pct(err),
        pct(allowed),
        p99_ratio,
        g.max_p99_ratio,
        mismatch
            .map(|m| format!(", mismatch {}", pct(m)))
            .unwrap_or_default(),
        new.requests
    )))
}

/// Each gate's current figure against its limit, and the time to the next
/// decision, for `ramp status`.
fn figures(
    ramp: &Ramp,
    new: &Span,
    def: &Span,
    mismatch: Option<f64>,
    now: u64,
) -> serde_json::Value {
    let g = &ramp.gates;
    let window_end = ramp.step_started_ms + ramp.every_ms * u64::from(ramp.extensions + 1);
    serde_json::json!({
        "requests": {"value": new.requests, "min": g.min_requests},
        "error_rate": {
            "value": new.error_rate(),
            "limit": g.max_error_rate.max(g.max_error_ratio * def.error_rate()),
        },
        "p99_ratio": {
            "value": if def.p99_ms > 0.0 { new.p99_ms / def.p99_ms } else { 1.0 },
            "limit": g.max_p99_ratio,
        },
        "mismatch_rate": {"value": mismatch, "limit": g.max_mismatch_rate},
        "next_decision_in_s": window_end.saturating_sub(now) / 1000,
    })
}

/// The route's shadow comparisons so far and how many did not really
/// match (noise excluded), when it is shadowed.
fn mismatch_counts(shared: &Arc<Shared>, route: &str) -> Option<(u64, u64)> {
    let rt = shared.shadow.as_ref()?;
    let (summaries, _) = shared.shadow_summaries(rt);
    let s = summaries.into_iter().find(|s| s.route == route)?;
    Some((
        s.compared,
        s.mismatched_real + s.shadow_errors + s.shadow_timeouts,
    ))
}

fn now_ms() -> u64 {
    strangler_shadow::time::now_ms()
}

/// A change to a route's overrides.
type Edit = Box<dyn FnOnce(&mut RouteOverride) + Send>;

/// Holds the ramp at its current step, saying why.
fn pause(why: String) -> Edit {
    Box::new(move |o: &mut RouteOverride| {
        if let Some(r) = &mut o.ramp {
            r.state = "paused".into();
            r.note = why;
        }
    })
}

/// Makes the engine's decision a version of the runtime layer.
async fn apply(shared: &Arc<Shared>, name: &str, ramp: &Ramp, step: Step) {
    let default_name = shared
        .live
        .load()
        .config()
        .upstream(shared.live.load().config().default_upstream)
        .name
        .clone();
    let total = ramp.steps.len();
    let (reason, edit): (String, Edit) = match step {
        Step::Advance(figures) => {
            let next = ramp.step + 1;
            if next >= total {
                (
                    format!(
                        "ramp done at {}% to {}: {figures}",
                        ramp.steps[total - 1],
                        ramp.to
                    ),
                    Box::new(move |o: &mut RouteOverride| {
                        if let Some(r) = &mut o.ramp {
                            r.state = "done".into();
                            r.note = figures;
                        }
                    }),
                )
            } else {
                let share = ramp.steps[next];
                let to = ramp.to.clone();
                (
                    format!(
                        "ramp step {}/{total}: {share}% to {to}; gates held: {figures}",
                        next + 1
                    ),
                    Box::new(move |o: &mut RouteOverride| {
                        o.rolled_back = false;
                        o.split = Some(split_for(&to, &default_name, share));
                        if let Some(r) = &mut o.ramp {
                            r.step = next;
                            r.step_started_ms = now_ms();
                            r.extensions = 0;
                            r.note = figures;
                        }
                    }),
                )
            }
        }
        Step::Extend(why) => (
            format!("ramp window extended: {why}"),
            Box::new(move |o: &mut RouteOverride| {
                if let Some(r) = &mut o.ramp {
                    r.extensions += 1;
                    r.note = why;
                }
            }),
        ),
        Step::Pause(why) => (format!("ramp paused: {why}"), pause(why)),
        Step::Fail(why) if ramp.on_fail == "pause" => {
            (format!("ramp paused, a gate failed: {why}"), pause(why))
        }
        Step::Fail(why) => (
            format!("ramp rolled back, a gate failed: {why}"),
            Box::new(move |o: &mut RouteOverride| {
                o.rolled_back = true;
                o.split = None;
                if let Some(r) = &mut o.ramp {
                    r.state = "rolled_back".into();
                    r.note = why;
                }
            }),
        ),
    };
    let from = ramp.steps.get(ramp.step).copied();
    let result = shared
        .change_route("ramp", &reason, None, name, move |_, o| {
            edit(o);
            Ok(())
        })
        .await;
    match result {
        Err(e) => tracing::error!(route = name, "ramp step not applied: {e}"),
        Ok(_) => {
            let after = shared.live.load();
            let r = after.layer.routes.get(name).and_then(|o| o.ramp.clone());
            let to_share = match r.as_ref().map(|r| r.state.as_str()) {
                Some("rolled_back") => Some(0.0),
                _ => r.as_ref().and_then(|r| r.steps.get(r.step).copied()),
            };
            shared.notify(event(
                name,
                kind(&reason),
                from,
                to_share,
                &reason,
                r.as_ref(),
            ));
        }
    }
}

/// `to` at `share` percent, the rest to the default upstream.
pub fn split_for(to: &str, default: &str, share: f64) -> std::collections::BTreeMap<String, f64> {
    let mut m = std::collections::BTreeMap::new();
    m.insert(to.to_string(), share);
    if share < 100.0 {
        m.insert(
            default.to_string(),
            ((100.0 - share) * 100.0).round() / 100.0,
        );
    }
    m
}

/// What kind of ramp event a reason describes.
fn kind(reason: &str) -> &'static str {
    if reason.starts_with("ramp done") {
        "done"
    } else if reason.starts_with("ramp step") {
        "step"
    } else if reason.starts_with("ramp rolled back") {
        "rollback"
    } else if reason.starts_with("ramp paused") {
        "pause"
    } else {
        "extend"
    }
}

/// A webhook event.
pub fn event(
    route: &str,
    kind: &str,
    from: Option<f64>,
    to: Option<f64>,
    reason: &str,
    ramp: Option<&Ramp>,
) -> serde_json::Value {
    serde_json::json!({
        "event": kind,
        "route": route,
        "from_share": from,
        "to_share": to,
        "reason": reason,
        "figures": ramp.map(|r| r.note.clone()),
        "upstream": ramp.map(|r| r.to.clone()),
        "time": strangler_shadow::time::rfc3339_ms(now_ms()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::layer::Gates;

    fn ramp() -> Ramp {
        Ramp {
            to: "orders".into(),
            steps: vec![10.0, 50.0, 100.0],
            every_ms: 1000,
            gates: Gates {
                max_error_rate: 0.01,
                max_error_ratio: 2.0,
                max_p99_ratio: 1.5,
                max_mismatch_rate: Some(0.005),
                min_requests: 100,
            },
            on_fail: "rollback".into(),
            step: 0,
            step_started_ms: 0,
            extensions: 0,
            state: "running".into(),
            note: String::new(),
        }
    }

    fn span(requests: u64, errors: u64, p99_ms: f64) -> Span {
        Span {
            requests,
            errors,
            p99_ms,
        }
    }

    #[test]
    fn gates() {
        let r = ramp();
        let ok = span(200, 1, 10.0);
        let def = span(800, 0, 10.0);
        assert_eq!(judge(&r, &ok, &def, None, 500), None, "window still open");
        assert!(matches!(
            judge(&r, &ok, &def, None, 1000),
            Some(Step::Advance(_))
        ));
        // Over the absolute rate, and over twice the default's.
        assert!(matches!(
            judge(&r, &span(200, 3, 10.0), &def, None, 1000),
            Some(Step::Fail(_))
        ));
        // The ratio allows more when the default side errs too.
        let def_err = span(800, 16, 10.0);
        assert!(matches!(
            judge(&r, &span(200, 6, 10.0), &def_err, None, 1000),
            Some(Step::Advance(_))
        ));
        // p99 and mismatch.
        assert!(matches!(
            judge(&r, &span(200, 0, 20.0), &def, None, 1000),
            Some(Step::Fail(_))
        ));
        assert!(matches!(
            judge(&r, &ok, &def, Some(0.01), 1000),
            Some(Step::Fail(_))
        ));
        // Too few requests: extend, then pause.
        assert!(matches!(
            judge(&r, &span(10, 0, 1.0), &def, None, 1000),
            Some(Step::Extend(_))
        ));
        let mut tired = ramp();
        tired.extensions = MAX_EXTENSIONS;
        assert!(matches!(
            judge(&tired, &span(10, 0, 1.0), &def, None, 4000),
            Some(Step::Pause(_))
        ));
        // Clearly broken: fails before the window ends.
        assert!(matches!(
            judge(&r, &span(100, 50, 1.0), &def, None, 10),
            Some(Step::Fail(_))
        ));
    }
}
