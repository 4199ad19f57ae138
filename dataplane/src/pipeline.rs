//! The packet path: one entry point, [`process`], that turns a received frame into an
//! [`Action`]. Each step is one decision (parse, is it for us, which service, which flow,
//! which backend, rewrite) and every drop names its [`DropReason`].

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::counters::ServiceCounters;
use crate::neighbor::{NeighborEvent, NeighborEvents};

use crate::addr::{self, MacAddr};
use crate::checksum;
use crate::drop_reason::DropReason;
use crate::flow::{
    Endpoint, FlowKey, FlowState, FlowTable, FlowTimeouts, NewFlow, ReplyKey, addr_from_bytes,
};
use crate::forward::{self, IpView, Side};
use crate::hash::fmix64;
use crate::packet::PacketBuf;
use crate::respond;
use crate::sched::{Cursor, PickInput};
use crate::service::{BackendId, ForwardingMode};
use crate::snapshot::{Route, Service, ServiceKey, Snapshot};
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::icmp::{self, IcmpMessage};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::tcp::TcpSegment;
use crate::wire::udp::UdpDatagram;

/// What to do with a packet after [`process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Rewritten, Ethernet addresses included (the next hop's MAC is the destination): send
    /// it on interface `interface` (an index into the snapshot's interfaces). Four bytes in
    /// all, returned in a register: carrying the next hop's address as well cost the
    /// established path 8% (`cargo bench -p dataplane --bench pipeline`).
    Forward {
        interface: u16,
    },
    /// Turned into an answer (ARP, echo, neighbour advertisement, too big): send it back out
    /// of the interface it came in on.
    Reply,
    /// Taken in by l4lb itself (an ARP reply or neighbour advertisement it learned from).
    Consumed,
    Drop(DropReason),
    /// It belongs to another worker's flow table (NAT ownership): hand it over unchanged.
    Redirect(u16),
}

/// Flow-table sweeping done along with each new flow, so expiry keeps up with creation.
const SWEEP_PER_NEW_FLOW: usize = 4;

/// One worker's mutable state: its flow table, its scheduling cursors, and its per-service and
/// per-backend counters (shared for reading with the control side).
#[derive(Debug)]
pub struct WorkerState {
    /// This worker's index among `Snapshot::workers`.
    pub index: u16,
    pub flows: FlowTable,
    /// Per service id.
    cursors: Vec<Cursor>,
    pub traffic: Arc<ServiceCounters>,
    /// What this burst learned about neighbours, for the control side.
    pub neighbor_events: NeighborEvents,
}

impl WorkerState {
    /// `max_services` and `max_backends` bound the ids the control side hands out.
    pub fn new(
        index: u16,
        flow_capacity: u32,
        max_services: u32,
        max_backends: u32,
        timeouts: FlowTimeouts,
    ) -> Self {
        WorkerState {
            index,
            flows: FlowTable::new(flow_capacity, max_backends, timeouts),
            cursors: vec![Cursor::default(); max_services as usize],
            traffic: Arc::new(ServiceCounters::new(max_services, max_backends)),
            neighbor_events: NeighborEvents::default(),
        }
    }

    /// Copies the flow table's connection counts of `snapshot`'s backends into the shared
    /// gauges, and the flow table's counts (between bursts, a few times a second).
    pub fn mirror_connections(&self, snapshot: &Snapshot) {
        use crate::sched::ConnSource;
        let backends = snapshot
            .services
            .iter()
            .flat_map(|s| s.config.backends.iter().map(|b| b.id));
        for b in backends {
            if let Some(t) = self.traffic.backends.get(b.0 as usize) {
                let c = self.flows.conns(b);
                t.active.set(u64::from(c.active));
                t.inactive.set(u64::from(c.inactive));
            }
        }
        let (f, s) = (&self.traffic.flows, self.flows.stats());
        f.entries.set(self.flows.len() as u64);
        f.capacity.set(u64::from(self.flows.capacity()));
        f.memory.set(self.flows.memory_bytes() as u64);
        f.created.set(s.created);
        f.expired.set(s.expired);
        f.evicted.set(s.evicted);
        f.evicted_established.set(s.evicted_established);
        f.flushed.set(s.flushed);
        self.traffic.mirrored_snapshot.set(snapshot.epoch);
    }
}

/// Flow-table entries above which a worker warms a whole burst ([`warm_burst`]) before processing it
/// (about what L2 holds: 64-byte flows plus the index); below, the extra lookup only costs
/// time.
pub const WARM_ABOVE: usize = 8192;

/// The most packets a worker takes in one burst (and so the most [`warm_burst`] warms).
pub const MAX_BURST: usize = 256;

/// Warms the cache for [`process`] of a burst of frames (at most `MAX_BURST`), in two passes
/// of prefetches: the index buckets of the flows of its client packets to VIPs, then the
/// flows those buckets name. Prefetches retire at once, so the burst's cache misses overlap
/// instead of each being waited for in turn when the burst is then processed.
#[inline]
pub fn warm_burst<'a>(frames: impl Iterator<Item = &'a [u8]>, snap: &Snapshot, w: &WorkerState) {
    let mut hashes = [0u64; MAX_BURST];
    let mut n = 0;
    for frame in frames.take(MAX_BURST) {
        if let Some(h) = warm(frame, snap, w) {
            hashes[n] = h;
            n += 1;
        }
    }
    for &h in &hashes[..n] {
        w.flows.prefetch_flows(h);
    }
}

/// The first pass of [`warm_burst`]: if `frame` looks like a client's TCP or UDP packet to a
/// VIP, the index bucket of its flow starts loading and its hash is returned. A quick read of
/// the headers without the checks of `process`, which decides everything.
#[inline]
fn warm(frame: &[u8], snap: &Snapshot, w: &WorkerState) -> Option<u64> {
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let mut ether_type = be16(12)?;
    let mut at = 14;
    if ether_type == ethernet::ETHERTYPE_VLAN {
        (ether_type, at) = (be16(16)?, 18);
    }
    let (client, vip, protocol, l4) = match ether_type {
        ethernet::ETHERTYPE_IPV4 => {
            let h = frame.get(at..at + 20)?;
            if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return None; // a fragment
            }
            let a = |i: usize| addr::mapped(h[i..i + 4].try_into().expect("4 bytes"));
            (a(12), a(16), h[9], at + usize::from(h[0] & 0x0f) * 4)
        }
        ethernet::ETHERTYPE_IPV6 => {
            let h = frame.get(at..at + 40)?;
            let a = |i: usize| -> [u8; 16] { h[i..i + 16].try_into().expect("16 bytes") };
            (a(8), a(24), h[6], at + 40)
        }
        _ => return None,
    };
    if protocol != ipv4::PROTO_TCP && protocol != ipv4::PROTO_UDP || !snap.maybe_vip(&vip) {
        return None;
    }
    let hash = w.flows.hash_of(&FlowKey {
        client,
        vip,
        client_port: be16(l4)?,
        vip_port: be16(l4 + 2)?,
        protocol,
    });
    w.flows.prefetch_index(hash);
    Some(hash)
}

/// Which worker owns the flows of a client endpoint (NAT: both directions carry it).
#[inline]
pub fn owner(client: &[u8; 16], port: u16, workers: u16) -> u16 {
    if workers <= 1 {
        return 0;
    }
    let a = u64::from_be_bytes(client[..8].try_into().expect("8"));
    let b = u64::from_be_bytes(client[8..].try_into().expect("8"));
    (fmix64(a ^ b.rotate_left(17) ^ u64::from(port)) % u64::from(workers)) as u16
}

/// The transport part of a parsed packet.
#[derive(Debug, Clone, Copy)]
struct L4 {
    sport: u16,
    dport: u16,
    /// TCP flags; None for UDP.
    tcp_flags: Option<u8>,
}

/// Processes one frame received on interface `ingress` (an index into the snapshot's
/// interfaces) at `now` (seconds, the flow table's clock).
pub fn process<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Action {
    let no_flow = match established_v4(pkt, ingress, snap, w, now) {
        Fast::Done(a) => return a,
        Fast::NoFlow => true,
        Fast::Other => false,
    };
    classify(pkt, ingress, snap, w, now, no_flow).unwrap_or_else(Action::Drop)
}

/// [`process`] without the fast path: every packet through the general parse.
#[cfg(test)]
pub(crate) fn process_general<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Action {
    classify(pkt, ingress, snap, w, now, false).unwrap_or_else(Action::Drop)
}

/// What [`established_v4`] did.
enum Fast {
    Done(Action),
    /// The packet is a client's to a VIP whose flow table has no entry for it: the general
    /// path need not look again (a new flow's first packet).
    NoFlow,
    /// Anything else: the general path decides from scratch.
    Other,
}

/// The packet a load balancer sees most: an untagged IPv4 TCP or UDP packet without options,
/// to our MAC, of a live flow of a live service. Its checks are the general path's, on a
/// straight line and without building what that case does not need; the forwarding is the
/// general path's own. Anything else, or any doubt (a bad checksum, no flow or an expired one,
/// its service gone), returns before anything is changed, and the general path decides.
/// `fuzz::fast_path_equals_general_path` holds the two to the same results.
#[inline(never)]
fn established_v4<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Fast {
    match established_v4_inner(pkt, ingress, snap, w, now) {
        Ok(a) => Fast::Done(a),
        Err(f) => f,
    }
}

/// Bytes of a frame the fast path reads and writes: Ethernet, a 20-byte IPv4 header and the
/// 20 bytes of a TCP header (a UDP packet this short takes the general path).
const FAST_HEAD: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + 20;

#[inline(always)]
fn established_v4_inner<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Result<Action, Fast> {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
    let itf = snap
        .interfaces
        .get(usize::from(ingress))
        .ok_or(Fast::Other)?;
    let frame = pkt.data_mut();
    let frame_len = frame.len();
    // One length check: every offset below is within this array.
    let h: &mut [u8; FAST_HEAD] = frame
        .get_mut(..FAST_HEAD)
        .and_then(|h| h.try_into().ok())
        .ok_or(Fast::Other)?;
    if h[..6] != itf.mac.0 || h[12..14] != ethernet::ETHERTYPE_IPV4.to_be_bytes() {
        return Err(Fast::Other);
    }
    let ip: &[u8; 20] = h[L3..L4].try_into().expect("20 bytes");
    // Version 4 without options, not a fragment, a length that fits, a good checksum.
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] != 0x45
        || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0
        || total < ipv4::MIN_HEADER_LEN
        || L3 + total > frame_len
        || !crate::checksum::ipv4_header20_ok(ip)
    {
        return Err(Fast::Other);
    }
    let proto = ip[9];
    let l4_len = total - ipv4::MIN_HEADER_LEN;
    let (tcp_flags, checksum_at) = match proto {
        ipv4::PROTO_TCP
            if l4_len >= 20
                && h[L4 + 12] >> 4 >= 5
                && l4_len >= usize::from(h[L4 + 12] >> 4) * 4 =>
        {
            (Some(h[L4 + 13]), L4 + 16)
        }
        ipv4::PROTO_UDP
            if l4_len >= 8
                && (8..=l4_len)
                    .contains(&usize::from(u16::from_be_bytes([h[L4 + 4], h[L4 + 5]]))) =>
        {
            (None, L4 + 6)
        }
        _ => return Err(Fast::Other),
    };
    let src4: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
    let dst4: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
    if !snap.maybe_vip4(dst4) {
        return Err(Fast::Other);
    }
    let key = FlowKey {
        client: addr::mapped(src4),
        vip: addr::mapped(dst4),
        client_port: u16::from_be_bytes([h[L4], h[L4 + 1]]),
        vip_port: u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]),
        protocol: proto,
    };
    let slot = w.flows.find(&key).ok_or(Fast::NoFlow)?;
    if w.flows.expired_at(slot, now) {
        return Err(Fast::Other); // the general path's lookup removes it
    }
    let f = w.flows.get(slot);
    let backend = f.backend;
    let svc = snap
        .service_by_id(f.service)
        .filter(|s| s.matches(&key))
        .ok_or(Fast::Other)?;
    // Decided: from here on it is what the general path does with a live flow of a live
    // service (its errors, an unresolved next hop say, are its drops too).
    w.flows.touch(slot, tcp_flags, now);
    let endpoint = w.flows.endpoint(backend);
    let nat_v4 = svc.config.forwarding == ForwardingMode::Nat && addr::is_mapped(&endpoint.addr);
    let (Some(route), true) = (snap.backend_route(backend), nat_v4) else {
        // Another mode, or no route resolved for the backend: the general rewrite.
        let view = IpView {
            v6: false,
            l3: L3,
            total,
            l4: L4,
            proto,
            src: key.client,
            dst: key.vip,
        };
        return Ok(forward_out_of_line(
            pkt, &view, ingress, svc, backend, snap, w,
        ));
    };
    let dst_mac = match next_hop_mac(route, &w.neighbor_events) {
        Ok(m) => m,
        Err(r) => return Ok(Action::Drop(r)),
    };
    // NAT, as `forward::rewrite_endpoint` does it, on fixed offsets.
    let new_addr: [u8; 4] = endpoint.addr[12..].try_into().expect("4 bytes");
    let addr_delta = checksum::delta4(dst4, new_addr);
    h[L3 + ipv4::field::DST..L3 + ipv4::field::DST + 4].copy_from_slice(&new_addr);
    let at = L3 + ipv4::field::CHECKSUM;
    let c = checksum::apply(u16::from_be_bytes([h[at], h[at + 1]]), addr_delta);
    h[at..at + 2].copy_from_slice(&c.to_be_bytes());
    let old_port = key.vip_port;
    h[L4 + 2..L4 + 4].copy_from_slice(&endpoint.port.to_be_bytes());
    let c = u16::from_be_bytes([h[checksum_at], h[checksum_at + 1]]);
    let d = addr_delta + u32::from(!old_port) + u32::from(endpoint.port);
    let c = if tcp_flags.is_none() {
        checksum::udp_apply(c, d)
    } else {
        checksum::apply(c, d)
    };
    h[checksum_at..checksum_at + 2].copy_from_slice(&c.to_be_bytes());
    h[..6].copy_from_slice(&dst_mac.0);
    h[6..12].copy_from_slice(&route.src_mac.0);
    if let Some((s, b)) = w.traffic.of(svc.config.id, backend) {
        s.count_in(frame_len);
        b.count_in(frame_len);
    }
    Ok(Action::Forward {
        interface: route.interface,
    })
}

#[inline(never)]
fn classify<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    no_flow: bool,
) -> Result<Action, DropReason> {
    let Some(itf) = snap.interfaces.get(ingress as usize) else {
        return Err(DropReason::NotForUs);
    };
    let our_mac = itf.mac;
    let (l2, ethertype) = {
        let eth = EthernetFrame::new_checked(pkt.data())?;
        let dst = eth.dst();
        if dst != our_mac && !dst.is_multicast() {
            return Err(DropReason::NotOurMac);
        }
        (eth.header_len(), eth.ethertype())
    };
    match ethertype {
        ethernet::ETHERTYPE_ARP => arp_packet(
            pkt.data_mut(),
            l2,
            ingress,
            snap,
            our_mac,
            &w.neighbor_events,
        ),
        ethernet::ETHERTYPE_IPV4 => {
            let ip = parse_ipv4(&pkt.data()[l2..], l2)?;
            ip_packet(pkt, l2, ip, ingress, snap, w, now, no_flow)
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = parse_ipv6(&pkt.data()[l2..], l2)?;
            ip_packet(pkt, l2, ip, ingress, snap, w, now, no_flow)
        }
        _ => Err(DropReason::UnknownEtherType),
    }
}

/// ARP for one of our addresses or VIPs: a request is answered; a request or a reply teaches
/// us the sender (RFC 826's merge, limited to packets addressed to us and senders on the link).
fn arp_packet(
    frame: &mut [u8],
    l2: usize,
    ingress: u16,
    snap: &Snapshot,
    mac: MacAddr,
    events: &NeighborEvents,
) -> Result<Action, DropReason> {
    let arp = ArpPacket::new_checked(&frame[l2..])?;
    let target = crate::flow::addr_bytes(IpAddr::V4(arp.target_ip()));
    let ours = snap.local_interface(&target) == Some(ingress) || snap.is_vip(&target);
    if !ours {
        return Err(DropReason::ArpIgnored);
    }
    learn(
        snap,
        events,
        IpAddr::V4(arp.sender_ip()),
        arp.sender_mac(),
        ingress,
    );
    match arp.operation() {
        arp::OP_REQUEST => {
            respond::arp_reply(frame, l2, mac);
            Ok(Action::Reply)
        }
        arp::OP_REPLY => Ok(Action::Consumed),
        _ => Err(DropReason::ArpIgnored),
    }
}

/// Records that `addr` is at `mac`, if it is a plausible neighbour on `ingress`.
fn learn(snap: &Snapshot, events: &NeighborEvents, addr: IpAddr, mac: MacAddr, ingress: u16) {
    if !addr.is_unspecified()
        && !mac.is_multicast()
        && mac != MacAddr([0; 6])
        && snap.on_link(addr) == Some(ingress)
    {
        events.push(NeighborEvent::Learned {
            addr,
            mac,
            interface: ingress,
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

#[inline(always)]
fn parse_ipv4(b: &[u8], l3: usize) -> Result<IpView, DropReason> {
    let p = Ipv4Packet::new_checked(b)?;
    if p.has_options() {
        return Err(DropReason::IpOptions);
    }
    let header: &[u8; 20] = b[..20].try_into().expect("new_checked saw 20 bytes");
    if !crate::checksum::ipv4_header20_ok(header) {
        return Err(DropReason::BadChecksum);
    }
    if p.is_fragment() {
        return Err(DropReason::Fragment);
    }
    Ok(IpView {
        v6: false,
        l3,
        total: p.total_len(),
        l4: l3 + p.header_len(),
        proto: p.protocol(),
        src: p.src().to_ipv6_mapped().octets(),
        dst: p.dst().to_ipv6_mapped().octets(),
    })
}

fn parse_ipv6(b: &[u8], l3: usize) -> Result<IpView, DropReason> {
    let p = Ipv6Packet::new_checked(b)?;
    let upper = p.upper_layer()?;
    if upper.fragment {
        return Err(DropReason::Fragment);
    }
    Ok(IpView {
        v6: true,
        l3,
        total: p.total_len(),
        l4: l3 + upper.offset,
        proto: upper.protocol,
        src: p.src().octets(),
        dst: p.dst().octets(),
    })
}

/// Ports and flags of a TCP or UDP header at `ip.l4`.
#[inline(always)]
fn parse_l4(frame: &[u8], ip: &IpView) -> Result<L4, DropReason> {
    let b = &frame[ip.l4..ip.end()];
    match ip.proto {
        ipv4::PROTO_TCP => {
            let t = TcpSegment::new_checked(b)?;
            Ok(L4 {
                sport: t.src_port(),
                dport: t.dst_port(),
                tcp_flags: Some(t.flags()),
            })
        }
        ipv4::PROTO_UDP => {
            let u = UdpDatagram::new_checked(b)?;
            Ok(L4 {
                sport: u.src_port(),
                dport: u.dst_port(),
                tcp_flags: None,
            })
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

fn is_icmp(ip: &IpView) -> bool {
    ip.proto
        == if ip.v6 {
            ipv6::NEXT_ICMPV6
        } else {
            ipv4::PROTO_ICMP
        }
}

#[inline]
/// `no_flow`: the fast path already found that the flow table has no entry for this packet.
#[allow(clippy::too_many_arguments)]
fn ip_packet<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: IpView,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    no_flow: bool,
) -> Result<Action, DropReason> {
    if is_icmp(&ip) {
        let for_us = snap.is_vip(&ip.dst) || snap.local_interface(&ip.dst).is_some();
        let our_mac = snap.interfaces[ingress as usize].mac;
        return icmp_packet(pkt, l2, &ip, ingress, for_us, snap, w, now, our_mac);
    }
    let l4 = parse_l4(pkt.data(), &ip)?;
    if snap.maybe_vip(&ip.dst) {
        let key = FlowKey {
            client: ip.src,
            vip: ip.dst,
            client_port: l4.sport,
            vip_port: l4.dport,
            protocol: ip.proto,
        };
        // The common case first: an established flow names its service, so one lookup does.
        if let Some(slot) = (!no_flow).then(|| w.flows.lookup(&key, now)).flatten() {
            let (service, backend) = {
                let f = w.flows.get(slot);
                (f.service, f.backend)
            };
            match snap.service_by_id(service).filter(|s| s.matches(&key)) {
                Some(svc) => {
                    w.flows.touch(slot, l4.tcp_flags, now);
                    return forward_to_backend(pkt, l2, &ip, ingress, svc, backend, snap, w);
                }
                // Its service is gone (or the id now names another): schedule it afresh.
                None => w.flows.remove(slot),
            }
        }
        let skey = ServiceKey {
            protocol: ip.proto,
            vip: ip.dst,
            port: l4.dport,
        };
        if let Some(svc) = snap.service(&skey) {
            return new_flow(pkt, l2, &ip, &l4, key, ingress, svc, snap, w, now);
        }
        if snap.is_vip(&ip.dst) {
            return Err(DropReason::NoService);
        }
    }
    if snap.local_interface(&ip.dst).is_some() {
        return Err(DropReason::LocalUnsupported);
    }
    // Not for us: the reply of a NAT flow, from a backend to a client?
    nat_reply(pkt, &ip, &l4, snap, w, now)
}

/// Client to VIP, first packet of a flow: the scheduler picks a backend and the flow is kept.
#[allow(clippy::too_many_arguments)]
fn new_flow<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    l4: &L4,
    key: FlowKey,
    ingress: u16,
    svc: &Service,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Result<Action, DropReason> {
    let mode = svc.config.forwarding;
    if mode == ForwardingMode::Nat {
        // NAT flows live with the worker that owns the client (replies find them there).
        let o = owner(&ip.src, l4.sport, snap.workers);
        if o != w.index {
            return Ok(Action::Redirect(o));
        }
    }
    let state = match l4.tcp_flags {
        Some(f) => FlowState::for_new_tcp(f).ok_or(DropReason::TcpRstNoFlow)?,
        None => FlowState::Udp,
    };
    let cursor = w
        .cursors
        .get_mut(svc.config.id.0 as usize)
        .ok_or(DropReason::FlowInsertFailed)?;
    let pick = svc.scheduler.pick(
        &PickInput {
            backends: &svc.sched_backends,
            flow: &key,
            conns: &w.flows,
        },
        cursor,
    );
    let b = &svc.config.backends[pick.ok_or(DropReason::NoBackend)?];
    let endpoint = Endpoint {
        addr: crate::flow::addr_bytes(b.address),
        port: b.port,
    };
    w.flows.sweep(now, SWEEP_PER_NEW_FLOW);
    let new = NewFlow {
        key,
        service: svc.config.id,
        backend: b.id,
        endpoint,
        nat: mode == ForwardingMode::Nat,
        state,
    };
    w.flows
        .insert(new, now)
        .map_err(|_| DropReason::FlowInsertFailed)?;
    count_new_flow(w, svc.config.id, b.id);
    forward_to_backend(pkt, l2, ip, ingress, svc, b.id, snap, w)
}

/// [`forward_to_backend`] in a function of its own: the fast path's rare cases stay out of
/// its registers.
#[inline(never)]
fn forward_out_of_line<P: PacketBuf>(
    pkt: &mut P,
    ip: &IpView,
    ingress: u16,
    svc: &Service,
    backend: BackendId,
    snap: &Snapshot,
    w: &WorkerState,
) -> Action {
    forward_to_backend(pkt, ip.l3, ip, ingress, svc, backend, snap, w).unwrap_or_else(Action::Drop)
}

/// Client to VIP, to the flow's backend, in the service's forwarding mode.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_to_backend<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    ingress: u16,
    svc: &Service,
    backend: BackendId,
    snap: &Snapshot,
    w: &WorkerState,
) -> Result<Action, DropReason> {
    let len = pkt.data().len();
    let action = rewrite_for_backend(pkt, l2, ip, ingress, svc, backend, snap, w)?;
    // Counted once it is on its way (not when a neighbour was missing, say).
    if let Some((s, b)) = w.traffic.of(svc.config.id, backend) {
        s.count_in(len);
        b.count_in(len);
    }
    Ok(action)
}

/// The rewrite of [`forward_to_backend`] in the service's mode.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rewrite_for_backend<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    ingress: u16,
    svc: &Service,
    backend: BackendId,
    snap: &Snapshot,
    w: &WorkerState,
) -> Result<Action, DropReason> {
    let endpoint = w.flows.endpoint(backend);
    // By reference: copying the route out made the CPU stall on store forwarding.
    let resolved;
    let route = match snap.backend_route(backend) {
        Some(r) => r,
        None => {
            resolved = snap
                .route(addr_from_bytes(endpoint.addr))
                .ok_or(DropReason::NoRoute)?;
            &resolved
        }
    };
    match svc.config.forwarding {
        ForwardingMode::Nat => {
            forward::rewrite_endpoint(
                pkt.data_mut(),
                ip,
                Side::Dst,
                &endpoint.addr,
                endpoint.port,
                ip.end() - ip.l4,
            );
            send_via(pkt.data_mut(), route, &w.neighbor_events)
        }
        ForwardingMode::DirectRouting => {
            if !route.on_link {
                return Err(DropReason::DrBackendOffLink);
            }
            send_via(pkt.data_mut(), route, &w.neighbor_events)
        }
        ForwardingMode::Tunnel => tunnel(
            pkt,
            l2,
            ip,
            ingress,
            addr_from_bytes(endpoint.addr),
            route,
            snap,
            &w.neighbor_events,
        ),
    }
}

/// Encapsulates towards the backend, or answers "too big" when the result would not fit.
#[allow(clippy::too_many_arguments)]
fn tunnel<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    ingress: u16,
    backend: IpAddr,
    route: &Route,
    snap: &Snapshot,
    events: &NeighborEvents,
) -> Result<Action, DropReason> {
    let mtu = snap.interfaces[route.interface as usize].mtu;
    let overhead = forward::tunnel_overhead(ip.v6);
    if ip.total + overhead > usize::from(mtu) {
        let df = ip.v6 || pkt.data()[ip.l3 + ipv4::field::FLAGS_FRAG] & 0x40 != 0;
        if !df {
            return Err(DropReason::TooBigNoDf);
        }
        let vip = addr_from_bytes(ip.dst);
        let mac = snap.interfaces[ingress as usize].mac;
        return if respond::too_big(pkt, l2, ip, vip, mtu - overhead as u16, mac) {
            Ok(Action::Reply)
        } else {
            Err(DropReason::NoHeadroom)
        };
    }
    let src = route.tunnel_src.ok_or(DropReason::NoTunnelSource)?;
    let dst_mac = next_hop_mac(route, events)?;
    if !forward::encapsulate(pkt, l2, ip, src, backend) {
        return Err(DropReason::NoHeadroom);
    }
    forward::set_l2(pkt.data_mut(), dst_mac, route.src_mac);
    Ok(Action::Forward {
        interface: route.interface,
    })
}

fn count_new_flow(w: &WorkerState, service: crate::service::ServiceId, backend: BackendId) {
    if let Some((s, b)) = w.traffic.of(service, backend) {
        s.new_flows.add(1);
        b.new_flows.add(1);
    }
}

/// The next hop's MAC; when it is not known, the control side is told (it resolves it) and the
/// packet is dropped (counted as `neighbor_unresolved`).
#[inline(always)]
fn next_hop_mac(route: &Route, events: &NeighborEvents) -> Result<MacAddr, DropReason> {
    route.dst_mac.ok_or_else(|| {
        events.push(NeighborEvent::Unresolved {
            addr: route.next_hop,
            interface: route.interface,
        });
        DropReason::NeighborUnresolved
    })
}

/// Sets the Ethernet header for a resolved route and says where to send.
#[inline(always)]
fn send_via(
    frame: &mut [u8],
    route: &Route,
    events: &NeighborEvents,
) -> Result<Action, DropReason> {
    let dst_mac = next_hop_mac(route, events)?;
    forward::set_l2(frame, dst_mac, route.src_mac);
    Ok(Action::Forward {
        interface: route.interface,
    })
}

/// Sets the Ethernet header for `dst` via its next hop and says where to send.
fn send(
    frame: &mut [u8],
    snap: &Snapshot,
    dst: IpAddr,
    events: &NeighborEvents,
) -> Result<Action, DropReason> {
    send_via(frame, &snap.route(dst).ok_or(DropReason::NoRoute)?, events)
}

/// Backend to client (NAT): the source becomes the VIP and the service port again.
fn nat_reply<P: PacketBuf>(
    pkt: &mut P,
    ip: &IpView,
    l4: &L4,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Result<Action, DropReason> {
    let o = owner(&ip.dst, l4.dport, snap.workers);
    if o != w.index {
        // Only a NAT reply is ever owned elsewhere; if it is not one, the owner drops it.
        return Ok(Action::Redirect(o));
    }
    let rk = ReplyKey {
        protocol: ip.proto,
        backend: Endpoint {
            addr: ip.src,
            port: l4.sport,
        },
        client: ip.dst,
        client_port: l4.dport,
    };
    let slot = w.flows.lookup_reply(&rk, now).ok_or(DropReason::NotForUs)?;
    w.flows.touch(slot, l4.tcp_flags, now);
    let (service, backend, vip, vip_port) = {
        let f = w.flows.get(slot);
        (f.service, f.backend, f.key.vip, f.key.vip_port)
    };
    let len = pkt.data().len();
    forward::rewrite_endpoint(
        pkt.data_mut(),
        ip,
        Side::Src,
        &vip,
        vip_port,
        ip.end() - ip.l4,
    );
    let action = send(
        pkt.data_mut(),
        snap,
        addr_from_bytes(ip.dst),
        &w.neighbor_events,
    )?;
    if let Some((s, b)) = w.traffic.of(service, backend) {
        s.count_out(len);
        b.count_out(len);
    }
    Ok(action)
}

/// ICMP and ICMPv6: echo and neighbour solicitation for us and our VIPs; errors about flows.
#[allow(clippy::too_many_arguments)]
fn icmp_packet<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    ingress: u16,
    for_us: bool,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    our_mac: MacAddr,
) -> Result<Action, DropReason> {
    let (ty, code) = {
        let m = IcmpMessage::new_checked(&pkt.data()[ip.l4..ip.end()])?;
        (m.msg_type(), m.code())
    };
    let echo = if ip.v6 {
        icmp::v6::ECHO_REQUEST
    } else {
        icmp::v4::ECHO_REQUEST
    };
    if ty == echo && code == 0 {
        if !for_us {
            return Err(DropReason::NotForUs);
        }
        respond::echo_reply(pkt.data_mut(), ip, our_mac);
        return Ok(Action::Reply);
    }
    if ip.v6 && ty == icmp::v6::NEIGHBOR_SOLICIT {
        return neighbor_solicitation(pkt, ip, ingress, snap, our_mac, &w.neighbor_events);
    }
    if ip.v6 && ty == icmp::v6::NEIGHBOR_ADVERT {
        return neighbor_advertisement(pkt.data(), ip, ingress, snap, &w.neighbor_events);
    }
    let error = if ip.v6 {
        icmp::v6::is_error(ty)
    } else {
        icmp::v4::is_error(ty)
    };
    if !error {
        return Err(DropReason::IcmpUnsupported);
    }
    icmp_error(pkt, l2, ip, snap, w, now)
}

fn neighbor_solicitation<P: PacketBuf>(
    pkt: &mut P,
    ip: &IpView,
    ingress: u16,
    snap: &Snapshot,
    mac: MacAddr,
    events: &NeighborEvents,
) -> Result<Action, DropReason> {
    let f = pkt.data();
    let body = &f[ip.l4..ip.end()];
    // RFC 4861 §7.1.1: hop limit 255, code 0, at least 24 bytes.
    if f[ip.l3 + ipv6::field::HOP_LIMIT] != 255 || body.len() < 24 || body[1] != 0 {
        return Err(DropReason::NdpInvalid);
    }
    let target: [u8; 16] = body[8..24].try_into().expect("16");
    let ours = snap.local_interface(&target) == Some(ingress) || snap.is_vip(&target);
    if !ours {
        return Err(DropReason::ArpIgnored);
    }
    if let Some(m) = ndp_link_option(&body[24..], 1) {
        learn(snap, events, addr_from_bytes(ip.src), m, ingress);
    }
    if respond::neighbor_advert(pkt, ip, Ipv6Addr::from(target), mac) {
        Ok(Action::Reply)
    } else {
        Err(DropReason::NoHeadroom)
    }
}

/// A neighbour advertisement: its target is at the address in its target link-layer option.
fn neighbor_advertisement(
    frame: &[u8],
    ip: &IpView,
    ingress: u16,
    snap: &Snapshot,
    events: &NeighborEvents,
) -> Result<Action, DropReason> {
    let body = &frame[ip.l4..ip.end()];
    // RFC 4861 §7.1.2: hop limit 255, code 0, at least 24 bytes.
    if frame[ip.l3 + ipv6::field::HOP_LIMIT] != 255 || body.len() < 24 || body[1] != 0 {
        return Err(DropReason::NdpInvalid);
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&body[8..24]).expect("16"));
    match ndp_link_option(&body[24..], 2) {
        Some(m) => {
            learn(snap, events, IpAddr::V6(target), m, ingress);
            Ok(Action::Consumed)
        }
        None => Err(DropReason::NdpInvalid),
    }
}

/// An ICMP error quoting a packet of one of our flows: rewritten consistently with the flow
/// and sent where the flow's packets go.
///
/// - To a VIP, quoting a packet from the VIP (a backend's reply, dropped on the way to the
///   client): it goes to the flow's backend; in NAT the quoted source and the outer
///   destination become the backend.
/// - In NAT, not to us, quoting a packet from a client to a backend (dropped on the way to the
///   backend): it goes to the client, with the quoted destination (and the outer source, if it
///   was the backend) turned back into the VIP.
fn icmp_error<P: PacketBuf>(
    pkt: &mut P,
    l2: usize,
    ip: &IpView,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Result<Action, DropReason> {
    let inner_at = ip.l4 + icmp::HEADER_LEN;
    let (inner, l4_avail) =
        parse_quoted(&pkt.data()[..ip.end()], inner_at, ip.v6).ok_or(DropReason::IcmpNoFlow)?;
    let (sport, dport) = {
        let f = pkt.data();
        (
            u16::from_be_bytes([f[inner.l4], f[inner.l4 + 1]]),
            u16::from_be_bytes([f[inner.l4 + 2], f[inner.l4 + 3]]),
        )
    };
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
        if svc.config.forwarding == ForwardingMode::Nat {
            let o = owner(&key.client, key.client_port, snap.workers);
            if o != w.index {
                return Ok(Action::Redirect(o));
            }
        }
        let slot = w.flows.lookup(&key, now).ok_or(DropReason::IcmpNoFlow)?;
        let endpoint = w.flows.endpoint(w.flows.get(slot).backend);
        let backend = addr_from_bytes(endpoint.addr);
        return match svc.config.forwarding {
            ForwardingMode::Nat => {
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
                let dst = endpoint.addr;
                fix_icmp_checksum(f, ip, &ip.src, &dst);
                send(f, snap, backend, &w.neighbor_events)
            }
            ForwardingMode::DirectRouting => {
                let route = snap.route(backend).ok_or(DropReason::NoRoute)?;
                if !route.on_link {
                    return Err(DropReason::DrBackendOffLink);
                }
                send_via(pkt.data_mut(), &route, &w.neighbor_events)
            }
            ForwardingMode::Tunnel => {
                let route = snap.route(backend).ok_or(DropReason::NoRoute)?;
                let src = route.tunnel_src.ok_or(DropReason::NoTunnelSource)?;
                let dst_mac = next_hop_mac(&route, &w.neighbor_events)?;
                if !forward::encapsulate(pkt, l2, ip, src, backend) {
                    return Err(DropReason::NoHeadroom);
                }
                forward::set_l2(pkt.data_mut(), dst_mac, route.src_mac);
                Ok(Action::Forward {
                    interface: route.interface,
                })
            }
        };
    }
    // About a client's packet to a backend (NAT): the client is the quoted source.
    let o = owner(&inner.src, sport, snap.workers);
    if o != w.index {
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
    let slot = w
        .flows
        .lookup_reply(&rk, now)
        .ok_or(DropReason::IcmpNoFlow)?;
    let key = w.flows.get(slot).key;
    let f = pkt.data_mut();
    forward::rewrite_endpoint(f, &inner, Side::Dst, &key.vip, key.vip_port, l4_avail);
    let mut outer_src = ip.src;
    if ip.src == inner.dst {
        forward::rewrite_addr(f, ip, Side::Src, &key.vip);
        outer_src = key.vip;
    }
    fix_icmp_checksum(f, ip, &outer_src, &ip.dst);
    send(f, snap, addr_from_bytes(ip.dst), &w.neighbor_events)
}

/// The packet quoted in an ICMP error at `at`: its header must be whole and at least the
/// eight bytes of ports that follow it. Returns the view and how many transport bytes are
/// quoted.
fn parse_quoted(frame: &[u8], at: usize, v6: bool) -> Option<(IpView, usize)> {
    let q = frame.get(at..)?;
    let (view, hl) = if v6 {
        if q.len() < ipv6::HEADER_LEN || q[0] >> 4 != 6 {
            return None;
        }
        let proto = q[ipv6::field::NEXT];
        (
            IpView {
                v6: true,
                l3: at,
                total: q.len(),
                l4: at + ipv6::HEADER_LEN,
                proto,
                src: q[8..24].try_into().ok()?,
                dst: q[24..40].try_into().ok()?,
            },
            ipv6::HEADER_LEN,
        )
    } else {
        if q.len() < ipv4::MIN_HEADER_LEN || q[0] >> 4 != 4 {
            return None;
        }
        let hl = usize::from(q[0] & 0x0f) * 4;
        if hl < ipv4::MIN_HEADER_LEN {
            return None;
        }
        let v4 = |b: &[u8]| {
            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).expect("4"))
                .to_ipv6_mapped()
                .octets()
        };
        (
            IpView {
                v6: false,
                l3: at,
                total: q.len(),
                l4: at + hl,
                proto: q[ipv4::field::PROTO],
                src: v4(&q[12..16]),
                dst: v4(&q[16..20]),
            },
            hl,
        )
    };
    if !matches!(view.proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP) || q.len() < hl + 8 {
        return None;
    }
    Some((view, q.len() - hl))
}

/// Recomputes an ICMP(v6) checksum over the whole message after its quote was rewritten.
fn fix_icmp_checksum(frame: &mut [u8], ip: &IpView, src: &[u8; 16], dst: &[u8; 16]) {
    let m = &mut frame[ip.l4..ip.end()];
    m[icmp::CHECKSUM_OFFSET..icmp::CHECKSUM_OFFSET + 2].copy_from_slice(&[0, 0]);
    let c = if ip.v6 {
        let pseudo = crate::checksum::pseudo_v6(
            Ipv6Addr::from(*src),
            Ipv6Addr::from(*dst),
            ipv6::NEXT_ICMPV6,
            m.len() as u32,
        );
        crate::checksum::transport(pseudo, m)
    } else {
        crate::checksum::internet(m)
    };
    m[icmp::CHECKSUM_OFFSET..icmp::CHECKSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
