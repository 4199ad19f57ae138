//! The exception path: for each `[[interfaces]]` entry with `kernel_interface`, a kernel
//! network interface in l4lb's own network namespace, backed by DPDK's `net_virtio_user` over
//! vhost-net where the kernel has `/dev/vhost-net`, else by `net_tap`. It carries the port's
//! MAC, addresses and MTU, and the configured routes and static neighbours; the workers hand it
//! what the packet path does not handle and send what it sends out of the port.
//!
//! Set up once at start, with `ip` (iproute2): the interface is as an operator would set it by
//! hand, and `ip -d link show NAME` shows what l4lb did.

use std::path::Path;
use std::process::Command;

use controlplane::config::{KernelDriver, KernelInterface, Model};
use dataplane::addr::MacAddr;
use dpdk_rs::{Eal, Mempool, Port, PortConfig};
use tracing::info;

/// Where the kernel's vhost-net lives, when it has it.
const VHOST_NET: &str = "/dev/vhost-net";

/// The driver `auto` stands for on this machine.
pub fn resolve(driver: KernelDriver) -> KernelDriver {
    match driver {
        KernelDriver::Auto if Path::new(VHOST_NET).exists() => KernelDriver::VirtioUser,
        KernelDriver::Auto => KernelDriver::Tap,
        d => d,
    }
}

/// Creates, starts and configures the kernel interface of interface `i` (whose port has MAC
/// `mac`), with one queue pair per worker.
pub fn start(
    eal: &Eal,
    model: &Model,
    i: usize,
    k: &KernelInterface,
    mac: MacAddr,
    n_workers: usize,
    pool: &Mempool,
) -> Result<Port, String> {
    let field = format!("interfaces[{i}].kernel_interface");
    if Path::new("/sys/class/net").join(&k.name).exists() {
        return Err(format!(
            "{field}: a network interface named {:?} already exists in this namespace",
            k.name
        ));
    }
    let driver = resolve(k.driver);
    let (vdev, args) = match driver {
        KernelDriver::VirtioUser => (
            format!("net_virtio_user_l4lb{i}"),
            format!(
                "path={VHOST_NET},iface={},mac={mac},queues={n_workers},queue_size=1024",
                k.name
            ),
        ),
        _ => (
            format!("net_tap_l4lb{i}"),
            format!("iface={},mac={mac}", k.name),
        ),
    };
    let id = dpdk_rs::create_vdev(eal, &vdev, &args)
        .map_err(|e| format!("{field}: cannot create {vdev} ({args}): {e}"))?;
    let config = PortConfig {
        rx_queues: n_workers as u16,
        tx_queues: n_workers as u16,
        rx_desc: 512,
        tx_desc: 512,
    };
    let mut port = Port::configure(eal, id, &config, pool).map_err(|e| format!("{field}: {e}"))?;
    port.start().map_err(|e| format!("{field}: {e}"))?;
    let itf = &model.interfaces[i];
    configure(k, mac, itf, model).map_err(|e| format!("{field}: {e}"))?;
    info!(
        interface = i,
        kernel_interface = %k.name,
        driver = driver.name(),
        port = id,
        mac = %mac,
        mtu = itf.mtu,
        addresses = ?itf.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "kernel interface up"
    );
    Ok(port)
}

/// The kernel side: the port's MAC and MTU, up, its addresses (IPv6 without duplicate address
/// detection: the dataplane answers for them already), the routes and static neighbours of the
/// configuration that reach through this interface.
fn configure(
    k: &KernelInterface,
    mac: MacAddr,
    itf: &controlplane::config::Interface,
    model: &Model,
) -> Result<(), String> {
    let name = k.name.as_str();
    ip(&[
        "link",
        "set",
        "dev",
        name,
        "address",
        &mac.to_string(),
        "mtu",
        &itf.mtu.to_string(),
        "up",
    ])?;
    for a in &itf.addresses {
        let prefix = a.to_string();
        let mut args = vec!["address", "replace", prefix.as_str(), "dev", name];
        if a.addr.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)?;
    }
    for r in &model.routes {
        let reaches = itf.addresses.iter().any(|a| a.contains(r.via));
        if reaches {
            let (prefix, via) = (r.prefix.to_string(), r.via.to_string());
            ip(&["route", "replace", &prefix, "via", &via, "dev", name])?;
        }
    }
    for n in &model.neighbors {
        if itf.addresses.iter().any(|a| a.contains(n.address)) {
            let (addr, lladdr) = (n.address.to_string(), n.mac.to_string());
            ip(&[
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &lladdr,
                "dev",
                name,
                "nud",
                "permanent",
            ])?;
        }
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
