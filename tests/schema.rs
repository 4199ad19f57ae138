//! The OpenAPI document against the server it describes. schemathesis (scripts/install-deps
//! puts it in /opt/l4lb-test/venv) reads the document the real binary serves, generates
//! requests from it, valid and invalid, sends them with the token, and checks each answer
//! against the document: only listed status codes, bodies of the documented schemas, no
//! server error that is not documented, invalid input refused, nothing accepted without the
//! token. Bounded in examples and time, with a fixed seed.

mod common;

use std::time::Duration;

use common::{Appliance, eal_args, file_prefix};

const SCHEMATHESIS: &str = "/opt/l4lb-test/venv/bin/st";
const TOKEN: &str = "schema-token";

const CONFIG: &str = r#"
[dpdk]
idle_sleep_us = 1000
rx_desc = 256
tx_desc = 256
flow_capacity = 1024
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "198.18.1.1/24"]
[api]
token = "schema-token"
[[services]]
id = "web"
vip = "198.18.0.100"
port = 80
[[services.backends]]
id = "b1"
address = "198.18.1.10"
"#;

#[test]
fn the_openapi_document_matches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("l4lb.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let prefix = file_prefix("schema");
    // A namespace with nothing but its loopback: the services schemathesis makes may have
    // health checks of any address, and their probes must go nowhere.
    let ns = harness::netns::Namespace::create(&prefix).unwrap();
    let app = Appliance::start_in(
        &ns,
        &cfg,
        &prefix,
        &eal_args(&prefix, "0", &["--vdev=net_null0,no-rx=1".to_string()]),
    );
    let base = app.api_base(Duration::from_secs(60));
    let run = |phases: &str, only_replace: bool, seconds: &str| {
        let mut cmd = ns.command(SCHEMATHESIS);
        cmd.args(["run", &format!("{base}/api/v1/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--checks", "all", "--max-examples", "10", "--seed", "1"])
            // Schema-valid is not always valid: a Maglev size must be prime, a backend of the
            // service's family, a VIP not an interface's address, an id free. The document says
            // so in words; the server answers 422 naming the field, which this check would call
            // a failure. Every other check runs.
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--phases", phases])
            .args(["--workers", "1", "--max-time", seconds, "--no-color"])
            .args(["--report-dir"])
            .arg(dir.path().join(format!("report-{only_replace}")));
        // PUT /api/v1/services replaces every service: a stateful sequence that creates one,
        // then replaces them all, finds the one it created gone and calls that a failure. So
        // PUT runs on its own, without the stateful phase.
        if only_replace {
            cmd.args(["--include-name", "PUT /api/v1/services"]);
        } else {
            cmd.args(["--exclude-name", "PUT /api/v1/services"]);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{SCHEMATHESIS} (scripts/install-deps installs it): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // The summary (operations, phases, cases generated) in the test's output.
        let summary = stdout.lines().skip_while(|l| !l.contains("SUMMARY"));
        eprintln!("{}", summary.collect::<Vec<_>>().join("\n"));
        (out, stdout)
    };
    let runs = [
        run("examples,coverage,fuzzing,stateful", false, "80"),
        run("examples,coverage,fuzzing", true, "15"),
    ];
    let done = app.signal_and_wait("TERM", Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(0), "stderr:\n{}", done.stderr);
    for (out, stdout) in &runs {
        assert!(
            out.status.success(),
            "schemathesis found the document and the server apart:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Tested:"), "it tested something:\n{stdout}");
    }
}
