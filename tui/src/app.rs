//! The TUI's state: plain data, changed only by `handle_key` (what the
//! operator pressed) and `apply` (what the admin API said). Neither does
//! I/O: `handle_key` returns the [`Effect`] to carry out (an admin action
//! or a record to load), which the runner performs and feeds back through
//! `apply`. So every key sequence is unit-testable without a terminal.

use crate::api::{Action, ApiError};
use crate::view::{DiffRecord, History, RouteView, Status, Summary};

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
}

/// What the runner should do for a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Act(Action),
    LoadDiff(String),
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
    Done(Result<String, ApiError>),
    Diff(Result<DiffRecord, ApiError>),
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
    /// First line shown of the detail view.
    pub scroll: usize,
    /// The last result or error, for the status line.
    pub message: Option<(String, bool)>,
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
            scroll: 0,
            message: None,
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
                self.connection = Connection::Connected;
                self.status = Some(status);
                if summary.is_some() {
                    self.summary = summary;
                }
                if history.is_some() {
                    self.history = history;
                }
                self.clamp();
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
                        match text.trim().trim_end_matches('%').parse::<f64>() {
                            Ok(p) if (0.0..=100.0).contains(&p) => {
                                self.mode = Mode::Confirm(Action::Shift {
                                    route,
                                    to,
                                    percent: p,
                                });
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
            Key::Char('R') => {
                self.mode = Mode::Confirm(Action::RollbackAll);
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

    /// Routes the filter lets through.
    pub fn visible_routes(&self) -> Vec<&RouteView> {
        self.status
            .as_ref()
            .map(|s| {
                s.routes
                    .iter()
                    .filter(|r| self.filter.is_empty() || r.name.contains(&self.filter))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn routes_key(&mut self, key: Key) -> Option<Effect> {
        let n = self.visible_routes().len();
        match key {
            Key::Up | Key::Char('k') => self.route_sel = self.route_sel.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                self.route_sel = (self.route_sel + 1).min(n.saturating_sub(1))
            }
            Key::Enter => {
                if let Some(r) = self.route() {
                    self.filter = r.name.clone();
                    self.view = View::Mismatches;
                    self.pane = Pane::Fields;
                    self.field_sel = 0;
                }
            }
            Key::Char(c @ ('+' | '-' | '=' | '%')) => {
                let route = self.route().cloned()?;
                let default = self
                    .status
                    .as_ref()
                    .map(|s| s.default_upstream.clone())
                    .unwrap_or_default();
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
                self.mode = Mode::Confirm(Action::Shift {
                    route: route.name,
                    to,
                    percent: next,
                });
            }
            Key::Char('r') => {
                if let Some(r) = self.route() {
                    self.mode = Mode::Confirm(Action::Rollback {
                        route: r.name.clone(),
                    });
                }
            }
            Key::Char('x') => {
                if let Some(r) = self.route() {
                    self.mode = Mode::Confirm(Action::Reset {
                        route: r.name.clone(),
                    });
                }
            }
            Key::Char('s') => {
                if let Some(r) = self.route() {
                    match &r.shadow {
                        Some(s) => {
                            self.mode = Mode::Confirm(Action::Shadow {
                                route: r.name.clone(),
                                enabled: !s.enabled,
                            })
                        }
                        None => {
                            self.message = Some((
                                format!("route {} has no shadow in the config", r.name),
                                true,
                            ))
                        }
                    }
                }
            }
            _ => {}
        }
        None
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
                    }
                    Key::Esc => self.filter.clear(),
                    Key::Char('i') => {
                        if let Some((route, f)) = self.field() {
                            if f.kind == "body" && f.path.starts_with('/') {
                                self.mode = Mode::Confirm(Action::MarkNoise {
                                    route: route.to_string(),
                                    field: f.path.clone(),
                                });
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
                if let Some(v) = self
                    .history
                    .as_ref()
                    .and_then(|h| h.versions.get(self.history_sel))
                {
                    self.mode = Mode::Confirm(Action::Revert { version: v.version });
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
