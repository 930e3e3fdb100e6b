//! The command line: clap definitions and dispatch. Every error is one clear
//! line on stderr; exit codes are 0 done, 1 refused or invalid, 2 cannot
//! reach the proxy.

pub mod check;
pub mod ctl;
pub mod demo;
pub mod diffs;
pub mod explain;
pub mod ramp;
pub mod serve;
pub mod words;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The admin API the CLI talks to unless told otherwise.
const DEFAULT_ADMIN: &str = "http://127.0.0.1:9901";

#[derive(Debug, Parser)]
#[command(
    name = "strangler",
    version,
    about = "A reverse proxy for strangler-fig migrations"
)]
pub struct Cli {
    /// Admin API of the running proxy.
    #[arg(
        long,
        global = true,
        env = "STRANGLER_ADMIN",
        default_value = DEFAULT_ADMIN
    )]
    pub admin: String,
    /// Who is making a change, recorded in history (default: $USER@hostname).
    #[arg(long, global = true)]
    pub actor: Option<String>,
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
        log_format: crate::cli::serve::LogFormat,
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
        /// Ask the running proxy (runtime layer applied) instead of reading the file.
        #[arg(long, conflicts_with = "config")]
        live: bool,
    },
    /// Routes with their live split, overrides, shadow and traffic.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Give PERCENT of a route's traffic to its new service (the rest to the default upstream).
    Shift {
        route: String,
        /// 0-100, e.g. 25 or 12.5.
        #[arg(allow_negative_numbers = true)]
        percent: String,
        /// The upstream to shift to; needed when the route has none or several besides the default.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send a route (or every route) entirely to the default upstream, at once.
    Rollback {
        route: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Drop a route's runtime overrides: the file applies again.
    Reset {
        route: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Turn a route's shadow traffic on or off.
    Shadow {
        route: String,
        /// on or off
        state: String,
        #[arg(long)]
        percent: Option<String>,
    },
    /// Versions of the runtime layer: who changed what, when and why.
    History {
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Restore the runtime layer as it was right after VERSION (a new version).
    Revert { version: u64 },
    /// Progressive rollout: `ramp ROUTE --steps 1,5,25,50,100 --every 10m`, or
    /// `ramp status [ROUTE]`, `ramp pause|resume|abort ROUTE`.
    Ramp {
        /// ROUTE, or status [ROUTE], or pause|resume|abort ROUTE.
        #[arg(required = true, num_args = 1..=2)]
        args: Vec<String>,
        #[command(flatten)]
        flags: crate::cli::ramp::RampArgs,
        #[arg(long)]
        json: bool,
    },
    /// The terminal UI: routes, mismatches and history, with actions.
    Tui {
        /// How often to refresh from the admin API.
        #[arg(long, default_value = "1s")]
        refresh: String,
    },
    /// Shadow comparison results: each route's summary and the latest diffs.
    Diffs {
        #[command(subcommand)]
        show: Option<DiffsCommand>,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// How many records to list (1-1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Print the records as JSON (the admin API's GET /api/v1/diffs).
        #[arg(long)]
        json: bool,
        /// Also list differences judged noise or ignored.
        #[arg(long)]
        all: bool,
    },
    /// Reload the config file in the running proxy.
    Reload,
}

#[derive(Debug, Subcommand)]
pub enum DiffsCommand {
    /// One diff record: primary and shadow side by side, differences marked.
    Show {
        id: String,
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
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return ExitCode::from(
                        if e.kind()
                            == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                        {
                            1
                        } else {
                            0
                        },
                    );
                }
                _ => {
                    // One line: clap's first line, without its usage block.
                    let rendered = e.render().to_string();
                    let mut first = rendered
                        .lines()
                        .next()
                        .unwrap_or("invalid arguments")
                        .trim_end()
                        .to_string();
                    // "required arguments were not provided:" lists them on
                    // the next lines: keep them on this one.
                    if first.ends_with(':') {
                        let missing: Vec<&str> = rendered
                            .lines()
                            .skip(1)
                            .take_while(|l| !l.trim().is_empty())
                            .map(str::trim)
                            .collect();
                        first = format!("{first} {}", missing.join(" "));
                    }
                    eprintln!("{first} (see strangler --help)");
                    return ExitCode::from(1);
                }
            }
        }
    };
    // An empty STRANGLER_ADMIN (or --admin "") means the default.
    if cli.admin.trim().is_empty() {
        cli.admin = DEFAULT_ADMIN.to_string();
    }
    if !matches!(cli.command, Command::Serve { .. } | Command::Demo { .. }) {
        restore_sigpipe();
    }
    match cli.command {
        Command::Serve {
            config,
            data,
            log_format,
            access_log,
        } => crate::cli::serve::run(crate::cli::serve::ServeOptions {
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
        } => crate::cli::demo::run(crate::cli::demo::DemoOptions {
            port,
            admin_port,
            traffic,
        }),
        Command::Check { config } => crate::cli::check::run(&config),
        Command::Explain {
            method,
            url,
            headers,
            config,
            json,
            live,
        } => {
            if live {
                match admin_client(&cli.admin, cli.actor.clone()) {
                    Ok(c) => crate::cli::ctl::explain_live(&c, &method, &url, &headers, json),
                    Err(code) => code,
                }
            } else {
                crate::cli::explain::run(&method, &url, &headers, &config, json)
            }
        }
        Command::Tui { refresh } => tui(&cli.admin, cli.actor.clone(), &refresh),
        Command::Ramp { args, flags, json } => {
            let c = match admin_client(&cli.admin, cli.actor.clone()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            crate::cli::ramp::run(&c, &args, flags, json)
        }
        other => {
            let c = match admin_client(&cli.admin, cli.actor.clone()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            control(&c, other)
        }
    }
}

/// CLI output piped into `head` ends quietly, as with other Unix tools,
/// instead of panicking on a closed pipe. Not for `serve` or `demo`.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: resetting a signal disposition to its default before any
    // other thread exists; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn admin_client(base: &str, actor: Option<String>) -> Result<strangler_api::AdminClient, ExitCode> {
    let token = std::env::var("STRANGLER_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let actor = actor.unwrap_or_else(strangler_api::default_actor);
    strangler_api::AdminClient::new(base, token, actor).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(e.exit_code())
    })
}

fn control(c: &strangler_api::AdminClient, command: Command) -> ExitCode {
    use crate::cli::ctl;
    match command {
        Command::Status { json } => ctl::status(c, json),
        Command::Shift {
            route,
            percent,
            to,
            reason,
        } => ctl::shift(c, &route, &percent, to.as_deref(), reason.as_deref()),
        Command::Rollback { route, all, reason } => {
            ctl::rollback(c, route.as_deref(), all, reason.as_deref())
        }
        Command::Reset { route, reason } => ctl::reset(c, &route, reason.as_deref()),
        Command::Shadow {
            route,
            state,
            percent,
        } => ctl::shadow(c, &route, &state, percent.as_deref()),
        Command::History { route, json } => ctl::history(c, route.as_deref(), json),
        Command::Revert { version } => ctl::revert(c, version),
        Command::Diffs {
            show: Some(DiffsCommand::Show { id, json }),
            ..
        } => crate::cli::diffs::show(c, &id, json),
        Command::Diffs {
            show: None,
            route,
            limit,
            json,
            all,
        } => crate::cli::diffs::list(c, route.as_deref(), usize::from(limit), all, json),
        Command::Reload => ctl::reload(c),
        _ => ExitCode::from(1),
    }
}

fn tui(admin: &str, actor: Option<String>, refresh: &str) -> ExitCode {
    let refresh = match strangler_rules::config::parse_duration(refresh) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            eprintln!("invalid --refresh \"{refresh}\": give a duration such as 1s or 500ms");
            return ExitCode::from(1);
        }
    };
    let lower = admin.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        eprintln!("invalid --admin URL \"{admin}\": give http://HOST:PORT");
        return ExitCode::from(1);
    }
    let opts = strangler_tui::Options {
        admin: admin.trim_end_matches('/').to_string(),
        token: std::env::var("STRANGLER_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        actor: actor.unwrap_or_else(strangler_api::default_actor),
        refresh,
        colour: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    match strangler_tui::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
