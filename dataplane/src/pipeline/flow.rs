//! A client's packet to a VIP: its service and its flow. An established flow keeps its
//! backend; a new one asks the service's scheduler and is kept in the flow table (but for a
//! one-packet service's datagrams, each scheduled on its own).
//!
//! A SYN that reuses the tuple of a flow that is closing (FIN or RST seen) is a new
//! connection: the old flow goes and the SYN is scheduled at once, as IPVS's conn_reuse_mode
//! wants it (without IPVS's dropped first SYN, which costs the client a one-second
//! retransmission).

use super::{Action, Ctx, Ip, L4, egress, flow_owner};
use crate::drop_reason::DropReason;
use crate::flow::persist::TemplateKey;
use crate::flow::{FlowKey, FlowState, NewFlow, NoFlow};
use crate::packet::PacketBuf;
use crate::sched::PickInput;
use crate::service::ForwardingMode;
use crate::snapshot::{Service, ServiceKey};
use crate::wire::tcp;

/// Flow-table sweeping done along with each new flow, so expiry keeps up with creation.
const SWEEP_PER_NEW_FLOW: usize = 4;

/// The packet of a flow or of a service at its destination (a VIP, maybe): what happens to
/// it, or None when no service there takes it.
#[inline(always)]
pub(super) fn to_vip<P: PacketBuf>(
    pkt: &mut P,
    cx: &mut Ctx<'_>,
    p: &Ip,
    l4: &L4,
    no_flow: bool,
) -> Option<Result<Action, DropReason>> {
    let ip = &p.ip;
    let key = FlowKey {
        client: ip.src,
        vip: ip.dst,
        client_port: l4.sport,
        vip_port: l4.dport,
        protocol: ip.proto,
    };
    // Hashed once, for the lookup and for a new flow's insert.
    let hash = cx.w.flows.hash_of(&key);
    // The common case first: an established flow names its service, so one lookup does.
    if let Some(slot) = (!no_flow)
        .then(|| cx.w.flows.lookup_hashed(&key, hash, cx.now))
        .flatten()
    {
        let (service, backend, state) = {
            let f = cx.w.flows.get(slot);
            (f.service, f.backend, f.state)
        };
        match cx.snap.service_by_id(service).filter(|s| s.matches(&key)) {
            // A new connection on the tuple of one that is closing: scheduled afresh.
            Some(_) if l4.tcp_flags.is_some_and(|f| reuses_tuple(f, state)) => {
                cx.w.flows.remove(slot);
            }
            Some(svc) => {
                cx.w.flows.touch(slot, l4.tcp_flags, cx.now);
                return Some(egress::forward_to_backend(
                    pkt, cx, p.l2, &p.ip, svc, backend,
                ));
            }
            // Its service is gone (or the id now names another): schedule it afresh.
            None => cx.w.flows.remove(slot),
        }
    }
    let skey = ServiceKey {
        protocol: ip.proto,
        vip: ip.dst,
        port: l4.dport,
    };
    let svc = cx.snap.service(&skey)?;
    Some(new_flow(pkt, cx, p, l4, key, hash, svc))
}

/// A segment with these `flags` on a flow in `state` opens a new connection on its tuple: a SYN
/// without ACK after a FIN or a RST.
#[inline(always)]
pub(super) fn reuses_tuple(flags: u8, state: FlowState) -> bool {
    flags & (tcp::SYN | tcp::ACK) == tcp::SYN && matches!(state, FlowState::Fin | FlowState::Closed)
}

/// Client to VIP, first packet of a flow: the scheduler picks a backend and the flow is kept.
/// `hash` is the flow table's [`hash_of`](crate::flow::FlowTable::hash_of) `key`.
#[inline(always)]
pub(super) fn new_flow<P: PacketBuf>(
    pkt: &mut P,
    cx: &mut Ctx<'_>,
    p: &Ip,
    l4: &L4,
    key: FlowKey,
    hash: u64,
    svc: &Service,
) -> Result<Action, DropReason> {
    if cx.snap.is_martian_source(&p.ip.src, p.ip.v6) {
        return Err(DropReason::MartianSource);
    }
    if !svc.admits(&key.client) {
        return Err(DropReason::ClientDenied);
    }
    let mode = svc.config.forwarding;
    let w = &mut *cx.w;
    // NAT flows live with the worker that owns the client (replies find them there), a
    // persistent service's with the one that owns the client's masked address (its templates).
    if let Some(o) = flow_owner(svc, cx.snap, &p.ip.src, l4.sport)
        && o != w.index
    {
        return Ok(Action::Redirect(o));
    }
    let state = match l4.tcp_flags {
        Some(f) => FlowState::for_new_tcp(f).map_err(|e| match e {
            NoFlow::Reset => DropReason::TcpRstNoFlow,
            NoFlow::ImpossibleFlags => DropReason::TcpBadFlags,
        })?,
        None => FlowState::Udp,
    };
    let cursor = w
        .cursors
        .get_mut(svc.config.id.0 as usize)
        .ok_or(DropReason::FlowInsertFailed)?;
    // A persistent service's live template gives its backend, whatever the scheduler.
    let template = svc
        .config
        .options
        .persistence
        .zip(svc.persist_mask())
        .map(|(p, m)| {
            (
                TemplateKey {
                    service: svc.config.id,
                    client: crate::flow::persist::masked(&key.client, m),
                },
                p.timeout,
            )
        });
    let kept = template
        .and_then(|(k, _)| w.flows.templates.lookup(&k, cx.now))
        .and_then(|t| svc.template_backend(t.backend));
    let pick = if kept.is_some() {
        kept
    } else if state != FlowState::Udp && !svc.scheduler.is_per_flow() && w.flows.syn_flood(cx.now) {
        // Half-open flows are being evicted: this SYN's entry may be gone when its ACK
        // comes, and the ACK must find the same backend from its tuple alone.
        w.flows.count_hashed();
        svc.by_hash.pick(key.stable_hash())
    } else {
        svc.scheduler.pick(
            &PickInput {
                backends: &svc.sched_backends,
                flow: &key,
                conns: &w.flows,
            },
            cursor,
        )
    };
    let pick = pick.ok_or(DropReason::NoBackend)?;
    let b = &svc.config.backends[pick];
    let endpoint = svc.endpoints[pick];
    if state == FlowState::Udp && svc.config.options.one_packet {
        w.flows.set_endpoint(b.id, endpoint);
        // Scheduled on its own; no flow is kept (NAT replies find the service by their
        // source, `Snapshot::one_packet_reply`).
        if let Some((s, c)) = w.traffic.of(svc.config.id, b.id) {
            s.new_flows.add(1);
            c.new_flows.add(1);
        }
        return egress::forward_to_backend(pkt, cx, p.l2, &p.ip, svc, b.id);
    }
    w.flows.sweep(cx.now, SWEEP_PER_NEW_FLOW);
    let new = NewFlow {
        key,
        service: svc.config.id,
        backend: b.id,
        endpoint,
        nat: mode == ForwardingMode::Nat,
        state,
        template,
    };
    w.flows
        .insert_hashed(new, hash, cx.now)
        .map_err(|_| DropReason::FlowInsertFailed)?;
    if let Some((s, c)) = w.traffic.of(svc.config.id, b.id) {
        s.new_flows.add(1);
        c.new_flows.add(1);
    }
    egress::forward_to_backend(pkt, cx, p.l2, &p.ip, svc, b.id)
}
