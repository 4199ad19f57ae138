//! Rewrites for the forwarding modes: NAT (address and port, checksums updated incrementally),
//! the Ethernet header (every mode; all DR changes), and tunnel encapsulation (TUN).

use std::net::IpAddr;
use std::ops::Range;

use crate::checksum;
use crate::packet::PacketBuf;
use crate::wire::{ipv4, ipv6, tcp, udp};

/// An IP packet inside a frame, as offsets: what every rewrite needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpView {
    pub v6: bool,
    /// Offset of the IP header in the frame.
    pub l3: usize,
    /// IP packet length (header and payload, without Ethernet padding).
    pub total: usize,
    /// Offset of the transport header in the frame.
    pub l4: usize,
    /// The transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

impl IpView {
    pub fn addr_len(&self) -> usize {
        if self.v6 { 16 } else { 4 }
    }

    pub fn addr_range(&self, side: Side) -> Range<usize> {
        let off = match (self.v6, side) {
            (false, Side::Src) => ipv4::field::SRC,
            (false, Side::Dst) => ipv4::field::DST,
            (true, Side::Src) => ipv6::field::SRC,
            (true, Side::Dst) => ipv6::field::DST,
        };
        self.l3 + off..self.l3 + off + self.addr_len()
    }

    /// The wire form of a 16-byte address for this family.
    pub fn wire<'a>(&self, a: &'a [u8; 16]) -> &'a [u8] {
        if self.v6 { &a[..] } else { &a[12..] }
    }

    pub fn end(&self) -> usize {
        self.l3 + self.total
    }
}

/// Where the transport checksum of `proto` sits, relative to its header.
fn l4_checksum_offset(proto: u8) -> Option<usize> {
    match proto {
        ipv4::PROTO_TCP => Some(tcp::CHECKSUM_OFFSET),
        ipv4::PROTO_UDP => Some(udp::CHECKSUM_OFFSET),
        _ => None,
    }
}

/// Replaces the address and port on `side` of a TCP/UDP packet, updating the IPv4 header
/// checksum and the transport checksum incrementally (RFC 1624). The transport checksum is
/// updated only if it lies within `l4_avail` bytes (a quoted packet in an ICMP error may be
/// cut short).
#[inline(always)]
pub fn rewrite_endpoint(
    frame: &mut [u8],
    ip: &IpView,
    side: Side,
    addr: &[u8; 16],
    port: u16,
    l4_avail: usize,
) {
    let range = ip.addr_range(side);
    let new_addr = ip.wire(addr);
    // One delta for the address serves both checksums; the port adds its own to the transport's.
    let addr_delta = if ip.v6 {
        checksum::delta(&frame[range.clone()], new_addr)
    } else {
        checksum::delta4(
            frame[range.clone()].try_into().expect("4 bytes"),
            addr[12..].try_into().expect("4 bytes"),
        )
    };
    frame[range].copy_from_slice(new_addr);
    if !ip.v6 {
        let at = ip.l3 + ipv4::field::CHECKSUM;
        let c = checksum::apply(u16::from_be_bytes([frame[at], frame[at + 1]]), addr_delta);
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let port_at = ip.l4 + if side == Side::Src { 0 } else { 2 };
    let old_port = u16::from_be_bytes([frame[port_at], frame[port_at + 1]]);
    frame[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    if let Some(off) = l4_checksum_offset(ip.proto)
        && off + 2 <= l4_avail
    {
        let at = ip.l4 + off;
        let c = u16::from_be_bytes([frame[at], frame[at + 1]]);
        let d = addr_delta + u32::from(!old_port) + u32::from(port);
        let c = if ip.proto == ipv4::PROTO_UDP {
            checksum::udp_apply(c, d)
        } else {
            checksum::apply(c, d)
        };
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Replaces one address of an IP header (no transport checksum: for the outer header of an
/// ICMP error, whose own checksum is recomputed).
pub fn rewrite_addr(frame: &mut [u8], ip: &IpView, side: Side, addr: &[u8; 16]) {
    let range = ip.addr_range(side);
    let alen = ip.addr_len();
    let mut old = [0u8; 16];
    old[..alen].copy_from_slice(&frame[range.clone()]);
    frame[range].copy_from_slice(ip.wire(addr));
    if !ip.v6 {
        let at = ip.l3 + ipv4::field::CHECKSUM;
        let c = u16::from_be_bytes([frame[at], frame[at + 1]]);
        let c = checksum::update(c, &old[..alen], ip.wire(addr));
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Sets the Ethernet addresses (a VLAN tag, if any, stays).
pub use crate::wire::ethernet::set_addresses as set_l2;

/// Bytes a tunnel adds.
pub fn tunnel_overhead(v6: bool) -> usize {
    if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::MIN_HEADER_LEN
    }
}

/// Encapsulates the IP packet after `l2` bytes of Ethernet header in IPv4-in-IPv4 (protocol 4)
/// or IPv6-in-IPv6 (next header 41), outer TTL / hop limit 64, DSCP and ECN copied from the
/// inner header, DF copied (IPv4). Ethernet padding is dropped first. False if there is no
/// headroom or the addresses are not of one family.
pub fn encapsulate<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    outer_src: IpAddr,
    outer_dst: IpAddr,
) -> bool {
    let overhead = tunnel_overhead(ip.v6);
    let (tos, df) = {
        let d = pkt.data();
        if ip.v6 {
            let tc = ((u32::from_be_bytes([d[ip.l3], d[ip.l3 + 1], d[ip.l3 + 2], d[ip.l3 + 3]])
                >> 20)
                & 0xff) as u8;
            (tc, false)
        } else {
            (
                d[ip.l3 + ipv4::field::TOS],
                d[ip.l3 + ipv4::field::FLAGS_FRAG] & 0x40 != 0,
            )
        }
    };
    if !pkt.set_len(l2 + ip.total) || !pkt.prepend(overhead) {
        return false;
    }
    let f = pkt.data_mut();
    f.copy_within(overhead..overhead + l2, 0);
    let o = &mut f[l2..l2 + overhead];
    match (outer_src, outer_dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => ipv4::Repr {
            src,
            dst,
            protocol: ipv4::PROTO_IPIP,
            payload_len: ip.total,
            ttl: 64,
            tos,
            dont_fragment: df,
        }
        .emit(o),
        (IpAddr::V6(src), IpAddr::V6(dst)) => ipv6::Repr {
            src,
            dst,
            next_header: ipv6::NEXT_IPV6,
            payload_len: ip.total,
            hop_limit: 64,
            traffic_class: tos,
        }
        .emit(o),
        // Validation keeps a backend in its VIP's family; refuse rather than panic.
        _ => return false,
    }
    true
}
