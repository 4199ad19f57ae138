//! The sync thread: it drains the workers' journals into datagrams for the peers, at most
//! `max_records_per_second` records a second, and hands the records the peers send to the
//! worker that will see each flow's packets. An ordinary thread, never an lcore; the workers
//! only ever push to and pop from their rings, so nothing here can hold one up.
//!
//! The wire format and the rings are `dataplane::sync`'s.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dataplane::pipeline::owner_of;
use dataplane::shared::SharedSnapshot;
use dataplane::sync::{
    self as wire, Consumer, DecodeError, Header, MAX_DATAGRAM, Producer, RECORDS_PER_DATAGRAM,
    SyncRecord,
};
use tracing::{info, warn};

use crate::config::SyncSettings;

/// A partly filled datagram goes after this long.
const FLUSH_AFTER: Duration = Duration::from_millis(5);
/// How long one wait for the peers' datagrams lasts (the loop's pace when all is quiet).
const RECEIVE_WAIT: Duration = Duration::from_millis(1);
/// Datagrams read per loop round at most (then the journals are drained again).
const RECEIVE_PER_ROUND: usize = 256;

/// The sync thread's counts (the workers count their own side in their flow counters).
#[derive(Debug, Default)]
pub struct SyncCounters {
    pub datagrams_sent: AtomicU64,
    pub records_sent: AtomicU64,
    /// Datagrams a peer's address refused (sendto failed: unreachable, buffer full).
    pub send_errors: AtomicU64,
    /// Records dropped over `max_records_per_second`.
    pub rate_limited: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub records_received: AtomicU64,
    /// Datagrams refused: from an address that is no peer, and by what was wrong with them.
    pub unknown_sender: AtomicU64,
    pub refused: [AtomicU64; 5],
    /// Datagrams a peer sent that never arrived (gaps in its sequence numbers).
    pub missed: AtomicU64,
    /// Records for a worker whose ring was full (dropped).
    pub deliver_full: AtomicU64,
}

impl SyncCounters {
    fn refused_slot(e: DecodeError) -> usize {
        match e {
            DecodeError::Length => 0,
            DecodeError::Magic => 1,
            DecodeError::Version => 2,
            DecodeError::SyncId => 3,
            DecodeError::Record => 4,
        }
    }

    /// The refused datagrams by reason name.
    pub fn refused_by_reason(&self) -> Vec<(&'static str, u64)> {
        [
            DecodeError::Length,
            DecodeError::Magic,
            DecodeError::Version,
            DecodeError::SyncId,
            DecodeError::Record,
        ]
        .into_iter()
        .map(|e| (e.name(), self.refused[Self::refused_slot(e)].load(Relaxed)))
        .collect()
    }
}

/// The socket of `[sync] listen`, bound before anything else starts (a taken address stops
/// the start with the field named).
pub fn bind(s: &SyncSettings) -> Result<UdpSocket, String> {
    let socket = UdpSocket::bind(s.listen)
        .map_err(|e| format!("sync.listen: cannot bind {}: {e}", s.listen))?;
    socket
        .set_read_timeout(Some(RECEIVE_WAIT))
        .map_err(|e| format!("sync.listen: {e}"))?;
    Ok(socket)
}

/// The worker ends of the sync thread: per worker, its journal's consumer and the producer
/// of its inbound ring.
pub struct WorkerEnds {
    pub outbound: Vec<Consumer<SyncRecord>>,
    pub deliver: Vec<Producer<SyncRecord>>,
}

/// Runs the sync thread until `stop`.
pub fn run(
    settings: &SyncSettings,
    socket: UdpSocket,
    mut ends: WorkerEnds,
    shared: &SharedSnapshot,
    counters: &SyncCounters,
    stop: &AtomicBool,
) {
    info!(listen = %settings.listen, peers = ?settings.peers, sync_id = settings.sync_id, "flow-state synchronisation running");
    let sender = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let mut out = Outbound {
        batch: Vec::with_capacity(RECORDS_PER_DATAGRAM),
        buf: [0; MAX_DATAGRAM],
        header: Header {
            sync_id: settings.sync_id,
            count: 0,
            sequence: 0,
            sender,
        },
        since: Instant::now(),
    };
    let mut bucket = TokenBucket::new(settings.max_records_per_second);
    let mut inbound = Inbound {
        seen: HashMap::new(),
        buf: [0; 2048],
    };
    let mut warned_send = false;
    while !stop.load(Relaxed) {
        bucket.refill(Instant::now());
        for c in &mut ends.outbound {
            while let Ok(r) = c.pop() {
                if !bucket.take() {
                    counters.rate_limited.fetch_add(1, Relaxed);
                    continue;
                }
                out.batch.push(r);
                if out.batch.len() == RECORDS_PER_DATAGRAM {
                    warned_send |= out.send(&socket, &settings.peers, counters, warned_send);
                }
            }
        }
        if !out.batch.is_empty() && out.since.elapsed() >= FLUSH_AFTER {
            warned_send |= out.send(&socket, &settings.peers, counters, warned_send);
        }
        inbound.receive(settings, &socket, &mut ends.deliver, shared, counters);
    }
    if !out.batch.is_empty() {
        out.send(&socket, &settings.peers, counters, true);
    }
}

struct Outbound {
    batch: Vec<SyncRecord>,
    buf: [u8; MAX_DATAGRAM],
    header: Header,
    /// When the first record of `batch` came (or the last datagram went).
    since: Instant,
}

impl Outbound {
    /// Sends the batch to every peer; true when a send failed (warned once, counted always).
    fn send(
        &mut self,
        socket: &UdpSocket,
        peers: &[SocketAddr],
        counters: &SyncCounters,
        warned: bool,
    ) -> bool {
        self.header.count = self.batch.len() as u16;
        let n = wire::encode(self.header, &self.batch, &mut self.buf);
        self.header.sequence = self.header.sequence.wrapping_add(1);
        let mut failed = false;
        for p in peers {
            match socket.send_to(&self.buf[..n], p) {
                Ok(_) => {
                    counters.datagrams_sent.fetch_add(1, Relaxed);
                    counters
                        .records_sent
                        .fetch_add(self.batch.len() as u64, Relaxed);
                }
                Err(e) => {
                    counters.send_errors.fetch_add(1, Relaxed);
                    if !warned {
                        warn!(peer = %p, "sync: cannot send to a peer: {e} (counted from now on as send_errors)");
                    }
                    failed = true;
                }
            }
        }
        self.batch.clear();
        self.since = Instant::now();
        failed
    }
}

struct Inbound {
    /// Per peer: its instance number and the sequence number expected next.
    seen: HashMap<SocketAddr, (u32, u32)>,
    buf: [u8; 2048],
}

impl Inbound {
    fn receive(
        &mut self,
        settings: &SyncSettings,
        socket: &UdpSocket,
        deliver: &mut [Producer<SyncRecord>],
        shared: &SharedSnapshot,
        counters: &SyncCounters,
    ) {
        for _ in 0..RECEIVE_PER_ROUND {
            let Ok((n, from)) = socket.recv_from(&mut self.buf) else {
                return; // nothing within the wait (or an error the next round sees again)
            };
            if !settings.peers.contains(&from) {
                counters.unknown_sender.fetch_add(1, Relaxed);
                continue;
            }
            let (header, records) = match wire::decode(settings.sync_id, &self.buf[..n]) {
                Ok(d) => d,
                Err(e) => {
                    counters.refused[SyncCounters::refused_slot(e)].fetch_add(1, Relaxed);
                    continue;
                }
            };
            counters.datagrams_received.fetch_add(1, Relaxed);
            let expected = self
                .seen
                .insert(from, (header.sender, header.sequence.wrapping_add(1)));
            if let Some((sender, next)) = expected
                && sender == header.sender
                && header.sequence != next
            {
                let gap = header.sequence.wrapping_sub(next);
                if gap < u32::MAX / 2 {
                    counters.missed.fetch_add(u64::from(gap), Relaxed);
                }
            }
            let snap = shared.current();
            for r in records {
                counters.records_received.fetch_add(1, Relaxed);
                // The worker that will see the flow's packets: its owner (NAT, persistence),
                // or, where the NIC's RSS decides, every worker (each copy is a synced flow,
                // evicted first; the ones no packet comes for expire).
                match owner_of(&snap, &r.key) {
                    Some(w) => {
                        if deliver
                            .get_mut(usize::from(w))
                            .is_none_or(|p| p.push(r).is_err())
                        {
                            counters.deliver_full.fetch_add(1, Relaxed);
                        }
                    }
                    None => {
                        for p in deliver.iter_mut() {
                            if p.push(r).is_err() {
                                counters.deliver_full.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// At most `rate` tokens a second, refilled as time passes, holding a second's worth at most.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        self.at = now;
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_gives_its_rate_and_no_more() {
        let mut b = TokenBucket::new(100);
        let t0 = b.at;
        let taken = (0..1000).filter(|_| b.take()).count();
        assert_eq!(taken, 100);
        b.refill(t0 + Duration::from_millis(250));
        let taken = (0..1000).filter(|_| b.take()).count();
        assert_eq!(taken, 25);
        // Idle for ten seconds: one second's worth, not ten.
        b.refill(t0 + Duration::from_secs(10));
        let taken = (0..10_000).filter(|_| b.take()).count();
        assert_eq!(taken, 100);
    }
}
