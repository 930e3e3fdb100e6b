//! `strangler explain METHOD URL [-H 'k: v']... [--config FILE]`: routes a
//! made-up request through the table compiled from a config file.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use strangler_rules::{RouteTable, explain};

use crate::state::config_file;

pub fn run(method: &str, url: &str, headers: &[String], config: &Path, json: bool) -> ExitCode {
    let req = match strangler_rules::explain::build_request(method, url, headers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let config = match config_file::load(config) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return ExitCode::from(1);
        }
    };
    let table = RouteTable::new(Arc::new(config));
    let explanation = explain(&table, &req);
    if json {
        match serde_json::to_string_pretty(&explanation) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cannot encode explanation: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{explanation}");
    }
    ExitCode::SUCCESS
}
