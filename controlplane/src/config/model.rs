//! The validated configuration: typed, checked, ready to build a dataplane snapshot from.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use dataplane::addr::{IpPrefix, MacAddr};
pub use dataplane::flow::FlowTimeouts;
pub use dataplane::forward::Tunnel;
pub use dataplane::service::{ForwardingMode, Protocol, SchedFlags, SchedulerKind};
pub use dataplane::snapshot::{HostReplies, Persistence};

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub dpdk: DpdkSettings,
    /// Seconds per flow state (the IPVS defaults unless configured).
    pub timeouts: FlowTimeouts,
    /// Answers on closed VIP ports.
    pub replies: HostReplies,
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub neighbors: Vec<Neighbor>,
    pub api: ApiSettings,
    /// Flow-state synchronisation (None: off).
    pub sync: Option<SyncSettings>,
    /// VIP announcement over BGP (None: off).
    pub bgp: Option<BgpSettings>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncSettings {
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub sync_id: u8,
    pub max_records_per_second: u32,
    pub ring_records: u32,
    pub refresh_seconds: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BgpSettings {
    pub local_as: u32,
    pub router_id: std::net::Ipv4Addr,
    pub neighbors: Vec<BgpNeighbor>,
    pub hold_time: u32,
    pub grace_period: std::time::Duration,
    pub bird: PathBuf,
    pub run_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BgpNeighbor {
    pub address: IpAddr,
    pub remote_as: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DpdkSettings {
    pub eal_args: Vec<String>,
    pub burst: usize,
    pub idle_sleep_us: u64,
    pub flow_capacity: u32,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub extra_mbufs: u32,
    pub mbuf_data_room: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub port: u16,
    pub addresses: Vec<IpPrefix>,
    pub mtu: u16,
    /// The kernel interface beside the port (the exception path), if configured.
    pub kernel: Option<KernelInterface>,
}

/// A kernel network interface l4lb creates beside a port: what the packet path does not
/// handle goes to it, and what the kernel sends there goes out of the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInterface {
    pub name: String,
    pub driver: KernelDriver,
}

/// What backs a kernel interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelDriver {
    /// virtio-user over vhost-net when `/dev/vhost-net` exists, else TAP.
    Auto,
    /// DPDK's `net_tap`: a TAP device (each packet a read or write of the device).
    Tap,
    /// DPDK's `net_virtio_user` over the kernel's vhost-net (rings shared with a kernel
    /// thread: DPDK's recommended exception path).
    VirtioUser,
}

impl KernelDriver {
    pub fn name(self) -> &'static str {
        match self {
            KernelDriver::Auto => "auto",
            KernelDriver::Tap => "tap",
            KernelDriver::VirtioUser => "virtio_user",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    pub prefix: IpPrefix,
    pub via: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub address: IpAddr,
    pub mac: MacAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub id: String,
    pub protocol: Protocol,
    pub vip: IpAddr,
    pub port: u16,
    pub scheduler: SchedulerKind,
    pub scheduler_flags: SchedFlags,
    pub one_packet: bool,
    /// Client prefixes that may open flows (empty: all), and those that may not.
    pub allow: Vec<IpPrefix>,
    pub deny: Vec<IpPrefix>,
    /// What TUN forwarding wraps packets in.
    pub tunnel: Tunnel,
    /// Persistence (ipvsadm `-p`, `-M`), if any.
    pub persistence: Option<Persistence>,
    pub forwarding: ForwardingMode,
    pub maglev_table_size: u32,
    pub backends: Vec<Backend>,
    pub health: HealthCheck,
    pub on_down: OnDown,
    /// Address and port of the backend that takes new flows while every other one is down.
    pub sorry: Option<(IpAddr, u16)>,
}

/// How a service's backends are checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// The port probed (None: each backend's own).
    pub port: Option<u16>,
    /// http: the path asked for and the status that means up (kept, and checked, whatever the
    /// type: an operator's value is never dropped).
    pub path: String,
    pub expect_status: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            kind: CheckKind::None,
            port: None,
            path: "/".into(),
            expect_status: 200,
            interval: Duration::from_millis(2000),
            timeout: Duration::from_millis(1000),
            rise: 2,
            fall: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    None,
    Tcp,
    Http,
    Udp,
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::None => "none",
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Udp => "udp",
        }
    }
}

/// What happens to the flows of a backend that goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDown {
    /// Removed: clients reconnect, to another backend.
    #[default]
    Remove,
    /// Kept: only new flows avoid the backend (weight 0, keepalived's inhibit_on_failure).
    Inhibit,
}

impl OnDown {
    pub fn name(self) -> &'static str {
        match self {
            OnDown::Remove => "remove",
            OnDown::Inhibit => "inhibit",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub id: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub enabled: bool,
    /// Connection limits (0: none).
    pub upper_threshold: u32,
    pub lower_threshold: u32,
}
