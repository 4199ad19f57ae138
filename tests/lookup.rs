//! `GET /api/v1/services/{id}/lookup` (and `l4lbctl lookup`) against what the real binary then
//! does: for every scheduler, the backend it predicts for a new flow is the one the flow's packet
//! goes to, and once the flow exists it says so; a persistent client's next flow is predicted
//! from its template; a denied client is said to be. Packets come from a named pipe
//! (common::pcap::Feed), so each lookup is made before its flow's packet arrives.

mod common;

use std::time::Duration;

use common::pcap::{self, Feed};
use common::{Appliance, eal_args, file_prefix, split_announcements};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use serde_json::Value;

const VIP: [u8; 4] = [198, 18, 0, 100];
const SCHEDULERS: [&str; 13] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "maglev", "mh", "fo", "ovf", "twos",
];

fn config() -> String {
    let mut c = String::from(
        "[dpdk]\nburst = 1\nidle_sleep_us = 100\nrx_desc = 256\ntx_desc = 256\nflow_capacity = 1024\n\
         [[interfaces]]\nport = 0\naddresses = [\"198.18.0.1/24\", \"198.18.1.1/24\"]\n\
         [[routes]]\nprefix = \"0.0.0.0/0\"\nvia = \"198.18.0.254\"\n\
         [[neighbors]]\naddress = \"198.18.0.254\"\nmac = \"02:00:00:00:00:fe\"\n",
    );
    for b in 0..3 {
        c += &format!(
            "[[neighbors]]\naddress = \"198.18.1.{}\"\nmac = \"02:00:00:00:01:{:02x}\"\n",
            10 + b,
            10 + b
        );
    }
    let mut services: Vec<(String, String)> = SCHEDULERS
        .iter()
        .map(|s| (s.to_string(), format!("scheduler = \"{s}\"\n")))
        .collect();
    services.push((
        "persist".into(),
        "scheduler = \"rr\"\npersistence_timeout = 300\n".into(),
    ));
    services.push((
        "listed".into(),
        "scheduler = \"rr\"\ndeny = [\"198.19.99.0/24\"]\n".into(),
    ));
    for (i, (id, lines)) in services.iter().enumerate() {
        c += &format!(
            "[[services]]\nid = \"{id}\"\nprotocol = \"udp\"\nvip = \"198.18.0.100\"\nport = {}\n{lines}",
            1000 + i
        );
        for (b, w) in [1, 2, 3].iter().enumerate() {
            c += &format!(
                "[[services.backends]]\nid = \"b{b}\"\naddress = \"198.18.1.{}\"\nport = {}\nweight = {w}\n",
                10 + b,
                2000 + b
            );
        }
    }
    c
}

fn udp(client: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xfe], common::PCAP_MAC)
        .ipv4(client, VIP, 64)
        .udp(sport, dport)
        .write(&mut out, b"?")
        .unwrap();
    out
}

fn get(base: &str, path: &str) -> Value {
    ureq::get(format!("{base}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .into_body()
        .read_json()
        .unwrap()
}

#[test]
fn lookup_predicts_where_every_schedulers_flows_go_and_then_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("l4lb.toml");
    std::fs::write(&cfg, config()).unwrap();
    let (input, output) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    Feed::create(&input);
    let prefix = file_prefix("lookup");
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let app = Appliance::start(&cfg, &prefix, &eal_args(&prefix, "0", &[vdev]));
    let mut feed = Feed::open(&input, Duration::from_secs(30));
    let base = app.api_base(Duration::from_secs(30));
    let mut send = |frame: Vec<u8>| {
        feed.send(&[frame]);
        let n = feed.sent();
        assert!(
            app.wait_rx(0, n, Duration::from_secs(30)),
            "never received {n}"
        );
    };
    let mut predicted = Vec::new(); // (service port, client port, backend index)
    for (i, sched) in SCHEDULERS.iter().enumerate() {
        let port = 1000 + i as u16;
        for f in 0..6u16 {
            let client = [198, 19, (f % 3) as u8, 1 + f as u8];
            let cport = 40000 + f;
            let q = format!(
                "/api/v1/services/{sched}/lookup?client=198.19.{}.{}:{cport}",
                client[2], client[3]
            );
            let before = get(&base, &q);
            assert_eq!(before["existing"], false, "{sched}: {before}");
            assert_eq!(before["why"], "the scheduler", "{sched}: {before}");
            assert_eq!(before["scheduler"], *sched);
            let b = before["backend"].as_str().unwrap().to_string();
            send(udp(client, cport, port));
            let after = get(&base, &q);
            assert_eq!(
                (
                    after["existing"].clone(),
                    after["why"].clone(),
                    after["state"].clone()
                ),
                (Value::Bool(true), "its flow".into(), "udp".into()),
                "{sched}: {after}"
            );
            assert_eq!(
                after["backend"], b,
                "{sched}: the flow is where it was predicted"
            );
            predicted.push((port, cport, b[1..].parse::<u8>().unwrap()));
        }
    }
    // Persistence: the second flow of a client is predicted from its template.
    let p = 1000 + SCHEDULERS.len() as u16;
    send(udp([198, 19, 50, 1], 1000, p));
    let next = get(
        &base,
        "/api/v1/services/persist/lookup?client=198.19.50.1:1001",
    );
    assert_eq!(next["why"], "the client's persistence template", "{next}");
    let first = get(
        &base,
        "/api/v1/services/persist/lookup?client=198.19.50.1:1000",
    );
    assert_eq!(next["backend"], first["backend"]);
    assert_eq!(first["health"], "up");
    // The deny list.
    let denied = get(
        &base,
        "/api/v1/services/listed/lookup?client=198.19.99.7:5000",
    );
    assert_eq!(denied["why"], "the allow and deny lists refuse the client");
    assert!(denied["backend"].is_null());
    // Bad questions name what is wrong.
    let (code, err) = match ureq::get(format!(
        "{base}/api/v1/services/rr/lookup?client=[2001:db8::1]:80"
    ))
    .call()
    {
        Err(ureq::Error::StatusCode(c)) => (c, ()),
        other => panic!("{other:?}"),
    };
    assert_eq!((code, err), (422, ()));
    // l4lbctl says the same in a line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_l4lbctl"))
        .args(["--api", &base, "lookup", "persist", "198.19.50.1:1001"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!(
            "198.19.50.1:1001 -> {} ({}): the client's persistence template, backend up (worker 0)",
            first["backend_address"].as_str().unwrap(),
            first["backend"].as_str().unwrap()
        )
    );
    // ipvsadm's --stats and --rate columns for the rr service: six flows of one 43-byte
    // datagram each, nothing back; no traffic in the second --rate measures.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_l4lbctl"))
            .arg("--api")
            .arg(&base)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let stats = ctl(&["list", "rr", "--stats"]);
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>()[2..],
        ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["UDP", "198.18.0.100:1000", "6", "6", "0", "258", "0"],
        "{stats}"
    );
    let per_backend: u64 = lines[3..]
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_backend, 6, "{stats}");
    assert_eq!(ctl(&["zero", "rr"]), "counters of service rr zeroed\n");
    let zeroed = ctl(&["list", "--stats"]);
    let row = |text: &str, vip: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.contains(vip))
            .unwrap()
            .split_whitespace()
            .skip(2)
            .map(String::from)
            .collect()
    };
    assert_eq!(
        row(&zeroed, "198.18.0.100:1000 "),
        ["0", "0", "0", "0", "0"],
        "{zeroed}"
    );
    assert_eq!(
        row(&zeroed, "198.18.0.100:1001 "),
        ["6", "6", "0", "258", "0"],
        "only rr: {zeroed}"
    );
    ctl(&["zero"]);
    let all = ctl(&["list", "--stats"]);
    assert_eq!(
        row(&all, "198.18.0.100:1001 "),
        ["0", "0", "0", "0", "0"],
        "{all}"
    );
    let rate = ctl(&["list", "rr", "--rate"]);
    let lines: Vec<&str> = rate.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>()[2..],
        ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["UDP", "198.18.0.100:1000", "0", "0", "0", "0", "0"],
        "{rate}"
    );
    // Flows across services, filtered (ipvsadm -L -c), and one flow removed.
    let flows = |args: &[&str]| -> Vec<Value> {
        let mut a = vec!["--json", "flows"];
        a.extend_from_slice(args);
        let v: Value = serde_json::from_str(&ctl(&a)).unwrap();
        v["flows"].as_array().unwrap().clone()
    };
    let of_client = flows(&["--client", "198.19.0.1"]);
    assert_eq!(
        of_client.len(),
        SCHEDULERS.len(),
        "its one flow in each service"
    );
    assert!(of_client.iter().all(|f| f["client"] == "198.19.0.1:40000"));
    let rr_b0 = predicted
        .iter()
        .filter(|(port, _, b)| *port == 1000 && *b == 0)
        .count();
    assert_eq!(
        flows(&["rr", "--backend", "b0", "--state", "udp"]).len(),
        rr_b0
    );
    assert_eq!(flows(&["rr", "--state", "established"]).len(), 0);
    let table = ctl(&["list", "-c"]);
    assert_eq!(table.lines().count(), 1 + predicted.len() + 1, "{table}");
    assert!(table.lines().next().unwrap().starts_with("Service"));
    assert_eq!(
        ctl(&["delete-flow", "rr", "198.19.0.1:40000"]),
        "flow 198.19.0.1:40000 of service rr removed\n"
    );
    let gone = get(&base, "/api/v1/services/rr/lookup?client=198.19.0.1:40000");
    assert_eq!(gone["existing"], false, "{gone}");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_l4lbctl"))
        .args(["--api", &base, "delete-flow", "rr", "198.19.0.1:40000"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        "l4lbctl: 404 Not Found: service \"rr\" has no flow from 198.19.0.1:40000\n"
    );
    assert_eq!(
        flows(&["--client", "198.19.0.1"]).len(),
        SCHEDULERS.len() - 1
    );

    drop(feed);
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    let frames = split_announcements(pcap::read(&output)).frames;
    assert_eq!(frames.len(), predicted.len() + 1, "{}", done.stdout);
    for (f, (port, cport, b)) in frames.iter().zip(&predicted) {
        let h = PacketHeaders::from_ethernet_slice(f).unwrap();
        let (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u))) = (&h.net, &h.transport)
        else {
            panic!("not UDP over IPv4")
        };
        assert_eq!(u.source_port, *cport, "service port {port}");
        assert_eq!(
            (ip.destination, u.destination_port),
            ([198, 18, 1, 10 + b], 2000 + u16::from(*b)),
            "service port {port}, client port {cport}: the predicted backend"
        );
    }
}
