//! Live reconfiguration under traffic: while a pcap replays forever, the configuration is
//! reloaded (SIGHUP) thousands of times with backend weights changing. No packet may be lost to
//! a publish, and every flow keeps its backend: the flows are created once and never again.

mod common;

use std::time::{Duration, Instant};

use common::{Appliance, GW_MAC, PCAP_MAC, eal_args, file_prefix, pcap, port_counter, wait_until};
use etherparse::PacketBuilder;

const FLOWS: u16 = 64;
const RELOADS: usize = 2000;

fn config(weight: u32) -> String {
    format!(
        r#"
[dpdk]
rx_desc = 256
tx_desc = 256
flow_capacity = 1024
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24"]
[[interfaces]]
port = 1
addresses = ["198.18.1.1/24"]
[[neighbors]]
address = "198.18.1.10"
mac = "02:00:00:00:01:0a"
[[neighbors]]
address = "198.18.1.11"
mac = "02:00:00:00:01:0b"
[[services]]
id = "dns"
protocol = "udp"
vip = "198.18.0.100"
port = 53
scheduler = "maglev"
maglev_table_size = 251
[[services.backends]]
id = "b1"
address = "198.18.1.10"
weight = {weight}
[[services.backends]]
id = "b2"
address = "198.18.1.11"
weight = 1
"#
    )
}

#[test]
fn thousands_of_reloads_under_traffic_lose_no_packet_and_move_no_flow() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("l4lb.toml");
    std::fs::write(&cfg, config(1)).unwrap();
    let frames: Vec<Vec<u8>> = (0..FLOWS)
        .map(|f| {
            let mut out = Vec::new();
            PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
                .ipv4([198, 19, 0, 50 + f as u8], [198, 18, 0, 100], 64)
                .udp(5000 + f, 53)
                .write(&mut out, b"query")
                .unwrap();
            out
        })
        .collect();
    let input = dir.path().join("in.pcap");
    pcap::write(&input, &frames);
    let prefix = file_prefix("publish");
    let vdevs = [
        format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", input.display()),
        "--vdev=net_null0,no-rx=1".to_string(),
    ];
    // The worker on its own lcore (CPU 1); the control thread and main lcore share CPU 0.
    let app = Appliance::start(
        &cfg,
        &prefix,
        &eal_args(&prefix, "--lcores=0@0,1@1", &vdevs),
    );
    assert!(
        wait_until(Duration::from_secs(30), || app
            .telemetry("/ethdev/stats,1")
            .and_then(|v| v["/ethdev/stats"]["opackets"].as_u64())
            .is_some_and(|n| n > 10_000)),
        "traffic never flowed"
    );
    let started = Instant::now();
    let tmp = dir.path().join("l4lb.toml.new");
    for i in 0..RELOADS {
        // Written whole and renamed, as an operator's tooling would.
        std::fs::write(&tmp, config(1 + (i % 3) as u32)).unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
        let st = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(app.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
        std::thread::sleep(Duration::from_micros(1500));
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "stderr:\n{}", done.stderr);

    let line = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("configuration: "))
        .unwrap_or_else(|| panic!("no configuration line:\n{}", done.stdout));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    let (reloads, unchanged) = (field("reloads"), field("reloads-unchanged"));
    assert!(
        reloads >= 500,
        "only {reloads} of {RELOADS} SIGHUPs were reloads (in {took:?}; signals coalesce)"
    );
    assert_eq!(field("reload-failures"), 0, "{}", done.stderr);
    // A reload that read the file it had already applied (two signals for one write) changes
    // nothing and is not a configuration change; every other one is, and publishes.
    assert_eq!(
        field("epoch"),
        1 + reloads - unchanged,
        "every reload that changed something published: {line}"
    );
    assert!(!done.stderr.contains("refused"), "{}", done.stderr);

    let rx = port_counter(&done.stdout, 0, "rx-packets");
    let tx = port_counter(&done.stdout, 1, "tx-packets");
    eprintln!(
        "{reloads} reloads published for {RELOADS} SIGHUPs in {took:?}; {rx} packets through"
    );
    assert!(rx > 100_000, "{rx} packets only");
    // Every packet received was sent, and two announcements (the VIP, the port's address).
    assert_eq!(
        tx,
        rx + 2,
        "every packet received was sent:\n{}",
        done.stdout
    );
    assert_eq!(port_counter(&done.stdout, 1, "tx-dropped"), 0);
    assert!(
        done.stdout.contains("\ndrops:\n"),
        "no drop:\n{}",
        done.stdout
    );
    assert!(
        done.stdout.contains(&format!(
            "flows: created={FLOWS} expired=0 evicted=0 evicted-established=0 flushed=0"
        )),
        "each flow created once, kept through every publish:\n{}",
        done.stdout
    );
}
