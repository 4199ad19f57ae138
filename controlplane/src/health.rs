//! Active health checks: the probes and the state they lead to.
//!
//! A probe is an ordinary socket of the appliance's own stack (on bare metal it leaves through
//! the kernel interface, the exception path, since the NIC belongs to DPDK). [`Prober`] runs
//! one task per checked backend on a thread of its own, one probe every `interval`, each
//! bounded by `timeout`, and sends each outcome to the control thread. There the [`Tracker`]
//! counts them: `fall` failures in a row take a backend out of scheduling, `rise` successes in
//! a row bring it back (keepalived's and HAProxy's rule). A backend starts up, unchecked, so a
//! restart or a new check never takes traffic away before a probe says so.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;

use crate::config::{CheckKind, HealthCheck};
use crate::publish::Down;

/// One backend to probe, and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub service: String,
    pub backend: String,
    pub address: IpAddr,
    /// The port probed (the check's, else the backend's).
    pub port: u16,
    pub check: HealthCheck,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub target: Target,
    /// None: the backend answered as the check wants.
    pub error: Option<String>,
}

/// One backend's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    pub up: bool,
    /// Since when it is up or down (its start, for a backend never down).
    pub since: SystemTime,
    /// The last failed probe's error (kept once it is up again).
    pub last_error: Option<String>,
    /// Probes in a row that disagree with `up` (failures while up, successes while down).
    pub against: u32,
    pub probes_ok: u64,
    pub probes_failed: u64,
    /// Times it went down or up.
    pub transitions: u64,
}

/// A backend changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Down,
    Up,
}

impl BackendHealth {
    pub fn new(now: SystemTime) -> BackendHealth {
        BackendHealth {
            up: true,
            since: now,
            last_error: None,
            against: 0,
            probes_ok: 0,
            probes_failed: 0,
            transitions: 0,
        }
    }

    /// Counts one probe; the transition it makes, if any.
    pub fn record(
        &mut self,
        error: Option<&str>,
        check: &HealthCheck,
        now: SystemTime,
    ) -> Option<Transition> {
        let ok = error.is_none();
        if ok {
            self.probes_ok += 1;
        } else {
            self.probes_failed += 1;
            self.last_error = error.map(str::to_string);
        }
        if ok == self.up {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = if self.up { check.fall } else { check.rise };
        if self.against < needed {
            return None;
        }
        self.up = ok;
        self.since = now;
        self.against = 0;
        self.transitions += 1;
        Some(if ok { Transition::Up } else { Transition::Down })
    }
}

/// The health of every checked backend, keyed by (service id, backend id).
#[derive(Debug, Default)]
pub struct Tracker {
    checked: HashMap<(String, String), (Target, BackendHealth)>,
}

impl Tracker {
    /// The backends to check from now on. A backend whose target is unchanged keeps its state;
    /// a new one, or one whose address, port or check changed, starts up and unchecked.
    pub fn set_targets(&mut self, targets: &[Target], now: SystemTime) {
        let mut next = HashMap::with_capacity(targets.len());
        for t in targets {
            let key = (t.service.clone(), t.backend.clone());
            let health = match self.checked.remove(&key) {
                Some((old, h)) if old == *t => h,
                _ => BackendHealth::new(now),
            };
            next.insert(key, (t.clone(), health));
        }
        self.checked = next;
    }

    /// Counts a probe's result: the transition it makes, if any. A result for a target that
    /// changed or went away since the probe started is ignored.
    pub fn record(&mut self, r: &ProbeResult, now: SystemTime) -> Option<Transition> {
        let key = (r.target.service.clone(), r.target.backend.clone());
        let (target, health) = self.checked.get_mut(&key)?;
        if *target != r.target {
            return None;
        }
        health.record(r.error.as_deref(), &target.check, now)
    }

    pub fn get(&self, service: &str, backend: &str) -> Option<&BackendHealth> {
        self.checked
            .get(&(service.to_string(), backend.to_string()))
            .map(|(_, h)| h)
    }

    /// The backends held down, for the snapshot.
    pub fn down(&self) -> Down {
        let mut d = Down::default();
        for ((s, b), (_, h)) in &self.checked {
            if !h.up {
                d.insert(s, b);
            }
        }
        d
    }
}

/// The probe thread: one task per target, replaced whenever the target list changes.
#[derive(Debug)]
pub struct Prober {
    targets: watch::Sender<Vec<Target>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    /// Starts the thread; results go to `results`.
    pub fn spawn(results: Sender<ProbeResult>) -> std::io::Result<Prober> {
        let (tx, rx) = watch::channel(Vec::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("l4lb-health".into())
            .spawn(move || rt.block_on(run(rx, results)))?;
        Ok(Prober {
            targets: tx,
            thread: Some(thread),
        })
    }

    /// From now on, probe `targets` (and only them).
    pub fn set(&self, targets: Vec<Target>) {
        self.targets.send_replace(targets);
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; its tasks are dropped with the runtime.
        let (tx, _) = watch::channel(Vec::new());
        drop(std::mem::replace(&mut self.targets, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(mut targets: watch::Receiver<Vec<Target>>, results: Sender<ProbeResult>) {
    let mut tasks: HashMap<Target, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: Vec<Target> = targets.borrow_and_update().clone();
        tasks.retain(|t, task| {
            let keep = wanted.contains(t);
            if !keep {
                task.abort();
            }
            keep
        });
        let n = wanted.len().max(1) as u32;
        for (i, t) in wanted.into_iter().enumerate() {
            if tasks.contains_key(&t) {
                continue;
            }
            // Spread the first probes over the interval rather than all at once.
            let offset = t.check.interval / n * i as u32;
            let task = tokio::spawn(probe_loop(t.clone(), offset, results.clone()));
            tasks.insert(t, task);
        }
        if targets.changed().await.is_err() {
            break;
        }
    }
    for task in tasks.values() {
        task.abort();
    }
}

async fn probe_loop(t: Target, offset: Duration, results: Sender<ProbeResult>) {
    tokio::time::sleep(offset).await;
    let mut ticks = tokio::time::interval(t.check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let error = match tokio::time::timeout(t.check.timeout, probe(&t)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!(
                "no answer within {} ms",
                t.check.timeout.as_millis()
            )),
        };
        debug!(service = %t.service, backend = %t.backend, ?error, "probe");
        // Never block the probe thread: a result the control thread has no room for is
        // dropped (the next probe counts instead); a closed channel ends the task.
        let r = ProbeResult {
            target: t.clone(),
            error,
        };
        if let Err(crossbeam_channel::TrySendError::Disconnected(_)) = results.try_send(r) {
            return;
        }
    }
}

/// One probe of `t`, without its timeout.
async fn probe(t: &Target) -> Result<(), String> {
    let to = SocketAddr::new(t.address, t.port);
    match &t.check.kind {
        CheckKind::None => Ok(()),
        CheckKind::Tcp => tokio::net::TcpStream::connect(to)
            .await
            .map(drop)
            .map_err(|e| format!("tcp connect to {to}: {e}")),
        CheckKind::Http => http(to, &t.check.path, t.check.expect_status).await,
        CheckKind::Udp => udp(to).await,
    }
}

/// A GET of `path`; up when the status line says `expect`.
async fn http(to: SocketAddr, path: &str, expect: u16) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(to)
        .await
        .map_err(|e| format!("http connect to {to}: {e}"))?;
    let host = match to.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: l4lb-health\r\nConnection: close\r\n\r\n",
        to.port()
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("http request to {to}: {e}"))?;
    // The status line is all we read: "HTTP/1.1 200 OK\r\n".
    let mut buf = [0u8; 256];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        match s.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("http answer from {to}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let line = line.lines().next().unwrap_or("").trim();
    let status = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(code) if code == expect => Ok(()),
        Some(code) => Err(format!("http {path} on {to}: status {code}, not {expect}")),
        None => Err(format!("http {path} on {to}: no status line ({line:?})")),
    }
}

/// A datagram; down when it draws an ICMP error (a connected socket reports port or host
/// unreachable at the next receive), up when an answer or nothing comes back within half the
/// timeout (most UDP services answer nothing to a stray datagram, as keepalived's UDP_CHECK
/// without require_reply assumes).
async fn udp(to: SocketAddr) -> Result<(), String> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = tokio::net::UdpSocket::bind(any)
        .await
        .map_err(|e| format!("udp socket: {e}"))?;
    s.connect(to)
        .await
        .map_err(|e| format!("udp to {to}: {e}"))?;
    s.send(b"l4lb health check\n")
        .await
        .map_err(|e| format!("udp to {to}: {e}"))?;
    let mut buf = [0u8; 512];
    // The caller's timeout bounds this; an ICMP error arrives within a round trip.
    match tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf)).await {
        Ok(Ok(_)) | Err(_) => Ok(()),
        Ok(Err(e)) => Err(format!("udp to {to}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            rise,
            fall,
            ..HealthCheck::default()
        }
    }

    fn target(backend: &str, port: u16) -> Target {
        Target {
            service: "web".into(),
            backend: backend.into(),
            address: "198.18.1.10".parse().unwrap(),
            port,
            check: check(2, 3),
        }
    }

    #[test]
    fn fall_failures_in_a_row_take_a_backend_down_and_rise_successes_bring_it_back() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let c = check(2, 3);
        let mut h = BackendHealth::new(t0);
        assert_eq!(h.record(Some("refused"), &c, at(1)), None);
        assert_eq!(h.record(Some("refused"), &c, at(2)), None);
        assert_eq!(
            h.record(None, &c, at(3)),
            None,
            "a success resets the count"
        );
        assert_eq!(h.record(Some("refused"), &c, at(4)), None);
        assert_eq!(h.record(Some("refused"), &c, at(5)), None);
        assert_eq!(
            h.record(Some("timed out"), &c, at(6)),
            Some(Transition::Down),
            "the third failure in a row"
        );
        assert_eq!(
            (h.up, h.since, h.last_error.as_deref(), h.transitions),
            (false, at(6), Some("timed out"), 1)
        );
        assert_eq!(
            h.record(Some("refused"), &c, at(7)),
            None,
            "down stays down"
        );
        assert_eq!(h.record(None, &c, at(8)), None);
        assert_eq!(h.record(Some("refused"), &c, at(9)), None, "reset");
        assert_eq!(h.record(None, &c, at(10)), None);
        assert_eq!(h.record(None, &c, at(11)), Some(Transition::Up));
        assert_eq!(
            (h.up, h.since, h.probes_ok, h.probes_failed, h.transitions),
            (true, at(11), 4, 7, 2)
        );
        assert_eq!(
            h.last_error.as_deref(),
            Some("refused"),
            "the last error stays"
        );
    }

    #[test]
    fn the_tracker_keeps_state_across_unchanged_targets_and_ignores_stale_results() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut tr = Tracker::default();
        let (a, b) = (target("a", 80), target("b", 80));
        tr.set_targets(&[a.clone(), b.clone()], t0);
        let fail = |t: &Target| ProbeResult {
            target: t.clone(),
            error: Some("refused".into()),
        };
        for _ in 0..2 {
            assert_eq!(tr.record(&fail(&a), t0), None);
        }
        assert_eq!(tr.record(&fail(&a), t0), Some(Transition::Down));
        assert!(tr.down().contains("web", "a") && !tr.down().contains("web", "b"));
        // b's port changes: its state restarts, a's stays
        let b2 = target("b", 81);
        tr.set_targets(&[a.clone(), b2.clone()], t0);
        assert!(!tr.get("web", "a").unwrap().up);
        for _ in 0..3 {
            assert_eq!(
                tr.record(&fail(&b), t0),
                None,
                "a result for the old target is ignored"
            );
        }
        assert!(tr.get("web", "b").unwrap().up);
        assert_eq!(tr.get("web", "b").unwrap().probes_failed, 0);
        // a leaves: gone, and no longer down
        tr.set_targets(&[b2], t0);
        assert!(tr.get("web", "a").is_none());
        assert!(tr.down().is_empty());
        assert_eq!(tr.record(&fail(&a), t0), None);
    }

    #[test]
    fn probes_see_a_listening_port_a_closed_one_and_an_http_status() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let server = std::thread::spawn(move || {
            // Two HTTP answers: 200 then 503; the tcp probe's connection in between.
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut c, _) = listener.accept().unwrap();
                let mut req = [0u8; 512];
                let n = c.read(&mut req).unwrap();
                assert!(req[..n].starts_with(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1:"));
                write!(c, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
            let _ = listener.accept().unwrap();
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = |port: u16| Target {
            address: open.ip(),
            port,
            check: HealthCheck {
                kind: CheckKind::Http,
                path: "/ready".into(),
                ..HealthCheck::default()
            },
            ..target("a", 0)
        };
        rt.block_on(async {
            assert_eq!(probe(&http(open.port())).await, Ok(()));
            assert_eq!(
                probe(&http(open.port())).await,
                Err(format!("http /ready on {open}: status 503, not 200"))
            );
            let tcp = |p: u16| Target {
                address: open.ip(),
                port: p,
                ..target("a", 0)
            };
            assert_eq!(probe(&tcp(open.port())).await, Ok(()));
            let e = probe(&tcp(closed.port())).await.unwrap_err();
            assert!(
                e.starts_with(&format!("tcp connect to {closed}: Connection refused")),
                "{e}"
            );
            let udp = Target {
                check: HealthCheck {
                    kind: CheckKind::Udp,
                    ..HealthCheck::default()
                },
                ..tcp(closed.port())
            };
            let e = probe(&udp).await.unwrap_err();
            assert!(e.contains("Connection refused"), "port unreachable: {e}");
        });
        server.join().unwrap();
    }
}
