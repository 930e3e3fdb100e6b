//! `strangler serve`: load the config, open the store, bind the proxy,
//! reload on SIGHUP, drain on SIGTERM/SIGINT, flush the store, exit 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::state::Shared;
use crate::state::config_file;

/// Called with the bound proxy and admin addresses once both listen.
pub type OnListening = Arc<dyn Fn(std::net::SocketAddr, std::net::SocketAddr) + Send + Sync>;

/// Options of `serve` (and of the proxy `demo` starts).
#[derive(Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub data: Option<PathBuf>,
    pub log_format: LogFormat,
    pub access_log: bool,
    pub on_listening: Option<OnListening>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up tracing: `RUST_LOG` filters (default `info`), text or JSON lines on stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// The one crypto provider: aws-lc-rs.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Opens the sled store; `cache_capacity` is capped so the store's memory stays bounded.
pub fn open_store(path: &Path) -> Result<sled::Db, String> {
    sled::Config::new()
        .path(path)
        .cache_capacity(64 * 1024 * 1024)
        // Every change is flushed explicitly before it is acknowledged, and
        // the store is flushed at shutdown: no periodic flusher burning CPU.
        .flush_every_ms(None)
        .open()
        .map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock")
                || msg.contains("WouldBlock")
                || msg.contains("temporarily unavailable")
            {
                format!(
                    "cannot open store at {}: it is in use by another strangler process",
                    path.display()
                )
            } else {
                format!("cannot open store at {}: {msg}", path.display())
            }
        })
}

pub fn run(opts: ServeOptions) -> ExitCode {
    init_logging(opts.log_format);
    install_crypto();
    let config = match config_file::load(&opts.config) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return ExitCode::from(1);
        }
    };
    let workers = config
        .listen
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One worker: a current-thread runtime, which avoids the work-stealing
    // scheduler's cross-thread wake-ups (measurably cheaper per request).
    let built = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(opts, config))
}

/// Serves with an already loaded config until SIGTERM/SIGINT.
pub async fn serve(opts: ServeOptions, config: strangler_rules::Config) -> ExitCode {
    let store_path = opts
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(&config.store.path));
    let tls = match &config.listen.tls {
        Some(t) => match crate::server::tls_acceptor(&t.cert, &t.key) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let addr = config.listen.proxy;
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);

    // The admin API: a token, or loopback only.
    let admin_addr = config.listen.admin;
    let token = std::env::var(&config.admin.token_env)
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() && !admin_addr.ip().is_loopback() {
        eprintln!(
            "refusing to start: the admin address {admin_addr} is not loopback and {} is not set",
            config.admin.token_env
        );
        return ExitCode::from(1);
    }
    let admin_listener = match TcpListener::bind(admin_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {admin_addr} (admin): {e}");
            return ExitCode::from(1);
        }
    };
    let admin_bound = admin_listener.local_addr().unwrap_or(admin_addr);
    // Opened once the addresses are ours: a start that fails leaves no
    // store directory behind.
    let store = match open_store(&store_path) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if token.is_none() {
        tracing::warn!(
            "{} is not set: the admin API on {admin_bound} needs no token (loopback only)",
            config.admin.token_env
        );
    }

    let shared = match Shared::start(
        config,
        opts.config.clone(),
        opts.access_log,
        tls.is_some(),
        Some(store),
    ) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::spawn(crate::control::api::run(
        admin_listener,
        shared.clone(),
        crate::control::api::AdminAuth { token },
    ));
    // Signal handlers first: a signal sent right after the announcement
    // must reach them, not the default action.
    crate::control::reload::on_sighup(shared.clone());
    spawn_rate_limit_cleanup(shared.clone());
    if let Some(url) = &shared.live.load().config().notify.webhook {
        let _ = shared
            .notifier
            .set(Box::new(crate::control::notify::Notifier::start(url)));
    }
    crate::control::ramp::spawn(shared.clone());
    let shutdown = crate::server::shutdown::shutdown_signal();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let _ = shared.proxy_addr.set(format!("{scheme}://{bound}"));
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "strangler: proxy listening on {scheme}://{bound}");
        let _ = writeln!(out, "strangler: admin listening on http://{admin_bound}");
        let _ = out.flush();
    }
    tracing::info!(%bound, config = %opts.config.display(), "proxy listening");
    if let Some(cb) = &opts.on_listening {
        cb(bound, admin_bound);
    }

    let drained = crate::server::run(listener, shared.clone(), tls, shutdown).await;
    if !drained {
        tracing::warn!("drain timeout reached; closing the remaining connections");
    }
    // Finish the comparisons already queued and save the counters.
    if let Some(rt) = shared.shadow.clone() {
        let _ = tokio::task::spawn_blocking(move || rt.pipeline.shutdown()).await;
    }
    if let Some(db) = &shared.store
        && let Err(e) = db.flush_async().await
    {
        tracing::error!("flushing the store failed: {e}");
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// How old a remote JWKS may get before it is fetched again.
const JWKS_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// Every second: forgets rate-limit keys that are back at a full quota, so
/// a flood of distinct keys cannot grow memory, and refreshes remote JWKS
/// older than five minutes.
fn spawn_rate_limit_cleanup(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            for (_, limit) in shared.limits.all() {
                limit.retain();
            }
            // Remote JWKS are refreshed every few minutes.
            let live = shared.live.load_full();
            for auth in live.routes.iter().filter_map(|r| r.auth.as_ref()) {
                if let Some(remote) = auth.remote().cloned() {
                    let _ = tokio::task::spawn_blocking(move || {
                        remote.refresh_if_older(JWKS_REFRESH);
                    })
                    .await;
                }
            }
        }
    });
}
