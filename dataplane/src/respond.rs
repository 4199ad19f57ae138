//! Answers l4lb builds in place of the packet that asked: ARP replies, ICMP/ICMPv6 echo
//! replies, neighbour advertisements, and "too big" errors when a tunnel would exceed the MTU.

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
    let (m, v6_addrs) = match from {
        IpAddr::V4(src) => {
            let dst = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&client[12..]).expect("4"));
            ipv4::Repr {
                src,
                dst,
                protocol: ipv4::PROTO_ICMP,
                payload_len: icmp_len,
                ttl: 64,
                tos: 0,
                dont_fragment: false,
            }
            .emit(&mut f[l2..]);
            let [a, b] = mtu.to_be_bytes();
            icmp::Repr {
                msg_type: v4::DEST_UNREACHABLE,
                code: v4::CODE_FRAG_NEEDED,
                rest: [0, 0, a, b],
            }
            .emit(&mut f[icmp_at..]);
            (&mut f[icmp_at..icmp_at + icmp_len], None)
        }
        IpAddr::V6(src) => {
            let dst = Ipv6Addr::from(client);
            ipv6::Repr {
                src,
                dst,
                next_header: ipv6::NEXT_ICMPV6,
                payload_len: icmp_len,
                hop_limit: 64,
                traffic_class: 0,
            }
            .emit(&mut f[l2..]);
            icmp::Repr {
                msg_type: v6::PACKET_TOO_BIG,
                code: 0,
                rest: u32::from(mtu).to_be_bytes(),
            }
            .emit(&mut f[icmp_at..]);
            (&mut f[icmp_at..icmp_at + icmp_len], Some((src, dst)))
        }
    };
    icmp::fill_checksum(m, v6_addrs);
    true
}
