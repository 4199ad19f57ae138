//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4), weighted as Katran does.
//!
//! Each backend gets a permutation of the M table slots from two stable hashes of its id:
//! offset = h1(id) mod M, skip = h2(id) mod (M - 1) + 1, slot j = (offset + j x skip) mod M (M
//! prime makes every permutation visit every slot). Backends then take turns claiming their
//! next free slot until the table is full. Weights: in each round a backend adds its weight to
//! a running sum and claims a slot each time the sum reaches the largest weight.
//!
//! The table depends only on the set of (backend id, weight) and M: backends take turns in id
//! order, whatever order the configuration lists them in, and the hash is [`crate::hash`]. Two
//! appliances (or two runs) with the same backends pick the same backend for the same flow.

use super::hashing::{HashOf, Hashed};
use super::{Cursor, PickInput, Scheduler};
use crate::hash::{seed, stable_hash};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// Backend index (into the list given to `build`) per slot; empty when no backend takes
    /// new flows.
    slots: Vec<u32>,
    /// What a pick hashes (the whole tuple unless [`hashing`](Self::hashing) says otherwise).
    hashed: Hashed,
}

const TUPLE: Hashed = Hashed {
    what: HashOf::Tuple,
    fallback: false,
};

impl MaglevTable {
    /// Builds the table for `backends` (id, weight) with `m` slots (`m` prime). Backends of
    /// weight 0 get no slot.
    pub fn build(backends: &[(&str, u32)], m: u32) -> MaglevTable {
        let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
        if order.is_empty() || m == 0 {
            return MaglevTable {
                slots: Vec::new(),
                hashed: TUPLE,
            };
        }
        order.sort_unstable_by(|&a, &b| backends[a].0.cmp(backends[b].0));
        let m64 = u64::from(m);
        // (next slot to try, skip) per backend, in id order.
        let mut walk: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| {
                let id = backends[i].0.as_bytes();
                let offset = stable_hash(seed::MAGLEV_OFFSET, id) % m64;
                let skip = if m > 1 {
                    stable_hash(seed::MAGLEV_SKIP, id) % (m64 - 1) + 1
                } else {
                    1
                };
                (offset, skip)
            })
            .collect();
        let max_weight = order
            .iter()
            .map(|&i| u64::from(backends[i].1))
            .max()
            .unwrap_or(1);
        let mut credit = vec![0u64; order.len()];
        let mut slots = vec![u32::MAX; m as usize];
        let mut filled = 0usize;
        'rounds: loop {
            for (k, &i) in order.iter().enumerate() {
                credit[k] += u64::from(backends[i].1);
                if credit[k] < max_weight {
                    continue;
                }
                credit[k] -= max_weight;
                let (next, skip) = &mut walk[k];
                while slots[*next as usize] != u32::MAX {
                    *next = (*next + *skip) % m64;
                }
                slots[*next as usize] = i as u32;
                *next = (*next + *skip) % m64;
                filled += 1;
                if filled == slots.len() {
                    break 'rounds;
                }
            }
        }
        MaglevTable {
            slots,
            hashed: TUPLE,
        }
    }

    /// The table picking by `hashed` (IPVS's mh and its flags).
    pub fn hashing(self, hashed: Hashed) -> Self {
        MaglevTable { hashed, ..self }
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// The backend index for a flow hash.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        (!self.slots.is_empty())
            .then(|| self.slots[(hash % self.slots.len() as u64) as usize] as usize)
    }

    /// Slots per backend index, for tests and the API.
    pub fn slot_counts(&self, backends: usize) -> Vec<usize> {
        let mut c = vec![0; backends];
        for s in &self.slots {
            c[*s as usize] += 1;
        }
        c
    }

    /// The backend index in slot `i`.
    pub fn slot(&self, i: usize) -> Option<u32> {
        self.slots.get(i).copied()
    }
}

impl Scheduler for MaglevTable {
    fn pick(&self, input: &PickInput<'_>, _: &mut Cursor) -> Option<usize> {
        self.hashed
            .pick(input, self.slots.len(), |h| self.lookup(h))
    }

    fn is_per_flow(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 65537;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("backend-{i}")).collect()
    }

    fn table(ids: &[String], weights: &[u32], m: u32) -> MaglevTable {
        let b: Vec<(&str, u32)> = ids
            .iter()
            .map(String::as_str)
            .zip(weights.iter().copied())
            .collect();
        MaglevTable::build(&b, m)
    }

    #[test]
    fn ten_equal_backends_are_balanced_within_one_percent() {
        let ids = ids(10);
        let t = table(&ids, &[1; 10], M);
        let counts = t.slot_counts(10);
        let avg = f64::from(M) / 10.0;
        let max = *counts.iter().max().unwrap() as f64;
        assert!(
            max <= 1.01 * avg,
            "most loaded {max} vs average {avg}: {counts:?}"
        );
        assert_eq!(counts.iter().sum::<usize>(), M as usize);
    }

    #[test]
    fn removing_one_of_ten_moves_at_most_one_percent_of_the_others_slots() {
        let all = ids(10);
        let before = table(&all, &[1; 10], M);
        let rest: Vec<String> = all[..9].to_vec(); // backend-9 removed
        let after = table(&rest, &[1; 9], M);
        let mut moved = 0;
        let mut others = 0;
        for i in 0..M as usize {
            let b = before.slot(i).unwrap();
            if b == 9 {
                continue; // its slots must move
            }
            others += 1;
            if after.slot(i).unwrap() != b {
                moved += 1;
            }
        }
        assert!(
            (moved as f64) <= 0.01 * others as f64,
            "{moved} of {others} slots moved"
        );
    }

    #[test]
    fn weights_1_2_3_get_shares_within_one_percent() {
        let ids = ids(3);
        let t = table(&ids, &[1, 2, 3], M);
        let c = t.slot_counts(3);
        for (i, share) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].iter().enumerate() {
            let got = c[i] as f64 / f64::from(M);
            assert!((got - share).abs() <= 0.01, "backend {i}: {got} vs {share}");
        }
    }

    #[test]
    fn the_table_does_not_depend_on_the_order_backends_are_listed() {
        let a = ids(7);
        let w = [3, 1, 4, 1, 5, 9, 2];
        let t1 = table(&a, &w, M);
        // reversed listing: same (id, weight) pairs
        let ra: Vec<String> = a.iter().rev().cloned().collect();
        let rw: Vec<u32> = w.iter().rev().copied().collect();
        let t2 = table(&ra, &rw, M);
        for i in 0..M as usize {
            let id1 = &a[t1.slot(i).unwrap() as usize];
            let id2 = &ra[t2.slot(i).unwrap() as usize];
            assert_eq!(id1, id2, "slot {i}");
        }
    }

    #[test]
    fn weight_zero_gets_no_slot_and_none_usable_means_no_backend() {
        let ids = ids(3);
        let c = table(&ids, &[1, 0, 1], 251).slot_counts(3);
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], 251);
        assert_eq!(table(&ids, &[0, 0, 0], 251).lookup(12345), None);
    }

    #[test]
    fn a_table_is_pinned_across_versions_and_hosts() {
        // The first slots of a small table. If this changes, flows move on upgrade: that is a
        // breaking change for operators running two appliances side by side.
        let ids = ids(3);
        let t = table(&ids, &[1, 1, 1], 13);
        let first: Vec<u32> = (0..13).map(|i| t.slot(i).unwrap()).collect();
        assert_eq!(first, PINNED);
    }
    // Computed by an independent implementation of the algorithm above (Python).
    const PINNED: [u32; 13] = [2, 0, 0, 1, 0, 2, 2, 0, 2, 1, 1, 0, 1];
}
