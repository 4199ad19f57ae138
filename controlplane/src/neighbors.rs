//! The dynamic neighbour table (ARP and NDP), on the control side: entries learned from what the
//! workers report, requests for next hops they could not resolve and for those the
//! configuration names (at most one a second per address), refresh before an entry grows old,
//! expiry when it is not confirmed, and failure after [`MAX_PROBES`] unanswered requests (a
//! failed next hop is still asked every second and recovers when it answers). Static entries
//! from the configuration are not here and always win (they are listed last in the snapshot).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dataplane::addr::MacAddr;

/// Unanswered requests after which a next hop has failed (Linux's mcast_solicit).
pub const MAX_PROBES: u32 = 3;

/// A request the control side must send: who has `target`, asked on `interface`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub interface: u16,
    pub target: IpAddr,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: MacAddr,
    interface: u16,
    confirmed: Instant,
    last_request: Option<Instant>,
}

/// An address being resolved.
#[derive(Debug, Clone, Copy)]
struct Pending {
    interface: u16,
    /// When a request last went out.
    asked: Instant,
    /// Requests sent without an answer.
    tries: u32,
    /// When a worker or the configuration last needed it (forgotten after `expiry` without).
    needed: Instant,
    failed: bool,
    /// When it last went from resolving to failed.
    failed_at: Option<Instant>,
}

/// What the table knows of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Resolved(MacAddr),
    Resolving,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// An entry older than this is refreshed with a request (Linux's base_reachable_time: 30 s).
    pub reachable: Duration,
    /// An entry not confirmed for this long is removed.
    pub expiry: Duration,
    /// At most one request per address in this time.
    pub retry: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            reachable: Duration::from_secs(30),
            expiry: Duration::from_secs(120),
            retry: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default)]
pub struct NeighborTable {
    entries: HashMap<IpAddr, Entry>,
    pending: HashMap<IpAddr, Pending>,
    /// Times each address went from resolving to failed.
    failures: HashMap<IpAddr, u64>,
    timers: Timers,
}

impl NeighborTable {
    pub fn new(timers: Timers) -> Self {
        NeighborTable {
            timers,
            ..Default::default()
        }
    }

    /// `addr` is at `mac`: true if that changes the table (a new entry, a new MAC or
    /// interface, or a failed address answering), which calls for a new snapshot.
    pub fn learned(&mut self, addr: IpAddr, mac: MacAddr, interface: u16, now: Instant) -> bool {
        let was_failed = self.pending.remove(&addr).is_some_and(|p| p.failed);
        match self.entries.get_mut(&addr) {
            Some(e) if e.mac == mac && e.interface == interface => {
                e.confirmed = now;
                e.last_request = None;
                was_failed
            }
            _ => {
                self.entries.insert(
                    addr,
                    Entry {
                        mac,
                        interface,
                        confirmed: now,
                        last_request: None,
                    },
                );
                true
            }
        }
    }

    /// `addr` is needed (a worker could not send to it, or the configuration sends to it):
    /// the request to send, unless it is known or was asked for within `retry`.
    pub fn unresolved(&mut self, addr: IpAddr, interface: u16, now: Instant) -> Option<Request> {
        if self.entries.contains_key(&addr) {
            // The snapshot with it is on its way.
            return None;
        }
        let retry = self.timers.retry;
        let request = Request {
            interface,
            target: addr,
        };
        match self.pending.get_mut(&addr) {
            Some(p) => {
                p.needed = now;
                p.interface = interface;
                if now.duration_since(p.asked) < retry {
                    return None;
                }
                p.asked = now;
                p.tries += 1;
                Some(request)
            }
            None => {
                self.pending.insert(
                    addr,
                    Pending {
                        interface,
                        asked: now,
                        tries: 1,
                        needed: now,
                        failed: false,
                        failed_at: None,
                    },
                );
                Some(request)
            }
        }
    }

    /// Timers: requests to refresh entries growing old and to retry addresses being resolved,
    /// and whether the snapshot must change (entries expired, addresses failed).
    pub fn tick(&mut self, now: Instant) -> (Vec<Request>, bool) {
        let t = self.timers;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.duration_since(e.confirmed) < t.expiry);
        let mut changed = self.entries.len() != before;
        let failed_before = self.pending.values().filter(|p| p.failed).count();
        self.pending
            .retain(|_, p| now.duration_since(p.needed) < t.expiry);
        changed |= self.pending.values().filter(|p| p.failed).count() != failed_before;
        let mut requests = Vec::new();
        for (addr, p) in self.pending.iter_mut() {
            if now.duration_since(p.asked) < t.retry {
                continue;
            }
            if p.tries >= MAX_PROBES && !p.failed {
                p.failed = true;
                p.failed_at = Some(now);
                *self.failures.entry(*addr).or_default() += 1;
                changed = true;
            }
            p.asked = now;
            p.tries += 1;
            requests.push(Request {
                interface: p.interface,
                target: *addr,
            });
        }
        for (addr, e) in self.entries.iter_mut() {
            let old = now.duration_since(e.confirmed) >= t.reachable;
            let asked_recently = e
                .last_request
                .is_some_and(|r| now.duration_since(r) < t.retry);
            if old && !asked_recently {
                e.last_request = Some(now);
                requests.push(Request {
                    interface: e.interface,
                    target: *addr,
                });
            }
        }
        (requests, changed)
    }

    /// The learned entries, for the snapshot.
    pub fn entries(&self) -> Vec<(IpAddr, MacAddr)> {
        let mut v: Vec<(IpAddr, MacAddr)> = self.entries.iter().map(|(a, e)| (*a, e.mac)).collect();
        v.sort_by_key(|(a, _)| *a);
        v
    }

    /// The addresses that failed to resolve, for the snapshot.
    pub fn failed(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .pending
            .iter()
            .filter(|(_, p)| p.failed)
            .map(|(a, _)| *a)
            .collect();
        v.sort();
        v
    }

    pub fn state(&self, addr: IpAddr) -> State {
        if let Some(e) = self.entries.get(&addr) {
            return State::Resolved(e.mac);
        }
        match self.pending.get(&addr) {
            Some(p) if p.failed => State::Failed,
            Some(_) => State::Resolving,
            None => State::Unknown,
        }
    }

    /// Since when `addr` has failed (None: it has not).
    pub fn failed_since(&self, addr: IpAddr) -> Option<Instant> {
        self.pending
            .get(&addr)
            .filter(|p| p.failed)
            .and_then(|p| p.failed_at)
    }

    /// How many times `addr` failed to resolve.
    pub fn failures(&self, addr: IpAddr) -> u64 {
        self.failures.get(&addr).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 10]);
    const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 1, 11]);

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn requests_are_rate_limited_and_stop_once_learned() {
        let t0 = Instant::now();
        let mut n = NeighborTable::new(Timers::default());
        let b = a("198.18.1.10");
        assert_eq!(
            n.unresolved(b, 0, t0),
            Some(Request {
                interface: 0,
                target: b
            })
        );
        assert_eq!(
            n.unresolved(b, 0, t0 + Duration::from_millis(500)),
            None,
            "once a second"
        );
        assert!(
            n.unresolved(b, 0, t0 + Duration::from_millis(1000))
                .is_some()
        );
        assert!(
            n.learned(b, MAC, 0, t0 + Duration::from_millis(1100)),
            "a new entry changes the table"
        );
        assert_eq!(n.entries(), [(b, MAC)]);
        assert_eq!(
            n.unresolved(b, 0, t0 + Duration::from_secs(5)),
            None,
            "known: no request"
        );
        assert!(
            !n.learned(b, MAC, 0, t0 + Duration::from_secs(6)),
            "the same again changes nothing"
        );
        assert!(
            n.learned(b, OTHER, 0, t0 + Duration::from_secs(7)),
            "a new MAC does"
        );
    }

    #[test]
    fn an_unanswered_address_fails_after_three_requests_and_recovers_when_it_answers() {
        let t0 = Instant::now();
        let mut n = NeighborTable::new(Timers::default());
        let b = a("198.18.1.20");
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(n.unresolved(b, 0, t0).is_some(), "the first request");
        assert_eq!(n.state(b), State::Resolving);
        assert_eq!(n.tick(s(500)), (vec![], false), "not yet a second");
        let req = Request {
            interface: 0,
            target: b,
        };
        assert_eq!(n.tick(s(1000)), (vec![req], false), "the second request");
        assert_eq!(n.tick(s(2000)), (vec![req], false), "the third");
        assert!(n.failed().is_empty());
        assert_eq!(
            n.tick(s(3000)),
            (vec![req], true),
            "three unanswered: failed (a new snapshot), and asked again"
        );
        assert_eq!(
            (n.state(b), n.failed(), n.failures(b)),
            (State::Failed, vec![b], 1)
        );
        assert_eq!(
            n.tick(s(4000)).0,
            [req],
            "a failed address is still asked every second"
        );
        assert!(
            n.learned(b, MAC, 0, s(4100)),
            "its answer changes the snapshot"
        );
        assert_eq!(n.state(b), State::Resolved(MAC));
        assert!(n.failed().is_empty());
        // an address nobody needs any more is forgotten, and that is a change when it had failed
        let c = a("198.18.1.21");
        n.unresolved(c, 0, s(5000));
        for i in 1..=3 {
            n.tick(s(5000 + 1000 * i));
        }
        assert_eq!(n.state(c), State::Failed);
        let (_, changed) = n.tick(s(5000) + Timers::default().expiry);
        assert!(changed);
        assert_eq!(n.state(c), State::Unknown);
    }

    #[test]
    fn old_entries_are_refreshed_then_expire_unless_confirmed() {
        let t0 = Instant::now();
        let timers = Timers::default();
        let mut n = NeighborTable::new(timers);
        let b = a("2001:db8:2::10");
        n.learned(b, MAC, 1, t0);
        assert_eq!(n.tick(t0 + Duration::from_secs(29)), (vec![], false));
        let (req, expired) = n.tick(t0 + Duration::from_secs(30));
        assert_eq!(
            req,
            [Request {
                interface: 1,
                target: b
            }]
        );
        assert!(!expired);
        assert_eq!(
            n.tick(t0 + Duration::from_millis(30_500)).0,
            [],
            "asked a moment ago"
        );
        // confirmed again: young again
        n.learned(b, MAC, 1, t0 + Duration::from_secs(31));
        assert_eq!(n.tick(t0 + Duration::from_secs(40)).0, []);
        // never confirmed again: gone after the expiry time
        let (_, expired) = n.tick(t0 + Duration::from_secs(31) + timers.expiry);
        assert!(expired);
        assert!(n.entries().is_empty());
    }
}
