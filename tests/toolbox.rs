//! IPVS's toolbox through the real binary (net_pcap in, net_pcap out, one worker, so the
//! output keeps the input's order): fo and ovf in the order IPVS computes them, connection
//! thresholds, the sh fallback, one-packet UDP both ways, allow and deny lists, and a SYN that
//! reuses a closing connection's tuple. One run carries every case, each on a service port of
//! its own.

mod common;

use common::{GW_MAC, PCAP_MAC, port_counter, run_pcap};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

const VIP: [u8; 4] = [198, 18, 0, 100];

/// The MAC of backend `b` (198.18.1.(10 + b)).
fn backend_mac(b: u8) -> [u8; 6] {
    [2, 0, 0, 0, 1, 10 + b]
}

/// (id, protocol, port, scheduler, service lines, backends as (weight, backend lines))
type Case<'a> = (
    &'a str,
    &'a str,
    u16,
    &'a str,
    &'a str,
    &'a [(u32, &'a str)],
);

fn config() -> String {
    let mut c = String::from(
        "[dpdk]\nidle_sleep_us = 100\nrx_desc = 256\ntx_desc = 256\nflow_capacity = 4096\n\
         [[interfaces]]\nport = 0\naddresses = [\"198.18.0.1/24\", \"198.18.1.1/24\"]\n\
         [[routes]]\nprefix = \"0.0.0.0/0\"\nvia = \"198.18.0.254\"\n\
         [[neighbors]]\naddress = \"198.18.0.254\"\nmac = \"02:00:00:00:00:fe\"\n",
    );
    for b in 0..4u8 {
        let m = backend_mac(b);
        c += &format!(
            "[[neighbors]]\naddress = \"198.18.1.{}\"\nmac = \"02:00:00:00:01:{:02x}\"\n",
            10 + b,
            m[5]
        );
    }
    let services: [Case; 8] = [
        (
            "fo",
            "tcp",
            1001,
            "fo",
            "",
            &[(2, ""), (5, "upper_threshold = 3\n"), (5, ""), (3, "")],
        ),
        ("ovf", "tcp", 1002, "ovf", "", &[(1, ""), (2, "")]),
        (
            "limits",
            "udp",
            1003,
            "rr",
            "",
            &[(1, "upper_threshold = 2\n"), (1, "")],
        ),
        (
            "ops",
            "udp",
            1004,
            "rr",
            "one_packet = true\n",
            &[(1, ""), (1, ""), (1, "")],
        ),
        (
            "acl",
            "udp",
            1005,
            "rr",
            "allow = [\"198.19.0.0/16\"]\ndeny = [\"198.19.5.0/24\"]\n",
            &[(1, "")],
        ),
        ("reuse", "tcp", 1006, "rr", "", &[(1, ""), (1, ""), (1, "")]),
        (
            "shfb",
            "udp",
            1007,
            "sh",
            "scheduler_flags = [\"sh-fallback\"]\n",
            &[(1, "upper_threshold = 1\n"), (1, "upper_threshold = 1\n")],
        ),
        (
            "sh",
            "udp",
            1008,
            "sh",
            "",
            &[(1, "upper_threshold = 1\n"), (1, "upper_threshold = 1\n")],
        ),
    ];
    for (id, proto, port, sched, lines, backends) in services {
        c += &format!(
            "[[services]]\nid = \"{id}\"\nprotocol = \"{proto}\"\nvip = \"198.18.0.100\"\nport = {port}\nscheduler = \"{sched}\"\n{lines}"
        );
        for (b, (w, extra)) in backends.iter().enumerate() {
            c += &format!(
                "[[services.backends]]\nid = \"{id}-{b}\"\naddress = \"198.18.1.{}\"\nport = {}\nweight = {w}\n{extra}",
                10 + b,
                2000 + b
            );
        }
    }
    c
}

fn udp(client: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4(client, VIP, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

#[derive(Clone, Copy)]
enum Flags {
    Syn,
    Ack,
    Fin,
    Rst,
}

fn tcp(client: [u8; 4], sport: u16, dport: u16, flags: Flags) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
        .ipv4(client, VIP, 64)
        .tcp(sport, dport, 1000, 64240);
    let b = match flags {
        Flags::Syn => b.syn(),
        Flags::Ack => b.ack(1),
        Flags::Fin => b.fin().ack(1),
        Flags::Rst => b.rst(),
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

/// An output frame: (destination address's last byte, destination port, source port).
fn dest(f: &[u8]) -> (u8, u16, u16) {
    let h = PacketHeaders::from_ethernet_slice(f).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4: {f:02x?}")
    };
    let (d, s) = match &h.transport {
        Some(TransportHeader::Udp(u)) => (u.destination_port, u.source_port),
        Some(TransportHeader::Tcp(t)) => (t.destination_port, t.source_port),
        _ => panic!("not TCP or UDP"),
    };
    (ip.destination[3], d, s)
}

/// The backends (index into the service's list) that a run of output frames went to, each
/// checked to be the backend's own address and port.
fn backends(out: &[Vec<u8>]) -> Vec<u8> {
    out.iter()
        .map(|f| {
            let (a, port, _) = dest(f);
            let b = a - 10;
            assert_eq!(port, 2000 + u16::from(b), "address and port of one backend");
            assert_eq!(f[..6], backend_mac(b), "to the backend's MAC");
            b
        })
        .collect()
}

#[test]
fn ipvs_orders_thresholds_one_packet_udp_client_lists_and_connection_reuse() {
    let c = |i: u8| [198, 19, 0, i];
    let mut frames = Vec::new();
    let mut expect: Vec<(&str, usize)> = Vec::new(); // (case, frames it forwards)
    // fo: weights 2 5 5 3, the first 5 has an upper threshold of 3: three SYNs to it (ties go
    // to the first listed), then it is overloaded and the other 5 takes the rest.
    for i in 0..6 {
        frames.push(tcp(c(1), 40000 + i, 1001, Flags::Syn));
    }
    expect.push(("fo", 6));
    // ovf: weights 1 2; each connection completes its handshake. The weight-2 backend takes
    // flows while its active connections do not exceed 2 (three of them), then the weight-1
    // one takes two; the sixth finds both full (SYN and ACK dropped: no backend).
    for i in 0..6 {
        frames.push(tcp(c(2), 41000 + i, 1002, Flags::Syn));
        frames.push(tcp(c(2), 41000 + i, 1002, Flags::Ack));
    }
    expect.push(("ovf", 10));
    // rr with an upper threshold of 2 on the first backend: A B A, then only B.
    for i in 0..6 {
        frames.push(udp(c(3), 42000 + i, 1003, b"limit"));
    }
    expect.push(("limits", 6));
    // One-packet rr: 30 datagrams of one flow, one by one over three backends; then a reply
    // from the second backend, translated back without a flow.
    for i in 0..30u8 {
        frames.push(udp(c(4), 43000, 1004, &[i; 8]));
    }
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(backend_mac(1), PCAP_MAC)
        .ipv4([198, 18, 1, 11], c(4), 64)
        .udp(2001, 43000)
        .write(&mut reply, b"answer")
        .unwrap();
    frames.push(reply);
    expect.push(("ops", 31));
    // allow 198.19/16, deny 198.19.5/24: two of four clients pass.
    for client in [
        [198, 19, 1, 1],
        [198, 19, 5, 1],
        [198, 20, 0, 1],
        [198, 19, 6, 1],
    ] {
        frames.push(udp(client, 44000, 1005, b"acl"));
    }
    expect.push(("acl", 2));
    // rr: a connection through its FIN, then a SYN on its tuple is a new connection (the next
    // backend); the same after a RST.
    for f in [Flags::Syn, Flags::Ack, Flags::Fin, Flags::Syn] {
        frames.push(tcp(c(6), 45000, 1006, f));
    }
    for f in [Flags::Syn, Flags::Rst, Flags::Syn] {
        frames.push(tcp(c(6), 45001, 1006, f));
    }
    expect.push(("reuse", 7));
    // sh with both backends limited to one connection: a client's second flow falls back to
    // the other backend with sh-fallback, and is refused without it.
    for (port, n) in [(1007, 2), (1008, 1)] {
        frames.push(udp(c(7), 46000, port, b"sh"));
        frames.push(udp(c(7), 46001, port, b"sh"));
        expect.push((if port == 1007 { "shfb" } else { "sh" }, n));
    }

    let (done, sent) = run_pcap("toolbox", &config(), &frames, "0");
    let total: usize = expect.iter().map(|e| e.1).sum();
    assert_eq!(sent.frames.len(), total, "{}", done.stdout);
    let mut out = sent.frames.as_slice();
    let mut take = |n: usize| {
        let (a, b) = out.split_at(n);
        out = b;
        a
    };

    assert_eq!(backends(take(6)), [1, 1, 1, 2, 2, 2], "fo");
    assert_eq!(backends(take(10)), [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], "ovf");
    assert_eq!(backends(take(6)), [0, 1, 0, 1, 1, 1], "limits");

    let ops = take(31);
    assert_eq!(
        backends(&ops[..30]),
        (0..30).map(|i| i % 3).collect::<Vec<u8>>(),
        "one-packet: every datagram scheduled on its own"
    );
    for (i, f) in ops[..30].iter().enumerate() {
        let b = (i % 3) as u8;
        let mut want = Vec::new();
        PacketBuilder::ethernet2(PCAP_MAC, backend_mac(b))
            .ipv4(c(4), [198, 18, 1, 10 + b], 64)
            .udp(43000, 2000 + u16::from(b))
            .write(&mut want, &[i as u8; 8])
            .unwrap();
        assert_eq!(*f, want, "datagram {i}, byte for byte");
    }
    let mut want = Vec::new();
    PacketBuilder::ethernet2(PCAP_MAC, GW_MAC)
        .ipv4(VIP, c(4), 64)
        .udp(1004, 43000)
        .write(&mut want, b"answer")
        .unwrap();
    assert_eq!(
        ops[30], want,
        "the reply comes from the VIP and the service port"
    );

    let acl = take(2);
    let sources: Vec<[u8; 4]> = acl.iter().map(|f| f[26..30].try_into().unwrap()).collect();
    assert_eq!(
        sources,
        [[198, 19, 1, 1], [198, 19, 6, 1]],
        "allowed clients"
    );
    assert_eq!(backends(take(7)), [0, 0, 0, 1, 2, 2, 0], "reuse");

    let shfb = backends(take(2));
    assert_ne!(
        shfb[0], shfb[1],
        "sh-fallback: the second flow on the other backend"
    );
    let sh = backends(take(1));
    assert_eq!(sh[0], shfb[0], "the same client hashes to the same backend");

    assert!(out.is_empty());
    let drops = done
        .stdout
        .lines()
        .find(|l| l.starts_with("drops:"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        drops, "drops: no_backend=3 client_denied=2",
        "ovf's sixth SYN and ACK, sh's second flow; two clients:\n{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("backend ops/ops-1: packets-in=10 ")
            && done.stdout.contains("service ops: packets-in=30 ")
            && done.stdout.contains(" new-flows=30 active=0 inactive=0\n"),
        "one-packet keeps no flow but counts each datagram as new:\n{}",
        done.stdout
    );
    assert_eq!(
        port_counter(&done.stdout, 0, "rx-packets"),
        frames.len() as u64
    );
}

/// The Internet checksum of `data` (RFC 1071), computed here apart from the dataplane's.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn gue_and_gre_tunnels_and_both_families_in_either_carry_the_packet_unchanged() {
    let mut c = String::from(
        "[dpdk]\nidle_sleep_us = 100\nrx_desc = 256\ntx_desc = 256\nflow_capacity = 1024\n\
         [[interfaces]]\nport = 0\naddresses = [\"198.18.0.1/24\", \"198.18.1.1/24\", \"2001:db8::1/64\", \"2001:db8:1::1/64\"]\n\
         [[neighbors]]\naddress = \"198.18.1.10\"\nmac = \"02:00:00:00:01:0a\"\n\
         [[neighbors]]\naddress = \"2001:db8:1::10\"\nmac = \"02:00:00:00:01:0b\"\n",
    );
    // (port, vip, tunnel lines, backend)
    let cases = [
        (
            2001,
            "198.18.0.100",
            "tunnel = \"gue\"\ntunnel_port = 6080\n",
            "198.18.1.10",
        ),
        (2002, "198.18.0.100", "tunnel = \"gre\"\n", "198.18.1.10"),
        (2003, "2001:db8::100", "", "198.18.1.10"),
        (2004, "198.18.0.100", "", "2001:db8:1::10"),
        (
            2005,
            "198.18.0.100",
            "tunnel = \"gue\"\ntunnel_port = 6081\n",
            "2001:db8:1::10",
        ),
        (2006, "2001:db8::100", "tunnel = \"gre\"\n", "198.18.1.10"),
    ];
    for (port, vip, lines, backend) in cases {
        c += &format!(
            "[[services]]\nid = \"t{port}\"\nprotocol = \"udp\"\nvip = \"{vip}\"\nport = {port}\nforwarding = \"tun\"\n{lines}\
             [[services.backends]]\nid = \"b\"\naddress = \"{backend}\"\n"
        );
    }
    let client6 = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
    let vip6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let frames: Vec<Vec<u8>> = cases
        .iter()
        .map(|(port, vip, _, _)| {
            let b = PacketBuilder::ethernet2(GW_MAC, PCAP_MAC);
            let b = if vip.contains(':') {
                b.ipv6(client6, vip6, 64)
            } else {
                b.ipv4([198, 19, 0, 9], VIP, 64)
            };
            let mut out = Vec::new();
            b.udp(47000, *port).write(&mut out, &[0x5a; 100]).unwrap();
            out
        })
        .collect();
    let (done, sent) = run_pcap("tunnels", &c, &frames, "0");
    assert_eq!(sent.frames.len(), frames.len(), "{}", done.stdout);
    let v4_src = [198, 18, 0, 1];
    let v6_src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let v6_dst = [
        0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    for (i, (out, input)) in sent.frames.iter().zip(&frames).enumerate() {
        let (port, vip, lines, backend) = cases[i];
        let inner = &input[14..];
        let inner_v6 = vip.contains(':');
        let outer_v6 = backend.contains(':');
        assert_eq!(
            out[..6],
            [2, 0, 0, 0, 1, if outer_v6 { 0x0b } else { 0x0a }]
        );
        assert_eq!(out[6..12], PCAP_MAC);
        assert_eq!(
            out[12..14],
            if outer_v6 { [0x86, 0xdd] } else { [0x08, 0x00] }
        );
        let ip = &out[14..];
        let (ip_len, proto) = if outer_v6 {
            assert_eq!(ip[0] >> 4, 6);
            assert_eq!(ip[7], 64, "hop limit");
            assert_eq!(
                ip[8..24],
                v6_src,
                "the egress interface's first IPv6 address"
            );
            assert_eq!(ip[24..40], v6_dst);
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                ip.len() - 40,
                "payload length"
            );
            (40, ip[6])
        } else {
            assert_eq!(ip[0], 0x45);
            assert_eq!(ip[8], 64, "TTL");
            assert_eq!(internet_checksum(&ip[..20]), 0, "header checksum");
            assert_eq!(
                ip[12..16],
                v4_src,
                "the egress interface's first IPv4 address"
            );
            assert_eq!(ip[16..20], [198, 18, 1, 10]);
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                ip.len(),
                "total length"
            );
            let inner_df = if inner_v6 { true } else { inner[6] & 0x40 != 0 };
            assert_eq!(ip[6] & 0x40 != 0, inner_df, "DF");
            (20, ip[9])
        };
        let rest = &ip[ip_len..];
        let inner_proto = if inner_v6 { 41 } else { 4 };
        let carried = if lines.contains("gue") {
            assert_eq!(proto, 17, "{port}: UDP");
            let sport = u16::from_be_bytes([rest[0], rest[1]]);
            assert!(sport >= 49152, "{port}: source port {sport}");
            let tun_port = if port == 2001 { 6080 } else { 6081 };
            assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), tun_port);
            assert_eq!(
                usize::from(u16::from_be_bytes([rest[4], rest[5]])),
                rest.len()
            );
            let check = u16::from_be_bytes([rest[6], rest[7]]);
            if outer_v6 {
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&ip[8..40]);
                pseudo.extend_from_slice(&(rest.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 17]);
                pseudo.extend_from_slice(rest);
                assert_eq!(
                    internet_checksum(&pseudo),
                    0,
                    "{port}: UDP checksum over IPv6"
                );
            } else {
                assert_eq!(check, 0, "{port}: no UDP checksum over IPv4, as IPVS");
            }
            assert_eq!(
                rest[8..12],
                [0, inner_proto, 0, 0],
                "{port}: the GUE header"
            );
            &rest[12..]
        } else if lines.contains("gre") {
            assert_eq!(proto, 47, "{port}: GRE");
            let ethertype: [u8; 2] = if inner_v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
            assert_eq!(
                rest[..4],
                [0, 0, ethertype[0], ethertype[1]],
                "{port}: the GRE header"
            );
            &rest[4..]
        } else {
            assert_eq!(proto, inner_proto, "{port}: IP in IP");
            rest
        };
        assert_eq!(carried, inner, "{port}: the inner packet, byte for byte");
    }
}
