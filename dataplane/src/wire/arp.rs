//! ARP for IPv4 over Ethernet (RFC 826), the only kind l4lb answers: the view, and the
//! [`Repr`] l4lb writes.

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

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn target_mac(&self) -> MacAddr {
        MacAddr(self.buffer.as_ref()[field::THA].try_into().expect("6"))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Turns a request into the reply that says `mac` has the requested address.
    pub fn make_reply(&mut self, mac: MacAddr) {
        let asked = Repr::parse(self);
        Repr {
            op: OP_REPLY,
            sender_mac: mac,
            sender_ip: asked.target_ip,
            target_mac: asked.sender_mac,
            target_ip: asked.sender_ip,
        }
        .emit(self.buffer.as_mut());
    }
}

/// An Ethernet/IPv4 ARP message to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub op: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Repr {
        Repr {
            op: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        }
    }

    /// Writes the [`LEN`] bytes of the message at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        set_u16(buf, field::HTYPE, 1);
        set_u16(buf, field::PTYPE, 0x0800);
        buf[field::HLEN] = 6;
        buf[field::PLEN] = 4;
        set_u16(buf, field::OPER, self.op);
        buf[field::SHA].copy_from_slice(&self.sender_mac.0);
        buf[field::SPA].copy_from_slice(&self.sender_ip.octets());
        buf[field::THA].copy_from_slice(&self.target_mac.0);
        buf[field::TPA].copy_from_slice(&self.target_ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_gives_the_repr_back_and_a_request_becomes_its_reply() {
        let r = Repr {
            op: OP_REQUEST,
            sender_mac: MacAddr([2, 0, 0, 0, 0, 9]),
            sender_ip: [198, 18, 0, 9].into(),
            target_mac: MacAddr([0; 6]),
            target_ip: [198, 18, 0, 1].into(),
        };
        let mut b = [0u8; LEN];
        r.emit(&mut b);
        assert_eq!(&b[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        let mut p = ArpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(Repr::parse(&p), r);
        let ours = MacAddr([2, 0, 0, 0, 0, 1]);
        p.make_reply(ours);
        assert_eq!(
            Repr::parse(&p),
            Repr {
                op: OP_REPLY,
                sender_mac: ours,
                sender_ip: r.target_ip,
                target_mac: r.sender_mac,
                target_ip: r.sender_ip,
            }
        );
    }
}
