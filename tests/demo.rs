//! The README's first command: `l4lb-demo` (what `scripts/run` runs) balances 1000 HTTP
//! requests through l4lb in namespaces and says so; bounded (`--once`) it stops by itself,
//! held it stops on Ctrl-C (SIGINT); either way no namespace, veth or process is left.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_l4lb-demo"))
}

/// Namespaces and processes of the demo tagged `tag` still there.
fn left_behind(tag: &str) -> Vec<String> {
    let prefix = format!("l4lb-{tag}");
    let mut left = harness::netns::list(&format!("{prefix}-"));
    let ps = Command::new("pgrep")
        .args(["-af", &format!("{prefix}[ -]")])
        .output()
        .unwrap();
    left.extend(
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| !l.contains("pgrep"))
            .map(str::to_string),
    );
    if harness::runtime_dir(&prefix).exists() {
        left.push(format!("EAL folder of {prefix}"));
    }
    left
}

#[test]
fn the_demo_balances_1000_requests_and_leaves_nothing() {
    let out = demo()
        .args(["--once", "--tag", "t-demo1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\ndemo: 1000/1000 requests ok\n"),
        "{stdout}"
    );
    for b in ["b1", "b2", "b3"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(b) && l.contains("198.18.1.")),
            "a row for {b}: {stdout}"
        );
    }
    assert!(
        stdout.contains("l4lb: stopped after"),
        "l4lb's counters at the end: {stdout}"
    );
    assert_eq!(left_behind("t-demo1"), Vec::<String>::new());
}

#[test]
fn ctrl_c_stops_the_demo_and_removes_what_it_made() {
    let mut child = demo()
        .args(["--tag", "t-demo2", "--requests", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push_str(&l);
        seen.push('\n');
        if l.starts_with("Ctrl-C stops") || Instant::now() > deadline {
            break;
        }
    }
    assert!(seen.contains("demo: 100/100 requests ok"), "{seen}");
    assert!(
        seen.contains("ip netns exec l4lb-t-demo2-c1 curl"),
        "{seen}"
    );
    assert!(
        !harness::netns::list("l4lb-t-demo2-").is_empty(),
        "running: its namespaces are there"
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}{}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l.starts_with("demo: removed")),
        "{}",
        rest.join("\n")
    );
    assert_eq!(left_behind("t-demo2"), Vec::<String>::new());
}
