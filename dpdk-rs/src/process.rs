//! Child processes of the appliance (its BGP speaker): here because the one call they need
//! between fork and exec is unsafe, and this crate is the only one with `unsafe`.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child `cmd` starts get SIGKILL when the thread that started it dies, the whole
/// process killed included: a speaker must never announce for a dataplane that is gone.
pub fn die_with_parent(cmd: &mut Command) {
    // The parent's pid now: the child compares it to its own parent's afterwards.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and only makes two
    // async-signal-safe system calls (prctl, getppid) on values it owns; it allocates nothing
    // and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: nobody would ever kill this child.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the parent is gone"));
            }
            Ok(())
        });
    }
}
