//! Network namespaces for end-to-end tests and the demo: created with `ip netns add`, commands
//! run inside with `ip netns exec`, sockets opened inside from a thread that enters the
//! namespace (`setns`), and on drop every process left inside killed and the namespace deleted
//! (its interfaces go with it).

use std::fs::File;
use std::io;
use std::process::{Command, Output};

use nix::sched::{CloneFlags, setns};

#[derive(Debug)]
pub struct Namespace {
    name: String,
}

/// Runs `cmd`; an error carries the command and what it wrote.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

impl Namespace {
    /// Creates namespace `name` (replacing a stale one of that name) with its loopback up.
    pub fn create(name: &str) -> Result<Namespace, String> {
        if std::path::Path::new("/var/run/netns").join(name).exists() {
            drop(Namespace {
                name: name.to_string(),
            });
        }
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Namespace {
            name: name.to_string(),
        };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace `name` as it is (not created here): deleted when dropped.
    pub fn adopt(name: &str) -> Namespace {
        Namespace {
            name: name.to_string(),
        }
    }

    /// `ip -n NAME ARGS` (ARGS split on spaces).
    pub fn ip(&self, args: &str) -> Result<Output, String> {
        run(Command::new("ip")
            .args(["-n", &self.name])
            .args(args.split_whitespace()))
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a shell command line inside the namespace.
    pub fn sh(&self, line: &str) -> Result<Output, String> {
        run(self.command("sh").args(["-c", line]))
    }

    /// Sets sysctl `key` to `value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        run(self
            .command("sysctl")
            .args(["-qw", &format!("{key}={value}")]))
        .map(|_| ())
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens belong to the namespace and
    /// may be used from any thread afterwards.
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let file = File::open(format!("/var/run/netns/{}", self.name))?;
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("the thread in the namespace panicked"))?
    }

    /// Kills every process inside the namespace (SIGKILL).
    pub fn kill_all(&self) {
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.kill_all();
        // A process just killed may hold the namespace a moment longer: retry briefly.
        for _ in 0..50 {
            let ok = Command::new("ip")
                .args(["netns", "del", &self.name])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok
                || !std::path::Path::new("/var/run/netns")
                    .join(&self.name)
                    .exists()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The namespaces whose names start with `prefix` (to check that nothing was left behind).
pub fn list(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}
