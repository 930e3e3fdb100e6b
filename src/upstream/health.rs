//! An upstream's health. Passive: an instance is ejected for a while after
//! consecutive failures, never the last one available. Active: a periodic
//! check of each instance, which keeps one that fails it out of the
//! picking (pool.rs) until it passes again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::Uri;

use crate::upstream::body::ProxyBody;
use crate::upstream::pool::UpstreamPool;
use crate::upstream::send::SendWith;

impl UpstreamPool {
    pub fn record_success(&self, i: usize) {
        let inst = &self.instances[i];
        if inst.consecutive_failures.load(Ordering::Relaxed) != 0 {
            inst.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; ejects the instance after `eject_after` in a row,
    /// unless that would leave no instance available.
    pub fn record_failure(&self, i: usize) {
        let inst = &self.instances[i];
        let failures = inst.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.eject_after == 0 || failures < self.config.eject_after {
            return;
        }
        let now = self.now_ms();
        let others_available = (0..self.instances.len()).any(|j| j != i && self.available(j));
        if others_available {
            let until = now + self.config.eject_for.as_millis() as u64;
            inst.ejected_until.store(until, Ordering::Relaxed);
            inst.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(
                upstream = %self.name,
                instance = %inst.uri,
                failures,
                eject_for = ?self.config.eject_for,
                "instance ejected after consecutive failures"
            );
        }
    }

    /// Runs the active health check until the pool is dropped everywhere
    /// else (the task holds only a weak reference).
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let Some(check) = self.config.health.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(check.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                for (i, inst) in pool.instances.iter().enumerate() {
                    let uri = format!("{}://{}{}", inst.scheme, inst.authority, check.path);
                    let ok = match uri.parse::<Uri>() {
                        Ok(uri) => {
                            let req = http::Request::get(uri)
                                .header(http::header::HOST, inst.authority.as_str())
                                .header(http::header::USER_AGENT, "strangler-health-check")
                                .body(ProxyBody::Empty);
                            match req {
                                Ok(req) => {
                                    match tokio::time::timeout(
                                        check.timeout,
                                        pool.send(i, req, SendWith::default()),
                                    )
                                    .await
                                    {
                                        Ok(Ok(resp)) => {
                                            let ok = resp.status().is_success();
                                            // Read the (small) body so the connection is reused.
                                            let _ =
                                                http_body_util::BodyExt::collect(resp.into_body())
                                                    .await;
                                            ok
                                        }
                                        _ => false,
                                    }
                                }
                                Err(_) => false,
                            }
                        }
                        Err(_) => false,
                    };
                    let was = inst.healthy.swap(ok, Ordering::Relaxed);
                    if was != ok {
                        tracing::warn!(
                            upstream = %pool.name,
                            instance = %inst.uri,
                            healthy = ok,
                            "active health check changed"
                        );
                    }
                }
            }
        });
    }
}
