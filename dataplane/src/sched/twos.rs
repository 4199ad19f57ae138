//! Weighted random two choices, as IPVS's ip_vs_twos.c: two backends are drawn at random, each
//! with a chance in proportion to its weight, and the flow goes to the one with the smaller
//! overhead (active x 256 + inactive) per weight; the first drawn on a tie.
//!
//! As IPVS: the draws are uniform in 0..=total weight (the first available backend is one
//! weight more likely than its share), overloaded and weight-0 backends are never drawn. The
//! random numbers are each worker's own (xorshift64*, seeded by the first flow it schedules).

use super::least::overhead;
use super::{Cursor, PickInput, Scheduler};

#[derive(Debug)]
pub struct TwoChoices;

fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

impl Scheduler for TwoChoices {
    fn pick(&self, input: &PickInput<'_>, cursor: &mut Cursor) -> Option<usize> {
        let b = input.backends;
        let total: u64 = (0..b.len())
            .filter(|&i| input.available(i))
            .map(|i| u64::from(b[i].weight))
            .sum();
        if total == 0 {
            return None;
        }
        if cursor.random == 0 {
            cursor.random = input.flow.stable_hash() | 1;
        }
        let mut r1 = (next_random(&mut cursor.random) % (total + 1)) as i64;
        let mut r2 = (next_random(&mut cursor.random) % (total + 1)) as i64;
        let (mut c1, mut c2) = (None, None);
        for i in (0..b.len()).filter(|&i| input.available(i)) {
            let w = i64::from(b[i].weight);
            r1 -= w;
            r2 -= w;
            if r1 <= 0 && c1.is_none() {
                c1 = Some(i);
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some(i);
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        let (c1, c2) = (c1?, c2?);
        let cost = |i: usize| overhead(input.conns.conns(b[i].id));
        let (w1, w2) = (i64::from(b[c1].weight), i64::from(b[c2].weight));
        Some(if w2 * cost(c1) > w1 * cost(c2) {
            c2
        } else {
            c1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, counts, flow};
    use super::*;

    fn picks(weights: &[u32], conns: &[(u32, u32)], over: &[u32], n: usize) -> Vec<usize> {
        let b = backends(weights);
        let c = counts(conns, over);
        let mut cursor = Cursor::default();
        let mut seen = vec![0; weights.len()];
        for i in 0..n {
            let p = TwoChoices.pick(
                &PickInput {
                    backends: &b,
                    flow: &flow(i as u32),
                    conns: &c,
                },
                &mut cursor,
            );
            seen[p.expect("a backend")] += 1;
        }
        seen
    }

    #[test]
    fn the_less_loaded_of_two_draws_wins() {
        // Backend 0 is busy: it wins only when both draws are 0, (2/4)^2 = 1/4 of the time
        // (draws in 0..=3, backend 0 owns 0 and 1).
        let seen = picks(&[1, 1, 1], &[(10, 0), (0, 0), (0, 0)], &[], 40_000);
        let share = seen[0] as f64 / 40_000.0;
        assert!((share - 0.25).abs() < 0.02, "{seen:?}");
        // With no connections, ties go to the first draw: shares follow the weights (and the
        // first available backend's extra draw): 2/5, 1/5, 2/5 for weights 1, 1, 2.
        let seen = picks(&[1, 1, 2], &[], &[], 50_000);
        for (i, want) in [0.4, 0.2, 0.4].iter().enumerate() {
            let share = seen[i] as f64 / 50_000.0;
            assert!((share - want).abs() < 0.02, "{i}: {seen:?}");
        }
    }

    #[test]
    fn overloaded_and_weight_zero_backends_are_never_drawn() {
        let seen = picks(&[1, 0, 1, 1], &[], &[2], 1000);
        assert_eq!((seen[1], seen[2]), (0, 0));
        assert_eq!(seen[0] + seen[3], 1000);
        let b = backends(&[0, 1]);
        let none = TwoChoices.pick(
            &PickInput {
                backends: &b,
                flow: &flow(0),
                conns: &counts(&[], &[1]),
            },
            &mut Cursor::default(),
        );
        assert_eq!(none, None);
    }
}
