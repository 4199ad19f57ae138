//! Persistence through the real binary, packets from a named pipe (common::pcap::Feed) so the
//! configuration can change between batches: per client (/32) and per network (/24), each
//! client's new flows on its template's backend while the scheduler spreads the clients; a
//! port-zero DR service keeping one client on one backend across ports; a drained backend
//! keeping its persistent clients (IPVS's expire_quiescent_template = 0) and taking no new
//! ones (and with expire_quiescent_template, losing them); a removed backend's clients scheduled
//! anew.

mod common;

use std::time::Duration;

use common::pcap::{self, Feed};
use common::{Appliance, eal_args, file_prefix, split_announcements};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

const VIP: [u8; 4] = [198, 18, 0, 100];

const CONFIG: &str = r#"
[dpdk]
burst = 1
idle_sleep_us = 100
rx_desc = 256
tx_desc = 256
flow_capacity = 1024
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "198.18.1.1/24"]
[[routes]]
prefix = "0.0.0.0/0"
via = "198.18.0.254"
[[neighbors]]
address = "198.18.0.254"
mac = "02:00:00:00:00:fe"
[[neighbors]]
address = "198.18.1.10"
mac = "02:00:00:00:01:0a"
[[neighbors]]
address = "198.18.1.11"
mac = "02:00:00:00:01:0b"
[[neighbors]]
address = "198.18.1.12"
mac = "02:00:00:00:01:0c"

[[services]]
id = "p32"
protocol = "udp"
vip = "198.18.0.100"
port = 53
scheduler = "rr"
persistence_timeout = 300
[[services.backends]]
id = "b0"
address = "198.18.1.10"
port = 5353
[[services.backends]]
id = "b1"
address = "198.18.1.11"
port = 5353
[[services.backends]]
id = "b2"
address = "198.18.1.12"
port = 5353

[[services]]
id = "p24"
protocol = "udp"
vip = "198.18.0.100"
port = 54
scheduler = "rr"
persistence_timeout = 300
persistence_netmask = 24
[[services.backends]]
id = "b0"
address = "198.18.1.10"
port = 5454
[[services.backends]]
id = "b1"
address = "198.18.1.11"
port = 5454

[[services]]
id = "pq"
protocol = "udp"
vip = "198.18.0.100"
port = 55
scheduler = "rr"
persistence_timeout = 300
expire_quiescent_template = true
[[services.backends]]
id = "b0"
address = "198.18.1.10"
port = 5555
[[services.backends]]
id = "b1"
address = "198.18.1.11"
port = 5555

[[services]]
id = "pz"
protocol = "tcp"
vip = "198.18.0.100"
port = 0
scheduler = "rr"
forwarding = "dr"
persistence_timeout = 300
[[services.backends]]
id = "b0"
address = "198.18.1.10"
[[services.backends]]
id = "b1"
address = "198.18.1.11"
"#;

fn udp(client: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xfe], common::PCAP_MAC)
        .ipv4(client, VIP, 64)
        .udp(sport, dport)
        .write(&mut out, b"q")
        .unwrap();
    out
}

fn syn(client: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xfe], common::PCAP_MAC)
        .ipv4(client, VIP, 64)
        .tcp(sport, dport, 1, 64240)
        .syn()
        .write(&mut out, &[])
        .unwrap();
    out
}

/// Each output frame as (client's last two bytes, source port, destination port, backend
/// 0..3 by MAC), checked to be addressed to that backend (NAT) or to the VIP (DR).
fn summary(f: &[u8]) -> ([u8; 2], u16, u16, u8) {
    let h = PacketHeaders::from_ethernet_slice(f).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4")
    };
    let (s, d) = match &h.transport {
        Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        _ => panic!("not TCP or UDP"),
    };
    assert_eq!(f[..5], [2, 0, 0, 0, 1], "to a backend's MAC");
    let b = f[5] - 0x0a;
    if h.transport
        .as_ref()
        .is_some_and(|t| matches!(t, TransportHeader::Tcp(_)))
    {
        assert_eq!(ip.destination, VIP, "DR keeps the VIP");
    } else {
        assert_eq!(ip.destination, [198, 18, 1, 10 + b], "NAT to the backend");
    }
    ([ip.source[2], ip.source[3]], s, d, b)
}

#[test]
fn clients_and_networks_stick_to_their_backends_through_drains_removals_and_ports() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("l4lb.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (input, output) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    Feed::create(&input);
    let prefix = file_prefix("persistence");
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let app = Appliance::start(&cfg, &prefix, &eal_args(&prefix, "0", &[vdev]));
    let mut feed = Feed::open(&input, Duration::from_secs(30));
    let base = app.api_base(Duration::from_secs(30));
    let mut send = |frames: Vec<Vec<u8>>| {
        feed.send(&frames);
        let n = feed.sent();
        assert!(
            app.wait_rx(0, n, Duration::from_secs(30)),
            "the appliance never received {n} packets; log:\n{}",
            app.log()
        );
    };
    let c = |i: u8| [198, 19, 0, i];

    // A. /32: three clients, then each again in another order; /24: two networks; port zero.
    send(vec![
        udp(c(1), 1000, 53),
        udp(c(2), 1000, 53),
        udp(c(3), 1000, 53),
        udp(c(3), 1001, 53),
        udp(c(1), 1001, 53),
        udp(c(2), 1001, 53),
        udp([198, 19, 1, 1], 2000, 54),
        udp([198, 19, 1, 2], 2000, 54),
        udp([198, 19, 2, 1], 2000, 54),
        udp([198, 19, 2, 2], 2000, 54),
        udp([198, 19, 1, 3], 2000, 54),
        syn([198, 19, 3, 1], 3000, 80),
        syn([198, 19, 3, 1], 3001, 443),
        syn([198, 19, 3, 1], 3002, 21),
        syn([198, 19, 3, 2], 3000, 80),
        syn([198, 19, 3, 2], 3001, 443),
        udp(c(9), 1000, 55),
    ]);
    // B. b0 drained: its client keeps it, a new client does not get it.
    let agent = ureq::Agent::new_with_defaults();
    for service in ["p32", "pq"] {
        agent
            .patch(format!("{base}/api/v1/services/{service}/backends/b0"))
            .send_json(serde_json::json!({"weight": 0}))
            .unwrap();
    }
    send(vec![
        udp(c(1), 1002, 53),
        udp(c(4), 1000, 53),
        udp(c(9), 1001, 55),
    ]);
    // C. b1 removed: its clients are scheduled anew (rr from the head: b0 is drained, so b2);
    // the drained b0 still has its client.
    agent
        .delete(format!("{base}/api/v1/services/p32/backends/b1"))
        .call()
        .unwrap();
    send(vec![udp(c(2), 1002, 53), udp(c(1), 1003, 53)]);

    std::thread::sleep(Duration::from_millis(300)); // the workers copy their counts out 10/s
    let stats: serde_json::Value = agent
        .get(format!("{base}/api/v1/stats"))
        .call()
        .unwrap()
        .into_body()
        .read_json()
        .unwrap();
    drop(feed);
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    let out: Vec<_> = split_announcements(pcap::read(&output))
        .frames
        .iter()
        .map(|f| summary(f))
        .collect();
    let backends: Vec<u8> = out.iter().map(|o| o.3).collect();
    assert_eq!(out.len(), 22, "{out:?}\n{}", done.stdout);
    assert_eq!(
        backends[..6],
        [0, 1, 2, 2, 0, 1],
        "/32: each client's second flow on its first one's backend (rr alone: 0 1 2 0 1 2)"
    );
    assert_eq!(
        backends[6..11],
        [0, 0, 1, 1, 0],
        "/24: a network per backend (rr alone: 0 1 0 1 0)"
    );
    assert_eq!(
        out[11..16].iter().map(|o| (o.2, o.3)).collect::<Vec<_>>(),
        [(80, 0), (443, 0), (21, 0), (80, 1), (443, 1)],
        "port zero: a client on one backend whatever the port"
    );
    assert_eq!(backends[16], 0, "expire_quiescent_template: first on b0");
    assert_eq!(
        backends[17..19],
        [0, 1],
        "drained: kept by its client, not given"
    );
    assert_eq!(
        backends[19], 1,
        "expire_quiescent_template: a drained backend's client is scheduled anew"
    );
    assert_eq!(
        backends[20..22],
        [2, 0],
        "removed: scheduled anew; the drained one keeps its client"
    );
    let p32 = stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "p32")
        .unwrap();
    assert_eq!(p32["new_flows"], 10, "{p32}");
    // Templates: four clients of p32, two networks of p24, one client of pq, two of pz.
    assert_eq!(
        (
            stats["flows"]["templates"].clone(),
            stats["flows"]["templates_full"].clone()
        ),
        (9.into(), 0.into()),
        "{}",
        stats["flows"]
    );
}

/// Two workers on one port with two queues (net_pcap: one rx_pcap file per queue), a
/// persistent NAT service: a client's connections arrive on both queues, and all of them go to
/// its template's backend, sent by one worker (they are steered to the worker that owns the
/// client's network, where its template is).
#[test]
fn with_two_workers_a_clients_connections_from_both_queues_share_one_template() {
    const CLIENTS: u8 = 24;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("l4lb.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    // Each client in a /24 of its own: the /24 service steers every NAT flow by its client's
    // /24, so clients of one network share a worker.
    let client = |i: u8| [198, 19, 10 + i, 1];
    // Queue 0: each client's first two flows; queue 1: a burst of frames for another MAC (to let
    // queue 0 go first), then each client's next two flows.
    let q0: Vec<Vec<u8>> = (0..CLIENTS)
        .flat_map(|i| [udp(client(i), 1000, 53), udp(client(i), 1001, 53)])
        .collect();
    let mut q1: Vec<Vec<u8>> = (0..20_000)
        .map(|_| {
            let mut f = udp([198, 19, 9, 9], 9, 53);
            f[0..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 1]);
            f
        })
        .collect();
    q1.extend((0..CLIENTS).flat_map(|i| [udp(client(i), 1002, 53), udp(client(i), 1003, 53)]));
    let (a, b, x, y) = (
        dir.path().join("a.pcap"),
        dir.path().join("b.pcap"),
        dir.path().join("x.pcap"),
        dir.path().join("y.pcap"),
    );
    pcap::write(&a, &q0);
    pcap::write(&b, &q1);
    let prefix = file_prefix("persist-workers");
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},rx_pcap={},tx_pcap={},tx_pcap={}",
        a.display(),
        b.display(),
        x.display(),
        y.display()
    );
    let app = Appliance::start(
        &cfg,
        &prefix,
        &eal_args(&prefix, "--lcores=0@0,1@1,2@0", &[vdev]),
    );
    let total = (q0.len() + q1.len()) as u64;
    assert!(
        app.wait_rx(0, total, Duration::from_secs(60)),
        "the PMD never received all {total} packets"
    );
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "stderr:\n{}", done.stderr);
    let mut backend_of: std::collections::HashMap<u8, (u8, usize)> = Default::default();
    let mut per_queue = [0usize; 2];
    let mut out = 0;
    for (queue, file) in [(0usize, &x), (1, &y)] {
        for f in split_announcements(pcap::read(file)).frames {
            let (c, sport, _, b) = summary(&f);
            assert_eq!(c[1], 1, "a client of this test");
            let (first, q) = *backend_of.entry(c[0]).or_insert((b, queue));
            assert_eq!(b, first, "client {}: port {sport} on another backend", c[0]);
            assert_eq!(q, queue, "client {}: its flows handled by one worker", c[0]);
            per_queue[queue] += 1;
            out += 1;
        }
    }
    assert_eq!(out, 4 * usize::from(CLIENTS), "{}", done.stdout);
    assert!(
        per_queue[0] > 0 && per_queue[1] > 0,
        "both workers own clients: {per_queue:?}"
    );
    let mut on = [0; 3];
    for (b, _) in backend_of.values() {
        on[usize::from(*b)] += 1;
    }
    assert!(
        on.iter().all(|n| *n > 0),
        "clients spread by the scheduler: {on:?}"
    );
}
