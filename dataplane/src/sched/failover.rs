//! The weight-ordered schedulers of IPVS: weighted failover (ip_vs_fo.c) and weighted overflow
//! (ip_vs_ovf.c). Both walk the backends in list order and keep the first of the highest
//! weight, so ties go to the backend listed first.
//!
//! - fo: every new flow to the available backend (weight above 0, not overloaded) of the
//!   highest weight; the others are standbys, in weight order.
//! - ovf: the same, but a backend whose active connections exceed its weight is passed over
//!   too, so flows overflow to the next weight down once it holds `weight` + 1 established
//!   connections (IPVS compares `activeconns > weight`).

use super::{Cursor, PickInput, Scheduler};

/// The first backend of the highest weight among those `take` accepts.
fn highest(input: &PickInput<'_>, take: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, b) in input.backends.iter().enumerate() {
        if !input.available(i) || !take(i) {
            continue;
        }
        if best.is_none_or(|(_, w)| b.weight > w) {
            best = Some((i, b.weight));
        }
    }
    best.map(|b| b.0)
}

#[derive(Debug)]
pub struct WeightedFailover;

impl Scheduler for WeightedFailover {
    fn pick(&self, input: &PickInput<'_>, _: &mut Cursor) -> Option<usize> {
        highest(input, |_| true)
    }
}

#[derive(Debug)]
pub struct WeightedOverflow;

impl Scheduler for WeightedOverflow {
    fn pick(&self, input: &PickInput<'_>, _: &mut Cursor) -> Option<usize> {
        highest(input, |i| {
            let b = &input.backends[i];
            input.conns.conns(b.id).active <= b.weight
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, counts, flow};
    use super::*;

    fn pick(
        s: &dyn Scheduler,
        weights: &[u32],
        conns: &[(u32, u32)],
        over: &[u32],
    ) -> Option<usize> {
        let b = backends(weights);
        s.pick(
            &PickInput {
                backends: &b,
                flow: &flow(0),
                conns: &counts(conns, over),
            },
            &mut Cursor::default(),
        )
    }

    #[test]
    fn fo_takes_the_first_of_the_highest_weight_that_is_available() {
        let fo = WeightedFailover;
        assert_eq!(
            pick(&fo, &[1, 3, 2, 3], &[], &[]),
            Some(1),
            "ties: the first"
        );
        assert_eq!(pick(&fo, &[1, 3, 2, 3], &[], &[1]), Some(3), "overloaded");
        assert_eq!(pick(&fo, &[1, 3, 2, 3], &[], &[1, 3]), Some(2));
        assert_eq!(pick(&fo, &[1, 0, 2, 0], &[], &[2]), Some(0));
        assert_eq!(
            pick(&fo, &[0, 0], &[], &[]),
            None,
            "weight 0 is never taken"
        );
        assert_eq!(
            pick(&fo, &[5, 1], &[(1000, 1000), (0, 0)], &[]),
            Some(0),
            "connections do not matter"
        );
    }

    #[test]
    fn ovf_overflows_once_active_connections_exceed_the_weight() {
        let ovf = WeightedOverflow;
        let w = [2, 3, 1];
        assert_eq!(
            pick(&ovf, &w, &[(0, 0), (3, 0), (0, 0)], &[]),
            Some(1),
            "3 <= 3"
        );
        assert_eq!(
            pick(&ovf, &w, &[(0, 0), (4, 0), (0, 0)], &[]),
            Some(0),
            "4 > 3"
        );
        assert_eq!(pick(&ovf, &w, &[(3, 0), (4, 0), (0, 0)], &[]), Some(2));
        assert_eq!(
            pick(&ovf, &w, &[(3, 0), (4, 0), (2, 0)], &[]),
            None,
            "all full"
        );
        assert_eq!(
            pick(&ovf, &w, &[(0, 0), (0, 500), (0, 0)], &[]),
            Some(1),
            "inactive connections do not count"
        );
        assert_eq!(pick(&ovf, &w, &[], &[1]), Some(0), "overloaded");
        assert_eq!(
            pick(&ovf, &[2, 2], &[(2, 0), (0, 0)], &[]),
            Some(0),
            "ties: the first"
        );
    }
}
