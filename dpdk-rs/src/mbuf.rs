//! Owned packet buffers and fixed-size bursts of them.

use std::ptr::NonNull;

use crate::sys;

/// The largest burst a [`MbufBurst`] holds (DPDK's own examples use 32 to 64).
pub const MAX_BURST: usize = 256;

/// One owned mbuf (single segment as l4lb receives them). Dropping it returns it to its pool;
/// handing it to a tx burst or a ring gives it away.
#[derive(Debug)]
pub struct Mbuf {
    raw: NonNull<sys::rte_mbuf>,
}

// SAFETY: an Mbuf is uniquely owned; mbufs are handed between lcores by design (rings, tx).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// # Safety
    /// `raw` must be a valid mbuf that the caller owns and gives to the new `Mbuf`.
    pub(crate) unsafe fn from_raw(raw: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf { raw }
    }

    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.raw.as_ptr();
        std::mem::forget(self);
        p
    }

    /// The bytes of the first (in l4lb, only) segment.
    /// The same view of it that [`MbufBurst::get_mut`] gives of a burst's mbufs.
    #[inline]
    pub fn as_mut(&mut self) -> MbufMut<'_> {
        MbufMut {
            raw: self.raw.as_ptr(),
            _burst: std::marker::PhantomData,
        }
    }

    pub fn data(&self) -> &[u8] {
        // SAFETY: the mbuf is valid and owned; mtod and data_len describe its initialised bytes.
        unsafe { segment(self.raw.as_ptr()) }
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self makes the borrow unique.
        unsafe { segment_mut(self.raw.as_ptr()) }
    }

    pub fn pkt_len(&self) -> u32 {
        // SAFETY: the mbuf is valid.
        unsafe { pkt_len_of(self.raw.as_ptr()) }
    }

    pub fn headroom(&self) -> u16 {
        // SAFETY: the mbuf is valid.
        unsafe { sys::l4lb_pktmbuf_headroom(self.raw.as_ptr()) }
    }

    pub fn tailroom(&self) -> u16 {
        // SAFETY: the mbuf is valid.
        unsafe { sys::l4lb_pktmbuf_tailroom(self.raw.as_ptr()) }
    }

    /// The port the packet was received on.
    pub fn port(&self) -> u16 {
        // SAFETY: the mbuf is valid.
        unsafe { port_of(self.raw.as_ptr()) }
    }

    /// Sets the port the packet belongs to (l4lb's control side marks the egress port so).
    pub fn set_port(&mut self, port: u16) {
        // SAFETY: the mbuf is valid and uniquely owned.
        unsafe { sys::l4lb_pktmbuf_set_port(self.raw.as_ptr(), port) }
    }

    /// Grows the packet at the end by `len` bytes and returns them (uninitialised content is
    /// whatever the buffer held; callers write it), or `None` without change if there is no room.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: the mbuf is valid; DPDK returns NULL and changes nothing when there is no room.
        let p = unsafe { sys::l4lb_pktmbuf_append(self.raw.as_ptr(), len) };
        // SAFETY: a non-null p points at `len` bytes inside this mbuf's buffer.
        (!p.is_null())
            .then(|| unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len as usize) })
    }

    /// Grows the packet at the front by `len` bytes (taken from the headroom) and returns them.
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: as in append().
        let p = unsafe { sys::l4lb_pktmbuf_prepend(self.raw.as_ptr(), len) };
        // SAFETY: a non-null p points at `len` bytes at the new start of data.
        (!p.is_null())
            .then(|| unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len as usize) })
    }

    /// Removes `len` bytes from the front; false (and no change) if the packet is shorter.
    pub fn adj(&mut self, len: u16) -> bool {
        // SAFETY: the mbuf is valid; DPDK checks the length.
        !unsafe { sys::l4lb_pktmbuf_adj(self.raw.as_ptr(), len) }.is_null()
    }

    /// Removes `len` bytes from the end; false (and no change) if the packet is shorter.
    pub fn trim(&mut self, len: u16) -> bool {
        // SAFETY: the mbuf is valid; DPDK checks the length.
        unsafe { sys::l4lb_pktmbuf_trim(self.raw.as_ptr(), len) == 0 }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and give it back exactly once.
        unsafe { sys::l4lb_pktmbuf_free(self.raw.as_ptr()) }
    }
}

/// # Safety
/// `m` must be a valid mbuf not mutably borrowed elsewhere for the returned lifetime.
unsafe fn segment<'a>(m: *mut sys::rte_mbuf) -> &'a [u8] {
    // SAFETY: per the caller's contract, mtod points at data_len initialised bytes.
    unsafe { std::slice::from_raw_parts(mtod(m), usize::from(data_len(m))) }
}

/// # Safety
/// `m` must be a valid mbuf not borrowed elsewhere for the returned lifetime.
unsafe fn segment_mut<'a>(m: *mut sys::rte_mbuf) -> &'a mut [u8] {
    // SAFETY: per the caller's contract, mtod points at data_len initialised bytes.
    unsafe { std::slice::from_raw_parts_mut(mtod(m), usize::from(data_len(m))) }
}

// The per-packet accessors read the mbuf's fields directly rather than through the C shim: a
// call across the FFI boundary cannot be inlined, and at tens of millions of packets a second
// the calls alone cost more than the work (perf showed the shim's mtod/data_len/pkt_len at ~11%
// of a worker's time). The layout is the one bindgen read from the installed headers.

/// `rte_pktmbuf_mtod`: the start of the data.
///
/// # Safety
/// `m` must be a valid mbuf.
#[inline(always)]
unsafe fn mtod(m: *mut sys::rte_mbuf) -> *mut u8 {
    // SAFETY: per the caller's contract `m` is valid; data_off stays inside the buffer.
    unsafe { (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off)) }
}

/// `rte_prefetch0`, inline: a hint that has no effect on memory, valid for any address.
#[inline(always)]
pub(crate) fn prefetch0(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults and changes no memory, whatever the address; SSE is part of
    // the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// # Safety
/// `m` must be a valid mbuf.
#[inline(always)]
unsafe fn data_len(m: *const sys::rte_mbuf) -> u16 {
    // SAFETY: per the caller's contract `m` is valid.
    unsafe { (*m).data_len }
}

/// # Safety
/// `m` must be a valid mbuf.
#[inline(always)]
unsafe fn pkt_len_of(m: *const sys::rte_mbuf) -> u32 {
    // SAFETY: per the caller's contract `m` is valid.
    unsafe { (*m).pkt_len }
}

/// # Safety
/// `m` must be a valid mbuf.
#[inline(always)]
unsafe fn port_of(m: *const sys::rte_mbuf) -> u16 {
    // SAFETY: per the caller's contract `m` is valid.
    unsafe { (*m).port }
}

/// Up to [`MAX_BURST`] owned mbufs in a fixed array: what rx fills, tx drains and rings carry,
/// without allocating. Dropping or [`clear`](MbufBurst::clear)ing frees what is left, in bulk.
pub struct MbufBurst {
    len: usize,
    ptrs: [*mut sys::rte_mbuf; MAX_BURST],
}

// SAFETY: the burst owns its mbufs uniquely; mbufs may move between lcores.
unsafe impl Send for MbufBurst {}

impl Default for MbufBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MbufBurst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufBurst").field("len", &self.len).finish()
    }
}

impl MbufBurst {
    pub const fn new() -> Self {
        MbufBurst {
            len: 0,
            ptrs: [std::ptr::null_mut(); MAX_BURST],
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == MAX_BURST
    }

    /// Adds an mbuf at the end, or gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.is_full() {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Moves the `i`-th mbuf out; the last one takes its place (order is not kept).
    pub fn swap_remove(&mut self, i: usize) -> Mbuf {
        assert!(i < self.len, "index {i} out of a burst of {}", self.len);
        let p = self.ptrs[i];
        self.len -= 1;
        self.ptrs[i] = self.ptrs[self.len];
        // SAFETY: p was owned by the burst and is no longer listed in it.
        unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) }
    }

    /// The packet bytes of the `i`-th mbuf.
    #[inline]
    pub fn data(&self, i: usize) -> &[u8] {
        // SAFETY: every pointer below len is a valid owned mbuf; &self prevents mutation.
        unsafe { segment(self.ptrs[..self.len][i]) }
    }

    #[inline]
    pub fn data_mut(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: as in data(); &mut self makes the borrow unique.
        unsafe { segment_mut(self.ptrs[..self.len][i]) }
    }

    #[inline]
    pub fn pkt_len(&self, i: usize) -> u32 {
        // SAFETY: every pointer below len is a valid owned mbuf.
        unsafe { pkt_len_of(self.ptrs[..self.len][i]) }
    }

    /// A mutable view of the `i`-th mbuf: bytes, headroom and length, as the pipeline needs.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> MbufMut<'_> {
        MbufMut {
            raw: self.ptrs[..self.len][i],
            _burst: std::marker::PhantomData,
        }
    }

    /// Takes every mbuf out, in order; the burst is empty afterwards (also if the iterator is
    /// dropped early: what it did not yield is freed). Leak-safe like `Vec::drain`: the burst
    /// forgets its mbufs when the drain starts, so a drain that is `mem::forget`-ten leaks what
    /// it did not yield instead of leaving the burst to free it again.
    pub fn drain(&mut self) -> Drain<'_> {
        let end = std::mem::take(&mut self.len);
        Drain {
            burst: self,
            next: 0,
            end,
        }
    }

    /// Total packet bytes in the burst.
    pub fn bytes(&self) -> u64 {
        (0..self.len).map(|i| u64::from(self.pkt_len(i))).sum()
    }

    /// Frees every mbuf in one bulk call.
    #[inline]
    pub fn clear(&mut self) {
        if self.len > 0 {
            // SAFETY: the first len pointers are valid mbufs owned by the burst; after this call
            // the burst lists none of them.
            unsafe { sys::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }

    /// Room left, and where DPDK may write that many new mbuf pointers.
    pub(crate) fn spare(&mut self) -> (*mut *mut sys::rte_mbuf, usize) {
        // SAFETY: len <= MAX_BURST, so the offset stays inside (or one past) the array.
        (
            unsafe { self.ptrs.as_mut_ptr().add(self.len) },
            MAX_BURST - self.len,
        )
    }

    /// Records that DPDK wrote `n` new mbufs after the current ones.
    ///
    /// # Safety
    /// The `n` pointers after `len` must be valid mbufs now owned by the burst.
    pub(crate) unsafe fn extend_by(&mut self, n: usize) {
        debug_assert!(self.len + n <= MAX_BURST);
        self.len += n;
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        self.ptrs.as_mut_ptr()
    }

    /// Forgets the first `n` mbufs (they were handed to DPDK) and moves the rest to the front.
    pub(crate) fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.ptrs.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

/// A mutable view of one mbuf (in a burst, or owned), as the packet path works on it.
#[derive(Debug)]
pub struct MbufMut<'b> {
    raw: *mut sys::rte_mbuf,
    _burst: std::marker::PhantomData<&'b mut sys::rte_mbuf>,
}

impl MbufMut<'_> {
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the burst owns this valid mbuf and is mutably borrowed for our lifetime.
        unsafe { segment(self.raw) }
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self makes the borrow unique.
        unsafe { segment_mut(self.raw) }
    }

    /// Adds `n` bytes at the front from the headroom; false (no change) if there is not room.
    #[inline]
    pub fn prepend(&mut self, n: u16) -> bool {
        // SAFETY: a valid mbuf; DPDK returns NULL and changes nothing without room.
        !unsafe { sys::l4lb_pktmbuf_prepend(self.raw, n) }.is_null()
    }

    /// Sets the data length: trims, or appends from the tailroom; false (no change) if the
    /// tailroom is too small.
    #[inline]
    pub fn set_len(&mut self, len: u16) -> bool {
        // SAFETY: a valid single-segment mbuf.
        let cur = unsafe { data_len(self.raw) };
        if len <= cur {
            // SAFETY: as above; trimming less than the length cannot fail.
            unsafe { sys::l4lb_pktmbuf_trim(self.raw, cur - len) == 0 }
        } else {
            // SAFETY: as above; DPDK returns NULL and changes nothing without tailroom.
            !unsafe { sys::l4lb_pktmbuf_append(self.raw, len - cur) }.is_null()
        }
    }

    #[inline]
    pub fn port(&self) -> u16 {
        // SAFETY: a valid mbuf.
        unsafe { port_of(self.raw) }
    }
}

/// The in-order draining iterator of [`MbufBurst::drain`]: it owns the mbufs at
/// `next..end` of the burst's array (the burst itself lists none while it lives).
pub struct Drain<'b> {
    burst: &'b mut MbufBurst,
    next: usize,
    end: usize,
}

impl Drain<'_> {
    /// Prefetches the data of the mbuf `ahead` places after the next one to be yielded.
    #[inline]
    pub fn prefetch(&self, ahead: usize) {
        let i = self.next + ahead;
        if i < self.end {
            // SAFETY: next..end are valid mbufs owned by this drain.
            prefetch0(unsafe { mtod(self.burst.ptrs[i]) });
        }
    }
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next >= self.end {
            return None;
        }
        let p = self.burst.ptrs[self.next];
        self.next += 1;
        // SAFETY: p is a valid mbuf owned by the drain; the drain no longer lists it.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        let (start, end) = (self.next, self.end);
        if start < end {
            // SAFETY: the mbufs not yet yielded are valid and owned by the drain; they are
            // freed once, here (the burst's length is already 0).
            unsafe {
                sys::rte_pktmbuf_free_bulk(
                    self.burst.ptrs.as_mut_ptr().add(start),
                    (end - start) as u32,
                )
            };
        }
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_burst_frees_nothing_and_reports_no_bytes() {
        // No EAL needed: nothing is touched while the burst is empty.
        let mut b = MbufBurst::new();
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
        b.clear();
        assert_eq!(b.spare().1, MAX_BURST);
    }
}
