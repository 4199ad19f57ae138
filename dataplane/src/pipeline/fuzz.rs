//! Fuzzing `process`: arbitrary bytes, and valid frames with random bytes changed and random
//! lengths, through a snapshot with every mode, both families and two workers. No input may
//! panic, and what comes out must still be a frame we could send (or a drop with a reason).
//! CI runs 100,000 cases of each (`FUZZ_CASES` changes that).

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use super::tests::{config, seed_frames};
use super::*;
use crate::packet::OwnedPacket;

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
    SNAP.get_or_init(|| Snapshot::build(config(2), 1))
}

fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(seed_frames)
}

fn check(snap: &Snapshot, w: &mut WorkerState, frame: &[u8], now: u32) {
    // Warming reads any frame without panicking and changes nothing.
    let before = (w.flows.len(), w.flows.stats());
    super::warm(frame, snap, w);
    assert_eq!((w.flows.len(), w.flows.stats()), before);
    let mut p = OwnedPacket::new(frame);
    match process(&mut p, 0, snap, w, now) {
        Action::Forward { interface, .. } => assert!((interface as usize) < snap.interfaces.len()),
        Action::Redirect(o) => assert!(o < snap.workers && o != w.index),
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
