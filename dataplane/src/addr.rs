//! Link and network addresses as the configuration writes them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) of an IPv4 address: how flow keys and
/// views hold IPv4 addresses.
#[inline(always)]
pub fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

/// [`mapped`] built as one 128-bit number. Where the compiler puts the bytewise form in
/// memory in pieces (a zero word, the `ffff`, the address) and reads it back as 8-byte words,
/// each read waits for the narrower stores to reach the cache (store forwarding fails): a
/// new flow's service key did, 13% of its fast path's samples. Elsewhere the bytewise form is
/// the shorter code (its words are built in registers), so both are kept.
#[inline(always)]
pub fn mapped_wide(a: [u8; 4]) -> [u8; 16] {
    (0xffff_u128 << 32 | u128::from(u32::from_be_bytes(a))).to_be_bytes()
}

/// True if a 16-byte address is IPv4-mapped.
#[inline(always)]
pub fn is_mapped(a: &[u8; 16]) -> bool {
    a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
}

/// True for a source address no host sends from: IPv4 0.0.0.0/8 ("this network"), 127/8,
/// multicast 224/4 and 240/4 with the limited broadcast (RFC 1122 3.2.1.3, RFC 1812 5.3.7);
/// IPv6 `::`, `::1` and ff00::/8 (RFC 4291 2.5.2, 2.5.3, 2.7), and an IPv4-mapped address in an
/// IPv6 header (RFC 4291 2.5.5.2: never on the wire; Linux drops them too). `a` is a view's
/// 16-byte form, IPv4 mapped; `v6`: it came in an IPv6 header.
#[inline]
pub fn is_martian_source(a: &[u8; 16], v6: bool) -> bool {
    if is_mapped(a) {
        v6 || matches!(a[12], 0 | 127 | 224..=255)
    } else {
        a[0] == 0xff || a[..15] == [0; 15] && a[15] <= 1
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl FromStr for MacAddr {
    type Err = String;
    /// `02:00:00:00:01:0a` (also with `-`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address (six hex pairs, like 02:00:00:00:01:0a)");
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An address with a prefix length: an interface address (`198.18.0.1/24`, host bits kept)
/// or a route prefix (`0.0.0.0/0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl IpPrefix {
    pub fn max_len(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// The prefix with host bits cleared.
    pub fn network(self) -> IpPrefix {
        IpPrefix {
            addr: mask(self.addr, self.len),
            len: self.len,
        }
    }

    pub fn contains(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == mask(self.addr, self.len)
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl FromStr for IpPrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} is not an address with a prefix length (like 198.18.0.1/24)")
        })?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = IpPrefix::max_len(addr);
        let len = l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("prefix length {l:?} is not a number from 0 to {max}"))?;
        Ok(IpPrefix { addr, len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_mapped_forms_are_the_ipv4_mapped_address() {
        for a in [
            [0, 0, 0, 0],
            [198, 18, 0, 1],
            [255, 255, 255, 255],
            [1, 2, 3, 4],
        ] {
            let want = std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets();
            assert_eq!(mapped(a), want);
            assert_eq!(mapped_wide(a), want);
        }
    }

    #[test]
    fn macs_parse_print_and_refuse_junk() {
        let m: MacAddr = "02:00:00:00:01:0A".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0, 0, 1, 0x0a]);
        assert_eq!(m.to_string(), "02:00:00:00:01:0a");
        for bad in [
            "02:00:00:00:01",
            "02:00:00:00:01:0a:00",
            "2:0:0:0:1:a",
            "zz:00:00:00:01:0a",
            "",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!m.is_multicast());
    }

    #[test]
    fn prefixes_parse_mask_and_contain() {
        let p: IpPrefix = "198.18.1.1/24".parse().unwrap();
        assert_eq!(p.network().to_string(), "198.18.1.0/24");
        assert!(p.contains("198.18.1.200".parse().unwrap()));
        assert!(!p.contains("198.18.2.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        let any: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("203.0.113.9".parse().unwrap()));
        let v6: IpPrefix = "2001:db8:1::1/64".parse().unwrap();
        assert!(v6.contains("2001:db8:1::ffff".parse().unwrap()));
        assert_eq!(
            "198.18.0.1/33".parse::<IpPrefix>().unwrap_err(),
            "prefix length \"33\" is not a number from 0 to 32"
        );
        assert!("198.18.0.1".parse::<IpPrefix>().is_err());
        assert!("198.18.0.300/24".parse::<IpPrefix>().is_err());
    }
}
