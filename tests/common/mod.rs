//! What the integration tests share: running the real binary under a guard that never leaves a
//! process or an EAL runtime folder behind, pcap files, packets, and DPDK telemetry.
#![allow(dead_code)] // each test binary uses a different part

pub mod lab;
pub mod packet;

/// pcap files and pipes (`harness::pcap`); `write` fails the test if it cannot write.
pub mod pcap {
    pub use harness::pcap::*;

    pub fn write(path: &std::path::Path, frames: &[Vec<u8>]) {
        harness::pcap::write(path, frames).expect("write pcap");
    }
}

use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub use harness::{Finished, Process, wait_until};

pub fn l4lb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_l4lb"))
}

/// A file prefix no other test (or test run) uses: EAL processes must not share one.
pub fn file_prefix(test: &str) -> String {
    format!("l4lb-t-{test}-{}", std::process::id())
}

/// EAL arguments for a test: no hugepages, no PCI, its own prefix, quiet EAL, then `vdevs`.
/// `lcores` is a `-l` list ("0", "0-1") or a whole `--lcores=...` mapping.
pub fn eal_args(prefix: &str, lcores: &str, vdevs: &[String]) -> Vec<String> {
    let mut a: Vec<String> = if lcores.starts_with("--lcores=") {
        vec![lcores.to_string()]
    } else {
        vec!["-l".to_string(), lcores.to_string()]
    };
    a.extend(
        [
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--log-level=*:warning",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a.push(format!("--file-prefix={prefix}"));
    a.extend(vdevs.iter().cloned());
    a
}

/// A running l4lb (a `harness::Process`): dropping it kills the process if it still runs and
/// removes its EAL folder.
pub struct Appliance {
    process: Process,
}

impl Appliance {
    /// Starts it with extra environment variables.
    pub fn start_with_env(
        config: &Path,
        prefix: &str,
        eal: &[String],
        env: &[(&str, &str)],
    ) -> Appliance {
        Appliance::spawn(l4lb(), config, prefix, eal, env)
    }

    /// Starts it inside network namespace `ns` (`ip netns exec` becomes l4lb: same pid).
    pub fn start_in(
        ns: &harness::netns::Namespace,
        config: &Path,
        prefix: &str,
        eal: &[String],
    ) -> Appliance {
        Appliance::spawn(
            ns.command(env!("CARGO_BIN_EXE_l4lb")),
            config,
            prefix,
            eal,
            &[],
        )
    }

    fn spawn(
        mut cmd: Command,
        config: &Path,
        prefix: &str,
        eal: &[String],
        env: &[(&str, &str)],
    ) -> Appliance {
        cmd.arg("--config")
            .arg(config)
            .arg("--")
            .args(eal)
            .env_remove("RUST_LOG")
            // Tests run in parallel: each API on a port of its own (see api_base).
            .env("L4LB_API__LISTEN", "127.0.0.1:0")
            .envs(env.iter().map(|(k, v)| (k, v)));
        Appliance {
            process: Process::spawn(cmd, prefix).expect("start l4lb"),
        }
    }

    pub fn start(config: &Path, prefix: &str, eal: &[String]) -> Appliance {
        Appliance::start_with_env(config, prefix, eal, &[])
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The REST API's base URL (`http://127.0.0.1:PORT`), from its log line; waits for it.
    pub fn api_base(&self, timeout: Duration) -> String {
        let marker = "REST API listening on ";
        let mut base = None;
        wait_until(timeout, || {
            base = self.log().lines().find_map(|l| {
                l.split_once(marker)
                    .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_string())
            });
            base.is_some()
        });
        base.unwrap_or_else(|| panic!("no API address logged within {timeout:?}:\n{}", self.log()))
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Sends `signal` (e.g. "HUP") and returns at once.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal).expect("kill");
    }

    /// Sends `signal` (e.g. "TERM") and waits up to `timeout` for the exit.
    pub fn signal_and_wait(self, signal: &str, timeout: Duration) -> Finished {
        self.signal(signal);
        self.wait(timeout)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait(self, timeout: Duration) -> Finished {
        self.process
            .wait(timeout)
            .unwrap_or_else(|e| panic!("l4lb: {e}"))
    }

    /// Asks the running process's DPDK telemetry socket; None until it is up.
    pub fn telemetry(&self, command: &str) -> Option<serde_json::Value> {
        self.process.telemetry(command)
    }
}

/// Reads `key=value` from the final counter line of port `port` that l4lb prints at exit.
pub fn port_counter(stdout: &str, port: u16, key: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("port {port} (")))
        .unwrap_or_else(|| panic!("no counter line for port {port} in:\n{stdout}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .expect("a number")
}

/// net_pcap0's MAC address (DPDK-NOTES.md): frames for the appliance go to it.
pub const PCAP_MAC: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x00];
/// The gateway the tests' clients are behind.
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

impl Appliance {
    /// Waits until DPDK port `port` has received at least `count` packets (its telemetry says
    /// so).
    pub fn wait_rx(&self, port: u16, count: u64, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.telemetry(&format!("/ethdev/stats,{port}"))
                .and_then(|v| v["/ethdev/stats"]["ipackets"].as_u64())
                .is_some_and(|n| n >= count)
        })
    }
}

/// A frame l4lb sends on its own to announce an address: a gratuitous ARP (sender and target
/// the same address) or an unsolicited neighbour advertisement (to all nodes).
pub fn is_announcement(f: &[u8]) -> bool {
    let arp =
        f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] && f[28..32] == f[38..42];
    let all_nodes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let na = f.len() >= 62
        && f[12..14] == [0x86, 0xdd]
        && f[20] == 58
        && f[54] == 136
        && f[38..54] == all_nodes;
    arp || na
}

/// A request l4lb sends on its own to resolve a next hop: an ARP request (sender and target
/// differ) or a neighbour solicitation.
pub fn is_request(f: &[u8]) -> bool {
    let arp =
        f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] && f[28..32] != f[38..42];
    let ns = f.len() >= 62 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 135;
    arp || ns
}

/// What the appliance sent, its announcements and neighbour requests apart.
pub struct Sent {
    pub frames: Vec<Vec<u8>>,
    pub announcements: Vec<Vec<u8>>,
    pub requests: Vec<Vec<u8>>,
}

pub fn split_announcements(frames: Vec<Vec<u8>>) -> Sent {
    let (announcements, frames): (Vec<_>, Vec<_>) =
        frames.into_iter().partition(|f| is_announcement(f));
    let (requests, frames) = frames.into_iter().partition(|f| is_request(f));
    Sent {
        frames,
        announcements,
        requests,
    }
}

/// Runs l4lb with `config` on lcores `lcores`, port 0 a net_pcap reading `frames` once; waits
/// until all are received, stops it with SIGTERM, requires exit 0, and returns what it printed
/// and the frames it sent.
pub fn run_pcap(test: &str, config: &str, frames: &[Vec<u8>], lcores: &str) -> (Finished, Sent) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("l4lb.toml");
    std::fs::write(&cfg, config).unwrap();
    let (input, output) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    pcap::write(&input, frames);
    let prefix = file_prefix(test);
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let app = Appliance::start(&cfg, &prefix, &eal_args(&prefix, lcores, &[vdev]));
    let k = frames.len() as u64;
    assert!(
        app.wait_rx(0, k, Duration::from_secs(60)),
        "the PMD never received all {k} packets"
    );
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "stderr:\n{}", done.stderr);
    (done, split_announcements(pcap::read(&output)))
}
