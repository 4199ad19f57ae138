//! Two workers on one port with two queues (net_pcap: one rx_pcap file per queue): NAT flows
//! are owned by the worker their client hashes to, packets that land on the other worker are
//! handed over on a ring and translated there, and no flow is split across workers.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Appliance, GW_MAC, PCAP_MAC, eal_args, file_prefix, pcap};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x0a];
const VIP: [u8; 4] = [198, 18, 0, 100];
const BACKEND: [u8; 4] = [198, 18, 1, 10];
const FLOWS: u16 = 64;
/// Frames for another MAC ahead of the replies on queue 1: they keep worker 1 busy while
/// worker 0 creates the flows, so that replies meet existing flows.
const FILLER: usize = 30_000;

const CONFIG: &str = r#"
[dpdk]
idle_sleep_us = 50
rx_desc = 256
tx_desc = 256
flow_capacity = 4096
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
[[services]]
id = "web"
vip = "198.18.0.100"
port = 80
scheduler = "rr"
forwarding = "nat"
[[services.backends]]
id = "b1"
address = "198.18.1.10"
port = 8080
"#;

fn client(flow: u16) -> [u8; 4] {
    [198, 19, (flow / 200) as u8, (flow % 200) as u8 + 1]
}

fn tcp(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let t = PacketBuilder::ethernet2(src_mac, PCAP_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64240);
    let t = if syn { t.syn() } else { t.syn().ack(2) };
    let mut out = Vec::new();
    t.write(&mut out, b"").unwrap();
    out
}

fn l4(h: &PacketHeaders<'_>) -> (u16, u16) {
    match &h.transport {
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        other => panic!("not TCP: {other:?}"),
    }
}

#[test]
fn nat_replies_landing_on_the_other_worker_are_steered_and_translated() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("l4lb.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let syns: Vec<Vec<u8>> = (0..FLOWS)
        .map(|f| tcp(GW_MAC, client(f), VIP, 40000 + f, 80, true))
        .collect();
    let mut q1: Vec<Vec<u8>> = (0..FILLER)
        .map(|_| tcp(GW_MAC, [198, 19, 200, 1], VIP, 1, 80, true))
        .collect();
    for f in &mut q1 {
        f[0..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 1]); // for another host: dropped at once
    }
    q1.extend((0..FLOWS).map(|f| tcp(B_MAC, BACKEND, client(f), 8080, 40000 + f, false)));
    let (a, b, x, y) = (
        dir.path().join("a.pcap"),
        dir.path().join("b.pcap"),
        dir.path().join("x.pcap"),
        dir.path().join("y.pcap"),
    );
    pcap::write(&a, &syns);
    pcap::write(&b, &q1);
    let prefix = file_prefix("workers");
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},rx_pcap={},tx_pcap={},tx_pcap={}",
        a.display(),
        b.display(),
        x.display(),
        y.display()
    );
    // Two worker lcores on this 2-CPU box: lcore 1 on CPU 1, lcore 2 on CPU 0 with the main lcore.
    let app = Appliance::start(
        &config,
        &prefix,
        &eal_args(&prefix, "--lcores=0@0,1@1,2@0", &[vdev]),
    );
    let total = (syns.len() + q1.len()) as u64;
    assert!(
        app.wait_rx(0, total, Duration::from_secs(60)),
        "the PMD never received all {total} packets"
    );
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "stderr:\n{}", done.stderr);

    // Which worker's tx queue each packet left by.
    let mut seen: HashMap<u16, (Option<usize>, Option<usize>)> = HashMap::new();
    for (queue, file) in [(0usize, &x), (1, &y)] {
        for (i, frame) in common::split_announcements(pcap::read(file))
            .frames
            .iter()
            .enumerate()
        {
            let what = format!("queue {queue} packet {i}");
            let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
            let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
                panic!("{what}: not IPv4")
            };
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "{what}");
            let Some(TransportHeader::Tcp(t)) = &h.transport else {
                panic!("{what}: not TCP")
            };
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(ip, h.payload.slice()).unwrap(),
                "{what}: tcp checksum"
            );
            let (sport, dport) = l4(&h);
            if ip.destination == BACKEND {
                // a client's SYN, translated to the backend
                assert_eq!(dport, 8080, "{what}");
                assert_eq!(&frame[0..6], &B_MAC, "{what}");
                let flow = sport - 40000;
                assert_eq!(ip.source, client(flow), "{what}");
                let e = seen.entry(flow).or_default();
                assert!(e.0.is_none(), "{what}: flow {flow} forwarded twice");
                e.0 = Some(queue);
            } else {
                // a backend's reply, translated back to the VIP
                assert_eq!(ip.source, VIP, "{what}: reply from the VIP");
                assert_eq!(sport, 80, "{what}");
                let flow = dport - 40000;
                assert_eq!(ip.destination, client(flow), "{what}");
                assert_eq!(&frame[0..6], &GW_MAC, "{what}");
                let e = seen.entry(flow).or_default();
                assert!(e.1.is_none(), "{what}: reply of flow {flow} twice");
                e.1 = Some(queue);
            }
        }
    }
    assert_eq!(
        seen.len(),
        usize::from(FLOWS),
        "every flow came out:\n{}",
        done.stdout
    );
    let mut per_worker = [0, 0];
    for (flow, (syn, reply)) in &seen {
        let (s, r) = (
            syn.expect("syn out"),
            reply.unwrap_or_else(|| panic!("reply of flow {flow} out:\n{}", done.stdout)),
        );
        assert_eq!(s, r, "flow {flow}: both directions handled by one worker");
        per_worker[s] += 1;
    }
    assert!(
        per_worker[0] > 0 && per_worker[1] > 0,
        "both workers own flows: {per_worker:?}"
    );
    // Every SYN arrived on worker 0: those owned by worker 1 crossed; every reply arrived on
    // worker 1: those owned by worker 0 crossed. So exactly FLOWS packets were redirected.
    let flows = u64::from(FLOWS);
    assert!(
        done.stdout.contains(&format!("actions: forwarded={} replied=0 consumed=0 redirected={flows} redirect-dropped=0 dropped={FILLER}", 2 * flows)),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout
            .contains(&format!("drops: not_our_mac={FILLER}\n")),
        "{}",
        done.stdout
    );
}
