//! Drawing: a pure function of [`App`] onto a ratatui [`Frame`], so any
//! backend works (the terminal, or `TestBackend` in snapshot tests). Every
//! state that colour marks (override, rollback, noise, the selection) is
//! also said in words or symbols, so it reads without colour (`NO_COLOR`).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};

use crate::app::{App, Connection, Input, Mode, Pane, View, split_text};
use crate::view::{RouteShift, RouteView, VersionView};

/// Styles, or none at all without colour.
struct Theme {
    colour: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.colour {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn selected(&self) -> Style {
        if self.colour {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    fn bold(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let theme = Theme { colour: app.colour };
    let [header, tabs, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, app, &theme);
    draw_tabs(frame, tabs, app, &theme);
    match app.view {
        View::Routes => draw_routes(frame, body, app, &theme),
        View::Mismatches => draw_mismatches(frame, body, app, &theme),
        View::History => draw_history(frame, body, app, &theme),
    }
    draw_status(frame, status, app, &theme);
    match &app.mode {
        Mode::Confirm(action) => {
            let what = if app.confirm_text.is_empty() {
                action.describe()
            } else {
                app.confirm_text.clone()
            };
            let text = vec![
                Line::from(what),
                Line::from(""),
                Line::from("y / Enter: do it    any other key: cancel"),
            ];
            popup(frame, "Confirm", text, &theme);
        }
        Mode::Help => popup(frame, "Keys", help(), &theme),
        _ => {}
    }
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let version = app
        .status
        .as_ref()
        .map_or("-".to_string(), |s| s.version.to_string());
    let (state, style) = match &app.connection {
        Connection::Connecting => ("connecting...".to_string(), theme.fg(Color::Yellow)),
        Connection::Connected => ("connected".to_string(), theme.fg(Color::Green)),
        Connection::Disconnected(_) => (
            if app.status.is_some() {
                "DISCONNECTED (retrying; last data shown)".to_string()
            } else {
                "DISCONNECTED (retrying)".to_string()
            },
            theme.fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        Connection::Refused(_) => (
            "REFUSED by the admin API".to_string(),
            theme.fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    let proxy = app
        .status
        .as_ref()
        .map(|s| s.proxy.clone())
        .filter(|p| !p.is_empty())
        .map(|p| format!("proxy {p}  "))
        .unwrap_or_default();
    let line = Line::from(vec![
        Span::styled("strangler", theme.bold()),
        Span::raw(format!("  {proxy}admin {}  v{version}  ", app.admin)),
        Span::styled(state, style),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_tabs(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let tab = |n: &str, name: &str, v: View| {
        let text = format!(" {n} {name} ");
        if app.view == v {
            Span::styled(format!("[{}]", text.trim()), theme.selected())
        } else {
            Span::raw(text)
        }
    };
    let mut spans = vec![
        tab("1", "Routes", View::Routes),
        Span::raw(" "),
        tab("2", "Mismatches", View::Mismatches),
        Span::raw(" "),
        tab("3", "History", View::History),
    ];
    if !app.filter.is_empty() && app.view == View::Mismatches {
        spans.push(Span::raw(format!("   filter: {}", app.filter)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn pct(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}%")
    } else {
        format!("{v}%")
    }
}

/// `[####------] 25% orders`.
fn split_bar(r: &RouteView, default: &str, width: usize) -> String {
    let to = r.new_upstream(default);
    let share = to
        .as_ref()
        .and_then(|t| r.split.get(t))
        .copied()
        .unwrap_or(0.0);
    let filled = ((share / 100.0) * width as f64).round() as usize;
    let bar = format!(
        "[{}{}]",
        "#".repeat(filled),
        "-".repeat(width - filled.min(width))
    );
    match to {
        Some(t) => format!("{bar} {} {t}", pct(share)),
        None => {
            let parts: Vec<String> = r
                .split
                .iter()
                .map(|(k, v)| format!("{k} {}", pct(*v)))
                .collect();
            parts.join(", ")
        }
    }
}

fn side_stats(r: &RouteView, upstream: &str) -> String {
    match r.upstreams.get(upstream) {
        Some(u) => format!(
            "{:.1}/s {:.1}% {:.0}ms",
            u.rps,
            u.error_rate * 100.0,
            u.p99_ms
        ),
        None => "-".to_string(),
    }
}

fn draw_routes(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(status) = &app.status else {
        frame.render_widget(Paragraph::new("waiting for the proxy..."), area);
        return;
    };
    let default = status.default_upstream.as_str();
    let wide = area.width >= 150;
    let routes = app.visible_routes();
    let rows: Vec<Row> = routes
        .iter()
        .map(|r| {
            let ramping = r.ramp.as_ref().is_some_and(|x| x.state == "running");
            let state = if r.rolled_back {
                "ROLLED BACK"
            } else if ramping {
                "ramping"
            } else if r.overridden {
                "override"
            } else {
                "file"
            };
            let state_style = if r.rolled_back {
                theme.fg(Color::Red).add_modifier(Modifier::BOLD)
            } else if r.overridden {
                theme.fg(Color::Yellow).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            let shadow = match &r.shadow {
                Some(s) if s.enabled => {
                    format!("{} {}", pct(s.percent), if s.overridden { "*" } else { "" })
                }
                Some(_) => "off".to_string(),
                None => "-".to_string(),
            };
            let mismatch = if r.shadow.is_some() && r.shadow_compared > 0 {
                format!("{:.1}%", r.mismatch_rate * 100.0)
            } else {
                "-".to_string()
            };
            let new = r.new_upstream(default).unwrap_or_default();
            let mut cells = vec![
                Cell::from(r.name.clone()),
                Cell::from(split_bar(r, default, if wide { 12 } else { 6 })),
                Cell::from(Span::styled(state, state_style)),
            ];
            if wide {
                cells.push(Cell::from(if r.overridden && !r.rolled_back {
                    match r.file_split.get(&new) {
                        Some(p) => format!("file {}", pct(*p)),
                        None => format!("file: {}", fmt_split(&r.file_split)),
                    }
                } else {
                    String::new()
                }));
                cells.push(Cell::from(r.matcher.clone()));
                cells.push(Cell::from(r.sticky.clone().unwrap_or_else(|| "-".into())));
            }
            cells.push(Cell::from(shadow));
            cells.push(Cell::from(mismatch));
            cells.push(Cell::from(
                format!("{new} {}", side_stats(r, &new)).trim().to_string(),
            ));
            if wide {
                cells.push(Cell::from(format!("{default} {}", side_stats(r, default))));
            }
            Row::new(cells)
        })
        .collect();
    let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec![
                "ROUTE",
                // The split column gives way first when the width is short.
                "SPLIT (new)",
                "STATE",
                "FILE",
                "MATCH",
                "STICKY",
                "SHADOW",
                "MISMATCH",
                "NEW rps err p99",
                "DEFAULT rps err p99",
            ],
            vec![
                Constraint::Length(14),
                Constraint::Length(26),
                Constraint::Length(11),
                Constraint::Length(9),
                Constraint::Min(24),
                Constraint::Length(16),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(22),
                Constraint::Length(24),
            ],
        )
    } else {
        (
            vec![
                "ROUTE",
                "SPLIT (new side)",
                "STATE",
                "SHADOW",
                "MISM",
                "NEW rps err p99",
            ],
            vec![
                Constraint::Length(10),
                Constraint::Length(19),
                Constraint::Length(11),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Min(10),
            ],
        )
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.bold()))
        .row_highlight_style(theme.selected())
        .highlight_symbol("> ")
        .block(
            Block::default()
                .borders(Borders::TOP)
                .title(format!(" routes (default upstream: {default}) ")),
        );
    let mut state =
        TableState::default().with_selected(Some(app.route_sel).filter(|_| !routes.is_empty()));
    let [list, panel] = Layout::vertical([Constraint::Min(3), Constraint::Length(6)]).areas(area);
    frame.render_stateful_widget(table, list, &mut state);
    if let Some(r) = app.route() {
        route_panel(frame, panel, r, default, theme);
    }
}

/// Everything about the selected route, whatever the width.
fn route_panel(frame: &mut Frame, area: Rect, r: &RouteView, default: &str, theme: &Theme) {
    let mut lines = vec![Line::from(vec![
        Span::styled(r.name.clone(), theme.bold()),
        Span::raw(format!(
            "  {}  sticky: {}",
            r.matcher,
            r.sticky.clone().unwrap_or_else(|| "none".into())
        )),
    ])];
    let state = if r.rolled_back {
        format!("  ROLLED BACK (file: {})", split_text(&r.file_split))
    } else if r.overridden {
        format!("  override (file: {})", split_text(&r.file_split))
    } else {
        "  as in the file".to_string()
    };
    lines.push(Line::from(format!(
        "split: {}{state}",
        split_text(&r.split)
    )));
    let mut sides: Vec<String> = r
        .upstreams
        .iter()
        .map(|(name, u)| {
            format!(
                "{name}{}: {:.1}/s, {:.2}% errors, p99 {:.1} ms",
                if name == default { " (default)" } else { "" },
                u.rps,
                u.error_rate * 100.0,
                u.p99_ms
            )
        })
        .collect();
    if sides.is_empty() {
        sides.push("no traffic in the last minute".into());
    }
    lines.push(Line::from(sides.join("   ")));
    if let Some(ramp) = &r.ramp {
        let gates = if ramp.note.is_empty() {
            String::new()
        } else {
            format!("; {}", ramp.note)
        };
        lines.push(Line::from(format!(
            "ramp {} to {}, step {}/{} ({}){gates}",
            ramp.state,
            ramp.to,
            ramp.step,
            ramp.steps,
            ramp.share.map(crate::app::pct).unwrap_or_default()
        )));
    }
    lines.push(Line::from(match &r.shadow {
        Some(s) => format!(
            "shadow: {} to {}, {}{}   mismatch {:.1}% of {} compared",
            if s.enabled { "on" } else { "off" },
            s.upstream,
            crate::app::pct(s.percent),
            if s.overridden { " (override)" } else { "" },
            r.mismatch_rate * 100.0,
            r.shadow_compared
        ),
        None => "shadow: none".to_string(),
    }));
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP)),
        area,
    );
}

fn fmt_split(split: &std::collections::BTreeMap<String, f64>) -> String {
    split
        .iter()
        .map(|(k, v)| format!("{k} {}", pct(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn draw_mismatches(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    match app.pane {
        Pane::Detail => return draw_detail(frame, area, app, theme),
        Pane::Examples => return draw_examples(frame, area, app, theme),
        Pane::Fields => {}
    }
    let Some(summary) = &app.summary else {
        frame.render_widget(Paragraph::new("waiting for the proxy..."), area);
        return;
    };
    let wide = area.width >= 120;
    let field_rows = app.field_rows();
    let mut rows = Vec::new();
    let mut selected = None;
    let mut last_route = None;
    for (i, fr) in field_rows.iter().enumerate() {
        let Some(r) = summary.routes.iter().find(|r| r.route == fr.route) else {
            continue;
        };
        if last_route != Some(&r.route) {
            last_route = Some(&r.route);
            rows.push(
                Row::new(vec![Cell::from(format!(
                    "{}: {:.1}% of {} differ",
                    r.route,
                    r.mismatch_rate * 100.0,
                    r.compared
                ))])
                .style(theme.bold()),
            );
        }
        let f = &r.fields[fr.field];
        let verdict = match f.noise {
            Some(true) => "noise",
            Some(false) => "real",
            None => "unknown",
        };
        let style = match f.noise {
            Some(true) => theme.fg(Color::DarkGray),
            Some(false) => theme.fg(Color::Red),
            None => theme.fg(Color::Yellow),
        };
        let path = if f.path.is_empty() {
            "(whole)"
        } else {
            f.path.as_str()
        };
        let mut cells = vec![
            Cell::from(format!("  {path}")),
            Cell::from(f.kind.clone()),
            Cell::from(f.count.to_string()),
            Cell::from(format!("{:.1}%", f.raw_rate * 100.0)),
            Cell::from(format!("{:.1}%", f.noise_rate * 100.0)),
            Cell::from(Span::styled(verdict, style)),
        ];
        if wide {
            cells.push(Cell::from(f.first_seen.clone()));
            cells.push(Cell::from(f.last_seen.clone()));
            cells.push(Cell::from(f.examples.len().to_string()));
        }
        if i == app.field_sel {
            selected = Some(rows.len());
        }
        rows.push(Row::new(cells));
    }
    if rows.is_empty() {
        let text = if summary.routes.is_empty() {
            "no shadowed routes"
        } else if app.filter.is_empty() {
            "no differences yet"
        } else {
            "nothing matches the filter (Esc clears it)"
        };
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    let mut header = vec!["FIELD", "KIND", "COUNT", "RAW", "NOISE", "VERDICT"];
    let mut widths = vec![
        Constraint::Min(20),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
    ];
    if wide {
        header.extend(["FIRST SEEN", "LAST SEEN", "EXAMPLES"]);
        widths.extend([
            Constraint::Length(25),
            Constraint::Length(25),
            Constraint::Length(8),
        ]);
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.bold()))
        .row_highlight_style(theme.selected())
        .highlight_symbol("> ")
        .block(
            Block::default()
                .borders(Borders::TOP)
                .title(" mismatches by route and field "),
        );
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_examples(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some((route, f)) = app.field() else {
        frame.render_widget(Paragraph::new("no field selected"), area);
        return;
    };
    let rows: Vec<Row> = f
        .examples
        .iter()
        .rev()
        .map(|id| {
            let (time, request, outcome, first) = match app.examples.get(id) {
                None => (
                    "loading...".to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Some(None) => (
                    "gone (retention) or unreadable".to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Some(Some(d)) => {
                    let v = &d.0;
                    let first = v["differences"]
                        .as_array()
                        .and_then(|a| a.first())
                        .map(|x| {
                            format!(
                                "{}: {} -> {}",
                                x["path"].as_str().unwrap_or(""),
                                x.get("primary")
                                    .map_or("(absent)".into(), |p| p.to_string()),
                                x.get("shadow").map_or("(absent)".into(), |p| p.to_string())
                            )
                        })
                        .unwrap_or_default();
                    (
                        v["time"].as_str().unwrap_or("").to_string(),
                        format!(
                            "{} {}",
                            v["method"].as_str().unwrap_or(""),
                            v["path"].as_str().unwrap_or("")
                        ),
                        v["outcome"].as_str().unwrap_or("").to_string(),
                        first,
                    )
                }
            };
            let mut cells = vec![
                Cell::from(time),
                Cell::from(request),
                Cell::from(outcome),
                Cell::from(first),
            ];
            if area.width >= 120 {
                cells.push(Cell::from(id.clone()));
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(24),
        Constraint::Min(16),
        Constraint::Length(14),
        Constraint::Min(20),
    ];
    let mut header = vec!["TIME", "REQUEST", "OUTCOME", "FIRST DIFFERENCE"];
    if area.width >= 120 {
        widths.push(Constraint::Length(36));
        header.push("ID");
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.bold()))
        .row_highlight_style(theme.selected())
        .highlight_symbol("> ")
        .block(Block::default().borders(Borders::TOP).title(format!(
            " {route} {} {}: examples, newest first (Enter: open, Esc: back) ",
            f.kind, f.path
        )));
    let mut state = TableState::default().with_selected(Some(app.example_sel));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(d) = &app.detail else {
        frame.render_widget(Paragraph::new("loading the record..."), area);
        return;
    };
    let v = &d.0;
    let title = format!(
        " {} {} {}  {}  {} ",
        v["route"].as_str().unwrap_or(""),
        v["method"].as_str().unwrap_or(""),
        v["path"].as_str().unwrap_or(""),
        v["outcome"].as_str().unwrap_or(""),
        v["time"].as_str().unwrap_or("")
    );
    let empty = Vec::new();
    let diffs = v["differences"].as_array().unwrap_or(&empty);
    let shown = diffs.len().min(3);
    let [head, summary, body] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(shown as u16 + 1),
        Constraint::Min(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(title, theme.bold()))),
        head,
    );
    let total = v["differences_total"]
        .as_u64()
        .unwrap_or(diffs.len() as u64);
    let mut lines: Vec<Line> = diffs
        .iter()
        .take(shown)
        .map(|d| {
            let val = |k: &str| match d.get(k) {
                Some(x) => x.to_string(),
                None => "(absent)".to_string(),
            };
            Line::from(format!(
                "  {} {}: {} -> {}",
                d["kind"].as_str().unwrap_or(""),
                d["path"].as_str().unwrap_or(""),
                val("primary"),
                val("shadow")
            ))
        })
        .collect();
    let noun = if total == 1 {
        "difference"
    } else {
        "differences"
    };
    lines.insert(
        0,
        Line::from(if diffs.is_empty() {
            format!(
                "the shadow did not answer: {}",
                v["shadow"]["note"].as_str().unwrap_or("no answer")
            )
        } else {
            format!("{total} {noun} (n/N jumps between them):")
        }),
    );
    frame.render_widget(Paragraph::new(lines), summary);
    let mut rows = crate::detail::rows(v);
    // The first row names the two sides: it stays while the rest scrolls.
    let title_row = if rows.is_empty() {
        None
    } else {
        Some(rows.remove(0))
    };
    let [title_area, body] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(body);
    if let Some(t) = title_row {
        let col = usize::from(title_area.width.saturating_sub(3) / 2);
        let left = t.left.unwrap_or_default();
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(
                format!(
                    "  {left:<w$} |   {}",
                    t.right.unwrap_or_default(),
                    w = col.saturating_sub(2)
                ),
                theme.bold(),
            ))),
            title_area,
        );
    }
    let col = body.width.saturating_sub(3) / 2;
    let cut = |s: &Option<String>| -> String {
        let s = s.clone().unwrap_or_default();
        s.chars().take(usize::from(col.saturating_sub(2))).collect()
    };
    let lines: Vec<Line> = rows
        .iter()
        .skip(app.scroll.saturating_sub(1).min(rows.len()))
        .take(usize::from(body.height))
        .map(|r| {
            let mark = if r.marked { "* " } else { "  " };
            let left = format!(
                "{mark}{:<w$}",
                cut(&r.left),
                w = usize::from(col.saturating_sub(2))
            );
            let right = format!("{mark}{}", cut(&r.right));
            if r.marked {
                Line::from(vec![
                    Span::styled(left, theme.fg(Color::Red)),
                    Span::raw(" | "),
                    Span::styled(right, theme.fg(Color::Green)),
                ])
            } else {
                Line::from(format!("{left} | {right}"))
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), body);
}

fn draw_history(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(h) = &app.history else {
        frame.render_widget(Paragraph::new("waiting for the proxy..."), area);
        return;
    };
    let wide = area.width >= 100;
    let rows: Vec<Row> = h
        .versions
        .iter()
        .map(|v| {
            let mut cells = vec![
                Cell::from(v.version.to_string()),
                Cell::from(v.time.clone()),
                Cell::from(v.actor.clone()),
                Cell::from(v.route.clone().unwrap_or_else(|| "*".into())),
                Cell::from(v.reason.replace(['\n', '\r'], " ")),
            ];
            if wide {
                cells.push(Cell::from(change_text(v)));
            }
            Row::new(cells)
        })
        .collect();
    let mut header = vec!["VERSION", "TIME", "ACTOR", "ROUTE", "REASON"];
    let mut widths = vec![
        Constraint::Length(7),
        Constraint::Length(20),
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Min(20),
    ];
    if wide {
        header.push("CHANGE");
        widths.push(Constraint::Min(30));
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.bold()))
        .row_highlight_style(theme.selected())
        .highlight_symbol("> ")
        .block(
            Block::default()
                .borders(Borders::TOP)
                .title(" history (v or Enter: revert to the selected version) "),
        );
    let mut state = TableState::default()
        .with_selected(Some(app.history_sel).filter(|_| !h.versions.is_empty()));
    let [list, panel] = Layout::vertical([Constraint::Min(3), Constraint::Length(4)]).areas(area);
    frame.render_stateful_widget(table, list, &mut state);
    if let Some(v) = h.versions.get(app.history_sel) {
        let lines = vec![
            Line::from(vec![
                Span::styled(format!("version {}", v.version), theme.bold()),
                Span::raw(format!(
                    "  {}  {}  route {}",
                    v.time,
                    v.actor,
                    v.route.clone().unwrap_or_else(|| "*".into())
                )),
            ]),
            Line::from(format!("reason: {}", v.reason.replace(['\n', '\r'], " "))),
            Line::from(format!("change: {}", change_text(v))),
        ];
        frame.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::TOP)),
            panel,
        );
    }
}

/// What a version changed, in words.
fn change_text(v: &VersionView) -> String {
    let after = &v.change["after"];
    match &v.route {
        Some(_) => override_text(after),
        None => match after.as_object() {
            Some(m) if !m.is_empty() => m
                .iter()
                .map(|(route, o)| format!("{route}: {}", override_text(o)))
                .collect::<Vec<_>>()
                .join("; "),
            _ => "no overrides".into(),
        },
    }
}

fn override_text(o: &serde_json::Value) -> String {
    let Some(m) = o.as_object() else {
        return "back to the file".into();
    };
    let mut parts = Vec::new();
    if m.get("rolled_back").and_then(|v| v.as_bool()) == Some(true) {
        parts.push("rolled back".to_string());
    }
    if let Some(split) = m.get("split").and_then(|v| v.as_object()) {
        let split: std::collections::BTreeMap<String, f64> = split
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
            .collect();
        parts.push(format!("split {}", split_text(&split)));
    }
    if let Some(sh) = m.get("shadow") {
        let on = sh["enabled"].as_bool() == Some(true);
        let pct = sh["percent"]
            .as_f64()
            .map(|p| format!(" {}", crate::app::pct(p)))
            .unwrap_or_default();
        parts.push(format!("shadow {}{pct}", if on { "on" } else { "off" }));
    }
    if let Some(ign) = m.get("ignore_fields_add").and_then(|v| v.as_array()) {
        let list: Vec<&str> = ign.iter().filter_map(|v| v.as_str()).collect();
        parts.push(format!("ignore {}", list.join(", ")));
    }
    if parts.is_empty() {
        "back to the file".into()
    } else {
        parts.join(", ")
    }
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let line = match &app.mode {
        Mode::Typing(Input::Filter, text) => {
            Line::from(format!("filter (route, path or field): {text}_"))
        }
        Mode::Typing(Input::Percent { route, to }, text) => Line::from(format!(
            "percent of {route} to {to} (Enter, then confirm; Esc cancels): {text}_"
        )),
        _ => match (&app.message, &app.connection) {
            (Some((m, true)), _) => {
                Line::from(Span::styled(format!("error: {m}"), theme.fg(Color::Red)))
            }
            (Some((m, false)), _) => Line::from(m.clone()),
            (None, Connection::Disconnected(why)) => Line::from(Span::styled(
                format!("cannot reach the proxy: {why}"),
                theme.fg(Color::Red),
            )),
            (None, Connection::Refused(why)) => Line::from(Span::styled(
                format!("the admin API refused: {why} (check STRANGLER_ADMIN_TOKEN)"),
                theme.fg(Color::Red),
            )),
            (None, _) => Line::from(hints(app)),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn hints(app: &App) -> &'static str {
    match (app.view, app.pane) {
        (View::Routes, _) => {
            "+/- shift  = %  r rollback  R all  x reset  s shadow  Enter diffs  ? keys  q"
        }
        (View::Mismatches, Pane::Fields) => {
            "Enter examples  i mark as noise  / filter  Esc clear  ? keys  q quit"
        }
        (View::Mismatches, Pane::Examples) => "Enter open  Esc back  ? keys  q quit",
        (View::Mismatches, Pane::Detail) => {
            "n/N next/previous difference  up/down scroll  Esc back  q quit"
        }
        (View::History, _) => "v revert to the selected version  ? keys  q quit",
    }
}

fn help() -> Vec<Line<'static>> {
    [
        "1 2 3, Tab    routes, mismatches, history (Shift-Tab: back)",
        "up/down j/k   move",
        "/             filter (route, path or field)",
        "Routes:       + / -  shift the new upstream by 5 points",
        "              = or % type a percent",
        "              r  roll the route back   R  roll back every route",
        "              x  reset to the file     s  shadow on/off",
        "              Enter  the route's mismatches",
        "Mismatches:   Enter  examples, then one side by side",
        "              i  mark the field as noise (an ignore rule)",
        "              n / N  next / previous difference",
        "History:      v or Enter  revert to that version",
        "Every action asks first: y or Enter does it.",
        "q or Ctrl-C   quit        ?  this help (any key closes)",
    ]
    .into_iter()
    .map(Line::from)
    .collect()
}

fn popup(frame: &mut Frame, title: &str, text: Vec<Line>, theme: &Theme) {
    let area = frame.area();
    let width = area.width.saturating_sub(4).min(76);
    let inner = usize::from(width.saturating_sub(2)).max(1);
    // Room for every wrapped line, so the confirm line is never cut off.
    let wrapped: usize = text.iter().map(|l| l.width().max(1).div_ceil(inner)).sum();
    let height = (wrapped as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width.saturating_sub(width)) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" {title} "))
                .style(theme.bold()),
        ),
        rect,
    );
}
