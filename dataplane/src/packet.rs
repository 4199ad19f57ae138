//! What the pipeline needs from a packet buffer: its bytes, room at the front (tunnel headers)
//! and a length it can change (replies). An mbuf provides it in the lcore; [`OwnedPacket`]
//! provides it in tests, fuzzing and benchmarks.

pub trait PacketBuf {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Adds `n` bytes at the front (their content is unspecified); false and no change if there
    /// is not enough headroom.
    fn prepend(&mut self, n: usize) -> bool;
    /// Sets the length: shrinks, or grows into the tailroom (new bytes unspecified); false and
    /// no change if there is not enough room.
    fn set_len(&mut self, len: usize) -> bool;
}

/// Headroom as DPDK gives mbufs (RTE_PKTMBUF_HEADROOM).
pub const HEADROOM: usize = 128;

/// A packet in a Vec with DPDK-like headroom and tailroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPacket {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl OwnedPacket {
    /// The bytes of `frame` with 128 bytes of headroom and room to grow to 2048 bytes.
    pub fn new(frame: &[u8]) -> Self {
        let cap = (HEADROOM + frame.len()).max(HEADROOM + 2048);
        let mut buf = vec![0u8; cap];
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        OwnedPacket {
            buf,
            start: HEADROOM,
            len: frame.len(),
        }
    }
}

impl OwnedPacket {
    /// Puts `frame` back in place (with the original headroom), reusing the buffer: for
    /// benchmarks that process the same packet again and again.
    pub fn reset_from(&mut self, frame: &[u8]) {
        self.start = HEADROOM;
        self.len = frame.len();
        self.buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    }
}

impl PacketBuf for OwnedPacket {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        self.len += n;
        true
    }

    fn set_len(&mut self, len: usize) -> bool {
        if self.start + len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_set_len_respect_head_and_tail_room() {
        let mut p = OwnedPacket::new(&[1, 2, 3]);
        assert!(p.prepend(2));
        assert_eq!(&p.data()[2..], &[1, 2, 3]);
        assert!(!p.prepend(HEADROOM));
        assert!(p.set_len(4));
        assert_eq!(&p.data()[2..], &[1, 2]);
        assert!(!p.set_len(5000));
        assert_eq!(p.data().len(), 4);
    }
}
