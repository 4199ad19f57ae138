//! `l4lb-bench` (also run as `l4lb bench`): throughput measured the way testpmd reports it, on the standard rig (see
//! BENCHMARKS.md) — a pcap of generated traffic replayed from memory by `net_pcap`
//! (`infinite_rx=1`) into port 0, forwarded out of port 1, a `net_null` that keeps nothing —
//! and, with `--compare`, dpdk-testpmd forwarding the same packets on the same vdevs in the same
//! invocation, so that the ratio between the two is the figure that travels between machines.
//!
//! Both run as child processes (EAL starts once per process). Rates come from DPDK's telemetry
//! socket of each (`/ethdev/stats,N`), sampled after a warm-up and at the end of the run: the
//! same counters, read the same way, for both. The appliance's REST API adds its own view: per
//! worker, drops by reason, new flows.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use dataplane::addr::MacAddr;
use dataplane::checksum;
use dataplane::wire::{ethernet, ipv4, ipv6};
use harness::Process;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Nat,
    Dr,
    Tun,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::Dr => "dr",
            Mode::Tun => "tun",
        }
    }
}

/// Measure l4lb's throughput the way testpmd reports it (and, with --compare, beside it).
#[derive(Debug, Clone, Parser)]
#[command(name = "l4lb bench")]
pub struct BenchArgs {
    /// Distinct flows in the traffic (one packet each per replay of the pcap).
    #[arg(long, default_value_t = 4096)]
    pub flows: u32,
    #[arg(long, value_enum, default_value = "udp")]
    pub proto: Proto,
    /// IPv6 instead of IPv4.
    #[arg(long)]
    pub ipv6: bool,
    /// Frame size in bytes with the 4-byte FCS, as testpmd counts (64 is the minimum).
    #[arg(long, default_value_t = 64)]
    pub size: u16,
    /// Forwarding mode of the service under test.
    #[arg(long, value_enum, default_value = "nat")]
    pub mode: Mode,
    /// `--mode tun`: what packets are wrapped in (ipip, gue or gre).
    #[arg(long, default_value = "ipip")]
    pub tunnel: String,
    /// NAT replies: the traffic is the backends' answers to established flows (backend to
    /// client, out of port 0). net_pcap0 reads each flow's first packet once (the flows are
    /// made), net_pcap1 replays the replies; one backend, so each reply's source is known.
    #[arg(long)]
    pub replies: bool,
    /// Scheduler of the service under test (rr wrr lc wlc sed nq sh dh maglev).
    #[arg(long, default_value = "maglev")]
    pub scheduler: String,
    /// Share of packets that start a new flow. 1: every packet (the flow table is kept far
    /// smaller than the traffic, so nothing is ever found). Between 0 and 1 needs --proto tcp:
    /// SYNs of clients never seen again beside established flows (SYN entries are evicted
    /// first, so the established ones stay).
    #[arg(long, default_value_t = 0.0)]
    pub new_flow_share: f64,
    /// Flows each worker's table holds. Without it the run uses the appliance's default
    /// (`dpdk.flow_capacity`, what users run), except where the case needs a table smaller than
    /// its traffic (every packet new: 1024; a share of new flows: the established ones and a
    /// margin the new ones churn through).
    #[arg(long, value_name = "FLOWS")]
    pub flow_capacity: Option<u32>,
    /// Worker lcores (1 or 2); with 2 the traffic comes from two pcap files, one per queue.
    #[arg(long, default_value_t = 1)]
    pub workers: u8,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Republish the configuration every N milliseconds while measuring (a backend's weight
    /// changes through the REST API); reports how long each publish took to be live.
    #[arg(long, value_name = "MS")]
    pub republish_ms: Option<u64>,
    /// The weights a republish gives the backend, in turn: 1 to N. With more than Maglev
    /// keeps recently built tables of (17 and up), every publish builds its table anew; the
    /// default, 2, toggles it as a flapping health check does.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub republish_weights: u32,
    /// Each republish takes one backend out (weight 0) or puts it back (weight 1), the
    /// backends in turn, as a failing health check or a drain does; in place of the weights.
    #[arg(long, requires = "republish_ms")]
    pub republish_out: bool,
    /// Also run dpdk-testpmd on the same vdevs and pcap, and print the ratios.
    #[arg(long)]
    pub compare: bool,
    /// testpmd forwarding modes to compare with.
    #[arg(long, value_delimiter = ',', default_value = "io,macswap,5tswap")]
    pub testpmd_modes: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Use hugepages (they must be reserved and mounted) instead of --no-huge.
    #[arg(long)]
    pub hugepages: bool,
    /// Keep the generated pcap and configuration in this directory.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Give both ports a kernel interface (the exception path, idle while the traffic is all
    /// for the VIP). The run happens in a network namespace of its own, made and removed here,
    /// since the kernel interfaces carry the appliance's addresses.
    #[arg(long)]
    pub kernel_interface: bool,
    /// Turn on flow-state synchronisation towards a peer that only counts what it receives
    /// (a socket of this program). The run happens in a network namespace of its own, made
    /// and removed here, with the two addresses on a veth pair there (this kernel has no
    /// dummy interfaces).
    #[arg(long)]
    pub sync: bool,
    /// The namespace this run is in already (set when --kernel-interface re-runs itself).
    #[arg(long, hide = true, value_name = "NAME")]
    pub in_netns: Option<String>,
}

impl BenchArgs {
    /// The ports the traffic comes in on and goes out of.
    fn ports(&self) -> (usize, usize) {
        if self.replies { (1, 0) } else { (0, 1) }
    }
}

/// `--sync`: where l4lb's sync socket listens, and the peer that counts what it gets.
const SYNC_LISTEN: &str = "198.18.3.1";
const SYNC_PEER: &str = "198.18.3.2";
const SYNC_PORT: u16 = 8848;

/// net_pcap0's MAC address: frames for the appliance go to it.
const PCAP_MAC: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x00];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// net_pcap1's (a `--replies` run's port 1) and the first backend's.
const PCAP1_MAC: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x01];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x10];
const BACKENDS: u8 = 8;
/// Flows in the traffic when every packet must be new: far more than the table holds.
const NEW_FLOW_POOL: u32 = 65536;
/// The flow table of a new-flow run (per worker).
const NEW_FLOW_TABLE: u32 = 1024;

fn vip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))
    }
}

/// Client `i`: its address and port (65536 addresses, then the port changes).
fn client(i: u32, v6: bool) -> (IpAddr, u16) {
    let port = 1024 + (i >> 16) as u16;
    let a = if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, i as u16))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8))
    };
    (a, port)
}

/// One frame of `size - 4` bytes (no FCS) from `src` to the VIP.
fn frame(args: &BenchArgs, src: (IpAddr, u16), syn: bool) -> Vec<u8> {
    let dport: u16 = match args.proto {
        Proto::Udp => 53,
        Proto::Tcp => 80,
    };
    frame_between(
        args,
        (MacAddr(GATEWAY_MAC), MacAddr(PCAP_MAC)),
        src,
        (vip(args.ipv6), dport),
        syn,
    )
}

/// The backend's (the only one of a `--replies` run) answer to client `to`.
fn reply_frame(args: &BenchArgs, to: (IpAddr, u16)) -> Vec<u8> {
    let backend = if args.ipv6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10))
    };
    frame_between(
        args,
        (MacAddr(BACKEND_MAC), MacAddr(PCAP1_MAC)),
        (backend, 8080),
        to,
        false,
    )
}

/// One frame of `size - 4` bytes (no FCS) between two endpoints, with (source, destination)
/// MAC addresses.
fn frame_between(
    args: &BenchArgs,
    (src_mac, dst_mac): (MacAddr, MacAddr),
    src: (IpAddr, u16),
    (dst, dport): (IpAddr, u16),
    syn: bool,
) -> Vec<u8> {
    let len = usize::from(args.size.max(64) - 4);
    let mut f = Vec::with_capacity(len.max(90));
    let (l4_len_min, proto) = match args.proto {
        Proto::Udp => (8, 17u8),
        Proto::Tcp => (20, 6u8),
    };
    let ip_len = if args.ipv6 { 40 } else { 20 };
    let total = len.max(14 + ip_len + l4_len_min);
    let l4_len = total - 14 - ip_len;
    let mut l4 = vec![0u8; l4_len];
    l4[0..2].copy_from_slice(&src.1.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    match args.proto {
        Proto::Udp => l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes()),
        Proto::Tcp => {
            l4[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
            l4[12] = 5 << 4;
            l4[13] = if syn { 0x02 } else { 0x10 }; // SYN, or ACK mid-stream
            l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
        }
    }
    let ck_at = if proto == 17 { 6 } else { 16 };
    let mut head = [0u8; 14 + 40];
    let (ethertype, ip_len) = match (src.0, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4::Repr {
                src: s,
                dst: d,
                protocol: proto,
                payload_len: l4_len,
                ttl: 64,
                tos: 0,
                dont_fragment: true,
            }
            .emit(&mut head[14..]);
            let c = checksum::transport(checksum::pseudo_v4(s, d, proto, l4_len as u16), &l4);
            l4[ck_at..ck_at + 2].copy_from_slice(&c.to_be_bytes());
            (ethernet::ETHERTYPE_IPV4, ipv4::MIN_HEADER_LEN)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6::Repr {
                src: s,
                dst: d,
                next_header: proto,
                payload_len: l4_len,
                hop_limit: 64,
                traffic_class: 0,
            }
            .emit(&mut head[14..]);
            let c = checksum::transport(checksum::pseudo_v6(s, d, proto, l4_len as u32), &l4);
            l4[ck_at..ck_at + 2].copy_from_slice(&c.to_be_bytes());
            (ethernet::ETHERTYPE_IPV6, ipv6::HEADER_LEN)
        }
        _ => unreachable!("client and VIP of one family"),
    };
    ethernet::Repr {
        dst: dst_mac,
        src: src_mac,
        ethertype,
    }
    .emit(&mut head);
    f.extend_from_slice(&head[..14 + ip_len]);
    f.extend_from_slice(&l4);
    f
}

/// The traffic, split by the worker that owns each client (as a NIC's RSS on the client
/// address would spread it; NAT replies then need no hand-over between workers).
fn traffic(args: &BenchArgs) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let workers = u16::from(args.workers);
    let mut per: Vec<Vec<Vec<u8>>> = (0..workers).map(|_| Vec::new()).collect();
    let share = args.new_flow_share;
    let mut push = |i: u32, syn: bool| {
        let c = client(i, args.ipv6);
        let key = dataplane::flow::addr_bytes(c.0);
        let w = dataplane::pipeline::owner(&key, c.1, workers);
        per[usize::from(w)].push(frame(args, c, syn));
    };
    if share >= 1.0 {
        for i in 0..args.flows.max(NEW_FLOW_POOL) {
            push(i, args.proto == Proto::Tcp);
        }
    } else if share > 0.0 {
        // For every established packet, share/(1-share) SYNs of clients from a range that
        // starts after the established ones.
        let news = ((f64::from(args.flows) * share / (1.0 - share)).round() as u32).max(1);
        let (mut e, mut n) = (0u32, 0u32);
        while e < args.flows || n < news {
            if e < args.flows
                && (n >= news
                    || u64::from(e) * u64::from(news) <= u64::from(n) * u64::from(args.flows))
            {
                push(e, false);
                e += 1;
            } else {
                push(args.flows + n, true);
                n += 1;
            }
        }
    } else {
        for i in 0..args.flows {
            push(i, false);
        }
    }
    if args.replies {
        // Port 1's file: every flow's reply (one worker, checked in `run`).
        per.push(
            (0..args.flows)
                .map(|i| reply_frame(args, client(i, args.ipv6)))
                .collect(),
        );
    }
    if per.iter().any(Vec::is_empty) {
        return Err("too few flows for every worker to get some".into());
    }
    Ok(per)
}

/// What both programs get: the same memory and the same vdevs.
struct Rig {
    dir: PathBuf,
    pcaps: Vec<PathBuf>,
    packets: u64,
    /// mbufs the pcap replay keeps, plus what queues need.
    mbufs: u32,
    data_room: u16,
    memory_mb: u64,
}

impl Rig {
    fn eal(&self, args: &BenchArgs, prefix: &str) -> Vec<String> {
        let mut a = vec![if args.workers > 1 {
            // Two busy lcores on two CPUs; the main lcore (it only sleeps) shares CPU 0.
            "--lcores=0@0,1@0,2@1".to_string()
        } else {
            "-l".to_string()
        }];
        if args.workers <= 1 {
            a.push("0-1".into());
        }
        if args.hugepages {
            a.extend(["--huge-unlink".to_string()]);
        } else {
            a.push("--no-huge".into());
        }
        a.extend([
            "-m".to_string(),
            self.memory_mb.to_string(),
            "--no-pci".into(),
            "--log-level=*:warning".into(),
            format!("--file-prefix={prefix}"),
        ]);
        if args.replies {
            // The flows' first packets once (no tx file: what is sent is dropped), then the
            // replies over and over.
            a.push(format!(
                "--vdev=net_pcap0,rx_pcap={}",
                self.pcaps[0].display()
            ));
            a.push(format!(
                "--vdev=net_pcap1,rx_pcap={},infinite_rx=1",
                self.pcaps[1].display()
            ));
            return a;
        }
        let rx: Vec<String> = self
            .pcaps
            .iter()
            .map(|p| format!("rx_pcap={}", p.display()))
            .collect();
        a.push(format!("--vdev=net_pcap0,{},infinite_rx=1", rx.join(",")));
        a.push("--vdev=net_null0,no-rx=1".into());
        a
    }
}

/// The flow table each worker gets, and why that size.
fn flow_capacity(args: &BenchArgs) -> (u32, &'static str) {
    if let Some(c) = args.flow_capacity {
        (c, "--flow-capacity")
    } else if args.new_flow_share >= 1.0 {
        (
            NEW_FLOW_TABLE,
            "every packet new: a table far smaller than the traffic",
        )
    } else if args.new_flow_share > 0.0 {
        // Room for every established flow plus a margin the new flows churn through.
        (
            (args.flows / u32::from(args.workers)).max(1024) * 5 / 4 + 1024,
            "the established flows and a margin for the new ones",
        )
    } else {
        (
            controlplane::config::DpdkSection::default().flow_capacity,
            "the appliance's default",
        )
    }
}

fn config(args: &BenchArgs, rig: &Rig) -> String {
    let (capacity, _) = flow_capacity(args);
    let (proto, port) = match args.proto {
        Proto::Udp => ("udp", 53),
        Proto::Tcp => ("tcp", 80),
    };
    let backend_port = if args.mode == Mode::Nat { 8080 } else { port };
    let mut backends = String::new();
    let mut neighbors = String::new();
    let tunnel = if args.mode == Mode::Tun {
        // GUE needs the backends' port (ipvsadm --tun-port); 6080 as IPVS's examples.
        let port = if args.tunnel == "gue" {
            "tunnel_port = 6080\n"
        } else {
            ""
        };
        format!("tunnel = \"{}\"\n{port}", args.tunnel)
    } else {
        String::new()
    };
    for b in 0..if args.replies { 1 } else { BACKENDS } {
        let addr = if args.ipv6 {
            format!("2001:db8:2::{:x}", 0x10 + b)
        } else {
            format!("198.18.1.{}", 10 + b)
        };
        backends.push_str(&format!(
            "[[services.backends]]\nid = \"b{b}\"\naddress = \"{addr}\"\nport = {backend_port}\n"
        ));
        neighbors.push_str(&format!(
            "[[neighbors]]\naddress = \"{addr}\"\nmac = \"02:00:00:00:01:{:02x}\"\n",
            0x10 + b
        ));
    }
    let mtu = (rig.data_room - 18).min(1500);
    let kernel = |i: u8| {
        if args.kernel_interface {
            format!("kernel_interface = \"l4lbbench{i}\"\nkernel_driver = \"tap\"\n")
        } else {
            String::new()
        }
    };
    let (kernel0, kernel1) = (kernel(0), kernel(1));
    let sync = if args.sync {
        format!(
            "[sync]\nlisten = \"{SYNC_LISTEN}:{SYNC_PORT}\"\npeers = [\"{SYNC_PEER}:{SYNC_PORT}\"]\nsync_id = 1\n"
        )
    } else {
        String::new()
    };
    format!(
        r#"# generated by l4lb bench
[dpdk]
eal_args = ["-m", "{memory_mb}"]
burst = 32
idle_sleep_us = 0
flow_capacity = {capacity}
rx_desc = 1024
tx_desc = 1024
extra_mbufs = {extra}
mbuf_data_room = {room}
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "2001:db8:1::1/64"]
mtu = {mtu}
{kernel0}[[interfaces]]
port = 1
addresses = ["198.18.1.1/24", "2001:db8:2::1/64"]
mtu = {mtu}
{kernel1}[[routes]]
prefix = "0.0.0.0/0"
via = "198.18.0.254"
[[routes]]
prefix = "::/0"
via = "2001:db8:1::fe"
[[neighbors]]
address = "198.18.0.254"
mac = "02:00:00:00:00:fe"
[[neighbors]]
address = "2001:db8:1::fe"
mac = "02:00:00:00:00:fe"
{neighbors}[api]
listen = "127.0.0.1:0"
{sync}[[services]]
id = "bench"
protocol = "{proto}"
vip = "{vip}"
port = {port}
scheduler = "{scheduler}"
forwarding = "{mode}"
{tunnel}{backends}"#,
        // The EAL arguments come on the command line (they replace these), but the
        // configuration's are what the mbuf count is checked against.
        memory_mb = rig.memory_mb,
        extra = rig.mbufs,
        room = rig.data_room,
        vip = vip(args.ipv6),
        mode = args.mode.name(),
        scheduler = args.scheduler,
    )
}

#[derive(Debug, Clone, Copy, Default)]
struct PortSample {
    ipackets: u64,
    opackets: u64,
}

fn ports(prefix: &str) -> Option<[PortSample; 2]> {
    let one = |p: u16| -> Option<PortSample> {
        let v = harness::telemetry(prefix, &format!("/ethdev/stats,{p}"))?;
        let s = &v["/ethdev/stats"];
        Some(PortSample {
            ipackets: s["ipackets"].as_u64()?,
            opackets: s["opackets"].as_u64()?,
        })
    };
    Some([one(0)?, one(1)?])
}

/// Rates between two samples, packets per second.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    rx: [f64; 2],
    tx: [f64; 2],
}

fn rates(a: [PortSample; 2], b: [PortSample; 2], secs: f64) -> Rates {
    let r = |x: u64, y: u64| (y.saturating_sub(x)) as f64 / secs;
    Rates {
        rx: [
            r(a[0].ipackets, b[0].ipackets),
            r(a[1].ipackets, b[1].ipackets),
        ],
        tx: [
            r(a[0].opackets, b[0].opackets),
            r(a[1].opackets, b[1].opackets),
        ],
    }
}

/// Samples at the end of the warm-up and of the run, with a progress line on stderr between.
fn measure(
    prefix: &str,
    label: &str,
    args: &BenchArgs,
    proc_: &mut Process,
    mut at_start: impl FnMut(),
) -> Result<([PortSample; 2], [PortSample; 2], f64), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    // Telemetry answers once the ports exist; the pcap is loaded by then.
    while ports(prefix).is_none() {
        if !proc_.is_running() || Instant::now() > deadline {
            return Err(format!(
                "{label}: no telemetry; its output:\n{}",
                proc_.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The ports exist before forwarding starts (testpmd's --auto-start comes after them): the
    // warm-up counts from the first packet received, so a slow start on a loaded machine is not
    // measured as a rate of zero.
    while ports(prefix).is_some_and(|p| p[0].ipackets == 0) {
        if !proc_.is_running() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    at_start();
    let start = ports(prefix).ok_or_else(|| format!("{label}: telemetry went away"))?;
    let t0 = Instant::now();
    let mut last = (start, t0);
    while t0.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(Duration::from_millis(1000).min(Duration::from_secs_f64(
            (args.seconds - t0.elapsed().as_secs_f64()).max(0.0),
        )));
        if let Some(now) = ports(prefix) {
            let r = rates(last.0, now, last.1.elapsed().as_secs_f64().max(1e-6));
            eprint!(
                "\r{label}: {:>5.1}/{:.1} s  rx {:>7.3} Mpps  tx {:>7.3} Mpps   ",
                t0.elapsed().as_secs_f64(),
                args.seconds,
                r.rx[args.ports().0] / 1e6,
                r.tx[args.ports().1] / 1e6
            );
            last = (now, Instant::now());
        }
    }
    let end = ports(prefix).ok_or_else(|| format!("{label}: telemetry went away"))?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!();
    Ok((start, end, secs))
}

/// Seconds between two stats answers (their uptimes), at least a millisecond.
fn secs_of(before: &Value, after: &Value) -> f64 {
    let up = |v: &Value| v["uptime_seconds"].as_f64().unwrap_or(0.0);
    (up(after) - up(before)).max(0.001)
}

/// `--sync`'s peer: counts the datagrams and records that reach it until `stop`.
fn sync_sink(stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<(u64, u64)>, String> {
    let s = std::net::UdpSocket::bind((SYNC_PEER, SYNC_PORT))
        .map_err(|e| format!("--sync: the peer's socket {SYNC_PEER}:{SYNC_PORT}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    Ok(std::thread::spawn(move || {
        let (mut datagrams, mut records) = (0u64, 0u64);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = s.recv(&mut buf)
                && let Ok((h, _)) = dataplane::sync::decode(1, &buf[..n])
            {
                datagrams += 1;
                records += u64::from(h.count);
            }
        }
        (datagrams, records)
    }))
}

fn stats(base: &str) -> Option<Value> {
    let text = ureq::get(format!("{base}/api/v1/stats"))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// Changes a backend's weight every `every`, through the API, until `stop`; the time each change
/// took to be live (the API answers once every worker uses it). The thread runs on CPU 0, with
/// the appliance's control plane and its main lcore: left to the scheduler it also lands on the
/// worker's CPU, and waits there behind the busy-polling worker for the rest of its time slice
/// (a p99 of 4 ms where pinned it is 2, on 2026-12-07's machine), which says nothing of the
/// appliance. An operator's client is on another machine.
fn republish(
    base: String,
    every: Duration,
    weights: u32,
    out: bool,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    if let Err(e) = harness::pin_to_cpu(0) {
        eprintln!("l4lb bench: the republishing thread stays unpinned ({e})");
    }
    // A timeout for each step but name resolution: with a global timeout ureq resolves on a
    // thread of its own, a thread started (on this CPU) for every change.
    let five = Some(Duration::from_secs(5));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(five)
        .timeout_send_request(five)
        .timeout_send_body(five)
        .timeout_recv_response(five)
        .timeout_recv_body(five)
        .build()
        .new_agent();
    let mut took = Vec::new();
    let mut next = Instant::now();
    let mut weight = 1;
    let mut changes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // b0 through the weights, or b0 out, b0 back, b1 out, b1 back, ...
        let backend = if out {
            weight = (changes % 2) as u32;
            changes / 2 % u64::from(BACKENDS)
        } else {
            weight = weight % weights + 1;
            0
        };
        changes += 1;
        let t = Instant::now();
        // The answer read to its end, so that the connection is kept for the next change (an
        // answer left unread closes it, and every change paid for a new connection).
        let ok = agent
            .patch(format!("{base}/api/v1/services/bench/backends/b{backend}"))
            .send_json(json!({ "weight": weight }))
            .and_then(|mut r| r.body_mut().read_to_string())
            .is_ok();
        if ok {
            took.push(t.elapsed());
        }
        next += every;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        } else {
            next = Instant::now();
        }
    }
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the benchmark and prints its report.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if !(1..=2).contains(&args.workers) {
        return Err("--workers: 1 or 2 (this rig gives a port two queues at most)".into());
    }
    if !(0.0..=1.0).contains(&args.new_flow_share) {
        return Err("--new-flow-share: from 0 to 1".into());
    }
    if args.new_flow_share > 0.0 && args.new_flow_share < 1.0 && args.proto != Proto::Tcp {
        return Err("--new-flow-share between 0 and 1 needs --proto tcp (SYN entries are evicted before established ones; UDP flows have no such order)".into());
    }
    if args.replies && (args.mode != Mode::Nat || args.workers != 1 || args.new_flow_share > 0.0) {
        return Err("--replies: NAT, one worker, established flows only".into());
    }
    if !["ipip", "gue", "gre"].contains(&args.tunnel.as_str()) {
        return Err(format!("--tunnel {:?}: ipip, gue or gre", args.tunnel));
    }
    if !(64..=1518).contains(&args.size) {
        return Err("--size: from 64 to 1518 bytes".into());
    }
    let tmp;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("--keep {}: {e}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
            tmp.path().to_path_buf()
        }
    };
    let traffic = traffic(args)?;
    let packets: u64 = traffic.iter().map(|t| t.len() as u64).sum();
    let mut pcaps = Vec::new();
    for (i, frames) in traffic.iter().enumerate() {
        let p = dir.join(format!("flows{i}.pcap"));
        harness::pcap::write(&p, frames).map_err(|e| format!("writing {}: {e}", p.display()))?;
        pcaps.push(p);
    }
    drop(traffic);
    // Small mbufs when the pcap is big: the replay keeps every packet in one.
    let data_room: u16 = if packets > 200_000 { 640 } else { 2048 };
    let mbufs = (packets + 16384) as u32;
    // An mbuf: its data room, 128 bytes of headroom, the 128-byte header and the pool's own
    // per-object overhead, with a quarter more for what EAL and the ports allocate.
    let per_mbuf = u64::from(data_room) + 128 + 192;
    let mut memory_mb = u64::from(mbufs) * per_mbuf * 5 / 4 / (1 << 20) + 512;
    if args.hugepages {
        // The flow tables come from the same hugepage memory (about 82 bytes per flow).
        memory_mb += (u64::from(flow_capacity(args).0) * u64::from(args.workers) * 96) >> 20;
    }
    let rig = Rig {
        dir: dir.clone(),
        pcaps,
        packets,
        mbufs,
        data_room,
        memory_mb,
    };
    let cfg_path = rig.dir.join("l4lb.toml");
    std::fs::write(&cfg_path, config(args, &rig))
        .map_err(|e| format!("writing the configuration: {e}"))?;
    let case = format!(
        "{} {} {}, {} flows{}, {} B, {} worker(s)",
        args.mode.name(),
        if args.proto == Proto::Udp {
            "udp"
        } else {
            "tcp"
        },
        if args.ipv6 { "IPv6" } else { "IPv4" },
        args.flows,
        if args.new_flow_share > 0.0 {
            format!(", new-flow share {}", args.new_flow_share)
        } else {
            String::new()
        },
        args.size,
        args.workers
    );

    // The appliance.
    let prefix = format!("l4lb-bench-{}", std::process::id());
    let exe = std::env::current_exe()
        .map_err(|e| format!("finding l4lb-bench itself: {e}"))?
        .with_file_name("l4lb");
    let mut cmd = Command::new(&exe);
    cmd.arg("--config")
        .arg(&cfg_path)
        .arg("--log-level")
        .arg("info")
        .arg("--")
        .args(rig.eal(args, &prefix))
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("L4LB_") {
            cmd.env_remove(k);
        }
    }
    let mut app =
        Process::spawn(cmd, &prefix).map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let base = app.wait_log(Duration::from_secs(120), |log| {
        log.lines().find_map(|l| {
            l.split_once("REST API listening on ")
                .map(|(_, r)| r.split_whitespace().next().unwrap_or("").to_string())
        })
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let sink = args
        .sync
        .then(|| sync_sink(Arc::clone(&stop)))
        .transpose()?;
    let mut before = None;
    let mut republisher = None;
    let measured = measure(&prefix, "l4lb", args, &mut app, || {
        before = stats(&base);
        republisher = args.republish_ms.map(|ms| {
            let (base, stop, n) = (base.clone(), Arc::clone(&stop), args.republish_weights);
            let out = args.republish_out;
            std::thread::spawn(move || {
                republish(base, Duration::from_millis(ms.max(1)), n, out, stop)
            })
        });
    });
    stop.store(true, Ordering::Relaxed);
    let publishes = republisher.map(|h| h.join().unwrap_or_default());
    let sunk = sink.map(|h| h.join().unwrap_or_default());
    let after = stats(&base);
    app.stop(Duration::from_secs(10));
    let (s0, s1, secs) = measured?;
    let l4lb = rates(s0, s1, secs);
    let (before, after) = (before.unwrap_or(Value::Null), after.unwrap_or(Value::Null));
    let delta = |pointer: &str| -> f64 {
        let get = |v: &Value| v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
        (get(&after).saturating_sub(get(&before))) as f64
    };
    // The API's counters are read at the start and the end of the run, but not at the same
    // instants as telemetry: they are given as shares of what the ports counted.
    let api_rx = delta(&format!("/ports/{}/rx_packets", args.ports().0)).max(1.0);
    let mut workers = Vec::new();
    for w in after["per_worker"].as_array().into_iter().flatten() {
        let i = w["worker"].as_u64().unwrap_or(0) as usize;
        let rx = w["rx_packets"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before["per_worker"][i]["rx_packets"].as_u64().unwrap_or(0));
        workers.push(json!({
            "worker": i,
            "rx_share": rx as f64 / api_rx,
            "flows": w["flows"],
        }));
    }
    let mut drops = serde_json::Map::new();
    for (reason, _) in after["drops"].as_object().into_iter().flatten() {
        let d = delta(&format!("/drops/{reason}"));
        if d > 0.0 {
            drops.insert(reason.clone(), json!(d / api_rx));
        }
    }
    let new_flow_share = delta("/services/0/new_flows") / api_rx;
    let sync = match sunk {
        None => Value::Null,
        Some((datagrams, records)) => {
            let per_s = |pointer: &str| delta(pointer) / secs_of(&before, &after);
            json!({
                "queued_per_s": per_s("/sync/queued"),
                "queue_full_per_s": per_s("/sync/queue_full"),
                "sent_per_s": per_s("/sync/records_sent"),
                "rate_limited_per_s": per_s("/sync/rate_limited"),
                "send_errors": delta("/sync/send_errors"),
                "peer_datagrams": datagrams,
                "peer_records": records,
            })
        }
    };
    let mut publish = Value::Null;
    if let Some(mut p) = publishes {
        p.sort();
        publish = json!({
            "count": p.len(),
            "weights": args.republish_weights,
            "out": args.republish_out,
            "p50_us": percentile(&p, 0.5).as_micros() as u64,
            "p99_us": percentile(&p, 0.99).as_micros() as u64,
            "max_us": p.last().copied().unwrap_or_default().as_micros() as u64,
        });
    }

    // testpmd on the same vdevs and pcap.
    let mut testpmd = serde_json::Map::new();
    if args.compare {
        for mode in &args.testpmd_modes {
            let prefix = format!("l4lb-bench-tp-{}-{mode}", std::process::id());
            let mut cmd = Command::new("dpdk-testpmd");
            cmd.args(rig.eal(args, &prefix)).arg("--").args([
                format!("--forward-mode={mode}"),
                "--auto-start".into(),
                format!("--nb-cores={}", args.workers),
                format!("--rxq={}", args.workers),
                format!("--txq={}", args.workers),
                format!("--total-num-mbufs={}", rig.mbufs),
                format!("--mbuf-size={}", u32::from(rig.data_room) + 128),
                "--rxd=1024".into(),
                "--txd=1024".into(),
                "--burst=32".into(),
            ]);
            // It runs until a line arrives on its stdin.
            cmd.stdin(Stdio::piped());
            let mut tp = Process::spawn(cmd, &prefix)
                .map_err(|e| format!("cannot run dpdk-testpmd: {e}"))?;
            let stdin = tp.take_stdin();
            let m = measure(&prefix, &format!("testpmd {mode}"), args, &mut tp, || {});
            if let Some(mut s) = stdin {
                let _ = s.write_all(b"\n");
            }
            tp.stop(Duration::from_secs(10));
            let (a, b, secs) = m?;
            let r = rates(a, b, secs);
            testpmd.insert(
                mode.clone(),
                json!({ "rx_pps": r.rx[args.ports().0], "tx_pps": r.tx[args.ports().1] }),
            );
        }
    }

    let ratio = |mode: &str| -> Option<f64> {
        let t = testpmd.get(mode)?["tx_pps"].as_f64()?;
        (t > 0.0).then(|| l4lb.tx[args.ports().1] / t)
    };
    let ratios: serde_json::Map<String, Value> = args
        .testpmd_modes
        .iter()
        .filter_map(|m| ratio(m).map(|r| (m.clone(), json!(r))))
        .collect();
    let report = json!({
        "case": {
            "mode": args.mode.name(),
            "proto": if args.proto == Proto::Udp { "udp" } else { "tcp" },
            "ipv6": args.ipv6,
            "flows": args.flows,
            "frame_bytes": args.size,
            "new_flow_share_asked": args.new_flow_share,
            "workers": args.workers,
            "scheduler": args.scheduler,
            "seconds": secs,
            "hugepages": args.hugepages,
            "kernel_interface": args.kernel_interface,
            "replies": args.replies,
            "tunnel": (args.mode == Mode::Tun).then_some(&args.tunnel),
            "testpmd_modes": args.testpmd_modes,
            "source": if args.replies {
                format!("net_pcap0 reads {} flows' first packets once; net_pcap1 infinite_rx of their replies -> out of net_pcap0 (dropped)", args.flows)
            } else {
                format!("net_pcap infinite_rx of {} packet(s) in {} file(s) -> net_null", rig.packets, rig.pcaps.len())
            },
        },
        "l4lb": {
            "ports": [
                { "port": 0, "name": "net_pcap0", "rx_pps": l4lb.rx[0], "tx_pps": l4lb.tx[0] },
                { "port": 1, "name": if args.replies { "net_pcap1" } else { "net_null0" }, "rx_pps": l4lb.rx[1], "tx_pps": l4lb.tx[1] },
            ],
            // What the case measures: the rate out of the port its traffic leaves by.
            "out_pps": l4lb.tx[args.ports().1],
            "workers": workers,
            "drop_share": drops,
            "new_flow_share": new_flow_share,
            "flow_entries": after["flows"]["entries"],
            "flow_capacity": after["flows"]["capacity"],
            "flow_capacity_why": flow_capacity(args).1,
            "flow_bytes_per_entry": after["flows"]["memory_bytes"].as_f64().unwrap_or(0.0)
                / after["flows"]["capacity"].as_f64().unwrap_or(1.0).max(1.0),
            "publish": publish,
            "sync": sync,
        },
        "testpmd": testpmd,
        "ratio_to_testpmd": ratios,
    });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("JSON prints")
        );
    } else {
        print!("{}", text(&case, &report));
    }
    Ok(())
}

fn text(case: &str, r: &Value) -> String {
    let mut out = String::new();
    let mpps = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e6;
    out.push_str(&format!(
        "  ######################## l4lb bench: {case} ########################\n"
    ));
    out.push_str(&format!(
        "  traffic: {}\n",
        r["case"]["source"].as_str().unwrap_or("")
    ));
    for p in r["l4lb"]["ports"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  ---------------------- port {} ({}) ----------------------\n  Rx-pps: {:>14.0}          Tx-pps: {:>14.0}\n",
            p["port"],
            p["name"].as_str().unwrap_or(""),
            p["rx_pps"].as_f64().unwrap_or(0.0),
            p["tx_pps"].as_f64().unwrap_or(0.0)
        ));
    }
    let rx = r["l4lb"]["ports"][if r["case"]["replies"].as_bool() == Some(true) {
        1
    } else {
        0
    }]["rx_pps"]
        .as_f64()
        .unwrap_or(0.0);
    for w in r["l4lb"]["workers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  worker {}: Rx-pps {:>14.0}  flows {}\n",
            w["worker"],
            w["rx_share"].as_f64().unwrap_or(0.0) * rx,
            w["flows"]
        ));
    }
    let drops = r["l4lb"]["drop_share"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if drops.is_empty() {
        out.push_str("  drops: none\n");
    } else {
        for (reason, share) in drops {
            out.push_str(&format!(
                "  drops {reason}: {:.0} pps\n",
                share.as_f64().unwrap_or(0.0) * rx
            ));
        }
    }
    out.push_str(&format!(
        "  flow table: {} entries of {} ({}), {:.1} bytes per entry (slab and indexes)\n",
        r["l4lb"]["flow_entries"],
        r["l4lb"]["flow_capacity"],
        r["l4lb"]["flow_capacity_why"].as_str().unwrap_or(""),
        r["l4lb"]["flow_bytes_per_entry"].as_f64().unwrap_or(0.0)
    ));
    out.push_str(&format!(
        "  new flows: {:.0} /s ({:.1}% of packets)\n",
        r["l4lb"]["new_flow_share"].as_f64().unwrap_or(0.0) * rx,
        r["l4lb"]["new_flow_share"].as_f64().unwrap_or(0.0) * 100.0
    ));
    if let Some(p) = r["l4lb"]["publish"].as_object() {
        let what = if p["out"].as_bool() == Some(true) {
            "a backend out and back, each in turn".to_string()
        } else {
            format!("weights 1 to {} in turn", p["weights"])
        };
        out.push_str(&format!(
            "  republished {} times ({what}): live after p50 {} us, p99 {} us, max {} us\n",
            p["count"], p["p50_us"], p["p99_us"], p["max_us"]
        ));
    }
    let tp: Vec<(String, Value)> = r["case"]["testpmd_modes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let m = m.as_str()?;
            Some((m.to_string(), r["testpmd"].get(m)?.clone()))
        })
        .collect();
    let y = &r["l4lb"]["sync"];
    if !y.is_null() {
        let k = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e3;
        out.push_str(&format!(
            "  sync (k records/s): queued {:.1}, lost to a full journal {:.1}, sent {:.1}, over the rate limit {:.1}; the peer got {} records in {} datagrams\n",
            k(&y["queued_per_s"]),
            k(&y["queue_full_per_s"]),
            k(&y["sent_per_s"]),
            k(&y["rate_limited_per_s"]),
            y["peer_records"],
            y["peer_datagrams"]
        ));
    }
    if !tp.is_empty() {
        out.push_str(
            "  ------------------------------------------------------------------------\n",
        );
        out.push_str(&format!(
            "  compare, Mpps out of port {} (same vdevs, same pcap, same run):\n",
            if r["case"]["replies"].as_bool() == Some(true) {
                0
            } else {
                1
            }
        ));
        out.push_str(&format!(
            "    l4lb {:<10} {:>8.2}\n",
            r["case"]["mode"].as_str().unwrap_or(""),
            mpps(&r["l4lb"]["out_pps"])
        ));
        for (mode, v) in &tp {
            let ratio = r["ratio_to_testpmd"][mode].as_f64().unwrap_or(0.0);
            out.push_str(&format!(
                "    testpmd {mode:<7} {:>8.2}    l4lb = {ratio:.2} x testpmd {mode}\n",
                mpps(&v["tx_pps"])
            ));
        }
    }
    out.push_str("  ########################################################################\n");
    out
}

/// `--kernel-interface`: runs this program again, with the same arguments, inside a network
/// namespace made for it (removed afterwards, also when the run fails).
fn in_own_netns() -> Result<(), String> {
    let name = format!("l4lb-bench-{}", std::process::id());
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .status()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))
            .and_then(|s| {
                s.success()
                    .then_some(())
                    .ok_or_else(|| format!("ip {} failed", args.join(" ")))
            })
    };
    ip(&["netns", "add", &name])?;
    let exe = std::env::current_exe().map_err(|e| format!("finding l4lb-bench itself: {e}"));
    let status = exe.and_then(|exe| {
        Command::new("ip")
            .args(["netns", "exec", &name])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .args(["--in-netns", &name])
            .status()
            .map_err(|e| format!("ip netns exec: {e}"))
    });
    let removed = ip(&["netns", "del", &name]);
    match status? {
        s if s.success() => removed,
        _ => Err("the run in its own namespace failed".into()),
    }
}

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    if (args.kernel_interface || args.sync) && args.in_netns.is_none() {
        return match in_own_netns() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("l4lb bench: {e}");
                ExitCode::from(1)
            }
        };
    }
    if args.in_netns.is_some() {
        // A new namespace has its loopback down: the API listens there.
        let _ = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if args.sync {
            // The sync stream's two ends, both in this namespace (a veth pair: this kernel
            // has no dummy interfaces).
            let sh = format!(
                "ip link add sync0 type veth peer name sync1 && ip addr add {SYNC_LISTEN}/24 dev sync0 && ip addr add {SYNC_PEER}/24 dev sync1 && ip link set sync0 up && ip link set sync1 up"
            );
            let _ = Command::new("sh").args(["-c", &sh]).status();
        }
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("l4lb bench: {e}");
            ExitCode::from(1)
        }
    }
}
