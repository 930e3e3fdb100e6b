//! The live routing state: the compiled route table and the upstream pools,
//! swapped together atomically (arc-swap) on reload. A request loads it once
//! and finishes on the state it started with.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use strangler_rules::{Config, RouteTable};

use crate::upstream::UpstreamPool;

/// One consistent generation of routing state.
#[derive(Debug)]
pub struct Live {
    pub table: RouteTable,
    /// Indexed by `UpstreamId`.
    pub pools: Vec<Arc<UpstreamPool>>,
}

impl Live {
    /// Builds the state for `config`, keeping the pools (and their open
    /// connections and health) of upstreams whose settings did not change.
    pub fn build(config: Arc<Config>, previous: Option<&Live>) -> Live {
        let pools = config
            .upstreams
            .iter()
            .map(|u| {
                let reused = previous.and_then(|p| {
                    p.pools
                        .iter()
                        .find(|pool| pool.name == u.name && pool.config == *u)
                        .cloned()
                });
                reused.unwrap_or_else(|| {
                    let pool = UpstreamPool::new(u);
                    pool.spawn_health_checks();
                    pool
                })
            })
            .collect();
        Live {
            table: RouteTable::new(config),
            pools,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        self.table.config()
    }
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub live: ArcSwap<Live>,
    /// The file SIGHUP reloads.
    pub config_path: PathBuf,
    pub access_log: bool,
    /// The proxy listener serves TLS.
    pub tls: bool,
    pub store: Option<sled::Db>,
}

impl Shared {
    /// Reloads the config file. Valid: the new state serves the next request
    /// on every connection. Invalid: the old state keeps serving and every
    /// problem is logged.
    pub async fn reload(&self) -> Result<(), Vec<String>> {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::config_file::load(&path))
            .await
            .map_err(|e| vec![format!("reload task failed: {e}")])?;
        match loaded {
            Ok(config) => {
                let old = self.live.load_full();
                if config.listen.proxy != old.config().listen.proxy {
                    tracing::warn!(
                        "listen.proxy changed to {}; a restart is needed to listen there",
                        config.listen.proxy
                    );
                }
                let routes = config.routes.len();
                let live = Live::build(Arc::new(config), Some(&old));
                self.live.store(Arc::new(live));
                tracing::info!(routes, "config reloaded");
                Ok(())
            }
            Err(e) => {
                let lines = e.lines();
                for line in &lines {
                    tracing::error!("config reload failed, keeping the previous config: {line}");
                }
                Err(lines)
            }
        }
    }
}
