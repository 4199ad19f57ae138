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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::hashing::{HashOf, Hashed};
use super::{Cursor, PickInput, Scheduler};
use crate::hash::{seed, stable_hash};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// Backend index (into the list given to `build`) per slot; empty when no backend takes
    /// new flows. Shared with the recently built tables and the other snapshots that use it.
    slots: Arc<[u32]>,
    /// What a pick hashes (the whole tuple unless [`hashing`](Self::hashing) says otherwise).
    hashed: Hashed,
}

const TUPLE: Hashed = Hashed {
    what: HashOf::Tuple,
    fallback: false,
};

/// The end of a build: per backend, the free slots ordered by the steps its walk takes to
/// reach them (`steps << 32 | slot`), and how far down that list it has claimed. The lists are
/// one allocation, `free` entries each (a build for 1000 backends made 2000 small ones).
struct Tail {
    lists: Vec<u64>,
    free: usize,
    cursor: Vec<usize>,
}

impl Tail {
    /// From the walks (next slot, skip) and the bitmap of taken slots. None when a skip has no
    /// inverse modulo `m` (m not prime): the walks then go on to the end.
    fn new(walk: &[(u32, u32)], m: u32, taken: &[u64]) -> Option<Tail> {
        // The free slots, from the bitmap's zero bits (those past m are not slots).
        let mut free: Vec<u32> = Vec::new();
        for (w, &bits) in taken.iter().enumerate() {
            let mut open = !bits;
            while open != 0 {
                let s = w as u32 * 64 + open.trailing_zeros();
                if s < m {
                    free.push(s);
                }
                open &= open - 1;
            }
        }
        let m64 = u64::from(m);
        // x mod m without a division (Barrett): with r = floor(2^64 / m) the quotient
        // estimate floor(x·r / 2^64) is at most one short for any 64-bit x.
        let r = u64::MAX / m64;
        let reduce = |x: u64| {
            let q = ((u128::from(x) * u128::from(r)) >> 64) as u64;
            let rem = x - q * m64;
            if rem >= m64 { rem - m64 } else { rem }
        };
        let n = free.len();
        let mut counts = vec![0u32; n + 1];
        let mut keyed = vec![0u64; n];
        let mut lists = vec![0u64; n * walk.len()];
        for (&(next, skip), list) in walk.iter().zip(lists.chunks_exact_mut(n.max(1))) {
            let inverse = inverse_mod(skip, m)?;
            // The walk reaches slot s after ((s - next) / skip) mod m steps.
            for (key, &s) in keyed.iter_mut().zip(&free) {
                let ahead = if s >= next { s - next } else { s + m - next };
                *key = reduce(u64::from(ahead) * inverse) << 32 | u64::from(s);
            }
            sort_spread(&keyed, m64, &mut counts, list);
        }
        Some(Tail {
            cursor: vec![0; walk.len()],
            lists,
            free: n,
        })
    }

    /// Backend `k`'s claim: the first of its list that is free (one always is while the
    /// table is not full: every free slot is on every list).
    fn claim(&mut self, k: usize, taken: impl Fn(u32) -> bool) -> u32 {
        let list = &self.lists[k * self.free..(k + 1) * self.free];
        let c = &mut self.cursor[k];
        while taken(list[*c] as u32) {
            *c += 1;
        }
        list[*c] as u32
    }
}

/// `keyed` (steps << 32 | slot, distinct steps below `m`) in order, in linear time rather than
/// a comparison sort's n log n: a counting sort into n buckets (by steps · n / m), then an
/// insertion pass within each. A walk's steps to the free slots are spread evenly over 0..m, so
/// a bucket holds one or two; it spans m / n steps, so never more than that. `counts` is
/// scratch of n + 1 entries; `sorted` (n entries) is where the sorted list goes.
fn sort_spread(keyed: &[u64], m: u64, counts: &mut [u32], sorted: &mut [u64]) {
    // steps · n / m as a multiplication: below n, and in the order of the steps.
    let scale = ((keyed.len() as u64) << 32) / m;
    let bucket = |x: u64| (((x >> 32) * scale) >> 32) as usize;
    counts.fill(0);
    for &x in keyed {
        counts[bucket(x) + 1] += 1;
    }
    for b in 1..counts.len() {
        counts[b] += counts[b - 1];
    }
    for &x in keyed {
        let at = &mut counts[bucket(x)];
        sorted[*at as usize] = x;
        *at += 1;
    }
    for i in 1..sorted.len() {
        let x = sorted[i];
        let mut j = i;
        while j > 0 && sorted[j - 1] > x {
            sorted[j] = sorted[j - 1];
            j -= 1;
        }
        sorted[j] = x;
    }
}

/// x such that a·x ≡ 1 (mod m), if a and m are coprime (extended Euclid, in 32-bit
/// divisions: m is a table size).
fn inverse_mod(a: u32, m: u32) -> Option<u64> {
    let (mut r0, mut r1) = (m, a % m);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - i64::from(q) * t1);
    }
    (r0 == 1).then(|| t0.rem_euclid(i64::from(m)) as u64)
}

/// Fills `slots` (all `u32::MAX`) from the walks (next slot, skip) of the backends whose
/// turns `turns` gives, in id order; `owners` is each one's index in the list `build` was
/// given. Generic over the turns, so that the equal-weight build has no credits to keep.
fn fill(
    slots: &mut [u32],
    walk: &mut [(u32, u32)],
    owners: &[u32],
    mut turns: impl Iterator<Item = usize>,
) {
    let m = slots.len() as u32;
    // Which slots are taken, one bit each: the walks probe this (8 KB for M = 65537, in the
    // L1 cache) rather than the 256 KB of slots.
    let mut taken = vec![0u64; (m as usize).div_ceil(64)];
    let step = |at: u32, skip: u32| {
        let n = at + skip;
        if n >= m { n - m } else { n }
    };
    let is_taken = |taken: &[u64], s: u32| taken[s as usize / 64] & (1 << (s % 64)) != 0;
    // The last slots are the costly ones: with f of M free, a walk probes M / f slots on
    // average before it finds one. Once `tail_from` slots are left, each backend instead
    // lists the free slots by how many steps its walk needs to reach them, and claims the
    // first listed that is still free: the slot the walk would have found, so the table is
    // the same. The lists cost backends x slots left; at most 512 slots measured fastest
    // (8 backends, M = 65537: 2048 left took 0.93 ms, 512 left 0.76 ms, 256 0.77 ms).
    let tail_from = (m as usize / (4 * walk.len())).min(512);
    let mut claim = |k: usize, s: u32, taken: &mut [u64]| {
        taken[s as usize / 64] |= 1 << (s % 64);
        slots[s as usize] = owners[k];
    };
    // Backend k's walk to its next free slot.
    let walk_on = |walk: &mut [(u32, u32)], taken: &[u64], k: usize| {
        let (mut next, skip) = walk[k];
        while is_taken(taken, next) {
            next = step(next, skip);
        }
        walk[k].0 = step(next, skip);
        next
    };
    // The walks one slot at a time, four at a time, then the tail: a loop each, so that no
    // claim asks which part it is in or whether the table is full (a sixth of a build's time
    // when every claim asked). In the first quarter a probe mostly finds its slot free.
    let early = (m as usize / 4).min(m as usize - tail_from);
    for k in turns.by_ref().take(early) {
        let s = walk_on(walk, &taken, k);
        claim(k, s, &mut taken);
    }
    // Past it most probes fail, and each failure had been a branch the core could not
    // predict: a walk now looks at four slots at a time, their positions computed side by
    // side (not each from the one before), with one branch when one of them is free (8
    // backends 0.72 -> 0.50 ms, 100: 1.01 -> 0.81, 1000: 1.35 -> 1.12).
    let ahead: Vec<[u32; 3]> = walk
        .iter()
        .map(|&(_, skip)| [2, 3, 4].map(|i| (u64::from(skip) * i % u64::from(m)) as u32))
        .collect();
    for k in turns.by_ref().take(m as usize - tail_from - early) {
        let (mut at, skip) = walk[k];
        let [skip2, skip3, skip4] = ahead[k];
        let s = loop {
            let four = [at, step(at, skip), step(at, skip2), step(at, skip3)];
            let free = four.map(|s| !is_taken(&taken, s) as u32);
            let mask = free[0] | free[1] << 1 | free[2] << 2 | free[3] << 3;
            if mask != 0 {
                break four[mask.trailing_zeros() as usize];
            }
            at = step(at, skip4);
        };
        walk[k].0 = step(s, skip);
        claim(k, s, &mut taken);
    }
    match Tail::new(walk, m, &taken) {
        Some(mut tail) => {
            for k in turns.take(tail_from) {
                let s = tail.claim(k, |s| is_taken(&taken, s));
                claim(k, s, &mut taken);
            }
        }
        // No tail lists (m not prime): the walks go on to the end.
        None => {
            for k in turns.take(tail_from) {
                let s = walk_on(walk, &taken, k);
                claim(k, s, &mut taken);
            }
        }
    }
}

impl MaglevTable {
    /// Builds the table for `backends` (id, weight) with `m` slots (`m` prime). Backends of
    /// weight 0 get no slot.
    pub fn build(backends: &[(&str, u32)], m: u32) -> MaglevTable {
        #[cfg(test)]
        tests::BUILDS.with(|b| b.set(b.get() + 1));
        let order = usable(backends);
        if order.is_empty() || m == 0 {
            return MaglevTable {
                slots: Arc::from(Vec::new()),
                hashed: TUPLE,
            };
        }
        let m64 = u64::from(m);
        // (next slot to try, skip) per backend, in id order. Both stay below m, so a step is
        // an addition and at most one subtraction, never a division.
        let mut walk: Vec<(u32, u32)> = order
            .iter()
            .map(|&i| {
                let id = backends[i].0.as_bytes();
                let offset = stable_hash(seed::MAGLEV_OFFSET, id) % m64;
                let skip = if m > 1 {
                    stable_hash(seed::MAGLEV_SKIP, id) % (m64 - 1) + 1
                } else {
                    1
                };
                (offset as u32, skip as u32)
            })
            .collect();
        let weights: Vec<u64> = order.iter().map(|&i| u64::from(backends[i].1)).collect();
        let max_weight = weights.iter().copied().max().unwrap_or(1);
        let owners: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        // Made where the table will live (collecting into the Arc allocates it once; an
        // `Arc::from(Vec)` copies it, a second 256 KB whose pages are new to the process).
        let mut table: Arc<[u32]> = std::iter::repeat_n(u32::MAX, m as usize).collect();
        let slots = Arc::get_mut(&mut table).expect("just made, not shared");
        if weights.iter().all(|&w| w == max_weight) {
            // Equal weights (the usual case): the backends simply take turns, without the
            // credits below (a tenth of an 8-backend build's instructions).
            let n = order.len();
            let mut k = n - 1;
            let turns = std::iter::from_fn(move || {
                k = if k + 1 == n { 0 } else { k + 1 };
                Some(k)
            });
            fill(slots, &mut walk, &owners, turns);
        } else {
            // In each round every backend adds its weight to its credit and claims a slot
            // each time the credit reaches the largest weight.
            let mut credit = vec![0u64; order.len()];
            let mut k = order.len() - 1;
            let turns = std::iter::from_fn(move || {
                loop {
                    k = if k + 1 == weights.len() { 0 } else { k + 1 };
                    credit[k] += weights[k];
                    if credit[k] >= max_weight {
                        credit[k] -= max_weight;
                        return Some(k);
                    }
                }
            });
            fill(slots, &mut walk, &owners, turns);
        }
        MaglevTable {
            slots: table,
            hashed: TUPLE,
        }
    }

    /// [`build`](Self::build), or the same table built a moment ago for the same inputs (a
    /// backend whose health check flaps, a weight set to 0 and back), or built ahead of time
    /// by [`prebuild_loop`] (a backend that fails, is drained or is removed): the table depends
    /// on nothing else, so it is the table `build` would give, without the milliseconds. The
    /// [`RECENT_BYTES`] of tables built last are kept, process-wide. A table is found by the
    /// backends it gives slots to (id and weight, weight 0 and absent alike); listed in another
    /// order it is given with its slots renumbered for this list.
    pub fn build_recent(backends: &[(&str, u32)], m: u32) -> MaglevTable {
        let owners: Vec<u32> = usable(backends).into_iter().map(|i| i as u32).collect();
        let same = |t: &Kept| t.serves(m, owners.iter().map(|&i| backends[i as usize]));
        let found = {
            let mut k = kept().lock().unwrap_or_else(|e| e.into_inner());
            let at = k.recent.iter().position(|t| same(t) && t.owners == owners);
            let at = at.or_else(|| k.recent.iter().position(same));
            match at {
                Some(at) => {
                    let hit = k.recent.remove(at).expect("a position in the list");
                    k.recent.push_front(hit);
                    Some(k.recent[0].clone())
                }
                None => k.ahead.iter().find(|t| same(t)).cloned(),
            }
        };
        let slots = match found {
            Some(t) if t.owners == owners => t.slots,
            Some(t) => t.renumbered(&owners),
            // Built outside the lock: two snapshots built at once wait for nothing.
            None => Self::build(backends, m).slots,
        };
        let key: Vec<(String, u32)> = owners
            .iter()
            .map(|&i| (backends[i as usize].0.to_string(), backends[i as usize].1))
            .collect();
        let mut k = kept().lock().unwrap_or_else(|e| e.into_inner());
        if !k
            .recent
            .front()
            .is_some_and(|t| Arc::ptr_eq(&t.slots, &slots))
        {
            k.recent.push_front(Kept {
                key: key.clone(),
                m,
                owners,
                slots: Arc::clone(&slots),
            });
            let mut bytes = 0;
            k.recent.retain(|t| {
                bytes += t.slots.len() * 4;
                bytes <= RECENT_BYTES || Arc::ptr_eq(&t.slots, &slots)
            });
        }
        // What the prebuilder should prepare for next: the backends of this table, each one
        // out in turn.
        k.wanted.retain(|(w, wm)| *w != key || *wm != m);
        k.wanted.push_front((key, m));
        k.wanted.truncate(WANTED_KEPT);
        k.posted = Some(std::time::Instant::now());
        drop(k);
        wanted_posted().notify_all();
        MaglevTable {
            slots,
            hashed: TUPLE,
        }
    }

    /// True when a table for these backends (weight 0 and absent alike) and `m` is kept,
    /// recently built or built ahead: [`build_recent`](Self::build_recent) then builds none.
    pub fn is_kept(backends: &[(&str, u32)], m: u32) -> bool {
        let order = usable(backends);
        let k = kept().lock().unwrap_or_else(|e| e.into_inner());
        k.recent
            .iter()
            .chain(&k.ahead)
            .any(|t| t.serves(m, order.iter().map(|&i| backends[i])))
    }

    /// True when both tables are one in memory (a table [`build_recent`](Self::build_recent)
    /// found again).
    pub fn shares_slots_with(&self, other: &MaglevTable) -> bool {
        Arc::ptr_eq(&self.slots, &other.slots)
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
        for s in self.slots.iter() {
            c[*s as usize] += 1;
        }
        c
    }

    /// The backend index in slot `i`.
    pub fn slot(&self, i: usize) -> Option<u32> {
        self.slots.get(i).copied()
    }
}

/// Bytes of recently built tables [`MaglevTable::build_recent`] keeps: 16 tables of the
/// default 65,537 slots (the newest is kept whatever its size).
pub const RECENT_BYTES: usize = 16 * 65537 * 4;

/// Bytes of tables [`prebuild_loop`] keeps ready: 32 of the default size (a service of 32
/// backends, or four of 8).
pub const AHEAD_BYTES: usize = 32 * 65537 * 4;

/// How many tables' backends the prebuilder prepares for (the services changed last).
const WANTED_KEPT: usize = 4;

/// A table kept: the backends it gives slots to (id order, weights above 0), its M, where
/// each of them is in the list it was built for, and its slots (indexes into that list).
#[derive(Clone)]
struct Kept {
    key: Vec<(String, u32)>,
    m: u32,
    owners: Vec<u32>,
    slots: Arc<[u32]>,
}

impl Kept {
    /// True when this table, with `m` slots, gives slots to exactly `backends` (id order).
    fn serves<'a>(&self, m: u32, backends: impl ExactSizeIterator<Item = (&'a str, u32)>) -> bool {
        self.m == m
            && self.key.len() == backends.len()
            && self
                .key
                .iter()
                .zip(backends)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
    }

    /// The slots for a list in which the same backends are at `owners`.
    fn renumbered(&self, owners: &[u32]) -> Arc<[u32]> {
        let width = self.owners.iter().max().map_or(0, |&o| o as usize + 1);
        let mut to = vec![u32::MAX; width];
        for (&from, &new) in self.owners.iter().zip(owners) {
            to[from as usize] = new;
        }
        self.slots.iter().map(|&s| to[s as usize]).collect()
    }
}

#[derive(Default)]
struct Tables {
    /// The tables built or given last, newest first.
    recent: VecDeque<Kept>,
    /// Tables built ahead of time, newest first.
    ahead: VecDeque<Kept>,
    /// The backends of the tables given last, newest first, for the prebuilder.
    wanted: VecDeque<(Vec<(String, u32)>, u32)>,
    /// When a table was last given.
    posted: Option<std::time::Instant>,
}

fn kept() -> &'static Mutex<Tables> {
    static KEPT: Mutex<Tables> = Mutex::new(Tables {
        recent: VecDeque::new(),
        ahead: VecDeque::new(),
        wanted: VecDeque::new(),
        posted: None,
    });
    &KEPT
}

fn wanted_posted() -> &'static std::sync::Condvar {
    static POSTED: std::sync::Condvar = std::sync::Condvar::new();
    &POSTED
}

/// The indexes of the backends that take slots (weight above 0), in the order of their ids.
fn usable(backends: &[(&str, u32)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
    order.sort_unstable_by(|&a, &b| backends[a].0.cmp(backends[b].0));
    order
}

/// Builds, ahead of time, the tables of `backends` (id order, weights above 0) with each one
/// of them out in turn — what a health check that fails, a drain to weight 0 or a removal
/// asks for next — unless they are kept already; stops early when `stop` says so. Returns
/// how many it built. The tables are the ones [`MaglevTable::build`] gives: only sooner.
pub fn prebuild_without_each(backends: &[(String, u32)], m: u32, stop: impl Fn() -> bool) -> usize {
    let mut built = 0;
    for out in 0..backends.len() {
        if backends.len() < 2 || stop() {
            break;
        }
        let rest: Vec<(&str, u32)> = backends
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != out)
            .map(|(_, (id, w))| (id.as_str(), *w))
            .collect();
        if MaglevTable::is_kept(&rest, m) {
            continue;
        }
        let slots = MaglevTable::build(&rest, m).slots;
        built += 1;
        let mut k = kept().lock().unwrap_or_else(|e| e.into_inner());
        k.ahead.push_front(Kept {
            key: rest.iter().map(|(id, w)| (id.to_string(), *w)).collect(),
            m,
            owners: (0..rest.len() as u32).collect(),
            slots,
        });
        let mut bytes = 0;
        k.ahead.retain(|t| {
            bytes += t.slots.len() * 4;
            bytes <= AHEAD_BYTES
        });
    }
    built
}

/// The prebuilder: once no table has been asked for during `quiet` (changes come in bursts;
/// what a burst's middle asked for is not what comes next), builds the tables of
/// [`prebuild_without_each`] for the tables given last, newest first, and starts again when
/// a table is asked for in the meantime. Runs until `stop`; meant for a thread of its own at
/// the lowest priority, so that it uses only time the control plane leaves.
pub fn prebuild_loop(quiet: std::time::Duration, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    // The request after which everything wanted was prepared.
    let mut prepared = None;
    while !stop.load(Ordering::Relaxed) {
        let jobs = {
            let k = kept().lock().unwrap_or_else(|e| e.into_inner());
            match k.posted {
                Some(p) if Some(p) != prepared && p.elapsed() >= quiet => {
                    Some((k.wanted.clone(), p))
                }
                Some(p) if Some(p) != prepared => {
                    let left = quiet - p.elapsed().min(quiet);
                    drop(wanted_posted().wait_timeout(k, left));
                    None
                }
                _ => {
                    drop(wanted_posted().wait_timeout(k, std::time::Duration::from_millis(100)));
                    None
                }
            }
        };
        let Some((jobs, posted)) = jobs else {
            continue;
        };
        let asked_again = || {
            stop.load(Ordering::Relaxed)
                || kept().lock().unwrap_or_else(|e| e.into_inner()).posted != Some(posted)
        };
        for (backends, m) in &jobs {
            prebuild_without_each(backends, *m, asked_again);
        }
        if !asked_again() {
            prepared = Some(posted);
        }
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

    thread_local! {
        /// Builds made on this thread (the kept tables are process-wide; tests run in parallel).
        pub(super) static BUILDS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn builds() -> usize {
        BUILDS.with(std::cell::Cell::get)
    }

    #[test]
    fn a_table_built_ahead_for_a_backend_out_is_given_without_a_build() {
        // Names of their own: the kept tables are process-wide.
        let ids: Vec<String> = (0..5).map(|i| format!("ahead-{i}")).collect();
        let all: Vec<(String, u32)> = ids.iter().map(|i| (i.clone(), 1)).collect();
        let before = builds();
        assert_eq!(prebuild_without_each(&all, 4093, || false), 5);
        assert_eq!(builds(), before + 5);
        assert_eq!(
            prebuild_without_each(&all, 4093, || false),
            0,
            "kept already"
        );
        for out in 0..5 {
            // Removed from the list, or left in it at weight 0: the same backends.
            let removed: Vec<(&str, u32)> = ids
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != out)
                .map(|(_, id)| (id.as_str(), 1))
                .collect();
            let zero: Vec<(&str, u32)> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), u32::from(i != out)))
                .collect();
            assert!(MaglevTable::is_kept(&removed, 4093) && MaglevTable::is_kept(&zero, 4093));
            let b = builds();
            let (r, z) = (
                MaglevTable::build_recent(&removed, 4093),
                MaglevTable::build_recent(&zero, 4093),
            );
            assert_eq!(builds(), b, "backend {out} out: found, not built");
            assert!(
                r == MaglevTable::build(&removed, 4093),
                "backend {out} removed"
            );
            assert!(
                z == MaglevTable::build(&zero, 4093),
                "backend {out} at weight 0"
            );
            // The slots name each list's own indexes: the same but for the last one.
            assert_eq!(r == z, out == 4, "backend {out}");
        }
        // Stopped at once: nothing built.
        let other: Vec<(String, u32)> = ids.iter().map(|i| (i.clone(), 2)).collect();
        assert_eq!(prebuild_without_each(&other, 4093, || true), 0);
    }

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

    /// The algorithm as the module doc states it, walk by walk to the last slot.
    fn reference(backends: &[(&str, u32)], m: u32) -> Vec<u32> {
        let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
        order.sort_unstable_by(|&a, &b| backends[a].0.cmp(backends[b].0));
        let m64 = u64::from(m);
        let mut walk: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| {
                let id = backends[i].0.as_bytes();
                (
                    stable_hash(seed::MAGLEV_OFFSET, id) % m64,
                    stable_hash(seed::MAGLEV_SKIP, id) % (m64 - 1) + 1,
                )
            })
            .collect();
        let max = order.iter().map(|&i| backends[i].1).max().unwrap();
        let mut credit = vec![0u32; order.len()];
        let mut slots = vec![u32::MAX; m as usize];
        let mut filled = 0;
        while filled < m {
            for (k, &i) in order.iter().enumerate() {
                credit[k] += backends[i].1;
                if credit[k] < max || filled == m {
                    continue;
                }
                credit[k] -= max;
                let (next, skip) = &mut walk[k];
                while slots[*next as usize] != u32::MAX {
                    *next = (*next + *skip) % m64;
                }
                slots[*next as usize] = i as u32;
                filled += 1;
            }
        }
        slots
    }

    #[test]
    fn a_recent_table_is_found_again_and_is_the_table_build_gives() {
        // Names of their own: the list is process-wide and other tests build tables too.
        let ids: Vec<String> = (0..4).map(|i| format!("recent-{i}")).collect();
        let with =
            |w: [u32; 4]| -> Vec<(&str, u32)> { ids.iter().map(String::as_str).zip(w).collect() };
        let (a, b) = (with([1, 1, 1, 1]), with([1, 2, 1, 1]));
        let first = MaglevTable::build_recent(&a, 4093);
        let other = MaglevTable::build_recent(&b, 4093);
        let again = MaglevTable::build_recent(&a, 4093);
        assert!(
            again.shares_slots_with(&first),
            "the same inputs: the table built before"
        );
        assert!(!other.shares_slots_with(&first));
        assert_eq!(again, MaglevTable::build(&a, 4093));
        assert_eq!(other, MaglevTable::build(&b, 4093));
        // Another M, another order or another name is another table.
        assert!(!MaglevTable::build_recent(&a, 251).shares_slots_with(&first));
        let swapped: Vec<(&str, u32)> = a.iter().rev().copied().collect();
        let t = MaglevTable::build_recent(&swapped, 4093);
        assert!(!t.shares_slots_with(&first));
        assert_eq!(t, MaglevTable::build(&swapped, 4093));
        // Enough other tables push it out: then it is built again, and equal.
        for i in 0..(RECENT_BYTES / (4093 * 4) + 1) as u32 {
            MaglevTable::build_recent(&with([1, 1, 1, 100 + i]), 4093);
        }
        let rebuilt = MaglevTable::build_recent(&a, 4093);
        assert!(
            !rebuilt.shares_slots_with(&first),
            "pushed out by newer tables"
        );
        assert_eq!(rebuilt, first);
    }

    #[test]
    fn the_build_with_its_tail_lists_is_the_plain_walk() {
        // Tables whose last quarter / (4 x backends) is claimed from the tail lists.
        for (n, m) in [
            (1, 251),
            (2, 65537),
            (8, 65537),
            (13, 4093),
            (100, 65537),
            (40, 251),
        ] {
            let ids = ids(n);
            for weights in [vec![1; n], (0..n).map(|i| 1 + (i as u32 * 7) % 5).collect()] {
                let backends: Vec<(&str, u32)> = ids
                    .iter()
                    .map(String::as_str)
                    .zip(weights.iter().copied())
                    .collect();
                let t = MaglevTable::build(&backends, m);
                let got: Vec<u32> = (0..m as usize).map(|i| t.slot(i).unwrap()).collect();
                assert!(
                    got == reference(&backends, m),
                    "{n} backends, M = {m}, {weights:?}"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// The tail's counting sort is a sort, however the steps are spread (all in one
        /// bucket's span included).
        #[test]
        fn the_spread_sort_sorts(
            m in 2u64..70_000,
            picks in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..3000),
            crowd in proptest::prelude::any::<bool>(),
        ) {
            // Distinct steps below m: crowded at the start, or anywhere.
            let mut steps: Vec<u64> = picks
                .iter()
                .map(|p| if crowd { p % m.min(picks.len() as u64 * 2) } else { p % m })
                .collect();
            steps.sort_unstable();
            steps.dedup();
            let keyed: Vec<u64> = steps
                .iter()
                .rev()
                .enumerate()
                .map(|(i, &st)| st << 32 | (i as u64 * 7919 % m))
                .collect();
            let mut expected = keyed.clone();
            expected.sort_unstable();
            let mut counts = vec![0; keyed.len() + 1];
            let mut sorted = vec![0; keyed.len()];
            sort_spread(&keyed, m, &mut counts, &mut sorted);
            proptest::prop_assert_eq!(sorted, expected);
        }
    }

    #[test]
    fn inverses_modulo_a_prime_and_none_without_one() {
        assert_eq!(inverse_mod(3, 65537), Some(21846)); // 3 x 21846 = 65538
        assert_eq!(inverse_mod(1, 13), Some(1));
        assert_eq!(inverse_mod(4, 12), None);
        // Every a of a prime, and a modulus near the top of 32 bits.
        for a in 1..251 {
            assert_eq!(u64::from(a) * inverse_mod(a, 251).unwrap() % 251, 1, "{a}");
        }
        let big = u32::MAX - 4; // 4294967291, the largest 32-bit prime
        let x = inverse_mod(big - 1, big).unwrap();
        assert_eq!(u128::from(big - 1) * u128::from(x) % u128::from(big), 1);
    }
}
