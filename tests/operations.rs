//! What an operator needs around the packet path, end to end in namespaces (`harness::lab`):
//! the kernel exception path (management traffic to the appliance's own addresses, transit
//! traffic routed by its kernel), active health checks, `/healthz`.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use harness::lab::{self, Lab, Mode, time_until};

mod common;
use common::lab::{TIMEOUT, assert_all_ok, binary, http, service, start_with, vip4};

/// The `[[interfaces]]` line that gives the lab's port a kernel interface.
fn kernel_interface(name: &str) -> String {
    format!("kernel_interface = \"{name}\"\n")
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    (ip.parse::<IpAddr>().unwrap(), port).into()
}

/// `GET /` of `to` from the lab's namespace `ns` (the answer's body, trimmed).
fn get_in(ns: &harness::netns::Namespace, to: SocketAddr) -> Result<String, String> {
    ns.enter(move || lab::http_get(to, "/", TIMEOUT))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("GET http://{to}/: {e}"))
        .and_then(|(status, body)| {
            if status == 200 {
                Ok(body.trim().to_string())
            } else {
                Err(format!("GET http://{to}/: HTTP {status}"))
            }
        })
}

fn stats(lab: &harness::lab::Lab) -> serde_json::Value {
    let (status, body) = lab.api_get("/api/v1/stats").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_kernel_path_carries_management_and_transit_traffic_beside_the_vips() {
    let mut lab = start_with(
        "kpath",
        Mode::Nat,
        2,
        &kernel_interface("l4k-kpath"),
        &[service(
            "web",
            "tcp",
            (lab::VIP4, 80),
            "rr",
            Mode::Nat,
            8080,
            &[1, 1],
        )],
    );
    // The kernel interface is there, in l4lb's namespace, with the port's MAC and addresses.
    let brief = |what: &str| {
        let o = lab.lb.sh(&format!("ip -br {what}")).unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let show = brief("link show l4k-kpath");
    // net_af_packet's port has the MAC of the interface it is bound to.
    let port_mac = brief("link show eth0")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert!(show.contains("UP"), "{show}");
    assert!(
        show.contains(&port_mac),
        "the port's MAC {port_mac}: {show}"
    );
    let addrs = brief("addr show l4k-kpath");
    for a in [
        "198.18.0.1/24",
        "198.18.1.1/24",
        "2001:db8::1/64",
        "2001:db8:1::1/64",
    ] {
        assert!(addrs.contains(a), "{a} on the kernel interface: {addrs}");
    }
    // The appliance's kernel routes between its two networks, as a director does.
    lab.route_in_appliance().unwrap();
    lab.lb
        .sysctl("net.ipv4.conf.l4k-kpath.send_redirects", "0")
        .unwrap();
    // The client side's hosts reach the backends' network through the appliance.
    lab.clients[0]
        .ip("route add 198.18.1.0/24 via 198.18.0.1")
        .unwrap();
    lab.clients[0]
        .ip("-6 route add 2001:db8:1::/64 via 2001:db8::1")
        .unwrap();
    let demo = binary("l4lb-demo");
    lab.serve_in("lb", &demo, "appliance").unwrap();
    lab.serve_in("c1", &demo, "client-host").unwrap();

    // Management: a client to a server bound to the appliance's own addresses.
    for to in [addr(lab::LB4, 8080), addr(lab::LB6, 8080)] {
        assert_eq!(get_in(&lab.clients[0], to).as_deref(), Ok("appliance"));
    }
    // Transit: a NAT backend (default route via l4lb) to a host on the client side that is
    // not a VIP, both families, routed by the appliance's kernel.
    for to in [addr(&lab::client4(0), 8080), addr(&lab::client6(0), 8080)] {
        assert_eq!(get_in(&lab.backends[0], to).as_deref(), Ok("client-host"));
    }
    // VIP traffic goes through the dataplane meanwhile, split as before.
    let (per, failed) = http(&lab, vip4(80), 100, 30000);
    assert_all_ok(&failed, &lab);
    assert_eq!(per.get("b1"), Some(&50), "{per:?}");
    assert_eq!(per.get("b2"), Some(&50), "{per:?}");

    let s = stats(&lab);
    let a = &s["actions"];
    let (to_k, from_k) = (
        a["to_kernel"].as_u64().unwrap(),
        a["from_kernel"].as_u64().unwrap(),
    );
    // Each of the 4 HTTP exchanges is at least 5 segments each way through the kernel.
    assert!(to_k >= 20 && from_k >= 20, "{a}");
    assert_eq!(a["to_kernel_dropped"].as_u64(), Some(0), "{a}");
    assert_eq!(s["drops"]["local_unsupported"].as_u64(), Some(0), "{s}");
    assert_eq!(s["drops"]["not_for_us"].as_u64(), Some(0), "{s}");

    let done = lab.stop_l4lb().expect("l4lb stops");
    assert!(done.status.success(), "{}", done.stderr);
    // The kernel interface goes with l4lb.
    assert!(
        lab.lb.sh("ip link show l4k-kpath").is_err(),
        "the kernel interface outlived l4lb"
    );
}

// ---------------------------------------------------------------- health checks

/// Probe timings of the health-check tests: a failed backend is out after FALL probes, so
/// within FALL x INTERVAL (plus one probe's TIMEOUT when the backend does not answer at all).
const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 2;
/// What two labs on two CPUs add to those bounds (the control thread, the API call).
const SLACK: Duration = Duration::from_millis(1500);

/// `svc` with a health check (`check`: the inline table's keys besides the timings) and
/// `extra` service keys.
fn checked(svc: String, check: &str, extra: &str) -> String {
    let line = format!(
        "health_check = {{ {check}, interval_ms = {INTERVAL_MS}, timeout_ms = {TIMEOUT_MS}, rise = {RISE}, fall = {FALL} }}\n{extra}"
    );
    let at = "forwarding = \"nat\"\n";
    assert!(svc.contains(at));
    svc.replacen(at, &format!("{at}{line}"), 1)
}

/// Backend `i`'s health in the stats of the first service.
fn health(lab: &Lab, i: usize) -> serde_json::Value {
    stats(lab)["services"][0]["backends"][i]["health"].clone()
}

/// How long until backend `i` is `state` (None: not within 15 s).
fn until_state(lab: &Lab, i: usize, state: &str) -> Option<Duration> {
    time_until(Duration::from_secs(15), || health(lab, i)["state"] == state)
}

/// Waits until every backend of the first service has had `RISE` good probes.
fn all_probed(lab: &Lab, n: usize) {
    let probed = time_until(Duration::from_secs(15), || {
        (0..n).all(|i| health(lab, i)["probes_ok"].as_u64().unwrap_or(0) >= RISE)
    });
    assert!(probed.is_some(), "{}\n{}", stats(lab), lab.l4lb_log());
}

fn per(pairs: &[(&str, usize)]) -> std::collections::BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// An HTTP check (GET / answered 200) through the kernel path; the inhibit test below uses tcp.
#[test]
fn a_backend_whose_server_stops_or_whose_link_goes_down_leaves_rotation_and_comes_back() {
    let svc = checked(
        service(
            "web",
            "tcp",
            (lab::VIP4, 80),
            "rr",
            Mode::Nat,
            8080,
            &[1, 1, 1],
        ),
        "type = \"http\", path = \"/\", expect_status = 200",
        "",
    );
    let mut lab = start_with("hc", Mode::Nat, 3, &kernel_interface("l4k-hc"), &[svc]);
    all_probed(&lab, 3);
    let h = health(&lab, 1);
    assert_eq!(
        (h["state"].as_str(), h["check"].as_str()),
        (Some("up"), Some("http")),
        "{h}"
    );
    let (got, failed) = http(&lab, vip4(80), 30, 31000);
    assert_all_ok(&failed, &lab);
    assert_eq!(got, per(&[("b1", 10), ("b2", 10), ("b3", 10)]));

    let down_within = Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS) + SLACK;
    let up_within = Duration::from_millis(RISE * INTERVAL_MS + TIMEOUT_MS) + SLACK;
    // b2's server stops: its port refuses, and it leaves rotation.
    lab.stop_server(1);
    let took = until_state(&lab, 1, "down").expect("b2 goes down");
    assert!(
        took <= down_within,
        "down after {took:?}, more than {down_within:?}"
    );
    let h = health(&lab, 1);
    assert!(
        h["last_error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{h}"
    );
    let (got, failed) = http(&lab, vip4(80), 30, 31100);
    assert_all_ok(&failed, &lab);
    assert_eq!(
        got,
        per(&[("b1", 15), ("b3", 15)]),
        "every new request succeeds"
    );
    let list = lab
        .in_lb(&binary("l4lbctl"), &["list"])
        .expect("l4lbctl list");
    let b2 = list
        .lines()
        .find(|l| l.contains("(id b2)"))
        .unwrap_or_default();
    let refused = format!(
        "http: http connect to {}:8080: Connection refused",
        lab::backend4(1)
    );
    assert!(b2.contains(" DOWN ") && b2.contains(&refused), "{list}");
    let (_, metrics) = lab.api_get("/metrics").unwrap();
    assert!(
        metrics.contains("l4lb_backend_up{service=\"web\",backend=\"b2\"} 0\n")
            && metrics.contains("l4lb_backend_up{service=\"web\",backend=\"b1\"} 1\n"),
        "{metrics}"
    );

    // It starts again: back within rise x interval.
    lab.restart_server(&binary("l4lb-demo"), 1).unwrap();
    let took = until_state(&lab, 1, "up").expect("b2 comes back");
    assert!(
        took <= up_within,
        "up after {took:?}, more than {up_within:?}"
    );
    let (got, failed) = http(&lab, vip4(80), 30, 31200);
    assert_all_ok(&failed, &lab);
    assert_eq!(got, per(&[("b1", 10), ("b2", 10), ("b3", 10)]));

    // Its link goes down (the switch port): nothing answers, not even ARP.
    lab.switch.ip("link set b3 down").unwrap();
    let took = until_state(&lab, 2, "down").expect("b3 goes down");
    assert!(
        took <= down_within,
        "down after {took:?}, more than {down_within:?}"
    );
    let (got, failed) = http(&lab, vip4(80), 30, 31300);
    assert_all_ok(&failed, &lab);
    assert_eq!(
        got,
        per(&[("b1", 15), ("b2", 15)]),
        "every new request succeeds"
    );
    lab.switch.ip("link set b3 up").unwrap();
    let took = until_state(&lab, 2, "up").expect("b3 comes back");
    assert!(
        took <= up_within + Duration::from_secs(1),
        "up after {took:?}"
    );
    let (got, failed) = http(&lab, vip4(80), 30, 31400);
    assert_all_ok(&failed, &lab);
    assert_eq!(got, per(&[("b1", 10), ("b2", 10), ("b3", 10)]));

    let h = health(&lab, 2);
    assert_eq!(h["transitions"].as_u64(), Some(2), "{h}");
    let log = lab.l4lb_log();
    for line in [
        "backend down: 2 http probes failed in a row",
        "backend up: 2 http probes succeeded in a row",
        "flows removed: the backend is down",
    ] {
        assert_eq!(log.matches(line).count(), 2, "{line}:\n{log}");
    }
    let done = lab.stop_l4lb().expect("l4lb stops");
    assert!(done.status.success(), "{}", done.stderr);
}

/// An ECHO connection to `to` from the lab's client: the stream and the backend's name.
fn echo(lab: &Lab, to: SocketAddr) -> (TcpStream, String) {
    lab.clients[0]
        .enter(move || {
            let s = TcpStream::connect_timeout(&to, TIMEOUT).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            (&s).write_all(b"ECHO\n").unwrap();
            let mut name = String::new();
            BufReader::new(&s).read_line(&mut name).unwrap();
            (s, name.trim().to_string())
        })
        .unwrap()
}

/// Sends a line on an ECHO connection: what came back (an error as text).
fn echoed(s: &TcpStream, line: &str) -> String {
    if let Err(e) = (&*s).write_all(format!("{line}\n").as_bytes()) {
        return format!("error: {e}");
    }
    let mut back = String::new();
    match BufReader::new(s).read_line(&mut back) {
        Ok(0) => "closed".into(),
        Ok(_) => back.trim().to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// A listener on port 9000 in backend `i` (the health check's port): dropping it fails the
/// check while the backend's server goes on.
fn check_port(lab: &Lab, i: usize) -> TcpListener {
    lab.backends[i]
        .enter(|| TcpListener::bind(("0.0.0.0", 9000)))
        .unwrap()
        .unwrap()
}

#[test]
fn inhibit_keeps_a_failed_backends_connections_and_remove_ends_them() {
    let svc = checked(
        service(
            "web",
            "tcp",
            (lab::VIP4, 80),
            "rr",
            Mode::Nat,
            8080,
            &[1, 1],
        ),
        "type = \"tcp\", port = 9000",
        "on_down = \"inhibit\"\n",
    );
    let mut lab = start_with("hci", Mode::Nat, 2, &kernel_interface("l4k-hci"), &[svc]);
    let mut ports = vec![Some(check_port(&lab, 0)), Some(check_port(&lab, 1))];
    all_probed(&lab, 2);
    let (conn, name) = echo(&lab, vip4(80));
    let i = usize::from(name == "b2");
    assert_eq!(echoed(&conn, "before"), "before");
    ports[i] = None;
    until_state(&lab, i, "down").expect("the check fails");
    assert_eq!(
        echoed(&conn, "after"),
        "after",
        "on_down = inhibit: the established connection goes on"
    );
    let (got, failed) = http(&lab, vip4(80), 10, 32000);
    assert_all_ok(&failed, &lab);
    let other = if i == 0 { "b2" } else { "b1" };
    assert_eq!(got, per(&[(other, 10)]), "no new connection to {name}");

    // Back, then on_down = remove: a failure ends the connections.
    ports[i] = Some(check_port(&lab, i));
    until_state(&lab, i, "up").expect("the check succeeds again");
    let patch = lab
        .lb
        .sh(
            "curl -sS -o /dev/null -w '%{http_code}' -X PATCH -H 'content-type: application/json' \
             -d '{\"on_down\": \"remove\"}' http://127.0.0.1:9180/api/v1/services/web",
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&patch.stdout), "200");
    let (conn, name) = echo(&lab, vip4(80));
    let i = usize::from(name == "b2");
    assert_eq!(echoed(&conn, "before"), "before");
    ports[i] = None;
    until_state(&lab, i, "down").expect("the check fails");
    // Its flow is gone: the next segment is a new flow to the other backend, which resets it.
    let after = echoed(&conn, "after");
    assert!(after.starts_with("error") || after == "closed", "{after}");
    let (got, failed) = http(&lab, vip4(80), 10, 32100);
    assert_all_ok(&failed, &lab);
    let other = if i == 0 { "b2" } else { "b1" };
    assert_eq!(got, per(&[(other, 10)]));
    drop(ports);
    let done = lab.stop_l4lb().expect("l4lb stops");
    assert!(done.status.success(), "{}", done.stderr);
}

// ---------------------------------------------------------------- /healthz

/// `/healthz`: the status and the body.
fn healthz(lab: &Lab) -> (u16, serde_json::Value) {
    let (status, body) = lab.api_get("/healthz").unwrap();
    (status, serde_json::from_str(&body).unwrap())
}

/// How long until `/healthz` answers `status` (None: not within 15 s); the last body.
fn until_healthz(lab: &Lab, status: u16) -> (Option<Duration>, serde_json::Value) {
    let mut last = serde_json::Value::Null;
    let took = time_until(Duration::from_secs(15), || {
        let (s, body) = healthz(lab);
        last = body;
        s == status
    });
    (took, last)
}

#[test]
fn healthz_turns_503_with_the_reason_while_a_worker_stalls_or_the_link_is_down() {
    let mut lab = Lab::build(&lab::Spec {
        tag: "hz".into(),
        mode: Mode::Nat,
        backends: 1,
        clients: 1,
        remove_on_signal: true,
    })
    .unwrap();
    lab.start_servers(&binary("l4lb-demo")).unwrap();
    // A second port, a TAP: net_af_packet (port 0) reports its link up whatever the veth
    // does (DPDK 22.11), net_tap reads its interface's flags.
    let af_packet = "\"--vdev=net_af_packet0,iface=eth0\"";
    let base = lab.base_config();
    assert!(base.contains(af_packet), "{base}");
    let config = format!(
        "{}[[interfaces]]\nport = 1\naddresses = [\"198.18.9.1/24\"]\n\n[api]\nlisten = \"127.0.0.1:9180\"\n\n{}",
        base.replace(
            af_packet,
            &format!("{af_packet}, \"--vdev=net_tap_hz,iface=l4hz-link\"")
        ),
        service("web", "tcp", (lab::VIP4, 80), "rr", Mode::Nat, 8080, &[1])
    );
    // Worker 0 stops polling for 3 s, 2 s after it started.
    lab.start_l4lb_with(
        &binary("l4lb"),
        &config,
        &["--test-stall-worker", "2000:3000"],
    )
    .unwrap();
    let (took, body) = until_healthz(&lab, 503);
    assert!(took.is_some(), "never 503: {body}\n{}", lab.l4lb_log());
    assert_eq!(body["status"], "unhealthy");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("worker 0 has not reported for"), "{body}");
    let (took, body) = until_healthz(&lab, 200);
    assert!(took.is_some(), "never 200 again: {body}");
    assert_eq!(body["status"], "ok");
    let log = lab.l4lb_log();
    assert!(log.contains("worker has not reported for"), "{log}");
    assert!(log.contains("worker reports again after"), "{log}");

    // A port's link goes down, then up.
    lab.lb.ip("link set l4hz-link down").unwrap();
    let (took, body) = until_healthz(&lab, 503);
    assert!(took.is_some(), "never 503: {body}\n{}", lab.l4lb_log());
    assert_eq!(
        body["reasons"],
        serde_json::json!(["port 1 (net_tap_hz): link down"])
    );
    lab.lb.ip("link set l4hz-link up").unwrap();
    let (took, body) = until_healthz(&lab, 200);
    assert!(took.is_some(), "never 200 again: {body}");
    let (got, failed) = http(&lab, vip4(80), 10, 33000);
    assert_all_ok(&failed, &lab);
    assert_eq!(got, per(&[("b1", 10)]));
    let done = lab.stop_l4lb().expect("l4lb stops");
    assert!(done.status.success(), "{}", done.stderr);
}

#[test]
fn a_udp_check_sees_the_port_unreachable_of_a_stopped_server_through_the_kernel_path() {
    let svc = checked(
        service("dns", "udp", (lab::VIP4, 53), "rr", Mode::Nat, 53, &[1, 1]),
        "type = \"udp\"",
        "",
    );
    let mut lab = start_with("hcu", Mode::Nat, 2, &kernel_interface("l4k-hcu"), &[svc]);
    all_probed(&lab, 2);
    assert_eq!(health(&lab, 1)["check"], "udp");
    // The server stops: its port answers ICMP port unreachable, which reaches the probe's
    // socket through the dataplane and the kernel interface.
    lab.stop_server(1);
    let took = until_state(&lab, 1, "down").expect("b2 goes down");
    let within = Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS) + SLACK;
    assert!(took <= within, "down after {took:?}, more than {within:?}");
    let h = health(&lab, 1);
    assert!(
        h["last_error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{h}"
    );
    assert_eq!(
        health(&lab, 0)["state"],
        "up",
        "b1 answers (or stays silent): up"
    );
    lab.restart_server(&binary("l4lb-demo"), 1).unwrap();
    until_state(&lab, 1, "up").expect("b2 comes back");
    let done = lab.stop_l4lb().expect("l4lb stops");
    assert!(done.status.success(), "{}", done.stderr);
}
