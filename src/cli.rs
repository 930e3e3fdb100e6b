//! The command line: clap definitions and dispatch. Every error is one clear
//! line on stderr; exit codes are 0 done, 1 refused or invalid, 2 cannot
//! reach the proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config_file;

#[derive(Debug, Parser)]
#[command(
    name = "strangler",
    version,
    about = "A reverse proxy for strangler-fig migrations"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        /// Config file.
        #[arg(long, short = 'c', default_value = "strangler.toml")]
        config: PathBuf,
        /// Store directory (overrides [store].path).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Log line format on stderr.
        #[arg(long, value_enum, default_value = "text")]
        log_format: crate::serve::LogFormat,
        /// One structured line per request.
        #[arg(long, value_enum, default_value = "on")]
        access_log: OnOff,
    },
    /// Run a self-contained demo: a toy monolith, a toy new orders service and the proxy.
    Demo {
        /// Proxy port (0: any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin API port (0: any free port).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// Send a little background traffic through the proxy.
        #[arg(long)]
        traffic: bool,
    },
    /// Validate a config file: exit 0, or 1 with every problem (file:line: key: message).
    Check {
        /// Config file.
        #[arg(long, short = 'c', default_value = "strangler.toml")]
        config: PathBuf,
    },
    /// Show which route and upstream a request gets, and why.
    Explain {
        /// HTTP method, e.g. GET.
        method: String,
        /// URL (http://host/path?query) or path (/path?query).
        url: String,
        /// Request header, 'name: value'; repeatable.
        #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
        headers: Vec<String>,
        /// Config file.
        #[arg(long, short = 'c', default_value = "strangler.toml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    // Usage errors exit 1 ("invalid"); 2 is kept for "cannot reach the proxy".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve {
            config,
            data,
            log_format,
            access_log,
        } => crate::serve::run(crate::serve::ServeOptions {
            config,
            data,
            log_format,
            access_log: access_log == OnOff::On,
            on_listening: None,
        }),
        Command::Demo {
            port,
            admin_port,
            traffic,
        } => crate::demo::run(crate::demo::DemoOptions {
            port,
            admin_port,
            traffic,
        }),
        Command::Check { config } => check(&config),
        Command::Explain {
            method,
            url,
            headers,
            config,
            json,
        } => crate::explain_cmd::run(&method, &url, &headers, &config, json),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config_file::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} upstreams, {} routes, {} aggregates)",
                path.display(),
                config.upstreams.len(),
                config.routes.len(),
                config.aggregates.len()
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
