//! A lab (`harness::lab`) with servers and l4lb, and what tests do in it: service sections,
//! HTTP requests from the client, the verdict on them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use harness::lab::{self, Lab, Mode, Spec};

pub fn binary(name: &str) -> PathBuf {
    match name {
        "l4lb" => PathBuf::from(env!("CARGO_BIN_EXE_l4lb")),
        "l4lbctl" => PathBuf::from(env!("CARGO_BIN_EXE_l4lbctl")),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_l4lb-demo")),
    }
}

/// A connection slower than this failed. Generous: two labs share the two CPUs of the test
/// machine, and each appliance's worker polls on the same one.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A service section: `name` on `vip:port`, backends b1.. on `backend_port` (their address
/// of the VIP's family), with `weights`.
pub fn service(
    name: &str,
    proto: &str,
    (vip, port): (&str, u16),
    sched: &str,
    mode: Mode,
    backend_port: u16,
    weights: &[u32],
) -> String {
    let v6 = vip.contains(':');
    let mut s = format!(
        "[[services]]\nid = \"{name}\"\nprotocol = \"{proto}\"\nvip = \"{vip}\"\nport = {port}\nscheduler = \"{sched}\"\nforwarding = \"{}\"\n",
        mode.name()
    );
    for (i, w) in weights.iter().enumerate() {
        let addr = if v6 {
            lab::backend6(i)
        } else {
            lab::backend4(i)
        };
        s.push_str(&format!(
            "[[services.backends]]\nid = \"b{}\"\naddress = \"{addr}\"\nport = {backend_port}\nweight = {w}\n",
            i + 1
        ));
    }
    s
}

/// A lab in `mode` with servers, and l4lb started on `services`.
pub fn start(tag: &str, mode: Mode, services: &[String]) -> Lab {
    start_with(tag, mode, 3, "", services)
}

/// [`start`] with `backends` backends and `sections` (TOML) before `[api]`.
pub fn start_with(
    tag: &str,
    mode: Mode,
    backends: usize,
    sections: &str,
    services: &[String],
) -> Lab {
    let mut lab = Lab::build(&Spec {
        tag: tag.to_string(),
        mode,
        backends,
        clients: 1,
        remove_on_signal: true,
    })
    .unwrap();
    lab.start_servers(&binary("l4lb-demo")).unwrap();
    let mut config = lab.base_config();
    config.push_str(sections);
    config.push_str("\n[api]\nlisten = \"127.0.0.1:9180\"\n\n");
    for s in services {
        config.push_str(s);
        config.push('\n');
    }
    lab.start_l4lb(&binary("l4lb"), &config).unwrap();
    lab
}

pub fn vip4(port: u16) -> SocketAddr {
    (lab::VIP4.parse::<IpAddr>().unwrap(), port).into()
}

pub fn vip6(port: u16) -> SocketAddr {
    (lab::VIP6.parse::<IpAddr>().unwrap(), port).into()
}

/// `n` HTTP requests from the client, one connection each from its own port (`first_port`,
/// the next, ...): answers per backend, and the failures (with their error).
pub fn http(
    lab: &Lab,
    to: SocketAddr,
    n: usize,
    first_port: u16,
) -> (BTreeMap<String, usize>, Vec<String>) {
    lab.clients[0]
        .enter(move || {
            let mut per = BTreeMap::new();
            let mut failed = Vec::new();
            for i in 0..n {
                let port = Some(first_port + i as u16);
                match lab::http_get_from(to, port, "/", TIMEOUT) {
                    Ok((200, body)) => *per.entry(body.trim().to_string()).or_insert(0) += 1,
                    Ok((s, body)) => failed.push(format!("request {i}: HTTP {s}: {body}")),
                    Err(e) => failed.push(format!("request {i}: {e}")),
                }
            }
            (per, failed)
        })
        .unwrap()
}

pub fn assert_all_ok(failed: &[String], lab: &Lab) {
    assert!(
        failed.is_empty(),
        "{} failed, the first: {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        lab.l4lb_log()
    );
}
