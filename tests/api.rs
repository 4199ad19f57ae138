//! The REST API and l4lbctl through the real binary. Packets come from a named pipe that
//! net_pcap reads (common::pcap::Feed), so the test decides when each batch arrives and changes
//! the configuration in between: a backend added through the API gets new flows, a drained one
//! keeps its flows and gets no new ones, a deleted one gets nothing (its flows are scheduled
//! anew). Then the flows, the statistics, the Prometheus metrics and `l4lbctl list` are checked
//! against the packets sent.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pcap::{self, Feed};
use common::{Appliance, eal_args, file_prefix, split_announcements};
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};

const VIP: [u8; 4] = [198, 18, 0, 100];
const B1: [u8; 4] = [198, 18, 1, 11];
const B2: [u8; 4] = [198, 18, 1, 12];
const B3: [u8; 4] = [198, 18, 1, 13];

fn mac_of(b: [u8; 4]) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, b[3]]
}

fn config(extra_api: &str) -> String {
    format!(
        r#"
[dpdk]
burst = 1                  # one packet per read: the pipe never holds a partial burst back
idle_sleep_us = 100
rx_desc = 256
tx_desc = 256
flow_capacity = 1024
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "198.18.1.1/24"]
[[neighbors]]
address = "198.18.1.11"
mac = "02:00:00:00:01:0b"
[[neighbors]]
address = "198.18.1.12"
mac = "02:00:00:00:01:0c"
[[neighbors]]
address = "198.18.1.13"
mac = "02:00:00:00:01:0d"
[[routes]]
prefix = "0.0.0.0/0"
via = "198.18.0.254"
[[neighbors]]
address = "198.18.0.254"
mac = "02:00:00:00:00:fe"
[api]
{extra_api}
[[services]]
id = "dns"
protocol = "udp"
vip = "198.18.0.100"
port = 53
scheduler = "rr"
forwarding = "nat"
[[services.backends]]
id = "b1"
address = "198.18.1.11"
port = 5353
"#
    )
}

fn client(i: u8) -> [u8; 4] {
    [198, 18, 2, i]
}

fn query(i: u8) -> Vec<u8> {
    common::packet::udp4(client(i), VIP, 10000 + u16::from(i), 53, 16)
}

fn ctl(base: &str, args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_l4lbctl"));
    c.arg("--api").arg(base).args(args).env_remove("L4LB_TOKEN");
    if let Some(t) = token {
        c.env("L4LB_TOKEN", t);
    }
    let out = c.output().expect("run l4lbctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ctl_ok(base: &str, args: &[&str], token: Option<&str>) -> String {
    let (code, out, err) = ctl(base, args, token);
    assert_eq!(code, 0, "l4lbctl {args:?}: {err}");
    out
}

/// Per client (last octet), the backend address each of its forwarded packets went to, in
/// order; every output is checked to be a proper NAT rewrite to that backend.
fn backends_per_client(frames: &[Vec<u8>]) -> HashMap<u8, Vec<[u8; 4]>> {
    let mut out: HashMap<u8, Vec<[u8; 4]>> = HashMap::new();
    for f in frames {
        let h = PacketHeaders::from_ethernet_slice(f).expect("an Ethernet frame");
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!("not IPv4: {f:02x?}")
        };
        let Some(TransportHeader::Udp(udp)) = &h.transport else {
            panic!("not UDP: {f:02x?}")
        };
        let eth = h.link.clone().unwrap().ethernet2().unwrap();
        assert_eq!(ip.source[..3], [198, 18, 2], "the client's address stays");
        assert_eq!(
            eth.destination,
            mac_of(ip.destination),
            "to the backend's MAC"
        );
        assert_eq!(udp.destination_port, 5353, "the backend's port");
        assert_eq!(udp.source_port, 10000 + u16::from(ip.source[3]));
        assert_eq!(
            common::packet::checksum(&f[14..34]),
            0,
            "IPv4 header checksum"
        );
        assert_eq!(
            udp.calc_checksum_ipv4(ip, &f[42..]).unwrap(),
            udp.checksum,
            "UDP checksum"
        );
        out.entry(ip.source[3]).or_default().push(ip.destination);
    }
    out
}

struct Rig {
    app: Appliance,
    feed: Feed,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start(test: &str, api: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("l4lb.toml");
    std::fs::write(&cfg, config(api)).unwrap();
    let (input, out) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    Feed::create(&input);
    let prefix = file_prefix(test);
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        out.display()
    );
    let app = Appliance::start(&cfg, &prefix, &eal_args(&prefix, "0", &[vdev]));
    let feed = Feed::open(&input, Duration::from_secs(30));
    Rig {
        app,
        feed,
        out,
        _dir: dir,
    }
}

impl Rig {
    fn send(&mut self, clients: impl IntoIterator<Item = u8>) {
        let frames: Vec<Vec<u8>> = clients.into_iter().map(query).collect();
        self.feed.send(&frames);
        let n = self.feed.sent();
        assert!(
            self.app.wait_rx(0, n, Duration::from_secs(30)),
            "the appliance never received {n} packets; log:\n{}",
            self.app.log()
        );
    }
}

#[test]
fn backends_added_drained_and_deleted_through_the_api_steer_new_flows() {
    let mut rig = start("api-steer", "");
    let base = rig.app.api_base(Duration::from_secs(30));

    rig.send(1..=4); // A: one backend
    ctl_ok(
        &base,
        &["add-backend", "dns", "b2", "-r", "198.18.1.12:5353"],
        None,
    );
    rig.send(1..=8); // B: 5-8 are new, round robin over b1 and b2
    let out = ctl_ok(&base, &["edit-backend", "dns", "b1", "-w", "0"], None);
    assert_eq!(out, "backend dns/b1 changed\n");
    ctl_ok(&base, &["edit-service", "dns", "-s", "wlc"], None);
    rig.send(1..=12); // C: b1 drained, a new scheduler: 9-12 go to b2, the old flows stay
    ctl_ok(&base, &["delete-backend", "dns", "b2"], None);
    ctl_ok(
        &base,
        &["add-backend", "dns", "b3", "-r", "198.18.1.13:5353"],
        None,
    );
    rig.send(1..=13); // D: b2's flows are scheduled anew, on b3 (b1 is drained)

    // End of the pipe: the worker runs freely again (flow dumps need it).
    let Rig {
        app,
        mut feed,
        out,
        _dir,
    } = rig;
    let fillers = feed.stop_filler() as f64;
    drop(feed);

    // Flows, statistics and metrics while it runs.
    std::thread::sleep(Duration::from_millis(300)); // the connection counts are copied 10/s
    let (code, flows, err) = ctl(&base, &["--json", "flows", "dns", "-n", "100"], None);
    assert_eq!(code, 0, "{err}");
    let flows: serde_json::Value = serde_json::from_str(&flows).unwrap();
    let flows = flows["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 13, "{flows:?}");
    let on = |b: &str| flows.iter().filter(|f| f["backend"] == b).count();
    assert_eq!((on("b1"), on("b3")), (6, 7), "{flows:?}");
    assert!(flows.iter().all(|f| f["state"] == "udp"), "{flows:?}");
    let f1 = flows
        .iter()
        .find(|f| f["client"] == "198.18.2.1:10001")
        .unwrap();
    assert_eq!(f1["backend_address"], "198.18.1.11:5353");

    let list = ctl_ok(&base, &["list"], None);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[1], "Prot LocalAddress:Port Scheduler Flags");
    assert_eq!(lines[3], "UDP  198.18.0.100:53 wlc (id dns)");
    assert_eq!(
        lines[4],
        "  -> 198.18.1.11:5353             Masq    0      0          6          (id b1)"
    );
    assert_eq!(
        lines[5],
        "  -> 198.18.1.13:5353             Masq    1      0          7          (id b3)"
    );
    assert_eq!(lines.len(), 6, "{list}");

    let metrics = ureq::get(format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let parsed = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = parsed
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{metrics}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a number"),
        }
    };
    let sent = f64::from(4 + 8 + 12 + 13);
    assert_eq!(
        value("l4lb_port_rx_packets_total", &[("port", "0")]),
        sent + fillers
    );
    assert_eq!(
        value("l4lb_drops_total", &[("reason", "unknown_ethertype")]),
        fillers,
        "every filler, and nothing else, dropped as such"
    );
    assert_eq!(
        value("l4lb_service_packets_in_total", &[("service", "dns")]),
        sent
    );
    assert_eq!(
        value("l4lb_service_new_flows_total", &[("service", "dns")]),
        13.0 + 6.0
    );
    assert_eq!(
        value(
            "l4lb_backend_packets_in_total",
            &[("service", "dns"), ("backend", "b1")]
        ),
        22.0
    );
    assert_eq!(
        value(
            "l4lb_backend_packets_in_total",
            &[("service", "dns"), ("backend", "b3")]
        ),
        7.0
    );
    assert_eq!(
        value("l4lb_backend_inactive_connections", &[("backend", "b3")]),
        7.0
    );
    assert_eq!(value("l4lb_backend_weight", &[("backend", "b1")]), 0.0);
    assert_eq!(
        value("l4lb_packets_total", &[("action", "forwarded")]),
        sent
    );
    assert_eq!(value("l4lb_drops_total", &[("reason", "no_backend")]), 0.0);
    assert_eq!(value("l4lb_flows", &[]), 13.0);
    assert_eq!(
        value("l4lb_flow_events_total", &[("event", "flushed")]),
        6.0,
        "b2's flows"
    );

    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);

    // What went out, per client and phase.
    let sent = split_announcements(pcap::read(&out));
    let per = backends_per_client(&sent.frames);
    for c in 1..=4 {
        assert_eq!(
            per[&c], [B1; 4],
            "client {c}: its flow stays on b1, drained or not"
        );
    }
    let (mut on_b1, mut on_b2) = (0, 0);
    for c in 5..=8 {
        let p = &per[&c];
        assert_eq!(p.len(), 3, "client {c}: {p:?}");
        assert_eq!(
            p[0], p[1],
            "client {c}: its flow stays put while its backend exists"
        );
        if p[0] == B1 {
            on_b1 += 1;
            assert_eq!(p[2], B1, "client {c}");
        } else {
            on_b2 += 1;
            assert_eq!(p[0], B2, "client {c}");
            assert_eq!(p[2], B3, "client {c}: b2 was deleted; b1 is drained, so b3");
        }
    }
    assert_eq!((on_b1, on_b2), (2, 2), "round robin over b1 and b2");
    for c in 9..=12 {
        assert_eq!(
            per[&c],
            [B2, B3],
            "client {c}: new on b2 (b1 drained), then b3"
        );
    }
    assert_eq!(per[&13], [B3]);
}

#[test]
fn l4lbctl_shows_the_api_errors_and_needs_the_token_to_change() {
    let rig = start("api-ctl", "token = \"t0ken\"");
    let base = rig.app.api_base(Duration::from_secs(30));
    let t = Some("t0ken");

    let (code, out, err) = ctl(
        &base,
        &["add-backend", "dns", "b2", "-r", "198.18.1.12"],
        None,
    );
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "l4lbctl: 401 Unauthorized: authorization: a valid \"Authorization: Bearer <token>\" header is needed to change the configuration\n"
    );
    let (code, _, err) = ctl(&base, &["add-backend", "dns", "b1", "-r", "198.18.1.12"], t);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "l4lbctl: 409 Conflict: id: service \"dns\" already has backend \"b1\"\n"
    );
    let (code, _, err) = ctl(
        &base,
        &[
            "add-service",
            "web",
            "-t",
            "198.18.0.100:80",
            "-s",
            "fastest",
        ],
        t,
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "l4lbctl: 422 Unprocessable Entity: scheduler: \"fastest\" is not one of rr,"
        ),
        "{err}"
    );
    let (code, _, err) = ctl(&base, &["edit-backend", "dns", "nope", "-w", "2"], t);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "l4lbctl: 404 Not Found: service \"dns\" has no backend \"nope\"\n"
    );

    let out = ctl_ok(
        &base,
        &[
            "--json",
            "add-service",
            "web",
            "-t",
            "198.18.0.100:80",
            "-s",
            "maglev",
        ],
        t,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["scheduler"], "maglev");
    assert_eq!(v["protocol"], "tcp");
    ctl_ok(
        &base,
        &[
            "add-backend",
            "web",
            "w1",
            "-r",
            "198.18.1.11:8080",
            "-w",
            "3",
        ],
        t,
    );
    ctl_ok(&base, &["edit-service", "web", "-s", "wlc"], t);
    let v: serde_json::Value =
        serde_json::from_str(&ctl_ok(&base, &["--json", "list", "web"], None)).unwrap();
    assert_eq!(v[0]["scheduler"], "wlc");
    assert_eq!(v[0]["backends"][0]["weight"], 3);
    assert_eq!(v[0]["backends"][0]["port"], 8080);
    let stats = ctl_ok(&base, &["stats"], None);
    assert!(
        stats.contains("\nport 0 (net_pcap0): rx-packets="),
        "{stats}"
    );
    assert!(
        stats.contains("\nactions: forwarded=0 "),
        "only fillers came in: {stats}"
    );
    assert!(stats.contains("\nservice web: packets-in=0 "), "{stats}");
    assert_eq!(
        ctl_ok(&base, &["delete-service", "web"], t),
        "service web deleted\n"
    );
    let (code, _, err) = ctl(&base, &["list", "web"], None);
    assert_eq!(
        (code, err.as_str()),
        (1, "l4lbctl: 404 Not Found: no service \"web\"\n")
    );

    let (code, _, err) = ctl("http://127.0.0.1:1", &["list"], None);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("l4lbctl: cannot reach the API at http://127.0.0.1:1:"),
        "{err}"
    );
    let Rig { app, feed, .. } = rig;
    drop(feed);
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
}

fn get_services(base: &str) -> serde_json::Value {
    let text = ureq::get(format!("{base}/api/v1/services"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Starts on net_null (no traffic needed) with `cfg`; the API's base URL.
fn start_idle(cfg: &Path, prefix: &str) -> (Appliance, String) {
    let app = Appliance::start(
        cfg,
        prefix,
        &eal_args(prefix, "0", &["--vdev=net_null0,no-rx=1".to_string()]),
    );
    let base = app.api_base(Duration::from_secs(30));
    (app, base)
}

#[test]
fn api_changes_survive_restarts_kill_9_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let cfg = dir.path().join("l4lb.toml");
    std::fs::write(
        &cfg,
        config(&format!("state_file = {:?}", state.display().to_string())),
    )
    .unwrap();
    let prefix = file_prefix("api-state");

    let (app, base) = start_idle(&cfg, &prefix);
    ctl_ok(
        &base,
        &["add-backend", "dns", "b2", "-r", "198.18.1.12", "-w", "5"],
        None,
    );
    ctl_ok(
        &base,
        &["add-service", "web", "-t", "198.18.0.100:80"],
        None,
    );
    let changed = get_services(&base);
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);

    // A restart brings them back (the file's one service is not used), and removes what a
    // crashed save would have left.
    let stale = dir.path().join(".state.json.q8Z1xA.tmp");
    std::fs::write(&stale, "{\"format\": 1, \"serv").unwrap();
    let (app, base) = start_idle(&cfg, &prefix);
    assert_eq!(get_services(&base), changed);
    assert!(!stale.exists(), "the stale temporary is gone");
    assert!(
        app.log().contains("removed what interrupted saves left"),
        "{}",
        app.log()
    );
    assert!(
        app.log().contains("services from the state file"),
        "{}",
        app.log()
    );

    // kill -9 in the middle of a stream of changes, accepted and refused: the state file
    // still loads.
    let writer = {
        let base = base.clone();
        std::thread::spawn(move || {
            for i in 0..2000u32 {
                let weight = if i % 2 == 0 { i % 100 } else { 70_000 };
                let (code, _, err) = ctl(
                    &base,
                    &["edit-backend", "dns", "b2", "-w", &weight.to_string()],
                    None,
                );
                let refused = code == 1 && err.contains("422 Unprocessable Entity: weight:");
                if (i % 2 == 0 && code != 0) || (i % 2 == 1 && !refused) {
                    return i; // the appliance is gone
                }
            }
            2000
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    app.signal("KILL");
    let made = writer.join().unwrap();
    assert!(
        made > 0 && made < 2000,
        "changes made before the kill: {made}"
    );
    drop(app);
    let check = common::l4lb()
        .arg("--check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let loaded = controlplane_state(&state);
    assert_eq!(loaded["services"][0]["backends"][1]["id"], "b2");

    // SIGHUP: a broken file is refused and nothing changes. With a state file, the services
    // made through the API stay through a reload; the file's other sections apply.
    let (app, base) = start_idle(&cfg, &prefix);
    let before = get_services(&base);
    assert_eq!(
        before.as_array().unwrap().len(),
        2,
        "dns (with b2) and web, made by the API"
    );
    std::fs::write(&cfg, config("state_file = 7")).unwrap();
    app.signal("HUP");
    assert!(common::wait_until(Duration::from_secs(10), || app
        .log()
        .contains("refused, the running configuration stays")));
    assert_eq!(get_services(&base), before);
    let good = config(&format!("state_file = {:?}", state.display().to_string()));
    std::fs::write(
        &cfg,
        good.replace("scheduler = \"rr\"", "scheduler = \"sh\"")
            .replace("[api]", "[timeouts]\nudp = 30\n[api]"),
    )
    .unwrap();
    app.signal("HUP");
    let applied = format!(
        "reload (SIGHUP) of {}: timeouts.udp 300 -> 30: ok (epoch",
        cfg.display()
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || app.log().contains(&applied)),
        "{}",
        app.log()
    );
    assert_eq!(get_services(&base), before, "the API's services stay");
    assert_eq!(
        controlplane_state(&state)["services"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Asked for, the file's services replace them, and are saved.
    let out = ctl_ok(&base, &["reload", "--services-from-file"], None);
    assert!(out.starts_with("reloaded (configuration epoch "), "{out}");
    assert!(
        out.contains("\n  service dns: scheduler rr -> sh\n"),
        "{out}"
    );
    assert!(
        out.contains("\n  service dns backend b2 removed\n"),
        "{out}"
    );
    assert!(out.contains("\n  service web removed\n"), "{out}");
    let now = get_services(&base);
    assert_eq!(now.as_array().unwrap().len(), 1, "the file's one service");
    assert_eq!(now[0]["scheduler"], "sh");
    assert_eq!(
        controlplane_state(&state)["services"][0]["scheduler"],
        "sh",
        "and saved"
    );
    // Timeouts through the API (ipvsadm --set): live, saved, and kept through a reload of a
    // file that says otherwise.
    assert_eq!(
        ctl_ok(&base, &["timeouts"], None),
        "Timeout (tcp tcpfin udp): 900 120 30\nTimeout (tcp_syn tcp_close): 60 10\n"
    );
    assert_eq!(
        ctl_ok(&base, &["timeouts", "--udp", "45", "--tcp", "600"], None),
        "Timeout (tcp tcpfin udp): 600 120 45\nTimeout (tcp_syn tcp_close): 60 10\n"
    );
    let saved = controlplane_state(&state)["timeouts"].clone();
    assert_eq!(
        (saved["udp"].clone(), saved["tcp_established"].clone()),
        (45.into(), 600.into())
    );
    for (body, error) in [
        (
            r#"{"deny": null}"#,
            "deny: unknown field (expected one of tcp_established",
        ),
        (
            r#"{"udp": null}"#,
            "udp: a whole number of seconds is expected",
        ),
        (
            r#"{"udp": "30"}"#,
            "udp: a whole number of seconds is expected",
        ),
    ] {
        let r = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .patch(format!("{base}/api/v1/timeouts"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        assert_eq!(r.status().as_u16(), 422, "{body}");
        let text = r.into_body().read_to_string().unwrap();
        assert!(text.contains(error), "{body}: {text}");
    }
    let (code, _, err) = ctl(&base, &["timeouts", "--udp", "0"], None);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "l4lbctl: 422 Unprocessable Entity: udp: must be at least 1 second\n"
        )
    );
    app.signal("HUP");
    assert!(
        common::wait_until(Duration::from_secs(10), || app
            .log()
            .contains("reload (SIGHUP) of")
            && app.log().matches("reload (SIGHUP) of").count() >= 3),
        "{}",
        app.log()
    );
    assert_eq!(
        ctl_ok(&base, &["timeouts"], None),
        "Timeout (tcp tcpfin udp): 600 120 45\nTimeout (tcp_syn tcp_close): 60 10\n",
        "the API's timeouts stay through a reload"
    );
    let audit = ctl_ok(&base, &["audit"], None);
    assert!(audit.contains("reload (api) of "), "{audit}");
    assert!(
        audit.contains("api: change timeouts: timeouts.tcp_established 900 -> 600; timeouts.udp 30 -> 45: ok (epoch"),
        "{audit}"
    );
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(
        done.stdout
            .contains("configuration: reloads=3 reloads-unchanged=1 reload-failures=1 epoch=4"),
        "{}",
        done.stdout
    );

    // A corrupt state file stops the start, naming it.
    std::fs::write(&state, "{\"format\": 1, \"services\": [{\"id\": ").unwrap();
    let app = Appliance::start(
        &cfg,
        &prefix,
        &eal_args(&prefix, "0", &["--vdev=net_null0,no-rx=1".to_string()]),
    );
    let done = app.wait(Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert!(
        done.stderr
            .contains(&format!("l4lb: state file {}: ", state.display())),
        "{}",
        done.stderr
    );
}

fn controlplane_state(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}
