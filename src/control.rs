//! The control side of the running appliance, on an ordinary thread (never an lcore): the REST
//! API's requests and SIGHUP reloads (both through the [`Controller`], the one writer of the
//! configuration), the dynamic neighbour table fed by the workers' events, announcements of our
//! addresses and VIPs (gratuitous ARP, unsolicited NA), and ARP/NDP requests. Frames go out
//! through a ring to a worker, which sends them with its packets. Every change is a publish.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use controlplane::api::http::Call;
use controlplane::api::stats::{
    ActionStats, BackendStats, FlowStats, PortStats, ServiceStats, Traffic, WorkerStats,
};
use controlplane::api::{Controller, Dataplane, FlowSample, Stats};
use controlplane::config::{self, IpPrefix, Model, Neighbor};
use controlplane::neighbors::{NeighborTable, Request, Timers};
use controlplane::publish::Publisher;
use crossbeam_channel::{Receiver, Sender};
use dataplane::addr::MacAddr;
use dataplane::counters::{
    ServiceCounters, TrafficTotals, WorkerCounters, drop_totals, port_totals, traffic_totals,
};
use dataplane::drop_reason::DropReason;
use dataplane::flow::addr_from_bytes;
use dataplane::lcore::{Command, FlowDump};
use dataplane::neighbor::{self, NeighborEvent};
use dpdk_rs::{MbufBurst, Mempool, RingProducer};
use tracing::{debug, error, info};

/// An interface as the control side needs it.
pub struct Interface {
    pub port: u16,
    pub name: String,
    pub mac: MacAddr,
    pub addresses: Vec<IpPrefix>,
}

/// What the control side reads of the workers: their counters.
pub struct Observed<'a> {
    pub counters: &'a [WorkerCounters],
    pub traffic: Vec<Arc<ServiceCounters>>,
    pub started: Instant,
}

pub struct Control<'a> {
    pub publisher: &'a Publisher,
    /// The configuration last published (the controller's, plus learned neighbours on top).
    pub running: Model,
    pub interfaces: Vec<Interface>,
    pub frames: RingProducer<'a>,
    pub pool: &'a Mempool,
    pub workers: &'a [Sender<Command>],
    pub config_path: Option<&'a Path>,
    pub observed: Observed<'a>,
    neighbors: NeighborTable,
    dirty: bool,
    pub reloads: u64,
    pub frames_sent: u64,
    /// Counters are kept per numeric id, and ids are reused: what an id had counted when its
    /// present owner got it, to be subtracted (keyed by (is a service, id)).
    baselines: HashMap<(bool, u32), TrafficTotals>,
}

/// How long the control side waits for the workers' flow samples.
const DUMP_WAIT: Duration = Duration::from_secs(1);

/// How often the neighbour timers run.
const TICK: Duration = Duration::from_millis(100);

impl<'a> Control<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        publisher: &'a Publisher,
        running: Model,
        interfaces: Vec<Interface>,
        frames: RingProducer<'a>,
        pool: &'a Mempool,
        workers: &'a [Sender<Command>],
        config_path: Option<&'a Path>,
        observed: Observed<'a>,
    ) -> Self {
        Control {
            publisher,
            running,
            interfaces,
            frames,
            pool,
            workers,
            config_path,
            observed,
            neighbors: NeighborTable::new(Timers::default()),
            baselines: HashMap::new(),
            dirty: false,
            reloads: 0,
            frames_sent: 0,
        }
    }

    /// Runs until `done`: events and API calls as they come, reloads when asked, timers every
    /// 100 ms.
    pub fn run(
        &mut self,
        controller: &mut Controller,
        events: &Receiver<NeighborEvent>,
        calls: &Receiver<Call>,
        reload: &AtomicBool,
        done: &AtomicBool,
    ) {
        self.announce(&self.vips(), true);
        let mut last_tick = Instant::now();
        // A channel whose senders are all gone is replaced by one that never delivers.
        let (mut events, mut calls) = (events.clone(), calls.clone());
        while !done.load(Ordering::Relaxed) {
            crossbeam_channel::select! {
                recv(events) -> e => match e {
                    Ok(e) => {
                        self.event(e);
                        while let Ok(e) = events.try_recv() {
                            self.event(e);
                        }
                    }
                    Err(_) => events = crossbeam_channel::never(),
                },
                recv(calls) -> c => match c {
                    Ok(c) => {
                        let reply = controller.handle(c.request, self);
                        let _ = c.reply.send(reply);
                    }
                    Err(_) => calls = crossbeam_channel::never(),
                },
                default(Duration::from_millis(1)) => {}
            }
            if reload.swap(false, Ordering::Relaxed) {
                self.reload(controller);
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= TICK {
                let (requests, expired) = self.neighbors.tick(now);
                for r in requests {
                    self.request(r);
                }
                self.dirty |= expired;
                last_tick = now;
            }
            if self.dirty {
                let _ = self.publish(&self.running.clone());
            }
        }
    }

    fn event(&mut self, e: NeighborEvent) {
        let now = Instant::now();
        match e {
            NeighborEvent::Learned {
                addr,
                mac,
                interface,
            } => {
                if self.running.neighbors.iter().any(|n| n.address == addr) {
                    return; // a static entry: configuration wins
                }
                let ours = self
                    .interfaces
                    .iter()
                    .any(|i| i.addresses.iter().any(|p| p.addr == addr));
                if ours || self.running.services.iter().any(|s| s.vip == addr) {
                    // Our own announcements, looped back (or a conflict): never a neighbour.
                    return;
                }
                if self.neighbors.learned(addr, mac, interface, now) {
                    info!(%addr, %mac, interface, "neighbour learned");
                    self.dirty = true;
                }
            }
            NeighborEvent::Unresolved { addr, interface } => {
                if let Some(r) = self.neighbors.unresolved(addr, interface, now) {
                    self.request(r);
                }
            }
        }
    }

    /// The configuration's services and static neighbours, with the learned neighbours first
    /// (the snapshot keeps the last entry of an address, so static ones win).
    fn publish(&mut self, model: &Model) -> Result<(), String> {
        let mut m = model.clone();
        let learned = self
            .neighbors
            .entries()
            .into_iter()
            .map(|(address, mac)| Neighbor { address, mac });
        m.neighbors = learned.chain(model.neighbors.iter().copied()).collect();
        let owners = |snap: &dataplane::snapshot::Snapshot| -> HashSet<(bool, u32, String)> {
            snap.services
                .iter()
                .flat_map(|s| {
                    let c = &s.config;
                    std::iter::once((true, c.id.0, c.name.clone())).chain(
                        c.backends
                            .iter()
                            .map(move |b| (false, b.id.0, format!("{}/{}", c.name, b.name))),
                    )
                })
                .collect()
        };
        let before = owners(&self.publisher.shared().current());
        match self.publisher.publish(&m, Duration::from_secs(1)) {
            Ok(p) => {
                // Ids with a new owner count from here on.
                let workers = || self.observed.traffic.iter().map(|w| &**w);
                for (service, id, name) in owners(&self.publisher.shared().current()) {
                    if !before.contains(&(service, id, name)) {
                        let t = if service {
                            traffic_totals(workers(), |w| w.services.get(id as usize))
                        } else {
                            traffic_totals(workers(), |w| w.backends.get(id as usize))
                        };
                        self.baselines.insert((service, id), t);
                    }
                }
                for id in &p.released_backends {
                    for w in self.workers {
                        // Bounded: a worker that far behind gets the flush when it catches up.
                        let _ =
                            w.send_timeout(Command::FlushBackend(*id), Duration::from_millis(100));
                    }
                }
                debug!(
                    epoch = p.epoch,
                    live = p.live,
                    build_us = p.build_time.as_micros() as u64,
                    "published"
                );
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                error!("publish failed, the running configuration stays: {e}");
                Err(e.to_string())
            }
        }
    }

    /// SIGHUP: reads the configuration again and applies it through the controller, all or
    /// nothing (like an API change; with a state file, the file's services are saved there).
    fn reload(&mut self, controller: &mut Controller) {
        self.reloads += 1;
        let next = match config::load(self.config_path, std::env::vars()) {
            Ok(m) => m,
            Err(e) => {
                for line in e.to_string().lines() {
                    error!("reload refused, the running configuration stays: {line}");
                }
                return;
            }
        };
        match controller.reload(next, self) {
            Ok(()) => info!(
                epoch = self.publisher.shared().current().epoch,
                "configuration reloaded"
            ),
            Err(e) => error!("reload refused, the running configuration stays: {e}"),
        }
    }

    fn vips(&self) -> BTreeSet<IpAddr> {
        self.running.services.iter().map(|s| s.vip).collect()
    }

    /// Tells the neighbours where `vips` (and, at start, our own addresses) are: gratuitous ARP
    /// for IPv4, unsolicited neighbour advertisements for IPv6, on every interface.
    fn announce(&mut self, vips: &BTreeSet<IpAddr>, own_addresses: bool) {
        for i in 0..self.interfaces.len() {
            let (port, mac) = (self.interfaces[i].port, self.interfaces[i].mac);
            let own: Vec<IpAddr> = if own_addresses {
                self.interfaces[i]
                    .addresses
                    .iter()
                    .map(|p| p.addr)
                    .collect()
            } else {
                Vec::new()
            };
            for addr in vips.iter().copied().chain(own) {
                match addr {
                    IpAddr::V4(a) => {
                        let mut f = [0u8; neighbor::MIN_FRAME];
                        neighbor::gratuitous_arp(&mut f, mac, a);
                        self.send(port, &f);
                    }
                    IpAddr::V6(a) => {
                        let mut f = [0u8; neighbor::NDP_FRAME];
                        neighbor::unsolicited_advertisement(&mut f, mac, a);
                        self.send(port, &f);
                    }
                }
            }
        }
    }

    /// Asks who has `r.target`, from our address on the same prefix (else our first of the
    /// family) on that interface.
    fn request(&mut self, r: Request) {
        let Some(itf) = self.interfaces.get(usize::from(r.interface)) else {
            return;
        };
        let same_family = |p: &&IpPrefix| p.addr.is_ipv4() == r.target.is_ipv4();
        let src = itf
            .addresses
            .iter()
            .find(|p| p.contains(r.target))
            .or_else(|| itf.addresses.iter().find(same_family));
        let Some(src) = src.map(|p| p.addr) else {
            return;
        };
        let (port, mac) = (itf.port, itf.mac);
        debug!(target = %r.target, interface = r.interface, "resolving");
        match (src, r.target) {
            (IpAddr::V4(s), IpAddr::V4(t)) => {
                let mut f = [0u8; neighbor::MIN_FRAME];
                neighbor::arp_request(&mut f, mac, s, t);
                self.send(port, &f);
            }
            (IpAddr::V6(s), IpAddr::V6(t)) => {
                let mut f = [0u8; neighbor::NDP_FRAME];
                neighbor::neighbor_solicitation(&mut f, mac, s, t);
                self.send(port, &f);
            }
            _ => {}
        }
    }

    /// Hands a frame to the worker that sends control frames; dropped if its ring is full.
    fn send(&mut self, port: u16, frame: &[u8]) {
        let Ok(mut m) = self.pool.alloc() else { return };
        let Some(room) = m.append(frame.len() as u16) else {
            return;
        };
        room.copy_from_slice(frame);
        m.set_port(port);
        let mut burst = MbufBurst::new();
        if burst.push(m).is_ok() && self.frames.enqueue_burst(&mut burst) == 1 {
            self.frames_sent += 1;
        }
    }
}

/// Counters since `base` (the gauges, active and inactive, as they are).
fn since(t: TrafficTotals, base: Option<&TrafficTotals>) -> TrafficTotals {
    let Some(b) = base else { return t };
    TrafficTotals {
        packets_in: t.packets_in.saturating_sub(b.packets_in),
        bytes_in: t.bytes_in.saturating_sub(b.bytes_in),
        packets_out: t.packets_out.saturating_sub(b.packets_out),
        bytes_out: t.bytes_out.saturating_sub(b.bytes_out),
        new_flows: t.new_flows.saturating_sub(b.new_flows),
        ..t
    }
}

impl Dataplane for Control<'_> {
    fn apply(&mut self, model: &Model) -> Result<(), String> {
        let before = self.vips();
        self.publish(model)?;
        self.running = model.clone();
        let new: BTreeSet<IpAddr> = self.vips().difference(&before).copied().collect();
        self.announce(&new, false);
        Ok(())
    }

    fn stats(&mut self, model: &Model) -> Stats {
        let o = &self.observed;
        let snap = self.publisher.shared().current();
        let a = |f: fn(&WorkerCounters) -> u64| o.counters.iter().map(f).sum::<u64>();
        let drops = drop_totals(o.counters);
        let workers = || o.traffic.iter().map(|w| &**w);
        let flow = |f: fn(&ServiceCounters) -> u64| o.traffic.iter().map(|w| f(w)).sum::<u64>();
        let services = model
            .services
            .iter()
            .map(|s| {
                let live = snap.services.iter().find(|x| x.config.name == s.id);
                let backends: Vec<BackendStats> = s
                    .backends
                    .iter()
                    .map(|b| {
                        let id = live.and_then(|l| {
                            l.config
                                .backends
                                .iter()
                                .find(|x| x.name == b.id)
                                .map(|x| x.id.0)
                        });
                        let t = id.map_or_else(TrafficTotals::default, |id| {
                            since(
                                traffic_totals(workers(), |w| w.backends.get(id as usize)),
                                self.baselines.get(&(false, id)),
                            )
                        });
                        BackendStats {
                            id: b.id.clone(),
                            address: b.address.to_string(),
                            port: b.port,
                            weight: b.weight,
                            enabled: b.enabled,
                            traffic: Traffic::from(t),
                        }
                    })
                    .collect();
                let mut t = live.map_or_else(TrafficTotals::default, |l| {
                    let id = l.config.id.0;
                    since(
                        traffic_totals(workers(), |w| w.services.get(id as usize)),
                        self.baselines.get(&(true, id)),
                    )
                });
                // A service's connections are its backends'.
                t.active = backends.iter().map(|b| b.traffic.active).sum();
                t.inactive = backends.iter().map(|b| b.traffic.inactive).sum();
                ServiceStats {
                    id: s.id.clone(),
                    protocol: s.protocol.to_string(),
                    vip: s.vip.to_string(),
                    port: s.port,
                    scheduler: s.scheduler.to_string(),
                    forwarding: s.forwarding.to_string(),
                    traffic: Traffic::from(t),
                    backends,
                }
            })
            .collect();
        Stats {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: o.started.elapsed().as_secs_f64(),
            epoch: snap.epoch,
            reloads: self.reloads,
            workers: o.counters.len(),
            per_worker: o
                .counters
                .iter()
                .zip(&o.traffic)
                .enumerate()
                .map(|(i, (c, t))| WorkerStats {
                    worker: i,
                    rx_packets: c.ports.iter().map(|p| p.rx_packets.get()).sum(),
                    tx_packets: c.ports.iter().map(|p| p.tx_packets.get()).sum(),
                    forwarded: c.actions.forwarded.get(),
                    dropped: c.actions.drops.iter().map(|d| d.get()).sum(),
                    flows: t.flows.entries.get(),
                })
                .collect(),
            ports: self
                .interfaces
                .iter()
                .enumerate()
                .map(|(i, itf)| {
                    let t = port_totals(o.counters, i);
                    PortStats {
                        port: itf.port,
                        name: itf.name.clone(),
                        rx_packets: t.rx_packets,
                        rx_bytes: t.rx_bytes,
                        tx_packets: t.tx_packets,
                        tx_bytes: t.tx_bytes,
                        tx_dropped: t.tx_dropped,
                    }
                })
                .collect(),
            actions: ActionStats {
                forwarded: a(|c| c.actions.forwarded.get()),
                replied: a(|c| c.actions.replied.get()),
                consumed: a(|c| c.actions.consumed.get()),
                redirected: a(|c| c.actions.redirected.get()),
                redirect_dropped: a(|c| c.actions.redirect_dropped.get()),
                dropped: drops.iter().sum(),
            },
            drops: DropReason::ALL
                .iter()
                .zip(drops)
                .map(|(r, n)| (r.name().to_string(), n))
                .collect(),
            flows: FlowStats {
                entries: flow(|w| w.flows.entries.get()),
                capacity: flow(|w| w.flows.capacity.get()),
                memory_bytes: flow(|w| w.flows.memory.get()),
                created: flow(|w| w.flows.created.get()),
                expired: flow(|w| w.flows.expired.get()),
                evicted: flow(|w| w.flows.evicted.get()),
                evicted_established: flow(|w| w.flows.evicted_established.get()),
                flushed: flow(|w| w.flows.flushed.get()),
            },
            services,
        }
    }

    fn flows(
        &mut self,
        _model: &Model,
        service: &str,
        limit: usize,
    ) -> Result<Vec<FlowSample>, String> {
        let snap = self.publisher.shared().current();
        let Some(svc) = snap.services.iter().find(|s| s.config.name == service) else {
            return Ok(Vec::new());
        };
        let (tx, rx) = crossbeam_channel::bounded::<FlowDump>(self.workers.len());
        let deadline = Instant::now() + DUMP_WAIT;
        let mut asked = 0;
        for w in self.workers {
            let cmd = Command::DumpFlows {
                service: svc.config.id,
                into: Vec::with_capacity(limit),
                reply: tx.clone(),
            };
            if w.send_deadline(cmd, deadline).is_ok() {
                asked += 1;
            }
        }
        let mut dumps = Vec::with_capacity(asked);
        while dumps.len() < asked {
            match rx.recv_deadline(deadline) {
                Ok(d) => dumps.push(d),
                Err(_) => {
                    return Err(format!(
                        "{} of {} workers did not answer within {DUMP_WAIT:?}",
                        asked - dumps.len(),
                        self.workers.len()
                    ));
                }
            }
        }
        let mut out = Vec::new();
        for d in dumps {
            for f in &d.flows {
                let backend = svc.config.backends.iter().find(|b| b.id == f.backend);
                out.push(FlowSample {
                    client: SocketAddr::new(addr_from_bytes(f.key.client), f.key.client_port)
                        .to_string(),
                    backend: backend.map_or_else(|| "?".to_string(), |b| b.name.clone()),
                    backend_address: backend.map_or_else(String::new, |b| {
                        SocketAddr::new(b.address, b.port).to_string()
                    }),
                    state: f.state.name().to_string(),
                    idle_seconds: d.now.saturating_sub(f.last_seen),
                    age_seconds: d.now.saturating_sub(f.created),
                    worker: d.worker,
                });
            }
        }
        // The oldest first, then a stable order.
        out.sort_by(|a, b| {
            b.age_seconds
                .cmp(&a.age_seconds)
                .then(a.client.cmp(&b.client))
        });
        out.truncate(limit);
        Ok(out)
    }
}
