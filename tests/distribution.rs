//! Distribution through the real binary, 1200 new flows per service: rr and wrr give exact
//! shares; Maglev gives each backend its weight's share within ±10%, and the same flows get the
//! same backends in a second, separate run (determinism across processes).

mod common;

use std::collections::HashMap;

use common::{GW_MAC, PCAP_MAC, run_pcap};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

const VIP: [u8; 4] = [198, 18, 0, 100];
const FLOWS: u16 = 1200;

fn config() -> String {
    let mut c = String::from(
        "[dpdk]\nidle_sleep_us = 100\nrx_desc = 256\ntx_desc = 256\nflow_capacity = 8192\n\
         [[interfaces]]\nport = 0\naddresses = [\"198.18.0.1/24\", \"198.18.1.1/24\"]\n\
         [[routes]]\nprefix = \"0.0.0.0/0\"\nvia = \"198.18.0.254\"\n\
         [[neighbors]]\naddress = \"198.18.0.254\"\nmac = \"02:00:00:00:00:fe\"\n",
    );
    for b in 0..3 {
        c += &format!(
            "[[neighbors]]\naddress = \"198.18.1.{}\"\nmac = \"02:00:00:00:01:{:02x}\"\n",
            10 + b,
            10 + b
        );
    }
    for (name, port, sched, weights) in [
        ("rr", 1000, "rr", [1, 1, 1]),
        ("wrr", 1001, "wrr", [1, 2, 3]),
        ("maglev", 1002, "maglev", [1, 2, 3]),
    ] {
        c += &format!(
            "[[services]]\nid = \"{name}\"\nprotocol = \"udp\"\nvip = \"198.18.0.100\"\nport = {port}\nscheduler = \"{sched}\"\n"
        );
        for (b, w) in weights.iter().enumerate() {
            c += &format!(
                "[[services.backends]]\nid = \"{name}-{b}\"\naddress = \"198.18.1.{}\"\nport = {}\nweight = {w}\n",
                10 + b,
                2000 + b
            );
        }
    }
    c
}

fn flow_packet(service_port: u16, flow: u16) -> Vec<u8> {
    let client = [198, 19, (flow >> 8) as u8, flow as u8];
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4(client, VIP, 64)
        .udp(30000 + flow, service_port)
        .write(&mut out, b"x")
        .unwrap();
    out
}

/// Runs the appliance over the flows of all three services; returns, per (service port, flow),
/// the backend (0..3) that the flow was given.
fn run(test: &str) -> HashMap<(u16, u16), usize> {
    let frames: Vec<Vec<u8>> = (0..FLOWS)
        .flat_map(|f| [1000, 1001, 1002].map(|p| flow_packet(p, f)))
        .collect();
    let (done, sent) = run_pcap(test, &config(), &frames, "0");
    let out = sent.frames;
    let mut chosen = HashMap::new();
    for f in out {
        let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
        let (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u))) = (&h.net, &h.transport)
        else {
            panic!()
        };
        let backend = usize::from(ip.destination[3] - 10);
        assert_eq!(
            u.destination_port,
            2000 + backend as u16,
            "port and address of one backend"
        );
        let service_port = [1000, 1001, 1002][chosen.len() % 3]; // output keeps input order
        chosen.insert((service_port, u.source_port - 30000), backend);
    }
    assert_eq!(chosen.len(), 3 * usize::from(FLOWS), "{}", done.stdout);
    chosen
}

fn shares(chosen: &HashMap<(u16, u16), usize>, port: u16) -> [usize; 3] {
    let mut s = [0; 3];
    for ((p, _), b) in chosen {
        if *p == port {
            s[*b] += 1;
        }
    }
    s
}

#[test]
fn rr_and_wrr_are_exact_maglev_follows_weights_and_is_the_same_in_another_process() {
    let first = run("dist1");
    assert_eq!(shares(&first, 1000), [400, 400, 400], "rr: exact thirds");
    assert_eq!(shares(&first, 1001), [200, 400, 600], "wrr 1:2:3: exact");
    let m = shares(&first, 1002);
    for (b, w) in [1.0, 2.0, 3.0].iter().enumerate() {
        let expected = f64::from(FLOWS) * w / 6.0;
        let got = m[b] as f64;
        assert!(
            (got - expected).abs() <= 0.10 * expected,
            "maglev backend {b}: {got} flows, expected {expected} ±10%: {m:?}"
        );
    }
    let second = run("dist2");
    let differ = (0..FLOWS)
        .filter(|f| first[&(1002, *f)] != second[&(1002, *f)])
        .count();
    assert_eq!(
        differ, 0,
        "maglev picked other backends in a second process for {differ} flows"
    );
}
