//! From the file as written to a [`Model`], or every reason why not, each naming its field.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::FieldError;
use super::file::{
    BackendSpec, ConfigFile, HealthCheckSpec, InterfaceSpec, ServiceSpec, TimeoutsSection,
};
use super::model::*;

/// The largest burst the dataplane's fixed arrays hold.
pub const MAX_BURST: u32 = dataplane::pipeline::MAX_BURST as u32;
/// Services and backends (in all services) the appliance holds: the workers size their per-id
/// counters for these, so a configuration beyond them is refused before anything starts.
pub const MAX_SERVICES: u32 = 4096;
pub const MAX_BACKENDS: u32 = 65536;
/// Flows per worker: 2^28, about 22 GB of flow table each (82 bytes a flow). A start with less
/// memory than the table needs fails with a message (exit 1) before anything runs.
pub const MAX_FLOW_CAPACITY: u32 = 1 << 28;
/// Backend weights, as ipvsadm takes them (0 = no new flows).
pub const MAX_WEIGHT: u32 = 65535;
/// Maglev tables larger than this take too long to build and too much memory per service.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 16_777_213; // the largest prime below 2^24

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Parses with `parse`; on failure records the error under `field` and returns None.
    fn parse<T>(&mut self, field: impl Into<String>, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.add(field, m)).ok()
    }
}

fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}

/// An address a client can send to and l4lb can answer from (RFC 1122 §3.2.1.3, RFC 4291):
/// not unspecified, loopback, multicast or broadcast, nor an IPv4 address written as IPv6.
fn usable_vip(a: IpAddr) -> Result<IpAddr, String> {
    let why = match a {
        IpAddr::V4(v) if v.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(v) if v.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v) if v.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v) if v.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v) if v.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v) if v.is_loopback() => Some("the loopback address"),
        IpAddr::V6(v) if v.is_multicast() => Some("a multicast address"),
        IpAddr::V6(v) if v.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 address (write the IPv4 address)")
        }
        _ => None,
    };
    match why {
        Some(w) => Err(format!("{a} is {w}, not a VIP")),
        None => Ok(a),
    }
}

/// `interfaces[i].kernel_interface` and `kernel_driver`: a name the kernel takes for a network
/// interface (1 to 15 bytes, no `/`, space or `:`; not `.` or `..`), one per interface.
fn kernel_interface(
    e: &mut Errors,
    i: usize,
    itf: &InterfaceSpec,
    seen: &mut HashMap<String, usize>,
) -> Option<KernelInterface> {
    let driver = match itf.kernel_driver.as_deref() {
        None | Some("auto") => KernelDriver::Auto,
        Some("tap") => KernelDriver::Tap,
        Some("virtio_user") => KernelDriver::VirtioUser,
        Some(other) => {
            e.add(
                format!("interfaces[{i}].kernel_driver"),
                format!("{other:?} is not one of \"auto\", \"tap\", \"virtio_user\""),
            );
            KernelDriver::Auto
        }
    };
    let Some(name) = itf.kernel_interface.as_deref() else {
        if itf.kernel_driver.is_some() {
            e.add(
                format!("interfaces[{i}].kernel_driver"),
                "given without kernel_interface (the name of the kernel interface)",
            );
        }
        return None;
    };
    let field = format!("interfaces[{i}].kernel_interface");
    let bad = if name.is_empty() || name.len() > 15 {
        Some("is not 1 to 15 bytes long (the kernel's IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Some("is not a name the kernel allows")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Some("has a character other than letters, digits, '-', '_' and '.'")
    } else {
        None
    };
    if let Some(why) = bad {
        e.add(field, format!("{name:?} {why}"));
        return None;
    }
    if let Some(first) = seen.insert(name.to_string(), i) {
        e.add(
            field,
            format!("{name:?} is already interfaces[{first}].kernel_interface"),
        );
        return None;
    }
    Some(KernelInterface {
        name: name.to_string(),
        driver,
    })
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn check_id(errors: &mut Errors, field: String, id: &str) {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || id.len() > 64 || !id.chars().all(ok_char) {
        errors.add(
            field,
            format!("{id:?} is not a valid id (1 to 64 of A-Z a-z 0-9 - _ .)"),
        );
    }
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Bytes an mbuf takes besides its data room: the rte_mbuf (128), the headroom (128), the
/// mempool's object header and padding (64).
const MBUF_OVERHEAD: u64 = 320;

/// The memory EAL may use when the arguments say (`-m MiB` or `--socket-mem a,b,...`), and
/// the argument that said it.
fn eal_memory_mib(args: &[String]) -> Option<(u64, String)> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        if flag == "-m" || flag == "--socket-mem" {
            let value = value.or_else(|| it.next().cloned())?;
            let mib = value
                .split(',')
                .map(|v| v.trim().parse::<u64>().ok())
                .sum::<Option<u64>>()?;
            return Some((mib, format!("{flag} {value}")));
        }
    }
    None
}

/// Validates a whole configuration file. All errors are reported, not just the first.
pub fn validate(f: &ConfigFile) -> Result<Model, Vec<FieldError>> {
    let mut e = Errors(Vec::new());

    let d = &f.dpdk;
    if !(1..=MAX_BURST).contains(&d.burst) {
        e.add(
            "dpdk.burst",
            format!("{} is not from 1 to {MAX_BURST}", d.burst),
        );
    }
    if d.flow_capacity == 0 {
        e.add("dpdk.flow_capacity", "must be at least 1");
    } else if d.flow_capacity > MAX_FLOW_CAPACITY {
        e.add(
            "dpdk.flow_capacity",
            format!(
                "{} is more than {MAX_FLOW_CAPACITY} (per worker, about 82 bytes each)",
                d.flow_capacity
            ),
        );
    }
    for (name, v) in [("dpdk.rx_desc", d.rx_desc), ("dpdk.tx_desc", d.tx_desc)] {
        if !(32..=32768).contains(&v) {
            e.add(name, format!("{v} is not from 32 to 32768"));
        }
    }
    if d.extra_mbufs > 64 << 20 {
        e.add(
            "dpdk.extra_mbufs",
            format!("{} is more than {}", d.extra_mbufs, 64u32 << 20),
        );
    } else if let Some((mib, arg)) = eal_memory_mib(&d.eal_args) {
        // What the extra mbufs alone take of the memory EAL is given (rte_mbuf and mempool
        // headers, headroom, data room); the rest of the pool needs some too.
        let per_mbuf = u64::from(d.mbuf_data_room) + MBUF_OVERHEAD;
        let need = (u64::from(d.extra_mbufs) * per_mbuf).div_ceil(1 << 20);
        if need >= mib {
            e.add(
                "dpdk.extra_mbufs",
                format!(
                    "{} mbufs of about {per_mbuf} bytes take {need} MiB, and EAL has {mib} MiB ({arg} in dpdk.eal_args)",
                    d.extra_mbufs
                ),
            );
        }
    }
    if !(256..=16384).contains(&d.mbuf_data_room) {
        e.add(
            "dpdk.mbuf_data_room",
            format!("{} is not from 256 to 16384", d.mbuf_data_room),
        );
    }
    if d.idle_sleep_us > 1_000_000 {
        e.add(
            "dpdk.idle_sleep_us",
            format!("{} is more than a second (1000000)", d.idle_sleep_us),
        );
    }

    let timeouts = timeouts(&f.timeouts, "timeouts").map_err(|errors| e.0.extend(errors));

    let r = &f.replies;
    if !(1..=1_000_000).contains(&r.closed_ports_per_second) {
        e.add(
            "replies.closed_ports_per_second",
            format!(
                "{} is not from 1 to 1000000 (closed_ports = false turns the answers off)",
                r.closed_ports_per_second
            ),
        );
    }

    let mut interfaces = Vec::new();
    let mut ports_seen: HashMap<u16, usize> = HashMap::new();
    let mut our_addresses: HashMap<IpAddr, String> = HashMap::new();
    let mut kernel_names: HashMap<String, usize> = HashMap::new();
    if f.interfaces.is_empty() {
        e.add(
            "interfaces",
            "at least one [[interfaces]] entry (a DPDK port) is needed",
        );
    }
    for (i, itf) in f.interfaces.iter().enumerate() {
        if let Some(first) = ports_seen.insert(itf.port, i) {
            e.add(
                format!("interfaces[{i}].port"),
                format!("port {} is already interfaces[{first}]", itf.port),
            );
        }
        if u32::from(itf.mtu) + 18 > u32::from(d.mbuf_data_room) {
            e.add(
                format!("interfaces[{i}].mtu"),
                format!(
                    "{} (+ 18 bytes of Ethernet header) does not fit in dpdk.mbuf_data_room {}",
                    itf.mtu, d.mbuf_data_room
                ),
            );
        }
        if !(576..=9216).contains(&itf.mtu) {
            e.add(
                format!("interfaces[{i}].mtu"),
                format!("{} is not from 576 to 9216", itf.mtu),
            );
        }
        let mut addresses = Vec::new();
        for (j, a) in itf.addresses.iter().enumerate() {
            let field = format!("interfaces[{i}].addresses[{j}]");
            if let Some(p) = e.parse(field.clone(), a.parse::<IpPrefix>()) {
                if let Some(other) = our_addresses.insert(p.addr, field.clone()) {
                    e.add(field, format!("{} is already {other}", p.addr));
                }
                addresses.push(p);
            }
        }
        let kernel = kernel_interface(&mut e, i, itf, &mut kernel_names);
        interfaces.push(Interface {
            port: itf.port,
            addresses,
            mtu: itf.mtu,
            kernel,
        });
    }

    let mut routes = Vec::new();
    for (i, r) in f.routes.iter().enumerate() {
        let prefix = e.parse(format!("routes[{i}].prefix"), r.prefix.parse::<IpPrefix>());
        let via = e.parse(format!("routes[{i}].via"), ip(&r.via));
        if let Some(p) = prefix
            && p.network() != p
        {
            e.add(
                format!("routes[{i}].prefix"),
                format!("{p} has host bits set (did you mean {}?)", p.network()),
            );
        }
        if let (Some(prefix), Some(via)) = (prefix, via) {
            if prefix.addr.is_ipv4() != via.is_ipv4() {
                e.add(
                    format!("routes[{i}].via"),
                    format!(
                        "{via} is {}, the prefix {prefix} is {}",
                        family(via),
                        family(prefix.addr)
                    ),
                );
            }
            routes.push(Route { prefix, via });
        }
    }

    let mut neighbors = Vec::new();
    let mut neighbor_seen: HashMap<IpAddr, usize> = HashMap::new();
    for (i, n) in f.neighbors.iter().enumerate() {
        let address = e.parse(format!("neighbors[{i}].address"), ip(&n.address));
        let mac = e.parse(format!("neighbors[{i}].mac"), n.mac.parse::<MacAddr>());
        if let Some(a) = address
            && let Some(first) = neighbor_seen.insert(a, i)
        {
            e.add(
                format!("neighbors[{i}].address"),
                format!("{a} is already neighbors[{first}]"),
            );
        }
        if let Some(m) = mac
            && m.is_multicast()
        {
            e.add(
                format!("neighbors[{i}].mac"),
                format!("{m} is a multicast address"),
            );
        }
        if let (Some(address), Some(mac)) = (address, mac) {
            neighbors.push(Neighbor { address, mac });
        }
    }

    let listen = e.parse(
        "api.listen",
        f.api.listen.parse::<SocketAddr>().map_err(|_| {
            format!(
                "{:?} is not an address:port (like 127.0.0.1:9180)",
                f.api.listen
            )
        }),
    );

    if let Some(l) = listen
        && !l.ip().is_loopback()
        && f.api.token.is_empty()
        && !f.api.allow_unauthenticated
    {
        e.add(
            "api.token",
            format!(
                "is required when api.listen ({l}) is not a loopback address: anyone who reaches it could change the services (set api.allow_unauthenticated = true to serve it without one)"
            ),
        );
    }

    let sync = validate_sync(&mut e, &f.sync);
    let first_v4 = interfaces
        .iter()
        .flat_map(|i| &i.addresses)
        .find_map(|p| match p.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        });
    let bgp = validate_bgp(&mut e, &f.bgp, first_v4);

    let services = validate_services(&mut e, &f.services, "services");
    for (i, svc) in services.iter().flatten().enumerate() {
        if let Some(itf) = our_addresses.get(&svc.vip) {
            e.add(
                format!("services[{i}].vip"),
                format!("{} is the address of {itf}, not a VIP", svc.vip),
            );
        }
    }

    if !e.0.is_empty() {
        return Err(e.0);
    }
    Ok(Model {
        dpdk: DpdkSettings {
            eal_args: d.eal_args.clone(),
            burst: d.burst as usize,
            idle_sleep_us: d.idle_sleep_us,
            flow_capacity: d.flow_capacity,
            rx_desc: d.rx_desc,
            tx_desc: d.tx_desc,
            extra_mbufs: d.extra_mbufs,
            mbuf_data_room: d.mbuf_data_room,
        },
        timeouts: timeouts.unwrap_or_default(), // Ok: its errors returned above
        replies: HostReplies {
            closed_ports: r.closed_ports,
            per_second: r.closed_ports_per_second,
        },
        interfaces,
        routes,
        neighbors,
        api: ApiSettings {
            listen: listen.expect("no errors, so it parsed"),
            token: Some(f.api.token.clone()).filter(|t| !t.is_empty()),
            state_file: Some(PathBuf::from(&f.api.state_file))
                .filter(|p| !p.as_os_str().is_empty()),
        },
        sync,
        bgp,
        services: services.expect("no errors, so every service parsed"),
    })
}

fn socket_address(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an address:port (like 198.19.0.1:8848)"))
}

/// `[sync]`: off unless `listen` is set; then its peers (at least one, none of them itself).
fn validate_sync(e: &mut Errors, s: &super::file::SyncSection) -> Option<SyncSettings> {
    if s.listen.is_empty() {
        if !s.peers.is_empty() {
            e.add("sync.listen", "is required when sync.peers is set");
        }
        return None;
    }
    let listen = e.parse("sync.listen", socket_address(&s.listen));
    if listen.is_some_and(|l| l.port() == 0) {
        e.add("sync.listen", "needs a port (not 0)");
    }
    if s.peers.is_empty() {
        e.add(
            "sync.peers",
            "needs at least one peer address:port when sync.listen is set",
        );
    }
    let mut peers = Vec::new();
    for (i, p) in s.peers.iter().enumerate() {
        let field = format!("sync.peers[{i}]");
        let Some(a) = e.parse(&field, socket_address(p)) else {
            continue;
        };
        if Some(a) == listen {
            e.add(&field, format!("{a} is sync.listen itself"));
        } else if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
            e.add(&field, format!("{a} is not a unicast address with a port"));
        } else if peers.contains(&a) {
            e.add(&field, format!("{a} is listed twice"));
        } else {
            peers.push(a);
        }
    }
    let sync_id = match u8::try_from(s.sync_id) {
        Ok(id) => Some(id),
        Err(_) => {
            e.add(
                "sync.sync_id",
                format!("{} is not from 0 to 255", s.sync_id),
            );
            None
        }
    };
    if s.max_records_per_second == 0 {
        e.add("sync.max_records_per_second", "must be at least 1");
    }
    if !(64..=1 << 24).contains(&s.ring_records) {
        e.add(
            "sync.ring_records",
            format!("{} is not from 64 to {}", s.ring_records, 1 << 24),
        );
    }
    Some(SyncSettings {
        listen: listen?,
        peers,
        sync_id: sync_id?,
        max_records_per_second: s.max_records_per_second,
        ring_records: s.ring_records,
        refresh_seconds: s.refresh_seconds,
    })
}

/// `[bgp]`: off unless `local_as` is set; then its neighbours and the speaker's settings.
fn validate_bgp(
    e: &mut Errors,
    b: &super::file::BgpSection,
    first_v4: Option<std::net::Ipv4Addr>,
) -> Option<BgpSettings> {
    if b.local_as == 0 {
        if !b.neighbors.is_empty() {
            e.add("bgp.local_as", "is required when bgp.neighbors is set");
        }
        return None;
    }
    let router_id = if b.router_id.is_empty() {
        let id = first_v4;
        if id.is_none() {
            e.add(
                "bgp.router_id",
                "is required when no interface has an IPv4 address",
            );
        }
        id
    } else {
        e.parse(
            "bgp.router_id",
            b.router_id
                .parse::<std::net::Ipv4Addr>()
                .map_err(|_| format!("{:?} is not an IPv4 address", b.router_id)),
        )
    };
    if b.neighbors.is_empty() {
        e.add(
            "bgp.neighbors",
            "needs at least one neighbor when bgp.local_as is set",
        );
    }
    let mut neighbors = Vec::new();
    for (i, n) in b.neighbors.iter().enumerate() {
        let Some(address) = e.parse(format!("bgp.neighbors[{i}].address"), ip(&n.address)) else {
            continue;
        };
        if n.remote_as == 0 {
            e.add(
                format!("bgp.neighbors[{i}].remote_as"),
                "must be an AS number from 1 to 4294967295",
            );
        } else if neighbors.iter().any(|x: &BgpNeighbor| x.address == address) {
            e.add(
                format!("bgp.neighbors[{i}].address"),
                format!("{address} is listed twice"),
            );
        } else {
            neighbors.push(BgpNeighbor {
                address,
                remote_as: n.remote_as,
            });
        }
    }
    if !(3..=65535).contains(&b.hold_time) {
        e.add(
            "bgp.hold_time",
            format!("{} is not from 3 to 65535 seconds", b.hold_time),
        );
    }
    if b.grace_period_ms > 600_000 {
        e.add(
            "bgp.grace_period_ms",
            format!("{} is more than 600000 (ten minutes)", b.grace_period_ms),
        );
    }
    if b.run_dir.is_empty() || !b.run_dir.starts_with('/') {
        e.add(
            "bgp.run_dir",
            format!("{:?} is not an absolute path", b.run_dir),
        );
    }
    if b.bird.is_empty() {
        e.add("bgp.bird", "names no program");
    }
    Some(BgpSettings {
        local_as: b.local_as,
        router_id: router_id?,
        neighbors,
        hold_time: b.hold_time,
        grace_period: std::time::Duration::from_millis(b.grace_period_ms),
        bird: PathBuf::from(&b.bird),
        run_dir: PathBuf::from(&b.run_dir),
    })
}

/// `at.name`, or just `name` at the top of a document (an API body).
fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

/// Validates a list of services (the file's, or the API's whole new set) under `path`.
pub fn validate_service_list(
    specs: &[ServiceSpec],
    path: &str,
) -> Result<Vec<Service>, Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    match validate_services(&mut e, specs, path) {
        Some(s) if e.0.is_empty() => Ok(s),
        _ => Err(e.0),
    }
}

/// Validates one service on its own (no comparison with others) with field names under `at`
/// (empty: the fields of an API body, `vip`, `backends[0].port`).
pub fn validate_service(spec: &ServiceSpec, at: &str) -> Result<Service, Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    match validate_one(&mut e, spec, at) {
        Some(s) if e.0.is_empty() => Ok(s),
        _ => Err(e.0),
    }
}

fn validate_services(e: &mut Errors, specs: &[ServiceSpec], path: &str) -> Option<Vec<Service>> {
    let before = e.0.len();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut endpoints: HashMap<(Protocol, IpAddr, u16), usize> = HashMap::new();
    // One-packet NAT services keep no flow: a reply finds its service by the backend's
    // endpoint, which must then name one service only.
    let mut one_packet: HashMap<(Protocol, IpAddr, u16), usize> = HashMap::new();
    let mut services = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(first) = ids.insert(&s.id, i) {
            e.add(
                format!("{at}.id"),
                format!("duplicate service id {:?} (also {path}[{first}])", s.id),
            );
        }
        let service = validate_one(e, s, &at);
        if let Some(svc) = &service
            && let Some(first) = endpoints.insert((svc.protocol, svc.vip, svc.port), i)
        {
            e.add(
                at.clone(),
                format!(
                    "{} {} port {} is already {path}[{first}] ({:?})",
                    svc.protocol, svc.vip, s.port, specs[first].id
                ),
            );
        }
        if let Some(svc) = &service
            && svc.one_packet
            && svc.forwarding == ForwardingMode::Nat
        {
            for (j, b) in svc.backends.iter().enumerate() {
                if let Some(first) = one_packet.insert((svc.protocol, b.address, b.port), i)
                    && first != i
                {
                    e.add(
                        format!("{at}.backends[{j}]"),
                        format!(
                            "{} port {} is also a backend of the one-packet nat service {path}[{first}] ({:?}): its replies could not tell the services apart",
                            b.address, b.port, specs[first].id
                        ),
                    );
                }
            }
        }
        services.extend(service);
    }
    check_limits(e, specs, path);
    (e.0.len() == before).then_some(services)
}

/// The counts the appliance can hold ([`MAX_SERVICES`], [`MAX_BACKENDS`]).
fn check_limits(e: &mut Errors, specs: &[ServiceSpec], path: &str) {
    if specs.len() > MAX_SERVICES as usize {
        e.add(
            path,
            format!(
                "{} services; the appliance holds at most {MAX_SERVICES}",
                specs.len()
            ),
        );
    }
    let backends: usize = specs.iter().map(|s| s.backends.len()).sum();
    if backends > MAX_BACKENDS as usize {
        e.add(
            path,
            format!(
                "{backends} backends in all services; the appliance holds at most {MAX_BACKENDS}"
            ),
        );
    }
}

/// One service's own fields and its backends; None if any is wrong.
fn validate_one(e: &mut Errors, s: &ServiceSpec, at: &str) -> Option<Service> {
    let before = e.0.len();
    check_id(e, join(at, "id"), &s.id);
    let protocol = e.parse(
        join(at, "protocol"),
        s.protocol.parse::<Protocol>().map_err(|x| x.to_string()),
    );
    let vip = e.parse(join(at, "vip"), ip(&s.vip).and_then(usable_vip));
    let persistence = persistence(e, s, vip, at);
    if s.port == 0 {
        if s.persistence_timeout == 0 {
            e.add(
                join(at, "port"),
                "0 (every port) is for a persistent dr or tun service: set persistence_timeout (ipvsadm refuses a zero port without -p too), or give a port from 1 to 65535",
            );
        } else if !matches!(s.forwarding.as_str(), "dr" | "tun") {
            e.add(
                join(at, "port"),
                "0 (every port) forwards with dr or tun: nat would need a backend port per flow",
            );
        }
        if s.health_check.kind != "none" && s.health_check.port.is_none() {
            e.add(
                join(at, "health_check.port"),
                "is required when the service's port is 0 (the backends have no port of their own)",
            );
        }
    }
    let scheduler = e.parse(
        join(at, "scheduler"),
        s.scheduler
            .parse::<SchedulerKind>()
            .map_err(|x| x.to_string()),
    );
    let forwarding = e.parse(
        join(at, "forwarding"),
        s.forwarding
            .parse::<ForwardingMode>()
            .map_err(|x| x.to_string()),
    );
    let scheduler_flags = scheduler_flags(e, &s.scheduler_flags, scheduler, at);
    if s.one_packet && protocol == Some(Protocol::Tcp) {
        e.add(
            join(at, "one_packet"),
            "is for udp services (ipvsadm --ops): a TCP connection needs its flow",
        );
    }
    let tunnel = tunnel(e, s, forwarding, at);
    let allow = client_prefixes(e, &s.allow, &join(at, "allow"), vip);
    let deny = client_prefixes(e, &s.deny, &join(at, "deny"), vip);
    let m = s.maglev_table_size;
    if !is_prime(m) || m > MAX_MAGLEV_TABLE_SIZE || (m as usize) < s.backends.len() {
        e.add(
            join(at, "maglev_table_size"),
            format!("{m} is not a prime from the number of backends to {MAX_MAGLEV_TABLE_SIZE} (Maglev needs M prime; 65537 is the default)"),
        );
    }
    let backends = validate_backends(e, &s.backends, at, vip, s.port, forwarding);
    let health = health_check(e, &s.health_check, &join(at, "health_check"));
    let on_down = match s.on_down.as_str() {
        "remove" => Some(OnDown::Remove),
        "inhibit" => Some(OnDown::Inhibit),
        other => {
            e.add(
                join(at, "on_down"),
                format!("{other:?} is not remove or inhibit"),
            );
            None
        }
    };
    let sorry = s.sorry_backend.as_ref().and_then(|b| {
        let at = join(at, "sorry_backend");
        let address = endpoint(e, &at, &b.address, b.port, vip, s.port, forwarding)?;
        if let Some(bs) = &backends
            && let Some(j) = bs.iter().position(|x| (x.address, x.port) == address)
        {
            e.add(
                at,
                format!("{} port {} is backends[{j}]", address.0, address.1),
            );
        }
        Some(address)
    });
    if e.0.len() != before {
        return None;
    }
    Some(Service {
        id: s.id.clone(),
        protocol: protocol?,
        vip: vip?,
        port: s.port,
        scheduler: scheduler?,
        scheduler_flags: scheduler_flags?,
        one_packet: s.one_packet,
        allow: allow?,
        deny: deny?,
        tunnel: tunnel?,
        persistence: persistence?,
        forwarding: forwarding?,
        maglev_table_size: m,
        backends: backends?,
        health: health?,
        on_down: on_down?,
        sorry,
    })
}

/// The flow timeouts of a `[timeouts]` section (field names under `at`): each at least 1 s.
pub fn timeouts(t: &TimeoutsSection, at: &str) -> Result<FlowTimeouts, Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    for (name, v) in [
        ("tcp_established", t.tcp_established),
        ("tcp_syn", t.tcp_syn),
        ("tcp_fin", t.tcp_fin),
        ("tcp_close", t.tcp_close),
        ("udp", t.udp),
    ] {
        if v == 0 {
            e.add(join(at, name), "must be at least 1 second");
        }
    }
    if !e.0.is_empty() {
        return Err(e.0);
    }
    Ok(FlowTimeouts {
        tcp_established: t.tcp_established,
        tcp_syn: t.tcp_syn,
        tcp_fin: t.tcp_fin,
        tcp_close: t.tcp_close,
        udp: t.udp,
    })
}

/// `scheduler_flags`: known names, each for the scheduler it belongs to.
fn scheduler_flags(
    e: &mut Errors,
    names: &[String],
    scheduler: Option<SchedulerKind>,
    at: &str,
) -> Option<SchedFlags> {
    let before = e.0.len();
    let mut flags = SchedFlags::default();
    for (i, name) in names.iter().enumerate() {
        let field = join(at, &format!("scheduler_flags[{i}]"));
        if let Err(x) = flags.set(name) {
            e.add(field, x.to_string());
            continue;
        }
        let Some(kind) = scheduler else { continue };
        let fits = match name.as_str() {
            "sh-fallback" | "sh-port" => kind == SchedulerKind::SourceHash,
            "mh-fallback" => matches!(kind, SchedulerKind::MaglevIpvs | SchedulerKind::Maglev),
            _ => kind == SchedulerKind::MaglevIpvs,
        };
        if !fits {
            let why = if name == "mh-port" && kind == SchedulerKind::Maglev {
                " (maglev hashes the whole tuple, the port with it; mh hashes the address only unless mh-port)".to_string()
            } else {
                format!(" (the scheduler is {kind})")
            };
            e.add(
                field,
                format!("{name} is a flag of the {} scheduler{why}", &name[..2]),
            );
        }
    }
    (e.0.len() == before).then_some(flags)
}

/// The largest connection threshold (IPVS keeps them in an int's range too).
pub const MAX_THRESHOLD: u32 = i32::MAX as u32;

/// The longest persistence, a year (ipvsadm takes any number of seconds).
pub const MAX_PERSISTENCE_TIMEOUT: u32 = 31_536_000;

/// `persistence_timeout`, `persistence_netmask` and `expire_quiescent_template`.
fn persistence(
    e: &mut Errors,
    s: &ServiceSpec,
    vip: Option<IpAddr>,
    at: &str,
) -> Option<Option<Persistence>> {
    let before = e.0.len();
    let t = s.persistence_timeout;
    if t > MAX_PERSISTENCE_TIMEOUT {
        e.add(
            join(at, "persistence_timeout"),
            format!("{t} is not from 0 (off) to {MAX_PERSISTENCE_TIMEOUT} seconds"),
        );
    }
    let max = if vip.is_some_and(|v| v.is_ipv6()) {
        128
    } else {
        32
    };
    if let Some(m) = s.persistence_netmask {
        if t == 0 {
            e.add(
                join(at, "persistence_netmask"),
                "needs a persistence_timeout (0 means no persistence)",
            );
        } else if !(1..=max).contains(&m) {
            e.add(
                join(at, "persistence_netmask"),
                format!("{m} is not a prefix length from 1 to {max}"),
            );
        }
    }
    if s.expire_quiescent_template && t == 0 {
        e.add(
            join(at, "expire_quiescent_template"),
            "needs a persistence_timeout (0 means no persistence)",
        );
    }
    if t > 0 && s.one_packet {
        e.add(
            join(at, "persistence_timeout"),
            "cannot persist a one_packet service: it keeps no flow to count",
        );
    }
    if e.0.len() != before {
        return None;
    }
    Some((t > 0).then(|| Persistence {
        timeout: t,
        netmask: s.persistence_netmask.unwrap_or(max),
        expire_quiescent: s.expire_quiescent_template,
    }))
}

/// `tunnel` and `tunnel_port`: a known type, other than ipip only for tun, a port for gue.
fn tunnel(
    e: &mut Errors,
    s: &ServiceSpec,
    forwarding: Option<ForwardingMode>,
    at: &str,
) -> Option<Tunnel> {
    let before = e.0.len();
    let t = match s.tunnel.as_str() {
        "ipip" => Some(Tunnel::Ipip),
        "gre" => Some(Tunnel::Gre),
        "gue" => match s.tunnel_port {
            Some(port @ 1..) => Some(Tunnel::Gue { port }),
            Some(0) => {
                e.add(join(at, "tunnel_port"), "0 is not a port (1 to 65535)");
                None
            }
            None => {
                e.add(
                    join(at, "tunnel_port"),
                    "is required with tunnel = \"gue\" (the backends' GUE port, ipvsadm --tun-port)",
                );
                None
            }
        },
        other => {
            e.add(
                join(at, "tunnel"),
                format!("{other:?} is not ipip, gue or gre"),
            );
            None
        }
    };
    if s.tunnel_port.is_some() && s.tunnel != "gue" {
        e.add(join(at, "tunnel_port"), "is for tunnel = \"gue\" only");
    }
    if s.tunnel != "ipip"
        && let Some(f) = forwarding
        && f != ForwardingMode::Tunnel
    {
        e.add(
            join(at, "tunnel"),
            format!("{} is for tun forwarding (the forwarding is {f})", s.tunnel),
        );
    }
    if e.0.len() != before {
        return None;
    }
    t
}

/// At most this many prefixes in an `allow` or a `deny` list (each new flow reads the lists).
pub const MAX_CLIENT_PREFIXES: usize = 256;

/// `allow` and `deny`: prefixes of the vip's family (a bare address is one host).
fn client_prefixes(
    e: &mut Errors,
    list: &[String],
    at: &str,
    vip: Option<IpAddr>,
) -> Option<Vec<IpPrefix>> {
    let before = e.0.len();
    if list.len() > MAX_CLIENT_PREFIXES {
        e.add(
            at,
            format!("{} prefixes; at most {MAX_CLIENT_PREFIXES}", list.len()),
        );
    }
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let field = format!("{at}[{i}]");
        let parsed = if text.contains('/') {
            text.parse::<IpPrefix>()
        } else {
            ip(text).map(|a| IpPrefix {
                addr: a,
                len: IpPrefix::max_len(a),
            })
        };
        let Some(p) = e.parse(field.clone(), parsed) else {
            continue;
        };
        if let Some(v) = vip
            && v.is_ipv4() != p.addr.is_ipv4()
        {
            e.add(
                field,
                format!(
                    "{text} is {}, the service's vip {v} is {}",
                    family(p.addr),
                    family(v)
                ),
            );
            continue;
        }
        out.push(p.network());
    }
    (e.0.len() == before).then_some(out)
}

/// `health_check`: its type, and timings a prober can keep (a timeout within the interval).
fn health_check(e: &mut Errors, h: &HealthCheckSpec, at: &str) -> Option<HealthCheck> {
    let before = e.0.len();
    let kind = match h.kind.as_str() {
        "none" => Some(CheckKind::None),
        "tcp" => Some(CheckKind::Tcp),
        "udp" => Some(CheckKind::Udp),
        "http" => Some(CheckKind::Http),
        other => {
            e.add(
                join(at, "type"),
                format!("{other:?} is not tcp, http, udp or none"),
            );
            None
        }
    };
    // Checked whatever the type: they are kept, and a later change of type uses them.
    if !h.path.starts_with('/') || h.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        e.add(
            join(at, "path"),
            format!(
                "{:?} is not a path (it starts with / and has no spaces or control characters)",
                h.path
            ),
        );
    }
    if !(100..=599).contains(&h.expect_status) {
        e.add(
            join(at, "expect_status"),
            format!("{} is not an HTTP status (100 to 599)", h.expect_status),
        );
    }
    if h.port == Some(0) {
        e.add(join(at, "port"), "0 is not a port (1 to 65535)");
    }
    if !(100..=3_600_000).contains(&h.interval_ms) {
        e.add(
            join(at, "interval_ms"),
            format!("{} is not from 100 to 3600000", h.interval_ms),
        );
    }
    if h.timeout_ms < 10 || h.timeout_ms > h.interval_ms {
        e.add(
            join(at, "timeout_ms"),
            format!(
                "{} is not from 10 to interval_ms ({})",
                h.timeout_ms, h.interval_ms
            ),
        );
    }
    for (name, v) in [("rise", h.rise), ("fall", h.fall)] {
        if !(1..=100).contains(&v) {
            e.add(join(at, name), format!("{v} is not from 1 to 100"));
        }
    }
    (e.0.len() == before).then(|| HealthCheck {
        kind: kind.expect("checked"),
        port: h.port,
        path: h.path.clone(),
        expect_status: h.expect_status,
        interval: std::time::Duration::from_millis(h.interval_ms),
        timeout: std::time::Duration::from_millis(h.timeout_ms),
        rise: h.rise,
        fall: h.fall,
    })
}

/// A backend's address and port (`at.address`, `at.port`): of the vip's family, not the vip,
/// and the service's port where the forwarding mode cannot change it.
fn endpoint(
    e: &mut Errors,
    at: &str,
    address: &str,
    port: Option<u16>,
    vip: Option<IpAddr>,
    service_port: u16,
    forwarding: Option<ForwardingMode>,
) -> Option<(IpAddr, u16)> {
    let before = e.0.len();
    let address = e.parse(format!("{at}.address"), ip(address));
    if let (Some(a), Some(v)) = (address, vip) {
        // tun can carry either family in either (4-in-6, 6-in-4); nat and dr cannot.
        if a.is_ipv4() != v.is_ipv4() && forwarding != Some(ForwardingMode::Tunnel) {
            e.add(
                format!("{at}.address"),
                format!(
                    "{a} is {}, the service's vip {v} is {}",
                    family(a),
                    family(v)
                ),
            );
        } else if a == v {
            e.add(
                format!("{at}.address"),
                format!("{a} is the service's own vip"),
            );
        }
    }
    let p = port.unwrap_or(service_port);
    // An inherited 0 is the service's error, reported there; a port-zero service's backends
    // have port 0 too.
    if port == Some(0) && service_port != 0 {
        e.add(format!("{at}.port"), "0 is not a port (1 to 65535)");
    } else if port.is_some()
        && p != service_port
        && let Some(mode @ (ForwardingMode::DirectRouting | ForwardingMode::Tunnel)) = forwarding
    {
        e.add(
            format!("{at}.port"),
            format!("{p} differs from the service port {service_port}; {mode} forwarding cannot change ports (leave it out or use nat)"),
        );
    }
    if e.0.len() != before {
        return None;
    }
    Some((address?, p))
}

fn validate_backends(
    e: &mut Errors,
    specs: &[BackendSpec],
    service_at: &str,
    vip: Option<IpAddr>,
    service_port: u16,
    forwarding: Option<ForwardingMode>,
) -> Option<Vec<Backend>> {
    let before = e.0.len();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut endpoints: HashMap<(IpAddr, u16), usize> = HashMap::new();
    let mut backends = Vec::new();
    for (j, b) in specs.iter().enumerate() {
        let at = join(service_at, &format!("backends[{j}]"));
        check_id(e, format!("{at}.id"), &b.id);
        if let Some(first) = ids.insert(&b.id, j) {
            e.add(
                format!("{at}.id"),
                format!(
                    "duplicate backend id {:?} (also {})",
                    b.id,
                    join(service_at, &format!("backends[{first}]"))
                ),
            );
        }
        let address = endpoint(e, &at, &b.address, b.port, vip, service_port, forwarding);
        if b.weight > MAX_WEIGHT {
            e.add(
                format!("{at}.weight"),
                format!("{} is not from 0 to {MAX_WEIGHT}", b.weight),
            );
        }
        if let Some((a, port)) = address
            && port != 0
            && let Some(first) = endpoints.insert((a, port), j)
        {
            e.add(
                at.clone(),
                format!(
                    "{a} port {port} is already {}",
                    join(service_at, &format!("backends[{first}]"))
                ),
            );
        }
        for (key, v) in [
            ("upper_threshold", b.upper_threshold),
            ("lower_threshold", b.lower_threshold),
        ] {
            if v > MAX_THRESHOLD {
                e.add(
                    format!("{at}.{key}"),
                    format!("{v} is not from 0 to {MAX_THRESHOLD}"),
                );
            }
        }
        if b.lower_threshold > 0 && b.upper_threshold == 0 {
            e.add(
                format!("{at}.lower_threshold"),
                "needs an upper_threshold (new flows stop at the upper one and start again below the lower one)",
            );
        } else if b.lower_threshold > b.upper_threshold {
            e.add(
                format!("{at}.lower_threshold"),
                format!(
                    "{} is above the upper_threshold {}",
                    b.lower_threshold, b.upper_threshold
                ),
            );
        }
        if let Some((address, port)) = address {
            backends.push(Backend {
                id: b.id.clone(),
                address,
                port,
                weight: b.weight,
                enabled: b.enabled,
                upper_threshold: b.upper_threshold,
                lower_threshold: b.lower_threshold,
            });
        }
    }
    (e.0.len() == before).then_some(backends)
}

#[cfg(test)]
mod tests;
