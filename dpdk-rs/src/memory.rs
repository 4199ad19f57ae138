//! Where large allocations live.
//!
//! A flow table's slab and indexes are tens to hundreds of MB touched at random by every
//! packet; on 4 KB pages each flow then costs TLB misses. [`Allocator`], the appliance's global
//! allocator, hands small allocations to the system allocator unchanged and puts every
//! allocation of [`LARGE`] bytes or more on 2 MB pages:
//!
//! - inside [`on_socket`] (a worker's state being built) when EAL runs on hugepages: DPDK's
//!   hugepage memory on that NUMA node (`rte_malloc_socket`);
//! - otherwise an anonymous mapping aligned to 2 MB, advised `MADV_HUGEPAGE` (transparent huge
//!   pages wherever THP is `madvise` or `always`) and populated at once, so that no page fault
//!   waits for the first packet that touches a page.
//!
//! [`usage`] says how many bytes went each way (the start-up log and `l4lb bench` print it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::sys;

/// Allocations from this size on are placed on huge pages.
pub const LARGE: usize = 2 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// EAL was initialised on hugepages (set by [`crate::Eal::init`]).
static HUGEPAGES: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The NUMA node DPDK memory should come from for this thread's large allocations, while
    /// [`on_socket`] runs (-1: none).
    static SOCKET: Cell<i32> = const { Cell::new(-1) };
}

/// The addresses `rte_malloc_socket` gave, so that `dealloc` knows whom to give them back to.
/// A few per worker (slab, two indexes, templates) fit in these slots; beyond them an
/// allocation takes the mapping path instead.
const SLOTS: usize = 256;
static FROM_DPDK: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

static DPDK_BYTES: AtomicUsize = AtomicUsize::new(0);
static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn set_hugepages(on: bool) {
    HUGEPAGES.store(on, Ordering::SeqCst);
}

/// Whether EAL runs on hugepages.
pub fn hugepages() -> bool {
    HUGEPAGES.load(Ordering::SeqCst)
}

/// Runs `f` with this thread's large allocations taken from DPDK's hugepage memory on NUMA
/// node `socket` (when EAL has hugepages; the mapping path otherwise).
pub fn on_socket<R>(socket: i32, f: impl FnOnce() -> R) -> R {
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            SOCKET.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SOCKET.with(|s| s.replace(socket)));
    f()
}

/// Bytes of large allocations live now, by where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// In DPDK's hugepage memory.
    pub dpdk_hugepages: usize,
    /// In mappings advised for transparent huge pages.
    pub advised: usize,
}

pub fn usage() -> Usage {
    Usage {
        dpdk_hugepages: DPDK_BYTES.load(Ordering::Relaxed),
        advised: MAPPED_BYTES.load(Ordering::Relaxed),
    }
}

/// The process's allocator: `#[global_allocator] static A: dpdk_rs::memory::Allocator =
/// dpdk_rs::memory::Allocator;`
pub struct Allocator;

fn mapped_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

fn from_dpdk(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !hugepages() {
        return ptr::null_mut();
    }
    let socket = SOCKET.try_with(Cell::get).unwrap_or(-1);
    if socket < 0 {
        return ptr::null_mut();
    }
    // SAFETY: EAL is initialised (HUGEPAGES is only set after rte_eal_init succeeded) and
    // l4lb never calls rte_eal_cleanup; a null type name is allowed, align is a power of two.
    let p = unsafe {
        if zero {
            sys::rte_zmalloc_socket(ptr::null(), size, align as u32, socket)
        } else {
            sys::rte_malloc_socket(ptr::null(), size, align as u32, socket)
        }
    }
    .cast::<u8>();
    if p.is_null() {
        return p;
    }
    for slot in &FROM_DPDK {
        if slot
            .compare_exchange(0, p as usize, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            DPDK_BYTES.fetch_add(size, Ordering::Relaxed);
            return p;
        }
    }
    // No slot to remember it by: give it back and map instead.
    // SAFETY: p came from rte_malloc_socket just above and nothing else has seen it.
    unsafe { sys::rte_free(p.cast::<c_void>()) };
    ptr::null_mut()
}

/// Gives `p` back to DPDK if it came from there.
fn return_to_dpdk(p: *mut u8, size: usize) -> bool {
    for slot in &FROM_DPDK {
        if slot
            .compare_exchange(p as usize, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the slot held p, so rte_malloc_socket returned it and it was not freed.
            unsafe { sys::rte_free(p.cast::<c_void>()) };
            DPDK_BYTES.fetch_sub(size, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// An anonymous mapping of `size` bytes (rounded up to 2 MB) starting on a 2 MB boundary,
/// advised for huge pages and populated. Zeroed, as every fresh anonymous mapping is.
fn map(size: usize) -> *mut u8 {
    let len = mapped_len(size);
    let Some(reserve) = len.checked_add(HUGE_PAGE) else {
        return ptr::null_mut();
    };
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            reserve,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    let start = p as usize;
    let aligned = start.div_ceil(HUGE_PAGE) * HUGE_PAGE;
    let end = aligned + len;
    // SAFETY: both ranges lie inside the mapping just made and outside [aligned, end), which
    // is what we keep; lengths are multiples of the 4 KB page (mmap returns page-aligned
    // addresses, HUGE_PAGE is a multiple of the page size).
    unsafe {
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        if start + reserve > end {
            libc::munmap(end as *mut c_void, start + reserve - end);
        }
        // Advice only: with THP off or the call unknown, the memory is still good on 4 KB
        // pages. MADV_POPULATE_WRITE (Linux 5.14) faults every page in now, honouring the
        // advice just given.
        libc::madvise(aligned as *mut c_void, len, libc::MADV_HUGEPAGE);
        libc::madvise(aligned as *mut c_void, len, libc::MADV_POPULATE_WRITE);
    }
    MAPPED_BYTES.fetch_add(len, Ordering::Relaxed);
    aligned as *mut u8
}

fn large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= HUGE_PAGE
}

fn place(layout: Layout, zero: bool) -> *mut u8 {
    let p = from_dpdk(layout.size(), layout.align().max(64), zero);
    if !p.is_null() {
        return p;
    }
    map(layout.size())
}

// SAFETY: every block returned is at least `layout.size()` bytes aligned to `layout.align()`
// (System's own contract, rte_malloc's `align` argument, or a 2 MB-aligned mapping for
// alignments up to 2 MB); `dealloc` returns each block to the allocator that made it: the
// DPDK slots name rte_malloc's blocks, and a large layout that is not in them was mapped.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(layout) {
            place(layout, false)
        } else {
            // SAFETY: the caller's layout has a non-zero size (GlobalAlloc's contract).
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(layout) {
            place(layout, true)
        } else {
            // SAFETY: as in alloc.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if !large(layout) {
            // SAFETY: a small layout's block came from System (alloc and realloc keep small
            // layouts there).
            unsafe { System.dealloc(p, layout) };
        } else if !return_to_dpdk(p, layout.size()) {
            // SAFETY: a large block not from DPDK is a mapping `map` made of this length.
            unsafe { libc::munmap(p.cast::<c_void>(), mapped_len(layout.size())) };
            MAPPED_BYTES.fetch_sub(mapped_len(layout.size()), Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: new_size is non-zero and, rounded to align, fits isize.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !large(layout) && !large(new) {
            // SAFETY: p came from System with `layout`.
            return unsafe { System.realloc(p, layout, new_size) };
        }
        // SAFETY: new has a non-zero size.
        let q = unsafe { self.alloc(new) };
        if !q.is_null() {
            // SAFETY: both blocks are valid for the smaller size and distinct; p is then
            // freed with the layout it was allocated with.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_aligned_zeroed_and_counted() {
        let a = Allocator;
        let layout = Layout::from_size_align(3 * LARGE + 5, 64).unwrap();
        let before = usage().advised;
        // SAFETY: a non-zero layout; the block is written within its size and freed once
        // with the same layout.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE_PAGE, 0);
            assert!(
                std::slice::from_raw_parts(p, layout.size())
                    .iter()
                    .all(|&b| b == 0)
            );
            p.add(layout.size() - 1).write(7);
            assert_eq!(usage().advised - before, 4 * HUGE_PAGE);
            let q = a.realloc(p, layout, 8);
            assert_eq!(*q.add(7), 0);
            a.dealloc(q, Layout::from_size_align(8, 64).unwrap());
        }
    }
}
