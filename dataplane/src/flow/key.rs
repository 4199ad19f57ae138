//! What identifies a flow: protocol, client endpoint, VIP endpoint. Addresses are stored as
//! 16 bytes (IPv4 as IPv4-mapped IPv6) so one key type serves both families.

use std::net::{IpAddr, Ipv6Addr};

use crate::hash::{seed, stable_hash, stable_hash_words};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct FlowKey {
    pub client: [u8; 16],
    pub vip: [u8; 16],
    pub client_port: u16,
    pub vip_port: u16,
    pub protocol: u8,
}

/// The 16-byte form of an address (IPv4 mapped into IPv6).
#[inline]
pub fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Back from the 16-byte form.
#[inline]
pub fn addr_from_bytes(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl FlowKey {
    pub fn new(protocol: u8, client: IpAddr, client_port: u16, vip: IpAddr, vip_port: u16) -> Self {
        FlowKey {
            client: addr_bytes(client),
            vip: addr_bytes(vip),
            client_port,
            vip_port,
            protocol,
        }
    }

    /// The key as five native-endian words (for the flow table's index hash).
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        let w = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        [
            w(&self.client[..8]),
            w(&self.client[8..]),
            w(&self.vip[..8]),
            w(&self.vip[8..]),
            u64::from(self.client_port)
                | u64::from(self.vip_port) << 16
                | u64::from(self.protocol) << 32,
        ]
    }

    pub fn client_addr(&self) -> IpAddr {
        addr_from_bytes(self.client)
    }

    pub fn vip_addr(&self) -> IpAddr {
        addr_from_bytes(self.vip)
    }

    /// The stable hash of the whole 5-tuple (see [`crate::hash`]): what Maglev looks up.
    pub fn stable_hash(&self) -> u64 {
        let w = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        stable_hash_words(
            seed::FLOW,
            [
                w(&self.client[..8]),
                w(&self.client[8..]),
                w(&self.vip[..8]),
                w(&self.vip[8..]),
                u64::from(self.client_port) << 24
                    | u64::from(self.vip_port) << 8
                    | u64::from(self.protocol),
            ],
        )
    }
}

/// The stable hash of one address (source or destination hashing).
pub fn address_hash(a: &[u8; 16]) -> u64 {
    stable_hash(seed::ADDRESS, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_round_trip_through_16_bytes() {
        let k = FlowKey::new(
            6,
            "198.18.0.2".parse().unwrap(),
            1234,
            "2001:db8::1".parse().unwrap(),
            80,
        );
        assert_eq!(k.client_addr().to_string(), "198.18.0.2");
        assert_eq!(k.vip_addr().to_string(), "2001:db8::1");
        assert_eq!(std::mem::size_of::<FlowKey>(), 38);
    }
}
