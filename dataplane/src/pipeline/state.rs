//! What one worker owns: its flow table, its scheduling cursors, its counters (shared for
//! reading with the control side), and what it learned of neighbours in this burst; and which
//! worker owns a NAT flow.

use std::sync::Arc;

use crate::counters::ServiceCounters;
use crate::flow::{FlowTable, FlowTimeouts};
use crate::hash::fmix64;
use crate::neighbor::NeighborEvents;
use crate::sched::Cursor;
use crate::snapshot::Snapshot;

/// One worker's mutable state: its flow table, its scheduling cursors, and its per-service and
/// per-backend counters (shared for reading with the control side).
#[derive(Debug)]
pub struct WorkerState {
    /// This worker's index among `Snapshot::workers`.
    pub index: u16,
    pub flows: FlowTable,
    /// Per service id.
    pub(super) cursors: Vec<Cursor>,
    pub traffic: Arc<ServiceCounters>,
    /// What this burst learned about neighbours, for the control side.
    pub neighbor_events: NeighborEvents,
    /// Closed-port answers left in the current second.
    pub(super) reply_budget: ReplyBudget,
    /// Peers' flows for this worker (synchronisation on).
    pub sync_in: Option<rtrb::Consumer<crate::sync::SyncRecord>>,
}

/// At most `per_second` answers in each second of the worker's clock (a fixed window: the
/// clock counts whole seconds).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ReplyBudget {
    second: u32,
    used: u32,
}

impl ReplyBudget {
    /// True if one more answer fits in second `now`.
    #[inline]
    pub(super) fn take(&mut self, now: u32, per_second: u32) -> bool {
        if now != self.second {
            *self = ReplyBudget {
                second: now,
                used: 0,
            };
        }
        if self.used >= per_second {
            return false;
        }
        self.used += 1;
        true
    }
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
        WorkerState::try_new(index, flow_capacity, max_services, max_backends, timeouts)
            .expect("memory for the worker's state")
    }

    /// [`new`](Self::new), or the allocation's error when the memory for the flow table is
    /// not there.
    pub fn try_new(
        index: u16,
        flow_capacity: u32,
        max_services: u32,
        max_backends: u32,
        timeouts: FlowTimeouts,
    ) -> Result<Self, std::collections::TryReserveError> {
        Ok(WorkerState {
            index,
            flows: FlowTable::try_new(flow_capacity, max_backends, timeouts)?,
            cursors: vec![Cursor::default(); max_services as usize],
            traffic: Arc::new(ServiceCounters::new(max_services, max_backends)),
            neighbor_events: NeighborEvents::default(),
            reply_budget: ReplyBudget::default(),
            sync_in: None,
        })
    }

    /// Installs at most `budget` of the peers' flows waiting for this worker (between bursts:
    /// a flood of records never holds up the packets). A record names its service by VIP,
    /// port and protocol and its backend by address and port; one we do not have is counted
    /// and dropped. Returns how many were taken.
    pub fn install_synced(&mut self, snap: &Snapshot, now: u32, budget: usize) -> usize {
        let Some(inbound) = self.sync_in.as_mut() else {
            return 0;
        };
        let mut n = 0;
        while n < budget {
            let Ok(r) = inbound.pop() else { break };
            n += 1;
            let found = snap
                .service(&crate::snapshot::ServiceKey {
                    protocol: r.key.protocol,
                    vip: r.key.vip,
                    port: r.key.vip_port,
                })
                .filter(|s| !s.config.options.one_packet || r.key.protocol == 6)
                .and_then(|s| {
                    let b = s.config.backends.iter().find(|b| {
                        b.port == r.backend.port
                            && crate::flow::addr_bytes(b.address) == r.backend.addr
                    })?;
                    Some((s, b))
                });
            let Some((svc, b)) = found else {
                self.flows.count_sync_unknown();
                continue;
            };
            // The client's persistence template comes along (under our netmask and timeout).
            if r.bound
                && let Some((p, m)) = svc.config.options.persistence.zip(svc.persist_mask())
            {
                let key = crate::flow::persist::TemplateKey {
                    service: svc.config.id,
                    client: crate::flow::persist::masked(&r.key.client, m),
                };
                self.flows.templates.adopt(key, b.id, now, p.timeout);
            }
            self.flows.install(
                crate::flow::NewFlow {
                    key: r.key,
                    service: svc.config.id,
                    backend: b.id,
                    endpoint: r.backend,
                    nat: svc.config.forwarding == crate::service::ForwardingMode::Nat,
                    state: r.state,
                    template: None,
                },
                now,
            );
        }
        n
    }

    /// Takes up what a new snapshot changes of the worker's own state: the flow timeouts (a
    /// reload of `[timeouts]`), from the next expiry check on, and the backends' connection
    /// limits. Called when the snapshot
    /// changes, between bursts.
    pub fn adopt(&mut self, snapshot: &Snapshot) {
        if self.flows.timeouts() != snapshot.timeouts {
            self.flows.set_timeouts(snapshot.timeouts);
        }
        for s in &snapshot.services {
            self.flows.set_persistence(s.config.id, s.persist_mask());
        }
        // The backends' connection limits (every worker writes the same values).
        let board = self.flows.board();
        for b in snapshot.services.iter().flat_map(|s| &s.config.backends) {
            board.set_limits(b.id, b.upper_threshold, b.lower_threshold);
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
        self.traffic.heartbeats.add(1);
        let (f, s) = (&self.traffic.flows, self.flows.stats());
        f.entries.set(self.flows.len() as u64);
        f.capacity.set(u64::from(self.flows.capacity()));
        f.memory.set(self.flows.memory_bytes() as u64);
        f.created.set(s.created);
        f.expired.set(s.expired);
        f.evicted.set(s.evicted);
        f.evicted_established.set(s.evicted_established);
        f.syn_flood_hashed.set(s.syn_flood_hashed);
        f.templates.set(self.flows.templates.len() as u64);
        f.templates_full.set(self.flows.templates.full);
        f.flushed.set(s.flushed);
        f.synced.set(u64::from(self.flows.synced()));
        let (queued, full, limited) = self.flows.journal_counts();
        f.sync_queued.set(queued);
        f.sync_queue_full.set(full);
        f.sync_limited.set(limited);
        f.sync_installed.set(s.sync_installed);
        f.sync_updated.set(s.sync_updated);
        f.sync_known.set(s.sync_known);
        f.sync_full.set(s.sync_full);
        f.sync_unknown.set(s.sync_unknown);
        f.sync_adopted.set(s.sync_adopted);
        f.sync_evicted.set(s.sync_evicted);
        self.traffic.mirrored_snapshot.set(snapshot.epoch);
    }
}

/// The worker that keeps the flows of `svc` from `client`:`port`, or None when the worker that
/// received the packet keeps it: a NAT service's flows live with [`nat_owner`] (both
/// directions find them there), a persistent DR or TUN service's with the owner of the masked
/// client (its templates are there).
#[inline]
pub(crate) fn flow_owner(
    svc: &crate::snapshot::Service,
    snap: &Snapshot,
    client: &[u8; 16],
    port: u16,
) -> Option<u16> {
    if svc.config.forwarding == crate::service::ForwardingMode::Nat {
        return Some(nat_owner(snap, client, port));
    }
    let m = svc.persist_mask()?;
    Some(owner(
        &crate::flow::persist::masked(client, m),
        0,
        snap.workers,
    ))
}

/// The worker that owns the NAT flows of `client`:`port`, as both directions find it: the
/// owner of the endpoint, or, while a persistent NAT service of the client's family exists,
/// the owner of the client's address under the shortest netmask among them (every client
/// that shares a template then shares a worker).
#[inline]
pub(crate) fn nat_owner(snap: &Snapshot, client: &[u8; 16], port: u16) -> u16 {
    match snap.nat_steering[usize::from(crate::addr::is_mapped(client))] {
        None => owner(client, port, snap.workers),
        Some(m) => owner(&crate::flow::persist::masked(client, m), 0, snap.workers),
    }
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
