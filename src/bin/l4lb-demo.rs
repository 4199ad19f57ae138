//! l4lb-demo: l4lb balancing real HTTP in network namespaces, in one command (`scripts/run`).
//! It builds a lab (a client, three backends behind l4lb in NAT mode, all on one bridge),
//! starts l4lb on `conf/demo.toml`, sends HTTP requests through the VIP, prints which backend
//! answered each and the appliance's counters, then keeps running with the commands to play
//! with it until Ctrl-C, which removes everything it made.
//!
//! It is also what the end-to-end tests run inside their namespaces: `serve` (the backends'
//! servers) and `decap` (a user-space IPIP / IPv6-in-IPv6 decapsulator for kernels without
//! those tunnel drivers).
#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use harness::lab::{self, Lab, Mode, Spec};
use sha2::{Digest, Sha256};

/// The demo's configuration (the lab's addresses; see the file's comments).
const DEMO_CONFIG: &str = include_str!("../../conf/demo.toml");

#[derive(Debug, Parser)]
#[command(
    name = "l4lb-demo",
    about = "l4lb balancing HTTP between three backends in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// HTTP requests to send through the VIP.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Stop after the requests and the report (and remove everything) instead of running on.
    #[arg(long)]
    once: bool,
    /// Names: namespaces `l4lb-<tag>-...`, EAL file prefix `l4lb-<tag>`.
    #[arg(long, default_value = "demo")]
    tag: String,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// A backend's servers: HTTP and TCP on ports 80 and 8080 (all addresses), UDP echo on
    /// port 53 of each `--udp` address. HTTP answers its name (`GET /bytes/N`: N bytes); a
    /// connection that starts with `ECHO` gets its name, then every line back; one that starts
    /// with `SHA256` gets the SHA-256 of everything after that line once the client shuts its
    /// side. UDP answers `<name> <payload>`.
    Serve {
        /// The lab it belongs to (shown in `ps`, nothing else).
        #[arg(long)]
        lab: Option<String>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        udp: Vec<IpAddr>,
    },
    /// Receives IPIP (IP protocol 4) and IPv6-in-IPv6 (next header 41) and hands each inner
    /// packet to the local stack, as the kernel's tunnel drivers would.
    Decap {
        /// The lab it belongs to (shown in `ps`, nothing else).
        #[arg(long)]
        lab: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Some(Sub::Serve { name, udp, .. }) => serve(&name, &udp),
        Some(Sub::Decap { .. }) => decap(),
        None => demo(&cli),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("l4lb-demo: {e}");
            ExitCode::from(1)
        }
    }
}

// ------------------------------------------------------------------------------- serve

fn serve(name: &str, udp: &[IpAddr]) -> Result<ExitCode, String> {
    let name: Arc<str> = Arc::from(name);
    let mut threads = Vec::new();
    for port in [80, 8080] {
        let l = TcpListener::bind(("::", port)).map_err(|e| format!("tcp port {port}: {e}"))?;
        let name = Arc::clone(&name);
        threads.push(std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let name = Arc::clone(&name);
                std::thread::spawn(move || {
                    let _ = connection(s, &name);
                });
            }
        }));
    }
    for a in udp {
        let s = UdpSocket::bind((*a, 53)).map_err(|e| format!("udp {a}:53: {e}"))?;
        let name = Arc::clone(&name);
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let mut answer = format!("{name} ").into_bytes();
                answer.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&answer, from);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(ExitCode::SUCCESS)
}

fn connection(s: TcpStream, name: &str) -> std::io::Result<()> {
    let mut out = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first)?;
    if first.starts_with("GET ") {
        let mut line = String::new();
        while r.read_line(&mut line)? > 2 {
            line.clear();
        }
        let path = first.split_whitespace().nth(1).unwrap_or("/");
        let body = match path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => pattern(n),
            None => format!("{name}\n").into_bytes(),
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {name}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        out.write_all(&body)?;
    } else if first == "ECHO\n" {
        writeln!(out, "{name}")?;
        let mut line = String::new();
        while r.read_line(&mut line)? > 0 {
            out.write_all(line.as_bytes())?;
            line.clear();
        }
    } else if first == "SHA256\n" {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            h.update(&buf[..n]);
        }
        writeln!(out, "{:x} {total} {name}", h.finalize())?;
    }
    Ok(())
}

/// `n` bytes of a pattern a receiver can check (byte i is i mod 251).
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

// ------------------------------------------------------------------------------- decap

fn decap() -> Result<ExitCode, String> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let raw = |domain: Domain, proto: i32| {
        Socket::new(domain, Type::RAW, Some(Protocol::from(proto)))
            .map_err(|e| format!("raw socket ({domain:?}, protocol {proto}): {e}"))
    };
    // IPPROTO_RAW sockets send whole packets (the header included) to their destination,
    // here a local address: the kernel delivers them to its own stack.
    let (rx4, tx4) = (raw(Domain::IPV4, 4)?, raw(Domain::IPV4, 255)?);
    let (rx6, tx6) = (raw(Domain::IPV6, 41)?, raw(Domain::IPV6, 255)?);
    let v4 = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        // An IPv4 raw socket reads the outer header too.
        while let Ok(n) = (&rx4).read(&mut buf) {
            let outer = usize::from(buf[0] & 0x0f) * 4;
            let inner = &buf[outer.min(n)..n];
            if inner.len() >= 20 && inner[0] >> 4 == 4 {
                let dst: [u8; 4] = inner[16..20].try_into().expect("4");
                let to = SockAddr::from(SocketAddr::from((dst, 0)));
                let _ = tx4.send_to(inner, &to);
            }
        }
    });
    let v6 = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        // An IPv6 raw socket reads what follows the outer header: the inner packet.
        while let Ok(n) = (&rx6).read(&mut buf) {
            let inner = &buf[..n];
            if inner.len() >= 40 && inner[0] >> 4 == 6 {
                let dst: [u8; 16] = inner[24..40].try_into().expect("16");
                let to = SockAddr::from(SocketAddr::from((dst, 0)));
                let _ = tx6.send_to(inner, &to);
            }
        }
    });
    let _ = v4.join();
    let _ = v6.join();
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------------------- the demo

fn beside_me(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = me.with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is not there (cargo build --release builds it)",
            p.display()
        ))
    }
}

fn demo(cli: &Cli) -> Result<ExitCode, String> {
    let l4lb = beside_me("l4lb")?;
    let l4lbctl = beside_me("l4lbctl")?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    for s in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(s, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    println!("demo: building the lab (namespaces l4lb-{}-*)", cli.tag);
    let mut lab = Lab::build(&Spec {
        tag: cli.tag.clone(),
        mode: Mode::Nat,
        backends: 3,
        clients: 1,
        remove_on_signal: false,
    })?;
    lab.start_servers(&me)?;
    let config = DEMO_CONFIG.replace("l4lb-demo", &format!("l4lb-{}", cli.tag));
    println!(
        "demo: starting l4lb on conf/demo.toml in namespace {}",
        lab.lb.name()
    );
    lab.start_l4lb(&l4lb, &config)?;

    let n = cli.requests;
    let vip: SocketAddr = (lab::VIP4.parse::<IpAddr>().expect("VIP"), 80).into();
    println!(
        "demo: {n} HTTP requests to http://{vip}/ from namespace {}",
        lab.clients[0].name()
    );
    let started = Instant::now();
    let answers = lab.clients[0]
        .enter(move || {
            (0..n)
                .map(|_| lab::http_get(vip, "/", Duration::from_secs(3)))
                .collect::<Vec<_>>()
        })
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = BTreeMap::<String, usize>::new();
    for a in &answers {
        match a {
            Ok((200, body)) => *per_backend.entry(body.trim().to_string()).or_default() += 1,
            Ok((status, _)) => *failed.entry(format!("HTTP {status}")).or_default() += 1,
            Err(e) => *failed.entry(e.kind().to_string()).or_default() += 1,
        }
    }
    let ok: usize = per_backend.values().sum();
    println!();
    println!("  backend   address        requests   share");
    for (i, (b, k)) in per_backend.iter().enumerate() {
        println!(
            "  {b:<9} {:<14} {k:>8}   {:>5.1}%",
            lab::backend4(i),
            100.0 * *k as f64 / n.max(1) as f64
        );
    }
    for (why, k) in &failed {
        println!("  failed: {why}: {k}");
    }
    println!(
        "  ({:.2} s, {:.0} requests/s, one connection each)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64().max(1e-9)
    );
    println!();
    match lab.api_get("/api/v1/stats") {
        Ok((200, body)) => print_counters(&body),
        other => println!("demo: the stats did not come: {other:?}"),
    }
    println!("demo: {ok}/{n} requests ok");
    let all_ok = ok == n;
    if !cli.once {
        let (c, lb) = (lab.clients[0].name(), lab.lb.name());
        let ctl = l4lbctl.display();
        println!();
        println!("l4lb keeps running. Try, in another shell (as root):");
        println!("  ip netns exec {c} curl -s http://{}/", lab::VIP4);
        println!("  ip netns exec {lb} {ctl} list");
        println!("  ip netns exec {lb} {ctl} edit-backend web b2 -w 0      # drain b2");
        println!("  ip netns exec {lb} {ctl} edit-service web -s rr        # round robin");
        println!("  ip netns exec {lb} {ctl} stats");
        println!("  ip netns exec {lb} curl -s localhost:9180/metrics");
        println!("Ctrl-C stops l4lb and removes the namespaces.");
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!();
    }
    if let Some(done) = lab.stop_l4lb() {
        print!("{}", done.stdout);
    }
    drop(lab);
    println!("demo: removed the namespaces, l4lb and the servers");
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A few lines of `GET /api/v1/stats`: packets, new flows per backend, drops that happened.
fn print_counters(body: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        println!("demo: stats: {body}");
        return;
    };
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let a = &v["actions"];
    println!(
        "l4lb: forwarded={} replied={} held={} dropped={}",
        n(&a["forwarded"]),
        n(&a["replied"]),
        n(&a["held"]),
        n(&a["dropped"])
    );
    if let Some(drops) = v["drops"].as_object() {
        let nonzero: Vec<String> = drops
            .iter()
            .filter(|(_, c)| n(c) > 0)
            .map(|(r, c)| format!("{r}={}", n(c)))
            .collect();
        if !nonzero.is_empty() {
            println!("l4lb: drops {}", nonzero.join(" "));
        }
    }
    for s in v["services"].as_array().into_iter().flatten() {
        for b in s["backends"].as_array().into_iter().flatten() {
            println!(
                "l4lb: service {} backend {}: new-flows={} packets-in={} packets-out={} neighbor={}",
                s["id"].as_str().unwrap_or("?"),
                b["id"].as_str().unwrap_or("?"),
                n(&b["new_flows"]),
                n(&b["packets_in"]),
                n(&b["packets_out"]),
                b["neighbor"].as_str().unwrap_or("?")
            );
        }
    }
}
