//! The flow table's indexes: from a key's hash to the slab slots of the flows with that hash.
//!
//! An open-addressing table of 64-byte buckets, each one cache line holding 12 entries (a
//! 7-bit tag from the hash, and the slot), after the design of Folly's F14: a lookup reads
//! the home bucket, compares the 12 tags at once, and checks the flow of each matching tag
//! (1 in 128 others match by chance). A bucket that was full when an insert passed it on to
//! the next counts that in its overflow byte, and a lookup stops at the first bucket whose
//! count is zero, so a miss costs one bucket too. A removal takes the count back along the
//! same path: there are no tombstones, and the table never needs a rehash.
//!
//! Sized once for the table's capacity at most 60% full (9 bytes per flow), where a
//! bucket overflows about once in a hundred. Nothing allocates after `new`.
//!
//! Why not hashbrown: its probe is as good, but a lookup through it cost twice the
//! instructions of this one on the packet path (foldhash's five dependent multiplies, a call,
//! a closure): the established NAT path went from 55.5 to 46.6 ns/packet at 1k flows and
//! from 134 to 80 at 1M (`cargo bench -p dataplane --bench pipeline`), and a table at
//! capacity takes 9 bytes per flow per index instead of hashbrown's 10 to 17. Comparing the
//! 12 tags with one SSE2 compare (the `wide` crate) instead of eight at a time in a 64-bit
//! word then took it to 39.2 ns.

use wide::u8x16;

/// Entries per bucket.
const WAYS: usize = 12;
/// Byte of `Bucket::tags` that holds the overflow count (bytes `WAYS..15` stay zero).
const OVERFLOW: usize = 15;
/// An overflow count that has reached this stays there (it is then only ever too high,
/// which costs a lookup one more bucket, never a wrong answer).
const STUCK: u8 = u8::MAX;
/// At most this share of the entries is used.
const LOAD_PERCENT: usize = 60;

/// The indexes' hash of a key of five words (two 16-byte addresses and a word of ports and
/// protocol): two 64×64→128-bit multiplies of independent halves, each folded (high XOR
/// low), and added. Seeded per table from the process's random state, as std's and
/// hashbrown's hashers are, so that which keys collide cannot be known from outside. Not the
/// stable hash of `crate::hash`: nothing outside one table depends on it.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    k: [u64; 4],
}

/// The 128-bit product of `a` and `b`, its halves XORed (also the snapshot's service table's
/// hash).
#[inline(always)]
pub(crate) fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ (p >> 64) as u64
}

impl KeyHasher {
    pub fn random() -> Self {
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        KeyHasher {
            k: [0u8, 1, 2, 3].map(|i| s.hash_one(i)),
        }
    }

    /// `w`: the first address's two halves, the second's, then ports and protocol.
    #[inline(always)]
    pub fn hash(&self, w: [u64; 5]) -> u64 {
        let a = folded_multiply(w[1] ^ self.k[0], w[3] ^ self.k[1]);
        let b = folded_multiply(w[0] ^ w[2].rotate_left(32) ^ self.k[2], w[4] ^ self.k[3]);
        a.wrapping_add(b)
    }
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    /// 0 = empty, else 0x80 | 7 bits of the hash. Byte 15: the overflow count.
    tags: [u8; 16],
    slots: [u32; WAYS],
}

impl Bucket {
    /// Bit i set: entry i holds `tag`. One 16-byte compare (SSE2 `pcmpeqb` + `pmovmskb` on
    /// x86_64, through `wide`, which keeps the `unsafe` of the intrinsics out of this crate).
    #[inline(always)]
    fn matches(&self, tag: u8) -> u32 {
        let eq = u8x16::from(self.tags).simd_eq(u8x16::splat(tag));
        eq.to_bitmask() & ((1 << WAYS) - 1)
    }

    /// The first entry holding `tag` whose slot `eq` accepts.
    #[inline(always)]
    fn find_way(&self, tag: u8, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        let mut m = self.matches(tag);
        while m != 0 {
            let w = m.trailing_zeros() as usize;
            if eq(self.slots[w]) {
                return Some(w);
            }
            m &= m - 1;
        }
        None
    }
}

/// One index: hashes to slab slots.
#[derive(Debug)]
pub struct FlowIndex {
    buckets: Box<[Bucket]>,
    len: usize,
}

/// Where a hash lives: its home bucket and its tag.
#[inline(always)]
fn split(hash: u64, buckets: usize) -> (usize, u8) {
    // The low 32 bits, scaled to the bucket count (Lemire's fast range: no power of two
    // needed); the top 7 bits for the tag.
    let home = (((hash & 0xffff_ffff) * buckets as u64) >> 32) as usize;
    (home, 0x80 | (hash >> 57) as u8)
}

impl FlowIndex {
    /// An index for up to `capacity` entries.
    #[cfg(test)]
    pub fn new(capacity: usize) -> Self {
        FlowIndex::try_new(capacity).expect("memory for the flow index")
    }

    /// [`new`](Self::new), or the allocation's error when the memory is not there.
    pub fn try_new(capacity: usize) -> Result<Self, std::collections::TryReserveError> {
        let n = (capacity.max(1).saturating_mul(100))
            .div_ceil(WAYS * LOAD_PERCENT)
            .max(1);
        let mut buckets = Vec::new();
        buckets.try_reserve_exact(n)?;
        buckets.resize(n, Bucket::default());
        Ok(FlowIndex {
            buckets: buckets.into_boxed_slice(),
            len: 0,
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buckets (64 bytes each).
    #[inline]
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes allocated.
    pub fn allocation_size(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    #[inline(always)]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() {
            0
        } else {
            b + 1
        }
    }

    /// The slot of an entry with `hash` for which `eq` is true.
    #[inline(always)]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let (mut b, tag) = split(hash, self.buckets.len());
        let mut probes = 0;
        loop {
            let bucket = &self.buckets[b];
            if let Some(w) = bucket.find_way(tag, &mut eq) {
                return Some(bucket.slots[w]);
            }
            probes += 1;
            if bucket.tags[OVERFLOW] == 0 || probes == self.buckets.len() {
                return None;
            }
            b = self.next(b);
        }
    }

    /// Starts loading the bucket a lookup of `hash` reads first.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        crate::prefetch::prefetch(&self.buckets[split(hash, self.buckets.len()).0]);
    }

    /// The slots in the home bucket of `hash` whose tags match it: the candidates a lookup
    /// checks first.
    #[inline(always)]
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let (home, tag) = split(hash, self.buckets.len());
        let bucket = &self.buckets[home];
        let mut m = bucket.matches(tag);
        std::iter::from_fn(move || {
            (m != 0).then(|| {
                let slot = bucket.slots[m.trailing_zeros() as usize];
                m &= m - 1;
                slot
            })
        })
    }

    /// Counts one entry more (`up`) or fewer as having passed over each of the `hops` buckets
    /// from `home` on. A count that reached [`STUCK`] stays there.
    fn count_overflow(&mut self, home: usize, hops: usize, up: bool) {
        let mut p = home;
        for _ in 0..hops {
            let o = &mut self.buckets[p].tags[OVERFLOW];
            if *o != STUCK {
                *o = if up { *o + 1 } else { *o - 1 };
            }
            p = self.next(p);
        }
    }

    /// Adds `slot` under `hash`. The caller keeps the entries within the capacity given to
    /// `new`; beyond it this still works until every entry of every bucket is taken, and then
    /// returns false and adds nothing.
    pub fn insert(&mut self, hash: u64, slot: u32) -> bool {
        let (home, tag) = split(hash, self.buckets.len());
        // First find room, so that a full index changes nothing.
        let mut b = home;
        let mut hops = 0;
        let way = loop {
            let free = self.buckets[b].matches(0);
            if free != 0 {
                break free.trailing_zeros() as usize;
            }
            hops += 1;
            if hops == self.buckets.len() {
                return false;
            }
            b = self.next(b);
        };
        self.count_overflow(home, hops, true);
        self.buckets[b].tags[way] = tag;
        self.buckets[b].slots[way] = slot;
        self.len += 1;
        true
    }

    /// Removes the entry of `slot` under `hash`; false if there is none.
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let (home, tag) = split(hash, self.buckets.len());
        let mut b = home;
        let mut hops = 0;
        let way = loop {
            let bucket = &self.buckets[b];
            if let Some(w) = bucket.find_way(tag, |s| s == slot) {
                break w;
            }
            if bucket.tags[OVERFLOW] == 0 || hops + 1 == self.buckets.len() {
                return false;
            }
            hops += 1;
            b = self.next(b);
        };
        self.buckets[b].tags[way] = 0;
        self.count_overflow(home, hops, false);
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_index_too_large_for_memory_is_an_error_not_an_abort() {
        assert!(FlowIndex::try_new(usize::MAX / 2).is_err());
        assert!(FlowIndex::try_new(1000).is_ok());
    }

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn tags_match_exactly() {
        let mut b = Bucket::default();
        b.tags[..WAYS].copy_from_slice(&[
            0x81, 0x80, 0xff, 0x81, 0, 0x01, 0x81, 0xfe, 0x80, 0, 0x81, 0x7f,
        ]);
        b.tags[OVERFLOW] = 0x81; // an overflow count that looks like a tag is not one
        assert_eq!(b.matches(0x81), 0b0100_0100_1001);
        assert_eq!(b.matches(0x80), 0b0001_0000_0010);
        assert_eq!(b.matches(0xff), 0b0000_0000_0100);
        assert_eq!(b.matches(0xfe), 0b0000_1000_0000);
        assert_eq!(b.matches(0x82), 0);
    }

    #[test]
    fn sized_for_the_capacity_at_sixty_percent() {
        let i = FlowIndex::new(1_000_000);
        assert_eq!(i.buckets.len(), 138_889);
        assert_eq!(i.allocation_size(), 138_889 * 64);
    }

    #[test]
    fn colliding_hashes_overflow_into_the_next_buckets_and_come_back() {
        // 40 entries with one hash: a 4-bucket index (capacity 28) would hold 48.
        let mut i = FlowIndex::new(28);
        assert_eq!(i.buckets.len(), 4);
        let h = 0x1234_5678_9abc_def0;
        for s in 0..40 {
            assert!(i.insert(h, s));
        }
        // Home bucket full, its three neighbours take the rest: counts along the way.
        let (home, _) = split(h, 4);
        assert_eq!(i.buckets[home].tags[OVERFLOW], 28);
        for s in 0..40 {
            assert_eq!(i.find(h, |x| x == s), Some(s));
        }
        assert_eq!(i.find(h, |x| x == 40), None);
        // A full index refuses and changes nothing.
        for s in 40..48 {
            assert!(i.insert(h, s));
        }
        assert!(!i.insert(h, 48));
        assert_eq!(i.len(), 48);
        for s in 0..48 {
            assert!(i.remove(h, s));
        }
        assert!(!i.remove(h, 0));
        assert!(i.is_empty());
        assert!(
            i.buckets.iter().all(|b| b.tags == [0; 16]),
            "counts back to zero"
        );
    }

    #[test]
    fn an_overflow_count_that_saturates_stays_and_lookups_stay_right() {
        let mut i = FlowIndex::new(600);
        let h = 0x0123_4567_89ab_cdef;
        let (home, _) = split(h, i.buckets.len());
        for s in 0..300 {
            assert!(i.insert(h, s));
        }
        assert_eq!(i.buckets[home].tags[OVERFLOW], STUCK, "288 passed over it");
        for s in (0..300).step_by(2) {
            assert!(i.remove(h, s));
        }
        for s in 0..300 {
            let want = (s % 2 == 1).then_some(s);
            assert_eq!(i.find(h, |x| x == s), want);
        }
        for s in (1..300).step_by(2) {
            assert!(i.remove(h, s));
        }
        assert!(i.is_empty());
        assert_eq!(
            i.buckets[home].tags[OVERFLOW], STUCK,
            "stuck: never counted down"
        );
        assert_eq!(i.find(h, |_| true), None);
        assert!(i.insert(h, 7));
        assert_eq!(i.find(h, |x| x == 7), Some(7));
    }

    proptest! {
        /// Against a model (a Vec of entries): any sequence of inserts and removes, with
        /// hashes from a small set so that buckets collide and overflow.
        #[test]
        fn behaves_like_a_list_of_entries(
            ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u32..200), 1..400),
        ) {
            let mut i = FlowIndex::new(100);
            let mut model: Vec<(u64, u32)> = Vec::new();
            for (insert, h, s) in ops {
                // Spread the few hashes over home buckets and tags both.
                let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                if insert {
                    if model.iter().any(|&(_, x)| x == s) || model.len() == 100 {
                        continue;
                    }
                    prop_assert!(i.insert(h, s));
                    model.push((h, s));
                } else {
                    let at = model.iter().position(|&e| e == (h, s));
                    prop_assert_eq!(i.remove(h, s), at.is_some());
                    if let Some(at) = at {
                        model.swap_remove(at);
                    }
                }
                prop_assert_eq!(i.len(), model.len());
                for &(h, s) in &model {
                    prop_assert_eq!(i.find(h, |x| x == s), Some(s));
                }
                for s in 0..200 {
                    if !model.iter().any(|&(_, x)| x == s) {
                        prop_assert_eq!(i.find(h, |x| x == s), None);
                    }
                }
            }
        }
    }
}
