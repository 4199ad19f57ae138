use std::ffi::CString;
use std::ptr::NonNull;

use crate::eal::Eal;
use crate::error::{DpdkError, Result};
use crate::mbuf::Mbuf;
use crate::sys;

/// A packet-buffer pool. Pools are never freed: rx queues and mbufs in flight point into them
/// until the process exits, and freeing one early is the classic DPDK use-after-free.
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<sys::rte_mempool>,
}

// SAFETY: rte_mempool is designed for concurrent use from any lcore or thread (per-lcore caches
// plus a multi-producer/multi-consumer ring underneath).
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `count` mbufs with a per-lcore cache of `cache` and `data_room` bytes
    /// of buffer each (headroom included), on NUMA `socket` (`None` = any).
    pub fn pktmbuf(
        _eal: &Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: Option<u32>,
    ) -> Result<Mempool> {
        let cname = CString::new(name).map_err(|_| {
            DpdkError::usage("rte_pktmbuf_pool_create", "pool name contains a NUL byte")
        })?;
        let socket = socket.map_or(sys::SOCKET_ID_ANY, |s| s as i32);
        // SAFETY: cname is a valid C string for the duration of the call; DPDK copies it.
        let raw = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, socket)
        };
        NonNull::new(raw)
            .map(|raw| Mempool { raw })
            .ok_or_else(|| DpdkError::from_rte_errno("rte_pktmbuf_pool_create"))
    }

    pub fn alloc(&self) -> Result<Mbuf> {
        // SAFETY: self.raw is a live pktmbuf pool.
        let m = unsafe { sys::l4lb_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a non-null result is a freshly allocated mbuf that we now own.
        NonNull::new(m)
            .map(|m| unsafe { Mbuf::from_raw(m) })
            .ok_or_else(|| DpdkError::from_code("rte_pktmbuf_alloc", 12))
    }

    /// Mbufs free in the pool (including the per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: self.raw is a live pool.
        unsafe { sys::l4lb_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        // SAFETY: self.raw is a live pool; `size` is set at creation and never changes.
        unsafe { (*self.raw.as_ptr()).size }
    }

    /// Mbufs taken from the pool and not yet given back (in queues, rings, bursts).
    pub fn in_use(&self) -> u32 {
        self.size().saturating_sub(self.available())
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.raw.as_ptr()
    }
}
