//! The appliance boots on virtual devices, receives, stops cleanly on a signal and reports
//! exact counts; DPDK failures exit 1 with DPDK's reason.

mod common;

use std::time::Duration;

use common::{Appliance, eal_args, file_prefix, packet, port_counter, run_pcap, wait_until};

const CONFIG: &str = r#"
[dpdk]
idle_sleep_us = 100
rx_desc = 256
tx_desc = 256
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24"]
"#;

/// K packets of assorted sizes go in through net_pcap; after SIGTERM l4lb exits 0 and the
/// printed counters are exactly K packets and their bytes.
fn pcap_in_sigterm_out(test: &str, lcores: &str) {
    const K: usize = 1000;
    let frames: Vec<Vec<u8>> = (0..K)
        .map(|i| {
            packet::udp4(
                [198, 18, 0, 2],
                [198, 18, 0, 100],
                1024 + i as u16,
                80,
                i % 200,
            )
        })
        .collect();
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let (done, sent) = run_pcap(test, CONFIG, &frames, lcores);
    assert_eq!(
        port_counter(&done.stdout, 0, "rx-packets"),
        K as u64,
        "{}",
        done.stdout
    );
    assert_eq!(port_counter(&done.stdout, 0, "rx-bytes"), bytes);
    assert_eq!(port_counter(&done.stdout, 0, "rx-missed"), 0);
    assert!(
        done.stdout.starts_with("l4lb: stopped after "),
        "{}",
        done.stdout
    );
    // No service is configured, so 198.18.0.100 is no VIP: every packet is a counted drop.
    assert!(
        done.stdout.contains(&format!("drops: not_for_us={K}\n")),
        "{}",
        done.stdout
    );
    // The port was closed, so net_pcap completed its output file: only the gratuitous ARP
    // for the interface's address is in it.
    assert!(sent.frames.is_empty());
    assert_eq!(sent.announcements.len(), 1);
    assert_eq!(port_counter(&done.stdout, 0, "tx-packets"), 1);
}

#[test]
fn pcap_packets_are_counted_exactly_on_the_main_lcore() {
    pcap_in_sigterm_out("main", "0");
}

#[test]
fn pcap_packets_are_counted_exactly_on_a_worker_lcore() {
    pcap_in_sigterm_out("worker", "0-1");
}

#[test]
fn sigint_stops_as_cleanly_as_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("l4lb.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let prefix = file_prefix("sigint");
    let app = Appliance::start(
        &config,
        &prefix,
        &eal_args(&prefix, "0", &["--vdev=net_null0,no-rx=1".into()]),
    );
    assert!(
        wait_until(Duration::from_secs(30), || app
            .telemetry("/ethdev/list")
            .is_some()),
        "telemetry never came up"
    );
    let done = app.signal_and_wait("INT", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "stderr:\n{}", done.stderr);
    assert_eq!(port_counter(&done.stdout, 0, "rx-packets"), 0);
}

fn failing_start(test: &str, vdevs: &[String], extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("l4lb.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let prefix = file_prefix(test);
    let mut eal = eal_args(&prefix, "0", vdevs);
    eal.extend(extra.iter().map(|s| s.to_string()));
    let app = Appliance::start(&config, &prefix, &eal);
    let done = app.wait(Duration::from_secs(30));
    (done.status.code().unwrap_or(-1), done.stderr)
}

#[test]
fn a_bad_eal_argument_exits_1_with_dpdks_reason() {
    let (code, stderr) = failing_start("badarg", &[], &["--no-such-eal-option"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("l4lb: rte_eal_init: Invalid argument (errno 22)"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unknown_vdev_exits_1_with_dpdks_reason() {
    let (code, stderr) = failing_start("novdev", &["--vdev=net_nosuchdriver0".into()], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("l4lb: rte_eal_init: No such device (errno 19)"),
        "{stderr}"
    );
}

#[test]
fn a_configured_port_that_eal_did_not_find_exits_1() {
    let (code, stderr) = failing_start("noport", &[], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr
            .contains("l4lb: interfaces[0].port: DPDK port 0 does not exist; EAL found 0 port(s)"),
        "{stderr}"
    );
}
