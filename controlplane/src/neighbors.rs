//! The dynamic neighbour table (ARP and NDP), on the control side: entries learned from what the
//! workers report, requests for next hops they could not resolve (at most one a second per
//! address), refresh before an entry grows old, expiry when it is not confirmed. Static entries
//! from the configuration are not here and always win (they are listed last in the snapshot).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dataplane::addr::MacAddr;

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
    /// Addresses asked for and not yet answered: when last asked.
    pending: HashMap<IpAddr, Instant>,
    timers: Timers,
}

impl NeighborTable {
    pub fn new(timers: Timers) -> Self {
        NeighborTable {
            timers,
            ..Default::default()
        }
    }

    /// `addr` is at `mac`: true if that changes the table (a new entry, or a new MAC or
    /// interface), which calls for a new snapshot.
    pub fn learned(&mut self, addr: IpAddr, mac: MacAddr, interface: u16, now: Instant) -> bool {
        self.pending.remove(&addr);
        match self.entries.get_mut(&addr) {
            Some(e) if e.mac == mac && e.interface == interface => {
                e.confirmed = now;
                e.last_request = None;
                false
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

    /// A worker could not send to `addr`: the request to send, unless one went out recently.
    pub fn unresolved(&mut self, addr: IpAddr, interface: u16, now: Instant) -> Option<Request> {
        if self.entries.contains_key(&addr) {
            // The snapshot with it is on its way.
            return None;
        }
        match self.pending.get(&addr) {
            Some(t) if now.duration_since(*t) < self.timers.retry => None,
            _ => {
                self.pending.insert(addr, now);
                Some(Request {
                    interface,
                    target: addr,
                })
            }
        }
    }

    /// Timers: requests to refresh entries growing old, and whether entries expired (a new
    /// snapshot is then due).
    pub fn tick(&mut self, now: Instant) -> (Vec<Request>, bool) {
        let t = self.timers;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.duration_since(e.confirmed) < t.expiry);
        self.pending
            .retain(|_, asked| now.duration_since(*asked) < t.expiry);
        let mut requests = Vec::new();
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
        (requests, self.entries.len() != before)
    }

    /// The learned entries, for the snapshot.
    pub fn entries(&self) -> Vec<(IpAddr, MacAddr)> {
        let mut v: Vec<(IpAddr, MacAddr)> = self.entries.iter().map(|(a, e)| (*a, e.mac)).collect();
        v.sort_by_key(|(a, _)| *a);
        v
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
