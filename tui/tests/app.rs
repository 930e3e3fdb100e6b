//! `App` key handling without a terminal: key sequences lead to the right
//! state and the right admin calls, recorded by a fake admin API.

use std::cell::RefCell;

use strangler_tui::api::{Action, AdminApi, ApiError};
use strangler_tui::app::{App, Connection, Effect, Key, Mode, Pane, Update, View};
use strangler_tui::view::{DiffRecord, History, Status, Summary};

mod common;
use common::{history, loaded, record, status, summary};

/// Records every call; answers from canned data.
#[derive(Default)]
struct Fake {
    calls: RefCell<Vec<Action>>,
    loads: RefCell<Vec<String>>,
}

impl AdminApi for Fake {
    fn status(&self) -> Result<Status, ApiError> {
        Ok(status())
    }
    fn summary(&self) -> Result<Summary, ApiError> {
        Ok(summary())
    }
    fn history(&self) -> Result<History, ApiError> {
        Ok(history())
    }
    fn diff(&self, id: &str) -> Result<DiffRecord, ApiError> {
        self.loads.borrow_mut().push(id.to_string());
        Ok(DiffRecord(record()))
    }
    fn act(&self, action: &Action) -> Result<String, ApiError> {
        self.calls.borrow_mut().push(action.clone());
        Ok("version 9: done".into())
    }
}

/// Presses keys, carrying out effects on the fake like the runner does.
fn press(app: &mut App, fake: &Fake, keys: &[Key]) {
    for &k in keys {
        match app.handle_key(k) {
            Some(Effect::Act(a)) => {
                let r = fake.act(&a);
                app.apply(Update::Done(r));
            }
            Some(Effect::LoadDiff(id)) => {
                let r = fake.diff(&id);
                app.apply(Update::Diff(r));
            }
            Some(Effect::LoadExamples(ids)) => {
                let loaded = ids.into_iter().map(|id| {
                    let r = fake.diff(&id);
                    (id, r)
                });
                app.apply(Update::Examples(loaded.collect()));
            }
            None => {}
        }
    }
}

#[test]
fn plus_shifts_five_points_after_confirmation() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(&mut app, &fake, &[Key::Char('+')]);
    assert_eq!(
        app.mode,
        Mode::Confirm(Action::Shift {
            route: "orders".into(),
            to: "orders".into(),
            percent: 30.0
        })
    );
    assert!(
        fake.calls.borrow().is_empty(),
        "nothing before the confirmation"
    );
    press(&mut app, &fake, &[Key::Char('y')]);
    assert_eq!(
        *fake.calls.borrow(),
        [Action::Shift {
            route: "orders".into(),
            to: "orders".into(),
            percent: 30.0
        }]
    );
    assert_eq!(app.message, Some(("version 9: done".into(), false)));
    press(&mut app, &fake, &[Key::Char('-'), Key::Enter]);
    assert_eq!(
        fake.calls.borrow()[1],
        Action::Shift {
            route: "orders".into(),
            to: "orders".into(),
            percent: 20.0
        }
    );
}

#[test]
fn any_other_key_cancels_and_nothing_is_sent() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(
        &mut app,
        &fake,
        &[Key::Char('r'), Key::Char('n'), Key::Char('R'), Key::Esc],
    );
    assert!(fake.calls.borrow().is_empty());
    assert_eq!(
        app.message.as_ref().map(|m| m.0.as_str()),
        Some("cancelled: nothing changed")
    );
}

#[test]
fn rollback_reset_shadow_and_rollback_all() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(
        &mut app,
        &fake,
        &[
            Key::Char('r'),
            Key::Char('y'),
            Key::Char('x'),
            Key::Char('y'),
            Key::Char('s'),
            Key::Char('y'),
            Key::Char('R'),
            Key::Char('y'),
        ],
    );
    assert_eq!(
        *fake.calls.borrow(),
        [
            Action::Rollback {
                route: "orders".into()
            },
            Action::Reset {
                route: "orders".into()
            },
            Action::Shadow {
                route: "orders".into(),
                enabled: false
            },
            Action::RollbackAll,
        ]
    );
}

#[test]
fn typed_percent_and_bad_input() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(
        &mut app,
        &fake,
        &[
            Key::Char('='),
            Key::Char('4'),
            Key::Char('2'),
            Key::Enter,
            Key::Char('y'),
        ],
    );
    assert_eq!(
        *fake.calls.borrow(),
        [Action::Shift {
            route: "orders".into(),
            to: "orders".into(),
            percent: 42.0
        }]
    );
    press(
        &mut app,
        &fake,
        &[Key::Char('='), Key::Char('x'), Key::Enter],
    );
    assert_eq!(app.mode, Mode::Normal);
    assert!(
        app.message.as_ref().is_some_and(|m| m.1),
        "an error is shown"
    );
    assert_eq!(fake.calls.borrow().len(), 1);
    // A route with two non-default upstreams cannot be shifted with + / -.
    press(&mut app, &fake, &[Key::Down, Key::Down, Key::Char('+')]);
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.message.as_ref().is_some_and(|m| m.0.contains("--to")));
}

#[test]
fn mismatches_examples_detail_and_difference_jumps() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(&mut app, &fake, &[Key::Enter]);
    assert_eq!(
        (app.view, app.filter.as_str()),
        (View::Mismatches, "orders")
    );
    press(&mut app, &fake, &[Key::Enter]);
    assert_eq!(app.pane, Pane::Examples);
    press(&mut app, &fake, &[Key::Enter]);
    assert_eq!(app.pane, Pane::Detail);
    // The examples' records were loaded for the list; the newest opened.
    assert_eq!(
        *fake.loads.borrow(),
        [
            "01a218b9-0000-7000-8000-000000000001",
            "01a218b9-0000-7000-8000-000000000002",
            "01a218b9-0000-7000-8000-000000000002"
        ]
    );
    let marks = app.detail_marks();
    assert!(!marks.is_empty());
    press(&mut app, &fake, &[Key::Char('n')]);
    assert_eq!(app.scroll, marks[0]);
    press(
        &mut app,
        &fake,
        &[Key::PageDown, Key::PageDown, Key::Char('N')],
    );
    assert_eq!(app.scroll, marks[0], "back to the difference");
    press(&mut app, &fake, &[Key::Esc, Key::Esc]);
    assert_eq!(app.pane, Pane::Fields);
}

#[test]
fn mark_as_noise_only_for_body_fields() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(
        &mut app,
        &fake,
        &[Key::Char('2'), Key::Char('i'), Key::Char('y')],
    );
    assert_eq!(
        *fake.calls.borrow(),
        [Action::MarkNoise {
            route: "orders".into(),
            field: "/total".into()
        }]
    );
    // The header field: refused with a reason, nothing sent.
    press(&mut app, &fake, &[Key::Down, Key::Down, Key::Char('i')]);
    assert_eq!(app.mode, Mode::Normal);
    assert!(
        app.message
            .as_ref()
            .is_some_and(|m| m.1 && m.0.contains("ignore_headers"))
    );
    assert_eq!(fake.calls.borrow().len(), 1);
}

#[test]
fn filter_narrows_the_fields() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(
        &mut app,
        &fake,
        &[
            Key::Char('2'),
            Key::Char('/'),
            Key::Char('g'),
            Key::Char('e'),
            Key::Enter,
        ],
    );
    let rows = app.field_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        app.field().map(|f| f.1.path.clone()).as_deref(),
        Some("/generated_at")
    );
}

#[test]
fn revert_from_history() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(
        &mut app,
        &fake,
        &[Key::Char('3'), Key::Down, Key::Char('v'), Key::Char('y')],
    );
    assert_eq!(*fake.calls.borrow(), [Action::Revert { version: 6 }]);
}

#[test]
fn disconnect_keeps_the_data_and_reconnects() {
    let mut app = loaded();
    assert!(app.apply(Update::Disconnected("connection refused".into())));
    assert!(app.status.is_some(), "last data stays");
    assert!(
        !app.apply(Update::Disconnected("connection refused".into())),
        "no redraw"
    );
    assert!(app.apply(Update::Data {
        status: status(),
        summary: None,
        history: None
    }));
    assert_eq!(app.connection, Connection::Connected);
    assert!(app.summary.is_some());
    // Same data again: nothing to redraw.
    assert!(!app.apply(Update::Data {
        status: status(),
        summary: Some(summary()),
        history: Some(history())
    }));
}

#[test]
fn help_quit_and_ctrl_c() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(&mut app, &fake, &[Key::Char('?')]);
    assert_eq!(app.mode, Mode::Help);
    press(&mut app, &fake, &[Key::Char('x')]);
    assert_eq!(
        app.mode,
        Mode::Normal,
        "any key closes help, and does nothing else"
    );
    assert!(fake.calls.borrow().is_empty());
    press(&mut app, &fake, &[Key::Char('r'), Key::Ctrl('c')]);
    assert!(app.quit);
    let mut app = loaded();
    press(&mut app, &fake, &[Key::Char('q')]);
    assert!(app.quit);
}

#[test]
fn selections_follow_their_items_when_data_reorders() {
    let (mut app, fake) = (loaded(), Fake::default());
    // History: select version 6, then a new version 8 arrives on top.
    press(&mut app, &fake, &[Key::Char('3'), Key::Down]);
    let mut h = history();
    let mut newer = h.versions[0].clone();
    newer.version = 8;
    h.versions.insert(0, newer);
    app.apply(Update::Data {
        status: status(),
        summary: Some(summary()),
        history: Some(h),
    });
    press(&mut app, &fake, &[Key::Char('v'), Key::Char('y')]);
    assert_eq!(*fake.calls.borrow(), [Action::Revert { version: 6 }]);
    // Mismatches: /generated_at selected, then /total's count overtakes it.
    let mut app = loaded();
    press(&mut app, &fake, &[Key::Char('2'), Key::Down]);
    assert_eq!(
        app.field().map(|f| f.1.path.clone()).as_deref(),
        Some("/generated_at")
    );
    let mut s = summary();
    s.routes[0].fields.swap(0, 1);
    app.apply(Update::Data {
        status: status(),
        summary: Some(s),
        history: Some(history()),
    });
    assert_eq!(
        app.field().map(|f| f.1.path.clone()).as_deref(),
        Some("/generated_at")
    );
}

#[test]
fn opening_a_routes_mismatches_does_not_hide_other_routes() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(&mut app, &fake, &[Key::Enter, Key::Char('1')]);
    assert_eq!(app.visible_routes().len(), 3);
    // A route without a shadow has no mismatches to open.
    press(&mut app, &fake, &[Key::Down, Key::Enter]);
    assert_eq!(app.view, View::Routes);
    assert!(
        app.message
            .as_ref()
            .is_some_and(|m| m.0.contains("no shadow"))
    );
}

#[test]
fn confirmations_say_what_changes_and_no_ops_are_refused() {
    let (mut app, fake) = (loaded(), Fake::default());
    press(&mut app, &fake, &[Key::Char('+')]);
    assert_eq!(
        app.confirm_text,
        "Shift route orders: orders 25% -> 30%, monolith 75% -> 70%"
    );
    press(&mut app, &fake, &[Key::Esc, Key::Char('x')]);
    assert!(
        app.confirm_text.contains("split monolith 90%, orders 10%"),
        "{}",
        app.confirm_text
    );
    press(&mut app, &fake, &[Key::Esc, Key::Char('3'), Key::Char('v')]);
    assert_eq!(app.mode, Mode::Normal, "the current version is not offered");
    assert!(
        app.message
            .as_ref()
            .is_some_and(|m| m.0.contains("current state"))
    );
    assert!(fake.calls.borrow().is_empty());
    // The message goes with the next key.
    press(&mut app, &fake, &[Key::Down]);
    assert_eq!(app.message, None);
}
