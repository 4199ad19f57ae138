//! Neighbour resolution, the dataplane's part: what workers learn from ARP and NDP and which
//! next hops they could not resolve (as events the control side collects between bursts), and
//! the frames the control side sends (ARP requests, gratuitous ARP, neighbour solicitations,
//! unsolicited neighbour advertisements), and the queue in which a worker holds packets for a
//! next hop being resolved. The table itself and its timers live in the control plane; the
//! snapshot carries the resolved entries and the failed ones.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::MacAddr;
use crate::wire::icmp::{self, v6};
use crate::wire::{arp, ethernet, ipv6};

/// What a worker saw that the neighbour table needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborEvent {
    /// `addr` is at `mac`, on interface `interface` (from an ARP request or reply, a
    /// solicitation's source or an advertisement's target).
    Learned {
        addr: IpAddr,
        mac: MacAddr,
        interface: u16,
    },
    /// A packet for next hop `addr` was dropped: its MAC is not known.
    Unresolved { addr: IpAddr, interface: u16 },
}

/// Events of one burst, in a fixed buffer (no allocation; events beyond it are dropped, the
/// next packets will raise them again). Pushed through `&self` so that the pipeline can record
/// them wherever it has the worker state.
#[derive(Debug)]
pub struct NeighborEvents {
    slots: [Cell<Option<NeighborEvent>>; Self::CAPACITY],
    len: Cell<usize>,
    /// The next hop (and interface) of the last packet that could not be sent because its MAC
    /// is not known: the worker holds that packet for it.
    unresolved: Cell<Option<(IpAddr, u16)>>,
}

impl Default for NeighborEvents {
    fn default() -> Self {
        NeighborEvents {
            slots: std::array::from_fn(|_| Cell::new(None)),
            len: Cell::new(0),
            unresolved: Cell::new(None),
        }
    }
}

impl NeighborEvents {
    pub const CAPACITY: usize = 32;

    #[inline]
    pub fn push(&self, e: NeighborEvent) {
        let n = self.len.get();
        if n < Self::CAPACITY {
            self.slots[n].set(Some(e));
            self.len.set(n + 1);
        }
    }

    /// A packet for next hop `addr` on `interface` waits for its MAC: the control side is told
    /// (it resolves it) and the worker learns where to hold the packet.
    #[inline]
    pub fn unresolved(&self, addr: IpAddr, interface: u16) {
        self.push(NeighborEvent::Unresolved { addr, interface });
        self.unresolved.set(Some((addr, interface)));
    }

    /// The next hop the last unsendable packet waits for (taken: asked once per packet).
    #[inline]
    pub fn take_unresolved(&self) -> Option<(IpAddr, u16)> {
        self.unresolved.take()
    }

    /// Hands every event to `f`, oldest first, and empties the buffer.
    pub fn drain(&self, mut f: impl FnMut(NeighborEvent)) {
        for s in &self.slots[..self.len.get()] {
            if let Some(e) = s.take() {
                f(e);
            }
        }
        self.len.set(0);
    }

    pub fn len(&self) -> usize {
        self.len.get()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a worker's snapshot says of a held packet's next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Known: send it there.
    Resolved(MacAddr),
    /// The control side gave up on it: drop.
    Failed,
    /// Still being resolved: keep it.
    Pending,
}

/// What became of a held packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Its next hop resolved: send it with this destination MAC out of `interface`.
    Send { mac: MacAddr, interface: u16 },
    /// Its next hop failed.
    Failed,
    /// Held longer than [`HoldQueue::MAX_HOLD`] without an answer.
    Expired,
}

/// Packets waiting for their next hop's MAC, as a host keeps them (Linux's `unres_qlen`):
/// at most `per_neighbor` for one next hop and `capacity` in all, sent in the order they came
/// once the address resolves, dropped when it fails or after [`Self::MAX_HOLD`]. Its memory is
/// taken once, at creation; holding and releasing never allocate.
#[derive(Debug)]
pub struct HoldQueue<T> {
    held: Vec<Held<T>>,
    per_neighbor: usize,
}

#[derive(Debug)]
struct Held<T> {
    next_hop: IpAddr,
    interface: u16,
    since: u32,
    item: T,
}

impl<T> HoldQueue<T> {
    /// Seconds a packet waits at most (the control side fails a neighbour after three
    /// unanswered requests, a second apart; this only bounds a queue nobody releases).
    pub const MAX_HOLD: u32 = 5;

    pub fn new(capacity: usize, per_neighbor: usize) -> Self {
        HoldQueue {
            held: Vec::with_capacity(capacity),
            per_neighbor,
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Holds `item` for `next_hop` at `now` (seconds); gives it back when the queue is full,
    /// in all or for that next hop.
    pub fn hold(&mut self, next_hop: IpAddr, interface: u16, now: u32, item: T) -> Result<(), T> {
        let full = self.held.len() == self.held.capacity()
            || self.held.iter().filter(|h| h.next_hop == next_hop).count() >= self.per_neighbor;
        if full {
            return Err(item);
        }
        self.held.push(Held {
            next_hop,
            interface,
            since: now,
            item,
        });
        Ok(())
    }

    /// Asks `resolve` about each held packet's next hop and hands those that are done to
    /// `out`, oldest first; the others stay, in order.
    pub fn release(
        &mut self,
        now: u32,
        resolve: impl Fn(IpAddr) -> Resolution,
        mut out: impl FnMut(T, Released),
    ) {
        let done = |h: &mut Held<T>| match resolve(h.next_hop) {
            Resolution::Pending => now.wrapping_sub(h.since) >= Self::MAX_HOLD,
            _ => true,
        };
        for h in self.held.extract_if(.., done) {
            let r = match resolve(h.next_hop) {
                Resolution::Resolved(mac) => Released::Send {
                    mac,
                    interface: h.interface,
                },
                Resolution::Failed => Released::Failed,
                Resolution::Pending => Released::Expired,
            };
            out(h.item, r);
        }
    }
}

/// Ethernet frames are at least 60 bytes before the FCS; ARP frames are padded to it.
pub const MIN_FRAME: usize = 60;
/// An ICMPv6 neighbour solicitation or advertisement with one link-layer option.
pub const NDP_FRAME: usize = 14 + 40 + 32;

/// All nodes (RFC 4291 §2.7.1), and its MAC (RFC 2464 §7).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);

fn arp_frame(buf: &mut [u8; MIN_FRAME], mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) {
    buf.fill(0);
    ethernet::Repr {
        dst: MacAddr::BROADCAST,
        src: mac,
        ethertype: ethernet::ETHERTYPE_ARP,
    }
    .emit(buf);
    arp::Repr {
        op: arp::OP_REQUEST,
        sender_mac: mac,
        sender_ip: sender,
        target_mac: MacAddr([0; 6]),
        target_ip: target,
    }
    .emit(&mut buf[ethernet::HEADER_LEN..]);
}

/// A broadcast ARP request from `sender` (ours, at `mac`) for `target`.
pub fn arp_request(buf: &mut [u8; MIN_FRAME], mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) {
    arp_frame(buf, mac, sender, target);
}

/// A gratuitous ARP announcing that `addr` is at `mac` (RFC 5227 §2.3: a request whose sender
/// and target are both the address), so that neighbours update their caches.
pub fn gratuitous_arp(buf: &mut [u8; MIN_FRAME], mac: MacAddr, addr: Ipv4Addr) {
    arp_frame(buf, mac, addr, addr);
}

/// Writes, from `buf`'s start (an IPv6 header's place), an NDP message from `src` to `dst`:
/// the IPv6 header (hop limit 255: RFC 4861 accepts nothing else) and `ndp` with its checksum.
/// The one writer of l4lb's solicitations and advertisements, in a frame of its own or in
/// place of the solicitation it answers. `buf` holds at least 40 + [`icmp::NDP_LEN`] bytes.
pub fn ndp_packet(buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, ndp: &icmp::NdpRepr) {
    ipv6::Repr {
        src,
        dst,
        next_header: ipv6::NEXT_ICMPV6,
        payload_len: icmp::NDP_LEN,
        hop_limit: 255,
        traffic_class: 0,
    }
    .emit(buf);
    let m = &mut buf[ipv6::HEADER_LEN..ipv6::HEADER_LEN + icmp::NDP_LEN];
    ndp.emit(m);
    icmp::fill_checksum(m, Some((src, dst)));
}

/// An NDP frame from us at `mac` to `eth_dst`.
fn ndp_frame(
    buf: &mut [u8; NDP_FRAME],
    eth_dst: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ndp: &icmp::NdpRepr,
) {
    ethernet::Repr {
        dst: eth_dst,
        src: ndp.lladdr,
        ethertype: ethernet::ETHERTYPE_IPV6,
    }
    .emit(buf);
    ndp_packet(&mut buf[ethernet::HEADER_LEN..], src, dst, ndp);
}

/// The solicited-node multicast address of `a` (RFC 4291 §2.7.1) and its MAC (RFC 2464 §7).
pub fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, MacAddr) {
    let o = a.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    (group, MacAddr([0x33, 0x33, 0xff, o[13], o[14], o[15]]))
}

/// A neighbour solicitation from `src` (ours, at `mac`) for `target`, to its solicited-node
/// group, with our link-layer address (option 1).
pub fn neighbor_solicitation(
    buf: &mut [u8; NDP_FRAME],
    mac: MacAddr,
    src: Ipv6Addr,
    target: Ipv6Addr,
) {
    let (group, group_mac) = solicited_node(target);
    let ns = icmp::NdpRepr {
        msg_type: v6::NEIGHBOR_SOLICIT,
        flags: 0,
        target,
        option: 1,
        lladdr: mac,
    };
    ndp_frame(buf, group_mac, src, group, &ns);
}

/// An unsolicited neighbour advertisement (RFC 4861 §7.2.6) that `target` is at `mac`, to all
/// nodes, override and router flags set, with our link-layer address (option 2).
pub fn unsolicited_advertisement(buf: &mut [u8; NDP_FRAME], mac: MacAddr, target: Ipv6Addr) {
    let na = icmp::NdpRepr {
        msg_type: v6::NEIGHBOR_ADVERT,
        flags: 0x80 | 0x20, // router, override
        target,
        option: 2,
        lladdr: mac,
    };
    ndp_frame(buf, ALL_NODES_MAC, target, ALL_NODES, &na);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    #[test]
    fn an_arp_request_and_a_gratuitous_arp_are_exact() {
        let mut b = [0u8; MIN_FRAME];
        arp_request(
            &mut b,
            MAC,
            Ipv4Addr::new(198, 18, 1, 1),
            Ipv4Addr::new(198, 18, 1, 10),
        );
        let mut want = vec![0xff; 6];
        want.extend_from_slice(&MAC.0);
        want.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        want.extend_from_slice(&MAC.0);
        want.extend_from_slice(&[198, 18, 1, 1, 0, 0, 0, 0, 0, 0, 198, 18, 1, 10]);
        want.resize(60, 0);
        assert_eq!(&b[..], &want[..]);
        gratuitous_arp(&mut b, MAC, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(&b[28..32], &[198, 18, 0, 100]);
        assert_eq!(&b[38..42], &[198, 18, 0, 100]);
        assert_eq!(&b[20..22], &[0, 1]);
    }

    #[test]
    fn solicitations_go_to_the_solicited_node_group_and_check() {
        let target: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
        assert_eq!(
            solicited_node(target).0,
            "ff02::1:ff00:10".parse::<Ipv6Addr>().unwrap()
        );
        let mut b = [0u8; NDP_FRAME];
        neighbor_solicitation(&mut b, MAC, "2001:db8:2::1".parse().unwrap(), target);
        assert_eq!(&b[0..6], &[0x33, 0x33, 0xff, 0, 0, 0x10]);
        assert_eq!(b[21], 255, "hop limit");
        assert_eq!(b[54], 135);
        assert_eq!(&b[62..78], &target.octets());
        assert_eq!((b[78], b[79]), (1, 1), "source link-layer option");
        assert_eq!(&b[80..86], &MAC.0);
        let src: Ipv6Addr = "2001:db8:2::1".parse().unwrap();
        let (group, _) = solicited_node(target);
        assert!(crate::checksum::verifies(
            crate::checksum::pseudo_v6(src, group, 58, 32),
            &b[54..86]
        ));
        unsolicited_advertisement(&mut b, MAC, "2001:db8:1::100".parse().unwrap());
        assert_eq!(
            (b[54], b[58]),
            (136, 0xa0),
            "advertisement, router and override, not solicited"
        );
        assert_eq!((b[78], b[79]), (2, 1), "target link-layer option");
    }

    #[test]
    fn held_packets_leave_in_order_when_resolved_and_are_dropped_when_failed_or_old() {
        let (b1, b2, b3): (IpAddr, IpAddr, IpAddr) = (
            "198.18.1.10".parse().unwrap(),
            "198.18.1.11".parse().unwrap(),
            "2001:db8:1::12".parse().unwrap(),
        );
        let mut q = HoldQueue::new(6, 3);
        for i in 0..4 {
            let r = q.hold(b1, 0, 10, i);
            assert_eq!(
                r.is_ok(),
                i < 3,
                "three per neighbour, the fourth given back"
            );
        }
        q.hold(b2, 1, 10, 10).unwrap();
        q.hold(b3, 0, 11, 20).unwrap();
        q.hold(b2, 1, 12, 11).unwrap();
        assert_eq!(q.hold(b3, 0, 12, 21), Err(21), "six in all");
        let mut out = Vec::new();
        // b1 resolves, b2 is still pending, b3 failed
        q.release(
            12,
            |a| match a {
                a if a == b1 => Resolution::Resolved(MAC),
                a if a == b3 => Resolution::Failed,
                _ => Resolution::Pending,
            },
            |t, r| out.push((t, r)),
        );
        let send = Released::Send {
            mac: MAC,
            interface: 0,
        };
        assert_eq!(
            out,
            [(0, send), (1, send), (2, send), (20, Released::Failed)]
        );
        assert_eq!(q.len(), 2);
        out.clear();
        // still pending: the first b2 packet expires after MAX_HOLD, the later one stays
        q.release(
            10 + HoldQueue::<u8>::MAX_HOLD,
            |_| Resolution::Pending,
            |t, r| out.push((t, r)),
        );
        assert_eq!(out, [(10, Released::Expired)]);
        assert_eq!(q.len(), 1);
        assert!(q.hold(b1, 0, 16, 5).is_ok(), "room again");
    }

    #[test]
    fn the_event_buffer_keeps_order_and_its_bound() {
        let ev = NeighborEvents::default();
        for i in 0..40u8 {
            ev.push(NeighborEvent::Unresolved {
                addr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, i)),
                interface: 0,
            });
        }
        assert_eq!(ev.len(), NeighborEvents::CAPACITY);
        let mut seen = Vec::new();
        ev.drain(|e| seen.push(e));
        assert_eq!(seen.len(), 32);
        assert_eq!(
            seen[3],
            NeighborEvent::Unresolved {
                addr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 3)),
                interface: 0
            }
        );
        assert!(ev.is_empty());
    }
}
