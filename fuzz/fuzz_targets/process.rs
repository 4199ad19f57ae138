//! The packet path: a burst of frames (the input split at each `FRAME_BREAK`) warmed with
//! `warm_burst`, then each through `process_hinted` with what it hashed, on one worker of
//! two, with a clock that moves on between frames, through a snapshot with NAT, DR and TUN
//! services of both families. No input may panic; what comes out is a frame or a drop with a
//! reason.

#![no_main]

use std::sync::OnceLock;

use controlplane::config;
use controlplane::publish::{Down, Ids, Limits, snapshot_config};
use dataplane::addr::MacAddr;
use dataplane::packet::{OwnedPacket, PacketBuf};
use dataplane::pipeline::{Action, MAX_BURST, WorkerState, process_hinted, warm_burst};
use dataplane::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

/// Splits the input into frames (four bytes no real header starts with).
const FRAME_BREAK: &[u8] = b"\xffFB\xff";

const CONFIG: &str = include_str!("../config.toml");

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let model = config::load_str("fuzz", CONFIG, []).expect("fuzz/config.toml is valid");
        let macs: Vec<MacAddr> = (0..model.interfaces.len())
            .map(|i| MacAddr([0x02, 0x70, 0x63, 0x61, 0x70, i as u8]))
            .collect();
        let mut ids = Ids::new(Limits {
            services: 16,
            backends: 64,
        });
        let (cfg, _) =
            snapshot_config(&model, &[], &[], &Down::default(), &macs, 2, &mut ids).expect("ids");
        Snapshot::build(cfg, 1)
    })
}

fuzz_target!(|data: &[u8]| {
    let snap = snapshot();
    let mut w = WorkerState::new(0, 64, 16, 64, snap.timeouts);
    let frames: Vec<&[u8]> = split(data).collect();
    let mut hints = [None; MAX_BURST];
    let warmed = warm_burst(frames.iter().copied(), snap, &w, &mut hints);
    let mut now = 1_000;
    for (i, frame) in frames.into_iter().enumerate() {
        let mut p = OwnedPacket::new(frame);
        let ingress = (i % snap.interfaces.len().max(1)) as u16;
        let hint = if i < warmed { hints[i] } else { None };
        match process_hinted(&mut p, ingress, snap, &mut w, now, hint) {
            Action::Forward { interface } => {
                assert!(usize::from(interface) < snap.interfaces.len())
            }
            Action::Redirect(o) => assert!(o < snap.workers && o != w.index),
            Action::Kernel => assert!(snap.interfaces.iter().any(|i| i.kernel)),
            Action::Reply | Action::Consumed | Action::Drop(_) => {}
        }
        assert!(p.data().len() >= 14.min(frame.len()));
        // Some frames a second apart, some many timeouts apart.
        now = now.wrapping_add(u32::from(frame.first().copied().unwrap_or(0) & 0x81));
    }
});

fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(FRAME_BREAK.len()).position(|w| w == FRAME_BREAK) {
            Some(at) => {
                rest = Some(&r[at + FRAME_BREAK.len()..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
    .take(64)
}
