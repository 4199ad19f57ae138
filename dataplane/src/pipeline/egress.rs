//! The one way out towards a backend, for new flows, established flows and ICMP errors about
//! them alike: NAT and DR set the Ethernet header for the backend's route (DR only on the
//! link), TUN encapsulates within the egress interface's MTU. And the choice of next hop,
//! written once: a route's resolved MAC, or an event for the control side to resolve it.

use std::net::IpAddr;

use super::{Action, Ctx, classify};
use crate::addr::MacAddr;
use crate::drop_reason::DropReason;
use crate::flow::addr_from_bytes;
use crate::forward::{self, IpView, Side};
use crate::neighbor::NeighborEvents;
use crate::packet::PacketBuf;
use crate::respond;
use crate::service::{BackendId, ForwardingMode};
use crate::snapshot::{Route, Service};
use crate::wire::ipv4;

/// [`forward_to_backend`] in a function of its own: the fast path's rare cases stay out of
/// its registers.
#[inline(never)]
pub(super) fn forward_out_of_line<P: PacketBuf>(
    pkt: &mut P,
    cx: &Ctx<'_>,
    ip: &IpView,
    svc: &Service,
    backend: BackendId,
) -> Action {
    forward_to_backend(pkt, cx, ip.l3, ip, svc, backend).unwrap_or_else(Action::Drop)
}

/// Client to VIP, to the flow's backend, in the service's forwarding mode; counted once it is
/// on its way (not when a neighbour was missing, say).
#[inline(always)]
pub(super) fn forward_to_backend<P: PacketBuf>(
    pkt: &mut P,
    cx: &Ctx<'_>,
    l2: usize,
    ip: &IpView,
    svc: &Service,
    backend: BackendId,
) -> Result<Action, DropReason> {
    let len = pkt.data().len();
    let endpoint = cx.w.flows.endpoint(backend);
    // By reference: copying the route out made the CPU stall on store forwarding.
    let resolved;
    let route = match cx.snap.backend_route(backend) {
        Some(r) => r,
        None => {
            resolved = cx
                .snap
                .route(addr_from_bytes(endpoint.addr))
                .ok_or(DropReason::NoRoute)?;
            &resolved
        }
    };
    let mode = svc.config.forwarding;
    if mode == ForwardingMode::Nat {
        forward::rewrite_endpoint(
            pkt.data_mut(),
            ip,
            Side::Dst,
            &endpoint.addr,
            endpoint.port,
            ip.end() - ip.l4,
        );
    }
    let action = deliver(pkt, cx, l2, ip, svc, &endpoint.addr, route)?;
    if let Some((s, b)) = cx.w.traffic.of(svc.config.id, backend) {
        s.count_in(len);
        b.count_in(len);
    }
    Ok(action)
}

/// Sends a packet on its way to `backend` over `route` in the service's forwarding mode; for
/// NAT its addresses are the backend's already, for DR and TUN they are the VIP's.
#[inline(always)]
pub(super) fn deliver<P: PacketBuf>(
    pkt: &mut P,
    cx: &Ctx<'_>,
    l2: usize,
    ip: &IpView,
    svc: &Service,
    backend: &[u8; 16],
    route: &Route,
) -> Result<Action, DropReason> {
    match svc.config.forwarding {
        ForwardingMode::Nat => send_via(pkt.data_mut(), route, &cx.w.neighbor_events),
        ForwardingMode::DirectRouting => {
            if !route.on_link {
                return Err(DropReason::DrBackendOffLink);
            }
            send_via(pkt.data_mut(), route, &cx.w.neighbor_events)
        }
        ForwardingMode::Tunnel => tunnel(
            pkt,
            cx,
            l2,
            ip,
            addr_from_bytes(*backend),
            route,
            svc.config.options.tunnel,
        ),
    }
}

/// Encapsulates towards the backend, or answers "too big" when the result would not fit (an
/// ICMP error that does not fit is dropped: no error answers an error).
fn tunnel<P: PacketBuf>(
    pkt: &mut P,
    cx: &Ctx<'_>,
    l2: usize,
    ip: &IpView,
    backend: IpAddr,
    route: &Route,
    kind: forward::Tunnel,
) -> Result<Action, DropReason> {
    let snap = cx.snap;
    let mtu = snap.interfaces[usize::from(route.interface)].mtu;
    let overhead = kind.overhead(backend.is_ipv6());
    if ip.total + overhead > usize::from(mtu) {
        if classify::is_icmp(ip) {
            return Err(DropReason::TooBigIcmpError);
        }
        let df = ip.v6 || pkt.data()[ip.l3 + ipv4::field::FLAGS_FRAG] & 0x40 != 0;
        if !df {
            return Err(DropReason::TooBigNoDf);
        }
        let vip = addr_from_bytes(ip.dst);
        let mac = snap.interfaces[usize::from(cx.ingress)].mac;
        return if respond::too_big(pkt, l2, ip, vip, mtu - overhead as u16, mac) {
            Ok(Action::Reply)
        } else {
            Err(DropReason::NoHeadroom)
        };
    }
    let src = route.tunnel_src.ok_or(DropReason::NoTunnelSource)?;
    if route.failed {
        return Err(DropReason::NeighborFailed);
    }
    if !forward::encapsulate(pkt, l2, ip, src, backend, kind) {
        return Err(DropReason::NoHeadroom);
    }
    // Encapsulated first: a packet held for the next hop needs only its Ethernet header.
    let dst_mac = next_hop_mac(route, &cx.w.neighbor_events)?;
    forward::set_l2(pkt.data_mut(), dst_mac, route.src_mac);
    Ok(Action::Forward {
        interface: route.interface,
    })
}

/// The next hop's MAC. When it is not known the control side is told (it resolves it) and the
/// answer is `neighbor_unresolved`, with the packet rewritten but for its Ethernet header: the
/// worker holds it until the MAC comes ([`NeighborEvents::take_unresolved`] says for which next
/// hop). Callers ask only once everything else about the packet is done. A next hop that failed
/// to resolve holds nothing.
#[inline(always)]
pub(super) fn next_hop_mac(route: &Route, events: &NeighborEvents) -> Result<MacAddr, DropReason> {
    route.dst_mac.ok_or_else(|| {
        if route.failed {
            return DropReason::NeighborFailed;
        }
        events.unresolved(route.next_hop, route.interface);
        DropReason::NeighborUnresolved
    })
}

/// [`next_hop_mac`] as the frame's first 12 bytes, the next hop's MAC and the interface's
/// ([`Route::macs`]), for the fast paths.
#[inline(always)]
pub(super) fn next_hop_macs<'r>(
    route: &'r Route,
    events: &NeighborEvents,
) -> Result<&'r [u8; 12], DropReason> {
    next_hop_mac(route, events).map(|_| &route.macs)
}

/// Sets the Ethernet header for a resolved route and says where to send.
#[inline(always)]
fn send_via(
    frame: &mut [u8],
    route: &Route,
    events: &NeighborEvents,
) -> Result<Action, DropReason> {
    let macs = next_hop_macs(route, events)?;
    frame[..12].copy_from_slice(macs);
    Ok(Action::Forward {
        interface: route.interface,
    })
}

/// Sets the Ethernet header for `dst` via its next hop and says where to send (towards a
/// client: NAT replies and ICMP errors about them).
pub(super) fn send(frame: &mut [u8], cx: &Ctx<'_>, dst: IpAddr) -> Result<Action, DropReason> {
    let route = cx.snap.route(dst).ok_or(DropReason::NoRoute)?;
    send_via(frame, &route, &cx.w.neighbor_events)
}
