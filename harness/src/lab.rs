//! A load-balancing lab in network namespaces, as an operator would cable it: one L2 segment
//! (a bridge in a namespace of its own) joining the appliance (`net_af_packet` on a veth, its
//! kernel side without addresses), clients and backends. Clients are on 198.18.0.0/24 and
//! 2001:db8::/64 with the VIPs, backends on 198.18.1.0/24 and 2001:db8:1::/64; l4lb has an
//! address on each. Backends are set up per forwarding mode:
//!
//! - NAT: the default routes point at l4lb, so replies go back through it;
//! - DR: the VIPs on `lo`, `arp_ignore=1` and `arp_announce=2` (they never answer ARP for
//!   them), the client networks on the link, so replies go straight to the clients;
//! - TUN: as DR, and a user-space decapsulator (this kernel has no ipip or ip6_tunnel) that
//!   hands the inner packets to the local stack.
//!
//! Everything is torn down when the lab is dropped, and on SIGINT/SIGTERM of the process that
//! built it. Only 198.18.0.0/15 and 2001:db8::/32 are used, and only inside the namespaces.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::netns::{self, Namespace};
use crate::{Finished, Process, wait_until};

pub const VIP4: &str = "198.18.0.100";
pub const VIP6: &str = "2001:db8::100";
pub const LB4: &str = "198.18.0.1";
pub const LB4_BACKENDS: &str = "198.18.1.1";
pub const LB6: &str = "2001:db8::1";
pub const LB6_BACKENDS: &str = "2001:db8:1::1";

/// The address of client `i` (0-based).
pub fn client4(i: usize) -> String {
    format!("198.18.0.{}", 10 + i)
}
pub fn client6(i: usize) -> String {
    format!("2001:db8::{:x}", 0x10 + i)
}
/// The address of backend `i` (0-based; it is named `b{i+1}`).
pub fn backend4(i: usize) -> String {
    format!("198.18.1.{}", 11 + i)
}
pub fn backend6(i: usize) -> String {
    format!("2001:db8:1::{:x}", 0x11 + i)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Nat,
    Dr,
    Tun,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::Dr => "dr",
            Mode::Tun => "tun",
        }
    }
}

/// Namespaces of labs alive in this process and their appliances' EAL file prefixes, removed
/// on SIGINT/SIGTERM.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CLEANUP: Once = Once::new();

/// Removes what every lab of this process made (namespaces with what runs inside, EAL runtime
/// folders).
pub fn remove_all() {
    let names = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for n in names.iter().rev() {
        // Namespace's drop kills what runs inside and deletes it.
        drop(Namespace::adopt(n));
    }
    for p in PREFIXES.lock().map(|v| v.clone()).unwrap_or_default() {
        let _ = std::fs::remove_dir_all(crate::runtime_dir(&p));
    }
}

/// On SIGINT or SIGTERM: [`remove_all`], then the process exits with 130.
pub fn remove_all_on_signal() {
    CLEANUP.call_once(|| {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ]) else {
            return;
        };
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                remove_all();
                std::process::exit(130);
            }
        });
    });
}

fn register(ns: &Namespace) {
    if let Ok(mut v) = LIVE.lock() {
        v.push(ns.name().to_string());
    }
}

fn unregister(name: &str) {
    if let Ok(mut v) = LIVE.lock() {
        v.retain(|n| n != name);
    }
}

/// A lab: the switch, the appliance's namespace, clients and backends, and what runs there.
pub struct Lab {
    /// The appliance, when started (dropped first: it runs in `lb`).
    l4lb: Option<Process>,
    /// Each backend's `serve` (None while stopped).
    backend_servers: Vec<Option<Child>>,
    servers: Vec<Child>,
    prefix: String,
    pub mode: Mode,
    pub lb: Namespace,
    pub clients: Vec<Namespace>,
    pub backends: Vec<Namespace>,
    pub switch: Namespace,
    dir: tempfile::TempDir,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unique among labs that may run at once: the namespaces are `l4lb-<tag>-...` and the
    /// appliance's EAL file prefix is `l4lb-<tag>`.
    pub tag: String,
    pub mode: Mode,
    pub backends: usize,
    pub clients: usize,
    /// Remove everything and exit on SIGINT/SIGTERM (tests); false when the program handles
    /// those signals itself and drops the lab.
    pub remove_on_signal: bool,
}

impl Lab {
    /// Creates the namespaces and links, and sets up clients and backends for `spec.mode`,
    /// with a server in each backend (`server`: the program that runs `serve`, see
    /// [`Lab::start_servers`]).
    pub fn build(spec: &Spec) -> Result<Lab, String> {
        if spec.remove_on_signal {
            remove_all_on_signal();
        }
        let prefix = format!("l4lb-{}", spec.tag);
        if let Ok(mut v) = PREFIXES.lock() {
            v.push(prefix.clone());
        }
        let ns = |what: &str| -> Result<Namespace, String> {
            let n = Namespace::create(&format!("{prefix}-{what}"))?;
            register(&n);
            Ok(n)
        };
        let switch = ns("sw")?;
        let lb = ns("lb")?;
        let clients = (0..spec.clients)
            .map(|i| ns(&format!("c{}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let backends = (0..spec.backends)
            .map(|i| ns(&format!("b{}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        // Named after the lab, so that `ps` shows which lab an l4lb belongs to.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .map_err(|e| e.to_string())?;
        let lab = Lab {
            l4lb: None,
            backend_servers: Vec::new(),
            servers: Vec::new(),
            prefix,
            mode: spec.mode,
            lb,
            clients,
            backends,
            switch,
            dir,
        };
        lab.cable()?;
        Ok(lab)
    }

    /// The bridge, a veth from it into every other namespace (`eth0` there), addresses, routes
    /// and sysctls.
    fn cable(&self) -> Result<(), String> {
        let sw = &self.switch;
        bridge(sw)?;
        let members = std::iter::once(("lb".to_string(), &self.lb))
            .chain(
                self.clients
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("c{}", i + 1), c)),
            )
            .chain(
                self.backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("b{}", i + 1), b)),
            );
        for (port, ns) in members {
            attach(sw, &port, ns)?;
            ns.sysctl("net.ipv6.conf.eth0.accept_dad", "0")?;
            ns.ip("link set eth0 up")?;
        }
        // The appliance's side: no addresses, no IPv6 of its own; l4lb owns the port. Its
        // kernel must not take part either (a NIC bound to DPDK is not the kernel's): once l4lb
        // gives its kernel interface the appliance's addresses, the veth would otherwise
        // deliver, forward and answer ARP beside the dataplane. Strict reverse-path filtering
        // drops whatever arrives on it (its sources are routed through the kernel interface),
        // and it neither answers nor asks ARP.
        self.lb.sysctl("net.ipv6.conf.eth0.disable_ipv6", "1")?;
        self.lb.sysctl("net.ipv4.conf.eth0.rp_filter", "1")?;
        self.lb.ip("link set eth0 arp off")?;
        for (i, c) in self.clients.iter().enumerate() {
            c.ip(&format!("addr add {}/24 dev eth0", client4(i)))?;
            c.ip(&format!("addr add {}/64 dev eth0 nodad", client6(i)))?;
        }
        for (i, b) in self.backends.iter().enumerate() {
            b.ip(&format!("addr add {}/24 dev eth0", backend4(i)))?;
            b.ip(&format!("addr add {}/64 dev eth0 nodad", backend6(i)))?;
            match self.mode {
                Mode::Nat => {
                    b.ip(&format!("route add default via {LB4_BACKENDS}"))?;
                    b.ip(&format!("-6 route add default via {LB6_BACKENDS}"))?;
                }
                Mode::Dr | Mode::Tun => {
                    b.ip(&format!("addr add {VIP4}/32 dev lo"))?;
                    b.ip(&format!("addr add {VIP6}/128 dev lo"))?;
                    for (k, v) in [
                        ("net.ipv4.conf.all.arp_ignore", "1"),
                        ("net.ipv4.conf.eth0.arp_ignore", "1"),
                        ("net.ipv4.conf.all.arp_announce", "2"),
                        ("net.ipv4.conf.eth0.arp_announce", "2"),
                        ("net.ipv4.conf.all.rp_filter", "0"),
                        ("net.ipv4.conf.eth0.rp_filter", "0"),
                        ("net.ipv4.conf.lo.rp_filter", "0"),
                    ] {
                        b.sysctl(k, v)?;
                    }
                    b.ip("route add 198.18.0.0/24 dev eth0")?;
                    b.ip("-6 route add 2001:db8::/64 dev eth0")?;
                }
            }
        }
        Ok(())
    }

    /// The appliance's EAL file prefix.
    pub fn file_prefix(&self) -> &str {
        &self.prefix
    }

    /// EAL arguments for l4lb on this lab's port: worker lcore 1, no hugepages.
    pub fn eal_args(&self) -> Vec<String> {
        [
            "-l",
            "0-1",
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            &format!("--file-prefix={}", self.prefix),
            "--vdev=net_af_packet0,iface=eth0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The `[dpdk]` and `[[interfaces]]` sections for this lab (the rest is the caller's).
    pub fn base_config(&self) -> String {
        let eal: Vec<String> = self.eal_args().iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[dpdk]\neal_args = [{}]\nidle_sleep_us = 50\nflow_capacity = 65536\nrx_desc = 512\ntx_desc = 512\n\n\
             [[interfaces]]\nport = 0\naddresses = [\"{LB4}/24\", \"{LB4_BACKENDS}/24\", \"{LB6}/64\", \"{LB6_BACKENDS}/64\"]\n\n",
            eal.join(", ")
        )
    }

    /// Starts a server in every backend namespace: `program serve --name bN` (HTTP and TCP on
    /// ports 80 and 8080, UDP on 53, see the demo binary) and, for TUN, `program decap`;
    /// returns once each listens.
    pub fn start_servers(&mut self, program: &Path) -> Result<(), String> {
        for i in 0..self.backends.len() {
            let child = self.spawn_server(program, i)?;
            self.backend_servers.push(Some(child));
            if self.mode == Mode::Tun {
                let child = self.backends[i]
                    .command(program)
                    .args(["decap", "--lab", &self.prefix])
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|e| format!("{program:?} decap: {e}"))?;
                self.servers.push(child);
            }
        }
        (0..self.backends.len()).try_for_each(|i| self.wait_listening(i))
    }

    /// `program serve` in backend `i`.
    fn spawn_server(&self, program: &Path, i: usize) -> Result<Child, String> {
        let mut udp = vec![backend4(i), backend6(i)];
        if self.mode != Mode::Nat {
            udp.extend([VIP4.to_string(), VIP6.to_string()]);
        }
        let mut cmd = self.backends[i].command(program);
        cmd.args([
            "serve",
            "--lab",
            &self.prefix,
            "--name",
            &format!("b{}", i + 1),
        ]);
        for a in &udp {
            cmd.args(["--udp", a]);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{program:?} serve: {e}"))
    }

    fn wait_listening(&self, i: usize) -> Result<(), String> {
        let b = &self.backends[i];
        let listening = wait_until(Duration::from_secs(10), || {
            b.sh("ss -Hltn 'sport = :8080' | grep -q .").is_ok()
                && b.sh("ss -Hlun 'sport = :53' | grep -q .").is_ok()
        });
        if listening {
            Ok(())
        } else {
            Err(format!("the server in {} does not listen", b.name()))
        }
    }

    /// Kills backend `i`'s server (its connections are reset, its ports closed).
    pub fn stop_server(&mut self, i: usize) {
        if let Some(mut c) = self.backend_servers.get_mut(i).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts backend `i`'s server again (after [`Lab::stop_server`]); returns once it listens.
    pub fn restart_server(&mut self, program: &Path, i: usize) -> Result<(), String> {
        self.stop_server(i);
        let child = self.spawn_server(program, i)?;
        self.backend_servers[i] = Some(child);
        self.wait_listening(i)
    }

    /// Starts `program serve --name NAME` (HTTP on ports 80 and 8080) in the lab's namespace
    /// `ns` (e.g. `lb`, `c1`), stopped with the lab; returns once it listens.
    pub fn serve_in(&mut self, ns: &str, program: &Path, name: &str) -> Result<(), String> {
        let ns = std::mem::ManuallyDrop::new(Namespace::adopt(&format!("{}-{ns}", self.prefix)));
        let child = ns
            .command(program)
            .args(["serve", "--lab", &self.prefix, "--name", name])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{program:?} serve: {e}"))?;
        self.servers.push(child);
        if wait_until(Duration::from_secs(10), || {
            ns.sh("ss -Hltn 'sport = :8080' | grep -q .").is_ok()
        }) {
            Ok(())
        } else {
            Err(format!("the server in {} does not listen", ns.name()))
        }
    }

    /// Turns on routing in the appliance's kernel (for transit through its kernel interface),
    /// as on an IPVS director; never through the veth l4lb owns, and without ICMP redirects
    /// (one-armed routing would send them to every host).
    pub fn route_in_appliance(&self) -> Result<(), String> {
        self.lb.sysctl("net.ipv4.ip_forward", "1")?;
        self.lb.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        self.lb.sysctl("net.ipv4.conf.eth0.forwarding", "0")?;
        self.lb.sysctl("net.ipv4.conf.all.send_redirects", "0")?;
        self.lb
            .sysctl("net.ipv4.conf.default.send_redirects", "0")?;
        Ok(())
    }

    /// Writes `config` and starts l4lb (`binary`) in the appliance's namespace; returns once
    /// its API answers.
    pub fn start_l4lb(&mut self, binary: &Path, config: &str) -> Result<(), String> {
        self.start_l4lb_with(binary, config, &[])
    }

    /// [`Lab::start_l4lb`] with more arguments for l4lb (before the configuration's).
    pub fn start_l4lb_with(
        &mut self,
        binary: &Path,
        config: &str,
        args: &[&str],
    ) -> Result<(), String> {
        let path = self.dir.path().join("l4lb.toml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let mut cmd = self.lb.command(binary);
        cmd.args(args)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info");
        let p = Process::spawn(cmd, &self.prefix).map_err(|e| format!("{binary:?}: {e}"))?;
        self.l4lb = Some(p);
        let up = wait_until(Duration::from_secs(30), || {
            self.lb
                .enter(|| {
                    http_get(
                        "127.0.0.1:9180".parse().expect("address"),
                        "/healthz",
                        Duration::from_millis(500),
                    )
                    .is_ok()
                })
                .unwrap_or(false)
        });
        if !up {
            return Err(format!(
                "l4lb's API never answered:\n{}",
                self.l4lb.as_ref().map(|p| p.log()).unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// What l4lb wrote so far.
    pub fn l4lb_log(&self) -> String {
        self.l4lb.as_ref().map(Process::log).unwrap_or_default()
    }

    /// Stops l4lb with SIGTERM and returns what it printed.
    pub fn stop_l4lb(&mut self) -> Option<Finished> {
        let p = self.l4lb.take()?;
        let _ = p.signal("TERM");
        p.wait(Duration::from_secs(20)).ok()
    }

    /// A GET to l4lb's API inside its namespace: the status and body.
    pub fn api_get(&self, path: &str) -> Result<(u16, String), String> {
        let path = path.to_string();
        self.lb
            .enter(move || {
                http_get(
                    "127.0.0.1:9180".parse().expect("address"),
                    &path,
                    Duration::from_secs(5),
                )
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Runs `program args` in the appliance's namespace (l4lbctl, for one).
    pub fn in_lb(&self, program: &Path, args: &[&str]) -> Result<String, String> {
        netns::run(self.lb.command(program).args(args))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// The scratch folder of this lab.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(self.l4lb.take());
        for c in self
            .servers
            .iter_mut()
            .chain(self.backend_servers.iter_mut().flatten())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self
            .clients
            .iter()
            .chain(&self.backends)
            .chain([&self.lb, &self.switch])
        {
            unregister(ns.name());
        }
        if let Ok(mut v) = PREFIXES.lock() {
            v.retain(|p| *p != self.prefix);
        }
    }
}

/// The lab's switch: bridge `br0` in `switch`, up, taking no part in IPv6 itself.
pub fn bridge(switch: &Namespace) -> Result<(), String> {
    switch.ip("link add br0 type bridge")?;
    switch.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
    switch.ip("link set br0 up")?;
    Ok(())
}

/// Cables namespace `ns` to the bridge `br0` in `switch`: a veth, `port` on the bridge's side
/// (up), `eth0` in `ns` (left down for the caller's settings), both without transmit
/// checksum offload (kernel TCP through af_packet needs full checksums on the wire).
pub fn attach(switch: &Namespace, port: &str, ns: &Namespace) -> Result<(), String> {
    switch.ip(&format!(
        "link add {port} type veth peer name eth0 netns {}",
        ns.name()
    ))?;
    switch.ip(&format!("link set {port} master br0 up"))?;
    netns::run(switch.command("ethtool").args(["-K", port, "tx", "off"]))?;
    netns::run(ns.command("ethtool").args(["-K", "eth0", "tx", "off"]))?;
    Ok(())
}

/// A GET over HTTP/1.1 with `Connection: close`: the status and the body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_get_from(addr, None, path, timeout)
}

/// [`http_get`] from local port `port` (None: one the kernel picks). A test that counts flows
/// gives each connection a port of its own: a port the kernel picks again may meet the flow
/// of its previous connection, still kept in its closing state, and its backend.
pub fn http_get_from(
    addr: SocketAddr,
    port: Option<u16>,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = match port {
        None => std::net::TcpStream::connect_timeout(&addr, timeout)?,
        Some(p) => {
            use socket2::{Domain, Socket, Type};
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            let local: SocketAddr = match addr {
                SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, p).into(),
                SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, p).into(),
            };
            sock.bind(&local.into())?;
            sock.connect_timeout(&addr.into(), timeout)?;
            sock.into()
        }
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let host = match addr.ip() {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let text = String::from_utf8_lossy(&all);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no end of headers in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// Waits until `f` holds, for at most `timeout`, and says how long it took.
pub fn time_until(timeout: Duration, f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    wait_until(timeout, f).then(|| t.elapsed())
}
