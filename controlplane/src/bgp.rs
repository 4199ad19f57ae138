//! The BGP speaker that announces the VIPs: BIRD 2, started by l4lb in its own network
//! namespace, reaching its neighbours through the kernel interface (the exception path).
//!
//! l4lb writes BIRD's whole configuration from `[bgp]` once, at start, and the VIPs to announce
//! into two small files that configuration includes (one static route per VIP); a change of
//! the set rewrites them and asks BIRD to reconfigure over its control socket. BIRD withdraws
//! what left the files and announces what came; its sessions stay up.
//!
//! A VIP is announced while one of its services has a backend that takes new flows (healthy,
//! not drained, weight above zero) and the appliance is neither drained (`PATCH /api/v1/bgp`)
//! nor stopping. At SIGTERM every VIP is withdrawn, the grace period passes (the routers move
//! the flows to the other instances; what still comes is forwarded), and only then does
//! forwarding stop.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::BgpSettings;

/// How long BIRD gets to open its control socket at start.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long one command on the control socket may take.
const COMMAND_WAIT: Duration = Duration::from_secs(5);

/// The running speaker.
#[derive(Debug)]
pub struct Speaker {
    settings: BgpSettings,
    child: Option<Child>,
    /// What the route files hold now.
    announced: BTreeSet<IpAddr>,
    /// The last reconfiguration that failed (cleared by one that works).
    pub last_error: Option<String>,
    /// Set when BIRD exited by itself.
    dead: Option<String>,
}

/// The BIRD configuration for `s` (written once, at start).
pub fn bird_config(s: &BgpSettings) -> String {
    let dir = s.run_dir.display();
    let keepalive = (s.hold_time / 3).max(1);
    let mut c = format!(
        "# Written by l4lb from its [bgp] section at each start; changes here are lost.\n\
         router id {};\n\
         log stderr {{ info, remote, warning, error, auth, fatal, bug }};\n\
         protocol device {{ }}\n\
         # The VIPs l4lb announces (it rewrites these files and reconfigures). BIRD takes an\n\
         # include only at the start of a line.\n\
         protocol static l4lb_vips4 {{\n  ipv4;\n  include \"{dir}/vips4.conf\";\n}}\n\
         protocol static l4lb_vips6 {{\n  ipv6;\n  include \"{dir}/vips6.conf\";\n}}\n",
        s.router_id
    );
    for (i, n) in s.neighbors.iter().enumerate() {
        // IPv4 VIPs to IPv4 neighbours, IPv6 VIPs to IPv6 ones (the next hop is the session's
        // own address); nothing is imported: the appliance routes by its own configuration.
        let channel = match n.address {
            IpAddr::V4(_) => "ipv4 { import none; export where proto = \"l4lb_vips4\"; };",
            IpAddr::V6(_) => "ipv6 { import none; export where proto = \"l4lb_vips6\"; };",
        };
        c.push_str(&format!(
            "protocol bgp neighbor{i} {{\n  \
               local as {};\n  \
               neighbor {} as {};\n  \
               hold time {};\n  \
               keepalive time {keepalive};\n  \
               connect delay time 1;\n  \
               connect retry time 5;\n  \
               error wait time 1, 30;\n  \
               # A router must drop our routes when the session goes, never keep them stale.\n  \
               graceful restart off;\n  \
               {channel}\n\
             }}\n",
            s.local_as, n.address, n.remote_as, s.hold_time
        ));
    }
    c
}

/// The route file of one family: a static route per VIP.
pub fn routes_file(vips: &BTreeSet<IpAddr>, v6: bool) -> String {
    let mut out = String::from("# The VIPs l4lb announces (rewritten as they change).\n");
    for v in vips.iter().filter(|v| v.is_ipv6() == v6) {
        let len = if v6 { 128 } else { 32 };
        out.push_str(&format!("route {v}/{len} blackhole;\n"));
    }
    out
}

impl Speaker {
    /// Writes the configuration and empty route files, starts BIRD and waits for its control
    /// socket. `prepare` sets up the command before it runs (l4lb's makes BIRD die with the
    /// thread that starts it: a killed l4lb announces nothing).
    pub fn start(
        settings: &BgpSettings,
        prepare: impl FnOnce(&mut Command),
    ) -> Result<Speaker, String> {
        let dir = &settings.run_dir;
        let ctx = |what: &str, e: std::io::Error| format!("bgp.run_dir: {what}: {e}");
        std::fs::create_dir_all(dir).map_err(|e| ctx(&dir.display().to_string(), e))?;
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, bird_config(settings)).map_err(|e| ctx("bird.conf", e))?;
        let empty = BTreeSet::new();
        for (name, v6) in [("vips4.conf", false), ("vips6.conf", true)] {
            std::fs::write(dir.join(name), routes_file(&empty, v6)).map_err(|e| ctx(name, e))?;
        }
        let socket = dir.join("bird.ctl");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(&settings.bird);
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .stdin(Stdio::null());
        prepare(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("bgp.bird: cannot start {}: {e}", settings.bird.display()))?;
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "bgp: {} exited at start ({status}); its messages are above",
                    settings.bird.display()
                ));
            }
            if command(&socket, "show status").is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "bgp: {} opened no control socket at {} within {:?}",
                    settings.bird.display(),
                    socket.display(),
                    START_WAIT
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        info!(
            pid = child.id(),
            neighbors = settings.neighbors.len(),
            "bgp: BIRD started"
        );
        Ok(Speaker {
            settings: settings.clone(),
            child: Some(child),
            announced: BTreeSet::new(),
            last_error: None,
            dead: None,
        })
    }

    pub fn settings(&self) -> &BgpSettings {
        &self.settings
    }

    /// The VIPs announced now.
    pub fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.announced
    }

    fn socket(&self) -> PathBuf {
        self.settings.run_dir.join("bird.ctl")
    }

    /// Announces exactly `vips`: the route files change and BIRD reconfigures (nothing happens
    /// when the set is the same). Returns what was announced and withdrawn.
    pub fn announce(
        &mut self,
        vips: BTreeSet<IpAddr>,
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>), String> {
        if vips == self.announced {
            return Ok((Vec::new(), Vec::new()));
        }
        let dir = &self.settings.run_dir;
        for (name, v6) in [("vips4.conf", false), ("vips6.conf", true)] {
            // Written aside and renamed: BIRD never reads half a file.
            let tmp = dir.join(format!(".{name}.new"));
            std::fs::write(&tmp, routes_file(&vips, v6))
                .and_then(|()| std::fs::rename(&tmp, dir.join(name)))
                .map_err(|e| format!("bgp: cannot write {name}: {e}"))?;
        }
        let r = command(&self.socket(), "configure");
        match r {
            Ok(reply) if reply.code < 8000 => {
                let added: Vec<IpAddr> = vips.difference(&self.announced).copied().collect();
                let removed: Vec<IpAddr> = self.announced.difference(&vips).copied().collect();
                self.announced = vips;
                self.last_error = None;
                Ok((added, removed))
            }
            Ok(reply) => {
                let e = format!(
                    "bgp: BIRD refused to reconfigure: {}",
                    reply.text.join("; ")
                );
                self.last_error = Some(e.clone());
                Err(e)
            }
            Err(e) => {
                let e = format!("bgp: {e}");
                self.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Why BIRD is not running, once it exited by itself (None while it runs, and after
    /// [`stop`](Self::stop)). Looked at every tick.
    pub fn exited(&mut self) -> Option<&str> {
        if self.dead.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            self.child = None;
            self.dead = Some(format!(
                "bgp: BIRD exited ({status}); no VIP is announced from here"
            ));
        }
        self.dead.as_deref()
    }

    /// BIRD's protocols: name, protocol, state and info (BGP sessions say `Established`).
    pub fn sessions(&self) -> Result<Vec<Session>, String> {
        let reply = command(&self.socket(), "show protocols")?;
        Ok(reply
            .text
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && f[1] == "BGP").then(|| Session {
                    name: f[0].to_string(),
                    state: f[3].to_string(),
                    info: f.get(5..).map(|i| i.join(" ")).unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Stops BIRD (its sessions close; the neighbours drop our routes at once).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = command(&self.socket(), "down");
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    info!("bgp: BIRD stopped");
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            warn!("bgp: BIRD did not stop when asked; killed");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One BGP session as BIRD reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    pub name: String,
    pub state: String,
    pub info: String,
}

/// A reply on BIRD's control socket: its final code and its lines' text.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: Vec<String>,
}

/// Sends one command on BIRD's control socket and reads its reply. Each reply line is a
/// four-digit code, then `-` (more follow) or a space (the last), then text; a line starting
/// with a space continues the one before. Codes from 8000 are errors.
pub fn command(socket: &Path, cmd: &str) -> Result<Reply, String> {
    let s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach BIRD at {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(COMMAND_WAIT))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    read_reply(&mut r)?; // the greeting
    w.write_all(format!("{cmd}\n").as_bytes())
        .map_err(|e| format!("BIRD's control socket: {e}"))?;
    read_reply(&mut r)
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let mut text = Vec::new();
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .map_err(|e| format!("BIRD's control socket: {e}"))?;
        if n == 0 {
            return Err("BIRD closed its control socket mid-reply".into());
        }
        let line = line.trim_end_matches('\n');
        if let Some(rest) = line.strip_prefix(' ') {
            text.push(rest.to_string());
            continue;
        }
        let code = line.get(..4).and_then(|c| c.parse::<u16>().ok());
        let (Some(code), Some(sep)) = (code, line.as_bytes().get(4)) else {
            return Err(format!("BIRD's control socket: unexpected line {line:?}"));
        };
        text.push(line[5..].to_string());
        if *sep == b' ' {
            return Ok(Reply { code, text });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BgpNeighbor;

    fn settings() -> BgpSettings {
        BgpSettings {
            local_as: 65001,
            router_id: "198.18.0.2".parse().unwrap(),
            neighbors: vec![
                BgpNeighbor {
                    address: "198.18.0.1".parse().unwrap(),
                    remote_as: 65000,
                },
                BgpNeighbor {
                    address: "2001:db8::1".parse().unwrap(),
                    remote_as: 65000,
                },
            ],
            hold_time: 3,
            grace_period: Duration::from_secs(1),
            bird: "bird".into(),
            run_dir: "/run/l4lb/test".into(),
        }
    }

    #[test]
    fn the_configuration_names_every_neighbour_and_exports_only_the_vips() {
        let c = bird_config(&settings());
        assert!(c.contains("router id 198.18.0.2;\n"));
        assert!(c.contains(
            "protocol static l4lb_vips4 {\n  ipv4;\n  include \"/run/l4lb/test/vips4.conf\";\n}\n"
        ));
        assert!(c.contains("protocol bgp neighbor0 {\n  local as 65001;\n  neighbor 198.18.0.1 as 65000;\n  hold time 3;\n  keepalive time 1;\n"));
        assert!(c.contains("  ipv4 { import none; export where proto = \"l4lb_vips4\"; };\n}\n"));
        assert!(c.contains("  neighbor 2001:db8::1 as 65000;\n"));
        assert!(c.contains("  ipv6 { import none; export where proto = \"l4lb_vips6\"; };\n}\n"));
        assert_eq!(c.matches("graceful restart off;").count(), 2);
    }

    #[test]
    fn route_files_hold_one_family_each() {
        let vips: BTreeSet<IpAddr> = ["198.18.0.100", "2001:db8::100", "198.18.0.101"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            routes_file(&vips, false),
            "# The VIPs l4lb announces (rewritten as they change).\nroute 198.18.0.100/32 blackhole;\nroute 198.18.0.101/32 blackhole;\n"
        );
        assert_eq!(
            routes_file(&vips, true),
            "# The VIPs l4lb announces (rewritten as they change).\nroute 2001:db8::100/128 blackhole;\n"
        );
    }

    #[test]
    fn replies_are_read_to_their_last_line() {
        let mut r = std::io::Cursor::new(
            "0002-Reading configuration from /x\n0003 Reconfigured\n".as_bytes(),
        );
        let reply = read_reply(&mut r).unwrap();
        assert_eq!(reply.code, 3);
        assert_eq!(
            reply.text,
            vec!["Reading configuration from /x", "Reconfigured"]
        );
        let mut r = std::io::Cursor::new(
            "2002-Name       Proto      Table      State  Since         Info\n1002-neighbor0  BGP        ---        up     10:00:00.000  Established   \n l4lb_vips4 Static master4 up 10:00:00.000\n0000 \n".as_bytes(),
        );
        let reply = read_reply(&mut r).unwrap();
        assert_eq!((reply.code, reply.text.len()), (0, 4));
        let mut r = std::io::Cursor::new("9001 syntax error\n".as_bytes());
        assert_eq!(read_reply(&mut r).unwrap().code, 9001);
        let mut r = std::io::Cursor::new("0002-half".as_bytes());
        assert!(read_reply(&mut r).is_err());
    }
}
