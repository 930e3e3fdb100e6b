//! Every view drawn on ratatui's `TestBackend`, at 80x24 and 160x48,
//! compared with insta snapshots (without colour: what NO_COLOR users see,
//! and what the text of the screen is).

mod common;
use common as fixtures;

use insta::assert_snapshot;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use strangler_tui::app::{App, Effect, Key, Update};
use strangler_tui::view::DiffRecord;

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| strangler_tui::ui::draw(f, app)).unwrap();
    format!("{}", t.backend())
}

fn keys(app: &mut App, keys: &[Key]) {
    for &k in keys {
        match app.handle_key(k) {
            Some(Effect::LoadDiff(_)) => {
                app.apply(Update::Diff(Ok(DiffRecord(fixtures::record()))));
            }
            Some(Effect::LoadExamples(ids)) => {
                let loaded = ids
                    .into_iter()
                    .map(|id| (id, Ok(DiffRecord(fixtures::record()))))
                    .collect();
                app.apply(Update::Examples(loaded));
            }
            _ => {}
        }
    }
}

#[test]
fn routes_view() {
    let app = fixtures::loaded();
    assert_snapshot!("routes_80x24", screen(&app, 80, 24));
    assert_snapshot!("routes_160x48", screen(&app, 160, 48));
}

#[test]
fn mismatches_view() {
    let mut app = fixtures::loaded();
    keys(&mut app, &[Key::Char('2')]);
    assert_snapshot!("mismatches_80x24", screen(&app, 80, 24));
    assert_snapshot!("mismatches_160x48", screen(&app, 160, 48));
}

#[test]
fn detail_view() {
    let mut app = fixtures::loaded();
    keys(&mut app, &[Key::Char('2'), Key::Enter, Key::Enter]);
    assert_snapshot!("detail_80x24", screen(&app, 80, 24));
    assert_snapshot!("detail_160x48", screen(&app, 160, 48));
}

#[test]
fn examples_view() {
    let mut app = fixtures::loaded();
    keys(&mut app, &[Key::Char('2'), Key::Enter]);
    assert_snapshot!("examples_80x24", screen(&app, 80, 24));
    assert_snapshot!("examples_160x48", screen(&app, 160, 48));
}

#[test]
fn history_view() {
    let mut app = fixtures::loaded();
    keys(&mut app, &[Key::Char('3')]);
    assert_snapshot!("history_80x24", screen(&app, 80, 24));
    assert_snapshot!("history_160x48", screen(&app, 160, 48));
}

#[test]
fn confirmation_help_and_disconnected() {
    let mut app = fixtures::loaded();
    keys(&mut app, &[Key::Char('r')]);
    assert_snapshot!("confirm_80x24", screen(&app, 80, 24));
    let mut app = fixtures::loaded();
    keys(&mut app, &[Key::Char('?')]);
    assert_snapshot!("help_80x24", screen(&app, 80, 24));
    let mut app = fixtures::loaded();
    app.apply(Update::Disconnected("connection refused".into()));
    assert_snapshot!("disconnected_80x24", screen(&app, 80, 24));
}

#[test]
fn a_ramping_route_shows_its_step_and_gates() {
    let mut status = fixtures::status();
    status.routes[0].ramp = Some(strangler_tui::view::RampView {
        state: "running".into(),
        to: "orders".into(),
        step: 2,
        steps: 5,
        share: Some(5.0),
        note: "errors 0.00% (allowed 1.00%)".into(),
    });
    let mut app = fixtures::loaded();
    app.apply(Update::Data {
        status,
        summary: None,
        history: None,
    });
    let text = screen(&app, 100, 30);
    assert!(text.contains("ramping"), "{text}");
    assert!(
        text.contains("ramp running to orders, step 2/5 (5%)"),
        "{text}"
    );
    assert!(text.contains("; errors 0.00% (allowed 1.00%)"), "{text}");
}
