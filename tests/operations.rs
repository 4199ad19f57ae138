//! What an operator needs around the packet path, end to end in namespaces (`harness::lab`):
//! the kernel exception path (management traffic to the appliance's own addresses, transit
//! traffic routed by its kernel), active health checks, `/healthz`.

use std::net::{IpAddr, SocketAddr};

use harness::lab::{self, Mode};

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
