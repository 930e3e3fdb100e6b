//! `strangler check`: validate a config file as `serve` would at start
//! (secrets set, key files readable): `FILE: ok (...)` and exit 0, or every
//! problem as `file:line: key: message` and exit 1.

use std::path::Path;
use std::process::ExitCode;

use crate::state::config_file;

/// `strangler check -c FILE`.
pub fn run(path: &Path) -> ExitCode {
    match config_file::load(path) {
        Ok(config) => {
            // What serve would refuse at start: secrets not set, key files
            // missing or unreadable.
            if let Err(e) = crate::policy::auth::load_all(&config, path) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(1);
            }
            println!(
                "{}: ok ({}, {}, {})",
                path.display(),
                crate::cli::words::count(config.upstreams.len(), "upstream"),
                crate::cli::words::count(config.routes.len(), "route"),
                crate::cli::words::count(config.aggregates.len(), "aggregate")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let lines = e.lines();
            for line in &lines {
                eprintln!("{line}");
            }
            if let config_file::LoadError::Invalid(_) = e {
                let n = lines.len();
                eprintln!(
                    "{}: {n} problem{}",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                );
            }
            ExitCode::from(1)
        }
    }
}
