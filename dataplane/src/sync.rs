//! Flow-state synchronisation between instances (IPVS's sync daemon, our own wire format):
//! what a worker tells its peers about a flow, how that travels, and the rings between the
//! workers and the thread that sends and receives it.
//!
//! A worker queues a [`SyncRecord`] when it creates a flow, when a flow's state changes, and
//! once per refresh period of a long-lived flow's life (so the peer's copy does not time out
//! while the connection lives); the queue is a fixed ring, and a record that does not fit is
//! counted and lost. The sync thread batches the records into datagrams ([`encode`]) to every
//! peer; the peers' thread decodes them ([`decode`]) and hands each record to the worker that
//! will see the flow's packets, which installs it as a *synced* flow: the first to be evicted,
//! never counted as a connection of its backend until a packet arrives for it.
//!
//! A record names its service by VIP, port and protocol and its backend by address and port,
//! never by our ids: the peers' ids differ.

use crate::flow::{Endpoint, FlowKey, FlowState};
pub use rtrb::{Consumer, Producer};

/// The wire format's version; a datagram of another is dropped (and counted).
pub const VERSION: u8 = 1;
/// The first bytes of every datagram.
pub const MAGIC: [u8; 3] = *b"L4S";
pub const HEADER_LEN: usize = 16;
pub const RECORD_LEN: usize = 64;
/// Records per datagram: header and records in 1,472 bytes, a UDP payload of a 1500-byte
/// Ethernet MTU over IPv4 (IPv6 has 20 bytes less, still enough).
pub const RECORDS_PER_DATAGRAM: usize = 22;
pub const MAX_DATAGRAM: usize = HEADER_LEN + RECORDS_PER_DATAGRAM * RECORD_LEN;

/// What a worker tells its peers about one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRecord {
    pub key: FlowKey,
    pub backend: Endpoint,
    pub state: FlowState,
    /// Also found by its replies (NAT).
    pub nat: bool,
    /// Controlled by a persistence template: the receiver keeps (or makes) the client's
    /// template for its backend too.
    pub bound: bool,
    /// Seconds the sender keeps the flow without a packet in this state (its timeout).
    pub timeout: u32,
}

const NAT_FLAG: u8 = 1;
const BOUND_FLAG: u8 = 2;

fn state_code(s: FlowState) -> u8 {
    s as u8
}

fn state_of(code: u8) -> Option<FlowState> {
    use FlowState::*;
    Some(match code {
        0 => Syn,
        1 => Closed,
        2 => Fin,
        3 => Udp,
        4 => Established,
        5 => Midstream,
        _ => return None,
    })
}

/// A datagram's header: the version, the sync id (IPVS's `--syncid`: peers of one cluster
/// share it, a datagram of another is ignored), how many records follow, and the sender's
/// sequence number (a receiver counts the datagrams it missed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub sync_id: u8,
    pub count: u16,
    pub sequence: u32,
    /// The sender's instance number (random at start): a receiver tells a restarted peer's
    /// sequence from missed datagrams.
    pub sender: u32,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header or its records say, or longer.
    Length,
    /// Not ours (the magic bytes).
    Magic,
    Version,
    /// Of another cluster.
    SyncId,
    /// A record with an unknown state or protocol.
    Record,
}

impl DecodeError {
    pub fn name(self) -> &'static str {
        match self {
            DecodeError::Length => "length",
            DecodeError::Magic => "magic",
            DecodeError::Version => "version",
            DecodeError::SyncId => "sync_id",
            DecodeError::Record => "record",
        }
    }
}

/// Writes a datagram of `records` (at most [`RECORDS_PER_DATAGRAM`]) into `out`; returns its
/// length.
///
/// Layout (network byte order): `L4S`, version, sync id, reserved, count (u16), sequence (u32),
/// sender (u32); then per record: client address, VIP, backend address (16 bytes each,
/// IPv4 mapped into IPv6), client port, VIP port, backend port, protocol, state, flags (1: NAT,
/// 2: bound to a persistence template),
/// reserved (1), timeout (u32), reserved (6).
pub fn encode(header: Header, records: &[SyncRecord], out: &mut [u8; MAX_DATAGRAM]) -> usize {
    let records = &records[..records.len().min(RECORDS_PER_DATAGRAM)];
    out[..3].copy_from_slice(&MAGIC);
    out[3] = VERSION;
    out[4] = header.sync_id;
    out[5] = 0;
    out[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
    out[8..12].copy_from_slice(&header.sequence.to_be_bytes());
    out[12..16].copy_from_slice(&header.sender.to_be_bytes());
    for (r, o) in records
        .iter()
        .zip(out[HEADER_LEN..].chunks_exact_mut(RECORD_LEN))
    {
        o[..16].copy_from_slice(&r.key.client);
        o[16..32].copy_from_slice(&r.key.vip);
        o[32..48].copy_from_slice(&r.backend.addr);
        o[48..50].copy_from_slice(&r.key.client_port.to_be_bytes());
        o[50..52].copy_from_slice(&r.key.vip_port.to_be_bytes());
        o[52..54].copy_from_slice(&r.backend.port.to_be_bytes());
        o[54] = r.key.protocol;
        o[55] = state_code(r.state);
        o[56] = if r.nat { NAT_FLAG } else { 0 } | if r.bound { BOUND_FLAG } else { 0 };
        o[57] = 0;
        o[58..62].copy_from_slice(&r.timeout.to_be_bytes());
        o[62..64].fill(0);
    }
    HEADER_LEN + records.len() * RECORD_LEN
}

/// Reads a datagram of cluster `sync_id`: its header and its records, in order.
pub fn decode(
    sync_id: u8,
    d: &[u8],
) -> Result<(Header, impl Iterator<Item = SyncRecord> + '_), DecodeError> {
    if d.len() < HEADER_LEN {
        return Err(DecodeError::Length);
    }
    if d[..3] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if d[3] != VERSION {
        return Err(DecodeError::Version);
    }
    if d[4] != sync_id {
        return Err(DecodeError::SyncId);
    }
    let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    let header = Header {
        sync_id,
        count: u16::from_be_bytes([d[6], d[7]]),
        sequence: be32(&d[8..12]),
        sender: be32(&d[12..16]),
    };
    let body = &d[HEADER_LEN..];
    if usize::from(header.count) > RECORDS_PER_DATAGRAM
        || body.len() != usize::from(header.count) * RECORD_LEN
    {
        return Err(DecodeError::Length);
    }
    // Every record is checked before any is handed out: a datagram is taken whole or not.
    for r in body.chunks_exact(RECORD_LEN) {
        if state_of(r[55]).is_none() || !matches!(r[54], 6 | 17) {
            return Err(DecodeError::Record);
        }
    }
    let addr = |b: &[u8]| -> [u8; 16] { b.try_into().expect("16 bytes") };
    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    Ok((
        header,
        body.chunks_exact(RECORD_LEN).map(move |r| SyncRecord {
            key: FlowKey {
                client: addr(&r[..16]),
                vip: addr(&r[16..32]),
                client_port: be16(&r[48..50]),
                vip_port: be16(&r[50..52]),
                protocol: r[54],
            },
            backend: Endpoint {
                addr: addr(&r[32..48]),
                port: be16(&r[52..54]),
            },
            state: state_of(r[55]).expect("checked above"),
            nat: r[56] & NAT_FLAG != 0,
            bound: r[56] & BOUND_FLAG != 0,
            timeout: be32(&r[58..62]),
        }),
    ))
}

/// Records a worker stages before it writes them to its ring in one go.
const STAGED: usize = 32;

/// A worker's end of the outgoing ring: what it queues for its peers, at most `per_second`
/// records in each second of its clock (the rest are counted, never staged: the ring and the
/// sync thread see only what can be sent). Records are staged and written to the ring in
/// chunks ([`flush`](Journal::flush), between bursts): one release of the ring's tail per
/// chunk, not per record, so the cache line the sync thread reads moves once a burst. Nothing
/// blocks or allocates; a full ring loses the records (counted).
#[derive(Debug)]
pub struct Journal {
    ring: rtrb::Producer<SyncRecord>,
    staged: [SyncRecord; STAGED],
    len: usize,
    /// A long-lived flow is sent again at its first packet in each period of this many
    /// seconds of its life (0: never).
    pub refresh: u32,
    per_second: u32,
    second: u32,
    used: u32,
    pub queued: u64,
    pub full: u64,
    /// Over `per_second`.
    pub limited: u64,
}

const NO_RECORD: SyncRecord = SyncRecord {
    key: FlowKey {
        client: [0; 16],
        vip: [0; 16],
        client_port: 0,
        vip_port: 0,
        protocol: 0,
    },
    backend: Endpoint {
        addr: [0; 16],
        port: 0,
    },
    state: FlowState::Udp,
    nat: false,
    bound: false,
    timeout: 0,
};

impl Journal {
    /// Stages `r` (at `now`, the worker's clock in seconds).
    #[inline]
    pub fn push(&mut self, r: SyncRecord, now: u32) {
        if now != self.second {
            self.second = now;
            self.used = 0;
        }
        if self.used >= self.per_second {
            self.limited += 1;
            return;
        }
        self.used += 1;
        self.staged[self.len] = r;
        self.len += 1;
        if self.len == STAGED {
            self.flush();
        }
    }

    /// Writes what is staged to the ring.
    #[inline]
    pub fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        let room = match self.ring.write_chunk_uninit(self.len) {
            Ok(_) => self.len,
            Err(rtrb::chunks::ChunkError::TooFewSlots(n)) => n,
        };
        if let Ok(chunk) = self.ring.write_chunk_uninit(room) {
            chunk.fill_from_iter(self.staged[..room].iter().copied());
        }
        self.queued += room as u64;
        self.full += (self.len - room) as u64;
        self.len = 0;
    }
}

/// The rings between one worker and the sync thread: the worker's ends, and the thread's.
pub struct SyncRings {
    pub journal: Journal,
    pub inbound: rtrb::Consumer<SyncRecord>,
    pub outbound: rtrb::Consumer<SyncRecord>,
    pub deliver: rtrb::Producer<SyncRecord>,
}

/// The rings of one worker: `capacity` records each way, a flow sent again every `refresh`
/// seconds of its life, at most `per_second` records queued a second.
pub fn rings(capacity: usize, refresh: u32, per_second: u32) -> SyncRings {
    let (journal, outbound) = rtrb::RingBuffer::new(capacity);
    let (deliver, inbound) = rtrb::RingBuffer::new(capacity);
    SyncRings {
        journal: Journal {
            ring: journal,
            staged: [NO_RECORD; STAGED],
            len: 0,
            refresh,
            per_second,
            second: 0,
            used: 0,
            queued: 0,
            full: 0,
            limited: 0,
        },
        inbound,
        outbound,
        deliver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn record(i: u16) -> SyncRecord {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        SyncRecord {
            key: FlowKey::new(6, ip("198.18.1.2"), 40000 + i, ip("198.18.0.10"), 80),
            backend: Endpoint {
                addr: crate::flow::addr_bytes(ip("2001:db8::7")),
                port: 8080,
            },
            state: FlowState::Established,
            nat: i.is_multiple_of(2),
            bound: i.is_multiple_of(3),
            timeout: 900 + u32::from(i),
        }
    }

    #[test]
    fn a_datagram_carries_its_records_and_header_both_ways() {
        let rs: Vec<_> = (0..RECORDS_PER_DATAGRAM as u16).map(record).collect();
        let mut out = [0u8; MAX_DATAGRAM];
        let h = Header {
            sync_id: 7,
            count: rs.len() as u16,
            sequence: 0xdead_beef,
            sender: 42,
        };
        let n = encode(h, &rs, &mut out);
        assert_eq!(n, MAX_DATAGRAM);
        assert_eq!(&out[..8], b"L4S\x01\x07\x00\x00\x16");
        let (got, records) = decode(7, &out[..n]).unwrap();
        assert_eq!(got, h);
        assert_eq!(records.collect::<Vec<_>>(), rs);
    }

    #[test]
    fn one_record_byte_for_byte() {
        let mut out = [0u8; MAX_DATAGRAM];
        let h = Header {
            sync_id: 1,
            count: 1,
            sequence: 2,
            sender: 3,
        };
        let n = encode(h, &[record(1)], &mut out);
        assert_eq!(n, HEADER_LEN + RECORD_LEN);
        let r = &out[HEADER_LEN..n];
        let mut want = [0u8; 64];
        want[10..16].copy_from_slice(&[0xff, 0xff, 198, 18, 1, 2]);
        want[26..32].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 10]);
        want[32..48].copy_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        want[48..50].copy_from_slice(&40001u16.to_be_bytes());
        want[50..52].copy_from_slice(&80u16.to_be_bytes());
        want[52..54].copy_from_slice(&8080u16.to_be_bytes());
        want[54] = 6;
        want[55] = 4;
        want[56] = 0; // neither NAT (1) nor bound (2)
        want[58..62].copy_from_slice(&901u32.to_be_bytes());
        assert_eq!(r, &want[..]);
    }

    #[test]
    fn what_is_not_ours_or_not_whole_is_refused() {
        let mut out = [0u8; MAX_DATAGRAM];
        let h = Header {
            sync_id: 1,
            count: 2,
            sequence: 0,
            sender: 0,
        };
        let n = encode(h, &[record(0), record(1)], &mut out);
        let refused = |d: &[u8], id: u8| decode(id, d).err();
        assert_eq!(refused(&out[..n], 2), Some(DecodeError::SyncId));
        assert_eq!(refused(&out[..n - 1], 1), Some(DecodeError::Length));
        assert_eq!(refused(&out[..10], 1), Some(DecodeError::Length));
        let mut d = out[..n].to_vec();
        d[3] = 2;
        assert_eq!(refused(&d, 1), Some(DecodeError::Version));
        d[3] = 1;
        d[0] = b'X';
        assert_eq!(refused(&d, 1), Some(DecodeError::Magic));
        d[0] = b'L';
        d[HEADER_LEN + RECORD_LEN + 55] = 9; // the second record's state
        assert_eq!(refused(&d, 1), Some(DecodeError::Record));
        d[HEADER_LEN + RECORD_LEN + 55] = 4;
        d[HEADER_LEN + 54] = 1; // ICMP is not a flow of ours
        assert_eq!(refused(&d, 1), Some(DecodeError::Record));
        d[HEADER_LEN + 54] = 17;
        assert_eq!(decode(1, &d).map(|(_, r)| r.count()), Ok(2));
    }

    #[test]
    fn a_full_journal_counts_what_it_lost() {
        let mut r = rings(2, 0, 100);
        for i in 0..5 {
            r.journal.push(record(i), 1);
        }
        assert_eq!((r.journal.queued, r.journal.full), (0, 0), "staged");
        r.journal.flush();
        assert_eq!((r.journal.queued, r.journal.full), (2, 3));
        assert_eq!(r.outbound.pop().unwrap(), record(0));
        assert_eq!(r.outbound.pop().unwrap(), record(1));
        assert!(r.outbound.pop().is_err());
    }

    #[test]
    fn a_journal_writes_whole_chunks_and_keeps_to_its_rate() {
        let mut r = rings(1024, 0, 40);
        for i in 0..50 {
            r.journal.push(record(i), 7);
        }
        // 32 went when the stage filled, 8 wait for the flush, 10 were over the rate.
        assert_eq!((r.journal.queued, r.journal.limited), (32, 10));
        r.journal.flush();
        r.journal.push(record(60), 8); // a new second
        r.journal.flush();
        let got: Vec<_> = std::iter::from_fn(|| r.outbound.pop().ok()).collect();
        let want: Vec<_> = (0..40).chain([60]).map(record).collect();
        assert_eq!(got, want);
        assert_eq!(
            (r.journal.queued, r.journal.full, r.journal.limited),
            (41, 0, 10)
        );
    }
}
