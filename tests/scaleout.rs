//! Scale-out: two l4lb instances behind a router that spreads the flows over both with an
//! ECMP route learned over BGP (BIRD on the router; each l4lb drives its own BIRD through
//! its kernel interface), flow state synchronised between them on a management link, three
//! (or four) DR backends, a client behind the router holding 200 long-lived connections that
//! send a line every 100 ms and read it back.
//!
//! ```text
//!   c1 ──(198.18.2.0/24)── rt ──┬── lb1 (l4lb)   ─┐ mgmt 198.19.0.0/24 (sync)
//!                               ├── lb2 (l4lb)   ─┘
//!                 LAN 198.18.0.0/24 (bridge in sw)
//!                               └── b1 b2 b3 (b4): the VIP on lo, replies via rt
//! ```
//!
//! One instance is killed (SIGKILL) or stopped (SIGTERM); the connections it carried move to
//! the other once the router's route converges, and must go on with the same backend.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::lab::binary;
use harness::netns::{self, Namespace};
use harness::{Process, wait_until};
use serde_json::Value;

const VIP: &str = "198.18.100.10";
const PORT: u16 = 8080;
const ROUTER: &str = "198.18.0.1";
const CLIENT: &str = "198.18.2.10";
const CONNECTIONS: usize = 200;

fn lb_addr(i: usize) -> String {
    format!("198.18.0.{}", 11 + i)
}
fn mgmt_addr(i: usize) -> String {
    format!("198.19.0.{}", 1 + i)
}
fn backend_addr(i: usize) -> String {
    format!("198.18.0.{}", 21 + i)
}

/// The namespaces and what runs in them; all removed on drop (also when a test fails).
struct Cluster {
    prefix: String,
    // Dropped in this order: the processes, then the namespaces (which kill what is left).
    l4lb: Vec<Option<Process>>,
    router_bird: Option<std::process::Child>,
    servers: Vec<std::process::Child>,
    lbs: Vec<Namespace>,
    backends: Vec<Namespace>,
    client: Namespace,
    router: Namespace,
    switch: Namespace,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.l4lb.iter_mut().filter_map(Option::take) {
            let _ = p.wait(Duration::ZERO);
        }
        if let Some(mut c) = self.router_bird.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..2 {
            let _ = std::fs::remove_dir_all(harness::runtime_dir(&format!(
                "{}-lb{}",
                self.prefix,
                i + 1
            )));
        }
    }
}

fn veth_tx_off(ns: &Namespace, dev: &str) {
    // Kernel TCP through af_packet needs full checksums on the wire.
    netns::run(ns.command("ethtool").args(["-K", dev, "tx", "off"])).unwrap();
}

impl Cluster {
    fn build(tag: &str, backends: usize) -> Cluster {
        harness::lab::remove_all_on_signal();
        let prefix = format!("l4lb-{tag}");
        let ns = |what: &str| Namespace::create(&format!("{prefix}-{what}")).unwrap();
        let switch = ns("sw");
        let router = ns("rt");
        let client = ns("c1");
        let lbs: Vec<_> = (0..2).map(|i| ns(&format!("lb{}", i + 1))).collect();
        let bs: Vec<_> = (0..backends).map(|i| ns(&format!("b{}", i + 1))).collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .unwrap();
        let c = Cluster {
            prefix,
            l4lb: vec![None, None],
            router_bird: None,
            servers: Vec::new(),
            lbs,
            backends: bs,
            client,
            router,
            switch,
            dir,
        };
        c.cable();
        c
    }

    fn cable(&self) {
        let sw = &self.switch;
        harness::lab::bridge(sw).unwrap();
        let members = std::iter::once(("rt".to_string(), &self.router))
            .chain(
                self.lbs
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("lb{}", i + 1), n)),
            )
            .chain(
                self.backends
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("b{}", i + 1), n)),
            );
        for (port, ns) in members {
            harness::lab::attach(sw, &port, ns).unwrap();
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
            ns.ip("link set eth0 up").unwrap();
        }
        // The router: the LAN, the client's network, ECMP with an L4 hash.
        let rt = &self.router;
        rt.ip(&format!(
            "link add eth1 type veth peer name eth0 netns {}",
            self.client.name()
        ))
        .unwrap();
        veth_tx_off(rt, "eth1");
        veth_tx_off(&self.client, "eth0");
        rt.ip(&format!("addr add {ROUTER}/24 dev eth0")).unwrap();
        rt.ip("addr add 198.18.2.1/24 dev eth1").unwrap();
        rt.ip("link set eth1 up").unwrap();
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.eth0.rp_filter", "0"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.eth0.send_redirects", "0"),
        ] {
            rt.sysctl(k, v).unwrap();
        }
        let c = &self.client;
        c.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        c.ip(&format!("addr add {CLIENT}/24 dev eth0")).unwrap();
        c.ip("link set eth0 up").unwrap();
        c.ip("route add default via 198.18.2.1").unwrap();
        // The appliances: l4lb owns eth0 (its kernel takes no part), a management link between
        // them for the sync stream.
        self.lbs[0]
            .ip(&format!(
                "link add mgmt0 type veth peer name mgmt0 netns {}",
                self.lbs[1].name()
            ))
            .unwrap();
        for (i, lb) in self.lbs.iter().enumerate() {
            lb.sysctl("net.ipv4.conf.eth0.rp_filter", "1").unwrap();
            lb.ip("link set eth0 arp off").unwrap();
            lb.ip(&format!("addr add {}/24 dev mgmt0", mgmt_addr(i)))
                .unwrap();
            lb.ip("link set mgmt0 up").unwrap();
        }
        // DR backends: the VIP on lo, never answering ARP for it, replies through the router.
        for (i, b) in self.backends.iter().enumerate() {
            b.ip(&format!("addr add {}/24 dev eth0", backend_addr(i)))
                .unwrap();
            b.ip(&format!("addr add {VIP}/32 dev lo")).unwrap();
            for (k, v) in [
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.eth0.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
                ("net.ipv4.conf.eth0.arp_announce", "2"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.eth0.rp_filter", "0"),
                ("net.ipv4.conf.lo.rp_filter", "0"),
            ] {
                b.sysctl(k, v).unwrap();
            }
            b.ip(&format!("route add default via {ROUTER}")).unwrap();
        }
    }

    /// Servers in the backends (`l4lb-demo serve`: ECHO on port 8080) and BIRD on the router.
    fn start_router_and_servers(&mut self) {
        for (i, b) in self.backends.iter().enumerate() {
            let child = b
                .command(binary("l4lb-demo"))
                .args([
                    "serve",
                    "--lab",
                    &self.prefix,
                    "--name",
                    &format!("b{}", i + 1),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            self.servers.push(child);
        }
        for b in &self.backends {
            assert!(wait_until(Duration::from_secs(10), || b
                .sh("ss -Hltn 'sport = :8080' | grep -q .")
                .is_ok()));
        }
        let conf = self.dir.path().join("router-bird.conf");
        let mut text = format!(
            "router id {ROUTER};\n\
             log stderr {{ info, remote, warning, error, auth, fatal, bug }};\n\
             protocol device {{ scan time 1; }}\n\
             protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
             template bgp lbs {{ local {ROUTER} as 65000; hold time 3; keepalive time 1; connect retry time 1; graceful restart off; ipv4 {{ import all; export none; }}; }}\n"
        );
        for i in 0..2 {
            text.push_str(&format!(
                "protocol bgp lb{} from lbs {{ neighbor {} as 65001; }}\n",
                i + 1,
                lb_addr(i)
            ));
        }
        std::fs::write(&conf, text).unwrap();
        let child = self
            .router
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(self.dir.path().join("router-bird.ctl"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.router_bird = Some(child);
    }

    fn config(&self, i: usize, backends: usize) -> String {
        let prefix = format!("{}-lb{}", self.prefix, i + 1);
        let mut s = format!(
            "[dpdk]\n\
             eal_args = [\"-l\", \"0-1\", \"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--file-prefix={prefix}\", \"--vdev=net_af_packet0,iface=eth0\"]\n\
             idle_sleep_us = 50\nflow_capacity = 65536\nrx_desc = 512\ntx_desc = 512\n\n\
             [[interfaces]]\nport = 0\naddresses = [\"{}/24\"]\nkernel_interface = \"l4lbk\"\n\n\
             [api]\nlisten = \"127.0.0.1:9180\"\nstate_file = \"{}\"\n\n\
             [sync]\nlisten = \"{}:8848\"\npeers = [\"{}:8848\"]\nsync_id = 7\n\n\
             [bgp]\nlocal_as = 65001\nhold_time = 3\ngrace_period_ms = 3000\nrun_dir = \"{}\"\nneighbors = [{{ address = \"{ROUTER}\", remote_as = 65000 }}]\n\n\
             [[services]]\nid = \"web\"\nprotocol = \"tcp\"\nvip = \"{VIP}\"\nport = {PORT}\nscheduler = \"maglev\"\nforwarding = \"dr\"\n",
            lb_addr(i),
            self.dir
                .path()
                .join(format!("state-lb{}.json", i + 1))
                .display(),
            mgmt_addr(i),
            mgmt_addr(1 - i),
            self.dir.path().join(format!("bird-lb{}", i + 1)).display(),
        );
        for b in 0..backends {
            s.push_str(&format!(
                "[[services.backends]]\nid = \"b{}\"\naddress = \"{}\"\nport = {PORT}\n",
                b + 1,
                backend_addr(b)
            ));
        }
        s
    }

    fn start_l4lb(&mut self, i: usize, backends: usize) {
        let path: PathBuf = self.dir.path().join(format!("lb{}.toml", i + 1));
        std::fs::write(&path, self.config(i, backends)).unwrap();
        let mut cmd = self.lbs[i].command(binary("l4lb"));
        cmd.arg("--config").arg(&path).env("RUST_LOG", "info");
        let p = Process::spawn(cmd, &format!("{}-lb{}", self.prefix, i + 1)).unwrap();
        self.l4lb[i] = Some(p);
        let up = wait_until(Duration::from_secs(30), || self.api(i, "/healthz").is_ok());
        assert!(up, "lb{} never answered:\n{}", i + 1, self.log(i));
    }

    fn log(&self, i: usize) -> String {
        self.l4lb[i].as_ref().map(Process::log).unwrap_or_default()
    }

    /// A GET to instance `i`'s API (curl inside its namespace).
    fn api(&self, i: usize, path: &str) -> Result<String, String> {
        netns::run(self.lbs[i].command("curl").args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:9180{path}"),
        ]))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `l4lbctl ARGS` in instance `i`'s namespace: what it printed.
    fn ctl(&self, i: usize, args: &[&str]) -> String {
        let out = netns::run(self.lbs[i].command(binary("l4lbctl")).args(args)).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stats(&self, i: usize) -> Value {
        serde_json::from_str(&self.api(i, "/api/v1/stats").unwrap()).unwrap()
    }

    /// The router's route to the VIP: the next hops it has.
    fn next_hops(&self) -> Vec<String> {
        let out = netns::run(self.router.command("ip").args(["route", "show", VIP]))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let w: Vec<&str> = out.split_whitespace().collect();
        let mut hops: Vec<String> = w
            .windows(2)
            .filter(|p| p[0] == "via")
            .map(|p| p[1].to_string())
            .collect();
        hops.sort();
        hops
    }

    fn wait_next_hops(&self, want: &[String], within: Duration) -> Option<Duration> {
        let t = Instant::now();
        wait_until(within, || self.next_hops() == want).then(|| t.elapsed())
    }
}

/// One client connection: the backend that answered, the lines sent and read back.
struct Conn {
    stream: TcpStream,
    backend: String,
    sent: u64,
    received: u64,
    pending: Vec<u8>,
    error: Option<String>,
}

impl Conn {
    fn send(&mut self) {
        if self.error.is_some() {
            return;
        }
        let line = format!("{}\n", self.sent);
        match self.stream.write(line.as_bytes()) {
            Ok(n) if n == line.len() => self.sent += 1,
            Ok(_) => self.error = Some("short write".into()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => self.error = Some(format!("write: {e}")),
        }
    }

    /// Reads what came back; each line must be the next number sent.
    fn read(&mut self) {
        if self.error.is_some() {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.error = Some("closed by the other side".into());
                    return;
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.error = Some(format!("read: {e}"));
                    return;
                }
            }
        }
        while let Some(p) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=p).collect();
            let want = format!("{}\n", self.received);
            if line != want.as_bytes() {
                self.error = Some(format!(
                    "read {:?}, expected {want:?}",
                    String::from_utf8_lossy(&line)
                ));
                return;
            }
            self.received += 1;
        }
    }

    fn whole(&self) -> bool {
        self.error.is_none() && self.received == self.sent
    }
}

/// Opens `n` connections from the client (ports from `first_port`), each `ECHO` with its
/// backend's name read back.
fn connect(c: &Cluster, n: usize, first_port: u16) -> Vec<Conn> {
    let to: SocketAddr = (VIP.parse::<std::net::IpAddr>().unwrap(), PORT).into();
    c.client
        .enter(move || {
            (0..n)
                .map(|i| {
                    use socket2::{Domain, Socket, Type};
                    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    sock.set_reuse_address(true).unwrap();
                    let local: SocketAddr =
                        (std::net::Ipv4Addr::UNSPECIFIED, first_port + i as u16).into();
                    sock.bind(&local.into()).unwrap();
                    sock.connect_timeout(&to.into(), Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                    let mut s: TcpStream = sock.into();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.write_all(b"ECHO\n").unwrap();
                    let mut name = Vec::new();
                    let mut b = [0u8; 1];
                    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                        name.push(b[0]);
                    }
                    s.set_nonblocking(true).unwrap();
                    Conn {
                        stream: s,
                        backend: String::from_utf8(name).unwrap(),
                        sent: 0,
                        received: 0,
                        pending: Vec::new(),
                        error: None,
                    }
                })
                .collect()
        })
        .unwrap()
}

/// Drives the connections: a line each every 100 ms until `stop`, then (no more sending)
/// until every line came back or `drain` passed. Bounded: at most `limit` in all.
fn drive(
    mut conns: Vec<Conn>,
    stop: Arc<AtomicBool>,
    drain: Duration,
    limit: Duration,
) -> Vec<Conn> {
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
        for c in &mut conns {
            c.send();
            c.read();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = Instant::now() + drain;
    while Instant::now() < end
        && conns
            .iter()
            .any(|c| c.error.is_none() && c.received < c.sent)
    {
        for c in &mut conns {
            c.read();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    conns
}

fn count(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Kill,
    KillAfterBackendAdded,
    Term,
}

fn failover(tag: &str, scenario: Scenario) {
    let backends = if scenario == Scenario::KillAfterBackendAdded {
        4
    } else {
        3
    };
    let mut c = Cluster::build(tag, backends);
    c.start_router_and_servers();
    for i in 0..2 {
        c.start_l4lb(i, 3);
    }
    let both = vec![lb_addr(0), lb_addr(1)];
    let converged = c.wait_next_hops(&both, Duration::from_secs(30));
    assert!(
        converged.is_some(),
        "the router has no ECMP route through both: {:?}\nlb1:\n{}\nlb2:\n{}",
        c.next_hops(),
        c.log(0),
        c.log(1)
    );

    let conns = connect(&c, CONNECTIONS, 20000);
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            drive(
                conns,
                stop,
                Duration::from_secs(25),
                Duration::from_secs(60),
            )
        })
    };
    // Both carry a share; the sync stream has told each of the other's flows.
    // (The counts are copied out ten times a second.)
    let created = || -> Vec<u64> {
        (0..2)
            .map(|i| count(&c.stats(i), &["flows", "created"]))
            .collect()
    };
    wait_until(Duration::from_secs(5), || {
        created().iter().sum::<u64>() >= CONNECTIONS as u64
    });
    let carried = created();
    for (i, n) in carried.iter().enumerate() {
        assert!(
            *n >= 40,
            "lb{} carries {n} of {CONNECTIONS} connections",
            i + 1
        );
    }
    assert_eq!(carried.iter().sum::<u64>(), CONNECTIONS as u64);
    assert!(wait_until(Duration::from_secs(5), || {
        count(&c.stats(1), &["sync", "installed"]) >= carried[0]
    }));

    if scenario == Scenario::KillAfterBackendAdded {
        // A backend joins both, after the connections began: Maglev's table moves about a
        // quarter of the flows; only the synchronised entries keep them where they are.
        let body = format!(
            "{{\"id\": \"b4\", \"address\": \"{}\", \"port\": {PORT}}}",
            backend_addr(3)
        );
        for lb in &c.lbs {
            netns::run(lb.command("curl").args([
                "-sf",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                "http://127.0.0.1:9180/api/v1/services/web/backends",
            ]))
            .unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(1));

    let started = Instant::now();
    let lb1 = c.l4lb[0].take().unwrap();
    let report = match scenario {
        Scenario::Term => {
            lb1.signal("TERM").unwrap();
            // The route goes before forwarding stops.
            let moved = c.wait_next_hops(&[lb_addr(1)], Duration::from_secs(10));
            let at = started.elapsed();
            let f = lb1.wait(Duration::from_secs(20)).unwrap();
            eprintln!(
                "scaleout: SIGTERM: the route left lb1 after {moved:?}; lb1 exited after {:?}",
                started.elapsed()
            );
            assert!(moved.is_some(), "the route never left lb1");
            assert!(
                at < Duration::from_millis(3000),
                "lb1 stopped before the route moved ({at:?})"
            );
            Some(f)
        }
        _ => {
            lb1.signal("KILL").unwrap();
            let _ = lb1.wait(Duration::from_secs(5));
            let moved = c.wait_next_hops(&[lb_addr(1)], Duration::from_secs(15));
            eprintln!("scaleout: SIGKILL: the route converged after {moved:?}");
            assert!(
                moved.is_some(),
                "the route never left lb1: {:?}",
                c.next_hops()
            );
            None
        }
    };
    // Traffic goes on through lb2 for a while, then every line must come back.
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let conns = driver.join().unwrap();
    let broken: Vec<String> = conns
        .iter()
        .enumerate()
        .filter(|(_, k)| !k.whole())
        .map(|(i, k)| {
            format!(
                "{i} ({}): sent {} read {} {}",
                k.backend,
                k.sent,
                k.received,
                k.error.clone().unwrap_or_default()
            )
        })
        .collect();
    let s2 = c.stats(1);
    eprintln!(
        "scaleout: {} broken of {CONNECTIONS}; lb2 sync: {}",
        broken.len(),
        s2["sync"]
    );
    let allowed = match scenario {
        Scenario::Term => 0,
        _ => CONNECTIONS / 100,
    };
    assert!(
        broken.len() <= allowed,
        "{} connections broke (at most {allowed}): {:?}\nlb2:\n{}",
        broken.len(),
        &broken[..broken.len().min(10)],
        c.log(1)
    );
    assert!(
        conns.iter().all(|k| k.sent >= 50),
        "every connection kept sending"
    );
    // lb1's flows reached lb2 through the sync stream and became lb2's own.
    assert!(
        count(&s2, &["sync", "adopted"]) >= carried[0] * 9 / 10,
        "lb2 adopted {} of lb1's {} flows",
        count(&s2, &["sync", "adopted"]),
        carried[0]
    );
    if let Some(f) = report {
        assert!(f.status.success(), "lb1: {}", f.stderr);
        assert!(f.stderr.contains("withdrawn 198.18.100.10"), "{}", f.stderr);
    }
    // New connections go through lb2.
    let fresh = connect(&c, 20, 30000);
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let t = std::thread::spawn(move || {
        drive(fresh, s, Duration::from_secs(10), Duration::from_secs(20))
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let fresh = t.join().unwrap();
    assert!(
        fresh.iter().all(|k| k.whole() && k.sent > 0),
        "new connections through lb2"
    );
}

#[test]
fn a_killed_instance_breaks_no_connection() {
    failover("so-kill", Scenario::Kill);
}

#[test]
fn a_killed_instance_breaks_no_connection_after_a_backend_joined() {
    failover("so-join", Scenario::KillAfterBackendAdded);
}

#[test]
fn a_stopped_instance_withdraws_its_route_first() {
    failover("so-term", Scenario::Term);
}

/// A VIP is announced while its service has a backend that takes new flows and the appliance
/// is not drained: the router's multipath route follows drains and the backends' weights.
#[test]
fn announcements_follow_drains_and_the_backends() {
    let mut c = Cluster::build("so-ann", 3);
    c.start_router_and_servers();
    for i in 0..2 {
        c.start_l4lb(i, 3);
    }
    let both = vec![lb_addr(0), lb_addr(1)];
    let within = Duration::from_secs(20);
    assert!(
        c.wait_next_hops(&both, within).is_some(),
        "{:?}",
        c.next_hops()
    );
    let shown = c.ctl(0, &["bgp"]);
    assert!(
        shown.starts_with(
            "drained: false\nannounced: 198.18.100.10\nsession neighbor0: up Established"
        ),
        "{shown}"
    );

    let shown = c.ctl(0, &["bgp", "drain"]);
    assert!(
        shown.starts_with("drained: true\nannounced: none\n"),
        "{shown}"
    );
    assert!(
        c.wait_next_hops(&[lb_addr(1)], within).is_some(),
        "{:?}",
        c.next_hops()
    );
    // The drain survives a restart (the state file keeps it).
    let f = c.l4lb[0]
        .take()
        .unwrap()
        .stop(Duration::from_secs(20))
        .unwrap();
    assert!(f.status.success(), "{}", f.stderr);
    let said =
        "api: bgp drained: every VIP is withdrawn (until undrained; saved in the state file)";
    assert!(f.stderr.contains(said), "{}", f.stderr);
    c.start_l4lb(0, 3);
    let shown = c.ctl(0, &["bgp"]);
    assert!(
        shown.starts_with("drained: true\nannounced: none\n"),
        "{shown}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.next_hops(), vec![lb_addr(1)]);
    c.ctl(0, &["bgp", "undrain"]);
    assert!(
        c.wait_next_hops(&both, within).is_some(),
        "{:?}",
        c.next_hops()
    );

    // lb2's backends drained one by one: the VIP goes with the last.
    let weight = |b: usize, w: u32| {
        netns::run(c.lbs[1].command("curl").args([
            "-sf",
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!("{{\"weight\": {w}}}"),
            &format!(
                "http://127.0.0.1:9180/api/v1/services/web/backends/b{}",
                b + 1
            ),
        ]))
        .unwrap();
    };
    weight(0, 0);
    weight(1, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.next_hops(), both, "two backends drained of three");
    weight(2, 0);
    assert!(
        c.wait_next_hops(&[lb_addr(0)], within).is_some(),
        "{:?}",
        c.next_hops()
    );
    weight(1, 1);
    assert!(
        c.wait_next_hops(&both, within).is_some(),
        "{:?}",
        c.next_hops()
    );
    // lb2's BIRD dies: its route goes, and lb2's /healthz says why.
    let conf = c.dir.path().join("bird-lb2").join("bird.conf");
    netns::run(std::process::Command::new("pkill").args(["-f", &conf.display().to_string()]))
        .unwrap();
    assert!(
        c.wait_next_hops(&[lb_addr(0)], within).is_some(),
        "{:?}",
        c.next_hops()
    );
    let health = || {
        netns::run(
            c.lbs[1]
                .command("curl")
                .args(["-s", "http://127.0.0.1:9180/healthz"]),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(5), || health()
            .contains("bgp: BIRD exited")),
        "{}",
        health()
    );
    let audit = c.api(1, "/api/v1/audit").unwrap();
    assert!(audit.contains("bgp: withdrawn 198.18.100.10"), "{audit}");
    assert!(
        c.api(0, "/api/v1/audit")
            .unwrap()
            .contains("api: bgp undrained")
    );
}
