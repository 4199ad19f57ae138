//! The Internet checksum: full sums (RFC 1071) for what l4lb builds, incremental updates
//! (RFC 1624) for what it rewrites, so a NAT rewrite touches a few words instead of the payload.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded with
/// zero), folded to 16 bits but not complemented.
///
/// RFC 1071 §2(B): the sum may be taken over wider words and folded at the end, so this adds
/// 32-bit halves of 64-bit loads into a 64-bit accumulator (no carry is lost for any IP packet).
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [b] = rest {
        acc += u64::from(*b) << 8;
    }
    fold64(acc)
}

/// Folds a 64-bit one's-complement accumulator to 16 bits.
#[inline]
fn fold64(mut acc: u64) -> u32 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = (acc & 0xffff) + (acc >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u32
}

/// Folds a sum of several partial sums to 16 bits. Two steps are enough for any `u32`: the
/// first leaves at most 0x1fffe, the second at most 0xffff.
#[inline]
pub fn fold(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The Internet checksum of `data` (whose checksum field must be zero): what the IPv4 header
/// and ICMPv4 use.
pub fn internet(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// True if a 20-byte IPv4 header (no options) checksums to zero: five 32-bit words, folded
/// (RFC 1071 §2(B)). The general `sum` costs four times as many instructions here.
///
/// The words are summed in native byte order: a one's-complement sum of byte-swapped words is
/// the byte-swapped sum (RFC 1071 §2(B)), and 0xffff is its own swap. They are added as 32-bit
/// one's-complement numbers ([`add32`]: `add` and `adc`), folded once.
#[inline(always)]
pub fn ipv4_header20_ok(h: &[u8; 20]) -> bool {
    let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let s = add32(add32(add32(add32(w(0), w(4)), w(8)), w(12)), w(16));
    fold32(s) == 0xffff
}

/// The IPv4 header checksum; the header's own checksum field must be zero.
pub fn ipv4_header(header: &[u8]) -> u16 {
    internet(header)
}

/// [`ipv4_header`] of a 20-byte header, as [`ipv4_header20_ok`] verifies one: five 32-bit
/// words added in the machine's byte order (RFC 1071 §2(B): the sum does not depend on it),
/// folded, and turned back into the field's value.
#[inline]
pub fn ipv4_header20(h: &[u8; 20]) -> u16 {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let c = !(fold64(w(0) + w(4) + w(8) + w(12) + w(16)) as u16);
    u16::from_be_bytes(c.to_ne_bytes())
}

/// The IPv4 pseudo-header sum for TCP/UDP/ICMP-less protocols (RFC 793, RFC 768).
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(protocol) + u32::from(len)
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1), also used by ICMPv6.
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

/// A transport checksum from a pseudo-header sum and the segment (checksum field zeroed).
pub fn transport(pseudo: u32, segment: &[u8]) -> u16 {
    !fold(pseudo + sum(segment))
}

/// True if `segment` (checksum included) verifies against `pseudo`.
pub fn verifies(pseudo: u32, segment: &[u8]) -> bool {
    fold(pseudo + sum(segment)) == 0xffff
}

/// The change that rewriting `old` into `new` (equal, even lengths) makes to a one's-complement
/// sum: ~m + m' summed over the words (RFC 1624). Computed once, it can be applied to several
/// checksums (a NAT rewrite changes the IPv4 header's and the transport's).
#[inline]
pub fn delta(old: &[u8], new: &[u8]) -> u32 {
    debug_assert_eq!(old.len(), new.len());
    u32::from(!fold(sum(old))) + sum(new)
}

/// [`delta`] for a 4-byte field (an IPv4 address), without the general loop.
#[inline]
pub fn delta4(old: [u8; 4], new: [u8; 4]) -> u32 {
    let (o, n) = (u32::from_be_bytes(old), u32::from_be_bytes(new));
    (!o >> 16) + (!o & 0xffff) + (n >> 16) + (n & 0xffff)
}

/// [`delta`] for a 16-byte field (an IPv6 address), without the general loop or a call: the
/// complemented old words and the new ones added as 32-bit halves of 64-bit loads, then
/// folded (RFC 1071 §2(B)). Congruent to `delta`'s answer, so a checksum it updates is the
/// same.
#[inline(always)]
pub fn delta16(old: &[u8; 16], new: &[u8; 16]) -> u32 {
    let (o, n) = (!u128::from_ne_bytes(*old), u128::from_ne_bytes(*new));
    let halves = |x: u128| {
        let (lo, hi) = (x as u64, (x >> 64) as u64);
        (lo >> 32) + (lo & 0xffff_ffff) + (hi >> 32) + (hi & 0xffff_ffff)
    };
    // Native-endian loads: a one's-complement sum is the same in either byte order once its
    // two bytes are swapped back (RFC 1071 §2(B)), done after the fold.
    let s = fold64(halves(o) + halves(n));
    u32::from(u16::from_be(s as u16))
}

/// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with the `delta` of the rewrite.
#[inline]
pub fn apply(checksum: u16, delta: u32) -> u16 {
    !fold(u32::from(!checksum) + delta)
}

/// RFC 1624 eqn. 3 for every 16-bit word that changed from `old` to `new`.
#[inline]
pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    apply(checksum, delta(old, new))
}

/// RFC 1624 eqn. 3 for one 16-bit field.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// The NAT rewrite of an IPv4 header's address and the port after it, in place: the 4-byte
/// address at `addr_at` becomes `new_addr` and the port at `port_at` `new_port` (both as they
/// are on the wire), with the header checksum at `ip_checksum_at` and the transport's at
/// `l4_checksum_at` updated (RFC 1624 eqn. 3; `udp`: a UDP checksum, whose 0 means none).
///
/// The same checksums as [`apply`] and [`udp_apply`] with [`delta4`], on fewer instructions:
/// everything is read and written in native byte order, with no swap (a one's-complement sum
/// of byte-swapped words is the byte-swapped sum, RFC 1071 §2(B), and 0 and 0xffff are their
/// own swaps), and the sums are 32-bit one's-complement additions ([`add32`]) folded once at
/// the end.
#[inline(always)]
pub fn nat4_rewrite<const N: usize>(
    h: &mut [u8; N],
    addr_at: usize,
    new_addr: [u8; 4],
    port_at: usize,
    new_port: [u8; 2],
    (ip_checksum_at, l4_checksum_at, udp): (usize, usize, bool),
) {
    let ne16 = |h: &[u8; N], at: usize| u32::from(u16::from_ne_bytes([h[at], h[at + 1]]));
    let old = u32::from_ne_bytes([h[addr_at], h[addr_at + 1], h[addr_at + 2], h[addr_at + 3]]);
    let addr = add32(!old, u32::from_ne_bytes(new_addr));
    let port = (ne16(h, port_at) ^ 0xffff) + u32::from(u16::from_ne_bytes(new_port));
    let ip = !fold32(add32(addr, ne16(h, ip_checksum_at) ^ 0xffff));
    let c = ne16(h, l4_checksum_at);
    let l4 = !fold32(add32(addr, port + (c ^ 0xffff)));
    // Over UDP a 0 means "no checksum" and stays 0; a computed 0 is sent as 0xffff (RFC 768).
    let l4 = match (udp, c, l4) {
        (true, 0, _) => 0,
        (true, _, 0) => 0xffff,
        _ => l4,
    };
    h[addr_at..addr_at + 4].copy_from_slice(&new_addr);
    h[port_at..port_at + 2].copy_from_slice(&new_port);
    h[ip_checksum_at..ip_checksum_at + 2].copy_from_slice(&ip.to_ne_bytes());
    h[l4_checksum_at..l4_checksum_at + 2].copy_from_slice(&l4.to_ne_bytes());
}

/// One's-complement addition of 32-bit values (the carry out added back in: `add`, `adc`):
/// congruent to the sum of their 16-bit words modulo 0xffff (2^16 and 2^32 are both 1), and
/// 0 only when both are.
#[inline(always)]
pub fn add32(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// Folds a 32-bit one's-complement value to 16 bits: the same number as [`fold`] (the
/// second step's high half needs no mask, it is cut off).
#[inline(always)]
fn fold32(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    (s + (s >> 16)) as u16
}

/// A UDP checksum after an update: over IPv4 a 0 means "no checksum" and must stay 0 (there
/// is nothing to update); a computed 0 is sent as 0xffff (RFC 768).
#[inline]
pub fn udp_update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    udp_apply(checksum, delta(old, new))
}

/// [`udp_update`] with a precomputed delta.
#[inline]
pub fn udp_apply(checksum: u16, delta: u32) -> u16 {
    if checksum == 0 {
        return 0;
    }
    match apply(checksum, delta) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 -> ddf2 (the sum, before complementing).
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(sum(&[0xab]), 0xab00, "an odd byte is padded on the right");
    }

    #[test]
    fn a_known_ipv4_header_checksum() {
        // A widely quoted example header: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
    }

    #[test]
    fn an_ipv4_udp_checksum_of_zero_stays_zero() {
        assert_eq!(udp_update(0, &[198, 18, 0, 100], &[198, 18, 1, 10]), 0);
    }

    /// Full recomputation, the way a receiver checks.
    fn full(pseudo: u32, seg: &mut [u8], at: usize) -> u16 {
        seg[at..at + 2].copy_from_slice(&[0, 0]);
        transport(pseudo, seg)
    }

    #[test]
    fn delta16_equals_the_general_delta_at_the_edges() {
        // All-zero and all-one words are where the two zeros of one's complement differ.
        let edges = [[0u8; 16], [0xff; 16], {
            let mut a = [0u8; 16];
            a[15] = 1;
            a
        }];
        for old in edges {
            for new in edges {
                for c in [0, 1, 0xfffe, 0xffff] {
                    assert_eq!(apply(c, delta16(&old, &new)), apply(c, delta(&old, &new)));
                    assert_eq!(
                        udp_apply(c, delta16(&old, &new)),
                        udp_apply(c, delta(&old, &new))
                    );
                }
            }
        }
    }

    /// What [`nat4_rewrite`] must give: the general updates, in wire order.
    fn nat4_reference(
        h: &mut [u8; 54],
        addr_at: usize,
        new_addr: [u8; 4],
        port_at: usize,
        new_port: [u8; 2],
        at: (usize, usize, bool),
    ) {
        let old: [u8; 4] = h[addr_at..addr_at + 4].try_into().unwrap();
        let old_port = u16::from_be_bytes([h[port_at], h[port_at + 1]]);
        let d = delta4(old, new_addr);
        let be = |h: &[u8; 54], i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let ip = apply(be(h, at.0), d);
        let d4 = d + u32::from(!old_port) + u32::from(u16::from_be_bytes(new_port));
        let l4 = if at.2 {
            udp_apply(be(h, at.1), d4)
        } else {
            apply(be(h, at.1), d4)
        };
        h[addr_at..addr_at + 4].copy_from_slice(&new_addr);
        h[port_at..port_at + 2].copy_from_slice(&new_port);
        h[at.0..at.0 + 2].copy_from_slice(&ip.to_be_bytes());
        h[at.1..at.1 + 2].copy_from_slice(&l4.to_be_bytes());
    }

    #[test]
    fn nat4_rewrite_equals_the_general_updates_at_the_edges() {
        // All-zero and all-one words and checksums: where the two zeros of one's complement
        // and UDP's "no checksum" differ. Offsets of a TCP and a UDP packet's destination.
        let words = [[0u8; 4], [0xff; 4], [0, 0, 0, 1], [0xff, 0xff, 0, 0]];
        let ports = [[0u8; 2], [0xff; 2], [0, 1]];
        let sums = [[0u8; 2], [0xff; 2], [0, 1], [0xff, 0xfe]];
        for udp in [false, true] {
            let at = (24, if udp { 40 } else { 50 }, udp);
            for (old, new) in words.iter().flat_map(|o| words.iter().map(move |n| (o, n))) {
                for (op, np) in ports.iter().flat_map(|o| ports.iter().map(move |n| (o, n))) {
                    for (ip, l4) in sums.iter().flat_map(|i| sums.iter().map(move |l| (i, l))) {
                        let mut h = [0x5au8; 54];
                        h[30..34].copy_from_slice(old);
                        h[36..38].copy_from_slice(op);
                        h[at.0..at.0 + 2].copy_from_slice(ip);
                        h[at.1..at.1 + 2].copy_from_slice(l4);
                        let mut want = h;
                        nat4_reference(&mut want, 30, *new, 36, *np, at);
                        nat4_rewrite(&mut h, 30, *new, 36, *np, at);
                        assert_eq!(
                            h, want,
                            "old {old:?} new {new:?} ports {op:?} {np:?} sums {ip:?} {l4:?} udp {udp}"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Rewriting addresses and ports (what NAT does) and updating incrementally gives a
        /// checksum that verifies and equals the full recomputation (0 and 0xffff are the same
        /// one's-complement number).
        #[test]
        fn incremental_equals_full_recomputation(
            v6 in any::<bool>(),
            tcp in any::<bool>(),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_dst in any::<[u8; 16]>(),
            sport in any::<u16>(), dport in any::<u16>(), new_dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let alen = if v6 { 16 } else { 4 };
            let (proto, at) = if tcp { (6u8, 16usize) } else { (17u8, 6usize) };
            let mut seg = vec![0u8; if tcp { 20 } else { 8 }];
            seg[0..2].copy_from_slice(&sport.to_be_bytes());
            seg[2..4].copy_from_slice(&dport.to_be_bytes());
            if tcp { seg[12] = 0x50; } else { seg[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes()); }
            seg.extend_from_slice(&payload);
            let seg_len = seg.len();
            let pseudo = |d: &[u8]| if v6 {
                pseudo_v6(<[u8; 16]>::try_from(&src[..]).unwrap().into(), <[u8; 16]>::try_from(d).unwrap().into(), proto, seg_len as u32)
            } else {
                pseudo_v4(<[u8; 4]>::try_from(&src[..4]).unwrap().into(), <[u8; 4]>::try_from(d).unwrap().into(), proto, seg_len as u16)
            };
            let before = full(pseudo(&dst[..alen]), &mut seg, at);
            seg[at..at + 2].copy_from_slice(&before.to_be_bytes());

            // rewrite: destination address and port
            let mut c = update(before, &dst[..alen], &new_dst[..alen]);
            c = update_u16(c, dport, new_dport);
            seg[2..4].copy_from_slice(&new_dport.to_be_bytes());
            seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verifies(pseudo(&new_dst[..alen]), &seg));
            let recomputed = full(pseudo(&new_dst[..alen]), &mut seg.clone(), at);
            prop_assert!(c == recomputed || (c | recomputed) == 0xffff && (c & recomputed) == 0, "{c:#x} vs {recomputed:#x}");
        }

        #[test]
        fn the_20_byte_header_check_agrees_with_the_general_sum(h in any::<[u8; 20]>(), fix in any::<bool>()) {
            let mut h = h;
            if fix {
                h[10] = 0;
                h[11] = 0;
                let c = ipv4_header(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            prop_assert_eq!(ipv4_header20_ok(&h), fold(sum(&h)) == 0xffff);
        }

        #[test]
        fn delta4_equals_the_general_delta(old in any::<[u8; 4]>(), new in any::<[u8; 4]>(), c in any::<u16>()) {
            prop_assert_eq!(apply(c, delta4(old, new)), apply(c, delta(&old, &new)));
        }

        #[test]
        fn delta16_equals_the_general_delta(old in any::<[u8; 16]>(), new in any::<[u8; 16]>(), c in any::<u16>()) {
            prop_assert_eq!(apply(c, delta16(&old, &new)), apply(c, delta(&old, &new)));
            prop_assert_eq!(udp_apply(c, delta16(&old, &new)), udp_apply(c, delta(&old, &new)));
        }

        #[test]
        fn the_20_byte_header_checksum_is_the_general_one(mut h in any::<[u8; 20]>()) {
            h[10] = 0;
            h[11] = 0;
            let c = ipv4_header20(&h);
            prop_assert_eq!(c, ipv4_header(&h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            prop_assert!(ipv4_header20_ok(&h));
        }

        #[test]
        fn ipv4_header_update_equals_recomputation(mut h in any::<[u8; 20]>(), new_dst in any::<[u8; 4]>()) {
            h[10] = 0; h[11] = 0;
            let c = ipv4_header(&h);
            let old: [u8; 4] = h[16..20].try_into().unwrap();
            h[16..20].copy_from_slice(&new_dst);
            let inc = update(c, &old, &new_dst);
            let full = ipv4_header(&h);
            prop_assert!(inc == full || (inc | full) == 0xffff && (inc & full) == 0);
        }

        #[test]
        fn nat4_rewrite_equals_the_general_updates(
            h in any::<[u8; 54]>(),
            new_addr in any::<[u8; 4]>(),
            new_port in any::<[u8; 2]>(),
            udp in any::<bool>(),
            zero in any::<bool>(),
            source in any::<bool>(),
        ) {
            let mut h = h;
            // The destination and its port, or the source and its port (a reply).
            let (addr_at, port_at) = if source { (26, 34) } else { (30, 36) };
            let at = (24, if udp { 40 } else { 50 }, udp);
            if zero && udp {
                h[40] = 0;
                h[41] = 0;
            }
            let mut want = h;
            nat4_reference(&mut want, addr_at, new_addr, port_at, new_port, at);
            nat4_rewrite(&mut h, addr_at, new_addr, port_at, new_port, at);
            prop_assert_eq!(h, want);
        }
    }
}
