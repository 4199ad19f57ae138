//! Ethernet II with at most one 802.1Q tag: the view, and the [`Repr`] l4lb writes.

use super::{Malformed, get_u16};
use crate::addr::MacAddr;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;

pub const HEADER_LEN: usize = 14;
pub const VLAN_HEADER_LEN: usize = 18;

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: usize = 12;
    pub const VLAN_TCI: usize = 14;
    pub const VLAN_INNER_TYPE: usize = 16;
}

/// An Ethernet frame view; `header_len` is 14, or 18 with a VLAN tag.
#[derive(Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
    header_len: usize,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        let header_len = if get_u16(b, field::TYPE) == ETHERTYPE_VLAN {
            if b.len() < VLAN_HEADER_LEN {
                return Err(Malformed::Truncated);
            }
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        };
        Ok(EthernetFrame { buffer, header_len })
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr(
            self.buffer.as_ref()[field::DST]
                .try_into()
                .expect("6 bytes"),
        )
    }

    pub fn src(&self) -> MacAddr {
        MacAddr(
            self.buffer.as_ref()[field::SRC]
                .try_into()
                .expect("6 bytes"),
        )
    }

    /// The EtherType of the payload (the inner one when tagged).
    pub fn ethertype(&self) -> u16 {
        let at = if self.header_len == VLAN_HEADER_LEN {
            field::VLAN_INNER_TYPE
        } else {
            field::TYPE
        };
        get_u16(self.buffer.as_ref(), at)
    }

    /// The VLAN id, if tagged.
    pub fn vlan(&self) -> Option<u16> {
        (self.header_len == VLAN_HEADER_LEN)
            .then(|| get_u16(self.buffer.as_ref(), field::VLAN_TCI) & 0x0fff)
    }

    pub fn header_len(&self) -> usize {
        self.header_len
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_and_tagged_frames_read_their_fields() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x08, 0x00, 0x45]);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (e.ethertype(), e.header_len(), e.vlan()),
            (ETHERTYPE_IPV4, 14, None)
        );
        assert_eq!(e.src(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(e.payload(), &[0x45]);

        let mut t = f[..12].to_vec();
        t.extend_from_slice(&[0x81, 0x00, 0x20, 0x64, 0x86, 0xdd]);
        let e = EthernetFrame::new_checked(&t[..]).unwrap();
        assert_eq!(
            (e.ethertype(), e.header_len(), e.vlan()),
            (ETHERTYPE_IPV6, 18, Some(100))
        );
    }

    #[test]
    fn short_frames_are_truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&[0u8; 13][..]).unwrap_err(),
            Malformed::Truncated
        );
        let mut t = vec![0u8; 12];
        t.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(
            EthernetFrame::new_checked(&t[..]).unwrap_err(),
            Malformed::Truncated
        );
    }
}

/// An untagged Ethernet II header to write (l4lb's own frames go out untagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> Repr {
        Repr {
            dst: f.dst(),
            src: f.src(),
            ethertype: f.ethertype(),
        }
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        set_addresses(buf, self.dst, self.src);
        super::set_u16(buf, field::TYPE, self.ethertype);
    }
}

/// Sets a frame's destination and source addresses (a VLAN tag, if any, stays).
#[inline]
pub fn set_addresses(frame: &mut [u8], dst: MacAddr, src: MacAddr) {
    frame[field::DST].copy_from_slice(&dst.0);
    frame[field::SRC].copy_from_slice(&src.0);
}

#[cfg(test)]
mod repr_tests {
    use super::*;

    #[test]
    fn emit_then_parse_gives_the_repr_back() {
        let r = Repr {
            dst: MacAddr::BROADCAST,
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            ethertype: ETHERTYPE_ARP,
        };
        let mut b = [0u8; 14];
        r.emit(&mut b);
        assert_eq!(b, [255, 255, 255, 255, 255, 255, 2, 0, 0, 0, 0, 1, 8, 6]);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!((Repr::parse(&f), f.header_len()), (r, HEADER_LEN));
    }
}
