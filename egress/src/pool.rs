//! The scan pool: decoding and scanning of request bodies run here, on blocking threads, at
//! most one job per permit, so a few heavy bodies never stall the async threads that carry
//! every other connection.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Bounded: at most `permits` jobs run at once; the others wait their turn (asynchronously).
#[derive(Clone)]
pub struct ScanPool {
    permits: Arc<Semaphore>,
}

impl ScanPool {
    /// One permit per core the process may use (at least one).
    pub fn per_core() -> ScanPool {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        ScanPool::new(n)
    }

    pub fn new(permits: usize) -> ScanPool {
        ScanPool {
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// Runs `job` on a blocking thread once a permit is free. A panic in the job is re-raised
    /// here, as if it had run inline.
    pub async fn run<T, F>(&self, job: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the scan pool's semaphore is never closed");
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        });
        match handle.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
