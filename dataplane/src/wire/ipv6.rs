//! IPv6 (RFC 8200) and the walk over extension headers to the upper layer.

use std::net::Ipv6Addr;

use super::{Malformed, get_u16, get_u32};

pub const HEADER_LEN: usize = 40;

pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_TCP: u8 = 6;
pub const NEXT_UDP: u8 = 17;
pub const NEXT_IPV6: u8 = 41;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_NONE: u8 = 59;
pub const NEXT_DEST_OPTS: u8 = 60;

pub(crate) mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// An IPv6 packet view; the payload ends where the payload-length field says.
#[derive(Debug)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the upper-layer header starts, after the extension headers l4lb skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    pub protocol: u8,
    /// Offset from the start of the IPv6 header.
    pub offset: usize,
    /// A fragment header was met: this is (part of) a fragmented datagram.
    pub fragment: bool,
}

/// The walk of [`Ipv6Packet::upper_layer`] over `b`, an IPv6 packet from its fixed header on
/// (whole, or as much as an ICMPv6 error quotes), whose fixed header names `next` first.
pub fn upper_layer(b: &[u8], mut next: u8) -> Result<UpperLayer, Malformed> {
    let mut at = HEADER_LEN;
    // Bounded: each step advances at least 8 bytes through a buffer of at most 64 KiB.
    loop {
        match next {
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => {
                if b.len() < at + 8 {
                    return Err(Malformed::Truncated);
                }
                let len = (usize::from(b[at + 1]) + 1) * 8;
                if b.len() < at + len {
                    return Err(Malformed::Truncated);
                }
                next = b[at];
                at += len;
            }
            NEXT_FRAGMENT => {
                if b.len() < at + 8 {
                    return Err(Malformed::Truncated);
                }
                return Ok(UpperLayer {
                    protocol: b[at],
                    offset: at + 8,
                    fragment: true,
                });
            }
            protocol => {
                return Ok(UpperLayer {
                    protocol,
                    offset: at,
                    fragment: false,
                });
            }
        }
    }
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Malformed::BadVersion);
        }
        if HEADER_LEN + usize::from(get_u16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(Malformed::BadLength);
        }
        Ok(Ipv6Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn traffic_class(&self) -> u8 {
        ((get_u32(self.b(), field::VER_TC_FLOW) >> 20) & 0xff) as u8
    }

    pub fn payload_len(&self) -> usize {
        usize::from(get_u16(self.b(), field::PAYLOAD_LEN))
    }

    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT]
    }

    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        <[u8; 16]>::try_from(&self.b()[field::SRC..field::SRC + 16])
            .expect("16")
            .into()
    }

    pub fn dst(&self) -> Ipv6Addr {
        <[u8; 16]>::try_from(&self.b()[field::DST..field::DST + 16])
            .expect("16")
            .into()
    }

    /// Skips hop-by-hop, routing and destination-options headers; stops at anything else. A
    /// fragment header stops the walk too and marks the packet as a fragment.
    pub fn upper_layer(&self) -> Result<UpperLayer, Malformed> {
        upper_layer(&self.b()[..self.total_len()], self.next_header())
    }

    pub fn packet(&self) -> &[u8] {
        &self.b()[..self.total_len()]
    }
}

/// An IPv6 header to write, without extension headers (flow label 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
        }
    }

    /// Writes the [`HEADER_LEN`] bytes of the header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..HEADER_LEN];
        let first = (6u32 << 28) | (u32::from(self.traffic_class) << 20);
        h[field::VER_TC_FLOW..field::VER_TC_FLOW + 4].copy_from_slice(&first.to_be_bytes());
        h[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2]
            .copy_from_slice(&(self.payload_len as u16).to_be_bytes());
        h[field::NEXT] = self.next_header;
        h[field::HOP_LIMIT] = self.hop_limit;
        h[field::SRC..field::SRC + 16].copy_from_slice(&self.src.octets());
        h[field::DST..field::DST + 16].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repr_emitted_parses_back() {
        let r = Repr {
            src: "2001:db8:1::1".parse().unwrap(),
            dst: "2001:db8:1::10".parse().unwrap(),
            next_header: NEXT_IPV6,
            payload_len: 48,
            hop_limit: 64,
            traffic_class: 0x28,
        };
        let mut b = [0u8; 88];
        r.emit(&mut b);
        assert_eq!(&b[..4], &[0x62, 0x80, 0, 0], "flow label 0");
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), r);
    }

    fn packet(next: u8, ext: &[u8], upper: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((ext.len() + upper.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(ext);
        p.extend_from_slice(upper);
        p
    }

    #[test]
    fn extension_headers_are_skipped_to_the_upper_layer() {
        // hop-by-hop (8 bytes) -> destination options (16 bytes) -> UDP
        let mut ext = vec![NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[NEXT_UDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let p = packet(NEXT_HOP_BY_HOP, &ext, &[0; 8]);
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            v.upper_layer(),
            Ok(UpperLayer {
                protocol: NEXT_UDP,
                offset: 64,
                fragment: false
            })
        );
        assert_eq!(v.hop_limit(), 64);
    }

    #[test]
    fn a_fragment_header_marks_a_fragment() {
        let p = packet(NEXT_FRAGMENT, &[NEXT_TCP, 0, 0, 1, 0, 0, 0, 7], &[0; 20]);
        let u = Ipv6Packet::new_checked(&p[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert!(u.fragment);
        assert_eq!(u.protocol, NEXT_TCP);
    }

    #[test]
    fn truncated_extension_chains_and_bad_lengths_are_reasons() {
        let p = packet(NEXT_ROUTING, &[NEXT_UDP, 3, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Malformed::Truncated)
        );
        let mut p = packet(NEXT_UDP, &[], &[0; 8]);
        p[5] = 9;
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]).unwrap_err(),
            Malformed::BadLength
        );
        p[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]).unwrap_err(),
            Malformed::BadVersion
        );
        assert_eq!(
            Ipv6Packet::new_checked(&p[..39]).unwrap_err(),
            Malformed::Truncated
        );
    }
}
