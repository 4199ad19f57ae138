//! Through the real binary: ARP and ICMP echo are answered, and UDP to a VIP port without a
//! service gets ICMP port unreachable; fragments, IPv4 options and malformed headers are
//! dropped and counted by reason; the counters printed at exit add up (rx = forwarded +
//! replied + dropped).

mod common;

use common::{GW_MAC, PCAP_MAC, port_counter, run_pcap};
use etherparse::{Icmpv4Type, PacketBuilder, PacketHeaders, TransportHeader};

const VIP: [u8; 4] = [198, 18, 0, 100];
const CLIENT: [u8; 4] = [198, 19, 3, 4];

const CONFIG: &str = r#"
[dpdk]
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
[[services]]
id = "dns"
protocol = "udp"
vip = "198.18.0.100"
port = 53
forwarding = "nat"
[[services.backends]]
id = "b1"
address = "198.18.1.10"
"#;

fn udp(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(40000, dst_port)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// Recomputes the IPv4 header checksum after a test changed header bytes.
fn fix_ip_checksum(f: &mut [u8]) {
    let hl = usize::from(f[14] & 0x0f) * 4;
    f[24] = 0;
    f[25] = 0;
    let mut s: u32 = f[14..14 + hl]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

fn echo(dst: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4(CLIENT, dst, 64)
        .icmpv4_echo_request(0x1234, 7)
        .write(&mut out, b"ping")
        .unwrap();
    out
}

fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GW_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GW_MAC);
    f.extend_from_slice(&[198, 18, 0, 254, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

#[test]
fn arp_and_echo_are_answered_and_every_drop_has_its_reason() {
    let good: Vec<Vec<u8>> = (0..5)
        .map(|i| udp(53, format!("query {i}").as_bytes()))
        .collect();
    let mut fragment = udp(53, b"first fragment");
    fragment[20] |= 0x20; // more fragments
    fix_ip_checksum(&mut fragment);
    let mut options = udp(53, b"with options");
    options.splice(34..34, [0x94, 0x04, 0, 0]); // router alert
    options[14] = 0x46;
    let total = (options.len() - 14) as u16;
    options[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut options);
    let truncated = udp(53, b"cut")[..30].to_vec();
    let mut frames = vec![
        arp_request(VIP),
        arp_request([198, 18, 0, 1]),
        arp_request([198, 18, 0, 77]),
        echo(VIP),
        echo([198, 18, 0, 1]),
    ];
    frames.extend(good.iter().cloned());
    frames.extend([fragment, options, udp(5353, b"no such port"), truncated]);
    let k = frames.len() as u64;
    let (done, sent) = run_pcap("answers", CONFIG, &frames, "0");
    // At start: gratuitous ARP for the VIP, then for each interface address.
    assert_eq!(sent.announcements.len(), 3);
    for (g, addr) in sent
        .announcements
        .iter()
        .zip([VIP, [198, 18, 0, 1], [198, 18, 1, 1]])
    {
        let mut want = vec![0xff; 6];
        want.extend_from_slice(&PCAP_MAC);
        want.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        want.extend_from_slice(&PCAP_MAC);
        want.extend_from_slice(&addr);
        want.extend_from_slice(&[0; 6]);
        want.extend_from_slice(&addr);
        want.resize(60, 0);
        assert_eq!(g, &want, "gratuitous ARP for {addr:?}");
    }
    let out = sent.frames;
    // 2 ARP replies, 2 echo replies, 5 forwarded, a port unreachable, in input order
    assert_eq!(out.len(), 10, "{}", done.stdout);
    for (i, target) in [(0, [198, 18, 0, 100]), (1, [198, 18, 0, 1])] {
        let a = &out[i];
        assert_eq!(&a[0..6], &GW_MAC, "arp reply {i} to the asker");
        assert_eq!(&a[6..12], &PCAP_MAC);
        assert_eq!(&a[12..14], &[0x08, 0x06]);
        assert_eq!(&a[20..22], &[0, 2], "operation: reply");
        assert_eq!(&a[22..28], &PCAP_MAC, "sender MAC: ours");
        assert_eq!(&a[28..32], &target, "sender IP: the address asked for");
        assert_eq!(&a[32..38], &GW_MAC, "target MAC: the asker");
        assert_eq!(&a[38..42], &[198, 18, 0, 254], "target IP: the asker");
    }
    for (i, from) in [(2, VIP), (3, [198, 18, 0, 1])] {
        let h = PacketHeaders::from_ethernet_slice(&out[i]).unwrap();
        let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!("echo reply {i}: not IPv4")
        };
        assert_eq!(
            (ip.source, ip.destination, ip.time_to_live),
            (from, CLIENT, 64),
            "echo reply {i}"
        );
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        let Some(TransportHeader::Icmpv4(icmp)) = &h.transport else {
            panic!("echo reply {i}: not ICMP")
        };
        let Icmpv4Type::EchoReply(e) = icmp.icmp_type else {
            panic!("echo reply {i}: {:?}", icmp.icmp_type)
        };
        assert_eq!((e.id, e.seq), (0x1234, 7));
        assert_eq!(
            icmp.checksum,
            icmp.icmp_type.calc_checksum(h.payload.slice()),
            "echo reply {i} checksum"
        );
        assert_eq!(h.payload.slice(), b"ping");
        assert_eq!(&out[i][0..6], &GW_MAC);
    }
    for (i, f) in out[4..9].iter().enumerate() {
        let h = PacketHeaders::from_ethernet_slice(f).unwrap();
        let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!()
        };
        assert_eq!(ip.destination, [198, 18, 1, 10], "query {i} to the backend");
        assert_eq!(h.payload.slice(), format!("query {i}").as_bytes());
    }

    // UDP to a port of the VIP without a service: ICMP port unreachable from the VIP, quoting
    // the datagram's IP packet whole.
    let closed = udp(5353, b"no such port");
    let h = PacketHeaders::from_ethernet_slice(&out[9]).unwrap();
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("port unreachable: not IPv4")
    };
    assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let Some(TransportHeader::Icmpv4(icmp)) = &h.transport else {
        panic!("port unreachable: not ICMP")
    };
    assert_eq!(
        icmp.icmp_type,
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
    );
    assert_eq!(
        icmp.checksum,
        icmp.icmp_type.calc_checksum(h.payload.slice())
    );
    assert_eq!(
        h.payload.slice(),
        &closed[14..],
        "the whole datagram quoted"
    );
    assert_eq!(&out[9][0..6], &GW_MAC);
    assert!(
        done.stdout
            .contains("closed-ports: tcp-resets=0 port-unreachables=1 rate-limited=0\n"),
        "{}",
        done.stdout
    );

    // per service and backend: the five queries are one UDP flow (an inactive connection)
    let bytes: usize = good.iter().map(Vec::len).sum();
    for what in ["service dns", "backend dns/b1"] {
        let want = format!(
            "{what}: packets-in=5 bytes-in={bytes} packets-out=0 bytes-out=0 new-flows=1 active=0 inactive=1"
        );
        assert!(done.stdout.contains(&want), "{want}\n{}", done.stdout);
    }

    // rx = forwarded + replied + dropped, each drop under its reason
    assert_eq!(port_counter(&done.stdout, 0, "rx-packets"), k);
    assert_eq!(port_counter(&done.stdout, 0, "tx-packets"), 10 + 3);
    assert!(
        done.stdout.contains(
            "actions: forwarded=5 replied=5 consumed=0 redirected=0 redirect-dropped=0 dropped=4 held=0 to-kernel=0 to-kernel-dropped=0 from-kernel=0"
        ),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout
            .contains("drops: truncated=1 arp_ignored=1 ip_options=1 fragment=1\n"),
        "{}",
        done.stdout
    );
}
