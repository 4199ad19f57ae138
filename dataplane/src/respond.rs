//! Answers l4lb builds in place of the packet that asked: ARP replies, ICMP/ICMPv6 echo
//! replies, neighbour advertisements, "too big" errors when a tunnel would exceed the MTU, and
//! what a host answers on a closed port (a TCP reset, ICMP port unreachable).

use std::net::{IpAddr, Ipv6Addr};

use crate::addr::MacAddr;
use crate::checksum;
use crate::forward::{IpView, set_l2};
use crate::neighbor;
use crate::packet::PacketBuf;
use crate::wire::arp::ArpPacket;
use crate::wire::icmp::{self, v4, v6};
use crate::wire::{ipv4, ipv6};

/// Turns an ARP request into the reply that `mac` has the asked-for address.
pub fn arp_reply(frame: &mut [u8], l2: usize, mac: MacAddr) {
    let requester = MacAddr(frame[6..12].try_into().expect("6"));
    if let Ok(mut arp) = ArpPacket::new_checked(&mut frame[l2..]) {
        arp.make_reply(mac);
    }
    set_l2(frame, requester, mac);
}

/// Turns an echo request into its reply: addresses swapped, type changed, TTL / hop limit 64,
/// checksums updated incrementally.
pub fn echo_reply(frame: &mut [u8], ip: &IpView, mac: MacAddr) {
    let peer = MacAddr(frame[6..12].try_into().expect("6"));
    set_l2(frame, peer, mac);
    swap_addresses(frame, ip);
    let (old_type, new_type) = if ip.v6 {
        (v6::ECHO_REQUEST, v6::ECHO_REPLY)
    } else {
        (v4::ECHO_REQUEST, v4::ECHO_REPLY)
    };
    let at = ip.l4 + 2;
    let c = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let code = frame[ip.l4 + 1];
    let c = checksum::update_u16(
        c,
        u16::from_be_bytes([old_type, code]),
        u16::from_be_bytes([new_type, code]),
    );
    frame[ip.l4] = new_type;
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    set_ttl(frame, ip, 64);
}

fn swap_addresses(frame: &mut [u8], ip: &IpView) {
    // The one's-complement sum does not depend on the order of the words: no checksum changes.
    let (s, d) = (
        ip.addr_range(crate::forward::Side::Src),
        ip.addr_range(crate::forward::Side::Dst),
    );
    let n = ip.addr_len();
    let mut tmp = [0u8; 16];
    tmp[..n].copy_from_slice(&frame[s.clone()]);
    frame.copy_within(d.clone(), s.start);
    frame[d].copy_from_slice(&tmp[..n]);
}

fn set_ttl(frame: &mut [u8], ip: &IpView, ttl: u8) {
    if ip.v6 {
        frame[ip.l3 + ipv6::field::HOP_LIMIT] = ttl;
    } else {
        let at = ip.l3 + ipv4::field::TTL;
        let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
        let new = u16::from_be_bytes([ttl, frame[at + 1]]);
        frame[at] = ttl;
        let cs = ip.l3 + ipv4::field::CHECKSUM;
        let c = checksum::update_u16(u16::from_be_bytes([frame[cs], frame[cs + 1]]), old, new);
        frame[cs..cs + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// RFC 4861 §4.4 neighbour advertisement for `target` in answer to a solicitation: solicited,
/// override and router flags, our MAC as target link-layer address; to the solicitor, or to
/// all nodes when it had no address yet (DAD).
pub fn neighbor_advert<P: PacketBuf>(
    pkt: &mut P,
    ip: &IpView,
    target: Ipv6Addr,
    mac: MacAddr,
) -> bool {
    let (solicitor_mac, solicitor): (MacAddr, Ipv6Addr) = {
        let d = pkt.data();
        (
            MacAddr(d[6..12].try_into().expect("6")),
            <[u8; 16]>::try_from(&d[ip.l3 + 8..ip.l3 + 24])
                .expect("16")
                .into(),
        )
    };
    let (dst, solicited) = if solicitor.is_unspecified() {
        (neighbor::ALL_NODES, false)
    } else {
        (solicitor, true)
    };
    if !pkt.set_len(ip.l3 + ipv6::HEADER_LEN + icmp::NDP_LEN) {
        return false;
    }
    let f = pkt.data_mut();
    let eth_dst = if solicited {
        solicitor_mac
    } else {
        neighbor::ALL_NODES_MAC
    };
    set_l2(f, eth_dst, mac);
    let na = icmp::NdpRepr {
        msg_type: v6::NEIGHBOR_ADVERT,
        flags: 0x80 | 0x20 | if solicited { 0x40 } else { 0 }, // router, override, solicited
        target,
        option: 2,
        lladdr: mac,
    };
    neighbor::ndp_packet(&mut f[ip.l3..], target, dst, &na);
    true
}

/// Replaces a packet that is too big for the path with the ICMP error its sender needs:
/// IPv4 "fragmentation needed" (type 3 code 4, RFC 1191) or ICMPv6 "packet too big" (RFC
/// 4443), from `from` (the VIP) to the packet's source, carrying `mtu`.
pub fn too_big<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    from: IpAddr,
    mtu: u16,
    mac: MacAddr,
) -> bool {
    let [a, b] = mtu.to_be_bytes();
    let (v4_rest, v6_rest) = ([0, 0, a, b], u32::from(mtu).to_be_bytes());
    if ip.v6 {
        icmp_error(pkt, l2, ip, from, (v6::PACKET_TOO_BIG, 0, v6_rest), mac)
    } else {
        let e = (v4::DEST_UNREACHABLE, v4::CODE_FRAG_NEEDED, v4_rest);
        icmp_error(pkt, l2, ip, from, e, mac)
    }
}

/// Replaces a UDP datagram to a port nobody serves with ICMP "port unreachable" (type 3 code
/// 3, RFC 1122 3.2.2.1) or ICMPv6 "port unreachable" (type 1 code 4, RFC 4443 3.1), from
/// `from` (the VIP) to its source.
pub fn port_unreachable<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    from: IpAddr,
    mac: MacAddr,
) -> bool {
    let e = if ip.v6 {
        (v6::DEST_UNREACHABLE, v6::CODE_PORT_UNREACHABLE, [0; 4])
    } else {
        (v4::DEST_UNREACHABLE, v4::CODE_PORT_UNREACHABLE, [0; 4])
    };
    icmp_error(pkt, l2, ip, from, e, mac)
}

/// Replaces a packet with the ICMP error `(type, code, rest of header)` about it, from `from`
/// to the packet's source, quoting as much of it as fits in 576 (IPv4) or 1280 (IPv6) bytes;
/// back to the MAC it came from. False when the buffer cannot hold it.
fn icmp_error<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    from: IpAddr,
    (msg_type, code, rest): (u8, u8, [u8; 4]),
    mac: MacAddr,
) -> bool {
    let (hdr, limit) = if ip.v6 {
        (ipv6::HEADER_LEN, 1280)
    } else {
        (ipv4::MIN_HEADER_LEN, 576)
    };
    let icmp_at = l2 + hdr;
    let quote = ip.total.min(limit - hdr - 8);
    let peer_mac;
    let client: [u8; 16] = ip.src;
    {
        let f = pkt.data();
        peer_mac = MacAddr(f[6..12].try_into().expect("6"));
        if f.len() < ip.l3 + quote {
            return false;
        }
    }
    if pkt.data().len() < icmp_at + 8 + quote && !pkt.set_len(icmp_at + 8 + quote) {
        return false;
    }
    let f = pkt.data_mut();
    f.copy_within(ip.l3..ip.l3 + quote, icmp_at + 8);
    if !pkt.set_len(icmp_at + 8 + quote) {
        return false;
    }
    let f = pkt.data_mut();
    set_l2(f, peer_mac, mac);
    let icmp_len = 8 + quote;
    let v6_addrs = emit_ip(f, l2, from, &client, icmp_len, None);
    icmp::Repr {
        msg_type,
        code,
        rest,
    }
    .emit(&mut f[icmp_at..]);
    icmp::fill_checksum(&mut f[icmp_at..icmp_at + icmp_len], v6_addrs);
    true
}

/// Writes at `l2` an IP header from `from` to `to` (a view's 16-byte form) carrying
/// `payload_len` bytes of ICMP (`protocol` None) or `protocol`; returns the IPv6 addresses for
/// a pseudo-header when it is IPv6.
fn emit_ip(
    f: &mut [u8],
    l2: usize,
    from: IpAddr,
    to: &[u8; 16],
    payload_len: usize,
    protocol: Option<u8>,
) -> Option<(Ipv6Addr, Ipv6Addr)> {
    match from {
        IpAddr::V4(src) => {
            let dst = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&to[12..]).expect("4"));
            ipv4::Repr {
                src,
                dst,
                protocol: protocol.unwrap_or(ipv4::PROTO_ICMP),
                payload_len,
                ttl: 64,
                tos: 0,
                dont_fragment: protocol.is_some(),
            }
            .emit(&mut f[l2..]);
            None
        }
        IpAddr::V6(src) => {
            let dst = Ipv6Addr::from(*to);
            ipv6::Repr {
                src,
                dst,
                next_header: protocol.unwrap_or(ipv6::NEXT_ICMPV6),
                payload_len,
                hop_limit: 64,
                traffic_class: 0,
            }
            .emit(&mut f[l2..]);
            Some((src, dst))
        }
    }
}

/// Replaces a TCP segment to a port nobody serves with the reset a host sends (RFC 9293
/// 3.10.7.1): to a segment with ACK, `seq = its ack`, RST; to one without, `seq = 0, ack = its
/// seq + its length` (SYN and FIN count one each), RST+ACK. From `from` (the VIP), window 0, no
/// options, no data. Never called for a segment that is a reset itself.
pub fn tcp_reset<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    from: IpAddr,
    mac: MacAddr,
) -> bool {
    use crate::wire::tcp;
    let (peer_mac, sport, dport, seq, ack, flags, seg_len) = {
        let f = pkt.data();
        let Ok(t) = tcp::TcpSegment::new_checked(&f[ip.l4..ip.end()]) else {
            return false;
        };
        let data = ip.end() - ip.l4 - t.header_len();
        let seg_len = data as u32
            + u32::from(t.flags() & tcp::SYN != 0)
            + u32::from(t.flags() & tcp::FIN != 0);
        (
            MacAddr(f[6..12].try_into().expect("6")),
            t.src_port(),
            t.dst_port(),
            t.seq(),
            t.ack(),
            t.flags(),
            seg_len,
        )
    };
    let hdr = if ip.v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::MIN_HEADER_LEN
    };
    let at = l2 + hdr;
    let end = at + tcp::MIN_HEADER_LEN;
    if !pkt.set_len(end) {
        return false;
    }
    let client = ip.src;
    let f = pkt.data_mut();
    set_l2(f, peer_mac, mac);
    emit_ip(
        f,
        l2,
        from,
        &client,
        tcp::MIN_HEADER_LEN,
        Some(ipv4::PROTO_TCP),
    );
    let (out_seq, out_ack, out_flags) = if flags & tcp::ACK != 0 {
        (ack, 0, tcp::RST)
    } else {
        (0, seq.wrapping_add(seg_len), tcp::RST | tcp::ACK)
    };
    let t = &mut f[at..end];
    t[0..2].copy_from_slice(&dport.to_be_bytes());
    t[2..4].copy_from_slice(&sport.to_be_bytes());
    t[4..8].copy_from_slice(&out_seq.to_be_bytes());
    t[8..12].copy_from_slice(&out_ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = out_flags;
    t[14..20].fill(0); // window, checksum, urgent pointer
    let pseudo = match from {
        IpAddr::V6(s) => checksum::pseudo_v6(
            s,
            Ipv6Addr::from(client),
            ipv4::PROTO_TCP,
            tcp::MIN_HEADER_LEN as u32,
        ),
        IpAddr::V4(s) => checksum::pseudo_v4(
            s,
            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&client[12..]).expect("4")),
            ipv4::PROTO_TCP,
            tcp::MIN_HEADER_LEN as u16,
        ),
    };
    let c = checksum::transport(pseudo, t);
    t[tcp::CHECKSUM_OFFSET..tcp::CHECKSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
    true
}
