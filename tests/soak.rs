//! The soak: traffic without pause (UDP and TCP flows, NAT and DR, a pcap replayed forever into
//! net_null), and meanwhile API churn (weights, backends and services added and removed),
//! SIGHUPs with the neighbours and timeouts changing, and readers of the stats and metrics.
//! Bounded: `SOAK_SECONDS` (300 by default; CI runs that). Resident memory and mbufs in use
//! stay flat, the exit counters add up, and the state file boots the services the churn left.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::pcap;
use common::{Appliance, GW_MAC, PCAP_MAC, eal_args, file_prefix, port_counter};
use etherparse::PacketBuilder;
use serde_json::{Value, json};

const TOKEN: &str = "soak-token";
/// Distinct flows in the replayed traffic, of each protocol.
const FLOWS: u16 = 512;
/// Resident memory may grow this much after the warm-up (allocator noise, the audit trail
/// filling to its 1000 lines).
const RSS_SLACK_KIB: u64 = 24 * 1024;

fn seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// The configuration; `round` alternates the timeouts and whether a second static neighbour
/// is there, and moves a backend's neighbour between two MACs.
fn config(round: u32, state: &Path) -> String {
    let (udp, mac, extra) = match round % 3 {
        0 => (300, "02:00:00:00:01:0a", ""),
        1 => (
            200,
            "02:00:00:00:01:1a",
            "[[neighbors]]\naddress = \"198.18.1.30\"\nmac = \"02:00:00:00:01:30\"\n",
        ),
        _ => (100, "02:00:00:00:01:0a", ""),
    };
    format!(
        r#"
[dpdk]
idle_sleep_us = 0
rx_desc = 512
tx_desc = 512
flow_capacity = 4096
[timeouts]
udp = {udp}
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24"]
[[interfaces]]
port = 1
addresses = ["198.18.1.1/24"]
[[neighbors]]
address = "198.18.1.10"
mac = "{mac}"
[[neighbors]]
address = "198.18.1.11"
mac = "02:00:00:00:01:0b"
[[neighbors]]
address = "198.18.1.12"
mac = "02:00:00:00:01:0c"
{extra}
[api]
token = "{TOKEN}"
state_file = "{state}"
[[services]]
id = "dns"
protocol = "udp"
vip = "198.18.0.100"
port = 53
scheduler = "maglev"
forwarding = "nat"
[[services.backends]]
id = "b0"
address = "198.18.1.10"
[[services.backends]]
id = "b1"
address = "198.18.1.11"
[[services]]
id = "web"
vip = "198.18.0.101"
port = 80
scheduler = "wlc"
forwarding = "dr"
[[services.backends]]
id = "b0"
address = "198.18.1.10"
[[services.backends]]
id = "b1"
address = "198.18.1.11"
"#,
        state = state.display()
    )
}

fn traffic() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for f in 0..FLOWS {
        let client = [198, 19, (f >> 8) as u8, f as u8];
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
            .ipv4(client, [198, 18, 0, 100], 64)
            .udp(10_000 + f, 53)
            .write(&mut udp, b"query")
            .unwrap();
        let mut tcp = Vec::new();
        PacketBuilder::ethernet2(GW_MAC, PCAP_MAC)
            .ipv4(client, [198, 18, 0, 101], 64)
            .tcp(20_000 + f, 80, 1, 64240)
            .ack(1)
            .write(&mut tcp, b"data")
            .unwrap();
        frames.extend([udp, tcp]);
    }
    frames
}

struct Api {
    base: String,
}

impl Api {
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> u16 {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {TOKEN}");
        let r = match (method, body) {
            ("POST", Some(b)) => ureq::post(&url).header("Authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => ureq::patch(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("DELETE", _) => ureq::delete(&url).header("Authorization", &auth).call(),
            _ => ureq::get(&url).call(),
        };
        match r {
            Ok(r) => r.status().as_u16(),
            Err(ureq::Error::StatusCode(s)) => s,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn get(&self, path: &str) -> Value {
        let text = ureq::get(format!("{}{path}", self.base))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// One round of API changes: every call must be answered 2xx (or 503 under a slow worker,
/// which keeps the change). Returns how many changes were made.
fn churn(api: &Api, i: u32) -> u32 {
    let ok = |s: u16, what: &str| assert!((200..300).contains(&s) || s == 503, "{what}: {s}");
    ok(
        api.send(
            "PATCH",
            "/api/v1/services/web/backends/b1",
            Some(json!({"weight": 1 + i % 5})),
        ),
        "weight",
    );
    ok(
        api.send(
            "POST",
            "/api/v1/services/dns/backends",
            Some(json!({"id": "extra", "address": "198.18.1.12", "weight": 2})),
        ),
        "add backend",
    );
    ok(
        api.send("DELETE", "/api/v1/services/dns/backends/extra", None),
        "delete backend",
    );
    let id = format!("churn{}", i % 4);
    ok(
        api.send(
            "POST",
            "/api/v1/services",
            Some(json!({"id": id, "protocol": "udp", "vip": format!("198.18.0.{}", 110 + i % 4), "port": 53,
                        "scheduler": "rr", "forwarding": "nat",
                        "backends": [{"id": "a", "address": "198.18.1.11"}]})),
        ),
        "add service",
    );
    ok(
        api.send("DELETE", &format!("/api/v1/services/{id}"), None),
        "delete service",
    );
    // Readers beside the writer.
    assert_eq!(api.send("GET", "/metrics", None), 200);
    assert_eq!(
        api.send("GET", "/api/v1/services/dns/flows?limit=10", None),
        200
    );
    5
}

#[test]
fn traffic_api_churn_reloads_and_neighbour_changes_for_minutes_leave_memory_and_mbufs_flat() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, state) = (dir.path().join("l4lb.toml"), dir.path().join("state.json"));
    std::fs::write(&cfg, config(0, &state)).unwrap();
    let input = dir.path().join("in.pcap");
    pcap::write(&input, &traffic());
    let prefix = file_prefix("soak");
    let vdevs = [
        format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", input.display()),
        "--vdev=net_null0,no-rx=1".to_string(),
    ];
    // The worker busy-polls its own CPU; the control thread and this test share the other.
    let app = Appliance::start(
        &cfg,
        &prefix,
        &eal_args(&prefix, "--lcores=0@0,1@1", &vdevs),
    );
    let api = Api {
        base: app.api_base(Duration::from_secs(60)),
    };
    let pid = app.pid();
    let run = Duration::from_secs(seconds());
    let warm_up = Duration::from_secs(20).min(run / 4);
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let (mut changes, mut reloads, mut samples) = (0u32, 0u32, Vec::new());
    std::thread::scope(|s| {
        // SIGHUP every 2 s with the file rewritten (timeouts and neighbours change).
        let hup = s.spawn(|| {
            let mut round = 0;
            let tmp = dir.path().join("l4lb.toml.new");
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(2));
                round += 1;
                std::fs::write(&tmp, config(round, &state)).unwrap();
                std::fs::rename(&tmp, &cfg).unwrap();
                app.signal("HUP");
            }
            round
        });
        let mut next_sample = Instant::now();
        let mut i = 0;
        while started.elapsed() < run {
            changes += churn(&api, i);
            i += 1;
            if Instant::now() >= next_sample {
                let stats = api.get("/api/v1/stats");
                samples.push((
                    started.elapsed(),
                    rss_kib(pid),
                    stats["mbufs"]["in_use"].as_u64().unwrap(),
                    stats["mbufs"]["size"].as_u64().unwrap(),
                ));
                next_sample += Duration::from_secs(5);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        reloads = hup.join().unwrap();
    });
    let services = api.get("/api/v1/services");
    let stats = api.get("/api/v1/stats");
    let done = app.signal_and_wait("TERM", Duration::from_secs(30));
    assert_eq!(done.status.code(), Some(0), "stderr:\n{}", done.stderr);
    eprintln!(
        "soak: {:?}, {changes} API changes, {reloads} SIGHUPs, {} samples (s, RSS KiB, mbufs in use, pool): {samples:?}",
        run,
        samples.len()
    );

    // Memory and mbufs: flat after the warm-up.
    let after: Vec<_> = samples.iter().filter(|s| s.0 >= warm_up).collect();
    assert!(after.len() >= 2, "samples after the warm-up: {samples:?}");
    let rss_base = after[0].1;
    let rss_max = after.iter().map(|s| s.1).max().unwrap();
    assert!(
        rss_max <= rss_base + RSS_SLACK_KIB,
        "RSS grew from {rss_base} to {rss_max} KiB: {samples:?}"
    );
    let pool = after[0].3;
    let (half_a, half_b) = after.split_at(after.len() / 2);
    let in_use_max = |h: &[&(Duration, u64, u64, u64)]| h.iter().map(|s| s.2).max().unwrap_or(0);
    assert!(
        in_use_max(&after) < pool,
        "mbufs in use reached the pool: {samples:?}"
    );
    assert!(
        in_use_max(half_b) <= in_use_max(half_a) + 1024,
        "mbufs in use grew: {samples:?}"
    );

    // Counters add up: every packet received was forwarded or dropped for a reason, and what
    // was forwarded is what net_null sent.
    let rx = port_counter(&done.stdout, 0, "rx-packets");
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("actions:"))
        .unwrap();
    let action = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let handled = ["forwarded", "replied", "consumed", "redirected", "dropped"]
        .iter()
        .map(|k| action(k))
        .sum::<u64>();
    assert_eq!(handled, rx, "{}", done.stdout);
    assert!(rx > 1_000_000, "traffic flowed: {}", done.stdout);
    // Port 1 sent the forwarded packets and the control side's frames; those (gratuitous ARP
    // for each VIP a change adds, ARP requests) go out of every interface alike, so port 0
    // sent as many.
    assert_eq!(
        port_counter(&done.stdout, 1, "tx-packets") - action("forwarded"),
        port_counter(&done.stdout, 0, "tx-packets"),
        "{}",
        done.stdout
    );
    for port in [0, 1] {
        assert_eq!(
            port_counter(&done.stdout, port, "tx-dropped"),
            0,
            "{}",
            done.stdout
        );
    }
    // Every reload was valid and applied (SIGHUPs that came together apply once).
    let applied = stats["reloads"].as_u64().unwrap();
    assert!(
        (1..=u64::from(reloads)).contains(&applied),
        "{applied} reloads for {reloads} SIGHUPs"
    );
    assert_eq!(stats["reload_failures"], 0);

    // The state file boots what the churn left.
    let prefix2 = file_prefix("soak-boot");
    let again = Appliance::start(
        &cfg,
        &prefix2,
        &eal_args(
            &prefix2,
            "0",
            &[
                "--vdev=net_null0,no-rx=1".to_string(),
                "--vdev=net_null1,no-rx=1".to_string(),
            ],
        ),
    );
    let api2 = Api {
        base: again.api_base(Duration::from_secs(60)),
    };
    assert_eq!(api2.get("/api/v1/services"), services);
    let done = again.signal_and_wait("TERM", Duration::from_secs(30));
    assert_eq!(done.status.code(), Some(0), "stderr:\n{}", done.stderr);
}
