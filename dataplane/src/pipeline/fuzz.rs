//! Fuzzing `process`: arbitrary bytes, and valid frames with random bytes changed and random
//! lengths, through a snapshot with every mode, both families and two workers. No input may
//! panic, and what comes out must still be a frame we could send (or a drop with a reason).
//! CI runs 100,000 cases of each (`FUZZ_CASES` changes that).

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use super::fast::{Fast, established_v4, established_v6};
use super::tests::{GRE_PORT, GUE_PORT, config_with_tunnels, seed_frames, tunnel_seed_frames};
use super::*;
use crate::flow::FlowTimeouts;
use crate::packet::OwnedPacket;
use crate::sched::ConnSource;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn cfg() -> Config {
    Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Built once: building per case would be most of the time spent.
fn snapshot() -> &'static Snapshot {
    static SNAP: std::sync::OnceLock<Snapshot> = std::sync::OnceLock::new();
    SNAP.get_or_init(|| Snapshot::build(config_with_tunnels(2), 1))
}

fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| [seed_frames(), tunnel_seed_frames()].concat())
}

fn check(snap: &Snapshot, w: &mut WorkerState, frame: &[u8], now: u32) {
    // Warming reads any frame without panicking and changes nothing.
    let before = (w.flows.len(), w.flows.stats());
    let mut hints = [None; MAX_BURST];
    super::warm_burst([frame].into_iter(), snap, w, &mut hints);
    assert_eq!((w.flows.len(), w.flows.stats()), before);
    let mut p = OwnedPacket::new(frame);
    match process(&mut p, 0, snap, w, now) {
        Action::Forward { interface, .. } => assert!((interface as usize) < snap.interfaces.len()),
        Action::Redirect(o) => assert!(o < snap.workers && o != w.index),
        Action::Kernel => assert!(snap.interfaces[0].kernel),
        Action::Reply | Action::Consumed | Action::Drop(_) => {}
    }
    assert!(p.data().len() >= 14.min(frame.len()));
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..1600), now in any::<u32>()) {
        let mut w = WorkerState::new(0, 64, 64, 256, FlowTimeouts::default());
        check(snapshot(), &mut w, &frame, now);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        worker in 0u16..2,
    ) {
        let snap = snapshot();
        let mut w = WorkerState::new(worker, 64, 64, 256, FlowTimeouts::default());
        let mut frame = which.get(seeds()).clone();
        for (at, v) in flips {
            let i = at.index(frame.len());
            frame[i] = v;
        }
        if truncate {
            frame.truncate(cut.index(frame.len() + 1));
        }
        // twice: the second time through, the first may have created a flow
        check(snap, &mut w, &frame, 10);
        check(snap, &mut w, &frame, 11);
    }
}

/// Everything of a worker's state a packet can change, for comparing two workers.
fn observable(w: &WorkerState) -> (usize, crate::flow::FlowTableStats, Vec<u64>) {
    let mut counters = Vec::new();
    for id in 0..16u32 {
        let c = w.flows.conns(crate::service::BackendId(id));
        counters.extend([u64::from(c.active), u64::from(c.inactive)]);
        if let Some(t) = w.traffic.backends.get(id as usize) {
            counters.extend([
                t.packets_in.get(),
                t.bytes_in.get(),
                t.packets_out.get(),
                t.bytes_out.get(),
                t.new_flows.get(),
            ]);
        }
        if let Some(t) = w.traffic.services.get(id as usize) {
            counters.extend([
                t.packets_in.get(),
                t.bytes_in.get(),
                t.packets_out.get(),
                t.bytes_out.get(),
            ]);
        }
    }
    (w.flows.len(), w.flows.stats(), counters)
}

/// The fast path of `process` must give what the general path gives: the same action, the same
/// bytes, the same flow table and counters, whatever the frame and whatever came before.
fn same_as_general(fast: &mut WorkerState, general: &mut WorkerState, frame: &[u8], now: u32) {
    let snap = snapshot();
    let mut a = OwnedPacket::new(frame);
    let mut b = OwnedPacket::new(frame);
    // As a worker that warms its bursts processes it: with the hash the warm pass read.
    let hint = super::fast::warm(frame, snap, fast);
    let got = super::process_hinted(&mut a, 0, snap, fast, now, hint);
    let want = super::process_general(&mut b, 0, snap, general, now);
    assert_eq!(got, want, "action for {frame:02x?}");
    assert_eq!(a.data(), b.data(), "bytes for {frame:02x?}");
    assert_eq!(
        observable(fast),
        observable(general),
        "state after {frame:02x?}"
    );
}

#[test]
fn fast_path_equals_general_path_on_every_seed() {
    // Both workers: a NAT flow lives on the worker that owns its client.
    for index in 0..2 {
        let mut fast = WorkerState::new(index, 64, 64, 256, FlowTimeouts::default());
        let mut general = WorkerState::new(index, 64, 64, 256, FlowTimeouts::default());
        // Rounds: new flows, then established ones, then after most timeouts (expiry on lookup).
        for now in [10, 11, 12, 500, 501, 5000] {
            for f in seeds() {
                same_as_general(&mut fast, &mut general, f, now);
            }
        }
        assert!(fast.flows.stats().created > 0, "the seeds create flows");
    }
    // And the fast paths did take some of them, in every mode (else this test would prove
    // nothing): the NAT, DR and TUN services' ports (TCP 80-82, UDP 1080-1082; TUN with IPIP,
    // GUE and GRE at 82-84 over IPv4), in both families, and the NAT replies of both (from
    // port 8080, TCP and UDP).
    let mut taken = std::collections::BTreeSet::new();
    for index in 0..2 {
        let mut probe = WorkerState::new(index, 64, 64, 256, FlowTimeouts::default());
        for now in [20, 21] {
            for f in seeds() {
                let mut p = OwnedPacket::new(f);
                let fast = match established_v4(&mut p, 0, snapshot(), &mut probe, now, None) {
                    Err(Fast::Other) => {
                        established_v6(&mut p, 0, snapshot(), &mut probe, now, None)
                    }
                    f => f,
                };
                if fast.is_ok() {
                    let v6 = f[12..14] == [0x86, 0xdd];
                    let l4 = if v6 { 54 } else { 34 };
                    let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
                    taken.insert(match (v6, port(l4)) {
                        (false, 8080) => ("reply v4", f[23], 8080),
                        (false, _) => ("to a VIP v4", 0, port(l4 + 2)),
                        (true, 8080) => ("reply v6", f[20], 8080),
                        (true, _) => ("to a VIP v6", f[20], port(l4 + 2)),
                    });
                } else {
                    super::process_general(&mut p, 0, snapshot(), &mut probe, now);
                }
            }
        }
    }
    let mut want = vec![
        ("reply v4", 6, 8080),
        ("reply v4", 17, 8080),
        ("reply v6", 6, 8080),
        ("reply v6", 17, 8080),
    ];
    for port in [80, 81, 82, GUE_PORT, GRE_PORT] {
        want.extend([("to a VIP v4", 0, port), ("to a VIP v4", 0, port + 1000)]);
    }
    for port in [80, 81, 82] {
        want.extend([("to a VIP v6", 6, port), ("to a VIP v6", 17, port + 1000)]);
    }
    want.sort();
    assert_eq!(
        taken.into_iter().collect::<Vec<_>>(),
        want,
        "VIP ports and reply sources the fast path took"
    );
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn fast_path_equals_general_path(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        times in proptest::collection::vec(0u32..400, 1..4),
        worker in 0u16..2,
    ) {
        let mut frame = which.get(seeds()).clone();
        let mut fast = WorkerState::new(worker, 64, 64, 256, FlowTimeouts::default());
        let mut general = WorkerState::new(worker, 64, 64, 256, FlowTimeouts::default());
        // The unchanged frame first (it may create the flow), then the changed one.
        same_as_general(&mut fast, &mut general, &frame, 10);
        for (at, v) in flips {
            let i = at.index(frame.len());
            frame[i] = v;
        }
        let mut now = 10;
        for t in times {
            now += t;
            same_as_general(&mut fast, &mut general, &frame, now);
        }
    }
}
