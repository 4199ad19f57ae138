//! The immutable configuration the packet path reads: services with their built schedulers,
//! interfaces, routes, neighbours, timeouts. The control side builds a whole new one for every
//! change; workers read the current one once per loop iteration (`shared` publishes it: an atomic
//! swap, and a retire list freed once every worker has moved on).

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use crate::addr::{IpPrefix, MacAddr};
use crate::flow::{Endpoint, FlowTimeouts, addr_bytes};
use crate::sched::{self, SchedBackend, Scheduler};
use crate::service::{BackendId, ForwardingMode, Protocol, SchedFlags, SchedulerKind, ServiceId};

/// An interface as the packet path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// The DPDK port id.
    pub port: u16,
    pub mac: MacAddr,
    pub addresses: Vec<IpPrefix>,
    pub mtu: u16,
    /// A kernel interface stands beside the port (`kernel_interface`): what the packet path
    /// does not handle itself goes there ([`Action::Kernel`](crate::pipeline::Action::Kernel))
    /// instead of being dropped.
    pub kernel: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub id: BackendId,
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub enabled: bool,
    /// The sorry backend: it takes new flows only while no other backend of the service does.
    pub sorry: bool,
    /// Connection limits (ipvsadm `-x`, `-y`; 0: none): see [`crate::sched::ConnBoard`].
    pub upper_threshold: u32,
    pub lower_threshold: u32,
}

/// What a service does beyond scheduling and forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceOptions {
    /// The sh and mh flags.
    pub flags: SchedFlags,
    /// UDP: every datagram is scheduled on its own and no flow is kept (ipvsadm `--ops`).
    pub one_packet: bool,
    /// Clients that may open flows (empty: all) and those that may not (deny wins).
    pub allow: Vec<IpPrefix>,
    pub deny: Vec<IpPrefix>,
    /// What TUN forwarding wraps packets in.
    pub tunnel: crate::forward::Tunnel,
    /// Persistence (ipvsadm `-p`), if any.
    pub persistence: Option<Persistence>,
}

/// A persistent service's settings (ipvsadm `-p`, `-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    /// Seconds a template lives after its last use or the end of its last flow (above 0).
    pub timeout: u32,
    /// The client's prefix length the templates are keyed by (32 or 128: one client).
    pub netmask: u8,
    /// A drained backend's (weight 0) templates stop taking new flows too, as IPVS's
    /// `expire_quiescent_template = 1`; by default (0) they keep them.
    pub expire_quiescent: bool,
}

impl Persistence {
    /// The prefix length in the 16-byte form (an IPv4 netmask counts from bit 96).
    #[inline]
    pub fn mask16(&self, v4: bool) -> u8 {
        if v4 {
            96 + self.netmask.min(32)
        } else {
            self.netmask.min(128)
        }
    }
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
    pub options: ServiceOptions,
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
    /// Next hops the control side could not resolve (no answer to its requests).
    pub failed_neighbors: Vec<IpAddr>,
    pub replies: HostReplies,
}

/// How the appliance answers, as a host, packets to a VIP that no service takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostReplies {
    /// TCP to a VIP port without a service: a reset; UDP: ICMP or ICMPv6 port unreachable.
    pub closed_ports: bool,
    /// At most this many such answers per worker in each second of its clock.
    pub per_second: u32,
}

impl Default for HostReplies {
    fn default() -> Self {
        HostReplies {
            closed_ports: true,
            per_second: 1000,
        }
    }
}

/// The filter bit of an address: its last four bytes (where VIPs of one network differ),
/// multiplied by a Fibonacci constant, top 8 bits.
#[inline]
fn vip_bit(a: &[u8; 16]) -> usize {
    vip_bit_low(
        u32::from_be_bytes([a[12], a[13], a[14], a[15]])
            ^ u32::from_be_bytes([a[8], a[9], a[10], a[11]]),
    )
}

#[inline(always)]
fn vip_bit_low(low: u32) -> usize {
    (low.wrapping_mul(0x9e37_79b9) >> 24) as usize
}

/// A service as the packet path reads it.
#[derive(Debug)]
pub struct Service {
    pub config: ServiceConfig,
    /// Parallel to `config.backends`, with effective weights (0 when disabled).
    pub sched_backends: Vec<SchedBackend>,
    /// Shared with the snapshots before and after this one while the service's scheduling
    /// inputs stay the same (a Maglev table takes milliseconds to build).
    pub scheduler: Arc<dyn Scheduler>,
    /// What new TCP flows get instead of `scheduler`'s pick while a SYN flood evicts
    /// half-open flows, when that pick depends on state (rr, wrr and the least-connection
    /// kinds): a backend a handshake's ACK finds again from its tuple alone.
    pub by_hash: sched::WeightedHash,
    key: ServiceKey,
    /// Parallel to `config.backends`: a persistence template may still give it new flows (it
    /// takes them, or it is drained and templates keep drained backends).
    pub template_keeps: Box<[bool]>,
    /// Parallel to `config.backends`: each one's address (16-byte form) and port, as flows
    /// keep them (built here once: from an `IpAddr` per new flow it took 30 instructions).
    pub endpoints: Box<[Endpoint]>,
    /// `options.allow` and `options.deny` as (network, mask) of the 16-byte form.
    allow: Box<[(u128, u128)]>,
    deny: Box<[(u128, u128)]>,
}

/// A prefix as (network, mask) of the 16-byte form (IPv4 mapped).
fn prefix_bits(p: &IpPrefix) -> (u128, u128) {
    let len = u32::from(p.len) + if p.addr.is_ipv4() { 96 } else { 0 };
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    (u128::from_be_bytes(addr_bytes(p.addr)) & mask, mask)
}

impl Service {
    /// The index of backend `b` if a persistence template may give it this new flow.
    #[inline]
    pub fn template_backend(&self, b: BackendId) -> Option<usize> {
        let i = self.config.backends.iter().position(|x| x.id == b)?;
        self.template_keeps[i].then_some(i)
    }

    /// The persistence template key length for this service's clients (16-byte form).
    #[inline]
    pub fn persist_mask(&self) -> Option<u8> {
        self.config
            .options
            .persistence
            .map(|p| p.mask16(self.config.vip.is_ipv4()))
    }

    /// The service's allow and deny lists let `client` open a flow (deny wins; an empty allow
    /// list allows every client).
    #[inline]
    pub fn admits(&self, client: &[u8; 16]) -> bool {
        if self.allow.is_empty() && self.deny.is_empty() {
            return true;
        }
        let a = u128::from_be_bytes(*client);
        let within = |l: &[(u128, u128)]| l.iter().any(|&(net, mask)| a & mask == net);
        (self.allow.is_empty() || within(&self.allow)) && !within(&self.deny)
    }

    /// True if a flow with `key` is one of this service's.
    #[inline]
    pub fn matches(&self, key: &crate::flow::FlowKey) -> bool {
        self.key.vip == key.vip
            && (self.key.port == key.vip_port || self.key.port == 0)
            && self.key.protocol == key.protocol
    }
}

/// Where packets for one address go, resolved when the snapshot is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub interface: u16,
    pub next_hop: IpAddr,
    /// The next hop's MAC; None while it is not known.
    pub dst_mac: Option<MacAddr>,
    /// The next hop did not answer the control side's requests: nothing is held for it, and a
    /// backend behind it takes no new flows.
    pub failed: bool,
    /// The egress interface's MAC.
    pub src_mac: MacAddr,
    /// The address itself is on a connected prefix (direct routing needs that).
    pub on_link: bool,
    /// The egress interface's first address of the same family (a tunnel's outer source).
    pub tunnel_src: Option<IpAddr>,
    /// `dst_mac` then `src_mac`, the first 12 bytes of a frame sent this way, for the fast
    /// paths to write in two stores (the first six are zero while `dst_mac` is None).
    pub macs: [u8; 12],
}

/// [`Route::macs`] of a next hop's MAC and the interface's.
fn route_macs(dst: Option<MacAddr>, src: MacAddr) -> [u8; 12] {
    let mut m = [0; 12];
    m[..6].copy_from_slice(&dst.unwrap_or(MacAddr([0; 6])).0);
    m[6..].copy_from_slice(&src.0);
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceKey {
    pub protocol: u8,
    pub vip: [u8; 16],
    pub port: u16,
}

/// The services by [`ServiceKey`]: open addressing over a power of two of slots (at most half
/// of them used), linear probing, keys compared as three words. A new flow looks its service up
/// here; through hashbrown and foldhash that took 71 instructions, here about 30. Built once
/// per snapshot; the keys are the configuration's, so no seed is needed against collisions
/// chosen from outside.
#[derive(Debug)]
struct ServiceTable {
    /// (the key's words, index into `Snapshot::services`); `EMPTY` in the index: free.
    slots: Box<[([u64; 3], u32)]>,
    shift: u32,
}

impl ServiceTable {
    const EMPTY: u32 = u32::MAX;

    #[inline(always)]
    fn words(k: &ServiceKey) -> [u64; 3] {
        let w = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        [
            w(&k.vip[..8]),
            w(&k.vip[8..]),
            u64::from(k.port) | u64::from(k.protocol) << 16,
        ]
    }

    /// The home slot: one 64x64->128 multiply of the folded words, its top bits.
    #[inline(always)]
    fn home(&self, w: &[u64; 3]) -> usize {
        let f = crate::flow::folded_multiply(
            w[0] ^ w[1].rotate_left(29) ^ 0x243f_6a88_85a3_08d3,
            w[2] ^ w[1] ^ 0x1319_8a2e_0370_7344,
        );
        (f.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    fn new(keys: impl ExactSizeIterator<Item = ServiceKey>) -> ServiceTable {
        let bits = (keys.len() * 2).max(8).next_power_of_two().trailing_zeros();
        let mut t = ServiceTable {
            slots: vec![([0; 3], Self::EMPTY); 1 << bits].into_boxed_slice(),
            shift: 64 - bits,
        };
        for (i, k) in keys.enumerate() {
            let w = Self::words(&k);
            let mut at = t.home(&w);
            // A key listed twice: the later one, as a map's insert would.
            while t.slots[at].1 != Self::EMPTY && t.slots[at].0 != w {
                at = (at + 1) & (t.slots.len() - 1);
            }
            t.slots[at] = (w, i as u32);
        }
        t
    }

    #[inline(always)]
    fn get(&self, k: &ServiceKey) -> Option<u32> {
        let w = Self::words(k);
        let mut at = self.home(&w);
        loop {
            let (kw, i) = &self.slots[at];
            if *i == Self::EMPTY {
                return None;
            }
            // Word by word: compared as arrays they went through the stack.
            if kw[0] == w[0] && kw[1] == w[1] && kw[2] == w[2] {
                return Some(*i);
            }
            at = (at + 1) & (self.slots.len() - 1);
        }
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub epoch: u64,
    pub interfaces: Vec<InterfaceConfig>,
    pub services: Vec<Service>,
    pub timeouts: FlowTimeouts,
    pub replies: HostReplies,
    pub workers: u16,
    by_key: ServiceTable,
    /// Index into `services` per service id (u32::MAX: none).
    by_id: Vec<u32>,
    vips: HashSet<[u8; 16]>,
    /// A one-hash Bloom filter of the VIPs: most packets that are not to a VIP (NAT replies)
    /// skip the flow and service lookups on three instructions.
    vip_filter: [u64; 4],
    /// Our own addresses, with the interface that holds each.
    local: HashMap<[u8; 16], u16>,
    /// Addresses that are ours, so never a sender's: our own, the VIPs, and the broadcast
    /// address of each connected IPv4 subnet; with a Bloom filter like `vip_filter`'s.
    ours: HashSet<[u8; 16]>,
    ours_filter: [u64; 4],
    /// Connected prefixes (interface index), longest first.
    connected: Vec<(IpPrefix, u16)>,
    /// Routes, longest prefix first.
    routes: Vec<(IpPrefix, IpAddr)>,
    neighbors: HashMap<[u8; 16], MacAddr>,
    /// Next hops that failed to resolve (never one with a MAC above).
    failed: HashSet<[u8; 16]>,
    /// Per backend id: its route, resolved once here instead of for every packet.
    backend_routes: Vec<Option<Route>>,
    /// Per backend id of a TUN service: the outer headers of its IPv4-in-IPv4 packets, when
    /// the backend is IPv4 and its route resolved, not failed, from an IPv4 address.
    tunnels4: Vec<Option<crate::forward::Outer4Template>>,
    /// For the fast path of NAT replies: the IPv4 connected prefixes (network, mask), and the
    /// IPv4 routes (network, mask, the route through their gateway), in `routes`' order.
    connected4: Vec<(u32, u32)>,
    routes4: Vec<(u32, u32, Option<Route>)>,
    /// The same for IPv6, in 128-bit words.
    connected6: Vec<(u128, u128)>,
    routes6: Vec<(u128, u128, Option<Route>)>,
    /// The backends of one-packet NAT services, by (protocol, address, port): their replies
    /// find no flow and are translated back from this (service index, backend).
    one_packet_replies: HashMap<(u8, [u8; 16], u16), (u32, BackendId)>,
    /// Per family (IPv6, IPv4): while persistent NAT services exist, the shortest of their
    /// netmasks (16-byte form): NAT flows are then owned by the client's address under it
    /// ([`crate::pipeline::nat_owner`]).
    pub nat_steering: [Option<u8>; 2],
    /// Some service has port 0 (every port of its VIP).
    port_zero: bool,
}

impl Snapshot {
    pub fn build(config: SnapshotConfig, epoch: u64) -> Snapshot {
        Snapshot::build_after(config, epoch, None)
    }

    /// Like [`build`](Snapshot::build), reusing the schedulers of `previous` for services
    /// whose scheduling inputs are unchanged: the same id, scheduler kind, Maglev table size
    /// and generation, and the same backends (names and effective weights) in the same order.
    pub fn build_after(
        config: SnapshotConfig,
        epoch: u64,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let mut vips = HashSet::new();
        let mut keys = Vec::with_capacity(config.services.len());
        for s in &config.services {
            let vip = addr_bytes(s.vip);
            let key = ServiceKey {
                protocol: s.protocol.ip_number(),
                vip,
                port: s.port,
            };
            vips.insert(vip);
            keys.push(key);
        }
        let by_key = ServiceTable::new(keys.iter().copied());
        let mut local = HashMap::new();
        let mut connected = Vec::new();
        for (i, itf) in config.interfaces.iter().enumerate() {
            for a in &itf.addresses {
                local.insert(addr_bytes(a.addr), i as u16);
                connected.push((a.network(), i as u16));
            }
        }
        connected.sort_by_key(|c| std::cmp::Reverse(c.0.len));
        let broadcasts = connected.iter().filter_map(|(p, _)| match p.addr {
            IpAddr::V4(a) if p.len <= 30 => Some(addr_bytes(IpAddr::V4(
                (u32::from(a) | u32::MAX >> p.len).into(),
            ))),
            _ => None,
        });
        let ours: HashSet<[u8; 16]> = local
            .keys()
            .copied()
            .chain(vips.iter().copied())
            .chain(broadcasts)
            .collect();
        let mut ours_filter = [0u64; 4];
        for a in &ours {
            let bit = vip_bit(a);
            ours_filter[bit / 64] |= 1 << (bit % 64);
        }
        let mut routes = config.routes;
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len));
        let neighbors: HashMap<[u8; 16], MacAddr> = config
            .neighbors
            .iter()
            .map(|(a, m)| (addr_bytes(*a), *m))
            .collect();
        let failed = config
            .failed_neighbors
            .iter()
            .map(|a| addr_bytes(*a))
            .filter(|a| !neighbors.contains_key(a))
            .collect();
        let mut snap = Snapshot {
            epoch,
            interfaces: config.interfaces,
            services: Vec::with_capacity(config.services.len()),
            timeouts: config.timeouts,
            replies: config.replies,
            workers: config.workers.max(1),
            by_key,
            vips,
            local,
            ours,
            ours_filter,
            connected,
            routes,
            neighbors,
            failed,
            backend_routes: Vec::new(),
            tunnels4: Vec::new(),
            connected4: Vec::new(),
            routes4: Vec::new(),
            connected6: Vec::new(),
            routes6: Vec::new(),
            one_packet_replies: HashMap::new(),
            nat_steering: [None; 2],
            port_zero: config.services.iter().any(|s| s.port == 0),
            by_id: Vec::new(),
            vip_filter: [0; 4],
        };
        let max_id = config
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .map(|b| b.id.0 as usize + 1)
            .max()
            .unwrap_or(0);
        let mut backend_routes = vec![None; max_id];
        let mut tunnels4 = vec![None; max_id];
        for s in &config.services {
            for b in &s.backends {
                let route = snap.route(b.address);
                backend_routes[b.id.0 as usize] = route;
                if let (ForwardingMode::Tunnel, IpAddr::V4(dst), Some(r)) =
                    (s.forwarding, b.address, route)
                    && let (false, Some(IpAddr::V4(src))) = (r.failed, r.tunnel_src)
                {
                    let mtu = snap.interfaces[usize::from(r.interface)].mtu;
                    tunnels4[b.id.0 as usize] =
                        crate::forward::Outer4Template::new(s.options.tunnel, src, dst, mtu);
                }
            }
        }
        for (s, key) in config.services.into_iter().zip(keys) {
            // A backend takes new flows while it is enabled and its next hop has not failed; the sorry
            // backend only while no other one does.
            let mut sched_backends: Vec<SchedBackend> = s
                .backends
                .iter()
                .map(|b| {
                    let failed = backend_routes[b.id.0 as usize].is_some_and(|r| r.failed);
                    SchedBackend {
                        id: b.id,
                        weight: if b.enabled && !failed { b.weight } else { 0 },
                    }
                })
                .collect();
            let others_up = s
                .backends
                .iter()
                .zip(&sched_backends)
                .any(|(b, sb)| !b.sorry && sb.weight > 0);
            for (b, sb) in s.backends.iter().zip(sched_backends.iter_mut()) {
                if b.sorry && others_up {
                    sb.weight = 0;
                }
            }
            let weights: Vec<(&str, u32)> = s
                .backends
                .iter()
                .zip(&sched_backends)
                .map(|(b, sb)| (b.name.as_str(), sb.weight))
                .collect();
            let reusable = previous.and_then(|p| p.service_by_id(s.id)).filter(|p| {
                let c = &p.config;
                c.scheduler == s.scheduler
                    && c.options.flags == s.options.flags
                    && c.maglev_table_size == s.maglev_table_size
                    && c.generation == s.generation
                    && c.backends.len() == weights.len()
                    && c.backends
                        .iter()
                        .zip(&p.sched_backends)
                        .zip(&weights)
                        .all(|((b, sb), (name, w))| b.name == *name && sb.weight == *w)
            });
            let scheduler = match reusable {
                Some(p) => Arc::clone(&p.scheduler),
                None => Arc::from(sched::build(
                    s.scheduler,
                    s.options.flags,
                    &weights,
                    s.maglev_table_size,
                    s.generation,
                )),
            };
            let by_hash = sched::WeightedHash::new(sched_backends.iter().map(|b| b.weight));
            if s.options.one_packet && s.forwarding == ForwardingMode::Nat {
                for b in &s.backends {
                    snap.one_packet_replies
                        .entry((key.protocol, addr_bytes(b.address), b.port))
                        .or_insert((snap.services.len() as u32, b.id));
                }
            }
            let expire_quiescent = s.options.persistence.is_some_and(|p| p.expire_quiescent);
            let template_keeps = s
                .backends
                .iter()
                .zip(&sched_backends)
                .map(|(b, sb)| {
                    let failed = backend_routes[b.id.0 as usize].is_some_and(|r| r.failed);
                    !b.sorry
                        && (sb.weight > 0
                            || b.weight == 0 && b.enabled && !failed && !expire_quiescent)
                })
                .collect();
            if s.forwarding == ForwardingMode::Nat
                && let Some(p) = s.options.persistence
            {
                let v4 = s.vip.is_ipv4();
                let m = p.mask16(v4);
                let steer = &mut snap.nat_steering[usize::from(v4)];
                *steer = Some(steer.map_or(m, |old| old.min(m)));
            }
            let endpoints = s
                .backends
                .iter()
                .map(|b| Endpoint {
                    addr: addr_bytes(b.address),
                    port: b.port,
                })
                .collect();
            snap.services.push(Service {
                template_keeps,
                endpoints,
                allow: s.options.allow.iter().map(prefix_bits).collect(),
                deny: s.options.deny.iter().map(prefix_bits).collect(),
                config: s,
                sched_backends,
                scheduler,
                by_hash,
                key,
            });
        }
        for (i, svc) in snap.services.iter().enumerate() {
            let id = svc.config.id.0 as usize;
            if snap.by_id.len() <= id {
                snap.by_id.resize(id + 1, u32::MAX);
            }
            snap.by_id[id] = i as u32;
        }
        for v in &snap.vips {
            let bit = vip_bit(v);
            snap.vip_filter[bit / 64] |= 1 << (bit % 64);
        }
        snap.backend_routes = backend_routes;
        snap.tunnels4 = tunnels4;
        let net4 = |p: &IpPrefix| match p.addr {
            IpAddr::V4(a) => {
                let mask = if p.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(p.len.min(32)))
                };
                Some((u32::from(a) & mask, mask))
            }
            IpAddr::V6(_) => None,
        };
        snap.connected4 = snap.connected.iter().filter_map(|(p, _)| net4(p)).collect();
        snap.routes4 = snap
            .routes
            .iter()
            .filter_map(|(p, via)| {
                let (net, mask) = net4(p)?;
                Some((net, mask, snap.gateway_of(p, *via)))
            })
            .collect();
        let net6 = |p: &IpPrefix| match p.addr {
            IpAddr::V6(a) => {
                let mask = if p.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(p.len.min(128)))
                };
                Some((u128::from(a) & mask, mask))
            }
            IpAddr::V4(_) => None,
        };
        snap.connected6 = snap.connected.iter().filter_map(|(p, _)| net6(p)).collect();
        snap.routes6 = snap
            .routes
            .iter()
            .filter_map(|(p, via)| {
                let (net, mask) = net6(p)?;
                Some((net, mask, snap.gateway_of(p, *via)))
            })
            .collect();
        snap
    }

    /// Resolves where packets for `dst` go (None: no connected prefix or route reaches it).
    pub fn route(&self, dst: IpAddr) -> Option<Route> {
        let (interface, next_hop) = self.next_hop(dst)?;
        let itf = &self.interfaces[interface as usize];
        let dst_mac = self.neighbor(next_hop);
        Some(Route {
            interface,
            next_hop,
            dst_mac,
            failed: self.failed.contains(&addr_bytes(next_hop)),
            src_mac: itf.mac,
            on_link: next_hop == dst,
            tunnel_src: self.interface_address(interface, dst),
            macs: route_macs(dst_mac, itf.mac),
        })
    }

    /// [`route`](Snapshot::route) to an IPv4 client that is not on a connected prefix (a NAT
    /// reply's destination), resolved when the snapshot was built; None for one on link or
    /// without a route, which `route` answers.
    #[inline]
    pub fn gateway_route4(&self, dst: [u8; 4]) -> Option<&Route> {
        let a = u32::from_be_bytes(dst);
        if self.connected4.iter().any(|&(net, mask)| a & mask == net) {
            return None;
        }
        self.routes4
            .iter()
            .find(|&&(net, mask, _)| a & mask == net)?
            .2
            .as_ref()
    }

    /// What [`route`](Snapshot::route) answers for an address of prefix `p` (routed via
    /// `via`) that is not on link.
    fn gateway_of(&self, p: &IpPrefix, via: IpAddr) -> Option<Route> {
        self.on_link(via).map(|interface| {
            let (dst_mac, src_mac) = (self.neighbor(via), self.interfaces[interface as usize].mac);
            Route {
                interface,
                next_hop: via,
                dst_mac,
                failed: self.failed.contains(&addr_bytes(via)),
                src_mac,
                on_link: false,
                tunnel_src: self.interface_address(interface, p.addr),
                macs: route_macs(dst_mac, src_mac),
            }
        })
    }

    /// [`gateway_route4`](Snapshot::gateway_route4) of an IPv6 client.
    #[inline]
    pub fn gateway_route6(&self, dst: &[u8; 16]) -> Option<&Route> {
        let a = u128::from_be_bytes(*dst);
        if self.connected6.iter().any(|&(net, mask)| a & mask == net) {
            return None;
        }
        self.routes6
            .iter()
            .find(|&&(net, mask, _)| a & mask == net)?
            .2
            .as_ref()
    }

    /// The route to a backend of this snapshot, resolved when it was built (None for a backend
    /// it does not configure, e.g. one removed while its flows live on).
    #[inline]
    pub fn backend_route(&self, id: BackendId) -> Option<&Route> {
        self.backend_routes.get(id.0 as usize)?.as_ref()
    }

    /// The outer headers of a TUN backend's IPv4-in-IPv4 packets, prepared when this snapshot
    /// was built (see the field).
    #[inline]
    pub fn tunnel4(&self, id: BackendId) -> Option<&crate::forward::Outer4Template> {
        self.tunnels4.get(id.0 as usize)?.as_ref()
    }

    /// False: `a` is certainly not a VIP. True: it may be.
    #[inline]
    pub fn maybe_vip(&self, a: &[u8; 16]) -> bool {
        let bit = vip_bit(a);
        self.vip_filter[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// [`maybe_vip`](Snapshot::maybe_vip) of an IPv4 address (the same bit as its mapped form).
    #[inline(always)]
    pub fn maybe_vip4(&self, a: [u8; 4]) -> bool {
        let bit = vip_bit_low(u32::from_be_bytes(a) ^ 0xffff);
        self.vip_filter[bit / 64] & (1 << (bit % 64)) != 0
    }

    #[inline]
    pub fn service_by_id(&self, id: ServiceId) -> Option<&Service> {
        let i = *self.by_id.get(id.0 as usize)?;
        self.services.get(i as usize)
    }

    /// The one-packet NAT service and backend whose endpoint (`protocol`, `addr`, `port`) sent a
    /// reply that no flow knows.
    #[inline]
    pub fn one_packet_reply(
        &self,
        protocol: u8,
        addr: &[u8; 16],
        port: u16,
    ) -> Option<(&Service, BackendId)> {
        if self.one_packet_replies.is_empty() {
            return None;
        }
        let &(i, b) = self.one_packet_replies.get(&(protocol, *addr, port))?;
        Some((&self.services[i as usize], b))
    }

    /// The service at `key`, or the VIP's port-zero service (every port) when there is one and
    /// no service has that port.
    #[inline]
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        let i = match self.by_key.get(key) {
            Some(i) => i,
            None if self.port_zero => self.port_zero_service(key)?,
            None => return None,
        };
        self.services.get(i as usize)
    }

    /// The index of the VIP's port-zero service, for a key no service has.
    #[inline(never)]
    fn port_zero_service(&self, key: &ServiceKey) -> Option<u32> {
        self.by_key.get(&ServiceKey { port: 0, ..*key })
    }

    #[inline]
    pub fn is_vip(&self, a: &[u8; 16]) -> bool {
        self.vips.contains(a)
    }

    /// True if a packet from `src` (a view's 16-byte form; `v6`: from an IPv6 header) must be
    /// neither answered, forwarded nor given a flow: a martian address
    /// ([`addr::is_martian_source`](crate::addr::is_martian_source)), or one of ours — our
    /// addresses, a VIP, a connected subnet's broadcast (RFC 1812 5.3.7).
    #[inline]
    pub fn is_martian_source(&self, src: &[u8; 16], v6: bool) -> bool {
        if crate::addr::is_martian_source(src, v6) {
            return true;
        }
        let bit = vip_bit(src);
        self.ours_filter[bit / 64] & (1 << (bit % 64)) != 0 && self.ours.contains(src)
    }

    /// The interface holding `a`, if it is one of our addresses.
    #[inline]
    pub fn local_interface(&self, a: &[u8; 16]) -> Option<u16> {
        self.local.get(a).copied()
    }

    /// `local_interface(a).is_some()`, with the Bloom filter of our addresses first: most
    /// addresses (every client's) are answered by one bit.
    #[inline(always)]
    pub fn is_local(&self, a: &[u8; 16]) -> bool {
        let bit = vip_bit(a);
        self.ours_filter[bit / 64] & (1 << (bit % 64)) != 0 && self.local.contains_key(a)
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

    /// What this snapshot says of next hop `a`, for the packets a worker holds for it.
    pub fn resolution(&self, a: IpAddr) -> crate::neighbor::Resolution {
        use crate::neighbor::Resolution;
        let k = addr_bytes(a);
        match self.neighbors.get(&k) {
            Some(m) => Resolution::Resolved(*m),
            None if self.failed.contains(&k) => Resolution::Failed,
            None => Resolution::Pending,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(protocol: u8, vip: [u8; 16], port: u16) -> ServiceKey {
        ServiceKey {
            protocol,
            vip,
            port,
        }
    }

    proptest! {
        /// The service table answers as a map of the same keys would: every key listed finds
        /// the index of its last listing, any other key nothing; keys that differ in one byte
        /// or only in protocol or port are told apart.
        #[test]
        fn the_service_table_answers_as_a_map(
            listed in proptest::collection::vec((0u8..3, 0u8..4, any::<u8>(), 0u16..4), 0..60),
            asked in proptest::collection::vec((0u8..3, 0u8..4, any::<u8>(), 0u16..4), 0..60),
        ) {
            let k = |(p, a, b, port): (u8, u8, u8, u16)| {
                let mut vip = addr_bytes(IpAddr::from([198, 18, a, b]));
                if a == 3 {
                    vip = addr_bytes(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(b)]));
                }
                key([6, 17, 132][usize::from(p)], vip, port)
            };
            let keys: Vec<ServiceKey> = listed.iter().copied().map(k).collect();
            let t = ServiceTable::new(keys.iter().copied());
            prop_assert!(t.slots.len() >= 2 * keys.len() && t.slots.len().is_power_of_two());
            let mut model = std::collections::HashMap::new();
            for (i, key) in keys.iter().enumerate() {
                model.insert(ServiceTable::words(key), i as u32);
            }
            for key in keys.iter().copied().chain(asked.into_iter().map(k)) {
                prop_assert_eq!(t.get(&key), model.get(&ServiceTable::words(&key)).copied());
            }
        }
    }

    #[test]
    fn a_run_of_colliding_keys_wraps_around_the_end_of_the_table() {
        // Four keys whose home is the last of 8 slots: they take it and the first three.
        let vip = addr_bytes(IpAddr::from([198, 18, 0, 1]));
        let probe = ServiceTable::new(std::iter::empty());
        assert_eq!(probe.slots.len(), 8);
        let keys: Vec<ServiceKey> = (0..u16::MAX)
            .map(|p| key(17, vip, p))
            .filter(|k| probe.home(&ServiceTable::words(k)) == 7)
            .take(4)
            .collect();
        assert_eq!(keys.len(), 4);
        let t = ServiceTable::new(keys.iter().copied());
        assert_eq!(t.slots.len(), 8);
        let at: Vec<u32> = t.slots.iter().map(|s| s.1).collect();
        assert_eq!(at, [1, 2, 3, u32::MAX, u32::MAX, u32::MAX, u32::MAX, 0]);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.get(k), Some(i as u32));
        }
        // A key whose home is taken ends its search at the first free slot.
        let other = (0..u16::MAX)
            .map(|p| key(6, vip, p))
            .find(|k| probe.home(&ServiceTable::words(k)) == 7)
            .unwrap();
        assert_eq!(t.get(&other), None);
    }
}
