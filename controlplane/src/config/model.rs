//! The validated configuration: typed, checked, ready to build a dataplane snapshot from.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use dataplane::addr::{IpPrefix, MacAddr};
pub use dataplane::flow::FlowTimeouts;
pub use dataplane::service::{ForwardingMode, Protocol, SchedulerKind};
pub use dataplane::snapshot::HostReplies;

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
    pub services: Vec<Service>,
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
    pub forwarding: ForwardingMode,
    pub maglev_table_size: u32,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub id: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub enabled: bool,
}
