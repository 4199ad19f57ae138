//! Source hashing and destination hashing (IPVS's sh and dh): a fixed table of buckets, filled
//! in proportion to the weights, indexed by the stable hash of the client address (sh) or of
//! the destination address (dh). A client keeps its backend as long as the backends and
//! weights stay the same. Unlike IPVS (256 buckets filled cyclically, where large weights
//! overflow the table and weight-0 buckets drop traffic), the table has 4096 buckets with
//! shares exact to one bucket, and only backends that take new flows are in it.

use super::{Cursor, PickInput, Scheduler};
use crate::flow::{FlowKey, address_hash};
use crate::hash::{fmix64, seed, stable_hash};

const BUCKETS: usize = 4096;

/// What a hashing scheduler hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashOf {
    /// The client's address (IPVS's sh and mh).
    Client,
    /// The client's address and port (`sh-port`, `mh-port`).
    ClientAndPort,
    /// The whole tuple (Katran's Maglev).
    Tuple,
}

/// How a hashing scheduler (sh, mh, maglev) reads a flow, and what it does when the backend
/// hashed to may not take it (overloaded): refuse the flow, as IPVS does, or with `fallback`
/// (`sh-fallback`, `mh-fallback`) hash again with a growing offset until an available backend
/// comes up, as IPVS's `ip_vs_sh_get_fallback` and `ip_vs_mh_get_fallback` do (at most one
/// try per slot of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    pub what: HashOf,
    pub fallback: bool,
}

impl Hashed {
    #[inline]
    pub fn hash(self, flow: &FlowKey) -> u64 {
        match self.what {
            HashOf::Client => address_hash(&flow.client),
            HashOf::ClientAndPort => {
                let mut b = [0u8; 18];
                b[..16].copy_from_slice(&flow.client);
                b[16..].copy_from_slice(&flow.client_port.to_be_bytes());
                stable_hash(seed::ADDRESS, &b)
            }
            HashOf::Tuple => flow.stable_hash(),
        }
    }

    /// The backend for the flow, given a table's `lookup` of `slots` slots.
    #[inline]
    pub fn pick(
        self,
        input: &PickInput<'_>,
        slots: usize,
        lookup: impl Fn(u64) -> Option<usize>,
    ) -> Option<usize> {
        let h = self.hash(input.flow);
        let first = lookup(h)?;
        if input.available(first) {
            return Some(first);
        }
        if !self.fallback || !input.any_available() {
            return None;
        }
        (1..=slots as u64).find_map(|offset| {
            lookup(fmix64(h.wrapping_add(offset))).filter(|&i| input.available(i))
        })
    }
}

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
pub struct SourceHash(pub HashTable, pub Hashed);

impl Scheduler for SourceHash {
    fn pick(&self, input: &PickInput<'_>, _: &mut Cursor) -> Option<usize> {
        self.1.pick(input, BUCKETS, |h| self.0.lookup(h))
    }

    fn is_per_flow(&self) -> bool {
        true
    }
}

#[derive(Debug)]
pub struct DestinationHash(pub HashTable);

impl Scheduler for DestinationHash {
    fn pick(&self, input: &PickInput<'_>, _: &mut Cursor) -> Option<usize> {
        // IPVS's dh has no fallback: an overloaded backend refuses the flow.
        self.0
            .lookup(address_hash(&input.flow.vip))
            .filter(|&i| input.available(i))
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
    use super::super::testing::{Counts, backends, counts, flow};
    use super::super::{Cursor, PickInput, Scheduler};
    use super::*;
    use crate::flow::FlowKey;

    fn pick(s: &dyn Scheduler, weights: &[u32], f: &FlowKey) -> Option<usize> {
        pick_with(s, weights, f, &Counts::default())
    }

    fn pick_with(s: &dyn Scheduler, weights: &[u32], f: &FlowKey, c: &Counts) -> Option<usize> {
        let b = backends(weights);
        s.pick(
            &PickInput {
                backends: &b,
                flow: f,
                conns: c,
            },
            &mut Cursor::default(),
        )
    }

    const CLIENT: Hashed = Hashed {
        what: HashOf::Client,
        fallback: false,
    };

    fn sh(w: &[u32], hashed: Hashed) -> SourceHash {
        SourceHash(HashTable::new(w), hashed)
    }

    #[test]
    fn sh_port_hashes_the_port_too() {
        let w = [1, 1, 1, 1];
        let s = sh(
            &w,
            Hashed {
                what: HashOf::ClientAndPort,
                fallback: false,
            },
        );
        let f = flow(5);
        let backends: std::collections::HashSet<_> = (0..64u16)
            .map(|p| {
                let mut g = f;
                g.client_port = 2000 + p;
                pick(&s, &w, &g).unwrap()
            })
            .collect();
        assert_eq!(
            backends.len(),
            4,
            "64 ports of one client reach every backend"
        );
        assert_eq!(pick(&s, &w, &f), pick(&s, &w, &f));
    }

    #[test]
    fn an_overloaded_backend_refuses_its_clients_unless_they_fall_back() {
        let w = [1, 1, 1];
        let strict = sh(&w, CLIENT);
        let lenient = sh(
            &w,
            Hashed {
                what: HashOf::Client,
                fallback: true,
            },
        );
        let mut moved = 0;
        for i in 0..300 {
            let f = flow(i);
            let home = pick(&strict, &w, &f).unwrap() as u32;
            let over = counts(&[], &[home]);
            assert_eq!(
                pick_with(&strict, &w, &f, &over),
                None,
                "IPVS: no fallback, no backend"
            );
            let other = pick_with(&lenient, &w, &f, &over).unwrap();
            assert_ne!(other as u32, home);
            assert_eq!(
                pick_with(&lenient, &w, &f, &over),
                Some(other),
                "the fallback is a function of the client"
            );
            // Other clients keep their backends.
            let g = flow(i + 1000);
            let g_home = pick(&strict, &w, &g).unwrap();
            if g_home as u32 != home {
                assert_eq!(pick_with(&lenient, &w, &g, &over), Some(g_home));
                moved += 1;
            }
        }
        assert!(moved > 0);
        let all = counts(&[], &[0, 1, 2]);
        assert_eq!(
            pick_with(&lenient, &w, &flow(1), &all),
            None,
            "nothing available"
        );
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
        let a = sh(&w, CLIENT);
        let b = sh(&w, CLIENT);
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
