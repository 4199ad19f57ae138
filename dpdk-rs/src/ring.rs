//! Single-producer single-consumer rings of mbufs, for handing packets between two lcores.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::eal::Eal;
use crate::error::{DpdkError, Result};
use crate::mbuf::MbufBurst;
use crate::sys;

/// An SP/SC ring of mbufs. Split it into its two ends; each end is used by one lcore.
/// Dropping the ring frees the mbufs still in it.
#[derive(Debug)]
pub struct Ring {
    raw: NonNull<sys::rte_ring>,
}

// SAFETY: the ring is moved or shared only to create the two ends, which enforce one producer
// and one consumer; the rte_ring itself lives in shared DPDK memory.
unsafe impl Send for Ring {}
// SAFETY: as above: &Ring only allows split() (via &mut) and count(), which is a plain read.
unsafe impl Sync for Ring {}

impl Ring {
    /// A ring for `capacity` mbufs (exactly; DPDK sizes it to the next power of two inside).
    pub fn new(_eal: &Eal, name: &str, capacity: u32, socket: Option<u32>) -> Result<Ring> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::usage("rte_ring_create", "ring name contains a NUL byte"))?;
        let socket = socket.map_or(sys::SOCKET_ID_ANY, |s| s as i32);
        let flags = sys::RING_F_SP_ENQ | sys::RING_F_SC_DEQ | sys::RING_F_EXACT_SZ;
        // SAFETY: EAL is initialised; cname is valid for the call and copied by DPDK.
        let raw = unsafe { sys::rte_ring_create(cname.as_ptr(), capacity, socket, flags) };
        NonNull::new(raw)
            .map(|raw| Ring { raw })
            .ok_or_else(|| DpdkError::from_rte_errno("rte_ring_create"))
    }

    /// The two ends; `&mut self` makes them the only ones while they live.
    pub fn split(&mut self) -> (RingProducer<'_>, RingConsumer<'_>) {
        (
            RingProducer {
                raw: self.raw,
                _ring: PhantomData,
            },
            RingConsumer {
                raw: self.raw,
                _ring: PhantomData,
            },
        )
    }

    /// Mbufs waiting in the ring.
    pub fn count(&self) -> u32 {
        // SAFETY: the ring is live; the count is a racy but harmless read of two indices.
        unsafe { sys::l4lb_ring_count(self.raw.as_ptr()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let mut burst = MbufBurst::new();
        let (_, mut consumer) = self.split();
        while consumer.dequeue_burst(&mut burst) > 0 {
            burst.clear();
        }
        // SAFETY: no end is alive (they borrow the ring) and the ring is empty.
        unsafe { sys::rte_ring_free(self.raw.as_ptr()) }
    }
}

/// The enqueue end.
#[derive(Debug)]
pub struct RingProducer<'r> {
    raw: NonNull<sys::rte_ring>,
    _ring: PhantomData<&'r mut Ring>,
}

// SAFETY: one producer end exists per ring; it may live on another lcore than the consumer.
unsafe impl Send for RingProducer<'_> {}

impl RingProducer<'_> {
    /// Moves as many mbufs of `burst` into the ring as fit, from the front; the rest stay.
    #[inline]
    pub fn enqueue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let len = burst.len() as u32;
        // SAFETY: single producer (this end is unique); the burst owns len valid mbufs and
        // forgets the ones the ring accepted.
        let n = unsafe {
            sys::l4lb_ring_enqueue_burst(self.raw.as_ptr(), burst.as_mut_ptr().cast(), len)
        } as usize;
        burst.consume_front(n);
        n
    }
}

/// The dequeue end.
#[derive(Debug)]
pub struct RingConsumer<'r> {
    raw: NonNull<sys::rte_ring>,
    _ring: PhantomData<&'r mut Ring>,
}

// SAFETY: one consumer end exists per ring.
unsafe impl Send for RingConsumer<'_> {}

impl RingConsumer<'_> {
    /// Moves up to the burst's room from the ring to the end of `burst`.
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (ptr, room) = burst.spare();
        // SAFETY: single consumer; ptr has room for `room` pointers.
        let n = unsafe { sys::l4lb_ring_dequeue_burst(self.raw.as_ptr(), ptr.cast(), room as u32) }
            as usize;
        // SAFETY: the ring held owned mbufs; they now belong to the burst.
        unsafe { burst.extend_by(n) };
        n
    }
}
