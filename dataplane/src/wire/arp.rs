//! ARP for IPv4 over Ethernet (RFC 826), the only kind l4lb answers.

use std::net::Ipv4Addr;

use super::{Malformed, get_u16, set_u16};
use crate::addr::MacAddr;

pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

mod field {
    use std::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

#[derive(Debug)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Accepts only Ethernet/IPv4 ARP (htype 1, ptype 0x0800, hlen 6, plen 4).
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < LEN {
            return Err(Malformed::Truncated);
        }
        if get_u16(b, field::HTYPE) != 1
            || get_u16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Malformed::BadHeaderLength);
        }
        Ok(ArpPacket { buffer })
    }

    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER)
    }

    pub fn sender_mac(&self) -> MacAddr {
        MacAddr(self.buffer.as_ref()[field::SHA].try_into().expect("6"))
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        <[u8; 4]>::try_from(&self.buffer.as_ref()[field::SPA])
            .expect("4")
            .into()
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        <[u8; 4]>::try_from(&self.buffer.as_ref()[field::TPA])
            .expect("4")
            .into()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Turns a request into the reply that says `mac` has the requested address.
    pub fn make_reply(&mut self, mac: MacAddr) {
        let b = self.buffer.as_mut();
        let (sha, spa, tpa): ([u8; 6], [u8; 4], [u8; 4]) = (
            b[field::SHA].try_into().expect("6"),
            b[field::SPA].try_into().expect("4"),
            b[field::TPA].try_into().expect("4"),
        );
        set_u16(b, field::OPER, OP_REPLY);
        b[field::THA].copy_from_slice(&sha);
        b[field::TPA].copy_from_slice(&spa);
        b[field::SHA].copy_from_slice(&mac.0);
        b[field::SPA].copy_from_slice(&tpa);
    }
}
