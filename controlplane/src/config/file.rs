//! The file as written: serde structs with defaults, unknown keys refused. Addresses and names
//! stay strings here so that validation can say exactly which one is wrong and why.

use serde::{Deserialize, Serialize};

use super::FieldError;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub dpdk: DpdkSection,
    pub timeouts: TimeoutsSection,
    pub interfaces: Vec<InterfaceSpec>,
    pub routes: Vec<RouteSpec>,
    pub neighbors: Vec<NeighborSpec>,
    pub api: ApiSection,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSpec {
    pub port: u16,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
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
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: "127.0.0.1:9180".into(),
            token: String::new(),
            state_file: String::new(),
        }
    }
}

/// A service, as the file, the API and the state file write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub id: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    pub vip: String,
    pub port: u16,
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    #[serde(default = "default_forwarding")]
    pub forwarding: String,
    /// Maglev lookup-table size, a prime (Maglev paper §3.4: M >= 100 x backends).
    #[serde(default = "default_maglev_table_size")]
    pub maglev_table_size: u32,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
}

fn default_protocol() -> String {
    "tcp".into()
}
/// ipvsadm's default scheduler.
fn default_scheduler() -> String {
    "wlc".into()
}
fn default_forwarding() -> String {
    "nat".into()
}
fn default_maglev_table_size() -> u32 {
    65537
}

/// A backend of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub id: String,
    pub address: String,
    /// Defaults to the service's port (the only choice for dr and tun).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
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
            forwarding: s.forwarding.to_string(),
            maglev_table_size: s.maglev_table_size,
            backends: s.backends.iter().map(BackendSpec::from).collect(),
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
        }
    }
}

/// Parses TOML text, then applies `L4LB_<SECTION>__<KEY>` overrides from `env` (lists such as
/// `L4LB_DPDK__EAL_ARGS` split on spaces). Variables without `__` (like `L4LB_TOKEN`, which the
/// CLI reads) are not configuration and are left alone.
pub fn parse(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ConfigFile, FieldError> {
    let overrides: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| {
            k.strip_prefix("L4LB_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect();
    let from_env = !overrides.is_empty();
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("L4LB")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(" ")
                .with_list_parse_key("dpdk.eal_args")
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| reword(&e.to_string(), from_env))?;
    built
        .try_deserialize::<ConfigFile>()
        .map_err(|e| reword(&e.to_string(), from_env))
}

/// Turns the config crate's "... for key `services[0]port`" into a field path and a message.
fn reword(message: &str, from_env: bool) -> FieldError {
    let hint = if from_env {
        " (the file or an L4LB_ environment variable)"
    } else {
        ""
    };
    if let Some(rest) = message.strip_prefix("missing configuration field \"") {
        let field = normalise_path(rest.trim_end_matches('"'));
        return FieldError {
            field,
            message: format!("is required{hint}"),
        };
    }
    let (what, field) = match message.rsplit_once(" for key `") {
        Some((what, key)) => (what, normalise_path(key.trim_end_matches('`'))),
        None => (message, String::new()),
    };
    let what = match what.strip_prefix("unknown field ") {
        Some(rest) => format!(
            "unknown key {}",
            rest.replacen(", expected", " (expected", 1) + ")"
        ),
        None => what.to_string(),
    };
    FieldError {
        field,
        message: format!("{what}{hint}"),
    }
}

/// `services[0]backends[1]port` -> `services[0].backends[1].port`.
fn normalise_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev = None;
    for c in key.chars() {
        if prev == Some(']') && c != '[' && c != '.' {
            out.push('.');
        }
        out.push(c);
        prev = Some(c);
    }
    out
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
            "services[0].port: invalid type: 64-bit unsigned integer `70000`, expected an unsigned 16 bit integer"
        );
        assert_eq!(
            err("[[services]]\nid = \"a\"\nport = 80\n"),
            "services[0].vip: is required"
        );
        assert_eq!(
            err("[dpdk]\nburst = \"many\"\n"),
            "dpdk.burst: invalid type: string \"many\", expected an integer"
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
        let bad = parse("", [("L4LB_DPDK__BURTS".to_string(), "1".to_string())]).unwrap_err();
        assert!(
            bad.to_string().starts_with("dpdk: unknown key `burts`"),
            "{bad}"
        );
        assert!(
            bad.to_string()
                .ends_with("(the file or an L4LB_ environment variable)"),
            "{bad}"
        );
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

    #[test]
    fn paths_get_their_dots() {
        assert_eq!(
            normalise_path("services[0]backends[12]port"),
            "services[0].backends[12].port"
        );
        assert_eq!(normalise_path("dpdk.burst"), "dpdk.burst");
        assert_eq!(normalise_path("interfaces[3]"), "interfaces[3]");
    }
}
