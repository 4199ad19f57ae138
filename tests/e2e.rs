//! End to end: real kernel TCP and UDP stacks on both sides of l4lb, in network namespaces
//! (`harness::lab`): a client and three backends on one bridge with the appliance on
//! `net_af_packet`, backends set up for NAT, DR or TUN as an operator would (docs/lab.md).
//! Every request must succeed, the split must match the scheduler, 100 MB must arrive intact
//! (SHA-256), closed VIP ports must refuse at once, and the first connection after start must
//! not wait for a neighbour.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use harness::lab::{self, Lab, Mode};
use sha2::{Digest, Sha256};

mod common;
use common::lab::{TIMEOUT, assert_all_ok, binary, http, service, start, start_with, vip4, vip6};

/// Sends `bytes` of pseudo-random data to the backend's SHA-256 sink through `to`; returns the
/// local digest and the sink's answer (digest, length, backend).
fn upload(lab: &Lab, to: SocketAddr, bytes: usize) -> (String, String) {
    lab.clients[0]
        .enter(move || {
            let mut s = TcpStream::connect_timeout(&to, TIMEOUT).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(b"SHA256\n").unwrap();
            let mut h = Sha256::new();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut chunk = vec![0u8; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                for c in chunk.chunks_mut(8) {
                    // xorshift64: data no layer could compress or guess
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
                }
                let k = left.min(chunk.len());
                h.update(&chunk[..k]);
                s.write_all(&chunk[..k]).expect("send");
                left -= k;
            }
            s.shutdown(Shutdown::Write).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("the sink's answer");
            (format!("{:x}", h.finalize()), answer.trim().to_string())
        })
        .unwrap()
}

fn check_upload(lab: &Lab, to: SocketAddr, bytes: usize) {
    let t = Instant::now();
    let (digest, answer) = upload(lab, to, bytes);
    let mut parts = answer.split_whitespace();
    assert_eq!(
        parts.next(),
        Some(digest.as_str()),
        "SHA-256 through {to}: {answer}"
    );
    assert_eq!(
        parts.next(),
        Some(bytes.to_string().as_str()),
        "length: {answer}"
    );
    eprintln!(
        "{} MB through {to} to {} in {:.2} s",
        bytes >> 20,
        parts.next().unwrap_or("?"),
        t.elapsed().as_secs_f64()
    );
}

/// The client's TCP retransmissions so far (RetransSegs of /proc/net/snmp in its namespace).
fn retransmissions(lab: &Lab) -> u64 {
    let out = lab.clients[0].sh("cat /proc/net/snmp").unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let values: Vec<&str> = tcp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RetransSegs").unwrap();
    values[i].parse().unwrap()
}

#[test]
fn nat_carries_tcp_and_udp_in_both_families_from_the_first_packet() {
    let lab = start(
        "e2e-nat",
        Mode::Nat,
        &[
            service(
                "web",
                "tcp",
                (lab::VIP4, 80),
                "rr",
                Mode::Nat,
                8080,
                &[1, 1, 1],
            ),
            service(
                "web6",
                "tcp",
                (lab::VIP6, 80),
                "rr",
                Mode::Nat,
                8080,
                &[1, 1, 1],
            ),
            service(
                "dns",
                "udp",
                (lab::VIP4, 53),
                "rr",
                Mode::Nat,
                53,
                &[1, 1, 1],
            ),
        ],
    );
    // Right after start (no static neighbours): the first query and the first connection to
    // each backend find their neighbours resolved; nothing is retransmitted.
    let retrans_before = retransmissions(&lab);
    let first_udp = lab.clients[0]
        .enter(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let t = Instant::now();
            s.send_to(b"first", vip4(53)).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = s
                .recv_from(&mut buf)
                .expect("the first query answered, not retried");
            (
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                from,
                t.elapsed(),
            )
        })
        .unwrap();
    assert_eq!(first_udp.0, "b1 first");
    assert_eq!(first_udp.1, vip4(53), "the answer comes from the VIP");
    let firsts = lab.clients[0]
        .enter(|| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let r =
                        lab::http_get(vip4(80), "/", TIMEOUT).map(|(_, b)| b.trim().to_string());
                    (r.ok(), t.elapsed())
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    for (i, (who, took)) in firsts.iter().enumerate() {
        assert_eq!(who.as_deref(), Some(format!("b{}", i + 1).as_str()));
        assert!(
            *took < Duration::from_millis(200),
            "first connection to b{}: {took:?}",
            i + 1
        );
        eprintln!(
            "first connection to b{}: {:.1} ms",
            i + 1,
            took.as_secs_f64() * 1e3
        );
    }
    eprintln!("first UDP query: {:.1} ms", first_udp.2.as_secs_f64() * 1e3);
    assert_eq!(
        retransmissions(&lab) - retrans_before,
        0,
        "no SYN was retransmitted"
    );

    // 997 more over IPv4 (1000 with the first three): round robin splits them exactly.
    let (per, failed) = http(&lab, vip4(80), 997, 20000);
    assert_all_ok(&failed, &lab);
    let counts: Vec<usize> = per.values().map(|c| c + 1).collect();
    assert_eq!(per.keys().collect::<Vec<_>>(), ["b1", "b2", "b3"]);
    assert_eq!(
        counts,
        [334, 333, 333],
        "rr over 1000 requests\n{}\n{}",
        lab.api_get("/api/v1/stats")
            .map(|r| r.1)
            .unwrap_or_default(),
        lab.l4lb_log()
    );

    // IPv6 VIP and backends.
    let (per, failed) = http(&lab, vip6(80), 300, 22000);
    assert_all_ok(&failed, &lab);
    assert_eq!(per.values().copied().collect::<Vec<_>>(), [100, 100, 100]);

    // UDP from many client ports: every answer from the VIP, from the backend rr picks.
    let answers = lab.clients[0]
        .enter(|| {
            (0..300)
                .map(|i| {
                    // A port of its own: one used before would meet its earlier flow.
                    let s = UdpSocket::bind(("0.0.0.0", 30000 + i as u16)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    s.send_to(format!("q{i}").as_bytes(), vip4(53)).unwrap();
                    let mut buf = [0u8; 64];
                    s.recv_from(&mut buf)
                        .map(|(n, from)| (String::from_utf8_lossy(&buf[..n]).into_owned(), from))
                        .map_err(|e| format!("query {i}: {e}"))
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    let mut per = BTreeMap::<String, usize>::new();
    for (i, a) in answers.iter().enumerate() {
        let (text, from) = a.as_ref().unwrap();
        assert_eq!(*from, vip4(53), "query {i}");
        let (who, echo) = text.split_once(' ').unwrap();
        assert_eq!(echo, format!("q{i}"));
        *per.entry(who.to_string()).or_default() += 1;
    }
    assert_eq!(per.values().copied().collect::<Vec<_>>(), [100, 100, 100]);

    check_upload(&lab, vip4(80), 100 << 20);
    check_upload(&lab, vip6(80), 20 << 20);
    closed_ports_refuse(&lab);
}

/// TCP to a VIP port without a service is refused at once (a reset), UDP gets port
/// unreachable, in both families.
fn closed_ports_refuse(lab: &Lab) {
    let results = lab.clients[0]
        .enter(|| {
            let mut out = Vec::new();
            for to in [vip4(81), vip6(81)] {
                let t = Instant::now();
                let e = TcpStream::connect_timeout(&to, TIMEOUT)
                    .map(|_| ())
                    .unwrap_err();
                out.push((to, e.kind(), t.elapsed()));
                let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
                s.connect(to).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                let t = Instant::now();
                s.send(b"anyone?").unwrap();
                let e = s.recv(&mut [0u8; 16]).unwrap_err();
                out.push((to, e.kind(), t.elapsed()));
            }
            out
        })
        .unwrap();
    for (to, kind, took) in results {
        assert_eq!(kind, std::io::ErrorKind::ConnectionRefused, "{to}");
        assert!(took < Duration::from_millis(500), "{to}: {took:?}");
    }
    let (_, stats) = lab.api_get("/api/v1/stats").unwrap();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["closed_ports"]["tcp_resets"], 2, "{stats}");
    assert_eq!(v["closed_ports"]["port_unreachables"], 2);
}

#[test]
fn direct_routing_splits_by_weight_and_carries_100_mb() {
    let lab = start(
        "e2e-dr",
        Mode::Dr,
        &[service(
            "web",
            "tcp",
            (lab::VIP4, 80),
            "wrr",
            Mode::Dr,
            80,
            &[1, 2, 3],
        )],
    );
    let (per, failed) = http(&lab, vip4(80), 1000, 20000);
    assert_all_ok(&failed, &lab);
    for (b, want) in [("b1", 1.0 / 6.0), ("b2", 2.0 / 6.0), ("b3", 3.0 / 6.0)] {
        let share = per[b] as f64 / 1000.0;
        assert!(
            (share - want).abs() <= 0.02,
            "{b}: {share} of the requests, want {want:.3} ±0.02: {per:?}"
        );
    }
    check_upload(&lab, vip4(80), 100 << 20);
}

#[test]
fn tunnels_carry_both_families_and_fit_the_mtu() {
    let lab = start(
        "e2e-tun",
        Mode::Tun,
        &[
            service(
                "web",
                "tcp",
                (lab::VIP4, 80),
                "maglev",
                Mode::Tun,
                80,
                &[1, 1, 1],
            ),
            service(
                "web6",
                "tcp",
                (lab::VIP6, 80),
                "maglev",
                Mode::Tun,
                80,
                &[1, 1, 1],
            ),
        ],
    );
    let (per, failed) = http(&lab, vip4(80), 1000, 20000);
    assert_all_ok(&failed, &lab);
    assert_eq!(per.len(), 3, "{per:?}");
    for (b, n) in &per {
        let share = *n as f64 / 1000.0;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.10,
            "{b}: {share} of the requests: {per:?}"
        );
    }
    let (per, failed) = http(&lab, vip6(80), 300, 22000);
    assert_all_ok(&failed, &lab);
    assert_eq!(per.values().sum::<usize>(), 300);
    // Full-size segments do not fit in a tunnel on a 1500-byte link: l4lb answers "too big"
    // and the client's TCP sends smaller ones.
    check_upload(&lab, vip4(80), 100 << 20);
    check_upload(&lab, vip6(80), 20 << 20);
    let (_, stats) = lab.api_get("/api/v1/stats").unwrap();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(
        v["actions"]["replied"].as_u64().unwrap() >= 2,
        "too-big answers: {stats}"
    );
}

/// One connection of the steady load: when it started and ended (from the load's start), the
/// backend that answered, and what went wrong, if anything.
#[derive(Debug)]
struct Conn {
    start: Duration,
    end: Duration,
    backend: Option<String>,
    error: Option<String>,
}

/// One echo connection through `to`: the backend's name, then `lines` lines a `gap` apart,
/// each echoed back.
fn echo_connection(to: SocketAddr, lines: usize, gap: Duration, t0: Instant) -> Conn {
    let start = t0.elapsed();
    let mut backend = None;
    let r = (|| -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.write_all(b"ECHO\n")?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut name = String::new();
        r.read_line(&mut name)?;
        if name.is_empty() {
            return Err(std::io::Error::other("closed before the name"));
        }
        backend = Some(name.trim().to_string());
        for k in 0..lines {
            std::thread::sleep(gap);
            let line = format!("line {k}\n");
            s.write_all(line.as_bytes())?;
            let mut back = String::new();
            r.read_line(&mut back)?;
            if back != line {
                return Err(std::io::Error::other(format!("echo {back:?} for {line:?}")));
            }
        }
        Ok(())
    })();
    Conn {
        start,
        end: t0.elapsed(),
        backend,
        error: r.err().map(|e| e.to_string()),
    }
}

#[test]
fn live_changes_under_load_break_no_connection_but_a_deleted_backends() {
    // b1-b3 configured; b4 is added under load.
    let lab = start_with(
        "e2e-live",
        Mode::Nat,
        4,
        "",
        &[service(
            "web",
            "tcp",
            (lab::VIP4, 80),
            "wrr",
            Mode::Nat,
            8080,
            &[1, 1, 1],
        )],
    );
    let ctl = binary("l4lb").with_file_name("l4lbctl");
    let b4 = format!("{}:8080", lab::backend4(3));
    // (seconds into the load, the change)
    let changes: Vec<(u64, Vec<&str>)> = vec![
        (3, vec!["add-backend", "web", "b4", "-r", &b4, "-w", "1"]),
        (6, vec!["edit-backend", "web", "b2", "-w", "0"]),
        (9, vec!["edit-backend", "web", "b1", "-w", "2"]),
        (11, vec!["edit-service", "web", "-s", "maglev"]),
        (14, vec!["edit-backend", "web", "b3", "--disable"]),
        (17, vec!["delete-backend", "web", "b1"]),
    ];
    // 50 new connections a second for 20 s, each echoing ten lines over two seconds.
    const RATE: u32 = 50;
    const SECONDS: u32 = 20;
    let t0 = Instant::now();
    let (conns, applied) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            lab.clients[0]
                .enter(move || {
                    let threads: Vec<_> = (0..RATE * SECONDS)
                        .map(|i| {
                            let due = t0 + Duration::from_secs(1) * i / RATE;
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            std::thread::spawn(move || {
                                echo_connection(vip4(80), 10, Duration::from_millis(200), t0)
                            })
                        })
                        .collect();
                    threads
                        .into_iter()
                        .map(|t| t.join().unwrap())
                        .collect::<Vec<Conn>>()
                })
                .unwrap()
        });
        let mut applied = Vec::new();
        for (at, args) in &changes {
            std::thread::sleep(
                (t0 + Duration::from_secs(*at)).saturating_duration_since(Instant::now()),
            );
            // When the change was asked for (a connection it breaks may end before the
            // answer) and when it was answered (live from then on).
            let asked = t0.elapsed();
            let r = lab.in_lb(&ctl, args);
            applied.push((t0.elapsed(), args.join(" "), r, asked));
        }
        (load.join().unwrap(), applied)
    });
    for (when, what, r, _) in &applied {
        assert!(r.is_ok(), "{what} at {when:?}: {r:?}");
    }
    let at = |i: usize| applied[i].0;
    let deleted = at(5);
    let delete_asked = applied[5].3;
    assert_eq!(conns.len(), (RATE * SECONDS) as usize);
    let mut broken = 0;
    for c in &conns {
        if let Some(e) = &c.error {
            // Only b1's connections alive when it was deleted may break.
            let b1_alive =
                c.backend.as_deref() == Some("b1") && c.start < deleted && c.end >= delete_asked;
            assert!(
                b1_alive,
                "{c:?} broke (b1 deleted at {deleted:?}): {e}\n{}",
                lab.l4lb_log()
            );
            broken += 1;
        }
    }
    let started = |from: Duration, to: Duration| {
        conns
            .iter()
            .filter(move |c| c.start > from + Duration::from_millis(100) && c.start < to)
    };
    let to = |b: &str, from, to_| {
        started(from, to_)
            .filter(|c| c.backend.as_deref() == Some(b))
            .count()
    };
    let end = Duration::from_secs(u64::from(SECONDS));
    assert!(to("b4", at(0), end) > 0, "b4 takes new flows once added");
    assert_eq!(to("b2", at(1), end), 0, "drained b2 takes no new flows");
    assert_eq!(to("b3", at(4), end), 0, "disabled b3 takes no new flows");
    assert_eq!(to("b1", at(5), end), 0, "deleted b1 takes no new flows");
    let after = started(deleted, end).count();
    assert!(after > 50, "new connections after the delete: {after}");
    // Connections established on b2 before the drain carried on (drain keeps flows).
    assert!(
        conns.iter().any(|c| c.backend.as_deref() == Some("b2")
            && c.start < at(1)
            && c.end > at(1)
            && c.error.is_none()),
        "a b2 connection lived through the drain"
    );
    eprintln!(
        "{} connections, {broken} broken (b1's when it was deleted), {after} started after the delete",
        conns.len()
    );
}

#[test]
fn an_idle_connection_expires_and_its_next_segment_is_scheduled_anew() {
    // tcp_established = 2 s: a connection idle for 4 s has lost its flow. Its next segment
    // has no SYN: l4lb schedules it as a mid-stream flow (IPVS with sloppy_tcp = 1 does the
    // same; with 0 its director answers a reset). Maglev picks the same backend from the
    // tuple, so the connection carries on; round robin picks the next backend, whose kernel
    // knows no such connection and resets it.
    let lab = start_with(
        "e2e-idle",
        Mode::Nat,
        3,
        "[timeouts]\ntcp_established = 2\n",
        &[
            service(
                "web",
                "tcp",
                (lab::VIP4, 80),
                "maglev",
                Mode::Nat,
                8080,
                &[1, 1, 1],
            ),
            service(
                "web-rr",
                "tcp",
                (lab::VIP4, 81),
                "rr",
                Mode::Nat,
                8080,
                &[1, 1, 1],
            ),
        ],
    );
    let (maglev, rr) = lab.clients[0]
        .enter(|| {
            let open = |port| {
                let s = TcpStream::connect_timeout(&vip4(port), TIMEOUT).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut w = s.try_clone().unwrap();
                w.write_all(b"ECHO\n").unwrap();
                let mut r = BufReader::new(s);
                let mut name = String::new();
                r.read_line(&mut name).unwrap();
                (w, r, name.trim().to_string())
            };
            let mut conns = [open(80), open(81)];
            std::thread::sleep(Duration::from_secs(4));
            conns
                .iter_mut()
                .map(|(w, r, name)| {
                    let sent = w.write_all(b"after the idle time\n");
                    let mut back = String::new();
                    let got = sent.and_then(|_| r.read_line(&mut back));
                    (name.clone(), got.map(|_| back).map_err(|e| e.kind()))
                })
                .collect::<Vec<_>>()
        })
        .map(|v| (v[0].clone(), v[1].clone()))
        .unwrap();
    assert_eq!(
        maglev.1,
        Ok("after the idle time\n".to_string()),
        "maglev: the same backend carries on"
    );
    assert_eq!(rr.0, "b1");
    assert_eq!(
        rr.1,
        Err(std::io::ErrorKind::ConnectionReset),
        "rr: the next backend resets it"
    );
    let (_, stats) = lab.api_get("/api/v1/stats").unwrap();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(
        v["flows"]["expired"].as_u64().unwrap() >= 2,
        "both flows expired: {stats}"
    );
    let b2 = &v["services"][1]["backends"][1];
    assert_eq!(b2["id"], "b2");
    assert_eq!(
        b2["new_flows"], 1,
        "the rr segment went to b2 as a new (mid-stream) flow: {stats}"
    );
}

#[test]
fn a_backend_whose_neighbour_never_answers_is_taken_out_and_its_clients_go_elsewhere() {
    // b1-b3 answer; "gone" (198.18.1.99) is configured but nobody has that address. Its
    // first connections are held, then (three unanswered ARP requests, ~3 s) it fails: its
    // flows go, it takes no new ones, and the clients' retried SYNs reach live backends.
    let mut web = service(
        "web",
        "tcp",
        (lab::VIP4, 80),
        "rr",
        Mode::Nat,
        8080,
        &[1, 1, 1],
    );
    web.push_str("[[services.backends]]\nid = \"gone\"\naddress = \"198.18.1.99\"\nport = 8080\n");
    let lab = start_with("e2e-gone", Mode::Nat, 3, "", &[web]);
    let t0 = Instant::now();
    let answers = lab.clients[0]
        .enter(move || {
            (0..40)
                .map(|_| {
                    let start = t0.elapsed();
                    let r = lab::http_get(vip4(80), "/", Duration::from_secs(15));
                    (
                        start,
                        t0.elapsed(),
                        r.map(|(_, b)| b.trim().to_string())
                            .map_err(|e| e.to_string()),
                    )
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    for (start, end, r) in &answers {
        assert!(
            r.is_ok(),
            "a request from {start:?} to {end:?}: {r:?}\n{}",
            lab.l4lb_log()
        );
    }
    // The fourth went to "gone" first, and waited for its failure (and a SYN retry).
    let slow: Vec<_> = answers
        .iter()
        .filter(|(s, e, _)| *e - *s > Duration::from_millis(500))
        .collect();
    assert_eq!(slow.len(), 1, "{answers:?}");
    let (_, stats) = lab.api_get("/api/v1/stats").unwrap();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let gone = &v["services"][0]["backends"][3];
    assert_eq!(gone["id"], "gone");
    assert_eq!(gone["neighbor"], "failed", "{stats}");
    assert_eq!(gone["neighbor_failures"], 1);
    assert_eq!(gone["weight"], 1, "its configured weight stays");
    let live: u64 = (0..3)
        .map(|i| {
            v["services"][0]["backends"][i]["new_flows"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(live, 40, "every request served by b1-b3: {stats}");
    assert!(v["actions"]["held"].as_u64().unwrap() >= 1, "{stats}");
    let metrics = lab.api_get("/metrics").unwrap().1;
    assert!(
        metrics.contains("l4lb_backend_neighbor_failed{service=\"web\",backend=\"gone\"} 1"),
        "{metrics}"
    );
    assert!(lab.l4lb_log().contains("neighbour failed"), "logged");
}
