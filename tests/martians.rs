//! Through the real binary: packets from addresses no host sends from, or from one of ours,
//! are neither answered nor forwarded nor given a flow; frames from a broadcast or multicast
//! MAC are dropped; TCP segments with impossible flags create no flow. Each drop is counted
//! under its reason, and the same packets from a real client go through.

mod common;

use common::{GW_MAC, PCAP_MAC, port_counter, run_pcap};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

const VIP: [u8; 4] = [198, 18, 0, 100];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
];
const CLIENT: [u8; 4] = [198, 19, 3, 4];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4];

const CONFIG: &str = r#"
[dpdk]
idle_sleep_us = 100
rx_desc = 256
tx_desc = 256
flow_capacity = 1024
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "198.18.1.1/24", "2001:db8::1/64", "2001:db8:1::1/64"]
[[routes]]
prefix = "0.0.0.0/0"
via = "198.18.0.254"
[[routes]]
prefix = "::/0"
via = "2001:db8::fe"
[[neighbors]]
address = "198.18.1.10"
mac = "02:00:00:00:01:0a"
[[neighbors]]
address = "2001:db8:1::10"
mac = "02:00:00:00:01:0b"
[[services]]
id = "web"
vip = "198.18.0.100"
port = 80
forwarding = "dr"
[[services.backends]]
id = "b1"
address = "198.18.1.10"
[[services]]
id = "web6"
vip = "2001:db8::100"
port = 80
forwarding = "dr"
[[services.backends]]
id = "b1"
address = "2001:db8:1::10"
"#;

const SYN: u8 = 0x02;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

fn echo4(src: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4(src, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut out, b"ping")
        .unwrap();
    out
}

fn echo6(src: [u8; 16]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv6(src, VIP6, 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut out, b"ping")
        .unwrap();
    out
}

/// A TCP segment to the VIP with `flags` (the TCP checksum is not checked by l4lb; the flags
/// byte is set after building).
fn tcp4(src: [u8; 4], flags: u8) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4(src, VIP, 64)
        .tcp(4000, 80, 1, 64240)
        .write(&mut out, b"")
        .unwrap();
    out[14 + 20 + 13] = flags;
    out
}

fn tcp6(src: [u8; 16], flags: u8) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv6(src, VIP6, 64)
        .tcp(4000, 80, 1, 64240)
        .write(&mut out, b"")
        .unwrap();
    out[14 + 40 + 13] = flags;
    out
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

#[test]
fn martian_sources_and_group_source_macs_are_dropped_and_real_clients_served() {
    let martians4: [[u8; 4]; 10] = [
        [0, 0, 0, 0],
        [0, 1, 2, 3],
        [127, 0, 0, 1],
        [224, 0, 0, 1],
        [240, 0, 0, 1],
        [255, 255, 255, 255],
        [198, 18, 0, 255], // the broadcast of 198.18.0.1/24
        [198, 18, 1, 255], // and of 198.18.1.1/24
        [198, 18, 0, 1],   // our own address
        VIP,
    ];
    let martians6 = [
        v6("::1"),
        v6("ff02::1"),
        v6("::ffff:198.19.0.1"), // IPv4-mapped, in an IPv6 header
        v6("2001:db8::1"),       // ours
        VIP6,
    ];
    let mut frames = Vec::new();
    for m in martians4 {
        frames.push(echo4(m));
        frames.push(tcp4(m, SYN));
    }
    for m in martians6 {
        frames.push(echo6(m));
        frames.push(tcp6(m, SYN));
    }
    frames.push(echo6(v6("::"))); // an echo request from the unspecified address
    let martian_drops = frames.len();
    // From a broadcast and a multicast source MAC (a client's SYN otherwise)
    let mut broadcast_mac = tcp4(CLIENT, SYN);
    broadcast_mac[6..12].copy_from_slice(&[0xff; 6]);
    let mut multicast_mac = echo4(CLIENT);
    multicast_mac[6..12].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
    frames.extend([broadcast_mac, multicast_mac]);
    // Flags no connection sends, from a real client: no flow, nothing forwarded
    for flags in [SYN | FIN, SYN | RST, SYN | FIN | ACK, 0] {
        frames.push(tcp4(CLIENT, flags));
    }
    frames.push(tcp6(CLIENT6, SYN | FIN));
    // The real client: echo answered, SYN forwarded (v4 and v6)
    frames.extend([
        echo4(CLIENT),
        tcp4(CLIENT, SYN),
        echo6(CLIENT6),
        tcp6(CLIENT6, SYN),
    ]);
    // The client's established flow, from a multicast MAC: the fast path drops it too
    let mut established_multicast = tcp4(CLIENT, ACK);
    established_multicast[6..12].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    frames.push(established_multicast);

    let (done, sent) = run_pcap("martians", CONFIG, &frames, "0");
    let out = sent.frames;
    assert_eq!(
        out.len(),
        4,
        "only the real client's four packets: {}",
        done.stdout
    );
    let parsed: Vec<_> = out
        .iter()
        .map(|f| PacketHeaders::from_ethernet_slice(f).unwrap())
        .collect();
    // echo reply to the client
    match (&parsed[0].net, &parsed[0].transport) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Icmpv4(_))) => {
            assert_eq!((ip.source, ip.destination), (VIP, CLIENT))
        }
        other => panic!("not an echo reply: {other:?}"),
    }
    // the SYN to the backend's MAC, addresses unchanged (DR)
    assert_eq!(&out[1][0..6], &[2, 0, 0, 0, 1, 0x0a]);
    assert_eq!(&out[1][26..34], &[CLIENT, VIP].concat()[..]);
    match (&parsed[2].net, &parsed[2].transport) {
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Icmpv6(_))) => {
            assert_eq!((ip.source, ip.destination), (VIP6, CLIENT6))
        }
        other => panic!("not an echo reply: {other:?}"),
    }
    assert_eq!(&out[3][0..6], &[2, 0, 0, 0, 1, 0x0b]);
    assert_eq!(&out[3][22..54], &[CLIENT6, VIP6].concat()[..]);

    assert_eq!(
        port_counter(&done.stdout, 0, "rx-packets"),
        frames.len() as u64
    );
    let drops = done
        .stdout
        .lines()
        .find(|l| l.starts_with("drops:"))
        .unwrap();
    for want in [
        format!("martian_source={martian_drops}"),
        "bad_source_mac=3".to_string(),
        "tcp_bad_flags=5".to_string(),
    ] {
        assert!(
            drops.split(' ').any(|w| w == want),
            "{want} in {drops}\n{}",
            done.stdout
        );
    }
    assert!(
        done.stdout
            .contains(&format!("dropped={}", martian_drops + 3 + 5)),
        "{}",
        done.stdout
    );
    for what in ["service web", "service web6"] {
        assert!(
            done.stdout.contains(&format!("{what}: packets-in=1 ")),
            "one packet of the real client's flow: {}",
            done.stdout
        );
    }
    assert!(
        done.stdout.contains("flows: created=2 "),
        "only the real client's flows: {}",
        done.stdout
    );
}
