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
