//! ICMP and ICMPv6: echo to our addresses and VIPs is answered, neighbour discovery goes to
//! [`local`](super::local), and an error quoting a packet of one of our flows is rewritten
//! consistently with the flow and sent where the flow's packets go.

use std::net::Ipv6Addr;

use super::{Action, Ctx, Ip, egress, local, nat_owner};
use crate::drop_reason::DropReason;
use crate::flow::{Endpoint, FlowKey, ReplyKey, addr_from_bytes};
use crate::forward::{self, IpView, Side};
use crate::packet::PacketBuf;
use crate::respond;
use crate::service::ForwardingMode;
use crate::snapshot::ServiceKey;
use crate::wire::icmp::{self, IcmpMessage};

pub(super) fn icmp<P: PacketBuf>(
    pkt: &mut P,
    cx: &mut Ctx<'_>,
    p: &Ip,
) -> Result<Action, DropReason> {
    let ip = &p.ip;
    let (ty, code) = {
        let m = IcmpMessage::new_checked(&pkt.data()[ip.l4..ip.end()])?;
        (m.msg_type(), m.code())
    };
    if ip.v6 && ty == icmp::v6::NEIGHBOR_SOLICIT {
        // Before the source check: duplicate address detection solicits from `::`.
        return local::neighbor_solicitation(pkt, cx, ip);
    }
    if ip.v6 && ty == icmp::v6::NEIGHBOR_ADVERT {
        return local::neighbor_advertisement(pkt.data(), cx, ip);
    }
    if cx.snap.is_martian_source(&ip.src, ip.v6) {
        // No echo reply to it (a reflector), no error about a flow from it.
        return Err(DropReason::MartianSource);
    }
    let echo = if ip.v6 {
        icmp::v6::ECHO_REQUEST
    } else {
        icmp::v4::ECHO_REQUEST
    };
    if ty == echo && code == 0 {
        let for_us = cx.snap.is_vip(&ip.dst) || cx.snap.local_interface(&ip.dst).is_some();
        if !for_us {
            // Through us: the kernel's to route.
            return cx.kernel_or(DropReason::NotForUs);
        }
        let mac = cx.snap.interfaces[usize::from(cx.ingress)].mac;
        respond::echo_reply(pkt.data_mut(), ip, mac);
        return Ok(Action::Reply);
    }
    let error = if ip.v6 {
        icmp::v6::is_error(ty)
    } else {
        icmp::v4::is_error(ty)
    };
    let vip = cx.snap.is_vip(&ip.dst);
    if !error {
        // Router advertisements, multicast listener reports, echo replies to the kernel's
        // pings ...: the kernel's, unless they are to a VIP.
        return if vip {
            Err(DropReason::IcmpUnsupported)
        } else {
            cx.kernel_or(DropReason::IcmpUnsupported)
        };
    }
    match error_about_flow(pkt, cx, p) {
        // An error about one of the kernel's own connections (a probe's port unreachable, a
        // path MTU for its TCP) or about transit traffic.
        Err(DropReason::IcmpNoFlow) if !vip => cx.kernel_or(DropReason::IcmpNoFlow),
        r => r,
    }
}

/// An ICMP error quoting a packet of one of our flows.
///
/// - To a VIP, quoting a packet from the VIP (a backend's reply, dropped on the way to the
///   client): it goes to the flow's backend, the way the flow's packets go ([`egress`]); in
///   NAT the quoted source and the outer destination become the backend.
/// - In NAT, not to us, quoting a packet from a client to a backend (dropped on the way to the
///   backend): it goes to the client, with the quoted destination (and the outer source, if it
///   was the backend) turned back into the VIP.
fn error_about_flow<P: PacketBuf>(
    pkt: &mut P,
    cx: &mut Ctx<'_>,
    p: &Ip,
) -> Result<Action, DropReason> {
    let ip = &p.ip;
    let at = ip.l4 + icmp::HEADER_LEN;
    let q = pkt
        .data()
        .get(at..ip.end())
        .and_then(|quote| icmp::quoted(quote, ip.v6))
        .ok_or(DropReason::IcmpNoFlow)?;
    let inner = IpView {
        v6: q.v6,
        l3: at,
        total: ip.end() - at,
        l4: at + q.l4,
        proto: q.protocol,
        src: q.src,
        dst: q.dst,
    };
    // The quoted transport bytes: at least the eight of ports (`quoted` saw them).
    let l4_avail = ip.end() - inner.l4;
    let (sport, dport) = {
        let f = pkt.data();
        (
            u16::from_be_bytes([f[inner.l4], f[inner.l4 + 1]]),
            u16::from_be_bytes([f[inner.l4 + 2], f[inner.l4 + 3]]),
        )
    };
    let snap = cx.snap;
    if snap.is_vip(&ip.dst) && inner.src == ip.dst {
        // About the VIP's packet to a client: the flow is (client = quoted dst, vip = quoted src).
        let key = FlowKey {
            client: inner.dst,
            vip: inner.src,
            client_port: dport,
            vip_port: sport,
            protocol: inner.proto,
        };
        let svc = snap
            .service(&ServiceKey {
                protocol: inner.proto,
                vip: inner.src,
                port: sport,
            })
            .ok_or(DropReason::IcmpNoFlow)?;
        let mode = svc.config.forwarding;
        if mode == ForwardingMode::Nat {
            let o = nat_owner(snap, &key.client, key.client_port);
            if o != cx.w.index {
                return Ok(Action::Redirect(o));
            }
        }
        let slot =
            cx.w.flows
                .lookup(&key, cx.now)
                .ok_or(DropReason::IcmpNoFlow)?;
        let backend = cx.w.flows.get(slot).backend;
        let endpoint = cx.w.flows.endpoint(backend);
        let route = match snap.backend_route(backend) {
            Some(r) => *r,
            None => snap
                .route(addr_from_bytes(endpoint.addr))
                .ok_or(DropReason::NoRoute)?,
        };
        if mode == ForwardingMode::Nat {
            let f = pkt.data_mut();
            forward::rewrite_endpoint(
                f,
                &inner,
                Side::Src,
                &endpoint.addr,
                endpoint.port,
                l4_avail,
            );
            forward::rewrite_addr(f, ip, Side::Dst, &endpoint.addr);
            fix_icmp_checksum(f, ip, &ip.src, &endpoint.addr);
        }
        return egress::deliver(pkt, cx, p.l2, ip, svc, &endpoint.addr, &route);
    }
    // About a client's packet to a backend (NAT): the client is the quoted source.
    let o = nat_owner(snap, &inner.src, sport);
    if o != cx.w.index {
        return Ok(Action::Redirect(o));
    }
    let rk = ReplyKey {
        protocol: inner.proto,
        backend: Endpoint {
            addr: inner.dst,
            port: dport,
        },
        client: inner.src,
        client_port: sport,
    };
    let slot =
        cx.w.flows
            .lookup_reply(&rk, cx.now)
            .ok_or(DropReason::IcmpNoFlow)?;
    let key = cx.w.flows.get(slot).key;
    let f = pkt.data_mut();
    forward::rewrite_endpoint(f, &inner, Side::Dst, &key.vip, key.vip_port, l4_avail);
    let mut outer_src = ip.src;
    if ip.src == inner.dst {
        forward::rewrite_addr(f, ip, Side::Src, &key.vip);
        outer_src = key.vip;
    }
    fix_icmp_checksum(f, ip, &outer_src, &ip.dst);
    egress::send(f, cx, addr_from_bytes(ip.dst))
}

/// Recomputes an ICMP(v6) checksum over the whole message after its quote was rewritten.
fn fix_icmp_checksum(frame: &mut [u8], ip: &IpView, src: &[u8; 16], dst: &[u8; 16]) {
    let v6 = ip.v6.then(|| (Ipv6Addr::from(*src), Ipv6Addr::from(*dst)));
    icmp::fill_checksum(&mut frame[ip.l4..ip.end()], v6);
}
