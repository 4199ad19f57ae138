//! The per-worker flow table: which backend each flow was given, and its TCP state.
//!
//! Layout: a slab of [`Flow`] entries allocated once (`capacity`), an index of slab slots
//! keyed by the flow (and a second one keyed by the reply direction, for NAT; see
//! `flow::index`), and one doubly-linked list per state, oldest first. Nothing allocates
//! after `new`: the indexes are sized for the capacity and have no tombstones to clean.
//!
//! Each state has its own timeout (the IPVS defaults), so within one list the oldest entry is
//! always the first to expire: expiry is lazy on lookup plus a sweep that pops expired heads,
//! bounded per call. When the table is full a new flow evicts the oldest entry of the first
//! non-empty list in the order SYN, closed, FIN, mid-stream, then the older of UDP and
//! established — so a flood of SYNs from new sources evicts other half-open flows, and a flood
//! of ACKs from new sources (flows that start mid-stream) evicts other mid-stream flows, never
//! one whose handshake was seen. (No share of the table is kept for them: a failover brings
//! more real mid-stream flows than any share, and they would evict each other before their
//! second segment.)
//!
//! A half-open flow evicted before its timeout means a SYN flood: the handshakes of real
//! clients are evicted too, before their ACK arrives. The table remembers when that last
//! happened ([`syn_flood`](FlowTable::syn_flood)) so the caller can give new flows a backend
//! that their ACK will find again without the entry.
//!
//! Connection counts per backend (active = TCP established, inactive = the rest, as IPVS) are
//! updated on every create, state change, expiry, eviction and flush, so they stay exact.

use super::FlowKey;
use super::index::{FlowIndex, KeyHasher};
use std::sync::Arc;

use super::persist::{self, TemplateKey, Templates};
use crate::sched::{ConnBoard, ConnSource, Conns};
use crate::service::{BackendId, ServiceId};
use crate::wire::tcp;

const NIL: u32 = u32::MAX;

/// Where a flow is in its life. TCP states follow the flags seen (both directions in NAT, the
/// client's only in DR and TUN, like IPVS's input-only state table); UDP flows have one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowState {
    /// SYN seen, not yet acknowledged by the client.
    Syn = 0,
    /// RST seen.
    Closed = 1,
    /// FIN seen.
    Fin = 2,
    Udp = 3,
    Established = 4,
    /// Started by a segment with no SYN (after a failover, a restart, or from a spoofed
    /// source): forwarded as established, evicted before any flow whose handshake was seen.
    /// Its second segment makes it established.
    Midstream = 5,
}

const STATES: usize = 6;
/// The lists: one per state, and one of the flows peers told us about (synchronisation) and
/// no packet of has arrived yet.
const LISTS: usize = STATES + 1;
const SYNCED_LIST: usize = STATES;
/// The eviction order when the table is full (Udp and Established: the older of the two).
const EVICTION_ORDER: [FlowState; 4] = [
    FlowState::Syn,
    FlowState::Closed,
    FlowState::Fin,
    FlowState::Midstream,
];

impl FlowState {
    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            FlowState::Syn => "syn",
            FlowState::Closed => "closed",
            FlowState::Fin => "fin",
            FlowState::Udp => "udp",
            FlowState::Established => "established",
            FlowState::Midstream => "midstream",
        }
    }

    /// The state of a flow that starts with a TCP segment with `flags`, or why the segment
    /// must not create one: a RST, or flags no segment of a connection carries (SYN with FIN
    /// or RST, none at all).
    pub fn for_new_tcp(flags: u8) -> Result<FlowState, NoFlow> {
        if flags & tcp::SYN != 0 && flags & (tcp::FIN | tcp::RST) != 0
            || flags & (tcp::SYN | tcp::ACK | tcp::FIN | tcp::RST) == 0
        {
            Err(NoFlow::ImpossibleFlags)
        } else if flags & tcp::RST != 0 {
            Err(NoFlow::Reset)
        } else if flags & tcp::SYN != 0 {
            Ok(FlowState::Syn)
        } else if flags & tcp::FIN != 0 {
            Ok(FlowState::Fin)
        } else {
            // A mid-stream segment without a flow (after a failover or a restart): keep it
            // going, as Maglev and Katran do, but below the flows whose handshake was seen.
            Ok(FlowState::Midstream)
        }
    }

    /// The state after a TCP segment with `flags` on a flow in `self`.
    #[inline]
    pub fn after_tcp(self, flags: u8) -> FlowState {
        use FlowState::*;
        if flags & tcp::RST != 0 {
            return Closed;
        }
        if flags & tcp::SYN != 0 {
            return match self {
                // a new connection reusing the tuple
                Closed | Fin if flags & tcp::ACK == 0 => Syn,
                s => s,
            };
        }
        if flags & tcp::FIN != 0 {
            return match self {
                Closed => Closed,
                _ => Fin,
            };
        }
        match self {
            Syn if flags & tcp::ACK != 0 => Established,
            // Its second segment: a spoofed flood sends one per tuple.
            Midstream => Established,
            s => s,
        }
    }

    fn is_active(self) -> bool {
        self == FlowState::Established
    }
}

/// Why a TCP segment without a flow creates none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoFlow {
    Reset,
    ImpossibleFlags,
}

/// Seconds per state; the IPVS defaults are in `Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub tcp_established: u32,
    pub tcp_syn: u32,
    pub tcp_fin: u32,
    pub tcp_close: u32,
    pub udp: u32,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        FlowTimeouts {
            tcp_established: 900,
            tcp_syn: 60,
            tcp_fin: 120,
            tcp_close: 10,
            udp: 300,
        }
    }
}

impl FlowTimeouts {
    /// Seconds per state, indexed by `FlowState::index`.
    fn by_state(&self) -> [u32; STATES] {
        let mut t = [0; STATES];
        t[FlowState::Syn.index()] = self.tcp_syn;
        t[FlowState::Closed.index()] = self.tcp_close;
        t[FlowState::Fin.index()] = self.tcp_fin;
        t[FlowState::Udp.index()] = self.udp;
        t[FlowState::Established.index()] = self.tcp_established;
        // A real connection picked up mid-stream may be as quiet as any established one.
        t[FlowState::Midstream.index()] = self.tcp_established;
        t
    }
}

/// One flow. 64 bytes aligned to 64: one cache line. (Without the alignment the slab starts
/// where the allocator puts it, 16 bytes into a line for a large one, and every flow straddles
/// two lines: two misses per lookup.)
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
pub struct Flow {
    pub key: FlowKey,
    pub state: FlowState,
    /// [`NAT`] (in the reply index too), [`BOUND`] (controlled by a persistence template).
    flags: u8,
    pub service: ServiceId,
    pub backend: BackendId,
    /// Seconds (the caller's clock) of the last packet.
    pub last_seen: u32,
    /// Seconds (the caller's clock) of the first packet.
    pub created: u32,
    prev: u32,
    next: u32,
}

/// A [`Flow`]'s flag: in the reply index too (NAT).
const NAT: u8 = 1;
/// A [`Flow`]'s flag: a persistence template controls it.
const BOUND: u8 = 2;
/// A [`Flow`]'s flag: installed from a peer's synchronisation record, no packet seen here yet.
/// It is in the synced list, evicted before any other, and counted for no backend.
const SYNCED: u8 = 4;

impl Flow {
    /// Found by its replies too (NAT).
    pub fn is_nat(&self) -> bool {
        self.flags & NAT != 0
    }

    /// Controlled by a persistence template.
    pub fn is_bound(&self) -> bool {
        self.flags & BOUND != 0
    }

    /// Installed from a peer's record; no packet of it seen here yet.
    pub fn is_synced(&self) -> bool {
        self.flags & SYNCED != 0
    }

    /// The list the flow is in.
    #[inline(always)]
    fn list(&self) -> usize {
        if self.flags & SYNCED != 0 {
            SYNCED_LIST
        } else {
            self.state.index()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowTableStats {
    pub created: u64,
    pub expired: u64,
    /// Removed to make room for a new flow (synced flows aside: `sync_evicted`).
    pub evicted: u64,
    /// Of those, established ones (only when nothing else was left to evict).
    pub evicted_established: u64,
    pub flushed: u64,
    /// New flows given a backend by the hash of their tuple because a SYN flood was evicting
    /// half-open flows (counted by the caller, see [`FlowTable::count_hashed`]).
    pub syn_flood_hashed: u64,
    /// Peers' records: installed as new synced flows, updating a synced flow, and refused
    /// because a flow of ours has the tuple or the table is full of our own flows.
    pub sync_installed: u64,
    pub sync_updated: u64,
    pub sync_known: u64,
    pub sync_full: u64,
    /// Peers' records of a service or backend we do not have (counted by the caller).
    pub sync_unknown: u64,
    /// Synced flows that a packet made ours, and those evicted (or expired) before one came.
    pub sync_adopted: u64,
    pub sync_evicted: u64,
}

impl std::iter::Sum for FlowTableStats {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(FlowTableStats::default(), |t, s| FlowTableStats {
            created: t.created + s.created,
            expired: t.expired + s.expired,
            evicted: t.evicted + s.evicted,
            evicted_established: t.evicted_established + s.evicted_established,
            flushed: t.flushed + s.flushed,
            syn_flood_hashed: t.syn_flood_hashed + s.syn_flood_hashed,
            sync_installed: t.sync_installed + s.sync_installed,
            sync_updated: t.sync_updated + s.sync_updated,
            sync_known: t.sync_known + s.sync_known,
            sync_full: t.sync_full + s.sync_full,
            sync_unknown: t.sync_unknown + s.sync_unknown,
            sync_adopted: t.sync_adopted + s.sync_adopted,
            sync_evicted: t.sync_evicted + s.sync_evicted,
        })
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct List {
    head: u32, // oldest
    tail: u32, // newest
    len: u32,
}

/// A backend's address and port as flows see them (for NAT replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Endpoint {
    pub addr: [u8; 16],
    pub port: u16,
}

pub struct FlowTable {
    slots: Vec<Flow>,
    /// Free slab entries, linked through `next`.
    free: u32,
    lists: [List; LISTS],
    index: FlowIndex,
    reply_index: FlowIndex,
    hasher: KeyHasher,
    capacity: u32,
    timeouts: FlowTimeouts,
    /// `timeouts` by state index: one load per expiry check.
    timeout_of: [u32; STATES],
    /// A clock value at which a sweep found nothing (more) expired. Until the clock moves on
    /// (or the timeouts change), nothing more can expire: the clock never goes back (the
    /// lists' oldest-first order assumes it too) and a flow's `last_seen` only grows.
    swept_clean_at: Option<u32>,
    /// When (the caller's clock) a half-open flow was last evicted.
    syn_evicted_at: Option<u32>,
    conns: Vec<Conns>,
    /// Persistence templates, and per service id the netmask (of the 16-byte form) its
    /// templates are keyed by (None: not persistent).
    pub templates: Templates,
    persist_masks: Vec<Option<u8>>,
    /// The latest clock the table was given (a flow ending in a removal ends at it).
    clock: u32,
    /// The connection counts every worker shares for the backends' limits, and this table's
    /// row in it.
    board: Arc<ConnBoard>,
    board_row: usize,
    endpoints: Vec<Endpoint>,
    stats: FlowTableStats,
    /// Where the flows' news for the peers go (synchronisation on), and the most synced flows
    /// the table holds (half its capacity: our own flows always find room).
    journal: Option<Box<crate::sync::Journal>>,
    max_synced: u32,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("stats", &self.stats)
            .finish()
    }
}

/// What a NAT reply carries: protocol, backend endpoint, client endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyKey {
    pub protocol: u8,
    pub backend: Endpoint,
    pub client: [u8; 16],
    pub client_port: u16,
}

impl ReplyKey {
    /// Five native-endian words, as [`FlowKey::words`]: what the reply index hashes.
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        let w = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        [
            w(&self.backend.addr[..8]),
            w(&self.backend.addr[8..]),
            w(&self.client[..8]),
            w(&self.client[8..]),
            u64::from(self.client_port)
                | u64::from(self.backend.port) << 16
                | u64::from(self.protocol) << 32,
        ]
    }
}

/// A flow to add: what it is, where it goes, how it starts.
#[derive(Debug, Clone, Copy)]
pub struct NewFlow {
    pub key: FlowKey,
    pub service: ServiceId,
    pub backend: BackendId,
    pub endpoint: Endpoint,
    /// Also findable by its replies (NAT).
    pub nat: bool,
    pub state: FlowState,
    /// Controlled by this persistence template (its timeout, seconds): the template is made or
    /// used, and counts the flow until it ends.
    pub template: Option<(TemplateKey, u32)>,
}

/// What [`FlowTable::install`] did with a peer's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    New,
    /// It replaced the synced flow of the tuple.
    Updated,
    /// A flow of ours has the tuple: kept.
    Known,
    /// The table is full of our own flows.
    Full,
    /// The backend id is beyond what the table was sized for.
    Unknown,
}

/// Why `insert` could not add a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The backend id is beyond what the table was sized for.
    BackendIdTooLarge,
}

impl FlowTable {
    /// A table for `capacity` flows and backend ids below `max_backends`.
    pub fn new(capacity: u32, max_backends: u32, timeouts: FlowTimeouts) -> Self {
        FlowTable::try_new(capacity, max_backends, timeouts).expect("memory for the flow table")
    }

    /// [`new`](Self::new), or the allocation's error when the memory is not there (a start
    /// then fails with a message instead of aborting).
    pub fn try_new(
        capacity: u32,
        max_backends: u32,
        timeouts: FlowTimeouts,
    ) -> Result<Self, std::collections::TryReserveError> {
        let capacity = capacity.max(1);
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity as usize)?;
        Ok(FlowTable {
            slots,
            free: NIL,
            lists: [List {
                head: NIL,
                tail: NIL,
                len: 0,
            }; LISTS],
            index: FlowIndex::try_new(capacity as usize)?,
            reply_index: FlowIndex::try_new(capacity as usize)?,
            hasher: KeyHasher::random(),
            capacity,
            timeouts,
            timeout_of: timeouts.by_state(),
            swept_clean_at: None,
            syn_evicted_at: None,
            conns: vec![Conns::default(); max_backends as usize],
            templates: Templates::try_new((capacity as usize / 8).max(1024))?,
            persist_masks: Vec::new(),
            clock: 0,
            board: Arc::new(ConnBoard::new(1, max_backends)),
            board_row: 0,
            endpoints: vec![Endpoint::default(); max_backends as usize],
            stats: FlowTableStats::default(),
            journal: None,
            max_synced: (capacity / 2).max(1),
        })
    }

    pub fn len(&self) -> usize {
        self.lists.iter().map(|l| l.len as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len() >= capacity`, without adding up the lists: every slab entry is a flow when none
    /// is free and the slab has reached its capacity (it only grows when none is free).
    #[inline(always)]
    fn is_full(&self) -> bool {
        debug_assert_eq!(
            self.free == NIL && self.slots.len() >= self.capacity as usize,
            self.len() >= self.capacity as usize
        );
        self.free == NIL && self.slots.len() >= self.capacity as usize
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn stats(&self) -> FlowTableStats {
        self.stats
    }

    pub fn timeouts(&self) -> FlowTimeouts {
        self.timeouts
    }

    pub fn set_timeouts(&mut self, t: FlowTimeouts) {
        self.timeouts = t;
        self.timeout_of = t.by_state();
        self.swept_clean_at = None;
    }

    pub fn get(&self, slot: u32) -> &Flow {
        &self.slots[slot as usize]
    }

    /// The endpoint last recorded for a backend id.
    pub fn endpoint(&self, backend: BackendId) -> Endpoint {
        self.endpoints
            .get(backend.0 as usize)
            .copied()
            .unwrap_or_default()
    }

    /// How many flows are in `state`.
    pub fn count(&self, state: FlowState) -> u32 {
        self.lists[state.index()].len
    }

    /// The reply index's hash of `k` (also for the reply index's prefetches below).
    #[inline(always)]
    pub fn hash_reply(&self, k: &ReplyKey) -> u64 {
        self.hasher.hash(k.words())
    }

    fn reply_key_of(&self, f: &Flow) -> ReplyKey {
        ReplyKey {
            protocol: f.key.protocol,
            backend: self.endpoints[f.backend.0 as usize],
            client: f.key.client,
            client_port: f.key.client_port,
        }
    }

    fn expired(&self, f: &Flow, now: u32) -> bool {
        now > f.last_seen.saturating_add(self.timeout_of[f.state.index()])
    }

    /// The live flow for `key`; an expired one is removed and not returned.
    #[inline(always)]
    pub fn lookup(&mut self, key: &FlowKey, now: u32) -> Option<u32> {
        self.lookup_hashed(key, self.hash_of(key), now)
    }

    /// [`lookup`](Self::lookup) of a key whose [`hash_of`](Self::hash_of) is `hash`.
    #[inline(always)]
    pub fn lookup_hashed(&mut self, key: &FlowKey, hash: u64, now: u32) -> Option<u32> {
        let slot = self.find_hashed(key, hash)?;
        if self.expired(&self.slots[slot as usize], now) {
            self.remove(slot);
            self.stats.expired += 1;
            return None;
        }
        Some(slot)
    }

    /// Bytes the table holds for its capacity: the slab and both indexes (the per-backend
    /// arrays aside, which do not grow with flows).
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Flow>()
            + self.index.allocation_size()
            + self.reply_index.allocation_size()
    }

    /// The cache lines a pass over every flow touches in the forward index and the slab: a
    /// bucket per flow until flows share buckets, and an entry per flow. A sparse table (few
    /// flows in a large index) touches as many lines as a dense one twice its size.
    #[inline]
    pub fn touched_bytes(&self) -> usize {
        let len = self.len();
        len * std::mem::size_of::<Flow>() + len.min(self.index.buckets()) * 64
    }

    /// The flow for `key`, live or expired, changing nothing (the fast path looks first and
    /// leaves any change to [`lookup`](FlowTable::lookup); a burst is looked up ahead with it
    /// to bring index entries and flows into the cache).
    #[inline(always)]
    pub fn find(&self, key: &FlowKey) -> Option<u32> {
        self.find_hashed(key, self.hash_of(key))
    }

    /// [`find`](FlowTable::find) of a key whose [`hash_of`](FlowTable::hash_of) is `hash`,
    /// computed already (by the warm pass, from the same bytes).
    #[inline(always)]
    pub fn find_hashed(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        debug_assert_eq!(hash, self.hash_of(key), "the hash of this key");
        self.index
            .find(hash, |s| self.slots[s as usize].key == *key)
    }

    /// The index hash of `key` (also for [`prefetch_index`](FlowTable::prefetch_index) and
    /// [`prefetch_flows`](FlowTable::prefetch_flows)).
    #[inline(always)]
    pub fn hash_of(&self, key: &FlowKey) -> u64 {
        self.hasher.hash(key.words())
    }

    /// Starts loading the index bucket a lookup of the key with `hash` reads.
    #[inline(always)]
    pub fn prefetch_index(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Starts loading the flows a lookup of the key with `hash` compares (once its index bucket
    /// is in the cache: after [`prefetch_index`](FlowTable::prefetch_index) has had time).
    #[inline(always)]
    pub fn prefetch_flows(&self, hash: u64) {
        self.prefetch_candidates(&self.index, hash);
    }

    #[inline(always)]
    fn prefetch_candidates(&self, index: &FlowIndex, hash: u64) {
        for s in index.candidates(hash) {
            if let Some(f) = self.slots.get(s as usize) {
                crate::prefetch::prefetch(f);
            }
        }
    }

    /// Whether the flow in `slot` has timed out at `now`.
    #[inline(always)]
    pub fn expired_at(&self, slot: u32, now: u32) -> bool {
        self.expired(&self.slots[slot as usize], now)
    }

    /// The live NAT flow a reply from a backend belongs to.
    #[inline]
    pub fn lookup_reply(&mut self, key: &ReplyKey, now: u32) -> Option<u32> {
        let slot = self.find_reply(key)?;
        if self.expired(&self.slots[slot as usize], now) {
            self.remove(slot);
            self.stats.expired += 1;
            return None;
        }
        Some(slot)
    }

    /// The NAT flow whose replies `key` names, live or expired, changing nothing (the fast
    /// path's look before [`lookup_reply`](FlowTable::lookup_reply)).
    #[inline(always)]
    pub fn find_reply(&self, key: &ReplyKey) -> Option<u32> {
        self.find_reply_hashed(key, self.hash_reply(key))
    }

    /// [`find_reply`](FlowTable::find_reply) of a key whose
    /// [`hash_reply`](FlowTable::hash_reply) is `hash`, computed already.
    #[inline(always)]
    pub fn find_reply_hashed(&self, key: &ReplyKey, hash: u64) -> Option<u32> {
        debug_assert_eq!(hash, self.hash_reply(key), "the hash of this key");
        self.reply_index.find(hash, |s| {
            let f = &self.slots[s as usize];
            f.key.protocol == key.protocol
                && f.key.client == key.client
                && f.key.client_port == key.client_port
                && self.endpoints[f.backend.0 as usize] == key.backend
        })
    }

    /// [`prefetch_index`](FlowTable::prefetch_index) of the reply index.
    #[inline(always)]
    pub fn prefetch_reply_index(&self, hash: u64) {
        self.reply_index.prefetch(hash);
    }

    /// [`prefetch_flows`](FlowTable::prefetch_flows) of the reply index.
    #[inline(always)]
    pub fn prefetch_reply_flows(&self, hash: u64) {
        self.prefetch_candidates(&self.reply_index, hash);
    }

    /// Records a packet on a flow: its TCP flags (None for UDP) move the state, and the flow
    /// becomes the newest of its list.
    #[inline(always)]
    pub fn touch(&mut self, slot: u32, tcp_flags: Option<u8>, now: u32) -> FlowState {
        let old = self.slots[slot as usize].state;
        let new = match tcp_flags {
            Some(f) => old.after_tcp(f),
            None => old,
        };
        let f = &self.slots[slot as usize];
        if old == new && f.last_seen == now && f.flags & SYNCED == 0 {
            // Already the newest of its list as far as a one-second clock can tell: the lists
            // stay ordered by last_seen without the six writes of a relink on every packet.
            return new;
        }
        // A long-lived flow is told to the peers again at its first packet in each refresh
        // period of its life (their copy would time out otherwise): the period of the last
        // packet and of this one differ.
        let refresh = self.journal.as_ref().is_some_and(|j| {
            j.refresh > 0
                && now.saturating_sub(f.created) / j.refresh
                    != f.last_seen.saturating_sub(f.created) / j.refresh
        });
        let (backend, synced) = (f.backend, f.flags & SYNCED != 0);
        self.unlink(slot);
        if synced {
            // A peer's flow, its first packet here: ours from now on.
            self.slots[slot as usize].flags &= !SYNCED;
            self.count_in(backend, new);
            self.bind(backend, true);
            self.stats.sync_adopted += 1;
        } else if old != new {
            self.count_out(backend, old);
            self.count_in(backend, new);
        }
        let f = &mut self.slots[slot as usize];
        f.state = new;
        f.last_seen = now;
        self.link_tail(slot);
        if old != new || refresh {
            self.tell_peers(slot, now);
        }
        new
    }

    /// Queues the flow in `slot` for the peers (when synchronisation is on).
    #[inline]
    fn tell_peers(&mut self, slot: u32, now: u32) {
        if self.journal.is_none() {
            return;
        }
        let f = &self.slots[slot as usize];
        let r = crate::sync::SyncRecord {
            key: f.key,
            backend: self.endpoints[f.backend.0 as usize],
            state: f.state,
            nat: f.is_nat(),
            bound: f.is_bound(),
            timeout: self.timeout_of[f.state.index()],
        };
        if let Some(j) = self.journal.as_mut() {
            j.push(r, now);
        }
    }

    /// Writes the records staged for the peers to the ring (between bursts).
    #[inline]
    pub fn flush_journal(&mut self) {
        if let Some(j) = self.journal.as_mut() {
            j.flush();
        }
    }

    /// Turns synchronisation on: the flows' news go to `journal`.
    pub fn set_journal(&mut self, journal: crate::sync::Journal) {
        // Boxed: its staging array stays out of the table's own cache lines.
        self.journal = Some(Box::new(journal));
    }

    /// Records queued for the peers, lost because the ring was full, and over the rate.
    pub fn journal_counts(&self) -> (u64, u64, u64) {
        self.journal
            .as_ref()
            .map_or((0, 0, 0), |j| (j.queued, j.full, j.limited))
    }

    /// Counts a peer's record of a service or backend we do not have.
    pub fn count_sync_unknown(&mut self) {
        self.stats.sync_unknown += 1;
    }

    /// How many synced flows (a peer's, no packet seen here yet) the table holds.
    pub fn synced(&self) -> u32 {
        self.lists[SYNCED_LIST].len
    }

    /// Installs a peer's flow as a synced one: the first to be evicted, counted for no backend
    /// until its first packet arrives. A synced flow of the tuple is replaced (the peer's news
    /// is newer); a flow of ours is kept. Synced flows fill at most half the table (the oldest
    /// goes first) and never evict a flow of ours.
    pub fn install(&mut self, new: NewFlow, now: u32) -> Installed {
        if new.backend.0 as usize >= self.conns.len() {
            self.stats.sync_unknown += 1;
            return Installed::Unknown;
        }
        self.clock = self.clock.max(now);
        let mut updated = false;
        if let Some(slot) = self.lookup(&new.key, now) {
            if self.slots[slot as usize].flags & SYNCED == 0 {
                self.stats.sync_known += 1;
                return Installed::Known;
            }
            self.remove(slot);
            updated = true;
        }
        if self.lists[SYNCED_LIST].len >= self.max_synced
            || self.is_full() && self.lists[SYNCED_LIST].head != NIL
        {
            let oldest = self.lists[SYNCED_LIST].head;
            self.evict(oldest, now);
        }
        if self.is_full() {
            self.stats.sync_full += 1;
            return Installed::Full;
        }
        self.place(new, self.hash_of(&new.key), now, SYNCED);
        if updated {
            self.stats.sync_updated += 1;
            Installed::Updated
        } else {
            self.stats.sync_installed += 1;
            Installed::New
        }
    }

    /// Puts a flow in the slab, the index (under `hash`, its key's [`hash_of`](Self::hash_of);
    /// and the reply index, NAT) and at the tail of its list; counts nothing.
    fn place(&mut self, new: NewFlow, hash: u64, now: u32, flags: u8) -> u32 {
        self.endpoints[new.backend.0 as usize] = new.endpoint;
        let flow = Flow {
            key: new.key,
            state: new.state,
            flags: flags | if new.nat { NAT } else { 0 },
            service: new.service,
            backend: new.backend,
            last_seen: now,
            created: now,
            prev: NIL,
            next: NIL,
        };
        let slot = if self.free != NIL {
            let s = self.free;
            self.free = self.slots[s as usize].next;
            self.slots[s as usize] = flow;
            s
        } else {
            // Never beyond the reserved capacity: len < capacity here and the slab only grows
            // when the free list is empty.
            self.slots.push(flow);
            (self.slots.len() - 1) as u32
        };
        debug_assert_eq!(hash, self.hash_of(&new.key), "the hash of this key");
        // Sized for the capacity, which `len` never exceeds: there is always room.
        let added = self.index.insert(hash, slot);
        debug_assert!(added);
        if new.nat {
            let rk = self.reply_key_of(&self.slots[slot as usize]);
            let added = self.reply_index.insert(self.hash_reply(&rk), slot);
            debug_assert!(added);
        }
        self.link_tail(slot);
        slot
    }

    /// Adds a flow (the key must not be in the table). When full, the entry the eviction order
    /// names goes first. `nat` flows are also found by their replies.
    pub fn insert(&mut self, new: NewFlow, now: u32) -> Result<u32, InsertError> {
        self.insert_hashed(new, self.hash_of(&new.key), now)
    }

    /// [`insert`](Self::insert) of a flow whose key's [`hash_of`](Self::hash_of) is `hash`,
    /// computed already (by the lookup that found no flow).
    pub fn insert_hashed(&mut self, new: NewFlow, hash: u64, now: u32) -> Result<u32, InsertError> {
        let (backend, state, template) = (new.backend, new.state, new.template);
        if backend.0 as usize >= self.conns.len() {
            return Err(InsertError::BackendIdTooLarge);
        }
        if self.is_full() {
            self.evict_one(now);
        }
        let slot = self.place(new, hash, now, 0);
        self.count_in(backend, state);
        self.bind(backend, true);
        self.clock = self.clock.max(now);
        if let Some((t, timeout)) = template
            && self.templates.bind(t, backend, now, timeout)
        {
            self.slots[slot as usize].flags |= BOUND;
        }
        self.stats.created += 1;
        self.tell_peers(slot, now);
        Ok(slot)
    }

    /// Removes a flow.
    pub fn remove(&mut self, slot: u32) {
        let f = self.slots[slot as usize];
        let h = self.hash_of(&f.key);
        self.index.remove(h, slot);
        if f.is_nat() {
            self.reply_index
                .remove(self.hash_reply(&self.reply_key_of(&f)), slot);
        }
        if !f.is_synced() {
            self.count_out(f.backend, f.state);
            self.bind(f.backend, false);
        }
        if f.is_bound()
            && let Some(&Some(len)) = self.persist_masks.get(f.service.0 as usize)
        {
            let key = TemplateKey {
                service: f.service,
                client: persist::masked(&f.key.client, len),
            };
            self.templates.release(&key, self.clock.max(f.last_seen));
        }
        self.unlink(slot);
        let e = &mut self.slots[slot as usize];
        e.next = self.free;
        e.prev = NIL;
        self.free = slot;
    }

    /// Removes expired flows from the old end of each list, at most `budget` of them. Once a
    /// sweep has found nothing (more) to remove at `now`, the next ones at the same `now`
    /// return at once (a new flow sweeps too: most would otherwise read five list heads).
    #[inline(always)]
    pub fn sweep(&mut self, now: u32, budget: usize) -> usize {
        self.clock = self.clock.max(now);
        // Inline, the common answer costs no call (every new flow asks).
        if self.swept_clean_at == Some(now) {
            return 0;
        }
        self.sweep_lists(now, budget)
    }

    /// [`sweep`](Self::sweep) once it has to look at the lists.
    #[inline(never)]
    fn sweep_lists(&mut self, now: u32, budget: usize) -> usize {
        let mut removed = 0;
        // (The synced list is in the order the records came, not strictly by expiry: one
        // whose head lives on waits for it, or for an eviction.)
        for l in 0..LISTS {
            loop {
                let head = self.lists[l].head;
                if head == NIL || !self.expired(&self.slots[head as usize], now) {
                    break;
                }
                if removed == budget {
                    return removed; // more to do: not clean
                }
                if l == SYNCED_LIST {
                    self.stats.sync_evicted += 1;
                }
                self.remove(head);
                self.stats.expired += 1;
                removed += 1;
            }
        }
        self.swept_clean_at = Some(now);
        removed
    }

    /// Whether half-open flows have been evicted at `now` or within the SYN timeout before:
    /// a flood has been filling the table, and handshakes lose their entries before they
    /// complete.
    #[inline]
    pub fn syn_flood(&self, now: u32) -> bool {
        self.syn_evicted_at
            .is_some_and(|t| now <= t.saturating_add(self.timeout_of[FlowState::Syn.index()]))
    }

    /// Counts a new flow given a backend by hash during a SYN flood.
    #[inline]
    pub fn count_hashed(&mut self) {
        self.stats.syn_flood_hashed += 1;
    }

    fn evict_one(&mut self, now: u32) {
        let mut victim = std::iter::once(self.lists[SYNCED_LIST].head)
            .chain(EVICTION_ORDER.iter().map(|s| self.lists[s.index()].head))
            .find(|h| *h != NIL);
        if victim.is_none() {
            let (u, e) = (
                self.lists[FlowState::Udp.index()].head,
                self.lists[FlowState::Established.index()].head,
            );
            victim = match (u, e) {
                (NIL, NIL) => None,
                (NIL, e) => Some(e),
                (u, NIL) => Some(u),
                (u, e) => Some(
                    if self.slots[u as usize].last_seen <= self.slots[e as usize].last_seen {
                        u
                    } else {
                        e
                    },
                ),
            };
        }
        if let Some(v) = victim {
            self.evict(v, now);
        }
    }

    fn evict(&mut self, slot: u32, now: u32) {
        let f = &self.slots[slot as usize];
        match f.state {
            _ if f.is_synced() => self.stats.sync_evicted += 1,
            FlowState::Established => self.stats.evicted_established += 1,
            FlowState::Syn => self.syn_evicted_at = Some(now),
            _ => {}
        }
        if !f.is_synced() {
            self.stats.evicted += 1;
        }
        self.remove(slot);
    }

    /// Removes every flow that `doomed` selects; returns how many. Control-side work (between
    /// bursts), linear in the table size.
    pub fn flush(&mut self, doomed: impl Fn(&Flow) -> bool) -> usize {
        let mut n = 0;
        for l in 0..LISTS {
            let mut s = self.lists[l].head;
            while s != NIL {
                let next = self.slots[s as usize].next;
                if doomed(&self.slots[s as usize]) {
                    self.remove(s);
                    n += 1;
                }
                s = next;
            }
        }
        self.stats.flushed += n as u64;
        n
    }

    pub fn flush_service(&mut self, service: ServiceId) -> usize {
        self.flush(|f| f.service == service)
    }

    pub fn flush_backend(&mut self, backend: BackendId) -> usize {
        self.flush(|f| f.backend == backend)
    }

    /// Every live flow, oldest first within each state (for dumps; not for the packet path).
    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        (0..LISTS).flat_map(move |l| {
            let mut s = self.lists[l].head;
            std::iter::from_fn(move || {
                (s != NIL).then(|| {
                    let f = &self.slots[s as usize];
                    s = f.next;
                    f
                })
            })
        })
    }

    /// A flow of `b` created (`bound`) or removed: the shared board learns this table's count.
    #[inline]
    fn bind(&self, b: BackendId, bound: bool) {
        let c = self.conns[b.0 as usize];
        self.board
            .record(self.board_row, b, c.active + c.inactive, bound);
    }

    /// Joins the board every worker shares, as its row `row` (before the first flow).
    pub fn join_board(&mut self, board: Arc<ConnBoard>, row: usize) {
        debug_assert!(self.is_empty());
        self.board = board;
        self.board_row = row;
    }

    /// Where backend `b` is (what [`endpoint`](Self::endpoint) answers), for a packet sent to
    /// it without a flow (one-packet scheduling).
    #[inline]
    pub fn set_endpoint(&mut self, b: BackendId, endpoint: Endpoint) {
        if let Some(e) = self.endpoints.get_mut(b.0 as usize) {
            *e = endpoint;
        }
    }

    /// Service `service`'s templates are keyed by the client's first `mask` bits (of the
    /// 16-byte form), or it is not persistent (None). A change forgets its templates.
    pub fn set_persistence(&mut self, service: ServiceId, mask: Option<u8>) {
        let i = service.0 as usize;
        if self.persist_masks.len() <= i {
            self.persist_masks.resize(i + 1, None);
        }
        if self.persist_masks[i] != mask {
            self.persist_masks[i] = mask;
            self.templates.forget_service(service);
        }
    }

    pub fn board(&self) -> &ConnBoard {
        &self.board
    }

    fn count_in(&mut self, b: BackendId, s: FlowState) {
        let c = &mut self.conns[b.0 as usize];
        if s.is_active() {
            c.active += 1;
        } else {
            c.inactive += 1;
        }
    }

    fn count_out(&mut self, b: BackendId, s: FlowState) {
        let c = &mut self.conns[b.0 as usize];
        if s.is_active() {
            c.active -= 1;
        } else {
            c.inactive -= 1;
        }
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next, l) = {
            let f = &self.slots[slot as usize];
            (f.prev, f.next, f.list())
        };
        if prev != NIL {
            self.slots[prev as usize].next = next;
        } else {
            self.lists[l].head = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        } else {
            self.lists[l].tail = prev;
        }
        self.lists[l].len -= 1;
        let f = &mut self.slots[slot as usize];
        f.prev = NIL;
        f.next = NIL;
    }

    fn link_tail(&mut self, slot: u32) {
        let l = self.slots[slot as usize].list();
        let tail = self.lists[l].tail;
        {
            let f = &mut self.slots[slot as usize];
            f.prev = tail;
            f.next = NIL;
        }
        if tail != NIL {
            self.slots[tail as usize].next = slot;
        } else {
            self.lists[l].head = slot;
        }
        self.lists[l].tail = slot;
        self.lists[l].len += 1;
    }
}

impl ConnSource for FlowTable {
    fn conns(&self, backend: BackendId) -> Conns {
        self.conns
            .get(backend.0 as usize)
            .copied()
            .unwrap_or_default()
    }

    #[inline]
    fn overloaded(&self, backend: BackendId) -> bool {
        self.board.overloaded(backend)
    }
}

#[cfg(test)]
mod tests;
