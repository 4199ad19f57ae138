//! A DPDK process under a guard: its output drained while it runs (a full pipe would block its
//! logging) and readable at any time, signals, a bounded wait, and on drop a kill if it still
//! runs and the removal of its EAL runtime folder.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Process {
    child: Option<Child>,
    prefix: String,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// Its output so far, stdout and stderr.
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

/// How a process ended, and all it wrote.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Reads `r` to its end on a thread, keeping `seen` up to date as it goes; returns all of it.
/// Each read is decoded once and appended (decoding everything read so far again on every read
/// made a long run's drain quadratic: 15% of a CPU in `l4lb bench --republish-ms 1`, on the CPU
/// the appliance's control plane answers from).
fn drain(mut r: impl Read + Send + 'static, seen: Arc<Mutex<String>>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    let whole = pending.len() - incomplete_tail(&pending);
                    let text = String::from_utf8_lossy(&pending[..whole]);
                    seen.lock().expect("not poisoned").push_str(&text);
                    pending.drain(..whole);
                }
            }
        }
        let mut all = seen.lock().expect("not poisoned");
        all.push_str(&String::from_utf8_lossy(&pending));
        all.clone()
    })
}

/// How many bytes at the end of `bytes` begin a character that the next read may complete
/// (held back, so that a character split between two reads is not decoded as two errors).
fn incomplete_tail(bytes: &[u8]) -> usize {
    match bytes.utf8_chunks().last() {
        Some(c) if !c.invalid().is_empty() => match std::str::from_utf8(c.invalid()) {
            Err(e) if e.error_len().is_none() => c.invalid().len(),
            _ => 0,
        },
        _ => 0,
    }
}

impl Process {
    /// Starts `cmd` (a DPDK program given `--file-prefix=prefix`) with its output piped.
    pub fn spawn(mut cmd: Command, prefix: &str) -> std::io::Result<Process> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let (out, err) = (Arc::default(), Arc::default());
        let stdout = Some(drain(child.stdout.take().expect("piped"), Arc::clone(&out)));
        let stderr = Some(drain(child.stderr.take().expect("piped"), Arc::clone(&err)));
        Ok(Process {
            child: Some(child),
            prefix: prefix.to_string(),
            stdout,
            stderr,
            out,
            err,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Its stdin, if `cmd` was given `Stdio::piped()` for it.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// Waits until `f` finds what it looks for in the log (stderr), or the process ends, or
    /// `timeout` passes (then the error carries all it wrote).
    pub fn wait_log<T>(
        &mut self,
        timeout: Duration,
        f: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = f(&self.log()) {
                return Ok(t);
            }
            if !self.is_running() || Instant::now() > deadline {
                return Err(format!("it did not start; its output:\n{}", self.output()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it has written to stderr so far (where l4lb logs).
    pub fn log(&self) -> String {
        self.err.lock().expect("not poisoned").clone()
    }

    /// Both streams so far, stdout first.
    pub fn output(&self) -> String {
        let out = self.out.lock().expect("not poisoned").clone();
        out + &self.log()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Sends `signal` (e.g. "HUP") and returns at once.
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        let st = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if st.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -{signal} failed")))
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; if it does not, kills it and
    /// says so with what it wrote to stderr.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished, String> {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("running");
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() <= deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err = self.stderr.take().map(|h| h.join().unwrap_or_default());
                    return Err(format!(
                        "it did not exit within {timeout:?}; stderr:\n{}",
                        err.unwrap_or_default()
                    ));
                }
            }
        };
        let join = |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap_or_default());
        Ok(Finished {
            status,
            stdout: join(self.stdout.take()).unwrap_or_default(),
            stderr: join(self.stderr.take()).unwrap_or_default(),
        })
    }

    /// SIGTERM, then SIGKILL after `grace` if it still runs.
    pub fn stop(mut self, grace: Duration) -> Option<Finished> {
        let _ = self.signal("TERM");
        let deadline = Instant::now() + grace;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait(Duration::ZERO).ok()
    }

    /// Asks its DPDK telemetry socket; None until it is up.
    pub fn telemetry(&self, command: &str) -> Option<serde_json::Value> {
        crate::telemetry(&self.prefix, command)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(crate::runtime_dir(&self.prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes in the pieces given.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(p) = self.0.pop_front() else {
                return Ok(0);
            };
            buf[..p.len()].copy_from_slice(&p);
            Ok(p.len())
        }
    }

    #[test]
    fn a_drain_decodes_as_the_whole_would_be_however_the_reads_split_it() {
        // "é" and "€" split across reads, an invalid byte, and an incomplete character at
        // the very end.
        let all: Vec<u8> = [
            b"caf".as_slice(),
            "é €".as_bytes(),
            b"\xffok",
            &[0xe2, 0x82],
        ]
        .concat();
        let expected = String::from_utf8_lossy(&all).into_owned();
        for cut in 0..=all.len() {
            for second in cut..=all.len() {
                let pieces = [&all[..cut], &all[cut..second], &all[second..]]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                let seen = Arc::default();
                let got = drain(Pieces(pieces), Arc::clone(&seen)).join().unwrap();
                assert_eq!(got, expected, "cut at {cut} and {second}");
                assert_eq!(*seen.lock().unwrap(), expected);
            }
        }
    }

    #[test]
    fn only_a_character_that_may_still_complete_is_held_back() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail(&[b'a', 0xe2, 0x82]), 2);
        assert_eq!(incomplete_tail(&[b'a', 0xe2]), 1);
        assert_eq!(incomplete_tail(&[b'a', 0xff]), 0);
        assert_eq!(incomplete_tail(&[0xe2, 0x28]), 0);
    }
}
