//! What l4lb's integration tests and `l4lb-bench` share: DPDK processes (the appliance,
//! dpdk-testpmd) run under a guard that never leaves a process or an EAL runtime folder
//! behind, pcap files and pipes (what net_pcap reads and writes), and DPDK's telemetry.
#![deny(unsafe_code)]

pub mod lab;
pub mod netns;
pub mod pcap;
mod process;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use process::{Finished, Process};

/// Where EAL keeps the runtime files of the process started with `--file-prefix=prefix`.
pub fn runtime_dir(prefix: &str) -> PathBuf {
    dpdk_rs::telemetry::runtime_dir(prefix)
}

/// One request to DPDK's telemetry socket of the process started with `prefix`; None until it
/// answers.
pub fn telemetry(prefix: &str, command: &str) -> Option<serde_json::Value> {
    serde_json::from_slice(&dpdk_rs::telemetry::query(prefix, command).ok()?).ok()
}

/// Polls `f` every 10 ms until it is true or `timeout` passes; returns the last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Keeps the calling thread on one CPU (a harness thread that must not land on a CPU where a
/// worker busy-polls: there it waits out the worker's time slice, milliseconds, before it runs).
pub fn pin_to_cpu(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}
