//! Reloading the config file on SIGHUP: the file is read and validated
//! again off the request path (`state::Shared::reload`), and an invalid
//! file keeps the old config serving. The admin API's `POST /api/v1/reload`
//! (`api::changes`) does the same on request.

use std::sync::Arc;

use crate::state::Shared;

/// Reloads on SIGHUP. The handler is installed before this returns, so a
/// SIGHUP sent right after the proxy announced itself is never fatal.
pub fn on_sighup(shared: Arc<Shared>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload is unavailable");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = shared.reload("SIGHUP").await;
            }
        });
    }
}
