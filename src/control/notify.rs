//! Ramp notifications (`[notify] webhook`): a JSON POST per ramp event
//! (start, step, done, pause, resume, rollback, abort, stopped by hand).
//! Events go through a bounded queue to one sender task, so the proxy never
//! waits on the receiver; delivery is retried with backoff, and what is
//! sent, failed or dropped (queue full) is counted for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::state::EventSink;

/// Events waiting at most; more are dropped and counted.
const QUEUE: usize = 256;

/// Waits between attempts.
const BACKOFF: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// Counts of deliveries.
#[derive(Debug, Default)]
pub struct Counts {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// The webhook's sender.
#[derive(Debug)]
pub struct Notifier {
    tx: mpsc::Sender<Value>,
    pub counts: Arc<Counts>,
    pub url: String,
}

impl Notifier {
    /// Starts the sender task for `url`.
    pub fn start(url: &str) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<Value>(QUEUE);
        let counts = Arc::new(Counts::default());
        let (c, target) = (counts.clone(), url.to_string());
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let mut delivered = false;
                for (attempt, pause) in std::iter::once(Duration::ZERO).chain(BACKOFF).enumerate() {
                    tokio::time::sleep(pause).await;
                    let (u, e) = (target.clone(), event.clone());
                    let ok = tokio::task::spawn_blocking(move || post(&u, &e))
                        .await
                        .unwrap_or(false);
                    if ok {
                        delivered = true;
                        break;
                    }
                    tracing::debug!(attempt, url = %target, "webhook delivery failed");
                }
                if delivered {
                    c.sent.fetch_add(1, Relaxed);
                } else {
                    c.failed.fetch_add(1, Relaxed);
                    tracing::warn!(url = %target, "webhook event not delivered after retries");
                }
            }
        });
        Notifier {
            tx,
            counts,
            url: url.to_string(),
        }
    }

    /// Queues an event; never waits.
    pub fn send(&self, event: Value) {
        if self.tx.try_send(event).is_err() {
            self.counts.dropped.fetch_add(1, Relaxed);
        }
    }
}

impl EventSink for Notifier {
    fn send(&self, event: Value) {
        Notifier::send(self, event);
    }

    fn counts(&self) -> [(&'static str, u64); 3] {
        [
            ("sent", self.counts.sent.load(Relaxed)),
            ("failed", self.counts.failed.load(Relaxed)),
            ("dropped", self.counts.dropped.load(Relaxed)),
        ]
    }
}

fn post(url: &str, event: &Value) -> bool {
    let Ok(client) = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
    else {
        return false;
    };
    client
        .post(url)
        .json(event)
        .send()
        .is_ok_and(|r| r.status().is_success())
}
