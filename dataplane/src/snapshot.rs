//! The immutable configuration the packet path reads: services with their built schedulers,
//! interfaces, routes, neighbours, timeouts. The control side builds a whole new one for every
//! change; workers read the current one once per burst (the runtime issue double-buffers it).

use std::net::IpAddr;

use hashbrown::{HashMap, HashSet};

use crate::addr::{IpPrefix, MacAddr};
use crate::flow::{FlowTimeouts, addr_bytes};
use crate::sched::{self, SchedBackend, Scheduler};
use crate::service::{BackendId, ForwardingMode, Protocol, SchedulerKind, ServiceId};

/// An interface as the packet path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// The DPDK port id.
    pub port: u16,
    pub mac: MacAddr,
    pub addresses: Vec<IpPrefix>,
    pub mtu: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub id: BackendId,
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub id: ServiceId,
    pub name: String,
    pub protocol: Protocol,
    pub vip: IpAddr,
    pub port: u16,
    pub scheduler: SchedulerKind,
    pub forwarding: ForwardingMode,
    pub maglev_table_size: u32,
    pub backends: Vec<BackendConfig>,
    /// Changes whenever backends or weights change (round-robin cursors restart on it).
    pub generation: u64,
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotConfig {
    pub interfaces: Vec<InterfaceConfig>,
    /// (prefix, via)
    pub routes: Vec<(IpPrefix, IpAddr)>,
    pub neighbors: Vec<(IpAddr, MacAddr)>,
    pub services: Vec<ServiceConfig>,
    pub timeouts: FlowTimeouts,
    /// Worker lcores sharing the traffic (for NAT flow ownership).
    pub workers: u16,
}

/// A service as the packet path reads it.
#[derive(Debug)]
pub struct Service {
    pub config: ServiceConfig,
    /// Parallel to `config.backends`, with effective weights (0 when disabled).
    pub sched_backends: Vec<SchedBackend>,
    pub scheduler: Box<dyn Scheduler>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub protocol: u8,
    pub vip: [u8; 16],
    pub port: u16,
}

#[derive(Debug)]
pub struct Snapshot {
    pub epoch: u64,
    pub interfaces: Vec<InterfaceConfig>,
    pub services: Vec<Service>,
    pub timeouts: FlowTimeouts,
    pub workers: u16,
    by_key: HashMap<ServiceKey, u32>,
    vips: HashSet<[u8; 16]>,
    /// Our own addresses, with the interface that holds each.
    local: HashMap<[u8; 16], u16>,
    /// Connected prefixes (interface index), longest first.
    connected: Vec<(IpPrefix, u16)>,
    /// Routes, longest prefix first.
    routes: Vec<(IpPrefix, IpAddr)>,
    neighbors: HashMap<[u8; 16], MacAddr>,
}

impl Snapshot {
    pub fn build(config: SnapshotConfig, epoch: u64) -> Snapshot {
        let mut services = Vec::with_capacity(config.services.len());
        let mut by_key = HashMap::new();
        let mut vips = HashSet::new();
        for (i, s) in config.services.into_iter().enumerate() {
            let weights: Vec<(&str, u32)> = s
                .backends
                .iter()
                .map(|b| (b.name.as_str(), if b.enabled { b.weight } else { 0 }))
                .collect();
            let scheduler = sched::build(s.scheduler, &weights, s.maglev_table_size, s.generation);
            let sched_backends = s
                .backends
                .iter()
                .map(|b| SchedBackend {
                    id: b.id,
                    weight: if b.enabled { b.weight } else { 0 },
                })
                .collect();
            let vip = addr_bytes(s.vip);
            by_key.insert(
                ServiceKey {
                    protocol: s.protocol.ip_number(),
                    vip,
                    port: s.port,
                },
                i as u32,
            );
            vips.insert(vip);
            services.push(Service {
                config: s,
                sched_backends,
                scheduler,
            });
        }
        let mut local = HashMap::new();
        let mut connected = Vec::new();
        for (i, itf) in config.interfaces.iter().enumerate() {
            for a in &itf.addresses {
                local.insert(addr_bytes(a.addr), i as u16);
                connected.push((a.network(), i as u16));
            }
        }
        connected.sort_by_key(|c| std::cmp::Reverse(c.0.len));
        let mut routes = config.routes;
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len));
        let neighbors = config
            .neighbors
            .iter()
            .map(|(a, m)| (addr_bytes(*a), *m))
            .collect();
        Snapshot {
            epoch,
            interfaces: config.interfaces,
            services,
            timeouts: config.timeouts,
            workers: config.workers.max(1),
            by_key,
            vips,
            local,
            connected,
            routes,
            neighbors,
        }
    }

    #[inline]
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.by_key.get(key).map(|&i| &self.services[i as usize])
    }

    #[inline]
    pub fn is_vip(&self, a: &[u8; 16]) -> bool {
        self.vips.contains(a)
    }

    /// The interface holding `a`, if it is one of our addresses.
    #[inline]
    pub fn local_interface(&self, a: &[u8; 16]) -> Option<u16> {
        self.local.get(a).copied()
    }

    /// Where to send a packet for `dst`: the interface and the next hop (dst itself when it is
    /// on a connected prefix, else the gateway of the longest matching route).
    pub fn next_hop(&self, dst: IpAddr) -> Option<(u16, IpAddr)> {
        if let Some(i) = self.on_link(dst) {
            return Some((i, dst));
        }
        let via = self.routes.iter().find(|(p, _)| p.contains(dst))?.1;
        self.on_link(via).map(|i| (i, via))
    }

    /// The interface whose connected prefix holds `a`.
    pub fn on_link(&self, a: IpAddr) -> Option<u16> {
        self.connected
            .iter()
            .find(|(p, _)| p.contains(a))
            .map(|(_, i)| *i)
    }

    #[inline]
    pub fn neighbor(&self, a: IpAddr) -> Option<MacAddr> {
        self.neighbors.get(&addr_bytes(a)).copied()
    }

    /// The first address of the family of `like` on interface `i` (a tunnel's outer source).
    pub fn interface_address(&self, i: u16, like: IpAddr) -> Option<IpAddr> {
        self.interfaces
            .get(i as usize)?
            .addresses
            .iter()
            .map(|p| p.addr)
            .find(|a| a.is_ipv4() == like.is_ipv4())
    }
}
