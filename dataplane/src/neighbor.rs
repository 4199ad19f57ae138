//! Neighbour resolution, the dataplane's part: what workers learn from ARP and NDP and which
//! next hops they could not resolve (as events the control side collects between bursts), and
//! the frames the control side sends (ARP requests, gratuitous ARP, neighbour solicitations,
//! unsolicited neighbour advertisements). The table itself and its timers live in the control
//! plane; the snapshot carries the resolved entries.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::MacAddr;
use crate::checksum;
use crate::wire::icmp::v6;
use crate::wire::ipv6;

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
}

impl Default for NeighborEvents {
    fn default() -> Self {
        NeighborEvents {
            slots: std::array::from_fn(|_| Cell::new(None)),
            len: Cell::new(0),
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

/// Ethernet frames are at least 60 bytes before the FCS; ARP frames are padded to it.
pub const MIN_FRAME: usize = 60;
/// An ICMPv6 neighbour solicitation or advertisement with one link-layer option.
pub const NDP_FRAME: usize = 14 + 40 + 32;

fn arp_frame(
    buf: &mut [u8; MIN_FRAME],
    dst: MacAddr,
    mac: MacAddr,
    op: u16,
    sender: Ipv4Addr,
    target_mac: [u8; 6],
    target: Ipv4Addr,
) {
    buf.fill(0);
    buf[0..6].copy_from_slice(&dst.0);
    buf[6..12].copy_from_slice(&mac.0);
    buf[12..14].copy_from_slice(&[0x08, 0x06]);
    buf[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 0]);
    buf[20..22].copy_from_slice(&op.to_be_bytes());
    buf[22..28].copy_from_slice(&mac.0);
    buf[28..32].copy_from_slice(&sender.octets());
    buf[32..38].copy_from_slice(&target_mac);
    buf[38..42].copy_from_slice(&target.octets());
}

/// A broadcast ARP request from `sender` (ours, at `mac`) for `target`.
pub fn arp_request(buf: &mut [u8; MIN_FRAME], mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) {
    arp_frame(buf, MacAddr::BROADCAST, mac, 1, sender, [0; 6], target);
}

/// A gratuitous ARP announcing that `addr` is at `mac` (RFC 5227 §2.3: a request whose sender
/// and target are both the address), so that neighbours update their caches.
pub fn gratuitous_arp(buf: &mut [u8; MIN_FRAME], mac: MacAddr, addr: Ipv4Addr) {
    arp_frame(buf, MacAddr::BROADCAST, mac, 1, addr, [0; 6], addr);
}

/// The fields that tell a solicitation from an advertisement.
struct Ndp {
    eth_dst: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ty: u8,
    flags: u8,
    target: Ipv6Addr,
    /// Link-layer address option: 1 source, 2 target.
    option: u8,
}

fn ndp_frame(buf: &mut [u8; NDP_FRAME], mac: MacAddr, n: Ndp) {
    let Ndp {
        eth_dst,
        src,
        dst,
        ty,
        flags,
        target,
        option,
    } = n;
    buf.fill(0);
    buf[0..6].copy_from_slice(&eth_dst.0);
    buf[6..12].copy_from_slice(&mac.0);
    buf[12..14].copy_from_slice(&[0x86, 0xdd]);
    let h = &mut buf[14..54];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&32u16.to_be_bytes());
    h[6] = ipv6::NEXT_ICMPV6;
    h[7] = 255; // RFC 4861: NDP is only valid with hop limit 255
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    let m = &mut buf[54..86];
    m[0] = ty;
    m[4] = flags;
    m[8..24].copy_from_slice(&target.octets());
    m[24] = option;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac.0);
    let c = checksum::transport(checksum::pseudo_v6(src, dst, ipv6::NEXT_ICMPV6, 32), m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
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
    ndp_frame(
        buf,
        mac,
        Ndp {
            eth_dst: group_mac,
            src,
            dst: group,
            ty: v6::NEIGHBOR_SOLICIT,
            flags: 0,
            target,
            option: 1,
        },
    );
}

/// An unsolicited neighbour advertisement (RFC 4861 §7.2.6) that `target` is at `mac`, to all
/// nodes, override and router flags set, with our link-layer address (option 2).
pub fn unsolicited_advertisement(buf: &mut [u8; NDP_FRAME], mac: MacAddr, target: Ipv6Addr) {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let eth_dst = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    ndp_frame(
        buf,
        mac,
        Ndp {
            eth_dst,
            src: target,
            dst: all_nodes,
            ty: v6::NEIGHBOR_ADVERT,
            flags: 0x80 | 0x20,
            target,
            option: 2,
        },
    );
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
        assert!(checksum::verifies(
            checksum::pseudo_v6(src, group, 58, 32),
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
