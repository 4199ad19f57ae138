//! A smoke run of `l4lb bench --compare`: it runs the appliance and dpdk-testpmd on the same
//! vdevs and produces figures. How large they are is for BENCHMARKS.md, never for a test.

use std::process::Command;

#[test]
fn bench_compare_produces_figures_for_both() {
    let out = Command::new(env!("CARGO_BIN_EXE_l4lb"))
        .args([
            "bench",
            "--compare",
            "--json",
            "--flows",
            "512",
            "--seconds",
            "1",
            "--warmup",
            "0.3",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run l4lb bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr:\n{stderr}");
    assert!(
        stderr.contains("l4lb: ") && stderr.contains(" Mpps"),
        "a progress line: {stderr}"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(r["case"]["flows"], 512);
    assert_eq!(r["case"]["mode"], "nat");
    let tx = r["l4lb"]["ports"][1]["tx_pps"].as_f64().unwrap();
    assert!(tx > 0.0, "l4lb forwarded nothing: {r}");
    assert_eq!(
        r["l4lb"]["workers"][0]["flows"], 512,
        "every flow in the table"
    );
    for mode in ["io", "macswap", "5tswap"] {
        let t = r["testpmd"][mode]["tx_pps"].as_f64().unwrap_or(0.0);
        assert!(t > 0.0, "testpmd {mode} forwarded nothing: {r}");
        let ratio = r["ratio_to_testpmd"][mode].as_f64().unwrap();
        assert!(
            (ratio - tx / t).abs() < 1e-9,
            "the ratio is l4lb over testpmd"
        );
    }
}

#[test]
fn bench_with_an_idle_kernel_path_runs_in_a_namespace_of_its_own() {
    let out = Command::new(env!("CARGO_BIN_EXE_l4lb"))
        .args([
            "bench",
            "--kernel-interface",
            "--json",
            "--flows",
            "512",
            "--seconds",
            "1",
            "--warmup",
            "0.3",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run l4lb bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr:\n{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(r["case"]["kernel_interface"], true);
    assert!(
        r["l4lb"]["ports"][1]["tx_pps"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert_eq!(r["l4lb"]["drop_share"], serde_json::json!({}), "{r}");
    // Its namespace (and the kernel interfaces in it) are gone.
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&netns.stdout);
    assert!(!left.contains("l4lb-bench-"), "{left}");
}

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_l4lb"))
        .arg("bench")
        .args(args)
        .args(["--json", "--seconds", "1", "--warmup", "0.3"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run l4lb bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: stderr:\n{stderr}");
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn bench_replies_are_the_backends_answers_out_of_port_0_with_the_default_table() {
    let r = bench(&[
        "--replies",
        "--flows",
        "256",
        "--compare",
        "--testpmd-modes",
        "5tswap",
    ]);
    assert_eq!(r["case"]["replies"], true);
    let l = &r["l4lb"];
    // The appliance's default table, and why.
    assert_eq!(l["flow_capacity"], 1_048_576, "{r}");
    assert_eq!(l["flow_capacity_why"], "the appliance's default");
    assert_eq!(l["flow_entries"], 256, "one flow per first packet");
    // Replies come in on port 1 and leave by port 0; nothing goes out of port 1 once the
    // flows are made, and no reply opens a flow or is dropped.
    let out = l["out_pps"].as_f64().unwrap();
    assert!(out > 0.0, "{r}");
    assert_eq!(out, l["ports"][0]["tx_pps"].as_f64().unwrap());
    assert_eq!(l["ports"][1]["tx_pps"].as_f64().unwrap(), 0.0, "{r}");
    assert_eq!(l["new_flow_share"].as_f64().unwrap(), 0.0, "{r}");
    assert!(l["drop_share"].as_object().unwrap().is_empty(), "{r}");
    let t = r["testpmd"]["5tswap"]["tx_pps"].as_f64().unwrap();
    assert!((r["ratio_to_testpmd"]["5tswap"].as_f64().unwrap() - out / t).abs() < 1e-9);
}

#[test]
fn bench_tunnels_of_each_type_and_a_chosen_table_size() {
    for tunnel in ["gue", "gre"] {
        let r = bench(&[
            "--mode",
            "tun",
            "--tunnel",
            tunnel,
            "--flows",
            "256",
            "--flow-capacity",
            "4096",
        ]);
        assert_eq!(r["case"]["tunnel"], tunnel);
        assert_eq!(r["l4lb"]["flow_capacity"], 4096, "{r}");
        assert_eq!(r["l4lb"]["flow_capacity_why"], "--flow-capacity");
        assert!(r["l4lb"]["out_pps"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["l4lb"]["drop_share"].as_object().unwrap().is_empty(),
            "{tunnel}: {r}"
        );
    }
}

/// `l4lb bench --json` for a second at 256 flows, changing the configuration every 20 ms in
/// the way `how` says; its report.
fn republishing_bench(how: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_l4lb"))
        .args([
            "bench",
            "--json",
            "--flows",
            "256",
            "--seconds",
            "1",
            "--warmup",
            "0.2",
            "--republish-ms",
            "20",
        ])
        .args(how)
        .env_remove("RUST_LOG")
        .output()
        .expect("run l4lb bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr:\n{stderr}");
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn bench_republishes_through_the_api_and_reports_how_soon_each_change_was_live() {
    let r = republishing_bench(&["--scheduler", "maglev", "--republish-weights", "3"]);
    let p = &r["l4lb"]["publish"];
    assert_eq!(p["weights"], 3, "{p}");
    // One change every 20 ms for a second, each answered once live: 50 at most.
    let count = p["count"].as_u64().unwrap();
    assert!((5..=51).contains(&count), "{count} publishes: {p}");
    let (p50, p99, max) = (
        p["p50_us"].as_u64().unwrap(),
        p["p99_us"].as_u64().unwrap(),
        p["max_us"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{p}");
    assert_eq!(
        r["l4lb"]["drop_share"].as_object().map(|d| d.len()),
        Some(0),
        "nothing dropped while the weights changed: {r}"
    );
}

#[test]
fn bench_takes_each_backend_out_and_back_in_turn() {
    let r = republishing_bench(&["--republish-out"]);
    let p = &r["l4lb"]["publish"];
    assert_eq!(p["out"], true, "{p}");
    let count = p["count"].as_u64().unwrap();
    assert!((5..=51).contains(&count), "{count} publishes: {p}");
    // A backend at weight 0 takes no new flow, but its established flows stay: nothing is
    // dropped while backends go out and come back.
    assert_eq!(
        r["l4lb"]["drop_share"].as_object().map(|d| d.len()),
        Some(0),
        "nothing dropped: {r}"
    );
}
