//! Per-packet cost of the pipeline without EAL: parse + flow lookup + NAT rewrite of an
//! established flow at 1k and 1M flows (each frame restored just before the call, restored
//! one call ahead, or a burst of 32 as a worker runs it), the new-flow path, and Maglev table
//! builds.
//!
//! `cargo bench -p dataplane --bench pipeline`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use dataplane::addr::{IpPrefix, MacAddr};
use dataplane::checksum;
use dataplane::flow::FlowTimeouts;
use dataplane::packet::{OwnedPacket, PacketBuf};
use dataplane::pipeline::{
    Action, MAX_BURST, WARM_ABOVE_BYTES, WorkerState, process, process_hinted, warm_burst,
};
use dataplane::sched::MaglevTable;
use dataplane::service::{BackendId, ForwardingMode, Protocol, SchedulerKind, ServiceId};
use dataplane::snapshot::{
    BackendConfig, InterfaceConfig, ServiceConfig, Snapshot, SnapshotConfig,
};

const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn snapshot(scheduler: SchedulerKind) -> Snapshot {
    snapshot_of(scheduler, false)
}

fn snapshot_of(scheduler: SchedulerKind, v6: bool) -> Snapshot {
    snapshot_in(scheduler, v6, ForwardingMode::Nat)
}

/// A service of 16 backends, IPv4 or IPv6, every backend's neighbour known.
fn snapshot_in(scheduler: SchedulerKind, v6: bool, forwarding: ForwardingMode) -> Snapshot {
    let address = |i: u16| -> IpAddr {
        if v6 {
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10 + i).into()
        } else {
            Ipv4Addr::new(198, 18, 1, 10 + i as u8).into()
        }
    };
    let backends = (0..16)
        .map(|i| BackendConfig {
            id: BackendId(i),
            name: format!("b{i}"),
            address: address(i as u16),
            port: 8080,
            weight: 1,
            enabled: true,
            sorry: false,
            upper_threshold: 0,
            lower_threshold: 0,
        })
        .collect::<Vec<_>>();
    let neighbors = backends
        .iter()
        .map(|b| (b.address, MacAddr([2, 0, 0, 0, 1, b.id.0 as u8])))
        .collect();
    let (addresses, route, vip): (Vec<IpPrefix>, _, _) = if v6 {
        (
            vec![
                "2001:db8::1/64".parse().unwrap(),
                "2001:db8:1::1/64".parse().unwrap(),
            ],
            ("::/0".parse().unwrap(), "2001:db8::fe".parse().unwrap()),
            "2001:db8::100".parse().unwrap(),
        )
    } else {
        (
            vec![
                "198.18.0.1/24".parse().unwrap(),
                "198.18.1.1/24".parse().unwrap(),
            ],
            (
                "0.0.0.0/0".parse().unwrap(),
                "198.18.0.254".parse().unwrap(),
            ),
            "198.18.0.100".parse().unwrap(),
        )
    };
    Snapshot::build(
        SnapshotConfig {
            interfaces: vec![InterfaceConfig {
                port: 0,
                mac: MacAddr(OUR_MAC),
                addresses,
                mtu: 1500,
                kernel: false,
            }],
            routes: vec![route],
            neighbors,
            services: vec![ServiceConfig {
                id: ServiceId(0),
                name: "web".into(),
                protocol: Protocol::Udp,
                vip,
                port: 80,
                scheduler,
                forwarding,
                maglev_table_size: 65537,
                options: Default::default(),
                backends,
                generation: 1,
            }],
            timeouts: FlowTimeouts::default(),
            workers: 1,
            failed_neighbors: Vec::new(),
            replies: Default::default(),
        },
        1,
    )
}

/// A 64-byte UDP frame from client number `i` to the VIP.
fn frame(i: u32) -> Vec<u8> {
    let src = Ipv4Addr::from(0xc613_0000 | (i >> 8)); // 198.19.x.y
    let sport = 1024 + (i & 0xff) as u16;
    let mut f = OUR_MAC.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0xfe, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&[198, 18, 0, 100]);
    let c = checksum::ipv4_header(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = sport.to_be_bytes().to_vec();
    udp.extend_from_slice(&80u16.to_be_bytes());
    udp.extend_from_slice(&26u16.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&[0x61; 18]);
    let c = checksum::transport(
        checksum::pseudo_v4(src, Ipv4Addr::new(198, 18, 0, 100), 17, 26),
        &udp,
    );
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

/// A worker whose table holds `flows` established flows, and frames of flows spread over it.
fn established_setup(flows: u32) -> (WorkerState, Vec<Vec<u8>>) {
    established_setup_in(flows, &snapshot(SchedulerKind::Maglev))
}

fn established_setup_in(flows: u32, snap: &Snapshot) -> (WorkerState, Vec<Vec<u8>>) {
    let mut w = WorkerState::new(0, flows + flows / 4, 16, 64, FlowTimeouts::default());
    let mut p = OwnedPacket::new(&frame(0));
    for i in 0..flows {
        p.reset_from(&frame(i));
        assert!(matches!(
            process(&mut p, 0, snap, &mut w, 1),
            Action::Forward { .. }
        ));
    }
    assert_eq!(w.flows.len(), flows as usize);
    let probes = flows.min(4096);
    let stride = (flows / probes).max(1);
    (w, (0..probes).map(|k| frame(k * stride)).collect())
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established_nat");
    g.throughput(Throughput::Elements(1));
    let snap = snapshot(SchedulerKind::Maglev);
    let mut p = OwnedPacket::new(&frame(0));
    let mut k = 0;
    // What the harness itself costs: restoring the frame between iterations.
    let harness: Vec<Vec<u8>> = (0..1000).map(frame).collect();
    g.bench_function("harness_only", |b| {
        b.iter(|| {
            p.reset_from(&harness[k]);
            k = (k + 1) % harness.len();
            black_box(p.data()[0])
        })
    });
    let mut two = [OwnedPacket::new(&frame(0)), OwnedPacket::new(&frame(0))];
    for flows in [1_000u32, 1_000_000] {
        // Built on first use, so that a filtered run does not build the large table.
        let mut state: Option<(WorkerState, Vec<Vec<u8>>)> = None;
        g.bench_function(BenchmarkId::from_parameter(flows), |b| {
            let (w, probe) = state.get_or_insert_with(|| established_setup(flows));
            b.iter(|| {
                p.reset_from(&probe[k % probe.len()]);
                k += 1;
                black_box(process(&mut p, 0, &snap, w, 2))
            })
        });
        // The same, each frame restored one iteration ahead (into one of two buffers):
        // `process` then reads a frame written earlier, as in a worker, where the PMD wrote it
        // long before, and not one whose copy is still on its way from the store buffer.
        g.bench_function(BenchmarkId::new("ahead", flows), |b| {
            let (w, probe) = state.get_or_insert_with(|| established_setup(flows));
            b.iter(|| {
                let [x, y] = &mut two;
                let (cur, next) = if k % 2 == 0 { (x, y) } else { (y, x) };
                k += 1;
                next.reset_from(&probe[k % probe.len()]);
                black_box(process(cur, 0, &snap, w, 2))
            })
        });
    }
    g.finish();
}

/// An 80-byte IPv6 UDP frame from client number `i` to the VIP.
fn frame_v6(i: u32) -> Vec<u8> {
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, (i >> 16) as u16, i as u16);
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let mut f = OUR_MAC.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0xfe, 0x86, 0xdd]);
    let mut udp = 1024u16.to_be_bytes().to_vec();
    udp.extend_from_slice(&80u16.to_be_bytes());
    udp.extend_from_slice(&26u16.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&[0x61; 18]);
    let c = checksum::transport(checksum::pseudo_v6(src, vip, 17, 26), &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 26, 17, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&udp);
    f
}

/// Established IPv6 NAT at 1k flows, each frame restored one call ahead: the general path.
fn established_v6(c: &mut Criterion) {
    let mut g = c.benchmark_group("established_nat_v6");
    g.throughput(Throughput::Elements(1));
    let snap = snapshot_of(SchedulerKind::Maglev, true);
    let mut w = WorkerState::new(0, 2048, 16, 64, FlowTimeouts::default());
    let probe: Vec<Vec<u8>> = (0..1000).map(frame_v6).collect();
    let mut two = [OwnedPacket::new(&probe[0]), OwnedPacket::new(&probe[0])];
    for f in &probe {
        two[0].reset_from(f);
        assert!(matches!(
            process(&mut two[0], 0, &snap, &mut w, 1),
            Action::Forward { .. }
        ));
    }
    let mut k = 0;
    g.bench_function("ahead/1000", |b| {
        b.iter(|| {
            let [x, y] = &mut two;
            let (cur, next) = if k % 2 == 0 { (x, y) } else { (y, x) };
            k += 1;
            next.reset_from(&probe[k % probe.len()]);
            black_box(process(cur, 0, &snap, &mut w, 2))
        })
    });
    g.finish();
}

/// Packets a worker takes from a queue at a time (`[dpdk] burst` default).
const BURST: usize = 32;

/// The same packets as `established`, the way a worker runs them: a burst of 32 frames is
/// copied in (as the PMD does on receive), warmed when the table is larger than the caches (as
/// the worker does), then processed one after the other. Per packet: the burst's time / 32.
fn established_burst(c: &mut Criterion) {
    let mut g = c.benchmark_group("established_nat_burst32");
    g.throughput(Throughput::Elements(BURST as u64));
    let snap = snapshot(SchedulerKind::Maglev);
    let mut pkts: Vec<OwnedPacket> = (0..BURST).map(|_| OwnedPacket::new(&frame(0))).collect();
    let mut hints = [None; MAX_BURST];
    let mut k = 0;
    for flows in [1_000u32, 1_000_000] {
        let mut state: Option<(WorkerState, Vec<Vec<u8>>)> = None;
        g.bench_function(BenchmarkId::from_parameter(flows), |b| {
            let (w, probe) = state.get_or_insert_with(|| established_setup(flows));
            b.iter(|| {
                for p in pkts.iter_mut() {
                    p.reset_from(&probe[k % probe.len()]);
                    k += 1;
                }
                let warmed = if w.flows.touched_bytes() > WARM_ABOVE_BYTES {
                    warm_burst(pkts.iter().map(|p| p.data()), &snap, w, &mut hints)
                } else {
                    0
                };
                for (i, p) in pkts.iter_mut().enumerate() {
                    let hint = if i < warmed { hints[i] } else { None };
                    black_box(process_hinted(p, 0, &snap, w, 2, hint));
                }
            })
        });
    }
    g.finish();
}

const FRAME_LEN: usize = 60;
const NEW_FLOW_FRAMES: usize = 1 << 20;

fn new_flows(c: &mut Criterion) {
    let ring: Vec<u8> = (0..NEW_FLOW_FRAMES as u32).flat_map(frame).collect();
    let mut g = c.benchmark_group("new_flow_nat");
    g.throughput(Throughput::Elements(1));
    for (name, sched) in [
        ("maglev", SchedulerKind::Maglev),
        ("wrr", SchedulerKind::WeightedRoundRobin),
        ("wlc", SchedulerKind::WeightedLeastConnection),
    ] {
        let snap = snapshot(sched);
        // A small table, always full: every packet is a new flow that evicts the oldest.
        let mut w = WorkerState::new(0, 65536, 16, 64, FlowTimeouts::default());
        let mut p = OwnedPacket::new(&frame(0));
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                // 1M distinct flows through a 64k table: every packet misses
                i = (i + 1) % NEW_FLOW_FRAMES;
                p.reset_from(&ring[i * FRAME_LEN..(i + 1) * FRAME_LEN]);
                black_box(process(&mut p, 0, &snap, &mut w, 1))
            })
        });
    }
    g.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build_m65537");
    g.sample_size(20);
    for n in [8usize, 100, 1000] {
        let ids: Vec<String> = (0..n).map(|i| format!("backend-{i}")).collect();
        let backends: Vec<(&str, u32)> = ids.iter().map(|s| (s.as_str(), 1)).collect();
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(MaglevTable::build(&backends, 65537)))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    established,
    established_v6,
    established_burst,
    new_flows,
    maglev_build
);
/// The backend's UDP reply (from port 8080) to each NAT flow of `w`: a 64-byte frame as
/// [`frame`] builds, the other way.
fn reply_frames(w: &WorkerState) -> Vec<Vec<u8>> {
    let v4 = |a: &[u8; 16]| Ipv4Addr::new(a[12], a[13], a[14], a[15]);
    w.flows
        .iter()
        .map(|f| {
            let (client, backend) = (v4(&f.key.client), v4(&w.flows.endpoint(f.backend).addr));
            let mut x = frame(0);
            x[6..12].copy_from_slice(&[2, 0, 0, 0, 1, f.backend.0 as u8]);
            let ip = &mut x[14..34];
            ip[12..16].copy_from_slice(&backend.octets());
            ip[16..20].copy_from_slice(&client.octets());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::ipv4_header(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let udp = &mut x[34..];
            udp[0..2].copy_from_slice(&8080u16.to_be_bytes());
            udp[2..4].copy_from_slice(&f.key.client_port.to_be_bytes());
            udp[6..8].copy_from_slice(&[0, 0]);
            let c = checksum::transport(checksum::pseudo_v4(backend, client, 17, 26), udp);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            x
        })
        .collect()
}

/// The counted loop: `n` packets of `frames`, each restored, then processed (or only restored,
/// for the harness's own share). Run under callgrind with `--toggle-collect='*counted*'`, the
/// instructions it collects / n are a packet's (scripts/instructions).
#[inline(never)]
fn counted(n: usize, frames: &[Vec<u8>], snap: &Snapshot, w: &mut WorkerState, process_too: bool) {
    let mut p = OwnedPacket::new(&frames[0]);
    for i in 0..n {
        p.reset_from(&frames[i % frames.len()]);
        if process_too {
            black_box(process(&mut p, 0, snap, w, 2));
        }
    }
}

/// `L4LB_COUNT_PACKETS=n L4LB_COUNT_CASE=case`: sets the case up, runs [`counted`] once over
/// n packets, and prints what each one did.
fn count_instructions(n: usize, case: &str) {
    let v4 = |mode| snapshot_in(SchedulerKind::Maglev, false, mode);
    let (snap, (mut w, frames), process_too) = match case {
        "restore" => {
            let s = v4(ForwardingMode::Nat);
            (
                s,
                (
                    WorkerState::new(0, 64, 16, 64, FlowTimeouts::default()),
                    vec![frame(0)],
                ),
                false,
            )
        }
        "nat4" => {
            let s = v4(ForwardingMode::Nat);
            let e = established_setup_in(1000, &s);
            (s, e, true)
        }
        "dr4" => {
            let s = v4(ForwardingMode::DirectRouting);
            let e = established_setup_in(1000, &s);
            (s, e, true)
        }
        "tun4" => {
            let s = v4(ForwardingMode::Tunnel);
            let e = established_setup_in(1000, &s);
            (s, e, true)
        }
        "reply4" => {
            let s = v4(ForwardingMode::Nat);
            let (w, _) = established_setup_in(1000, &s);
            let replies = reply_frames(&w);
            (s, (w, replies), true)
        }
        "nat6" => {
            let s = snapshot_of(SchedulerKind::Maglev, true);
            let mut w = WorkerState::new(0, 2048, 16, 64, FlowTimeouts::default());
            let frames: Vec<Vec<u8>> = (0..1000).map(frame_v6).collect();
            for f in &frames {
                let mut p = OwnedPacket::new(f);
                process(&mut p, 0, &s, &mut w, 1);
            }
            (s, (w, frames), true)
        }
        "new4" => {
            // A full table of 1024 flows and 64k others: every packet is new and evicts.
            let s = v4(ForwardingMode::Nat);
            let mut w = WorkerState::new(0, 1024, 16, 64, FlowTimeouts::default());
            let frames: Vec<Vec<u8>> = (0..65536).map(frame).collect();
            for f in &frames[..2048] {
                let mut p = OwnedPacket::new(f);
                process(&mut p, 0, &s, &mut w, 1);
            }
            (s, (w, frames), true)
        }
        other => panic!("L4LB_COUNT_CASE {other:?}: restore nat4 dr4 tun4 reply4 nat6 new4"),
    };
    let before = w.flows.stats();
    counted(n, &frames, &snap, &mut w, process_too);
    println!(
        "{case}: {n} packets, flows {} (created {} during the count)",
        w.flows.len(),
        w.flows.stats().created - before.created
    );
}

fn main() {
    if let Ok(n) = std::env::var("L4LB_COUNT_PACKETS") {
        let case = std::env::var("L4LB_COUNT_CASE").unwrap_or_else(|_| "nat4".into());
        count_instructions(n.parse().expect("L4LB_COUNT_PACKETS: a number"), &case);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
