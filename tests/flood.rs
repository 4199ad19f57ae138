//! A SYN flood into a full flow table does not evict established flows: they keep their
//! backends, and the appliance reports that no established flow was evicted.

mod common;

use common::{GW_MAC, PCAP_MAC, run_pcap};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders};

const VIP: [u8; 4] = [198, 18, 0, 100];
const CAPACITY: u16 = 100;
const ESTABLISHED: u16 = 90;
const FLOOD: u32 = 20_000;

const CONFIG: &str = r#"
[dpdk]
idle_sleep_us = 100
rx_desc = 256
tx_desc = 256
flow_capacity = 100
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "198.18.1.1/24"]
[[routes]]
prefix = "0.0.0.0/0"
via = "198.18.0.254"
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
id = "web"
vip = "198.18.0.100"
port = 80
scheduler = "rr"
forwarding = "dr"
[[services.backends]]
id = "b0"
address = "198.18.1.10"
[[services.backends]]
id = "b1"
address = "198.18.1.11"
[[services.backends]]
id = "b2"
address = "198.18.1.12"
"#;

fn tcp(client: [u8; 4], sport: u16, syn: bool) -> Vec<u8> {
    let t = PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4(client, VIP, 64)
        .tcp(sport, 80, 1, 64240);
    let t = if syn { t.syn() } else { t.ack(1) };
    let mut out = Vec::new();
    t.write(&mut out, b"").unwrap();
    out
}

#[test]
fn a_syn_flood_into_a_full_table_leaves_established_flows_on_their_backends() {
    let mut frames = Vec::new();
    for f in 0..ESTABLISHED {
        frames.push(tcp([198, 19, 0, f as u8 + 1], 1000, true));
    }
    for f in 0..ESTABLISHED {
        frames.push(tcp([198, 19, 0, f as u8 + 1], 1000, false)); // the client's ACK: established
    }
    for i in 0..FLOOD {
        frames.push(tcp(
            [198, 19, 1 + (i >> 16) as u8, (i >> 8) as u8],
            i as u16,
            true,
        ));
    }
    for f in 0..ESTABLISHED {
        frames.push(tcp([198, 19, 0, f as u8 + 1], 1000, false));
    }
    let (done, sent) = run_pcap("flood", CONFIG, &frames, "0");
    let out = sent.frames;
    assert_eq!(out.len(), frames.len(), "every packet forwarded (DR)");
    let backend_of = |f: &[u8]| f[5]; // the backend MAC's last byte
    let client_of = |f: &[u8]| match PacketHeaders::from_ethernet_slice(f).unwrap().net {
        Some(NetHeaders::Ipv4(ip, _)) => ip.source,
        _ => panic!("not IPv4"),
    };
    let n = usize::from(ESTABLISHED);
    for f in 0..n {
        let before = &out[f];
        let after = &out[out.len() - n + f];
        assert_eq!(client_of(before), client_of(after));
        assert_eq!(
            backend_of(after),
            backend_of(before),
            "established flow {f} kept its backend through the flood"
        );
        assert_eq!(backend_of(&out[n + f]), backend_of(before));
    }
    let evicted = u64::from(FLOOD) - u64::from(CAPACITY - ESTABLISHED);
    assert!(
        done.stdout.contains(&format!(
            "flows: created={} expired=0 evicted={evicted} evicted-established=0 flushed=0",
            u64::from(FLOOD) + u64::from(ESTABLISHED)
        )),
        "{}",
        done.stdout
    );
}
