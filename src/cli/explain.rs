//! `strangler explain METHOD URL [-H 'k: v']... [--config FILE]`: routes a
//! made-up request through the table compiled from a config file.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use strangler_rules::{RouteTable, SimpleRequest, explain};

use crate::state::config_file;

/// Builds the request `explain` routes: the URL's authority is the Host
/// unless a `Host` header is given, as curl does.
pub fn build_request(method: &str, url: &str, headers: &[String]) -> Result<SimpleRequest, String> {
    // Like curl: the fragment is never sent.
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    let (authority, target) = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(format!(
                    "invalid url \"{url}\": scheme must be http or https"
                ));
            }
            match rest.find(['/', '?']) {
                Some(i) => (Some(&rest[..i]), rest[i..].to_string()),
                None => (Some(rest), "/".to_string()),
            }
        }
        None if url.starts_with('/') => (None, url.to_string()),
        None => {
            return Err(format!(
                "invalid url \"{url}\": give http://host/path or /path"
            ));
        }
    };
    let target = if target.starts_with('?') {
        format!("/{target}")
    } else {
        target
    };
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("invalid method \"{method}\""));
    }
    let mut req = SimpleRequest::new(method, &target);
    // Credentials (user:pw@) are not part of the Host.
    let authority = authority.map(|a| a.rsplit_once('@').map_or(a, |(_, h)| h));
    if let Some(a) = authority.filter(|a| !a.is_empty()) {
        req = req.host(a);
    }
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("invalid header \"{h}\": write -H 'name: value'"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("invalid header \"{h}\": empty name"));
        }
        if name.eq_ignore_ascii_case("host") {
            req.host = Some(value.trim().to_string());
        }
        req = req.header(name, value.trim());
    }
    Ok(req)
}

pub fn run(method: &str, url: &str, headers: &[String], config: &Path, json: bool) -> ExitCode {
    let req = match build_request(method, url, headers) {
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
