//! Ethernet II with at most one 802.1Q tag.

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

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
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
