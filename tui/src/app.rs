//! The TUI's state: plain data, changed only by `handle_key` (what the
//! operator pressed) and `apply` (what the admin API said). Neither does
//! I/O: `handle_key` returns the [`Effect`] to carry out (an admin action
//! or a record to load), which the runner performs and feeds back through
//! `apply`. So every key sequence is unit-testable without a terminal.

use crate::api::{Action, ApiError};
use crate::view::{DiffRecord, History, RouteShift, RouteView, Status, Summary};

/// A key, as far as the TUI cares (decoupled from crossterm for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Ctrl(char),
    Enter,
    Esc,
    Up,
    Down,
    PageUp,
    PageDown,
    Tab,
    BackTab,
    Backspace,
}

/// The three views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Routes,
    Mismatches,
    History,
}

/// Where the mismatches view is: the field list, a field's examples, or
/// one example side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Fields,
    Examples,
    Detail,
}

/// What the operator is typing.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A percent for the route's new upstream.
    Percent { route: String, to: String },
    /// The mismatches filter.
    Filter,
}

/// What keys do right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// An action waiting for y/n, with what it will do.
    Confirm(Action),
    Typing(Input, String),
    Help,
}

/// The connection to the proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    Connecting,
    Connected,
    /// Gone: the last data stays on screen; the poller keeps trying.
    Disconnected(String),
    /// The admin API answered but refused (a wrong token, say).
    Refused(String),
}

/// What the runner should do for a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Act(Action),
    LoadDiff(String),
    /// The records of a field's examples, for the examples list.
    LoadExamples(Vec<String>),
}

/// What arrives from the poller or from an effect.
#[derive(Debug, Clone)]
pub enum Update {
    Data {
        status: Status,
        summary: Option<Summary>,
        history: Option<History>,
    },
    Disconnected(String),
    Refused(String),
    Done(Result<String, ApiError>),
    Diff(Result<DiffRecord, ApiError>),
    /// Example records by id; an error means gone (retention) or unreadable.
    Examples(Vec<(String, Result<DiffRecord, ApiError>)>),
}

/// One selectable line of the mismatches view.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRow {
    pub route: String,
    /// Index into that route's summary fields.
    pub field: usize,
}

/// Everything the TUI shows.
#[derive(Debug, Clone)]
pub struct App {
    pub admin: String,
    pub view: View,
    pub pane: Pane,
    pub mode: Mode,
    pub connection: Connection,
    pub status: Option<Status>,
    pub summary: Option<Summary>,
    pub history: Option<History>,
    pub route_sel: usize,
    pub field_sel: usize,
    pub example_sel: usize,
    pub history_sel: usize,
    pub filter: String,
    pub detail: Option<DiffRecord>,
    /// Example records loaded so far, by id (None: could not be loaded).
    pub examples: std::collections::BTreeMap<String, Option<DiffRecord>>,
    /// First line shown of the detail view.
    pub scroll: usize,
    /// The last result or error, for the status line (until the next key).
    pub message: Option<(String, bool)>,
    /// What the pending confirmation will do, in words.
    pub confirm_text: String,
    /// What is selected, by identity: lists reorder as data refreshes.
    route_key: Option<String>,
    field_key: Option<(String, String, String)>,
    example_key: Option<String>,
    version_key: Option<u64>,
    pub colour: bool,
    pub quit: bool,
}

/// Points a `+` or `-` moves a split.
pub const STEP: f64 = 5.0;

impl App {
    pub fn new(admin: &str, colour: bool) -> Self {
        App {
            admin: admin.to_string(),
            view: View::Routes,
            pane: Pane::Fields,
            mode: Mode::Normal,
            connection: Connection::Connecting,
            status: None,
            summary: None,
            history: None,
            route_sel: 0,
            field_sel: 0,
            example_sel: 0,
            history_sel: 0,
            filter: String::new(),
            detail: None,
            examples: std::collections::BTreeMap::new(),
            scroll: 0,
            message: None,
            confirm_text: String::new(),
            route_key: None,
            field_key: None,
            example_key: None,
            version_key: None,
            colour,
            quit: false,
        }
    }

    /// Takes in what the admin API said; returns whether anything changed
    /// (the runner redraws only then).
    pub fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Data {
                status,
                summary,
                history,
            } => {
                let changed = self.connection != Connection::Connected
                    || self.status.as_ref() != Some(&status)
                    || (summary.is_some() && summary != self.summary)
                    || (history.is_some() && history != self.history);
                if self.connection != Connection::Connected
                    && self.message.as_ref().is_some_and(|m| m.1)
                {
                    // Back: an error about reaching the proxy is stale.
                    self.message = None;
                }
                self.connection = Connection::Connected;
                self.status = Some(status);
                if summary.is_some() {
                    self.summary = summary;
                }
                if history.is_some() {
                    self.history = history;
                }
                self.restore();
                changed
            }
            Update::Refused(why) => {
                let next = Connection::Refused(why);
                let changed = self.connection != next;
                self.connection = next;
                changed
            }
            Update::Disconnected(why) => {
                let next = Connection::Disconnected(why);
                let changed = self.connection != next;
                self.connection = next;
                changed
            }
            Update::Done(Ok(line)) => {
                self.message = Some((line, false));
                true
            }
            Update::Done(Err(e)) | Update::Diff(Err(e)) => {
                self.message = Some((e.to_string(), true));
                true
            }
            Update::Examples(loaded) => {
                for (id, r) in loaded {
                    self.examples.insert(id, r.ok());
                }
                true
            }
            Update::Diff(Ok(record)) => {
                self.detail = Some(record);
                self.scroll = 0;
                true
            }
        }
    }

    /// Handles a key; returns what the runner should do, if anything.
    pub fn handle_key(&mut self, key: Key) -> Option<Effect> {
        if key == Key::Ctrl('c') {
            self.quit = true;
            return None;
        }
        let effect = self.key(key);
        self.remember();
        effect
    }

    fn key(&mut self, key: Key) -> Option<Effect> {
        if self.mode == Mode::Normal {
            // A result stays on screen until the next key.
            self.message = None;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Help => None,
            Mode::Confirm(action) => match key {
                Key::Char('y') | Key::Char('Y') | Key::Enter => {
                    self.message = Some((format!("{}...", action.describe()), false));
                    Some(Effect::Act(action))
                }
                _ => {
                    self.message = Some(("cancelled: nothing changed".into(), false));
                    None
                }
            },
            Mode::Typing(input, mut text) => self.typing(input, &mut text, key),
            Mode::Normal => self.normal(key),
        }
    }

    fn typing(&mut self, input: Input, text: &mut String, key: Key) -> Option<Effect> {
        match key {
            Key::Esc => {
                if input == Input::Filter {
                    self.filter.clear();
                }
                return None;
            }
            Key::Enter => {
                match input {
                    Input::Filter => {
                        self.filter = text.clone();
                        self.field_sel = 0;
                    }
                    Input::Percent { route, to } => {
                        let typed = text.trim().trim_end_matches('%');
                        let plain = !typed.is_empty()
                            && typed.bytes().all(|b| b.is_ascii_digit() || b == b'.');
                        match typed.parse::<f64>() {
                            Ok(p) if plain && (0.0..=100.0).contains(&p) => {
                                let default = self.default_upstream();
                                let view = self
                                    .visible_routes()
                                    .iter()
                                    .find(|r| r.name == route)
                                    .map(|r| (*r).clone());
                                match view {
                                    Some(v) => self.confirm_shift(&v, &to, p, &default),
                                    None => {
                                        self.message =
                                            Some((format!("route {route} is gone"), true))
                                    }
                                }
                            }
                            _ => {
                                self.message = Some((
                                    format!("\"{text}\" is not a percent between 0 and 100"),
                                    true,
                                ))
                            }
                        }
                    }
                }
                return None;
            }
            Key::Backspace => {
                text.pop();
            }
            Key::Char(c) => text.push(c),
            _ => {}
        }
        if input == Input::Filter {
            self.filter = text.clone();
            self.field_sel = 0;
        }
        self.mode = Mode::Typing(input, std::mem::take(text));
        None
    }

    fn normal(&mut self, key: Key) -> Option<Effect> {
        match key {
            Key::Char('q') => {
                self.quit = true;
                return None;
            }
            Key::Char('?') => {
                self.mode = Mode::Help;
                return None;
            }
            Key::Char('1') => self.view = View::Routes,
            Key::Char('2') => self.view = View::Mismatches,
            Key::Char('3') => self.view = View::History,
            Key::Tab => {
                self.view = match self.view {
                    View::Routes => View::Mismatches,
                    View::Mismatches => View::History,
                    View::History => View::Routes,
                }
            }
            Key::BackTab => {
                self.view = match self.view {
                    View::Routes => View::History,
                    View::Mismatches => View::Routes,
                    View::History => View::Mismatches,
                }
            }
            Key::Char('R') => {
                let names: Vec<String> = self
                    .visible_routes()
                    .iter()
                    .map(|r| r.name.clone())
                    .collect();
                let default = self.default_upstream();
                self.ask(
                    Action::RollbackAll,
                    format!(
                        "Roll back EVERY route ({}) to the default upstream: {default} 100%, at once",
                        names.join(", ")
                    ),
                );
                return None;
            }
            Key::Char('/') => {
                self.mode = Mode::Typing(Input::Filter, self.filter.clone());
                return None;
            }
            _ => {
                return match self.view {
                    View::Routes => self.routes_key(key),
                    View::Mismatches => self.mismatches_key(key),
                    View::History => self.history_key(key),
                };
            }
        }
        None
    }

    /// The selected route.
    pub fn route(&self) -> Option<&RouteView> {
        self.visible_routes().get(self.route_sel).copied()
    }

    /// Every route (the filter is the mismatches view's).
    pub fn visible_routes(&self) -> Vec<&RouteView> {
        self.status
            .as_ref()
            .map(|s| s.routes.iter().collect())
            .unwrap_or_default()
    }

    fn default_upstream(&self) -> String {
        self.status
            .as_ref()
            .map(|s| s.default_upstream.clone())
            .unwrap_or_default()
    }

    fn ask(&mut self, action: Action, text: String) {
        self.confirm_text = text;
        self.mode = Mode::Confirm(action);
    }

    /// Notes what is selected, so a refresh that reorders keeps it.
    fn remember(&mut self) {
        self.route_key = self.route().map(|r| r.name.clone());
        self.field_key = self
            .field()
            .map(|(r, f)| (r.to_string(), f.kind.clone(), f.path.clone()));
        self.example_key = self
            .field()
            .and_then(|(_, f)| f.examples.iter().rev().nth(self.example_sel).cloned());
        self.version_key = self
            .history
            .as_ref()
            .and_then(|h| h.versions.get(self.history_sel))
            .map(|v| v.version);
    }

    /// Finds what was selected in the new data.
    fn restore(&mut self) {
        if let Some(k) = &self.route_key
            && let Some(i) = self.visible_routes().iter().position(|r| &r.name == k)
        {
            self.route_sel = i;
        }
        if let Some((route, kind, path)) = self.field_key.clone() {
            let summary = self.summary.as_ref();
            let found = self.field_rows().iter().position(|row| {
                summary
                    .and_then(|s| s.routes.iter().find(|r| r.route == row.route))
                    .and_then(|r| r.fields.get(row.field))
                    .is_some_and(|f| row.route == route && f.kind == kind && f.path == path)
            });
            match found {
                Some(i) => self.field_sel = i,
                // The field is gone (marked as noise, say): back to the list.
                None if self.pane == Pane::Examples => self.pane = Pane::Fields,
                None => {}
            }
        }
        if let Some(id) = self.example_key.clone()
            && let Some(i) = self
                .field()
                .and_then(|(_, f)| f.examples.iter().rev().position(|e| *e == id))
        {
            self.example_sel = i;
        }
        if let Some(v) = self.version_key
            && let Some(i) = self
                .history
                .as_ref()
                .and_then(|h| h.versions.iter().position(|x| x.version == v))
        {
            self.history_sel = i;
        }
        self.clamp();
    }

    fn routes_key(&mut self, key: Key) -> Option<Effect> {
        let n = self.visible_routes().len();
        let needs_route = matches!(
            key,
            Key::Enter | Key::Char('+' | '-' | '=' | '%' | 'r' | 'x' | 's')
        );
        if needs_route && self.route().is_none() {
            self.message = Some(("no route selected".into(), true));
            return None;
        }
        let default = self.default_upstream();
        match key {
            Key::Up | Key::Char('k') => self.route_sel = self.route_sel.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                self.route_sel = (self.route_sel + 1).min(n.saturating_sub(1))
            }
            Key::Enter => {
                let r = self.route()?.clone();
                if r.shadow.is_none() {
                    self.message = Some((
                        format!("route {} has no shadow, so no mismatches", r.name),
                        true,
                    ));
                    return None;
                }
                self.filter = r.name.clone();
                self.view = View::Mismatches;
                self.pane = Pane::Fields;
                self.field_sel = 0;
            }
            Key::Char(c @ ('+' | '-' | '=' | '%')) => {
                let route = self.route()?.clone();
                let Some(to) = route.new_upstream(&default) else {
                    self.message = Some((
                        format!(
                            "route {} has no single upstream besides {default}: use strangler shift --to",
                            route.name
                        ),
                        true,
                    ));
                    return None;
                };
                if c == '=' || c == '%' {
                    self.mode = Mode::Typing(
                        Input::Percent {
                            route: route.name.clone(),
                            to,
                        },
                        String::new(),
                    );
                    return None;
                }
                let now = route.split.get(&to).copied().unwrap_or(0.0);
                let next = if c == '+' { now + STEP } else { now - STEP }.clamp(0.0, 100.0);
                if next == now {
                    self.message = Some((format!("{to} already gets {}", pct(now)), false));
                    return None;
                }
                self.confirm_shift(&route, &to, next, &default);
            }
            Key::Char('r') => {
                let r = self.route()?.clone();
                self.ask(
                    Action::Rollback {
                        route: r.name.clone(),
                    },
                    format!(
                        "Roll back route {}: {default} 100% (now {}), at once, sticky users included",
                        r.name,
                        split_text(&r.split)
                    ),
                );
            }
            Key::Char('x') => {
                let r = self.route()?.clone();
                self.ask(
                    Action::Reset {
                        route: r.name.clone(),
                    },
                    format!(
                        "Reset route {} to the file: split {} (now {}); shadow and ignore rules as in the file",
                        r.name,
                        split_text(&r.file_split),
                        split_text(&r.split)
                    ),
                );
            }
            Key::Char('s') => {
                let r = self.route()?.clone();
                match &r.shadow {
                    Some(sh) => self.ask(
                        Action::Shadow {
                            route: r.name.clone(),
                            enabled: !sh.enabled,
                        },
                        format!(
                            "Turn the shadow of route {} {} (now {}, {} of requests copied to {})",
                            r.name,
                            if sh.enabled { "OFF" } else { "ON" },
                            if sh.enabled { "on" } else { "off" },
                            pct(sh.percent),
                            sh.upstream
                        ),
                    ),
                    None => {
                        self.message = Some((
                            format!("route {} has no shadow in the config", r.name),
                            true,
                        ))
                    }
                }
            }
            _ => {}
        }
        None
    }

    fn confirm_shift(&mut self, route: &RouteView, to: &str, percent: f64, default: &str) {
        let now = route.split.get(to).copied().unwrap_or(0.0);
        let now_default = route.split.get(default).copied().unwrap_or(0.0);
        self.ask(
            Action::Shift {
                route: route.name.clone(),
                to: to.to_string(),
                percent,
            },
            format!(
                "Shift route {}: {to} {} -> {}, {default} {} -> {}",
                route.name,
                pct(now),
                pct(percent),
                pct(now_default),
                pct(100.0 - percent)
            ),
        );
    }

    /// The mismatches view's field rows, grouped by route, filtered.
    pub fn field_rows(&self) -> Vec<FieldRow> {
        let Some(summary) = &self.summary else {
            return Vec::new();
        };
        let f = self.filter.as_str();
        let mut rows = Vec::new();
        for r in &summary.routes {
            for (i, field) in r.fields.iter().enumerate() {
                if f.is_empty()
                    || r.route.contains(f)
                    || field.path.contains(f)
                    || field.kind.contains(f)
                {
                    rows.push(FieldRow {
                        route: r.route.clone(),
                        field: i,
                    });
                }
            }
        }
        rows
    }

    /// The selected field row's data.
    pub fn field(&self) -> Option<(&str, &crate::view::FieldView)> {
        let row = self.field_rows().get(self.field_sel)?.clone();
        let summary = self.summary.as_ref()?;
        let r = summary.routes.iter().find(|r| r.route == row.route)?;
        Some((r.route.as_str(), r.fields.get(row.field)?))
    }

    fn mismatches_key(&mut self, key: Key) -> Option<Effect> {
        match self.pane {
            Pane::Fields => {
                let n = self.field_rows().len();
                match key {
                    Key::Up | Key::Char('k') => self.field_sel = self.field_sel.saturating_sub(1),
                    Key::Down | Key::Char('j') => {
                        self.field_sel = (self.field_sel + 1).min(n.saturating_sub(1))
                    }
                    Key::Enter if self.field().is_some_and(|(_, f)| !f.examples.is_empty()) => {
                        self.pane = Pane::Examples;
                        self.example_sel = 0;
                        let missing: Vec<String> = self
                            .field()
                            .map(|(_, f)| f.examples.clone())
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|id| !self.examples.contains_key(id))
                            .collect();
                        if !missing.is_empty() {
                            return Some(Effect::LoadExamples(missing));
                        }
                    }
                    Key::Esc => self.filter.clear(),
                    Key::Char('i') => {
                        if let Some((route, f)) = self.field() {
                            if f.kind == "body" && f.path.starts_with('/') {
                                let text = format!(
                                    "Mark {} on route {route} as noise: add the ignore rule {} (a new version; revert undoes it)",
                                    f.path, f.path
                                );
                                let action = Action::MarkNoise {
                                    route: route.to_string(),
                                    field: f.path.clone(),
                                };
                                self.ask(action, text);
                            } else {
                                self.message = Some((
                                    format!(
                                        "only body fields can be marked as noise ({} {} cannot; use compare.ignore_headers)",
                                        f.kind, f.path
                                    ),
                                    true,
                                ));
                            }
                        }
                    }
                    _ => {}
                }
                None
            }
            Pane::Examples => {
                let examples = self
                    .field()
                    .map(|(_, f)| f.examples.clone())
                    .unwrap_or_default();
                match key {
                    Key::Up | Key::Char('k') => {
                        self.example_sel = self.example_sel.saturating_sub(1)
                    }
                    Key::Down | Key::Char('j') => {
                        self.example_sel =
                            (self.example_sel + 1).min(examples.len().saturating_sub(1))
                    }
                    Key::Esc | Key::Backspace => self.pane = Pane::Fields,
                    Key::Enter => {
                        // Newest first on screen; stored newest last.
                        let id = examples.iter().rev().nth(self.example_sel)?.clone();
                        self.pane = Pane::Detail;
                        self.detail = None;
                        self.scroll = 0;
                        return Some(Effect::LoadDiff(id));
                    }
                    _ => {}
                }
                None
            }
            Pane::Detail => {
                let marked = self.detail_marks();
                match key {
                    Key::Up | Key::Char('k') => self.scroll = self.scroll.saturating_sub(1),
                    Key::Down | Key::Char('j') => self.scroll += 1,
                    Key::PageUp => self.scroll = self.scroll.saturating_sub(10),
                    Key::PageDown => self.scroll += 10,
                    Key::Char('n') => {
                        if let Some(&next) = marked.iter().find(|&&m| m > self.scroll) {
                            self.scroll = next;
                        }
                    }
                    Key::Char('N') => {
                        if let Some(&prev) = marked.iter().rev().find(|&&m| m < self.scroll) {
                            self.scroll = prev;
                        }
                    }
                    Key::Esc | Key::Backspace => self.pane = Pane::Examples,
                    _ => {}
                }
                None
            }
        }
    }

    /// Rows of the detail view that show a difference.
    pub fn detail_marks(&self) -> Vec<usize> {
        match &self.detail {
            Some(d) => crate::detail::rows(&d.0)
                .iter()
                .enumerate()
                .filter(|(_, r)| r.marked)
                .map(|(i, _)| i)
                .collect(),
            None => Vec::new(),
        }
    }

    fn history_key(&mut self, key: Key) -> Option<Effect> {
        let versions = self.history.as_ref().map_or(0, |h| h.versions.len());
        match key {
            Key::Up | Key::Char('k') => self.history_sel = self.history_sel.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                self.history_sel = (self.history_sel + 1).min(versions.saturating_sub(1))
            }
            Key::Char('v') | Key::Enter => {
                let current = self.status.as_ref().map(|s| s.version);
                let chosen = self
                    .history
                    .as_ref()
                    .and_then(|h| h.versions.get(self.history_sel))
                    .cloned();
                match chosen {
                    Some(v) if Some(v.version) == current => {
                        self.message = Some((
                            format!("version {} is the current state: nothing to revert", v.version),
                            false,
                        ))
                    }
                    Some(v) => self.ask(
                        Action::Revert { version: v.version },
                        format!(
                            "Revert to version {} ({}, {}: {}): the runtime layer as it was right after it, as a new version",
                            v.version, v.time, v.actor, v.reason
                        ),
                    ),
                    None => self.message = Some(("no version selected".into(), true)),
                }
            }
            _ => {}
        }
        None
    }

    /// Keeps selections inside what is there.
    fn clamp(&mut self) {
        let routes = self.visible_routes().len();
        self.route_sel = self.route_sel.min(routes.saturating_sub(1));
        let fields = self.field_rows().len();
        self.field_sel = self.field_sel.min(fields.saturating_sub(1));
        let versions = self.history.as_ref().map_or(0, |h| h.versions.len());
        self.history_sel = self.history_sel.min(versions.saturating_sub(1));
    }
}

/// `10%`, `12.5%`.
pub fn pct(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}%")
    } else {
        format!("{v}%")
    }
}

/// `orders 25%, monolith 75%`, largest first.
pub fn split_text(split: &std::collections::BTreeMap<String, f64>) -> String {
    let mut parts: Vec<(&String, &f64)> = split.iter().collect();
    parts.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    parts
        .iter()
        .map(|(k, v)| format!("{k} {}", pct(**v)))
        .collect::<Vec<_>>()
        .join(", ")
}
