//! The file as written: serde structs with defaults, unknown keys refused. Addresses and names
//! stay strings here so that validation can say exactly which one is wrong and why.

use serde::{Deserialize, Serialize};

use super::FieldError;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub dpdk: DpdkSection,
    pub timeouts: TimeoutsSection,
    pub replies: RepliesSection,
    pub interfaces: Vec<InterfaceSpec>,
    pub routes: Vec<RouteSpec>,
    pub neighbors: Vec<NeighborSpec>,
    pub api: ApiSection,
    pub sync: SyncSection,
    pub bgp: BgpSection,
    pub services: Vec<ServiceSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpdkSection {
    pub eal_args: Vec<String>,
    /// Packets per rx/tx burst.
    pub burst: u32,
    /// Microseconds a worker that polled nothing sleeps (0 = busy-poll, the DPDK way).
    pub idle_sleep_us: u64,
    /// Flow entries per worker, preallocated.
    pub flow_capacity: u32,
    /// Descriptors per rx / tx queue.
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Mbufs on top of what the queues, rings and caches need (net_pcap's `infinite_rx` keeps
    /// its whole file in mbufs of the port's pool).
    pub extra_mbufs: u32,
    /// Bytes of packet data per mbuf (after the 128 bytes of headroom); frames up to the MTU
    /// must fit.
    pub mbuf_data_room: u16,
}

impl Default for DpdkSection {
    fn default() -> Self {
        DpdkSection {
            eal_args: vec![
                "--no-huge".into(),
                "-m".into(),
                "512".into(),
                "--no-pci".into(),
            ],
            burst: 32,
            idle_sleep_us: 0,
            flow_capacity: 1 << 20,
            rx_desc: 1024,
            tx_desc: 1024,
            extra_mbufs: 0,
            mbuf_data_room: 2048,
        }
    }
}

/// Seconds; the IPVS defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    pub tcp_established: u32,
    pub tcp_syn: u32,
    pub tcp_fin: u32,
    pub tcp_close: u32,
    pub udp: u32,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        TimeoutsSection {
            tcp_established: 900,
            tcp_syn: 60,
            tcp_fin: 120,
            tcp_close: 10,
            udp: 300,
        }
    }
}

impl From<&super::FlowTimeouts> for TimeoutsSection {
    fn from(t: &super::FlowTimeouts) -> Self {
        TimeoutsSection {
            tcp_established: t.tcp_established,
            tcp_syn: t.tcp_syn,
            tcp_fin: t.tcp_fin,
            tcp_close: t.tcp_close,
            udp: t.udp,
        }
    }
}

/// How the appliance answers as a host on a VIP's closed ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepliesSection {
    /// TCP to a VIP port without a service gets a reset, UDP an ICMP port unreachable.
    pub closed_ports: bool,
    /// At most this many such answers per worker per second.
    pub closed_ports_per_second: u32,
}

impl Default for RepliesSection {
    fn default() -> Self {
        RepliesSection {
            closed_ports: true,
            closed_ports_per_second: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSpec {
    pub port: u16,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// A kernel interface of this name beside the port (the exception path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_interface: Option<String>,
    /// "auto" (virtio-user over vhost-net where the kernel has it, else TAP), "tap" or
    /// "virtio_user".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_driver: Option<String>,
}

fn default_mtu() -> u16 {
    1500
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub prefix: String,
    pub via: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborSpec {
    pub address: String,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    pub listen: String,
    pub token: String,
    pub state_file: String,
    /// Serve the API on an address other than loopback without a token (refused otherwise).
    pub allow_unauthenticated: bool,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: "127.0.0.1:9180".into(),
            token: String::new(),
            state_file: String::new(),
            allow_unauthenticated: false,
        }
    }
}

/// Flow-state synchronisation with peer instances (off while `listen` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSection {
    /// address:port the peers' datagrams arrive at (the management side, never a VIP).
    pub listen: String,
    /// address:port of each peer's `listen`.
    pub peers: Vec<String>,
    /// Peers of one cluster share it (IPVS's `--syncid`); other ids' datagrams are dropped.
    pub sync_id: u32,
    /// Records sent per second at most (beyond: dropped and counted).
    pub max_records_per_second: u32,
    /// Records each worker's ring holds each way.
    pub ring_records: u32,
    /// A long-lived flow is sent again once per this many seconds of its life (0: never).
    pub refresh_seconds: u32,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            listen: String::new(),
            peers: Vec::new(),
            sync_id: 0,
            max_records_per_second: 1_000_000,
            ring_records: 65536,
            refresh_seconds: 300,
        }
    }
}

/// The BGP speaker that announces the VIPs (off while `local_as` is 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BgpSection {
    pub local_as: u32,
    /// The speaker's router id (an IPv4 address); the first IPv4 interface address if empty.
    pub router_id: String,
    pub neighbors: Vec<BgpNeighborSpec>,
    /// Seconds (3 to 65535); keepalives go at a third of it.
    pub hold_time: u32,
    /// Milliseconds between the withdrawal at shutdown and the end of forwarding.
    pub grace_period_ms: u64,
    /// The BIRD 2 binary l4lb starts (and stops) as the speaker.
    pub bird: String,
    /// Where l4lb writes the speaker's configuration, the VIP route files and its socket.
    pub run_dir: String,
}

impl Default for BgpSection {
    fn default() -> Self {
        BgpSection {
            local_as: 0,
            router_id: String::new(),
            neighbors: Vec::new(),
            hold_time: 9,
            grace_period_ms: 3000,
            bird: "bird".into(),
            run_dir: "/run/l4lb/bird".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpNeighborSpec {
    pub address: String,
    pub remote_as: u32,
}

/// A service, as the file, the API and the state file write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    #[serde(default = "default_protocol")]
    #[schema(value_type = ProtocolName, default = "tcp")]
    pub protocol: String,
    /// An IPv4 or IPv6 address that can be a VIP (not unspecified, loopback, multicast,
    /// broadcast, IPv4-mapped, or an interface's own address).
    #[schema(examples("198.18.0.100", "2001:db8::100"))]
    pub vip: String,
    /// 0: every port of the vip (a persistent dr or tun service, as IPVS's port-zero one).
    #[schema(minimum = 0, maximum = 65535)]
    pub port: u16,
    #[serde(default = "default_scheduler")]
    #[schema(value_type = SchedulerName, default = "wlc")]
    pub scheduler: String,
    /// The sh and mh flags (ipvsadm `-b`): `sh-port` and `mh-port` hash the client's port
    /// too; `sh-fallback` and `mh-fallback` send a client whose backend is overloaded to
    /// another one instead of refusing it.
    #[serde(default)]
    #[schema(value_type = Vec<SchedulerFlagName>)]
    pub scheduler_flags: Vec<String>,
    /// udp: every datagram is scheduled on its own and no flow is kept (ipvsadm `--ops`).
    #[serde(default)]
    pub one_packet: bool,
    /// Client prefixes that may open flows (CIDR, of the vip's family; empty: every client).
    #[serde(default)]
    #[schema(examples(json!(["198.18.0.0/24"])))]
    pub allow: Vec<String>,
    /// Client prefixes that may not (a client in both lists is denied).
    #[serde(default)]
    pub deny: Vec<String>,
    /// tun: what packets are wrapped in (ipvsadm `--tun-type`): `ipip` (IP in IP), `gue`
    /// (UDP to `tunnel_port`, then a GUE header) or `gre`.
    #[serde(default = "default_tunnel")]
    #[schema(value_type = TunnelName, default = "ipip")]
    pub tunnel: String,
    /// Seconds a client stays with its backend after its last connection (ipvsadm `-p`); 0: no
    /// persistence.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31536000, default = 0)]
    pub persistence_timeout: u32,
    /// The prefix length of the client address that persists (ipvsadm `-M`): 32 for IPv4 and
    /// 128 for IPv6 (one client) unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 128)]
    pub persistence_netmask: Option<u8>,
    /// A drained backend's (weight 0) persistent clients leave it too (IPVS's sysctl
    /// `expire_quiescent_template = 1`); by default they stay.
    #[serde(default)]
    pub expire_quiescent_template: bool,
    /// gue: the backends' UDP port (ipvsadm `--tun-port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub tunnel_port: Option<u16>,
    #[serde(default = "default_forwarding")]
    #[schema(value_type = ForwardingName, default = "nat")]
    pub forwarding: String,
    /// Maglev lookup-table size, a prime (Maglev paper §3.4: M >= 100 x backends).
    #[serde(default = "default_maglev_table_size")]
    #[schema(minimum = 2, maximum = 16777213, default = 65537)]
    pub maglev_table_size: u32,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// Active health checks of the backends (none by default).
    #[serde(default)]
    pub health_check: HealthCheckSpec,
    /// What happens to a backend's flows when it goes down: `remove` (they are removed, so
    /// clients reconnect to another backend) or `inhibit` (kept; only new flows avoid it, as
    /// keepalived's inhibit_on_failure).
    #[serde(default = "default_on_down")]
    #[schema(value_type = OnDownName, default = "remove")]
    pub on_down: String,
    /// Takes new flows while every backend is down (keepalived's sorry_server).
    #[serde(default)]
    pub sorry_backend: Option<SorryBackendSpec>,
}

/// A service's health check: one probe per backend every `interval_ms`, from the appliance's
/// own stack (through the kernel interface when there is one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckSpec {
    /// tcp: a connection is accepted; http: a GET of `path` answers `expect_status`; udp: a
    /// datagram draws no ICMP port unreachable (a reply counts as up at once); none: no checks.
    #[serde(rename = "type")]
    #[schema(value_type = HealthCheckName, default = "none")]
    pub kind: String,
    /// The port probed; defaults to each backend's port.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// http: the path asked for.
    #[schema(default = "/")]
    pub path: String,
    /// http: the status that means up.
    #[schema(minimum = 100, maximum = 599, default = 200)]
    pub expect_status: u16,
    #[schema(minimum = 100, maximum = 3600000, default = 2000)]
    pub interval_ms: u64,
    /// At most `interval_ms`.
    #[schema(minimum = 10, default = 1000)]
    pub timeout_ms: u64,
    /// Successes in a row that bring a down backend back.
    #[schema(minimum = 1, maximum = 100, default = 2)]
    pub rise: u32,
    /// Failures in a row that take an up backend out.
    #[schema(minimum = 1, maximum = 100, default = 3)]
    pub fall: u32,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        HealthCheckSpec {
            kind: "none".into(),
            port: None,
            path: "/".into(),
            expect_status: 200,
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        }
    }
}

/// The backend that takes new flows while every other one is down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SorryBackendSpec {
    /// An IPv4 or IPv6 address, of the service's family.
    #[schema(examples("198.18.1.250"))]
    pub address: String,
    /// Defaults to the service's port (the only choice for dr and tun).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum HealthCheckName {
    tcp,
    http,
    udp,
    none,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum OnDownName {
    remove,
    inhibit,
}

/// The names the API and the file take (the schema of the string fields that hold them).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum ProtocolName {
    tcp,
    udp,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum SchedulerName {
    rr,
    wrr,
    lc,
    wlc,
    sed,
    nq,
    sh,
    dh,
    maglev,
    mh,
    fo,
    ovf,
    twos,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum TunnelName {
    ipip,
    gue,
    gre,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum SchedulerFlagName {
    #[schema(rename = "sh-fallback")]
    ShFallback,
    #[schema(rename = "sh-port")]
    ShPort,
    #[schema(rename = "mh-fallback")]
    MhFallback,
    #[schema(rename = "mh-port")]
    MhPort,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum ForwardingName {
    nat,
    dr,
    tun,
}

fn default_protocol() -> String {
    "tcp".into()
}
/// ipvsadm's default scheduler.
fn default_scheduler() -> String {
    "wlc".into()
}
fn default_tunnel() -> String {
    "ipip".into()
}
fn default_forwarding() -> String {
    "nat".into()
}
fn default_on_down() -> String {
    "remove".into()
}
fn default_maglev_table_size() -> u32 {
    65537
}

/// A backend of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    /// An IPv4 or IPv6 address, of the service's family.
    #[schema(examples("198.18.1.10", "2001:db8:1::10"))]
    pub address: String,
    /// Defaults to the service's port (the only choice for dr and tun).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// 0 drains the backend (no new flows).
    #[serde(default = "default_weight")]
    #[schema(minimum = 0, maximum = 65535, default = 1)]
    pub weight: u32,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// No new flows while the backend has this many connections (active and inactive, on all
    /// workers; ipvsadm `-x`); 0: no limit.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647, default = 0)]
    pub upper_threshold: u32,
    /// New flows again once below this many (ipvsadm `-y`); 0: below three quarters of
    /// `upper_threshold`, as IPVS.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647, default = 0)]
    pub lower_threshold: u32,
}

fn default_weight() -> u32 {
    1
}
fn default_enabled() -> bool {
    true
}

impl From<&super::Service> for ServiceSpec {
    /// The service as the API shows it and the state file keeps it: every field written out.
    fn from(s: &super::Service) -> Self {
        ServiceSpec {
            id: s.id.clone(),
            protocol: s.protocol.to_string(),
            vip: s.vip.to_string(),
            port: s.port,
            scheduler: s.scheduler.to_string(),
            scheduler_flags: s
                .scheduler_flags
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
            one_packet: s.one_packet,
            allow: s.allow.iter().map(ToString::to_string).collect(),
            deny: s.deny.iter().map(ToString::to_string).collect(),
            tunnel: match s.tunnel {
                super::Tunnel::Ipip => "ipip",
                super::Tunnel::Gue { .. } => "gue",
                super::Tunnel::Gre => "gre",
            }
            .into(),
            persistence_timeout: s.persistence.map_or(0, |p| p.timeout),
            persistence_netmask: s.persistence.map(|p| p.netmask),
            expire_quiescent_template: s.persistence.is_some_and(|p| p.expire_quiescent),
            tunnel_port: match s.tunnel {
                super::Tunnel::Gue { port } => Some(port),
                _ => None,
            },
            forwarding: s.forwarding.to_string(),
            maglev_table_size: s.maglev_table_size,
            backends: s.backends.iter().map(BackendSpec::from).collect(),
            health_check: HealthCheckSpec::from(&s.health),
            on_down: s.on_down.name().into(),
            sorry_backend: s.sorry.map(|(a, p)| SorryBackendSpec {
                address: a.to_string(),
                port: Some(p),
            }),
        }
    }
}

impl From<&super::HealthCheck> for HealthCheckSpec {
    fn from(h: &super::HealthCheck) -> Self {
        HealthCheckSpec {
            kind: h.kind.name().into(),
            port: h.port,
            path: h.path.clone(),
            expect_status: h.expect_status,
            interval_ms: h.interval.as_millis() as u64,
            timeout_ms: h.timeout.as_millis() as u64,
            rise: h.rise,
            fall: h.fall,
        }
    }
}

impl From<&super::Backend> for BackendSpec {
    fn from(b: &super::Backend) -> Self {
        BackendSpec {
            id: b.id.clone(),
            address: b.address.to_string(),
            port: Some(b.port),
            weight: b.weight,
            enabled: b.enabled,
            upper_threshold: b.upper_threshold,
            lower_threshold: b.lower_threshold,
        }
    }
}

/// Variables that start with `L4LB_` but are not configuration: the CLI's, and the commit the
/// build script records (cargo sets it for `cargo run` and `cargo test` too).
const NOT_CONFIGURATION: [&str; 3] = ["L4LB_API", "L4LB_TOKEN", "L4LB_GIT_COMMIT"];

/// Parses TOML text strictly (a value of the wrong type is an error, never converted), then
/// applies `L4LB_<SECTION>__<KEY>` overrides from `env` to the scalar keys of `[dpdk]`,
/// `[timeouts]` and `[api]`: each value is read as its key's type (lists such as
/// `L4LB_DPDK__EAL_ARGS` split on spaces). Any other `L4LB_` variable, but for the CLI's
/// `L4LB_API` and `L4LB_TOKEN`, is an error: a misspelt override must not go unnoticed.
pub fn parse(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ConfigFile, FieldError> {
    let mut table: toml::Table = text.parse().map_err(|e| syntax_error(text, &e))?;
    let from_env = apply_env(&mut table, env)?;
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let mut err = reword(&e.path().to_string(), e.inner().message());
        if let Some((_, var)) = from_env.iter().find(|(path, _)| *path == err.field) {
            err.message.push_str(&format!(" (from {var})"));
        }
        err
    })
}

/// A TOML syntax error, with its line and column.
fn syntax_error(text: &str, e: &toml::de::Error) -> FieldError {
    let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    FieldError {
        field: String::new(),
        message: format!(
            "TOML syntax, line {line} column {column}: {}",
            e.message().trim_end()
        ),
    }
}

/// Applies the overrides in `env` to `table`; returns the field path and variable of each.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, FieldError> {
    let sections = [
        ("dpdk", toml::Table::try_from(DpdkSection::default())),
        (
            "timeouts",
            toml::Table::try_from(TimeoutsSection::default()),
        ),
        ("replies", toml::Table::try_from(RepliesSection::default())),
        ("api", toml::Table::try_from(ApiSection::default())),
    ];
    let mut applied = Vec::new();
    let mut vars: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("L4LB_") && !NOT_CONFIGURATION.contains(&k.as_str()))
        .collect();
    vars.sort(); // the first error is the same whatever order the environment lists them
    for (var, raw) in vars {
        let unknown = |why: &str| FieldError {
            field: String::new(),
            message: format!(
                "{var}: {why} (configuration variables are L4LB_<SECTION>__<KEY>, like L4LB_DPDK__BURST, for the keys of [dpdk], [timeouts], [replies] and [api])"
            ),
        };
        let rest = &var["L4LB_".len()..];
        let Some((section, key)) = rest.split_once("__") else {
            return Err(unknown("not a configuration variable"));
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(defaults) = sections
            .iter()
            .find(|(name, _)| *name == section)
            .and_then(|(_, t)| t.as_ref().ok())
        else {
            return Err(unknown(&format!("no section [{section}] takes overrides")));
        };
        let Some(default) = defaults.get(&key) else {
            return Err(unknown(&format!("[{section}] has no key `{key}`")));
        };
        let field = format!("{section}.{key}");
        let bad = |what: &str| FieldError {
            field: field.clone(),
            message: format!("{var}={raw:?} is not {what}"),
        };
        let value = match default {
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.parse::<i64>()
                    .ok()
                    .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| bad("a whole number (digits only)"))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(match raw.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad("true or false")),
            }),
            toml::Value::Array(_) => {
                toml::Value::Array(raw.split_whitespace().map(|a| a.into()).collect())
            }
            _ if raw.is_empty() => {
                return Err(FieldError {
                    field,
                    message: format!(
                        "{var} is set but empty: unset it to keep the file's value (an empty value cannot turn a setting such as the API token off)"
                    ),
                });
            }
            _ => toml::Value::String(raw.clone()),
        };
        let t = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(t) = t else {
            return Err(FieldError {
                field: section,
                message: "is not a table".into(),
            });
        };
        t.insert(key, value);
        applied.push((field, var));
    }
    Ok(applied)
}

/// serde's error at `path` (`.` for the top) as a field path and a message in our words:
/// "unknown field" becomes "unknown key", a missing field names its own path.
fn reword(path: &str, message: &str) -> FieldError {
    let path = if path == "." { "" } else { path };
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    if let Some(rest) = message.strip_prefix("missing field `") {
        return FieldError {
            field: join(rest.trim_end_matches('`')),
            message: "is required".into(),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // The path ends with the unknown key: the field is the table that has it.
        let table = path.rsplit_once('.').map_or("", |(t, _)| t);
        return FieldError {
            field: table.to_string(),
            message: format!(
                "unknown key {}",
                rest.replacen(", expected", " (expected", 1) + ")"
            ),
        };
    }
    FieldError {
        field: path.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, []).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_refused_with_their_section() {
        assert_eq!(
            err("[dpdk]\nburts = 3\n"),
            "dpdk: unknown key `burts` (expected one of `eal_args`, `burst`, `idle_sleep_us`, `flow_capacity`, `rx_desc`, `tx_desc`, `extra_mbufs`, `mbuf_data_room`)"
        );
        assert!(
            err("colour = 1\n").starts_with("unknown key `colour`"),
            "{}",
            err("colour = 1\n")
        );
        let nested = "[[services]]\nid = \"a\"\nvip = \"198.18.0.1\"\nport = 80\n[[services.backends]]\nid = \"b\"\naddress = \"198.18.1.1\"\nweigth = 2\n";
        assert!(
            err(nested).starts_with("services[0].backends[0]: unknown key `weigth`"),
            "{}",
            err(nested)
        );
    }

    #[test]
    fn wrong_types_and_missing_fields_name_the_field() {
        assert_eq!(
            err("[[services]]\nid = \"a\"\nvip = \"198.18.0.1\"\nport = 70000\n"),
            "services[0].port: invalid value: integer `70000`, expected u16"
        );
        assert_eq!(
            err("[[services]]\nid = \"a\"\nport = 80\n"),
            "services[0].vip: is required"
        );
        assert_eq!(
            err("[dpdk]\nburst = \"many\"\n"),
            "dpdk.burst: invalid type: string \"many\", expected u32"
        );
    }

    #[test]
    fn environment_overrides_the_file_and_ignores_cli_variables() {
        let env = [
            ("L4LB_DPDK__BURST".to_string(), "64".to_string()),
            (
                "L4LB_DPDK__EAL_ARGS".to_string(),
                "-l 0 --no-huge".to_string(),
            ),
            ("L4LB_TOKEN".to_string(), "secret".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let f = parse("[dpdk]\nburst = 8\nidle_sleep_us = 5\n", env).unwrap();
        assert_eq!(f.dpdk.burst, 64);
        assert_eq!(f.dpdk.eal_args, ["-l", "0", "--no-huge"]);
        assert_eq!(
            f.dpdk.idle_sleep_us, 5,
            "keys not overridden keep the file's value"
        );
    }

    fn env_err(text: &str, var: &str, value: &str) -> String {
        parse(text, [(var.to_string(), value.to_string())])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn values_of_the_wrong_type_are_refused_never_converted() {
        for (text, want) in [
            (
                "[dpdk]\nburst = \"64\"\n",
                "dpdk.burst: invalid type: string \"64\", expected u32",
            ),
            (
                "[dpdk]\nburst = 3.7\n",
                "dpdk.burst: invalid type: floating point `3.7`, expected u32",
            ),
            (
                "[dpdk]\nburst = true\n",
                "dpdk.burst: invalid type: boolean `true`, expected u32",
            ),
            (
                "[[services]]\nid = \"a\"\nvip = \"198.18.0.1\"\nport = \"80\"\n",
                "services[0].port: invalid type: string \"80\", expected u16",
            ),
            (
                "[[services]]\nid = \"a\"\nvip = \"198.18.0.1\"\nport = 80\n[[services.backends]]\nid = \"b\"\naddress = \"198.18.1.1\"\nweight = 1.9\n",
                "services[0].backends[0].weight: invalid type: floating point `1.9`, expected u32",
            ),
            (
                "[[services]]\nid = 7\nvip = \"198.18.0.1\"\nport = 80\n",
                "services[0].id: invalid type: integer `7`, expected a string",
            ),
        ] {
            assert_eq!(err(text), want, "{text}");
        }
        assert_eq!(
            err("[dpdk]\nburst = = 3\n"),
            "TOML syntax, line 2 column 9: extra `=`, expected nothing"
        );
    }

    #[test]
    fn an_override_is_read_as_its_keys_type_and_a_stray_variable_is_an_error() {
        assert_eq!(
            env_err("", "L4LB_DPDK__BURST", "true"),
            "dpdk.burst: L4LB_DPDK__BURST=\"true\" is not a whole number (digits only)"
        );
        assert_eq!(
            env_err("", "L4LB_DPDK__BURST", "1.5"),
            "dpdk.burst: L4LB_DPDK__BURST=\"1.5\" is not a whole number (digits only)"
        );
        assert_eq!(
            env_err("", "L4LB_DPDK__BURST", "99999999999"),
            "dpdk.burst: invalid value: integer `99999999999`, expected u32 (from L4LB_DPDK__BURST)"
        );
        assert!(
            env_err("", "L4LB_DPDK_BURST", "abc")
                .starts_with("L4LB_DPDK_BURST: not a configuration variable (configuration variables are L4LB_<SECTION>__<KEY>"),
            "one underscore: {}",
            env_err("", "L4LB_DPDK_BURST", "abc")
        );
        assert!(
            env_err("", "L4LB_DPDK__BURTS", "1")
                .starts_with("L4LB_DPDK__BURTS: [dpdk] has no key `burts`"),
            "{}",
            env_err("", "L4LB_DPDK__BURTS", "1")
        );
        assert!(
            env_err("", "L4LB_SERVICES__ID", "a")
                .starts_with("L4LB_SERVICES__ID: no section [services] takes overrides"),
            "{}",
            env_err("", "L4LB_SERVICES__ID", "a")
        );
        assert_eq!(
            env_err("[api]\ntoken = \"s3cret\"\n", "L4LB_API__TOKEN", ""),
            "api.token: L4LB_API__TOKEN is set but empty: unset it to keep the file's value (an empty value cannot turn a setting such as the API token off)"
        );
        let f = parse(
            "[api]\ntoken = \"s3cret\"\n",
            [("L4LB_API__TOKEN".to_string(), "other".to_string())],
        )
        .unwrap();
        assert_eq!(f.api.token, "other");
        let f = parse("", [("L4LB_TIMEOUTS__UDP".to_string(), "30".to_string())]).unwrap();
        assert_eq!(f.timeouts.udp, 30);
    }

    #[test]
    fn defaults_fill_what_is_not_written() {
        let f = parse(
            "[[services]]\nid = \"a\"\nvip = \"198.18.0.1\"\nport = 80\n",
            [],
        )
        .unwrap();
        assert_eq!(f.dpdk, DpdkSection::default());
        assert_eq!(f.timeouts.tcp_established, 900);
        assert_eq!(f.api.listen, "127.0.0.1:9180");
        let s = &f.services[0];
        assert_eq!(
            (
                s.protocol.as_str(),
                s.scheduler.as_str(),
                s.forwarding.as_str()
            ),
            ("tcp", "wlc", "nat")
        );
        assert_eq!(s.maglev_table_size, 65537);
    }
}
