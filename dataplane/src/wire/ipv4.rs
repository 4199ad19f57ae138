//! IPv4 (RFC 791). Options and fragments are recognised (the pipeline drops both).

use std::net::Ipv4Addr;

use super::{Malformed, get_u16, set_u16};

pub const MIN_HEADER_LEN: usize = 20;
pub const FLAG_DF: u16 = 0x4000;
pub const FLAG_MF: u16 = 0x2000;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub(crate) mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LEN: usize = 2;
    pub const ID: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// An IPv4 packet view. The buffer may be longer than the packet (Ethernet padding): the
/// payload ends where the total-length field says.
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Malformed::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(Malformed::BadHeaderLength);
        }
        if b.len() < hl {
            return Err(Malformed::Truncated);
        }
        let total = usize::from(get_u16(b, field::LEN));
        if total < hl || total > b.len() {
            return Err(Malformed::BadLength);
        }
        Ok(Ipv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn has_options(&self) -> bool {
        self.header_len() > MIN_HEADER_LEN
    }

    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }

    pub fn total_len(&self) -> usize {
        usize::from(get_u16(self.b(), field::LEN))
    }

    pub fn ident(&self) -> u16 {
        get_u16(self.b(), field::ID)
    }

    pub fn dont_fragment(&self) -> bool {
        get_u16(self.b(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More-fragments set or a non-zero offset: a piece of a larger datagram.
    pub fn is_fragment(&self) -> bool {
        get_u16(self.b(), field::FLAGS_FRAG) & (FLAG_MF | 0x1fff) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTO]
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.b(), field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        <[u8; 4]>::try_from(&self.b()[field::SRC..field::SRC + 4])
            .expect("4")
            .into()
    }

    pub fn dst(&self) -> Ipv4Addr {
        <[u8; 4]>::try_from(&self.b()[field::DST..field::DST + 4])
            .expect("4")
            .into()
    }

    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }

    /// The bytes after the header, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }

    pub fn verify_checksum(&self) -> bool {
        crate::checksum::fold(crate::checksum::sum(self.header())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.m(), field::CHECKSUM, c);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = crate::checksum::ipv4_header(self.header());
        self.set_checksum(c);
    }
}

/// An option-less IPv4 header to write (identification 0: l4lb never fragments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: usize,
    pub ttl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    pub dont_fragment: bool,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: p.total_len() - p.header_len(),
            ttl: p.ttl(),
            tos: p.tos(),
            dont_fragment: p.dont_fragment(),
        }
    }

    /// Writes the [`MIN_HEADER_LEN`] bytes of the header, checksum included, at the start of
    /// `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..MIN_HEADER_LEN];
        h[field::VER_IHL] = 0x45;
        h[field::TOS] = self.tos;
        set_u16(h, field::LEN, (MIN_HEADER_LEN + self.payload_len) as u16);
        set_u16(h, field::ID, 0);
        set_u16(
            h,
            field::FLAGS_FRAG,
            if self.dont_fragment { FLAG_DF } else { 0 },
        );
        h[field::TTL] = self.ttl;
        h[field::PROTO] = self.protocol;
        set_u16(h, field::CHECKSUM, 0);
        h[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        h[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let c = crate::checksum::ipv4_header20(<&[u8; 20]>::try_from(&*h).expect("20 bytes"));
        set_u16(h, field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repr_emitted_parses_back_with_a_good_checksum() {
        let r = Repr {
            src: [198, 18, 0, 1].into(),
            dst: [198, 18, 1, 10].into(),
            protocol: PROTO_IPIP,
            payload_len: 40,
            ttl: 64,
            tos: 0x28,
            dont_fragment: true,
        };
        let mut b = [0u8; 60];
        r.emit(&mut b);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((Repr::parse(&p), p.ident(), p.header_len()), (r, 0, 20));
    }

    fn header() -> Vec<u8> {
        // 20-byte header, total length 28, DF, TTL 64, UDP, 198.18.0.1 -> 198.18.0.2, 8 bytes payload
        let mut h = vec![
            0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        h.extend_from_slice(&[0; 8]);
        let c = crate::checksum::ipv4_header(&h[..20]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn fields_read_and_checksum_verifies() {
        let h = header();
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert_eq!(
            (p.header_len(), p.total_len(), p.ttl(), p.protocol()),
            (20, 28, 64, 17)
        );
        assert!(p.dont_fragment() && !p.is_fragment() && !p.has_options());
        assert_eq!(
            (p.src(), p.dst()),
            (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2))
        );
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn padding_after_the_total_length_is_not_payload() {
        let mut h = header();
        h.extend_from_slice(&[0xee; 18]); // Ethernet minimum-size padding
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).unwrap().payload(),
            &[0u8; 8]
        );
    }

    #[test]
    fn malformed_headers_are_reasons() {
        let h = header();
        assert_eq!(
            Ipv4Packet::new_checked(&h[..19]).unwrap_err(),
            Malformed::Truncated
        );
        let mut v = h.clone();
        v[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            Malformed::BadVersion
        );
        v[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            Malformed::BadHeaderLength
        );
        v[0] = 0x4f; // 60-byte header in a 28-byte buffer
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            Malformed::Truncated
        );
        let mut l = h.clone();
        l[3] = 200;
        assert_eq!(
            Ipv4Packet::new_checked(&l[..]).unwrap_err(),
            Malformed::BadLength
        );
        l[3] = 12;
        assert_eq!(
            Ipv4Packet::new_checked(&l[..]).unwrap_err(),
            Malformed::BadLength
        );
        let mut c = h;
        c[8] = 63;
        assert!(!Ipv4Packet::new_checked(&c[..]).unwrap().verify_checksum());
    }

    #[test]
    fn fragments_and_options_are_recognised() {
        let mut h = header();
        h[6] = 0x20; // MF
        assert!(Ipv4Packet::new_checked(&h[..]).unwrap().is_fragment());
        h[6] = 0x00;
        h[7] = 0x10; // offset 16 x 8 bytes, last fragment
        assert!(Ipv4Packet::new_checked(&h[..]).unwrap().is_fragment());
        let mut o = header();
        o[0] = 0x46;
        o[3] = 32;
        o.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL
        let p = Ipv4Packet::new_checked(&o[..]).unwrap();
        assert!(p.has_options());
        assert_eq!(p.payload().len(), 8);
    }
}
