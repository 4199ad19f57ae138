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
