//! Rewrites for the forwarding modes: NAT (address and port, checksums updated incrementally),
//! the Ethernet header (every mode; all DR changes), and tunnel encapsulation (TUN).

use std::net::IpAddr;
use std::ops::Range;

use crate::checksum;
use crate::packet::PacketBuf;
use crate::wire::{ethernet, ipv4, ipv6, tcp, udp};

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

/// How TUN forwarding wraps a packet (ipvsadm's `--tun-type`): in both families either way,
/// as the kernel's ip_vs_xmit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Tunnel {
    /// IP in IP: outer protocol 4 for an IPv4 packet, 41 for an IPv6 one.
    #[default]
    Ipip,
    /// Generic UDP Encapsulation (variant 0) to `port`: UDP, then a 4-byte GUE header whose
    /// protocol field names the inner packet (4 or 41), as ipvs_gue_encap builds it.
    Gue { port: u16 },
    /// GRE (RFC 2784) without options: 4 bytes, protocol type 0x0800 or 0x86DD.
    Gre,
}

/// The GUE header's length (variant 0, no extension fields).
pub const GUE_HEADER_LEN: usize = 4;
/// The GRE header's length without checksum, key or sequence number.
pub const GRE_HEADER_LEN: usize = 4;
/// IP protocol number of GRE.
pub const PROTO_GRE: u8 = 47;

impl Tunnel {
    /// Bytes a tunnel with an outer header of that family adds.
    pub fn overhead(self, outer_v6: bool) -> usize {
        let ip = if outer_v6 {
            ipv6::HEADER_LEN
        } else {
            ipv4::MIN_HEADER_LEN
        };
        ip + match self {
            Tunnel::Ipip => 0,
            Tunnel::Gue { .. } => udp::HEADER_LEN + GUE_HEADER_LEN,
            Tunnel::Gre => GRE_HEADER_LEN,
        }
    }
}

/// The IP protocol number that carries an inner packet of that family.
fn inner_protocol(inner_v6: bool) -> u8 {
    if inner_v6 {
        ipv6::NEXT_IPV6
    } else {
        ipv4::PROTO_IPIP
    }
}

/// The UDP source port of a GUE packet: from the inner addresses and ports, so that one flow
/// keeps one outer tuple (routers hash it for ECMP and NICs for RSS), in 49152..=65535.
fn gue_source_port(frame: &[u8], ip: &IpView) -> u16 {
    let ports = frame
        .get(ip.l4..ip.l4 + 4)
        .map_or([0; 4], |p| p.try_into().expect("4 bytes"));
    gue_source_port_of(&ip.src, &ip.dst, ports, ip.proto)
}

/// [`gue_source_port`] from the inner addresses (16-byte form), the four bytes of ports as
/// they are on the wire (zeros without them) and the protocol.
#[inline]
pub(crate) fn gue_source_port_of(src: &[u8; 16], dst: &[u8; 16], ports: [u8; 4], proto: u8) -> u16 {
    let w = |b: &[u8; 16], i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let h = crate::hash::fmix64(
        w(src, 0)
            ^ w(src, 8).rotate_left(13)
            ^ w(dst, 0).rotate_left(29)
            ^ w(dst, 8).rotate_left(41)
            ^ u64::from(u32::from_ne_bytes(ports))
            ^ u64::from(proto) << 56,
    );
    49152 + (h % 16384) as u16
}

/// Encapsulates the IP packet after `l2` bytes of Ethernet header in `tunnel` from
/// `outer_src` to `outer_dst` (an outer header of either family around an inner packet of
/// either: 4-in-6 and 6-in-4 too). Outer TTL / hop limit 64, DSCP and ECN copied from the
/// inner header, DF copied from an IPv4 inner header (an IPv6 one sets it on an IPv4 outer
/// header: IPv6 is never fragmented on the way). GUE over IPv4 carries no UDP checksum, as
/// IPVS sends it by default; over IPv6 it has one (RFC 8200 requires it). Ethernet padding is
/// dropped first. False if there is no headroom or the outer addresses are not of one family.
pub fn encapsulate<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    tunnel: Tunnel,
) -> bool {
    let outer_v6 = outer_dst.is_ipv6();
    if outer_src.is_ipv6() != outer_v6 {
        return false;
    }
    let overhead = tunnel.overhead(outer_v6);
    let (tos, df, sport) = {
        let d = pkt.data();
        let sport = match tunnel {
            Tunnel::Gue { .. } => gue_source_port(d, ip),
            _ => 0,
        };
        if ip.v6 {
            let tc = ((u32::from_be_bytes([d[ip.l3], d[ip.l3 + 1], d[ip.l3 + 2], d[ip.l3 + 3]])
                >> 20)
                & 0xff) as u8;
            (tc, true, sport)
        } else {
            (
                d[ip.l3 + ipv4::field::TOS],
                d[ip.l3 + ipv4::field::FLAGS_FRAG] & 0x40 != 0,
                sport,
            )
        }
    };
    if !pkt.set_len(l2 + ip.total) || !pkt.prepend(overhead) {
        return false;
    }
    let f = pkt.data_mut();
    f.copy_within(overhead..overhead + l2, 0);
    if outer_v6 != ip.v6 && l2 >= 2 {
        // The EtherType (the last two bytes of the Ethernet header, after any VLAN tag) now
        // names the outer family.
        let t = if outer_v6 {
            ethernet::ETHERTYPE_IPV6
        } else {
            ethernet::ETHERTYPE_IPV4
        };
        f[l2 - 2..l2].copy_from_slice(&t.to_be_bytes());
    }
    write_outer(
        f,
        l2,
        ip.v6,
        ip.total,
        Outer {
            tos,
            df,
            sport,
            src: outer_src,
            dst: outer_dst,
        },
        tunnel,
    )
}

/// What the outer headers of an encapsulated packet say besides its tunnel: DSCP and ECN,
/// DF, GUE's source port ([`gue_source_port_of`]), and the outer addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outer {
    pub tos: u8,
    pub df: bool,
    pub sport: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// Writes the outer headers of `tunnel` after `l2` bytes of Ethernet header, in front of an
/// inner packet of `inner_total` bytes (of family `inner_v6`) that already has room for them:
/// [`encapsulate`]'s format, written once for it and for the fast path. False if the outer
/// addresses are not of one family.
#[inline]
pub(crate) fn write_outer(
    f: &mut [u8],
    l2: usize,
    inner_v6: bool,
    inner_total: usize,
    o: Outer,
    tunnel: Tunnel,
) -> bool {
    let (outer_src, outer_dst, tos, df, sport) = (o.src, o.dst, o.tos, o.df, o.sport);
    let outer_v6 = outer_dst.is_ipv6();
    let inner = inner_protocol(inner_v6);
    let ip_len = tunnel.overhead(outer_v6) - Tunnel::Ipip.overhead(outer_v6);
    let protocol = match tunnel {
        Tunnel::Ipip => inner,
        Tunnel::Gue { .. } => ipv4::PROTO_UDP,
        Tunnel::Gre => PROTO_GRE,
    };
    let outer_ip = l2..l2 + Tunnel::Ipip.overhead(outer_v6);
    let payload_len = inner_total + ip_len;
    match (outer_src, outer_dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => ipv4::Repr {
            src,
            dst,
            protocol,
            payload_len,
            ttl: 64,
            tos,
            dont_fragment: df,
        }
        .emit(&mut f[outer_ip.clone()]),
        (IpAddr::V6(src), IpAddr::V6(dst)) => ipv6::Repr {
            src,
            dst,
            next_header: protocol,
            payload_len,
            hop_limit: 64,
            traffic_class: tos,
        }
        .emit(&mut f[outer_ip.clone()]),
        _ => return false,
    }
    let h = outer_ip.end;
    match tunnel {
        Tunnel::Ipip => {}
        Tunnel::Gre => {
            // GRE's protocol type is the inner packet's EtherType.
            let ethertype = if inner_v6 {
                ethernet::ETHERTYPE_IPV6
            } else {
                ethernet::ETHERTYPE_IPV4
            };
            f[h..h + 2].copy_from_slice(&[0, 0]);
            f[h + 2..h + 4].copy_from_slice(&ethertype.to_be_bytes());
        }
        Tunnel::Gue { port } => {
            let udp_len = (payload_len) as u16;
            f[h..h + 2].copy_from_slice(&sport.to_be_bytes());
            f[h + 2..h + 4].copy_from_slice(&port.to_be_bytes());
            f[h + 4..h + 6].copy_from_slice(&udp_len.to_be_bytes());
            f[h + 6..h + 8].copy_from_slice(&[0, 0]);
            let g = h + udp::HEADER_LEN;
            f[g..g + GUE_HEADER_LEN].copy_from_slice(&[0, inner, 0, 0]);
            if let (IpAddr::V6(src), IpAddr::V6(dst)) = (outer_src, outer_dst) {
                let pseudo = checksum::pseudo_v6(src, dst, ipv4::PROTO_UDP, u32::from(udp_len));
                let c = match checksum::transport(pseudo, &f[h..h + usize::from(udp_len)]) {
                    0 => 0xffff,
                    c => c,
                };
                f[h + 6..h + 8].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
    true
}

/// The outer headers of a TUN backend's IPv4-in-IPv4 packets, written once when the snapshot
/// is built instead of for every packet: the outer IPv4 header
/// with its TOS, total length, DF and checksum left zero, then the tunnel's own header (GUE's
/// UDP source port and length zero too). A packet fills those in ([`write`](Self::write)); its
/// header checksum is the template's sum plus its length, TOS and DF, a few additions instead
/// of a sum over 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer4Template {
    pub tunnel: Tunnel,
    /// The outer destination: the backend.
    pub dst: [u8; 4],
    /// The longest inner packet that fits the egress MTU with the outer headers.
    pub max_inner: u16,
    /// Bytes of `header` in use: the tunnel's overhead (20, 24 or 32).
    len: u8,
    /// The one's-complement sum of the outer IPv4 header's words as `header` has them.
    sum: u16,
    header: [u8; 32],
}

impl Outer4Template {
    /// The template from `src` (the egress interface's address) to `dst`, for an egress MTU
    /// of `mtu`; None when not even an empty inner packet fits.
    pub fn new(
        tunnel: Tunnel,
        src: std::net::Ipv4Addr,
        dst: std::net::Ipv4Addr,
        mtu: u16,
    ) -> Option<Self> {
        let len = tunnel.overhead(false);
        let max_inner = usize::from(mtu).checked_sub(len)?;
        let mut header = [0u8; 32];
        let o = Outer {
            tos: 0,
            df: false,
            sport: 0,
            src: src.into(),
            dst: dst.into(),
        };
        write_outer(&mut header, 0, false, 0, o, tunnel);
        // What each packet writes, zeroed: the IPv4 total length and checksum, GUE's UDP
        // length (TOS, DF and the UDP source port are zero already).
        header[ipv4::field::LEN..ipv4::field::LEN + 2].fill(0);
        header[ipv4::field::CHECKSUM..ipv4::field::CHECKSUM + 2].fill(0);
        if let Tunnel::Gue { .. } = tunnel {
            header[ipv4::MIN_HEADER_LEN + 4..ipv4::MIN_HEADER_LEN + 6].fill(0);
        }
        let sum = checksum::fold(checksum::sum(&header[..ipv4::MIN_HEADER_LEN]));
        Some(Outer4Template {
            tunnel,
            dst: dst.octets(),
            max_inner: max_inner.min(usize::from(u16::MAX)) as u16,
            len: len as u8,
            sum,
            header,
        })
    }

    /// Bytes the outer headers take.
    #[inline(always)]
    pub fn overhead(&self) -> usize {
        usize::from(self.len)
    }

    /// Writes the outer headers at the start of `out` for an inner IPv4 packet of
    /// `inner_total` bytes (at most `max_inner`) with `tos` and `df`, and GUE's `sport`:
    /// what [`write_outer`] writes for it, byte for byte.
    #[inline(always)]
    pub fn write(&self, out: &mut [u8; 32], inner_total: usize, tos: u8, df: bool, sport: u16) {
        // Fixed-size copies: a copy of `len` bytes would be a call to memcpy.
        match self.len {
            20 => out[..20].copy_from_slice(&self.header[..20]),
            24 => out[..24].copy_from_slice(&self.header[..24]),
            _ => *out = self.header,
        }
        let total = (inner_total + self.overhead()) as u16;
        out[ipv4::field::TOS] = tos;
        out[ipv4::field::LEN..ipv4::field::LEN + 2].copy_from_slice(&total.to_be_bytes());
        let df_bits = if df { ipv4::FLAG_DF } else { 0 };
        out[ipv4::field::FLAGS_FRAG..ipv4::field::FLAGS_FRAG + 2]
            .copy_from_slice(&df_bits.to_be_bytes());
        // RFC 1071: the header's sum is the template's plus the words this packet changed.
        let s = u32::from(self.sum) + u32::from(total) + u32::from(tos) + u32::from(df_bits);
        let c = !checksum::fold(s);
        out[ipv4::field::CHECKSUM..ipv4::field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        if let Tunnel::Gue { .. } = self.tunnel {
            let u = ipv4::MIN_HEADER_LEN;
            out[u..u + 2].copy_from_slice(&sport.to_be_bytes());
            let udp_len = total - ipv4::MIN_HEADER_LEN as u16;
            out[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const TUNNELS: [Tunnel; 3] = [Tunnel::Ipip, Tunnel::Gue { port: 6080 }, Tunnel::Gre];

    proptest! {
        /// A template's headers are `write_outer`'s, byte for byte, whatever the packet.
        #[test]
        fn a_template_writes_what_write_outer_writes(
            which in 0usize..3,
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            inner_total in 20usize..1500,
            tos in any::<u8>(),
            df in any::<bool>(),
            sport in any::<u16>(),
        ) {
            let tunnel = TUNNELS[which];
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let t = Outer4Template::new(tunnel, src, dst, 1500 + 32).expect("fits");
            let mut got = [0xa5u8; 32];
            t.write(&mut got, inner_total, tos, df, sport);
            let mut want = [0xa5u8; 32];
            let o = Outer { tos, df, sport, src: src.into(), dst: dst.into() };
            prop_assert!(write_outer(&mut want, 0, false, inner_total, o, tunnel));
            prop_assert_eq!(got, want);
            prop_assert_eq!(t.overhead(), tunnel.overhead(false));
            prop_assert_eq!(t.dst, dst.octets());
        }
    }

    #[test]
    fn a_template_fits_its_mtu() {
        for tunnel in TUNNELS {
            let n = tunnel.overhead(false) as u16;
            let a = Ipv4Addr::new(198, 18, 0, 1);
            let t = Outer4Template::new(tunnel, a, a, 1500).expect("fits");
            assert_eq!(t.max_inner, 1500 - n, "{tunnel:?}");
            assert_eq!(
                Outer4Template::new(tunnel, a, a, n).map(|t| t.max_inner),
                Some(0)
            );
            assert_eq!(Outer4Template::new(tunnel, a, a, n - 1), None, "{tunnel:?}");
        }
    }
}
