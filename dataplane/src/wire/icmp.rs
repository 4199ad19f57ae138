//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages share a layout: type, code, checksum, four
//! bytes that depend on the type, then a body. Error messages quote the offending packet's
//! IP header and at least 8 bytes of its payload; `quoted` parses that.

use super::{Malformed, get_u16, ipv4, ipv6, set_u16};

pub const HEADER_LEN: usize = 8;
pub const CHECKSUM_OFFSET: usize = 2;

pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Destination unreachable, code 4: fragmentation needed and DF set (RFC 1191).
    pub const CODE_PORT_UNREACHABLE: u8 = 3;
    pub const CODE_FRAG_NEEDED: u8 = 4;

    pub fn is_error(ty: u8) -> bool {
        matches!(ty, DEST_UNREACHABLE | TIME_EXCEEDED | PARAMETER_PROBLEM)
    }
}

pub mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const CODE_PORT_UNREACHABLE: u8 = 4;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;

    pub fn is_error(ty: u8) -> bool {
        ty < 128
    }
}

#[derive(Debug)]
pub struct IcmpMessage<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpMessage<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        Ok(IcmpMessage { buffer })
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), CHECKSUM_OFFSET)
    }

    /// The body after the 8-byte header: echo data, or the quoted packet of an error.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpMessage<T> {
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), CHECKSUM_OFFSET, c);
    }
}

/// The 8-byte header of an ICMP or ICMPv6 message to write: type, code, a checksum left 0 for
/// [`fill_checksum`], and the four bytes that depend on the type (an MTU, a pointer, zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub msg_type: u8,
    pub code: u8,
    pub rest: [u8; 4],
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(m: &IcmpMessage<T>) -> Repr {
        let b = m.buffer.as_ref();
        Repr {
            msg_type: m.msg_type(),
            code: m.code(),
            rest: b[4..8].try_into().expect("4"),
        }
    }

    /// Writes the [`HEADER_LEN`] bytes at the start of `buf`, checksum 0.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.msg_type;
        buf[1] = self.code;
        set_u16(buf, CHECKSUM_OFFSET, 0);
        buf[4..8].copy_from_slice(&self.rest);
    }
}

/// Computes and writes the checksum of the whole message `m` (header and body): ICMP's over
/// the message alone, ICMPv6's with the pseudo-header of `v6` = (source, destination).
pub fn fill_checksum(m: &mut [u8], v6: Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)>) {
    set_u16(m, CHECKSUM_OFFSET, 0);
    let c = match v6 {
        Some((src, dst)) => crate::checksum::transport(
            crate::checksum::pseudo_v6(src, dst, ipv6::NEXT_ICMPV6, m.len() as u32),
            m,
        ),
        None => crate::checksum::internet(m),
    };
    set_u16(m, CHECKSUM_OFFSET, c);
}

/// A neighbour solicitation or advertisement (RFC 4861 §4.3, §4.4) with one link-layer
/// address option: the [`NDP_LEN`] bytes l4lb sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpRepr {
    /// [`v6::NEIGHBOR_SOLICIT`] or [`v6::NEIGHBOR_ADVERT`].
    pub msg_type: u8,
    /// Advertisements: router 0x80, solicited 0x40, override 0x20.
    pub flags: u8,
    pub target: std::net::Ipv6Addr,
    /// The option's type: 1 source, 2 target link-layer address.
    pub option: u8,
    pub lladdr: crate::addr::MacAddr,
}

/// Bytes of an [`NdpRepr`]: header, target, one 8-byte option.
pub const NDP_LEN: usize = 24 + 8;

impl NdpRepr {
    /// Writes the message at the start of `buf`, checksum 0 (see [`fill_checksum`]).
    pub fn emit(&self, buf: &mut [u8]) {
        let m = &mut buf[..NDP_LEN];
        m.fill(0);
        Repr {
            msg_type: self.msg_type,
            code: 0,
            rest: [self.flags, 0, 0, 0],
        }
        .emit(m);
        m[8..24].copy_from_slice(&self.target.octets());
        m[24] = self.option;
        m[25] = 1; // in units of 8 bytes
        m[26..32].copy_from_slice(&self.lladdr.0);
    }
}

/// The packet an ICMP error quotes, as far as l4lb needs it: the addresses, the transport
/// protocol and where its header starts. Offsets are from the start of the quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub v6: bool,
    pub protocol: u8,
    /// Offset of the transport header (after IPv4 options or IPv6 extension headers).
    pub l4: usize,
    /// The addresses, IPv4 mapped into IPv6.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// Parses `quote`, the body of an ICMP (`v6` false) or ICMPv6 error: an IP header of that
/// version, whole — IPv4 options and IPv6 extension headers are walked as for a packet of our
/// own (`ipv6::upper_layer`) — then TCP or UDP with at least the eight bytes of ports and
/// length or sequence number. None for anything else, a quoted IPv6 fragment included.
pub fn quoted(quote: &[u8], v6: bool) -> Option<Quoted> {
    let q = if v6 {
        if quote.len() < ipv6::HEADER_LEN || quote[0] >> 4 != 6 {
            return None;
        }
        let upper = ipv6::upper_layer(quote, quote[ipv6::field::NEXT]).ok()?;
        if upper.fragment {
            return None;
        }
        Quoted {
            v6,
            protocol: upper.protocol,
            l4: upper.offset,
            src: quote[8..24].try_into().ok()?,
            dst: quote[24..40].try_into().ok()?,
        }
    } else {
        if quote.len() < ipv4::MIN_HEADER_LEN || quote[0] >> 4 != 4 {
            return None;
        }
        let hl = usize::from(quote[0] & 0x0f) * 4;
        if hl < ipv4::MIN_HEADER_LEN {
            return None;
        }
        let v4 = |b: &[u8]| {
            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).expect("4"))
                .to_ipv6_mapped()
                .octets()
        };
        Quoted {
            v6,
            protocol: quote[ipv4::field::PROTO],
            l4: hl,
            src: v4(&quote[12..16]),
            dst: v4(&quote[16..20]),
        }
    };
    let transport = matches!(q.protocol, ipv4::PROTO_TCP | ipv4::PROTO_UDP);
    (transport && quote.len() >= q.l4 + 8).then_some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_header_and_its_checksum_verify_and_parse_back() {
        let r = Repr {
            msg_type: v4::DEST_UNREACHABLE,
            code: v4::CODE_FRAG_NEEDED,
            rest: [0, 0, 0x05, 0xc8],
        };
        let mut m = [0u8; 16];
        r.emit(&mut m);
        m[8..].copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0]);
        fill_checksum(&mut m, None);
        assert_eq!(
            crate::checksum::internet(&m),
            0,
            "a message with its checksum sums to 0"
        );
        let v = IcmpMessage::new_checked(&m[..]).unwrap();
        assert_eq!(Repr::parse(&v), r);
        // ICMPv6: the pseudo-header counts.
        let (a, b) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let mut m6 = [0u8; NDP_LEN];
        NdpRepr {
            msg_type: v6::NEIGHBOR_ADVERT,
            flags: 0xa0,
            target: a,
            option: 2,
            lladdr: crate::addr::MacAddr([2, 0, 0, 0, 0, 1]),
        }
        .emit(&mut m6);
        assert_eq!(&m6[..8], &[136, 0, 0, 0, 0xa0, 0, 0, 0]);
        assert_eq!(&m6[24..], &[2, 1, 2, 0, 0, 0, 0, 1]);
        fill_checksum(&mut m6, Some((a, b)));
        let pseudo = crate::checksum::pseudo_v6(a, b, ipv6::NEXT_ICMPV6, NDP_LEN as u32);
        assert_eq!(crate::checksum::transport(pseudo, &m6), 0);
    }

    fn v6_quote(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut q = vec![0x60, 0, 0, 0, 0, 200, next, 64];
        q.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        q.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        q.extend_from_slice(ext);
        q.extend_from_slice(l4);
        q
    }

    #[test]
    fn a_quoted_ipv6_packet_is_walked_past_its_extension_headers() {
        let ports = [0x9c, 0x40, 0, 80, 0, 0, 0, 1];
        // Destination options (8 bytes) then TCP: the ports are 8 bytes later than without.
        let dest_opts = [ipv4::PROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
        let q = quoted(&v6_quote(ipv6::NEXT_DEST_OPTS, &dest_opts, &ports), true).unwrap();
        assert_eq!((q.protocol, q.l4), (ipv4::PROTO_TCP, 48));
        assert_eq!(q.src[15], 7);
        assert_eq!(q.dst[15], 9);
        let plain = quoted(&v6_quote(ipv4::PROTO_UDP, &[], &ports), true).unwrap();
        assert_eq!((plain.protocol, plain.l4), (ipv4::PROTO_UDP, 40));
        // Cut inside the extension header, or before the eight bytes of ports: not enough.
        assert_eq!(
            quoted(&v6_quote(ipv6::NEXT_DEST_OPTS, &dest_opts[..4], &[]), true),
            None
        );
        assert_eq!(
            quoted(&v6_quote(ipv4::PROTO_TCP, &[], &ports[..7]), true),
            None
        );
        // A fragment is not looked into.
        let frag = [ipv4::PROTO_TCP, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            quoted(&v6_quote(ipv6::NEXT_FRAGMENT, &frag, &ports), true),
            None
        );
    }

    #[test]
    fn a_quoted_ipv4_packet_may_carry_options() {
        let mut q = vec![0x46, 0, 0, 100, 0, 0, 0, 0, 64, ipv4::PROTO_UDP, 0, 0];
        q.extend_from_slice(&[198, 18, 2, 1, 198, 18, 0, 100]);
        q.extend_from_slice(&[1, 1, 1, 0]); // four bytes of options (NOPs, end)
        q.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        let v = quoted(&q, false).unwrap();
        assert_eq!((v.protocol, v.l4), (ipv4::PROTO_UDP, 24));
        assert_eq!(&v.src[12..], &[198, 18, 2, 1]);
        assert_eq!(quoted(&q, true), None, "not an IPv6 header");
        q[9] = 1; // ICMP
        assert_eq!(quoted(&q, false), None);
    }
}
