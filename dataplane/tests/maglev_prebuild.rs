//! The Maglev prebuilder in a process of its own: the tables it keeps and the requests it
//! waits on are process-wide, and the library's other tests ask for tables all the time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::sched::{MaglevTable, prebuild_loop};

#[test]
fn the_prebuilder_prepares_each_backend_out_once_the_changes_pause() {
    let ids: Vec<String> = (0..4).map(|i| format!("loop-{i}")).collect();
    let all: Vec<(&str, u32)> = ids.iter().map(|i| (i.as_str(), 3)).collect();
    let without = |out: usize| -> Vec<(&str, u32)> {
        let mut l = all.clone();
        l.remove(out);
        l
    };
    let kept = |o| MaglevTable::is_kept(&without(o), 4093);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| prebuild_loop(Duration::from_millis(300), &stop));
        // Asked for every 5 ms: never quiet for 300, so nothing is prepared.
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(600) {
            MaglevTable::build_recent(&all, 4093);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!(0..4).any(kept), "prepared during a burst of changes");
        // Then quiet: each of the four backends out.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(0..4).all(kept) {
            assert!(
                Instant::now() < deadline,
                "not prepared within 10 s of quiet"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
    });
    for o in 0..4 {
        let t = MaglevTable::build_recent(&without(o), 4093);
        assert!(
            t == MaglevTable::build(&without(o), 4093),
            "backend {o} out"
        );
    }
    // Only one backend out is prepared, and only for the tables asked for.
    let two: Vec<(&str, u32)> = vec![("loop-1", 3), ("loop-3", 3)];
    assert!(!MaglevTable::is_kept(&two, 4093), "two out");
}
