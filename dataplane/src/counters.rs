//! Per-worker counters: each worker is the only writer of its own cache-line-aligned block, so
//! an update is a plain load and store (no locked instruction); the control side sums all
//! workers' blocks with relaxed loads whenever it likes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::drop_reason::DropReason;
use crate::pipeline::Action;
use crate::service::{BackendId, ServiceId};

/// One port's counters as one worker saw them.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Packets the worker had to free because the tx queue was full.
    pub tx_dropped: Counter,
}

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this (single writer: no read-modify-write race).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Sets the value (a gauge mirrored from the owning worker's state).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed)
    }
}

/// Traffic of one service or one backend, as one worker saw it. "In" is client to VIP, "out"
/// is a NAT reply back to the client.
#[derive(Debug, Default)]
pub struct TrafficCounters {
    pub packets_in: Counter,
    pub bytes_in: Counter,
    pub packets_out: Counter,
    pub bytes_out: Counter,
    pub new_flows: Counter,
    /// Gauges, for backends: TCP established flows, and all other flows (IPVS's ActConn and
    /// InActConn), mirrored from the worker's flow table between bursts.
    pub active: Counter,
    pub inactive: Counter,
}

impl TrafficCounters {
    #[inline]
    pub fn count_in(&self, bytes: usize) {
        self.packets_in.add(1);
        self.bytes_in.add(bytes as u64);
    }

    #[inline]
    pub fn count_out(&self, bytes: usize) {
        self.packets_out.add(1);
        self.bytes_out.add(bytes as u64);
    }
}

/// Per service id and per backend id (the control plane's stable ids), one worker's.
#[derive(Debug)]
pub struct ServiceCounters {
    pub services: Box<[TrafficCounters]>,
    pub backends: Box<[TrafficCounters]>,
    /// The worker's flow table, mirrored with the connection counts.
    pub flows: FlowCounters,
    /// What the worker answered as a host on closed VIP ports.
    pub closed_ports: ClosedPortCounters,
    /// The snapshot epoch of the last copy-out of the gauges (0: none yet): the control side
    /// trusts a reused id's gauges only from a copy made at its new owner's snapshot or later.
    pub mirrored_snapshot: Counter,
    /// Copy-outs made (ten a second while the worker runs): the control side's sign of life.
    pub heartbeats: Counter,
}

/// A copy of one worker's flow-table size and statistics, for the control side.
#[derive(Debug, Default)]
pub struct FlowCounters {
    pub entries: Counter,
    pub capacity: Counter,
    /// Bytes of the table (slab and indexes).
    pub memory: Counter,
    pub created: Counter,
    pub expired: Counter,
    pub evicted: Counter,
    pub evicted_established: Counter,
    pub flushed: Counter,
    pub syn_flood_hashed: Counter,
    /// Persistence templates held, and those not made because the table was full.
    pub templates: Counter,
    pub templates_full: Counter,
    /// Synchronisation (see `flow::FlowTableStats`): synced flows held, records queued for the
    /// peers and lost to a full ring, and what became of the peers' records.
    pub synced: Counter,
    pub sync_queued: Counter,
    pub sync_queue_full: Counter,
    pub sync_limited: Counter,
    pub sync_installed: Counter,
    pub sync_updated: Counter,
    pub sync_known: Counter,
    pub sync_full: Counter,
    pub sync_unknown: Counter,
    pub sync_adopted: Counter,
    pub sync_evicted: Counter,
}

/// Answers to packets for a VIP port without a service (written by the worker as it answers).
#[derive(Debug, Default)]
pub struct ClosedPortCounters {
    pub tcp_resets: Counter,
    pub port_unreachables: Counter,
    /// Not answered: over the per-second budget (dropped as `no_service`).
    pub rate_limited: Counter,
}

impl ServiceCounters {
    /// The counters of a service and of one of its backends (None for ids beyond the arrays).
    #[inline]
    pub fn of(
        &self,
        service: ServiceId,
        backend: BackendId,
    ) -> Option<(&TrafficCounters, &TrafficCounters)> {
        Some((
            self.services.get(service.0 as usize)?,
            self.backends.get(backend.0 as usize)?,
        ))
    }

    pub fn new(max_services: u32, max_backends: u32) -> Self {
        ServiceCounters {
            services: (0..max_services)
                .map(|_| TrafficCounters::default())
                .collect(),
            backends: (0..max_backends)
                .map(|_| TrafficCounters::default())
                .collect(),
            flows: FlowCounters::default(),
            closed_ports: ClosedPortCounters::default(),
            mirrored_snapshot: Counter::default(),
            heartbeats: Counter::default(),
        }
    }
}

/// A plain copy of traffic counters, summed over workers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrafficTotals {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
    pub active: u64,
    pub inactive: u64,
}

/// Sums the counters that `pick` selects (a service's or a backend's) over workers.
pub fn traffic_totals<'a>(
    workers: impl IntoIterator<Item = &'a ServiceCounters>,
    pick: impl Fn(&'a ServiceCounters) -> Option<&'a TrafficCounters>,
) -> TrafficTotals {
    workers
        .into_iter()
        .filter_map(pick)
        .fold(TrafficTotals::default(), |t, c| TrafficTotals {
            packets_in: t.packets_in + c.packets_in.get(),
            bytes_in: t.bytes_in + c.bytes_in.get(),
            packets_out: t.packets_out + c.packets_out.get(),
            bytes_out: t.bytes_out + c.bytes_out.get(),
            new_flows: t.new_flows + c.new_flows.get(),
            active: t.active + c.active.get(),
            inactive: t.inactive + c.inactive.get(),
        })
}

/// A plain copy of one port's counters, summed over workers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

/// What happened to packets after `process`, and why each drop.
#[derive(Debug)]
#[repr(align(64))]
pub struct ActionCounters {
    pub forwarded: Counter,
    pub replied: Counter,
    pub consumed: Counter,
    pub redirected: Counter,
    /// Redirected packets the owner's ring had no room for.
    pub redirect_dropped: Counter,
    /// Held for a next hop being resolved (counted again as forwarded when sent, or as a drop).
    pub held: Counter,
    /// Handed to the kernel interface, and the kernel's frames sent out of the port.
    pub to_kernel: Counter,
    pub from_kernel: Counter,
    /// For the kernel, but its queue took no more (at most a burst per loop iteration).
    pub to_kernel_dropped: Counter,
    /// Indexed by `DropReason as usize`.
    pub drops: [Counter; DropReason::COUNT],
}

impl Default for ActionCounters {
    fn default() -> Self {
        ActionCounters {
            forwarded: Counter::default(),
            replied: Counter::default(),
            consumed: Counter::default(),
            redirected: Counter::default(),
            redirect_dropped: Counter::default(),
            held: Counter::default(),
            to_kernel: Counter::default(),
            from_kernel: Counter::default(),
            to_kernel_dropped: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
        }
    }
}

impl ActionCounters {
    #[inline]
    pub fn record(&self, action: &Action) {
        match action {
            Action::Forward { .. } => self.forwarded.add(1),
            Action::Reply => self.replied.add(1),
            Action::Consumed => self.consumed.add(1),
            Action::Redirect(_) => self.redirected.add(1),
            Action::Kernel => self.to_kernel.add(1),
            Action::Drop(r) => self.drops[*r as usize].add(1),
        }
    }
}

/// Everything one worker counts; index `ports` by the interface's position in the config.
#[derive(Debug)]
pub struct WorkerCounters {
    pub ports: Box<[PortCounters]>,
    pub actions: ActionCounters,
}

impl WorkerCounters {
    pub fn new(ports: usize) -> Self {
        WorkerCounters {
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            actions: ActionCounters::default(),
        }
    }
}

/// Drops per reason summed over workers, in `DropReason::ALL` order.
pub fn drop_totals(workers: &[WorkerCounters]) -> [u64; DropReason::COUNT] {
    std::array::from_fn(|i| workers.iter().map(|w| w.actions.drops[i].get()).sum())
}

/// Sums the counters of port `index` over all workers.
pub fn port_totals(workers: &[WorkerCounters], index: usize) -> PortTotals {
    workers
        .iter()
        .map(|w| &w.ports[index])
        .fold(PortTotals::default(), |t, c| PortTotals {
            rx_packets: t.rx_packets + c.rx_packets.get(),
            rx_bytes: t.rx_bytes + c.rx_bytes.get(),
            tx_packets: t.tx_packets + c.tx_packets.get(),
            tx_bytes: t.tx_bytes + c.tx_bytes.get(),
            tx_dropped: t.tx_dropped + c.tx_dropped.get(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_every_worker_for_one_port() {
        let workers = [WorkerCounters::new(2), WorkerCounters::new(2)];
        workers[0].ports[1].rx_packets.add(3);
        workers[1].ports[1].rx_packets.add(4);
        workers[1].ports[1].rx_bytes.add(400);
        workers[0].ports[0].rx_packets.add(100);
        let t = port_totals(&workers, 1);
        assert_eq!((t.rx_packets, t.rx_bytes, t.tx_packets), (7, 400, 0));
        assert_eq!(port_totals(&workers, 0).rx_packets, 100);
    }

    #[test]
    fn actions_are_counted_by_kind_and_drops_by_reason() {
        let workers = [WorkerCounters::new(1), WorkerCounters::new(1)];
        workers[0]
            .actions
            .record(&Action::Drop(DropReason::NoService));
        workers[1]
            .actions
            .record(&Action::Drop(DropReason::NoService));
        workers[1]
            .actions
            .record(&Action::Drop(DropReason::Fragment));
        workers[0].actions.record(&Action::Reply);
        workers[0].actions.record(&Action::Redirect(1));
        let d = drop_totals(&workers);
        assert_eq!(d[DropReason::NoService as usize], 2);
        assert_eq!(d[DropReason::Fragment as usize], 1);
        assert_eq!(d.iter().sum::<u64>(), 3);
        assert_eq!(
            (
                workers[0].actions.replied.get(),
                workers[0].actions.redirected.get()
            ),
            (1, 1)
        );
    }

    #[test]
    fn port_counters_fill_their_own_cache_line() {
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
        assert_eq!(std::mem::size_of::<PortCounters>() % 64, 0);
    }
}
