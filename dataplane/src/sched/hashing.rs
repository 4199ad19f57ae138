//! Source hashing and destination hashing (IPVS's sh and dh): a fixed table of buckets, filled
//! in proportion to the weights, indexed by the stable hash of the client address (sh) or of
//! the destination address (dh). A client keeps its backend as long as the backends and
//! weights stay the same. Unlike IPVS (256 buckets filled cyclically, where large weights
//! overflow the table and weight-0 buckets drop traffic), the table has 4096 buckets with
//! shares exact to one bucket, and only backends that take new flows are in it.

use super::{Cursor, PickInput, Scheduler};
use crate::flow::address_hash;

const BUCKETS: usize = 4096;

#[derive(Debug)]
pub struct HashTable {
    /// Backend index per bucket; empty when no backend takes new flows.
    buckets: Vec<u32>,
}

impl HashTable {
    pub fn new(weights: &[u32]) -> Self {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return HashTable {
                buckets: Vec::new(),
            };
        }
        // Backend i owns the buckets whose scaled position falls in its share of the total:
        // bucket b belongs to the backend whose cumulative weight range holds b x total / BUCKETS.
        let mut buckets = Vec::with_capacity(BUCKETS);
        let mut i = 0;
        let mut cumulative = u64::from(weights[0]);
        for b in 0..BUCKETS as u64 {
            let point = b * total / BUCKETS as u64;
            while point >= cumulative {
                i += 1;
                cumulative += u64::from(weights[i]);
            }
            buckets.push(i as u32);
        }
        HashTable { buckets }
    }

    fn lookup(&self, hash: u64) -> Option<usize> {
        (!self.buckets.is_empty()).then(|| self.buckets[(hash % BUCKETS as u64) as usize] as usize)
    }
}

#[derive(Debug)]
pub struct SourceHash(pub HashTable);

impl Scheduler for SourceHash {
    fn pick(&self, input: &PickInput<'_>, _: &mut Cursor) -> Option<usize> {
        self.0.lookup(address_hash(&input.flow.client))
    }

    fn is_per_flow(&self) -> bool {
        true
    }
}

#[derive(Debug)]
pub struct DestinationHash(pub HashTable);

impl Scheduler for DestinationHash {
    fn pick(&self, input: &PickInput<'_>, _: &mut Cursor) -> Option<usize> {
        self.0.lookup(address_hash(&input.flow.vip))
    }

    fn is_per_flow(&self) -> bool {
        true
    }
}

/// A backend for a flow hash in proportion to the weights, with no table: the running sums
/// of the weights, searched for `hash % total`. What a stateful scheduler's service uses
/// while a SYN flood evicts half-open flows (a handshake then finds its backend again from
/// its tuple alone). Not consistent: a change of backends or weights moves most hashes.
#[derive(Debug, Clone, Default)]
pub struct WeightedHash {
    /// `sums[i]`: the weights of backends 0..=i.
    sums: Vec<u64>,
}

impl WeightedHash {
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut total = 0;
        let sums = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w);
                total
            })
            .collect();
        WeightedHash { sums }
    }

    /// The backend index for `hash`; None when no backend has weight.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<usize> {
        let total = *self.sums.last()?;
        if total == 0 {
            return None;
        }
        let point = hash % total;
        Some(self.sums.partition_point(|&s| s <= point))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Counts, backends, flow};
    use super::super::{Cursor, PickInput, Scheduler};
    use super::*;
    use crate::flow::FlowKey;
    use std::collections::HashMap;

    fn pick(s: &dyn Scheduler, weights: &[u32], f: &FlowKey) -> Option<usize> {
        let b = backends(weights);
        s.pick(
            &PickInput {
                backends: &b,
                flow: f,
                conns: &Counts(HashMap::new()),
            },
            &mut Cursor::default(),
        )
    }

    #[test]
    fn buckets_follow_the_weights_to_one_bucket() {
        let t = HashTable::new(&[1, 2, 0, 5]);
        let count = |i: u32| t.buckets.iter().filter(|b| **b == i).count();
        assert_eq!(
            (count(0), count(1), count(2), count(3)),
            (512, 1024, 0, 2560)
        );
        assert!(HashTable::new(&[0, 0]).buckets.is_empty());
    }

    #[test]
    fn a_source_keeps_its_backend_whatever_its_port_and_across_rebuilds() {
        let w = [1, 1, 1, 1];
        let a = SourceHash(HashTable::new(&w));
        let b = SourceHash(HashTable::new(&w));
        let mut seen = [0usize; 4];
        for i in 0..2000 {
            let mut f = flow(i);
            let first = pick(&a, &w, &f).unwrap();
            f.client_port = f.client_port.wrapping_add(7);
            f.vip_port = 443;
            assert_eq!(
                pick(&a, &w, &f),
                Some(first),
                "another port of the same client"
            );
            assert_eq!(pick(&b, &w, &f), Some(first), "a table built again");
            seen[first] += 1;
        }
        // 2000 sources over 4 equal backends: each within ±20% of 500.
        assert!(seen.iter().all(|n| (400..=600).contains(n)), "{seen:?}");
    }

    #[test]
    fn destination_hash_follows_the_destination_only() {
        let w = [1, 1, 1];
        let d = DestinationHash(HashTable::new(&w));
        let first = pick(&d, &w, &flow(1)).unwrap();
        for i in 2..200 {
            assert_eq!(
                pick(&d, &w, &flow(i)),
                Some(first),
                "every client of one VIP"
            );
        }
        assert_eq!(
            pick(&DestinationHash(HashTable::new(&[0, 0, 0])), &w, &flow(1)),
            None
        );
    }

    #[test]
    fn the_weighted_hash_gives_shares_to_weights_and_nothing_to_weight_zero() {
        let h = WeightedHash::new([1, 0, 3]);
        let mut counts = [0u32; 3];
        for i in 0..40_000u32 {
            counts[h.pick(flow(i).stable_hash()).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0, "weight 0 gets nothing");
        // shares 1/4 and 3/4 of 40,000, within 2%
        assert!((9_200..=10_800).contains(&counts[0]), "{counts:?}");
        assert!((29_200..=30_800).contains(&counts[2]), "{counts:?}");
        assert_eq!(h.pick(7), h.pick(7), "the same hash, the same backend");
        assert_eq!(WeightedHash::new([0, 0]).pick(7), None);
        assert_eq!(WeightedHash::new([]).pick(7), None);
        // exact on the boundaries: points 0 -> backend 0, 1..=3 -> backend 2
        assert_eq!(
            (0..4).map(|p| h.pick(p)).collect::<Vec<_>>(),
            [0, 2, 2, 2].map(Some)
        );
    }
}
