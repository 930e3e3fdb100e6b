//! strangler-tui: `strangler tui`, the terminal UI for reviewing shadow
//! mismatches and steering routes. It talks to a running proxy through the
//! admin API only (the same `--admin` URL and token as the CLI), so it works
//! against a remote proxy too.
//!
//! [`app::App`] is plain state changed by keys and by admin API answers;
//! [`ui::draw`] renders it on any ratatui backend; [`run`] wires the two to
//! the real terminal, a poller thread and the admin API. A guard restores the
//! terminal on exit and on error, and ratatui's panic hook on panic.

pub mod api;
pub mod app;
pub mod detail;
pub mod ui;
pub mod view;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::api::{AdminApi, ApiError, HttpApi};
use crate::app::{App, Effect, Key, Update};

/// How `strangler tui` was started.
#[derive(Debug, Clone)]
pub struct Options {
    pub admin: String,
    pub token: Option<String>,
    pub actor: String,
    pub refresh: Duration,
    /// False with `NO_COLOR`.
    pub colour: bool,
}

/// Restores the terminal when dropped: on return and on error.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the TUI until the operator quits.
pub fn run(opts: Options) -> Result<(), String> {
    let api = HttpApi::new(&opts.admin, opts.token.clone(), opts.actor.clone())
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<Update>();
    let (poke, poked) = mpsc::channel::<()>();
    {
        let poller = HttpApi::new(&opts.admin, opts.token.clone(), opts.actor.clone())
            .map_err(|e| e.to_string())?;
        let tx = tx.clone();
        let every = opts.refresh;
        std::thread::Builder::new()
            .name("strangler-tui-poll".into())
            .spawn(move || poll(&poller, &tx, &poked, every))
            .map_err(|e| format!("cannot start the poller: {e}"))?;
    }
    let mut terminal =
        ratatui::try_init().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let _guard = TerminalGuard;
    let mut app = App::new(&opts.admin, opts.colour);
    let mut dirty = true;
    let api = std::sync::Arc::new(api);
    while !app.quit {
        if dirty {
            terminal
                .draw(|f| ui::draw(f, &app))
                .map_err(|e| format!("cannot draw: {e}"))?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(50)).map_err(|e| e.to_string())? {
            match event::read().map_err(|e| e.to_string())? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    if let Some(key) = convert(k.code, k.modifiers) {
                        if let Some(effect) = app.handle_key(key) {
                            perform(effect, api.clone(), tx.clone(), poke.clone());
                        }
                        dirty = true;
                    }
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        while let Ok(update) = rx.try_recv() {
            dirty |= app.apply(update);
        }
    }
    Ok(())
}

/// Carries out an effect off the UI thread; the answer comes back as an
/// update, and the poller is asked for fresh data.
fn perform(effect: Effect, api: std::sync::Arc<HttpApi>, tx: Sender<Update>, poke: Sender<()>) {
    std::thread::spawn(move || {
        let update = match effect {
            Effect::Act(action) => Update::Done(api.act(&action)),
            Effect::LoadDiff(id) => Update::Diff(api.diff(&id)),
            Effect::LoadExamples(ids) => Update::Examples(
                ids.into_iter()
                    .map(|id| {
                        let r = api.diff(&id);
                        (id, r)
                    })
                    .collect(),
            ),
        };
        let _ = tx.send(update);
        let _ = poke.send(());
    });
}

/// Polls the admin API every `every` (or when poked) until the UI is gone.
fn poll(api: &dyn AdminApi, tx: &Sender<Update>, poked: &Receiver<()>, every: Duration) {
    loop {
        let update = match api.status() {
            Ok(status) => Update::Data {
                status,
                summary: optional(api.summary()),
                history: optional(api.history()),
            },
            Err(ApiError::Unreachable(why)) => Update::Disconnected(why),
            Err(ApiError::Refused(why)) => Update::Refused(why),
        };
        if tx.send(update).is_err() {
            return;
        }
        match poked.recv_timeout(every) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A view the proxy may not offer (no diff store): shown as empty.
fn optional<T>(r: Result<T, ApiError>) -> Option<T> {
    r.ok()
}

fn convert(code: KeyCode, mods: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char(c) if mods.contains(KeyModifiers::CONTROL) => Key::Ctrl(c),
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}
