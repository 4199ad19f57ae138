//! Connection limits per backend (ipvsadm `-x` / `-y`), shared by every worker: IPVS's
//! overload flag.
//!
//! Each worker writes its own count of a backend's connections (active + inactive: IPVS's
//! `ip_vs_dest_totalconns`) into its own row of the board when a flow is created or removed,
//! never into another worker's row, so the rows never bounce between caches. When the backend
//! has an upper threshold, the worker that created or removed the flow then adds up the rows
//! and moves the flag as IPVS does:
//!
//! - a connection bound (`ip_vs_bind_dest`): overloaded once the total reaches the upper
//!   threshold;
//! - a connection unbound (`ip_vs_unbind_dest`): no longer overloaded once the total is below
//!   the lower threshold, or, with no lower threshold, below three quarters of the upper one
//!   (`total * 4 < upper * 3`).
//!
//! A state change of a flow (SYN to established) binds and unbinds nothing, as in IPVS. An
//! overloaded backend takes no new flow from any scheduler; its flows go on.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use crate::service::BackendId;

#[derive(Debug, Default)]
struct Limit {
    upper: AtomicU32,
    lower: AtomicU32,
    overloaded: AtomicBool,
}

/// The workers' connection counts per backend and each backend's limits.
#[derive(Debug)]
pub struct ConnBoard {
    /// Per worker, per backend id: that worker's connections to the backend.
    rows: Box<[Box<[AtomicU32]>]>,
    limits: Box<[Limit]>,
}

impl ConnBoard {
    /// A board for `workers` rows and backend ids below `max_backends`.
    pub fn new(workers: usize, max_backends: u32) -> Self {
        let row = || (0..max_backends).map(|_| AtomicU32::new(0)).collect();
        ConnBoard {
            rows: (0..workers.max(1)).map(|_| row()).collect(),
            limits: (0..max_backends).map(|_| Limit::default()).collect(),
        }
    }

    pub fn workers(&self) -> usize {
        self.rows.len()
    }

    /// Sets a backend's thresholds (0: none). As IPVS's `__ip_vs_update_dest`, removing or
    /// raising the upper threshold lifts the overload at once; otherwise it waits for the next
    /// connection bound or unbound.
    pub fn set_limits(&self, b: BackendId, upper: u32, lower: u32) {
        let Some(l) = self.limits.get(b.0 as usize) else {
            return;
        };
        let old = l.upper.load(Relaxed);
        if old == upper && l.lower.load(Relaxed) == lower {
            return;
        }
        l.upper.store(upper, Relaxed);
        l.lower.store(lower, Relaxed);
        if upper == 0 || upper > old {
            l.overloaded.store(false, Relaxed);
        }
    }

    #[inline]
    pub fn overloaded(&self, b: BackendId) -> bool {
        self.limits
            .get(b.0 as usize)
            .is_some_and(|l| l.overloaded.load(Relaxed))
    }

    /// Every worker's connections to `b`.
    pub fn total(&self, b: BackendId) -> u32 {
        let i = b.0 as usize;
        self.rows
            .iter()
            .map(|r| r.get(i).map_or(0, |c| c.load(Relaxed)))
            .fold(0u32, u32::saturating_add)
    }

    /// Worker `row` now has `count` connections to `b`, after binding one (`bound`) or
    /// unbinding one.
    #[inline]
    pub(crate) fn record(&self, row: usize, b: BackendId, count: u32, bound: bool) {
        let i = b.0 as usize;
        if let Some(c) = self.rows.get(row).and_then(|r| r.get(i)) {
            c.store(count, Relaxed);
        }
        let Some(l) = self.limits.get(i) else {
            return;
        };
        let upper = l.upper.load(Relaxed);
        if upper == 0 {
            return;
        }
        let total = self.total(b);
        if bound {
            if total >= upper {
                l.overloaded.store(true, Relaxed);
            }
        } else if l.overloaded.load(Relaxed) {
            let lower = l.lower.load(Relaxed);
            let below = if lower != 0 {
                total < lower
            } else {
                u64::from(total) * 4 < u64::from(upper) * 3
            };
            if below {
                l.overloaded.store(false, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_moves_as_ipvs_moves_it() {
        let b = BackendId(3);
        let board = ConnBoard::new(2, 8);
        board.set_limits(b, 4, 2);
        // Two workers bind connections: 2 + 1, then 2 + 2 reaches the upper threshold.
        board.record(0, b, 1, true);
        board.record(0, b, 2, true);
        board.record(1, b, 1, true);
        assert!(!board.overloaded(b), "3 of 4");
        board.record(1, b, 2, true);
        assert!(board.overloaded(b), "4 of 4");
        assert_eq!(board.total(b), 4);
        // Unbinding down to the lower threshold keeps it; below it lifts it.
        board.record(0, b, 1, false);
        board.record(0, b, 0, false);
        assert!(board.overloaded(b), "2 is not below a lower threshold of 2");
        board.record(1, b, 1, false);
        assert!(!board.overloaded(b), "1 < 2");
        // Binding again does not set it before the upper threshold.
        board.record(1, b, 2, true);
        assert!(!board.overloaded(b));
    }

    #[test]
    fn without_a_lower_threshold_three_quarters_of_the_upper_one_lift_it() {
        let b = BackendId(0);
        let board = ConnBoard::new(1, 1);
        board.set_limits(b, 8, 0);
        for n in 1..=8 {
            board.record(0, b, n, true);
        }
        assert!(board.overloaded(b));
        board.record(0, b, 7, false);
        board.record(0, b, 6, false);
        assert!(board.overloaded(b), "6 * 4 = 24 is not below 8 * 3");
        board.record(0, b, 5, false);
        assert!(!board.overloaded(b), "5 * 4 < 24");
    }

    #[test]
    fn raising_or_removing_the_upper_threshold_lifts_the_overload_lowering_it_waits() {
        let b = BackendId(1);
        let board = ConnBoard::new(1, 2);
        board.set_limits(b, 2, 0);
        board.record(0, b, 1, true);
        board.record(0, b, 2, true);
        assert!(board.overloaded(b));
        board.set_limits(b, 3, 0);
        assert!(!board.overloaded(b), "raised");
        board.set_limits(b, 2, 0);
        assert!(!board.overloaded(b), "lowered: no bind or unbind yet");
        board.record(0, b, 3, true);
        assert!(board.overloaded(b));
        board.set_limits(b, 0, 0);
        assert!(!board.overloaded(b), "removed");
        board.record(0, b, 4, true);
        assert!(!board.overloaded(b), "no threshold, no flag");
        assert!(!board.overloaded(BackendId(99)), "beyond the board");
    }
}
