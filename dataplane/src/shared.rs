//! The configuration shared with the workers (docs/architecture.md, "The snapshot"): the
//! control side publishes a whole new immutable [`Snapshot`]; each worker looks for a newer
//! one once per loop iteration and, when it takes one, reports its epoch in its own
//! cache-line-padded slot.
//!
//! Reclamation follows the quiescent-state idea of DPDK's rte_rcu_qsbr and the left-right
//! crate: the writer keeps the snapshot it replaced until every worker has reported the new
//! epoch. A worker that moves on drops its reference to the old snapshot *before* it reports,
//! so the writer's is always the last one: snapshots are freed on the control side, never on an
//! lcore. The pointer itself is an `arc_swap::ArcSwap`: readers never wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::snapshot::Snapshot;

/// One worker's report: the epoch of the snapshot it is using. u64::MAX: not running.
#[derive(Debug)]
#[repr(align(64))]
struct Seen(AtomicU64);

pub const NOT_RUNNING: u64 = u64::MAX;

#[derive(Debug)]
pub struct SharedSnapshot {
    current: ArcSwap<Snapshot>,
    /// The epoch of `current`, stored after it. A worker reads this word every iteration and
    /// loads `current` only when it differs from the epoch it holds: an `ArcSwap` load takes
    /// and gives back a debt slot, two locked instructions, on every loop iteration otherwise.
    published: AtomicU64,
    seen: Box<[Seen]>,
}

/// A worker's handle: the snapshot it holds and where it reports.
#[derive(Debug)]
pub struct Reader {
    worker: usize,
    held: Arc<Snapshot>,
}

impl SharedSnapshot {
    pub fn new(initial: Snapshot, workers: usize) -> Arc<SharedSnapshot> {
        Arc::new(SharedSnapshot {
            published: AtomicU64::new(initial.epoch),
            current: ArcSwap::from_pointee(initial),
            seen: (0..workers)
                .map(|_| Seen(AtomicU64::new(NOT_RUNNING)))
                .collect(),
        })
    }

    pub fn workers(&self) -> usize {
        self.seen.len()
    }

    /// The current snapshot (for the control side).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A reader for worker `worker`, holding the current snapshot.
    pub fn reader(&self, worker: usize) -> Reader {
        let held = self.current.load_full();
        self.seen[worker].0.store(held.epoch, Ordering::Release);
        Reader { worker, held }
    }

    /// Replaces the snapshot and returns the one it replaced. The caller keeps that one until
    /// [`all_seen`](Self::all_seen) says every running worker has moved on, then drops it.
    pub fn swap(&self, next: Snapshot) -> Arc<Snapshot> {
        let epoch = next.epoch;
        let old = self.current.swap(Arc::new(next));
        // After the pointer: a worker that reads this epoch then loads the new snapshot.
        self.published.store(epoch, Ordering::Release);
        old
    }

    /// True when every running worker reports `epoch` or later.
    pub fn all_seen(&self, epoch: u64) -> bool {
        self.seen.iter().all(|s| {
            let e = s.0.load(Ordering::Acquire);
            e == NOT_RUNNING || e >= epoch
        })
    }

    /// The running workers that do not report `epoch` yet.
    pub fn lagging(&self, epoch: u64) -> Vec<usize> {
        (0..self.seen.len())
            .filter(|w| {
                let e = self.seen[*w].0.load(Ordering::Acquire);
                e != NOT_RUNNING && e < epoch
            })
            .collect()
    }

    /// Waits (polling, on the control side) until every running worker uses `epoch`.
    pub fn wait_seen(&self, epoch: u64, timeout: Duration) -> bool {
        let start = Instant::now();
        let deadline = start + timeout;
        while !self.all_seen(epoch) {
            let now = Instant::now();
            if now > deadline {
                return false;
            }
            // A running worker looks once per burst, microseconds apart: yielding (not
            // sleeping, whose timer slack alone is 50 µs) sees it take the snapshot up
            // soonest; a worker that is slower than that is waited for in short sleeps.
            if now - start < Duration::from_micros(200) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        true
    }
}

impl Reader {
    /// Once per burst (also for an empty one): picks up a newer snapshot if there is one and
    /// then reports its epoch (the old one is dropped first). No allocation, no lock; no free
    /// (see the module doc). When nothing was published, one load of a word that stays in
    /// the cache.
    #[inline]
    pub fn refresh(&mut self, shared: &SharedSnapshot) -> &Snapshot {
        if shared.published.load(Ordering::Acquire) != self.held.epoch {
            self.held = shared.current.load_full();
            shared.seen[self.worker]
                .0
                .store(self.held.epoch, Ordering::Release);
        }
        &self.held
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.held
    }

    /// Reports that this worker no longer runs (publishing does not wait for it).
    pub fn retire(self, shared: &SharedSnapshot) {
        let Reader { worker, held } = self;
        drop(held);
        shared.seen[worker].0.store(NOT_RUNNING, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotConfig;

    fn snap(epoch: u64) -> Snapshot {
        Snapshot::build(SnapshotConfig::default(), epoch)
    }

    #[test]
    fn a_worker_picks_up_a_new_snapshot_at_its_next_burst_and_the_writer_frees_the_old() {
        let shared = SharedSnapshot::new(snap(1), 2);
        let mut r0 = shared.reader(0);
        assert!(shared.all_seen(1));
        assert!(!shared.all_seen(2));
        let old = shared.swap(snap(2));
        assert_eq!(
            r0.snapshot().epoch,
            1,
            "nothing changes under a worker mid-burst"
        );
        assert!(
            !shared.all_seen(2),
            "worker 1 has not started: it does not count, worker 0 has not moved"
        );
        assert_eq!(r0.refresh(&shared).epoch, 2);
        assert!(
            shared.all_seen(2),
            "worker 1 never ran, so only worker 0 counts"
        );
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "the writer holds the last reference to the old one"
        );
        drop(old);
        let r1 = shared.reader(1);
        shared.swap(snap(3));
        assert!(
            !shared.wait_seen(3, Duration::from_millis(5)),
            "running workers that did not refresh"
        );
        assert_eq!(shared.lagging(3), vec![0, 1]);
        r1.retire(&shared);
        r0.refresh(&shared);
        assert!(shared.wait_seen(3, Duration::from_millis(5)));
    }

    #[test]
    fn a_refresh_without_a_publish_keeps_its_snapshot_and_writes_nothing_shared() {
        let shared = SharedSnapshot::new(snap(1), 1);
        let mut r = shared.reader(0);
        let held = Arc::as_ptr(&r.held);
        // Overwritten here to see whether a refresh writes it again: it must not (a worker's
        // slot is written only when it takes a new snapshot).
        shared.seen[0].0.store(0, Ordering::Release);
        for _ in 0..3 {
            assert_eq!(r.refresh(&shared).epoch, 1);
        }
        assert_eq!(
            Arc::as_ptr(&r.held),
            held,
            "the same snapshot, not loaded again"
        );
        assert_eq!(shared.seen[0].0.load(Ordering::Acquire), 0);
        // A publish: taken at the next refresh, and reported.
        let old = shared.swap(snap(2));
        assert_eq!(r.refresh(&shared).epoch, 2);
        assert_eq!(shared.seen[0].0.load(Ordering::Acquire), 2);
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "the reader let go of the old one"
        );
    }

    #[test]
    fn readers_on_other_threads_see_whole_snapshots_while_the_writer_publishes() {
        let shared = SharedSnapshot::new(snap(1), 2);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Readers exist (and count) before the writer starts, as worker lcores do.
        let readers: Vec<Reader> = (0..2).map(|w| shared.reader(w)).collect();
        let handles: Vec<_> = readers
            .into_iter()
            .map(|mut r| {
                let (shared, stop) = (shared.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut last = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let e = r.refresh(&shared).epoch;
                        assert!(e >= last, "epochs never go back");
                        last = e;
                    }
                    r.retire(&shared);
                    last
                })
            })
            .collect();
        for e in 2..=500 {
            let old = shared.swap(snap(e));
            assert!(
                shared.wait_seen(e, Duration::from_secs(5)),
                "epoch {e} seen"
            );
            assert_eq!(Arc::strong_count(&old), 1);
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            assert_eq!(h.join().unwrap(), 500);
        }
    }
}
