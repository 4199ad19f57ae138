//! Dynamic neighbour resolution through the real binary: a backend without a static neighbour
//! entry. An ARP request for it goes out at start, from our address on its prefix, before any
//! packet needs it; the first packet to it is held (not dropped) until the backend's ARP reply
//! is learned, then sent to the learned MAC, as later packets are.

mod common;

use common::{GW_MAC, PCAP_MAC, port_counter, run_pcap};
use etherparse::PacketBuilder;

const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x0a];
const VIP: [u8; 4] = [198, 18, 0, 100];
/// Frames for another host between the steps, so that the control side has time to learn and
/// publish before the next packet to the backend (each is a counted drop, not_our_mac).
const GAP: usize = 100_000;

const CONFIG: &str = r#"
[dpdk]
idle_sleep_us = 50
rx_desc = 256
tx_desc = 256
flow_capacity = 1024
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "198.18.1.1/24"]
[[services]]
id = "dns"
protocol = "udp"
vip = "198.18.0.100"
port = 53
forwarding = "dr"
[[services.backends]]
id = "b1"
address = "198.18.1.10"
"#;

fn query(n: u8) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4([198, 18, 0, 7], VIP, 64)
        .udp(5353, 53)
        .write(&mut out, &[n])
        .unwrap();
    out
}

fn gap() -> impl Iterator<Item = Vec<u8>> {
    let mut other = query(0);
    other[0..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 1]);
    std::iter::repeat_n(other, GAP)
}

#[test]
fn an_unknown_backend_mac_is_resolved_by_arp_and_learned() {
    let mut reply = vec![];
    reply.extend_from_slice(&PCAP_MAC);
    reply.extend_from_slice(&B_MAC);
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&B_MAC);
    reply.extend_from_slice(&[198, 18, 1, 10]);
    reply.extend_from_slice(&PCAP_MAC);
    reply.extend_from_slice(&[198, 18, 1, 1]);
    reply.resize(60, 0);
    let mut frames = vec![query(1)];
    frames.extend(gap());
    frames.push(reply);
    frames.extend(gap());
    frames.push(query(2));
    // The worker on its own CPU, so that the control side is never waiting for it.
    let (done, sent) = run_pcap("neighbors", CONFIG, &frames, "--lcores=0@0,1@1");

    // The ARP request for the backend, from our address on its prefix, broadcast: at start
    // (and once a second while it is not answered).
    let mut request = vec![0xff; 6];
    request.extend_from_slice(&PCAP_MAC);
    request.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    request.extend_from_slice(&PCAP_MAC);
    request.extend_from_slice(&[198, 18, 1, 1, 0, 0, 0, 0, 0, 0, 198, 18, 1, 10]);
    request.resize(60, 0);
    assert!(!sent.requests.is_empty(), "{}", done.stdout);
    for r in &sent.requests {
        assert_eq!(r, &request);
    }
    assert_eq!(
        sent.frames.len(),
        2,
        "both queries, the first held until the reply:\n{}",
        done.stdout
    );
    // Both went to the learned MAC, otherwise unchanged (direct routing).
    for (i, n) in [1, 2].into_iter().enumerate() {
        let mut want = query(n);
        want[0..6].copy_from_slice(&B_MAC);
        want[6..12].copy_from_slice(&PCAP_MAC);
        assert_eq!(sent.frames[i], want, "query {n}");
    }

    assert!(
        done.stdout
            .contains(&format!("drops: not_our_mac={}\n", 2 * GAP)),
        "nothing but the other host's frames dropped:\n{}",
        done.stdout
    );
    assert!(
        done.stdout
            .contains("actions: forwarded=2 replied=0 consumed=1 redirected=0 redirect-dropped=0 dropped=200000 held=1 to-kernel=0 to-kernel-dropped=0 from-kernel=0\n"),
        "the first query held, the ARP reply taken in:\n{}",
        done.stdout
    );
    assert!(
        done.stderr
            .contains("neighbour learned addr=198.18.1.10 mac=02:00:00:00:01:0a"),
        "{}",
        done.stderr
    );
    assert_eq!(
        port_counter(&done.stdout, 0, "tx-packets"),
        2 + (sent.announcements.len() + sent.requests.len()) as u64
    );
}
