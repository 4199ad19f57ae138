//! The Environment Abstraction Layer: initialisation once per process, lcores, launching work.

use std::ffi::{CString, c_int, c_void};
use std::os::raw::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{DpdkError, Result};
use crate::sys;

/// rte_eal_init may run once per process; DPDK's own guard answers EALREADY but only after
/// touching global state, so we refuse before calling it.
static INITIALISED: AtomicBool = AtomicBool::new(false);

const EALREADY: i32 = 114;

/// An lcore id as DPDK numbers them (`-l 0-2` makes lcores 0, 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LcoreId(pub u32);

/// Proof that EAL is initialised. DPDK memory (mempools, rings, mbufs) stays valid until the
/// process exits: l4lb never calls `rte_eal_cleanup`, so no DPDK object can outlive its memory.
#[derive(Debug)]
pub struct Eal {
    main: LcoreId,
    workers: Vec<LcoreId>,
}

impl Eal {
    /// Initialises EAL from command-line style arguments (without the program name).
    /// A second call in the same process is an error, never a second `rte_eal_init`.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::from_code("rte_eal_init", EALREADY));
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("l4lb").expect("no NUL"));
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| {
                DpdkError::usage(
                    "rte_eal_init",
                    format!("EAL argument {a:?} contains a NUL byte"),
                )
            })?);
        }
        // EAL may keep pointers into argv (it reorders it and remembers some strings), so argv
        // and its strings live for the rest of the process.
        let argv: &'static mut [*mut c_char] =
            Vec::leak(owned.into_iter().map(|s| s.into_raw()).collect::<Vec<_>>());
        let argc = argv.len() as c_int;
        // SAFETY: argv holds argc valid, NUL-terminated, never-freed strings; INITIALISED makes
        // this the only call in the process.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::from_rte_errno("rte_eal_init"));
        }
        // SAFETY: EAL is initialised; this reads its memory configuration.
        crate::memory::set_hugepages(unsafe { sys::rte_eal_has_hugepages() } != 0);
        // SAFETY: EAL is initialised; these read its lcore configuration.
        let main = LcoreId(unsafe { sys::rte_get_main_lcore() });
        let mut workers = Vec::new();
        let mut i = u32::MAX; // DPDK starts the walk from -1
        loop {
            // SAFETY: as above; skip_main = 1, wrap = 0 walks the enabled workers once.
            i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
            if i >= sys::RTE_MAX_LCORE {
                break;
            }
            workers.push(LcoreId(i));
        }
        Ok(Eal { main, workers })
    }

    pub fn main_lcore(&self) -> LcoreId {
        self.main
    }

    /// The worker lcores (every enabled lcore but the main one), in id order.
    pub fn worker_lcores(&self) -> &[LcoreId] {
        &self.workers
    }

    /// The NUMA node of an lcore's CPU (0 on a machine of one node).
    pub fn socket_of(&self, lcore: LcoreId) -> i32 {
        if lcore.0 >= sys::RTE_MAX_LCORE {
            return 0;
        }
        // SAFETY: EAL is initialised (self proves it) and the id is below RTE_MAX_LCORE, the
        // size of the table DPDK reads.
        let s = unsafe { sys::rte_lcore_to_socket_id(lcore.0) };
        i32::try_from(s).unwrap_or(0)
    }

    /// The lcore the calling thread runs as, if it is one.
    pub fn current_lcore(&self) -> Option<LcoreId> {
        // SAFETY: reads a thread-local; no preconditions.
        let id = unsafe { sys::l4lb_lcore_id() };
        (id < sys::RTE_MAX_LCORE).then_some(LcoreId(id))
    }

    /// Runs each job on its worker lcore, then `main` on the calling (main) lcore, then waits
    /// for every worker to return. Each job is moved to its lcore and run once, so it may own
    /// what only that lcore uses (its queues, its flow table); like `std::thread::scope`, a job
    /// may borrow from the caller. A job that panics is reported as an error once all have been
    /// joined.
    pub fn run_on_workers<W, M, R>(&self, jobs: Vec<(LcoreId, W)>, main: M) -> Result<R>
    where
        W: FnOnce() + Send,
        M: FnOnce() -> R,
    {
        for (l, _) in &jobs {
            if !self.workers.contains(l) {
                return Err(DpdkError::usage(
                    "rte_eal_remote_launch",
                    format!("lcore {} is not a worker lcore of this EAL", l.0),
                ));
            }
        }
        let lcores: Vec<LcoreId> = jobs.iter().map(|(l, _)| *l).collect();
        // Declared before the joiner, so dropped after it: no slot goes while a job may run.
        let mut slots: Vec<Option<W>> = jobs.into_iter().map(|(_, w)| Some(w)).collect();
        let base = slots.as_mut_ptr();
        let mut joiner = Joiner {
            launched: Vec::with_capacity(lcores.len()),
            failed: Vec::new(),
        };
        for (i, l) in lcores.iter().enumerate() {
            // SAFETY: i < slots.len(); each launched lcore gets its own slot and is the only
            // one to touch it until it is joined. The slots outlive every launched call because
            // `joiner` waits for all of them (on drop too, so also when `main` panics); W: Send
            // makes moving the job to the lcore's thread sound, and the trampoline is
            // instantiated for exactly W.
            let ret = unsafe {
                sys::rte_eal_remote_launch(Some(trampoline::<W>), base.add(i).cast::<c_void>(), l.0)
            };
            if ret != 0 {
                return Err(DpdkError::from_code("rte_eal_remote_launch", ret));
            }
            joiner.launched.push(*l);
        }
        let result = main();
        joiner.join();
        match joiner.failed.first() {
            Some(l) => Err(DpdkError::usage(
                "rte_eal_wait_lcore",
                format!("the work on lcore {} panicked", l.0),
            )),
            None => Ok(result),
        }
    }
}

struct Joiner {
    launched: Vec<LcoreId>,
    failed: Vec<LcoreId>,
}

impl Joiner {
    fn join(&mut self) {
        for l in self.launched.drain(..) {
            // SAFETY: l was launched by us and not yet waited for.
            if unsafe { sys::rte_eal_wait_lcore(l.0) } != 0 {
                self.failed.push(l);
            }
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.join();
    }
}

unsafe extern "C" fn trampoline<W: FnOnce() + Send>(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is this lcore's own `Option<W>` slot, which run_on_workers keeps alive and
    // untouched by anyone else until this call is joined.
    let slot = unsafe { &mut *arg.cast::<Option<W>>() };
    let Some(work) = slot.take() else { return -1 };
    // A panic must not unwind into C.
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// The time-stamp counter, for drain intervals and timeouts measured in cycles.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: reads the TSC; no preconditions.
    unsafe { sys::l4lb_rdtsc() }
}

/// TSC cycles per second as EAL measured them at init (0 before EAL init).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value EAL computed; returns 0 when EAL is not initialised.
    unsafe { sys::rte_get_tsc_hz() }
}
