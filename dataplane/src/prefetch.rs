//! A cache hint without `unsafe` in this crate: `safe_arch` (which `wide` already brings in)
//! wraps `_mm_prefetch` safely, since a prefetch never faults and changes no memory.

/// Asks the CPU to bring the cache line holding `r` into every cache level (DPDK's
/// `rte_prefetch0`) without waiting for it: a burst's lookups issue theirs back to back so
/// that the misses overlap.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    safe_arch::prefetch_t0(r);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = r;
}
