//! A client of DPDK's telemetry socket, as `dpdk-telemetry.py` is: another process's counters
//! (its ports' `/ethdev/stats`, say) read without touching that process. The socket is
//! `/var/run/dpdk/<file prefix>/dpdk_telemetry.v2` (SOCK_SEQPACKET); it greets with a JSON
//! object, then answers each command with one.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

/// Where the EAL of the process started with `--file-prefix=<prefix>` keeps its runtime files.
pub fn runtime_dir(prefix: &str) -> PathBuf {
    PathBuf::from("/var/run/dpdk").join(prefix)
}

/// Sends `command` (e.g. `/ethdev/stats,0`) to the telemetry socket of the process with file
/// prefix `prefix` and returns its answer, a JSON text.
pub fn query(prefix: &str, command: &str) -> io::Result<Vec<u8>> {
    let path = runtime_dir(prefix).join("dpdk_telemetry.v2");
    let sock = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    sock.connect(&SockAddr::unix(path)?)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; 64 * 1024];
    // The greeting (version, pid, max_output_len), one message; then the answer. Each read of
    // a SEQPACKET socket returns one whole message.
    let _greeting = (&sock).read(&mut buf)?;
    (&sock).write_all(command.as_bytes())?;
    let n = (&sock).read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
