//! Graceful shutdown of server connections: on shutdown every watched
//! connection is told to finish its in-flight requests and close, and the
//! caller waits until all have ended.
//!
//! hyper-util's `GracefulShutdown` does the same, but its watch channel is
//! polled on every poll of every connection, taking the channel's lock each
//! time. Here a connection registers its task's waker once, and a poll
//! costs one atomic load until shutdown begins.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;

use crate::http1::server::ShutdownWatch;

#[derive(Debug, Default)]
struct Inner {
    shutting_down: AtomicBool,
    conns: Mutex<Conns>,
    /// Signalled when the last connection ends.
    all_done: Notify,
}

#[derive(Debug, Default)]
struct Conns {
    next_id: u64,
    /// Connections not yet ended (tickets not yet dropped).
    active: usize,
    /// The tasks to wake on shutdown, by ticket id.
    wakers: HashMap<u64, Waker>,
}

impl Inner {
    fn conns(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Watches connections for graceful shutdown.
#[derive(Debug, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// A place for one connection, counted from now on (before a TLS
    /// handshake, say) until the ticket or its watched connection drops.
    pub fn ticket(&self) -> Ticket {
        let mut conns = self.inner.conns();
        conns.active += 1;
        conns.next_id += 1;
        Ticket {
            inner: self.inner.clone(),
            id: conns.next_id,
            waker: None,
        }
    }

    /// Watches `conn` (see `ticket`).
    pub fn watch<C: GracefulConnection>(&self, conn: C) -> Watched<C> {
        self.ticket().watch(conn)
    }

    /// Connections not yet ended.
    pub fn count(&self) -> usize {
        self.inner.conns().active
    }

    /// Tells every connection to shut down gracefully, then waits until
    /// all have ended.
    pub async fn shutdown(self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self.inner.conns().wakers.drain().map(|(_, w)| w).collect();
        for w in wakers {
            w.wake();
        }
        loop {
            let notified = self.inner.all_done.notified();
            if self.inner.conns().active == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One connection's place in a `Drain`.
#[derive(Debug)]
pub struct Ticket {
    inner: Arc<Inner>,
    id: u64,
    /// The waker registered for this connection's task.
    waker: Option<Waker>,
}

impl Ticket {
    pub fn watch<C: GracefulConnection>(self, conn: C) -> Watched<C> {
        Watched {
            conn,
            ticket: self,
            shutdown_sent: false,
        }
    }

    /// Whether shutdown has begun; registers the task to be woken when it
    /// does (once per task, not once per poll).
    pub fn poll_shutting_down(&mut self, cx: &Context<'_>) -> bool {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            self.inner.conns().wakers.insert(self.id, w.clone());
            self.waker = Some(w);
        }
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
}

impl Ticket {
    /// Whether shutdown has begun (registers nothing).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut conns = self.inner.conns();
        conns.wakers.remove(&self.id);
        conns.active -= 1;
        if conns.active == 0 {
            // A stored permit if the shutdown is not waiting yet.
            self.inner.all_done.notify_one();
        }
    }
}

impl ShutdownWatch for Ticket {
    fn poll_shutting_down(&mut self, cx: &Context<'_>) -> bool {
        Ticket::poll_shutting_down(self, cx)
    }

    fn is_shutting_down(&self) -> bool {
        Ticket::is_shutting_down(self)
    }

    fn watch<C>(self, conn: C) -> impl Future<Output = C::Output> + Send
    where
        C: GracefulConnection + Send,
        C::Output: Send,
    {
        Ticket::watch(self, conn)
    }
}

pin_project_lite::pin_project! {
    /// A connection that shuts down gracefully when its `Drain` does.
    pub struct Watched<C> {
        #[pin]
        conn: C,
        ticket: Ticket,
        shutdown_sent: bool,
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.shutdown_sent && this.ticket.poll_shutting_down(cx) {
            *this.shutdown_sent = true;
            this.conn.as_mut().graceful_shutdown();
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shutdown_waits_until_every_ticket_is_gone() {
        let drain = Drain::new();
        let (first, second) = (drain.ticket(), drain.ticket());
        drop(first);
        assert_eq!(drain.count(), 1);
        let done = tokio::spawn(drain.shutdown());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!done.is_finished());
        drop(second);
        let finished = tokio::time::timeout(Duration::from_secs(5), done).await;
        assert!(matches!(finished, Ok(Ok(()))));
    }
}
