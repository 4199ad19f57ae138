//! The packet path never allocates: every kind of packet, including new flows into a full
//! table (eviction), goes through `process` under a counting allocator that must count zero.
//! A test binary of its own, so no other test's allocations are counted.

use std::net::{IpAddr, Ipv4Addr};

use dataplane::addr::{IpPrefix, MacAddr};
use dataplane::checksum;
use dataplane::flow::FlowTimeouts;
use dataplane::forward::Tunnel;
use dataplane::packet::{OwnedPacket, PacketBuf};
use dataplane::pipeline::{Action, WorkerState, process};
use dataplane::service::{BackendId, ForwardingMode, Protocol, SchedulerKind, ServiceId};
use dataplane::snapshot::{
    BackendConfig, InterfaceConfig, Persistence, ServiceConfig, ServiceOptions, Snapshot,
    SnapshotConfig,
};

const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const VIP: [u8; 4] = [198, 18, 0, 100];

/// Service `s`'s options: the sh/mh fallback, persistence with allow and deny lists,
/// one-packet scheduling, a GUE tunnel.
fn options(s: usize) -> ServiceOptions {
    let mut o = ServiceOptions::default();
    match s {
        12 => o.flags.mh_fallback = true,
        13 => {
            o.persistence = Some(Persistence {
                timeout: 300,
                netmask: 24,
                expire_quiescent: false,
            });
            o.allow = vec!["198.19.0.0/16".parse().unwrap()];
            o.deny = vec!["198.19.3.0/24".parse().unwrap()];
        }
        14 => o.one_packet = true,
        15 => o.tunnel = Tunnel::Gue { port: 6080 },
        _ => {}
    }
    o
}

fn snapshot() -> Snapshot {
    let kinds = [
        (SchedulerKind::Maglev, ForwardingMode::Nat),
        (
            SchedulerKind::WeightedRoundRobin,
            ForwardingMode::DirectRouting,
        ),
        (
            SchedulerKind::WeightedLeastConnection,
            ForwardingMode::Tunnel,
        ),
        (SchedulerKind::RoundRobin, ForwardingMode::Nat),
        (SchedulerKind::LeastConnection, ForwardingMode::Nat),
        (SchedulerKind::ShortestExpectedDelay, ForwardingMode::Nat),
        (SchedulerKind::NeverQueue, ForwardingMode::Nat),
        (SchedulerKind::SourceHash, ForwardingMode::Nat),
        (SchedulerKind::DestinationHash, ForwardingMode::Nat),
        (SchedulerKind::WeightedFailover, ForwardingMode::Nat),
        (SchedulerKind::WeightedOverflow, ForwardingMode::Nat),
        (SchedulerKind::TwoChoices, ForwardingMode::Nat),
        (SchedulerKind::MaglevIpvs, ForwardingMode::Nat),
        // persistent, with client lists
        (SchedulerKind::RoundRobin, ForwardingMode::Nat),
        // one-packet
        (SchedulerKind::RoundRobin, ForwardingMode::Nat),
        // GUE
        (SchedulerKind::RoundRobin, ForwardingMode::Tunnel),
    ];
    let services = kinds
        .iter()
        .enumerate()
        .map(|(s, (scheduler, forwarding))| ServiceConfig {
            id: ServiceId(s as u32),
            name: format!("s{s}"),
            protocol: Protocol::Udp,
            vip: IpAddr::V4(VIP.into()),
            port: 1000 + s as u16,
            scheduler: *scheduler,
            forwarding: *forwarding,
            maglev_table_size: 251,
            options: options(s),
            backends: (0..4)
                .map(|b| BackendConfig {
                    id: BackendId(s as u32 * 4 + b),
                    name: format!("b{b}"),
                    address: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10 + b as u8)),
                    port: 1000 + s as u16,
                    weight: 1 + b,
                    enabled: true,
                    sorry: false,
                    // The first backend of each is limited: overload flags move.
                    upper_threshold: if b == 0 { 5 } else { 0 },
                    lower_threshold: 0,
                })
                .collect(),
            generation: 1,
        })
        .collect();
    let neighbors = (0..4)
        .map(|b| {
            (
                IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10 + b)),
                MacAddr([2, 0, 0, 0, 1, b]),
            )
        })
        .collect::<Vec<_>>();
    let mut neighbors = neighbors;
    neighbors.push((
        "198.18.0.254".parse().unwrap(),
        MacAddr([2, 0, 0, 0, 0, 0xfe]),
    ));
    Snapshot::build(
        SnapshotConfig {
            interfaces: vec![InterfaceConfig {
                port: 0,
                mac: MacAddr(OUR_MAC),
                addresses: vec![
                    "198.18.0.1/24".parse::<IpPrefix>().unwrap(),
                    "198.18.1.1/24".parse().unwrap(),
                ],
                mtu: 1500,
                kernel: false,
            }],
            routes: vec![(
                "0.0.0.0/0".parse().unwrap(),
                "198.18.0.254".parse().unwrap(),
            )],
            neighbors,
            services,
            timeouts: FlowTimeouts::default(),
            workers: 1,
            failed_neighbors: Vec::new(),
            replies: Default::default(),
        },
        1,
    )
}

fn udp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: usize,
    src_mac: [u8; 6],
) -> Vec<u8> {
    let mut f = OUR_MAC.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let len = 28 + payload;
    let mut ip = vec![
        0x45,
        0,
        (len >> 8) as u8,
        len as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum::ipv4_header(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend(std::iter::repeat_n(0x61, payload));
    let c = checksum::transport(
        checksum::pseudo_v4(src.into(), dst.into(), 17, (8 + payload) as u16),
        &u,
    );
    u[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&u);
    f
}

#[test]
fn the_packet_path_does_not_allocate() {
    let snap = snapshot();
    // A small table, so that new flows evict.
    let mut w = WorkerState::new(0, 256, 16, 64, FlowTimeouts::default());
    w.adopt(&snap); // the thresholds and persistence settings (between bursts: may allocate)
    // Synchronisation on: a journal small enough to fill, and peers' flows waiting (two of
    // each service's backends, and one of a backend we do not have).
    let mut rings = dataplane::sync::rings(128, 1, 100_000);
    w.flows.set_journal(rings.journal);
    for i in 0..96u16 {
        let s = i % 16;
        let b = if i % 32 == 31 { 99 } else { (i / 16) % 2 };
        let r = dataplane::sync::SyncRecord {
            key: dataplane::flow::FlowKey::new(
                17,
                IpAddr::V4(Ipv4Addr::new(198, 19, 200, i as u8)),
                3000 + i,
                IpAddr::V4(VIP.into()),
                1000 + s,
            ),
            backend: dataplane::flow::Endpoint {
                addr: dataplane::flow::addr_bytes(IpAddr::V4(Ipv4Addr::new(
                    198,
                    18,
                    1,
                    10 + b as u8,
                ))),
                port: 1000 + s,
            },
            state: dataplane::flow::FlowState::Udp,
            nat: false,
            bound: i.is_multiple_of(3),
            timeout: 300,
        };
        rings.deliver.push(r).unwrap();
    }
    w.sync_in = Some(rings.inbound);
    let gw = [2, 0, 0, 0, 0, 0xfe];
    let mut frames = Vec::new();
    for i in 0..2000u32 {
        let client = [198, 19, (i >> 8) as u8, i as u8];
        let service = (i % 16) as u16;
        frames.push(udp(
            client,
            VIP,
            2000 + (i % 7) as u16,
            1000 + service,
            10,
            gw,
        ));
    }
    // replies from backends of NAT flows, oversize tunnel packets, unknown ports, ARP, echo
    frames.push(udp(
        [198, 18, 1, 10],
        [198, 19, 0, 1],
        1000,
        2001,
        10,
        [2, 0, 0, 0, 1, 0],
    ));
    frames.push(udp([198, 19, 0, 2], VIP, 2000, 1002, 1480, gw));
    frames.push(udp([198, 19, 0, 3], VIP, 2000, 9999, 10, gw));
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&gw);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&gw);
    arp.extend_from_slice(&[198, 18, 0, 254, 0, 0, 0, 0, 0, 0, 198, 18, 0, 100]);
    frames.push(arp);
    let mut echo = udp([198, 19, 0, 4], VIP, 0, 0, 10, gw);
    echo[23] = 1; // protocol ICMP; the bytes after the IP header serve as an echo request
    echo[34] = 8;
    frames.push(echo);
    frames.push(vec![0u8; 7]);

    let mut packets: Vec<OwnedPacket> = frames.iter().map(|f| OwnedPacket::new(f)).collect();
    let mut actions = [0usize; 4];
    let info = allocation_counter::measure(|| {
        for round in 0..3u32 {
            // Installed while the table has room (round 0), then evicted by new flows.
            w.install_synced(&snap, 10 + round, 64);
            for (p, f) in packets.iter_mut().zip(&frames) {
                p.reset_from(f);
                let a = process(p, 0, &snap, &mut w, 10 + round);
                actions[match a {
                    Action::Forward { .. } => 0,
                    Action::Reply => 1,
                    Action::Drop(_) | Action::Consumed | Action::Kernel => 2,
                    Action::Redirect(_) => 3,
                }] += 1;
            }
            w.flows.flush_journal();
        }
    });
    assert_eq!(info.count_total, 0, "the packet path allocated: {info:?}");
    // it did real work: forwarded new flows (evicting), answered, dropped
    assert!(actions[0] > 5000, "{actions:?}");
    assert!(actions[1] >= 3, "{actions:?}");
    assert!(actions[2] >= 6, "{actions:?}");
    assert!(w.flows.stats().evicted > 1000, "{:?}", w.flows.stats());
    assert!(
        !w.flows.templates.is_empty(),
        "persistence templates were made"
    );
    assert!(packets[0].data().len() > 14);
    let s = w.flows.stats();
    assert_eq!(
        s.sync_installed + s.sync_known + s.sync_unknown + s.sync_full,
        96,
        "{s:?}"
    );
    assert!(s.sync_installed >= 32 && s.sync_evicted > 0, "{s:?}");
    assert!(s.sync_unknown >= 3, "{s:?}");
    let (queued, full, _) = w.flows.journal_counts();
    assert!(
        queued >= 128 && full > 0,
        "the journal filled: {queued} {full}"
    );
}
