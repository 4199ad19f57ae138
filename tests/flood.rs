//! Floods into a full flow table: SYN and ACK floods evict no established flow (each keeps its
//! backend, and the appliance reports none evicted), and under a SYN flood handshakes whose SYN
//! entry was evicted still reach the SYN's backend.

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

/// The backend a forwarded frame went to: its destination MAC's last byte.
fn backend_of(f: &[u8]) -> u8 {
    f[5]
}

fn client_of(f: &[u8]) -> [u8; 4] {
    match PacketHeaders::from_ethernet_slice(f).unwrap().net {
        Some(NetHeaders::Ipv4(ip, _)) => ip.source,
        _ => panic!("not IPv4"),
    }
}

/// 90 established flows (SYN, then the client's ACK), then 20,000 segments from tuples never
/// seen — SYNs, or ACKs (flows that start mid-stream) — then the 90 again: each established flow
/// keeps its backend, none is evicted, and the flood evicts only its own kind.
fn flood_beside_established_flows(test: &str, flood_syn: bool) {
    let client = |f: u16| [198, 19, 0, f as u8 + 1];
    let mut frames = Vec::new();
    for f in 0..ESTABLISHED {
        frames.push(tcp(client(f), 1000, true));
    }
    for f in 0..ESTABLISHED {
        frames.push(tcp(client(f), 1000, false));
    }
    for i in 0..FLOOD {
        frames.push(tcp(
            [198, 19, 1 + (i >> 16) as u8, (i >> 8) as u8],
            i as u16,
            flood_syn,
        ));
    }
    for f in 0..ESTABLISHED {
        frames.push(tcp(client(f), 1000, false));
    }
    let (done, sent) = run_pcap(test, CONFIG, &frames, "0");
    let out = sent.frames;
    assert_eq!(out.len(), frames.len(), "every packet forwarded (DR)");
    let n = usize::from(ESTABLISHED);
    for f in 0..n {
        let (before, after) = (&out[f], &out[out.len() - n + f]);
        assert_eq!(client_of(before), client_of(after));
        assert_eq!(
            backend_of(after),
            backend_of(before),
            "established flow {f} kept its backend through the flood"
        );
        assert_eq!(backend_of(&out[n + f]), backend_of(before));
    }
    assert!(
        done.stdout.contains(&format!(
            "flows: created={} expired=0 evicted={} evicted-established=0 flushed=0",
            u64::from(FLOOD) + u64::from(ESTABLISHED),
            u64::from(FLOOD) - u64::from(CAPACITY - ESTABLISHED)
        )),
        "{}",
        done.stdout
    );
}

#[test]
fn a_syn_flood_into_a_full_table_leaves_established_flows_on_their_backends() {
    flood_beside_established_flows("flood", true);
}

#[test]
fn an_ack_flood_into_a_full_table_leaves_established_flows_on_their_backends() {
    flood_beside_established_flows("ackflood", false);
}

/// A SYN flood keeps the table full of half-open flows, so a real client's SYN entry is
/// evicted long before its ACK arrives (2,000 flood SYNs later, 20 times the table). Every one
/// of 500 such handshakes still reaches one backend with its SYN and its ACK.
#[test]
fn handshakes_complete_on_their_backend_while_a_syn_flood_evicts_their_syn_entries() {
    const CLIENTS: u32 = 500;
    const BETWEEN: u32 = 2_000;
    let mut frames = Vec::new();
    let mut flood = 0u32;
    let mut flood_syn = |frames: &mut Vec<Vec<u8>>| {
        frames.push(tcp(
            [198, 19, 128 + (flood >> 16) as u8, (flood >> 8) as u8],
            flood as u16,
            true,
        ));
        flood += 1;
    };
    for _ in 0..2 * CAPACITY {
        flood_syn(&mut frames); // the table is full, and half-open flows are being evicted
    }
    let addr = |c: u32| [198, 19, (c >> 8) as u8, c as u8];
    let mut legit = Vec::new(); // (index of the SYN, index of the ACK)
    for c in 0..CLIENTS {
        let syn = frames.len();
        frames.push(tcp(addr(c), 2000, true));
        for _ in 0..BETWEEN / CLIENTS {
            flood_syn(&mut frames);
        }
        legit.push(syn);
    }
    // The ACKs in the same order, each after BETWEEN more flood SYNs than its SYN.
    let mut acks = Vec::new();
    for c in 0..CLIENTS {
        acks.push(frames.len());
        frames.push(tcp(addr(c), 2000, false));
        for _ in 0..BETWEEN / CLIENTS {
            flood_syn(&mut frames);
        }
    }
    let (done, sent) = run_pcap("synflood", CONFIG, &frames, "0");
    let out = sent.frames;
    assert_eq!(out.len(), frames.len(), "every packet forwarded (DR)");
    let mut completed = 0;
    for c in 0..CLIENTS as usize {
        let (syn, ack) = (&out[legit[c]], &out[acks[c]]);
        assert_eq!(client_of(syn), client_of(ack));
        assert_eq!(client_of(syn), addr(c as u32));
        if backend_of(syn) == backend_of(ack) {
            completed += 1;
        }
    }
    assert_eq!(
        completed, CLIENTS,
        "handshakes whose ACK reached the SYN's backend"
    );
    // Hashed: every new flow after the first eviction (the 101st SYN); the ACKs start flows
    // too, their SYN entries long gone.
    let hashed = frames.len() - usize::from(CAPACITY) - 1;
    assert!(
        done.stdout.contains(&format!(
            "evicted-established=0 flushed=0 syn-flood-hashed={hashed}"
        )),
        "{}",
        done.stdout
    );
}
