//! A thread of its own for the SQLite writers.
//!
//! A batch transaction is a chain of statements, and with sqlx every statement is a round trip
//! to the connection's own thread: the writer task hands it over, then waits to be woken with
//! the rows. On the server's shared runtime each wake-up queues behind every ready HTTP and
//! WebSocket task, so under load a batch spent most of its time waiting to be polled while it
//! held the database's only write lock, and the whole node's throughput with it. On a
//! single-threaded runtime of their own the writers are polled as soon as their rows arrive.

use std::future::Future;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A current-thread runtime on a named OS thread. Dropping it stops the thread, cancelling
/// whatever still runs there (the store stops its writers first).
#[derive(Debug)]
pub(super) struct WriterThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl WriterThread {
    /// Starts the thread.
    pub(super) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("nightjar-writer".into())
            .spawn(move || {
                // Returns when the sender is used or dropped; the runtime drops here, on its
                // own thread, never inside another runtime.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
        })
    }

    /// Runs `task` on the writer thread.
    pub(super) fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_tasks_on_its_own_thread_and_stops_when_dropped() {
        let thread = WriterThread::start().unwrap();
        let ran = thread
            .spawn(async {
                assert_eq!(std::thread::current().name(), Some("nightjar-writer"));
            })
            .await;
        assert!(ran.is_ok(), "the task ran and its assertion held");
        let (_keep, never) = oneshot::channel::<()>();
        let pending = thread.spawn(async move {
            let _ = never.await;
        });
        drop(thread);
        let cancelled = tokio::time::timeout(std::time::Duration::from_secs(5), pending)
            .await
            .expect("dropping the thread ends its tasks");
        assert!(cancelled.unwrap_err().is_cancelled());
    }
}
