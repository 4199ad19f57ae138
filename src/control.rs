//! The control side of the running appliance, on an ordinary thread (never an lcore): SIGHUP
//! reloads, the dynamic neighbour table fed by the workers' events, announcements of our
//! addresses and VIPs (gratuitous ARP, unsolicited NA), and ARP/NDP requests. Frames go out
//! through a ring to a worker, which sends them with its packets. Every change is a publish.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use controlplane::config::{self, IpPrefix, Model, Neighbor};
use controlplane::neighbors::{NeighborTable, Request, Timers};
use controlplane::publish::Publisher;
use crossbeam_channel::{Receiver, Sender};
use dataplane::addr::MacAddr;
use dataplane::lcore::Command;
use dataplane::neighbor::{self, NeighborEvent};
use dpdk_rs::{MbufBurst, Mempool, RingProducer};
use tracing::{debug, error, info};

/// An interface as the control side needs it.
pub struct Interface {
    pub port: u16,
    pub mac: MacAddr,
    pub addresses: Vec<IpPrefix>,
}

pub struct Control<'a> {
    pub publisher: &'a Publisher,
    pub running: Model,
    pub interfaces: Vec<Interface>,
    pub frames: RingProducer<'a>,
    pub pool: &'a Mempool,
    pub workers: &'a [Sender<Command>],
    pub config_path: Option<&'a Path>,
    neighbors: NeighborTable,
    dirty: bool,
    pub reloads: u64,
    pub frames_sent: u64,
}

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
    ) -> Self {
        Control {
            publisher,
            running,
            interfaces,
            frames,
            pool,
            workers,
            config_path,
            neighbors: NeighborTable::new(Timers::default()),
            dirty: false,
            reloads: 0,
            frames_sent: 0,
        }
    }

    /// Runs until `done`: events as they come, reloads when asked, timers every 100 ms.
    pub fn run(
        &mut self,
        events: &Receiver<NeighborEvent>,
        reload: &AtomicBool,
        done: &AtomicBool,
    ) {
        self.announce(&self.vips(), true);
        let mut last_tick = Instant::now();
        while !done.load(Ordering::Relaxed) {
            if let Ok(e) = events.recv_timeout(Duration::from_millis(1)) {
                self.event(e);
                while let Ok(e) = events.try_recv() {
                    self.event(e);
                }
            }
            if reload.swap(false, Ordering::Relaxed) {
                self.reload();
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
                self.publish(&self.running.clone());
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
    fn publish(&mut self, model: &Model) {
        let mut m = model.clone();
        let learned = self
            .neighbors
            .entries()
            .into_iter()
            .map(|(address, mac)| Neighbor { address, mac });
        m.neighbors = learned.chain(model.neighbors.iter().copied()).collect();
        match self.publisher.publish(&m, Duration::from_secs(1)) {
            Ok(p) => {
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
            }
            Err(e) => error!("publish failed, the running configuration stays: {e}"),
        }
    }

    /// SIGHUP: reads the configuration again and applies it, all or nothing. What a running
    /// appliance cannot change (DPDK settings, interfaces) must stay as it is.
    fn reload(&mut self) {
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
        if next.dpdk != self.running.dpdk || next.interfaces != self.running.interfaces {
            error!(
                "reload refused, the running configuration stays: [dpdk] and [[interfaces]] change only with a restart"
            );
            return;
        }
        let before = self.vips();
        self.publish(&next);
        if self.dirty {
            return; // publish failed; already logged
        }
        info!(
            epoch = self.publisher.shared().current().epoch,
            "configuration reloaded"
        );
        self.running = next;
        let new: BTreeSet<IpAddr> = self.vips().difference(&before).copied().collect();
        self.announce(&new, false);
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
