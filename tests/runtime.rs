//! Packets in and out of the real binary (net_pcap in, net_pcap out, static neighbours): NAT,
//! DR and TUN, each with TCP and UDP over IPv4 and IPv6. Inputs are built and outputs parsed
//! with etherparse, independent of l4lb's own packet code; every output packet is checked field
//! by field, checksums recomputed.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;

use common::{GW_MAC, PCAP_MAC, port_counter, run_pcap};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

const GW6_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x06, 0xfe];
const VIP4: [u8; 4] = [198, 18, 0, 100];
const VIP6: &str = "2001:db8:1::100";
const BACKENDS4: [[u8; 4]; 2] = [[198, 18, 1, 10], [198, 18, 1, 11]];
const BACKENDS6: [&str; 2] = ["2001:db8:2::10", "2001:db8:2::11"];
const BACKEND_MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 1, 0x0a], [2, 0, 0, 0, 1, 0x0b]];
const BACKEND6_MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 2, 0x0a], [2, 0, 0, 0, 2, 0x0b]];
const FLOWS: u16 = 10;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
enum Mode {
    Nat,
    Dr,
    Tun,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
struct Case {
    mode: Mode,
    tcp: bool,
    v6: bool,
}

impl Case {
    fn all() -> Vec<Case> {
        let mut v = Vec::new();
        for mode in [Mode::Nat, Mode::Dr, Mode::Tun] {
            for tcp in [true, false] {
                for v6 in [false, true] {
                    v.push(Case { mode, tcp, v6 });
                }
            }
        }
        v
    }

    fn vip_port(&self) -> u16 {
        let base = match self.mode {
            Mode::Nat => 80,
            Mode::Dr => 81,
            Mode::Tun => 82,
        };
        if self.tcp { base } else { base + 1000 }
    }

    fn backend_port(&self) -> u16 {
        if self.mode == Mode::Nat {
            8080
        } else {
            self.vip_port()
        }
    }

    fn client_port(&self, flow: u16) -> u16 {
        // distinct per case, so an output packet names its case and flow
        let idx = Case::all().iter().position(|c| c == self).unwrap() as u16;
        40000 + idx * 100 + flow
    }

    fn toml(&self) -> String {
        let mode = match self.mode {
            Mode::Nat => "nat",
            Mode::Dr => "dr",
            Mode::Tun => "tun",
        };
        let (vip, b) = if self.v6 {
            (VIP6.to_string(), BACKENDS6.map(str::to_string))
        } else {
            (ip4(VIP4), BACKENDS4.map(ip4))
        };
        let port = if self.mode == Mode::Nat {
            "port = 8080\n"
        } else {
            ""
        };
        format!(
            "[[services]]\nid = \"{mode}-{}-{}\"\nprotocol = \"{}\"\nvip = \"{vip}\"\nport = {}\nscheduler = \"rr\"\nforwarding = \"{mode}\"\n\
             [[services.backends]]\nid = \"b1\"\naddress = \"{}\"\n{port}[[services.backends]]\nid = \"b2\"\naddress = \"{}\"\n{port}",
            if self.tcp { "tcp" } else { "udp" },
            if self.v6 { "v6" } else { "v4" },
            if self.tcp { "tcp" } else { "udp" },
            self.vip_port(),
            b[0],
            b[1]
        )
    }
}

fn ip4(a: [u8; 4]) -> String {
    IpAddr::from(a).to_string()
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn client4(flow: u16) -> [u8; 4] {
    [198, 19, 7, flow as u8 + 1]
}

fn client6(flow: u16) -> [u8; 16] {
    let mut a = v6("2001:db8:ff::");
    a[15] = flow as u8 + 1;
    a
}

const BASE: &str = r#"
[dpdk]
idle_sleep_us = 100
rx_desc = 256
tx_desc = 256
flow_capacity = 4096
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "198.18.1.1/24", "2001:db8:1::1/64", "2001:db8:2::1/64"]
[[routes]]
prefix = "0.0.0.0/0"
via = "198.18.0.254"
[[routes]]
prefix = "::/0"
via = "2001:db8:1::fe"
[[neighbors]]
address = "198.18.0.254"
mac = "02:00:00:00:00:fe"
[[neighbors]]
address = "2001:db8:1::fe"
mac = "02:00:00:00:06:fe"
[[neighbors]]
address = "198.18.1.10"
mac = "02:00:00:00:01:0a"
[[neighbors]]
address = "198.18.1.11"
mac = "02:00:00:00:01:0b"
[[neighbors]]
address = "2001:db8:2::10"
mac = "02:00:00:00:02:0a"
[[neighbors]]
address = "2001:db8:2::11"
mac = "02:00:00:00:02:0b"
"#;

/// Packet `n` (0: SYN, then ACKs with data) of `flow` from the client to the VIP.
fn client_packet(c: &Case, flow: u16, n: u32) -> Vec<u8> {
    let payload = format!("case {c:?} flow {flow} packet {n}").into_bytes();
    let eth = PacketBuilder::ethernet2(if c.v6 { GW6_MAC } else { GW_MAC }, PCAP_MAC);
    let ip = if c.v6 {
        eth.ipv6(client6(flow), v6(VIP6), 64)
    } else {
        eth.ipv4(client4(flow), VIP4, 64)
    };
    let mut out = Vec::new();
    if c.tcp {
        let t = ip.tcp(c.client_port(flow), c.vip_port(), 1000 + n, 64240);
        let t = if n == 0 { t.syn() } else { t.ack(7) };
        t.write(&mut out, &payload).unwrap();
    } else {
        ip.udp(c.client_port(flow), c.vip_port())
            .write(&mut out, &payload)
            .unwrap();
    }
    out
}

/// A backend's reply to the client of `flow` (NAT cases).
fn backend_reply(c: &Case, flow: u16, backend: usize) -> Vec<u8> {
    let payload = format!("reply {c:?} flow {flow}").into_bytes();
    let mac = if c.v6 {
        BACKEND6_MACS[backend]
    } else {
        BACKEND_MACS[backend]
    };
    let eth = PacketBuilder::ethernet2(mac, PCAP_MAC);
    let ip = if c.v6 {
        eth.ipv6(v6(BACKENDS6[backend]), client6(flow), 64)
    } else {
        eth.ipv4(BACKENDS4[backend], client4(flow), 64)
    };
    let mut out = Vec::new();
    if c.tcp {
        ip.tcp(8080, c.client_port(flow), 5000, 64240)
            .ack(2000)
            .write(&mut out, &payload)
            .unwrap();
    } else {
        ip.udp(8080, c.client_port(flow))
            .write(&mut out, &payload)
            .unwrap();
    }
    out
}

/// Checks IP and transport checksums of a parsed packet against a recomputation.
fn assert_checksums(h: &PacketHeaders<'_>, what: &str) {
    let payload = h.payload.slice();
    match (&h.net, &h.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), t) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "{what}: ipv4 header checksum"
            );
            match t {
                Some(TransportHeader::Tcp(tcp)) => {
                    assert_eq!(
                        tcp.checksum,
                        tcp.calc_checksum_ipv4(ip, payload).unwrap(),
                        "{what}: tcp checksum"
                    )
                }
                Some(TransportHeader::Udp(udp)) => {
                    assert_eq!(
                        udp.checksum,
                        udp.calc_checksum_ipv4(ip, payload).unwrap(),
                        "{what}: udp checksum"
                    )
                }
                _ => {}
            }
        }
        (Some(NetHeaders::Ipv6(ip, _)), t) => match t {
            Some(TransportHeader::Tcp(tcp)) => {
                assert_eq!(
                    tcp.checksum,
                    tcp.calc_checksum_ipv6(ip, payload).unwrap(),
                    "{what}: tcp checksum"
                )
            }
            Some(TransportHeader::Udp(udp)) => {
                assert_eq!(
                    udp.checksum,
                    udp.calc_checksum_ipv6(ip, payload).unwrap(),
                    "{what}: udp checksum"
                )
            }
            _ => {}
        },
        _ => panic!("{what}: not IP"),
    }
}

fn ports(h: &PacketHeaders<'_>) -> (u16, u16) {
    match &h.transport {
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
        other => panic!("not TCP/UDP: {other:?}"),
    }
}

fn addrs(h: &PacketHeaders<'_>) -> (IpAddr, IpAddr, u8) {
    match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => (
            IpAddr::from(ip.source),
            IpAddr::from(ip.destination),
            ip.time_to_live,
        ),
        Some(NetHeaders::Ipv6(ip, _)) => (
            IpAddr::from(ip.source),
            IpAddr::from(ip.destination),
            ip.hop_limit,
        ),
        other => panic!("not IP: {other:?}"),
    }
}

fn eth_of(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    (
        frame[0..6].try_into().unwrap(),
        frame[6..12].try_into().unwrap(),
    )
}

#[test]
fn nat_dr_and_tun_over_tcp_and_udp_v4_and_v6_come_out_rewritten_field_by_field() {
    let cases = Case::all();
    let mut config = BASE.to_string();
    for c in &cases {
        config.push_str(&c.toml());
    }

    // All first packets, then the rest: rr gives flow i backend i % 2 in every service.
    let mut frames = Vec::new();
    for n in 0..3 {
        for c in &cases {
            for f in 0..FLOWS {
                frames.push(client_packet(c, f, n));
            }
        }
    }
    let nat: Vec<&Case> = cases.iter().filter(|c| c.mode == Mode::Nat).collect();
    for c in &nat {
        for f in 0..FLOWS {
            frames.push(backend_reply(c, f, usize::from(f % 2)));
        }
    }
    let k = frames.len() as u64;
    let (done, sent) = run_pcap("modes", &config, &frames, "0");
    // two VIPs and four interface addresses announced
    assert_eq!(sent.announcements.len(), 6);
    let out = sent.frames;
    assert_eq!(
        out.len(),
        frames.len(),
        "every packet forwarded;\n{}",
        done.stdout
    );
    assert_eq!(port_counter(&done.stdout, 0, "rx-packets"), k);
    assert_eq!(port_counter(&done.stdout, 0, "tx-packets"), k + 6);
    assert!(
        done.stdout.contains(&format!(
            "actions: forwarded={k} replied=0 consumed=0 redirected=0 redirect-dropped=0 dropped=0"
        )),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("\ndrops:\n"),
        "no drop of any reason:\n{}",
        done.stdout
    );

    // Which backend each (case, flow) went to, from the first packet seen.
    let mut chosen: HashMap<(Case, u16), usize> = HashMap::new();
    let mut replies = 0;
    for (i, frame) in out.iter().enumerate() {
        let what = format!("output packet {i}");
        let (dst_mac, src_mac) = eth_of(frame);
        assert_eq!(src_mac, PCAP_MAC, "{what}: ethernet src is the port's MAC");
        let h =
            PacketHeaders::from_ethernet_slice(frame).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let (src, dst, ttl) = addrs(&h);
        assert_checksums(&h, &what);
        // a NAT reply towards a client
        if let Some(c) = nat
            .iter()
            .find(|c| (src == IpAddr::from(VIP4) && !c.v6) || (src.to_string() == VIP6 && c.v6))
        {
            let (sport, dport) = ports(&h);
            let c = nat
                .iter()
                .find(|c| c.vip_port() == sport && c.v6 == src.is_ipv6())
                .unwrap_or(c);
            let flow = dport - c.client_port(0);
            assert_eq!(
                dst,
                if c.v6 {
                    IpAddr::from(client6(flow))
                } else {
                    IpAddr::from(client4(flow))
                },
                "{what}: reply to the client"
            );
            assert_eq!(
                dst_mac,
                if c.v6 { GW6_MAC } else { GW_MAC },
                "{what}: via the gateway"
            );
            assert_eq!(ttl, 64, "{what}: ttl untouched");
            replies += 1;
            continue;
        }
        match &h.net {
            // tunnelled: outer header to the backend, inner packet byte for byte the client's
            Some(NetHeaders::Ipv4(ip, _)) if ip.protocol == etherparse::IpNumber::IPV4 => {
                let inner = &frame[34..];
                let ih = PacketHeaders::from_ip_slice(inner).unwrap();
                let (isrc, _, _) = addrs(&ih);
                let (sport, _) = ports(&ih);
                let c = cases
                    .iter()
                    .find(|c| {
                        c.mode == Mode::Tun
                            && !c.v6
                            && c.client_port(0) <= sport
                            && sport < c.client_port(FLOWS)
                    })
                    .expect("a tun v4 case");
                let flow = sport - c.client_port(0);
                assert_eq!(isrc, IpAddr::from(client4(flow)));
                let b = usize::from(flow % 2);
                assert_eq!(
                    ip.source,
                    [198, 18, 0, 1],
                    "{what}: outer source is the interface address"
                );
                assert_eq!(
                    ip.destination, BACKENDS4[b],
                    "{what}: outer destination is the backend"
                );
                assert_eq!(ip.time_to_live, 64, "{what}: outer ttl");
                assert!(ip.dont_fragment, "{what}: DF copied");
                assert_eq!(dst_mac, BACKEND_MACS[b]);
                let n = (0..3).find(|n| client_packet(c, flow, *n)[14..] == *inner);
                assert!(
                    n.is_some(),
                    "{what}: the inner packet is the client's, unchanged"
                );
                chosen
                    .entry((*c, flow))
                    .and_modify(|x| assert_eq!(*x, b, "{what}: flow stays"))
                    .or_insert(b);
            }
            Some(NetHeaders::Ipv6(ip, _))
                if ip.next_header == etherparse::IpNumber::IPV6_HEADER_HOP_BY_HOP
                    || ip.next_header.0 == 41 =>
            {
                let inner = &frame[54..];
                let ih = PacketHeaders::from_ip_slice(inner).unwrap();
                let (sport, _) = ports(&ih);
                let c = cases
                    .iter()
                    .find(|c| {
                        c.mode == Mode::Tun
                            && c.v6
                            && c.client_port(0) <= sport
                            && sport < c.client_port(FLOWS)
                    })
                    .expect("a tun v6 case");
                let flow = sport - c.client_port(0);
                let b = usize::from(flow % 2);
                assert_eq!(
                    ip.source,
                    v6("2001:db8:1::1"),
                    "{what}: outer source is the interface address"
                );
                assert_eq!(
                    ip.destination,
                    v6(BACKENDS6[b]),
                    "{what}: outer destination"
                );
                assert_eq!(ip.hop_limit, 64, "{what}: outer hop limit");
                assert_eq!(dst_mac, BACKEND6_MACS[b]);
                let n = (0..3).find(|n| client_packet(c, flow, *n)[14..] == *inner);
                assert!(
                    n.is_some(),
                    "{what}: the inner packet is the client's, unchanged"
                );
                chosen
                    .entry((*c, flow))
                    .and_modify(|x| assert_eq!(*x, b, "{what}: flow stays"))
                    .or_insert(b);
            }
            _ => {
                let (sport, dport) = ports(&h);
                let c = cases
                    .iter()
                    .find(|c| {
                        c.mode != Mode::Tun
                            && c.client_port(0) <= sport
                            && sport < c.client_port(FLOWS)
                    })
                    .unwrap_or_else(|| panic!("{what}: unexpected packet {h:?}"));
                let flow = sport - c.client_port(0);
                let b = usize::from(flow % 2);
                let (client, backend, mac) = if c.v6 {
                    (
                        IpAddr::from(client6(flow)),
                        IpAddr::from(v6(BACKENDS6[b])),
                        BACKEND6_MACS[b],
                    )
                } else {
                    (
                        IpAddr::from(client4(flow)),
                        IpAddr::from(BACKENDS4[b]),
                        BACKEND_MACS[b],
                    )
                };
                assert_eq!(src, client, "{what}: source is the client");
                assert_eq!(ttl, 64, "{what}: ttl untouched");
                assert_eq!(dst_mac, mac, "{what}: to the backend's MAC");
                match c.mode {
                    Mode::Nat => {
                        assert_eq!(dst, backend, "{what}: NAT destination is the backend");
                        assert_eq!(
                            dport,
                            c.backend_port(),
                            "{what}: NAT destination port is the backend's"
                        );
                    }
                    Mode::Dr => {
                        assert_eq!(
                            dst.to_string(),
                            if c.v6 { VIP6.to_string() } else { ip4(VIP4) },
                            "{what}: DR keeps the VIP"
                        );
                        assert_eq!(dport, c.vip_port(), "{what}: DR keeps the port");
                        let n = (0..3).find(|n| client_packet(c, flow, *n)[12..] == frame[12..]);
                        assert!(n.is_some(), "{what}: DR changes nothing but the MACs");
                    }
                    Mode::Tun => unreachable!(),
                }
                chosen
                    .entry((*c, flow))
                    .and_modify(|x| assert_eq!(*x, b, "{what}: flow stays"))
                    .or_insert(b);
            }
        }
    }
    assert_eq!(
        replies,
        nat.len() * usize::from(FLOWS),
        "every NAT reply came back from the VIP"
    );
    assert_eq!(
        chosen.len(),
        cases.len() * usize::from(FLOWS),
        "every flow of every case was seen"
    );
}
