//! Answers l4lb builds in place of the packet that asked: ARP replies, ICMP/ICMPv6 echo
//! replies, neighbour advertisements, and "too big" errors when a tunnel would exceed the MTU.

use std::net::{IpAddr, Ipv6Addr};

use crate::addr::MacAddr;
use crate::checksum;
use crate::forward::{IpView, set_l2};
use crate::packet::PacketBuf;
use crate::wire::arp::ArpPacket;
use crate::wire::icmp::{v4, v6};
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
    const ICMP_LEN: usize = 24 + 8; // header + reserved + target, one option
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
        (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), false)
    } else {
        (solicitor, true)
    };
    let l4 = ip.l3 + ipv6::HEADER_LEN;
    if !pkt.set_len(l4 + ICMP_LEN) {
        return false;
    }
    let f = pkt.data_mut();
    let eth_dst = if solicited {
        solicitor_mac
    } else {
        MacAddr([0x33, 0x33, 0, 0, 0, 1])
    };
    set_l2(f, eth_dst, mac);
    let h = &mut f[ip.l3..ip.l3 + ipv6::HEADER_LEN];
    h[0..4].copy_from_slice(&(6u32 << 28).to_be_bytes());
    h[4..6].copy_from_slice(&(ICMP_LEN as u16).to_be_bytes());
    h[6] = ipv6::NEXT_ICMPV6;
    h[7] = 255; // RFC 4861 §7.1.2: must be 255
    h[8..24].copy_from_slice(&target.octets());
    h[24..40].copy_from_slice(&dst.octets());
    let m = &mut f[l4..l4 + ICMP_LEN];
    m.fill(0);
    m[0] = v6::NEIGHBOR_ADVERT;
    m[4] = 0x80 | 0x20 | if solicited { 0x40 } else { 0 }; // router, override, solicited
    m[8..24].copy_from_slice(&target.octets());
    m[24] = 2; // target link-layer address option
    m[25] = 1; // 8 bytes
    m[26..32].copy_from_slice(&mac.0);
    let c = checksum::transport(
        checksum::pseudo_v6(target, dst, ipv6::NEXT_ICMPV6, ICMP_LEN as u32),
        m,
    );
    m[2..4].copy_from_slice(&c.to_be_bytes());
    true
}

/// Replaces a packet that is too big for the path with the ICMP error its sender needs:
/// IPv4 "fragmentation needed" (type 3 code 4, RFC 1191) or ICMPv6 "packet too big" (RFC
/// 4443), from `from` (the VIP) to the packet's source, carrying `mtu` and as much of the
/// packet as fits in 576 (IPv4) or 1280 (IPv6) bytes.
pub fn too_big<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    from: IpAddr,
    mtu: u16,
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
    match from {
        IpAddr::V4(src) => {
            let dst = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&client[12..]).expect("4"));
            let h = &mut f[l2..l2 + hdr];
            h.fill(0);
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((hdr + icmp_len) as u16).to_be_bytes());
            h[ipv4::field::TTL] = 64;
            h[ipv4::field::PROTO] = ipv4::PROTO_ICMP;
            h[12..16].copy_from_slice(&src.octets());
            h[16..20].copy_from_slice(&dst.octets());
            let c = checksum::ipv4_header(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let m = &mut f[icmp_at..icmp_at + icmp_len];
            m[0..8].copy_from_slice(&[
                v4::DEST_UNREACHABLE,
                v4::CODE_FRAG_NEEDED,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            m[6..8].copy_from_slice(&mtu.to_be_bytes());
            let c = checksum::internet(m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
        }
        IpAddr::V6(src) => {
            let dst = Ipv6Addr::from(client);
            let h = &mut f[l2..l2 + hdr];
            h[0..4].copy_from_slice(&(6u32 << 28).to_be_bytes());
            h[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
            h[6] = ipv6::NEXT_ICMPV6;
            h[7] = 64;
            h[8..24].copy_from_slice(&src.octets());
            h[24..40].copy_from_slice(&dst.octets());
            let m = &mut f[icmp_at..icmp_at + icmp_len];
            m[0..4].copy_from_slice(&[v6::PACKET_TOO_BIG, 0, 0, 0]);
            m[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
            let c = checksum::transport(
                checksum::pseudo_v6(src, dst, ipv6::NEXT_ICMPV6, icmp_len as u32),
                m,
            );
            m[2..4].copy_from_slice(&c.to_be_bytes());
        }
    }
    true
}
