//! What the appliance answers and learns itself: ARP requests and NDP solicitations for its
//! addresses and VIPs are answered; their senders, and the targets of advertisements, are
//! reported to the control side as neighbours. A VIP's closed ports answer as a host's do.

use std::net::{IpAddr, Ipv6Addr};

use super::{Action, Ctx, Ip, L4};
use crate::addr::MacAddr;
use crate::drop_reason::DropReason;
use crate::flow::addr_from_bytes;
use crate::forward::IpView;
use crate::neighbor::NeighborEvent;
use crate::packet::PacketBuf;
use crate::respond;
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ipv6;

/// ARP for one of our addresses or VIPs: a request is answered; a request or a reply teaches
/// us the sender (on the link). ARP for others only updates a sender we know (RFC 826).
pub(super) fn arp(frame: &mut [u8], l2: usize, cx: &Ctx<'_>) -> Result<Action, DropReason> {
    let arp = ArpPacket::new_checked(&frame[l2..])?;
    let target = crate::flow::addr_bytes(IpAddr::V4(arp.target_ip()));
    let ours = cx.snap.local_interface(&target) == Some(cx.ingress) || cx.snap.is_vip(&target);
    let sender = IpAddr::V4(arp.sender_ip());
    if !ours {
        // RFC 826's merge: a sender already in the table is updated whoever it asks for (a
        // neighbour that moved, or announces itself with a gratuitous ARP).
        if cx.snap.neighbor(sender).is_some() {
            learn(cx, sender, arp.sender_mac());
        }
        return cx.kernel_or(DropReason::ArpIgnored);
    }
    learn(cx, sender, arp.sender_mac());
    match arp.operation() {
        arp::OP_REQUEST => {
            let mac = cx.snap.interfaces[usize::from(cx.ingress)].mac;
            respond::arp_reply(frame, l2, mac);
            Ok(Action::Reply)
        }
        arp::OP_REPLY => cx.consumed(),
        _ => Err(DropReason::ArpIgnored),
    }
}

/// Records that `addr` is at `mac`, if it is a plausible neighbour on the ingress interface.
fn learn(cx: &Ctx<'_>, addr: IpAddr, mac: MacAddr) {
    if !addr.is_unspecified()
        && !mac.is_multicast()
        && mac != MacAddr([0; 6])
        && cx.snap.on_link(addr) == Some(cx.ingress)
    {
        cx.w.neighbor_events.push(NeighborEvent::Learned {
            addr,
            mac,
            interface: cx.ingress,
        });
    }
}

/// The link-layer address option of type `want` (1: source, 2: target) in NDP options.
fn ndp_link_option(mut options: &[u8], want: u8) -> Option<MacAddr> {
    while options.len() >= 8 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == want && len >= 8 {
            return Some(MacAddr(options[2..8].try_into().expect("6")));
        }
        options = &options[len..];
    }
    None
}

/// The body of an NDP message that RFC 4861 §7.1 lets through: hop limit 255, code 0, at least
/// 24 bytes (type, code, checksum, flags or reserved, target).
fn ndp_body<'f>(frame: &'f [u8], ip: &IpView) -> Result<&'f [u8], DropReason> {
    let body = &frame[ip.l4..ip.end()];
    if frame[ip.l3 + ipv6::field::HOP_LIMIT] != 255 || body.len() < 24 || body[1] != 0 {
        return Err(DropReason::NdpInvalid);
    }
    Ok(body)
}

pub(super) fn neighbor_solicitation<P: PacketBuf>(
    pkt: &mut P,
    cx: &Ctx<'_>,
    ip: &IpView,
) -> Result<Action, DropReason> {
    let body = ndp_body(pkt.data(), ip)?;
    let target: [u8; 16] = body[8..24].try_into().expect("16");
    let ours = cx.snap.local_interface(&target) == Some(cx.ingress) || cx.snap.is_vip(&target);
    if !ours {
        // For the kernel's own addresses (its link-local one) or someone else's.
        return cx.kernel_or(DropReason::ArpIgnored);
    }
    if let Some(m) = ndp_link_option(&body[24..], 1) {
        learn(cx, addr_from_bytes(ip.src), m);
    }
    let mac = cx.snap.interfaces[usize::from(cx.ingress)].mac;
    if respond::neighbor_advert(pkt, ip, Ipv6Addr::from(target), mac) {
        Ok(Action::Reply)
    } else {
        Err(DropReason::NoHeadroom)
    }
}

/// A neighbour advertisement: its target is at the address in its target link-layer option.
pub(super) fn neighbor_advertisement(
    frame: &[u8],
    cx: &Ctx<'_>,
    ip: &IpView,
) -> Result<Action, DropReason> {
    let body = ndp_body(frame, ip)?;
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&body[8..24]).expect("16"));
    match ndp_link_option(&body[24..], 2) {
        Some(m) => {
            learn(cx, IpAddr::V6(target), m);
            cx.consumed()
        }
        None => Err(DropReason::NdpInvalid),
    }
}

/// A TCP segment or UDP datagram to a VIP on a port without a service: a reset or ICMP port
/// unreachable from the VIP, as a host (and IPVS's director) answers, within the worker's
/// per-second budget; else dropped as `no_service`. Resets and packets from martian sources
/// are never answered.
pub(super) fn closed_port<P: PacketBuf>(
    pkt: &mut P,
    cx: &mut Ctx<'_>,
    p: &Ip,
    l4: &L4,
) -> Result<Action, DropReason> {
    let replies = cx.snap.replies;
    let ip = &p.ip;
    if !replies.closed_ports
        || l4.tcp_flags.is_some_and(|f| f & crate::wire::tcp::RST != 0)
        || cx.snap.is_martian_source(&ip.src, ip.v6)
    {
        return Err(DropReason::NoService);
    }
    let counters = &cx.w.traffic.closed_ports;
    if !cx.w.reply_budget.take(cx.now, replies.per_second) {
        counters.rate_limited.add(1);
        return Err(DropReason::NoService);
    }
    let vip = addr_from_bytes(ip.dst);
    let mac = cx.snap.interfaces[usize::from(cx.ingress)].mac;
    let answered = if l4.tcp_flags.is_some() {
        respond::tcp_reset(pkt, p.l2, ip, vip, mac) && {
            counters.tcp_resets.add(1);
            true
        }
    } else {
        respond::port_unreachable(pkt, p.l2, ip, vip, mac) && {
            counters.port_unreachables.add(1);
            true
        }
    };
    if answered {
        Ok(Action::Reply)
    } else {
        Err(DropReason::NoHeadroom)
    }
}
