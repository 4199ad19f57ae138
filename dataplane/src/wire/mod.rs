//! Packet views: thin typed windows over byte buffers (smoltcp's `wire` style). `new_checked`
//! validates lengths and header-length fields once; after that accessors cannot panic. A view
//! over `&mut [u8]` also has setters. Malformed input is a [`Malformed`] value, never a panic.

pub mod arp;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than its header, or than its own length field says.
    Truncated,
    /// A header-length field below the minimum (IPv4 IHL < 5, TCP data offset < 5).
    BadHeaderLength,
    /// The IP version field does not match.
    BadVersion,
    /// A length field larger than the buffer or smaller than the header (IPv4 total length,
    /// UDP length).
    BadLength,
    /// A header checksum that does not verify (IPv4).
    BadChecksum,
}

#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
