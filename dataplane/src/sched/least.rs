//! The connection-counting schedulers, as IPVS defines them (ip_vs_lc/wlc/sed/nq.c). Ties go
//! to the first backend in list order. Backends of weight 0, and overloaded ones, are never
//! picked.
//!
//! - lc:  least overhead, where overhead = active x 256 + inactive (ip_vs_dest_conn_overhead)
//! - wlc: least overhead / weight
//! - sed: least (active + 1) / weight (shortest expected delay)
//! - nq:  an idle backend (no active connection) at once, else as sed (never queue)

use super::{Conns, PickInput, Scheduler};

/// IPVS's `ip_vs_dest_conn_overhead`.
pub(super) fn overhead(c: Conns) -> i64 {
    (i64::from(c.active) << 8) + i64::from(c.inactive)
}

fn expected_delay(c: Conns) -> i64 {
    i64::from(c.active) + 1
}

/// The backend minimising cost / weight (compared by cross-multiplying, as IPVS does).
fn least_per_weight(input: &PickInput<'_>, cost: fn(Conns) -> i64) -> Option<usize> {
    let mut best: Option<(usize, i64, i64)> = None; // (index, cost, weight)
    for (i, b) in input.backends.iter().enumerate() {
        if !input.available(i) {
            continue;
        }
        let (c, w) = (cost(input.conns.conns(b.id)), i64::from(b.weight));
        match best {
            Some((_, bc, bw)) if bc * w <= c * bw => {}
            _ => best = Some((i, c, w)),
        }
    }
    best.map(|b| b.0)
}

#[derive(Debug)]
pub struct LeastConnection;

impl Scheduler for LeastConnection {
    fn pick(&self, input: &PickInput<'_>, _: &mut super::Cursor) -> Option<usize> {
        let mut best: Option<(usize, i64)> = None;
        for (i, b) in input.backends.iter().enumerate() {
            if !input.available(i) {
                continue;
            }
            let c = overhead(input.conns.conns(b.id));
            if best.is_none_or(|(_, bc)| c < bc) {
                best = Some((i, c));
            }
        }
        best.map(|b| b.0)
    }
}

#[derive(Debug)]
pub struct WeightedLeastConnection;

impl Scheduler for WeightedLeastConnection {
    fn pick(&self, input: &PickInput<'_>, _: &mut super::Cursor) -> Option<usize> {
        least_per_weight(input, overhead)
    }
}

#[derive(Debug)]
pub struct ShortestExpectedDelay;

impl Scheduler for ShortestExpectedDelay {
    fn pick(&self, input: &PickInput<'_>, _: &mut super::Cursor) -> Option<usize> {
        least_per_weight(input, expected_delay)
    }
}

#[derive(Debug)]
pub struct NeverQueue;

impl Scheduler for NeverQueue {
    fn pick(&self, input: &PickInput<'_>, _: &mut super::Cursor) -> Option<usize> {
        let idle = input
            .backends
            .iter()
            .enumerate()
            .position(|(i, b)| input.available(i) && input.conns.conns(b.id).active == 0);
        idle.or_else(|| least_per_weight(input, expected_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, counts, flow};
    use super::super::{Cursor, PickInput, Scheduler};
    use super::*;

    fn pick(s: &dyn Scheduler, weights: &[u32], conns: &[(u32, u32)]) -> Option<usize> {
        let b = backends(weights);
        let counts = counts(conns, &[]);
        s.pick(
            &PickInput {
                backends: &b,
                flow: &flow(1),
                conns: &counts,
            },
            &mut Cursor::default(),
        )
    }

    #[test]
    fn lc_counts_an_active_connection_as_256_inactive_ones() {
        // overheads: 2x256+0 = 512, 1x256+300 = 556, 0+600 = 600
        assert_eq!(
            pick(&LeastConnection, &[1, 1, 1], &[(2, 0), (1, 300), (0, 600)]),
            Some(0)
        );
        // 0x256+255 = 255 beats 1x256+0 = 256
        assert_eq!(
            pick(&LeastConnection, &[1, 1], &[(1, 0), (0, 255)]),
            Some(1)
        );
        // weights do not matter to lc, except 0
        assert_eq!(
            pick(&LeastConnection, &[1, 100], &[(1, 0), (2, 0)]),
            Some(0)
        );
        assert_eq!(pick(&LeastConnection, &[0, 1], &[(0, 0), (5, 5)]), Some(1));
        // ties go to the first
        assert_eq!(
            pick(&LeastConnection, &[1, 1, 1], &[(3, 0), (1, 0), (1, 0)]),
            Some(1)
        );
    }

    #[test]
    fn wlc_divides_overhead_by_weight() {
        // overhead/weight: 512/1 = 512, 768/3 = 256, 1024/2 = 512
        assert_eq!(
            pick(
                &WeightedLeastConnection,
                &[1, 3, 2],
                &[(2, 0), (3, 0), (4, 0)]
            ),
            Some(1)
        );
        // 256/1 vs 512/2: equal -> first
        assert_eq!(
            pick(&WeightedLeastConnection, &[1, 2], &[(1, 0), (2, 0)]),
            Some(0)
        );
        assert_eq!(
            pick(&WeightedLeastConnection, &[0, 0], &[(0, 0), (0, 0)]),
            None
        );
    }

    #[test]
    fn sed_uses_active_plus_one_over_weight() {
        // (a+1)/w: (1+1)/1 = 2, (4+1)/3 = 1.67, (2+1)/1 = 3 -> B; inactive ignored
        assert_eq!(
            pick(
                &ShortestExpectedDelay,
                &[1, 3, 1],
                &[(1, 0), (4, 900), (2, 0)]
            ),
            Some(1)
        );
        // an idle slow server (1/1 = 1) vs a busy fast one ((1+1)/5 = 0.4): sed queues on the fast one
        assert_eq!(
            pick(&ShortestExpectedDelay, &[1, 5], &[(0, 0), (1, 0)]),
            Some(1)
        );
    }

    #[test]
    fn nq_prefers_any_idle_backend_then_behaves_like_sed() {
        // the same case as above: nq never queues while a server is idle
        assert_eq!(pick(&NeverQueue, &[1, 5], &[(0, 0), (1, 0)]), Some(0));
        // idle but weight 0 does not count
        assert_eq!(pick(&NeverQueue, &[0, 5], &[(0, 0), (1, 0)]), Some(1));
        // none idle: sed's choice
        assert_eq!(
            pick(&NeverQueue, &[1, 3, 1], &[(1, 0), (4, 0), (2, 0)]),
            Some(1)
        );
    }
}
