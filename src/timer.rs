//! Per-request timeouts without a timer registration per request.
//!
//! Every request arms two timeouts: the header read timeout (the lean
//! server's, or hyper's: a sleep each time a connection waits for the next
//! request head) and the upstream timeout. A tokio sleep that is polled
//! registers in the runtime's timer wheel, and dropping it deregisters it,
//! both under the driver's lock.
//! Here finished sleeps go back to a pool still registered; taking one out
//! and moving its deadline later only updates an atomic, and the wheel
//! re-files the entry once its old deadline passes. A pooled sleep may still
//! wake the task that used it last when its old deadline passes: a spurious
//! wake-up, which futures tolerate.
//!
//! A pool belongs to one runtime (its sleeps are registered with that
//! runtime's timer), like the server that owns it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Sleeps kept for reuse at most, per shard.
const MAX_POOLED: usize = 256;
/// Shards of the pool, so that runtime workers rarely share a lock.
const SHARDS: usize = 8;

/// Finished sleeps, ready for reuse.
#[derive(Debug, Default)]
pub struct SleepPool {
    shards: [Shard; SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(Mutex<Vec<Pin<Box<Sleep>>>>);

/// This thread's shard.
fn shard() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl SleepPool {
    /// A sleep until `deadline`, reused when one is free.
    pub fn sleep_until(self: &Arc<Self>, deadline: Instant) -> PooledSleep {
        let reused = self.shards[shard()].0.lock().ok().and_then(|mut v| v.pop());
        let sleep = match reused {
            Some(mut s) => {
                s.as_mut().reset(deadline);
                s
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        PooledSleep {
            sleep: Some(sleep),
            pool: self.clone(),
        }
    }

    fn put(&self, sleep: Pin<Box<Sleep>>) {
        if let Ok(mut v) = self.shards[shard()].0.lock()
            && v.len() < MAX_POOLED
        {
            v.push(sleep);
        }
    }

    /// Runs `fut` for at most `limit`; `Err(())` when the time ran out.
    pub fn timeout<F: Future>(self: &Arc<Self>, limit: Duration, fut: F) -> Timeout<F> {
        Timeout {
            fut,
            sleep: self.sleep_until(Instant::now() + limit),
        }
    }
}

pin_project_lite::pin_project! {
    /// `fut`, or `Err(())` once its sleep completes first.
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        sleep: PooledSleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, ()>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(()))
    }
}

/// A sleep that goes back to its pool when dropped.
#[derive(Debug)]
pub struct PooledSleep {
    sleep: Option<Pin<Box<Sleep>>>,
    pool: Arc<SleepPool>,
}

impl Future for PooledSleep {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for PooledSleep {
    fn drop(&mut self) {
        if let Some(s) = self.sleep.take() {
            self.pool.put(s);
        }
    }
}

impl PooledSleep {
    /// Moves the deadline (cheap when later: see the module docs).
    pub fn reset(&mut self, deadline: Instant) {
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(deadline);
        }
    }
}

impl hyper::rt::Sleep for PooledSleep {}

/// hyper's timer for server connections, backed by a pool.
#[derive(Debug, Clone, Default)]
pub struct PooledTimer {
    pub pool: Arc<SleepPool>,
}

impl hyper::rt::Timer for PooledTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.pool.sleep_until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.pool.sleep_until(deadline.into()))
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<PooledSleep>() {
            Some(s) => s.get_mut().reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pooled_timeouts_fire_at_their_deadline_and_are_reused() {
        let pool = Arc::new(SleepPool::default());
        let never = std::future::pending::<()>;
        let ms = Duration::from_millis;
        assert_eq!(pool.timeout(ms(20), never()).await, Err(()));
        // Reused with a later deadline: fires at the new deadline.
        let start = Instant::now();
        assert_eq!(pool.timeout(ms(100), never()).await, Err(()));
        assert!(start.elapsed() >= ms(100));
        // A future that finishes first wins, and its sleep goes back.
        assert_eq!(pool.timeout(ms(100), async { 7 }).await, Ok(7));
        let pooled: usize = pool
            .shards
            .iter()
            .map(|s| s.0.lock().map_or(0, |v| v.len()))
            .sum();
        assert_eq!(pooled, 1);
        // Registered for a late deadline, then reused for an earlier one.
        let mut late = pool.sleep_until(Instant::now() + Duration::from_secs(60));
        std::future::poll_fn(|cx| {
            assert!(Pin::new(&mut late).poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        drop(late);
        let start = Instant::now();
        assert_eq!(pool.timeout(ms(20), never()).await, Err(()));
        assert!(start.elapsed() >= ms(20) && start.elapsed() < Duration::from_secs(30));
    }
}
