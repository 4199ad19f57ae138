//! The container image (docker/Dockerfile) built with podman and run with buildah: `podman
//! run` cannot start containers on this kind of host (no cgroups for crun), `buildah run` with
//! chroot isolation can, sharing the host's network namespace.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::l4lb;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success() || out.status.code() == Some(124),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A working container of an image, removed with the guard (the image too).
struct Container {
    id: String,
    image: String,
}

impl Container {
    fn of(image: &str) -> Container {
        let out = run(Command::new("buildah").args(["from", "--pull=never", image]));
        Container {
            id: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            image: image.to_string(),
        }
    }

    fn exec(&self, env: &[&str], args: &[&str]) -> Output {
        let mut cmd = Command::new("buildah");
        cmd.args(["run", "--isolation", "chroot"]);
        for e in env {
            cmd.args(["--env", e]);
        }
        run(cmd.arg(&self.id).arg("--").args(args))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("buildah").args(["rm", &self.id]).output();
        let _ = Command::new("podman")
            .args(["rmi", "--force", &self.image])
            .output();
        // The build stage's image, untagged once the tag is gone.
        let _ = Command::new("podman")
            .args(["image", "prune", "-f"])
            .output();
    }
}

#[test]
fn the_image_builds_and_runs_version_check_and_the_dataplane() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let image = format!("localhost/l4lb:test-{}", std::process::id());
    let binary = env!("CARGO_BIN_EXE_l4lb");
    run(Command::new(root.join("scripts/build-image")).args([
        "--tag",
        &image,
        "--prebuilt",
        binary,
    ]));
    let c = Container::of(&image);

    // The same binary, and the DPDK libraries of the image resolve for it.
    let version = c.exec(&[], &["l4lb", "--version"]);
    let host = run(l4lb().arg("--version"));
    assert_eq!(text(&version), text(&host));
    assert!(text(&version).contains("DPDK 22.11"), "{}", text(&version));

    // The configuration it ships and every example pass --check inside the image.
    let check = c.exec(&[], &["l4lb", "--check", "--config", "/etc/l4lb/l4lb.toml"]);
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "/etc/l4lb/l4lb.toml: configuration is valid: 1 interface(s), 1 service(s), 2 backend(s)\n"
    );
    for (name, counts) in [
        ("one-arm-dr", "1 interface(s), 2 service(s), 5 backend(s)"),
        ("tun", "1 interface(s), 2 service(s), 4 backend(s)"),
        ("two-arm-nat", "2 interface(s), 2 service(s), 4 backend(s)"),
    ] {
        let path = format!("/usr/share/l4lb/examples/{name}.toml");
        let out = c.exec(&[], &["l4lb", "--check", "--config", &path]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{path}: configuration is valid: {counts}\n")
        );
    }

    // EAL starts inside the image and loads a driver from its plugin directory (net_null),
    // the workers run, SIGTERM stops them with the final report.
    let prefix = format!("l4lb-image-{}", std::process::id());
    let api = format!(
        "L4LB_API__LISTEN=127.0.0.1:{}",
        20000 + std::process::id() % 10000
    );
    let out = c.exec(
        &[&api, "L4LB_DPDK__IDLE_SLEEP_US=1000"],
        &[
            "timeout",
            "-s",
            "TERM",
            "3",
            "l4lb",
            "--config",
            "/etc/l4lb/l4lb.toml",
            "--",
            "-l",
            "0",
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            &format!("--file-prefix={prefix}"),
            "--vdev=net_null0",
        ],
    );
    let log = text(&out);
    assert!(
        log.contains("driver=\"net_null\""),
        "the net_null PMD loaded: {log}"
    );
    assert!(log.contains("running; SIGINT or SIGTERM stops"), "{log}");
    assert!(
        log.contains("configuration: reloads=0"),
        "the final report: {log}"
    );
}
