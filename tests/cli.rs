//! The command line through the real binary: --version, --check on good and bad files.

mod common;

use std::path::Path;

use common::l4lb;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = l4lb()
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let prefix = format!("l4lb: {}: ", path.display());
    (
        out.status.code().unwrap_or(-1),
        stderr.replace(&prefix, "FILE: "),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn default_conf() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/l4lb.toml")).unwrap()
}

/// conf/l4lb.toml with `from` replaced by `to` (which must apply).
fn variant(from: &str, to: &str) -> String {
    let conf = default_conf();
    assert!(conf.contains(from), "conf/l4lb.toml lacks {from:?}");
    conf.replacen(from, to, 1)
}

fn refused(text: &str) -> String {
    let (code, stderr, stdout) = check(text);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert_eq!(stdout, "");
    stderr
}

const SECOND_SERVICE: &str =
    "\n[[services]]\nid = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.0.53\"\nport = 53\n";

#[test]
fn version_names_the_crate_the_commit_and_dpdk() {
    let out = l4lb().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with(&format!("l4lb {} (git ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert_eq!(
        lines.next().unwrap(),
        "DPDK 22.11.11 (built against), DPDK 22.11.11 (running)"
            .replace("22.11.11", &dpdk_version())
    );
}

fn dpdk_version() -> String {
    let out = std::process::Command::new("pkg-config")
        .args(["--modversion", "libdpdk"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn check_accepts_the_shipped_configs_and_the_embedded_default() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/l4lb.toml");
    let out = l4lb()
        .arg("--check")
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{}: configuration is valid: 1 interface(s), 1 service(s), 2 backend(s)\n",
            conf.display()
        )
    );
    // The demo's configuration (l4lb-demo embeds it) is valid as it is shipped.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/demo.toml");
    let out = l4lb()
        .arg("--check")
        .arg("--config")
        .arg(&demo)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{}: configuration is valid: 1 interface(s), 1 service(s), 3 backend(s)\n",
            demo.display()
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = l4lb().arg("--check").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("<embedded conf/l4lb.toml>: configuration is valid")
    );
}

#[test]
fn check_refuses_an_unknown_key() {
    assert_eq!(
        refused(&variant("burst = 32", "burst = 32\nbrust = 1")),
        "FILE: dpdk: unknown key `brust` (expected one of `eal_args`, `burst`, `idle_sleep_us`, `flow_capacity`, `rx_desc`, `tx_desc`, `extra_mbufs`, `mbuf_data_room`)\n"
    );
}

#[test]
fn check_refuses_a_duplicate_service_id() {
    let text = default_conf() + &SECOND_SERVICE.replace("\"dns\"", "\"web\"");
    assert_eq!(
        refused(&text),
        "FILE: services[1].id: duplicate service id \"web\" (also services[0])\n"
    );
}

#[test]
fn check_refuses_a_duplicate_protocol_vip_port() {
    let text = default_conf()
        + &SECOND_SERVICE
            .replace("\"udp\"", "\"tcp\"")
            .replace("198.18.0.53", "198.18.0.100")
            .replace("53\n", "80\n");
    assert_eq!(
        refused(&text),
        "FILE: services[1]: tcp 198.18.0.100 port 80 is already services[0] (\"web\")\n"
    );
}

#[test]
fn check_refuses_a_bad_ip() {
    assert_eq!(
        refused(&variant("198.18.0.100", "198.18.0.256")),
        "FILE: services[0].vip: \"198.18.0.256\" is not an IP address\n"
    );
}

#[test]
fn check_refuses_port_zero() {
    assert_eq!(
        refused(&variant("port = 80", "port = 0")),
        "FILE: services[0].port: 0 (every port) is for a persistent dr or tun service: set persistence_timeout (ipvsadm refuses a zero port without -p too), or give a port from 1 to 65535\n"
    );
}

#[test]
fn check_refuses_a_backend_of_the_wrong_family() {
    assert_eq!(
        refused(&variant(
            "address = \"198.18.0.11\"",
            "address = \"2001:db8:1::11\""
        )),
        "FILE: services[0].backends[1].address: 2001:db8:1::11 is IPv6, the service's vip 198.18.0.100 is IPv4\n"
    );
}

#[test]
fn check_refuses_an_unknown_scheduler() {
    assert_eq!(
        refused(&variant(
            "scheduler = \"maglev\"",
            "scheduler = \"fastest\""
        )),
        "FILE: services[0].scheduler: \"fastest\" is not one of rr, wrr, lc, wlc, sed, nq, sh, dh, maglev, mh, fo, ovf, twos\n"
    );
}

#[test]
fn check_refuses_an_unknown_forwarding_mode() {
    assert_eq!(
        refused(&variant("forwarding = \"nat\"", "forwarding = \"dsr\"")),
        "FILE: services[0].forwarding: \"dsr\" is not one of nat, dr, tun\n"
    );
}

#[test]
fn check_reports_every_error_and_a_missing_file() {
    let text = variant("port = 80", "port = 0").replacen("\"maglev\"", "\"fastest\"", 1);
    assert_eq!(
        refused(&text),
        "FILE: services[0].port: 0 (every port) is for a persistent dr or tun service: set persistence_timeout (ipvsadm refuses a zero port without -p too), or give a port from 1 to 65535\nFILE: services[0].scheduler: \"fastest\" is not one of rr, wrr, lc, wlc, sed, nq, sh, dh, maglev, mh, fo, ovf, twos\n"
    );
    let out = l4lb()
        .args(["--check", "--config", "/nonexistent/l4lb.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "l4lb: /nonexistent/l4lb.toml: cannot read the file: No such file or directory (os error 2)\n"
    );
}

#[test]
fn environment_overrides_are_validated_too() {
    let out = l4lb()
        .arg("--check")
        .env("L4LB_DPDK__BURST", "1000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "l4lb: <embedded conf/l4lb.toml>: dpdk.burst: 1000 is not from 1 to 256\n"
    );
    let out = l4lb()
        .arg("--check")
        .env("L4LB_DPDK__BURST", "64")
        .env("L4LB_TOKEN", "for-the-cli")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_refuses_values_of_the_wrong_type_and_stray_variables() {
    for (from, to, want) in [
        (
            "burst = 32",
            "burst = \"32\"",
            "FILE: dpdk.burst: invalid type: string \"32\", expected u32\n",
        ),
        (
            "burst = 32",
            "burst = 3.7",
            "FILE: dpdk.burst: invalid type: floating point `3.7`, expected u32\n",
        ),
        (
            "port = 80",
            "port = \"80\"",
            "FILE: services[0].port: invalid type: string \"80\", expected u16\n",
        ),
    ] {
        assert_eq!(refused(&variant(from, to)), want, "{to}");
    }
    let env_check = |var: &str, value: &str| {
        let out = l4lb()
            .arg("--check")
            .env_remove("RUST_LOG")
            .env(var, value)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let embedded = "l4lb: <embedded conf/l4lb.toml>: ";
    for (var, value, want) in [
        (
            "L4LB_DPDK__BURST",
            "true",
            "dpdk.burst: L4LB_DPDK__BURST=\"true\" is not a whole number (digits only)",
        ),
        (
            "L4LB_DPDK__BURST",
            "1.5",
            "dpdk.burst: L4LB_DPDK__BURST=\"1.5\" is not a whole number (digits only)",
        ),
        (
            "L4LB_API__TOKEN",
            "",
            "api.token: L4LB_API__TOKEN is set but empty: unset it to keep the file's value (an empty value cannot turn a setting such as the API token off)",
        ),
    ] {
        assert_eq!(
            env_check(var, value),
            (Some(2), format!("{embedded}{want}\n")),
            "{var}={value}"
        );
    }
    let (code, stderr) = env_check("L4LB_DPDK_BURST", "abc");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{embedded}L4LB_DPDK_BURST: not a configuration variable"
        )),
        "{stderr}"
    );
}

#[test]
fn check_refuses_an_api_beyond_loopback_without_a_token_and_what_a_start_cannot_allocate() {
    assert_eq!(
        refused(&variant(
            "listen = \"127.0.0.1:9180\"",
            "listen = \"198.18.0.1:9180\""
        )),
        "FILE: api.token: is required when api.listen (198.18.0.1:9180) is not a loopback address: anyone who reaches it could change the services (set api.allow_unauthenticated = true to serve it without one)\n"
    );
    let (code, stderr, _) = check(&variant(
        "listen = \"127.0.0.1:9180\"",
        "listen = \"198.18.0.1:9180\"\nallow_unauthenticated = true",
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        refused(&variant("[dpdk]\n", "[dpdk]\nextra_mbufs = 67108864\n")),
        "FILE: dpdk.extra_mbufs: 67108864 mbufs of about 2368 bytes take 151552 MiB, and EAL has 512 MiB (-m 512 in dpdk.eal_args)\n"
    );
}

#[test]
fn log_format_json_writes_one_object_a_line() {
    // An EAL argument EAL refuses: l4lb logs that it starts EAL, then fails.
    let prefix = "l4lb-cli-logjson";
    let out = l4lb()
        .args(["--log-format", "json", "--log-level", "info", "--"])
        .args(["--no-huge", "--no-pci", &format!("--file-prefix={prefix}")])
        .arg("--no-such-eal-option")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let first = lines
        .first()
        .unwrap_or_else(|| panic!("no JSON line: {stderr}"));
    assert_eq!(first["level"], "INFO", "{first}");
    assert_eq!(first["target"], "l4lb", "{first}");
    assert_eq!(first["message"], "starting EAL", "{first}");
    assert!(
        first["args"]
            .as_str()
            .unwrap()
            .contains("--no-such-eal-option")
    );
    assert!(
        first["timestamp"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );

    let out = l4lb().args(["--log-format", "xml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("invalid value 'xml' for '--log-format <FORMAT>'")
            && stderr.contains("[possible values: text, json]"),
        "{stderr}"
    );
}

#[test]
fn every_example_passes_check_and_uses_the_kernel_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["one-arm-dr.toml", "tun.toml", "two-arm-nat.toml"]);
    for name in names {
        let path = dir.join(&name);
        let out = l4lb()
            .arg("--check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.contains("configuration is valid"),
            "{name}: {stdout}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("kernel_interface = "), "{name}");
        assert!(text.contains("health_check = "), "{name}");
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/l4lb.service"))
            .unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "AssertPathIsMountPoint=/dev/hugepages",
        "AssertPathExists=/dev/vfio/vfio",
        "ExecStartPre=/usr/bin/l4lb --check --config /etc/l4lb/l4lb.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    // systemd-analyze checks that the programs exist: the built one stands in for
    // /usr/bin/l4lb, nothing else changes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l4lb.service");
    let binary = env!("CARGO_BIN_EXE_l4lb");
    std::fs::write(&path, unit.replace("/usr/bin/l4lb", binary)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("l4lb.service"),
        "no complaint about the unit: {stderr}"
    );
    // A unit with a mistake is refused: the check can fail.
    std::fs::write(
        &path,
        unit.replace("/usr/bin/l4lb", binary)
            .replace("Type=notify", "Type=notyfy"),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Failed to parse service type"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
