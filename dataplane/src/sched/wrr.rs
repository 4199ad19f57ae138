//! Weighted round robin, the same interleaved order as Linux IPVS's ip_vs_wrr (since 3.10):
//! a current weight `cw` starts at the largest weight and falls by the weights' gcd after
//! each pass over the list; a pass picks, in list order, every backend whose weight is at
//! least `cw`. Weights 4:3:2 give A A B A B C A B C, then again.

use super::{Cursor, PickInput, Scheduler};

#[derive(Debug)]
pub struct WeightedRoundRobin {
    generation: u64,
    /// gcd of the positive weights (IPVS's di).
    di: i64,
    /// the largest weight, less di - 1 (IPVS's mw).
    mw: i64,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl WeightedRoundRobin {
    pub fn new(weights: &[u32], generation: u64) -> Self {
        let g = weights
            .iter()
            .filter(|w| **w > 0)
            .fold(0, |g, w| if g == 0 { *w } else { gcd(g, *w) });
        let di = i64::from(g.max(1));
        let max = i64::from(weights.iter().copied().max().unwrap_or(0));
        let mw = if max == 0 { 0 } else { max - (di - 1) };
        WeightedRoundRobin { generation, di, mw }
    }
}

impl Scheduler for WeightedRoundRobin {
    fn pick(&self, input: &PickInput<'_>, cursor: &mut Cursor) -> Option<usize> {
        if cursor.generation != self.generation {
            // IPVS's dest_changed: back to the head; keep cw if it still fits the new weights.
            let cw = cursor.current_weight;
            let cw = if cursor.generation == 0 || cw > self.mw || cw == 0 {
                self.mw
            } else if self.di > 1 {
                (cw / self.di) * self.di + 1
            } else {
                cw
            };
            *cursor = Cursor {
                generation: self.generation,
                position: None,
                current_weight: cw,
                random: cursor.random,
            };
        }
        if self.mw == 0 {
            return None;
        }
        let b = input.backends;
        // At most two passes per weight level are needed; the bound keeps a bug from spinning.
        let mut next = cursor.position.map_or(0, |p| p + 1);
        for _ in 0..(b.len() + 1) * (self.mw / self.di + 2) as usize {
            if next >= b.len() {
                // end of the list: lower the weight and start over
                cursor.current_weight -= self.di;
                if cursor.current_weight <= 0 {
                    cursor.current_weight = self.mw;
                }
                next = 0;
                continue;
            }
            if i64::from(b[next].weight) >= cursor.current_weight
                && !input.conns.overloaded(b[next].id)
            {
                cursor.position = Some(next);
                return Some(next);
            }
            next += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::sequence;
    use super::*;

    fn names(seq: &[Option<usize>]) -> String {
        seq.iter()
            .map(|p| p.map_or('-', |i| (b'A' + i as u8) as char))
            .collect()
    }

    #[test]
    fn weights_4_3_2_interleave_like_ipvs() {
        let w = [4, 3, 2];
        let s = WeightedRoundRobin::new(&w, 1);
        assert_eq!(names(&sequence(&s, &w, 18)), "AABABCABCAABABCABC");
    }

    #[test]
    fn a_common_divisor_is_stepped_over() {
        // gcd 2: mw = 6 - 1 = 5, cw 5, 3, 1 -> A, A B, A B C (per 6 picks: 3:2:1 as 6:4:2).
        let w = [6, 4, 2];
        let s = WeightedRoundRobin::new(&w, 1);
        assert_eq!(names(&sequence(&s, &w, 12)), "AABABCAABABC");
    }

    #[test]
    fn equal_weights_are_plain_round_robin_and_zero_weights_are_skipped() {
        let w = [1, 0, 1, 1];
        let s = WeightedRoundRobin::new(&w, 1);
        assert_eq!(names(&sequence(&s, &w, 6)), "ACDACD");
        let none = WeightedRoundRobin::new(&[0, 0], 1);
        assert_eq!(sequence(&none, &[0, 0], 2), [None, None]);
    }

    #[test]
    fn shares_are_exact_over_a_period() {
        let w = [5, 1, 3, 7];
        let s = WeightedRoundRobin::new(&w, 1);
        let seq = sequence(&s, &w, 16 * 10);
        for (i, wi) in w.iter().enumerate() {
            assert_eq!(
                seq.iter().filter(|p| **p == Some(i)).count(),
                *wi as usize * 10
            );
        }
    }
}
