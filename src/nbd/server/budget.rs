//! The memory for reply payloads, shared by every connection.
//!
//! A read reply is sent in pieces of at most [`PIECE`] bytes, each read from the device into a
//! buffer granted here and freed once written, so the data in flight is bounded however many
//! 32 MiB reads clients pipeline. A grant comes from the connection's own *floor* (one piece
//! that only it may use) or from the shared *pool* (`reply_memory` bytes). The floor is what
//! keeps every client served while others hold the whole pool — clients that pipeline reads
//! and never read the replies hold their grants until their writes time out, and without a
//! floor each newcomer would wait for them. A connection that holds its floor and all the pool
//! it can get waits for its own writes to finish: that is the back-pressure, as its workers
//! stop taking requests and its reader stops reading them once the request queue is full.
//!
//! Bound: `reply_memory + max_clients * PIECE` bytes of reply data, whatever the clients do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::lock;

/// Largest piece of a reply read into memory at once.
pub const PIECE: usize = 256 * 1024;

/// The shared pool.
pub(super) struct Budget {
    limit: usize,
    used: Mutex<usize>,
    cv: Condvar,
}

/// One connection's claim on the budget.
#[derive(Default)]
pub(super) struct Floor {
    busy: AtomicBool,
}

/// Memory granted for one piece; returned when dropped.
pub(super) struct Grant<'a> {
    pub buf: Vec<u8>,
    budget: &'a Budget,
    floor: &'a Floor,
    /// Bytes taken from the pool; `None`: the floor.
    pooled: Option<usize>,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: Mutex::new(0),
            cv: Condvar::new(),
        }
    }

    /// A zeroed buffer of `len` (≤ [`PIECE`]) bytes: from the floor when it is free, else from
    /// the pool, else after waiting for either. `None` when `cancelled()` turns true first
    /// (the connection is being closed).
    pub fn grant<'a>(
        &'a self,
        floor: &'a Floor,
        len: usize,
        cancelled: impl Fn() -> bool,
    ) -> Option<Grant<'a>> {
        let len = len.min(PIECE);
        let mut used = lock(&self.used);
        let pooled = loop {
            if !floor.busy.load(Ordering::SeqCst) {
                floor.busy.store(true, Ordering::SeqCst);
                break None;
            }
            if *used + len <= self.limit {
                *used += len;
                break Some(len);
            }
            if cancelled() {
                return None;
            }
            // Woken by every release; the timeout only serves to notice `cancelled`.
            used = self
                .cv
                .wait_timeout(used, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(used);
        Some(Grant {
            buf: vec![0u8; len],
            budget: self,
            floor,
            pooled,
        })
    }

    /// Bytes of the pool in use (for tests).
    #[cfg(test)]
    fn used(&self) -> usize {
        *lock(&self.used)
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.buf = Vec::new(); // free before waking a waiter
        let mut used = lock(&self.budget.used);
        match self.pooled {
            None => self.floor.busy.store(false, Ordering::SeqCst),
            Some(n) => *used -= n,
        }
        drop(used);
        self.budget.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_floor_serves_a_connection_when_the_pool_is_held() {
        let b = Arc::new(Budget::new(2 * PIECE));
        let (hog, fair) = (Floor::default(), Floor::default());
        let g1 = b.grant(&hog, PIECE, || false).unwrap(); // hog's floor
        let g2 = b.grant(&hog, PIECE, || false).unwrap(); // pool
        let g3 = b.grant(&hog, PIECE, || false).unwrap(); // pool, now full
        assert_eq!(b.used(), 2 * PIECE);
        assert!(
            b.grant(&hog, PIECE, || true).is_none(),
            "pool and floor taken"
        );
        let g = b.grant(&fair, PIECE, || false).expect("its own floor");
        assert_eq!(g.buf.len(), PIECE);
        drop((g1, g2, g3, g));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_waiter_gets_memory_when_a_grant_is_returned() {
        let b = Arc::new(Budget::new(0));
        let f = Arc::new(Floor::default());
        let g = b.grant(&f, 10, || false).unwrap();
        let (b2, f2) = (b.clone(), f.clone());
        let t = std::thread::spawn(move || b2.grant(&f2, 10, || false).map(|g| g.buf.len()));
        std::thread::sleep(Duration::from_millis(50));
        drop(g);
        assert_eq!(t.join().unwrap(), Some(10));
    }
}
