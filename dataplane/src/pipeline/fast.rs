//! The packet a load balancer sees most, on a straight line ([`established_v4`], and
//! [`established_v6`] for IPv6), and the warming of a burst's cache lines before it is
//! processed ([`warm_burst`]).

use super::{Action, Ctx, WorkerState, egress};
use crate::addr;
use crate::checksum;
use crate::drop_reason::DropReason;
use crate::flow::FlowKey;
use crate::forward::{self, IpView, Tunnel};
use crate::neighbor::NeighborEvents;
use crate::packet::PacketBuf;
use crate::service::{BackendId, ForwardingMode};
use crate::snapshot::{Route, Service, Snapshot};
use crate::wire::{ethernet, ipv4, ipv6};

/// Bytes of flows and index buckets ([`FlowTable::touched_bytes`]) above which a worker warms
/// a whole burst ([`warm_burst`]) before processing it: about what L2 keeps beside the packets
/// (8192 flows of a table sized to them; 4096 flows in the default table of a million, whose
/// buckets are all apart). Below it the extra lookup only costs time.
///
/// [`FlowTable::touched_bytes`]: crate::flow::FlowTable::touched_bytes
pub const WARM_ABOVE_BYTES: usize = 384 << 10;

/// The most packets a worker takes in one burst (and so the most [`warm_burst`] warms).
pub const MAX_BURST: usize = 256;

/// Warms the cache for [`process`] of a burst of frames (at most `MAX_BURST`), in two passes
/// of prefetches: the index buckets of the flows of its client packets to VIPs (and of the
/// NAT flows of the others, which may be replies), then the flows those buckets name.
/// Prefetches retire at once, so the burst's cache misses overlap instead of each being
/// waited for in turn when the burst is then processed. `hints[i]` is what the first pass
/// hashed for frame i ([`process_hinted`](super::process_hinted) looks it up without hashing
/// again); returns how many frames it read.
#[inline]
pub fn warm_burst<'a>(
    frames: impl Iterator<Item = &'a [u8]>,
    snap: &Snapshot,
    w: &WorkerState,
    hints: &mut [Option<Warmed>; MAX_BURST],
) -> usize {
    let mut n = 0;
    for (frame, hint) in frames.zip(hints.iter_mut()) {
        *hint = warm(frame, snap, w);
        n += 1;
    }
    for h in hints[..n].iter().flatten() {
        match *h {
            Warmed::Flow(h) => w.flows.prefetch_flows(h),
            Warmed::Reply(h) => w.flows.prefetch_reply_flows(h),
        }
    }
    n
}

/// The first pass of [`warm_burst`]: if `frame` looks like a client's TCP or UDP packet to a
/// VIP, the index bucket of its flow starts loading and its hash is returned. A quick read of
/// the headers without the checks of `process`, which decides everything.
#[inline]
pub(super) fn warm(frame: &[u8], snap: &Snapshot, w: &WorkerState) -> Option<Warmed> {
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
    let key = match ether_type {
        ethernet::ETHERTYPE_IPV4 => {
            let h: &[u8; 20] = frame.get(at..at + 20)?.try_into().ok()?;
            if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return None; // a fragment
            }
            let l4 = at + usize::from(h[0] & 0x0f) * 4;
            ipv4_flow_key(h, frame.get(l4..l4 + 4)?.try_into().ok()?)
        }
        ethernet::ETHERTYPE_IPV6 => {
            let h = frame.get(at..at + 40)?;
            let a = |i: usize| -> [u8; 16] { h[i..i + 16].try_into().expect("16 bytes") };
            FlowKey {
                client: a(8),
                vip: a(24),
                client_port: be16(at + 40)?,
                vip_port: be16(at + 42)?,
                protocol: h[6],
            }
        }
        _ => return None,
    };
    if key.protocol != ipv4::PROTO_TCP && key.protocol != ipv4::PROTO_UDP {
        return None;
    }
    if !snap.maybe_vip(&key.vip) {
        // Perhaps a NAT reply: read as a client's packet, its source is the backend and
        // its destination the client.
        let hash = w.flows.hash_reply(&crate::flow::ReplyKey {
            protocol: key.protocol,
            backend: crate::flow::Endpoint {
                addr: key.client,
                port: key.client_port,
            },
            client: key.vip,
            client_port: key.vip_port,
        });
        w.flows.prefetch_reply_index(hash);
        return Some(Warmed::Reply(hash));
    }
    let hash = w.flows.hash_of(&key);
    w.flows.prefetch_index(hash);
    Some(Warmed::Flow(hash))
}

/// What the first pass of [`warm_burst`] started loading: an index bucket of the flow index
/// or of the reply index, by the hash of the key it read from the frame. The fast paths read
/// the same key from the same bytes, so they look it up by this hash instead of hashing again
/// (a hint of the other kind is not used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmed {
    Flow(u64),
    Reply(u64),
}

/// The flow key of a client's IPv4 packet, read from its fixed 20-byte header and the four
/// bytes of ports after it: the one reader of these offsets for the fast path (which looks the
/// key up) and the warm pass (which prefetches its bucket). No check here: each caller decides
/// what it has verified.
#[inline(always)]
fn ipv4_flow_key(ip: &[u8; 20], ports: &[u8; 4]) -> FlowKey {
    FlowKey {
        client: addr::mapped([ip[12], ip[13], ip[14], ip[15]]),
        vip: addr::mapped([ip[16], ip[17], ip[18], ip[19]]),
        client_port: u16::from_be_bytes([ports[0], ports[1]]),
        vip_port: u16::from_be_bytes([ports[2], ports[3]]),
        protocol: ip[9],
    }
}

/// The second case of [`established_v4`]: the reply of an established NAT flow (backend to
/// client), with the general path's checks in its order (not ours, owned here, a live flow, a
/// client behind a gateway route) and its rewrite (`nat::reply`: the source becomes the VIP
/// and its port). `h` is the frame's head, verified by the caller; anything else returns
/// before anything is changed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nat_reply_v4(
    h: &mut [u8; FAST_HEAD],
    frame_len: usize,
    proto: u8,
    tcp_flags: Option<u8>,
    checksum_at: usize,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    hint: Option<Warmed>,
) -> Result<Action, Fast> {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
    let src4: [u8; 4] = h[L3 + 12..L3 + 16].try_into().expect("4 bytes");
    let dst4: [u8; 4] = h[L3 + 16..L3 + 20].try_into().expect("4 bytes");
    let client = addr::mapped(dst4);
    let backend_port = u16::from_be_bytes([h[L4], h[L4 + 1]]);
    let client_port = u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]);
    if snap.is_local(&client) || super::nat_owner(snap, &client, client_port) != w.index {
        return Err(Fast::Other);
    }
    let rk = crate::flow::ReplyKey {
        protocol: proto,
        backend: crate::flow::Endpoint {
            addr: addr::mapped(src4),
            port: backend_port,
        },
        client,
        client_port,
    };
    let found = match hint {
        Some(Warmed::Reply(hash)) => w.flows.find_reply_hashed(&rk, hash),
        _ => w.flows.find_reply(&rk),
    };
    let slot = found.ok_or(Fast::Other)?;
    if w.flows.expired_at(slot, now) {
        return Err(Fast::Other); // the general path's lookup removes it
    }
    let route = snap.gateway_route4(dst4).ok_or(Fast::Other)?;
    // Decided: what `nat::reply` does with a live flow.
    w.flows.touch(slot, tcp_flags, now);
    let f = w.flows.get(slot);
    let (service, backend, vip, vip_port) = (f.service, f.backend, f.key.vip, f.key.vip_port);
    // The rewrite of `established_v4` on the source's offsets.
    checksum::nat4_rewrite(
        h,
        L3 + ipv4::field::SRC,
        vip[12..].try_into().expect("4 bytes"),
        L4,
        vip_port.to_be_bytes(),
        (L3 + ipv4::field::CHECKSUM, checksum_at, tcp_flags.is_none()),
    );
    match egress::next_hop_macs(route, &w.neighbor_events) {
        Ok(m) => h[..12].copy_from_slice(m),
        Err(r) => return Ok(Action::Drop(r)),
    }
    if let Some((s, b)) = w.traffic.of(service, backend) {
        s.count_out(frame_len);
        b.count_out(frame_len);
    }
    Ok(Action::Forward {
        interface: route.interface,
    })
}

/// Why [`established_v4`] (or [`established_v6`]) left a packet to the general path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fast {
    /// The packet is a client's to a VIP whose flow table has no entry for it: the general
    /// path need not look again (a new flow's first packet).
    NoFlow,
    /// Anything else: the general path decides from scratch.
    Other,
}

/// The flow in `slot`, found for `key`, if the general path would forward the packet on it:
/// not expired, not a new connection on a closing flow's tuple, its service still there and
/// still its own. Then it is touched (the packet's flags move its state) and its service and
/// backend are returned; otherwise nothing is changed. For both families.
#[inline(always)]
fn live_flow<'s>(
    slot: u32,
    key: &FlowKey,
    tcp_flags: Option<u8>,
    snap: &'s Snapshot,
    w: &mut WorkerState,
    now: u32,
) -> Result<(&'s Service, BackendId), Fast> {
    if w.flows.expired_at(slot, now) {
        return Err(Fast::Other); // the general path's lookup removes it
    }
    let f = w.flows.get(slot);
    if let Some(flags) = tcp_flags
        && super::flow::reuses_tuple(flags, f.state)
    {
        return Err(Fast::Other); // a new connection on a closing flow's tuple
    }
    let backend = f.backend;
    let svc = snap
        .service_by_id(f.service)
        .filter(|s| s.matches(key))
        .ok_or(Fast::Other)?;
    w.flows.touch(slot, tcp_flags, now);
    Ok((svc, backend))
}

/// Bytes of a frame the fast path reads and writes: Ethernet, a 20-byte IPv4 header and the
/// 20 bytes of a TCP header (a UDP packet this short takes the general path).
const FAST_HEAD: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + 20;

/// The packet a load balancer sees most: an untagged IPv4 TCP or UDP packet without options,
/// to our MAC, of a live flow of a live service. Its checks are the general path's, on a
/// straight line and without building what that case does not need; the forwarding is the
/// general path's own. Anything else, or any doubt (a bad checksum, no flow or an expired one,
/// its service gone), returns before anything is changed, and the general path decides.
/// `fuzz::fast_path_equals_general_path` holds the two to the same results.
///
/// Its answer is a `Result` with nothing in the error but why, so that a packet the fast
/// path forwarded costs one compare of the answer's tag (a `Fast` that also carried the
/// `Action` cost seven instructions to take apart).
#[inline(always)]
pub(super) fn established_v4<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    hint: Option<Warmed>,
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
    // To our MAC, from a unicast one (the group bit of the source: its first byte's lowest).
    if h[..6] != itf.mac.0 || h[6] & 1 != 0 || h[12..14] != ethernet::ETHERTYPE_IPV4.to_be_bytes() {
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
    let dst4: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
    if !snap.maybe_vip4(dst4) {
        return nat_reply_v4(
            h,
            frame_len,
            proto,
            tcp_flags,
            checksum_at,
            snap,
            w,
            now,
            hint,
        );
    }
    let key = ipv4_flow_key(ip, h[L4..L4 + 4].try_into().expect("4 bytes"));
    let hash = match hint {
        Some(Warmed::Flow(hash)) => hash,
        _ => w.flows.hash_of(&key),
    };
    let Some(slot) = w.flows.find_hashed(&key, hash) else {
        return new_flow_v4(pkt, ingress, snap, w, now, hash);
    };
    let (svc, backend) = live_flow(slot, &key, tcp_flags, snap, w, now)?;
    // Decided: from here on it is what the general path does with a live flow of a live
    // service (its errors, an unresolved next hop say, are its drops too).
    let endpoint = w.flows.endpoint(backend);
    let mode = svc.config.forwarding;
    let nat_v4 = mode == ForwardingMode::Nat && addr::is_mapped(&endpoint.addr);
    let route = match snap.backend_route(backend) {
        // DR on the link sends the packet as it came: only its Ethernet header changes, below.
        Some(r) if nat_v4 || mode == ForwardingMode::DirectRouting && r.on_link => r,
        // TUN, DR off the link, or no route resolved for the backend: out of this function's
        // registers.
        _ => {
            let cx = Ctx {
                snap,
                w,
                ingress,
                now,
            };
            return Ok(other_modes_v4(pkt, &cx, proto, total, svc, backend));
        }
    };
    if nat_v4 {
        // NAT, as `forward::rewrite_endpoint` does it, on fixed offsets.
        checksum::nat4_rewrite(
            h,
            L3 + ipv4::field::DST,
            endpoint.addr[12..].try_into().expect("4 bytes"),
            L4 + 2,
            endpoint.port.to_be_bytes(),
            (L3 + ipv4::field::CHECKSUM, checksum_at, tcp_flags.is_none()),
        );
    }
    // Rewritten first: a packet held for its next hop needs only its Ethernet header.
    match egress::next_hop_macs(route, &w.neighbor_events) {
        Ok(m) => h[..12].copy_from_slice(m),
        Err(r) => return Ok(Action::Drop(r)),
    }
    if let Some((s, b)) = w.traffic.of(svc.config.id, backend) {
        s.count_in(frame_len);
        b.count_in(frame_len);
    }
    Ok(Action::Forward {
        interface: route.interface,
    })
}

/// TUN of a client's IPv4 packet (a TCP or UDP one, its head verified) to an IPv4 backend
/// through its prepared outer headers `t` (the caller checked that the packet fits them):
/// `forward::encapsulate`'s bytes without its general cases (a VLAN tag, a change of family),
/// then the next hop. `total` is the inner packet's length (Ethernet padding is dropped first).
#[inline(always)]
fn tunnel_v4<P: PacketBuf>(
    pkt: &mut P,
    total: usize,
    t: &forward::Outer4Template,
    route: &Route,
    events: &NeighborEvents,
) -> Result<(), DropReason> {
    const L2: usize = ethernet::HEADER_LEN;
    let n = t.overhead();
    if !pkt.set_len(L2 + total) || !pkt.prepend(n) {
        return Err(DropReason::NoHeadroom);
    }
    let f = pkt.data_mut();
    // The old Ethernet header and the inner IP and ports, now behind the room made for the
    // outer headers (at most 32 bytes: a verified head is in reach).
    let Some(old) = f.get(n..n + L2 + ipv4::MIN_HEADER_LEN + 4) else {
        return Err(DropReason::NoHeadroom);
    };
    let macs: [u8; 12] = old[..12].try_into().expect("12 bytes");
    let ip = &old[L2..];
    let (tos, df) = (
        ip[ipv4::field::TOS],
        ip[ipv4::field::FLAGS_FRAG] & 0x40 != 0,
    );
    let sport = match t.tunnel {
        Tunnel::Gue { .. } => forward::gue_source_port_of(
            &addr::mapped(ip[12..16].try_into().expect("4 bytes")),
            &addr::mapped(ip[16..20].try_into().expect("4 bytes")),
            ip[20..24].try_into().expect("4 bytes"),
            ip[9],
        ),
        _ => 0,
    };
    let Some(head) = f.get_mut(..L2 + 32) else {
        return Err(DropReason::NoHeadroom);
    };
    // The Ethernet header moves to the front (its EtherType is IPv4's, as before).
    head[..12].copy_from_slice(&macs);
    head[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    t.write(
        (&mut head[L2..]).try_into().expect("32 bytes"),
        total,
        tos,
        df,
        sport,
    );
    // Encapsulated first: a packet held for the next hop needs only its Ethernet header.
    let dst_mac = egress::next_hop_mac(route, events)?;
    forward::set_l2(f, dst_mac, route.src_mac);
    Ok(())
}

/// The rest of [`established_v4`] for a flow that is neither NAT to an IPv4 backend nor DR
/// on the link, both with a resolved route: TUN from IPv4 to IPv4 on fixed offsets, as the
/// general forwarding does it; anything else (no route resolved, a tunnel's packet too big,
/// an IPv6 backend, DR off the link) by the general forwarding. The flow is touched already.
#[inline(never)]
fn other_modes_v4<P: PacketBuf>(
    pkt: &mut P,
    cx: &Ctx<'_>,
    proto: u8,
    total: usize,
    svc: &Service,
    backend: BackendId,
) -> Action {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
    let frame_len = pkt.data().len();
    let forwarded = |route: &Route| {
        if let Some((s, b)) = cx.w.traffic.of(svc.config.id, backend) {
            s.count_in(frame_len);
            b.count_in(frame_len);
        }
        Action::Forward {
            interface: route.interface,
        }
    };
    let endpoint = cx.w.flows.endpoint(backend);
    let v4_backend = addr::is_mapped(&endpoint.addr);
    // The caller verified the head; the client and the VIP are read from it again rather
    // than passed (a flow key in memory cost the NAT path above 20 instructions a packet),
    // and only where they are needed.
    let head = |pkt: &P| {
        let h = pkt.data().get(..FAST_HEAD)?;
        Some((
            addr::mapped(h[L3 + 12..L3 + 16].try_into().expect("4 bytes")),
            addr::mapped(h[L3 + 16..L3 + 20].try_into().expect("4 bytes")),
            h[L3 + ipv4::field::TOS],
            h[L3 + ipv4::field::FLAGS_FRAG],
            <[u8; 4]>::try_from(&h[L4..L4 + 4]).expect("4 bytes"),
        ))
    };
    match (cx.snap.backend_route(backend), svc.config.forwarding) {
        (Some(route), ForwardingMode::Tunnel)
            if let Some(t) = cx.snap.tunnel4(backend)
                && v4_backend
                && endpoint.addr[12..] == t.dst
                && t.tunnel == svc.config.options.tunnel
                && total <= usize::from(t.max_inner) =>
        {
            tunnel_v4(pkt, total, t, route, &cx.w.neighbor_events)
                .map_or_else(Action::Drop, |()| forwarded(route))
        }
        _ => {
            let Some((client, vip, ..)) = head(pkt) else {
                return Action::Drop(DropReason::Truncated);
            };
            let view = IpView {
                v6: false,
                l3: L3,
                total,
                l4: L4,
                proto,
                src: client,
                dst: vip,
            };
            egress::forward_out_of_line(pkt, cx, &view, svc, backend)
        }
    }
}

/// Bytes of a frame [`established_v6`] reads and writes through one fixed array: Ethernet, the
/// 40-byte IPv6 header and the 8 of a UDP header (the shortest IPv6 frame a client sends is
/// 62 bytes; TCP's flags and checksum, further on, are read and written apart).
const FAST_HEAD6: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + 8;

/// [`established_v4`] for IPv6: an untagged IPv6 TCP or UDP packet without extension headers,
/// to our MAC, of a live flow of a live service, with the general path's checks in its order
/// and, for NAT to an IPv6 backend with a resolved route, its rewrite on fixed offsets (the
/// destination and its port; IPv6 has no header checksum, the transport's is updated). Other
/// modes take the general forwarding; anything else returns before anything is changed.
#[inline(never)]
pub(super) fn established_v6<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    hint: Option<Warmed>,
) -> Result<Action, Fast> {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv6::HEADER_LEN;
    let itf = snap
        .interfaces
        .get(usize::from(ingress))
        .ok_or(Fast::Other)?;
    let frame = pkt.data_mut();
    let frame_len = frame.len();
    // The transport's own fields first: TCP's flags and data offset lie beyond the array.
    let proto = *frame.get(L3 + 6).ok_or(Fast::Other)?;
    let tcp = match proto {
        ipv4::PROTO_TCP => Some(frame.get(L4 + 12..L4 + 14).ok_or(Fast::Other)?),
        _ => None,
    }
    .map(|t| (t[0] >> 4, t[1]));
    let h: &mut [u8; FAST_HEAD6] = frame
        .get_mut(..FAST_HEAD6)
        .and_then(|h| h.try_into().ok())
        .ok_or(Fast::Other)?;
    if h[..6] != itf.mac.0 || h[6] & 1 != 0 || h[12..14] != ethernet::ETHERTYPE_IPV6.to_be_bytes() {
        return Err(Fast::Other);
    }
    // Version 6, a payload that fits, TCP or UDP right after the header.
    let l4_len = usize::from(u16::from_be_bytes([h[L3 + 4], h[L3 + 5]]));
    if h[L3] >> 4 != 6 || L4 + l4_len > frame_len {
        return Err(Fast::Other);
    }
    let (tcp_flags, checksum_at) = match (proto, tcp) {
        (ipv4::PROTO_TCP, Some((offset, flags)))
            if l4_len >= 20 && offset >= 5 && l4_len >= usize::from(offset) * 4 =>
        {
            (Some(flags), L4 + 16)
        }
        (ipv4::PROTO_UDP, _)
            if l4_len >= 8
                && (8..=l4_len)
                    .contains(&usize::from(u16::from_be_bytes([h[L4 + 4], h[L4 + 5]]))) =>
        {
            (None, L4 + 6)
        }
        _ => return Err(Fast::Other),
    };
    let addr16 = |at: usize| -> [u8; 16] { h[at..at + 16].try_into().expect("16 bytes") };
    let vip = addr16(L3 + ipv6::field::DST);
    if !snap.maybe_vip(&vip) {
        return nat_reply_v6(pkt, frame_len, tcp_flags, checksum_at, snap, w, now, hint);
    }
    let key = FlowKey {
        client: addr16(L3 + ipv6::field::SRC),
        vip,
        client_port: u16::from_be_bytes([h[L4], h[L4 + 1]]),
        vip_port: u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]),
        protocol: proto,
    };
    let found = match hint {
        Some(Warmed::Flow(hash)) => w.flows.find_hashed(&key, hash),
        _ => w.flows.find(&key),
    };
    let slot = found.ok_or(Fast::NoFlow)?;
    let (svc, backend) = live_flow(slot, &key, tcp_flags, snap, w, now)?;
    // Decided: from here on it is what the general path does with a live flow of a live
    // service (its errors, an unresolved next hop say, are its drops too).
    let endpoint = w.flows.endpoint(backend);
    let nat_v6 = svc.config.forwarding == ForwardingMode::Nat && !addr::is_mapped(&endpoint.addr);
    let (Some(route), true) = (snap.backend_route(backend), nat_v6) else {
        let view = IpView {
            v6: true,
            l3: L3,
            total: ipv6::HEADER_LEN + l4_len,
            l4: L4,
            proto,
            src: key.client,
            dst: key.vip,
        };
        let cx = Ctx {
            snap,
            w,
            ingress,
            now,
        };
        return Ok(egress::forward_out_of_line(pkt, &cx, &view, svc, backend));
    };
    // NAT, as `forward::rewrite_endpoint` does it for IPv6, on fixed offsets.
    let addr_delta = checksum::delta16(&vip, &endpoint.addr);
    h[L3 + ipv6::field::DST..L3 + ipv6::field::DST + 16].copy_from_slice(&endpoint.addr);
    h[L4 + 2..L4 + 4].copy_from_slice(&endpoint.port.to_be_bytes());
    let dst_mac = egress::next_hop_macs(route, &w.neighbor_events);
    if let Ok(m) = dst_mac {
        h[..12].copy_from_slice(m);
    }
    // Within the frame: the transport header was checked to fit.
    let Some(at) = pkt.data_mut().get_mut(checksum_at..checksum_at + 2) else {
        return Ok(Action::Drop(DropReason::Truncated));
    };
    let c = u16::from_be_bytes([at[0], at[1]]);
    let d = addr_delta + u32::from(!key.vip_port) + u32::from(endpoint.port);
    let c = if tcp_flags.is_none() {
        checksum::udp_apply(c, d)
    } else {
        checksum::apply(c, d)
    };
    at.copy_from_slice(&c.to_be_bytes());
    if let Err(r) = dst_mac {
        return Ok(Action::Drop(r));
    }
    if let Some((s, b)) = w.traffic.of(svc.config.id, backend) {
        s.count_in(frame_len);
        b.count_in(frame_len);
    }
    Ok(Action::Forward {
        interface: route.interface,
    })
}

/// The first packet of a flow to a service, verified by [`established_v4`]: the general path
/// would parse it again to find what is known here (its headers are sound, it is a TCP or UDP
/// packet to a VIP, the table has no flow for it), so the service is looked up and the new
/// flow made by the general path's own `flow::new_flow`. A VIP without the service returns
/// [`Fast::NoFlow`] (the general path answers it, a closed port say). `hash` is the lookup's
/// hash of the flow key, for the insert.
#[inline(never)]
fn new_flow_v4<P: PacketBuf>(
    pkt: &mut P,
    ingress: u16,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    hash: u64,
) -> Result<Action, Fast> {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
    // What the caller found is read from the verified head again rather than passed: more
    // arguments at the call cost the established path 16-30 instructions a packet.
    let h: &[u8; FAST_HEAD] = pkt
        .data()
        .get(..FAST_HEAD)
        .and_then(|h| h.try_into().ok())
        .ok_or(Fast::Other)?;
    let key = ipv4_flow_key(
        h[L3..L4].try_into().expect("20 bytes"),
        h[L4..L4 + 4].try_into().expect("4 bytes"),
    );
    let total = usize::from(u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]));
    let tcp_flags = (key.protocol == ipv4::PROTO_TCP).then_some(h[L4 + 13]);
    // From the header's bytes and as one number (`mapped_wide`), not from `key`: read back
    // out of the key in memory, the VIP's words waited on the narrower stores that had built
    // it (store forwarding fails).
    let svc = snap
        .service(&crate::snapshot::ServiceKey {
            protocol: h[L3 + 9],
            vip: addr::mapped_wide(h[L3 + 16..L3 + 20].try_into().expect("4 bytes")),
            port: u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]),
        })
        .ok_or(Fast::NoFlow)?;
    let p = super::Ip {
        l2: L3,
        ip: IpView {
            v6: false,
            l3: L3,
            total,
            l4: L4,
            proto: key.protocol,
            src: key.client,
            dst: key.vip,
        },
    };
    let l4 = super::L4 {
        sport: key.client_port,
        dport: key.vip_port,
        tcp_flags,
    };
    let mut cx = Ctx {
        snap,
        w,
        ingress,
        now,
    };
    Ok(super::flow::new_flow(pkt, &mut cx, &p, &l4, key, hash, svc).unwrap_or_else(Action::Drop))
}

/// [`nat_reply_v4`] for IPv6: the reply of an established NAT flow, from an IPv6 backend to a
/// client behind a gateway route, with the general path's checks in its order and its rewrite
/// (the source becomes the VIP and its port; the transport checksum follows). The caller
/// verified the head (`FAST_HEAD6` bytes, TCP or UDP right after the header, its length).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn nat_reply_v6<P: PacketBuf>(
    pkt: &mut P,
    frame_len: usize,
    tcp_flags: Option<u8>,
    checksum_at: usize,
    snap: &Snapshot,
    w: &mut WorkerState,
    now: u32,
    hint: Option<Warmed>,
) -> Result<Action, Fast> {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv6::HEADER_LEN;
    let h: &mut [u8; FAST_HEAD6] = pkt
        .data_mut()
        .get_mut(..FAST_HEAD6)
        .and_then(|h| h.try_into().ok())
        .ok_or(Fast::Other)?;
    let addr16 = |at: usize| -> [u8; 16] { h[at..at + 16].try_into().expect("16 bytes") };
    let (backend_addr, client) = (addr16(L3 + ipv6::field::SRC), addr16(L3 + ipv6::field::DST));
    let backend_port = u16::from_be_bytes([h[L4], h[L4 + 1]]);
    let client_port = u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]);
    if snap.is_local(&client) || super::nat_owner(snap, &client, client_port) != w.index {
        return Err(Fast::Other);
    }
    let rk = crate::flow::ReplyKey {
        protocol: h[L3 + 6],
        backend: crate::flow::Endpoint {
            addr: backend_addr,
            port: backend_port,
        },
        client,
        client_port,
    };
    let found = match hint {
        Some(Warmed::Reply(hash)) => w.flows.find_reply_hashed(&rk, hash),
        _ => w.flows.find_reply(&rk),
    };
    let slot = found.ok_or(Fast::Other)?;
    if w.flows.expired_at(slot, now) {
        return Err(Fast::Other); // the general path's lookup removes it
    }
    let route = snap.gateway_route6(&client).ok_or(Fast::Other)?;
    // Decided: what `nat::reply` does with a live flow.
    w.flows.touch(slot, tcp_flags, now);
    let f = w.flows.get(slot);
    let (service, backend, vip, vip_port) = (f.service, f.backend, f.key.vip, f.key.vip_port);
    let addr_delta = checksum::delta16(&backend_addr, &vip);
    h[L3 + ipv6::field::SRC..L3 + ipv6::field::SRC + 16].copy_from_slice(&vip);
    h[L4..L4 + 2].copy_from_slice(&vip_port.to_be_bytes());
    let dst_mac = egress::next_hop_macs(route, &w.neighbor_events);
    if let Ok(m) = dst_mac {
        h[..12].copy_from_slice(m);
    }
    // Within the frame: the transport header was checked to fit.
    let Some(at) = pkt.data_mut().get_mut(checksum_at..checksum_at + 2) else {
        return Ok(Action::Drop(DropReason::Truncated));
    };
    let c = u16::from_be_bytes([at[0], at[1]]);
    let d = addr_delta + u32::from(!backend_port) + u32::from(vip_port);
    let c = if tcp_flags.is_none() {
        checksum::udp_apply(c, d)
    } else {
        checksum::apply(c, d)
    };
    at.copy_from_slice(&c.to_be_bytes());
    if let Err(r) = dst_mac {
        return Ok(Action::Drop(r));
    }
    if let Some((s, b)) = w.traffic.of(service, backend) {
        s.count_out(frame_len);
        b.count_out(frame_len);
    }
    Ok(Action::Forward {
        interface: route.interface,
    })
}
