//! Byte-exact tests of `process`: packets are built here with their own checksum code (not the
//! crate's), and every output frame is compared with the frame we expect, byte for byte, with
//! a report that names the first differing field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::fast::Warmed;
use super::*;
use crate::addr::{IpPrefix, MacAddr};
use crate::flow::{FlowState, FlowTimeouts};
use crate::packet::OwnedPacket;
use crate::service::{BackendId, ForwardingMode, Protocol, SchedulerKind, ServiceId};
use crate::snapshot::{BackendConfig, InterfaceConfig, ServiceConfig, SnapshotConfig};

// ---------------------------------------------------------------- an independent packet builder

/// RFC 1071, written out plainly (not `crate::checksum`).
fn csum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    for (i, b) in data.iter().enumerate() {
        s += if i % 2 == 0 {
            u64::from(*b) << 8
        } else {
            u64::from(*b)
        };
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const GW6_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x06, 0xfe];
const B1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x0a];
const B2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x0b];
const B61_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x0a];

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[derive(Clone, Copy)]
enum L4Spec<'a> {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        payload: &'a [u8],
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: &'a [u8],
        zero_checksum: bool,
    },
    Raw {
        proto: u8,
        bytes: &'a [u8],
    },
}

fn l4_bytes(l4: L4Spec<'_>, pseudo: &dyn Fn(u8, usize) -> Vec<u8>) -> (u8, Vec<u8>) {
    match l4 {
        L4Spec::Tcp {
            sport,
            dport,
            flags,
            payload,
        } => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&sport.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
            t[8..12].copy_from_slice(&0x0a0b_0c0du32.to_be_bytes());
            t[12] = 0x50;
            t[13] = flags;
            t[14..16].copy_from_slice(&64240u16.to_be_bytes());
            t.extend_from_slice(payload);
            let mut p = pseudo(6, t.len());
            p.extend_from_slice(&t);
            let c = csum(&p);
            t[16..18].copy_from_slice(&c.to_be_bytes());
            (6, t)
        }
        L4Spec::Udp {
            sport,
            dport,
            payload,
            zero_checksum,
        } => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&sport.to_be_bytes());
            u[2..4].copy_from_slice(&dport.to_be_bytes());
            u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            u.extend_from_slice(payload);
            if !zero_checksum {
                let mut p = pseudo(17, u.len());
                p.extend_from_slice(&u);
                let c = match csum(&p) {
                    0 => 0xffff,
                    c => c,
                };
                u[6..8].copy_from_slice(&c.to_be_bytes());
            }
            (17, u)
        }
        L4Spec::Raw { proto, bytes } => (proto, bytes.to_vec()),
    }
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header fields a test may set.
#[derive(Clone, Copy)]
struct V4Hdr {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    tos: u8,
    id: u16,
    df: bool,
}

fn v4hdr(src: &str, dst: &str) -> V4Hdr {
    V4Hdr {
        src: v4(src),
        dst: v4(dst),
        ttl: 64,
        tos: 0x28,
        id: 0x1234,
        df: true,
    }
}

fn ipv4_packet(h: V4Hdr, l4: L4Spec<'_>) -> Vec<u8> {
    let pseudo = |proto: u8, len: usize| {
        let mut p = h.src.octets().to_vec();
        p.extend_from_slice(&h.dst.octets());
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p
    };
    let (proto, body) = l4_bytes(l4, &pseudo);
    ipv4_raw(h, proto, &body)
}

fn ipv4_raw(h: V4Hdr, proto: u8, body: &[u8]) -> Vec<u8> {
    let mut ip = vec![
        0x45,
        h.tos,
        0,
        0,
        0,
        0,
        if h.df { 0x40 } else { 0 },
        0,
        h.ttl,
        proto,
        0,
        0,
    ];
    ip[2..4].copy_from_slice(&((20 + body.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&h.id.to_be_bytes());
    ip.extend_from_slice(&h.src.octets());
    ip.extend_from_slice(&h.dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(body);
    ip
}

#[derive(Clone, Copy)]
struct V6Hdr {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    tc: u8,
}

fn v6hdr(src: &str, dst: &str) -> V6Hdr {
    V6Hdr {
        src: v6(src),
        dst: v6(dst),
        hop: 64,
        tc: 0x28,
    }
}

fn ipv6_packet(h: V6Hdr, l4: L4Spec<'_>) -> Vec<u8> {
    let pseudo = |next: u8, len: usize| {
        let mut p = h.src.octets().to_vec();
        p.extend_from_slice(&h.dst.octets());
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, next]);
        p
    };
    let (next, body) = l4_bytes(l4, &pseudo);
    ipv6_raw(h, next, &body)
}

fn ipv6_raw(h: V6Hdr, next: u8, body: &[u8]) -> Vec<u8> {
    let mut ip = ((6u32 << 28) | (u32::from(h.tc) << 20) | 0xbeef)
        .to_be_bytes()
        .to_vec();
    ip.extend_from_slice(&(body.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[next, h.hop]);
    ip.extend_from_slice(&h.src.octets());
    ip.extend_from_slice(&h.dst.octets());
    ip.extend_from_slice(body);
    ip
}

fn icmp6_body(src: Ipv6Addr, dst: Ipv6Addr, mut m: Vec<u8>) -> Vec<u8> {
    m[2] = 0;
    m[3] = 0;
    let mut p = src.octets().to_vec();
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(m.len() as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 58]);
    p.extend_from_slice(&m);
    let c = csum(&p);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

fn icmp4_body(mut m: Vec<u8>) -> Vec<u8> {
    m[2] = 0;
    m[3] = 0;
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

fn frame(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let ty = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    let mut f = eth(dst, src, ty);
    f.extend_from_slice(ip);
    f
}

/// Compares two frames; on a difference names the first differing byte and the field there.
fn assert_frame(got: &[u8], want: &[u8], case: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let v6 = want.len() > 14 && want[12..14] == [0x86, 0xdd];
    let field = match at {
        0..=5 => "ethernet dst",
        6..=11 => "ethernet src",
        12..=13 => "ethertype",
        n if !v6 && n < 34 => match n - 14 {
            1 => "ipv4 tos",
            2..=3 => "ipv4 total length",
            4..=5 => "ipv4 id",
            6..=7 => "ipv4 flags/fragment",
            8 => "ipv4 ttl",
            9 => "ipv4 protocol",
            10..=11 => "ipv4 checksum",
            12..=15 => "ipv4 src",
            16..=19 => "ipv4 dst",
            _ => "ipv4 header",
        },
        n if v6 && n < 54 => match n - 14 {
            0..=3 => "ipv6 version/class/flow",
            4..=5 => "ipv6 payload length",
            6 => "ipv6 next header",
            7 => "ipv6 hop limit",
            8..=23 => "ipv6 src",
            _ => "ipv6 dst",
        },
        _ => "payload (transport header or beyond)",
    };
    panic!(
        "{case}: frames differ at byte {at} ({field}); lengths got {} want {}\n got: {:02x?}\nwant: {:02x?}",
        got.len(),
        want.len(),
        got,
        want
    );
}

// ---------------------------------------------------------------- the appliance under test

const CLIENT: &str = "198.19.5.7";
const CLIENT6: &str = "2001:db8:ff::7";
const VIP: &str = "198.18.0.100";
const VIP6: &str = "2001:db8:1::100";
const B1: &str = "198.18.1.10";
const B2: &str = "198.18.1.11";
const B61: &str = "2001:db8:2::10";

/// Ports of the test services: (protocol, mode) -> VIP port.
fn vip_port(proto: Protocol, mode: ForwardingMode) -> u16 {
    let base = match mode {
        ForwardingMode::Nat => 80,
        ForwardingMode::DirectRouting => 81,
        ForwardingMode::Tunnel => 82,
    };
    if proto == Protocol::Udp {
        base + 1000
    } else {
        base
    }
}

fn backend(id: u32, name: &str, addr: &str, port: u16) -> BackendConfig {
    BackendConfig {
        id: BackendId(id),
        name: name.into(),
        address: addr.parse().unwrap(),
        port,
        weight: 1,
        enabled: true,
        sorry: false,
        upper_threshold: 0,
        lower_threshold: 0,
    }
}

pub(super) fn config(workers: u16) -> SnapshotConfig {
    let mut services = Vec::new();
    let mut id = 0;
    for v6 in [false, true] {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            for mode in [
                ForwardingMode::Nat,
                ForwardingMode::DirectRouting,
                ForwardingMode::Tunnel,
            ] {
                let port = vip_port(proto, mode);
                let bport = if mode == ForwardingMode::Nat {
                    8080
                } else {
                    port
                };
                let b = if v6 {
                    backend(100 + id, "b6-1", B61, bport)
                } else {
                    backend(id, "b1", B1, bport)
                };
                services.push(ServiceConfig {
                    id: ServiceId(id),
                    name: format!("svc{id}"),
                    protocol: proto,
                    vip: if v6 {
                        VIP6.parse().unwrap()
                    } else {
                        VIP.parse().unwrap()
                    },
                    port,
                    scheduler: SchedulerKind::RoundRobin,
                    forwarding: mode,
                    maglev_table_size: 251,
                    options: Default::default(),
                    backends: vec![b],
                    generation: 1,
                });
                id += 1;
            }
        }
    }
    SnapshotConfig {
        interfaces: vec![InterfaceConfig {
            port: 0,
            mac: MacAddr(OUR_MAC),
            addresses: [
                "198.18.0.1/24",
                "198.18.1.1/24",
                "2001:db8:1::1/64",
                "2001:db8:2::1/64",
            ]
            .iter()
            .map(|s| s.parse::<IpPrefix>().unwrap())
            .collect(),
            mtu: 1500,
            kernel: false,
        }],
        routes: vec![
            (
                "0.0.0.0/0".parse().unwrap(),
                "198.18.0.254".parse().unwrap(),
            ),
            ("::/0".parse().unwrap(), "2001:db8:1::fe".parse().unwrap()),
        ],
        neighbors: vec![
            ("198.18.0.254".parse().unwrap(), MacAddr(GW_MAC)),
            ("2001:db8:1::fe".parse().unwrap(), MacAddr(GW6_MAC)),
            (B1.parse().unwrap(), MacAddr(B1_MAC)),
            (B2.parse().unwrap(), MacAddr(B2_MAC)),
            (B61.parse().unwrap(), MacAddr(B61_MAC)),
        ],
        services,
        timeouts: FlowTimeouts::default(),
        workers,
        failed_neighbors: Vec::new(),
        replies: Default::default(),
    }
}

/// The VIP ports of the IPv4 TUN services [`config_with_tunnels`] adds, GUE then GRE (TCP;
/// UDP is 1000 more): `config`'s own TUN services use IPIP.
pub(super) const GUE_PORT: u16 = 83;
pub(super) const GRE_PORT: u16 = 84;

/// [`config`] and two IPv4 TUN services more, GUE (to port 6080) and GRE, for each protocol,
/// to the same backend address: every tunnel type the fast path encapsulates.
pub(super) fn config_with_tunnels(workers: u16) -> SnapshotConfig {
    let mut c = config(workers);
    let mut id = 12; // after `config`'s services (0-11) and IPv4 backends (0-5)
    for (port, tunnel) in [
        (GUE_PORT, crate::forward::Tunnel::Gue { port: 6080 }),
        (GRE_PORT, crate::forward::Tunnel::Gre),
    ] {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let port = if proto == Protocol::Udp {
                port + 1000
            } else {
                port
            };
            c.services.push(ServiceConfig {
                id: ServiceId(id),
                name: format!("svc{id}"),
                protocol: proto,
                vip: VIP.parse().unwrap(),
                port,
                scheduler: SchedulerKind::RoundRobin,
                forwarding: ForwardingMode::Tunnel,
                maglev_table_size: 251,
                options: crate::snapshot::ServiceOptions {
                    tunnel,
                    ..Default::default()
                },
                backends: vec![backend(id, "b1", B1, port)],
                generation: 1,
            });
            id += 1;
        }
    }
    c
}

/// Client packets to the services [`config_with_tunnels`] adds (SYN, ACK, RST; UDP, padded),
/// IPv6 UDP datagrams of 64 bytes and more, and IPv6 NAT replies.
pub(super) fn tunnel_seed_frames() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for port in [GUE_PORT, GRE_PORT] {
        for flags in [
            crate::wire::tcp::SYN,
            crate::wire::tcp::ACK,
            crate::wire::tcp::RST,
        ] {
            let (_, l4) = client_packet(false, Protocol::Tcp, ForwardingMode::Tunnel, flags);
            let ip = ipv4_packet(v4hdr(CLIENT, VIP), with_ports(l4, 40000, port));
            seeds.push(frame(OUR_MAC, GW_MAC, &ip));
        }
        let (_, l4) = client_packet(false, Protocol::Udp, ForwardingMode::Tunnel, 0);
        let ip = ipv4_packet(v4hdr(CLIENT, VIP), with_ports(l4, 40000, port + 1000));
        // Padded to Ethernet's 60 bytes, as a NIC hands it over (the tunnel drops the padding).
        let mut f = frame(OUR_MAC, GW_MAC, &ip);
        f.resize(60, 0);
        seeds.push(f);
    }
    // IPv6 UDP datagrams, one padded.
    for mode in [
        ForwardingMode::Nat,
        ForwardingMode::DirectRouting,
        ForwardingMode::Tunnel,
    ] {
        let l4 = L4Spec::Udp {
            sport: 40000,
            dport: vip_port(Protocol::Udp, mode),
            payload: b"a query of twenty-two",
            zero_checksum: false,
        };
        let mut f = frame(OUR_MAC, GW6_MAC, &ipv6_packet(v6hdr(CLIENT6, VIP6), l4));
        if mode == ForwardingMode::Nat {
            f.resize(f.len() + 6, 0);
        }
        seeds.push(f);
    }
    // NAT replies from the IPv6 backend to the client behind the gateway, TCP and UDP.
    for l4 in [
        L4Spec::Tcp {
            sport: 8080,
            dport: 40000,
            flags: 0x12,
            payload: b"x",
        },
        L4Spec::Udp {
            sport: 8080,
            dport: 40000,
            payload: b"an answer",
            zero_checksum: false,
        },
    ] {
        seeds.push(frame(
            OUR_MAC,
            B61_MAC,
            &ipv6_packet(v6hdr(B61, CLIENT6), l4),
        ));
    }
    // The shortest a bench sends: 64 bytes, two of payload.
    let l4 = L4Spec::Udp {
        sport: 40001,
        dport: vip_port(Protocol::Udp, ForwardingMode::Nat),
        payload: b"ab",
        zero_checksum: false,
    };
    seeds.push(frame(
        OUR_MAC,
        GW6_MAC,
        &ipv6_packet(v6hdr(CLIENT6, VIP6), l4),
    ));
    seeds
}

fn worker() -> WorkerState {
    WorkerState::new(0, 1024, 64, 256, FlowTimeouts::default())
}

fn run(snap: &Snapshot, w: &mut WorkerState, input: &[u8]) -> (Action, Vec<u8>) {
    let mut p = OwnedPacket::new(input);
    let a = process(&mut p, 0, snap, w, 100);
    (a, p.data().to_vec())
}

/// A client packet to the VIP and what the backend side should see, per family and protocol.
fn client_packet(
    v6: bool,
    proto: Protocol,
    mode: ForwardingMode,
    flags: u8,
) -> (Vec<u8>, L4Spec<'static>) {
    let port = vip_port(proto, mode);
    let l4 = match proto {
        Protocol::Tcp => L4Spec::Tcp {
            sport: 40000,
            dport: port,
            flags,
            payload: b"hello, backend",
        },
        Protocol::Udp => L4Spec::Udp {
            sport: 40000,
            dport: port,
            payload: b"query",
            zero_checksum: false,
        },
    };
    let ip = if v6 {
        ipv6_packet(v6hdr(CLIENT6, VIP6), l4)
    } else {
        ipv4_packet(v4hdr(CLIENT, VIP), l4)
    };
    (frame(OUR_MAC, if v6 { GW6_MAC } else { GW_MAC }, &ip), l4)
}

fn with_ports(l4: L4Spec<'static>, sport: u16, dport: u16) -> L4Spec<'static> {
    match l4 {
        L4Spec::Tcp { flags, payload, .. } => L4Spec::Tcp {
            sport,
            dport,
            flags,
            payload,
        },
        L4Spec::Udp {
            payload,
            zero_checksum,
            ..
        } => L4Spec::Udp {
            sport,
            dport,
            payload,
            zero_checksum,
        },
        raw => raw,
    }
}

// ---------------------------------------------------------------- NAT, DR, TUN x TCP, UDP x v4, v6

#[test]
fn nat_rewrites_destination_to_the_backend_and_replies_back_to_the_vip() {
    for v6 in [false, true] {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let case = format!("nat {proto} {}", if v6 { "v6" } else { "v4" });
            let snap = Snapshot::build(config(1), 1);
            let mut w = worker();
            let (input, l4) = client_packet(v6, proto, ForwardingMode::Nat, crate::wire::tcp::SYN);
            let (action, out) = run(&snap, &mut w, &input);
            let port = vip_port(proto, ForwardingMode::Nat);
            let (want, b_mac) = if v6 {
                (
                    ipv6_packet(v6hdr(CLIENT6, B61), with_ports(l4, 40000, 8080)),
                    B61_MAC,
                )
            } else {
                (
                    ipv4_packet(v4hdr(CLIENT, B1), with_ports(l4, 40000, 8080)),
                    B1_MAC,
                )
            };
            assert_eq!(action, Action::Forward { interface: 0 }, "{case}");
            assert_frame(&out, &frame(b_mac, OUR_MAC, &want), &case);

            // The backend answers the client; l4lb puts the VIP back as the source.
            let reply_l4 = match proto {
                Protocol::Tcp => L4Spec::Tcp {
                    sport: 8080,
                    dport: 40000,
                    flags: 0x12,
                    payload: b"hi, client",
                },
                Protocol::Udp => L4Spec::Udp {
                    sport: 8080,
                    dport: 40000,
                    payload: b"answer",
                    zero_checksum: false,
                },
            };
            let (reply, want_out, gw) = if v6 {
                (
                    ipv6_packet(v6hdr(B61, CLIENT6), reply_l4),
                    ipv6_packet(v6hdr(VIP6, CLIENT6), with_ports(reply_l4, port, 40000)),
                    GW6_MAC,
                )
            } else {
                (
                    ipv4_packet(v4hdr(B1, CLIENT), reply_l4),
                    ipv4_packet(v4hdr(VIP, CLIENT), with_ports(reply_l4, port, 40000)),
                    GW_MAC,
                )
            };
            let (action, out) = run(&snap, &mut w, &frame(OUR_MAC, b_mac, &reply));
            assert_eq!(action, Action::Forward { interface: 0 }, "{case} reply");
            assert_frame(
                &out,
                &frame(gw, OUR_MAC, &want_out),
                &format!("{case} reply"),
            );
        }
    }
}

#[test]
fn nat_keeps_an_ipv4_udp_checksum_of_zero() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let l4 = L4Spec::Udp {
        sport: 40000,
        dport: 1080,
        payload: b"no checksum",
        zero_checksum: true,
    };
    let input = frame(OUR_MAC, GW_MAC, &ipv4_packet(v4hdr(CLIENT, VIP), l4));
    let (_, out) = run(&snap, &mut w, &input);
    let want = frame(
        B1_MAC,
        OUR_MAC,
        &ipv4_packet(v4hdr(CLIENT, B1), with_ports(l4, 40000, 8080)),
    );
    assert_frame(&out, &want, "udp checksum 0");
    assert_eq!(&out[40..42], &[0, 0]);
}

#[test]
fn dr_changes_only_the_destination_mac() {
    for v6 in [false, true] {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let case = format!("dr {proto} {}", if v6 { "v6" } else { "v4" });
            let snap = Snapshot::build(config(1), 1);
            let mut w = worker();
            let (input, _) = client_packet(
                v6,
                proto,
                ForwardingMode::DirectRouting,
                crate::wire::tcp::SYN,
            );
            let (action, out) = run(&snap, &mut w, &input);
            let mac = if v6 { B61_MAC } else { B1_MAC };
            assert_eq!(action, Action::Forward { interface: 0 }, "{case}");
            let mut want = input.clone();
            want[0..6].copy_from_slice(&mac);
            want[6..12].copy_from_slice(&OUR_MAC);
            assert_frame(&out, &want, &case);
        }
    }
}

#[test]
fn tun_encapsulates_with_the_interface_address_ttl_64_and_the_inner_dscp() {
    for is_v6 in [false, true] {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let case = format!("tun {proto} {}", if is_v6 { "v6" } else { "v4" });
            let snap = Snapshot::build(config(1), 1);
            let mut w = worker();
            let (input, _) =
                client_packet(is_v6, proto, ForwardingMode::Tunnel, crate::wire::tcp::SYN);
            let (action, out) = run(&snap, &mut w, &input);
            let inner = &input[14..];
            let want = if is_v6 {
                let mut outer = ipv6_raw(
                    V6Hdr {
                        src: v6("2001:db8:1::1"),
                        dst: v6(B61),
                        hop: 64,
                        tc: 0x28,
                    },
                    41,
                    inner,
                );
                outer[1] &= 0xf0; // flow label 0 on the outer header
                outer[2] = 0;
                outer[3] = 0;
                frame(B61_MAC, OUR_MAC, &outer)
            } else {
                let h = V4Hdr {
                    src: v4("198.18.0.1"),
                    dst: v4(B1),
                    ttl: 64,
                    tos: 0x28,
                    id: 0,
                    df: true,
                };
                frame(B1_MAC, OUR_MAC, &ipv4_raw(h, 4, inner))
            };
            assert_eq!(action, Action::Forward { interface: 0 }, "{case}");
            assert_frame(&out, &want, &case);
        }
    }
}

#[test]
fn tun_ethernet_padding_is_not_encapsulated() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let (mut input, _) = client_packet(false, Protocol::Udp, ForwardingMode::Tunnel, 0);
    let unpadded = input.clone();
    input.extend_from_slice(&[0u8; 20]);
    let (_, out) = run(&snap, &mut w, &input);
    let h = V4Hdr {
        src: v4("198.18.0.1"),
        dst: v4(B1),
        ttl: 64,
        tos: 0x28,
        id: 0,
        df: true,
    };
    assert_frame(
        &out,
        &frame(B1_MAC, OUR_MAC, &ipv4_raw(h, 4, &unpadded[14..])),
        "padded tun",
    );
}

#[test]
fn tun_too_big_with_df_answers_fragmentation_needed_and_packet_too_big() {
    let payload = vec![0x5a; 1500 - 20 - 20 - 10]; // inner 1490 bytes: fits 1500, not with 20 more
    let l4 = L4Spec::Tcp {
        sport: 40000,
        dport: 82,
        flags: 0x10,
        payload: &payload,
    };
    let ip = ipv4_packet(v4hdr(CLIENT, VIP), l4);
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let (action, out) = run(&snap, &mut w, &frame(OUR_MAC, GW_MAC, &ip));
    assert_eq!(action, Action::Reply);
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0xc8]; // next-hop MTU 1480
    icmp.extend_from_slice(&ip[..548]);
    let want = ipv4_raw(
        V4Hdr {
            src: v4(VIP),
            dst: v4(CLIENT),
            ttl: 64,
            tos: 0,
            id: 0,
            df: false,
        },
        1,
        &icmp4_body(icmp),
    );
    assert_frame(&out, &frame(GW_MAC, OUR_MAC, &want), "frag needed");

    // without DF: dropped (l4lb does not fragment)
    let ip = ipv4_packet(
        V4Hdr {
            df: false,
            ..v4hdr(CLIENT, VIP)
        },
        l4,
    );
    let (action, _) = run(&snap, &mut w, &frame(OUR_MAC, GW_MAC, &ip));
    assert_eq!(action, Action::Drop(DropReason::TooBigNoDf));

    // IPv6: packet too big, MTU 1460
    let payload6 = vec![0x5a; 1500 - 40 - 20 - 10];
    let l4 = L4Spec::Tcp {
        sport: 40000,
        dport: 82,
        flags: 0x10,
        payload: &payload6,
    };
    let ip = ipv6_packet(v6hdr(CLIENT6, VIP6), l4);
    let (action, out) = run(&snap, &mut w, &frame(OUR_MAC, GW6_MAC, &ip));
    assert_eq!(action, Action::Reply);
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0xb4];
    icmp.extend_from_slice(&ip[..1280 - 48]);
    let want = ipv6_raw(
        V6Hdr {
            src: v6(VIP6),
            dst: v6(CLIENT6),
            hop: 64,
            tc: 0,
        },
        58,
        &icmp6_body(v6(VIP6), v6(CLIENT6), icmp),
    );
    let mut want = frame(GW6_MAC, OUR_MAC, &want);
    want[15] &= 0xf0; // l4lb's replies carry flow label 0
    want[16] = 0;
    want[17] = 0;
    assert_frame(&out, &want, "packet too big");
}

// ---------------------------------------------------------------- flows and schedulers end to end

fn rr_config(weights: &[u32]) -> SnapshotConfig {
    let mut c = config(1);
    let s = &mut c.services[0]; // tcp nat v4, port 80
    s.backends = weights
        .iter()
        .enumerate()
        .map(|(i, w)| BackendConfig {
            weight: *w,
            ..backend(
                i as u32,
                &format!("b{i}"),
                if i % 2 == 0 { B1 } else { B2 },
                8000 + i as u16,
            )
        })
        .collect();
    c
}

fn tcp_from(port: u16, flags: u8) -> Vec<u8> {
    let l4 = L4Spec::Tcp {
        sport: port,
        dport: 80,
        flags,
        payload: b"",
    };
    frame(OUR_MAC, GW_MAC, &ipv4_packet(v4hdr(CLIENT, VIP), l4))
}

fn backend_port(out: &[u8]) -> u16 {
    u16::from_be_bytes([out[36], out[37]])
}

#[test]
fn every_packet_of_a_flow_goes_to_the_backend_its_first_packet_got() {
    let snap = Snapshot::build(rr_config(&[1, 1, 1]), 1);
    let mut w = worker();
    let mut first = Vec::new();
    for port in 50000..50006 {
        let (_, out) = run(&snap, &mut w, &tcp_from(port, crate::wire::tcp::SYN));
        first.push(backend_port(&out));
    }
    assert_eq!(
        first,
        [8000, 8001, 8002, 8000, 8001, 8002],
        "new flows go round robin"
    );
    for _ in 0..5 {
        for (i, port) in (50000..50006).enumerate() {
            let (_, out) = run(&snap, &mut w, &tcp_from(port, crate::wire::tcp::ACK));
            assert_eq!(backend_port(&out), first[i], "flow {port} stays");
        }
    }
    assert_eq!(w.flows.len(), 6);
    assert_eq!(w.flows.count(FlowState::Established), 6);
}

#[test]
fn weight_zero_keeps_old_flows_and_takes_no_new_ones() {
    let mut w = worker();
    let snap = Snapshot::build(rr_config(&[1, 1]), 1);
    let (_, out) = run(&snap, &mut w, &tcp_from(50000, crate::wire::tcp::SYN));
    assert_eq!(backend_port(&out), 8000);
    let mut drained = rr_config(&[0, 1]);
    drained.services[0].generation = 2;
    let snap = Snapshot::build(drained, 2);
    let (_, out) = run(&snap, &mut w, &tcp_from(50000, crate::wire::tcp::ACK));
    assert_eq!(
        backend_port(&out),
        8000,
        "the established flow stays on the drained backend"
    );
    for port in 50001..50005 {
        let (_, out) = run(&snap, &mut w, &tcp_from(port, crate::wire::tcp::SYN));
        assert_eq!(backend_port(&out), 8001, "new flows avoid it");
    }
    let snap = Snapshot::build(rr_config(&[0, 0]), 3);
    assert_eq!(
        run(&snap, &mut w, &tcp_from(60000, crate::wire::tcp::SYN)).0,
        Action::Drop(DropReason::NoBackend)
    );
}

#[test]
fn a_rst_without_a_flow_is_dropped_not_scheduled() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    assert_eq!(
        run(&snap, &mut w, &tcp_from(50000, crate::wire::tcp::RST)).0,
        Action::Drop(DropReason::TcpRstNoFlow)
    );
    assert!(w.flows.is_empty());
}

#[test]
fn nat_packets_of_another_workers_client_are_redirected_to_it() {
    let snap = Snapshot::build(config(2), 1);
    let mut w = worker();
    let mut seen = [0, 0];
    for port in 40000..40100u16 {
        let input = tcp_from(port, crate::wire::tcp::SYN);
        let o = owner(&crate::flow::addr_bytes(CLIENT.parse().unwrap()), port, 2);
        seen[o as usize] += 1;
        let (action, out) = run(&snap, &mut w, &input);
        if o == 0 {
            assert!(matches!(action, Action::Forward { .. }), "{action:?}");
        } else {
            assert_eq!(action, Action::Redirect(1));
            assert_eq!(out, input, "redirected unchanged");
        }
    }
    assert!(
        seen[0] > 30 && seen[1] > 30,
        "ownership spreads clients: {seen:?}"
    );
    // the reply direction has the same owner: it is keyed by the client endpoint too
    let o = owner(&crate::flow::addr_bytes(CLIENT.parse().unwrap()), 40001, 2);
    let reply = ipv4_packet(
        v4hdr(B1, CLIENT),
        L4Spec::Tcp {
            sport: 8080,
            dport: 40001,
            flags: 0x12,
            payload: b"",
        },
    );
    let (action, _) = run(&snap, &mut w, &frame(OUR_MAC, B1_MAC, &reply));
    if o == 1 {
        assert_eq!(action, Action::Redirect(1));
    } else {
        assert!(matches!(action, Action::Forward { .. }), "{action:?}");
    }
}

// ---------------------------------------------------------------- ARP, NDP, echo

#[test]
fn arp_requests_for_our_addresses_and_vips_are_answered() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let request = |target: [u8; 4]| {
        let mut f = eth([0xff; 6], GW_MAC, 0x0806);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&GW_MAC);
        f.extend_from_slice(&[198, 18, 0, 254]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.extend_from_slice(&[0; 18]); // padding to 60 bytes
        f
    };
    for target in [[198, 18, 0, 100], [198, 18, 0, 1]] {
        let (action, out) = run(&snap, &mut w, &request(target));
        assert_eq!(action, Action::Reply);
        let mut want = eth(GW_MAC, OUR_MAC, 0x0806);
        want.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        want.extend_from_slice(&OUR_MAC);
        want.extend_from_slice(&target);
        want.extend_from_slice(&GW_MAC);
        want.extend_from_slice(&[198, 18, 0, 254]);
        want.extend_from_slice(&[0; 18]);
        assert_frame(&out, &want, "arp reply");
    }
    assert_eq!(
        run(&snap, &mut w, &request([198, 18, 0, 99])).0,
        Action::Drop(DropReason::ArpIgnored)
    );
    // RFC 826's merge: the gateway (known) asking for someone else updates its entry with the
    // MAC it now sends from; an unknown sender asking for someone else teaches nothing.
    events(&w);
    let mut moved = request([198, 18, 0, 99]);
    moved[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 0xfd]);
    assert_eq!(
        run(&snap, &mut w, &moved).0,
        Action::Drop(DropReason::ArpIgnored)
    );
    assert_eq!(
        events(&w),
        [crate::neighbor::NeighborEvent::Learned {
            addr: "198.18.0.254".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 0xfd]),
            interface: 0,
        }]
    );
    let mut stranger = request([198, 18, 0, 99]);
    stranger[28..32].copy_from_slice(&[198, 18, 0, 77]);
    assert_eq!(
        run(&snap, &mut w, &stranger).0,
        Action::Drop(DropReason::ArpIgnored)
    );
    assert_eq!(events(&w), []);
}

#[test]
fn echo_to_a_vip_and_to_our_address_is_answered_in_both_families() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    for dst in [VIP, "198.18.0.1"] {
        let req = icmp4_body(vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g']);
        let input = frame(
            OUR_MAC,
            GW_MAC,
            &ipv4_raw(
                V4Hdr {
                    ttl: 57,
                    ..v4hdr(CLIENT, dst)
                },
                1,
                &req,
            ),
        );
        let (action, out) = run(&snap, &mut w, &input);
        assert_eq!(action, Action::Reply);
        let rep = icmp4_body(vec![0, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g']);
        assert_frame(
            &out,
            &frame(GW_MAC, OUR_MAC, &ipv4_raw(v4hdr(dst, CLIENT), 1, &rep)),
            "echo v4",
        );
    }
    let req = icmp6_body(
        v6(CLIENT6),
        v6(VIP6),
        vec![128, 0, 0, 0, 0xab, 0xcd, 0, 9, 1, 2, 3],
    );
    let input = frame(
        OUR_MAC,
        GW6_MAC,
        &ipv6_raw(
            V6Hdr {
                hop: 50,
                ..v6hdr(CLIENT6, VIP6)
            },
            58,
            &req,
        ),
    );
    let (action, out) = run(&snap, &mut w, &input);
    assert_eq!(action, Action::Reply);
    let rep = icmp6_body(
        v6(VIP6),
        v6(CLIENT6),
        vec![129, 0, 0, 0, 0xab, 0xcd, 0, 9, 1, 2, 3],
    );
    assert_frame(
        &out,
        &frame(GW6_MAC, OUR_MAC, &ipv6_raw(v6hdr(VIP6, CLIENT6), 58, &rep)),
        "echo v6",
    );
    // echo to an address that is neither ours nor a VIP is not answered
    let req = icmp4_body(vec![8, 0, 0, 0, 0, 1, 0, 1]);
    let input = frame(
        OUR_MAC,
        GW_MAC,
        &ipv4_raw(v4hdr(CLIENT, "198.18.0.99"), 1, &req),
    );
    assert_eq!(
        run(&snap, &mut w, &input).0,
        Action::Drop(DropReason::NotForUs)
    );
}

#[test]
fn neighbour_solicitations_for_a_vip_get_a_solicited_advertisement() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let solicited_node = v6("ff02::1:ff00:100");
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&v6(VIP6).octets());
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&GW6_MAC);
    let ns = icmp6_body(v6("2001:db8:1::fe"), solicited_node, ns);
    let ip = ipv6_raw(
        V6Hdr {
            src: v6("2001:db8:1::fe"),
            dst: solicited_node,
            hop: 255,
            tc: 0,
        },
        58,
        &ns,
    );
    let input = frame([0x33, 0x33, 0xff, 0, 0x01, 0], GW6_MAC, &ip);
    let (action, out) = run(&snap, &mut w, &input);
    assert_eq!(action, Action::Reply);
    let mut na = vec![136, 0, 0, 0, 0xe0, 0, 0, 0];
    na.extend_from_slice(&v6(VIP6).octets());
    na.extend_from_slice(&[2, 1]);
    na.extend_from_slice(&OUR_MAC);
    let na = icmp6_body(v6(VIP6), v6("2001:db8:1::fe"), na);
    let mut want = frame(
        GW6_MAC,
        OUR_MAC,
        &ipv6_raw(
            V6Hdr {
                src: v6(VIP6),
                dst: v6("2001:db8:1::fe"),
                hop: 255,
                tc: 0,
            },
            58,
            &na,
        ),
    );
    want[15] = 0; // flow label 0
    want[16] = 0;
    want[17] = 0;
    assert_frame(&out, &want, "neighbour advertisement");

    // hop limit other than 255: ignored (RFC 4861 §7.1.1)
    let mut bad = input.clone();
    bad[21] = 64;
    assert_eq!(
        run(&snap, &mut w, &bad).0,
        Action::Drop(DropReason::NdpInvalid)
    );
}

// ---------------------------------------------------------------- ICMP errors about flows

#[test]
fn an_icmp_error_about_a_nat_flow_reaches_the_client_rewritten() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let (input, l4) = client_packet(false, Protocol::Udp, ForwardingMode::Nat, 0);
    run(&snap, &mut w, &input);
    // The backend says port unreachable about the packet l4lb sent it (client -> backend).
    let sent = ipv4_packet(v4hdr(CLIENT, B1), with_ports(l4, 40000, 8080));
    let mut err = vec![3, 3, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&sent[..28]);
    let err_pkt = ipv4_raw(v4hdr(B1, CLIENT), 1, &icmp4_body(err));
    let (action, out) = run(&snap, &mut w, &frame(OUR_MAC, B1_MAC, &err_pkt));
    assert_eq!(action, Action::Forward { interface: 0 });
    // The client must see its own packet (client -> VIP:1080) quoted, from the VIP.
    let original = ipv4_packet(v4hdr(CLIENT, VIP), l4);
    let mut want = vec![3, 3, 0, 0, 0, 0, 0, 0];
    want.extend_from_slice(&original[..28]);
    let want = ipv4_raw(v4hdr(VIP, CLIENT), 1, &icmp4_body(want));
    assert_frame(&out, &frame(GW_MAC, OUR_MAC, &want), "icmp error to client");
}

#[test]
fn an_icmp_error_about_a_vips_reply_reaches_the_dr_backend() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let (input, l4) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::DirectRouting,
        crate::wire::tcp::SYN,
    );
    run(&snap, &mut w, &input);
    // A router on the way to the client could not forward the backend's (VIP-sourced) reply.
    let reply = ipv4_packet(v4hdr(VIP, CLIENT), with_ports(l4, 81, 40000));
    let mut err = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00];
    err.extend_from_slice(&reply[..48]);
    let err_pkt = frame(
        OUR_MAC,
        GW_MAC,
        &ipv4_raw(v4hdr("198.19.9.9", VIP), 1, &icmp4_body(err)),
    );
    let (action, out) = run(&snap, &mut w, &err_pkt);
    assert_eq!(action, Action::Forward { interface: 0 });
    let mut want = err_pkt.clone();
    want[0..6].copy_from_slice(&B1_MAC);
    want[6..12].copy_from_slice(&OUR_MAC);
    assert_frame(&out, &want, "icmp error to dr backend");
    // about a flow that does not exist: dropped
    let mut w2 = worker();
    assert_eq!(
        run(&snap, &mut w2, &err_pkt).0,
        Action::Drop(DropReason::IcmpNoFlow)
    );
}

#[test]
fn an_icmp_error_about_a_vips_reply_is_tunnelled_to_the_tun_backend_within_the_mtu() {
    // Through the same egress as the flow's packets: encapsulated, or dropped when it would
    // not fit (an ICMP error is never answered with another one).
    for mtu in [1500, 90] {
        let mut c = config(1);
        c.interfaces[0].mtu = mtu;
        let snap = Snapshot::build(c, 1);
        let mut w = worker();
        let (input, l4) = client_packet(
            false,
            Protocol::Tcp,
            ForwardingMode::Tunnel,
            crate::wire::tcp::SYN,
        );
        assert_eq!(
            run(&snap, &mut w, &input).0,
            Action::Forward { interface: 0 }
        );
        let reply = ipv4_packet(v4hdr(VIP, CLIENT), with_ports(l4, 82, 40000));
        let mut err = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00];
        err.extend_from_slice(&reply[..48]);
        let err_ip = ipv4_raw(v4hdr("198.19.9.9", VIP), 1, &icmp4_body(err));
        let (action, out) = run(&snap, &mut w, &frame(OUR_MAC, GW_MAC, &err_ip));
        if mtu == 1500 {
            assert_eq!(action, Action::Forward { interface: 0 });
            let h = V4Hdr {
                src: v4("198.18.0.1"),
                dst: v4(B1),
                ttl: 64,
                tos: 0x28, // the inner DSCP
                id: 0,
                df: true,
            };
            let want = frame(B1_MAC, OUR_MAC, &ipv4_raw(h, 4, &err_ip));
            assert_frame(&out, &want, "icmp error tunnelled to the tun backend");
        } else {
            // 76 bytes and 20 of tunnel header: over an MTU of 90.
            assert_eq!(action, Action::Drop(DropReason::TooBigIcmpError));
        }
    }
}

// ---------------------------------------------------------------- drops

#[test]
fn malformed_and_unwanted_packets_are_dropped_with_their_reason() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let (good, _) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::Nat,
        crate::wire::tcp::SYN,
    );
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..13].to_vec(), DropReason::Truncated),
        (good[..30].to_vec(), DropReason::Truncated),
        (
            {
                let mut f = good.clone();
                f[0] = 0x02;
                f[5] = 0x99;
                f
            },
            DropReason::NotOurMac,
        ),
        (
            {
                let mut f = good.clone();
                f[12] = 0x88;
                f[13] = 0xcc;
                f
            },
            DropReason::UnknownEtherType,
        ),
        (
            {
                let mut f = good.clone();
                f[14] = 0x65;
                f
            },
            DropReason::BadVersion,
        ),
        (
            {
                let mut f = good.clone();
                f[14] = 0x44;
                f
            },
            DropReason::BadHeaderLength,
        ),
        (
            {
                let mut f = good.clone();
                f[17] = 0xff;
                f
            },
            DropReason::BadLength,
        ),
        (
            {
                let mut f = good.clone();
                f[22] = 1;
                f
            },
            DropReason::BadChecksum,
        ),
        (
            {
                let mut f = good.clone();
                f[27] = 1;
                f
            },
            DropReason::BadChecksum,
        ),
        (
            frame(
                OUR_MAC,
                GW_MAC,
                &ipv4_packet(
                    V4Hdr {
                        df: false,
                        ..v4hdr(CLIENT, VIP)
                    },
                    L4Spec::Raw {
                        proto: 6,
                        bytes: &[0; 20],
                    },
                ),
            )
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 20 { b | 0x20 } else { *b })
            .collect::<Vec<u8>>(),
            DropReason::BadChecksum,
        ),
        (
            frame(
                OUR_MAC,
                GW_MAC,
                &ipv4_packet(
                    v4hdr(CLIENT, VIP),
                    L4Spec::Tcp {
                        sport: 1,
                        dport: 9999,
                        flags: crate::wire::tcp::RST,
                        payload: b"",
                    },
                ),
            ),
            DropReason::NoService,
        ),
        (
            frame(
                OUR_MAC,
                GW_MAC,
                &ipv4_packet(
                    v4hdr(CLIENT, VIP),
                    L4Spec::Raw {
                        proto: 47,
                        bytes: &[0; 8],
                    },
                ),
            ),
            DropReason::UnsupportedProtocol,
        ),
        (
            frame(
                OUR_MAC,
                GW_MAC,
                &ipv4_packet(
                    v4hdr(CLIENT, "198.19.0.1"),
                    L4Spec::Tcp {
                        sport: 1,
                        dport: 80,
                        flags: 2,
                        payload: b"",
                    },
                ),
            ),
            DropReason::NotForUs,
        ),
        (
            frame(
                OUR_MAC,
                GW_MAC,
                &ipv4_packet(
                    v4hdr(CLIENT, "198.18.0.1"),
                    L4Spec::Tcp {
                        sport: 1,
                        dport: 22,
                        flags: 2,
                        payload: b"",
                    },
                ),
            ),
            DropReason::LocalUnsupported,
        ),
        (
            frame(
                OUR_MAC,
                GW_MAC,
                &ipv4_packet(
                    v4hdr(CLIENT, VIP),
                    L4Spec::Raw {
                        proto: 6,
                        bytes: &[0; 12],
                    },
                ),
            ),
            DropReason::Truncated,
        ),
    ];
    for (i, (f, reason)) in cases.into_iter().enumerate() {
        assert_eq!(run(&snap, &mut w, &f).0, Action::Drop(reason), "case {i}");
    }
}

#[test]
fn fragments_and_ip_options_are_dropped() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    // an IPv4 first fragment (MF) and a later one (offset)
    for (flags_hi, flags_lo) in [(0x20u8, 0u8), (0x00, 0x10)] {
        let mut ip = ipv4_packet(
            V4Hdr {
                df: false,
                ..v4hdr(CLIENT, VIP)
            },
            L4Spec::Udp {
                sport: 1,
                dport: 1080,
                payload: b"x",
                zero_checksum: false,
            },
        );
        ip[6] = flags_hi;
        ip[7] = flags_lo;
        ip[10] = 0;
        ip[11] = 0;
        let c = csum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            run(&snap, &mut w, &frame(OUR_MAC, GW_MAC, &ip)).0,
            Action::Drop(DropReason::Fragment)
        );
    }
    // IPv4 with a 4-byte option (router alert)
    let mut ip = ipv4_packet(
        v4hdr(CLIENT, VIP),
        L4Spec::Udp {
            sport: 1,
            dport: 1080,
            payload: b"x",
            zero_checksum: false,
        },
    );
    ip.splice(20..20, [0x94, 0x04, 0, 0]);
    ip[0] = 0x46;
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[10] = 0;
    ip[11] = 0;
    let c = csum(&ip[..24]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        run(&snap, &mut w, &frame(OUR_MAC, GW_MAC, &ip)).0,
        Action::Drop(DropReason::IpOptions)
    );
    // an IPv6 fragment header
    let mut body = vec![17, 0, 0, 0, 0, 0, 0, 1];
    body.extend_from_slice(&[0; 16]);
    let ip = ipv6_raw(v6hdr(CLIENT6, VIP6), 44, &body);
    assert_eq!(
        run(&snap, &mut w, &frame(OUR_MAC, GW6_MAC, &ip)).0,
        Action::Drop(DropReason::Fragment)
    );
    assert!(w.flows.is_empty(), "no flow was created by any of them");
}

#[test]
fn a_vlan_tag_is_kept() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let (input, _) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::DirectRouting,
        crate::wire::tcp::SYN,
    );
    let mut tagged = input[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    tagged.extend_from_slice(&input[12..]);
    let (_, out) = run(&snap, &mut w, &tagged);
    let mut want = tagged.clone();
    want[0..6].copy_from_slice(&B1_MAC);
    want[6..12].copy_from_slice(&OUR_MAC);
    assert_eq!(out, want);
}

#[test]
fn unresolved_neighbours_and_missing_routes_are_counted_drops() {
    let mut c = config(1);
    c.neighbors.retain(|(a, _)| a.to_string() != B1);
    let snap = Snapshot::build(c, 1);
    let mut w = worker();
    let (input, _) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::Nat,
        crate::wire::tcp::SYN,
    );
    assert_eq!(
        run(&snap, &mut w, &input).0,
        Action::Drop(DropReason::NeighborUnresolved)
    );
    let mut c = config(1);
    c.routes.clear();
    c.services[0].backends[0].address = "198.19.200.1".parse().unwrap();
    let snap = Snapshot::build(c, 1);
    let mut w = worker();
    assert_eq!(
        run(&snap, &mut w, &input).0,
        Action::Drop(DropReason::NoRoute)
    );
}

/// Valid frames of every kind this file tests, as seeds for fuzzing.
pub(super) fn seed_frames() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for v6 in [false, true] {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            for mode in [
                ForwardingMode::Nat,
                ForwardingMode::DirectRouting,
                ForwardingMode::Tunnel,
            ] {
                for flags in [
                    crate::wire::tcp::SYN,
                    crate::wire::tcp::ACK,
                    crate::wire::tcp::RST,
                ] {
                    seeds.push(client_packet(v6, proto, mode, flags).0);
                }
            }
        }
    }
    let reply = ipv4_packet(
        v4hdr(B1, CLIENT),
        L4Spec::Tcp {
            sport: 8080,
            dport: 40000,
            flags: 0x12,
            payload: b"x",
        },
    );
    seeds.push(frame(OUR_MAC, B1_MAC, &reply));
    let reply = ipv4_packet(
        v4hdr(B1, CLIENT),
        L4Spec::Udp {
            sport: 8080,
            dport: 40000,
            payload: b"answer",
            zero_checksum: false,
        },
    );
    seeds.push(frame(OUR_MAC, B1_MAC, &reply));
    let mut err = vec![3, 3, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(
        &ipv4_packet(
            v4hdr(CLIENT, B1),
            L4Spec::Udp {
                sport: 40000,
                dport: 8080,
                payload: b"q",
                zero_checksum: false,
            },
        )[..28],
    );
    seeds.push(frame(
        OUR_MAC,
        B1_MAC,
        &ipv4_raw(v4hdr(B1, CLIENT), 1, &icmp4_body(err)),
    ));
    let echo = icmp6_body(v6(CLIENT6), v6(VIP6), vec![128, 0, 0, 0, 0, 1, 0, 1]);
    seeds.push(frame(
        OUR_MAC,
        GW6_MAC,
        &ipv6_raw(v6hdr(CLIENT6, VIP6), 58, &echo),
    ));
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&v6(VIP6).octets());
    let ns = icmp6_body(v6("2001:db8:1::fe"), v6("ff02::1:ff00:100"), ns);
    seeds.push(frame(
        OUR_MAC,
        GW6_MAC,
        &ipv6_raw(
            V6Hdr {
                src: v6("2001:db8:1::fe"),
                dst: v6("ff02::1:ff00:100"),
                hop: 255,
                tc: 0,
            },
            58,
            &ns,
        ),
    ));
    let mut arp = eth([0xff; 6], GW_MAC, 0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&GW_MAC);
    arp.extend_from_slice(&[198, 18, 0, 254, 0, 0, 0, 0, 0, 0, 198, 18, 0, 100]);
    seeds.push(arp);
    let big = vec![0u8; 1470];
    seeds.push(frame(
        OUR_MAC,
        GW_MAC,
        &ipv4_packet(
            v4hdr(CLIENT, VIP),
            L4Spec::Tcp {
                sport: 1,
                dport: 82,
                flags: 0x10,
                payload: &big,
            },
        ),
    ));
    // As a NIC delivers short frames: padded to the Ethernet minimum of 60 bytes.
    let padded: Vec<Vec<u8>> = seeds
        .iter()
        .filter(|f| f.len() < 60)
        .map(|f| {
            let mut p = f.clone();
            p.resize(60, 0);
            p
        })
        .collect();
    seeds.extend(padded);
    seeds
}

#[test]
fn service_and_backend_counters_follow_packets_flows_and_connections() {
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let (syn, l4) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::Nat,
        crate::wire::tcp::SYN,
    );
    let (ack, _) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::Nat,
        crate::wire::tcp::ACK,
    );
    run(&snap, &mut w, &syn);
    run(&snap, &mut w, &ack);
    let reply = ipv4_packet(v4hdr(B1, CLIENT), with_ports(l4, 8080, 40000));
    run(&snap, &mut w, &frame(OUR_MAC, B1_MAC, &reply));
    // a drop is not counted for the service
    run(&snap, &mut w, &syn[..20]);
    let s = &w.traffic.services[0];
    let b = &w.traffic.backends[0];
    for t in [s, b] {
        assert_eq!(
            (t.packets_in.get(), t.bytes_in.get()),
            (2, (syn.len() + ack.len()) as u64)
        );
        assert_eq!(
            (t.packets_out.get(), t.bytes_out.get()),
            (1, 14 + reply.len() as u64)
        );
        assert_eq!(t.new_flows.get(), 1);
    }
    assert_eq!(w.traffic.mirrored_snapshot.get(), 0, "not copied out yet");
    w.mirror_connections(&snap);
    assert_eq!(
        (b.active.get(), b.inactive.get()),
        (1, 0),
        "the client's ACK established it"
    );
    assert_eq!(w.traffic.mirrored_snapshot.get(), snap.epoch);
    assert_eq!(w.traffic.services[1].packets_in.get(), 0);
}

fn events(w: &WorkerState) -> Vec<crate::neighbor::NeighborEvent> {
    let mut v = Vec::new();
    w.neighbor_events.drain(|e| v.push(e));
    v
}

#[test]
fn arp_and_ndp_teach_neighbours_and_unresolved_next_hops_are_reported() {
    use crate::neighbor::NeighborEvent::{Learned, Unresolved};
    let snap = Snapshot::build(config(1), 1);
    let mut w = worker();
    let b3: IpAddr = "198.18.1.12".parse().unwrap();
    let b3_mac = MacAddr([2, 0, 0, 0, 1, 0x0c]);
    // an ARP reply to our address: consumed, its sender learned
    let mut reply = eth(OUR_MAC, b3_mac.0, 0x0806);
    reply.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&b3_mac.0);
    reply.extend_from_slice(&[198, 18, 1, 12]);
    reply.extend_from_slice(&OUR_MAC);
    reply.extend_from_slice(&[198, 18, 1, 1]);
    assert_eq!(run(&snap, &mut w, &reply).0, Action::Consumed);
    assert_eq!(
        events(&w),
        [Learned {
            addr: b3,
            mac: b3_mac,
            interface: 0
        }]
    );
    // a sender off the link is not learned
    let mut off = reply.clone();
    off[28..32].copy_from_slice(&[198, 19, 9, 9]);
    assert_eq!(run(&snap, &mut w, &off).0, Action::Consumed);
    assert!(events(&w).is_empty());
    // a neighbour advertisement with a target link-layer option
    let target = v6("2001:db8:2::12");
    let mut na = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    na.extend_from_slice(&target.octets());
    na.extend_from_slice(&[2, 1]);
    na.extend_from_slice(&b3_mac.0);
    let na = icmp6_body(target, v6("2001:db8:2::1"), na);
    let ip = ipv6_raw(
        V6Hdr {
            src: target,
            dst: v6("2001:db8:2::1"),
            hop: 255,
            tc: 0,
        },
        58,
        &na,
    );
    assert_eq!(
        run(&snap, &mut w, &frame(OUR_MAC, b3_mac.0, &ip)).0,
        Action::Consumed
    );
    assert_eq!(
        events(&w),
        [Learned {
            addr: IpAddr::V6(target),
            mac: b3_mac,
            interface: 0
        }]
    );
    // a backend without a MAC: dropped, and its address reported for resolution
    let mut c = config(1);
    c.neighbors.retain(|(a, _)| a.to_string() != B1);
    let snap = Snapshot::build(c, 2);
    let (input, _) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::Nat,
        crate::wire::tcp::SYN,
    );
    assert_eq!(
        run(&snap, &mut w, &input).0,
        Action::Drop(DropReason::NeighborUnresolved)
    );
    assert_eq!(
        events(&w),
        [Unresolved {
            addr: B1.parse().unwrap(),
            interface: 0
        }]
    );
}

#[test]
fn an_action_fits_in_a_register() {
    // Returned by every call of `process`: kept small on purpose (see `Action::Forward`).
    assert_eq!(std::mem::size_of::<Action>(), 4);
}

#[test]
fn warming_names_the_flow_process_then_uses() {
    for is_v6 in [false, true] {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let snap = Snapshot::build(config(1), 1);
            let mut w = worker();
            let (input, _) = client_packet(is_v6, proto, ForwardingMode::DirectRouting, 0x10);
            // Before the flow exists: a hash all the same (the packet is a client's to a VIP).
            let Some(Warmed::Flow(before)) = super::fast::warm(&input, &snap, &w) else {
                panic!("a client packet to a VIP warms its flow's bucket");
            };
            run(&snap, &mut w, &input);
            let flow = w.flows.iter().next().expect("one flow").key;
            assert_eq!(before, w.flows.hash_of(&flow), "{is_v6} {proto}");
            assert_eq!(
                super::fast::warm(&input, &snap, &w),
                Some(Warmed::Flow(before))
            );
            // Not to a VIP: perhaps a NAT reply, from 2001:db8:9::9 or 198.19.9.9 (port 80
            // or 53 of the client packet) to the client.
            let mut other = input.clone();
            let (backend, client) = if is_v6 {
                other[14 + 24..14 + 40].copy_from_slice(&v6("2001:db8:9::9").octets());
                (v6("2001:db8:9::9").octets(), v6(CLIENT6).octets())
            } else {
                other[14 + 16..14 + 20].copy_from_slice(&[198, 19, 9, 9]);
                let m = |a: [u8; 4]| crate::addr::mapped(a);
                (
                    m([198, 19, 9, 9]),
                    m(CLIENT.parse::<std::net::Ipv4Addr>().unwrap().octets()),
                )
            };
            let ports = if is_v6 { 14 + 40 } else { 14 + 20 };
            let rk = crate::flow::ReplyKey {
                protocol: flow.protocol,
                backend: crate::flow::Endpoint {
                    addr: client,
                    port: u16::from_be_bytes([other[ports], other[ports + 1]]),
                },
                client: backend,
                client_port: u16::from_be_bytes([other[ports + 2], other[ports + 3]]),
            };
            assert_eq!(
                super::fast::warm(&other, &snap, &w),
                Some(Warmed::Reply(w.flows.hash_reply(&rk)))
            );
            // Neither TCP nor UDP: nothing to warm.
            let mut icmp = input.clone();
            icmp[if is_v6 { 14 + 6 } else { 14 + 9 }] = 1;
            assert_eq!(super::fast::warm(&icmp, &snap, &w), None);
        }
    }
}

#[test]
fn a_snapshot_with_new_timeouts_reaches_the_flow_table_when_adopted() {
    let mut w = worker();
    let (input, _) = client_packet(false, Protocol::Udp, ForwardingMode::Nat, 0);
    let snap = Snapshot::build(config(1), 1);
    w.adopt(&snap);
    assert_eq!(
        run(&snap, &mut w, &input).0,
        Action::Forward { interface: 0 }
    );
    let key = w.flows.iter().next().expect("the flow").key;
    let slot = w.flows.find(&key).expect("its slot");
    // `run` processes at second 100.
    assert!(
        !w.flows.expired_at(slot, 100 + 299),
        "UDP: 300 s by default"
    );
    // A reload of [timeouts]: UDP 30 s, from the worker's next expiry check on.
    let mut c = config(1);
    c.timeouts.udp = 30;
    let reloaded = Snapshot::build(c, 2);
    w.adopt(&reloaded);
    assert_eq!(w.flows.timeouts().udp, 30);
    assert!(w.flows.expired_at(slot, 100 + 31));
    assert!(!w.flows.expired_at(slot, 100 + 29));
}

/// A TCP header without options and its checksum, for the expected resets.
fn tcp_header(
    (sport, dport): (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    pseudo: Vec<u8>,
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    let mut p = pseudo;
    p.extend_from_slice(&t);
    let c = csum(&p);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

#[test]
fn closed_vip_ports_answer_as_a_host_within_the_budget() {
    use crate::wire::tcp::{ACK, FIN, PSH, RST, SYN};
    let mut c = config(1);
    c.replies.per_second = 3;
    let snap = Snapshot::build(c, 1);
    let mut w = worker();
    let answer = |w: &mut WorkerState, f: &[u8], now: u32| {
        let mut p = OwnedPacket::new(f);
        let a = process(&mut p, 0, &snap, w, now);
        (a, p.data().to_vec())
    };
    let pseudo4 = |len: u16| {
        let mut p = v4(VIP).octets().to_vec();
        p.extend_from_slice(&v4(CLIENT).octets());
        p.extend_from_slice(&[0, 6]);
        p.extend_from_slice(&len.to_be_bytes());
        p
    };
    let reply_hdr = V4Hdr {
        tos: 0,
        id: 0,
        ..v4hdr(VIP, CLIENT)
    };
    // A SYN: RST+ACK, seq 0, ack = its seq + 1 (the L4Spec's seq is 0x01020304).
    let syn = frame(
        OUR_MAC,
        GW_MAC,
        &ipv4_packet(
            v4hdr(CLIENT, VIP),
            L4Spec::Tcp {
                sport: 40000,
                dport: 9999,
                flags: SYN,
                payload: b"",
            },
        ),
    );
    let (a, out) = answer(&mut w, &syn, 7);
    assert_eq!(a, Action::Reply);
    let rst = tcp_header((9999, 40000), 0, 0x0102_0305, RST | ACK, pseudo4(20));
    assert_frame(
        &out,
        &frame(GW_MAC, OUR_MAC, &ipv4_raw(reply_hdr, 6, &rst)),
        "reset to a SYN",
    );
    // Data with ACK and FIN: RST, seq = its ack (0x0a0b0c0d), no ACK.
    let data = frame(
        OUR_MAC,
        GW_MAC,
        &ipv4_packet(
            v4hdr(CLIENT, VIP),
            L4Spec::Tcp {
                sport: 40001,
                dport: 9999,
                flags: ACK | PSH | FIN,
                payload: b"hello",
            },
        ),
    );
    let (a, out) = answer(&mut w, &data, 7);
    assert_eq!(a, Action::Reply);
    let rst = tcp_header((9999, 40001), 0x0a0b_0c0d, 0, RST, pseudo4(20));
    assert_frame(
        &out,
        &frame(GW_MAC, OUR_MAC, &ipv4_raw(reply_hdr, 6, &rst)),
        "reset to a segment with ACK",
    );
    // UDP over IPv6 to a TCP-only port: ICMPv6 port unreachable quoting it whole.
    let udp6 = ipv6_packet(
        v6hdr(CLIENT6, VIP6),
        L4Spec::Udp {
            sport: 5000,
            dport: vip_port(Protocol::Tcp, ForwardingMode::Nat),
            payload: b"query",
            zero_checksum: false,
        },
    );
    let (a, out) = answer(&mut w, &frame(OUR_MAC, GW_MAC, &udp6), 7);
    assert_eq!(a, Action::Reply);
    let mut m = vec![1, 4, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&udp6);
    let body = icmp6_body(v6(VIP6), v6(CLIENT6), m);
    let want = ipv6_raw(
        V6Hdr {
            tc: 0,
            ..v6hdr(VIP6, CLIENT6)
        },
        58,
        &body,
    );
    // The flow label of the answer is 0 (ipv6_raw writes 0xbeef).
    let mut want = frame(GW_MAC, OUR_MAC, &want);
    want[15..18].fill(0);
    assert_frame(&out, &want, "ICMPv6 port unreachable");
    // The budget: three answers in second 7, the fourth dropped and counted.
    let (a, _) = answer(&mut w, &syn, 7);
    assert_eq!(a, Action::Drop(DropReason::NoService));
    assert_eq!(w.traffic.closed_ports.rate_limited.get(), 1);
    // UDP over IPv4 in the next second: ICMP port unreachable.
    let udp4 = ipv4_packet(
        v4hdr(CLIENT, VIP),
        L4Spec::Udp {
            sport: 5000,
            dport: 9999,
            payload: b"q",
            zero_checksum: false,
        },
    );
    let (a, out) = answer(&mut w, &frame(OUR_MAC, GW_MAC, &udp4), 8);
    assert_eq!(a, Action::Reply);
    let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&udp4);
    let icmp_hdr = V4Hdr {
        df: false,
        ..reply_hdr
    };
    assert_frame(
        &out,
        &frame(GW_MAC, OUR_MAC, &ipv4_raw(icmp_hdr, 1, &icmp4_body(m))),
        "ICMP port unreachable",
    );
    let t = &w.traffic.closed_ports;
    assert_eq!((t.tcp_resets.get(), t.port_unreachables.get()), (2, 2));
    // A reset is never answered; switched off, nothing is.
    let rst_in = frame(
        OUR_MAC,
        GW_MAC,
        &ipv4_packet(
            v4hdr(CLIENT, VIP),
            L4Spec::Tcp {
                sport: 40002,
                dport: 9999,
                flags: RST | ACK,
                payload: b"",
            },
        ),
    );
    assert_eq!(
        answer(&mut w, &rst_in, 9).0,
        Action::Drop(DropReason::NoService)
    );
    let mut c = config(1);
    c.replies.closed_ports = false;
    let off = Snapshot::build(c, 2);
    let mut p = OwnedPacket::new(&syn);
    assert_eq!(
        process(&mut p, 0, &off, &mut w, 9),
        Action::Drop(DropReason::NoService)
    );
    assert_eq!(w.traffic.closed_ports.tcp_resets.get(), 2);
}

#[test]
fn a_packet_for_an_unresolved_next_hop_is_rewritten_but_for_its_ethernet_header() {
    // What the worker holds must need only its MAC when the answer comes: NAT (fast path
    // and general path), and TUN, whose encapsulation comes first.
    let mut c = config(1);
    c.neighbors.retain(|(a, _)| a.to_string() != B1);
    let resolved = Snapshot::build(config(1), 1);
    let unresolved = Snapshot::build(c.clone(), 2);
    for mode in [ForwardingMode::Nat, ForwardingMode::Tunnel] {
        for flags in [crate::wire::tcp::SYN, crate::wire::tcp::ACK] {
            let (input, _) = client_packet(false, Protocol::Tcp, mode, flags);
            let mut w = worker();
            if flags == crate::wire::tcp::ACK {
                // established first, so that the ACK takes the fast path (NAT)
                let (syn, _) = client_packet(false, Protocol::Tcp, mode, crate::wire::tcp::SYN);
                assert!(matches!(
                    run(&resolved, &mut w, &syn).0,
                    Action::Forward { .. }
                ));
            }
            let mut w2 = worker();
            let (want_action, want) = if flags == crate::wire::tcp::ACK {
                let (syn, _) = client_packet(false, Protocol::Tcp, mode, crate::wire::tcp::SYN);
                run(&resolved, &mut w2, &syn);
                run(&resolved, &mut w2, &input)
            } else {
                run(&resolved, &mut w2, &input)
            };
            assert!(matches!(want_action, Action::Forward { .. }));
            let (a, got) = run(&unresolved, &mut w, &input);
            assert_eq!(a, Action::Drop(DropReason::NeighborUnresolved), "{mode:?}");
            assert_eq!(
                w.neighbor_events.take_unresolved(),
                Some((B1.parse().unwrap(), 0)),
                "{mode:?}: where to hold it"
            );
            assert_eq!(got.len(), want.len(), "{mode:?}");
            assert_eq!(
                &got[12..],
                &want[12..],
                "{mode:?} {flags}: all but the MACs"
            );
        }
    }
    // A failed next hop holds nothing, and its backend takes no new flows.
    let mut c2 = c.clone();
    c2.failed_neighbors = vec![B1.parse().unwrap()];
    let failed = Snapshot::build(c2, 3);
    let svc = failed
        .services
        .iter()
        .find(|s| {
            s.config
                .backends
                .iter()
                .any(|b| b.address.to_string() == B1)
        })
        .unwrap();
    assert!(
        svc.sched_backends.iter().all(|b| b.weight == 0),
        "the only backend behind a failed next hop has no weight"
    );
    let (input, _) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::Nat,
        crate::wire::tcp::SYN,
    );
    let mut w = worker();
    assert_eq!(
        run(&failed, &mut w, &input).0,
        Action::Drop(DropReason::NoBackend)
    );
    assert_eq!(
        failed.resolution(B1.parse().unwrap()),
        crate::neighbor::Resolution::Failed
    );
    assert_eq!(
        resolved.resolution(B1.parse().unwrap()),
        crate::neighbor::Resolution::Resolved(MacAddr(B1_MAC))
    );
}

// ---------------------------------------------------------------- the kernel exception path

/// What the packet path does not handle goes, unchanged, to the kernel interface when there is
/// one (and is dropped as before when there is not); what it handles stays its own.
#[test]
fn what_the_packet_path_does_not_handle_goes_to_the_kernel_unchanged() {
    let plain = Snapshot::build(config(1), 1);
    let mut with = config(1);
    with.interfaces[0].kernel = true;
    let kernel = Snapshot::build(with, 1);
    let tcp = |dport| L4Spec::Tcp {
        sport: 40001,
        dport,
        flags: crate::wire::tcp::SYN,
        payload: b"",
    };
    let udp = |dport| L4Spec::Udp {
        sport: 40001,
        dport,
        payload: b"q",
        zero_checksum: false,
    };
    // The port unreachable a backend sends about the kernel's own UDP probe.
    let probe = ipv4_packet(v4hdr("198.18.1.1", B1), udp(53));
    let mut unreachable = vec![3, 3, 0, 0, 0, 0, 0, 0];
    unreachable.extend_from_slice(&probe[..28]);
    let mut arp_reply = eth(OUR_MAC, B1_MAC, 0x0806);
    arp_reply.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    arp_reply.extend_from_slice(&B1_MAC);
    arp_reply.extend_from_slice(&[198, 18, 1, 10]);
    arp_reply.extend_from_slice(&OUR_MAC);
    arp_reply.extend_from_slice(&[198, 18, 1, 1]);
    let mut arp_other = eth([0xff; 6], B1_MAC, 0x0806);
    arp_other.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp_other.extend_from_slice(&B1_MAC);
    arp_other.extend_from_slice(&[198, 18, 1, 10]);
    arp_other.extend_from_slice(&[0; 6]);
    arp_other.extend_from_slice(&[198, 18, 1, 77]);
    let echo_reply = icmp4_body(vec![0, 0, 0, 0, 0x12, 0x34, 0, 1, b'p']);
    let echo = icmp4_body(vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p']);
    let router_advert = icmp6_body(
        v6("2001:db8:1::fe"),
        v6("ff02::1"),
        vec![134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let mut ra = v6hdr("2001:db8:1::fe", "ff02::1");
    ra.hop = 255;
    let cases: Vec<(&str, Vec<u8>, Action)> = vec![
        (
            "TCP to our own address (SSH)",
            frame(
                OUR_MAC,
                GW_MAC,
                &ipv4_packet(v4hdr(CLIENT, "198.18.0.1"), tcp(22)),
            ),
            Action::Drop(DropReason::LocalUnsupported),
        ),
        (
            "UDP to our own IPv6 address (SNMP)",
            frame(
                OUR_MAC,
                GW6_MAC,
                &ipv6_packet(v6hdr(CLIENT6, "2001:db8:1::1"), udp(161)),
            ),
            Action::Drop(DropReason::LocalUnsupported),
        ),
        (
            "transit TCP from a backend to a host that is not a VIP",
            frame(
                OUR_MAC,
                B1_MAC,
                &ipv4_packet(v4hdr(B1, "198.18.0.50"), tcp(80)),
            ),
            Action::Drop(DropReason::NotForUs),
        ),
        (
            "transit ping",
            frame(
                OUR_MAC,
                B1_MAC,
                &ipv4_raw(v4hdr(B1, "198.18.0.50"), 1, &echo),
            ),
            Action::Drop(DropReason::NotForUs),
        ),
        (
            "GRE to our own address",
            frame(
                OUR_MAC,
                GW_MAC,
                &ipv4_raw(v4hdr(CLIENT, "198.18.0.1"), 47, &[0, 0, 8, 0]),
            ),
            Action::Drop(DropReason::UnsupportedProtocol),
        ),
        (
            "an echo reply to the kernel's ping",
            frame(
                OUR_MAC,
                B1_MAC,
                &ipv4_raw(v4hdr(B1, "198.18.1.1"), 1, &echo_reply),
            ),
            Action::Drop(DropReason::IcmpUnsupported),
        ),
        (
            "port unreachable about the kernel's probe",
            frame(
                OUR_MAC,
                B1_MAC,
                &ipv4_raw(v4hdr(B1, "198.18.1.1"), 1, &icmp4_body(unreachable)),
            ),
            Action::Drop(DropReason::IcmpNoFlow),
        ),
        (
            "a router advertisement",
            frame(
                [0x33, 0x33, 0, 0, 0, 1],
                GW6_MAC,
                &ipv6_raw(ra, 58, &router_advert),
            ),
            Action::Drop(DropReason::IcmpUnsupported),
        ),
        (
            "an ARP reply (learned, and the kernel may have asked)",
            arp_reply,
            Action::Consumed,
        ),
        (
            "an ARP request for another host",
            arp_other,
            Action::Drop(DropReason::ArpIgnored),
        ),
        (
            "LLDP",
            {
                let mut f = eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], GW_MAC, 0x88cc);
                f.extend_from_slice(&[0; 46]);
                f
            },
            Action::Drop(DropReason::UnknownEtherType),
        ),
    ];
    for (case, input, without) in &cases {
        let mut w = worker();
        assert_eq!(run(&plain, &mut w, input).0, *without, "{case}, no kernel");
        let mut w = worker();
        let (a, out) = run(&kernel, &mut w, input);
        assert_eq!(a, Action::Kernel, "{case}");
        assert_frame(&out, input, case);
    }
    // The packet path's own business stays its own with a kernel interface.
    let mut w = worker();
    let ping_us = frame(
        OUR_MAC,
        GW_MAC,
        &ipv4_raw(v4hdr(CLIENT, "198.18.0.1"), 1, &echo),
    );
    assert_eq!(
        run(&kernel, &mut w, &ping_us).0,
        Action::Reply,
        "echo to us"
    );
    let (syn, _) = client_packet(
        false,
        Protocol::Tcp,
        ForwardingMode::Nat,
        crate::wire::tcp::SYN,
    );
    assert_eq!(
        run(&kernel, &mut w, &syn).0,
        Action::Forward { interface: 0 },
        "a new flow to a VIP"
    );
    let closed = frame(OUR_MAC, GW_MAC, &ipv4_packet(v4hdr(CLIENT, VIP), tcp(9)));
    assert_eq!(
        run(&kernel, &mut w, &closed).0,
        Action::Reply,
        "a closed VIP port"
    );
    let gre_vip = frame(
        OUR_MAC,
        GW_MAC,
        &ipv4_raw(v4hdr(CLIENT, VIP), 47, &[0, 0, 8, 0]),
    );
    assert_eq!(
        run(&kernel, &mut w, &gre_vip).0,
        Action::Drop(DropReason::UnsupportedProtocol),
        "another protocol to a VIP"
    );
    let mut other_mac = syn.clone();
    other_mac[5] = 0x77;
    assert_eq!(
        run(&kernel, &mut w, &other_mac).0,
        Action::Drop(DropReason::NotOurMac),
        "unicast to another MAC"
    );
}

// ---------------------------------------------------------------- synchronisation between instances

/// Instance A takes a client's connection; its journal's records cross the wire format to
/// instance B, whose scheduler would pick another backend. A mid-stream segment of that
/// connection arriving at B (a failover) keeps its backend, and so does the client's next
/// connection (the persistence template came along); without the records it would not.
#[test]
fn a_peers_flows_and_templates_keep_their_backend_on_the_other_instance() {
    use crate::snapshot::Persistence;
    use crate::sync::{self, Header, MAX_DATAGRAM};
    let mut cfg = config(1);
    let svc = &mut cfg.services[1]; // DR TCP IPv4
    assert_eq!(
        (svc.forwarding, svc.protocol),
        (ForwardingMode::DirectRouting, Protocol::Tcp)
    );
    svc.backends.push(backend(50, "b2", B2, svc.port));
    svc.options.persistence = Some(Persistence {
        timeout: 300,
        netmask: 32,
        expire_quiescent: false,
    });
    let snap = Snapshot::build(cfg, 1);
    let port = vip_port(Protocol::Tcp, ForwardingMode::DirectRouting);
    let segment = |client: &str, sport: u16, flags: u8| {
        let l4 = L4Spec::Tcp {
            sport,
            dport: port,
            flags,
            payload: b"data",
        };
        frame(OUR_MAC, GW_MAC, &ipv4_packet(v4hdr(client, VIP), l4))
    };
    let dst_mac = |out: &[u8]| -> [u8; 6] { out[..6].try_into().unwrap() };
    let syn = crate::wire::tcp::SYN;
    let ack = crate::wire::tcp::ACK;

    let mut a = worker();
    let mut ra = sync::rings(64, 0, 1000);
    a.flows.set_journal(ra.journal);
    let (act, out) = run(&snap, &mut a, &segment(CLIENT, 40000, syn));
    assert_eq!(
        (act, dst_mac(&out)),
        (Action::Forward { interface: 0 }, B1_MAC)
    );
    run(&snap, &mut a, &segment(CLIENT, 40000, ack));
    a.flows.flush_journal();
    // Two records (the SYN, then established), through a datagram.
    let records: Vec<_> = std::iter::from_fn(|| ra.outbound.pop().ok()).collect();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.bound && !r.nat));
    assert_eq!(records[1].state, FlowState::Established);
    let mut d = [0u8; MAX_DATAGRAM];
    let h = Header {
        sync_id: 3,
        count: 2,
        sequence: 1,
        sender: 9,
    };
    let n = sync::encode(h, &records, &mut d);

    // B and its twin without the records: each has scheduled another client first, so its
    // round-robin's next pick is b2.
    let b_with = |synced: bool| {
        let mut b = worker();
        let (_, out) = run(&snap, &mut b, &segment("198.19.5.8", 1234, syn));
        assert_eq!(dst_mac(&out), B1_MAC);
        if synced {
            let mut rb = sync::rings(64, 0, 1000);
            let (_, got) = sync::decode(3, &d[..n]).unwrap();
            for r in got {
                rb.deliver.push(r).unwrap();
            }
            b.sync_in = Some(rb.inbound);
            assert_eq!(b.install_synced(&snap, 100, 64), 2);
            assert_eq!(
                (b.flows.stats().sync_installed, b.flows.stats().sync_updated),
                (1, 1)
            );
            assert_eq!(b.flows.synced(), 1);
        }
        b
    };
    let mut b = b_with(true);
    let (act, out) = run(&snap, &mut b, &segment(CLIENT, 40000, ack));
    assert_eq!(
        (act, dst_mac(&out)),
        (Action::Forward { interface: 0 }, B1_MAC)
    );
    assert_eq!((b.flows.synced(), b.flows.stats().sync_adopted), (0, 1));
    let (_, out) = run(&snap, &mut b, &segment(CLIENT, 40001, syn));
    assert_eq!(dst_mac(&out), B1_MAC, "the template's backend");

    let mut twin = b_with(false);
    let (_, out) = run(&snap, &mut twin, &segment(CLIENT, 40000, ack));
    assert_eq!(dst_mac(&out), B2_MAC, "without the records");
}

#[test]
fn the_gateway_routes_of_nat_replies_are_what_route_answers() {
    let snap = Snapshot::build(config(1), 1);
    for a in [CLIENT, "198.19.200.1", "198.18.0.254", B1, "198.18.0.100"] {
        let ip: Ipv4Addr = a.parse().unwrap();
        let general = snap.route(IpAddr::V4(ip));
        match snap.gateway_route4(ip.octets()) {
            Some(fast) => {
                let general = general.expect("a route");
                assert!(!general.on_link, "{a} is not on link");
                assert_eq!(*fast, general, "{a}");
            }
            // On link (the general path resolves the client itself), or no route at all.
            None => assert!(general.is_none_or(|r| r.on_link), "{a}"),
        }
    }
    // The client behind the gateway has one.
    assert!(
        snap.gateway_route4(CLIENT.parse::<Ipv4Addr>().unwrap().octets())
            .is_some()
    );
    assert!(
        snap.gateway_route4(B1.parse::<Ipv4Addr>().unwrap().octets())
            .is_none()
    );
    for a in [
        CLIENT6,
        "2001:db8:77::1",
        "2001:db8:1::fe",
        B61,
        "2001:db8:1::100",
    ] {
        let ip: Ipv6Addr = a.parse().unwrap();
        let general = snap.route(IpAddr::V6(ip));
        match snap.gateway_route6(&ip.octets()) {
            Some(fast) => {
                let general = general.expect("a route");
                assert!(!general.on_link, "{a} is not on link");
                assert_eq!(*fast, general, "{a}");
            }
            None => assert!(general.is_none_or(|r| r.on_link), "{a}"),
        }
    }
    assert!(snap.gateway_route6(&v6(CLIENT6).octets()).is_some());
    assert!(snap.gateway_route6(&v6(B61).octets()).is_none());
}
